// The "API keys" section of the admin page: the organisation's keys for booking and practice
// software (REST API v1, docs/api.md). A new key is shown once on this page and kept nowhere.

import { api, loadSession } from './staff-session.js';
import { t, onLanguageChange, formatDateTime } from './i18n.js';

/** The last list drawn, redrawn in place after a language change. */
let last = null;

const $ = (id) => document.getElementById(id);

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function when(ms) {
  return ms == null ? t('admin.never') : formatDateTime(ms);
}

function drawKeys(keys) {
  const body = $('key-rows');
  body.replaceChildren();
  for (const k of keys) {
    const tr = document.createElement('tr');
    tr.dataset.key = k.id;
    const actions = document.createElement('td');
    if (k.revoked_at == null) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = t('admin.revoke');
      b.setAttribute('aria-label', t('admin.revokeKey', { name: k.name }));
      b.addEventListener('click', () => revoke(k));
      actions.append(b);
    }
    tr.append(
      cell(k.name),
      cell(k.scopes.join(', ')),
      cell(when(k.created_at)),
      cell(when(k.last_used_at)),
      cell(k.revoked_at == null ? t('admin.active') : t('admin.revokedAt', { when: when(k.revoked_at) })),
      actions,
    );
    body.append(tr);
  }
}

async function refreshKeys() {
  const data = await (await api('/api/admin/api-keys')).json();
  last = data.api_keys;
  drawKeys(last);
}

async function revoke(k) {
  $('key-error').textContent = '';
  try {
    await api(`/api/admin/api-keys/${encodeURIComponent(k.id)}/revoke`, { method: 'POST' });
    await refreshKeys();
  } catch (err) {
    $('key-error').textContent = err.message;
  }
}

async function createKey(event) {
  event.preventDefault();
  $('key-error').textContent = '';
  const scopes = [...document.querySelectorAll('input[name=scope]:checked')].map((i) => i.value);
  try {
    const res = await api('/api/admin/api-keys', {
      method: 'POST',
      body: { name: $('key-name').value, scopes },
    });
    const data = await res.json();
    $('key-secret').textContent = t('admin.keyShown', { name: data.name, key: data.key });
    $('key-secret').hidden = false;
    $('create-key').reset();
    await refreshKeys();
  } catch (err) {
    $('key-error').textContent = err.message;
  }
}

async function start() {
  if (!(await loadSession())) return;
  $('create-key').addEventListener('submit', createKey);
  onLanguageChange(() => last && drawKeys(last));
  try {
    await refreshKeys();
  } catch (err) {
    $('key-error').textContent = err.message;
  }
}

start();
