//! Send-side bandwidth estimation per subscriber (issue 11): every packet we send a subscriber
//! carries a transport-wide sequence number; its TWCC feedback says when each arrived; `rtc`'s
//! `Gcc` (a port of Google's congestion control: delay trend, overuse detector, AIMD, and a loss
//! controller, combined by `min`) turns that into an estimate. We only keep the send history (a
//! fixed ring: no allocation per packet) and add what `Gcc` lacks: **probes**. A subscriber held
//! on a lower layer sends too little for the estimate to ever reach the next one (AIMD grows from
//! what is received), so a train of padding packets is sent on its RTX stream; the rate at which
//! the train arrives is a measure of the path's capacity (a bottleneck spaces the packets out),
//! and a train that arrives at the rate it was sent re-seeds the estimator there.

use rtc::interceptor::{Acknowledgement, BandwidthEstimator, Gcc, PacketReport};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use std::time::{Duration, Instant};

/// Packets remembered for their feedback (a power of two). At 1 000 packets/s to one subscriber
/// this is 4 s, well beyond any feedback delay.
pub const HISTORY: usize = 4096;

/// Where the estimate starts: between the lowest and the middle layer, so a new subscriber
/// starts on a small layer and climbs (probes) to what the path carries.
pub const INITIAL_BITRATE: f64 = 600_000.0;
/// The estimate never goes below this (audio and the lowest layer still flow).
pub const MIN_BITRATE: f64 = 80_000.0;
/// Nor above this.
pub const MAX_BITRATE: f64 = 20_000_000.0;

/// Padding bytes in one probe packet (the most one RTP padding count can say).
pub const PROBE_PADDING: usize = 255;
/// Packets in one probe train (about 8.5 kB: well beyond a shaper's burst allowance, so its
/// arrival spread shows the bottleneck's rate).
pub const PROBE_PACKETS: usize = 30;
/// The fewest probe packets whose feedback makes a measurement.
const PROBE_MIN_REPORTED: usize = 20;
/// A train arriving at least this fraction of its target rate counts as a success.
const PROBE_SUCCESS: f64 = 0.85;

#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    seq: u16,
    id: u64,
    size: u16,
    departure: Option<Instant>,
    /// Part of probe train `probe` (0: not a probe).
    probe: u32,
}

/// What was sent to one subscriber, by transport-wide sequence number.
pub struct SendHistory {
    slots: Box<[Sent]>,
    next_seq: u16,
    next_id: u64,
}

impl Default for SendHistory {
    fn default() -> Self {
        SendHistory {
            slots: vec![Sent::default(); HISTORY].into_boxed_slice(),
            next_seq: rand::random(),
            next_id: 0,
        }
    }
}

impl SendHistory {
    /// The sequence number for the next packet (call [`SendHistory::sent`] once it is out).
    pub fn next_seq(&self) -> u16 {
        self.next_seq
    }

    /// The packet numbered [`SendHistory::next_seq`] left at `departure`, `size` bytes on the wire.
    pub fn sent(&mut self, departure: Instant, size: usize, probe: u32) {
        let seq = self.next_seq;
        self.slots[seq as usize % HISTORY] = Sent {
            seq,
            id: self.next_id,
            size: size.min(u16::MAX as usize) as u16,
            departure: Some(departure),
            probe,
        };
        self.next_id += 1;
        self.next_seq = seq.wrapping_add(1);
    }

    /// The reports for what the feedback acknowledged (arrived or lost), in send order; each is
    /// forgotten once reported. Also returns, per report, the probe train it belonged to.
    pub fn reports(&mut self, acks: &[Acknowledgement]) -> Vec<(PacketReport, u32)> {
        let mut out = Vec::with_capacity(acks.len());
        for ack in acks {
            let slot = &mut self.slots[ack.sequence_number as usize % HISTORY];
            let Some(departure) = slot.departure else {
                continue;
            };
            if slot.seq != ack.sequence_number {
                continue;
            }
            slot.departure = None;
            out.push((
                PacketReport {
                    ssrc: 0,
                    id: slot.id,
                    rtp_sequence_number: 0,
                    is_twcc: true,
                    twcc_sequence_number: ack.sequence_number,
                    size: slot.size as usize,
                    arrived: ack.arrived,
                    departure,
                    arrival: ack.arrival,
                    ecn: Ecn::NotEct,
                },
                slot.probe,
            ));
        }
        out.sort_by_key(|(r, _)| r.id);
        out
    }
}

/// One probe train in flight: its number, the rate it stands for, what came back of it.
#[derive(Clone, Copy, Debug)]
struct Probe {
    id: u32,
    target: f64,
    sent_at: Instant,
    reported: usize,
    bytes: usize,
    first: Option<Duration>,
    last: Option<Duration>,
}

/// The window over which the rate acknowledged by feedback is measured.
const ACKED_WINDOW: Duration = Duration::from_secs(1);
/// The estimate may exceed what is acknowledged by this factor (plus [`ACKED_SLACK`]) — as
/// libwebrtc bounds its AIMD growth: an app-limited sender learns nothing about rates it never
/// tried. `rtc`'s `Gcc` grows without that bound, so it is applied here.
const ACKED_FACTOR: f64 = 1.5;
const ACKED_SLACK: f64 = 10_000.0;
/// With loss in the window the bound tightens: above [`LOSSY`] to what arrives, above
/// [`HEAVY_LOSS`] to less. A full drop-tail queue holds its delay constant (no delay trend for
/// `Gcc` to see) and `Gcc`'s loss half only scales a target that grew unbounded, so without this an
/// estimate sat at 1.5 × a capped link while it dropped a tenth of what we sent.
const LOSSY: f64 = 0.02;
const HEAVY_LOSS: f64 = 0.10;
/// How long a successful probe's rate stands in for that bound (time for the allocation to use it).
const PROBE_HOLD: Duration = Duration::from_secs(5);

/// The estimate for one subscriber.
pub struct SubscriberBwe {
    gcc: Gcc,
    pub history: SendHistory,
    probe: Option<Probe>,
    next_probe_id: u32,
    /// The last probe's measured rate and when it was measured (for the report and tests).
    pub last_probe: Option<(f64, Instant)>,
    last_probe_sent: Option<Instant>,
    /// Per feedback: the latest arrival in it (subscriber's clock), bytes that arrived, packets
    /// lost, packets reported (at most 64 feedbacks).
    acked: std::collections::VecDeque<(Duration, usize, usize, usize)>,
    /// A successful probe's rate and until when it bounds the estimate instead of the acked rate.
    probed: Option<(f64, Instant)>,
    now: Option<Instant>,
    /// The wait before the next probe: doubled by each probe that did not get through (a capped
    /// path is not hammered), back to the shortest by one that did.
    probe_spacing: Duration,
}

/// The shortest and longest wait between two probes of one subscriber.
pub const PROBE_SPACING_MIN: Duration = Duration::from_secs(2);
pub const PROBE_SPACING_MAX: Duration = Duration::from_secs(8);

impl Default for SubscriberBwe {
    fn default() -> Self {
        SubscriberBwe {
            gcc: Gcc::new(INITIAL_BITRATE, MIN_BITRATE, MAX_BITRATE),
            history: SendHistory::default(),
            probe: None,
            next_probe_id: 1,
            last_probe: None,
            last_probe_sent: None,
            acked: std::collections::VecDeque::with_capacity(64),
            probed: None,
            now: None,
            probe_spacing: PROBE_SPACING_MIN,
        }
    }
}

impl SubscriberBwe {
    /// The estimate, bits per second: `Gcc`'s, bounded by what the feedback acknowledged (or
    /// what a recent probe got through).
    pub fn estimate(&self) -> f64 {
        let gcc = self.gcc.target_bitrate();
        let mut bound = match (self.acked_rate(), self.loss()) {
            (Some(r), Some(loss)) if loss > HEAVY_LOSS => r * (1.0 - 0.5 * loss),
            (Some(r), Some(loss)) if loss > LOSSY => r,
            (Some(r), _) => r * ACKED_FACTOR + ACKED_SLACK,
            (None, _) => INITIAL_BITRATE,
        };
        if let (Some((rate, until)), Some(now)) = (self.probed, self.now)
            && now < until
        {
            bound = bound.max(rate);
        }
        gcc.min(bound).max(MIN_BITRATE)
    }

    /// The rate acknowledged over the last [`ACKED_WINDOW`] of arrivals, if feedback covered
    /// enough of it.
    pub fn acked_rate(&self) -> Option<f64> {
        let last = self.acked.back()?.0;
        let from = last.checked_sub(ACKED_WINDOW)?;
        // Not before the feedback covers a whole window.
        if self.acked.front()?.0 > from {
            return None;
        }
        let bytes: usize = self.acked.iter().filter(|a| a.0 > from).map(|a| a.1).sum();
        Some(bytes as f64 * 8.0 / ACKED_WINDOW.as_secs_f64())
    }

    /// The fraction of packets the feedback of the last [`ACKED_WINDOW`] reported lost.
    pub fn loss(&self) -> Option<f64> {
        let last = self.acked.back()?.0;
        let from = last.saturating_sub(ACKED_WINDOW);
        let (lost, total) = self
            .acked
            .iter()
            .filter(|a| a.0 > from)
            .fold((0, 0), |(l, t), a| (l + a.2, t + a.3));
        (total > 0).then(|| lost as f64 / total as f64)
    }

    /// Feedback from the subscriber (already decoded into acknowledgements).
    pub fn on_feedback(&mut self, now: Instant, acks: &[Acknowledgement]) {
        self.now = Some(now);
        let reports = self.history.reports(acks);
        if reports.is_empty() {
            return;
        }
        let mut latest = None;
        let mut bytes = 0;
        let mut lost = 0;
        for (r, _) in &reports {
            match r.arrival.filter(|_| r.arrived) {
                Some(at) => {
                    bytes += r.size;
                    latest = Some(latest.map_or(at, |l: Duration| l.max(at)));
                }
                None => lost += 1,
            }
        }
        if let Some(at) = latest {
            if self
                .acked
                .back()
                .is_some_and(|a| at + ACKED_WINDOW * 10 < a.0)
            {
                self.acked.clear(); // the subscriber's clock jumped back (a restart)
            }
            if self.acked.len() == 64 {
                self.acked.pop_front();
            }
            self.acked.push_back((at, bytes, lost, reports.len()));
        }
        if let Some(p) = self.probe.as_mut() {
            for (r, probe) in &reports {
                if *probe != p.id {
                    continue;
                }
                p.reported += 1;
                if let Some(at) = r.arrival.filter(|_| r.arrived) {
                    p.bytes += r.size;
                    p.first = Some(p.first.map_or(at, |f| f.min(at)));
                    p.last = Some(p.last.map_or(at, |l| l.max(at)));
                }
            }
        }
        let plain: Vec<PacketReport> = reports.into_iter().map(|(r, _)| r).collect();
        self.gcc.on_reports(now, &plain);
        self.finish_probe(now);
    }

    fn finish_probe(&mut self, now: Instant) {
        let Some(p) = self.probe else { return };
        if p.reported < PROBE_MIN_REPORTED {
            if now.saturating_duration_since(p.sent_at) > Duration::from_secs(2) {
                self.probe = None; // its feedback never came: forget it
            }
            return;
        }
        self.probe = None;
        let (Some(first), Some(last)) = (p.first, p.last) else {
            return;
        };
        // The train's arrival rate; packets that arrived at once (faster than the TWCC clock's
        // 250 µs resolution shows) measured as the target itself.
        let spread = last.saturating_sub(first).as_secs_f64();
        let rate = if spread > 0.0 {
            // n packets arriving over the spread: n - 1 gaps carry the bytes after the first.
            (p.bytes as f64 * 8.0) * ((p.reported - 1) as f64 / p.reported as f64) / spread
        } else {
            p.target * 4.0
        };
        self.last_probe = Some((rate, now));
        let success = rate >= p.target * PROBE_SUCCESS;
        self.probe_spacing = if success {
            PROBE_SPACING_MIN
        } else {
            (self.probe_spacing * 2).min(PROBE_SPACING_MAX)
        };
        if success && rate > self.estimate() {
            // The path carried the rate probed for: the estimate may go there now.
            self.probed = Some((p.target, now + PROBE_HOLD));
            if self.gcc.target_bitrate() < p.target {
                self.gcc = Gcc::new(p.target, MIN_BITRATE, MAX_BITRATE);
            }
        }
    }

    /// Whether a probe may be sent at `now` (spacing after the last one, backing off).
    pub fn may_probe(&self, now: Instant) -> bool {
        self.last_probe_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.probe_spacing)
    }

    /// Start a probe train for `target` bits per second, unless one is in flight; returns its
    /// number (give it to each of its packets' [`SendHistory::sent`]).
    pub fn start_probe(&mut self, now: Instant, target: f64) -> Option<u32> {
        if self.probe.is_some() {
            self.finish_probe(now);
            if self.probe.is_some() {
                return None;
            }
        }
        let id = self.next_probe_id;
        self.last_probe_sent = Some(now);
        self.next_probe_id = self.next_probe_id.wrapping_add(1).max(1);
        self.probe = Some(Probe {
            id,
            target,
            sent_at: now,
            reported: 0,
            bytes: 0,
            first: None,
            last: None,
        });
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrived(seq: u16, at_ms: f64) -> Acknowledgement {
        Acknowledgement {
            sequence_number: seq,
            arrived: true,
            arrival: Some(Duration::from_secs_f64(at_ms / 1000.0)),
            ecn: Ecn::NotEct,
        }
    }

    /// Send `rate` bits/s of 1200-byte packets for `secs` over a path of `capacity` bits/s whose
    /// drop-tail queue holds `queue_ms` of it (a `tc htb` cap), feedback every 100 ms; returns the
    /// estimate each second. (A dropped packet is reported lost in the feedback after its turn.)
    fn run(
        bwe: &mut SubscriberBwe,
        t0: Instant,
        start_ms: u64,
        secs: u64,
        rate: f64,
        capacity: f64,
    ) -> Vec<f64> {
        run_queue(bwe, t0, start_ms, secs, rate, capacity, f64::INFINITY)
    }

    fn run_queue(
        bwe: &mut SubscriberBwe,
        t0: Instant,
        start_ms: u64,
        secs: u64,
        rate: f64,
        capacity: f64,
        queue_ms: f64,
    ) -> Vec<f64> {
        let size = 1200usize;
        let gap_ms = size as f64 * 8.0 / rate * 1000.0;
        let service_ms = size as f64 * 8.0 / capacity * 1000.0;
        let mut queue_free_at = start_ms as f64;
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut t = start_ms as f64;
        let end = (start_ms + secs * 1000) as f64;
        let mut next_feedback = start_ms as f64 + 100.0;
        let mut next_second = start_ms as f64 + 1000.0;
        while t < end {
            let seq = bwe.history.next_seq();
            bwe.history
                .sent(t0 + Duration::from_secs_f64(t / 1000.0), size, 0);
            let arrival = queue_free_at.max(t) + service_ms;
            if arrival - t > queue_ms {
                // Dropped at the tail; its loss shows in the feedback covering its slot.
                pending.push(Acknowledgement {
                    arrival: Some(Duration::from_secs_f64((t + 20.0) / 1000.0)),
                    ..Acknowledgement::lost(seq)
                });
            } else {
                queue_free_at = arrival;
                pending.push(arrived(seq, arrival + 20.0));
            }
            t += gap_ms;
            if t >= next_feedback {
                let now = t0 + Duration::from_secs_f64(t / 1000.0);
                let due: Vec<_> = pending
                    .iter()
                    .copied()
                    .filter(|a| a.arrival.unwrap().as_secs_f64() * 1000.0 <= t)
                    .collect();
                pending.retain(|a| a.arrival.unwrap().as_secs_f64() * 1000.0 > t);
                bwe.on_feedback(now, &due);
                next_feedback += 100.0;
            }
            if t >= next_second {
                out.push(bwe.estimate());
                next_second += 1000.0;
            }
        }
        out
    }

    #[test]
    fn the_estimate_falls_below_a_capped_path_and_stays_near_an_open_one() {
        let t0 = Instant::now();
        let mut bwe = SubscriberBwe::default();
        // Sending 900 kbit/s into a 300 kbit/s bottleneck: the queue grows, the estimate falls
        // under the cap within seconds.
        let est = run(&mut bwe, t0, 0, 8, 900_000.0, 300_000.0);
        let last = *est.last().unwrap();
        assert!(last < 360_000.0, "{est:?}");
        // An open path: sending 500 kbit/s with room to spare, the estimate does not fall.
        let mut open = SubscriberBwe::default();
        let est = run(&mut open, t0, 0, 8, 500_000.0, 50_000_000.0);
        // A shallow drop-tail queue (150 ms): the delay stops growing once it is full, loss tells.
        let mut shallow = SubscriberBwe::default();
        let est2 = run_queue(&mut shallow, t0, 0, 8, 500_000.0, 300_000.0, 150.0);
        assert!(*est2.last().unwrap() < 320_000.0, "{est2:?}");
        assert!(*est.last().unwrap() >= INITIAL_BITRATE * 0.9, "{est:?}");
        // ...nor does it run away from what is acknowledged (an app-limited sender).
        assert!(
            *est.last().unwrap() <= 500_000.0 * 1.7 + ACKED_SLACK,
            "{est:?}"
        );
    }

    #[test]
    fn a_probe_train_measures_the_bottleneck_and_reseeds_only_when_it_got_through() {
        let t0 = Instant::now();
        // A train of 12 × 300 bytes sent at once.
        let train = |bwe: &mut SubscriberBwe, target: f64, capacity: f64, at_ms: u64| {
            let id = bwe
                .start_probe(t0 + Duration::from_millis(at_ms), target)
                .unwrap();
            let mut acks = Vec::new();
            let size = 300usize;
            let mut arrival = at_ms as f64 + 20.0;
            for _ in 0..PROBE_PACKETS {
                let seq = bwe.history.next_seq();
                bwe.history
                    .sent(t0 + Duration::from_millis(at_ms), size, id);
                arrival += size as f64 * 8.0 / capacity * 1000.0;
                acks.push(arrived(seq, arrival));
            }
            bwe.on_feedback(t0 + Duration::from_millis(at_ms + 100), &acks);
        };
        let mut bwe = SubscriberBwe::default();
        // Through a 300 kbit/s bottleneck, a probe for 1.2 Mbit/s measures about 300 kbit/s.
        train(&mut bwe, 1_200_000.0, 300_000.0, 0);
        let (rate, _) = bwe.last_probe.unwrap();
        assert!((250_000.0..350_000.0).contains(&rate), "{rate}");
        assert!(
            bwe.estimate() < 700_000.0,
            "a failed probe re-seeds nothing"
        );
        // Through a 10 Mbit/s path it gets through: the estimate starts again from its target.
        train(&mut bwe, 1_200_000.0, 10_000_000.0, 200);
        assert!(bwe.last_probe.unwrap().0 > 1_200_000.0);
        assert_eq!(bwe.estimate(), 1_200_000.0);
        // Failed probes back off; a successful one brings the spacing back.
        assert_eq!(bwe.probe_spacing, PROBE_SPACING_MIN);
        let mut capped = SubscriberBwe::default();
        train(&mut capped, 1_200_000.0, 300_000.0, 0);
        assert_eq!(capped.probe_spacing, PROBE_SPACING_MIN * 2);
        assert!(!capped.may_probe(t0 + Duration::from_millis(3000)));
        assert!(capped.may_probe(t0 + Duration::from_millis(4000)));
        // One train at a time.
        let mut bwe = SubscriberBwe::default();
        assert!(bwe.start_probe(t0, 1e6).is_some());
        assert!(bwe.start_probe(t0, 1e6).is_none());
        // A train whose feedback never comes is given up after 2 s.
        assert!(bwe.start_probe(t0 + Duration::from_secs(3), 1e6).is_some());
    }

    #[test]
    fn the_history_reports_in_send_order_once() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        let first = h.next_seq();
        for i in 0..5u64 {
            h.sent(t0 + Duration::from_millis(i), 100 + i as usize, 0);
        }
        let acks: Vec<_> = (0..5u16)
            .rev()
            .map(|i| arrived(first.wrapping_add(i), 10.0 + i as f64))
            .collect();
        let r = h.reports(&acks);
        assert_eq!(r.len(), 5);
        assert!(r.windows(2).all(|w| w[0].0.id < w[1].0.id));
        assert_eq!(r[0].0.size, 100);
        assert!(h.reports(&acks).is_empty(), "reported once");
        // Unknown or overwritten numbers are ignored.
        assert!(h.reports(&[arrived(first.wrapping_sub(1), 0.0)]).is_empty());
    }
}
