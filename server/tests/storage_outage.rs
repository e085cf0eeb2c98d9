//! Storage outage: FerretDB (MongoDB) is stopped mid-consultation and started again. Media keeps
//! flowing, `/healthz` says degraded while billing events wait in the on-disk queue, and once the
//! database is back the queue is flushed: no billing lost, none counted twice.
//!
//! Needs FerretDB (`scripts/ferretdb`); runs where the tests have MongoDB
//! (`TELECONSULT_TEST_MONGODB_URI`, set by scripts/test) and fails in CI without it. It starts its
//! own FerretDB instance, since it stops it.

mod common;

use common::{
    FerretDb, T, TestServer, admit, audit_count, eventually, health, poll, summary_when,
    wait_admitted, wait_health,
};
use std::time::Duration;
use teleconsult::billing::now_ms;
use teleconsult::config::Config;
use teleconsult::protocol::{ClientMessage, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;

const CHECKPOINT_MS: i64 = 1000;

fn video_from(p: &Participant, from: &str) -> usize {
    p.peer
        .received()
        .get(from)
        .map_or(0, |r| r.distinct_video())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferretdb_down_mid_consultation_loses_nothing_and_counts_nothing_twice() {
    // Fails in CI when unset (it starts its own FerretDB, but only where the tests have one).
    if common::mongo_uri().is_none() {
        return;
    }
    let (db, uri) = FerretDb::start("outage");
    let mut config = Config::for_tests();
    config.storage.mongodb_uri = uri.into();
    config.storage.database = format!("outage_{:08x}", rand::random::<u32>());
    config.billing.checkpoint_secs = 1;
    let server = TestServer::start_with(config).await;
    let billing = server.server.state.billing.clone();
    let store = server.server.state.store.clone();
    let c = "c-outage";

    let mut doctor = server.join(c, "Dr Outage", Role::Practitioner).await;
    let patient_token = server.token(c, "Pat Outage", Role::Patient).await;
    let mut patient = Participant::join(&server.ws_url(), &patient_token)
        .await
        .expect("join");
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    let _pub = patient.peer.start_publishing(1);
    let pid = patient.id.clone();
    assert!(eventually(Duration::from_secs(20), || video_from(&doctor, &pid) > 10).await);
    assert!(billing.is_running(c));
    // The running interval reached the database (past a checkpoint) before it goes away.
    poll(T, "a stored checkpoint of the running interval", || async {
        let open = store.open_billing_intervals().await.ok()?;
        open.iter()
            .any(|b| b.consultation == c && b.checkpoint > b.start)
            .then_some(())
    })
    .await;

    // The database goes away.
    db.stop();
    wait_health(server.http_addr, |h| {
        h["status"] == "degraded" && h["billing_queue"].as_u64() > Some(0)
    })
    .await;
    // Media keeps flowing.
    let before = video_from(&doctor, &pid);
    assert!(
        eventually(T, || video_from(&doctor, &pid) > before + 10).await,
        "media stopped during the storage outage"
    );
    // A pause and a resume while it is down: the closing and the new interval are queued.
    patient.drop_connection().await;
    assert!(eventually(T, || !billing.is_running(c)).await);
    let mut patient = common::rejoin(&server.ws_url(), &patient_token, &patient).await;
    assert!(eventually(T, || billing.is_running(c)).await);
    let _pub2 = patient.peer.start_publishing(2);
    // The resumed interval runs past a checkpoint while the database is still down.
    let resumed = billing.live_billable_ms(c).expect("live clock");
    assert!(
        eventually(T, || billing
            .live_billable_ms(c)
            .is_some_and(|ms| ms >= resumed + 3 * CHECKPOINT_MS / 2))
        .await,
        "the resumed clock counts during the outage"
    );
    assert!(health(server.http_addr).await["billing_queue"].as_u64() > Some(0));

    // Back: the queue drains.
    db.restart();
    wait_health(server.http_addr, |h| {
        h["status"] == "ok" && h["billing_queue"] == 0
    })
    .await;
    // And the clock goes on counting after the recovery (a checkpoint's worth) before the end.
    let drained = billing.live_billable_ms(c).expect("live clock");
    assert!(
        eventually(T, || billing
            .live_billable_ms(c)
            .is_some_and(|ms| ms >= drained + CHECKPOINT_MS))
        .await,
        "the clock counts after the recovery"
    );
    let live = billing.live_billable_ms(c).expect("live clock");
    doctor.send(ClientMessage::EndConsultation);
    let ended_at = now_ms();
    patient
        .expect(T, |m| matches!(m, ServerMessage::ConsultationEnded))
        .await
        .expect("ended");

    let summary = summary_when(&*store, c, |s| s.end.is_some()).await;
    let intervals = store.billing_intervals(c).await.expect("read");
    assert_eq!(
        intervals.len(),
        2,
        "one pause, so two intervals, each stored once: {intervals:?}"
    );
    let mut ids: Vec<&str> = intervals.iter().map(|b| b.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2);
    assert!(intervals.iter().all(|b| b.end.is_some() && !b.recovered));
    let sum: i64 = intervals
        .iter()
        .map(|b| b.end.expect("closed") - b.start)
        .sum();
    assert_eq!(summary.billable_ms, sum, "the summary is the exact sum");
    assert!(!summary.recovered);
    // The stored time is the clock's: what it had counted just before the end, plus at most the
    // moments until the end was handled.
    assert!(
        summary.billable_ms >= live,
        "{} < {live}",
        summary.billable_ms
    );
    assert!(
        summary.billable_ms - live <= CHECKPOINT_MS,
        "{} ms more than the clock had counted",
        summary.billable_ms - live
    );
    assert!(summary.end.expect("ended") <= ended_at + CHECKPOINT_MS);
    // Presence: the doctor once, the patient twice; all closed.
    let presence = store.presence_intervals(c).await.expect("read");
    assert_eq!(presence.len(), 3, "{presence:?}");
    assert!(presence.iter().all(|p| p.end.is_some()));
    // The admission (recorded before the outage) is in the audit log once.
    assert_eq!(audit_count(&*store, "participant.admit").await, 1);
}
