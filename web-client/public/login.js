// The staff sign-in page. Posts the email, password and (when the account has a second factor)
// the authentication code as JSON; the server answers with an HttpOnly session cookie. Then it
// goes to `next` from the fragment (a path on this site only) or to the person's start page.

import { t } from './i18n.js';
import { apiErrorMessage } from './staff-session.js';

const $ = (id) => document.getElementById(id);

const fragment = new URLSearchParams(window.location.hash.slice(1));
// Only a same-site path: never another origin, never a protocol-relative URL.
const nextParam = fragment.get('next');
const next = nextParam && /^\/(?!\/)[A-Za-z0-9/._-]*$/.test(nextParam) ? nextParam : null;
// `start`: a consultation id for the workspace to open at once (the `serve --dev` sign-in link).
const startParam = fragment.get('start');
const startId = startParam && /^[A-Za-z0-9_-]{1,128}$/.test(startParam) ? startParam : null;

const REASONS = {
  get idle() {
    return t('login.idle');
  },
  get expired() {
    return t('login.expired');
  },
  get 'signed-out'() {
    return t('login.signedOut');
  },
};

function startPage(session) {
  if (next === '/workspace' && startId) return `/workspace#start=${startId}`;
  if (next) return next;
  if (session.roles.includes('practitioner')) return '/workspace';
  if (session.roles.includes('billing')) return '/billing.html';
  if (session.roles.includes('admin')) return '/admin';
  return '/account.html';
}

async function submit(event) {
  event.preventDefault();
  $('error').textContent = '';
  const body = { email: $('email').value, password: $('password').value };
  if (!$('code-row').hidden && $('code').value.trim()) body.code = $('code').value.trim();
  $('submit').disabled = true;
  try {
    const res = await fetch('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
    let data = {};
    try {
      data = await res.json();
    } catch {
      /* not JSON */
    }
    if (res.ok) {
      window.location.assign(startPage(data));
      return;
    }
    if (data.code === 'totp_required') {
      $('code-row').hidden = false;
      $('code').focus();
    }
    // The server's code, translated; a refused sign-in never says which part was wrong.
    $('error').textContent = apiErrorMessage(data.code, res.status);
  } catch {
    $('error').textContent = t('login.unreachable');
  } finally {
    $('submit').disabled = false;
  }
}

function start() {
  const reason = REASONS[fragment.get('reason')];
  if (reason) {
    $('notice').textContent = reason;
    $('notice').hidden = false;
  }
  $('login').addEventListener('submit', submit);
  $('email').focus();
}

start();
