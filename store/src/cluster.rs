//! Cluster state (issue 14): which nodes are alive, and which node owns which consultation.
//! Implemented on MongoDB only (`mongo_cluster.rs`): a cluster needs a store every node shares,
//! and the embedded SQLite store is one process's. The conformance tests in
//! `store/tests/cluster.rs` run against FerretDB.
//!
//! **Nodes** write their own document every second with a lease a few seconds ahead; a node is
//! alive while its lease is in the future. Dead documents are deleted by [`ClusterStore::sweep_nodes`]
//! (TTL indexes react in minutes, and FerretDB has none).
//!
//! **Placements** are claimed by *inserting* `{consultation}#{epoch}`: a unique `_id` insert has
//! exactly one winner on MongoDB and on FerretDB (whose `findAndModify` is not atomic, so it is
//! never relied on). The owner of the highest epoch renews its lease by updating its own
//! document; a claim of the next epoch is only attempted once that lease has expired, and the
//! old owner learns it was fenced when it sees a higher epoch ([`ClusterStore::renew_placement`]).

use crate::{Millis, Result};
use serde::{Deserialize, Serialize};

/// A node's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes new consultations.
    Serving,
    /// Finishing its consultations; takes no new ones.
    Draining,
}

/// One node's heartbeat document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// Where clients reach this node directly (`http://…`; the WebSocket is `/ws/{consultation}`).
    pub public_url: String,
    /// The media address it announces (host:port).
    pub media_addr: String,
    pub region: Option<String>,
    pub state: NodeState,
    /// Load: CPU use of the process (0.0–1.0 per core), participants, consultations.
    pub cpu: f64,
    pub participants: u32,
    pub consultations: u32,
    pub heartbeat_at: Millis,
    /// Alive while this is in the future.
    pub lease_until: Millis,
}

/// The owner of a consultation for one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub consultation: String,
    /// 1 for the first owner; +1 at every takeover.
    pub epoch: u64,
    pub node: String,
    pub claimed_at: Millis,
    /// The owner holds it while this is in the future (renewed by the owner).
    pub lease_until: Millis,
}

/// The admissions of a consultation as its owner wrote them (cluster mode): what a takeover
/// rebuilds. Seats are opaque strings (`invitation:{jti}`, `account:{id}`), never names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAdmissions {
    pub consultation: String,
    /// The placement epoch of the owner that wrote them.
    pub epoch: u64,
    /// Seats admitted (in the call, or reconnecting).
    pub admitted: Vec<String>,
    /// Seats removed by a practitioner: they stay out.
    pub removed: Vec<String>,
    pub updated_at: Millis,
}

/// What a renewal found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Still the owner, lease extended.
    Renewed,
    /// Another node claimed a newer epoch (or this placement is gone): stop serving it.
    Fenced,
}

/// Storage of cluster state (see the module docs).
#[async_trait::async_trait]
pub trait ClusterStore: Send + Sync {
    /// Write (insert or replace) this node's heartbeat document.
    async fn heartbeat(&self, node: &NodeRecord) -> Result<()>;
    /// Nodes whose lease is after `now`, by id.
    async fn live_nodes(&self, now: Millis) -> Result<Vec<NodeRecord>>;
    /// Delete node documents whose lease ended before `now - grace`; how many.
    async fn sweep_nodes(&self, now: Millis, grace: Millis) -> Result<u64>;
    /// Remove this node's document (a clean shutdown).
    async fn remove_node(&self, id: &str) -> Result<()>;

    /// The placement of `consultation` with the highest epoch, if any.
    async fn placement(&self, consultation: &str) -> Result<Option<Placement>>;
    /// Try to become the owner for `placement.epoch` by inserting it: `true` for exactly one of
    /// any number of concurrent claims of the same epoch, `false` for every other.
    async fn claim_placement(&self, placement: &Placement) -> Result<bool>;
    /// Extend the owner's lease to `lease_until`, unless a newer epoch exists.
    async fn renew_placement(
        &self,
        consultation: &str,
        epoch: u64,
        node: &str,
        lease_until: Millis,
    ) -> Result<Renewal>;
    /// A takeover of `consultation` (or a dead owner found with nobody taking over): close its
    /// open billing and presence intervals at their last checkpoint (marked recovered) and fence
    /// them, so that late writes of the old owner are discarded. Returns how many were closed.
    async fn fence_intervals(&self, consultation: &str) -> Result<u64>;
    /// The consultations with an open billing or presence interval.
    async fn open_consultations(&self) -> Result<Vec<String>>;

    /// The admissions last written for `consultation`, if any.
    async fn admissions(&self, consultation: &str) -> Result<Option<StoredAdmissions>>;
    /// Write `a` as the owner at `a.epoch`: `true` if written; `false` if discarded because
    /// the owner of a newer epoch exists or wrote them already (a fenced node's late write).
    async fn save_admissions(&self, a: &StoredAdmissions) -> Result<bool>;

    /// Use the join ticket `jti` (valid until `expires_at`): `true` the first time only, for
    /// any number of concurrent attempts (a unique `_id` insert).
    async fn redeem_join_ticket(&self, jti: &str, expires_at: Millis) -> Result<bool>;
    /// Forget used tickets that expired before `now`; how many.
    async fn sweep_join_tickets(&self, now: Millis) -> Result<u64>;

    /// The owner lets go (its consultation ended, or it drains): the lease ends now, so the next
    /// join places the consultation at once. Only this owner's epoch is touched.
    async fn release_placement(
        &self,
        consultation: &str,
        epoch: u64,
        node: &str,
        now: Millis,
    ) -> Result<()>;
}
