//! Placement on a real MongoDB-compatible server (FerretDB in CI; `TELECONSULT_TEST_MONGODB_URI`):
//! three nodes placing ten consultations at once from every side agree on one owner each; a node
//! whose heartbeat stops loses its consultations to live nodes at the next epoch, and fences
//! itself.

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Arc;
use teleconsult_cluster::{LeaseState, OwnerLease, place};
use teleconsult_store::{ClusterStore, MongoStore, NodeRecord, NodeState};

const LEASE: i64 = 5_000;

async fn store(name: &str) -> Option<MongoStore> {
    let uri = match std::env::var("TELECONSULT_TEST_MONGODB_URI") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TELECONSULT_TEST_MONGODB_URI must be set in CI"
            );
            eprintln!("note: TELECONSULT_TEST_MONGODB_URI unset; skipping outside CI");
            return None;
        }
    };
    let db = format!("tc_{name}_{:08x}", rand::random::<u32>());
    Some(
        MongoStore::open(&uri, &db)
            .await
            .expect("open MongoDB store"),
    )
}

fn node(id: &str, cpu: f64, now: i64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        public_url: format!("http://{id}.test"),
        media_addr: "127.0.0.1:40000".into(),
        region: None,
        state: NodeState::Serving,
        cpu,
        participants: 0,
        consultations: 0,
        heartbeat_at: now,
        lease_until: now + LEASE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_agrees_on_one_owner_and_a_dead_owner_is_replaced() {
    let Some(store) = store("cluster_place").await else {
        return;
    };
    let store = Arc::new(store);
    let t0 = 1_000_000i64;
    for (id, cpu) in [("n1", 0.2), ("n2", 0.3), ("n3", 0.25)] {
        store.heartbeat(&node(id, cpu, t0)).await.unwrap();
    }
    // Ten consultations, each placed concurrently by three nodes' join handlers.
    let mut tasks = Vec::new();
    for c in 0..10 {
        for asker in 0..3u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(c * 10 + asker);
                let consultation = format!("c{c}");
                let owner = place(&*store, &consultation, None, t0, LEASE, &mut rng)
                    .await
                    .unwrap();
                (consultation, owner)
            }));
        }
    }
    let mut owners = std::collections::BTreeMap::<String, Vec<_>>::new();
    for t in tasks {
        let (c, o) = t.await.unwrap();
        owners.entry(c).or_default().push(o);
    }
    let mut per_node = std::collections::BTreeMap::<String, u32>::new();
    for (c, seen) in &owners {
        let first = &seen[0].placement;
        assert!(
            seen.iter()
                .all(|o| o.placement.node == first.node && o.placement.epoch == 1),
            "{c}: {seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|o| o.claimed).count(),
            1,
            "{c}: one claim won"
        );
        *per_node.entry(first.node.clone()).or_default() += 1;
    }
    assert!(per_node.len() >= 2, "spread over the nodes: {per_node:?}");

    // Owners renew; then the owner of c0 dies (no more heartbeats, no more renewals).
    let victim = owners["c0"][0].placement.node.clone();
    let t1 = t0 + 3_000;
    let mut leases: Vec<OwnerLease> = owners
        .values()
        .map(|seen| OwnerLease::new(&seen[0].placement, LEASE))
        .collect();
    for l in &mut leases {
        assert_eq!(l.renew(&*store, t1).await, LeaseState::Held);
    }
    for (id, cpu) in [("n1", 0.2), ("n2", 0.3), ("n3", 0.25)] {
        if id != victim {
            store.heartbeat(&node(id, cpu, t1)).await.unwrap();
        }
    }
    // Within its lease the dead owner still holds c0: nobody takes over early.
    let mut rng = StdRng::seed_from_u64(99);
    let early = place(&*store, "c0", None, t1 + 1_000, LEASE, &mut rng)
        .await
        .unwrap();
    assert_eq!(
        (
            early.placement.node.as_str(),
            early.placement.epoch,
            early.claimed
        ),
        (victim.as_str(), 1, false)
    );
    // After it: the next join re-places c0 on a live node, epoch 2.
    let t2 = t1 + LEASE + 1;
    for (id, cpu) in [("n1", 0.2), ("n2", 0.3), ("n3", 0.25)] {
        if id != victim {
            store.heartbeat(&node(id, cpu, t2)).await.unwrap();
        }
    }
    let moved = place(&*store, "c0", None, t2, LEASE, &mut rng)
        .await
        .unwrap();
    assert!(moved.claimed);
    assert_eq!(moved.placement.epoch, 2);
    assert_ne!(moved.placement.node, victim);
    // The old owner, if it comes back (SIGCONT), is fenced by time and by the store.
    let old = leases.iter_mut().find(|l| l.consultation == "c0").unwrap();
    assert_eq!(old.state(t2), LeaseState::Fenced);
    assert_eq!(old.renew(&*store, t2).await, LeaseState::Fenced);
    let _ = store.database().drop().await;
}
