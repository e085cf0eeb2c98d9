//! Simulcast allocation (issue 11): every [`ALLOCATION_INTERVAL`](crate::simulcast::ALLOCATION_INTERVAL),
//! and at once when a subscriber reports a tile size, each simulcast subscription is given the
//! layer it should receive: the highest layer that arrives from the publisher and is not larger
//! than the subscriber's tile needs (a thumbnail never gets the full layer). A new target asks
//! the publisher for a keyframe of that layer; the switch itself happens at that keyframe
//! (`media.rs`). Runs at timer granularity, never per packet.

use super::Core;
use super::media::layers_of;
use crate::simulcast::{TOP, layer_for_height, pick_layer};
use std::time::Instant;

/// The largest tile height a client may report (device pixels); larger values are clamped.
pub const MAX_TILE_HEIGHT: u32 = 8192;

impl Core {
    /// Subscriber `key` shows the video it receives as track `track_id` (its `a=msid` track id)
    /// in a tile `height` device pixels high (0: not shown). Unknown tracks are ignored.
    pub fn set_video_size(&mut self, now: Instant, key: u64, track_id: &str, height: u32) {
        let Some(s) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(sub) = s
            .subscriptions
            .iter_mut()
            .find(|sub| sub.track_id == track_id)
        else {
            return;
        };
        sub.tile_height = Some(height.min(MAX_TILE_HEIGHT));
        self.allocate(Some(key), now);
    }

    /// The layer each simulcast subscription (of `only`, or of everyone) should receive; a
    /// changed target asks for a keyframe of it, and so does a switch still waiting for one.
    pub(super) fn allocate(&mut self, only: Option<u64>, now: Instant) {
        // What each simulcast publication offers now: (publisher, group, layers arriving, heights).
        let mut offered: Vec<(u64, u64, u8, [u16; 3])> = Vec::new();
        for (&pid, p) in &self.participants {
            for t in p
                .tracks
                .values()
                .filter(|t| t.layer.is_some() && t.group == t.number)
            {
                let (available, heights) = layers_of(p, t.group, now);
                offered.push((pid, t.group, available, heights));
            }
        }
        if offered.is_empty() {
            return;
        }
        let mut wanted: Vec<(u64, String, u8)> = Vec::new();
        for (&sid, s) in self.participants.iter_mut() {
            if only.is_some_and(|o| o != sid) || !s.link.forwards() {
                continue;
            }
            for sub in s
                .subscriptions
                .iter_mut()
                .filter(|sub| sub.simulcast && sub.started)
            {
                let Some(&(_, _, available, heights)) = offered
                    .iter()
                    .find(|o| o.0 == sub.publisher && o.1 == sub.source_number)
                else {
                    continue;
                };
                let cap = sub
                    .tile_height
                    .map_or(TOP, |h| layer_for_height(heights, h));
                let Some(layer) = pick_layer(available, cap) else {
                    continue;
                };
                if sub.layers.set_target(layer) {
                    tracing::debug!(
                        subscriber = %s.id,
                        layer,
                        available,
                        ?heights,
                        tile = ?sub.tile_height,
                        "simulcast target"
                    );
                }
                if sub.layers.switching() {
                    wanted.push((sub.publisher, sub.source.clone(), layer));
                }
            }
        }
        for (publisher, source, layer) in wanted {
            self.request_keyframe(publisher, &source, Some(layer), now);
        }
    }
}
