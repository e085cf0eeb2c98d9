// The admin page: the organisation's accounts; create, disable, enable, reset password.
// Generated passwords are shown once on this page and kept nowhere.

import { api, loadSession, signedOut, addSignOutButtons } from './staff-session.js';

const $ = (id) => document.getElementById(id);

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function showSecret(text) {
  $('secret').textContent = text;
  $('secret').hidden = false;
}

async function act(path, what) {
  $('error').textContent = '';
  try {
    const res = await api(path, { method: 'POST' });
    const data = await res.json();
    if (data.password) showSecret(`New password for ${what}: ${data.password}`);
    await refresh();
  } catch (err) {
    $('error').textContent = err.message;
  }
}

function button(label, name, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.setAttribute('aria-label', `${label} ${name}`);
  b.addEventListener('click', onClick);
  return b;
}

function drawRows(accounts) {
  const body = $('rows');
  body.replaceChildren();
  for (const a of accounts) {
    const tr = document.createElement('tr');
    tr.dataset.account = a.id;
    const actions = document.createElement('td');
    const base = `/api/admin/accounts/${encodeURIComponent(a.id)}`;
    actions.append(
      a.disabled
        ? button('Enable', a.display_name, () => act(`${base}/enable`, a.display_name))
        : button('Disable', a.display_name, () => act(`${base}/disable`, a.display_name)),
      button('Reset password', a.display_name, () => act(`${base}/reset-password`, a.display_name)),
    );
    tr.append(
      cell(a.display_name),
      cell(a.email),
      cell(a.roles.join(', ')),
      cell(a.totp ? 'on' : 'off'),
      cell(a.disabled ? 'disabled' : 'active'),
      actions,
    );
    body.append(tr);
  }
}

async function refresh() {
  const data = await (await api('/api/admin/accounts')).json();
  $('organisation-name').textContent = data.organisation.name;
  drawRows(data.accounts);
  document.body.dataset.loaded = 'true';
}

async function create(event) {
  event.preventDefault();
  $('error').textContent = '';
  const roles = [...document.querySelectorAll('input[name=role]:checked')].map((i) => i.value);
  try {
    const res = await api('/api/admin/accounts', {
      method: 'POST',
      body: { email: $('new-email').value, display_name: $('new-name').value, roles },
    });
    const data = await res.json();
    showSecret(`Account created for ${data.account.email}. Initial password: ${data.password}`);
    $('create').reset();
    await refresh();
  } catch (err) {
    $('error').textContent = err.message;
  }
}

async function start() {
  const me = await loadSession();
  if (!me) {
    signedOut();
    return;
  }
  $('whoami').textContent = `${me.display_name} · Accounts`;
  addSignOutButtons($('signout'));
  $('create').addEventListener('submit', create);
  try {
    await refresh();
  } catch (err) {
    $('error').textContent = err.message;
  }
}

start();
