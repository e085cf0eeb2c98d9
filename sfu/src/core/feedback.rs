//! RTCP, ours end to end (issue 10): from subscribers, receiver reports about what we forward
//! (per-consultation loss and jitter), NACKs (answered from the cache) and keyframe requests
//! (passed to the track's publisher, throttled); from publishers, sender reports (their NTP↔RTP
//! mapping, relayed to the subscribers through each subscription's timestamp offset). Towards
//! publishers: receiver reports and NACKs for gaps. RTCP is rare next to RTP (a few packets per
//! second per stream), so it is parsed and built with `rtc`'s RTCP types.

use super::media::REPORT_INTERVAL;
use super::{Core, Kind};
use crate::quality::{self, ConsultationQuality};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
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
    /// One SRTCP datagram from participant `key`.
    pub(super) fn on_rtcp(
        &mut self,
        key: u64,
        from: std::net::SocketAddr,
        mut data: bytes::BytesMut,
        now: Instant,
    ) {
        let Some(keys) = self
            .participants
            .get_mut(&key)
            .and_then(|p| p.media.as_mut())
        else {
            self.metrics.get().before_keys.increment(1);
            return;
        };
        let len = match keys.rx.unprotect_rtcp(&mut data) {
            Ok(n) => n,
            Err(_) => {
                self.metrics.get().unauthenticated.increment(1);
                return;
            }
        };
        self.heard(key, from, now);
        let mut plain = &data[..len];
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut plain) else {
            self.metrics.get().rejected.increment(1);
            return;
        };
        self.on_reception_reports(key, &packets);
        for packet in &packets {
            let any = packet.as_any();
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let lost: Vec<u16> = nack.nacks.iter().flat_map(|n| n.packet_list()).collect();
                self.answer_nack(key, nack.media_ssrc, &lost, now);
            } else if let Some(cc) = any.downcast_ref::<TransportLayerCc>() {
                // The subscriber's transport-wide feedback: its estimate.
                let acks = rtc::interceptor::convert_twcc(cc);
                if let Some(s) = self.participants.get_mut(&key) {
                    s.bwe.on_feedback(now, &acks);
                }
            } else if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                self.on_keyframe_request(key, pli.media_ssrc, now);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                for entry in &fir.fir {
                    self.on_keyframe_request(key, entry.ssrc, now);
                }
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                self.on_sender_report(key, sr, now);
            }
        }
        self.out.recycle(data);
    }

    /// Protect and queue RTCP `packets` (one compound) to participant `key`.
    pub(super) fn send_rtcp(&mut self, key: u64, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let (Some(keys), Some(to)) = (p.media.as_mut(), p.remote) else {
            return;
        };
        let Ok(plain) = rtc::rtcp::packet::marshal(packets) else {
            return;
        };
        let mut buf = self.out.buffer();
        buf.extend_from_slice(&plain);
        let len = buf.len();
        buf.resize(len + keys.profile.rtcp_overhead(), 0);
        match keys.tx.protect_rtcp(&mut buf, len) {
            Ok(n) => {
                buf.truncate(n);
                self.out.push(to, buf);
            }
            Err(_) => self.out.recycle(buf),
        }
    }

    /// Ask publisher `key` for the packets `from..=to` (extended) of its stream `ssrc`.
    pub(super) fn nack_publisher(
        &mut self,
        key: u64,
        ssrc: u32,
        from: u64,
        to: u64,
        _now: Instant,
    ) {
        let Some(sender_ssrc) = self.participants.get(&key).map(|p| p.rtcp_ssrc) else {
            return;
        };
        let seqs: Vec<u16> = (from..=to).map(|s| s as u16).collect();
        let nack = TransportLayerNack {
            sender_ssrc,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(&seqs),
        };
        self.send_rtcp(key, &[Box::new(nack)]);
        self.metrics.get().nacks_sent.increment(1);
    }

    /// A publisher's sender report: keep its NTP↔RTP mapping (for our receiver reports' LSR),
    /// and pass it on to every subscriber of that track, translated to the subscription (its
    /// SSRC, its timestamp offset, its own packet and octet counts). Each subscriber thereby
    /// maps audio and video with the publisher's own clock (mediasoup #1881: an arrival-time
    /// mapping desynchronises them).
    fn on_sender_report(&mut self, key: u64, sr: &SenderReport, now: Instant) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(track) = p.tracks.values_mut().find(|t| t.ssrc == sr.ssrc) else {
            return;
        };
        track.sender_report = Some((sr.ntp_time, now));
        if let Some(rec) = &track.recording {
            rec.sender_report(now, sr.ntp_time, sr.rtp_time);
        }
        track.clock = Some((sr.ntp_time, sr.rtp_time));
        let (number, layer) = (track.group, track.layer);
        let mut relays: Vec<(u64, SenderReport)> = Vec::new();
        for &sid in self
            .consultations
            .get(&p.consultation)
            .into_iter()
            .flatten()
        {
            if sid == key {
                continue;
            }
            let Some(s) = self.participants.get(&sid) else {
                continue;
            };
            if !s.link.forwards() {
                continue;
            }
            let answered = s.negotiation.answered_offer();
            // Simulcast: only the layer a subscriber receives is its clock.
            for sub in s.subscriptions.iter().filter(|sub| {
                sub.source_number == number
                    && sub.declared_in <= answered
                    && sub.munger.started()
                    && sub.layers.current() == layer
            }) {
                relays.push((
                    sid,
                    SenderReport {
                        ssrc: sub.ssrc,
                        ntp_time: sr.ntp_time,
                        rtp_time: sr.rtp_time.wrapping_sub(sub.munger.ts_offset()),
                        packet_count: sub.packets,
                        octet_count: sub.octets,
                        ..Default::default()
                    },
                ));
            }
        }
        for (sid, report) in relays {
            self.send_rtcp(sid, &[Box::new(report)]);
        }
    }

    /// Receiver reports to every publisher about each of its tracks, every
    /// [`REPORT_INTERVAL`].
    pub(super) fn send_reports(&mut self, now: Instant) {
        let due = self.next_reports.is_some_and(|t| t <= now);
        if !due {
            return;
        }
        self.next_reports = Some(now + REPORT_INTERVAL);
        let keys: Vec<u64> = self
            .participants
            .iter()
            .filter(|(_, p)| p.media.is_some() && p.link.forwards() && !p.tracks.is_empty())
            .map(|(&k, _)| k)
            .collect();
        for key in keys {
            let Some(p) = self.participants.get_mut(&key) else {
                continue;
            };
            let reports: Vec<_> = p
                .tracks
                .values_mut()
                .filter_map(|t| t.recv.report(t.ssrc, t.sender_report, now))
                .collect();
            if reports.is_empty() {
                continue;
            }
            let rr = ReceiverReport {
                ssrc: p.rtcp_ssrc,
                reports,
                ..Default::default()
            };
            self.send_rtcp(key, &[Box::new(rr)]);
        }
    }

    /// Transport-wide congestion control feedback to every publisher that sent anything with a
    /// transport-wide sequence number since the last, every
    /// [`FEEDBACK_INTERVAL`](crate::twcc::FEEDBACK_INTERVAL).
    pub(super) fn send_twcc_feedback(&mut self, now: Instant) {
        if self.next_twcc.is_none_or(|t| t > now) {
            return;
        }
        self.next_twcc = Some(now + crate::twcc::FEEDBACK_INTERVAL);
        let mut due = std::mem::take(&mut self.due_twcc);
        due.extend(
            self.participants
                .iter()
                .filter(|(_, p)| p.twcc.has_pending() && p.link.forwards())
                .map(|(&k, _)| k),
        );
        for &key in &due {
            let Some(p) = self.participants.get_mut(&key) else {
                continue;
            };
            let media_ssrc = p.tracks.values().map(|t| t.ssrc).min().unwrap_or(0);
            if let Some(fb) = p.twcc.feedback(p.rtcp_ssrc, media_ssrc) {
                self.send_rtcp(key, &[Box::new(fb)]);
            }
        }
        due.clear();
        self.due_twcc = due;
    }

    /// Receiver reports (alone or in a sender report) from a subscriber about what we forward to
    /// it: keep each subscription's latest loss and jitter, and publish the consultation's worst.
    pub(super) fn on_reception_reports(
        &mut self,
        subscriber: u64,
        packets: &[Box<dyn rtc::rtcp::Packet>],
    ) {
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
        // Simulcast: the layer it receives, or the one it waits for.
        let layer = sub
            .simulcast
            .then(|| sub.layers.current().unwrap_or(sub.layers.target()));
        self.request_keyframe(publisher, &source, layer, now);
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
        // their request until the answer that declares them. A subscription that has not sent
        // its first packet yet is left to `start_subscription` (at that packet): it replays the
        // track's cache from its latest keyframe, and asks for one only if the cache has none.
        let answered = s.negotiation.answered_offer();
        let wanted: Vec<(u64, String, Option<u8>)> = s
            .subscriptions
            .iter_mut()
            .filter(|sub| {
                sub.needs_keyframe
                    && sub.kind == Kind::Video
                    && sub.declared_in <= answered
                    && sub.started
            })
            .map(|sub| {
                sub.needs_keyframe = false;
                let layer = sub.simulcast.then(|| sub.layers.target());
                (sub.publisher, sub.source.clone(), layer)
            })
            .collect();
        for (publisher, source, layer) in wanted {
            self.request_keyframe(publisher, &source, layer, now);
        }
    }

    /// Send the publisher of `source` a PLI, at most one per track (per simulcast layer) per
    /// [`KEYFRAME_REQUEST_INTERVAL`](crate::keyframe::KEYFRAME_REQUEST_INTERVAL). For a
    /// simulcast track, `layer` names the layer wanted (`None`: every layer).
    pub(super) fn request_keyframe(
        &mut self,
        publisher: u64,
        source: &str,
        layer: Option<u8>,
        now: Instant,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(group) = p.tracks.get(source).map(|t| t.group) else {
            return;
        };
        let sender_ssrc = p.rtcp_ssrc;
        let mut plis: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        for track in p.tracks.values_mut().filter(|t| {
            t.group == group && (layer.is_none() || t.layer.is_none() || t.layer == layer)
        }) {
            if track.keyframes.allow(now) {
                plis.push(Box::new(PictureLossIndication {
                    sender_ssrc,
                    media_ssrc: track.ssrc,
                }));
            }
        }
        if plis.is_empty() {
            return;
        }
        let n = plis.len() as u64;
        self.send_rtcp(publisher, &plis);
        self.metrics.get().keyframe_requests.increment(n);
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
