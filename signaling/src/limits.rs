//! How many signalling WebSockets may be open: per source address and in all
//! (`signaling.max_connections_per_ip`, `max_connections`). A slot is taken before the upgrade
//! and given back when the socket's session ends (the [`Slot`] is dropped).

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct ConnectionLimits {
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyFromAddress,
    TooMany,
}

/// One open connection's place; given back on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    /// A slot for a connection from `ip`, if both limits allow one more.
    pub fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        per_ip: usize,
        total: usize,
    ) -> Result<Slot, Refused> {
        if self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < total).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refused::TooMany);
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::TooManyFromAddress);
        }
        *count += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The entry goes when its last connection does: the map holds only live addresses.
        self.limits.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_limits_and_slots_given_back() {
        let limits = Arc::new(ConnectionLimits::default());
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = limits.take(a, 2, 3).unwrap();
        let s2 = limits.take(a, 2, 3).unwrap();
        assert_eq!(
            limits.take(a, 2, 3).unwrap_err(),
            Refused::TooManyFromAddress
        );
        let s3 = limits.take(b, 2, 3).unwrap();
        assert_eq!(limits.take(b, 2, 3).unwrap_err(), Refused::TooMany);
        assert_eq!(limits.open(), 3);
        drop(s1);
        let s4 = limits.take(a, 2, 3).unwrap();
        drop((s2, s3, s4));
        assert_eq!(limits.open(), 0);
        assert!(
            limits.per_ip.is_empty(),
            "no entry is left for gone addresses"
        );
    }
}
