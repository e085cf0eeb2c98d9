//! This server as one node of a cluster (`[cluster]`, issue 14): its heartbeat document in the
//! shared MongoDB, its readiness, and draining. Placement and fencing decisions live in the
//! `teleconsult-cluster` crate; the store's side in `teleconsult_store::cluster`.

use crate::config::{Config, ExposeSecret};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use teleconsult_consultation::ConsultationService;
use teleconsult_store::{ClusterStore, Millis, MongoStore, NodeRecord, NodeState};
use tokio::sync::Notify;

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
    draining: AtomicBool,
    /// Until when the last successful heartbeat keeps this node alive for the others.
    alive_until: AtomicI64,
    consultations: ConsultationService,
    stop: Notify,
    stopped: AtomicBool,
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
        let node = ClusterNode {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                id: c.node_id.clone(),
                public_url: c.public_url.trim_end_matches('/').to_string(),
                media_addr: media_addr.to_string(),
                region: (!c.region.is_empty()).then(|| c.region.clone()),
                lease_ms: Millis::try_from(c.lease_secs * 1000).unwrap_or(5_000),
                draining: AtomicBool::new(false),
                alive_until: AtomicI64::new(0),
                consultations,
                stop: Notify::new(),
                stopped: AtomicBool::new(false),
            }),
        };
        node.beat().await;
        let this = node.clone();
        tokio::spawn(async move { this.run().await });
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

    /// Leave the cluster: stop heartbeats and delete this node's document.
    pub async fn leave(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        self.inner.stop.notify_one();
        if let Err(e) = self.inner.store.remove_node(&self.inner.id).await {
            tracing::warn!(node = %self.inner.id, error = %e, "could not remove the node's document");
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
            if beats.is_multiple_of(50) {
                match self.inner.store.sweep_nodes(now_ms(), SWEEP_GRACE_MS).await {
                    Ok(n) if n > 0 => tracing::info!(swept = n, "dead nodes' documents deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeping dead nodes failed"),
                }
            }
        }
    }
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
