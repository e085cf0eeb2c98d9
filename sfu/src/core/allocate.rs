//! The allocation (issue 11): every [`ALLOCATION_INTERVAL`](crate::simulcast::ALLOCATION_INTERVAL),
//! and at once when a subscriber reports a tile size, each subscriber's estimate
//! (`crate::bwe`) is shared out: audio first, then every video subscription; a simulcast one
//! gets the highest layer that arrives from its publisher, is not larger than the subscriber's
//! tile needs (a thumbnail never gets the full layer) and fits what is left, with hysteresis (an
//! upgrade needs headroom, twice in a row). A subscriber held below what it wants is probed:
//! a train of padding packets on its RTX stream, whose arrival tells whether the path has room
//! (`SubscriberBwe::start_probe`). A new target asks the publisher for a keyframe of that layer;
//! the switch itself happens at that keyframe (`media.rs`). Timer granularity, never per packet.

use super::media::{layer_info, write_probe};
use super::{Core, Kind};
use crate::simulcast::{AUDIO_BITRATE, TOP, UPGRADE_HEADROOM, UPGRADE_TICKS, fit_layer};
use crate::simulcast::{layer_for_height, pick_layer};
use std::time::Instant;

/// The largest tile height a client may report (device pixels); larger values are clamped.
pub const MAX_TILE_HEIGHT: u32 = 8192;

/// What one simulcast publication offers now.
struct Offered {
    publisher: u64,
    group: u64,
    available: u8,
    heights: [u16; 3],
    rates: [f64; 3],
}

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
            tracing::debug!(participant = %s.id, "video_size for an unknown track");
            return;
        };
        sub.tile_height = Some(height.min(MAX_TILE_HEIGHT));
        // Size changes apply at once (no hysteresis: the subscriber asked).
        sub.upgrade_ticks = UPGRADE_TICKS - 1;
        self.allocate(Some(key), now);
    }

    /// The estimate of subscriber `key` (bits per second), for tests and the benchmark.
    pub fn estimate(&self, key: u64) -> Option<f64> {
        self.participants.get(&key).map(|p| p.bwe.estimate())
    }

    /// The simulcast layer subscriber `key` receives of each of its simulcast subscriptions:
    /// (its track id, the layer forwarded, the layer aimed at).
    pub fn layers(&self, key: u64) -> Vec<(String, Option<u8>, u8)> {
        self.participants.get(&key).map_or_else(Vec::new, |p| {
            p.subscriptions
                .iter()
                .filter(|s| s.simulcast)
                .map(|s| (s.track_id.clone(), s.layers.current(), s.layers.target()))
                .collect()
        })
    }

    /// Share out each subscriber's estimate (of `only`, or of everyone). See the module docs.
    pub(super) fn allocate(&mut self, only: Option<u64>, now: Instant) {
        if only.is_none() {
            for p in self.participants.values_mut() {
                for t in p.tracks.values_mut() {
                    t.bitrate.update(now, t.bytes);
                }
            }
        }
        let mut offered: Vec<Offered> = Vec::new();
        let mut track_rates: Vec<(u64, u64, f64)> = Vec::new();
        for (&pid, p) in &self.participants {
            for t in p.tracks.values() {
                if t.layer.is_some() && t.group == t.number {
                    let (available, heights, rates) = layer_info(p, t.group, now);
                    offered.push(Offered {
                        publisher: pid,
                        group: t.group,
                        available,
                        heights,
                        rates,
                    });
                } else if t.layer.is_none() {
                    track_rates.push((pid, t.number, t.bitrate.bps()));
                }
            }
        }
        // Publishers' participant ids, for the allocation snapshot (a timer, not per packet).
        let publisher_ids: Vec<(u64, String)> = if only.is_none() {
            self.participants
                .iter()
                .filter(|(_, p)| !p.tracks.is_empty())
                .map(|(&k, p)| (k, p.id.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let mut wanted: Vec<(u64, String, u8)> = Vec::new();
        let mut probes: Vec<(u64, f64)> = Vec::new();
        for (&sid, s) in self.participants.iter_mut() {
            if only.is_some_and(|o| o != sid) || !s.link.forwards() {
                continue;
            }
            let measured = s.subscriptions.iter().any(|sub| sub.twcc_id.is_some());
            let estimate = if measured {
                s.bwe.estimate()
            } else {
                f64::INFINITY
            };
            // Audio first, then video that has no layers to choose from.
            let mut budget = estimate;
            for sub in &s.subscriptions {
                if !sub.simulcast {
                    budget -= match sub.kind {
                        Kind::Audio => AUDIO_BITRATE,
                        Kind::Video => track_rates
                            .iter()
                            .find(|t| t.0 == sub.publisher && t.1 == sub.source_number)
                            .map_or(0.0, |t| t.2),
                    };
                }
            }
            if only.is_none() && measured {
                tracing::trace!(subscriber = %s.id, estimate, "estimate");
            }
            let mut short = 0.0f64;
            for sub in s
                .subscriptions
                .iter_mut()
                .filter(|sub| sub.simulcast && sub.started)
            {
                let Some(o) = offered
                    .iter()
                    .find(|o| o.publisher == sub.publisher && o.group == sub.source_number)
                else {
                    continue;
                };
                let cap = sub
                    .tile_height
                    .map_or(TOP, |h| layer_for_height(o.heights, h));
                let Some(desired) = pick_layer(o.available, cap) else {
                    continue;
                };
                let current = Some(sub.layers.target());
                let Some((mut layer, limited)) =
                    fit_layer(o.available, desired, current, o.rates, budget.max(0.0))
                else {
                    continue;
                };
                // Up only after room was found twice in a row.
                let target = sub.layers.target();
                if layer > target && o.available & (1 << target) != 0 {
                    sub.upgrade_ticks = sub.upgrade_ticks.saturating_add(1);
                    if sub.upgrade_ticks < UPGRADE_TICKS {
                        layer = target;
                    } else {
                        sub.upgrade_ticks = 0;
                    }
                } else {
                    sub.upgrade_ticks = 0;
                }
                budget -= o.rates[layer as usize];
                if limited {
                    // What the next layer up would take beyond this one.
                    let next = (layer + 1..=desired)
                        .find(|l| o.available & (1 << l) != 0)
                        .map_or(0.0, |l| o.rates[l as usize] - o.rates[layer as usize]);
                    short += next.max(0.0);
                }
                if sub.layers.set_target(layer) {
                    tracing::debug!(
                        subscriber = %s.id,
                        layer,
                        estimate,
                        available = o.available,
                        tile = ?sub.tile_height,
                        "simulcast target"
                    );
                }
                if sub.layers.switching() {
                    wanted.push((sub.publisher, sub.source.clone(), layer));
                }
            }
            if short > 0.0 && measured && estimate.is_finite() {
                probes.push((sid, (estimate + short) * UPGRADE_HEADROOM));
            }
            if only.is_none() {
                let layers = s
                    .subscriptions
                    .iter()
                    .filter(|sub| sub.simulcast)
                    .filter_map(|sub| {
                        let publisher = publisher_ids.iter().find(|(k, _)| *k == sub.publisher)?;
                        Some((publisher.1.clone(), sub.layers.target()))
                    })
                    .collect();
                crate::quality::set_subscriber(
                    &s.id,
                    crate::quality::SubscriberAllocation {
                        estimate_bps: estimate,
                        layers,
                    },
                );
            }
        }
        for (publisher, source, layer) in wanted {
            self.request_keyframe(publisher, &source, Some(layer), now);
        }
        if only.is_none() {
            for (sid, target) in probes {
                self.probe(sid, target, now);
            }
        }
    }

    /// Send subscriber `key` a probe train for `target` bits per second (at most one per
    /// [`crate::bwe::PROBE_SPACING_MIN`], backing off), on the RTX stream of one of its video subscriptions.
    fn probe(&mut self, key: u64, target: f64, now: Instant) {
        let Some(s) = self.participants.get_mut(&key) else {
            return;
        };
        if !s.bwe.may_probe(now) {
            return;
        }
        let (Some(keys), Some(to)) = (s.media.as_mut(), s.remote) else {
            return;
        };
        let Some(sub) = s.subscriptions.iter_mut().find(|sub| {
            sub.started && sub.twcc_id.is_some() && sub.rtx_ssrc.is_some() && !sub.rtx.is_empty()
        }) else {
            return;
        };
        let Some(id) = s.bwe.start_probe(now, target) else {
            return;
        };
        tracing::debug!(
            participant = %s.id,
            target,
            estimate = s.bwe.estimate(),
            last = ?s.bwe.last_probe.map(|p| p.0),
            "bandwidth probe"
        );
        let mut sent = 0u64;
        for _ in 0..crate::bwe::PROBE_PACKETS {
            if write_probe(&mut self.out, keys, to, sub, &mut s.bwe, id, now) {
                sent += 1;
            }
        }
        self.metrics.get().probes.increment(sent);
    }
}
