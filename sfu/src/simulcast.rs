//! Simulcast (issue 11): the publisher's camera sends three layers, each its own RTP stream
//! named by a `rid`; each subscription forwards one of them and may switch to another only at a
//! keyframe of that layer. Everything here is plain values, tested with synthetic packets:
//!
//! - [`offer_with_simulcast`] adds `a=rid:… recv` and `a=simulcast:recv` to the camera section
//!   of the offer we send (`rtc` 0.21.1 writes them only in answers; see `docs/decisions.md`).
//! - [`LayerSelector`] decides, per packet, whether a subscription forwards it, drops it, or
//!   switches to its layer now (a keyframe of the target layer arrived).
//! - [`Vp8Ids`] / [`rewrite_vp8`]: VP8 picture ids and TL0PICIDX stay continuous across a switch
//!   (each layer numbers its own pictures).
//! - [`switch_timestamp_offset`]: the new layer's timestamps mapped onto the old layer's clock
//!   through the publisher's sender reports (same capture clock), or by arrival time.

/// The rids we offer, lowest layer first: a quarter, half and full resolution
/// (`scaleResolutionDownBy` 4, 2, 1 in the web client).
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// The layer index (0 = lowest) of a rid we offered.
pub fn layer_of(rid: &str) -> Option<u8> {
    RIDS.iter().position(|r| *r == rid).map(|i| i as u8)
}

/// How often simulcast subscriptions are given their layer (which layers arrive, the tile size).
pub const ALLOCATION_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A layer that sent nothing for this long is not arriving (the publisher paused it).
pub const LAYER_IDLE: std::time::Duration = std::time::Duration::from_millis(1500);

/// The highest layer.
pub const TOP: u8 = (RIDS.len() - 1) as u8;

/// `sdp` (an offer) with simulcast asked for on the media section whose `a=mid` is `mid`: three
/// `a=rid:<id> recv` lines and `a=simulcast:recv q;h;f`, appended to that section. Every other
/// section (audio, subscriptions, a screen share) is left as it is. Lines end with CRLF, as
/// `rtc` writes them.
pub fn offer_with_simulcast(sdp: &str, mid: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 96);
    let want = format!("a=mid:{mid}");
    let mut in_target = false;
    let mut pending = false;
    let flush = |out: &mut String| {
        for rid in RIDS {
            out.push_str("a=rid:");
            out.push_str(rid);
            out.push_str(" recv\r\n");
        }
        out.push_str("a=simulcast:recv ");
        out.push_str(&RIDS.join(";"));
        out.push_str("\r\n");
    };
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.starts_with("m=") {
            if pending {
                flush(&mut out);
                pending = false;
            }
            in_target = false;
        }
        if bare == want {
            in_target = true;
            pending = true;
        }
        if in_target && (bare.starts_with("a=rid:") || bare.starts_with("a=simulcast:")) {
            pending = false; // already there: leave the section as it is
        }
        out.push_str(line);
    }
    if pending {
        if !out.ends_with('\n') {
            out.push_str("\r\n");
        }
        flush(&mut out);
    }
    out
}

/// What a subscription does with one packet of a simulcast track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The layer being forwarded: send it.
    Forward,
    /// Another layer (or the target before its keyframe): not for this subscriber.
    Drop,
    /// A keyframe of the target layer: the subscription moves to it from this packet on (the
    /// caller re-bases sequence numbers, timestamps and VP8 ids, then sends it).
    Switch { from: Option<u8> },
}

/// The layer one subscription forwards (`current`) and the one it should forward (`target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSelector {
    current: Option<u8>,
    target: u8,
}

impl Default for LayerSelector {
    fn default() -> Self {
        LayerSelector {
            current: None,
            target: TOP,
        }
    }
}

impl LayerSelector {
    pub fn current(&self) -> Option<u8> {
        self.current
    }
    pub fn target(&self) -> u8 {
        self.target
    }
    /// Aim at `layer`; returns whether that changed the target (then a keyframe of `layer` is
    /// wanted, unless it is already the current layer).
    pub fn set_target(&mut self, layer: u8) -> bool {
        let layer = layer.min(TOP);
        let changed = self.target != layer;
        self.target = layer;
        changed
    }
    /// Whether a keyframe of the target is awaited (the target is not what is forwarded).
    pub fn switching(&self) -> bool {
        self.current != Some(self.target)
    }

    /// Decide for one packet of `layer`; `keyframe_start` when it starts a keyframe.
    pub fn admit(&mut self, layer: u8, keyframe_start: bool) -> Admit {
        if self.current == Some(layer) {
            return Admit::Forward;
        }
        if layer == self.target && keyframe_start {
            let from = self.current.replace(layer);
            return Admit::Switch { from };
        }
        Admit::Drop
    }
}

/// The VP8 payload descriptor's picture id and TL0PICIDX (RFC 7741 §4.2), where present, with
/// their offsets in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Ids {
    /// (value, offset of its first byte, 15-bit form).
    pub picture_id: Option<(u16, usize, bool)>,
    /// (value, offset).
    pub tl0picidx: Option<(u8, usize)>,
}

impl Vp8Ids {
    /// Parse the descriptor at the start of `payload`; `None` if too short.
    pub fn parse(payload: &[u8]) -> Option<Vp8Ids> {
        let first = *payload.first()?;
        let mut ids = Vp8Ids {
            picture_id: None,
            tl0picidx: None,
        };
        if first & 0x80 == 0 {
            return Some(ids);
        }
        let x = *payload.get(1)?;
        let mut i = 2;
        if x & 0x80 != 0 {
            let b = *payload.get(i)?;
            if b & 0x80 != 0 {
                let lo = *payload.get(i + 1)?;
                ids.picture_id = Some(((u16::from(b & 0x7F) << 8) | u16::from(lo), i, true));
                i += 2;
            } else {
                ids.picture_id = Some((u16::from(b), i, false));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            ids.tl0picidx = Some((*payload.get(i)?, i));
        }
        Some(ids)
    }
}

/// The VP8 numbering one subscription sends: offsets applied to the publisher's layer, and the
/// last values sent (to continue from at a switch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Munger {
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Munger {
    /// A switch to a layer whose first packet (a keyframe) carries `ids`: the next picture id
    /// and TL0PICIDX sent follow the last ones sent.
    pub fn switch(&mut self, ids: &Vp8Ids) {
        if let (Some((pid, _, _)), Some(last)) = (ids.picture_id, self.last_pid) {
            self.pid_offset = pid.wrapping_sub(last.wrapping_add(1));
        }
        if let (Some((tl0, _)), Some(last)) = (ids.tl0picidx, self.last_tl0) {
            self.tl0_offset = tl0.wrapping_sub(last.wrapping_add(1));
        }
    }
}

/// Rewrite the descriptor at the start of `payload` (a copy in the outgoing buffer) with the
/// subscription's offsets; remembers what it wrote.
pub fn rewrite_vp8(payload: &mut [u8], m: &mut Vp8Munger) {
    let Some(ids) = Vp8Ids::parse(payload) else {
        return;
    };
    if let Some((pid, at, long)) = ids.picture_id {
        if long {
            let out = pid.wrapping_sub(m.pid_offset) & 0x7FFF;
            payload[at] = 0x80 | (out >> 8) as u8;
            payload[at + 1] = out as u8;
            m.last_pid = Some(out);
        } else {
            let out = pid.wrapping_sub(m.pid_offset) & 0x7F;
            payload[at] = out as u8;
            m.last_pid = Some(out);
        }
    }
    if let Some((tl0, at)) = ids.tl0picidx {
        let out = tl0.wrapping_sub(m.tl0_offset);
        payload[at] = out;
        m.last_tl0 = Some(out);
    }
}

/// A publisher's sender report reduced to its clock mapping: (NTP time, RTP time).
pub type ClockMapping = (u64, u32);

/// The timestamp offset (outgoing = incoming − offset) for the first packet of a new layer.
///
/// - With both layers' sender reports: the two RTP clocks are aligned on their common NTP clock
///   (the layers are encodings of one capture), so the switch keeps the true capture spacing.
/// - Otherwise (or if that lands at or before the last timestamp sent): by arrival time, the
///   time since the last packet sent (at least one tick).
#[allow(clippy::too_many_arguments)]
pub fn switch_timestamp_offset(
    old_offset: u32,
    old: Option<ClockMapping>,
    new: Option<ClockMapping>,
    clock_rate: u32,
    first_timestamp: u32,
    last_sent: Option<u32>,
    elapsed_ticks: u32,
) -> u32 {
    let Some(last) = last_sent else {
        return old_offset;
    };
    if let (Some((ntp_o, rtp_o)), Some((ntp_n, rtp_n))) = (old, new) {
        // The new layer's RTP time at the old report's NTP instant.
        let dt = (ntp_o as i128 - ntp_n as i128) * clock_rate as i128 / (1i128 << 32);
        let rtp_n_at_o = (rtp_n as i64 + dt as i64) as u32;
        let diff = rtp_n_at_o.wrapping_sub(rtp_o);
        let offset = old_offset.wrapping_add(diff);
        let out = first_timestamp.wrapping_sub(offset);
        let ahead = out.wrapping_sub(last) as i32;
        // Ahead of the last sent, by less than 10 s of media: a sound mapping.
        if ahead > 0 && (ahead as u64) < 10 * clock_rate as u64 {
            return offset;
        }
    }
    let out = last.wrapping_add(elapsed_ticks.max(1));
    first_timestamp.wrapping_sub(out)
}

/// The bitrate a track (a layer) arrives at, measured at each allocation from its byte count.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerRate {
    at: Option<(std::time::Instant, u64)>,
    bps: f64,
}

impl LayerRate {
    /// The track has received `bytes` in all by `now`.
    pub fn update(&mut self, now: std::time::Instant, bytes: u64) {
        if let Some((then, before)) = self.at {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if dt < 0.1 {
                return;
            }
            let rate = bytes.saturating_sub(before) as f64 * 8.0 / dt;
            // Smoothed (keyframes come in bursts), quick to follow.
            self.bps = if self.bps == 0.0 {
                rate
            } else {
                0.5 * self.bps + 0.5 * rate
            };
        }
        self.at = Some((now, bytes));
    }
    pub fn bps(&self) -> f64 {
        self.bps
    }
}

/// An upgrade needs this much room above the layer's bitrate (hysteresis against flapping).
pub const UPGRADE_HEADROOM: f64 = 1.25;
/// ...and that room for this many allocations in a row.
pub const UPGRADE_TICKS: u8 = 2;
/// What an audio subscription is counted at before any video is allocated (audio first).
pub const AUDIO_BITRATE: f64 = 48_000.0;

/// The layer a bandwidth budget allows: the highest layer not above `desired` that arrives and
/// fits `budget` (an upgrade above `current` needs [`UPGRADE_HEADROOM`]); the lowest arriving
/// layer if none fits. Returns (layer, whether a higher layer was wanted but did not fit).
pub fn fit_layer(
    available: u8,
    desired: u8,
    current: Option<u8>,
    rates: [f64; 3],
    budget: f64,
) -> Option<(u8, bool)> {
    let lowest = (0..=TOP).find(|l| available & (1 << l) != 0)?;
    let mut limited = false;
    for l in (0..=desired.min(TOP)).rev() {
        // (Iterating downwards: once set, `limited` stays true for any lower choice.)
        if available & (1 << l) == 0 {
            continue;
        }
        let need = if current.is_some_and(|c| l > c) {
            rates[l as usize] * UPGRADE_HEADROOM
        } else {
            rates[l as usize]
        };
        if need <= budget {
            return Some((l, limited));
        }
        // Rejected: limited if what is finally chosen is below it.
        limited |= l > lowest;
    }
    Some((lowest, limited))
}

/// The layer an allocation picks: the highest layer in `available` (bit `i` = layer `i` is
/// arriving) not above `cap`; if none is, the lowest available; `None` if nothing arrives.
pub fn pick_layer(available: u8, cap: u8) -> Option<u8> {
    if available == 0 {
        return None;
    }
    (0..=cap.min(TOP))
        .rev()
        .find(|l| available & (1 << l) != 0)
        .or_else(|| (0..=TOP).find(|l| available & (1 << l) != 0))
}

/// The height assumed for the top layer when no layer's height is known yet (H.264 keyframes
/// are not parsed; VP8 ones are).
pub const NOMINAL_TOP_HEIGHT: u32 = 720;

/// The lowest layer whose frame height covers a tile `height` pixels high, given each layer's
/// height as last seen (0: unknown). An unknown height is derived from a known layer's by the
/// layers' scale (2× per layer), or from [`NOMINAL_TOP_HEIGHT`] if none is known.
pub fn layer_for_height(heights: [u16; 3], height: u32) -> u8 {
    let known = heights.iter().enumerate().find(|(_, h)| **h > 0);
    let heights: [u32; 3] = std::array::from_fn(|l| match (heights[l], known) {
        (h, _) if h > 0 => u32::from(h),
        (_, Some((k, &hk))) => (u32::from(hk) << l) >> k,
        (_, None) => NOMINAL_TOP_HEIGHT >> (TOP as usize - l),
    });
    for (l, &h) in heights.iter().enumerate() {
        // A layer at least 90 % of the tile's height looks sharp enough in it.
        if h * 10 >= height * 9 {
            return l as u8;
        }
    }
    TOP
}

/// The frame size of a VP8 keyframe (RFC 6386 §9.1): (width, height), if `payload` (after the
/// RTP payload descriptor) is the start of one.
pub fn vp8_keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let first = *payload.first()?;
    let mut i = 1;
    if first & 0x80 != 0 {
        let x = *payload.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            i += if *payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let frame = payload.get(i..i + 10)?;
    if frame[0] & 0x01 != 0 || frame[3..6] != [0x9D, 0x01, 0x2A] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3FFF;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3FFF;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\na=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\n";

    #[test]
    fn the_offer_asks_for_three_layers_on_the_camera_section_only() {
        let sdp = offer_with_simulcast(OFFER, "1");
        let sections: Vec<&str> = sdp.split("m=").collect();
        assert_eq!(sections.len(), 4);
        assert!(!sections[1].contains("a=rid"), "audio untouched");
        assert!(
            sections[2].ends_with(
                "a=recvonly\r\na=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n"
            ),
            "{}",
            sections[2]
        );
        assert!(!sections[3].contains("a=rid"), "subscriptions untouched");
        // The camera section last in the offer, and an offer munged twice, come out right.
        let last = offer_with_simulcast(OFFER, "2");
        assert!(last.ends_with("a=sendonly\r\na=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n"));
        assert_eq!(offer_with_simulcast(&sdp, "1"), sdp);
        // An unknown mid changes nothing.
        assert_eq!(offer_with_simulcast(OFFER, "9"), OFFER);
        assert_eq!(layer_of("q"), Some(0));
        assert_eq!(layer_of("f"), Some(2));
        assert_eq!(layer_of("x"), None);
    }

    #[test]
    fn a_subscription_switches_only_at_a_keyframe_of_its_target() {
        let mut s = LayerSelector::default();
        assert_eq!(s.target(), TOP);
        // Nothing forwarded until the target's keyframe: delta frames of every layer dropped,
        // keyframes of other layers too.
        assert_eq!(s.admit(2, false), Admit::Drop);
        assert_eq!(s.admit(0, true), Admit::Drop);
        assert_eq!(s.admit(2, true), Admit::Switch { from: None });
        assert_eq!(s.admit(2, false), Admit::Forward);
        assert_eq!(s.admit(1, false), Admit::Drop);
        assert!(!s.switching());
        // Down to the lowest: the top goes on until the lowest's keyframe.
        assert!(s.set_target(0));
        assert!(!s.set_target(0));
        assert!(s.switching());
        assert_eq!(s.admit(2, false), Admit::Forward);
        assert_eq!(s.admit(0, false), Admit::Drop);
        assert_eq!(s.admit(1, true), Admit::Drop, "not the target");
        assert_eq!(s.admit(0, true), Admit::Switch { from: Some(2) });
        assert_eq!(s.admit(2, true), Admit::Drop, "the old layer is over");
        assert_eq!(s.admit(0, false), Admit::Forward);
        assert_eq!(s.current(), Some(0));
        // Targets above the top are the top.
        assert!(s.set_target(9));
        assert_eq!(s.target(), TOP);
    }

    fn vp8(pid: u16, tl0: u8, key: bool) -> Vec<u8> {
        // X=1 S=1, I=1 L=1 T=1, 15-bit picture id, TL0PICIDX, TID/Y/KEYIDX, then a frame tag.
        vec![
            0x90,
            0xE0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            0x20,
            if key { 0x00 } else { 0x01 },
        ]
    }

    #[test]
    fn picture_ids_and_tl0picidx_continue_across_a_switch() {
        let mut m = Vp8Munger::default();
        // Layer A: pictures 100..=102, TL0 7..=9, sent as they are.
        for (pid, tl0) in [(100u16, 7u8), (101, 8), (102, 9)] {
            let mut p = vp8(pid, tl0, pid == 100);
            rewrite_vp8(&mut p, &mut m);
            assert_eq!(Vp8Ids::parse(&p).unwrap().picture_id.unwrap().0, pid);
            assert_eq!(p[4], tl0);
        }
        // Layer B numbers its pictures from 32760 (wrapping at 2^15) and TL0 from 250.
        let first = vp8(32_766, 250, true);
        m.switch(&Vp8Ids::parse(&first).unwrap());
        for (i, (pid, tl0)) in [(32_766u16, 250u8), (32_767, 251), (0, 252), (1, 253)]
            .into_iter()
            .enumerate()
        {
            let mut p = vp8(pid, tl0, i == 0);
            rewrite_vp8(&mut p, &mut m);
            let ids = Vp8Ids::parse(&p).unwrap();
            assert_eq!(ids.picture_id.unwrap().0, 103 + i as u16);
            assert_eq!(ids.tl0picidx.unwrap().0, 10 + i as u8);
            // The rest of the payload is untouched.
            assert_eq!(p[5], 0x20);
            assert_eq!(crate::rtp::vp8_keyframe(&p), i == 0);
        }
        // A 7-bit picture id wraps at 128.
        let mut m = Vp8Munger::default();
        let mut p = vec![0x90, 0x80, 127, 0x00];
        rewrite_vp8(&mut p, &mut m);
        m.switch(&Vp8Ids::parse(&[0x90, 0x80, 5, 0x00]).unwrap());
        let mut p = vec![0x90, 0x80, 5, 0x00];
        rewrite_vp8(&mut p, &mut m);
        assert_eq!(p[2], 0);
        // No descriptor extension, or too short: left alone, no panic.
        let mut p = vec![0x10, 0x00];
        rewrite_vp8(&mut p, &mut m);
        assert_eq!(p, [0x10, 0x00]);
        for len in 0..7 {
            let mut p = vp8(5, 5, true)[..len].to_vec();
            rewrite_vp8(&mut p, &mut m);
        }
    }

    #[test]
    fn timestamps_map_through_sender_reports_else_by_arrival() {
        let rate = 90_000;
        let second = 1u64 << 32;
        // The old layer: RTP 1000 at NTP 10 s; the new one: RTP 500_000 at NTP 11 s. At 10 s the
        // new clock read 500_000 - 90_000 = 410_000: 409_000 ahead of the old.
        let old = Some((10 * second, 1000u32));
        let new = Some((11 * second, 500_000u32));
        // Last sent 1000 + 3000 (old clock, offset 0); the new layer's keyframe at 413_000 + 3000
        // is the next frame on the same capture clock.
        let off = switch_timestamp_offset(0, old, new, rate, 416_000, Some(4000), 3000);
        assert_eq!(416_000u32.wrapping_sub(off), 7000);
        // Without the reports: by arrival (here 40 ms = 3600 ticks).
        let off = switch_timestamp_offset(0, None, new, rate, 416_000, Some(4000), 3600);
        assert_eq!(416_000u32.wrapping_sub(off), 7600);
        // A mapping that would go backwards is not trusted: by arrival instead.
        let off = switch_timestamp_offset(0, old, new, rate, 416_000, Some(900_000), 3000);
        assert_eq!(416_000u32.wrapping_sub(off), 903_000);
        // Nothing sent yet: the offset stays.
        assert_eq!(switch_timestamp_offset(77, old, new, rate, 5, None, 1), 77);
        // Wrapping clocks.
        let off = switch_timestamp_offset(0, None, None, rate, 10, Some(u32::MAX - 5), 100);
        assert_eq!(10u32.wrapping_sub(off), 94);
    }

    #[test]
    fn allocation_picks_the_best_layer_that_arrives() {
        assert_eq!(pick_layer(0b111, 2), Some(2));
        assert_eq!(pick_layer(0b111, 0), Some(0));
        assert_eq!(pick_layer(0b011, 2), Some(1), "the top layer is not sent");
        assert_eq!(pick_layer(0b100, 1), Some(2), "only the top arrives");
        assert_eq!(pick_layer(0b101, 1), Some(0));
        assert_eq!(pick_layer(0, 2), None);
        let heights = [180, 360, 720];
        assert_eq!(layer_for_height(heights, 120), 0);
        assert_eq!(layer_for_height(heights, 190), 0, "90 % is enough");
        assert_eq!(layer_for_height(heights, 300), 1);
        assert_eq!(layer_for_height(heights, 700), 2);
        assert_eq!(layer_for_height(heights, 2000), 2);
        // Unknown heights: from a known layer's by the 2× scale, else a nominal 720p top.
        assert_eq!(layer_for_height([0, 0, 0], 100), 0);
        assert_eq!(layer_for_height([0, 0, 0], 300), 1);
        assert_eq!(layer_for_height([0, 0, 0], 700), 2);
        assert_eq!(
            layer_for_height([0, 90, 0], 100),
            1,
            "q ≈ 45 is too small; h, 90, is 90 %"
        );
        assert_eq!(layer_for_height([90, 0, 0], 150), 1);
    }

    #[test]
    fn the_budget_picks_the_highest_layer_that_fits_with_headroom_to_go_up() {
        let rates = [100_000.0, 300_000.0, 900_000.0];
        // Plenty: the desired layer.
        assert_eq!(fit_layer(0b111, 2, Some(2), rates, 2e6), Some((2, false)));
        // 350 kbit/s: the middle layer, the top one wanted.
        assert_eq!(
            fit_layer(0b111, 2, Some(2), rates, 350_000.0),
            Some((1, true))
        );
        // Staying on the middle needs 300k; going up to it from the lowest needs 375k.
        assert_eq!(
            fit_layer(0b111, 2, Some(1), rates, 310_000.0),
            Some((1, true))
        );
        assert_eq!(
            fit_layer(0b111, 2, Some(0), rates, 310_000.0),
            Some((0, true))
        );
        assert_eq!(
            fit_layer(0b111, 2, Some(0), rates, 380_000.0),
            Some((1, true))
        );
        // Nothing fits: the lowest arriving layer all the same.
        assert_eq!(
            fit_layer(0b110, 2, Some(2), rates, 10_000.0),
            Some((1, true))
        );
        // A small tile wants only the lowest: never limited.
        assert_eq!(
            fit_layer(0b111, 0, Some(0), rates, 50_000.0),
            Some((0, false))
        );
        assert_eq!(fit_layer(0, 2, None, rates, 1e9), None);
        // Unmeasured layers fit.
        assert_eq!(fit_layer(0b111, 2, None, [0.0; 3], 0.0), Some((2, false)));
    }

    #[test]
    fn keyframe_sizes_are_read_from_the_vp8_header() {
        // Descriptor X=1, I=1 (15-bit), then a keyframe tag, start code, 640x360.
        let p = [
            0x90, 0x80, 0x81, 0x02, 0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01,
        ];
        assert_eq!(vp8_keyframe_size(&p), Some((640, 360)));
        let mut delta = p;
        delta[4] |= 1;
        assert_eq!(vp8_keyframe_size(&delta), None);
        for len in 0..p.len() {
            assert_eq!(vp8_keyframe_size(&p[..len]), None);
        }
    }
}
