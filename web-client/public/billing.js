// Teleconsult billing page: a practitioner's consultations and billable minutes per day.
// The practitioner's join token arrives in the URL fragment (never sent to the server), is removed
// from the address bar at once and kept in this tab's sessionStorage, and travels only in the
// Authorization header of requests to /api/billing/export. Rows come from that endpoint as JSON.
// Without a token in the fragment or this tab, the page uses the staff session (cookie): a
// practitioner sees their own consultations, the billing and admin roles their organisation's.

import { takeTokenFromLocation, decodeClaims } from './token.js';
import { api, loadSession, signedOut, addSignOutButtons } from './staff-session.js';

const STORAGE_KEY = 'teleconsult.billing.token';
const DAY_MS = 86_400_000;
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);

function loadToken() {
  const fromUrl = takeTokenFromLocation();
  if (fromUrl) {
    try {
      sessionStorage.setItem(STORAGE_KEY, fromUrl);
    } catch {
      /* storage disabled: keep it in memory only */
    }
    return fromUrl;
  }
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

const token = loadToken();

/** `YYYY-MM-DD` of a time in UTC. */
export function isoDate(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

/** `h:mm:ss` of a number of milliseconds. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
}

/**
 * Billable minutes per UTC day (by the consultation's start) for every day in [fromMs, toMs).
 * @returns {{day: string, minutes: number}[]}
 */
export function minutesPerDay(rows, fromMs, toMs) {
  const days = new Map();
  for (let t = fromMs; t < toMs; t += DAY_MS) days.set(isoDate(t), 0);
  for (const r of rows) {
    const day = r.start.slice(0, 10);
    if (days.has(day)) days.set(day, days.get(day) + r.billable_ms / 60_000);
  }
  return [...days].map(([day, minutes]) => ({ day, minutes }));
}

function svg(name, attrs = {}, text = null) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  return el;
}

/** Draw the bar chart (inline SVG built here; no library). */
function drawChart(container, perDay) {
  container.replaceChildren();
  const width = 800;
  const height = 220;
  const left = 40;
  const bottom = 30;
  const top = 10;
  const plotH = height - top - bottom;
  const max = Math.max(1, ...perDay.map((d) => d.minutes));
  const step = (width - left - 10) / Math.max(1, perDay.length);
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `Billable minutes per day, ${perDay.length} days, at most ${max.toFixed(1)} minutes`,
  });
  chart.append(svg('line', { class: 'axis', x1: left, y1: top + plotH, x2: width - 5, y2: top + plotH }));
  chart.append(svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: top + plotH }));
  chart.append(svg('text', { x: left - 4, y: top + 8, 'text-anchor': 'end' }, max.toFixed(max < 10 ? 1 : 0)));
  chart.append(svg('text', { x: left - 4, y: top + plotH, 'text-anchor': 'end' }, '0'));
  const labelEvery = Math.ceil(perDay.length / 10);
  perDay.forEach((d, i) => {
    const h = (d.minutes / max) * plotH;
    const x = left + i * step + step * 0.15;
    const bar = svg('rect', {
      class: 'bar',
      x: x.toFixed(1),
      y: (top + plotH - h).toFixed(1),
      width: Math.max(1, step * 0.7).toFixed(1),
      height: h.toFixed(1),
      'data-day': d.day,
      'data-minutes': d.minutes.toFixed(2),
    });
    bar.append(svg('title', {}, `${d.day}: ${d.minutes.toFixed(1)} min`));
    chart.append(bar);
    if (i % labelEvery === 0) {
      chart.append(svg('text', { x: (x + step * 0.35).toFixed(1), y: height - 10, 'text-anchor': 'middle' }, d.day.slice(5)));
    }
  });
  container.append(chart);
}

function cell(text, numeric = false) {
  const td = document.createElement('td');
  td.textContent = text;
  if (numeric) td.className = 'num';
  return td;
}

function drawRows(rows) {
  const body = $('rows');
  body.replaceChildren();
  let total = 0;
  for (const r of rows) {
    total += r.billable_ms;
    const tr = document.createElement('tr');
    tr.dataset.consultation = r.consultation;
    const length = r.end ? Date.parse(r.end) - Date.parse(r.start) : null;
    tr.append(
      cell(r.consultation),
      cell(r.patient_pseudonym || '—'),
      cell(r.start.replace('T', ' ').replace(/(\.\d+)?Z$/, '')),
      cell(length === null ? 'in progress' : duration(length), true),
      cell(duration(r.billable_ms), true),
      cell(`${r.billable_units} ${r.unit}${r.billable_units === 1 ? '' : 's'}`, true),
      cell(String(r.participants), true),
      cell(r.recovered ? 'closed at last checkpoint after a server restart' : ''),
    );
    body.append(tr);
  }
  $('total').textContent = `${rows.length} consultation${rows.length === 1 ? '' : 's'}, ${duration(total)} billable.`;
}

function period() {
  const from = Date.parse(`${$('from').value}T00:00:00Z`);
  const to = Date.parse(`${$('to').value}T00:00:00Z`) + DAY_MS; // the "to" day is included
  return { from, to };
}

function exportUrl(format) {
  const { from, to } = period();
  const q = new URLSearchParams({ from: new Date(from).toISOString(), to: new Date(to).toISOString(), format });
  return `/api/billing/export?${q}`;
}

async function fetchExport(format) {
  if (!token) return api(exportUrl(format));
  const res = await fetch(exportUrl(format), {
    headers: { Authorization: `Bearer ${token}` },
    cache: 'no-store',
    credentials: 'omit',
  });
  if (res.status === 403) {
    throw new Error('This page needs a valid practitioner link. Open it again from your consultation.');
  }
  if (!res.ok) {
    let message = `The server answered ${res.status}.`;
    try {
      message = (await res.json()).message || message;
    } catch {
      /* not JSON */
    }
    throw new Error(message);
  }
  return res;
}

async function show() {
  $('error').textContent = '';
  const { from, to } = period();
  if (!(to > from)) {
    $('error').textContent = 'Choose a "to" date on or after the "from" date.';
    return;
  }
  $('status').textContent = 'Loading…';
  try {
    const rows = await (await fetchExport('json')).json();
    drawRows(rows);
    drawChart($('chart'), minutesPerDay(rows, from, to));
    $('status').textContent = '';
    $('download').hidden = false;
    document.body.dataset.loaded = 'true';
  } catch (err) {
    $('status').textContent = '';
    $('error').textContent = err.message;
  }
}

async function download(event) {
  event.preventDefault();
  try {
    const blob = await (await fetchExport('csv')).blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `billing-${$('from').value}-${$('to').value}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    $('error').textContent = err.message;
  }
}

async function start() {
  const claims = token ? decodeClaims(token) : null;
  if (!token) {
    const me = await loadSession();
    if (!me) {
      signedOut();
      return;
    }
    const whole = me.roles.includes('billing') || me.roles.includes('admin');
    $('whoami').textContent = `${me.display_name} · Billing`;
    if (whole) document.querySelector('h1').textContent = 'Your organisation’s consultations';
    const bar = document.createElement('span');
    addSignOutButtons(bar);
    document.querySelector('.topbar').append(bar);
  } else if (!claims || claims.role !== 'practitioner') {
    $('error').textContent = 'This page needs a practitioner link. Open it from your consultation page.';
    $('period').hidden = true;
    return;
  } else {
    $('whoami').textContent = `${claims.identity} · Billing`;
  }
  const today = Date.now() - (Date.now() % DAY_MS);
  $('from').value = isoDate(today - 29 * DAY_MS);
  $('to').value = isoDate(today);
  $('period').addEventListener('submit', (e) => {
    e.preventDefault();
    show();
  });
  $('download').addEventListener('click', download);
  show();
}

start();
