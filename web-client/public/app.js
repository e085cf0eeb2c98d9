// Teleconsult join page: pre-join preview, waiting room, call, end screens.
// Protocol: docs/signaling.md (version 1). No framework, no bundler, no inline script or style.

import {
  takeTokenFromLocation,
  decodeClaims,
  isExpired,
  storedToken,
  seatSecret,
  keepSeat,
  forgetSeat,
} from './token.js';
import { MediaSession } from './media-session.js';
import { retryDelay, watchIce, playWithSound } from './reconnect.js';
import { RECONNECT } from './messages.js';
import { createDocuments } from './documents.js';
import {
  ROLE_LABEL,
  END_SCREENS,
  ERRORS,
  fatalCloseMessage,
  mediaErrorMessage,
} from './messages.js';

const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 10_000;
/** Stop retrying after this long (the server's default `consultation.reconnect_grace_secs`). */
const RECONNECT_GIVE_UP_MS = 60_000;

const $ = (id) => document.getElementById(id);

// What this tab keeps (in sessionStorage, like a link's token) for a practitioner who joined
// through their login session: `session:` and the consultation id. Not a secret.
const SESSION_PREFIX = 'session:';

/** The login session's CSRF token (documents uploads and deletions of a session join). */
let sessionCsrf = null;

async function loadSessionCsrf() {
  try {
    const res = await fetch('/api/auth/session', { cache: 'no-store', credentials: 'same-origin' });
    if (res.ok) sessionCsrf = (await res.json()).csrf_token || null;
  } catch {
    /* offline: documents will say so when used */
  }
}

/** `/join#session=ID`: the consultation a signed-in practitioner starts (stripped from the bar). */
function takeSessionFromLocation() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const id = params.get('session');
  if (!id || !/^[A-Za-z0-9_-]{1,128}$/.test(id)) return null;
  window.history.replaceState(window.history.state, '', window.location.pathname);
  return id;
}

// The token lives only in this closure: never on `window`, never logged, never in a URL we build.
let token = null;
/** The call screen's "Documents" region (documents.js); asks for the token when it needs it. */
let documents = null;

/** Everything the page knows. `state` is one of:
 * loading, prejoin, joining, waiting, in_call, reconnecting, ended, left, removed, rejected, error */
const app = {
  state: 'loading',
  claims: null,
  you: null,
  /** Other admitted participants, by id. */
  participants: new Map(),
  /** (practitioners) people in the waiting room. */
  waiting: [],
  /** Remote MediaStreams by publishing participant id (`event.streams[0].id`). */
  remoteStreams: new Map(),
  localStream: null,
  audioMuted: false,
  videoMuted: false,
  iceServers: [],
  ws: null,
  session: null,
  pingTimer: null,
  reconnectTimer: null,
  reconnectAttempt: 0,
  droppedAt: 0,
  /** Where to go back to when a reconnection succeeds. */
  wasAdmitted: false,
  leaving: false,
  endRequested: false,
  /** A final verdict announced by a message before the socket closes (rejected, removed, ended). */
  verdict: null,
};

// Test and debugging hook: the live peer connection and a snapshot of the state. No token here.
window.teleconsult = {
  get pc() {
    return app.session ? app.session.pc : null;
  },
  get state() {
    return app.state;
  },
  get participants() {
    return [...app.participants.values()].map((p) => ({ ...p }));
  },
  get waiting() {
    return app.waiting.map((p) => ({ ...p }));
  },
  get you() {
    return app.you ? { ...app.you } : null;
  },
};

// ---------------------------------------------------------------- screens and small UI helpers

const SCREENS = ['loading', 'prejoin', 'waiting', 'call', 'end'];

function showScreen(name) {
  for (const s of SCREENS) $(`screen-${s}`).hidden = s !== name;
}

function setState(state) {
  app.state = state;
  document.body.dataset.state = state;
}

function announce(text) {
  $('status').textContent = text;
}

function showError(text) {
  $('error').textContent = text;
}

function clearError() {
  $('error').textContent = '';
}

function displayName(p) {
  return (p && p.display_name) || 'Participant';
}

function attachStream(video, stream) {
  if (video.srcObject !== stream) {
    video.srcObject = stream;
  }
  if (stream) playWithSound(video);
}

function isPractitioner() {
  const role = app.you ? app.you.role : app.claims && app.claims.role;
  return role === 'practitioner';
}

// ---------------------------------------------------------------- start-up

async function start() {
  // A practitioner starting from the workspace (`/join#session=ID`: their login session, no
  // link), a link opened now, or (a reload of this tab) the one it joined with before.
  const session = takeSessionFromLocation();
  token = session ? `${SESSION_PREFIX}${session}` : takeTokenFromLocation() || storedToken();
  if (!token) {
    fail(ERRORS.noToken);
    return;
  }
  app.claims = token.startsWith(SESSION_PREFIX)
    ? { consultation: token.slice(SESSION_PREFIX.length), identity: null, role: 'practitioner', exp: Infinity, nbf: 0 }
    : decodeClaims(token);
  if (!app.claims) {
    token = null;
    forgetSeat();
    fail(ERRORS.badToken);
    return;
  }
  keepSeat(token, null);
  if (token.startsWith(SESSION_PREFIX)) loadSessionCsrf();
  if (typeof RTCPeerConnection === 'undefined' || !navigator.mediaDevices) {
    fail(ERRORS.noWebRTC);
    return;
  }

  documents = createDocuments({
    root: $('documents'),
    getToken: () => (token.startsWith(SESSION_PREFIX) ? null : token),
    getCsrf: () => sessionCsrf,
    consultation: () => app.claims.consultation,
    you: () => app.you,
  });
  const { identity, role } = app.claims;
  // An invitation carries no name: the label the practitioner chose arrives with `joined`.
  $('whoami').textContent = identity ? `${identity} · ${ROLE_LABEL[role]}` : ROLE_LABEL[role];
  if (role === 'practitioner') {
    // The billing page opens in a new tab with the token in its fragment (never sent to the
    // server; billing.js removes it from the address bar at once); with a login session it
    // needs none.
    const billing = $('billing-link');
    billing.hidden = false;
    billing.addEventListener('click', () => {
      const url = token.startsWith(SESSION_PREFIX) ? '/billing.html' : `/billing.html#token=${encodeURIComponent(token)}`;
      window.open(url, '_blank', 'noopener');
    });
  }
  $('prejoin-name').textContent = identity || 'the person invited';
  $('prejoin-role').textContent = ROLE_LABEL[role];
  if (isExpired(app.claims)) {
    $('media-note').textContent = 'This link seems to have expired; you can still try to join.';
  }
  $('join').addEventListener('click', onJoinClick);
  $('waiting-leave').addEventListener('click', leave);
  $('leave').addEventListener('click', leave);
  $('end').addEventListener('click', endConsultation);
  $('toggle-mic').addEventListener('click', toggleMicrophone);
  $('toggle-camera').addEventListener('click', toggleCamera);
  window.addEventListener('pagehide', () => {
    // A reload and a closed tab look the same here: close the socket without `leave`, so a
    // reload resumes this tab's seat (its secret is in sessionStorage); a closed tab counts
    // as left once the reconnect grace is over.
    if (app.ws && app.ws.readyState === WebSocket.OPEN && !isFinal(app.state)) {
      app.ws.close(1000);
    }
  });

  setState('prejoin');
  showScreen('prejoin');
  $('join').disabled = true;
  await startPreview();
  $('join').disabled = false;
  if (seatSecret(token)) {
    // This tab already holds its seat (a reload): take it back without asking again.
    onJoinClick();
    return;
  }
  $('join').focus();
}

async function startPreview() {
  try {
    app.localStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
      // 360p at 24 fps: plenty for a consultation tile, kinder to phones on weak Wi-Fi.
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24, max: 30 } },
    });
    attachStream($('preview'), app.localStream);
  } catch (err) {
    app.localStream = null;
    $('media-note').textContent = mediaErrorMessage(err);
  }
}

function onJoinClick() {
  clearError();
  $('join').disabled = true;
  announce('Joining…');
  setState('joining');
  connect();
}

// ---------------------------------------------------------------- signalling connection

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

function send(msg) {
  const ws = app.ws;
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function connect() {
  const ws = new WebSocket(wsUrl());
  app.ws = ws;
  ws.addEventListener('open', () => {
    if (app.ws !== ws) return;
    ws.send(
      JSON.stringify({
        type: 'join',
        // Empty for a session join: the cookie of this handshake is the credential.
        token: token.startsWith(SESSION_PREFIX) ? '' : token,
        protocol: PROTOCOL_VERSION,
        consultation: app.claims.consultation,
        // This tab's proof that it holds its seat (after a reload or a dropped network).
        seat_secret: seatSecret(token) || undefined,
      }),
    );
    clearInterval(app.pingTimer);
    app.pingTimer = setInterval(() => send({ type: 'ping' }), PING_INTERVAL_MS);
  });
  ws.addEventListener('message', (ev) => {
    if (app.ws !== ws || typeof ev.data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg && typeof msg.type === 'string') handleMessage(msg);
  });
  ws.addEventListener('close', (ev) => {
    if (app.ws !== ws) return;
    clearInterval(app.pingTimer);
    app.ws = null;
    onSocketClosed(ev.code, ev.reason);
  });
  // An `error` event is always followed by `close`, handled above.
}

function onSocketClosed(code, reason) {
  if (isFinal(app.state)) return;
  if (app.verdict) {
    finish(app.verdict);
    return;
  }
  if (code === 4410 || app.endRequested) {
    finish(app.endRequested ? 'ended_by_you' : 'ended');
    return;
  }
  if (app.leaving) {
    finish('left');
    return;
  }
  const fatal = fatalCloseMessage(code, reason);
  if (fatal) {
    fail(fatal);
    return;
  }
  scheduleReconnect();
}

function scheduleReconnect() {
  teardownMedia();
  if (app.state !== 'reconnecting') {
    app.wasAdmitted = app.state === 'in_call';
    app.droppedAt = Date.now();
    app.reconnectAttempt = 0;
    setState('reconnecting');
  }
  if (Date.now() - app.droppedAt > RECONNECT_GIVE_UP_MS) {
    fail(ERRORS.lost);
    return;
  }
  $('reconnecting').hidden = false;
  announce('Reconnecting…');
  // The ladder of reconnect.js: 0, 0.3, 1.2, 2.7, 4.8 s, then every 7 s.
  const delay = retryDelay(app.reconnectAttempt);
  app.reconnectAttempt += 1;
  clearTimeout(app.reconnectTimer);
  app.reconnectTimer = setTimeout(connect, delay);
}

// ---------------------------------------------------------------- messages from the server

function handleMessage(msg) {
  switch (msg.type) {
    case 'joined':
      onJoined(msg);
      break;
    case 'admitted':
      setParticipants(msg.participants);
      enterCall();
      break;
    case 'waiting_list':
      onWaitingList(msg.participants || []);
      break;
    case 'participant_joined':
      if (msg.participant && (!app.you || msg.participant.id !== app.you.id)) {
        app.participants.set(msg.participant.id, msg.participant);
        announce(`${displayName(msg.participant)} joined.`);
        renderTiles();
      }
      break;
    case 'participant_state': {
      const p = app.participants.get(msg.participant);
      if (!p) break;
      if (msg.state === 'left') {
        removeParticipant(msg.participant, 'left');
      } else {
        p.state = msg.state;
        if (msg.state === 'reconnecting') announce(`${displayName(p)} is reconnecting…`);
        else if (msg.state === 'admitted') announce(`${displayName(p)} is back.`);
        renderTiles();
      }
      break;
    }
    case 'participant_left':
      removeParticipant(msg.participant, msg.reason);
      break;
    case 'mute': {
      const p = app.participants.get(msg.participant);
      if (!p) break;
      if (msg.kind === 'audio') p.audio_muted = !!msg.muted;
      if (msg.kind === 'video') p.video_muted = !!msg.muted;
      renderTiles();
      break;
    }
    case 'track_published':
    case 'track_unpublished':
      // Media follows in the next offer; tiles are driven by the streams themselves.
      break;
    case 'offer':
      if (app.state !== 'in_call') break;
      ensureSession().handleOffer(msg.sdp);
      break;
    case 'ice_candidate':
      if (app.session) app.session.handleRemoteCandidate(msg.candidate ?? null);
      break;
    case 'rejected':
      app.verdict = 'rejected';
      break;
    case 'removed':
      app.verdict = 'removed';
      break;
    case 'consultation_ended':
      app.verdict = app.endRequested ? 'ended_by_you' : 'ended';
      // Show it now: the socket close that follows changes nothing.
      finish(app.verdict);
      break;
    case 'document_added':
      if (documents && msg.document) documents.added(msg.document);
      break;
    case 'document_deleted':
      if (documents && msg.document) documents.removed(msg.document);
      break;
    case 'error':
      onServerError(msg);
      break;
    case 'pong':
      break;
    default:
      // Unknown message types are ignored (forward compatibility).
      break;
  }
}

function onJoined(msg) {
  app.you = msg.you;
  if (typeof msg.seat_secret === 'string') keepSeat(token, msg.seat_secret);
  if (msg.you && msg.you.display_name) {
    $('whoami').textContent = `${msg.you.display_name} · ${ROLE_LABEL[msg.you.role] || ''}`;
  }
  if (Array.isArray(msg.ice_servers)) app.iceServers = msg.ice_servers;
  $('reconnecting').hidden = true;
  clearTimeout(app.reconnectTimer);
  const wasReconnecting = app.state === 'reconnecting';
  app.reconnectAttempt = 0;
  if (isPractitioner()) {
    $('waiting-room').hidden = false;
    $('end').hidden = false;
  }
  setParticipants(msg.participants);
  if (msg.you && msg.you.state === 'waiting') {
    app.participants.clear();
    setState('waiting');
    showScreen('waiting');
    attachStream($('waiting-preview'), app.localStream);
    announce(wasReconnecting ? 'Reconnected. Waiting for your practitioner.' : 'Waiting for your practitioner.');
  } else {
    enterCall();
    if (wasReconnecting) announce('Reconnected.');
  }
}

function setParticipants(list) {
  app.participants.clear();
  for (const p of list || []) {
    if (!app.you || p.id !== app.you.id) app.participants.set(p.id, { ...p });
  }
}

function enterCall() {
  const first = app.state !== 'in_call';
  setState('in_call');
  showScreen('call');
  attachStream($('local'), app.localStream);
  if (first) {
    announce('You are in the consultation.');
    $('toggle-mic').focus();
  }
  // One peer connection per (re)connection, made before the server's first offer arrives.
  ensureSession();
  // Tell the others our mute state (it survives reconnections).
  if (app.audioMuted) send({ type: 'mute', kind: 'audio', muted: true });
  if (app.videoMuted) send({ type: 'mute', kind: 'video', muted: true });
  renderTiles();
  renderWaitingList();
  // The list as it is now (after admission, and again after a reconnection); signalling keeps it current.
  if (documents) documents.load();
}

function ensureSession() {
  if (!app.session) {
    app.session = new MediaSession({
      localStream: app.localStream,
      iceServers: app.iceServers,
      send,
      onTrack: onRemoteTrack,
      onConnectionState: (state) => {
        document.body.dataset.media = state;
        if (state === 'failed') announce('The media connection failed; trying again…');
      },
      onError: (err) => {
        // Never includes the token; SDP errors are reported by the server too.
        console.warn('media negotiation failed:', err && err.name, err && err.message);
      },
    });
    // ICE restarts on this WebSocket when the media path breaks or the network changes.
    app.stopIceWatch = watchIce(app.session.pc, send, { onRestart: () => announce(RECONNECT.mediaRestarting) });
  }
  return app.session;
}

function teardownMedia() {
  if (app.stopIceWatch) {
    app.stopIceWatch();
    app.stopIceWatch = null;
  }
  if (app.session) {
    app.session.close();
    app.session = null;
  }
  app.remoteStreams.clear();
  renderTiles();
}

function onRemoteTrack(ev) {
  const stream = ev.streams && ev.streams[0];
  if (!stream) return; // Cannot attribute it to a participant.
  const id = stream.id;
  if (app.remoteStreams.get(id) !== stream) {
    app.remoteStreams.set(id, stream);
    stream.addEventListener('removetrack', () => {
      if (stream.getTracks().length === 0 && app.remoteStreams.get(id) === stream) {
        app.remoteStreams.delete(id);
      }
      renderTiles();
    });
  }
  renderTiles();
}

function removeParticipant(id, reason) {
  const p = app.participants.get(id);
  app.participants.delete(id);
  app.remoteStreams.delete(id);
  if (p) {
    const name = displayName(p);
    announce(
      reason === 'removed'
        ? `${name} was removed.`
        : reason === 'timeout'
          ? `${name} lost their connection.`
          : `${name} left.`,
    );
  }
  renderTiles();
}

function onWaitingList(list) {
  const before = new Set(app.waiting.map((p) => p.id));
  app.waiting = list;
  const arrived = list.filter((p) => !before.has(p.id));
  if (arrived.length === 1) announce(`${displayName(arrived[0])} is in the waiting room.`);
  else if (arrived.length > 1) announce(`${arrived.length} people are in the waiting room.`);
  renderWaitingList();
}

function onServerError(msg) {
  const text = typeof msg.message === 'string' && msg.message ? msg.message : msg.code;
  if (msg.code === 'bad_sdp' || msg.code === 'media_failed') {
    showError(`The media connection had a problem: ${text}`);
  } else {
    showError(`The server refused that request: ${text}`);
  }
}

// ---------------------------------------------------------------- rendering

function renderTiles() {
  const list = $('tiles');
  const ids = new Set();
  for (const [id, p] of app.participants) if (p.state !== 'left') ids.add(id);
  for (const id of app.remoteStreams.keys()) if (!app.you || id !== app.you.id) ids.add(id);
  if (app.state !== 'in_call' && app.state !== 'reconnecting') ids.clear();

  for (const li of [...list.children]) {
    if (!ids.has(li.dataset.participant)) {
      const video = li.querySelector('video');
      if (video) video.srcObject = null;
      li.remove();
    }
  }
  for (const id of ids) {
    let li = list.querySelector(`li[data-participant="${CSS.escape(id)}"]`);
    if (!li) {
      li = createTile(id);
      list.append(li);
    }
    updateTile(li, app.participants.get(id), app.remoteStreams.get(id) || null);
  }
  list.dataset.count = String(ids.size);
  $('alone').hidden = ids.size > 0;
}

function createTile(id) {
  const li = document.createElement('li');
  li.className = 'tile';
  li.dataset.participant = id;
  const figure = document.createElement('figure');
  figure.setAttribute('role', 'group');
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'name';
  const mic = badge('mic-muted', 'Microphone muted');
  const cam = badge('cam-off', 'Camera off');
  const rec = badge('reconnecting', 'Reconnecting…');
  caption.append(name, mic, cam, rec);
  figure.append(video, caption);
  li.append(figure);
  if (isPractitioner()) {
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'remove';
    remove.textContent = 'Remove';
    remove.addEventListener('click', () => {
      remove.disabled = true;
      send({ type: 'remove', participant: id });
    });
    li.append(remove);
  }
  return li;
}

function badge(cls, text) {
  const span = document.createElement('span');
  span.className = `badge ${cls}`;
  span.textContent = text;
  span.hidden = true;
  return span;
}

function updateTile(li, p, stream) {
  const name = displayName(p);
  const role = p && ROLE_LABEL[p.role] ? ROLE_LABEL[p.role] : null;
  const audioMuted = !!(p && p.audio_muted);
  const videoMuted = !!(p && p.video_muted);
  const reconnecting = !!(p && p.state === 'reconnecting');
  const parts = [role ? `${name} (${role})` : name];
  if (audioMuted) parts.push('microphone muted');
  if (videoMuted) parts.push('camera off');
  if (reconnecting) parts.push('reconnecting');
  if (!stream) parts.push('no video yet');

  const figure = li.querySelector('figure');
  figure.setAttribute('aria-label', parts.join(', '));
  li.querySelector('.name').textContent = role ? `${name} · ${role}` : name;
  li.querySelector('.mic-muted').hidden = !audioMuted;
  li.querySelector('.cam-off').hidden = !videoMuted;
  li.querySelector('.reconnecting').hidden = !reconnecting;
  li.dataset.audioMuted = String(audioMuted);
  li.dataset.videoMuted = String(videoMuted);
  const remove = li.querySelector('button.remove');
  if (remove) remove.setAttribute('aria-label', `Remove ${name}`);
  attachStream(li.querySelector('video'), stream);
}

function renderWaitingList() {
  if (!isPractitioner()) return;
  const ul = $('waiting-list');
  ul.replaceChildren();
  for (const p of app.waiting) {
    // A second device for a seat that is live elsewhere: admitting it disconnects the first.
    const name = p.second_device ? `second device for ${displayName(p)}` : displayName(p);
    const li = document.createElement('li');
    li.dataset.participant = p.id;
    if (p.second_device) li.dataset.secondDevice = 'true';
    const label = document.createElement('span');
    label.className = 'name';
    label.textContent = ROLE_LABEL[p.role] ? `${name} · ${ROLE_LABEL[p.role]}` : name;
    const admit = document.createElement('button');
    admit.type = 'button';
    admit.className = 'primary';
    admit.textContent = 'Admit';
    admit.setAttribute('aria-label', `Admit ${name}`);
    const reject = document.createElement('button');
    reject.type = 'button';
    reject.textContent = 'Reject';
    reject.setAttribute('aria-label', `Reject ${name}`);
    admit.addEventListener('click', () => {
      admit.disabled = reject.disabled = true;
      send({ type: 'admit', participant: p.id });
    });
    reject.addEventListener('click', () => {
      admit.disabled = reject.disabled = true;
      send({ type: 'reject', participant: p.id });
    });
    li.append(label, admit, reject);
    ul.append(li);
  }
  $('waiting-empty').hidden = app.waiting.length > 0;
}

// ---------------------------------------------------------------- controls

function toggleMicrophone() {
  app.audioMuted = !app.audioMuted;
  if (app.localStream) for (const t of app.localStream.getAudioTracks()) t.enabled = !app.audioMuted;
  $('toggle-mic').textContent = app.audioMuted ? 'Unmute microphone' : 'Mute microphone';
  document.body.dataset.audioMuted = String(app.audioMuted);
  send({ type: 'mute', kind: 'audio', muted: app.audioMuted });
  announce(app.audioMuted ? 'Your microphone is muted.' : 'Your microphone is on.');
}

function toggleCamera() {
  app.videoMuted = !app.videoMuted;
  if (app.localStream) for (const t of app.localStream.getVideoTracks()) t.enabled = !app.videoMuted;
  $('toggle-camera').textContent = app.videoMuted ? 'Turn camera on' : 'Turn camera off';
  document.body.dataset.videoMuted = String(app.videoMuted);
  send({ type: 'mute', kind: 'video', muted: app.videoMuted });
  announce(app.videoMuted ? 'Your camera is off.' : 'Your camera is on.');
}

function leave() {
  app.leaving = true;
  send({ type: 'leave' });
  finish('left');
}

function endConsultation() {
  app.endRequested = true;
  $('end').disabled = true;
  announce('Ending the consultation…');
  send({ type: 'end_consultation' });
}

// ---------------------------------------------------------------- endings

function isFinal(state) {
  return ['ended', 'left', 'removed', 'rejected', 'error'].includes(state);
}

function stopEverything() {
  clearInterval(app.pingTimer);
  clearTimeout(app.reconnectTimer);
  $('reconnecting').hidden = true;
  teardownMedia();
  if (app.localStream) for (const t of app.localStream.getTracks()) t.stop();
  const ws = app.ws;
  app.ws = null;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  if (documents) documents.stop();
  token = null;
}

function finish(kind) {
  if (isFinal(app.state)) return;
  forgetSeat();
  const screen = END_SCREENS[kind] || END_SCREENS.ended;
  setState(kind === 'ended_by_you' ? 'ended' : kind);
  stopEverything();
  $('end-heading').textContent = screen.heading;
  $('end-message').textContent = screen.text;
  announce(screen.heading);
  showScreen('end');
  $('end-heading').setAttribute('tabindex', '-1');
  $('end-heading').focus();
}

function fail(message) {
  if (isFinal(app.state)) return;
  forgetSeat();
  setState('error');
  stopEverything();
  showError(message);
  $('end-heading').textContent = 'We could not connect you';
  $('end-message').textContent = '';
  showScreen('end');
}

start().catch((err) => {
  console.warn('start-up failed:', err && err.name);
  fail(ERRORS.lost);
});
