//! Transport-wide congestion control feedback to publishers
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01): what we received of a publisher's
//! transport-wide sequence numbers (its `transport-cc` header extension) and when, sent back as
//! `TransportLayerCc` RTCP every [`FEEDBACK_INTERVAL`], so the publisher's own send-side
//! estimator (Chromium's GCC) works through us.
//!
//! Per packet only [`Recorder::record`]: an extended sequence number and an arrival time pushed
//! onto a bounded queue (no allocation once warm). The feedback is built at timer granularity
//! and marshalled by `rtc`'s RTCP type; its encoding is checked against `rtc`'s parser below.

use crate::forward::extend_seq;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often each publisher gets feedback (libwebrtc's receive side sends every 100 ms by
/// default and accepts anything from 50 to 250 ms).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

/// Arrivals kept between two feedbacks (about 2 s of a 1.5 Mbit/s publisher at 100 ms): a
/// publisher sending more than this in one interval loses feedback on the oldest, not memory.
const MAX_PENDING: usize = 1024;

/// The largest span of sequence numbers one feedback covers.
const MAX_SPAN: u64 = 4096;

/// Delta unit: 250 µs.
const DELTA_US: i64 = 250;
/// Reference time unit: 64 ms.
const REFERENCE_US: i64 = 64_000;

/// What we received of one publisher's transport-wide sequence numbers.
#[derive(Debug, Default)]
pub struct Recorder {
    epoch: Option<Instant>,
    /// (extended sequence number, arrival in µs since `epoch`), in arrival order.
    pending: VecDeque<(u64, i64)>,
    highest: Option<u64>,
    /// The first sequence number the next feedback reports (the one after the last reported).
    next: Option<u64>,
    feedback_count: u8,
    /// Scratch for building.
    sorted: Vec<(u64, i64)>,
}

impl Recorder {
    /// A packet carrying transport-wide sequence number `seq` arrived at `now`.
    pub fn record(&mut self, seq: u16, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let ext = match self.highest {
            None => (1 << 16) | u64::from(seq),
            Some(h) => extend_seq(h, seq),
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        let at = now.saturating_duration_since(epoch).as_micros() as i64;
        self.pending.push_back((ext, at));
    }

    /// Whether a feedback is due (anything arrived since the last).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The feedback for everything received since the last one (`None`: nothing new), from
    /// `sender_ssrc` about the publisher's `media_ssrc`.
    pub fn feedback(&mut self, sender_ssrc: u32, media_ssrc: u32) -> Option<TransportLayerCc> {
        let mut sorted = std::mem::take(&mut self.sorted);
        sorted.clear();
        sorted.extend(self.pending.drain(..));
        sorted.sort_unstable_by_key(|p| p.0);
        sorted.dedup_by_key(|p| p.0);
        let result = self.build(&sorted, sender_ssrc, media_ssrc);
        self.sorted = sorted;
        result
    }

    fn build(
        &mut self,
        received: &[(u64, i64)],
        sender_ssrc: u32,
        media_ssrc: u32,
    ) -> Option<TransportLayerCc> {
        let last = received.last()?.0;
        // Late arrivals from before the last feedback are not reported again, and one feedback
        // covers at most `MAX_SPAN` sequence numbers (after a jump, the latest ones).
        let base = self
            .next
            .unwrap_or(received[0].0)
            .max((last + 1).saturating_sub(MAX_SPAN));
        let start = received.partition_point(|p| p.0 < base);
        let received = &received[start..];
        let first = received.first()?;
        let reference = first.1.div_euclid(REFERENCE_US);
        let mut previous = reference * REFERENCE_US;
        let mut symbols: Vec<SymbolTypeTcc> = Vec::with_capacity((last - base + 1) as usize);
        let mut deltas: Vec<RecvDelta> = Vec::with_capacity(received.len());
        let mut at = received.iter().peekable();
        let mut end = base;
        for seq in base..=last {
            match at.peek() {
                Some(&&(s, t)) if s == seq => {
                    at.next();
                    let units = (t - previous).div_euclid(DELTA_US);
                    let symbol = if (0..=255).contains(&units) {
                        SymbolTypeTcc::PacketReceivedSmallDelta
                    } else if (i16::MIN as i64..=i16::MAX as i64).contains(&units) {
                        SymbolTypeTcc::PacketReceivedLargeDelta
                    } else {
                        // Not expressible in this feedback: it goes into the next one.
                        self.pending.push_back((s, t));
                        for &rest in at.by_ref() {
                            self.pending.push_back(rest);
                        }
                        break;
                    };
                    // Deltas accumulate in whole units, so rounding never drifts.
                    previous += units * DELTA_US;
                    symbols.push(symbol);
                    deltas.push(RecvDelta {
                        type_tcc_packet: symbol,
                        delta: units * DELTA_US,
                    });
                }
                _ => symbols.push(SymbolTypeTcc::PacketNotReceived),
            }
            end = seq + 1;
        }
        // Trailing losses are not reported: they may still arrive, and the next feedback starts
        // after the last packet received.
        while symbols.last() == Some(&SymbolTypeTcc::PacketNotReceived) {
            symbols.pop();
            end -= 1;
        }
        if deltas.is_empty() {
            return None;
        }
        self.next = Some(end);
        let count = self.feedback_count;
        self.feedback_count = self.feedback_count.wrapping_add(1);
        Some(TransportLayerCc {
            sender_ssrc,
            media_ssrc,
            base_sequence_number: base as u16,
            packet_status_count: symbols.len() as u16,
            reference_time: (reference as u32) & 0x00FF_FFFF,
            fb_pkt_count: count,
            packet_chunks: chunks(&symbols),
            recv_deltas: deltas,
        })
    }
}

/// Encode packet status symbols as chunks: a run-length chunk for any run of 7 or more equal
/// symbols, else a two-bit status vector of 7.
fn chunks(symbols: &[SymbolTypeTcc]) -> Vec<PacketStatusChunk> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < symbols.len() {
        let run = symbols[i..]
            .iter()
            .take(0x1FFF)
            .take_while(|&&s| s == symbols[i])
            .count();
        if run >= 7 {
            out.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: symbols[i],
                run_length: run as u16,
            }));
            i += run;
        } else {
            let n = (symbols.len() - i).min(7);
            // Always 7 symbols on the wire: a short last chunk is padded with "not received"
            // (the status count says where the packet's statuses end), as libwebrtc does.
            let mut list = symbols[i..i + n].to_vec();
            list.resize(7, SymbolTypeTcc::PacketNotReceived);
            out.push(PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: list,
            }));
            i += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    /// Marshal with `rtc`, parse back with `rtc`: (base, status count, reference time, the
    /// arrival of each received packet in µs since the reference, per sequence number).
    fn round_trip(fb: &TransportLayerCc) -> (u16, u16, u32, Vec<(u16, Option<i64>)>) {
        let bytes = fb.marshal().expect("marshals");
        let mut buf = &bytes[..];
        let parsed = TransportLayerCc::unmarshal(&mut buf).expect("rtc parses it");
        assert_eq!(&parsed, fb, "the same packet after a round trip");
        let mut statuses = Vec::new();
        for chunk in &parsed.packet_chunks {
            match chunk {
                PacketStatusChunk::RunLengthChunk(r) => statuses.extend(std::iter::repeat_n(
                    r.packet_status_symbol,
                    r.run_length as usize,
                )),
                PacketStatusChunk::StatusVectorChunk(v) => {
                    statuses.extend(v.symbol_list.iter().copied())
                }
            }
        }
        statuses.truncate(parsed.packet_status_count as usize);
        let mut deltas = parsed.recv_deltas.iter();
        let mut t = 0i64;
        let arrivals = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let seq = parsed.base_sequence_number.wrapping_add(i as u16);
                match s {
                    SymbolTypeTcc::PacketReceivedSmallDelta
                    | SymbolTypeTcc::PacketReceivedLargeDelta => {
                        t += deltas.next().expect("a delta per received packet").delta;
                        (seq, Some(t))
                    }
                    _ => (seq, None),
                }
            })
            .collect();
        assert!(deltas.next().is_none(), "no delta left over");
        (
            parsed.base_sequence_number,
            parsed.packet_status_count,
            parsed.reference_time,
            arrivals,
        )
    }

    #[test]
    fn feedback_reports_each_arrival_to_250_us_and_each_loss() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        assert!(r.feedback(1, 2).is_none(), "nothing received");
        // 65_530..=65_545 across the wrap, 65_533 and 2 lost, 65_535 arriving late; one gap
        // of 80 ms (a large delta).
        let mut arrivals = Vec::new();
        for (i, seq) in (65_530u32..=65_545).map(|s| s as u16).enumerate() {
            if seq == 65_533 || seq == 2 {
                continue;
            }
            let mut us = 1_000 * i as i64;
            if i >= 10 {
                us += 80_000;
            }
            arrivals.push((seq, us));
        }
        arrivals.swap(3, 4); // 65_535 after 0
        for &(seq, us) in &arrivals {
            r.record(seq, t0 + Duration::from_micros(us as u64));
        }
        let fb = r.feedback(7, 9).expect("feedback");
        assert_eq!((fb.sender_ssrc, fb.media_ssrc), (7, 9));
        let (base, count, reference, got) = round_trip(&fb);
        assert_eq!((base, count, reference), (65_530, 16, 0));
        for (seq, at) in got {
            let want = arrivals.iter().find(|a| a.0 == seq).map(|a| a.1);
            assert_eq!(at, want, "sequence number {seq}");
        }
        assert!(
            fb.recv_deltas
                .iter()
                .any(|d| d.type_tcc_packet == SymbolTypeTcc::PacketReceivedLargeDelta)
        );
        // The next feedback starts after the last reported; a late packet from before it is
        // not reported again.
        r.record(65_533, t0 + Duration::from_millis(200));
        r.record(10, t0 + Duration::from_millis(201));
        r.record(12, t0 + Duration::from_millis(203));
        let fb = r.feedback(7, 9).expect("feedback");
        let (base, count, reference, got) = round_trip(&fb);
        assert_eq!((base, count), (10, 3));
        assert_eq!(reference, 201_000 / 64_000);
        let offset = 201_000 - 3 * 64_000;
        assert_eq!(
            got,
            vec![(10, Some(offset)), (11, None), (12, Some(offset + 2_000))]
        );
        assert_eq!(fb.fb_pkt_count, 1);
    }

    #[test]
    fn long_runs_are_run_length_chunks_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        for seq in 0..100u16 {
            r.record(seq, t0 + Duration::from_micros(500 * seq as u64));
        }
        // 100 lost, then 3 more.
        for seq in 200..203u16 {
            r.record(seq, t0 + Duration::from_millis(60));
        }
        let fb = r.feedback(1, 1).unwrap();
        assert!(matches!(
            fb.packet_chunks[0],
            PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                run_length: 100,
                ..
            })
        ));
        let (_, count, _, got) = round_trip(&fb);
        assert_eq!(count, 203);
        assert_eq!(got.iter().filter(|g| g.1.is_some()).count(), 103);
        assert_eq!(got[150].1, None);
        // More arrivals between two feedbacks than the queue holds: the oldest go.
        for seq in 0..(MAX_PENDING as u16 + 10) {
            r.record(203 + seq, t0 + Duration::from_millis(100));
        }
        assert_eq!(r.pending.len(), MAX_PENDING);
        assert!(r.feedback(1, 1).is_some());
        assert!(!r.has_pending());
    }

    #[test]
    fn an_arrival_too_far_from_the_previous_one_moves_to_the_next_feedback() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        r.record(1, t0);
        // 9 s later: beyond a large delta (±8.19 s).
        r.record(2, t0 + Duration::from_secs(9));
        let fb = r.feedback(1, 1).unwrap();
        let (base, count, _, _) = round_trip(&fb);
        assert_eq!((base, count), (1, 1));
        let fb = r.feedback(1, 1).unwrap();
        let (base, count, reference, got) = round_trip(&fb);
        assert_eq!((base, count), (2, 1));
        assert_eq!(reference, 9_000_000 / 64_000);
        assert_eq!(got[0].1, Some(9_000_000 - 140 * 64_000));
    }
}
