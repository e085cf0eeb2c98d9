//! Recording with consent over the real signalling (issue 13), on both storage backends: the
//! policy comes from the consultation's record (API v1 and the CLI's invitation), a practitioner
//! asks, each participant is asked and answers, everyone is told what is recorded, the journal
//! appears in `storage.data_dir/recordings` and closes on stop, each step is audited; a
//! `standard` or `end_to_end` consultation refuses a recording, patients cannot start one. Media is proven by the browser test
//! (`web-client/tests/recording.test.mjs`).

mod common;

use common::{T, TestServer, admit, sign_token, wait_admitted};
use teleconsult::config::{Config, ExposeSecret};
use teleconsult::protocol::{ClientMessage, ErrorCode, Policy, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;

async fn server(mongo: bool) -> Option<TestServer> {
    let mut config = Config::for_tests();
    if mongo {
        config.storage.mongodb_uri = common::mongo_uri()?.into();
        config.storage.database = format!("rec_{:08x}", rand::random::<u32>());
    }
    Some(TestServer::start_with(config).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_over_signalling_sqlite() {
    consent_over_signalling(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_over_signalling_mongo() {
    consent_over_signalling(true).await;
}

/// A patient link to a new consultation of `policy` (the CLI's path), or the refusal.
async fn invitation(
    s: &TestServer,
    consultation: &str,
    policy: Policy,
) -> Result<String, teleconsult::invite::InviteError> {
    common::invite_with_policy(
        &*s.server.state.store,
        &s.config,
        consultation,
        "Pat",
        Role::Patient,
        Some(policy),
        "acct-rec",
    )
    .await
}

async fn call(s: &TestServer, consultation: &str, policy: Policy) -> (Participant, Participant) {
    let patient_token = invitation(s, consultation, policy).await.expect("invited");
    let mut patient = Participant::join(&s.ws_url(), &patient_token)
        .await
        .expect("patient joins");
    let doctor_token = sign_token(
        s.config.auth.signing_secret.expose_secret().as_bytes(),
        consultation,
        "acct-rec",
        Role::Practitioner,
    );
    let mut doctor = Participant::join(&s.ws_url(), &doctor_token)
        .await
        .expect("practitioner joins");
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    (doctor, patient)
}

async fn recorded(p: &mut Participant, n: usize) -> Option<String> {
    let m = p
        .expect(
            T,
            |m| matches!(m, ServerMessage::RecordingState { recorded, .. } if recorded.len() == n),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: recording_state with {n} recorded: {e}", p.id));
    match m {
        ServerMessage::RecordingState { recording, .. } => recording,
        _ => unreachable!(),
    }
}

async fn error(p: &mut Participant, code: ErrorCode) {
    p.expect(
        T,
        |m| matches!(m, ServerMessage::Error { code: c, .. } if *c == code),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: error {code:?}: {e}", p.id));
}

async fn consent_over_signalling(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    // `end_to_end`: created, and a recording is refused.
    let (mut doctor, _patient) = call(&s, "c-e2e", Policy::EndToEnd).await;
    doctor.send(ClientMessage::RecordingRequest {
        language: Some("en".into()),
    });
    error(&mut doctor, ErrorCode::RecordingNotAllowed).await;
    drop(doctor);

    // A standard consultation: the policy is in `joined`, a recording is refused.
    let (doctor, _patient) = call(&s, "c-standard", Policy::Standard).await;
    let mut doctor = doctor;
    doctor.send(ClientMessage::RecordingRequest {
        language: Some("en".into()),
    });
    error(&mut doctor, ErrorCode::RecordingNotAllowed).await;
    drop(doctor);

    let consultation = "c-recordable";
    let (mut doctor, mut patient) = call(&s, consultation, Policy::Recordable).await;
    // Only a practitioner starts a recording.
    patient.send(ClientMessage::RecordingRequest { language: None });
    error(&mut patient, ErrorCode::Forbidden).await;

    doctor.send(ClientMessage::RecordingRequest {
        language: Some("de".into()),
    });
    let (id, version, texts) = match patient
        .expect(T, |m| matches!(m, ServerMessage::RecordingRequested { .. }))
        .await
        .expect("the patient is asked")
    {
        ServerMessage::RecordingRequested {
            recording,
            text_version,
            texts,
        } => (recording, text_version, texts),
        _ => unreachable!(),
    };
    assert_eq!(
        texts.keys().map(String::as_str).collect::<Vec<_>>(),
        ["de", "en", "fr"]
    );
    assert!(texts["en"].contains("withdraw your consent"));
    // Only the practitioner (who asked) is recorded until the patient answers.
    assert_eq!(
        recorded(&mut patient, 1).await.as_deref(),
        Some(id.as_str())
    );
    let journal = teleconsult::recording::journal_path(&s.config.storage.data_dir, &id)
        .expect("our id names a journal");
    assert!(
        journal.exists(),
        "{} created at the start",
        journal.display()
    );

    // An outdated text is refused; the current one is accepted.
    patient.send(ClientMessage::RecordingConsent {
        recording: id.clone(),
        accept: true,
        text_version: "1999-01-01".into(),
        language: "en".into(),
    });
    error(&mut patient, ErrorCode::ConsentTextOutdated).await;
    patient.send(ClientMessage::RecordingConsent {
        recording: id.clone(),
        accept: true,
        text_version: version.clone(),
        language: "fr".into(),
    });
    recorded(&mut doctor, 2).await;
    // Withdrawn: back to the practitioner alone.
    patient.send(ClientMessage::RecordingConsent {
        recording: id.clone(),
        accept: false,
        text_version: version,
        language: "fr".into(),
    });
    recorded(&mut doctor, 1).await;
    doctor.send(ClientMessage::RecordingStop);
    assert_eq!(recorded(&mut patient, 0).await, None);

    // The journal closes (a `stopped` event), moves into the store and leaves the disk.
    let store = s.server.state.store.clone();
    let stored = common::poll(T, "the journal is stored", || {
        let store = store.clone();
        async move {
            let all = store.recordings(Some(consultation)).await.ok()?;
            all.into_iter().find(|r| !r.interrupted)
        }
    })
    .await;
    assert_eq!(stored.id, id);
    assert!(stored.bytes > 0);
    common::poll(T, "the local journal is removed", || {
        let gone = !journal.exists();
        async move { gone.then_some(()) }
    })
    .await;
    // It exports from the store: the consent record says who agreed to which text.
    let keys = teleconsult::recording::master_keys(&s.config.documents).expect("keys");
    let out = common::temp_dir("rec-export");
    let manifest =
        teleconsult::recording::export(&*store, &s.config.storage.data_dir, &keys, &id, &out)
            .await
            .expect("exports");
    let events = serde_json::to_value(&manifest.events).expect("json");
    let kinds: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [
            "consent_given",
            "consent_given",
            "consent_withdrawn",
            "stopped"
        ]
    );
    let fr =
        teleconsult::consultation::text_sha256(teleconsult::consultation::consent_text("fr").1);
    let de =
        teleconsult::consultation::text_sha256(teleconsult::consultation::consent_text("de").1);
    assert_eq!(events[0]["participant"], doctor.id.as_str());
    assert_eq!(
        events[0]["text_sha256"],
        de.as_str(),
        "the practitioner asked in German"
    );
    assert_eq!(events[1]["participant"], patient.id.as_str());
    assert_eq!(
        events[1]["text_sha256"],
        fr.as_str(),
        "the patient read the French text"
    );

    // Every step is audited (the audit writer is asynchronous).
    let store = &*s.server.state.store;
    for (action, n) in [
        ("recording.request", 1),
        ("recording.start", 1),
        ("recording.consent", 2),
        ("recording.withdraw", 1),
        ("recording.stop", 1),
    ] {
        common::poll(T, action, || async move {
            (common::audit_count(store, action).await == n).then_some(())
        })
        .await;
    }
    drop((doctor, patient));
    s.shutdown().await;
}

/// A journal left on disk by a crash (its writer never stopped) is stored at the next start,
/// as interrupted, up to its last synced chunk, and leaves the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_left_by_a_crash_is_recovered_into_the_store() {
    use std::time::{Duration, Instant};
    use teleconsult_recording::journal::{Header, Kind, TrackInfo};
    let s = TestServer::start().await;
    let data_dir = s.config.storage.data_dir.clone();
    let keys = teleconsult::recording::master_keys(&s.config.documents).expect("keys");
    let id = "rec_0123456789abcdef";
    let path = teleconsult::recording::journal_path(&data_dir, id).expect("path");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let key = teleconsult_recording::RecordingKey::generate();
    let header = Header {
        recording: id.into(),
        consultation: "c-crashed".into(),
        created_ms: 1_700_000_000_000,
        key: keys[0].wrap(&key, id),
    };
    let epoch = Instant::now();
    let rec = teleconsult_recording::Recording::start(
        &path,
        &header,
        key,
        teleconsult_recording::RecorderConfig {
            queue: 1024,
            sync_interval: Duration::from_millis(50),
        },
        epoch,
    )
    .unwrap();
    let tap = rec.add_track(TrackInfo {
        participant: "p1".into(),
        pseudonym: "Pat".into(),
        kind: Kind::Audio,
        codec: "opus".into(),
        clock_rate: 48_000,
        label: "microphone".into(),
    });
    rec.give_consent(epoch, "p1", "v", "h");
    for i in 0..50u16 {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&i.to_be_bytes());
        p.extend_from_slice(&(u32::from(i) * 960).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 7, 0xF8, 0xFF, 0xFE]);
        assert!(tap.rtp(epoch + Duration::from_millis(20 * u64::from(i)), &p));
    }
    // Synced, then "killed": the writer thread is leaked with the journal open, never stopped.
    common::poll(T, "a synced chunk", || {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        async move { (len > 200).then_some(()) }
    })
    .await;
    std::mem::forget(rec);
    let n = teleconsult::recording::recover(&*s.server.state.store, &data_dir, &keys).await;
    assert_eq!(n, 1);
    let stored = s
        .server
        .state
        .store
        .recording(id)
        .await
        .expect("read")
        .expect("stored");
    assert!(stored.interrupted, "no stopped event: interrupted");
    assert_eq!(stored.consultation, "c-crashed");
    assert!(!path.exists(), "moved off the disk");
    s.shutdown().await;
}

/// Retention: a stored recording older than `recording.retention_days` is deleted, audited as
/// `recording.delete` by `system`; a younger one stays; 0 days keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_recordings_and_audits_it() {
    use futures_util::StreamExt;
    let s = TestServer::start().await;
    let store = s.server.state.store.clone();
    let day = 86_400_000i64;
    let now = teleconsult::consultation::invitation::now_millis();
    for (id, age_days) in [("rec_01d", 1), ("rec_91d", 91)] {
        let record = teleconsult_store::RecordingRecord {
            id: id.into(),
            consultation: "c-retained".into(),
            created_at: now - age_days * day,
            stored_at: now - age_days * day,
            bytes: 3,
            duration_ms: 1000,
            interrupted: false,
        };
        let body = futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(b"abc"))]).boxed();
        store.put_recording(&record, body).await.expect("stored");
    }
    let days = |d: u64| teleconsult::config::RecordingConfig {
        retention_days: d,
        ..Default::default()
    };
    assert_eq!(
        teleconsult::recording::apply_retention(&*store, &days(0), now)
            .await
            .expect("runs"),
        0,
        "0 days keeps everything"
    );
    assert_eq!(
        teleconsult::recording::apply_retention(&*store, &days(90), now)
            .await
            .expect("runs"),
        1
    );
    let left: Vec<String> = store
        .recordings(Some("c-retained"))
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, ["rec_01d"]);
    assert_eq!(common::audit_count(&*store, "recording.delete").await, 1);
    s.shutdown().await;
}

/// Retention per organisation: `recording.retention_days_by_organisation` overrides the
/// server's period for that organisation's consultations only (shorter, or 0: kept), found
/// through the consultation's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_per_organisation_overrides_the_servers_period() {
    use futures_util::StreamExt;
    let s = TestServer::start().await;
    let store = s.server.state.store.clone();
    let day = 86_400_000i64;
    let now = teleconsult::consultation::invitation::now_millis();
    // Three organisations' consultations (the CLI's path records each one's organisation).
    for (consultation, organisation) in [
        ("c-short", "org-short"),
        ("c-keep", "org-keep"),
        ("c-default", "org-default"),
    ] {
        teleconsult::invite::invite(
            &*store,
            &s.config,
            teleconsult::invite::InviteRequest {
                consultation,
                role: Role::Patient,
                label: "Pat",
                scheduled_at: None,
                organisation: Some(organisation),
                practitioner: Some("acct-ret"),
                policy: Some(Policy::Recordable),
            },
            now,
        )
        .await
        .expect("invited");
    }
    for (id, consultation, age_days) in [
        ("rec_0005", "c-short", 5),
        ("rec_0001", "c-short", 1),
        ("rec_0400", "c-keep", 400),
        ("rec_0040", "c-default", 40),
        ("rec_0100", "c-default", 100),
    ] {
        let record = teleconsult_store::RecordingRecord {
            id: id.into(),
            consultation: consultation.into(),
            created_at: now - age_days * day,
            stored_at: now - age_days * day,
            bytes: 3,
            duration_ms: 1000,
            interrupted: false,
        };
        let body = futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(b"abc"))]).boxed();
        store.put_recording(&record, body).await.expect("stored");
    }
    let config = teleconsult::config::RecordingConfig {
        retention_days: 90,
        retention_days_by_organisation: [("org-short".to_string(), 3), ("org-keep".to_string(), 0)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        teleconsult::recording::apply_retention(&*store, &config, now)
            .await
            .expect("runs"),
        2
    );
    let mut left: Vec<String> = store
        .recordings(None)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    left.sort();
    assert_eq!(left, ["rec_0001", "rec_0040", "rec_0400"]);
    assert_eq!(common::audit_count(&*store, "recording.delete").await, 2);
    s.shutdown().await;
}
