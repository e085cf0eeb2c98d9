// The admin page: the organisation's accounts; create, disable, enable, reset password.
// Generated passwords are shown once on this page and kept nowhere.

import { api, loadSession, signedOut, addSignOutButtons } from './staff-session.js';
import { t, onLanguageChange, locale } from './i18n.js';

/** The last list drawn, redrawn in place after a language change. */
let last = null;

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
    if (data.password) showSecret(t('admin.newPassword', { name: what, password: data.password }));
    await refresh();
  } catch (err) {
    $('error').textContent = err.message;
  }
}

function button(label, accessibleName, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.setAttribute('aria-label', accessibleName);
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
    const name = a.display_name;
    actions.append(
      a.disabled
        ? button(t('admin.enable'), t('admin.enableName', { name }), () => act(`${base}/enable`, name))
        : button(t('admin.disable'), t('admin.disableName', { name }), () => act(`${base}/disable`, name)),
      button(t('admin.resetPassword'), t('admin.resetPasswordName', { name }), () => act(`${base}/reset-password`, name)),
    );
    const roles = new Intl.ListFormat(locale(), { type: 'unit' });
    tr.append(
      cell(name),
      cell(a.email),
      cell(roles.format(a.roles.map((r) => t(`admin.role.${r}`)))),
      cell(a.totp ? t('admin.on') : t('admin.off')),
      cell(a.disabled ? t('admin.disabled') : t('admin.active')),
      actions,
    );
    body.append(tr);
  }
}

async function refresh() {
  const data = await (await api('/api/admin/accounts')).json();
  last = data;
  draw();
  document.body.dataset.loaded = 'true';
}

function draw() {
  if (!last) return;
  $('admin-heading').textContent = t('admin.heading', { organisation: last.organisation.name });
  drawRows(last.accounts);
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
    showSecret(t('admin.created', { email: data.account.email, password: data.password }));
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
  const whoami = () => ($('whoami').textContent = t('staff.whoamiAccounts', { name: me.display_name }));
  whoami();
  onLanguageChange(() => {
    whoami();
    draw();
  });
  addSignOutButtons($('signout'));
  $('create').addEventListener('submit', create);
  try {
    await refresh();
  } catch (err) {
    $('error').textContent = err.message;
  }
}

start();
