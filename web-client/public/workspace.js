// The practitioner's workspace: today's and upcoming consultations with their links, a form
// for a new one (optional time, the patient's label, guests), Start (joins with this session,
// no link), Cancel (every link stops working) and Revoke (one link), and past consultations
// with their billed time and documents. Link tokens appear only in this page's fields (the
// practitioner copies them to the patient); they are never logged or put in a query string.

import { api, loadSession, signedOut, addSignOutButtons } from './staff-session.js';

const $ = (id) => document.getElementById(id);
const ID_RE = /^[A-Za-z0-9_-]{1,128}$/;
const ROLE_LABEL = { patient: 'Patient', guest: 'Guest' };

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('aria-') || k === 'for') e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}

function button(label, accessibleName, onClick, cls = '') {
  const b = el('button', { type: 'button', textContent: label, class: cls });
  b.setAttribute('aria-label', accessibleName);
  b.addEventListener('click', onClick);
  return b;
}

function say(text) {
  $('status').textContent = text;
}

function fail(err) {
  $('error').textContent = err && err.message ? err.message : String(err);
}

function joinLink(token) {
  return `${window.location.origin}/join#token=${token}`;
}

function when(ms) {
  return new Date(ms).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

function duration(ms) {
  const minutes = Math.round(ms / 60000);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The patient's label of a consultation (its first patient seat). */
function patientOf(c) {
  const p = c.invitations.find((i) => i.role === 'patient');
  return p ? p.label : 'Consultation';
}

// ---------------------------------------------------------------- new consultation form

let guestCount = 0;

function addGuest(initial = '') {
  guestCount += 1;
  const id = `guest-${guestCount}`;
  const input = el('input', { id, type: 'text', autocomplete: 'off', maxLength: 200, value: initial, className: 'ws-guest' });
  const label = el('label', { for: id, textContent: `Guest ${$('guests').children.length + 1} label` });
  const li = el('li', {}, label, input);
  li.append(button('Remove', `Remove guest ${$('guests').children.length + 1}`, () => li.remove()));
  $('guests').append(li);
  input.focus();
}

async function create(event) {
  event.preventDefault();
  $('error').textContent = '';
  const patient = $('patient-label').value.trim();
  if (!patient) {
    fail(new Error('Give the patient a label (it need not be their name).'));
    $('patient-label').focus();
    return;
  }
  const guests = [...document.querySelectorAll('#guests input.ws-guest')]
    .map((i) => i.value.trim())
    .filter((v) => v !== '')
    .map((label) => ({ label }));
  const body = { patient_label: patient, guests, policy: $('policy').value };
  const at = $('scheduled-at').value;
  if (at) {
    const ms = new Date(at).getTime();
    if (Number.isNaN(ms)) {
      fail(new Error('The scheduled time is not a valid date.'));
      return;
    }
    body.scheduled_at = ms;
  }
  $('create-submit').disabled = true;
  try {
    await api('/api/workspace/consultations', { method: 'POST', body });
    $('create').reset();
    $('guests').replaceChildren();
    say('Consultation created. Send each person their own link.');
    await refresh();
  } catch (err) {
    fail(err);
  } finally {
    $('create-submit').disabled = false;
  }
}

// ---------------------------------------------------------------- the lists

async function copy(input, name) {
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    say(`Link for ${name} copied.`);
  } catch {
    say(`Link for ${name} selected: copy it with Ctrl+C.`);
  }
}

function seatRow(c, inv, live) {
  const name = `${ROLE_LABEL[inv.role] || inv.role} ${inv.label}`;
  const li = el('li', { class: 'ws-seat-row' });
  li.dataset.role = inv.role;
  li.append(el('span', { class: 'ws-seat', textContent: `${ROLE_LABEL[inv.role] || inv.role}: ${inv.label}` }));
  if (inv.token && live) {
    const fieldId = `link-${inv.id}`;
    const input = el('input', { id: fieldId, type: 'text', readOnly: true, value: joinLink(inv.token), class: 'ws-link' });
    input.setAttribute('aria-label', `Link for ${name}`);
    input.dataset.role = inv.role;
    input.dataset.label = inv.label;
    const qr = el('img', { class: 'ws-qr', hidden: true, alt: `QR code of the link for ${name}` });
    const showQr = button('QR code', `Show QR code for ${name}`, () => {
      if (qr.hidden) {
        qr.src = `/api/workspace/consultations/${encodeURIComponent(c.id)}/invitations/${encodeURIComponent(inv.id)}/qr.svg`;
      }
      qr.hidden = !qr.hidden;
      showQr.setAttribute('aria-expanded', String(!qr.hidden));
    });
    showQr.setAttribute('aria-expanded', 'false');
    li.append(
      button('Copy link', `Copy link for ${name}`, () => copy(input, name)),
      showQr,
      button('Revoke', `Revoke link for ${name}`, () => revoke(c, inv, name), 'danger-outline'),
      input,
      qr,
    );
  } else {
    li.append(el('span', { class: 'ws-meta', textContent: inv.revoked ? 'link revoked' : 'link no longer valid' }));
  }
  return li;
}

function item(c, live) {
  const title = patientOf(c);
  const li = el('li', { class: 'ws-item' });
  li.dataset.consultation = c.id;
  const head = el('div', { class: 'ws-head' }, el('span', { class: 'ws-title', textContent: title }));
  const whenText = c.scheduled_at ? when(c.scheduled_at) : `created ${when(c.created_at)}`;
  head.append(el('span', { class: 'ws-when', textContent: whenText }));
  li.append(head);
  li.append(el('ul', { class: 'ws-links' }, ...c.invitations.map((i) => seatRow(c, i, live))));
  if (live) {
    li.append(
      el(
        'div',
        { class: 'ws-actions' },
        button('Start', `Start consultation with ${title}`, () => start(c.id), 'primary'),
        button('Cancel', `Cancel consultation with ${title}`, () => cancel(c, title), 'danger'),
      ),
    );
  } else {
    const parts = [c.status === 'cancelled' ? 'Cancelled' : 'Ended'];
    if (typeof c.billable_ms === 'number') parts.push(`billed ${duration(c.billable_ms)}`);
    parts.push(`${c.documents} document${c.documents === 1 ? '' : 's'}`);
    li.append(el('p', { class: 'ws-meta', textContent: parts.join(' · ') }));
    const billing = el('a', { href: '/billing.html', textContent: 'Billing' });
    billing.setAttribute('aria-label', `Billing page (consultation with ${title})`);
    li.append(billing);
    li.append(chatRecord(c, title));
  }
  return li;
}

// ---------------------------------------------------------------- the chat of a past consultation

/** "Show chat" (opens the record, rendered as text only) and "Export chat" (a JSON file). */
function chatRecord(c, title) {
  const box = el('div', { class: 'ws-chat' });
  const list = el('ol', { class: 'ws-chat-log' });
  list.setAttribute('aria-label', `Chat of the consultation with ${title}`);
  list.hidden = true;
  const show = button('Show chat', `Show the chat of the consultation with ${title}`, async () => {
    $('error').textContent = '';
    try {
      const res = await api(`/api/workspace/consultations/${encodeURIComponent(c.id)}/chat`);
      const data = await res.json();
      list.replaceChildren(
        ...(data.messages.length
          ? data.messages.map((m) => {
              const item = el('li', { class: 'ws-chat-message' });
              item.dataset.kind = m.kind;
              const at = el('time', { textContent: when(m.at) });
              at.dateTime = new Date(m.at).toISOString();
              const who = m.kind === 'notice' ? `${m.display_name} → waiting room` : m.display_name;
              item.append(
                el('p', { class: 'ws-chat-meta' }, el('strong', { textContent: who }), ' ', at),
                el('p', { class: 'ws-chat-text', textContent: m.text }),
              );
              return item;
            })
          : [el('li', { class: 'note', textContent: 'No chat in this consultation.' })]),
      );
      list.hidden = false;
    } catch (err) {
      fail(err);
    }
  });
  const exportLink = el('a', {
    href: `/api/workspace/consultations/${encodeURIComponent(c.id)}/chat/export`,
    textContent: 'Export chat',
  });
  exportLink.setAttribute('download', '');
  exportLink.setAttribute('aria-label', `Export the chat of the consultation with ${title}`);
  box.append(show, ' ', exportLink, list);
  return box;
}

function isPast(c) {
  return c.status !== 'scheduled' || typeof c.ended_at === 'number';
}

async function refresh() {
  const res = await api('/api/workspace/consultations');
  const data = await res.json();
  const upcoming = [];
  const past = [];
  for (const c of data.consultations) (isPast(c) ? past : upcoming).push(c);
  // Planned ones by time (unscheduled, newest first, after them); past ones newest first.
  upcoming.sort((a, b) => (a.scheduled_at ?? Infinity) - (b.scheduled_at ?? Infinity) || b.created_at - a.created_at);
  $('upcoming').replaceChildren(...upcoming.map((c) => item(c, true)));
  $('past').replaceChildren(...past.map((c) => item(c, false)));
  $('upcoming-empty').hidden = upcoming.length > 0;
  $('past-empty').hidden = past.length > 0;
}

// ---------------------------------------------------------------- actions

function start(id) {
  if (!ID_RE.test(id)) return;
  // The call page joins with this session's cookie: no link, no token.
  window.location.assign(`/join#session=${encodeURIComponent(id)}`);
}

async function cancel(c, title) {
  if (!window.confirm(`Cancel the consultation with ${title}? Every link of it stops working.`)) return;
  $('error').textContent = '';
  try {
    await api(`/api/workspace/consultations/${encodeURIComponent(c.id)}/cancel`, { method: 'POST' });
    say(`Consultation with ${title} cancelled; its links no longer work.`);
    await refresh();
  } catch (err) {
    fail(err);
  }
}

async function revoke(c, inv, name) {
  if (!window.confirm(`Revoke the link for ${name}? It stops working at once.`)) return;
  $('error').textContent = '';
  try {
    await api(
      `/api/workspace/consultations/${encodeURIComponent(c.id)}/invitations/${encodeURIComponent(inv.id)}/revoke`,
      { method: 'POST' },
    );
    say(`Link for ${name} revoked.`);
    await refresh();
  } catch (err) {
    fail(err);
  }
}

// ---------------------------------------------------------------- start-up

async function main() {
  const s = await loadSession();
  if (!s) {
    signedOut();
    return;
  }
  // `/workspace#start=ID` (the sign-in link `serve --dev` prints): straight into that call.
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const startId = fragment.get('start');
  if (startId && ID_RE.test(startId)) {
    window.history.replaceState(null, '', window.location.pathname);
    start(startId);
    return;
  }
  $('whoami').textContent = s.display_name;
  addSignOutButtons($('signout'));
  $('create').addEventListener('submit', create);
  $('add-guest').addEventListener('click', () => addGuest());
  try {
    await refresh();
  } catch (err) {
    fail(err);
  }
  document.body.dataset.loaded = 'true';
}

main();
