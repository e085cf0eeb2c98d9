// Join token handling. The token travels in the URL fragment (`/join#token=...`) so the server
// never sees it in a request line; we read it once, remove it from the address bar and keep it
// only in memory. It is never logged and never exposed on `window`.

/**
 * Read the token from a location hash such as `#token=abc.def` and strip it from the address bar.
 * @returns {string|null}
 */
export function takeTokenFromLocation(loc = window.location, hist = window.history) {
  const hash = loc.hash.startsWith('#') ? loc.hash.slice(1) : loc.hash;
  const params = new URLSearchParams(hash);
  const token = params.get('token');
  if (hash !== '') {
    params.delete('token');
    const rest = params.toString();
    // Replace, not push: the token must not stay in the history either.
    hist.replaceState(hist.state, '', loc.pathname + loc.search + (rest ? `#${rest}` : ''));
  }
  return token && token.trim() !== '' ? token.trim() : null;
}

function base64UrlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url');
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
}

const ROLES = new Set(['practitioner', 'patient', 'guest']);

/**
 * Decode the claims part of a token for display only. The signature is NOT checked here: the
 * server is the only judge of a token. Two formats: an invitation link (`v: 2`, no name: the
 * server tells the seat's label at join) and the pre-accounts practitioner token (`identity`).
 * Returns null when the token cannot be decoded.
 * @returns {{consultation: string, identity: string|null, role: string, exp: number, nbf: number}|null}
 */
export function decodeClaims(token) {
  if (typeof token !== 'string') return null;
  const dot = token.indexOf('.');
  if (dot <= 0) return null;
  try {
    const claims = JSON.parse(base64UrlDecode(token.slice(0, dot)));
    if (
      !claims ||
      typeof claims.consultation !== 'string' ||
      !ROLES.has(claims.role) ||
      typeof claims.exp !== 'number'
    ) {
      return null;
    }
    if (claims.v === 2) {
      if (typeof claims.nbf !== 'number' || typeof claims.jti !== 'string') return null;
      return { consultation: claims.consultation, identity: null, role: claims.role, exp: claims.exp, nbf: claims.nbf };
    }
    if (typeof claims.identity !== 'string') return null;
    return { consultation: claims.consultation, identity: claims.identity, role: claims.role, exp: claims.exp, nbf: 0 };
  } catch {
    return null;
  }
}

/** True when the claims' expiry lies in the past (by the local clock, display only). */
export function isExpired(claims, nowMs = Date.now()) {
  return claims.exp * 1000 <= nowMs;
}

// ---------------------------------------------------------------- this tab's seat

// The token and the seat secret the server gave this tab at its first join live in
// sessionStorage: they survive a reload of this tab (which then resumes its own seat) and
// are never shared with other tabs or devices. Never logged, never on `window`.
const SEAT_KEY = 'teleconsult.seat';

function storage(store) {
  try {
    return store || window.sessionStorage;
  } catch {
    return null; // storage disabled: the tab simply cannot resume after a reload
  }
}

/** The token this tab joined with before (a reload), or null. */
export function storedToken(store) {
  const s = storage(store);
  if (!s) return null;
  try {
    const v = JSON.parse(s.getItem(SEAT_KEY) || 'null');
    return v && typeof v.token === 'string' ? v.token : null;
  } catch {
    return null;
  }
}

/** The seat secret kept for `token` (none for another token). */
export function seatSecret(token, store) {
  const s = storage(store);
  if (!s) return null;
  try {
    const v = JSON.parse(s.getItem(SEAT_KEY) || 'null');
    return v && v.token === token && typeof v.secret === 'string' ? v.secret : null;
  } catch {
    return null;
  }
}

/** Keep `token` (and its seat secret, once the server gave one) for this tab. */
export function keepSeat(token, secret, store) {
  const s = storage(store);
  if (!s) return;
  const kept = secret || seatSecret(token, s);
  try {
    s.setItem(SEAT_KEY, JSON.stringify(kept ? { token, secret: kept } : { token }));
  } catch {
    // Quota or privacy mode: resuming after a reload will not work, nothing else changes.
  }
}

/** Forget this tab's seat (left, ended, refused). */
export function forgetSeat(store) {
  const s = storage(store);
  if (s) s.removeItem(SEAT_KEY);
}
