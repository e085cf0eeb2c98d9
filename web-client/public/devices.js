// Camera, microphone and speaker choice, before and during the call: the pickers, the
// front/back switch on phones, the choice remembered on this device (localStorage: device ids
// only, never shared), and the sentences for a denied permission or a missing device.

import { DEVICES } from './messages.js';

const STORE_KEY = 'teleconsult.devices';

export function rememberedDevices() {
  try {
    const v = JSON.parse(localStorage.getItem(STORE_KEY) || '{}');
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {};
  }
}

function remember(kind, deviceId) {
  const v = rememberedDevices();
  v[kind] = deviceId;
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(v));
  } catch {
    /* private mode: the choice lasts for this page only */
  }
}

/** getUserMedia constraints for the remembered devices (preferred, not required). */
export function mediaConstraints(overrides = {}) {
  const v = { ...rememberedDevices(), ...overrides };
  const audio = { echoCancellation: true, noiseSuppression: true };
  // 360p at 24 fps: plenty for a consultation, kinder to phones on weak Wi-Fi.
  const video = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24, max: 30 } };
  if (v.microphone) audio.deviceId = { ideal: v.microphone };
  if (v.facingMode) video.facingMode = { ideal: v.facingMode };
  else if (v.camera) video.deviceId = { ideal: v.camera };
  return { audio, video };
}

/**
 * The pickers in `#devices`. `getStream()` is the page's local stream; `replace(kind, track)`
 * puts a new track in it and in the call; `sinks()` lists the elements playing remote audio.
 */
export function createDevices({ getStream, replace, sinks, say }) {
  const root = document.getElementById('devices');
  const selects = {
    videoinput: document.getElementById('camera-select'),
    audioinput: document.getElementById('microphone-select'),
    audiooutput: document.getElementById('speaker-select'),
  };
  const note = document.getElementById('devices-note');
  const switchButton = document.getElementById('switch-camera');
  const speakerRow = document.getElementById('speaker-row');
  const canPickSpeaker = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;
  let facing = rememberedDevices().facingMode || 'user';

  function current(kind) {
    const stream = getStream();
    const track = stream && (kind === 'videoinput' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0]);
    return track ? track.getSettings().deviceId : null;
  }

  async function refresh() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const all = await navigator.mediaDevices.enumerateDevices();
    const counts = {};
    for (const [kind, select] of Object.entries(selects)) {
      const list = all.filter((d) => d.kind === kind && d.deviceId);
      counts[kind] = list.length;
      const chosen = kind === 'audiooutput' ? rememberedDevices().speaker : current(kind);
      select.replaceChildren(
        ...list.map((d, i) => {
          const o = document.createElement('option');
          o.value = d.deviceId;
          // Labels come from the browser (empty before permission): a numbered fallback.
          o.textContent = d.label || DEVICES.unnamed[kind](i + 1);
          o.selected = d.deviceId === chosen;
          return o;
        }),
      );
      select.disabled = list.length === 0;
    }
    speakerRow.hidden = !canPickSpeaker || counts.audiooutput === 0;
    // Phones: two cameras or more, switch between front and back.
    switchButton.hidden = counts.videoinput < 2;
    if (counts.videoinput === 0 && counts.audioinput === 0) note.textContent = DEVICES.none;
  }

  async function useDevice(kind, deviceId, extra = {}) {
    const video = kind === 'videoinput';
    try {
      const constraints = mediaConstraints(video ? { camera: deviceId, facingMode: extra.facingMode } : { microphone: deviceId });
      // A device picked by hand is required, not merely preferred.
      if (deviceId) (video ? constraints.video : constraints.audio).deviceId = { exact: deviceId };
      const stream = await navigator.mediaDevices.getUserMedia(video ? { video: constraints.video } : { audio: constraints.audio });
      const track = video ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
      await replace(video ? 'video' : 'audio', track);
      if (extra.facingMode) remember('facingMode', extra.facingMode);
      else if (video) remember('facingMode', undefined);
      remember(video ? 'camera' : 'microphone', track.getSettings().deviceId || deviceId);
      note.textContent = '';
      say(video ? DEVICES.cameraChanged : DEVICES.microphoneChanged);
    } catch (err) {
      note.textContent = DEVICES.failed(err && err.name);
    }
    await refresh();
  }

  selects.videoinput.addEventListener('change', () => useDevice('videoinput', selects.videoinput.value));
  selects.audioinput.addEventListener('change', () => useDevice('audioinput', selects.audioinput.value));
  selects.audiooutput.addEventListener('change', async () => {
    const id = selects.audiooutput.value;
    remember('speaker', id);
    await applySpeaker();
    say(DEVICES.speakerChanged);
  });
  switchButton.addEventListener('click', () => {
    facing = facing === 'user' ? 'environment' : 'user';
    useDevice('videoinput', undefined, { facingMode: facing });
  });
  document.getElementById('speaker-test').addEventListener('click', playTestSound);
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener('devicechange', () => refresh().catch(() => {}));
  }

  async function applySpeaker() {
    const id = rememberedDevices().speaker;
    if (!canPickSpeaker || !id) return;
    for (const el of sinks()) {
      if (el.sinkId !== id) await el.setSinkId(id).catch(() => {});
    }
  }

  /** A short two-tone chime on the chosen speaker. */
  async function playTestSound() {
    const ctx = new AudioContext();
    const dest = ctx.createMediaStreamDestination();
    const gain = ctx.createGain();
    gain.gain.value = 0.2;
    gain.connect(dest);
    for (const [freq, at] of [[660, 0], [880, 0.25]]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = freq;
      osc.connect(gain);
      osc.start(ctx.currentTime + at);
      osc.stop(ctx.currentTime + at + 0.2);
    }
    const audio = new Audio();
    audio.srcObject = dest.stream;
    const id = rememberedDevices().speaker;
    if (canPickSpeaker && id) await audio.setSinkId(id).catch(() => {});
    await audio.play().catch(() => {});
    say(DEVICES.testSound);
    setTimeout(() => {
      audio.srcObject = null;
      ctx.close().catch(() => {});
    }, 800);
  }

  /** Put the pickers in `container` (pre-join screen, or the call's devices panel). */
  function placeIn(container) {
    container.append(root);
    root.hidden = false;
  }

  return { refresh, placeIn, applySpeaker, playTestSound };
}
