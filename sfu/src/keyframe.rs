//! Keyframe requests: the throttle the SFU applies per published track, an interceptor that lets
//! PLI/FIR reach an `rtc` application (by default the interceptor chain consumes all inbound
//! RTCP; the SFU itself reads RTCP on its own path now, the test and load-generator clients use
//! it), and the helpers to recognise them.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Minimum spacing of keyframe requests sent to one published track, however many subscribers
/// ask and however often.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

/// Keyframe requests to one published track, at most one per [`KEYFRAME_REQUEST_INTERVAL`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyframeThrottle {
    last: Option<Instant>,
}

impl KeyframeThrottle {
    /// Whether a request may go to the publisher at `now` (and if so, it counts as sent).
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Whether an RTCP packet carries reception report blocks (a receiver or sender report).
pub fn is_reception_report(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<ReceiverReport>() || any.is::<SenderReport>()
}

/// Whether an RTCP packet is transport-wide congestion control feedback.
pub fn is_twcc_feedback(packet: &dyn rtc::rtcp::Packet) -> bool {
    packet
        .as_any()
        .is::<rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc>()
}

/// Marks inbound RTCP compounds that carry a PLI or FIR — and, by default, receiver or sender
/// reports (the SFU's per-consultation loss and jitter metrics) and transport-wide congestion
/// control feedback — for delivery to the application. The interceptors still see everything (reports, NACK), as before.
pub struct DeliverKeyframeRequests {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    reports: bool,
}

impl Default for DeliverKeyframeRequests {
    fn default() -> Self {
        DeliverKeyframeRequests {
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
            reports: true,
        }
    }
}

impl DeliverKeyframeRequests {
    /// Deliver keyframe requests only (a client that does not read reports).
    pub fn keyframes_only() -> Self {
        DeliverKeyframeRequests {
            reports: false,
            ..Default::default()
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverKeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| {
                is_keyframe_request(p.as_ref())
                    || (self.reports
                        && (is_reception_report(p.as_ref()) || is_twcc_feedback(p.as_ref())))
            })
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for DeliverKeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_request_per_interval() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut k = KeyframeThrottle::default();
        assert!(k.allow(ms(0)));
        assert!(!k.allow(ms(0)));
        assert!(!k.allow(ms(249)));
        assert!(k.allow(ms(250)));
        assert!(!k.allow(ms(400)));
        assert!(k.allow(ms(600)));
        // A clock that seems to go backwards (inputs out of order) never lets one through early.
        assert!(!k.allow(ms(100)));
    }

    #[test]
    fn a_request_every_10_ms_for_a_second_passes_four_times() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        let passed = (0..100)
            .filter(|i| k.allow(t0 + Duration::from_millis(10 * i)))
            .count();
        assert_eq!(passed, 4); // at 0, 250, 500, 750 ms
    }

    #[test]
    fn recognises_pli_and_fir_but_not_reports() {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        };
        let fir = FullIntraRequest::default();
        let rr = ReceiverReport::default();
        assert!(is_keyframe_request(&pli));
        assert!(is_keyframe_request(&fir));
        assert!(!is_keyframe_request(&rr));
        assert!(is_reception_report(&rr));
        assert!(!is_reception_report(&pli));
    }
}
