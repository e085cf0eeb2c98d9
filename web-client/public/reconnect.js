// Surviving changes (issue 11): the retry ladder of the "Reconnecting…" banner, ICE restarts on
// the same WebSocket when the media path breaks or the network changes, and "tap to start
// audio" when the browser refuses to play sound without a gesture. No tokens, no names here.

import { RECONNECT } from './messages.js';

/** Retry delays of a dropped signalling connection (LiveKit's ladder), then every 7 s. */
export const RETRY_LADDER_MS = [0, 300, 1200, 2700, 4800];
export const RETRY_EVERY_MS = 7000;

/** Delay before reconnection attempt number `attempt` (0 = the first). */
export function retryDelay(attempt) {
  return attempt < RETRY_LADDER_MS.length ? RETRY_LADDER_MS[attempt] : RETRY_EVERY_MS;
}

/**
 * Ask the server for an ICE restart (`{type: 'ice_restart'}`, docs/signaling.md) when the peer
 * connection's ICE fails, stays disconnected for `disconnectedMs`, its selected path goes
 * silent for `silentMs`, or the browser reports a network change; again every `retryMs` until
 * ICE is connected. Returns a stop function.
 */
export function watchIce(pc, send, { disconnectedMs = 800, retryMs = 4000, silentMs = 1200, onRestart } = {}) {
  let timer = null;
  let stopped = false;
  let lastAsked = 0;
  const clear = () => {
    clearTimeout(timer);
    timer = null;
  };
  const ask = () => {
    if (stopped || pc.connectionState === 'closed') return;
    const state = pc.iceConnectionState;
    if (state === 'connected' || state === 'completed') return;
    lastAsked = Date.now();
    send({ type: 'ice_restart' });
    onRestart?.();
    clear();
    timer = setTimeout(ask, retryMs);
  };
  const onState = () => {
    const state = pc.iceConnectionState;
    if (state === 'connected' || state === 'completed') {
      clear();
    } else if (state === 'failed') {
      clear();
      ask();
    } else if (state === 'disconnected' && !timer) {
      timer = setTimeout(ask, disconnectedMs);
    }
  };
  const onNetworkChange = () => {
    // The old path may still look fine for a while: restart now, once per change.
    if (Date.now() - lastAsked < 1000) return;
    lastAsked = Date.now();
    if (!stopped && pc.connectionState !== 'closed') {
      send({ type: 'ice_restart' });
      onRestart?.();
    }
  };
  // Chromium reports ICE `disconnected` only seconds after its path went silent (more than 5 s
  // here). A publisher's own path is silent when no candidate pair has received anything at all
  // (media, RTCP, STUN: the server sends a publisher reports every second) for `silentMs`, after
  // it had: ask at once. (A stall of inbound media alone is not enough: that is as often the other
  // side's network as ours.)
  const silenceTimer = setInterval(async () => {
    if (stopped || pc.connectionState === 'closed') return;
    let last = 0;
    let at = 0;
    let publishing = false;
    try {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'candidate-pair' && s.lastPacketReceivedTimestamp) {
          last = Math.max(last, s.lastPacketReceivedTimestamp);
          at = Math.max(at, s.timestamp);
        }
        if (s.type === 'outbound-rtp' && s.packetsSent > 0) publishing = true;
      });
    } catch {
      return;
    }
    const now = Date.now();
    // Only a publisher can count on hearing from the server every second.
    if (publishing && last > 0 && at - last > silentMs && now - lastAsked > retryMs) {
      lastAsked = now;
      send({ type: 'ice_restart' });
      onRestart?.();
    }
  }, 250);
  pc.addEventListener('iceconnectionstatechange', onState);
  window.addEventListener('online', onNetworkChange);
  const conn = navigator.connection;
  conn?.addEventListener?.('change', onNetworkChange);
  return () => {
    stopped = true;
    clear();
    clearInterval(silenceTimer);
    pc.removeEventListener('iceconnectionstatechange', onState);
    window.removeEventListener('online', onNetworkChange);
    conn?.removeEventListener?.('change', onNetworkChange);
  };
}

const blocked = new Set();

/**
 * Play a remote media element; when the browser refuses sound without a gesture
 * (`NotAllowedError`), play it muted (video still shows) and offer a "Tap to start audio"
 * button that unmutes every element held back this way.
 */
export function playWithSound(el) {
  const p = el.play();
  if (!p || typeof p.catch !== 'function') return;
  p.catch((err) => {
    if (!err || err.name !== 'NotAllowedError') return;
    el.muted = true;
    blocked.add(el);
    el.play().catch(() => {});
    showTapButton();
  });
}

function showTapButton() {
  let button = document.getElementById('tap-to-start-audio');
  if (!button) {
    button = document.createElement('button');
    button.id = 'tap-to-start-audio';
    button.type = 'button';
    button.className = 'primary banner';
    button.textContent = RECONNECT.tapToStartAudio;
    button.addEventListener('click', () => {
      for (const el of blocked) {
        el.muted = false;
        el.play().catch(() => {});
      }
      blocked.clear();
      button.hidden = true;
    });
    document.body.prepend(button);
  }
  button.hidden = false;
}

// Many servers, one service (issue 14): the signalling URL carries the consultation id, so a
// load balancer can hash on it; a node that does not own the consultation answers `redirect`
// (then closes with 4302) and the client joins again at the owner. After a drop the client goes
// back to the load balancer (the page's own origin), never to the last node it was on.

/** Close code after a `redirect` message (docs/signaling.md). */
export const REDIRECT_CLOSE = 4302;
/** Redirects followed in a row without a `joined` before giving up (a loop between nodes). */
export const MAX_REDIRECTS = 3;

/** The load balancer's signalling URL for `consultation`: `ws(s)://{host}/ws/{consultation}`. */
export function signalingUrl(loc, consultation) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws/${encodeURIComponent(consultation)}`;
}

/**
 * The URL of a `redirect` message, if it is one to follow: `ws:`/`wss:` (`wss:` only when the
 * page is https), path `/ws/{consultation}` for this very consultation, no credentials, query or
 * fragment. Anything else is ignored (the client then reconnects through the load balancer).
 */
export function redirectTarget(url, consultation, pageProtocol = 'https:') {
  let u;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const schemeOk = u.protocol === 'wss:' || (u.protocol === 'ws:' && pageProtocol !== 'https:');
  if (!schemeOk || u.username || u.password || u.search || u.hash) return null;
  if (u.pathname !== `/ws/${encodeURIComponent(consultation)}`) return null;
  return u.href;
}
