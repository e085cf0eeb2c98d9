//! Storage outage: FerretDB (MongoDB) is stopped mid-consultation and started again. Media keeps
//! flowing, `/healthz` says degraded while billing events wait in the on-disk queue, and once the
//! database is back the queue is flushed: no billing lost, none counted twice.
//!
//! Needs FerretDB (`scripts/ferretdb`); runs when `TELECONSULT_TEST_MONGODB_URI` is set, which
//! scripts/test (and so CI) always does. It starts its own FerretDB instance, since it stops it.

mod common;

use common::{T, TestServer, admit, eventually, http_get};
use std::path::{Path, PathBuf};
use std::time::Duration;
use teleconsult::billing::now_ms;
use teleconsult::config::Config;
use teleconsult::protocol::{ClientMessage, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;

const CHECKPOINT_MS: i64 = 1000;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ferretdb")
}

fn ferretdb(args: &[&str]) -> String {
    let out = std::process::Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("scripts/ferretdb runs");
    assert!(
        out.status.success(),
        "scripts/ferretdb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct FerretDb {
    dir: PathBuf,
    port: String,
}

impl FerretDb {
    fn start(&self) -> String {
        ferretdb(&["start", self.dir.to_str().expect("utf-8"), &self.port])
    }
    fn stop(&self) {
        ferretdb(&["stop", self.dir.to_str().expect("utf-8")]);
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn health(server: &TestServer) -> serde_json::Value {
    let (status, body) = http_get(server.http_addr, "/healthz", None).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("JSON")
}

async fn wait_health(server: &TestServer, pred: impl Fn(&serde_json::Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(server).await;
        if pred(&h) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never matched: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let db = FerretDb {
        dir: std::env::temp_dir().join(format!("teleconsult-outage-{}-{port}", std::process::id())),
        port: port.to_string(),
    };
    let uri = db.start();
    let mut config = Config::for_tests();
    config.storage.mongodb_uri = uri;
    config.storage.database = format!("outage_{port}");
    config.billing.checkpoint_secs = 1;
    let server = TestServer::start_with(config).await;
    let billing = server.server.state.billing.clone();
    let store = server.server.state.store.clone();
    let c = "c-outage";

    let mut doctor = server.join(c, "Dr Outage", Role::Practitioner).await;
    let patient_token = server.token(c, "Pat Outage", Role::Patient);
    let mut patient = Participant::join(&server.ws_url(), &patient_token)
        .await
        .expect("join");
    admit(&mut doctor, &patient.id).await;
    patient
        .expect(T, |m| matches!(m, ServerMessage::Admitted { .. }))
        .await
        .expect("admitted");
    let _pub = patient.peer.start_publishing(1);
    let pid = patient.id.clone();
    assert!(eventually(Duration::from_secs(20), || video_from(&doctor, &pid) > 10).await);
    assert!(billing.is_running(c));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The database goes away.
    db.stop();
    wait_health(&server, |h| {
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
    let mut patient = Participant::join(&server.ws_url(), &patient_token)
        .await
        .expect("rejoin");
    assert!(eventually(T, || billing.is_running(c)).await);
    let _pub2 = patient.peer.start_publishing(2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(health(&server).await["billing_queue"].as_u64() > Some(0));

    // Back: the queue drains.
    db.start();
    wait_health(&server, |h| h["status"] == "ok" && h["billing_queue"] == 0).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let live = billing.live_billable_ms(c).expect("live clock");
    doctor.send(ClientMessage::EndConsultation);
    let ended_at = now_ms();
    patient
        .expect(T, |m| matches!(m, ServerMessage::ConsultationEnded))
        .await
        .expect("ended");

    let summary = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = store.consultation_summary(c).await
                && s.end.is_some()
            {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline, "no final summary");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
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
    let mut audit = store.export_audit(0, i64::MAX);
    let mut admissions = 0;
    while let Some(e) = futures_util::StreamExt::next(&mut audit).await {
        if e.expect("audit").action == "participant.admit" {
            admissions += 1;
        }
    }
    assert_eq!(admissions, 1);
}
