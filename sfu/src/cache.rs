//! The packet cache of one published track: the most recent packets as received (unprotected),
//! shared by every subscription of the track. A NACK from any subscriber is answered from here
//! (its sequence number mapped back through that subscription's munger), instead of a copy of
//! the history per subscriber (LiveKit `pkg/sfu/buffer`, mediasoup's `RtpStreamSend` buffer).
//!
//! A ring indexed by sequence number, bounded in packets and in bytes. Each slot keeps its buffer
//! between uses: once warm, caching a packet copies its payload and allocates nothing.

use crate::forward::extend_seq;
use std::time::Instant;

/// One cached packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached<'a> {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    /// The first packet of a keyframe.
    pub keyframe: bool,
    /// When it was received.
    pub arrival: Instant,
    /// Empty for a padding-only packet.
    pub payload: &'a [u8],
}

/// What the cache keeps of a packet besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    /// The first packet of a keyframe (what a new subscription's replay starts from).
    pub keyframe: bool,
    pub arrival: Instant,
}

#[derive(Default)]
struct Slot {
    /// Extended sequence number held, `None`: empty.
    ext: Option<u64>,
    /// Where its payload starts in the byte ring (a virtual position: see `PacketCache`).
    at: u64,
    len: u32,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    keyframe: bool,
    arrival: Option<Instant>,
}

/// See the module documentation. Payloads live in one byte ring (`data`), each contiguous at a
/// virtual position that only grows (`at`; physical offset `at % data.len()`); a packet is still
/// held while nothing written since has come round to it (`written <= at + data.len()`). The
/// ring starts small and doubles, up to the byte budget, whenever it would overwrite packets
/// younger than [`RETAIN`]: its memory follows the track's bitrate (about a second of it), not a
/// fixed packet count times the largest packet.
pub struct PacketCache {
    slots: Vec<Slot>,
    data: Vec<u8>,
    max_bytes: usize,
    /// Virtual end of the latest payload written.
    written: u64,
    /// When the ring's current lap (a pass over `data`) began.
    lap_start: Option<Instant>,
    /// Highest extended sequence number inserted.
    highest: Option<u64>,
    /// Lowest extended sequence number that may still be held (eviction cursor).
    oldest: u64,
    /// Extended sequence number of the latest keyframe's first packet inserted.
    keyframe: Option<u64>,
}

impl std::fmt::Debug for PacketCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketCache")
            .field("capacity", &self.slots.len())
            .field("ring", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Packets kept per video track: at 1.5 Mbit/s (~170 packets/s) about 1.5 s, at 500 kbit/s
/// 4 s, bounded further by [`RETAIN`] and the byte budget.
pub const VIDEO_PACKETS: usize = 256;
/// The most payload bytes kept per video track (about 1 s at 2 Mbit/s).
pub const VIDEO_BYTES: usize = 256 * 1024;
/// Audio is not retransmitted by browsers (no NACK for Opus), but a small cache is cheap.
pub const AUDIO_PACKETS: usize = 64;
pub const AUDIO_BYTES: usize = 16 * 1024;
/// The ring grows rather than overwrite packets younger than this: a retransmission is useful
/// for about a round trip plus the receiver's jitter buffer, and a new subscription's replay
/// reaches back at most this far (`core/media.rs`).
pub const RETAIN: std::time::Duration = std::time::Duration::from_secs(1);
/// The ring's first size.
const INITIAL_BYTES: usize = 8 * 1024;

impl PacketCache {
    /// A cache of at most `packets` packets (rounded up to a power of two) and `max_bytes`
    /// payload bytes.
    pub fn new(packets: usize, max_bytes: usize) -> PacketCache {
        let n = packets.max(1).next_power_of_two();
        PacketCache {
            slots: (0..n).map(|_| Slot::default()).collect(),
            data: Vec::new(),
            max_bytes: max_bytes.max(1),
            written: 0,
            lap_start: None,
            highest: None,
            oldest: 0,
            keyframe: None,
        }
    }

    fn slot(&self, ext: u64) -> usize {
        (ext as usize) & (self.slots.len() - 1)
    }

    fn evict(&mut self, i: usize) {
        self.slots[i].ext = None;
    }

    /// Whether slot `s`'s payload is still in the ring.
    fn intact(&self, s: &Slot) -> bool {
        self.written <= s.at + self.data.len() as u64
    }

    /// Keep a packet. Returns `false` (and keeps nothing) for one too old for the ring, or
    /// larger than the whole byte budget.
    pub fn insert(&mut self, meta: Meta, payload: &[u8]) -> bool {
        let seq = meta.seq;
        if payload.len() > self.max_bytes {
            return false;
        }
        let cap = self.slots.len() as u64;
        let ext = match self.highest {
            None => {
                let ext = (1 << 16) | seq as u64;
                self.oldest = ext;
                ext
            }
            Some(h) => extend_seq(h, seq),
        };
        let highest = self.highest.map_or(ext, |h| h.max(ext));
        if ext + cap <= highest {
            return false;
        }
        self.highest = Some(highest);
        // Slots the ring moved past are stale.
        let floor = highest.saturating_sub(cap - 1);
        if floor > self.oldest + cap {
            // A jump further than the ring: everything held is stale.
            for j in 0..self.slots.len() {
                self.evict(j);
            }
            self.oldest = floor;
        }
        while self.oldest < floor {
            let i = self.slot(self.oldest);
            if self.slots[i].ext.is_some_and(|e| e < floor) {
                self.evict(i);
            }
            self.oldest += 1;
        }
        self.oldest = self.oldest.min(ext);
        let i = self.slot(ext);
        self.evict(i);
        let at = self.place(payload.len(), meta.arrival);
        let off = (at % self.data.len() as u64) as usize;
        self.data[off..off + payload.len()].copy_from_slice(payload);
        self.written = at + payload.len() as u64;
        let s = &mut self.slots[i];
        s.ext = Some(ext);
        s.at = at;
        s.len = payload.len() as u32;
        s.timestamp = meta.timestamp;
        s.marker = meta.marker;
        s.payload_type = meta.payload_type;
        s.keyframe = meta.keyframe;
        s.arrival = Some(meta.arrival);
        if meta.keyframe && self.keyframe.is_none_or(|k| ext > k) {
            self.keyframe = Some(ext);
        }
        true
    }

    /// Where a payload of `len` bytes goes (a virtual position, contiguous in the ring), growing
    /// the ring first if a new lap would begin less than [`RETAIN`] after the last one.
    fn place(&mut self, len: usize, now: Instant) -> u64 {
        if self.data.is_empty() {
            self.data
                .resize(INITIAL_BYTES.min(self.max_bytes).max(len), 0);
            self.lap_start = Some(now);
        }
        loop {
            if len > self.data.len() {
                self.grow(now);
                continue;
            }
            let cap = self.data.len() as u64;
            let off = self.written % cap;
            // Contiguous: a payload that does not fit before the ring's end starts the next lap.
            let at = if off + len as u64 > cap {
                self.written - off + cap
            } else {
                self.written
            };
            let new_lap = self.written > 0 && at / cap != (self.written - 1) / cap;
            if !new_lap {
                return at;
            }
            let young = self
                .lap_start
                .is_some_and(|t| now.saturating_duration_since(t) < RETAIN);
            if young && self.data.len() < self.max_bytes {
                self.grow(now);
                continue;
            }
            self.lap_start = Some(now);
            return at;
        }
    }

    /// Double the ring (up to the budget), keeping every packet still held, in order.
    fn grow(&mut self, now: Instant) {
        let size = (self.data.len() * 2).min(self.max_bytes);
        let mut data = vec![0u8; size];
        let mut written = 0u64;
        if let Some(highest) = self.highest {
            for ext in self.oldest..=highest {
                let i = self.slot(ext);
                let s = &self.slots[i];
                if s.ext != Some(ext) {
                    continue;
                }
                if !self.intact(s) || written + u64::from(s.len) > size as u64 {
                    self.slots[i].ext = None;
                    continue;
                }
                let from = (s.at % self.data.len() as u64) as usize;
                let len = s.len as usize;
                data[written as usize..written as usize + len]
                    .copy_from_slice(&self.data[from..from + len]);
                self.slots[i].at = written;
                written += len as u64;
            }
        }
        self.data = data;
        self.written = written;
        self.lap_start = Some(now);
    }

    fn at(&self, ext: u64) -> Option<Cached<'_>> {
        let s = &self.slots[self.slot(ext)];
        if s.ext != Some(ext) || !self.intact(s) {
            return None;
        }
        let off = (s.at % self.data.len() as u64) as usize;
        Some(Cached {
            seq: ext as u16,
            timestamp: s.timestamp,
            marker: s.marker,
            payload_type: s.payload_type,
            keyframe: s.keyframe,
            arrival: s.arrival?,
            payload: &self.data[off..off + s.len as usize],
        })
    }

    /// The packet with sequence number `seq`, if still held.
    pub fn get(&self, seq: u16) -> Option<Cached<'_>> {
        self.at(extend_seq(self.highest?, seq))
    }

    /// The highest sequence number inserted.
    pub fn highest_seq(&self) -> Option<u16> {
        self.highest.map(|h| h as u16)
    }

    /// The first packet of the latest keyframe, if still held.
    pub fn latest_keyframe(&self) -> Option<Cached<'_>> {
        self.at(self.keyframe?)
    }

    /// The packets held from `seq` up to the highest, in sequence order (missing ones skipped):
    /// what a new subscription is replayed from its keyframe on.
    pub fn since(&self, seq: u16) -> impl Iterator<Item = Cached<'_>> + '_ {
        let (from, to) = match self.highest {
            Some(h) => (
                extend_seq(h, seq).max(h.saturating_sub(self.slots.len() as u64 - 1)),
                h,
            ),
            None => (1, 0),
        };
        (from..=to).filter_map(move |e| self.at(e))
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.held().map(|s| s.len as usize).sum()
    }

    /// Bytes of the ring (its memory).
    pub fn ring_bytes(&self) -> usize {
        self.data.len()
    }

    fn held(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots
            .iter()
            .filter(|s| s.ext.is_some() && self.intact(s))
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.held().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u16, keyframe: bool) -> Meta {
        Meta {
            seq,
            timestamp: seq as u32 * 10,
            marker: seq.is_multiple_of(2),
            payload_type: 96,
            keyframe,
            arrival: Instant::now(),
        }
    }

    fn put(c: &mut PacketCache, seq: u16, len: usize) -> bool {
        c.insert(meta(seq, false), &vec![seq as u8; len])
    }

    #[test]
    fn the_latest_keyframe_and_what_followed_it_are_found() {
        let mut c = PacketCache::new(16, 1 << 20);
        assert!(c.latest_keyframe().is_none());
        assert_eq!(c.since(0).count(), 0);
        for s in 65_530..65_535u16 {
            put(&mut c, s, 3);
        }
        assert!(c.insert(meta(65_535, true), b"key"));
        for s in 0..4u16 {
            if s != 2 {
                put(&mut c, s, 3);
            }
        }
        let k = c.latest_keyframe().unwrap();
        assert_eq!((k.seq, k.keyframe, k.payload), (65_535, true, &b"key"[..]));
        // Across the wrap, 2 missing: skipped.
        let seqs: Vec<u16> = c.since(k.seq).map(|p| p.seq).collect();
        assert_eq!(seqs, [65_535, 0, 1, 3]);
        // A later keyframe replaces it; an earlier one (resent late) does not.
        assert!(c.insert(meta(2, true), b"k2"));
        assert!(c.insert(meta(65_533, true), b"old"));
        assert_eq!(c.latest_keyframe().unwrap().seq, 2);
        // Once it falls out of the ring, there is none.
        for s in 4..30u16 {
            put(&mut c, s, 3);
        }
        assert!(c.latest_keyframe().is_none());
        // `since` never reaches back past the ring.
        assert_eq!(c.since(4).count(), 16);
    }

    #[test]
    fn keeps_the_latest_packets_and_answers_by_sequence_number() {
        let mut c = PacketCache::new(8, 1 << 20);
        assert!(c.get(0).is_none());
        for s in 100..120u16 {
            assert!(put(&mut c, s, 10));
        }
        assert_eq!(c.len(), 8);
        assert_eq!(c.bytes(), 80);
        assert!(c.get(111).is_none(), "fell out of the ring");
        let p = c.get(119).unwrap();
        assert_eq!(
            (p.seq, p.timestamp, p.marker, p.payload_type),
            (119, 1190, false, 96)
        );
        assert_eq!(p.payload, &[119u8; 10][..]);
        assert_eq!(c.get(112).unwrap().payload, &[112u8; 10][..]);
        // Too old for the ring: refused, nothing replaced.
        assert!(!put(&mut c, 105, 10));
        assert_eq!(c.get(112).unwrap().payload, &[112u8; 10][..]);
        // Late but within the ring (it was lost, then resent by the publisher).
        let mut c = PacketCache::new(8, 1 << 20);
        put(&mut c, 1, 5);
        put(&mut c, 3, 5);
        assert!(c.get(2).is_none());
        assert!(put(&mut c, 2, 5));
        assert_eq!(c.get(2).unwrap().payload, &[2u8; 5][..]);
        assert_eq!(c.len(), 3);
    }

    fn timed(seq: u16, at: Instant) -> Meta {
        Meta {
            arrival: at,
            ..meta(seq, false)
        }
    }

    #[test]
    fn the_ring_grows_with_the_bitrate_to_about_a_second_and_no_further() {
        let t0 = Instant::now();
        // 500 kbit/s: 60 packets of ~1040 bytes a second, for 5 s.
        let mut c = PacketCache::new(VIDEO_PACKETS, VIDEO_BYTES);
        for i in 0..300u32 {
            let at = t0 + std::time::Duration::from_micros(16_667 * u64::from(i));
            assert!(c.insert(timed(i as u16, at), &[i as u8; 1040]));
        }
        assert!(
            (64 * 1024..=128 * 1024).contains(&c.ring_bytes()),
            "{} bytes of ring",
            c.ring_bytes()
        );
        // Everything of the last second is held, byte for byte.
        for i in 240..300u32 {
            let p = c.get(i as u16).unwrap_or_else(|| panic!("{i} not held"));
            assert_eq!(p.payload, &[i as u8; 1040][..]);
        }
        // 4 Mbit/s: the budget holds.
        let mut c = PacketCache::new(VIDEO_PACKETS, VIDEO_BYTES);
        for i in 0..2000u32 {
            let at = t0 + std::time::Duration::from_micros(2_000 * u64::from(i));
            c.insert(timed(i as u16, at), &[7; 1000]);
        }
        assert_eq!(c.ring_bytes(), VIDEO_BYTES);
        assert!(c.get(1999).is_some());
    }

    #[test]
    fn random_sizes_and_orders_keep_every_held_payload_intact() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let t0 = Instant::now();
        let mut c = PacketCache::new(64, 20_000);
        let mut seq = 0u16;
        for step in 0..20_000u64 {
            seq = match rng.gen_range(0..20) {
                0 => seq.wrapping_sub(rng.gen_range(0..80)),
                1 => seq.wrapping_add(rng.gen_range(0..3000)),
                _ => seq.wrapping_add(1),
            };
            let len = match rng.gen_range(0..10) {
                0 => 0,
                1 => rng.gen_range(3000..20_000),
                _ => rng.gen_range(1..1200),
            };
            let fill = (seq as usize % 251) as u8;
            let at = t0 + std::time::Duration::from_millis(step);
            c.insert(timed(seq, at), &vec![fill; len]);
            if let Some(p) = c.get(seq) {
                assert_eq!(p.payload.len(), len);
            }
            let probe = seq.wrapping_sub(rng.gen_range(0..64));
            if let Some(p) = c.get(probe) {
                assert!(p.payload.iter().all(|&b| b == (probe as usize % 251) as u8));
            }
        }
        assert!(c.ring_bytes() <= 20_000);
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest() {
        let mut c = PacketCache::new(64, 1000);
        for s in 0..10u16 {
            assert!(put(&mut c, s, 300));
            assert!(c.bytes() <= 1000, "{}", c.bytes());
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(6).is_none());
        for s in 7..10 {
            assert!(c.get(s).is_some(), "{s}");
        }
        assert!(!put(&mut c, 10, 1001), "larger than the whole budget");
        assert!(c.get(9).is_some());
    }

    #[test]
    fn wraps_around_the_sequence_space() {
        let mut c = PacketCache::new(16, 1 << 20);
        for i in 0..40u32 {
            put(&mut c, (65_520 + i) as u16, 4);
        }
        // Held: the last 16, across the wrap.
        for i in 24..40u32 {
            let s = (65_520 + i) as u16;
            assert_eq!(c.get(s).map(|p| p.seq), Some(s));
        }
        assert!(c.get(65_535).is_none());
        assert_eq!(c.len(), 16);
        assert_eq!(c.bytes(), 64);
    }

    #[test]
    fn a_jump_far_ahead_clears_what_is_stale() {
        let mut c = PacketCache::new(8, 1 << 20);
        for s in 0..8u16 {
            put(&mut c, s, 10);
        }
        assert!(put(&mut c, 20_000, 10));
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 10);
        assert!(c.get(7).is_none());
    }
}
