//! Many servers, one service (issue 14): which node serves which consultation.
//!
//! The state lives in the store every node shares (MongoDB; see `teleconsult_store::cluster`):
//! node heartbeats with leases, and placements `{consultation}#{epoch}` claimed by unique insert.
//! This crate holds the decisions made on top of it, with no I/O of its own beyond the
//! [`ClusterStore`] calls:
//!
//! - [`choose_node`]: where a consultation goes — two random choices among the live, serving
//!   nodes (of the caller's region if it has any), the less loaded of the two (the selector
//!   LiveKit uses: near-best balance without a herd on the single least-loaded node);
//! - [`place`]: the owner of a consultation now — the current placement while its lease runs,
//!   else a claim of the next epoch for the chosen node (exactly one concurrent claim wins;
//!   losers read the winner's);
//! - [`OwnerLease`]: an owner's view of its own lease — renew on time, and stop serving
//!   (fenced) when a newer epoch exists or when a whole lease passed without a renewal.

use rand::Rng;
use teleconsult_store::{
    ClusterStore, Millis, NodeRecord, NodeState, Placement, Renewal, StoreError,
};

/// Why a consultation could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("no live node is serving (all draining or dead)")]
    NoNode,
    #[error("the cluster store: {0}")]
    Store(#[from] StoreError),
    #[error("placement kept changing under us; try again")]
    Contended,
}

/// A node's load as one number (lower is better): CPU first, participants as a tie-breaker.
fn load(n: &NodeRecord) -> f64 {
    n.cpu + f64::from(n.participants) / 1000.0
}

/// Choose the node for a new placement: live (lease after `now`) and serving; in `region` when
/// some are, else anywhere; then the less loaded of two picked at random.
pub fn choose_node<'a>(
    nodes: &'a [NodeRecord],
    region: Option<&str>,
    now: Millis,
    rng: &mut impl Rng,
) -> Option<&'a NodeRecord> {
    let serving = |n: &&NodeRecord| n.state == NodeState::Serving && n.lease_until > now;
    let mut candidates: Vec<&NodeRecord> = nodes
        .iter()
        .filter(serving)
        .filter(|n| region.is_none_or(|r| n.region.as_deref() == Some(r)))
        .collect();
    if candidates.is_empty() {
        candidates = nodes.iter().filter(serving).collect();
    }
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        len => {
            let a = rng.gen_range(0..len);
            let mut b = rng.gen_range(0..len - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// Who owns a consultation, as [`place`] found or made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub placement: Placement,
    /// Whether this call claimed it (a new epoch) or found it held.
    pub claimed: bool,
}

/// The owner of `consultation` now: the highest placement while its lease runs and its node is
/// alive; otherwise a claim of the next epoch for a node chosen by [`choose_node`], leased for
/// `lease_ms` (the chosen node renews it once the first participant reaches it).
pub async fn place(
    store: &dyn ClusterStore,
    consultation: &str,
    region: Option<&str>,
    now: Millis,
    lease_ms: Millis,
    rng: &mut (impl Rng + Send),
) -> Result<Owner, PlaceError> {
    for _ in 0..5 {
        let current = store.placement(consultation).await?;
        let nodes = store.live_nodes(now).await?;
        if let Some(p) = &current
            && p.lease_until > now
            && nodes.iter().any(|n| n.id == p.node)
        {
            return Ok(Owner {
                placement: p.clone(),
                claimed: false,
            });
        }
        let node = choose_node(&nodes, region, now, rng).ok_or(PlaceError::NoNode)?;
        let next = Placement {
            consultation: consultation.to_string(),
            epoch: current.as_ref().map_or(1, |p| p.epoch + 1),
            node: node.id.clone(),
            claimed_at: now,
            lease_until: now + lease_ms,
        };
        if store.claim_placement(&next).await? {
            tracing::info!(consultation, epoch = next.epoch, node = %next.node, "consultation placed");
            return Ok(Owner {
                placement: next,
                claimed: true,
            });
        }
        // Another node claimed this epoch first: read theirs.
    }
    Err(PlaceError::Contended)
}

/// What the owner should do about one of its placements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Serving; renewed at the last attempt.
    Held,
    /// Stop serving this consultation now (close its sessions): a newer epoch exists, or no
    /// renewal succeeded for a whole lease (the store was unreachable, or the process was
    /// stopped), so another node may already own it.
    Fenced,
}

/// An owner's lease on one consultation: renew every `lease_ms / 3`; fenced as soon as the
/// store says so, or once `lease_ms` passed since the last successful renewal.
#[derive(Clone, Debug)]
pub struct OwnerLease {
    pub consultation: String,
    pub epoch: u64,
    pub node: String,
    lease_ms: Millis,
    /// Until when the last successful renewal (or the claim) holds.
    held_until: Millis,
    fenced: bool,
}

impl OwnerLease {
    /// The lease of a placement this node owns.
    pub fn new(placement: &Placement, lease_ms: Millis) -> OwnerLease {
        OwnerLease {
            consultation: placement.consultation.clone(),
            epoch: placement.epoch,
            node: placement.node.clone(),
            lease_ms,
            held_until: placement.lease_until,
            fenced: false,
        }
    }

    /// When the next renewal is due.
    pub fn renew_at(&self) -> Millis {
        self.held_until - self.lease_ms + self.lease_ms / 3
    }

    /// Whether this node may still serve at `now` without asking the store.
    pub fn state(&self, now: Millis) -> LeaseState {
        if self.fenced || now >= self.held_until {
            LeaseState::Fenced
        } else {
            LeaseState::Held
        }
    }

    /// Renew at `now`. A store error leaves the lease as it was (it will run out by itself).
    pub async fn renew(&mut self, store: &dyn ClusterStore, now: Millis) -> LeaseState {
        if self.state(now) == LeaseState::Fenced {
            // Too late: someone may have taken over since the lease ran out. Never resurrect.
            self.fenced = true;
            return LeaseState::Fenced;
        }
        match store
            .renew_placement(
                &self.consultation,
                self.epoch,
                &self.node,
                now + self.lease_ms,
            )
            .await
        {
            Ok(Renewal::Renewed) => self.held_until = now + self.lease_ms,
            Ok(Renewal::Fenced) => self.fenced = true,
            Err(e) => {
                tracing::warn!(consultation = %self.consultation, error = %e, "lease renewal failed");
            }
        }
        self.state(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn node(id: &str, cpu: f64, region: &str, state: NodeState) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            public_url: format!("http://{id}"),
            media_addr: "127.0.0.1:1".into(),
            region: Some(region.into()),
            state,
            cpu,
            participants: 0,
            consultations: 0,
            heartbeat_at: 0,
            lease_until: 10_000,
        }
    }

    #[test]
    fn two_choices_avoid_the_loaded_node_and_skip_draining_and_dead_ones() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut dead = node("dead", 0.0, "eu", NodeState::Serving);
        dead.lease_until = 500;
        let nodes = vec![
            node("busy", 0.9, "eu", NodeState::Serving),
            node("calm", 0.1, "eu", NodeState::Serving),
            node("drain", 0.0, "eu", NodeState::Draining),
            dead,
        ];
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..200 {
            let n = choose_node(&nodes, None, 1_000, &mut rng).unwrap();
            *counts.entry(n.id.as_str()).or_insert(0) += 1;
        }
        // Of two live serving nodes, two choices always see both: the calm one wins every time.
        assert_eq!(counts.get("calm"), Some(&200), "{counts:?}");
        assert_eq!(choose_node(&nodes[2..], None, 1_000, &mut rng), None);
    }

    #[test]
    fn a_region_is_preferred_while_it_has_a_node() {
        let mut rng = StdRng::seed_from_u64(1);
        let nodes = vec![
            node("fr-1", 0.8, "fr", NodeState::Serving),
            node("de-1", 0.1, "de", NodeState::Serving),
            node("de-2", 0.2, "de", NodeState::Serving),
        ];
        for _ in 0..50 {
            assert_eq!(
                choose_node(&nodes, Some("fr"), 0, &mut rng).unwrap().id,
                "fr-1"
            );
            assert!(
                choose_node(&nodes, Some("de"), 0, &mut rng)
                    .unwrap()
                    .id
                    .starts_with("de")
            );
        }
        // An unknown region falls back to every node.
        assert!(choose_node(&nodes, Some("it"), 0, &mut rng).is_some());
    }

    #[test]
    fn a_lease_not_renewed_for_a_whole_lease_is_fenced_for_good() {
        let p = Placement {
            consultation: "c".into(),
            epoch: 3,
            node: "a".into(),
            claimed_at: 0,
            lease_until: 5_000,
        };
        let l = OwnerLease::new(&p, 5_000);
        assert_eq!(l.renew_at(), 1_666);
        assert_eq!(l.state(4_999), LeaseState::Held);
        assert_eq!(l.state(5_000), LeaseState::Fenced);
    }
}
