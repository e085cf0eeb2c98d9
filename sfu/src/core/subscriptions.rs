//! Tracks and subscriptions: a participant publishes a track, every other participant of the
//! consultation is subscribed to it (a sender of its own), and each change goes through that
//! participant's negotiation (applied now, or after the outstanding offer's answer).

use super::codec::{Codec, kind_of, rtc_kind, rtx_apt};
use super::{Change, Core, Kind, Subscription, Track, Unsubscribe};
use crate::SfuEvent;
use crate::forward::{Munger, PayloadMap};
use crate::keyframe::KeyframeThrottle;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use std::time::Instant;

impl Core {
    /// A participant started publishing a track: announce it, subscribe the others.
    pub(super) fn publish(
        &mut self,
        key: u64,
        source: String,
        receiver_id: RTCRtpReceiverId,
        ssrc: u32,
        rid: Option<String>,
        now: Instant,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        // Simulcast: each layer opens on its own (its rid); the first one announces the track,
        // the others join it as layers of the same group.
        let layer = rid.as_deref().and_then(crate::simulcast::layer_of);
        if rid.is_some() && layer.is_none() {
            return; // a rid we never offered
        }
        let group = match (p.tracks.get(&source), &rid) {
            (None, _) => None,
            (Some(first), Some(_)) if first.layer.is_some() => Some(first.number),
            (Some(_), _) => return,
        };
        let key_in_map = match (&group, &rid) {
            (Some(_), Some(rid)) => format!("{source}\u{1}{rid}"),
            _ => source.clone(),
        };
        if p.tracks.contains_key(&key_in_map) {
            return;
        }
        // Which of its own receiving sections the track came on; media on any other section
        // (one we offered `sendonly`) never reaches here, as those have no receiver.
        let Some(section) =
            p.pc.get_transceivers()
                .find(|&t| RTCRtpReceiverId::from(t) == receiver_id)
                .and_then(crate::session::source_of_section)
        else {
            return;
        };
        let Some(mut receiver) = p.pc.rtp_receiver(receiver_id) else {
            return;
        };
        let kind = kind_of(receiver.track().kind());
        let params = &receiver.get_parameters().rtp_parameters.codecs;
        let Some(codec) = params.first().map(|c| c.rtp_codec.clone()) else {
            return;
        };
        let codecs = params
            .iter()
            .map(|c| (c.payload_type, Codec::of(&c.rtp_codec.mime_type)))
            .collect();
        let rtx_payload_types: Vec<(u8, u8)> = params
            .iter()
            .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx"))
            .filter_map(|c| Some((c.payload_type, rtx_apt(&c.rtp_codec.sdp_fmtp_line)?)))
            .collect();
        let rtx_ssrc = receiver
            .track()
            .codings()
            .iter()
            .find(|c| c.rtp_coding_parameters.ssrc == Some(ssrc))
            .and_then(|c| c.rtp_coding_parameters.rtx.as_ref())
            .map(|rtx| rtx.ssrc)
            .filter(|_| !rtx_payload_types.is_empty());
        let twcc_id = receiver
            .get_parameters()
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|h| h.uri == rtc::sdp::extmap::TRANSPORT_CC_URI)
            .and_then(|h| u8::try_from(h.id).ok())
            .filter(|&id| id > 0);
        let rrid_id = receiver
            .get_parameters()
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|h| h.uri == rtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI)
            .and_then(|h| u8::try_from(h.id).ok())
            .filter(|&id| id > 0);
        let clock_rate = codec.clock_rate;
        let number = self.next_track;
        let public_id = match group.and_then(|g| p.tracks.values().find(|t| t.number == g)) {
            Some(first) => first.public_id.clone(),
            None => format!("{}-{}", p.id, number),
        };
        self.next_track += 1;
        p.tracks.insert(
            key_in_map,
            Track {
                number,
                public_id: public_id.clone(),
                kind,
                ssrc,
                codec,
                codecs,
                keyframes: KeyframeThrottle::default(),
                clock_rate,
                cache: super::media::track_cache(kind),
                rtx_ssrc,
                rtx_payload_types,
                twcc_id,
                recv: Default::default(),
                sender_report: None,
                source: section,
                recording: None,
                group: group.unwrap_or(number),
                layer,
                rid: rid.map(String::into_bytes),
                rrid_id,
                last_arrival: None,
                height: 0,
                clock: None,
                bytes: 0,
                bitrate: Default::default(),
            },
        );
        self.attach_tap(key, &source, now);
        if group.is_some() {
            return; // another layer of a track already announced and subscribed to
        }
        self.emit(
            key,
            SfuEvent::TrackPublished {
                track_id: public_id,
                kind,
                source: section,
            },
        );
        self.metrics.get().tracks.increment(1.0);
        for s in self.others(key) {
            self.change(
                s,
                Change::Subscribe {
                    publisher: key,
                    source: source.clone(),
                },
            );
            self.negotiate(s, now);
            self.process(s, now);
        }
    }

    /// The other members of `key`'s consultation.
    pub(super) fn others(&self, key: u64) -> Vec<u64> {
        self.participants
            .get(&key)
            .and_then(|p| self.consultations.get(&p.consultation))
            .map(|m| m.iter().copied().filter(|&m| m != key).collect())
            .unwrap_or_default()
    }

    pub(super) fn unpublish(&mut self, key: u64, source: &str, now: Instant) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(gone) = p.tracks.remove(source) else {
            return;
        };
        // Its other simulcast layers go with it.
        p.tracks.retain(|_, t| t.group != gone.number);
        self.emit(
            key,
            SfuEvent::TrackUnpublished {
                track_id: gone.public_id,
            },
        );
        self.metrics.get().tracks.decrement(1.0);
        for s in self.others(key) {
            self.unsubscribe(s, Unsubscribe::Track(key, source.to_string()), now);
        }
    }

    /// A subscription change for `subscriber`: applied now, or held back while its offer is
    /// outstanding. Returns whether it changed the transceivers now. The caller negotiates.
    pub(super) fn change(&mut self, subscriber: u64, change: Change) -> bool {
        let Some(s) = self.participants.get_mut(&subscriber) else {
            return false;
        };
        match s.negotiation.change(change) {
            Some(change) => self.apply(subscriber, change),
            None => false,
        }
    }

    /// Apply a subscription change to the transceivers (never with an offer outstanding).
    /// Returns whether anything changed.
    pub(super) fn apply(&mut self, subscriber: u64, change: Change) -> bool {
        match change {
            Change::Subscribe { publisher, source } => {
                self.add_subscription(subscriber, publisher, &source)
            }
            Change::Unsubscribe(which) => self.remove_subscriptions(subscriber, &which),
        }
    }

    /// Add to `subscriber` a sender forwarding `publisher`'s track `source`.
    pub(super) fn add_subscription(
        &mut self,
        subscriber: u64,
        publisher: u64,
        source: &str,
    ) -> bool {
        let Some(p) = self.participants.get(&publisher) else {
            return false;
        };
        let Some(track) = p.tracks.get(source) else {
            return false;
        };
        // A screen share travels in a stream of its own, so the subscriber can tell it from the
        // publisher's camera (see `SCREEN_STREAM_SUFFIX`).
        let stream_id = match track.source {
            crate::Source::Screen => format!("{}{}", p.id, crate::SCREEN_STREAM_SUFFIX),
            _ => p.id.clone(),
        };
        let (kind, codec) = (track.kind, track.codec.clone());
        let simulcast = track.layer.is_some();
        let source_number = track.number;
        let clock_rate = codec.clock_rate;
        let track_id = format!("{}-{}", stream_id, self.next_track);
        self.next_track += 1;
        let Some(s) = self.participants.get_mut(&subscriber) else {
            return false;
        };
        let ssrc = rand::random::<u32>();
        // Video may be repaired on an RTX stream of its own (RFC 4588), if the answer takes it.
        let rtx_ssrc = (kind == Kind::Video).then(rand::random::<u32>);
        // Changes are applied only before an offer is made: this one goes into the next.
        let declared_in = s.negotiation.next_offer();
        let local = MediaStreamTrack::new(
            stream_id,
            track_id.clone(),
            track_id.clone(),
            rtc_kind(kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        // A transceiver of its own, `sendonly`, never the participant's own `recvonly` sections:
        // a receiver learns of a track when a new section appears (aiortc fires no track event
        // when an existing section merely turns `sendrecv`, so it never saw such subscriptions).
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        };
        match s
            .pc
            .add_transceiver_from_track(local, Some(init))
            .map(RTCRtpSenderId::from)
        {
            Ok(sender_id) => {
                s.subscriptions.push(Subscription {
                    publisher,
                    source: source.to_string(),
                    source_number,
                    sender_id,
                    ssrc,
                    kind,
                    payload: PayloadMap::default(),
                    declared_in,
                    needs_keyframe: kind == Kind::Video,
                    started: false,
                    clock_rate,
                    reported: None,
                    munger: Munger::default(),
                    mid: None,
                    resolved: false,
                    rtx_ssrc,
                    rtx: Vec::new(),
                    rtx_seq: rand::random(),
                    packets: 0,
                    octets: 0,
                    track_id,
                    simulcast,
                    layers: Default::default(),
                    vp8: Default::default(),
                    last_sent_arrival: None,
                    tile_height: None,
                    twcc_id: None,
                    twcc_sent: if kind == Kind::Video {
                        vec![(0, 0); crate::cache::VIDEO_PACKETS * 2]
                    } else {
                        Vec::new()
                    },
                    upgrade_ticks: 0,
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not add a subscription");
                false
            }
        }
    }

    /// Remove `subscriber`'s subscriptions matching `which`. Returns whether any went.
    pub(super) fn remove_subscriptions(&mut self, subscriber: u64, which: &Unsubscribe) -> bool {
        let Some(s) = self.participants.get_mut(&subscriber) else {
            return false;
        };
        let mut removed = false;
        let mut i = 0;
        while i < s.subscriptions.len() {
            if which.matches(&s.subscriptions[i]) {
                let sub = s.subscriptions.swap_remove(i);
                let _ = s.pc.remove_track(sub.sender_id);
                removed = true;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Remove `subscriber`'s subscriptions matching `which` (or hold that back), renegotiating
    /// if any went.
    pub(super) fn unsubscribe(&mut self, subscriber: u64, which: Unsubscribe, now: Instant) {
        if self.change(subscriber, Change::Unsubscribe(which)) {
            self.negotiate(subscriber, now);
            self.process(subscriber, now);
        }
    }

    /// Send a new offer, or have one follow the outstanding offer's answer.
    pub(super) fn negotiate(&mut self, key: u64, now: Instant) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.failed || !p.negotiation.want_offer() {
            return;
        }
        let offer = p.pc.create_offer(None).and_then(|offer| {
            p.pc.set_local_description(now, offer.clone())?;
            Ok(offer)
        });
        match offer {
            Ok(offer) => {
                p.negotiation.offered();
                let sdp = with_simulcast(&mut p.pc, offer.sdp);
                self.emit(key, SfuEvent::Offer(sdp));
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not create an offer");
            }
        }
    }
}

/// The offer as sent to the client: simulcast asked for on the participant's camera section
/// (`crate::simulcast::offer_with_simulcast`). `rtc` keeps its own offer as the local
/// description (it refuses a munged one); the rid and simulcast lines only tell the client to
/// send layers, and `rtc` reads the layers from the client's answer.
fn with_simulcast(pc: &mut rtc::peer_connection::RTCPeerConnection, sdp: String) -> String {
    // The camera section is the second transceiver `session::build` adds (audio, then video),
    // before any subscription or other receive section.
    let Some(camera) = pc.get_transceivers().nth(1) else {
        return sdp;
    };
    let Some(mid) = pc.rtp_transceiver(camera).and_then(|t| t.mid().clone()) else {
        return sdp;
    };
    crate::simulcast::offer_with_simulcast(&sdp, &mid)
}
