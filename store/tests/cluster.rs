//! Conformance of [`ClusterStore`] against MongoDB (FerretDB in CI; `TELECONSULT_TEST_MONGODB_URI`):
//! node leases, and placements claimed by unique insert — exactly one of many concurrent claims
//! wins, and an owner learns it was fenced.

mod common;

use std::sync::Arc;
use teleconsult_store::{ClusterStore, NodeRecord, NodeState, Placement, Renewal};

fn node(id: &str, lease_until: i64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        public_url: format!("http://127.0.0.1:80{}", id.len()),
        media_addr: "127.0.0.1:40000".into(),
        region: Some("eu-west".into()),
        state: NodeState::Serving,
        cpu: 0.25,
        participants: 4,
        consultations: 2,
        heartbeat_at: lease_until - 5_000,
        lease_until,
    }
}

fn placement(consultation: &str, epoch: u64, node: &str, lease_until: i64) -> Placement {
    Placement {
        consultation: consultation.into(),
        epoch,
        node: node.into(),
        claimed_at: lease_until - 5_000,
        lease_until,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_alive_while_their_lease_runs_and_dead_ones_are_swept() {
    let Some(store) = common::mongo("cluster_nodes").await else {
        return;
    };
    store.heartbeat(&node("a", 10_000)).await.unwrap();
    store.heartbeat(&node("b", 20_000)).await.unwrap();
    // A heartbeat replaces the node's document.
    let mut b = node("b", 30_000);
    b.state = NodeState::Draining;
    store.heartbeat(&b).await.unwrap();
    let live = store.live_nodes(15_000).await.unwrap();
    assert_eq!(live, vec![b.clone()]);
    assert_eq!(store.live_nodes(5_000).await.unwrap().len(), 2);
    // Swept only past the grace.
    assert_eq!(store.sweep_nodes(12_000, 5_000).await.unwrap(), 0);
    assert_eq!(store.sweep_nodes(16_000, 5_000).await.unwrap(), 1);
    assert_eq!(store.live_nodes(0).await.unwrap(), vec![b]);
    store.remove_node("b").await.unwrap();
    assert!(store.live_nodes(0).await.unwrap().is_empty());
    common::drop_mongo(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_fifty_concurrent_claims_exactly_one_wins() {
    let Some(store) = common::mongo("cluster_claims").await else {
        return;
    };
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{i}");
            let won = store
                .claim_placement(&placement("c-race", 1, &node, 10_000))
                .await
                .unwrap();
            (node, won)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (node, won) = t.await.unwrap();
        if won {
            winners.push(node);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let p = store.placement("c-race").await.unwrap().expect("placed");
    assert_eq!((p.epoch, p.node.as_str()), (1, winners[0].as_str()));
    common::drop_mongo(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_epoch_fences_the_old_owner() {
    let Some(store) = common::mongo("cluster_fence").await else {
        return;
    };
    assert_eq!(store.placement("c1").await.unwrap(), None);
    assert!(
        store
            .claim_placement(&placement("c1", 1, "a", 5_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store.renew_placement("c1", 1, "a", 10_000).await.unwrap(),
        Renewal::Renewed
    );
    assert_eq!(
        store.placement("c1").await.unwrap().unwrap().lease_until,
        10_000
    );
    // Only the owner renews its epoch.
    assert_eq!(
        store.renew_placement("c1", 1, "b", 99_000).await.unwrap(),
        Renewal::Fenced
    );
    // After the lease, b takes over with the next epoch; a is fenced from then on.
    assert!(
        store
            .claim_placement(&placement("c1", 2, "b", 20_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_placement(&placement("c1", 2, "c", 20_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store.renew_placement("c1", 1, "a", 30_000).await.unwrap(),
        Renewal::Fenced
    );
    let p = store.placement("c1").await.unwrap().unwrap();
    assert_eq!((p.epoch, p.node.as_str(), p.lease_until), (2, "b", 20_000));
    // a letting go of its old epoch does not touch b's.
    store.release_placement("c1", 1, "a", 12_000).await.unwrap();
    assert_eq!(
        store.placement("c1").await.unwrap().unwrap().lease_until,
        20_000
    );
    store.release_placement("c1", 2, "b", 15_000).await.unwrap();
    assert_eq!(
        store.placement("c1").await.unwrap().unwrap().lease_until,
        15_000
    );
    // Another consultation is independent.
    assert!(
        store
            .claim_placement(&placement("c2", 1, "a", 5_000))
            .await
            .unwrap()
    );
    common::drop_mongo(&store).await;
}

/// A takeover fences the old owner's billing: its open intervals close at their last checkpoint
/// (marked recovered), and its late writes (a checkpoint after SIGCONT, a close) are discarded,
/// so billing is never counted twice and loses at most one checkpoint interval. Intervals of
/// other consultations are untouched and keep being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_closes_the_old_owners_intervals_and_discards_its_late_writes() {
    use teleconsult_store::{BillingInterval, PresenceInterval, Store};
    let Some(store) = common::mongo("cluster_fence").await else {
        return;
    };
    let billing =
        |id: &str, consultation: &str, checkpoint: i64, end: Option<i64>| BillingInterval {
            id: id.into(),
            consultation: consultation.into(),
            practitioner: "acct-1".into(),
            start: 1_000,
            end,
            checkpoint,
            recovered: false,
        };
    let presence = PresenceInterval {
        id: "p-old-1".into(),
        consultation: "c-1".into(),
        participant: "p1".into(),
        role: "patient".into(),
        start: 1_000,
        end: None,
        checkpoint: 30_000,
        recovered: false,
    };
    store
        .upsert_billing_interval(&billing("b-old-1", "c-1", 30_000, None))
        .await
        .unwrap();
    store.upsert_presence_interval(&presence).await.unwrap();
    store
        .upsert_billing_interval(&billing("b-other", "c-2", 30_000, None))
        .await
        .unwrap();
    assert_eq!(store.open_consultations().await.unwrap(), ["c-1", "c-2"]);

    assert_eq!(store.fence_intervals("c-1").await.unwrap(), 2);
    let b = store.billing_intervals("c-1").await.unwrap();
    assert_eq!((b[0].end, b[0].recovered), (Some(30_000), true));
    let p = store.presence_intervals("c-1").await.unwrap();
    assert_eq!((p[0].end, p[0].recovered), (Some(30_000), true));

    // The old owner wakes up and writes a checkpoint, then closes the interval: both discarded.
    store
        .upsert_billing_interval(&billing("b-old-1", "c-1", 45_000, None))
        .await
        .unwrap();
    store
        .upsert_billing_interval(&billing("b-old-1", "c-1", 46_000, Some(46_000)))
        .await
        .unwrap();
    let b = store.billing_intervals("c-1").await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].end, b[0].checkpoint), (Some(30_000), 30_000));
    // Fencing again finds nothing open; the other consultation is still written.
    assert_eq!(store.fence_intervals("c-1").await.unwrap(), 0);
    store
        .upsert_billing_interval(&billing("b-other", "c-2", 45_000, None))
        .await
        .unwrap();
    assert_eq!(
        store.billing_intervals("c-2").await.unwrap()[0].checkpoint,
        45_000
    );
    assert_eq!(store.open_consultations().await.unwrap(), ["c-2"]);
    common::drop_mongo(&store).await;
}

/// Admissions (what a takeover rebuilds) are written with the owner's epoch: once the owner of a
/// newer epoch exists or wrote them, a write of the old epoch is discarded, and what the new
/// owner wrote stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_of_a_fenced_epoch_are_discarded() {
    use teleconsult_store::StoredAdmissions;
    let Some(store) = common::mongo("cluster_admissions").await else {
        return;
    };
    let c = "c-admit";
    assert_eq!(store.admissions(c).await.unwrap(), None);
    assert!(
        store
            .claim_placement(&placement(c, 1, "a", 10_000))
            .await
            .unwrap()
    );
    let at = |epoch, admitted: &[&str], removed: &[&str]| StoredAdmissions {
        consultation: c.into(),
        epoch,
        admitted: admitted.iter().map(|s| s.to_string()).collect(),
        removed: removed.iter().map(|s| s.to_string()).collect(),
        updated_at: 1_000 * epoch as i64,
    };
    // The owner of epoch 1 writes, then rewrites (same epoch: replaced).
    assert!(
        store
            .save_admissions(&at(1, &["account:dr"], &[]))
            .await
            .unwrap()
    );
    let first = at(1, &["account:dr", "invitation:pt"], &["invitation:gu"]);
    assert!(store.save_admissions(&first).await.unwrap());
    assert_eq!(store.admissions(c).await.unwrap(), Some(first.clone()));

    // A takeover: epoch 2 exists. The old owner's write is refused before the new owner even
    // wrote (the placement says so)...
    assert!(
        store
            .claim_placement(&placement(c, 2, "b", 20_000))
            .await
            .unwrap()
    );
    assert!(!store.save_admissions(&at(1, &[], &[])).await.unwrap());
    assert_eq!(store.admissions(c).await.unwrap(), Some(first));
    // ...and after the new owner stamped its epoch, by the document itself.
    let second = at(2, &["invitation:pt"], &["invitation:gu"]);
    assert!(store.save_admissions(&second).await.unwrap());
    // (Without the placement check: a write of epoch 1 against the epoch-2 document.)
    let stale = at(1, &["invitation:intruder"], &[]);
    let coll = store
        .database()
        .collection::<mongodb::bson::Document>("placements");
    coll.delete_one(mongodb::bson::doc! {"_id": format!("{c}#2")})
        .await
        .unwrap();
    assert!(!store.save_admissions(&stale).await.unwrap());
    assert_eq!(store.admissions(c).await.unwrap(), Some(second));
    common::drop_mongo(&store).await;
}
