//! Datagrams from unknown sources (issue 15): a source address that is no participant's (garbage,
//! STUN naming no live session's ufrag, media from a session gone) costs a lookup and is
//! dropped. One that sends more than `per_second` of them within a second is then ignored for
//! `ignore` — dropped before any parsing, counted apart — so a flood from one address costs
//! as little as possible. One table per worker (no lock); it tracks at most
//! [`MAX_TRACKED`] sources (a spoofed-source flood cannot make it grow: past that, new sources
//! are simply dropped as unknown without being tracked).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Sources tracked per worker at most.
pub const MAX_TRACKED: usize = 4096;

/// The limit (`media.unknown_source_datagrams_per_sec`, `media.unknown_source_ignore_secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownSourceLimits {
    /// Unknown datagrams one source address may send within a second before it is ignored.
    pub per_second: u32,
    /// How long it is then ignored.
    pub ignore: Duration,
}

impl Default for UnknownSourceLimits {
    fn default() -> Self {
        UnknownSourceLimits {
            per_second: 50,
            ignore: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Entry {
    window_start: Instant,
    count: u32,
    ignored_until: Option<Instant>,
}

/// What one worker knows about the unknown sources it heard from.
#[derive(Debug)]
pub struct UnknownSources {
    limits: UnknownSourceLimits,
    sources: HashMap<SocketAddr, Entry>,
}

/// The verdict on one unknown datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped as unknown; the source stays within the limit.
    Dropped,
    /// This datagram took the source past the limit: ignored from now on.
    NowIgnored,
}

impl UnknownSources {
    pub fn new(limits: UnknownSourceLimits) -> UnknownSources {
        UnknownSources {
            limits,
            sources: HashMap::new(),
        }
    }

    /// Whether `from` is being ignored (checked before anything else is done with a datagram;
    /// free while no source is tracked, the normal case).
    pub fn is_ignored(&mut self, from: SocketAddr, now: Instant) -> bool {
        if self.sources.is_empty() {
            return false;
        }
        match self.sources.get_mut(&from) {
            Some(Entry {
                ignored_until: Some(until),
                ..
            }) => {
                if now < *until {
                    true
                } else {
                    self.sources.remove(&from);
                    false
                }
            }
            _ => false,
        }
    }

    /// A datagram from `from` that is no participant's.
    pub fn record(&mut self, from: SocketAddr, now: Instant) -> Verdict {
        if !self.sources.contains_key(&from) && self.sources.len() >= MAX_TRACKED {
            self.sweep(now);
            if self.sources.len() >= MAX_TRACKED {
                return Verdict::Dropped;
            }
        }
        let e = self.sources.entry(from).or_insert(Entry {
            window_start: now,
            count: 0,
            ignored_until: None,
        });
        if now.saturating_duration_since(e.window_start) >= Duration::from_secs(1) {
            e.window_start = now;
            e.count = 0;
        }
        e.count = e.count.saturating_add(1);
        if e.count > self.limits.per_second {
            e.ignored_until = Some(now + self.limits.ignore);
            Verdict::NowIgnored
        } else {
            Verdict::Dropped
        }
    }

    /// Forget sources whose window and ignore period are over.
    fn sweep(&mut self, now: Instant) {
        self.sources.retain(|_, e| match e.ignored_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(e.window_start) < Duration::from_secs(1),
        });
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_source_past_the_limit_is_ignored_for_a_while_then_heard_again() {
        let mut u = UnknownSources::new(UnknownSourceLimits {
            per_second: 3,
            ignore: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        let a = addr(1);
        assert!(!u.is_ignored(a, t0));
        for _ in 0..3 {
            assert_eq!(u.record(a, t0), Verdict::Dropped);
        }
        assert_eq!(u.record(a, t0), Verdict::NowIgnored);
        assert!(u.is_ignored(a, t0 + Duration::from_secs(9)));
        // Another source (another port behind the same address too) is not affected.
        assert!(!u.is_ignored(addr(2), t0));
        assert_eq!(u.record(addr(2), t0), Verdict::Dropped);
        // Over: heard again, with a fresh count.
        assert!(!u.is_ignored(a, t0 + Duration::from_secs(10)));
        assert_eq!(u.record(a, t0 + Duration::from_secs(10)), Verdict::Dropped);
    }

    #[test]
    fn the_count_starts_again_each_second() {
        let mut u = UnknownSources::new(UnknownSourceLimits {
            per_second: 3,
            ignore: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        for s in 0..5 {
            for _ in 0..3 {
                assert_eq!(
                    u.record(addr(1), t0 + Duration::from_secs(s)),
                    Verdict::Dropped
                );
            }
        }
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let mut u = UnknownSources::new(UnknownSourceLimits::default());
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            let a = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9));
            assert_eq!(u.record(a, t0), Verdict::Dropped);
        }
        assert_eq!(u.tracked(), MAX_TRACKED);
        // A second later the old entries are swept to make room.
        let later = t0 + Duration::from_secs(2);
        u.record(addr(7), later);
        assert_eq!(u.tracked(), 1);
    }
}
