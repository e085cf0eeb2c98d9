// End-to-end encryption (policy `end_to_end`, docs/compliance.md, docs/signaling.md "Stop 11"):
// the key exchange and the frame transforms' set-up. The frames themselves are encrypted in
// e2ee-worker.js.
//
// - Each page makes an ECDH P-256 key pair (the private key never leaves this page, not even
//   to the worker) and publishes its public key to the call (`e2ee_public_key`).
// - The key leader (the practitioner in the call with the smallest participant id) makes the
//   consultation's media key (AES-GCM 256, random) and sends it to each participant wrapped
//   for them (`e2ee_key`): AES-GCM under a key derived with HKDF-SHA-256 from the ECDH secret
//   of the two public keys, bound to the consultation, the epoch and the recipient.
// - When someone leaves the call, the leader makes a new key (the next epoch) for those who
//   remain; the one who left cannot decrypt what follows.
// - The verification code of a practitioner and a participant is a digest of both public keys:
//   both pages show it; if the server put keys of its own in between, the codes differ.

const enc = new TextEncoder();
/** How long the leader keeps sending with the previous key after a rotation (the others first receive the new one). */
const SWITCH_AFTER_MS = 400;

export function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromB64url(text) {
  const s = atob(String(text).replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Whether this browser can encrypt frames (encoded transforms and WebCrypto, in a worker). */
export function e2eeSupported() {
  if (typeof RTCPeerConnection === 'undefined' || typeof Worker === 'undefined') return false;
  if (!globalThis.crypto || !crypto.subtle) return false;
  return (
    typeof globalThis.RTCRtpScriptTransform === 'function' ||
    (typeof RTCRtpSender !== 'undefined' && typeof RTCRtpSender.prototype.createEncodedStreams === 'function')
  );
}

/** Whether the peer connection must be created with `encodedInsertableStreams` (the fallback). */
export function needsInsertableStreams() {
  return typeof globalThis.RTCRtpScriptTransform !== 'function';
}

/** The 6-digit code of a practitioner's and a participant's public keys (raw, base64url). */
export async function verificationCode(consultation, practitionerKey, participantKey) {
  const parts = [enc.encode(`teleconsult-e2ee-code-v1|${consultation}|`), fromB64url(practitionerKey), fromB64url(participantKey)];
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  const digest = new DataView(await crypto.subtle.digest('SHA-256', all));
  const n = digest.getUint32(0) % 1_000_000;
  const s = String(n).padStart(6, '0');
  return `${s.slice(0, 3)} ${s.slice(3)}`;
}

/**
 * @param {object} o
 * @param {(msg: object) => boolean} o.send
 * @param {() => object|null} o.you        the participant we are ({ id, role })
 * @param {() => Map<string, object>} o.participants  the others in the call, by id
 * @param {() => string} o.consultation
 * @param {() => void} o.onChange           codes or key changed (re-render)
 */
export function createE2ee({ send, you, participants, consultation, onChange }) {
  const st = {
    enabled: false,
    keyPair: null,
    publicKey: null,
    /** Others' public keys (base64url), by participant id. */
    peers: new Map(),
    /** Verification codes by participant id (the pair of us and them, one of us a practitioner). */
    codes: new Map(),
    /** (leader) the current media key's raw bytes and epoch. */
    raw: null,
    epoch: null,
    /** The epoch we receive and send with now. */
    current: null,
    worker: null,
    stats: null,
  };
  let ready = null;

  const me = () => (you() || {}).id;
  const isPractitioner = (p) => p && p.role === 'practitioner';

  function leaderId() {
    const ids = [];
    const self = you();
    if (isPractitioner(self)) ids.push(self.id);
    // Every practitioner in the call counts, whether or not its key has reached us yet: a
    // newcomer must not take the lead while the others' keys are on their way.
    for (const [id, p] of participants()) if (isPractitioner(p)) ids.push(id);
    ids.sort();
    return ids[0] ?? null;
  }
  const leading = () => st.enabled && leaderId() === me();

  function worker() {
    if (!st.worker) {
      st.worker = new Worker('/e2ee-worker.js');
      st.worker.addEventListener('message', (ev) => {
        if (ev.data && ev.data.type === 'stats') st.stats = ev.data.stats;
      });
    }
    return st.worker;
  }

  async function init() {
    st.keyPair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
    st.publicKey = b64url(await crypto.subtle.exportKey('raw', st.keyPair.publicKey));
  }

  async function wrappingKey(peerKey, epoch, recipient) {
    const pub = await crypto.subtle.importKey('raw', fromB64url(peerKey), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
    const bits = await crypto.subtle.deriveBits({ name: 'ECDH', public: pub }, st.keyPair.privateKey, 256);
    const hkdf = await crypto.subtle.importKey('raw', bits, 'HKDF', false, ['deriveKey']);
    return crypto.subtle.deriveKey(
      {
        name: 'HKDF',
        hash: 'SHA-256',
        salt: enc.encode(`teleconsult-e2ee-wrap-v1|${consultation()}`),
        info: enc.encode(`${epoch}|${recipient}`),
      },
      hkdf,
      { name: 'AES-GCM', length: 256 },
      false,
      ['encrypt', 'decrypt'],
    );
  }

  async function sendKeyTo(id) {
    const peerKey = st.peers.get(id);
    if (!peerKey || !st.raw || !leading()) return;
    const epoch = st.epoch;
    const k = await wrappingKey(peerKey, epoch, id);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, k, st.raw));
    const blob = new Uint8Array(iv.length + sealed.length);
    blob.set(iv, 0);
    blob.set(sealed, iv.length);
    if (epoch === st.epoch) send({ type: 'e2ee_key', participant: id, epoch, key: b64url(blob) });
  }

  async function refreshCodes() {
    const codes = new Map();
    const self = you();
    for (const [id, key] of st.peers) {
      const p = participants().get(id);
      if (!p || !(isPractitioner(self) || isPractitioner(p))) continue;
      // The practitioner's key first (of two practitioners, the smaller id's): both pages
      // compute the same code.
      const mineFirst = isPractitioner(self) && (!isPractitioner(p) || self.id < id);
      codes.set(id, await verificationCode(consultation(), mineFirst ? st.publicKey : key, mineFirst ? key : st.publicKey));
    }
    st.codes = codes;
    onChange();
  }

  /** (leader) A new media key: to everyone in the call with a public key, then ours. */
  async function rotate() {
    if (!leading()) return;
    st.epoch = st.epoch === null ? crypto.getRandomValues(new Uint32Array(1))[0] & 0xffff : (st.epoch + 1) >>> 0;
    st.raw = crypto.getRandomValues(new Uint8Array(32));
    const epoch = st.epoch;
    const first = st.current === null;
    worker().postMessage({ type: 'key', epoch, raw: st.raw.slice(), send: first });
    await Promise.all([...st.peers.keys()].filter((id) => participants().has(id)).map((id) => sendKeyTo(id)));
    if (first) {
      st.current = epoch;
    } else {
      // The others switch as their key arrives; we switch a moment later, so our frames are
      // not sent under a key they do not hold yet.
      setTimeout(() => {
        if (st.epoch !== epoch) return;
        worker().postMessage({ type: 'send', epoch });
        st.current = epoch;
        onChange();
      }, SWITCH_AFTER_MS);
    }
    onChange();
  }

  async function received(msg) {
    const peerKey = st.peers.get(msg.from);
    const from = participants().get(msg.from);
    // Only the leader's key is taken (the leader itself keeps its own).
    if (!peerKey || !isPractitioner(from) || typeof msg.key !== 'string' || msg.from !== leaderId()) return;
    try {
      const blob = fromB64url(msg.key);
      const k = await wrappingKey(peerKey, msg.epoch, me());
      const raw = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: blob.subarray(0, 12) }, k, blob.subarray(12));
      worker().postMessage({ type: 'key', epoch: msg.epoch, raw, send: true }, [raw]);
      st.current = msg.epoch;
      onChange();
    } catch {
      console.warn('e2ee: a key could not be unwrapped');
    }
  }

  return {
    supported: e2eeSupported,
    /** From `joined`: whether this consultation is end_to_end. */
    policy(p) {
      st.enabled = p === 'end_to_end';
      if (st.enabled && !ready) ready = init();
    },
    get enabled() {
      return st.enabled;
    },
    /** The peer connection needs `encodedInsertableStreams` (the fallback API). */
    get insertableStreams() {
      return st.enabled && needsInsertableStreams();
    },
    /** Encrypt what `sender` sends (`kind`: audio or video). */
    attachSender(sender, kind) {
      if (!st.enabled || !sender) return;
      attach(sender, 'send', kind);
    },
    /** Decrypt what `receiver` receives. */
    attachReceiver(receiver) {
      if (!st.enabled || !receiver) return;
      attach(receiver, 'recv', receiver.track.kind);
    },
    /**
     * We are in the call (again): publish our key; lead if it is our turn. A leader back from a
     * reconnection makes a new key (someone may have left while it was away).
     */
    async entered() {
      if (!st.enabled) return;
      await ready;
      for (const id of [...st.peers.keys()]) if (!participants().has(id)) st.peers.delete(id);
      send({ type: 'e2ee_public_key', key: st.publicKey });
      if (leading()) await rotate();
    },
    async publicKey(msg) {
      if (!st.enabled || typeof msg.key !== 'string' || msg.participant === me()) return;
      await ready;
      st.peers.set(msg.participant, msg.key);
      if (leading()) {
        if (st.raw === null) await rotate();
        else await sendKeyTo(msg.participant);
      }
      await refreshCodes();
    },
    key(msg) {
      if (!st.enabled) return;
      ready.then(() => received(msg));
    },
    /** Someone left the call: their key is forgotten, and the leader rotates. */
    async left(id) {
      if (!st.enabled || !st.peers.has(id)) return;
      st.peers.delete(id);
      await refreshCodes();
      if (leading()) await rotate();
    },
    /** The code to show for `id` (or null). */
    code(id) {
      return st.codes.get(id) ?? null;
    },
    snapshot() {
      return {
        enabled: st.enabled,
        epoch: st.current,
        keyIndex: st.current === null ? null : st.current & 0xff,
        leader: leaderId(),
        codes: Object.fromEntries(st.codes),
        stats: st.stats ? { ...st.stats } : null,
      };
    },
  };

  function attach(target, side, kind) {
    const w = worker();
    if (typeof globalThis.RTCRtpScriptTransform === 'function') {
      target.transform = new RTCRtpScriptTransform(w, { side, kind });
    } else {
      const { readable, writable } = target.createEncodedStreams();
      w.postMessage({ type: 'streams', side, kind, readable, writable }, [readable, writable]);
    }
  }
}
