//! Our RTP path (issue 10): once DTLS is up, RTP and RTCP never enter `rtc`'s pipeline.
//!
//! - **Inbound RTP**: one SRTP unprotect in place, a parse of the header (`crate::rtp`), into the
//!   track's packet cache (`crate::cache`), then per subscription: the munger's decision
//!   (`crate::forward`), a header rewrite and an SRTP protect into a pooled buffer queued to the
//!   subscriber's address. No allocation, lock, clock read or log line per packet per subscriber.
//! - **Retransmission**: a subscriber's NACK is mapped back through its munger and answered from
//!   the publisher's track cache, on the media SSRC (no RTX is negotiated), rewritten to the very
//!   bytes first sent.
//! - The first packet of a publisher's stream still goes through `rtc` (it opens the track:
//!   `OnTrack`); every later one of that SSRC comes here.

use super::codec::Codec;
use super::{Core, Kind, Subscription};
use crate::cache::{self, PacketCache};
use crate::forward::{Incoming, Verdict, extend_seq};
use crate::rtp::{OutHeader, RtpView};
use crate::sendq::SendQueue;
use crate::srtp;
use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::reception_report::ReceptionReport;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often receiver reports go to publishers.
pub(super) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A gap larger than this is a jump (a restarted sender), not loss worth a NACK.
const MAX_NACK_GAP: u64 = 64;

/// The SRTP contexts of one participant's connection, from the keys of its DTLS handshake.
pub(super) struct MediaKeys {
    /// Unprotects what the participant sends.
    pub rx: srtp::Context,
    /// Protects what we send it.
    pub tx: srtp::Context,
    pub profile: srtp::Profile,
}

impl MediaKeys {
    /// The contexts for `pc`, once its DTLS handshake has completed (`None` before, or for a
    /// profile we do not implement).
    pub fn of(pc: &RTCPeerConnection) -> Option<MediaKeys> {
        let k = pc.srtp_keying_material()?;
        let profile = srtp::Profile::from_rtc(k.profile)?;
        let rx = srtp::Context::new(
            profile,
            &k.keys.remote_master_key,
            &k.keys.remote_master_salt,
        );
        let tx = srtp::Context::new(profile, &k.keys.local_master_key, &k.keys.local_master_salt);
        Some(MediaKeys {
            rx: rx.ok()?,
            tx: tx.ok()?,
            profile,
        })
    }
}

/// What we received of one published track (RFC 3550 §6.4.1, Appendix A.3 and A.8): for the
/// receiver reports and NACKs we send its publisher.
#[derive(Debug, Default)]
pub(super) struct ReceiveStats {
    highest: Option<u64>,
    base: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    jitter: f64,
    last_transit: Option<u32>,
    epoch: Option<Instant>,
}

impl ReceiveStats {
    /// Count a packet; returns the sequence numbers it shows missing (a gap just opened), if
    /// worth a NACK.
    pub fn on_packet(
        &mut self,
        seq: u16,
        timestamp: u32,
        now: Instant,
        clock_rate: u32,
    ) -> Option<(u64, u64)> {
        self.received += 1;
        let epoch = *self.epoch.get_or_insert(now);
        let arrival =
            (now.saturating_duration_since(epoch).as_secs_f64() * clock_rate as f64) as u64 as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(last) = self.last_transit {
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        let Some(highest) = self.highest else {
            let ext = (1 << 16) | seq as u64;
            self.highest = Some(ext);
            self.base = ext;
            return None;
        };
        let ext = extend_seq(highest, seq);
        if ext <= highest {
            return None;
        }
        self.highest = Some(ext);
        let gap = ext - highest - 1;
        (gap > 0 && gap <= MAX_NACK_GAP).then_some((highest + 1, ext - 1))
    }

    /// The report block for `ssrc`, and the interval counters moved on.
    pub fn report(
        &mut self,
        ssrc: u32,
        last_sr: Option<(u64, Instant)>,
        now: Instant,
    ) -> Option<ReceptionReport> {
        let highest = self.highest?;
        let expected = highest - self.base + 1;
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        let (last_sender_report, delay) = match last_sr {
            Some((ntp, at)) => (
                (ntp >> 16) as u32,
                (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32,
            ),
            None => (0, 0),
        };
        Some(ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost: lost.min(0x7F_FFFF) as u32,
            last_sequence_number: highest as u32,
            jitter: self.jitter as u32,
            last_sender_report,
            delay,
        })
    }
}

/// How old the cache's latest keyframe may be for a new subscription to be replayed from it
/// (a burst of at most this much video at its start); older, the subscription starts with the
/// live packet and a keyframe request.
pub(super) const REPLAY_WINDOW: Duration = Duration::from_secs(1);

/// One packet to forward, as received or as cached.
struct Outgoing<'a> {
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    payload: &'a [u8],
    padding_only: bool,
    /// VP8 on a simulcast subscription: its picture ids are rewritten (`Subscription::vp8`).
    vp8: bool,
    arrival: Instant,
}

/// Forward one packet on one subscription: the munger's decision, the subscriber's payload
/// type and MID, a header rewrite and a protect into a pooled buffer queued to `to`. Returns
/// the protected length if it was queued.
#[allow(clippy::too_many_arguments)]
fn send_on(
    out: &mut SendQueue,
    pc: &mut RTCPeerConnection,
    keys: &mut MediaKeys,
    to: SocketAddr,
    sub: &mut Subscription,
    bwe: &mut crate::bwe::SubscriberBwe,
    codec: Option<Codec>,
    packet: &Outgoing<'_>,
) -> Option<usize> {
    if !sub.resolved {
        Core::resolve(pc, sub);
    }
    let mut pt = sub.payload.get(packet.payload_type);
    if pt == crate::forward::UNKNOWN {
        let outgoing = codec.and_then(|codec| {
            let mut sender = pc.rtp_sender(sub.sender_id)?;
            sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| Codec::of(&c.rtp_codec.mime_type) == codec)
                .map(|c| c.payload_type)
        });
        sub.payload.set(packet.payload_type, outgoing);
        pt = sub.payload.get(packet.payload_type);
    }
    if pt == crate::forward::UNSUPPORTED {
        return None;
    }
    let Verdict::Send {
        seq,
        timestamp,
        padding_only: pad,
    } = sub.munger.decide(Incoming {
        seq: packet.seq,
        timestamp: packet.timestamp,
        padding_only: packet.padding_only,
    })
    else {
        return None;
    };
    let header = OutHeader {
        marker: packet.marker,
        payload_type: pt,
        seq,
        timestamp,
        ssrc: sub.ssrc,
        mid: sub.mid.as_ref().map(|(id, mid)| (*id, mid.as_slice())),
        twcc: sub.twcc_id.map(|id| (id, bwe.history.next_seq())),
    };
    let mut buf = out.buffer();
    let plain = write_packet(
        &mut buf,
        &header,
        packet.payload,
        if pad { 4 } else { 0 },
        keys.profile.rtp_overhead(),
    );
    if sub.simulcast {
        if packet.vp8 && !pad {
            let head = header.size();
            crate::simulcast::rewrite_vp8(
                &mut buf[head..head + packet.payload.len()],
                &mut sub.vp8,
            );
        }
        sub.last_sent_arrival = Some(packet.arrival);
    }
    match keys.tx.protect_rtp(&mut buf, plain) {
        Ok(n) => {
            buf.truncate(n);
            out.push(to, buf);
            if let Some((_, tw)) = header.twcc {
                bwe.history.sent(packet.arrival, n, 0);
                // A repair on the media SSRC must repeat these very bytes (SRTP), number included.
                if !sub.twcc_sent.is_empty() {
                    let i = seq as usize % sub.twcc_sent.len();
                    sub.twcc_sent[i] = (seq, tw);
                }
            }
            sub.packets = sub.packets.wrapping_add(1);
            sub.octets = sub.octets.wrapping_add(packet.payload.len() as u32);
            Some(n)
        }
        Err(_) => {
            out.recycle(buf);
            None
        }
    }
}

/// A new packet cache for a track of `kind`.
pub(super) fn track_cache(kind: Kind) -> PacketCache {
    match kind {
        Kind::Video => PacketCache::new(cache::VIDEO_PACKETS, cache::VIDEO_BYTES),
        Kind::Audio => PacketCache::new(cache::AUDIO_PACKETS, cache::AUDIO_BYTES),
    }
}

/// Write one outgoing packet into `buf` (cleared): our header, the payload, and for a
/// padding-only packet 4 bytes of padding; leaves room for the SRTP tag. Returns the plain
/// length.
fn write_packet(
    buf: &mut BytesMut,
    header: &OutHeader<'_>,
    payload: &[u8],
    padding: usize,
    overhead: usize,
) -> usize {
    let head = header.size();
    let pad = padding.min(255);
    let len = head + payload.len() + pad;
    buf.clear();
    buf.resize(len + overhead, 0);
    header.write(&mut buf[..head]);
    buf[head..head + payload.len()].copy_from_slice(payload);
    if pad > 0 {
        buf[0] |= 0x20;
        buf[len - 1] = pad as u8;
    }
    len
}

/// The subscriber-side MID header extension of a subscription: the negotiated id of the MID
/// extension on its sender, and the mid of its transceiver.
fn resolve_mid(
    pc: &mut RTCPeerConnection,
    sender_id: rtc::rtp_transceiver::RTCRtpSenderId,
) -> Option<(u8, Vec<u8>)> {
    let id = pc
        .rtp_sender(sender_id)?
        .get_parameters()
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|h| h.uri == rtc::sdp::extmap::SDES_MID_URI)
        .map(|h| h.id)?;
    let id = u8::try_from(id).ok().filter(|&id| id > 0)?;
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    let mid = transceivers.into_iter().find_map(|t| {
        let t = pc.rtp_transceiver(t)?;
        if t.sender() == Some(sender_id) {
            t.mid().clone()
        } else {
            None
        }
    })?;
    (!mid.is_empty() && mid.len() <= 255).then(|| (id, mid.into_bytes()))
}

impl Core {
    /// Whether an RTP datagram of participant `key` (in the clear header: its SSRC) belongs to
    /// a track it publishes that we know (else `rtc` must see it: the first packet of a stream
    /// opens its track).
    pub(super) fn is_known_stream(&self, key: u64, data: &[u8]) -> bool {
        let Some(ssrc) = data.get(8..12) else {
            return true; // too short: ours to drop
        };
        let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        self.participants.get(&key).is_some_and(|p| {
            p.tracks
                .values()
                .any(|t| t.ssrc == ssrc || t.rtx_ssrc == Some(ssrc))
                || repaired_layer(p, data).is_some()
        })
    }

    /// One SRTP packet from publisher `key`: unprotect, cache, forward.
    pub(super) fn on_rtp(&mut self, key: u64, from: SocketAddr, mut data: BytesMut, now: Instant) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(keys) = p.media.as_mut() else {
            self.metrics.get().before_keys.increment(1);
            return;
        };
        let len = match keys.rx.unprotect_rtp(&mut data) {
            Ok(n) => n,
            Err(_) => {
                self.metrics.get().unauthenticated.increment(1);
                return;
            }
        };
        if p.heard
            .is_none_or(|t| now.saturating_duration_since(t) >= super::LIVENESS_INTERVAL)
        {
            self.heard(key, from, now);
        }
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let packet = &data[..len];
        let Ok(view) = RtpView::parse(packet) else {
            self.metrics.get().rejected.increment(1);
            return;
        };
        if !p
            .tracks
            .values()
            .any(|t| t.ssrc == view.ssrc || t.rtx_ssrc == Some(view.ssrc))
        {
            // The first repair of a simulcast layer (`rtc` drops them: its `repaired-rid` is
            // a TODO): its SSRC becomes that layer's RTX stream.
            let Some(layer_key) = repaired_layer(p, packet) else {
                return;
            };
            if let Some(t) = p.tracks.get_mut(&layer_key) {
                t.rtx_ssrc = Some(view.ssrc);
            }
        }
        let Some((source, track)) = p
            .tracks
            .iter_mut()
            .find(|(_, t)| t.ssrc == view.ssrc || t.rtx_ssrc == Some(view.ssrc))
        else {
            return;
        };
        // Every packet of the transport counts for congestion control (media, RTX, padding).
        if let Some(tw) = track
            .twcc_id
            .and_then(|id| view.extension(packet, id))
            .and_then(|v| v.get(..2))
        {
            p.twcc.record(u16::from_be_bytes([tw[0], tw[1]]), now);
        }
        let (seq, payload_type, payload, padding_only, missing) = if track.ssrc == view.ssrc {
            let missing = track
                .recv
                .on_packet(view.seq, view.timestamp, now, track.clock_rate);
            (
                view.seq,
                view.payload_type,
                view.payload(packet),
                view.is_padding_only(),
                missing,
            )
        } else {
            // A repair on the publisher's RTX stream (RFC 4588 §4): the original sequence
            // number in the first two payload bytes, the original payload type by `apt`. Into
            // the media stream and its cache as if it had arrived in time. RTX packets without
            // one are bandwidth probes: nothing to forward.
            let rtx = view.payload(packet);
            let apt = track
                .rtx_payload_types
                .iter()
                .find(|r| r.0 == view.payload_type)
                .map(|r| r.1);
            let (Some(apt), Some(osn)) = (apt, rtx.get(..2)) else {
                self.out.recycle(data);
                return;
            };
            let osn = u16::from_be_bytes([osn[0], osn[1]]);
            self.metrics.get().repaired_in.increment(1);
            (osn, apt, &rtx[2..], rtx.len() == 2, None)
        };
        let codec = track
            .codecs
            .iter()
            .find(|c| c.0 == payload_type)
            .map(|c| c.1);
        if codec == Some(Codec::Vp8) && track.ssrc == view.ssrc {
            // What the server can read of the frame (`crate::inspect`): once per frame.
            match crate::inspect::vp8_view(payload) {
                crate::inspect::Vp8View::Plausible => self.metrics.tally.vp8_plausible += 1,
                crate::inspect::Vp8View::Opaque => self.metrics.tally.vp8_opaque += 1,
                crate::inspect::Vp8View::NotStart => {}
            }
        }
        let keyframe = match codec {
            Some(Codec::Vp8) => crate::rtp::vp8_keyframe(payload),
            Some(Codec::H264) => crate::rtp::h264_keyframe(payload),
            _ => false,
        };
        track.last_arrival = Some(now);
        track.bytes += len as u64;
        if keyframe
            && track.layer.is_some()
            && codec == Some(Codec::Vp8)
            && let Some((_, h)) = crate::simulcast::vp8_keyframe_size(payload)
        {
            track.height = h;
        }
        track.cache.insert(
            cache::Meta {
                seq,
                timestamp: view.timestamp,
                marker: view.marker,
                payload_type,
                keyframe,
                arrival: now,
            },
            payload,
        );
        // A recording of this track (`recording.rs`): the packet as the publisher sent it (a
        // repair rebuilt as the original), and the keyframes the recording needs.
        let mut recorded_keyframe = None;
        if let Some(rec) = track.recording.as_mut() {
            let cache = &track.cache;
            let repaired = |from: u64, to: u64| (from..=to).all(|s| cache.get(s as u16).is_some());
            let after = if track.ssrc == view.ssrc {
                rec.offer(now, packet, codec, keyframe, missing, repaired)
            } else {
                let mut original = self.out.buffer();
                original.clear();
                original.extend_from_slice(&packet[..view.payload_offset]);
                original[0] &= !0x20; // no padding in the rebuilt packet
                original[1] = (original[1] & 0x80) | (payload_type & 0x7F);
                original[2..4].copy_from_slice(&seq.to_be_bytes());
                original[8..12].copy_from_slice(&track.ssrc.to_be_bytes());
                original.extend_from_slice(payload);
                let after = rec.offer(now, &original, codec, keyframe, None, repaired);
                self.out.recycle(original);
                after
            };
            if after.dropped {
                self.metrics.get().recording_dropped.increment(1);
            }
            if after.keyframe {
                recorded_keyframe = Some((source.clone(), track.layer));
            }
        }
        let number = track.group;
        let layer = track.layer;
        let clock_rate = track.clock_rate;
        let track_ssrc = track.ssrc;
        if let Some((source, layer)) = recorded_keyframe {
            self.request_keyframe(key, &source, layer, now);
        }
        let tally = &mut self.metrics.tally;
        tally.packets_in += 1;
        tally.bytes_in += len as u64;
        if let Some((from, to)) = missing {
            self.nack_publisher(key, track_ssrc, from, to, now);
        }
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        // Simulcast: every layer's clock mapping, for the timestamps at a switch.
        let clocks = layer.map(|_| layer_clocks(p, number)).unwrap_or_default();
        let Some(members) = self.consultations.get(&p.consultation) else {
            return;
        };
        let packet = Outgoing {
            seq,
            timestamp: view.timestamp,
            marker: view.marker,
            payload_type,
            payload,
            padding_only,
            vp8: codec == Some(Codec::Vp8),
            arrival: now,
        };
        let mut sent = 0u64;
        let mut sent_bytes = 0u64;
        let mut starting = std::mem::take(&mut self.starting);
        for &sid in members {
            if sid == key {
                continue;
            }
            let Some(s) = self.participants.get_mut(&sid) else {
                continue;
            };
            // Also while merely disconnected (sparse consent checks): see `Link`.
            if !s.link.forwards() {
                continue;
            }
            let (Some(keys), Some(to)) = (s.media.as_mut(), s.remote) else {
                continue;
            };
            // Never on a subscription the subscriber cannot know yet (its offer unanswered).
            let answered = s.negotiation.answered_offer();
            for sub in s
                .subscriptions
                .iter_mut()
                .filter(|sub| sub.source_number == number && sub.declared_in <= answered)
            {
                if !sub.started && sub.kind == Kind::Video {
                    // Its first packet: replayed from the cache's latest keyframe on, below.
                    starting.push((sid, sub.ssrc));
                    continue;
                }
                if let Some(layer) = layer
                    && !admit_layer(
                        sub,
                        layer,
                        keyframe,
                        &packet,
                        &clocks,
                        clock_rate,
                        &mut self.metrics.tally.switches,
                    )
                {
                    continue;
                }
                if let Some(n) = send_on(
                    &mut self.out,
                    &mut s.pc,
                    keys,
                    to,
                    sub,
                    &mut s.bwe,
                    codec,
                    &packet,
                ) {
                    sent += 1;
                    sent_bytes += n as u64;
                }
            }
        }
        if sent > 0 {
            self.out.forwarded(now, sent);
        }
        let tally = &mut self.metrics.tally;
        tally.packets_out += sent;
        tally.bytes_out += sent_bytes;
        self.out.recycle(data);
        for (sid, ssrc) in starting.drain(..) {
            self.start_subscription(key, number, sid, ssrc, now);
        }
        self.starting = starting;
    }

    /// The first packet of a video subscription is due (it just became able to receive):
    /// replay what the track's cache holds from its latest keyframe on, through the
    /// subscription's munger (so the subscriber sees a gap-free sequence that starts with a
    /// keyframe), or, when the cache holds none recent enough, start with the live packet and
    /// ask the publisher for a keyframe.
    fn start_subscription(
        &mut self,
        publisher: u64,
        number: u64,
        subscriber: u64,
        ssrc: u32,
        now: Instant,
    ) {
        if publisher == subscriber {
            return; // (`get_disjoint_mut` would panic; never the case: nobody subscribes to itself)
        }
        let [Some(p), Some(s)] = self
            .participants
            .get_disjoint_mut([&publisher, &subscriber])
        else {
            return;
        };
        let (Some(keys), Some(to)) = (s.media.as_mut(), s.remote) else {
            return;
        };
        let Some(sub) = s.subscriptions.iter_mut().find(|sub| sub.ssrc == ssrc) else {
            return;
        };
        // Simulcast: the layer the subscription aims at (the allocation may change it later).
        let target = sub.simulcast.then(|| {
            let (available, heights) = layers_of(p, number, now);
            let cap = sub.tile_height.map_or(crate::simulcast::TOP, |h| {
                crate::simulcast::layer_for_height(heights, h)
            });
            if let Some(l) = crate::simulcast::pick_layer(available, cap) {
                sub.layers.set_target(l);
            }
            sub.layers.target()
        });
        let Some(track) = p
            .tracks
            .values()
            .find(|t| t.group == number && t.layer == target)
        else {
            return;
        };
        sub.started = true;
        let recent = track
            .cache
            .latest_keyframe()
            .filter(|k| now.saturating_duration_since(k.arrival) <= REPLAY_WINDOW);
        // Without simulcast, a subscription may start on a delta frame (its decoder waits for
        // the keyframe asked for); a simulcast one only ever starts at a keyframe of its layer.
        let start = match (recent, target) {
            (Some(k), _) => Some(k),
            (None, None) => track
                .cache
                .highest_seq()
                .and_then(|h| track.cache.since(h).next()),
            (None, Some(_)) => None,
        };
        let clocks = target.map(|_| layer_clocks(p, number)).unwrap_or_default();
        let Some(start) = start else {
            let source = sub.source.clone();
            sub.needs_keyframe = false;
            self.request_keyframe(publisher, &source, target, now);
            return;
        };
        let from_keyframe = start.keyframe;
        let mut sent = 0u64;
        for cached in track.cache.since(start.seq) {
            let codec = track
                .codecs
                .iter()
                .find(|c| c.0 == cached.payload_type)
                .map(|c| c.1);
            let packet = Outgoing {
                seq: cached.seq,
                timestamp: cached.timestamp,
                marker: cached.marker,
                payload_type: cached.payload_type,
                payload: cached.payload,
                padding_only: cached.payload.is_empty(),
                vp8: codec == Some(Codec::Vp8),
                arrival: cached.arrival,
            };
            if let Some(layer) = target
                && !admit_layer(
                    sub,
                    layer,
                    cached.keyframe,
                    &packet,
                    &clocks,
                    track.clock_rate,
                    &mut self.metrics.tally.switches,
                )
            {
                continue;
            }
            if send_on(
                &mut self.out,
                &mut s.pc,
                keys,
                to,
                sub,
                &mut s.bwe,
                codec,
                &packet,
            )
            .is_some()
            {
                sent += 1;
            }
        }
        let source = sub.source.clone();
        // The replay carries the keyframe this subscription waited for, or it is asked for now.
        sub.needs_keyframe = false;
        let m = self.metrics.get();
        m.packets_out.increment(sent);
        m.replayed.increment(sent);
        if !from_keyframe {
            self.request_keyframe(publisher, &source, target, now);
        }
    }

    /// Once per subscription (at its first packet): the subscriber's MID extension.
    fn resolve(pc: &mut RTCPeerConnection, sub: &mut Subscription) {
        sub.resolved = true;
        sub.mid = resolve_mid(pc, sub.sender_id);
        sub.twcc_id = resolve_twcc(pc, sub.sender_id);
        sub.rtx = if sub.rtx_ssrc.is_some() {
            resolve_rtx(pc, sub.sender_id)
        } else {
            Vec::new()
        };
    }

    /// Answer subscriber `key`'s NACK for what it receives on `ssrc`: each lost sequence number
    /// mapped back to the publisher's, resent from the track's cache — as RTX on the
    /// subscription's own RTX stream if its answer took RTX for that codec, else the very bytes
    /// first sent, on the media SSRC.
    pub(super) fn answer_nack(&mut self, key: u64, ssrc: u32, lost: &[u16], now: Instant) {
        let Some(s) = self.participants.get(&key) else {
            return;
        };
        let Some(sub) = s.subscriptions.iter().find(|sub| sub.ssrc == ssrc) else {
            return;
        };
        let publisher = sub.publisher;
        let source_number = sub.source_number;
        if publisher == key {
            return; // (`get_disjoint_mut` would panic; never the case)
        }
        let [Some(s), Some(p)] = self.participants.get_disjoint_mut([&key, &publisher]) else {
            return;
        };
        let (Some(keys), Some(to)) = (s.media.as_mut(), s.remote) else {
            return;
        };
        let Some(sub) = s.subscriptions.iter_mut().find(|sub| sub.ssrc == ssrc) else {
            return;
        };
        // The layer it receives (simulcast), else the track itself.
        let layer = sub.layers.current();
        let Some(track) = p
            .tracks
            .values()
            .find(|t| t.group == source_number && t.layer == layer)
        else {
            return;
        };
        let overhead = keys.profile.rtp_overhead();
        let mut resent = 0u64;
        for &out_seq in lost {
            let Some(in_seq) = sub.munger.incoming_seq(out_seq) else {
                continue;
            };
            let Some(cached) = track.cache.get(in_seq) else {
                continue;
            };
            let pt = sub.payload.get(cached.payload_type);
            if pt == crate::forward::UNKNOWN || pt == crate::forward::UNSUPPORTED {
                continue;
            }
            let mid = sub.mid.as_ref().map(|(id, mid)| (*id, mid.as_slice()));
            let timestamp = cached.timestamp.wrapping_sub(sub.munger.ts_offset());
            let rtx = sub
                .rtx_ssrc
                .zip(sub.rtx.iter().find(|r| r.0 == pt).map(|r| r.1));
            let mut buf = self.out.buffer();
            let plain = match rtx {
                // A padding packet needs no repair.
                Some(_) if cached.payload.is_empty() => {
                    self.out.recycle(buf);
                    continue;
                }
                Some((rtx_ssrc, rtx_pt)) => {
                    // A packet of its own: a new transport-wide number, counted by the estimate.
                    let twcc = sub.twcc_id.map(|id| (id, s.bwe.history.next_seq()));
                    let header = OutHeader {
                        marker: cached.marker,
                        payload_type: rtx_pt,
                        seq: sub.rtx_seq,
                        timestamp,
                        ssrc: rtx_ssrc,
                        mid,
                        twcc,
                    };
                    sub.rtx_seq = sub.rtx_seq.wrapping_add(1);
                    write_rtx(&mut buf, &header, out_seq, cached.payload, overhead)
                }
                None => {
                    // The very bytes first sent (SRTP: one index, one plaintext), with the
                    // transport-wide number they carried.
                    let twcc = match sub.twcc_id {
                        None => None,
                        Some(id) => {
                            let first = sub
                                .twcc_sent
                                .get(out_seq as usize % sub.twcc_sent.len().max(1))
                                .filter(|(seq, _)| *seq == out_seq);
                            match first {
                                Some(&(_, tw)) => Some((id, tw)),
                                None => {
                                    self.out.recycle(buf);
                                    continue;
                                }
                            }
                        }
                    };
                    let header = OutHeader {
                        marker: cached.marker,
                        payload_type: pt,
                        seq: out_seq,
                        timestamp,
                        ssrc: sub.ssrc,
                        mid,
                        twcc,
                    };
                    let padding = if cached.payload.is_empty() { 4 } else { 0 };
                    write_packet(&mut buf, &header, cached.payload, padding, overhead)
                }
            };
            let rtx_twcc = rtx.is_some() && sub.twcc_id.is_some();
            match keys.tx.protect_rtp(&mut buf, plain) {
                Ok(n) => {
                    buf.truncate(n);
                    self.out.push(to, buf);
                    if rtx_twcc {
                        s.bwe.history.sent(now, n, 0);
                    }
                    resent += 1;
                }
                Err(_) => self.out.recycle(buf),
            }
        }
        self.metrics.get().retransmitted.increment(resent);
    }
}

/// The id of the transport-wide sequence number extension the subscriber's answer took for a
/// subscription's sender (`None`: not negotiated, no estimate from its feedback).
fn resolve_twcc(
    pc: &mut RTCPeerConnection,
    sender_id: rtc::rtp_transceiver::RTCRtpSenderId,
) -> Option<u8> {
    let id = pc
        .rtp_sender(sender_id)?
        .get_parameters()
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|h| h.uri == rtc::sdp::extmap::TRANSPORT_CC_URI)
        .map(|h| h.id)?;
    u8::try_from(id).ok().filter(|&id| id > 0 && id < 255)
}

/// The RTX payload types the subscriber's answer took for a subscription's sender: (media
/// payload type, RTX payload type) pairs (empty: no RTX, repairs go on the media SSRC).
fn resolve_rtx(
    pc: &mut RTCPeerConnection,
    sender_id: rtc::rtp_transceiver::RTCRtpSenderId,
) -> Vec<(u8, u8)> {
    let Some(mut sender) = pc.rtp_sender(sender_id) else {
        return Vec::new();
    };
    sender
        .get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx"))
        .filter_map(|c| {
            Some((
                super::codec::rtx_apt(&c.rtp_codec.sdp_fmtp_line)?,
                c.payload_type,
            ))
        })
        .collect()
}

/// Write one RTX packet (RFC 4588 §4) into `buf` (cleared): `header` (the RTX stream's SSRC,
/// payload type and sequence number), the original sequence number, the original payload;
/// leaves room for the SRTP tag. Returns the plain length.
fn write_rtx(
    buf: &mut BytesMut,
    header: &OutHeader<'_>,
    osn: u16,
    payload: &[u8],
    overhead: usize,
) -> usize {
    let head = header.size();
    let len = head + 2 + payload.len();
    buf.clear();
    buf.resize(len + overhead, 0);
    header.write(&mut buf[..head]);
    buf[head..head + 2].copy_from_slice(&osn.to_be_bytes());
    buf[head + 2..len].copy_from_slice(payload);
    len
}

/// One probe packet (`crate::bwe`) to a subscriber: padding only, on the subscription's RTX
/// stream (a browser counts it for its feedback and drops it), numbered for the estimate as part
/// of probe train `probe`. Returns whether it was queued.
pub(super) fn write_probe(
    out: &mut SendQueue,
    keys: &mut MediaKeys,
    to: SocketAddr,
    sub: &mut Subscription,
    bwe: &mut crate::bwe::SubscriberBwe,
    probe: u32,
    now: Instant,
) -> bool {
    let (Some(rtx_ssrc), Some(&(_, rtx_pt)), Some(twcc_id)) =
        (sub.rtx_ssrc, sub.rtx.first(), sub.twcc_id)
    else {
        return false;
    };
    let header = OutHeader {
        marker: false,
        payload_type: rtx_pt,
        seq: sub.rtx_seq,
        timestamp: sub.munger.last_timestamp().unwrap_or(0),
        ssrc: rtx_ssrc,
        mid: sub.mid.as_ref().map(|(id, mid)| (*id, mid.as_slice())),
        twcc: Some((twcc_id, bwe.history.next_seq())),
    };
    sub.rtx_seq = sub.rtx_seq.wrapping_add(1);
    let mut buf = out.buffer();
    let plain = write_packet(
        &mut buf,
        &header,
        &[],
        crate::bwe::PROBE_PADDING,
        keys.profile.rtp_overhead(),
    );
    match keys.tx.protect_rtp(&mut buf, plain) {
        Ok(n) => {
            buf.truncate(n);
            out.push(to, buf);
            bwe.history.sent(now, n, probe);
            true
        }
        Err(_) => {
            out.recycle(buf);
            false
        }
    }
}

/// Whether a simulcast subscription forwards this packet of `layer` (and if it switches to it
/// now, the switch applied: sequence numbers continue, timestamps mapped through the sender
/// reports, VP8 picture ids continue).
fn admit_layer(
    sub: &mut Subscription,
    layer: u8,
    keyframe: bool,
    packet: &Outgoing<'_>,
    clocks: &[Option<crate::simulcast::ClockMapping>; 3],
    clock_rate: u32,
    switches: &mut u64,
) -> bool {
    use crate::simulcast::Admit;
    match sub.layers.admit(layer, keyframe) {
        Admit::Forward => true,
        Admit::Drop => false,
        Admit::Switch { from } => {
            let elapsed = sub.last_sent_arrival.map_or(1, |t| {
                let us = packet.arrival.saturating_duration_since(t).as_micros() as u64;
                (us * clock_rate as u64 / 1_000_000).min(u32::MAX as u64) as u32
            });
            let offset = crate::simulcast::switch_timestamp_offset(
                sub.munger.ts_offset(),
                from.and_then(|f| clocks[f as usize]),
                clocks[layer as usize],
                clock_rate,
                packet.timestamp,
                sub.munger.last_timestamp(),
                elapsed,
            );
            sub.munger.switch(packet.seq, offset);
            if packet.vp8
                && let Some(ids) = crate::simulcast::Vp8Ids::parse(packet.payload)
            {
                sub.vp8.switch(&ids);
            }
            *switches += 1;
            true
        }
    }
}

/// The clock mapping of each layer of the simulcast group `group` (by layer index).
fn layer_clocks(p: &super::Participant, group: u64) -> [Option<crate::simulcast::ClockMapping>; 3] {
    let mut clocks = [None; 3];
    for t in p.tracks.values().filter(|t| t.group == group) {
        if let Some(l) = t.layer {
            clocks[l as usize] = t.clock;
        }
    }
    clocks
}

/// Which layers of the simulcast group `group` arrive (bit per layer) and their frame heights.
pub(super) fn layers_of(p: &super::Participant, group: u64, now: Instant) -> (u8, [u16; 3]) {
    let (available, heights, _) = layer_info(p, group, now);
    (available, heights)
}

/// [`layers_of`], with each layer's measured bitrate.
pub(super) fn layer_info(
    p: &super::Participant,
    group: u64,
    now: Instant,
) -> (u8, [u16; 3], [f64; 3]) {
    let mut available = 0u8;
    let mut heights = [0u16; 3];
    let mut rates = [0f64; 3];
    for t in p.tracks.values().filter(|t| t.group == group) {
        let Some(l) = t.layer else { continue };
        heights[l as usize] = t.height;
        rates[l as usize] = t.bitrate.bps();
        if t.last_arrival
            .is_some_and(|a| now.saturating_duration_since(a) < crate::simulcast::LAYER_IDLE)
        {
            available |= 1 << l;
        }
    }
    (available, heights, rates)
}

/// The key of the simulcast layer a packet (protected or not: only its header is read) repairs,
/// by its `repaired-rid` header extension.
fn repaired_layer(p: &super::Participant, data: &[u8]) -> Option<String> {
    let (_, t) = p
        .tracks
        .iter()
        .find(|(_, t)| t.rrid_id.is_some() && t.rid.is_some())?;
    let id = t.rrid_id?;
    let view = RtpView::parse_header(data).ok()?;
    let rrid = view.extension(data, id)?;
    p.tracks
        .iter()
        .find(|(_, t)| t.rid.as_deref() == Some(rrid))
        .map(|(k, _)| k.clone())
}

/// The remote address of the connection's selected candidate pair, if one is selected.
pub(super) fn selected_remote(pc: &mut RTCPeerConnection) -> Option<SocketAddr> {
    let receiver = pc.get_receivers().next()?;
    let receiver = pc.rtp_receiver(receiver)?;
    let pair = receiver
        .transport()?
        .ice_transport()
        .get_selected_candidate_pair()?;
    let ip: std::net::IpAddr = pair.remote().address.parse().ok()?;
    Some(SocketAddr::new(ip, pair.remote().port))
}

/// The destination of `rtc`'s own datagrams that are not STUN: the selected candidate pair,
/// where our media goes too.
pub(super) fn media_destination(data: &[u8], to: SocketAddr) -> Option<SocketAddr> {
    data.first().is_some_and(|&b| b > 3).then_some(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_stats_report_loss_and_ask_for_what_is_missing() {
        let t0 = Instant::now();
        let mut r = ReceiveStats::default();
        assert_eq!(r.report(1, None, t0), None, "nothing received yet");
        assert_eq!(r.on_packet(100, 0, t0, 90_000), None);
        assert_eq!(r.on_packet(101, 3000, t0, 90_000), None);
        // 102..=104 lost.
        assert_eq!(
            r.on_packet(105, 15_000, t0, 90_000),
            Some(((1 << 16) | 102, (1 << 16) | 104))
        );
        // Late arrivals and duplicates open no gap.
        assert_eq!(r.on_packet(103, 9000, t0, 90_000), None);
        let rr = r.report(7, None, t0).unwrap();
        assert_eq!(rr.ssrc, 7);
        assert_eq!(rr.last_sequence_number, (1 << 16) | 105);
        // 6 expected, 4 received: 2 lost, 2/6 of 256.
        assert_eq!(rr.total_lost, 2);
        assert_eq!(rr.fraction_lost, (2 * 256 / 6) as u8);
        // Next interval: nothing lost.
        r.on_packet(106, 18_000, t0, 90_000);
        let sr_at = t0;
        let rr = r
            .report(
                7,
                Some((0x1234_5678_9ABC_DEF0, sr_at)),
                t0 + Duration::from_millis(500),
            )
            .unwrap();
        assert_eq!(rr.fraction_lost, 0);
        assert_eq!(rr.last_sender_report, 0x5678_9ABC);
        assert_eq!(rr.delay, 32_768);
        // A jump is not loss worth a NACK.
        assert_eq!(r.on_packet(30_000, 0, t0, 90_000), None);
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let t0 = Instant::now();
        let mut r = ReceiveStats::default();
        // Packets 20 ms apart on the media clock, arriving alternately 0 and 10 ms late.
        for i in 0..200u32 {
            let late = if i % 2 == 0 { 0 } else { 10 };
            let at = t0 + Duration::from_millis(20 * i as u64 + late);
            r.on_packet(i as u16, i * 960, at, 48_000);
        }
        // |D| = 480 each time: the estimate converges on it.
        let j = r.report(1, None, t0).unwrap().jitter;
        assert!((470..=480).contains(&j), "{j}");
    }

    #[test]
    fn rtx_packets_carry_the_original_sequence_number_first() {
        let h = OutHeader {
            marker: true,
            payload_type: 97,
            seq: 9000,
            timestamp: 1234,
            ssrc: 77,
            mid: Some((3, b"2")),
            twcc: None,
        };
        let mut buf = BytesMut::new();
        let n = write_rtx(&mut buf, &h, 0xABCD, b"vp8", 16);
        assert_eq!(buf.len(), n + 16);
        let v = RtpView::parse(&buf[..n]).unwrap();
        assert_eq!(
            (v.ssrc, v.payload_type, v.seq, v.timestamp),
            (77, 97, 9000, 1234)
        );
        assert!(v.marker);
        assert_eq!(v.payload(&buf[..n]), &[0xAB, 0xCD, b'v', b'p', b'8'][..]);
        assert_eq!(v.extension(&buf[..n], 3), Some(&b"2"[..]));
        // What `rtc` makes of it: the same packet, unmarshalled.
        let mut plain = &buf[..n];
        let p =
            <rtc::rtp::Packet as rtc::shared::marshal::Unmarshal>::unmarshal(&mut plain).unwrap();
        assert_eq!(p.header.sequence_number, 9000);
        assert_eq!(&p.payload[..2], &0xABCDu16.to_be_bytes());
    }

    #[test]
    fn padding_packets_are_written_with_padding() {
        let h = OutHeader {
            marker: false,
            payload_type: 96,
            seq: 5,
            timestamp: 9,
            ssrc: 1,
            mid: Some((3, b"1")),
            twcc: None,
        };
        let mut buf = BytesMut::new();
        let n = write_packet(&mut buf, &h, &[], 4, 16);
        assert_eq!(buf.len(), n + 16);
        let v = RtpView::parse(&buf[..n]).unwrap();
        assert!(v.is_padding_only());
        assert_eq!(v.padding, 4);
        assert_eq!(v.extension(&buf[..n], 3), Some(&b"1"[..]));
        let n = write_packet(&mut buf, &h, b"abc", 0, 10);
        let v = RtpView::parse(&buf[..n]).unwrap();
        assert_eq!(v.payload(&buf[..n]), b"abc");
        assert_eq!(v.seq, 5);
    }
}
