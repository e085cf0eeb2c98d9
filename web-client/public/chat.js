// Chat in the call, and notices to and in the waiting room (protocol version 2,
// docs/signaling.md). Every text is put in the page with `textContent`: never HTML, and links
// stay plain text (never turned into anchors, never followed).

import { CHAT, ROLE_LABEL } from './messages.js';
import { formatTime, t } from './i18n.js';

/** "14:05" in the page's language. */
function timeOf(ms) {
  return formatTime(ms);
}

function entry(m, you) {
  const li = document.createElement('li');
  li.className = 'chat-message';
  li.dataset.id = m.id;
  li.dataset.kind = m.kind;
  const mine = you && m.from === you.id;
  if (mine) li.dataset.mine = 'true';
  const meta = document.createElement('p');
  meta.className = 'chat-meta';
  const who = document.createElement('span');
  who.className = 'chat-who';
  const role = ROLE_LABEL[m.role];
  who.textContent = mine ? CHAT.you : role ? t('join.tileName', { name: m.display_name, role }) : m.display_name;
  const at = document.createElement('time');
  at.dateTime = new Date(m.at).toISOString();
  at.textContent = timeOf(m.at);
  meta.append(who, at);
  const text = document.createElement('p');
  text.className = 'chat-text';
  text.textContent = m.text;
  li.append(meta, text);
  return li;
}

function valid(m) {
  return m && typeof m.id === 'string' && typeof m.text === 'string' && typeof m.at === 'number';
}

/**
 * The chat region of the call screen.
 * @param {object} opts
 * @param {HTMLElement} opts.root the `#chat` section
 * @param {(msg: object) => boolean} opts.send sends a protocol message; false if not connected
 * @param {() => {id: string}|null} opts.you
 */
export function createChat({ root, send, you }) {
  const log = root.querySelector('.chat-log');
  const empty = root.querySelector('.chat-empty');
  const form = root.querySelector('form');
  const input = form.querySelector('textarea');
  const error = root.querySelector('.chat-error');
  const seen = new Set();

  function add(m) {
    if (!valid(m) || seen.has(m.id)) return;
    seen.add(m.id);
    log.append(entry(m, you()));
    empty.hidden = true;
    log.scrollTop = log.scrollHeight;
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    error.textContent = '';
    if (!text) {
      error.textContent = CHAT.errors.chat_empty;
      return;
    }
    if (!send({ type: 'chat', text })) {
      error.textContent = CHAT.sendFailed;
      return;
    }
    input.value = '';
  });
  input.addEventListener('keydown', (ev) => {
    // Enter sends, Shift+Enter starts a new line.
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });

  return {
    message: add,
    history(list) {
      for (const m of list || []) if (m.kind === 'chat') add(m);
    },
    /** A refused message: the sentence for its code (true if it was a chat error). */
    refused(code) {
      const text = CHAT.errors[code];
      if (!text) return false;
      error.textContent = text;
      return true;
    },
  };
}

/**
 * Notices: the waiting patient's list (`#notices`), and the practitioner's form to send one
 * (`#notice-form`).
 */
export function createNotices({ list, region, form, status, send }) {
  const seen = new Set();
  if (form) {
    const input = form.querySelector('input');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (send({ type: 'notice', text })) input.value = '';
      else status.textContent = CHAT.sendFailed;
    });
  }
  return {
    notice(m) {
      if (!valid(m) || seen.has(m.id)) return;
      seen.add(m.id);
      if (list) {
        const li = document.createElement('li');
        li.className = 'notice';
        li.dataset.id = m.id;
        const at = document.createElement('time');
        at.dateTime = new Date(m.at).toISOString();
        at.textContent = timeOf(m.at);
        const text = document.createElement('span');
        text.className = 'notice-text';
        text.textContent = m.text;
        li.append(at, text);
        list.append(li);
        if (region) region.hidden = false;
      } else if (status) {
        status.textContent = CHAT.noticeSent;
      }
    },
    history(messages) {
      for (const m of messages || []) if (m.kind === 'notice') this.notice(m);
    },
  };
}
