//! RTCP from participants: receiver reports about what we forward (per-consultation loss and
//! jitter) and keyframe requests (passed to the track's publisher, throttled).

use super::{Core, Kind};
use crate::quality::{self, ConsultationQuality};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use std::time::Instant;

/// One reception report block, as our numbers: (fraction lost 0..1, jitter in seconds).
pub(super) fn reported(fraction_lost: u8, jitter: u32, clock_rate: u32) -> (f64, f64) {
    (
        fraction_lost as f64 / 256.0,
        jitter as f64 / clock_rate.max(1) as f64,
    )
}

/// The worst loss and the worst jitter over a consultation's reports (each on its own: they may
/// come from different subscriptions).
pub(super) fn worst(reports: impl IntoIterator<Item = (f64, f64)>) -> ConsultationQuality {
    let (mut loss, mut jitter) = (0.0f64, 0.0f64);
    for (l, j) in reports {
        loss = loss.max(l);
        jitter = jitter.max(j);
    }
    ConsultationQuality { loss, jitter }
}

impl Core {
    /// Receiver reports (alone or in a sender report) from a subscriber about what we forward to
    /// it: keep each subscription's latest loss and jitter, and publish the consultation's worst.
    pub(super) fn on_reception_reports(
        &mut self,
        subscriber: u64,
        packets: &[Box<dyn rtc::rtcp::Packet>],
    ) {
        use rtc::rtcp::receiver_report::ReceiverReport;
        use rtc::rtcp::sender_report::SenderReport;
        let Some(s) = self.participants.get_mut(&subscriber) else {
            return;
        };
        let mut changed = false;
        for packet in packets {
            let any = packet.as_any();
            let reports = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                &rr.reports
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                &sr.reports
            } else {
                continue;
            };
            for r in reports {
                if let Some(sub) = s.subscriptions.iter_mut().find(|sub| sub.ssrc == r.ssrc) {
                    sub.reported = Some(reported(r.fraction_lost, r.jitter, sub.clock_rate));
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
        let consultation = s.consultation.clone();
        let members = self.consultations.get(&consultation).into_iter().flatten();
        let quality = worst(
            members
                .filter_map(|m| self.participants.get(m))
                .flat_map(|p| p.subscriptions.iter().filter_map(|s| s.reported)),
        );
        quality::set_consultation(&consultation, quality);
    }

    /// A subscriber asked for a keyframe of the track it receives on `ssrc`.
    pub(super) fn on_keyframe_request(&mut self, subscriber: u64, ssrc: u32, now: Instant) {
        let Some(s) = self.participants.get(&subscriber) else {
            return;
        };
        let Some(sub) = s.subscriptions.iter().find(|sub| sub.ssrc == ssrc) else {
            return;
        };
        let (publisher, source) = (sub.publisher, sub.source.clone());
        self.request_keyframe(publisher, &source, now);
    }

    /// Ask for keyframes on behalf of a subscriber that just became able to receive.
    pub(super) fn request_pending_keyframes(&mut self, subscriber: u64, now: Instant) {
        let Some(s) = self.participants.get_mut(&subscriber) else {
            return;
        };
        if !s.link.forwards() {
            return;
        }
        // Only for subscriptions forwarded already (see `Core::forward`); the others keep
        // their request until the answer that declares them.
        let answered = s.negotiation.answered_offer();
        let wanted: Vec<(u64, String)> = s
            .subscriptions
            .iter_mut()
            .filter(|sub| {
                sub.needs_keyframe && sub.kind == Kind::Video && sub.declared_in <= answered
            })
            .map(|sub| {
                sub.needs_keyframe = false;
                (sub.publisher, sub.source.clone())
            })
            .collect();
        for (publisher, source) in wanted {
            self.request_keyframe(publisher, &source, now);
        }
    }

    /// Send the publisher of `source` a PLI, at most one per track per
    /// [`KEYFRAME_REQUEST_INTERVAL`](crate::keyframe::KEYFRAME_REQUEST_INTERVAL).
    pub(super) fn request_keyframe(&mut self, publisher: u64, source: &str, now: Instant) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(track) = p.tracks.get_mut(source) else {
            return;
        };
        if !track.keyframes.allow(now) {
            return;
        }
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: track.ssrc,
        };
        let receiver_id = track.receiver_id;
        if let Some(mut receiver) = p.pc.rtp_receiver(receiver_id) {
            let _ = receiver.write_rtcp(now, vec![Box::new(pli)]);
        }
        Self::send_datagrams(&mut self.out, &mut p.pc);
        self.metrics.get().keyframe_requests.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_become_fractions_and_seconds() {
        assert_eq!(reported(64, 4800, 48_000), (0.25, 0.1));
        assert_eq!(reported(0, 900, 90_000), (0.0, 0.01));
        // A clock rate of 0 (never negotiated) must not divide by zero.
        assert_eq!(reported(0, 7, 0), (0.0, 7.0));
    }

    #[test]
    fn the_worst_loss_and_the_worst_jitter_are_taken_separately() {
        let q = worst([(0.1, 0.002), (0.0, 0.03), (0.05, 0.0)]);
        assert_eq!(
            q,
            ConsultationQuality {
                loss: 0.1,
                jitter: 0.03
            }
        );
        assert_eq!(
            worst([]),
            ConsultationQuality {
                loss: 0.0,
                jitter: 0.0
            }
        );
    }
}
