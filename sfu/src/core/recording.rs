//! Recording taps on the worker (issue 13): a recording of a consultation subscribes to each
//! of its published tracks (VP8 and Opus), and our RTP path hands each packet — decrypted, as
//! the publisher sent it — and each sender report to the track's tap. A tap never blocks: it
//! queues or drops (and the drop is counted, `teleconsult_recording_dropped_packets_total`).
//!
//! The core also asks for the keyframes a recording needs, so that its video can be played
//! from its first frame and after any loss: when the recording starts (and when a track joins
//! it), when a gap the publisher was asked to repair is still missing from the packet cache
//! after [`REPAIR_WAIT`], and after [`KEYFRAME_INTERVAL`] without a keyframe.
//!
//! What a recording is (consent, journal, storage) is not the SFU's business: it sees a
//! [`RecordingSink`] that turns a track into a [`TrackTap`].

use super::codec::Codec;
use super::{Core, Kind};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Without a keyframe for this long, a recorded video track asks for one.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(4);
/// A keyframe asked for and not seen this long after is asked for again (the request may have
/// been throttled, or lost).
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(500);
/// A gap still missing from the cache this long after it opened cannot be repaired (the
/// NACKed retransmission did not come): the recorded video needs a keyframe.
pub const REPAIR_WAIT: Duration = Duration::from_millis(500);

/// What a tap did with what it was offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// Its publisher has not consented (or withdrew), or the recording stopped.
    Refused,
    /// The recorder's queue was full: dropped.
    Dropped,
}

/// One recorded track's way into its recording. Called on the per-packet path: it must not
/// block, lock for long or log.
pub trait TrackTap: Send {
    fn rtp(&self, at: Instant, packet: &[u8]) -> Offered;
    fn sender_report(&self, at: Instant, ntp: u64, rtp_timestamp: u32);
}

/// A recording as the SFU sees it: it gives a tap for each track it records.
pub trait RecordingSink: Send + Sync {
    /// Track `label` (`camera`, `microphone`) of `participant` (the signalling id), in `codec`
    /// (`VP8`, `opus`) at `clock_rate`, joins the recording.
    fn track(
        &self,
        participant: &str,
        kind: Kind,
        codec: &'static str,
        clock_rate: u32,
    ) -> Box<dyn TrackTap>;
}

/// A recorded track's tap and the keyframe bookkeeping the recording needs.
pub(super) struct TrackRecording {
    tap: Box<dyn TrackTap>,
    codec: Codec,
    /// When a keyframe was last seen (or asked for).
    keyframe_at: Option<Instant>,
    /// A keyframe asked for and not seen yet: when it was (last) asked for.
    asked_at: Option<Instant>,
    /// A gap the publisher was NACKed for: (first, last) extended sequence numbers, and when.
    gap: Option<(u64, u64, Instant)>,
    /// The tap took the last packet (its publisher's consent stands): when it starts taking
    /// them, the recorded video needs a keyframe to start from.
    passing: bool,
}

/// What the per-packet path must do after offering a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AfterTap {
    pub keyframe: bool,
    pub dropped: bool,
}

impl TrackRecording {
    /// The tap of a track, if the recording can take it (VP8 video, Opus audio).
    pub(super) fn new(
        sink: &Arc<dyn RecordingSink>,
        participant: &str,
        kind: Kind,
        codec: Codec,
        clock_rate: u32,
    ) -> Option<TrackRecording> {
        let name = match (kind, codec) {
            (Kind::Video, Codec::Vp8) => "VP8",
            (Kind::Audio, Codec::Opus) => "opus",
            _ => return None,
        };
        Some(TrackRecording {
            tap: sink.track(participant, kind, name, clock_rate),
            codec,
            keyframe_at: None,
            asked_at: None,
            gap: None,
            passing: false,
        })
    }

    /// Offer one media packet (`packet`: the whole decrypted RTP packet, of `codec`), and say
    /// whether the recording needs a keyframe now. `missing`: a gap this packet revealed.
    /// `repaired`: whether the cache holds every packet of a pending gap (asked only when one
    /// is pending and old enough).
    pub(super) fn offer(
        &mut self,
        now: Instant,
        packet: &[u8],
        codec: Option<Codec>,
        keyframe: bool,
        missing: Option<(u64, u64)>,
        repaired: impl FnOnce(u64, u64) -> bool,
    ) -> AfterTap {
        let mut after = AfterTap {
            keyframe: false,
            dropped: false,
        };
        if codec != Some(self.codec) {
            return after;
        }
        let offered = self.tap.rtp(now, packet);
        after.dropped = offered == Offered::Dropped;
        let started = offered == Offered::Queued && !self.passing;
        self.passing = offered == Offered::Queued;
        // Keyframes only for video that is being recorded (not for a publisher who declined).
        if self.codec != Codec::Vp8 || !self.passing {
            return after;
        }
        let mut ask = false;
        if keyframe {
            self.keyframe_at = Some(now);
            self.asked_at = None;
            self.gap = None;
        } else {
            // Consent was just given (the recording of this track starts at a keyframe), none
            // for too long, or the last request went unanswered.
            let stale = self
                .keyframe_at
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_INTERVAL);
            let unanswered = self
                .asked_at
                .is_some_and(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY);
            ask = started || stale || unanswered;
        }
        if let Some((from, to)) = missing {
            self.gap = Some(match self.gap {
                Some((f, _, at)) => (f.min(from), to, at),
                None => (from, to, now),
            });
        }
        if let Some((from, to, at)) = self.gap
            && now.saturating_duration_since(at) >= REPAIR_WAIT
        {
            self.gap = None;
            if !repaired(from, to) {
                ask = true;
            }
        }
        if ask {
            self.keyframe_at = Some(now);
            self.asked_at = Some(now);
            after.keyframe = true;
        }
        after
    }

    pub(super) fn sender_report(&self, now: Instant, ntp: u64, rtp_timestamp: u32) {
        self.tap.sender_report(now, ntp, rtp_timestamp);
    }

    /// A keyframe must come now (the recording just took this track).
    pub(super) fn is_video(&self) -> bool {
        self.codec == Codec::Vp8
    }
}

impl Core {
    /// Start recording `consultation` into `sink`: every VP8/Opus track published there now,
    /// or later while it runs, gets a tap; video tracks are asked for a keyframe.
    pub fn start_recording(
        &mut self,
        now: Instant,
        consultation: &str,
        sink: Arc<dyn RecordingSink>,
    ) {
        self.recordings.insert(consultation.to_string(), sink);
        let members = self
            .consultations
            .get(consultation)
            .cloned()
            .unwrap_or_default();
        for key in members {
            let sources: Vec<String> = self
                .participants
                .get(&key)
                .map(|p| p.tracks.keys().cloned().collect())
                .unwrap_or_default();
            for source in sources {
                self.attach_tap(key, &source, now);
            }
        }
    }

    /// Stop recording `consultation`: every tap of it goes.
    pub fn stop_recording(&mut self, consultation: &str) {
        if self.recordings.remove(consultation).is_none() {
            return;
        }
        let members = self
            .consultations
            .get(consultation)
            .cloned()
            .unwrap_or_default();
        for key in members {
            if let Some(p) = self.participants.get_mut(&key) {
                for t in p.tracks.values_mut() {
                    t.recording = None;
                }
            }
        }
    }

    /// Whether `consultation` is being recorded here.
    pub fn is_recording(&self, consultation: &str) -> bool {
        self.recordings.contains_key(consultation)
    }

    /// Give track `source` of participant `key` a tap, if its consultation is being recorded
    /// (and ask for a keyframe of a video track).
    pub(super) fn attach_tap(&mut self, key: u64, source: &str, now: Instant) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(sink) = self.recordings.get(&p.consultation) else {
            return;
        };
        // A simulcast camera is recorded from one layer: the highest arriving when its tap is
        // made, and no other of its group afterwards (one video track per participant in the
        // journal; a layer the publisher stops sending leaves a gap, not a switch).
        if let Some((group, layer)) = p.tracks.get(source).and_then(|t| Some((t.group, t.layer?))) {
            let others = p
                .tracks
                .values()
                .filter(|t| t.group == group && t.layer != Some(layer));
            let mut others = others.peekable();
            if others.clone().any(|t| t.recording.is_some())
                || others.any(|t| t.layer > Some(layer) && t.last_arrival.is_some())
            {
                return;
            }
        }
        let Some(track) = p.tracks.get_mut(source) else {
            return;
        };
        if track.recording.is_some() {
            return;
        }
        let codec = Codec::of(&track.codec.mime_type);
        track.recording = TrackRecording::new(sink, &p.id, track.kind, codec, track.clock_rate);
        if track
            .recording
            .as_ref()
            .is_some_and(TrackRecording::is_video)
        {
            let layer = track.layer;
            self.request_keyframe(key, source, layer, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Counting(Arc<Mutex<Vec<usize>>>, Offered);

    impl TrackTap for Counting {
        fn rtp(&self, _: Instant, packet: &[u8]) -> Offered {
            self.0.lock().unwrap().push(packet.len());
            self.1
        }
        fn sender_report(&self, _: Instant, _: u64, _: u32) {}
    }

    fn recording(offered: Offered) -> (TrackRecording, Arc<Mutex<Vec<usize>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        (
            TrackRecording {
                tap: Box::new(Counting(seen.clone(), offered)),
                codec: Codec::Vp8,
                keyframe_at: None,
                asked_at: None,
                gap: None,
                passing: false,
            },
            seen,
        )
    }

    #[test]
    fn a_recorded_video_track_asks_for_a_keyframe_at_start_then_every_four_seconds() {
        let (mut r, seen) = recording(Offered::Queued);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let ok = |_, _| true;
        assert!(
            r.offer(at(0), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        assert!(
            !r.offer(at(30), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        // Not answered (throttled, lost): asked again.
        assert!(
            r.offer(at(500), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        assert!(
            !r.offer(at(530), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        // A keyframe arrives at 1 s: the next request is due 4 s later, not before.
        assert!(
            !r.offer(at(1000), b"k", Some(Codec::Vp8), true, None, ok)
                .keyframe
        );
        assert!(
            !r.offer(at(4990), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        assert!(
            r.offer(at(5000), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        assert!(
            !r.offer(at(5030), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        // Another payload type on the same stream is not offered.
        r.offer(at(5060), b"xx", Some(Codec::Other), false, None, ok);
        assert_eq!(seen.lock().unwrap().len(), 8);
    }

    #[test]
    fn an_unrepaired_gap_asks_for_a_keyframe_a_repaired_one_does_not() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        for repaired in [true, false] {
            let (mut r, _) = recording(Offered::Queued);
            r.offer(at(0), b"k", Some(Codec::Vp8), true, None, |_, _| true);
            let gap = Some((10, 12));
            let asked = |r: &mut TrackRecording, ms, missing| {
                r.offer(at(ms), b"p", Some(Codec::Vp8), false, missing, |f, t| {
                    assert_eq!((f, t), (10, 12));
                    repaired
                })
                .keyframe
            };
            assert!(!asked(&mut r, 100, gap), "the NACK may still repair it");
            assert!(!asked(&mut r, 400, None));
            assert_eq!(asked(&mut r, 600, None), !repaired, "repaired: {repaired}");
            // Decided once.
            assert!(!asked(&mut r, 700, None));
        }
    }

    #[test]
    fn consent_given_mid_stream_asks_for_a_keyframe_at_once() {
        struct Gate(Arc<Mutex<bool>>);
        impl TrackTap for Gate {
            fn rtp(&self, _: Instant, _: &[u8]) -> Offered {
                if *self.0.lock().unwrap() {
                    Offered::Queued
                } else {
                    Offered::Refused
                }
            }
            fn sender_report(&self, _: Instant, _: u64, _: u32) {}
        }
        let consent = Arc::new(Mutex::new(false));
        let mut r = TrackRecording {
            tap: Box::new(Gate(consent.clone())),
            codec: Codec::Vp8,
            keyframe_at: None,
            asked_at: None,
            gap: None,
            passing: false,
        };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let ok = |_, _| true;
        // Before the consent, nothing is asked for (nothing of this publisher is recorded).
        assert!(
            !r.offer(at(0), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        assert!(
            !r.offer(at(10), b"k", Some(Codec::Vp8), true, None, ok)
                .keyframe
        );
        assert!(
            !r.offer(at(5000), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        *consent.lock().unwrap() = true;
        assert!(
            r.offer(at(5030), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        assert!(
            !r.offer(at(5060), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
        // Withdrawn and given again: again a keyframe.
        *consent.lock().unwrap() = false;
        r.offer(at(5100), b"p", Some(Codec::Vp8), false, None, ok);
        *consent.lock().unwrap() = true;
        assert!(
            r.offer(at(5130), b"p", Some(Codec::Vp8), false, None, ok)
                .keyframe
        );
    }

    #[test]
    fn a_full_queue_is_reported_as_a_drop() {
        let (mut r, _) = recording(Offered::Dropped);
        let now = Instant::now();
        assert!(
            r.offer(now, b"p", Some(Codec::Vp8), true, None, |_, _| true)
                .dropped
        );
        let (mut r, _) = recording(Offered::Refused);
        assert!(
            !r.offer(now, b"p", Some(Codec::Vp8), true, None, |_, _| true)
                .dropped
        );
    }
}
