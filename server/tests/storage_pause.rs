//! MongoDB (FerretDB) paused with SIGSTOP mid-consultation (issue 15, faults): unlike a stopped
//! server, a paused one keeps its connections open and answers nothing, so only timeouts end
//! the waits. No request handler hangs past its timeout, media keeps flowing, billing writes are
//! queued and retried once it resumes, and nothing is lost or counted twice.
//!
//! The pause lasts until every check below has run while paused (about ten seconds here, well
//! past the store's timeouts: 3 s to select a server, 5 s per billing write); a 30 s pause
//! proves nothing more, since nothing waits longer than those timeouts.
//!
//! Needs FerretDB (`scripts/ferretdb`), like `storage_outage.rs`; starts its own instance.

mod common;

use common::{
    FerretDb, T, TestServer, admit, bearer, eventually, health, poll, request, summary_when,
    wait_admitted, wait_health,
};
use std::time::Duration;
use teleconsult::config::Config;
use teleconsult::protocol::{ClientMessage, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;

fn video_from(p: &Participant, from: &str) -> usize {
    p.peer
        .received()
        .get(from)
        .map_or(0, |r| r.distinct_video())
}

/// Resumes the database however the test ends.
struct Resume<'a>(&'a FerretDb);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_paused_no_handler_hangs_media_flows_billing_retried() {
    if common::mongo_uri().is_none() {
        return;
    }
    let (db, uri) = FerretDb::start("pause");
    let mut config = Config::for_tests();
    config.storage.mongodb_uri = uri.into();
    config.storage.database = format!("pause_{:08x}", rand::random::<u32>());
    config.billing.checkpoint_secs = 1;
    config.server.request_timeout_secs = 5;
    let server = TestServer::start_with(config).await;
    let billing = server.server.state.billing.clone();
    let store = server.server.state.store.clone();
    let c = "c-pause";

    let mut doctor = server.join(c, "acct-pause", Role::Practitioner).await;
    let doctor_token = server.token(c, "acct-pause", Role::Practitioner).await;
    let patient_token = server.token(c, "Pat Pause", Role::Patient).await;
    let mut patient = Participant::join(&server.ws_url(), &patient_token)
        .await
        .expect("join");
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    let _pub = patient.peer.start_publishing(1);
    let pid = patient.id.clone();
    assert!(eventually(Duration::from_secs(20), || video_from(&doctor, &pid) > 10).await);
    poll(T, "a stored checkpoint of the running interval", || async {
        let open = store.open_billing_intervals().await.ok()?;
        open.iter()
            .any(|b| b.consultation == c && b.checkpoint > b.start)
            .then_some(())
    })
    .await;

    // Paused.
    db.signal("STOP");
    let resume = Resume(&db);
    // A request that needs the database is answered, not left hanging (an error is fine).
    let documents = format!("/api/consultations/{c}/documents");
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        request(
            server.http_addr,
            "GET",
            &documents,
            &[bearer(&doctor_token)],
            Vec::new(),
        ),
    )
    .await
    .expect("the documents request hangs while the database is paused");
    println!("documents request while paused: {}", answered.status);
    assert!(
        [200, 503].contains(&answered.status),
        "answered {}: {}",
        answered.status,
        answered.text()
    );
    // Billing writes time out into the on-disk queue: degraded, with events waiting.
    wait_health(server.http_addr, |h| {
        h["status"] == "degraded" && h["billing_queue"].as_u64() > Some(0)
    })
    .await;
    // Media keeps flowing.
    let before = video_from(&doctor, &pid);
    assert!(
        eventually(T, || video_from(&doctor, &pid) > before + 10).await,
        "media stopped while the database was paused"
    );
    // Signalling too: a chat message goes round.
    doctor.send(ClientMessage::Chat {
        text: "still here".into(),
    });
    patient
        .expect(T, |m| matches!(m, ServerMessage::Chat { .. }))
        .await
        .expect("chat while paused");

    // Resumed: the queue drains, nothing is lost or doubled.
    drop(resume);
    wait_health(server.http_addr, |h| {
        h["status"] == "ok" && h["billing_queue"] == 0
    })
    .await;
    let after = request(
        server.http_addr,
        "GET",
        &documents,
        &[bearer(&doctor_token)],
        Vec::new(),
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert!(billing.is_running(c));
    doctor.send(ClientMessage::EndConsultation);
    patient
        .expect(T, |m| matches!(m, ServerMessage::ConsultationEnded))
        .await
        .expect("ended");
    let summary = summary_when(&*store, c, |s| s.end.is_some()).await;
    let intervals = store.billing_intervals(c).await.expect("read");
    assert_eq!(
        intervals.len(),
        1,
        "one interval, stored once: {intervals:?}"
    );
    let sum: i64 = intervals
        .iter()
        .map(|b| b.end.expect("closed") - b.start)
        .sum();
    assert_eq!(summary.billable_ms, sum, "the summary is the exact sum");
    assert!(!summary.recovered);
    assert_eq!(health(server.http_addr).await["status"], "ok");
}
