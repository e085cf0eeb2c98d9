// End-to-end encryption of encoded frames (policy `end_to_end`, docs/compliance.md): this
// worker encrypts every frame we send and decrypts every frame we receive, with AES-GCM under
// the consultation's media key (e2ee.js distributes it; the server never has it).
//
// Frame layout (the one LiveKit and Jitsi use; docs/decisions.md "Stop 11"):
//
//   clear header | AES-GCM ciphertext and 16-byte tag | IV (12 bytes) | IV length (1) | key index (1)
//
// The clear header is what the SFU reads: a VP8 keyframe's 10 bytes (frame tag, start code,
// size), a delta frame's 3 (frame tag), Opus's TOC byte. It is authenticated as additional
// data. The key index is the key's epoch modulo 256: receivers pick the key by it, so a
// rotation switches cleanly and frames in flight with the previous key still decrypt.
//
// Never a plaintext frame out: with no key to send with, a frame is dropped.

'use strict';

const IV_LENGTH = 12;
const TRAILER = IV_LENGTH + 2;
/** How long a superseded key still decrypts frames in flight. */
const OLD_KEY_MS = 5000;

/** key index → { epoch, key: CryptoKey } */
const keys = new Map();
/** The index we encrypt with (null: no key yet, nothing is sent). */
let sendIndex = null;
const stats = { encrypted: 0, decrypted: 0, failed: 0, noKey: 0, sendIndex: null, epochs: [] };

function clearBytes(kind, frame, length) {
  if (kind === 'audio') return Math.min(1, length);
  return Math.min(frame.type === 'key' ? 10 : 3, length);
}

async function encrypt(kind, frame, controller) {
  const entry = sendIndex === null ? null : keys.get(sendIndex);
  if (!entry) {
    stats.noKey += 1;
    return;
  }
  const data = new Uint8Array(frame.data);
  const n = clearBytes(kind, frame, data.length);
  const iv = crypto.getRandomValues(new Uint8Array(IV_LENGTH));
  const header = data.subarray(0, n);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: header }, entry.key, data.subarray(n)),
  );
  const out = new Uint8Array(n + sealed.length + TRAILER);
  out.set(header, 0);
  out.set(sealed, n);
  out.set(iv, n + sealed.length);
  out[out.length - 2] = IV_LENGTH;
  out[out.length - 1] = sendIndex;
  frame.data = out.buffer;
  stats.encrypted += 1;
  controller.enqueue(frame);
}

async function decrypt(kind, frame, controller) {
  const data = new Uint8Array(frame.data);
  if (data.length === 0) {
    // Empty frames (padding) carry nothing to decrypt.
    controller.enqueue(frame);
    return;
  }
  const n = clearBytes(kind, frame, data.length);
  const entry = keys.get(data[data.length - 1]);
  if (data.length < n + 16 + TRAILER || data[data.length - 2] !== IV_LENGTH || !entry) {
    stats.failed += 1;
    return;
  }
  const ivAt = data.length - TRAILER;
  try {
    const plain = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: data.subarray(ivAt, ivAt + IV_LENGTH), additionalData: data.subarray(0, n) },
        entry.key,
        data.subarray(n, ivAt),
      ),
    );
    const out = new Uint8Array(n + plain.length);
    out.set(data.subarray(0, n), 0);
    out.set(plain, n);
    frame.data = out.buffer;
    stats.decrypted += 1;
    controller.enqueue(frame);
  } catch {
    // Not ours, tampered with, or a key we no longer hold: dropped, never shown.
    stats.failed += 1;
  }
}

function pipe({ readable, writable, side, kind }) {
  const transform = new TransformStream({
    transform: (frame, controller) =>
      side === 'send' ? encrypt(kind, frame, controller) : decrypt(kind, frame, controller),
  });
  readable.pipeThrough(transform).pipeTo(writable).catch(() => {
    // The sender or receiver went away (the peer connection closed).
  });
}

async function setKey(epoch, raw, send) {
  const key = await crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
  const index = epoch & 0xff;
  keys.set(index, { epoch, key });
  if (send) sendIndex = index;
  // Older keys stop decrypting a little later (frames in flight), then are forgotten.
  setTimeout(() => {
    for (const [i, e] of keys) if (e.epoch < epoch && i !== sendIndex) keys.delete(i);
  }, OLD_KEY_MS);
}

function report() {
  stats.sendIndex = sendIndex;
  stats.epochs = [...keys.values()].map((e) => e.epoch);
  self.postMessage({ type: 'stats', stats });
}

// RTCRtpScriptTransform (the standard API).
self.addEventListener('rtctransform', (event) => {
  const t = event.transformer;
  pipe({ readable: t.readable, writable: t.writable, side: t.options.side, kind: t.options.kind });
});

self.addEventListener('message', (event) => {
  const msg = event.data || {};
  if (msg.type === 'streams') {
    // Chromium's createEncodedStreams fallback: the streams are transferred here.
    pipe(msg);
  } else if (msg.type === 'key') {
    setKey(msg.epoch, msg.raw, !!msg.send).then(report, () => {});
  } else if (msg.type === 'send') {
    // Switch to a key already held (the practitioner, once the others have it).
    if (keys.has(msg.epoch & 0xff)) sendIndex = msg.epoch & 0xff;
    report();
  }
});

setInterval(report, 500);
