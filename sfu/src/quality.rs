//! Quality metrics kept outside the `metrics` recorder and read at scrape time through
//! [`snapshot`]: the forwarding-latency histogram (fixed buckets, relaxed atomics: no allocation
//! and no lock per packet) and per-consultation loss and jitter from RTCP receiver reports
//! (updated at report rate, removed when the consultation ends — the `metrics` facade cannot
//! remove a series). Formatting them (Prometheus text) is the binary's business.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds, microseconds.
const BOUNDS_US: [u64; 14] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 1_000_000,
];

pub struct LatencyHistogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// The process-wide forwarding-latency histogram.
pub static FORWARDING: LatencyHistogram = LatencyHistogram::new();

impl LatencyHistogram {
    const fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: [ZERO; BOUNDS_US.len() + 1],
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record `n` packets that each took `d`.
    #[inline]
    pub fn record(&self, d: Duration, n: u64) {
        let us = d.as_micros() as u64;
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64 * n, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// The histogram as it stands.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                total += b.load(Ordering::Relaxed);
                let bound = BOUNDS_US.get(i).map(|&us| Duration::from_micros(us));
                (bound, total)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A latency histogram read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound, cumulative count) per bucket, ascending; the last bound is `None` (+∞) and
    /// its count equals the total.
    pub buckets: Vec<(Option<Duration>, u64)>,
    pub sum: Duration,
    pub count: u64,
}

/// What a subscriber's receiver reports say about one consultation: the worst over all its
/// subscriptions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConsultationQuality {
    /// Fraction of packets lost (0..1).
    pub loss: f64,
    /// Interarrival jitter, seconds.
    pub jitter: f64,
}

/// Every quality metric at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct QualitySnapshot {
    /// Datagram taken off the media socket → packet sent to a subscriber.
    pub forwarding_latency: HistogramSnapshot,
    /// By consultation id, in id order.
    pub consultations: Vec<(String, ConsultationQuality)>,
}

/// Per consultation id.
static CONSULTATIONS: Mutex<BTreeMap<String, ConsultationQuality>> = Mutex::new(BTreeMap::new());

pub(crate) fn set_consultation(id: &str, quality: ConsultationQuality) {
    if let Ok(mut m) = CONSULTATIONS.lock() {
        match m.get_mut(id) {
            Some(v) => *v = quality,
            None => {
                m.insert(id.to_string(), quality);
            }
        }
    }
}

pub(crate) fn forget_consultation(id: &str) {
    if let Ok(mut m) = CONSULTATIONS.lock() {
        m.remove(id);
    }
}

/// What the allocation last decided for one subscriber: its send-side estimate and the simulcast
/// layer it is given of each simulcast subscription. For in-process tools (the load generator's
/// impaired-link report) and tests; never exported as a labelled metric (one series per
/// participant would be unbounded).
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriberAllocation {
    /// Bits per second; infinite before any transport-wide feedback.
    pub estimate_bps: f64,
    /// (publisher's participant id, layer aimed at: 0 = lowest), per simulcast subscription.
    pub layers: Vec<(String, u8)>,
}

/// Per subscriber (participant id).
static SUBSCRIBERS: Mutex<BTreeMap<String, SubscriberAllocation>> = Mutex::new(BTreeMap::new());

pub(crate) fn set_subscriber(id: &str, allocation: SubscriberAllocation) {
    if let Ok(mut m) = SUBSCRIBERS.lock() {
        match m.get_mut(id) {
            Some(v) => *v = allocation,
            None => {
                m.insert(id.to_string(), allocation);
            }
        }
    }
}

pub(crate) fn forget_subscriber(id: &str) {
    if let Ok(mut m) = SUBSCRIBERS.lock() {
        m.remove(id);
    }
}

/// The last allocation of subscriber `id` (participant id), if it is in a call on this process.
pub fn subscriber(id: &str) -> Option<SubscriberAllocation> {
    SUBSCRIBERS.lock().ok()?.get(id).cloned()
}

/// Read every quality metric (at scrape time: it takes a lock and allocates).
pub fn snapshot() -> QualitySnapshot {
    let consultations = match CONSULTATIONS.lock() {
        Ok(m) => m.iter().map(|(id, q)| (id.clone(), *q)).collect(),
        Err(_) => Vec::new(),
    };
    QualitySnapshot {
        forwarding_latency: FORWARDING.snapshot(),
        consultations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_total() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_micros(10), 2); // ≤ 25 µs
        h.record(Duration::from_micros(25), 1); // ≤ 25 µs (bounds are inclusive)
        h.record(Duration::from_micros(300), 1); // ≤ 500 µs
        h.record(Duration::from_secs(3), 1); // +Inf
        let s = h.snapshot();
        assert_eq!(s.buckets.len(), BOUNDS_US.len() + 1);
        assert_eq!(s.buckets[0], (Some(Duration::from_micros(25)), 3));
        assert_eq!(s.buckets[3], (Some(Duration::from_micros(250)), 3));
        assert_eq!(s.buckets[4], (Some(Duration::from_micros(500)), 4));
        assert_eq!(s.buckets.last(), Some(&(None, 5)));
        assert_eq!(s.count, 5);
        assert_eq!(
            s.sum,
            Duration::from_micros(2 * 10 + 25 + 300) + Duration::from_secs(3)
        );
    }

    #[test]
    fn an_ended_consultation_leaves_the_snapshot() {
        let q = ConsultationQuality {
            loss: 0.25,
            jitter: 0.004,
        };
        set_consultation("quality-test-c1", q);
        assert!(
            snapshot()
                .consultations
                .contains(&("quality-test-c1".into(), q))
        );
        forget_consultation("quality-test-c1");
        assert!(
            !snapshot()
                .consultations
                .iter()
                .any(|(id, _)| id == "quality-test-c1")
        );
    }
}
