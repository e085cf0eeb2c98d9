// The network-quality indicator (issue 11): good / weak / bad for this participant's own
// connection, from what the browser measures (getStats every POLL_MS): packet loss on what we
// receive and what the server reports of what we send, the round-trip time of the selected
// candidate pair, and whether the video we receive is below what its tile asked for (the server
// gave us a lower simulcast layer because our link could not carry more) or our own upload is
// held back by bandwidth. A change shows only after two samples agree (each of the quality and
// the reduced flag on its own), so the indicator does not flicker. Also per remote video: the quality of that stream, for its tile.

export const POLL_MS = 2000;

/** Loss (0..1) and RTT (ms) at which the connection counts as weak, and as bad. */
export const WEAK = { loss: 0.03, rttMs: 400 };
export const BAD = { loss: 0.1, rttMs: 1000 };

/**
 * The quality for one sample. Pure, for Node's unit test.
 * @param {{loss?: number, rttMs?: number|null, reduced?: boolean, uploadLimited?: boolean}} s
 * @returns {'good'|'weak'|'bad'}
 */
export function classify({ loss = 0, rttMs = null, reduced = false, uploadLimited = false }) {
  if (loss >= BAD.loss || (rttMs !== null && rttMs >= BAD.rttMs)) return 'bad';
  if (loss >= WEAK.loss || (rttMs !== null && rttMs >= WEAK.rttMs) || reduced || uploadLimited) return 'weak';
  return 'good';
}

/** A received frame this much smaller than wanted counts as reduced. */
const REDUCED = 0.8;

/**
 * Whether a video received `frameHeight` pixels high is reduced, given the largest height seen
 * on it and the height its tile asked for (undefined: not told). Pure.
 */
export function isReduced(frameHeight, maxSeen, wanted) {
  if (!frameHeight || !maxSeen) return false;
  const want = Math.min(maxSeen, wanted === undefined || wanted === 0 ? Infinity : wanted);
  return frameHeight < want * REDUCED;
}

export class NetworkQuality {
  /**
   * @param {object} o
   * @param {() => RTCPeerConnection|null} o.getPc
   * @param {(trackId: string) => number|undefined} o.wantedHeight  what the tile asked for
   * @param {(quality: string, reduced: boolean) => void} o.onChange  our own quality changed
   * @param {(trackId: string, quality: string) => void} [o.onTrack]  one remote video's quality
   */
  constructor({ getPc, wantedHeight, onChange, onTrack }) {
    this.getPc = getPc;
    this.wantedHeight = wantedHeight;
    this.onChange = onChange;
    this.onTrack = onTrack ?? (() => {});
    this.quality = 'good';
    this.reduced = false;
    this.qualityVotes = new Settle();
    this.reducedVotes = new Settle();
    this.prev = new Map();
    this.maxSeen = new Map();
    this.timer = null;
  }

  start() {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.sample().catch(() => {}), POLL_MS);
  }

  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.prev.clear();
  }

  async sample() {
    const pc = this.getPc();
    if (!pc) return;
    const stats = await pc.getStats();
    const byId = new Map();
    stats.forEach((s) => byId.set(s.id, s));
    let rttMs = null;
    let lost = 0;
    let received = 0;
    let upLoss = 0;
    let uploadLimited = false;
    let reduced = false;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        if (pair && typeof pair.currentRoundTripTime === 'number') rttMs = pair.currentRoundTripTime * 1000;
      } else if (s.type === 'inbound-rtp') {
        const before = this.prev.get(s.id) || { lost: s.packetsLost ?? 0, received: s.packetsReceived ?? 0 };
        const dl = Math.max(0, (s.packetsLost ?? 0) - before.lost);
        const dr = Math.max(0, (s.packetsReceived ?? 0) - before.received);
        this.prev.set(s.id, { lost: s.packetsLost ?? 0, received: s.packetsReceived ?? 0 });
        lost += dl;
        received += dr;
        if (s.kind === 'video' && s.trackIdentifier) {
          const h = s.frameHeight ?? 0;
          const max = Math.max(this.maxSeen.get(s.trackIdentifier) ?? 0, h);
          this.maxSeen.set(s.trackIdentifier, max);
          const r = isReduced(h, max, this.wantedHeight(s.trackIdentifier));
          reduced ||= r;
          this.onTrack(s.trackIdentifier, classify({ loss: dl / Math.max(1, dl + dr), reduced: r }));
        }
      } else if (s.type === 'remote-inbound-rtp' && typeof s.fractionLost === 'number') {
        upLoss = Math.max(upLoss, s.fractionLost);
      } else if (s.type === 'outbound-rtp' && s.kind === 'video' && s.qualityLimitationReason === 'bandwidth') {
        uploadLimited = true;
      }
    });
    const loss = Math.max(lost / Math.max(1, lost + received), upLoss);
    // Each of the two settles on its own: a quality flipping between weak and bad must not hold
    // back the notice that video was reduced.
    const quality = this.qualityVotes.push(classify({ loss, rttMs, reduced, uploadLimited }));
    const stillReduced = this.reducedVotes.push(reduced);
    const next = { quality: quality ?? this.quality, reduced: stillReduced ?? this.reduced };
    if (next.quality === this.quality && next.reduced === this.reduced) return;
    this.quality = next.quality;
    this.reduced = next.reduced;
    this.onChange(this.quality, this.reduced);
  }
}

/** A value that counts once two samples in a row agree on it. Pure, for Node's test. */
export class Settle {
  constructor() {
    this.last = undefined;
  }
  /** The value if the previous sample was the same, else `null`. */
  push(value) {
    const settled = value === this.last ? value : null;
    this.last = value;
    return settled;
  }
}
