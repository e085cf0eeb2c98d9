// Teleconsult join page: pre-join preview, waiting room, call, end screens.
// Protocol: docs/signaling.md (version 2: chat and notices). No framework, no bundler, no inline script or style.

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
import { TileSizes } from './video-size.js';
import { NetworkQuality } from './network-quality.js';
import {
  retryDelay,
  watchIce,
  playWithSound,
  signalingUrl,
  redirectTarget,
  REDIRECT_CLOSE,
  MAX_REDIRECTS,
} from './reconnect.js';
import { RECONNECT } from './messages.js';
import { createDocuments } from './documents.js';
import { createChat, createNotices } from './chat.js';
import { createDevices, mediaConstraints } from './devices.js';
import { createPrecall } from './precall.js';
import { createRecording } from './recording.js';
import { createE2ee } from './e2ee.js';
import { t, onLanguageChange, locale } from './i18n.js';
import {
  ROLE_LABEL,
  END_SCREENS,
  ERRORS,
  fatalCloseMessage,
  mediaErrorMessage,
  serverErrorMessage,
  CALL,
} from './messages.js';

const PROTOCOL_VERSION = 2;
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
/** The call screen's chat (chat.js), and the notices of the waiting room. */
let chat = null;
let notices = null;
/** The camera, microphone and speaker pickers (devices.js). */
let devices = null;
/** The waiting room's pre-call check (precall.js). */
let precall = null;
/** Recording with consent: policy, request, indicator (recording.js). */
let recording = null;
/** End-to-end encryption under `end_to_end` (e2ee.js). */
let e2ee = null;
/** Resolvers of the pings the pre-call check sent, oldest first (each `pong` answers one). */
const pongWaiters = [];

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
  /** Remote screen shares by participant id (the stream `{participant}~screen`). */
  remoteScreens: new Map(),
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
  /** Who shares their screen (a participant id, or ours), if anyone. */
  screenSharer: null,
  /** Our screen track while we share. */
  screenTrack: null,
  /** The loudest remote participant lately (groups: on the stage). */
  activeSpeaker: null,
  /** Remote track id → publishing participant id (audio levels). */
  trackOwner: new Map(),
  callStartedAt: 0,
  timer: null,
  speakerTimer: null,
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
  get screenSharer() {
    return app.screenSharer;
  },
  /** Our screen track while we share (tests end it as the browser's "Stop sharing" does). */
  get screenTrack() {
    return app.screenTrack;
  },
  /** What the page shows about recording (policy, running recording, who, asked). */
  get recording() {
    return recording ? recording.snapshot() : null;
  },
  /** End-to-end encryption as the page has it: epoch, key index, verification codes, frame counts. */
  get e2ee() {
    return e2ee ? e2ee.snapshot() : null;
  },
  /** What the last pre-call connection test sent: `camera`, `generated` or null. */
  get precallSource() {
    return precall ? precall.lastSource : null;
  },
  /** Ask to record (as the Record button does; tests check the refusal under end_to_end). */
  requestRecording() {
    send({ type: 'recording_request', language: locale() });
  },
  /** This participant's network quality as shown (network-quality.js). */
  get networkQuality() {
    return { quality: networkQuality.quality, reduced: networkQuality.reduced };
  },
  /** The participant id of the tile on the stage, if any. */
  get onStage() {
    const li = document.querySelector('#tiles > li.on-stage');
    return li ? li.dataset.participant : null;
  },
  /** The MediaStream id shown on the stage, if any (`{participant}~screen` for a share). */
  get onStageStream() {
    const v = document.querySelector('#tiles > li.on-stage video');
    return v && v.srcObject ? v.srcObject.id : null;
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
  return (p && p.display_name) || t('join.participant');
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
  chat = createChat({ root: $('chat'), send, you: () => app.you });
  recording = createRecording({ $, send, you: () => app.you, say: announce });
  e2ee = createE2ee({
    send,
    you: () => app.you,
    participants: () => app.participants,
    consultation: () => app.claims.consultation,
    onChange: renderE2ee,
  });
  devices = createDevices({
    getStream: () => app.localStream,
    replace: replaceLocalTrack,
    sinks: () => [...document.querySelectorAll('#tiles video')],
    say: announce,
  });
  devices.placeIn($('devices-home-prejoin'));
  precall = createPrecall({
    getStream: () => app.localStream,
    ping: measurePing,
    send,
    playTestSound: () => devices.playTestSound(),
    // end_to_end: the test session has no media key, so it must not carry the camera.
    synthetic: () => e2ee.enabled,
  });
  notices =
    app.claims.role === 'practitioner'
      ? createNotices({ form: $('notice-form'), status: $('notice-status'), send })
      : createNotices({ list: $('notice-list'), region: $('notices'), send });
  const { identity, role } = app.claims;
  // An invitation carries no name: the label the practitioner chose arrives with `joined`.
  $('whoami').textContent = identity ? t('join.whoami', { name: identity, role: ROLE_LABEL[role] }) : ROLE_LABEL[role];
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
  const sayWhoJoins = () => {
    $('prejoin-as').textContent = t('join.joiningAs', { name: identity || t('join.invitedPerson'), role: ROLE_LABEL[role] });
  };
  sayWhoJoins();
  onLanguageChange(() => {
    sayWhoJoins();
    renderWhoami();
    renderTiles();
    renderWaitingList();
    renderE2ee();
  });
  if (isExpired(app.claims)) {
    $('media-note').textContent = t('join.expired');
  }
  $('join').addEventListener('click', onJoinClick);
  $('waiting-leave').addEventListener('click', leave);
  $('leave').addEventListener('click', leave);
  $('end').addEventListener('click', endConsultation);
  $('toggle-mic').addEventListener('click', toggleMicrophone);
  $('toggle-camera').addEventListener('click', toggleCamera);
  $('toggle-screen').addEventListener('click', toggleScreenShare);
  $('toggle-devices').addEventListener('click', () => {
    const panel = $('devices-home-call');
    panel.hidden = !panel.hidden;
    $('toggle-devices').setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) devices.refresh().catch(() => {});
  });
  if (!navigator.mediaDevices.getDisplayMedia) $('toggle-screen').hidden = true;
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
    // The devices chosen last time on this device, if they are still there.
    app.localStream = await navigator.mediaDevices.getUserMedia(mediaConstraints());
    attachStream($('preview'), app.localStream);
  } catch (err) {
    app.localStream = null;
    $('media-note').textContent = mediaErrorMessage(err);
  }
  await devices.refresh().catch(() => {});
}

function onJoinClick() {
  clearError();
  $('join').disabled = true;
  announce(t('join.joining'));
  setState('joining');
  connect();
}

// ---------------------------------------------------------------- signalling connection

/** The load balancer's (this page's origin) signalling URL for this consultation. */
function wsUrl() {
  return signalingUrl(location, app.claims.consultation);
}

/** Send a protocol message; false when not connected. */
function send(msg) {
  const ws = app.ws;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify(msg));
    return true;
  }
  return false;
}

/** Connect to `url` (a node's, after a `redirect`), else through the load balancer. */
function connect(url) {
  // A session join redirected to another node presents the ticket that node's redirect gave
  // (the session cookie does not reach the other host); once, and only there.
  const ticket = typeof url === 'string' ? app.redirectTicket : null;
  app.redirectTicket = null;
  if (typeof url !== 'string') {
    app.redirects = 0;
    url = wsUrl();
  }
  app.redirectTo = null;
  const ws = new WebSocket(url);
  app.ws = ws;
  ws.addEventListener('open', () => {
    if (app.ws !== ws) return;
    ws.send(
      JSON.stringify({
        type: 'join',
        // Empty for a session join: the cookie of this handshake is the credential.
        token: ticket || (token.startsWith(SESSION_PREFIX) ? '' : token),
        protocol: PROTOCOL_VERSION,
        consultation: app.claims.consultation,
        // This tab's proof that it holds its seat (after a reload or a dropped network).
        seat_secret: seatSecret(token) || undefined,
      }),
    );
    clearInterval(app.pingTimer);
    // Pongs answer pings in order: a keep-alive holds its place in the queue (no waiter).
    pongWaiters.length = 0;
    app.pingTimer = setInterval(() => {
      if (send({ type: 'ping' })) pongWaiters.push(null);
    }, PING_INTERVAL_MS);
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
  // Another node owns the consultation: join there at once (a few times at most in a row).
  if (code === REDIRECT_CLOSE && app.redirectTo && (app.redirects || 0) < MAX_REDIRECTS) {
    app.redirects = (app.redirects || 0) + 1;
    connect(app.redirectTo);
    return;
  }
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
  announce(t('join.reconnecting'));
  // The ladder of reconnect.js: 0, 0.3, 1.2, 2.7, 4.8 s, then every 7 s.
  const delay = retryDelay(app.reconnectAttempt);
  app.reconnectAttempt += 1;
  clearTimeout(app.reconnectTimer);
  app.reconnectTimer = setTimeout(connect, delay);
}

// ---------------------------------------------------------------- messages from the server

function handleMessage(msg) {
  switch (msg.type) {
    case 'redirect':
      // Followed when the close (4302) arrives; an unexpected URL is ignored.
      app.redirectTo = redirectTarget(String(msg.url || ''), app.claims.consultation, location.protocol);
      app.redirectTicket = app.redirectTo && typeof msg.ticket === 'string' ? msg.ticket : null;
      break;
    case 'joined':
      app.redirects = 0;
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
        announce(t('join.joined', { name: displayName(msg.participant) }));
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
        if (msg.state === 'reconnecting') announce(t('join.isReconnecting', { name: displayName(p) }));
        else if (msg.state === 'admitted') announce(t('join.isBack', { name: displayName(p) }));
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
    case 'chat':
      if (chat && msg.message) chat.message(msg.message);
      break;
    case 'screen_share':
      onScreenShare(msg.participant, !!msg.active);
      break;
    case 'notice':
      if (notices && msg.message) notices.notice(msg.message);
      break;
    case 'chat_history':
      if (chat) chat.history(msg.messages);
      if (notices) notices.history(msg.messages);
      break;
    case 'recording_requested':
      if (recording) recording.requested(msg);
      break;
    case 'e2ee_public_key':
      e2ee.publicKey(msg).catch((err) => console.warn('e2ee:', err && err.name));
      break;
    case 'e2ee_key':
      e2ee.key(msg);
      break;
    case 'recording_state':
      if (recording) recording.state(msg);
      break;
    case 'error':
      onServerError(msg);
      break;
    case 'precall_offer':
      if (precall) precall.onOffer(msg.sdp);
      break;
    case 'precall_ended':
      if (precall) precall.onEnded();
      break;
    case 'pong': {
      const w = pongWaiters.shift();
      if (w) w();
      break;
    }
    default:
      // Unknown message types are ignored (forward compatibility).
      break;
  }
}

function onJoined(msg) {
  app.you = msg.you;
  if (typeof msg.seat_secret === 'string') keepSeat(token, msg.seat_secret);
  renderWhoami();
  if (Array.isArray(msg.ice_servers)) app.iceServers = msg.ice_servers;
  if (recording) recording.policy(msg.policy);
  e2ee.policy(msg.policy);
  if (e2ee.enabled && !e2ee.supported()) {
    // Never join an end-to-end encrypted call unencrypted.
    send({ type: 'leave' });
    fail(t('e2ee.unsupported'));
    return;
  }
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
    precall.startMeter();
    announce(wasReconnecting ? t('join.reconnectedWaiting') : t('join.waitingStatus'));
  } else {
    enterCall();
    if (wasReconnecting) announce(t('join.reconnected'));
  }
}

function renderWhoami() {
  if (app.you && app.you.display_name) {
    $('whoami').textContent = t('join.whoami', { name: app.you.display_name, role: ROLE_LABEL[app.you.role] || '' });
  }
}

function setParticipants(list) {
  app.participants.clear();
  for (const p of list || []) {
    if (!app.you || p.id !== app.you.id) app.participants.set(p.id, { ...p });
  }
}

/** One signalling round trip (ping → pong), in milliseconds. */
function measurePing() {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const timeout = setTimeout(() => reject(new Error('no pong')), 5_000);
    pongWaiters.push(() => {
      clearTimeout(timeout);
      resolve(performance.now() - started);
    });
    if (!send({ type: 'ping' })) {
      clearTimeout(timeout);
      pongWaiters.pop();
      reject(new Error('not connected'));
    }
  });
}

function enterCall() {
  if (precall) precall.stopMeter();
  const first = app.state !== 'in_call';
  setState('in_call');
  showScreen('call');
  devices.placeIn($('devices-home-call'));
  startCallTimer();
  startSpeakerDetection();
  attachStream($('local'), app.localStream);
  if (first) {
    announce(t('join.inCall'));
    $('toggle-mic').focus();
  }
  // One peer connection per (re)connection, made before the server's first offer arrives.
  ensureSession();
  e2ee.entered().catch((err) => console.warn('e2ee:', err && err.name));
  // Tell the others our mute state (it survives reconnections).
  if (app.audioMuted) send({ type: 'mute', kind: 'audio', muted: true });
  if (app.videoMuted) send({ type: 'mute', kind: 'video', muted: true });
  renderTiles();
  renderWaitingList();
  // The list as it is now (after admission, and again after a reconnection); signalling keeps it current.
  if (documents) documents.load();
}

/** Each remote video's tile size, told to the server (simulcast layer per tile). */
const tileSizes = new TileSizes((msg) => send(msg));

/** Our connection's quality (good / weak / bad), and each remote video's, from getStats. */
const networkQuality = new NetworkQuality({
  getPc: () => (app.session ? app.session.pc : null),
  wantedHeight: (trackId) => tileSizes.told.get(trackId),
  onChange: showNetworkQuality,
  onTrack: showTileQuality,
});

function showNetworkQuality(quality, reduced) {
  const el = $('network-indicator');
  el.dataset.quality = quality;
  el.dataset.i18n = `network.${quality}`;
  el.textContent = t(`network.${quality}`);
  $('network-notice').hidden = !(reduced && quality !== 'good');
}

function showTileQuality(trackId, quality) {
  const owner = app.trackOwner.get(trackId);
  if (!owner) return;
  const li = $('tiles').querySelector(`li[data-participant="${CSS.escape(owner)}"]`);
  if (!li || li.dataset.quality === quality) return;
  li.dataset.quality = quality;
  const b = li.querySelector('.badge.network');
  if (!b) return;
  b.hidden = quality === 'good';
  b.dataset.i18n = quality === 'bad' ? 'network.tileBad' : 'network.tileWeak';
  b.textContent = t(b.dataset.i18n);
}

function ensureSession() {
  if (!app.session) {
    tileSizes.reset();
    networkQuality.start();
    app.session = new MediaSession({
      localStream: app.localStream,
      iceServers: app.iceServers,
      send,
      onTrack: onRemoteTrack,
      e2ee,
      onConnectionState: (state) => {
        document.body.dataset.media = state;
        if (state === 'failed') announce(t('join.mediaFailedRetry'));
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
  // A new connection starts without a share (the server forgets it too).
  stopScreenShare({ tell: false });
  app.screenSharer = null;
  if (app.session) {
    app.session.close();
    app.session = null;
  }
  networkQuality.stop();
  app.remoteStreams.clear();
  app.remoteScreens.clear();
  renderTiles();
}

/** A participant's screen share arrives in a stream of its own (see sfu `SCREEN_STREAM_SUFFIX`). */
const SCREEN_SUFFIX = '~screen';

function onRemoteTrack(ev) {
  const stream = ev.streams && ev.streams[0];
  if (!stream) return; // Cannot attribute it to a participant.
  const screen = stream.id.endsWith(SCREEN_SUFFIX);
  const id = screen ? stream.id.slice(0, -SCREEN_SUFFIX.length) : stream.id;
  const streams = screen ? app.remoteScreens : app.remoteStreams;
  if (ev.track && !screen) app.trackOwner.set(ev.track.id, id);
  tileSizes.schedule();
  if (streams.get(id) !== stream) {
    streams.set(id, stream);
    stream.addEventListener('removetrack', () => {
      if (stream.getTracks().length === 0 && streams.get(id) === stream) streams.delete(id);
      renderTiles();
    });
  }
  renderTiles();
}

function removeParticipant(id, reason) {
  const p = app.participants.get(id);
  app.participants.delete(id);
  // end_to_end: a new key for those who remain.
  e2ee.left(id).catch((err) => console.warn('e2ee:', err && err.name));
  app.remoteStreams.delete(id);
  app.remoteScreens.delete(id);
  if (app.screenSharer === id) app.screenSharer = null;
  if (app.activeSpeaker === id) app.activeSpeaker = null;
  if (p) {
    const name = displayName(p);
    announce(
      reason === 'removed'
        ? t('join.wasRemoved', { name })
        : reason === 'timeout'
          ? t('join.lostConnection', { name })
          : t('join.left', { name }),
    );
  }
  renderTiles();
}

function onWaitingList(list) {
  const before = new Set(app.waiting.map((p) => p.id));
  app.waiting = list;
  const arrived = list.filter((p) => !before.has(p.id));
  if (arrived.length === 1) announce(t('join.inWaitingRoom', { name: displayName(arrived[0]) }));
  else if (arrived.length > 1) announce(t('join.manyInWaitingRoom', { count: arrived.length }));
  renderWaitingList();
}

function onServerError(msg) {
  // A refused chat message is said next to the chat; the server's own text is never shown
  // (its code is translated, see messages.js).
  if (chat && chat.refused(msg.code)) return;
  if (msg.code === 'screen_share_busy') {
    onScreenShareRefused();
    return;
  }
  const aboutRecording = recording && recording.refused(msg.code);
  if (aboutRecording) {
    showError(aboutRecording);
    return;
  }
  showError(serverErrorMessage(msg.code));
}

// ---------------------------------------------------------------- rendering

/** end_to_end: the verification codes (ours with the practitioner, or each participant's). */
function renderE2ee() {
  const el = $('e2ee-codes');
  if (!e2ee || !e2ee.enabled) {
    el.hidden = true;
    return;
  }
  el.hidden = false;
  const list = $('e2ee-code-list');
  list.textContent = '';
  for (const [id, p] of app.participants) {
    const code = e2ee.code(id);
    if (!code) continue;
    const li = document.createElement('li');
    li.dataset.participant = id;
    const name = document.createElement('span');
    name.textContent = displayName(p);
    const value = document.createElement('code');
    value.className = 'e2ee-code';
    value.textContent = code;
    li.append(name, ' ', value);
    list.append(li);
  }
  $('e2ee-waiting').hidden = list.childElementCount > 0;
}

function renderTiles() {
  const list = $('tiles');
  const ids = new Set();
  for (const [id, p] of app.participants) if (p.state !== 'left') ids.add(id);
  for (const id of app.remoteStreams.keys()) if (!app.you || id !== app.you.id) ids.add(id);
  if (app.state !== 'in_call' && app.state !== 'reconnecting') ids.clear();

  // A shared screen has a tile of its own, shown while its sharer says they share (the
  // stream outlives a share: the section is reused by the next one).
  const sharer = app.screenSharer;
  const screenStream = sharer && ids.has(sharer) ? app.remoteScreens.get(sharer) || null : null;
  const keys = new Set([...ids].map((id) => `person:${id}`));
  if (screenStream) keys.add(`screen:${sharer}`);

  for (const li of [...list.children]) {
    if (!keys.has(li.dataset.key)) {
      const video = li.querySelector('video');
      if (video) {
        video.srcObject = null;
        tileSizes.unobserve(video);
      }
      li.remove();
    }
  }
  for (const id of ids) {
    let li = list.querySelector(`li[data-key="${CSS.escape(`person:${id}`)}"]`);
    if (!li) {
      li = createTile(id);
      list.append(li);
    }
    updateTile(li, app.participants.get(id), app.remoteStreams.get(id) || null);
  }
  let screenTile = null;
  if (screenStream) {
    screenTile = list.querySelector(`li[data-key="${CSS.escape(`screen:${sharer}`)}"]`);
    if (!screenTile) {
      screenTile = createScreenTile(sharer);
      list.prepend(screenTile);
    }
    updateScreenTile(screenTile, app.participants.get(sharer), screenStream);
  }
  list.dataset.count = String(keys.size);
  $('alone').hidden = ids.size > 0;
  // The stage: a shared screen first, else the active speaker, else (1:1) the other person.
  const stagePerson =
    (app.activeSpeaker && ids.has(app.activeSpeaker) && app.activeSpeaker) || [...ids][0] || null;
  const stageKey = screenTile ? screenTile.dataset.key : stagePerson && `person:${stagePerson}`;
  for (const li of list.children) li.classList.toggle('on-stage', li.dataset.key === stageKey);
  $('screen-indicator').hidden = sharer === null;
}

/** The tile of `id`'s shared screen: the picture and whose screen it is. */
function createScreenTile(id) {
  const li = document.createElement('li');
  li.className = 'tile';
  li.dataset.key = `screen:${id}`;
  li.dataset.participant = id;
  li.dataset.screen = 'true';
  const figure = document.createElement('figure');
  figure.setAttribute('role', 'group');
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'name';
  caption.append(name);
  figure.append(video, caption);
  li.append(figure);
  return li;
}

function updateScreenTile(li, p, stream) {
  const label = t('join.screenOfName', { name: displayName(p) });
  li.querySelector('figure').setAttribute('aria-label', label);
  li.querySelector('.name').textContent = label;
  attachStream(li.querySelector('video'), stream);
}

function createTile(id) {
  const li = document.createElement('li');
  li.className = 'tile';
  li.dataset.key = `person:${id}`;
  li.dataset.participant = id;
  li.dataset.screen = 'false';
  const figure = document.createElement('figure');
  figure.setAttribute('role', 'group');
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'name';
  const mic = badge('mic-muted', 'join.micMutedBadge');
  const cam = badge('cam-off', 'join.cameraOffBadge');
  const rec = badge('reconnecting', 'join.reconnectingBadge');
  const screen = badge('screen', 'join.screenShared');
  const network = badge('network', 'network.tileWeak');
  caption.append(name, mic, cam, rec, screen, network);
  figure.append(video, caption);
  li.append(figure);
  tileSizes.observe(video);
  if (isPractitioner()) {
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'remove';
    remove.dataset.i18n = 'join.remove';
    remove.textContent = t('join.remove');
    remove.addEventListener('click', () => {
      if (!window.confirm(CALL.confirmRemove(displayName(app.participants.get(id))))) return;
      remove.disabled = true;
      send({ type: 'remove', participant: id });
    });
    li.append(remove);
  }
  return li;
}

function badge(cls, key) {
  const span = document.createElement('span');
  span.className = `badge ${cls}`;
  span.dataset.i18n = key;
  span.textContent = t(key);
  span.hidden = true;
  return span;
}

function updateTile(li, p, stream) {
  const name = displayName(p);
  const role = p && ROLE_LABEL[p.role] ? ROLE_LABEL[p.role] : null;
  const audioMuted = !!(p && p.audio_muted);
  const videoMuted = !!(p && p.video_muted);
  const reconnecting = !!(p && p.state === 'reconnecting');
  // An accessible name: the person, then their state (a list, joined by the locale's rules).
  const parts = [role ? t('join.tileLabel', { name, role }) : name];
  if (audioMuted) parts.push(t('join.tileMicMuted'));
  if (videoMuted) parts.push(t('join.tileCameraOff'));
  if (reconnecting) parts.push(t('join.tileReconnecting'));
  if (!stream) parts.push(t('join.tileNoVideo'));

  const figure = li.querySelector('figure');
  figure.setAttribute('aria-label', new Intl.ListFormat(locale(), { type: 'unit', style: 'short' }).format(parts));
  li.querySelector('.name').textContent = role ? t('join.tileName', { name, role }) : name;
  li.querySelector('.mic-muted').hidden = !audioMuted;
  li.querySelector('.cam-off').hidden = !videoMuted;
  li.querySelector('.reconnecting').hidden = !reconnecting;
  li.querySelector('.badge.screen').hidden = !(p && app.screenSharer === p.id);
  li.dataset.audioMuted = String(audioMuted);
  li.dataset.videoMuted = String(videoMuted);
  const remove = li.querySelector('button.remove');
  if (remove) remove.setAttribute('aria-label', t('join.removeName', { name }));
  attachStream(li.querySelector('video'), stream);
}

function renderWaitingList() {
  if (!isPractitioner()) return;
  const ul = $('waiting-list');
  ul.replaceChildren();
  for (const p of app.waiting) {
    // A second device for a seat that is live elsewhere: admitting it disconnects the first.
    const name = p.second_device ? t('join.secondDevice', { name: displayName(p) }) : displayName(p);
    const li = document.createElement('li');
    li.dataset.participant = p.id;
    if (p.second_device) li.dataset.secondDevice = 'true';
    const label = document.createElement('span');
    label.className = 'name';
    label.textContent = ROLE_LABEL[p.role] ? t('join.tileName', { name, role: ROLE_LABEL[p.role] }) : name;
    const admit = document.createElement('button');
    admit.type = 'button';
    admit.className = 'primary';
    admit.textContent = t('join.admit');
    admit.setAttribute('aria-label', t('join.admitName', { name }));
    const reject = document.createElement('button');
    reject.type = 'button';
    reject.textContent = t('join.reject');
    reject.setAttribute('aria-label', t('join.rejectName', { name }));
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
  $('toggle-mic').setAttribute('aria-pressed', String(app.audioMuted));
  document.body.dataset.audioMuted = String(app.audioMuted);
  send({ type: 'mute', kind: 'audio', muted: app.audioMuted });
  announce(app.audioMuted ? CALL.micMuted : CALL.micOn);
}

function toggleCamera() {
  app.videoMuted = !app.videoMuted;
  if (app.localStream) for (const t of app.localStream.getVideoTracks()) t.enabled = !app.videoMuted;
  $('toggle-camera').setAttribute('aria-pressed', String(app.videoMuted));
  document.body.dataset.videoMuted = String(app.videoMuted);
  send({ type: 'mute', kind: 'video', muted: app.videoMuted });
  announce(app.videoMuted ? CALL.cameraOff : CALL.cameraOn);
}

// ---------------------------------------------------------------- devices, screen share, timer

/** A new camera or microphone track (devices.js): in the local stream and in the call. */
async function replaceLocalTrack(kind, track) {
  if (!app.localStream) app.localStream = new MediaStream();
  const stream = app.localStream;
  const old = kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
  track.enabled = kind === 'video' ? !app.videoMuted : !app.audioMuted;
  stream.addTrack(track);
  // The sender takes the new track before the old one stops (an ended track can leave
  // Chromium's encoder without frames even after replaceTrack). A screen share has a sender of
  // its own: the camera keeps going beside it.
  if (app.session) await app.session.replaceTrack(kind, track);
  if (old) {
    stream.removeTrack(old);
    old.stop();
  }
  for (const v of [$('preview'), $('waiting-preview'), $('local')]) {
    v.srcObject = null;
    attachStream(v, stream);
  }
}

async function toggleScreenShare() {
  if (app.screenTrack) {
    stopScreenShare({ tell: true });
    return;
  }
  if (app.screenSharer && app.you && app.screenSharer !== app.you.id) {
    showError(CALL.screenBusy);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 10, max: 15 } }, audio: false });
  } catch {
    announce(CALL.screenFailed);
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (!track || !app.session || !app.session.screenSender) {
    for (const t of stream.getTracks()) t.stop();
    announce(CALL.screenFailed);
    return;
  }
  app.screenTrack = track;
  // The browser's own "Stop sharing" ends the track: stop cleanly from there too.
  track.addEventListener('ended', () => {
    if (app.screenTrack === track) stopScreenShare({ tell: true });
  });
  try {
    track.contentHint = 'detail';
  } catch {
    /* older browsers */
  }
  // Its own section (the camera keeps going): no renegotiation.
  await app.session.replaceTrack('screen', track);
  send({ type: 'screen_share', active: true });
  $('toggle-screen').setAttribute('aria-pressed', 'true');
  announce(CALL.screenStarted);
}

/** Stop our screen share; tell the others if `tell`. */
function stopScreenShare({ tell }) {
  const track = app.screenTrack;
  if (!track) return;
  app.screenTrack = null;
  if (app.session) app.session.replaceTrack('screen', null).catch(() => {});
  track.stop();
  if (tell) send({ type: 'screen_share', active: false });
  $('toggle-screen').setAttribute('aria-pressed', 'false');
  if (app.you && app.screenSharer === app.you.id) app.screenSharer = null;
  renderTiles();
  if (tell) announce(CALL.screenStopped);
}

function onScreenShare(participant, active) {
  const mine = app.you && participant === app.you.id;
  if (active) {
    app.screenSharer = participant;
    if (!mine) announce(CALL.screenOf(displayName(app.participants.get(participant))));
  } else if (app.screenSharer === participant) {
    app.screenSharer = null;
    if (!mine) announce(CALL.screenEnded(displayName(app.participants.get(participant))));
  }
  renderTiles();
}

/** A refused share (someone else shares): stop sending it. */
function onScreenShareRefused() {
  stopScreenShare({ tell: false });
  showError(CALL.screenBusy);
}

function formatElapsed(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

function startCallTimer() {
  if (!app.callStartedAt) app.callStartedAt = Date.now();
  const tick = () => {
    const ms = Date.now() - app.callStartedAt;
    $('call-timer').textContent = formatElapsed(ms);
    $('call-timer').dateTime = `PT${Math.floor(ms / 1000)}S`;
  };
  tick();
  clearInterval(app.timer);
  app.timer = setInterval(tick, 1000);
}

/** Groups: the loudest remote participant (inbound audio levels) takes the stage. */
function startSpeakerDetection() {
  clearInterval(app.speakerTimer);
  let candidate = null;
  let streak = 0;
  app.speakerTimer = setInterval(async () => {
    const pc = app.session && app.session.pc;
    if (!pc || app.participants.size < 2) return;
    let loudest = null;
    let level = 0.02;
    try {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio' && typeof s.audioLevel === 'number' && s.audioLevel > level) {
          const owner = app.trackOwner.get(s.trackIdentifier);
          if (owner) {
            loudest = owner;
            level = s.audioLevel;
          }
        }
      });
    } catch {
      return;
    }
    if (!loudest || loudest === app.activeSpeaker) {
      streak = 0;
      return;
    }
    // Two samples in a row: a cough does not move the stage.
    streak = loudest === candidate ? streak + 1 : 1;
    candidate = loudest;
    if (streak >= 2) {
      app.activeSpeaker = loudest;
      streak = 0;
      renderTiles();
    }
  }, 500);
}

function leave() {
  app.leaving = true;
  send({ type: 'leave' });
  finish('left');
}

function endConsultation() {
  if (!window.confirm(CALL.confirmEnd)) return;
  app.endRequested = true;
  $('end').disabled = true;
  announce(t('join.ending'));
  send({ type: 'end_consultation' });
}

// ---------------------------------------------------------------- endings

function isFinal(state) {
  return ['ended', 'left', 'removed', 'rejected', 'error'].includes(state);
}

function stopEverything() {
  if (precall) precall.stopMeter();
  clearInterval(app.pingTimer);
  clearInterval(app.timer);
  clearInterval(app.speakerTimer);
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
  $('end-heading').textContent = t('join.couldNotConnect');
  $('end-message').textContent = '';
  showScreen('end');
}

start().catch((err) => {
  console.warn('start-up failed:', err && err.name);
  fail(ERRORS.lost);
});
