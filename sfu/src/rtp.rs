//! A view of an RTP packet in a byte buffer: what forwarding needs and nothing else (no owned
//! header, no `Vec` of extensions), and the writer of the header we send a subscriber.
//!
//! Parsing never panics, whatever the bytes (tested below with random input of every length).

/// Why bytes are not an RTP packet we can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than an RTP header")]
    TooShort,
    #[error("not RTP version 2")]
    Version,
    #[error("header or padding longer than the packet")]
    Truncated,
}

/// The fields of one RTP packet, with offsets into its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrc_count: u8,
    /// The header extension block, if any: (profile, offset of its first element, its length
    /// in bytes).
    pub extension: Option<(u16, usize, usize)>,
    /// Where the payload starts (= header length).
    pub payload_offset: usize,
    /// Padding bytes at the end (0 without the P bit).
    pub padding: usize,
    /// Length of the whole packet.
    pub len: usize,
}

impl RtpView {
    /// Parse the RTP packet `buf` (already unprotected).
    pub fn parse(buf: &[u8]) -> Result<RtpView, RtpError> {
        Self::parse_with(buf, true)
    }

    fn parse_with(buf: &[u8], with_padding: bool) -> Result<RtpView, RtpError> {
        if buf.len() < 12 {
            return Err(RtpError::TooShort);
        }
        if buf[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let csrc_count = buf[0] & 0x0F;
        let mut offset = 12 + 4 * csrc_count as usize;
        let mut extension = None;
        if buf[0] & 0x10 != 0 {
            let head = buf.get(offset..offset + 4).ok_or(RtpError::Truncated)?;
            let profile = u16::from_be_bytes([head[0], head[1]]);
            let len = 4 * u16::from_be_bytes([head[2], head[3]]) as usize;
            extension = Some((profile, offset + 4, len));
            offset += 4 + len;
        }
        if offset > buf.len() {
            return Err(RtpError::Truncated);
        }
        let padding = if with_padding && buf[0] & 0x20 != 0 {
            let n = buf[buf.len() - 1] as usize;
            if n == 0 || offset + n > buf.len() {
                return Err(RtpError::Truncated);
            }
            n
        } else {
            0
        };
        Ok(RtpView {
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7F,
            seq: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            csrc_count,
            extension,
            payload_offset: offset,
            padding,
            len: buf.len(),
        })
    }

    /// Parse only the header of `buf`, which may still be protected (SRTP leaves the header in
    /// the clear but appends its tag, so a padding count at the end is not read: `padding` is 0).
    pub fn parse_header(buf: &[u8]) -> Result<RtpView, RtpError> {
        Self::parse_with(buf, false)
    }

    /// The payload, without padding.
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.payload_offset..self.len - self.padding)
            .unwrap_or(&[])
    }

    /// Padding only (a bandwidth probe): nothing a subscriber can use.
    pub fn is_padding_only(&self) -> bool {
        self.payload_offset + self.padding >= self.len
    }

    /// The value of header extension `id` (RFC 8285, one- or two-byte form), if present.
    pub fn extension<'a>(&self, buf: &'a [u8], id: u8) -> Option<&'a [u8]> {
        let (profile, start, len) = self.extension?;
        let block = buf.get(start..start + len)?;
        let two_byte = if profile == 0xBEDE {
            false
        } else if profile & 0xFFF0 == 0x1000 {
            true
        } else {
            return None;
        };
        let mut i = 0;
        while i < block.len() {
            let (eid, elen, head) = if two_byte {
                if block[i] == 0 {
                    i += 1;
                    continue;
                }
                let elen = *block.get(i + 1)? as usize;
                (block[i], elen, 2)
            } else {
                let b = block[i];
                if b == 0 {
                    i += 1;
                    continue;
                }
                if b >> 4 == 15 {
                    return None; // reserved: stop parsing (RFC 8285 §4.2)
                }
                (b >> 4, (b & 0x0F) as usize + 1, 1)
            };
            let value = block.get(i + head..i + head + elen)?;
            if eid == id {
                return Some(value);
            }
            i += head + elen;
        }
        None
    }
}

/// Whether a VP8 payload (RFC 7741 §4.2 descriptor, then the VP8 payload header) starts a
/// keyframe.
pub fn vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if first & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        i = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            match payload.get(i) {
                Some(&b) if b & 0x80 != 0 => i += 2,
                Some(_) => i += 1,
                None => return false,
            }
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID / KEYIDX
        }
    }
    // The P bit of the VP8 frame tag: 0 for a keyframe.
    payload.get(i).is_some_and(|b| b & 0x01 == 0)
}

/// Whether an H.264 payload (RFC 6184) carries an IDR slice or a sequence parameter set.
pub fn h264_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1F {
        5 | 7 => true,
        // STAP-A: 16-bit sizes, each followed by a NAL unit.
        24 => {
            let mut i = 1;
            while let Some(size) = payload.get(i..i + 2) {
                let size = u16::from_be_bytes([size[0], size[1]]) as usize;
                match payload.get(i + 2) {
                    Some(nal) if matches!(nal & 0x1F, 5 | 7) => return true,
                    Some(_) => {}
                    None => return false,
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: the start fragment names the type.
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1F, 5 | 7)),
        _ => false,
    }
}

/// The header of a packet we send to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutHeader<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The MID header extension: (the subscriber's negotiated id, the subscriber's mid).
    pub mid: Option<(u8, &'a [u8])>,
    /// The transport-wide sequence number: (the subscriber's negotiated id, the number).
    pub twcc: Option<(u8, u16)>,
}

impl OutHeader<'_> {
    /// The one-byte form (RFC 8285 §4.2) fits every element.
    fn one_byte_form(&self) -> bool {
        self.mid.is_none_or(|(id, mid)| one_byte(id, mid))
            && self.twcc.is_none_or(|(id, _)| (1..=14).contains(&id))
    }

    /// Bytes of the extension elements (without the block's 4-byte head and padding).
    fn elements(&self) -> usize {
        let per = if self.one_byte_form() { 1 } else { 2 };
        self.mid.map_or(0, |(_, m)| per + m.len()) + self.twcc.map_or(0, |_| per + 2)
    }

    /// Bytes [`OutHeader::write`] writes.
    pub fn size(&self) -> usize {
        if self.mid.is_none() && self.twcc.is_none() {
            return 12;
        }
        12 + 4 + self.elements().next_multiple_of(4)
    }

    /// Write the header at the start of `out` (at least [`OutHeader::size`] bytes); returns its
    /// length. No CSRCs, no padding; the extensions are MID and the transport-wide sequence
    /// number.
    pub fn write(&self, out: &mut [u8]) -> usize {
        let len = self.size();
        let out = &mut out[..len];
        let extended = self.mid.is_some() || self.twcc.is_some();
        out[0] = 0x80 | if extended { 0x10 } else { 0 };
        out[1] = (self.payload_type & 0x7F) | if self.marker { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        if !extended {
            return len;
        }
        let one = self.one_byte_form();
        let words = ((len - 16) / 4) as u16;
        let profile: u16 = if one { 0xBEDE } else { 0x1000 };
        out[12..14].copy_from_slice(&profile.to_be_bytes());
        out[14..16].copy_from_slice(&words.to_be_bytes());
        let mut at = 16;
        let mut element = |out: &mut [u8], id: u8, value: &[u8]| {
            if one {
                out[at] = (id << 4) | (value.len() as u8 - 1);
                at += 1;
            } else {
                out[at] = id;
                out[at + 1] = value.len() as u8;
                at += 2;
            }
            out[at..at + value.len()].copy_from_slice(value);
            at += value.len();
        };
        if let Some((id, mid)) = self.mid {
            element(out, id, mid);
        }
        if let Some((id, seq)) = self.twcc {
            element(out, id, &seq.to_be_bytes());
        }
        out[at..].fill(0);
        len
    }
}

/// RFC 8285: the one-byte form takes ids 1..=14 and values of 1..=16 bytes.
fn one_byte(id: u8, value: &[u8]) -> bool {
    (1..=14).contains(&id) && (1..=16).contains(&value.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn packet() -> Vec<u8> {
        // V=2 P=1 X=1 CC=1, M=1 PT=96, seq 0x1234, ts 0xDEADBEEF, ssrc 0xCAFEBABE, one CSRC,
        // one-byte extensions: id 1 (3 bytes), id 3 "v1" (MID), then payload and 3 bytes of
        // padding.
        let mut p = vec![
            0xB1, 0xE0, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0xCA, 0xFE, 0xBA, 0xBE,
        ];
        p.extend_from_slice(&[0, 0, 0, 9]);
        p.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x12, 1, 2, 3, 0x31, b'v', b'1', 0]);
        p.extend_from_slice(&[0x90, 0x80, 0x05, 0x00, 0xAA]);
        p.extend_from_slice(&[0, 0, 3]);
        p
    }

    #[test]
    fn parses_what_forwarding_needs() {
        let p = packet();
        let v = RtpView::parse(&p).unwrap();
        assert!(v.marker);
        assert_eq!(v.payload_type, 96);
        assert_eq!(
            (v.seq, v.timestamp, v.ssrc),
            (0x1234, 0xDEAD_BEEF, 0xCAFE_BABE)
        );
        assert_eq!(v.csrc_count, 1);
        assert_eq!(v.payload_offset, 28);
        assert_eq!(v.padding, 3);
        assert_eq!(v.payload(&p), &[0x90, 0x80, 0x05, 0x00, 0xAA]);
        assert!(!v.is_padding_only());
        assert_eq!(v.extension(&p, 3), Some(&b"v1"[..]));
        assert_eq!(v.extension(&p, 1), Some(&[1, 2, 3][..]));
        assert_eq!(v.extension(&p, 2), None);
        // Descriptor X=1 I=1 (7-bit picture id), frame tag P=0: a keyframe.
        assert!(vp8_keyframe(v.payload(&p)));
    }

    #[test]
    fn padding_only_and_two_byte_extensions() {
        // P=1, X=1 two-byte profile 0x1000 with id 20 "mid", payload empty, 4 bytes padding.
        let mut p = vec![0xB0, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(&[0x10, 0x00, 0, 2, 20, 3, b'm', b'i', b'd', 0, 0, 0]);
        p.extend_from_slice(&[0, 0, 0, 4]);
        let v = RtpView::parse(&p).unwrap();
        assert!(v.is_padding_only());
        assert_eq!(v.payload(&p), &[] as &[u8]);
        assert_eq!(v.extension(&p, 20), Some(&b"mid"[..]));
        // Padding longer than the packet, or a zero padding count, is refused.
        let mut bad = p.clone();
        *bad.last_mut().unwrap() = 200;
        assert_eq!(RtpView::parse(&bad), Err(RtpError::Truncated));
        *bad.last_mut().unwrap() = 0;
        assert_eq!(RtpView::parse(&bad), Err(RtpError::Truncated));
        assert_eq!(RtpView::parse(&p[..11]), Err(RtpError::TooShort));
        let mut v1 = p.clone();
        v1[0] = 0x40;
        assert_eq!(RtpView::parse(&v1), Err(RtpError::Version));
    }

    #[test]
    fn keyframes_are_told_from_delta_frames() {
        assert!(vp8_keyframe(&[0x10, 0x00]), "S=1 PID=0, P=0");
        assert!(!vp8_keyframe(&[0x10, 0x01]), "P=1: delta frame");
        assert!(!vp8_keyframe(&[0x00, 0x00]), "not the start of a frame");
        assert!(!vp8_keyframe(&[0x11, 0x00]), "partition 1");
        // X, I with a 15-bit picture id, L, T/K.
        assert!(vp8_keyframe(&[0x90, 0xF0, 0x81, 0x02, 0x03, 0x04, 0x9C]));
        assert!(!vp8_keyframe(&[0x90, 0xF0, 0x81, 0x02, 0x03, 0x04, 0x9D]));
        assert!(!vp8_keyframe(&[0x90, 0xF0, 0x81]), "truncated");
        assert!(h264_keyframe(&[0x65, 0x88]), "IDR");
        assert!(
            h264_keyframe(&[0x18, 0, 2, 0x67, 0x42, 0, 1, 0x68]),
            "STAP-A with SPS"
        );
        assert!(h264_keyframe(&[0x7C, 0x85]), "FU-A start of an IDR");
        assert!(!h264_keyframe(&[0x7C, 0x05]), "FU-A continuation");
        assert!(!h264_keyframe(&[0x41, 0x9A]), "non-IDR slice");
    }

    #[test]
    fn written_headers_parse_back() {
        for (mid, id) in [
            (None, 0),
            (Some(&b"0"[..]), 4),
            (Some(&b"12"[..]), 14),
            (Some(&b"seventeen-bytes!!"[..]), 9),
            (Some(&b"1"[..]), 15),
        ] {
            let h = OutHeader {
                marker: true,
                payload_type: 111,
                seq: 65_535,
                timestamp: 0xFFFF_FFFF,
                ssrc: 42,
                mid: mid.map(|m| (id, m)),
                twcc: None,
            };
            let mut buf = vec![0xEE; h.size() + 3];
            let n = h.write(&mut buf);
            assert_eq!(n, h.size());
            assert_eq!(n % 4, 0);
            buf.truncate(n);
            buf.extend_from_slice(b"pay");
            let v = RtpView::parse(&buf).unwrap();
            assert_eq!(
                (v.marker, v.payload_type, v.seq, v.timestamp, v.ssrc),
                (true, 111, 65_535, 0xFFFF_FFFF, 42)
            );
            assert_eq!(v.payload(&buf), b"pay");
            assert_eq!(v.padding, 0);
            if let Some(m) = mid {
                assert_eq!(v.extension(&buf, id), Some(m), "{id}");
            }
        }
    }

    #[test]
    fn transport_wide_sequence_numbers_are_written_beside_the_mid() {
        for (mid, mid_id, twcc_id) in [
            (Some(&b"3"[..]), 1u8, 5u8),
            (None, 0, 3),
            (Some(&b"3"[..]), 1, 15),
            (Some(&b"seventeen-bytes!!"[..]), 2, 4),
        ] {
            let h = OutHeader {
                marker: false,
                payload_type: 96,
                seq: 7,
                timestamp: 9,
                ssrc: 1,
                mid: mid.map(|m| (mid_id, m)),
                twcc: Some((twcc_id, 0xBEEF)),
            };
            let mut buf = vec![0xEE; h.size()];
            assert_eq!(h.write(&mut buf), buf.len());
            assert_eq!(buf.len() % 4, 0);
            buf.extend_from_slice(b"x");
            let v = RtpView::parse(&buf).unwrap();
            assert_eq!(v.extension(&buf, twcc_id), Some(&[0xBE, 0xEF][..]));
            if let Some(m) = mid {
                assert_eq!(v.extension(&buf, mid_id), Some(m));
            }
            assert_eq!(v.payload(&buf), b"x");
        }
    }

    #[test]
    fn no_input_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        for round in 0..20_000 {
            let len = rng.gen_range(0..96);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            if round % 2 == 0 && len > 0 {
                buf[0] = 0x80 | (buf[0] & 0x3F); // version 2: reach the deeper paths
            }
            if let Ok(v) = RtpView::parse(&buf) {
                assert!(v.payload_offset <= v.len);
                let _ = v.payload(&buf);
                let _ = v.is_padding_only();
                for id in 0..=255 {
                    let _ = v.extension(&buf, id);
                }
            }
            let _ = vp8_keyframe(&buf);
            let _ = h264_keyframe(&buf);
        }
    }
}
