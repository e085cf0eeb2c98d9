//! This server as one node of a cluster (`[cluster]`, issue 14): its heartbeat document in the
//! shared MongoDB, its readiness, draining, and the routing of joins: a join is served here only
//! when this node owns the consultation's placement (claimed at the first join, renewed while
//! anyone is present, released when the consultation is over); otherwise the client is
//! redirected to the owner. A consultation whose lease this node loses (a newer epoch in the
//! store, or no renewal for a whole lease) is evicted: its sessions close and its clients
//! reconnect through the load balancer. Placement and fencing decisions live in the
//! `teleconsult-cluster` crate; the store's side in `teleconsult_store::cluster`.

use crate::config::{Config, ExposeSecret};
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teleconsult_cluster::{LeaseState, OwnerLease};
use teleconsult_consultation::{Admissions, ConsultationId, ConsultationService, SeatKey};
use teleconsult_signaling::{ConsultationRouter, Route, SignedIn};
use teleconsult_store::{
    ClusterStore, Millis, MongoStore, NodeRecord, NodeState, StoredAdmissions,
};
use tokio::sync::Notify;

/// Metric: placements claimed by this node's routing (a consultation placed or re-placed).
pub const PLACEMENTS_CLAIMED: &str = "teleconsult_cluster_placements_claimed_total";
/// Metric: consultations this node stopped serving because it lost their lease.
pub const FENCED: &str = "teleconsult_cluster_fenced_total";
/// Metric (histogram, seconds): how long one placement decision at join took (store reads and
/// the claim, if any).
pub const PLACEMENT_SECONDS: &str = "teleconsult_cluster_placement_seconds";

/// Lease renewals sent to the store at once.
const RENEWALS_IN_FLIGHT: usize = 64;

/// Dead nodes' documents are deleted this long after their lease ended.
const SWEEP_GRACE_MS: Millis = 60_000;

fn now_ms() -> Millis {
    teleconsult_accounts::now_millis()
}

/// This node's membership of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ClusterStore>,
    id: String,
    public_url: String,
    media_addr: String,
    region: Option<String>,
    lease_ms: Millis,
    /// The join tickets' key (crate::ticket), derived from `auth.signing_secret`.
    ticket_key: [u8; 32],
    draining: AtomicBool,
    /// The limit of a drain an operator asked for (`teleconsult drain`), for `serve` to run.
    drain_request: Mutex<Option<Duration>>,
    drain_wanted: Notify,
    /// Until when the last successful heartbeat keeps this node alive for the others.
    alive_until: AtomicI64,
    consultations: ConsultationService,
    stop: Notify,
    stopped: AtomicBool,
    /// The placements this node owns, by consultation (never locked across an `.await`).
    leases: Mutex<HashMap<String, Held>>,
    /// The admissions last queued for the store, by consultation (a write only on a change).
    admissions: Mutex<HashMap<String, Admissions>>,
    /// The admissions writer (one task, so writes of one consultation land in order).
    /// Bounded ([`ADMISSIONS_QUEUE`]): admission changes are a practitioner's actions; if the
    /// store stalls long enough to fill it, a change is dropped and the next one writes the whole
    /// state again.
    admissions_tx: tokio::sync::mpsc::Sender<(String, Admissions)>,
    /// The WebSocket origins of the live nodes (`ws://host:port`), refreshed every lease: the
    /// pages' Content-Security-Policy lets the browser follow a `redirect` to them.
    origins: Mutex<Vec<String>>,
}

/// One placement this node owns.
struct Held {
    lease: OwnerLease,
    /// When a join was last routed here for it (a consultation is not released as over before
    /// that join has had time to arrive).
    since: Millis,
    /// Held by the join that took the consultation on while it rebuilds the admissions: other
    /// joins wait for it, so that none creates the consultation here before that is done.
    takeover: Arc<tokio::sync::Mutex<()>>,
}

/// What [`ClusterNode::adopt`] did.
enum Adopted {
    /// Taken on now: the caller rebuilds the admissions, then drops the guard.
    Now(tokio::sync::OwnedMutexGuard<()>),
    /// Held already: wait on this until any takeover in progress is done.
    Held(Arc<tokio::sync::Mutex<()>>),
}

impl ClusterNode {
    /// Join the cluster: the first heartbeat now (a failure is logged, not fatal: readiness
    /// says so until the store answers), then one every fifth of a lease.
    pub async fn start(
        config: &Config,
        media_addr: std::net::SocketAddr,
        consultations: ConsultationService,
    ) -> anyhow::Result<ClusterNode> {
        let store = MongoStore::open(
            config.storage.mongodb_uri.expose_secret(),
            &config.storage.database,
        )
        .await?;
        let c = &config.cluster;
        let (admissions_tx, admissions_rx) = tokio::sync::mpsc::channel(ADMISSIONS_QUEUE);
        let node = ClusterNode {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                id: c.node_id.clone(),
                public_url: c.public_url.trim_end_matches('/').to_string(),
                media_addr: media_addr.to_string(),
                region: (!c.region.is_empty()).then(|| c.region.clone()),
                lease_ms: Millis::try_from(c.lease_secs * 1000).unwrap_or(5_000),
                ticket_key: crate::ticket::key(
                    config.auth.signing_secret.expose_secret().as_bytes(),
                ),
                draining: AtomicBool::new(false),
                drain_request: Mutex::new(None),
                drain_wanted: Notify::new(),
                alive_until: AtomicI64::new(0),
                consultations,
                stop: Notify::new(),
                stopped: AtomicBool::new(false),
                leases: Mutex::new(HashMap::new()),
                admissions: Mutex::new(HashMap::new()),
                admissions_tx,
                origins: Mutex::new(Vec::new()),
            }),
        };
        node.beat().await;
        node.refresh_origins().await;
        let this = node.clone();
        tokio::spawn(async move { this.run().await });
        let this = node.clone();
        tokio::spawn(async move { this.keep_leases().await });
        let this = node.clone();
        tokio::spawn(async move { this.write_admissions(admissions_rx).await });
        tracing::info!(node = %node.inner.id, "joined the cluster");
        Ok(node)
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The shared cluster store (placements).
    pub fn store(&self) -> &Arc<dyn ClusterStore> {
        &self.inner.store
    }

    /// Ready for new consultations: alive in the store's eyes and not draining.
    pub fn ready(&self) -> bool {
        !self.inner.draining.load(Ordering::Relaxed)
            && self.inner.alive_until.load(Ordering::Relaxed) > now_ms()
    }

    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Take no new consultations (announced at the next heartbeat, which is sent now).
    pub async fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        self.beat().await;
    }

    /// An operator asked for a drain (`POST /drain` on the metrics listener): announce
    /// `draining` now, and hand `limit` to whoever runs the process ([`Self::drain_requested`]:
    /// `serve` waits for the calls to end, at most `limit`, then exits). A second request
    /// replaces the limit of a drain not yet picked up.
    pub async fn request_drain(&self, limit: Duration) {
        *self
            .inner
            .drain_request
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(limit);
        self.drain().await;
        // A permit is stored if nobody waits yet.
        self.inner.drain_wanted.notify_one();
    }

    /// Resolves when an operator asked for a drain, with its limit.
    pub async fn drain_requested(&self) -> Duration {
        loop {
            self.inner.drain_wanted.notified().await;
            let limit = self
                .inner
                .drain_request
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(limit) = limit {
                return limit;
            }
        }
    }

    /// Leave the cluster: stop heartbeats, release the placements still held (their next join
    /// re-places them at once) and delete this node's document.
    pub async fn leave(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        self.inner.stop.notify_waiters();
        let held: Vec<OwnerLease> = self.leases().drain().map(|(_, h)| h.lease).collect();
        for l in held {
            self.release(&l).await;
        }
        if let Err(e) = self.inner.store.remove_node(&self.inner.id).await {
            tracing::warn!(node = %self.inner.id, error = %e, "could not remove the node's document");
        }
    }

    /// The live nodes' WebSocket origins, as last read.
    pub fn origins(&self) -> Vec<String> {
        self.inner
            .origins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn refresh_origins(&self) {
        if let Ok(nodes) = self.inner.store.live_nodes(now_ms()).await {
            let mut origins: Vec<String> = nodes
                .iter()
                .filter_map(|n| ws_origin(&n.public_url))
                .collect();
            origins.sort();
            origins.dedup();
            *self.inner.origins.lock().unwrap_or_else(|p| p.into_inner()) = origins;
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.inner.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The consultations whose placement this node holds now.
    pub fn owned(&self) -> Vec<String> {
        let mut v: Vec<String> = self.leases().keys().cloned().collect();
        v.sort();
        v
    }

    /// Where `consultation` is served: here (this node owns it, claimed now if nobody did, or
    /// the last owner's lease ran out), elsewhere (the owner's WebSocket URL), or nowhere now.
    async fn route_join(&self, consultation: &str) -> Route {
        let started = std::time::Instant::now();
        let now = now_ms();
        let mut rng = rand::rngs::StdRng::from_entropy();
        let store = self.inner.store.as_ref();
        let placed = teleconsult_cluster::place(
            store,
            consultation,
            self.inner.region.as_deref(),
            now,
            self.inner.lease_ms,
            &mut rng,
        )
        .await;
        let route = match placed {
            Ok(owner) => {
                let p = owner.placement;
                if owner.claimed {
                    metrics::counter!(PLACEMENTS_CLAIMED).increment(1);
                    if p.epoch > 1 {
                        // A takeover: what the old owner left open ends at its last checkpoint,
                        // and its late writes are discarded.
                        self.fence_intervals(consultation).await;
                    }
                }
                if p.node == self.inner.id {
                    match self.adopt(&p, now) {
                        Adopted::Now(guard) => {
                            // Taken on now (claimed here or by the node that redirected the
                            // client): renew at once, so that a client arriving late in the
                            // claim's lease does not find it run out a moment later. (The time of
                            // the renewal itself, not of the join's start: the placement may have
                            // taken a while on a loaded store.)
                            let route = self.renew_now(consultation, now_ms()).await;
                            if route == Route::Here {
                                self.take_over_admissions(consultation, p.epoch).await;
                            }
                            drop(guard);
                            route
                        }
                        Adopted::Held(takeover) => {
                            // A takeover in progress (another join's): its admissions first.
                            let wait = Duration::from_millis(
                                u64::try_from(self.inner.lease_ms).unwrap_or(5_000),
                            );
                            let _ = tokio::time::timeout(wait, takeover.lock()).await;
                            Route::Here
                        }
                    }
                } else {
                    // Someone else owns it: if this node still thought it did, it is fenced.
                    self.fence_local(consultation, Some(p.epoch));
                    match store.live_nodes(now).await {
                        Ok(nodes) => match nodes.into_iter().find(|n| n.id == p.node) {
                            Some(n) => Route::Elsewhere(ws_url(&n.public_url, consultation)),
                            None => Route::Unavailable,
                        },
                        Err(e) => {
                            tracing::warn!(%consultation, error = %e, "cluster store: cannot read the owner's address");
                            Route::Unavailable
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%consultation, error = %e, "cannot place the consultation");
                Route::Unavailable
            }
        };
        metrics::histogram!(PLACEMENT_SECONDS).record(started.elapsed().as_secs_f64());
        route
    }

    /// Renew the lease just taken on for `consultation`: here if it holds, else nowhere for now.
    async fn renew_now(&self, consultation: &str, now: Millis) -> Route {
        let Some(mut lease) = self.leases().get(consultation).map(|h| h.lease.clone()) else {
            return Route::Unavailable;
        };
        match lease.renew(self.inner.store.as_ref(), now).await {
            LeaseState::Held => {
                let mut leases = self.leases();
                if let Some(h) = leases.get_mut(consultation)
                    && h.lease.epoch == lease.epoch
                {
                    h.lease = lease;
                }
                Route::Here
            }
            LeaseState::Fenced => {
                self.fence_local(consultation, Some(lease.epoch + 1));
                Route::Unavailable
            }
        }
    }

    /// Serve `p` (this node's placement): keep the lease we hold for its epoch, else take it on.
    fn adopt(&self, p: &teleconsult_store::Placement, now: Millis) -> Adopted {
        let mut leases = self.leases();
        if let Some(h) = leases.get_mut(&p.consultation)
            && h.lease.epoch == p.epoch
            && h.lease.state(now) == LeaseState::Held
        {
            // A join is on its way: not released as over before it arrives.
            h.since = now;
            return Adopted::Held(h.takeover.clone());
        }
        let takeover = Arc::new(tokio::sync::Mutex::new(()));
        let guard = takeover
            .clone()
            .try_lock_owned()
            .expect("a new mutex is free");
        leases.insert(
            p.consultation.clone(),
            Held {
                lease: OwnerLease::new(p, self.inner.lease_ms),
                since: now,
                takeover,
            },
        );
        Adopted::Now(guard)
    }

    /// A consultation taken on here at `epoch`: what its previous owner admitted (and removed)
    /// applies here, and the store's document is stamped with this epoch at once, so that the
    /// old owner's late writes are discarded from now on.
    async fn take_over_admissions(&self, consultation: &str, epoch: u64) {
        if self.inner.consultations.is_live(consultation) {
            return;
        }
        let stored = match self.inner.store.admissions(consultation).await {
            Ok(Some(a)) if a.epoch < epoch => a,
            Ok(_) => return,
            Err(e) => {
                // Nobody is admitted without the practitioner then: the safe side.
                tracing::warn!(%consultation, error = %e, "cannot read the consultation's admissions");
                return;
            }
        };
        let admissions = Admissions {
            admitted: stored
                .admitted
                .iter()
                .filter_map(|s| seat_from(s))
                .collect(),
            removed: stored.removed.iter().filter_map(|s| seat_from(s)).collect(),
        };
        if !admissions.admitted.is_empty() || !admissions.removed.is_empty() {
            tracing::info!(
                %consultation,
                epoch,
                admitted = admissions.admitted.len(),
                removed = admissions.removed.len(),
                "admissions taken over from the previous owner"
            );
        }
        self.inner
            .admissions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(consultation.to_string(), admissions.clone());
        self.inner
            .consultations
            .restore_admissions(&ConsultationId::new(consultation), admissions);
        let stamp = StoredAdmissions {
            epoch,
            updated_at: now_ms(),
            ..stored
        };
        if let Err(e) = self.inner.store.save_admissions(&stamp).await {
            tracing::warn!(%consultation, error = %e, "cannot stamp the admissions with the new epoch");
        }
    }

    /// The admissions writer: each change, in order, written with the epoch of the lease this
    /// node holds — and only while it holds it (a fenced node writes nothing; the store
    /// discards what a stale epoch sends anyway).
    async fn write_admissions(self, mut rx: tokio::sync::mpsc::Receiver<(String, Admissions)>) {
        while let Some((consultation, admissions)) = rx.recv().await {
            let now = now_ms();
            let epoch = self
                .leases()
                .get(&consultation)
                .filter(|h| h.lease.state(now) == LeaseState::Held)
                .map(|h| h.lease.epoch);
            let Some(epoch) = epoch else {
                continue;
            };
            let doc = StoredAdmissions {
                consultation: consultation.clone(),
                epoch,
                admitted: admissions.admitted.iter().map(seat_to).collect(),
                removed: admissions.removed.iter().map(seat_to).collect(),
                updated_at: now,
            };
            match self.inner.store.save_admissions(&doc).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%consultation, epoch, "admissions not written: a newer owner exists")
                }
                Err(e) => {
                    tracing::warn!(%consultation, error = %e, "cannot write the consultation's admissions")
                }
            }
        }
    }

    /// Stop serving `consultation` here if this node holds an older lease for it than `newer`
    /// (or any lease, for `None`): its sessions close, its clients reconnect through the load
    /// balancer.
    fn fence_local(&self, consultation: &str, newer: Option<u64>) {
        let removed = {
            let mut leases = self.leases();
            match leases.get(consultation) {
                Some(h) if newer.is_none_or(|e| h.lease.epoch < e) => {
                    leases.remove(consultation).is_some()
                }
                _ => false,
            }
        };
        if removed {
            self.inner
                .admissions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(consultation);
            metrics::counter!(FENCED).increment(1);
            tracing::warn!(%consultation, node = %self.inner.id, "fenced: this node no longer owns the consultation");
            self.inner
                .consultations
                .evict(&ConsultationId::new(consultation));
        }
    }

    async fn fence_intervals(&self, consultation: &str) {
        match self.inner.store.fence_intervals(consultation).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(%consultation, closed = n, "the previous owner's open intervals closed at their last checkpoint")
            }
            Err(e) => {
                tracing::warn!(%consultation, error = %e, "could not fence the previous owner's intervals")
            }
        }
    }

    /// Whether this node may write billing for `consultation` at `now`: it holds a lease on it
    /// that has not run out (a node stopped or cut off past its lease writes nothing more).
    pub fn may_write(&self, consultation: &str, now: Millis) -> bool {
        self.leases()
            .get(consultation)
            .is_some_and(|h| h.lease.state(now) == LeaseState::Held)
    }

    /// Close the intervals of consultations whose owner is gone with nobody taking over (their
    /// participants never came back): any open interval whose consultation has no placement
    /// with a lease in the last `grace` ms.
    async fn sweep_orphans(&self, now: Millis, grace: Millis) {
        let Ok(open) = self.inner.store.open_consultations().await else {
            return;
        };
        for consultation in open {
            match self.inner.store.placement(&consultation).await {
                Ok(Some(p)) if p.lease_until + grace > now => {}
                Ok(_) => self.fence_intervals(&consultation).await,
                Err(_) => return,
            }
        }
    }

    async fn release(&self, l: &OwnerLease) {
        if let Err(e) = self
            .inner
            .store
            .release_placement(&l.consultation, l.epoch, &l.node, now_ms())
            .await
        {
            tracing::warn!(consultation = %l.consultation, error = %e, "could not release the placement");
        }
    }

    /// Renew the leases of the consultations served here, in time; evict those whose lease is
    /// lost; release those that are over (everyone left, or ended).
    async fn keep_leases(self) {
        let period = Duration::from_millis(u64::try_from(self.inner.lease_ms / 6).unwrap_or(500));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.inner.stop.notified() => return,
            }
            if self.inner.stopped.load(Ordering::Relaxed) {
                return;
            }
            let now = now_ms();
            let held: Vec<OwnerLease> = self.leases().values().map(|h| h.lease.clone()).collect();
            // Many consultations per node: their renewals go to the store concurrently (a
            // sequential pass of store round trips could outlast a lease).
            use futures_util::StreamExt;
            futures_util::stream::iter(held)
                .for_each_concurrent(RENEWALS_IN_FLIGHT, |lease| self.tend(lease, now))
                .await;
        }
    }

    /// One placement held here, at `now`: released if its consultation is over, renewed when
    /// due, evicted when lost.
    async fn tend(&self, mut lease: OwnerLease, now: Millis) {
        let consultation = lease.consultation.clone();
        if !self.inner.consultations.is_live(&consultation) {
            // Over (everyone left, or ended), unless a join was routed here within the last
            // lease and has yet to arrive.
            let gone = {
                let mut leases = self.leases();
                match leases.get(&consultation) {
                    Some(h)
                        if h.lease.epoch == lease.epoch && now - h.since > self.inner.lease_ms =>
                    {
                        leases.remove(&consultation).is_some()
                    }
                    _ => false,
                }
            };
            if gone {
                self.inner
                    .admissions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&consultation);
                self.release(&lease).await;
                tracing::info!(%consultation, epoch = lease.epoch, "placement released");
                return;
            }
        }
        let state = if lease.state(now) == LeaseState::Fenced {
            LeaseState::Fenced
        } else if now >= lease.renew_at() {
            lease.renew(self.inner.store.as_ref(), now).await
        } else {
            return;
        };
        match state {
            LeaseState::Held => {
                let mut leases = self.leases();
                if let Some(h) = leases.get_mut(&consultation)
                    && h.lease.epoch == lease.epoch
                {
                    h.lease = lease;
                }
            }
            LeaseState::Fenced => self.fence_local(&consultation, Some(lease.epoch + 1)),
        }
    }

    fn record(&self, now: Millis) -> NodeRecord {
        let (consultations, participants) = self.inner.consultations.load();
        NodeRecord {
            id: self.inner.id.clone(),
            public_url: self.inner.public_url.clone(),
            media_addr: self.inner.media_addr.clone(),
            region: self.inner.region.clone(),
            state: if self.draining() {
                NodeState::Draining
            } else {
                NodeState::Serving
            },
            cpu: cpu_share(),
            participants: u32::try_from(participants).unwrap_or(u32::MAX),
            consultations: u32::try_from(consultations).unwrap_or(u32::MAX),
            heartbeat_at: now,
            lease_until: now + self.inner.lease_ms,
        }
    }

    async fn beat(&self) {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ms();
        match self.inner.store.heartbeat(&self.record(now)).await {
            Ok(()) => self
                .inner
                .alive_until
                .store(now + self.inner.lease_ms, Ordering::Relaxed),
            Err(e) => tracing::warn!(node = %self.inner.id, error = %e, "heartbeat failed"),
        }
    }

    async fn run(self) {
        let period = Duration::from_millis(u64::try_from(self.inner.lease_ms / 5).unwrap_or(1000));
        let mut beats = 0u64;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.inner.stop.notified() => return,
            }
            if self.inner.stopped.load(Ordering::Relaxed) {
                return;
            }
            self.beat().await;
            beats += 1;
            if beats.is_multiple_of(5) {
                self.refresh_origins().await;
            }
            if beats.is_multiple_of(50) {
                self.sweep_orphans(now_ms(), SWEEP_GRACE_MS).await;
                if let Err(e) = self.inner.store.sweep_join_tickets(now_ms()).await {
                    tracing::warn!(error = %e, "sweeping used join tickets failed");
                }
                match self.inner.store.sweep_nodes(now_ms(), SWEEP_GRACE_MS).await {
                    Ok(n) if n > 0 => tracing::info!(swept = n, "dead nodes' documents deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeping dead nodes failed"),
                }
            }
        }
    }
}

impl teleconsult_consultation::AdmissionRecorder for ClusterNode {
    fn admissions(&self, consultation: &ConsultationId, admissions: Admissions) {
        let mut last = self
            .inner
            .admissions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.get(consultation.as_str()) == Some(&admissions) {
            return;
        }
        if admissions == Admissions::default() && !last.contains_key(consultation.as_str()) {
            // Nothing admitted yet and nothing written: nothing to write.
            return;
        }
        last.insert(consultation.as_str().to_string(), admissions.clone());
        drop(last);
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = self
            .inner
            .admissions_tx
            .try_send((consultation.as_str().to_string(), admissions))
        {
            // Not written: forget what was last queued, so the next change writes it all.
            tracing::warn!(consultation = %consultation.as_str(), "admissions queue full: this change is written with the next");
            self.inner
                .admissions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(consultation.as_str());
        }
    }
}

/// Admission changes queued for the store at most (a practitioner's actions, across every
/// consultation of this node).
const ADMISSIONS_QUEUE: usize = 1024;

/// A seat as the store keeps it (ids only).
fn seat_to(seat: &SeatKey) -> String {
    match seat {
        SeatKey::Invitation(jti) => format!("invitation:{jti}"),
        SeatKey::Account(id) => format!("account:{id}"),
    }
}

fn seat_from(s: &str) -> Option<SeatKey> {
    if let Some(jti) = s.strip_prefix("invitation:") {
        Some(SeatKey::Invitation(jti.to_string()))
    } else {
        s.strip_prefix("account:")
            .map(|id| SeatKey::Account(id.to_string()))
    }
}

impl ConsultationRouter for ClusterNode {
    fn route<'a>(
        &'a self,
        consultation: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Route> + Send + 'a>> {
        Box::pin(self.route_join(consultation))
    }

    fn mint_ticket(&self, me: &SignedIn, consultation: &str) -> Option<String> {
        let ticket = crate::ticket::Ticket {
            jti: crate::ticket::new_jti(),
            account: me.account.clone(),
            organisation: me.organisation.clone(),
            display_name: me.display_name.clone(),
            consultation: consultation.to_string(),
            exp: now_ms() + crate::ticket::TICKET_TTL_MS,
        };
        Some(crate::ticket::mint(&self.inner.ticket_key, &ticket))
    }

    fn is_ticket(&self, token: &str) -> bool {
        token.starts_with(crate::ticket::PREFIX)
    }

    fn redeem_ticket<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(SignedIn, String)>> + Send + 'a>>
    {
        Box::pin(async move {
            let t = match crate::ticket::verify(&self.inner.ticket_key, token, now_ms()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(error = %e, "join ticket refused");
                    return None;
                }
            };
            match self.inner.store.redeem_join_ticket(&t.jti, t.exp).await {
                Ok(true) => Some((
                    SignedIn {
                        account: t.account,
                        organisation: t.organisation,
                        display_name: t.display_name,
                    },
                    t.consultation,
                )),
                Ok(false) => {
                    tracing::warn!(consultation = %t.consultation, "join ticket used twice: refused");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot redeem a join ticket");
                    None
                }
            }
        })
    }
}

/// The WebSocket URL of `consultation` on the node reachable at `public_url` (`http` → `ws`,
/// `https` → `wss`).
pub fn ws_url(public_url: &str, consultation: &str) -> String {
    let base = public_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/ws/{consultation}")
}

/// The WebSocket origin (`ws://host[:port]` or `wss://…`) of a node's `public_url`, when it is
/// a plain `http(s)://authority` safe to put into a header.
pub fn ws_origin(public_url: &str) -> Option<String> {
    let (scheme, rest) = if let Some(r) = public_url.strip_prefix("https://") {
        ("wss", r)
    } else {
        ("ws", public_url.strip_prefix("http://")?)
    };
    let authority = rest.split('/').next()?;
    crate::http::sane_host(authority).then(|| format!("{scheme}://{authority}"))
}

/// This process's CPU use since the previous call, in cores (Linux `/proc/self/stat`; 0 where
/// it cannot be read).
fn cpu_share() -> f64 {
    use std::sync::Mutex;
    static LAST: Mutex<Option<(std::time::Instant, u64)>> = Mutex::new(None);
    let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start after the last ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
    else {
        return 0.0;
    };
    let now = std::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let share = match *last {
        Some((at, before)) => {
            let secs = now.duration_since(at).as_secs_f64();
            // Clock ticks are 100 per second on Linux.
            if secs > 0.0 {
                ticks.saturating_sub(before) as f64 / 100.0 / secs
            } else {
                0.0
            }
        }
        None => 0.0,
    };
    *last = Some((now, ticks));
    share
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_owner_url_is_its_websocket_with_the_consultation_in_the_path() {
        assert_eq!(
            super::ws_url("http://127.0.0.1:8081/", "c-1"),
            "ws://127.0.0.1:8081/ws/c-1"
        );
        assert_eq!(
            super::ws_url("https://n2.consult.example.org", "c-2"),
            "wss://n2.consult.example.org/ws/c-2"
        );
        assert_eq!(
            super::ws_origin("https://n2.consult.example.org/x").as_deref(),
            Some("wss://n2.consult.example.org")
        );
        assert_eq!(super::ws_origin("ftp://x"), None);
        assert_eq!(
            super::ws_origin("http://a b;c"),
            None,
            "nothing unsafe in a header"
        );
    }
}
