// The practitioner's workspace: today's and upcoming consultations with their links, a form
// for a new one (optional time, the patient's label, guests), Start (joins with this session,
// no link), Cancel (every link stops working) and Revoke (one link), and past consultations
// with their billed time and documents. Link tokens appear only in this page's fields (the
// practitioner copies them to the patient); they are never logged or put in a query string.

import { api, loadSession, signedOut, addSignOutButtons } from './staff-session.js';
import { t, onLanguageChange, formatDateTime, formatNumber } from './i18n.js';

const $ = (id) => document.getElementById(id);
const ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

function roleLabel(role) {
  return role === 'patient' || role === 'guest' ? t(`workspace.role.${role}`) : role;
}

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
  return formatDateTime(ms);
}

function duration(ms) {
  const minutes = Math.round(ms / 60000);
  if (minutes < 60) return t('workspace.minutes', { minutes: formatNumber(minutes) });
  return t('workspace.hoursMinutes', { hours: formatNumber(Math.floor(minutes / 60)), minutes: formatNumber(minutes % 60) });
}

/** The patient's label of a consultation (its first patient seat). */
function patientOf(c) {
  const p = c.invitations.find((i) => i.role === 'patient');
  return p ? p.label : t('workspace.consultation');
}

// ---------------------------------------------------------------- new consultation form

let guestCount = 0;

function addGuest(initial = '') {
  guestCount += 1;
  const id = `guest-${guestCount}`;
  const input = el('input', { id, type: 'text', autocomplete: 'off', maxLength: 200, value: initial, className: 'ws-guest' });
  const n = $('guests').children.length + 1;
  const label = el('label', { for: id, textContent: t('workspace.guestLabel', { n }) });
  const li = el('li', {}, label, input);
  li.append(button(t('workspace.remove'), t('workspace.removeGuest', { n }), () => li.remove()));
  $('guests').append(li);
  input.focus();
}

async function create(event) {
  event.preventDefault();
  $('error').textContent = '';
  const patient = $('patient-label').value.trim();
  if (!patient) {
    fail(new Error(t('workspace.needPatientLabel')));
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
      fail(new Error(t('workspace.badTime')));
      return;
    }
    body.scheduled_at = ms;
  }
  $('create-submit').disabled = true;
  try {
    await api('/api/workspace/consultations', { method: 'POST', body });
    $('create').reset();
    $('guests').replaceChildren();
    say(t('workspace.created'));
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
    say(t('workspace.copied', { name }));
  } catch {
    say(t('workspace.selected', { name }));
  }
}

function seatRow(c, inv, live) {
  const name = t('workspace.seatName', { role: roleLabel(inv.role), label: inv.label });
  const li = el('li', { class: 'ws-seat-row' });
  li.dataset.role = inv.role;
  li.append(el('span', { class: 'ws-seat', textContent: t('workspace.seat', { role: roleLabel(inv.role), label: inv.label }) }));
  if (inv.token && live) {
    const fieldId = `link-${inv.id}`;
    const input = el('input', { id: fieldId, type: 'text', readOnly: true, value: joinLink(inv.token), class: 'ws-link' });
    input.setAttribute('aria-label', t('workspace.linkFor', { name }));
    input.dataset.role = inv.role;
    input.dataset.label = inv.label;
    const qr = el('img', { class: 'ws-qr', hidden: true, alt: t('workspace.qrAlt', { name }) });
    const showQr = button(t('workspace.qr'), t('workspace.showQr', { name }), () => {
      if (qr.hidden) {
        qr.src = `/api/workspace/consultations/${encodeURIComponent(c.id)}/invitations/${encodeURIComponent(inv.id)}/qr.svg`;
      }
      qr.hidden = !qr.hidden;
      showQr.setAttribute('aria-expanded', String(!qr.hidden));
    });
    showQr.setAttribute('aria-expanded', 'false');
    li.append(
      button(t('workspace.copyLink'), t('workspace.copyLinkFor', { name }), () => copy(input, name)),
      showQr,
      button(t('workspace.revoke'), t('workspace.revokeFor', { name }), () => revoke(c, inv, name), 'danger-outline'),
      input,
      qr,
    );
  } else {
    li.append(el('span', { class: 'ws-meta', textContent: inv.revoked ? t('workspace.linkRevoked') : t('workspace.linkInvalid') }));
  }
  return li;
}

function item(c, live) {
  const title = patientOf(c);
  const li = el('li', { class: 'ws-item' });
  li.dataset.consultation = c.id;
  const head = el('div', { class: 'ws-head' }, el('span', { class: 'ws-title', textContent: title }));
  const whenText = c.scheduled_at ? when(c.scheduled_at) : t('workspace.createdAt', { when: when(c.created_at) });
  head.append(el('span', { class: 'ws-when', textContent: whenText }));
  li.append(head);
  li.append(el('ul', { class: 'ws-links' }, ...c.invitations.map((i) => seatRow(c, i, live))));
  if (live) {
    li.append(
      el(
        'div',
        { class: 'ws-actions' },
        button(t('workspace.start'), t('workspace.startWith', { title }), () => start(c.id), 'primary'),
        button(t('workspace.cancel'), t('workspace.cancelWith', { title }), () => cancel(c, title), 'danger'),
      ),
    );
  } else {
    const parts = [c.status === 'cancelled' ? t('workspace.cancelled') : t('workspace.ended')];
    if (typeof c.billable_ms === 'number') parts.push(t('workspace.billed', { duration: duration(c.billable_ms) }));
    parts.push(c.documents === 1 ? t('workspace.documentsOne') : t('workspace.documentsMany', { count: formatNumber(c.documents) }));
    li.append(el('p', { class: 'ws-meta', textContent: parts.join(' · ') }));
    const billing = el('a', { href: '/billing.html', textContent: t('workspace.billing') });
    billing.setAttribute('aria-label', t('workspace.billingFor', { title }));
    li.append(billing);
    li.append(chatRecord(c, title));
    li.append(recordingsRecord(c, title));
  }
  return li;
}

// ---------------------------------------------------------------- recordings of a past consultation

/**
 * "Show recordings": each stored recording with its date and length; "Play" exports it on the
 * server (in memory there) and shows one player per participant (by pseudonym), with a download
 * link per file and the manifest; "Delete" removes it for good. The players seek by HTTP Range.
 */
function recordingsRecord(c, title) {
  const base = `/api/workspace/consultations/${encodeURIComponent(c.id)}/recordings`;
  const box = el('div', { class: 'ws-recordings' });
  const list = el('ul', { class: 'ws-recording-list' });
  list.setAttribute('aria-label', t('workspace.recordingsOf', { title }));
  list.hidden = true;
  const recording = (r) => {
    const li = el('li', { class: 'ws-recording' });
    li.dataset.recording = r.id;
    const at = el('time', { textContent: when(r.created_at) });
    at.dateTime = new Date(r.created_at).toISOString();
    const meta = [duration(r.duration_ms)];
    if (r.interrupted) meta.push(t('workspace.recordingInterrupted'));
    li.append(el('p', { class: 'ws-chat-meta' }, at, ` · ${meta.join(' · ')}`));
    const players = el('div', { class: 'ws-players' });
    const play = button(t('workspace.playRecording'), t('workspace.playRecordingOf', { when: when(r.created_at) }), async () => {
      $('error').textContent = '';
      play.disabled = true;
      say(t('workspace.preparingRecording'));
      try {
        const res = await api(`${base}/${encodeURIComponent(r.id)}/files`);
        const { files } = await res.json();
        players.replaceChildren(
          ...files.map((f) => {
            const url = `${base}/${encodeURIComponent(r.id)}/files/${encodeURIComponent(f.name)}`;
            const download = el('a', { href: url, textContent: f.pseudonym ? t('workspace.downloadFileOf', { name: f.pseudonym }) : t('workspace.downloadManifest') });
            download.setAttribute('download', f.name);
            if (!f.pseudonym) return el('p', {}, download);
            const video = el('video', { controls: true, preload: 'metadata', src: url, class: 'ws-player' });
            video.setAttribute('aria-label', t('workspace.recordingOf', { name: f.pseudonym }));
            return el('figure', {}, video, el('figcaption', {}, `${f.pseudonym} · `, download));
          }),
        );
        say('');
      } catch (err) {
        say('');
        play.disabled = false;
        fail(err);
      }
    });
    const remove = button(t('workspace.deleteRecording'), t('workspace.deleteRecordingOf', { when: when(r.created_at) }), async () => {
      if (!window.confirm(t('workspace.confirmDeleteRecording'))) return;
      $('error').textContent = '';
      try {
        await api(`${base}/${encodeURIComponent(r.id)}/delete`, { method: 'POST', body: {} });
        li.remove();
        say(t('workspace.recordingDeleted'));
      } catch (err) {
        fail(err);
      }
    }, 'danger');
    li.append(el('div', { class: 'ws-actions' }, play, remove), players);
    return li;
  };
  const show = button(t('workspace.showRecordings'), t('workspace.showRecordingsOf', { title }), async () => {
    $('error').textContent = '';
    try {
      const res = await api(base);
      const data = await res.json();
      list.replaceChildren(
        ...(data.recordings.length ? data.recordings.map(recording) : [el('li', { class: 'note', textContent: t('workspace.noRecordings') })]),
      );
      list.hidden = false;
    } catch (err) {
      fail(err);
    }
  });
  box.append(show, list);
  return box;
}

// ---------------------------------------------------------------- the chat of a past consultation

/** "Show chat" (opens the record, rendered as text only) and "Export chat" (a JSON file). */
function chatRecord(c, title) {
  const box = el('div', { class: 'ws-chat' });
  const list = el('ol', { class: 'ws-chat-log' });
  list.setAttribute('aria-label', t('workspace.chatOf', { title }));
  list.hidden = true;
  const show = button(t('workspace.showChat'), t('workspace.showChatOf', { title }), async () => {
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
              const who = m.kind === 'notice' ? t('workspace.noticeFrom', { name: m.display_name }) : m.display_name;
              item.append(
                el('p', { class: 'ws-chat-meta' }, el('strong', { textContent: who }), ' ', at),
                el('p', { class: 'ws-chat-text', textContent: m.text }),
              );
              return item;
            })
          : [el('li', { class: 'note', textContent: t('workspace.noChat') })]),
      );
      list.hidden = false;
    } catch (err) {
      fail(err);
    }
  });
  const exportLink = el('a', {
    href: `/api/workspace/consultations/${encodeURIComponent(c.id)}/chat/export`,
    textContent: t('workspace.exportChat'),
  });
  exportLink.setAttribute('download', '');
  exportLink.setAttribute('aria-label', t('workspace.exportChatOf', { title }));
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
  if (!window.confirm(t('workspace.confirmCancel', { title }))) return;
  $('error').textContent = '';
  try {
    await api(`/api/workspace/consultations/${encodeURIComponent(c.id)}/cancel`, { method: 'POST' });
    say(t('workspace.cancelledDone', { title }));
    await refresh();
  } catch (err) {
    fail(err);
  }
}

async function revoke(c, inv, name) {
  if (!window.confirm(t('workspace.confirmRevoke', { name }))) return;
  $('error').textContent = '';
  try {
    await api(
      `/api/workspace/consultations/${encodeURIComponent(c.id)}/invitations/${encodeURIComponent(inv.id)}/revoke`,
      { method: 'POST' },
    );
    say(t('workspace.revokedDone', { name }));
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
  // The lists are built in code: draw them again in the new language.
  onLanguageChange(() => refresh().catch(fail));
  try {
    await refresh();
  } catch (err) {
    fail(err);
  }
  document.body.dataset.loaded = 'true';
}

main();
