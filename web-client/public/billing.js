// Teleconsult billing page: a practitioner's consultations and billable minutes per day.
// The practitioner's join token arrives in the URL fragment (never sent to the server), is removed
// from the address bar at once and kept in this tab's sessionStorage, and travels only in the
// Authorization header of requests to /api/billing/export. Rows come from that endpoint as JSON.
// Without a token in the fragment or this tab, the page uses the staff session (cookie): a
// practitioner sees their own consultations, the billing and admin roles their organisation's.

import { takeTokenFromLocation, decodeClaims } from './token.js';
import { api, loadSession, signedOut, addSignOutButtons, ApiFailure, errorCode } from './staff-session.js';
import { t, onLanguageChange, formatNumber } from './i18n.js';

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
    'aria-label': t('billing.chartLabel', { days: perDay.length, max: formatNumber(max, { maximumFractionDigits: 1 }) }),
  });
  chart.append(svg('line', { class: 'axis', x1: left, y1: top + plotH, x2: width - 5, y2: top + plotH }));
  chart.append(svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: top + plotH }));
  chart.append(svg('text', { x: left - 4, y: top + 8, 'text-anchor': 'end' }, formatNumber(max, { maximumFractionDigits: max < 10 ? 1 : 0 })));
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
    bar.append(svg('title', {}, t('billing.barTitle', { day: d.day, minutes: formatNumber(d.minutes, { maximumFractionDigits: 1 }) })));
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
      cell(length === null ? t('billing.inProgress') : duration(length), true),
      cell(duration(r.billable_ms), true),
      // The unit is the billing configuration's own word (as in the CSV export).
      cell(t('billing.unitCount', { count: formatNumber(r.billable_units), unit: r.unit }), true),
      cell(formatNumber(r.participants), true),
      cell(r.recovered ? t('billing.recovered') : ''),
    );
    body.append(tr);
  }
  const key = rows.length === 1 ? 'billing.totalOne' : 'billing.totalMany';
  $('total').textContent = t(key, { count: formatNumber(rows.length), billable: duration(total) });
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
  if (res.status === 403) throw new Error(t('apiErrors.noPractitionerLink'));
  if (!res.ok) throw new ApiFailure(await errorCode(res), res.status);
  return res;
}

async function show() {
  $('error').textContent = '';
  const { from, to } = period();
  if (!(to > from)) {
    $('error').textContent = t('billing.badPeriod');
    return;
  }
  $('status').textContent = t('billing.loading');
  try {
    const rows = await (await fetchExport('json')).json();
    shown = { rows, from, to };
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

/** What is on the page, redrawn in place after a language change. */
let shown = null;

async function start() {
  onLanguageChange(() => {
    if (!shown) return;
    drawRows(shown.rows);
    drawChart($('chart'), minutesPerDay(shown.rows, shown.from, shown.to));
  });
  const claims = token ? decodeClaims(token) : null;
  if (!token) {
    const me = await loadSession();
    if (!me) {
      signedOut();
      return;
    }
    const whole = me.roles.includes('billing') || me.roles.includes('admin');
    const whoami = () => ($('whoami').textContent = t('staff.whoamiBilling', { name: me.display_name }));
    whoami();
    onLanguageChange(whoami);
    if (whole) $('billing-heading').dataset.i18n = 'billing.headingOrganisation';
    $('billing-heading').textContent = t($('billing-heading').dataset.i18n);
    const bar = document.createElement('span');
    addSignOutButtons(bar);
    document.querySelector('.topbar').append(bar);
  } else if (!claims || claims.role !== 'practitioner') {
    $('error').textContent = t('billing.needsLink');
    $('period').hidden = true;
    return;
  } else {
    const whoami = () => ($('whoami').textContent = t('staff.whoamiBilling', { name: claims.identity }));
    whoami();
    onLanguageChange(whoami);
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
