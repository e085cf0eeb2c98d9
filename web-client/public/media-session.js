// One RTCPeerConnection per (re)connection. The server is always the offerer: we add our own
// microphone and camera tracks first, then apply each offer in order and answer it. The first
// three sections of the server's first offer are ours to send on: microphone, camera, screen
// (docs/signaling.md); the screen's sender has no track until we share.

/**
 * Simulcast (docs/signaling.md): the server's offer asks for three layers of the camera by rid;
 * each gets its scale and bitrate cap here. q: a quarter of the capture's size, h: half, f: full.
 */
export const SIMULCAST_LAYERS = {
  q: { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  h: { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  f: { scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
};

/**
 * The sender parameters with our layer settings applied to the encodings the offer created;
 * `null` when nothing needs to change (no simulcast, or already set). Pure, for Node's test.
 */
export function simulcastParameters(params) {
  if (!params || !Array.isArray(params.encodings) || params.encodings.length < 2) return null;
  let changed = false;
  for (const encoding of params.encodings) {
    const layer = SIMULCAST_LAYERS[encoding.rid];
    if (!layer) continue;
    for (const [key, value] of Object.entries(layer)) {
      if (encoding[key] !== value) {
        encoding[key] = value;
        changed = true;
      }
    }
  }
  return changed ? params : null;
}

export class MediaSession {
  /**
   * @param {object} opts
   * @param {MediaStream|null} opts.localStream  our camera and microphone (may be null: receive only)
   * @param {RTCIceServer[]} [opts.iceServers]
   * @param {(msg: object) => void} opts.send      sends a signalling message
   * @param {(ev: RTCTrackEvent) => void} opts.onTrack
   * @param {(state: string) => void} [opts.onConnectionState]
   * @param {(err: Error) => void} [opts.onError]
   * @param {object} [opts.e2ee]  end_to_end: encrypts every sender's frames, decrypts every receiver's (e2ee.js)
   */
  constructor({ localStream, iceServers = [], send, onTrack, onConnectionState, onError, e2ee = null }) {
    this.send = send;
    this.onError = onError ?? (() => {});
    this.e2ee = e2ee && e2ee.enabled ? e2ee : null;
    // Default bundle policy: as the answerer we bundle whatever the server's offer bundles.
    this.pc = new RTCPeerConnection(
      this.e2ee && this.e2ee.insertableStreams ? { iceServers, encodedInsertableStreams: true } : { iceServers },
    );
    this.closed = false;
    // Offers are applied strictly one after another.
    this.queue = Promise.resolve();
    // Remote candidates that arrive before the offer they belong to has been applied.
    this.pendingRemoteCandidates = [];
    // Our candidates wait until the answer they belong to has been sent.
    this.pendingLocalCandidates = [];
    this.answerSent = false;
    /** Our senders (`audio`, `video`, `screen`): a device switch or a screen share replaces their track. */
    this.senders = {};

    this.localStream = localStream;
    if (localStream) {
      // The microphone is added BEFORE the first offer is applied, so the offer's recvonly
      // audio section binds to its sender (see docs/signaling.md, flow step 4). The camera is
      // added right AFTER the first offer is applied (`#attachCamera`): the offer asks for
      // simulcast on its video section, and Chromium gives the layers the offer names only to
      // a transceiver the offer created (an `addTrack` sender from before stays single-layer,
      // and the section goes unused); `addTrack` then reuses that transceiver.
      for (const track of localStream.getAudioTracks()) this.senders.audio = this.pc.addTrack(track, localStream);
      if (this.e2ee) this.e2ee.attachSender(this.senders.audio, 'audio');
    }
    /** Receivers whose frames are decrypted already (end_to_end). */
    this.decrypting = new WeakSet();

    this.pc.addEventListener('icecandidate', (ev) => {
      const candidate = ev.candidate && ev.candidate.candidate
        ? {
            candidate: ev.candidate.candidate,
            sdp_mid: ev.candidate.sdpMid ?? null,
            sdp_mline_index: ev.candidate.sdpMLineIndex ?? null,
          }
        : null;
      const msg = { type: 'ice_candidate', candidate };
      if (this.answerSent) this.send(msg);
      else this.pendingLocalCandidates.push(msg);
    });
    this.pc.addEventListener('track', (ev) => {
      // end_to_end: every frame we receive is decrypted before it is decoded.
      if (this.e2ee && ev.receiver && !this.decrypting.has(ev.receiver)) {
        this.decrypting.add(ev.receiver);
        this.e2ee.attachReceiver(ev.receiver);
      }
      onTrack(ev);
    });
    this.pc.addEventListener('connectionstatechange', () => {
      onConnectionState?.(this.pc.connectionState);
    });
  }

  /** Apply a server offer and send our answer. */
  handleOffer(sdp) {
    this.queue = this.queue.then(() => this.#applyOffer(sdp)).catch((err) => this.onError(err));
    return this.queue;
  }

  async #applyOffer(sdp) {
    if (this.closed) return;
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    // The camera first (it must take the camera section's transceiver), then the screen's.
    this.#attachCamera();
    if (!this.senders.screen) this.#bindScreenSection(sdp);
    for (const c of this.pendingRemoteCandidates.splice(0)) await this.#addRemoteCandidate(c);
    const answer = await this.pc.createAnswer();
    if (this.closed) return;
    await this.pc.setLocalDescription(answer);
    if (this.closed) return;
    await this.#configureSimulcast();
    this.send({ type: 'answer', sdp: this.pc.localDescription.sdp });
    this.answerSent = true;
    for (const msg of this.pendingLocalCandidates.splice(0)) this.send(msg);
  }

  /**
   * The offer's third section is the one we share our screen on: we send on it (no track yet),
   * so sharing later is a `replaceTrack`, with no renegotiation.
   */
  #bindScreenSection(sdp) {
    const mid = sectionMid(sdp, 2);
    const transceiver = mid === null ? null : this.pc.getTransceivers().find((t) => t.mid === mid);
    if (!transceiver || transceiver.receiver.track.kind !== 'video') return;
    transceiver.direction = 'sendonly';
    this.senders.screen = transceiver.sender;
    if (this.e2ee) this.e2ee.attachSender(this.senders.screen, 'video');
  }

  /** Once, after the first offer: our camera on the transceiver of the offer's camera section. */
  #attachCamera() {
    if (this.senders.video || !this.localStream) return;
    const [track] = this.localStream.getVideoTracks();
    if (track) this.senders.video = this.pc.addTrack(track, this.localStream);
    if (track && this.e2ee) this.e2ee.attachSender(this.senders.video, 'video');
  }

  /** The camera's layers (the offer made them): scale and bitrate per rid. */
  async #configureSimulcast() {
    const sender = this.senders.video;
    if (!sender) return;
    const params = simulcastParameters(sender.getParameters());
    if (!params) return;
    try {
      await sender.setParameters(params);
    } catch (err) {
      // The layers still flow with the browser's defaults; say why in the console only.
      console.warn('simulcast parameters refused', err && err.name);
    }
  }

  /** A trickled server candidate (`null` = end of candidates). */
  handleRemoteCandidate(candidate) {
    if (this.closed) return;
    if (!this.pc.remoteDescription) {
      this.pendingRemoteCandidates.push(candidate);
      return;
    }
    this.#addRemoteCandidate(candidate).catch((err) => this.onError(err));
  }

  async #addRemoteCandidate(candidate) {
    if (candidate === null || candidate === undefined) {
      // End of candidates.
      try {
        await this.pc.addIceCandidate();
      } catch {
        // Older implementations reject an end-of-candidates marker; nothing is lost.
      }
      return;
    }
    await this.pc.addIceCandidate({
      candidate: candidate.candidate,
      sdpMid: candidate.sdp_mid ?? null,
      sdpMLineIndex: candidate.sdp_mline_index ?? null,
    });
  }

  /** Send `track` instead of what the `kind` sender sends now (no renegotiation). */
  async replaceTrack(kind, track) {
    const sender = this.senders[kind];
    if (sender && !this.closed) await sender.replaceTrack(track);
  }

  /** Our screen sender's `RTCRtpSender`, once bound (tests and stats). */
  get screenSender() {
    return this.senders.screen ?? null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    // The local tracks are not stopped: they belong to the page and survive reconnections.
    this.pc.close();
  }
}

/** The `a=mid` of media section `index` (from 0) of `sdp`, or null. */
export function sectionMid(sdp, index) {
  const sections = sdp.split(/\r?\nm=/).slice(1);
  const section = sections[index];
  if (section === undefined) return null;
  const m = /\r?\na=mid:([^\r\n]+)/.exec(section);
  return m ? m[1] : null;
}
