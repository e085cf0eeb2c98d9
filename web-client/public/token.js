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
 * server is the only judge of a token. Returns null when the token cannot be decoded.
 * @returns {{consultation: string, identity: string, role: string, exp: number}|null}
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
      typeof claims.identity !== 'string' ||
      !ROLES.has(claims.role) ||
      typeof claims.exp !== 'number'
    ) {
      return null;
    }
    return {
      consultation: claims.consultation,
      identity: claims.identity,
      role: claims.role,
      exp: claims.exp,
    };
  } catch {
    return null;
  }
}

/** True when the claims' expiry lies in the past (by the local clock, display only). */
export function isExpired(claims, nowMs = Date.now()) {
  return claims.exp * 1000 <= nowMs;
}
