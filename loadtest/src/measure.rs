//! Measurements shared by publishers and subscribers in one process: the send log (when each
//! packet left its publisher, keyed by publisher, kind and RTP sequence number), per received
//! track statistics (packets, loss from sequence gaps, RFC 3550 jitter, bitrate, forwarding
//! latency) and a small log-linear latency histogram.
//!
//! Latency is `receive − send` for the same `(publisher stream id, kind, sequence number)`: our
//! SFU rewrites SSRCs but passes sequence numbers through, and a subscriber names the publisher
//! of a received track by its stream id (the publisher's participant id). An SFU that renumbers
//! (Janus's VideoRoom starts every subscription at its own base) shifts all sequence numbers of
//! a subscription by one constant: each received track learns that offset by finding its first
//! packets' payload fingerprints in the publisher's log, confirmed by two packets agreeing.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Media kind of a track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// RTP clock rate of the codecs we use (Opus, VP8).
    pub fn clock_rate(self) -> f64 {
        match self {
            MediaKind::Audio => 48_000.0,
            MediaKind::Video => 90_000.0,
        }
    }
}

/// Send times of one published track, indexed by sequence number modulo the ring size.
/// Each slot packs `seq << 48 | (µs since the log's base + 1)`; 0 is empty. Lock-free.
/// `prints` holds each packet's payload fingerprint, to learn a renumbering SFU's offset.
pub struct TrackLog {
    slots: Box<[AtomicU64]>,
    prints: Box<[AtomicU64]>,
}

/// Fingerprint of an RTP payload: FNV-1a over its length and first 64 bytes (a VP8 payload
/// descriptor and the start of the frame data, or an Opus frame), never 0.
pub fn fingerprint(payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in (payload.len() as u32)
        .to_le_bytes()
        .iter()
        .chain(&payload[..payload.len().min(64)])
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

/// Ring size: 4096 packets, about 25 s of 1.2 Mbit/s video — far longer than any latency.
const RING: usize = 4096;
const TIME_MASK: u64 = (1 << 48) - 1;

impl Default for TrackLog {
    fn default() -> Self {
        TrackLog {
            slots: (0..RING).map(|_| AtomicU64::new(0)).collect(),
            prints: (0..RING).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl TrackLog {
    /// Packet `seq` with payload fingerprint `print` left at `at_us`.
    pub fn record(&self, seq: u16, at_us: u64, print: u64) {
        let v = ((seq as u64) << 48) | ((at_us + 1) & TIME_MASK);
        self.prints[seq as usize % RING].store(print, Ordering::Relaxed);
        self.slots[seq as usize % RING].store(v, Ordering::Relaxed);
    }

    /// Fingerprint of packet `seq`, if still in the ring.
    fn print(&self, seq: u16) -> Option<u64> {
        self.lookup(seq)?;
        Some(self.prints[seq as usize % RING].load(Ordering::Relaxed))
    }

    /// The sequence number of a logged packet with fingerprint `print` (a ring scan: only while
    /// a track learns its offset).
    fn find_print(&self, print: u64) -> Option<u16> {
        (0..RING).find_map(|i| {
            if self.prints[i].load(Ordering::Relaxed) != print {
                return None;
            }
            let v = self.slots[i].load(Ordering::Relaxed);
            (v != 0).then_some((v >> 48) as u16)
        })
    }

    /// When packet `seq` was sent (µs since the log's base), if still in the ring.
    pub fn lookup(&self, seq: u16) -> Option<u64> {
        let v = self.slots[seq as usize % RING].load(Ordering::Relaxed);
        (v != 0 && (v >> 48) as u16 == seq).then(|| (v & TIME_MASK) - 1)
    }
}

/// The process-wide send log: one [`TrackLog`] per published track.
pub struct SendLog {
    base: Instant,
    tracks: RwLock<HashMap<(String, MediaKind), Arc<TrackLog>>>,
}

impl Default for SendLog {
    fn default() -> Self {
        SendLog {
            base: Instant::now(),
            tracks: RwLock::default(),
        }
    }
}

impl SendLog {
    /// Microseconds since the log's base.
    pub fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    pub fn us_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }

    /// The log of `publisher`'s `kind` track (created on first use).
    pub fn track(&self, publisher: &str, kind: MediaKind) -> Arc<TrackLog> {
        let key = (publisher.to_string(), kind);
        if let Some(t) = self.tracks.read().unwrap().get(&key) {
            return t.clone();
        }
        self.tracks.write().unwrap().entry(key).or_default().clone()
    }

    /// The log of a track if its publisher registered it.
    pub fn find(&self, publisher: &str, kind: MediaKind) -> Option<Arc<TrackLog>> {
        self.tracks
            .read()
            .unwrap()
            .get(&(publisher.to_string(), kind))
            .cloned()
    }
}

/// Log-linear histogram of microsecond values: 32 sub-buckets per power of two (≈3 % precision).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    let sub = ((v >> shift) as usize) & (SUB - 1);
    ((shift as usize + 1) << SUB_BITS) + sub
}

/// Largest value that falls in bucket `i`.
fn upper_of(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let sub = (i & (SUB - 1)) as u64;
    (((SUB as u64) | sub) << shift) + ((1u64 << shift) - 1)
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket_of(us)] += 1;
        self.count += 1;
        self.sum_us += us;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Remove `earlier`'s samples (a snapshot of this histogram taken before).
    pub fn subtract(&mut self, earlier: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&earlier.counts) {
            *a -= (*b).min(*a);
        }
        self.count -= earlier.count.min(self.count);
        self.sum_us -= earlier.sum_us.min(self.sum_us);
        self.max_us = self
            .counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0, |i| upper_of(i).min(self.max_us));
    }

    /// The value at quantile `q` (0..=1), as the upper bound of its bucket; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_of(i).min(self.max_us);
            }
        }
        self.max_us
    }

    /// Points of the cumulative distribution: (value µs, fraction ≤ value), one per non-empty bucket.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut seen = 0;
        let mut out = Vec::new();
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                seen += c;
                out.push((
                    upper_of(i).min(self.max_us),
                    seen as f64 / self.count as f64,
                ));
            }
        }
        out
    }
}

/// What a subscriber measured on one received track.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrackReport {
    /// The subscriber's stream id (participant id).
    pub subscriber: String,
    /// The publisher's stream id, as the subscriber saw it.
    pub publisher: String,
    pub kind: Option<MediaKind>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets expected from the sequence numbers seen (highest − first + 1).
    pub expected: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    /// RFC 3550 interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    pub bitrate_kbps: f64,
    /// Packets whose send time was not in the send log (latency unknown).
    pub unmatched: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    #[serde(skip)]
    pub latency: Histogram,
}

/// Running statistics of one received track (updated per packet by the track's reader task).
pub struct TrackStats {
    report: TrackReport,
    log: Option<Arc<TrackLog>>,
    first_seq: Option<u64>,
    highest: u64,
    last_transit: Option<f64>,
    jitter: f64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// Received sequence number − sent sequence number, once learnt (0 when they pass through).
    seq_offset: Option<u16>,
    /// An offset seen once, waiting for a second packet to confirm it.
    candidate: Option<u16>,
}

impl TrackStats {
    pub fn new(subscriber: String, publisher: String, kind: MediaKind) -> TrackStats {
        TrackStats {
            report: TrackReport {
                subscriber,
                publisher,
                kind: Some(kind),
                ..Default::default()
            },
            log: None,
            first_seq: None,
            highest: 0,
            last_transit: None,
            jitter: 0.0,
            first_at: None,
            last_at: None,
            seq_offset: None,
            candidate: None,
        }
    }

    /// The publisher's sequence number of a received packet, learning the offset if needed.
    fn sent_seq(&mut self, seq: u16, print: u64) -> Option<u16> {
        if let Some(off) = self.seq_offset {
            return Some(seq.wrapping_sub(off));
        }
        let log = self.log.as_ref()?;
        // Passed through unchanged (our SFU): the same number carries the same payload.
        if log.print(seq) == Some(print) {
            self.seq_offset = Some(0);
            return Some(seq);
        }
        let sent = log.find_print(print)?;
        let off = seq.wrapping_sub(sent);
        if self.candidate == Some(off) {
            self.seq_offset = Some(off);
        } else {
            self.candidate = Some(off);
        }
        Some(sent)
    }

    fn kind(&self) -> MediaKind {
        self.report.kind.unwrap_or(MediaKind::Audio)
    }

    /// Account one packet received at `at` (µs since the send log's base: `at_us`); `print` is
    /// its payload's [`fingerprint`].
    #[allow(clippy::too_many_arguments)]
    pub fn on_packet(
        &mut self,
        log: &SendLog,
        seq: u16,
        rtp_ts: u32,
        size: usize,
        print: u64,
        at: Instant,
        at_us: u64,
    ) {
        let kind = self.kind();
        let r = &mut self.report;
        r.packets += 1;
        r.bytes += size as u64;
        self.first_at.get_or_insert(at);
        self.last_at = Some(at);
        // Extended sequence number relative to the highest seen so far.
        let ext = match self.first_seq {
            None => {
                let e = (1u64 << 32) + seq as u64; // room to go backwards
                self.first_seq = Some(e);
                self.highest = e;
                e
            }
            Some(_) => {
                let delta = seq.wrapping_sub(self.highest as u16) as i16 as i64;
                let e = (self.highest as i64 + delta) as u64;
                self.highest = self.highest.max(e);
                e
            }
        };
        if let Some(first) = self.first_seq
            && ext < first
        {
            self.first_seq = Some(ext);
        }
        // RFC 3550 §6.4.1 interarrival jitter, in timestamp units.
        let rate = kind.clock_rate();
        let transit = at_us as f64 * rate / 1e6 - rtp_ts as f64;
        if let Some(last) = self.last_transit {
            let mut d = (transit - last).abs();
            // RTP timestamps wrap at 2^32.
            if d > 2f64.powi(31) {
                d = (d - 2f64.powi(32)).abs();
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        // Forwarding latency from the publisher's send log.
        if self.log.is_none() {
            self.log = log.find(&r.publisher, kind);
        }
        let sent = self
            .sent_seq(seq, print)
            .and_then(|s| self.log.as_ref().and_then(|l| l.lookup(s)));
        let r = &mut self.report;
        match sent {
            Some(sent) if sent <= at_us => r.latency.record(at_us - sent),
            _ => r.unmatched += 1,
        }
    }

    /// The report so far.
    pub fn report(&self) -> TrackReport {
        let mut r = self.report.clone();
        if let Some(first) = self.first_seq {
            r.expected = self.highest - first + 1;
            r.lost = r.expected.saturating_sub(r.packets);
            r.loss_ratio = r.lost as f64 / r.expected as f64;
        }
        r.jitter_ms = self.jitter / self.kind().clock_rate() * 1000.0;
        if let (Some(a), Some(b)) = (self.first_at, self.last_at) {
            let secs = (b - a).as_secs_f64();
            if secs > 0.0 {
                r.bitrate_kbps = r.bytes as f64 * 8.0 / secs / 1000.0;
            }
        }
        r.latency_p50_ms = r.latency.quantile_us(0.5) as f64 / 1000.0;
        r.latency_p99_ms = r.latency.quantile_us(0.99) as f64 / 1000.0;
        r.latency_max_ms = r.latency.max_us as f64 / 1000.0;
        r
    }
}

/// Every received track of one peer.
pub type Receptions = Arc<Mutex<Vec<Arc<Mutex<TrackStats>>>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            100,
            1000,
            4095,
            4096,
            1 << 20,
            u64::MAX >> 1,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v}");
            last = b;
            let up = upper_of(b);
            assert!(up >= v, "{v} above its bucket's bound {up}");
            assert!(up - v <= v / 16 + 1, "bucket of {v} too wide (bound {up})");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v);
        }
        let p50 = h.quantile_us(0.5);
        assert!((480..=530).contains(&p50), "p50 {p50}");
        let p99 = h.quantile_us(0.99);
        assert!((970..=1000).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile_us(1.0), 1000);
        assert_eq!(h.cdf().last().unwrap().1, 1.0);
    }

    #[test]
    fn send_log_ring_matches_sequence_numbers() {
        let t = TrackLog::default();
        t.record(7, 100, 1);
        assert_eq!(t.lookup(7), Some(100));
        assert_eq!(t.lookup(7 + RING as u16), None, "other lap");
        t.record(7 + RING as u16, 200, 1);
        assert_eq!(t.lookup(7), None);
    }

    #[test]
    fn renumbered_tracks_learn_their_offset_from_payloads() {
        let log = SendLog::default();
        let t = log.track("p", MediaKind::Video);
        let payload = |i: u16| format!("frame {i} of a synthetic clip").into_bytes();
        for i in 0..50u16 {
            t.record(
                60_000u16.wrapping_add(i),
                1_000 + i as u64 * 10,
                fingerprint(&payload(i)),
            );
        }
        // A subscriber receiving the 10 first packets as `first_seq..`, each `delay_us` after
        // it was sent.
        let now = Instant::now();
        let receive = |first_seq: u16, delay_us: u64| {
            let mut stats = TrackStats::new("s".into(), "p".into(), MediaKind::Video);
            for i in 0..10u16 {
                let sent = 1_000 + i as u64 * 10;
                let print = fingerprint(&payload(i));
                let seq = first_seq.wrapping_add(i);
                stats.on_packet(&log, seq, 0, 100, print, now, sent + delay_us);
            }
            stats
        };
        // Passed through: offset 0 on the first packet.
        let same = receive(60_000, 500);
        assert_eq!(same.seq_offset, Some(0));
        assert_eq!(same.report().unmatched, 0);
        assert_eq!(same.report().latency.max_us, 500);
        // Renumbered from 1 (across the 16-bit wrap): learnt after two packets, then every
        // packet matches its own send time.
        let shifted = receive(1, 700);
        assert_eq!(shifted.seq_offset, Some(1u16.wrapping_sub(60_000)));
        let r = shifted.report();
        assert_eq!(r.unmatched, 0);
        assert_eq!(r.latency.max_us, 700);
        // An unknown payload matches nothing.
        let mut other = TrackStats::new("s".into(), "p".into(), MediaKind::Video);
        other.on_packet(&log, 5, 0, 100, fingerprint(b"not sent"), now, 2_000);
        assert_eq!(other.report().unmatched, 1);
    }

    #[test]
    fn loss_from_gaps_and_wrap() {
        let log = SendLog::default();
        let mut s = TrackStats::new("s".into(), "p".into(), MediaKind::Audio);
        let now = Instant::now();
        // 65530..=65535, then 0..=9 except 3 and 4: 16 expected, 2 lost.
        let seqs: Vec<u16> = (65530..=65535)
            .chain((0..10).filter(|s| *s != 3 && *s != 4))
            .collect();
        for (i, seq) in seqs.iter().enumerate() {
            s.on_packet(&log, *seq, i as u32 * 960, 100, 1, now, i as u64 * 20_000);
        }
        let r = s.report();
        assert_eq!(r.expected, 16);
        assert_eq!(r.lost, 2);
        assert_eq!(r.unmatched, 14);
        // Perfectly paced arrivals (20 ms, 960 ticks at 48 kHz): no jitter.
        assert!(r.jitter_ms < 0.001, "jitter {}", r.jitter_ms);
    }
}
