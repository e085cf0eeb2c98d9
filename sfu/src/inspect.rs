//! What the SFU can read of a VP8 frame beyond the bytes it needs in the clear (the frame tag,
//! and for a keyframe its start code and size: 10 bytes; 3 for a delta frame). Under
//! end-to-end encryption (`docs/compliance.md`) everything after those bytes is AES-GCM
//! ciphertext, and this module is how a test proves it: for the first packet of each VP8
//! frame it decodes the start of the frame header (RFC 6386 §9.2–9.6, §19.2) with a boolean
//! decoder and checks it against what a libvpx encoder writes (the one in Chromium, Firefox and
//! Safari's libwebrtc):
//!
//! - a keyframe's `color_space` and `clamping_type` bits are 0 (1 is reserved / unused);
//! - `filter_type` is 0 (the normal loop filter) for bitstream version 0;
//! - `sharpness_level` is 0 (libvpx's real-time default);
//! - `log2_nbr_of_dct_partitions` is 0 (libwebrtc asks libvpx for one token partition).
//!
//! A plaintext frame from our encoder passes every check (the `standard` control in
//! `web-client/tests/e2ee.test.mjs` measures it); random bytes pass all of them with
//! probability 1/512 for a keyframe and 1/64 for a delta frame (each bit a fair coin through
//! the decoder). It is a plausibility test, not a decoder: a frame it calls plausible could
//! still be ciphertext by chance, which is why the figures are counted over many frames.
//!
//! The cost is a few dozen boolean decodes per video frame (not per packet), no allocation.

/// What the inspector makes of a VP8 RTP payload (descriptor included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vp8View {
    /// Not the first packet of a frame (nothing to inspect), or too short.
    NotStart,
    /// The header beyond the clear bytes reads as our encoder writes it.
    Plausible,
    /// It does not: ciphertext (or another encoder's settings).
    Opaque,
}

/// The length of the RFC 7741 payload descriptor at the start of `payload`, if the packet
/// starts partition 0 of a frame.
fn frame_start(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return None;
    }
    let mut i = 1;
    if first & 0x80 != 0 {
        let x = *payload.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            i += if payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    (i < payload.len()).then_some(i)
}

/// The boolean entropy decoder of RFC 6386 §7.3 (written from the text; past the end of the
/// data it reads zeros, as the spec's reference decoder does).
struct BoolDecoder<'a> {
    data: &'a [u8],
    next: usize,
    value: u32,
    range: u32,
    bit_count: u32,
}

impl<'a> BoolDecoder<'a> {
    fn new(data: &'a [u8]) -> BoolDecoder<'a> {
        let b = |i: usize| u32::from(data.get(i).copied().unwrap_or(0));
        BoolDecoder {
            data,
            next: 2,
            value: (b(0) << 8) | b(1),
            range: 255,
            bit_count: 0,
        }
    }

    fn read(&mut self, prob: u32) -> bool {
        let split = 1 + (((self.range - 1) * prob) >> 8);
        let big_split = split << 8;
        let bit = if self.value >= big_split {
            self.range -= split;
            self.value -= big_split;
            true
        } else {
            self.range = split;
            false
        };
        while self.range < 128 {
            self.value <<= 1;
            self.range <<= 1;
            self.bit_count += 1;
            if self.bit_count == 8 {
                self.bit_count = 0;
                self.value |= u32::from(self.data.get(self.next).copied().unwrap_or(0));
                self.next += 1;
            }
        }
        bit
    }

    /// An unsigned `n`-bit literal, most significant bit first (`L(n)`).
    fn literal(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| (v << 1) | u32::from(self.read(128)))
    }

    /// A flag, and when set an `n`-bit magnitude and a sign (which are skipped).
    fn optional_signed(&mut self, n: u32) {
        if self.read(128) {
            self.literal(n + 1);
        }
    }
}

/// Inspect one VP8 RTP payload (see the module documentation).
pub fn vp8_view(payload: &[u8]) -> Vp8View {
    let Some(d) = frame_start(payload) else {
        return Vp8View::NotStart;
    };
    let frame = &payload[d..];
    let Some(tag) = frame.get(..3) else {
        return Vp8View::NotStart;
    };
    let keyframe = tag[0] & 0x01 == 0;
    let version = (tag[0] >> 1) & 0x07;
    let clear = if keyframe { 10 } else { 3 };
    // The clear bytes and at least a few of the header's.
    let Some(header) = frame.get(clear..).filter(|h| h.len() >= 8) else {
        return Vp8View::NotStart;
    };
    let mut bd = BoolDecoder::new(header);
    let mut plausible = true;
    if keyframe {
        let color_space = bd.literal(1);
        let clamping_type = bd.literal(1);
        plausible &= color_space == 0 && clamping_type == 0;
    }
    // segmentation_enabled
    if bd.read(128) {
        let update_map = bd.read(128);
        let update_data = bd.read(128);
        if update_data {
            bd.literal(1); // segment_feature_mode
            for _ in 0..4 {
                bd.optional_signed(7); // quantizer update
            }
            for _ in 0..4 {
                bd.optional_signed(6); // loop filter update
            }
        }
        if update_map {
            for _ in 0..3 {
                if bd.read(128) {
                    bd.literal(8); // segment_prob
                }
            }
        }
    }
    let filter_type = bd.literal(1);
    let _loop_filter_level = bd.literal(6);
    let sharpness = bd.literal(3);
    // loop_filter_adj_enable, mode_ref_lf_delta_update
    if bd.read(128) && bd.read(128) {
        for _ in 0..8 {
            bd.optional_signed(6);
        }
    }
    let partitions = bd.literal(2);
    plausible &= (version != 0 || filter_type == 0) && sharpness == 0 && partitions == 0;
    if plausible {
        Vp8View::Plausible
    } else {
        Vp8View::Opaque
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boolean encoder (RFC 6386 §7.3), to write test headers the decoder must read back.
    struct BoolEncoder {
        out: Vec<u8>,
        range: u32,
        bottom: u32,
        bit_count: i32,
    }

    impl BoolEncoder {
        fn new() -> BoolEncoder {
            BoolEncoder {
                out: Vec::new(),
                range: 255,
                bottom: 0,
                bit_count: 24,
            }
        }

        fn add_one_to_output(&mut self) {
            let mut i = self.out.len();
            while i > 0 {
                i -= 1;
                if self.out[i] == 255 {
                    self.out[i] = 0;
                } else {
                    self.out[i] += 1;
                    break;
                }
            }
        }

        fn write(&mut self, prob: u32, bit: bool) {
            let split = 1 + (((self.range - 1) * prob) >> 8);
            if bit {
                self.bottom = self.bottom.wrapping_add(split);
                self.range -= split;
            } else {
                self.range = split;
            }
            while self.range < 128 {
                self.range <<= 1;
                if self.bottom & (1 << 31) != 0 {
                    self.add_one_to_output();
                }
                self.bottom <<= 1;
                self.bit_count -= 1;
                if self.bit_count == 0 {
                    self.out.push((self.bottom >> 24) as u8);
                    self.bottom &= (1 << 24) - 1;
                    self.bit_count = 8;
                }
            }
        }

        fn literal(&mut self, n: u32, v: u32) {
            for i in (0..n).rev() {
                self.write(128, (v >> i) & 1 == 1);
            }
        }

        fn finish(mut self) -> Vec<u8> {
            for _ in 0..32 {
                self.write(128, false);
            }
            self.out
        }
    }

    /// The first packet of a VP8 frame: a one-byte descriptor (S=1), the clear bytes, and a
    /// header with these fields.
    fn frame(keyframe: bool, color_space: u32, sharpness: u32, partitions: u32) -> Vec<u8> {
        let mut e = BoolEncoder::new();
        if keyframe {
            e.literal(1, color_space);
            e.literal(1, 0); // clamping_type
        }
        e.literal(1, 1); // segmentation_enabled
        e.literal(1, 1); // update_mb_segmentation_map
        e.literal(1, 1); // update_segment_feature_data
        e.literal(1, 0); // segment_feature_mode
        for q in [5u32, 0, 9, 0] {
            e.literal(1, u32::from(q != 0));
            if q != 0 {
                e.literal(8, q << 1);
            }
        }
        for _ in 0..4 {
            e.literal(1, 0);
        }
        for p in [200u32, 0, 17] {
            e.literal(1, u32::from(p != 0));
            if p != 0 {
                e.literal(8, p);
            }
        }
        e.literal(1, 0); // filter_type
        e.literal(6, 33); // loop_filter_level
        e.literal(3, sharpness);
        e.literal(1, 1); // loop_filter_adj_enable
        e.literal(1, 1); // mode_ref_lf_delta_update
        for d in [2u32, 0, 0, 3, 4, 0, 0, 1] {
            e.literal(1, u32::from(d != 0));
            if d != 0 {
                e.literal(7, d << 1);
            }
        }
        e.literal(2, partitions);
        e.literal(7, 60); // y_ac_qi (not checked)
        let mut p = vec![0x10];
        if keyframe {
            p.extend_from_slice(&[0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        } else {
            p.extend_from_slice(&[0x51, 0x02, 0x00]);
        }
        p.extend_from_slice(&e.finish());
        p.extend(std::iter::repeat_n(0x5a, 40));
        p
    }

    #[test]
    fn headers_as_libvpx_writes_them_are_plausible() {
        assert_eq!(vp8_view(&frame(true, 0, 0, 0)), Vp8View::Plausible);
        assert_eq!(vp8_view(&frame(false, 0, 0, 0)), Vp8View::Plausible);
        assert_eq!(vp8_view(&frame(true, 1, 0, 0)), Vp8View::Opaque);
        assert_eq!(vp8_view(&frame(false, 0, 3, 0)), Vp8View::Opaque);
        assert_eq!(vp8_view(&frame(false, 0, 0, 2)), Vp8View::Opaque);
    }

    #[test]
    fn only_a_frame_start_is_inspected() {
        let mut p = frame(false, 0, 0, 0);
        p[0] = 0x00; // S=0: a continuation
        assert_eq!(vp8_view(&p), Vp8View::NotStart);
        assert_eq!(vp8_view(&[]), Vp8View::NotStart);
        assert_eq!(vp8_view(&[0x10, 0x51]), Vp8View::NotStart);
        // Extended descriptor with a 15-bit picture id.
        let mut ext = vec![0x90, 0x80, 0x81, 0x02];
        ext.extend_from_slice(&frame(true, 0, 0, 0)[1..]);
        assert_eq!(vp8_view(&ext), Vp8View::Plausible);
    }

    #[test]
    fn random_bytes_after_the_clear_header_are_mostly_opaque() {
        // A fixed-seed xorshift stream: what ciphertext looks like to the decoder.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        let (mut key_plausible, mut delta_plausible) = (0, 0);
        for _ in 0..4096 {
            let mut key = frame(true, 0, 0, 0);
            let mut delta = frame(false, 0, 0, 0);
            for b in &mut key[11..] {
                *b = next();
            }
            for b in &mut delta[4..] {
                *b = next();
            }
            key_plausible += usize::from(vp8_view(&key) == Vp8View::Plausible);
            delta_plausible += usize::from(vp8_view(&delta) == Vp8View::Plausible);
        }
        // Expected 4096/512 = 8 and 4096/64 = 64.
        assert!(key_plausible < 40, "{key_plausible}");
        assert!(delta_plausible < 160, "{delta_plausible}");
    }

    #[test]
    fn any_bytes_are_inspected_without_panicking() {
        let mut x: u32 = 7;
        for len in 0..64 {
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8 | 0x10
                })
                .collect();
            let _ = vp8_view(&p);
        }
    }
}
