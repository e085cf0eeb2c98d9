// The signed-in person's own account: TOTP enrolment (the key is shown once, on this page
// only), sign out, sign out everywhere.

import { api, loadSession, signedOut, addSignOutButtons } from './staff-session.js';
import { t } from './i18n.js';

const $ = (id) => document.getElementById(id);

function showState(me) {
  $('totp-state').dataset.i18n = me.totp ? 'account.totpOn' : 'account.totpOff';
  $('totp-state').textContent = t($('totp-state').dataset.i18n);
  $('totp-begin').hidden = me.totp;
}

async function begin() {
  $('error').textContent = '';
  try {
    const data = await (await api('/api/auth/totp', { method: 'POST' })).json();
    $('totp-secret').value = data.secret;
    $('totp-link').href = data.otpauth_uri;
    $('totp-enrol').hidden = false;
    $('totp-code').focus();
  } catch (err) {
    $('error').textContent = err.message;
  }
}

async function confirm(event) {
  event.preventDefault();
  $('error').textContent = '';
  try {
    await api('/api/auth/totp/confirm', { method: 'POST', body: { code: $('totp-code').value.trim() } });
    $('totp-enrol').hidden = true;
    $('totp-secret').value = '';
    $('status').textContent = t('account.turnedOn');
    showState(await loadSession());
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
  $('whoami').textContent = me.display_name;
  addSignOutButtons($('signout'));
  showState(me);
  $('totp-begin').addEventListener('click', begin);
  $('totp-confirm').addEventListener('submit', confirm);
}

start();
