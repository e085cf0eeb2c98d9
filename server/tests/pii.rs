//! Health data never reaches the logs: no token, no seat secret, no participant name or
//! invitation label, at the most verbose level,
//! through a whole consultation (join, waiting, admit, media, mute, bad input, leave, end).

mod common;

use common::{T, TestServer, admit, eventually};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teleconsult::protocol::{ClientMessage, MediaKind, ServerMessage};
use teleconsult::token::Role;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tokens_or_names_in_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    // The server's own filter, asked for everything (as an operator debugging might).
    tracing_subscriber::fmt()
        .with_env_filter(teleconsult::telemetry::log_filter("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = TestServer::start().await;
    let doctor_token = server
        .token("c-pii", "Dr Gregory Housename", Role::Practitioner)
        .await;
    let patient_token = server
        .token("c-pii", "Patience Privatename", Role::Patient)
        .await;
    let mut doctor =
        teleconsult_loadtest::participant::Participant::join(&server.ws_url(), &doctor_token)
            .await
            .unwrap();
    let mut patient =
        teleconsult_loadtest::participant::Participant::join(&server.ws_url(), &patient_token)
            .await
            .unwrap();
    admit(&mut doctor, &patient.id).await;
    let _a = doctor.peer.start_publishing(1);
    let _b = patient.peer.start_publishing(2);
    assert!(
        eventually(Duration::from_secs(20), || !patient
            .peer
            .received()
            .is_empty())
        .await,
        "media flows"
    );
    patient.send(ClientMessage::Mute {
        kind: MediaKind::Audio,
        muted: true,
    });
    patient.send(ClientMessage::Answer {
        sdp: format!("v=0 {patient_token}"),
    });
    patient
        .expect(T, |m| matches!(m, ServerMessage::Error { .. }))
        .await
        .unwrap();
    // A second join attempt with a tampered token.
    let tampered = format!("{patient_token}x");
    assert!(
        teleconsult_loadtest::participant::Participant::join(&server.ws_url(), &tampered)
            .await
            .is_err()
    );
    doctor.send(ClientMessage::EndConsultation);
    patient
        .expect(T, |m| *m == ServerMessage::ConsultationEnded)
        .await
        .unwrap();
    // Everything that happens after the end has had its chance to log: both sessions closed by
    // the server, the summary (practitioner's name in it) stored, then a later event through
    // the same billing writer stored too (it applies events in order), and the server shut down.
    assert!(
        eventually(T, || doctor.close_code().is_some()
            && patient.close_code().is_some())
        .await,
        "the server closes both sessions at the end"
    );
    let store = server.server.state.store.clone();
    common::poll(T, "the consultation's summary with its end", || async {
        store
            .consultation_summary("c-pii")
            .await
            .ok()
            .flatten()
            .filter(|s| s.end.is_some())
    })
    .await;
    server
        .server
        .state
        .billing
        .audit("test.barrier", "test", None, None);
    common::poll(T, "the barrier audit event", || async {
        let mut audit = store.export_audit(0, i64::MAX);
        while let Some(e) = futures_util::StreamExt::next(&mut audit).await {
            if e.ok()?.action == "test.barrier" {
                return Some(());
            }
        }
        None
    })
    .await;
    server.shutdown().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(logs.contains("joined"), "the capture works: {logs}");
    let seat_secret = patient
        .seat_secret
        .clone()
        .expect("the patient got a seat secret");
    for secret in [
        seat_secret.as_str(),
        doctor_token.as_str(),
        patient_token.as_str(),
        // The signature half alone must not leak either.
        patient_token.split_once('.').unwrap().1,
        "Gregory",
        "Housename",
        "Patience",
        "Privatename",
    ] {
        let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{secret:?} leaked into the logs: {leaks:#?}"
        );
    }
}
