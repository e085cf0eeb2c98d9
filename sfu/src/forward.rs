//! The forwarding decision for one packet and one subscription, as a pure function: what to send
//! (or whether to drop), separate from sending it — tested with synthetic packets below.

use rtc::rtp;

/// Payload-type translation for one subscription: the publisher's negotiated payload type →
/// the subscriber's payload type for the same codec. Learnt lazily, one entry per payload type.
#[derive(Clone)]
pub struct PayloadMap {
    map: [u8; 128],
}

pub const UNKNOWN: u8 = 0xFF;
/// The publisher's payload type has no matching codec on the subscriber's side: drop.
pub const UNSUPPORTED: u8 = 0xFE;

impl Default for PayloadMap {
    fn default() -> Self {
        PayloadMap {
            map: [UNKNOWN; 128],
        }
    }
}

impl PayloadMap {
    pub fn get(&self, incoming: u8) -> u8 {
        self.map[(incoming & 0x7f) as usize]
    }
    pub fn set(&mut self, incoming: u8, outgoing: Option<u8>) {
        self.map[(incoming & 0x7f) as usize] = outgoing.unwrap_or(UNSUPPORTED);
    }
}

/// Why a packet is not forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum Drop {
    /// Padding only (bandwidth probing): meaningless to a subscriber.
    Padding,
    /// Its codec is not negotiated on the subscriber's side.
    Unsupported,
    /// The payload type has not been resolved yet (caller resolves and retries).
    Unresolved,
}

/// Rewrite `packet` in place for a subscription sending on `ssrc`: new SSRC and payload type,
/// header extensions stripped (their ids were negotiated with the publisher, not the subscriber).
/// Sequence numbers and timestamps pass through: each subscription forwards one publisher track
/// for its whole life.
pub fn translate(packet: &mut rtp::Packet, ssrc: u32, payload: &PayloadMap) -> Result<(), Drop> {
    if packet.payload.is_empty() {
        return Err(Drop::Padding);
    }
    let pt = payload.get(packet.header.payload_type);
    if pt == UNKNOWN {
        return Err(Drop::Unresolved);
    }
    if pt == UNSUPPORTED {
        return Err(Drop::Unsupported);
    }
    packet.header.ssrc = ssrc;
    packet.header.payload_type = pt;
    packet.header.padding = false;
    packet.header.extension = false;
    packet.header.extension_profile = 0;
    packet.header.extensions.clear();
    packet.header.extensions_padding = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(pt: u8, seq: u16, payload: &'static [u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: 1000,
                ssrc: 0xAAAA,
                marker: true,
                extension: true,
                extension_profile: 0xBEDE,
                extensions: vec![rtp::header::Extension {
                    id: 3,
                    payload: Bytes::from_static(&[1, 2]),
                }],
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn rewrites_ssrc_and_payload_type_keeps_sequence() {
        let mut map = PayloadMap::default();
        map.set(96, Some(100));
        let mut p = packet(96, 42, b"vp8");
        assert_eq!(translate(&mut p, 0xBBBB, &map), Ok(()));
        assert_eq!(p.header.ssrc, 0xBBBB);
        assert_eq!(p.header.payload_type, 100);
        assert_eq!(p.header.sequence_number, 42);
        assert_eq!(p.header.timestamp, 1000);
        assert!(p.header.marker);
        assert!(!p.header.extension && p.header.extensions.is_empty());
        assert_eq!(&p.payload[..], b"vp8");
    }

    #[test]
    fn drops_what_the_subscriber_cannot_take() {
        let mut map = PayloadMap::default();
        assert_eq!(
            translate(&mut packet(96, 1, b"x"), 1, &map),
            Err(Drop::Unresolved)
        );
        map.set(96, None);
        assert_eq!(
            translate(&mut packet(96, 1, b"x"), 1, &map),
            Err(Drop::Unsupported)
        );
        map.set(96, Some(96));
        assert_eq!(
            translate(&mut packet(96, 1, b""), 1, &map),
            Err(Drop::Padding)
        );
        // Payload types above 127 cannot exist on the wire; the map masks rather than panics.
        assert_eq!(map.get(96 | 0x80), 96);
    }
}
