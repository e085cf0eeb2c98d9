//! Crash recovery: the real `teleconsult` binary runs a consultation, is killed with SIGKILL
//! mid-consultation, and restarts. The open billing interval must come back closed at its last
//! checkpoint (within one checkpoint interval of the kill), marked `recovered`, and nothing
//! stored before the crash may be lost. Against the embedded store, and against MongoDB
//! (FerretDB) when `TELECONSULT_TEST_MONGODB_URI` is set (scripts/test always sets it).

mod common;

use common::{T, admit, http_get};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use teleconsult::billing::now_ms;
use teleconsult::protocol::ServerMessage;
use teleconsult::token::{self, Claims, Role};
use teleconsult_loadtest::participant::Participant;
use teleconsult_store::Store;

const CHECKPOINT_MS: i64 = 1000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `teleconsult serve --dev` with its store in `dir` (or MongoDB), checkpoints every second.
async fn start(dir: &Path, mongodb: Option<(&str, &str)>, log: &str) -> Server {
    let port = free_port();
    let config = dir.join("teleconsult.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nport = {port}\n\n[media]\nudp_port = {}\n\n[storage]\ndata_dir = {:?}\n\n[billing]\ncheckpoint_secs = 1\n",
            free_udp_port(),
            dir.join("data").display().to_string()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_teleconsult"));
    cmd.args(["serve", "--dev", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).expect("log file"));
    if let Some((uri, db)) = mongodb {
        cmd.env("TELECONSULT_STORAGE__MONGODB_URI", uri)
            .env("TELECONSULT_STORAGE__DATABASE", db);
    }
    let child = cmd.spawn().expect("teleconsult starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let server = Server { child, addr };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, _) = http_get(addr, "/healthz", None).await;
            if status == 200 {
                return server;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "teleconsult did not start: {}",
            std::fs::read_to_string(dir.join(log)).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn token(consultation: &str, identity: &str, role: Role) -> String {
    token::sign(
        teleconsult::config::DEV_SIGNING_SECRET.as_bytes(),
        &Claims {
            consultation: consultation.into(),
            identity: identity.into(),
            role,
            exp: token::unix_now() + 3600,
        },
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "teleconsult-crash-{name}-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn crash_and_recover(dir: &Path, mongodb: Option<(&str, &str)>) {
    let store_dir = dir.join("data");
    let open_store = || async {
        let (uri, db) = mongodb.unwrap_or(("", "teleconsult"));
        teleconsult_store::open(uri, db, &store_dir)
            .await
            .expect("store opens")
    };
    let c = "c-crash";
    let server = start(dir, mongodb, "first.log").await;
    let ws = format!("ws://{}/ws", server.addr);
    let mut doctor = Participant::join(&ws, &token(c, "Dr Crash", Role::Practitioner))
        .await
        .expect("doctor joins");
    let patient_token = token(c, "Pat Crash", Role::Patient);
    let mut patient = Participant::join(&ws, &patient_token)
        .await
        .expect("patient joins");
    admit(&mut doctor, &patient.id).await;
    patient
        .expect(T, |m| matches!(m, ServerMessage::Admitted { .. }))
        .await
        .expect("admitted");

    // A first stretch closed normally (the patient's network drops and comes back), so there is
    // something stored before the crash that must survive it unchanged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    patient.drop_connection().await;
    doctor
        .expect(T, |m| {
            matches!(m, ServerMessage::ParticipantState { state, .. }
                if *state == teleconsult::protocol::ParticipantState::Reconnecting)
        })
        .await
        .expect("reconnecting");
    let store: Arc<dyn Store> = open_store().await;
    let first = {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let closed: Vec<_> = store
                .billing_intervals(c)
                .await
                .expect("read")
                .into_iter()
                .filter(|b| b.end.is_some())
                .collect();
            if closed.len() == 1 {
                break closed[0].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "first interval never closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _patient = Participant::join(&ws, &patient_token)
        .await
        .expect("patient rejoins");

    // The second stretch runs past a few checkpoints.
    let open = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let open: Vec<_> = store
                .open_billing_intervals()
                .await
                .expect("read")
                .into_iter()
                .filter(|b| b.consultation == c)
                .collect();
            if let [b] = open.as_slice()
                && b.checkpoint >= b.start + 3 * CHECKPOINT_MS
            {
                break b.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no checkpointed open interval: {open:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let summary_before = store.consultation_summary(c).await.expect("read");
    assert!(summary_before.as_ref().is_some_and(|s| s.end.is_none()));

    // kill -9.
    let mut server = server;
    let killed_at = now_ms();
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    drop(server);
    drop(doctor);

    // Restart on the same store: recovery runs before it serves.
    let restarted = start(dir, mongodb, "second.log").await;
    let mut intervals = store.billing_intervals(c).await.expect("read");
    intervals.sort_by_key(|b| b.start);
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    assert_eq!(
        intervals[0], first,
        "the interval closed before the crash is unchanged"
    );
    let recovered = &intervals[1];
    assert_eq!(recovered.id, open.id);
    assert!(recovered.recovered, "{recovered:?}");
    assert_eq!(
        recovered.end,
        Some(recovered.checkpoint),
        "closed at its last checkpoint"
    );
    let end = recovered.end.expect("closed");
    assert!(
        end >= open.checkpoint,
        "checkpoints seen before the kill are kept"
    );
    assert!(end <= killed_at);
    // Checkpoints run every second; allow one more for the writer's latency on a busy machine.
    assert!(
        killed_at - end <= 2 * CHECKPOINT_MS,
        "lost {} ms (checkpoint every {CHECKPOINT_MS} ms)",
        killed_at - end
    );
    // Presence: every open stretch closed and marked recovered, the earlier ones untouched.
    let presence = store.presence_intervals(c).await.expect("read");
    assert!(presence.iter().all(|p| p.end.is_some()), "{presence:?}");
    assert_eq!(presence.iter().filter(|p| p.recovered).count(), 2);
    assert_eq!(presence.iter().filter(|p| !p.recovered).count(), 1);
    // The summary adds up and says it was recovered.
    let summary = store
        .consultation_summary(c)
        .await
        .expect("read")
        .expect("summary");
    assert!(summary.recovered);
    assert_eq!(
        summary.billable_ms,
        (first.end.expect("closed") - first.start) + (end - recovered.start)
    );
    assert_eq!(summary.end, Some(end));
    assert_eq!(summary.participants, 2);
    // The audit log kept the admission.
    let mut audit = store.export_audit(0, i64::MAX);
    let mut admissions = 0;
    while let Some(e) = futures_util::StreamExt::next(&mut audit).await {
        if e.expect("audit").action == "participant.admit" {
            admissions += 1;
        }
    }
    assert_eq!(admissions, 1);
    // A second restart changes nothing (recovery is idempotent).
    drop(restarted);
    let _again = start(dir, mongodb, "third.log").await;
    let mut after = store.billing_intervals(c).await.expect("read");
    after.sort_by_key(|b| b.start);
    assert_eq!(after, intervals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_consultation_embedded_store() {
    let dir = temp_dir("embedded");
    crash_and_recover(&dir, None).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_consultation_mongodb() {
    // Fails in CI when unset; a developer without FerretDB runs the embedded half only.
    let Some(uri) = common::mongo_uri() else {
        return;
    };
    let dir = temp_dir("mongodb");
    let db = format!("crash_{:x}", rand_suffix());
    crash_and_recover(&dir, Some((&uri, &db))).await;
    let _ = std::fs::remove_dir_all(dir);
}
