//! The media plane's metrics: their names, defined here once (the binary's telemetry describes
//! and renders them under these names), and the counter handles a media worker records into.

/// Names of the metrics this crate records (the binary installs the exporter).
pub mod metric_names {
    pub const RTP_PACKETS_IN: &str = "teleconsult_rtp_packets_in_total";
    pub const RTP_BYTES_IN: &str = "teleconsult_rtp_bytes_in_total";
    pub const RTP_PACKETS_OUT: &str = "teleconsult_rtp_packets_out_total";
    pub const RTP_BYTES_OUT: &str = "teleconsult_rtp_bytes_out_total";
    /// Label `reason`.
    pub const DATAGRAMS_DROPPED: &str = "teleconsult_media_datagrams_dropped_total";
    /// Read by one worker, passed to the worker owning the participant.
    pub const DATAGRAMS_HANDED_OVER: &str = "teleconsult_media_datagrams_handed_over_total";
    pub const TRACKS: &str = "teleconsult_tracks";
    pub const KEYFRAME_REQUESTS: &str = "teleconsult_keyframe_requests_total";
    /// Packets resent from a track's packet cache on a subscriber's NACK.
    pub const RTP_RETRANSMITTED: &str = "teleconsult_rtp_retransmitted_total";
    /// Packets replayed from a track's packet cache to a new subscription (from the latest
    /// keyframe on).
    pub const RTP_REPLAYED: &str = "teleconsult_rtp_replayed_total";
    /// Repairs received on a publisher's RTX stream, unwrapped into its media stream.
    pub const RTP_REPAIRED_IN: &str = "teleconsult_rtp_repaired_in_total";
    /// NACKs sent to publishers for gaps in what they send.
    pub const NACKS_SENT: &str = "teleconsult_nacks_sent_total";
    /// Padding packets sent to subscribers as bandwidth probes (`crate::bwe`).
    pub const BWE_PROBE_PACKETS: &str = "teleconsult_bwe_probe_packets_total";
    /// Simulcast layer switches made by subscriptions (`crate::simulcast`).
    pub const SIMULCAST_SWITCHES: &str = "teleconsult_simulcast_layer_switches_total";
    /// Histogram (seconds): datagram taken off the socket → packet sent to a subscriber. Kept by
    /// [`crate::quality`], not the recorder.
    pub const FORWARDING_LATENCY: &str = "teleconsult_forwarding_latency_seconds";
    /// Gauge, label `consultation` (id only): worst fraction lost in subscribers' latest receiver
    /// reports; gone when the consultation ends. Kept by [`crate::quality`].
    pub const CONSULTATION_LOSS: &str = "teleconsult_consultation_loss_ratio";
    /// Gauge, label `consultation` (id only): worst interarrival jitter in subscribers' latest
    /// reports, seconds. Kept by [`crate::quality`].
    pub const CONSULTATION_JITTER: &str = "teleconsult_consultation_jitter_seconds";
    /// Packets a recording's tap dropped because the recorder's queue was full (the worker
    /// never waits for the disk).
    pub const RECORDING_DROPPED: &str = "teleconsult_recording_dropped_packets_total";
    /// Label `view`: `plausible` or `opaque`. VP8 frames (their first packet) whose header
    /// beyond the clear bytes reads as a libvpx encoder writes it, or not (`crate::inspect`):
    /// under end-to-end encryption, what the server can see of the media.
    pub const VP8_FRAMES_INSPECTED: &str = "teleconsult_vp8_frames_inspected_total";

    /// Media sessions closed because their event channel was full (its reader did not keep up).
    pub const EVENT_OVERFLOWS: &str = "teleconsult_media_event_overflows_total";
    /// Media worker threads that panicked; each failed its own sessions, the others went on.
    pub const WORKER_PANICS: &str = "teleconsult_media_worker_panics_total";
    /// Source addresses ignored for a while for sending more datagrams that are no
    /// participant's than `media.unknown_source_datagrams_per_sec` allows.
    pub const SOURCES_IGNORED: &str = "teleconsult_media_sources_ignored_total";
}

/// Media worker threads that panicked (each failed its own sessions only).
pub(crate) static WORKER_PANICS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// A media worker panicked.
pub(crate) fn worker_panicked() {
    WORKER_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ::metrics::counter!(metric_names::WORKER_PANICS).increment(1);
}

/// One media session closed for a full event channel (rare: not a per-packet path).
pub(crate) fn event_overflow() {
    ::metrics::counter!(metric_names::EVENT_OVERFLOWS).increment(1);
}

use ::metrics::{Counter, Gauge};

/// What the core records. Taken on first use (see [`Recorded::get`]), so the exporter installed
/// by the binary is the one recorded into.
pub(crate) struct CoreMetrics {
    pub packets_in: Counter,
    pub bytes_in: Counter,
    pub packets_out: Counter,
    pub bytes_out: Counter,
    pub rejected: Counter,
    /// RTP/RTCP before the session's DTLS handshake gave us keys.
    pub before_keys: Counter,
    /// SRTP/SRTCP that failed authentication, or replays: never forwarded.
    pub unauthenticated: Counter,
    /// Packets resent from a track's cache to answer a subscriber's NACK.
    pub retransmitted: Counter,
    /// Packets replayed from a track's cache to a new subscription.
    pub replayed: Counter,
    /// Repairs received on publishers' RTX streams.
    pub repaired_in: Counter,
    /// NACKs sent to publishers.
    pub nacks_sent: Counter,
    pub tracks: Gauge,
    pub keyframe_requests: Counter,
    pub recording_dropped: Counter,
    pub probes: Counter,
    pub switches: Counter,

    pub vp8_plausible: Counter,
    pub vp8_opaque: Counter,
}

impl CoreMetrics {
    fn new() -> CoreMetrics {
        use metric_names::*;
        CoreMetrics {
            packets_in: ::metrics::counter!(RTP_PACKETS_IN),
            bytes_in: ::metrics::counter!(RTP_BYTES_IN),
            packets_out: ::metrics::counter!(RTP_PACKETS_OUT),
            bytes_out: ::metrics::counter!(RTP_BYTES_OUT),
            rejected: ::metrics::counter!(DATAGRAMS_DROPPED, "reason" => "rejected"),
            before_keys: ::metrics::counter!(DATAGRAMS_DROPPED, "reason" => "before_keys"),
            unauthenticated: ::metrics::counter!(DATAGRAMS_DROPPED, "reason" => "unauthenticated"),
            retransmitted: ::metrics::counter!(RTP_RETRANSMITTED),
            replayed: ::metrics::counter!(RTP_REPLAYED),
            repaired_in: ::metrics::counter!(RTP_REPAIRED_IN),
            nacks_sent: ::metrics::counter!(NACKS_SENT),
            tracks: ::metrics::gauge!(TRACKS),
            keyframe_requests: ::metrics::counter!(KEYFRAME_REQUESTS),
            recording_dropped: ::metrics::counter!(RECORDING_DROPPED),
            probes: ::metrics::counter!(BWE_PROBE_PACKETS),
            switches: ::metrics::counter!(SIMULCAST_SWITCHES),

            vp8_plausible: ::metrics::counter!(VP8_FRAMES_INSPECTED, "view" => "plausible"),
            vp8_opaque: ::metrics::counter!(VP8_FRAMES_INSPECTED, "view" => "opaque"),
        }
    }
}

/// The per-packet counts of one worker, in plain integers: no atomic shared with the other
/// workers' cores is touched per packet. Added to the process-wide counters by
/// [`Recorded::flush`] at timer granularity (each core timer, at least every 100 ms while a
/// session has keys), so a scrape sees them at most that late.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub switches: u64,
    /// VP8 frames inspected (`crate::inspect`): plausible plaintext, or opaque.
    pub vp8_plausible: u64,
    pub vp8_opaque: u64,
}

/// Counter handles taken lazily, on first use, and this worker's [`Tally`].
#[derive(Default)]
pub(crate) struct Recorded {
    handles: Option<CoreMetrics>,
    pub tally: Tally,
}

impl Recorded {
    #[inline]
    pub fn get(&mut self) -> &CoreMetrics {
        self.handles.get_or_insert_with(CoreMetrics::new)
    }

    /// Add the tally to the process-wide counters, and start it again.
    pub fn flush(&mut self) {
        let t = std::mem::take(&mut self.tally);
        if t == Tally::default() {
            return;
        }
        let m = self.get();
        m.packets_in.increment(t.packets_in);
        m.bytes_in.increment(t.bytes_in);
        m.packets_out.increment(t.packets_out);
        m.bytes_out.increment(t.bytes_out);
        m.switches.increment(t.switches);
        m.vp8_plausible.increment(t.vp8_plausible);
        m.vp8_opaque.increment(t.vp8_opaque);
    }
}

/// What the driver's read loop counts.
pub(crate) struct ReadCounters {
    pub unknown: Counter,
    pub handed_over: Counter,
    /// From a source ignored for sending too many unknown datagrams (not parsed at all).
    pub ignored: Counter,
    /// Sources that went past `media.unknown_source_datagrams_per_sec`.
    pub sources_ignored: Counter,
    /// Handed over to a worker whose queue was full ([`crate::driver::HANDOVER_QUEUE`]).
    pub handover_full: Counter,
}

impl ReadCounters {
    pub fn new() -> ReadCounters {
        ReadCounters {
            unknown: ::metrics::counter!(metric_names::DATAGRAMS_DROPPED, "reason" => "unknown_source"),
            handed_over: ::metrics::counter!(metric_names::DATAGRAMS_HANDED_OVER),
            ignored: ::metrics::counter!(metric_names::DATAGRAMS_DROPPED, "reason" => "ignored_source"),
            sources_ignored: ::metrics::counter!(metric_names::SOURCES_IGNORED),
            handover_full: ::metrics::counter!(metric_names::DATAGRAMS_DROPPED, "reason" => "handover_full"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn tallies_reach_the_counters_only_when_flushed() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let mut r = Recorded::default();
            r.tally.packets_in += 3;
            r.tally.bytes_out += 1200;
            let _ = r.get();
            // (A snapshot takes the counters' values and resets them.)
            let snapshot = || snapshotter.snapshot().into_vec();
            let value = |snap: &[(metrics_util::CompositeKey, _, _, DebugValue)], name: &str| {
                snap.iter().find_map(|(k, .., v)| match v {
                    DebugValue::Counter(n) if k.key().name() == name => Some(*n),
                    _ => None,
                })
            };
            let before = snapshot();
            assert_eq!(value(&before, metric_names::RTP_PACKETS_IN), Some(0));
            r.flush();
            let after = snapshot();
            assert_eq!(value(&after, metric_names::RTP_PACKETS_IN), Some(3));
            assert_eq!(value(&after, metric_names::RTP_BYTES_OUT), Some(1200));
            assert_eq!(r.tally, Tally::default());
        });
    }
}
