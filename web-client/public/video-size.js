// Tile sizes for simulcast (docs/signaling.md, `video_size`): each remote video's tile height in
// device pixels, told to the server so it sends the smallest layer that fills the tile (a
// thumbnail never gets the full layer). Only changes are sent, coalesced, and a size is told
// again after a reconnection (the server's subscriptions are new then).

/** Coalescing delay: a layout that settles sends one message per video. */
export const REPORT_DELAY_MS = 250;

/** A change smaller than this fraction of the last height told is not worth a message. */
export const MIN_CHANGE = 0.15;

/**
 * Whether a tile now `height` pixels high differs enough from `last` (undefined: never told).
 * Pure, for Node's unit test.
 */
export function worthTelling(last, height) {
  if (last === undefined) return true;
  if (last === 0 || height === 0) return last !== height;
  return Math.abs(height - last) / last >= MIN_CHANGE;
}

export class TileSizes {
  /** @param {(msg: object) => boolean|void} send  sends a signalling message */
  constructor(send) {
    this.send = send;
    /** track id → height last told */
    this.told = new Map();
    this.timer = null;
    this.videos = new Set();
    this.observer =
      typeof ResizeObserver === 'undefined' ? null : new ResizeObserver(() => this.schedule());
  }

  /** Follow a tile's `<video>` element. */
  observe(video) {
    this.videos.add(video);
    if (this.observer) this.observer.observe(video);
    this.schedule();
  }

  unobserve(video) {
    this.videos.delete(video);
    if (this.observer) this.observer.unobserve(video);
  }

  /** A new media session: its subscriptions know no sizes yet. */
  reset() {
    this.told.clear();
    this.schedule();
  }

  schedule() {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.report();
    }, REPORT_DELAY_MS);
  }

  report() {
    const ratio = (typeof window !== 'undefined' && window.devicePixelRatio) || 1;
    for (const video of this.videos) {
      const stream = video.srcObject;
      if (!stream || typeof stream.getVideoTracks !== 'function') continue;
      const rect = video.getBoundingClientRect();
      const visible = rect.width > 0 && rect.height > 0;
      const width = visible ? Math.round(rect.width * ratio) : 0;
      const height = visible ? Math.round(rect.height * ratio) : 0;
      for (const track of stream.getVideoTracks()) {
        if (!worthTelling(this.told.get(track.id), height)) continue;
        if (this.send({ type: 'video_size', track: track.id, width, height }) !== false) {
          this.told.set(track.id, height);
        }
      }
    }
  }
}
