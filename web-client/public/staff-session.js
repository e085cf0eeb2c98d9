// Staff sessions in the browser: the session itself is an HttpOnly cookie this script never sees;
// what it keeps (in memory only) is the session's CSRF token, sent as X-CSRF-Token on every
// state-changing request, and the idle timeout. The server ends a session after
// `idle_timeout_secs` without an authenticated request; this module asks again just after that
// moment, so an idle page is sent to the sign-in page as soon as the server has ended it.

import { t } from './i18n.js';

let current = null;
let idleTimer = null;

/** The signed-in staff member ({account, organisation, display_name, roles, ...}) or null. */
export function staff() {
  return current;
}

function scheduleIdleCheck() {
  if (!current) return;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(async () => {
    // Just past the server's idle limit since our last request: this check finds the session
    // ended (and does not count as activity then). If another tab kept it alive, we go on.
    const again = await loadSession();
    if (!again) signedOut('idle');
  }, (current.idle_timeout_secs + 1) * 1000);
}

/** Ask the server who we are; null when not signed in. */
export async function loadSession() {
  const res = await fetch('/api/auth/session', { cache: 'no-store', credentials: 'same-origin' });
  if (!res.ok) {
    current = null;
    return null;
  }
  current = await res.json();
  scheduleIdleCheck();
  return current;
}

/** Go to the sign-in page, saying why, and come back to this page afterwards. */
export function signedOut(reason = '') {
  const next = window.location.pathname;
  const params = new URLSearchParams({ next });
  if (reason) params.set('reason', reason);
  window.location.assign(`/login#${params}`);
}

/**
 * The sentence for an error the server answered with: its stable `code` translated
 * (`apiErrors.*` in the catalogues); the server's own English text is never shown.
 */
export function apiErrorMessage(code, status) {
  const key = `apiErrors.${code}`;
  const text = typeof code === 'string' && /^[a-z_]+$/.test(code) ? t(key) : key;
  return text === key ? t('apiErrors.generic', { status }) : text;
}

/** An error from the staff API: `code` is the server's, `message` the translated sentence. */
export class ApiFailure extends Error {
  constructor(code, status) {
    super(apiErrorMessage(code, status));
    this.code = code;
    this.status = status;
  }
}

/**
 * fetch() for the staff API: same-origin cookie, the CSRF token on every non-GET request, JSON
 * bodies. Throws an ApiFailure (its message translated from the server's code) on failure; a 401
 * ends at the sign-in page.
 */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = {};
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = current ? current.csrf_token : '';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'same-origin',
  });
  scheduleIdleCheck();
  if (res.status === 401) {
    signedOut('expired');
    throw new ApiFailure('session_expired', 401);
  }
  if (!res.ok) throw new ApiFailure(await errorCode(res), res.status);
  return res;
}

/** The `code` of an error response (JSON `{code, message}`), or null. */
export async function errorCode(res) {
  try {
    const data = await res.json();
    return typeof data.code === 'string' ? data.code : null;
  } catch {
    return null;
  }
}

/** Sign out of this session (or, with `everywhere`, of every session of the account). */
export async function signOut({ everywhere = false } = {}) {
  try {
    await api(everywhere ? '/api/auth/logout-everywhere' : '/api/auth/logout', { method: 'POST' });
  } finally {
    current = null;
    clearTimeout(idleTimer);
    window.location.assign('/login#reason=signed-out');
  }
}

/** Put a link to the account page and "Sign out" / "Sign out everywhere" buttons into `container`. */
export function addSignOutButtons(container) {
  if (window.location.pathname !== '/account.html') {
    const account = document.createElement('a');
    account.href = '/account.html';
    account.dataset.i18n = 'staff.account';
    account.textContent = t('staff.account');
    container.append(account, ' ');
  }
  const one = document.createElement('button');
  one.type = 'button';
  one.dataset.i18n = 'staff.signOut';
  one.textContent = t('staff.signOut');
  one.addEventListener('click', () => signOut());
  const all = document.createElement('button');
  all.type = 'button';
  all.dataset.i18n = 'staff.signOutEverywhere';
  all.textContent = t('staff.signOutEverywhere');
  all.addEventListener('click', () => signOut({ everywhere: true }));
  container.append(one, all);
}
