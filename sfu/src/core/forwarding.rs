//! The per-packet path: one RTP packet from a publisher's track to every subscription of it.
//! What each copy becomes is decided by `crate::forward` (pure); this applies it.

use super::Core;
use super::codec::Codec;
use crate::forward;
use rtc::shared::marshal::MarshalSize;
use std::time::Instant;

impl Core {
    /// Forward one packet from `publisher`'s track `source` to every subscription of it.
    /// `received`: when the datagram was taken off the socket (also the time given to the
    /// subscribers' senders: one clock read per datagram, none per subscriber).
    pub(super) fn forward(
        &mut self,
        publisher: u64,
        source: &str,
        mut packet: rtc::rtp::Packet,
        received: Instant,
    ) {
        let size = (packet.header.marshal_size() + packet.payload.len()) as u64;
        // Every copy drops them anyway (`forward::translate`): drop them once, so a copy per
        // subscriber allocates nothing.
        packet.header.extensions = Vec::new();
        let m = self.metrics.get();
        m.packets_in.increment(1);
        m.bytes_in.increment(size);
        let Some(p) = self.participants.get(&publisher) else {
            return;
        };
        let Some(track) = p.tracks.get(source) else {
            return;
        };
        let number = track.number;
        // The codec of this packet on the publisher's side, to resolve payload types below.
        let codec = track
            .codecs
            .iter()
            .find(|c| c.0 == packet.header.payload_type)
            .map(|c| c.1);
        let Some(members) = self.consultations.get(&p.consultation) else {
            return;
        };
        let mut sent = 0u64;
        let mut sent_bytes = 0u64;
        for &sid in members {
            if sid == publisher {
                continue;
            }
            let Some(s) = self.participants.get_mut(&sid) else {
                continue;
            };
            // Also while merely disconnected (sparse consent checks): see `Link`.
            if !s.link.forwards() {
                continue;
            }
            let sent_before = sent;
            // Never on a subscription the subscriber cannot know yet (its offer unanswered).
            let answered = s.negotiation.answered_offer();
            for sub in s
                .subscriptions
                .iter_mut()
                .filter(|sub| sub.source_number == number && sub.declared_in <= answered)
            {
                let mut out = packet.clone();
                let mut result = forward::translate(&mut out, sub.ssrc, &sub.payload);
                if result == Err(forward::Drop::Unresolved) {
                    let incoming = out.header.payload_type;
                    let outgoing = codec.and_then(|codec| {
                        let mut sender = s.pc.rtp_sender(sub.sender_id)?;
                        sender
                            .get_parameters()
                            .rtp_parameters
                            .codecs
                            .iter()
                            .find(|c| Codec::of(&c.rtp_codec.mime_type) == codec)
                            .map(|c| c.payload_type)
                    });
                    sub.payload.set(incoming, outgoing);
                    result = forward::translate(&mut out, sub.ssrc, &sub.payload);
                }
                if result.is_err() {
                    continue;
                }
                if let Some(mut sender) = s.pc.rtp_sender(sub.sender_id) {
                    let len = out.payload.len() as u64;
                    if sender.write_rtp(received, out).is_ok() {
                        sent += 1;
                        sent_bytes += len + 12;
                    }
                }
            }
            Self::send_datagrams(&mut self.out, &mut s.pc);
            if sent > sent_before {
                self.out.forwarded(received, sent - sent_before);
            }
        }
        let m = self.metrics.get();
        m.packets_out.increment(sent);
        m.bytes_out.increment(sent_bytes);
    }
}
