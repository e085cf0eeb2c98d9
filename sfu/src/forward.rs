//! The forwarding decision for one packet and one subscription, as pure values: the payload type
//! the subscriber knows the codec by, and the sequence number and timestamp it sees ([`Munger`])
//! — what to send (or whether to drop), separate from sending it, tested step by step with
//! synthetic packets below (LiveKit's `forwarder_test.go` / `rtpmunger` style).

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

/// The extended (64-bit) sequence number of `seq`, given the highest extended one so far:
/// whichever of the three candidates around the highest's cycle is nearest.
pub fn extend_seq(highest: u64, seq: u16) -> u64 {
    let cycle = highest & !0xFFFF;
    let candidate = cycle | seq as u64;
    let up = candidate.wrapping_add(1 << 16);
    let down = candidate.wrapping_sub(1 << 16);
    let dist = |x: u64| x.abs_diff(highest);
    let mut best = candidate;
    if dist(up) < dist(best) {
        best = up;
    }
    if candidate >= 1 << 16 && dist(down) < dist(best) {
        best = down;
    }
    best
}

/// What the forwarder needs to know of one incoming packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub seq: u16,
    pub timestamp: u32,
    /// No payload: padding only (a bandwidth probe).
    pub padding_only: bool,
}

/// The decision for one packet on one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send with this sequence number and timestamp. `padding_only`: a late padding packet
    /// sent to fill the hole it left (send it with padding, no payload).
    Send {
        seq: u16,
        timestamp: u32,
        padding_only: bool,
    },
    /// An in-order padding packet: not sent, and the sequence numbers after it close up.
    DropPadding,
    /// Older than anything we still know how to map.
    TooOld,
}

/// How many offset changes are remembered, to map late packets and NACKs: one per run of
/// consecutive padding packets dropped. Bounded, so the forwarder never allocates after its
/// creation.
pub const OFFSET_HISTORY: usize = 64;

/// The sequence-number and timestamp rewriting of one subscription (LiveKit's `rtpmunger`,
/// mediasoup's `SeqManager`): outgoing = incoming - offset, where the offset counts the
/// padding packets dropped before; a late packet (reordered, or a retransmission answering a
/// NACK) is mapped with the offset that held at its place in the sequence, so the subscriber
/// sees exactly the packets that carry media, numbered without gaps.
///
/// The timestamp offset is fixed for the subscription's life (one publisher track, one RTP
/// clock): timestamps stay continuous, and a packet resent from the cache is rewritten to the
/// very bytes sent the first time (an SRTP requirement: the same index must never protect two
/// different plaintexts).
#[derive(Clone, Debug)]
pub struct Munger {
    /// Highest extended incoming sequence number; `None` before the first packet.
    highest: Option<u64>,
    /// Offset changes: from incoming extended sequence `.0` on, subtract `.1`. Oldest first;
    /// the last is the current offset.
    changes: std::collections::VecDeque<(u64, u64)>,
    ts_offset: u32,
    /// Since the last simulcast switch ([`Munger::switch`]): incoming extended sequence numbers
    /// below `.0` (and outgoing below `.1`) belong to another layer: never mapped.
    floor: (u64, u64),
    /// The last timestamp sent (to continue from at a switch).
    last_timestamp: Option<u32>,
}

impl Default for Munger {
    fn default() -> Self {
        Munger::new(0)
    }
}

impl Munger {
    /// A munger whose timestamps are shifted by `ts_offset` (0: the publisher's own).
    pub fn new(ts_offset: u32) -> Munger {
        Munger {
            highest: None,
            changes: std::collections::VecDeque::with_capacity(OFFSET_HISTORY),
            ts_offset,
            floor: (0, 0),
            last_timestamp: None,
        }
    }

    /// The last timestamp sent, if any.
    pub fn last_timestamp(&self) -> Option<u32> {
        self.last_timestamp
    }

    /// A simulcast switch: the next packet decided is `seq` of another layer (another SSRC,
    /// its own sequence space and RTP clock), to be sent as the next sequence number after the
    /// last one sent, with timestamps shifted by `ts_offset` from now on. Whatever comes of the
    /// old layer later (late packets, NACKs for it) maps nowhere.
    pub fn switch(&mut self, seq: u16, ts_offset: u32) {
        self.ts_offset = ts_offset;
        let Some(highest) = self.highest else {
            return; // nothing sent yet: `seq` starts the sequence as usual
        };
        // (Trailing padding dropped after the last packet sent moved the offset on already.)
        let next_out = highest + 1 - self.offset_at(highest + 1).unwrap_or(0);
        // The extended number of `seq` at or above `next_out`: the offset is never negative.
        let ext = next_out + ((seq as u64).wrapping_sub(next_out) & 0xFFFF);
        self.changes.clear();
        self.changes.push_back((ext, ext - next_out));
        self.floor = (ext, next_out);
        self.highest = Some(ext - 1);
    }

    /// The timestamp shift: outgoing = incoming - this (wrapping). For sender reports.
    pub fn ts_offset(&self) -> u32 {
        self.ts_offset
    }

    fn offset_at(&self, ext: u64) -> Option<u64> {
        if ext < self.floor.0 {
            return None;
        }
        match self.changes.iter().rev().find(|c| c.0 <= ext) {
            Some(c) => Some(c.1),
            // Before every change we remember: offset 0 if nothing was ever forgotten.
            None if self.changes.len() < OFFSET_HISTORY => Some(0),
            None => None,
        }
    }

    fn record(&mut self, from: u64, offset: u64) {
        if let Some(last) = self.changes.back_mut()
            && last.0 == from.saturating_sub(1)
            && last.1 + 1 == offset
        {
            // Consecutive padding packets: one change, moved along.
            *last = (from, offset);
            return;
        }
        if self.changes.len() == OFFSET_HISTORY {
            self.changes.pop_front();
        }
        self.changes.push_back((from, offset));
    }

    /// Decide for one incoming packet.
    pub fn decide(&mut self, p: Incoming) -> Verdict {
        let Some(highest) = self.highest else {
            // The first packet: nothing to close up. Sequence numbers start where the
            // publisher's are (the subscriber has never seen this SSRC).
            let ext = (1u64 << 16) | p.seq as u64;
            self.highest = Some(ext);
            if p.padding_only {
                self.record(ext + 1, 1);
                return Verdict::DropPadding;
            }
            return self.send(ext, p, false);
        };
        let ext = extend_seq(highest, p.seq);
        if ext > highest {
            self.highest = Some(ext);
            if p.padding_only {
                let offset = self.offset_at(ext).unwrap_or(0) + 1;
                self.record(ext + 1, offset);
                return Verdict::DropPadding;
            }
            return self.send(ext, p, false);
        }
        // Late: reordered, or resent by the publisher after a loss. (Duplicates never get
        // here: SRTP's replay window drops them.)
        if self.offset_at(ext).is_none() {
            return Verdict::TooOld;
        }
        self.send(ext, p, p.padding_only)
    }

    fn send(&mut self, ext: u64, p: Incoming, padding_only: bool) -> Verdict {
        match self.offset_at(ext) {
            Some(offset) => {
                let timestamp = p.timestamp.wrapping_sub(self.ts_offset);
                if !padding_only {
                    self.last_timestamp = Some(timestamp);
                }
                Verdict::Send {
                    seq: ext.wrapping_sub(offset) as u16,
                    timestamp,
                    padding_only,
                }
            }
            None => Verdict::TooOld,
        }
    }

    /// The incoming sequence number of what we sent as `out` (to answer a NACK from the
    /// cache), if it is one we sent or can map.
    pub fn incoming_seq(&self, out: u16) -> Option<u16> {
        let highest = self.highest?;
        let highest_out = highest - self.offset_at(highest)?;
        let out_ext = extend_seq(highest_out, out);
        if out_ext > highest_out || out_ext < self.floor.1 {
            return None;
        }
        // The change whose outgoing range holds `out_ext`: outgoing starts are `from - offset`.
        let offset = match self.changes.iter().rev().find(|c| c.0 - c.1 <= out_ext) {
            Some(c) => c.1,
            None if self.changes.len() < OFFSET_HISTORY => 0,
            None => return None,
        };
        Some((out_ext + offset) as u16)
    }

    /// Whether anything was decided yet.
    pub fn started(&self) -> bool {
        self.highest.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_map_per_subscription() {
        let mut map = PayloadMap::default();
        assert_eq!(map.get(96), UNKNOWN);
        map.set(96, Some(100));
        map.set(111, None);
        assert_eq!(map.get(96), 100);
        assert_eq!(map.get(111), UNSUPPORTED);
        // Payload types above 127 cannot exist on the wire; the map masks rather than panics.
        assert_eq!(map.get(96 | 0x80), 100);
    }

    fn media(seq: u16, timestamp: u32) -> Incoming {
        Incoming {
            seq,
            timestamp,
            padding_only: false,
        }
    }

    fn padding(seq: u16) -> Incoming {
        Incoming {
            seq,
            timestamp: 0,
            padding_only: true,
        }
    }

    fn sent(seq: u16, timestamp: u32) -> Verdict {
        Verdict::Send {
            seq,
            timestamp,
            padding_only: false,
        }
    }

    #[test]
    fn in_order_media_passes_through() {
        let mut m = Munger::default();
        for s in 100..110u16 {
            assert_eq!(
                m.decide(media(s, 3000 * s as u32)),
                sent(s, 3000 * s as u32)
            );
        }
        assert_eq!(m.incoming_seq(105), Some(105));
        assert_eq!(m.incoming_seq(110), None, "not sent yet");
    }

    #[test]
    fn dropped_padding_leaves_no_gap_and_late_packets_keep_their_place() {
        let mut m = Munger::default();
        assert_eq!(m.decide(media(10, 900)), sent(10, 900));
        assert_eq!(m.decide(padding(11)), Verdict::DropPadding);
        assert_eq!(m.decide(padding(12)), Verdict::DropPadding);
        assert_eq!(m.decide(media(13, 1800)), sent(11, 1800));
        // 14 lost on the way in; 15 arrives: the subscriber sees the gap (12 missing) and
        // NACKs it, which maps back to 14.
        assert_eq!(m.decide(media(15, 2700)), sent(13, 2700));
        assert_eq!(m.incoming_seq(12), Some(14));
        assert_eq!(m.incoming_seq(11), Some(13));
        assert_eq!(m.incoming_seq(10), Some(10));
        // 14 comes late (the publisher resent it): it fills exactly that gap.
        assert_eq!(m.decide(media(14, 1800)), sent(12, 1800));
        // More padding, then a reordered pair.
        assert_eq!(m.decide(padding(16)), Verdict::DropPadding);
        assert_eq!(m.decide(media(18, 3600)), sent(15, 3600));
        assert_eq!(m.decide(media(17, 3600)), sent(14, 3600));
        assert_eq!(m.incoming_seq(14), Some(17));
        assert_eq!(m.incoming_seq(15), Some(18));
        // A padding packet that arrives after its successors left a hole: it fills it.
        assert_eq!(m.decide(media(20, 4500)), sent(17, 4500));
        assert_eq!(
            m.decide(padding(19)),
            Verdict::Send {
                seq: 16,
                timestamp: 0,
                padding_only: true
            }
        );
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let mut m = Munger::default();
        assert_eq!(
            m.decide(media(65_533, u32::MAX - 10)),
            sent(65_533, u32::MAX - 10)
        );
        assert_eq!(m.decide(padding(65_534)), Verdict::DropPadding);
        assert_eq!(m.decide(media(65_535, u32::MAX)), sent(65_534, u32::MAX));
        assert_eq!(m.decide(media(0, 5)), sent(65_535, 5));
        assert_eq!(m.decide(padding(1)), Verdict::DropPadding);
        assert_eq!(m.decide(media(2, 10)), sent(0, 10));
        assert_eq!(m.decide(media(3, 15)), sent(1, 15));
        assert_eq!(m.incoming_seq(1), Some(3));
        assert_eq!(m.incoming_seq(65_535), Some(0));
        assert_eq!(m.incoming_seq(65_534), Some(65_535));
        assert_eq!(m.incoming_seq(65_533), Some(65_533));
        // A late packet from before the wrap.
        let mut m = Munger::new(1000);
        assert_eq!(m.decide(media(65_535, 500)), sent(65_535, u32::MAX - 499));
        assert_eq!(m.decide(media(1, 600)), sent(1, u32::MAX - 399));
        assert_eq!(m.decide(media(0, 550)), sent(0, u32::MAX - 449));
        assert_eq!(m.ts_offset(), 1000);
    }

    #[test]
    fn a_padding_start_and_long_runs_of_padding() {
        let mut m = Munger::default();
        assert!(!m.started());
        assert_eq!(m.decide(padding(500)), Verdict::DropPadding);
        assert!(m.started());
        for s in 501..600u16 {
            assert_eq!(m.decide(padding(s)), Verdict::DropPadding);
        }
        // 100 padding packets collapse into one remembered change.
        assert_eq!(m.decide(media(600, 7)), sent(500, 7));
        assert_eq!(m.changes.len(), 1);
        assert_eq!(m.incoming_seq(500), Some(600));
    }

    #[test]
    fn packets_older_than_the_remembered_offsets_are_refused() {
        let mut m = Munger::default();
        let mut s = 0u16;
        m.decide(media(s, 0));
        // OFFSET_HISTORY + 1 separate padding runs.
        for _ in 0..=OFFSET_HISTORY {
            s += 1;
            assert_eq!(m.decide(padding(s)), Verdict::DropPadding);
            s += 1;
            assert!(matches!(m.decide(media(s, 0)), Verdict::Send { .. }));
        }
        assert_eq!(m.changes.len(), OFFSET_HISTORY);
        assert_eq!(m.decide(media(0, 0)), Verdict::TooOld);
        assert_eq!(m.incoming_seq(0), None);
        // Recent ones still map.
        let last_out = match m.decide(media(s + 1, 0)) {
            Verdict::Send { seq, .. } => seq,
            v => panic!("{v:?}"),
        };
        assert_eq!(m.incoming_seq(last_out), Some(s + 1));
    }

    #[test]
    fn a_simulcast_switch_keeps_sequence_numbers_and_timestamps_continuous() {
        let mut m = Munger::default();
        for s in 1000..1003u16 {
            assert_eq!(m.decide(media(s, 90 * s as u32)), sent(s, 90 * s as u32));
        }
        assert_eq!(m.decide(padding(1003)), Verdict::DropPadding);
        assert_eq!(m.last_timestamp(), Some(90 * 1002));
        // The other layer: sequence 40_000 on, timestamps 5_000_000 on; sent as 1003, and the
        // caller chose the offset that puts its first timestamp 3000 after the last.
        let off = 5_000_000u32.wrapping_sub(90 * 1002 + 3000);
        m.switch(40_000, off);
        assert_eq!(
            m.decide(media(40_000, 5_000_000)),
            sent(1003, 90 * 1002 + 3000)
        );
        assert_eq!(
            m.decide(media(40_002, 5_003_000)),
            sent(1005, 90 * 1002 + 6000)
        );
        assert_eq!(
            m.decide(media(40_001, 5_003_000)),
            sent(1004, 90 * 1002 + 6000)
        );
        assert_eq!(m.incoming_seq(1004), Some(40_001));
        assert_eq!(m.incoming_seq(1003), Some(40_000));
        // What was sent of the old layer maps nowhere now (its cache is another one).
        assert_eq!(m.incoming_seq(1002), None);
        assert_eq!(m.incoming_seq(1000), None);
        // A late packet of the new layer from before the switch point is refused.
        assert_eq!(m.decide(media(39_999, 4_997_000)), Verdict::TooOld);
        // A switch back down into lower numbers, across the 16-bit wrap.
        m.switch(3, 0);
        assert_eq!(m.decide(media(3, 7)), sent(1006, 7));
        assert_eq!(m.incoming_seq(1006), Some(3));
        assert_eq!(m.incoming_seq(1005), None);
        // A switch before anything was sent only sets the offset.
        let mut m = Munger::default();
        m.switch(500, 100);
        assert_eq!(m.decide(media(500, 1100)), sent(500, 1000));
    }

    #[test]
    fn extended_sequence_numbers() {
        assert_eq!(extend_seq(1 << 16, 5), (1 << 16) | 5);
        assert_eq!(extend_seq((1 << 16) | 65_535, 0), 2 << 16);
        assert_eq!(extend_seq(2 << 16, 65_535), (1 << 16) | 65_535);
        assert_eq!(extend_seq(3, 65_000), 65_000, "never below zero");
    }
}
