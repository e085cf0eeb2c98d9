//! Invitations instead of bearer identities (issue 9), end to end through the real server and
//! WebSocket, on both storage backends (embedded SQLite, and MongoDB: FerretDB in CI through
//! `TELECONSULT_TEST_MONGODB_URI`): revoked, expired, not-yet-valid and cancelled links, key
//! rotation, forged and tampered links, the same tab resuming its seat with its secret, a
//! second device waiting until admitted, and a removed participant's link being spent.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{T, TestServer, admit, invite_token, jti_of, poll, rejoin, sign_token, wait_admitted};
use futures_util::{SinkExt, StreamExt};
use teleconsult::config::{Config, ExposeSecret, PreviousSigningKey};
use teleconsult::consultation::Keyring;
use teleconsult::consultation::invitation::{now_millis, sign_link};
use teleconsult::protocol::{ClientMessage, ParticipantState, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::{JoinOptions, Participant};
use teleconsult_store::{Invitation, Pseudonym, Store};
use tokio_tungstenite::tungstenite::Message;

/// A server on the backend `mongo` names: SQLite in a temp dir, or a database of its own.
async fn server(mongo: bool, configure: impl FnOnce(&mut Config)) -> Option<TestServer> {
    let mut config = Config::for_tests();
    if mongo {
        let uri = common::mongo_uri()?;
        config.storage.mongodb_uri = uri.into();
        config.storage.database = format!("inv_{:08x}", rand::random::<u32>());
    }
    configure(&mut config);
    Some(TestServer::start_with(config).await)
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(false).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(true).await;
                }
            )*
        }
    };
}

both_backends!(
    revoked_link_closes_4401_revoked,
    expired_and_not_yet_valid_links_close_4401,
    cancelled_consultation_closes_4401_cancelled,
    rotated_signing_key_old_kid_verifies_unknown_kid_refused,
    forged_tampered_and_patient_bearer_tokens_are_refused,
    same_tab_resumes_its_seat_with_its_secret,
    second_device_waits_and_replaces_the_first_only_when_admitted,
    removed_participant_cannot_rejoin_with_the_same_link,
);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Send `join` with `token` on a fresh socket: the first message, or the close (code, reason).
async fn try_join(server: &TestServer, token: &str) -> Result<ServerMessage, (u16, String)> {
    let (mut ws, _): (Ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("connects");
    let join = serde_json::json!({"type": "join", "token": token, "protocol": 1});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .expect("sends");
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("answer") {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("protocol")),
            Some(Ok(Message::Close(f))) => {
                return Err(f
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new())));
            }
            Some(Ok(_)) => continue,
            other => return Err((1006, format!("{other:?}"))),
        }
    }
}

fn refused(reason: &str) -> Result<ServerMessage, (u16, String)> {
    Err((4401, reason.to_string()))
}

fn store(s: &TestServer) -> &dyn Store {
    &*s.server.state.store
}

async fn practitioner(s: &TestServer, c: &str) -> Participant {
    s.join(c, "acct-dr", Role::Practitioner).await
}

async fn revoked_link_closes_4401_revoked(mongo: bool) {
    let Some(s) = server(mongo, |_| {}).await else {
        return;
    };
    let c = "c-revoke";
    let kept = s.token(c, "Keeps her link", Role::Patient).await;
    let token = s.token(c, "Loses his link", Role::Patient).await;
    store(&s)
        .revoke_invitation(&jti_of(&token), now_millis())
        .await
        .unwrap();
    assert_eq!(try_join(&s, &token).await, refused("revoked"));
    // Only that link: the other seat of the consultation still joins (and waits).
    assert!(matches!(
        try_join(&s, &kept).await,
        Ok(ServerMessage::Joined { you, .. }) if you.state == ParticipantState::Waiting
    ));
    // A well-signed link naming no invitation at all is refused the same way.
    let keyring = s.config.keyring().unwrap();
    let ghost = sign_link(&keyring, "no-such-jti", c, Role::Patient, 1, u64::MAX / 2);
    assert_eq!(try_join(&s, &ghost).await, refused("revoked"));
    s.shutdown().await;
}

async fn expired_and_not_yet_valid_links_close_4401(mongo: bool) {
    let Some(s) = server(mongo, |_| {}).await else {
        return;
    };
    let c = "c-window";
    // Create the consultation through a first invitation.
    let _ = s.token(c, "First", Role::Patient).await;
    let keyring = s.config.keyring().unwrap();
    let now = now_millis();
    let secs = |ms: i64| u64::try_from(ms / 1000).unwrap();
    let record = |jti: &str, not_before: i64, expires: i64| Invitation {
        jti: jti.into(),
        consultation: c.into(),
        role: "patient".into(),
        pseudonym: Pseudonym::new("Window"),
        not_before,
        expires,
        revoked_at: None,
        created_at: now,
    };
    // The link itself has expired.
    store(&s)
        .upsert_invitation(&record("old", now - 7_200_000, now - 3_600_000))
        .await
        .unwrap();
    let old = sign_link(
        &keyring,
        "old",
        c,
        Role::Patient,
        secs(now - 7_200_000),
        secs(now - 3_600_000),
    );
    assert_eq!(try_join(&s, &old).await, refused("expired"));
    // The link would still be valid, but its record was shortened: the record decides.
    store(&s)
        .upsert_invitation(&record("cut", now - 7_200_000, now - 1_000))
        .await
        .unwrap();
    let cut = sign_link(
        &keyring,
        "cut",
        c,
        Role::Patient,
        secs(now - 7_200_000),
        secs(now + 3_600_000),
    );
    assert_eq!(try_join(&s, &cut).await, refused("expired"));
    // Not yet open (a consultation scheduled tomorrow).
    store(&s)
        .upsert_invitation(&record("soon", now + 86_400_000, now + 90_000_000))
        .await
        .unwrap();
    let soon = sign_link(
        &keyring,
        "soon",
        c,
        Role::Patient,
        secs(now + 86_400_000),
        secs(now + 90_000_000),
    );
    assert_eq!(try_join(&s, &soon).await, refused("not_yet_valid"));
    s.shutdown().await;
}

async fn cancelled_consultation_closes_4401_cancelled(mongo: bool) {
    let Some(s) = server(mongo, |_| {}).await else {
        return;
    };
    let c = "c-cancel";
    let patient = s.token(c, "Pat", Role::Patient).await;
    let guest = s.token(c, "Interpreter", Role::Guest).await;
    // Someone is already waiting when the practitioner cancels.
    let mut early = Participant::join(&s.ws_url(), &patient).await.unwrap();
    let n = store(&s)
        .cancel_consultation(c, now_millis())
        .await
        .unwrap();
    assert_eq!(n, 2, "every invitation revoked");
    // What the workspace does with it: the live consultation ends for everyone in it.
    assert!(s.server.state.consultations.cancel(&c.into()));
    early
        .expect(T, |m| matches!(m, ServerMessage::ConsultationEnded))
        .await
        .expect("the waiting patient is told it ended");
    for token in [&patient, &guest] {
        assert_eq!(try_join(&s, token).await, refused("cancelled"));
    }
    // No new invitation for a cancelled consultation.
    let err = teleconsult::invite::invite(
        store(&s),
        &s.config,
        teleconsult::invite::InviteRequest {
            consultation: c,
            role: Role::Patient,
            label: "Late",
            scheduled_at: None,
            organisation: None,
            practitioner: None,
            policy: None,
        },
        now_millis(),
    )
    .await
    .expect_err("cancelled");
    assert!(err.to_string().contains("cancelled"), "{err}");
    s.shutdown().await;
}

const OLD_KEY: &str = "the-retired-link-signing-key-0123456789";
const NEW_KEY: &str = "the-current-link-signing-key-9876543210";

async fn rotated_signing_key_old_kid_verifies_unknown_kid_refused(mongo: bool) {
    let Some(s) = server(mongo, |c| {
        c.auth.signing_secret = NEW_KEY.into();
        c.auth.signing_key_id = "k2".into();
        c.auth.previous_signing_keys = vec![PreviousSigningKey {
            id: "k1".into(),
            key: OLD_KEY.into(),
        }];
    })
    .await
    else {
        return;
    };
    let c = "c-rotate";
    // Issued before the rotation: signed by k1.
    let before = Keyring::new(("k1", OLD_KEY.as_bytes()), &[]).unwrap();
    let mut old_config = s.config.clone();
    old_config.auth.signing_secret = OLD_KEY.into();
    old_config.auth.signing_key_id = "k1".into();
    old_config.auth.previous_signing_keys = Vec::new();
    let old_link = invite_token(store(&s), &old_config, c, "Before", Role::Patient).await;
    assert!(matches!(
        try_join(&s, &old_link).await,
        Ok(ServerMessage::Joined { .. })
    ));
    // New links carry k2 and verify too.
    let new_link = s.token(c, "After", Role::Patient).await;
    let body = new_link.split('.').next().unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    assert_eq!(claims["kid"], "k2");
    assert!(matches!(
        try_join(&s, &new_link).await,
        Ok(ServerMessage::Joined { .. })
    ));
    // An unknown kid, and a known kid with another key behind it, are bad signatures.
    let jti = jti_of(&old_link);
    let unknown = Keyring::new(("k9", OLD_KEY.as_bytes()), &[]).unwrap();
    let impostor = Keyring::new(("k1", b"someone-elses-key-someone-elses-key!"), &[]).unwrap();
    for ring in [&unknown, &impostor] {
        let link = sign_link(ring, &jti, c, Role::Patient, 1, u64::MAX / 2);
        assert_eq!(try_join(&s, &link).await, refused("bad_signature"));
    }
    drop(before);
    s.shutdown().await;
}

async fn forged_tampered_and_patient_bearer_tokens_are_refused(mongo: bool) {
    let Some(s) = server(mongo, |_| {}).await else {
        return;
    };
    let c = "c-forge";
    let link = s.token(c, "Pat", Role::Patient).await;
    let (body, sig) = link.split_once('.').unwrap();
    // Tampered: the claims changed (a guest seat made a patient one), the signature kept.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    claims["role"] = "practitioner".into();
    let tampered = format!(
        "{}.{sig}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    assert_eq!(try_join(&s, &tampered).await, refused("bad_signature"));
    // Forged: signed with a key the server does not have, under its kid.
    let forger = Keyring::new(("k1", b"forger-forger-forger-forger-forger!!"), &[]).unwrap();
    let forged = sign_link(&forger, &jti_of(&link), c, Role::Patient, 1, u64::MAX / 2);
    assert_eq!(try_join(&s, &forged).await, refused("bad_signature"));
    // Garbage, truncated, or a practitioner seat in a link: malformed.
    let keyring = s.config.keyring().unwrap();
    let practitioner_link = sign_link(&keyring, "j", c, Role::Practitioner, 1, u64::MAX / 2);
    for junk in ["x", &link[..link.len() / 2], practitioner_link.as_str()] {
        assert_eq!(try_join(&s, junk).await, refused("malformed"), "{junk:.12}");
    }
    // An empty token asks for a login session (tests/workspace.rs): none here.
    assert_eq!(try_join(&s, "").await, refused("not_signed_in"));
    // The old bearer identity for a patient (version-1 token) no longer admits anyone.
    let bearer = sign_token(
        s.config.auth.signing_secret.expose_secret().as_bytes(),
        c,
        "Pat",
        Role::Patient,
    );
    assert_eq!(try_join(&s, &bearer).await, refused("revoked"));
    s.shutdown().await;
}

fn joined_state(p: &Participant) -> ParticipantState {
    p.history
        .lock()
        .unwrap()
        .iter()
        .find_map(|m| match m {
            ServerMessage::Joined { you, .. } => Some(you.state),
            _ => None,
        })
        .expect("joined")
}

async fn same_tab_resumes_its_seat_with_its_secret(mongo: bool) {
    let Some(s) = server(mongo, |_| {}).await else {
        return;
    };
    let c = "c-resume";
    let mut doctor = practitioner(&s, c).await;
    let token = s.token(c, "Pat Resume", Role::Patient).await;
    let mut patient = Participant::join(&s.ws_url(), &token).await.unwrap();
    assert!(
        patient.seat_secret.is_some(),
        "the first join gives a secret"
    );
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    patient.drop_connection().await;
    let back = rejoin(&s.ws_url(), &token, &patient).await;
    assert_eq!(back.id, patient.id, "the same seat, the same participant");
    assert_eq!(joined_state(&back), ParticipantState::Admitted);
    s.shutdown().await;
}

async fn second_device_waits_and_replaces_the_first_only_when_admitted(mongo: bool) {
    let Some(s) = server(mongo, |_| {}).await else {
        return;
    };
    let c = "c-second";
    let mut doctor = practitioner(&s, c).await;
    let token = s.token(c, "Pat Twice", Role::Patient).await;
    let mut first = Participant::join(&s.ws_url(), &token).await.unwrap();
    admit(&mut doctor, &first.id).await;
    wait_admitted(&mut first).await;
    // The forwarded link on another device (no secret, or somebody else's).
    let mut second = Participant::join_with(
        &s.ws_url(),
        &token,
        JoinOptions {
            seat_secret: Some("not-the-secret".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(joined_state(&second), ParticipantState::Waiting);
    let second_id = second.id.clone();
    doctor
        .expect(T, |m| {
            matches!(m, ServerMessage::WaitingList { participants }
                if participants.iter().any(|p| p.id.as_str() == second_id
                    && p.second_device && p.display_name == "Pat Twice"))
        })
        .await
        .expect("the practitioner sees a second device for the label");
    // The first is still in the call.
    assert_eq!(first.close_code(), None);
    assert_eq!(
        s.server.state.consultations.participant_state(c, &first.id),
        Some(ParticipantState::Admitted)
    );
    // Admitted: the first is disconnected with a reason, the second is in.
    doctor.send(ClientMessage::Admit {
        participant: second.id.clone().into(),
    });
    wait_admitted(&mut second).await;
    poll(T, "the first device closed", || async {
        first.close_code()
    })
    .await;
    assert_eq!(
        first.close_code(),
        Some((4000, "moved_to_another_device".to_string()))
    );
    s.shutdown().await;
}

async fn removed_participant_cannot_rejoin_with_the_same_link(mongo: bool) {
    let Some(s) = server(mongo, |_| {}).await else {
        return;
    };
    let c = "c-removed";
    let mut doctor = practitioner(&s, c).await;
    let token = s.token(c, "Pat Removed", Role::Patient).await;
    let mut patient = Participant::join(&s.ws_url(), &token).await.unwrap();
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    doctor.send(ClientMessage::Remove {
        participant: patient.id.clone().into(),
    });
    patient
        .expect(T, |m| matches!(m, ServerMessage::Removed))
        .await
        .expect("removed");
    poll(T, "the patient closed", || async { patient.close_code() }).await;
    // Not with the same tab's secret, not from another device.
    let again = Participant::join_with(
        &s.ws_url(),
        &token,
        JoinOptions {
            seat_secret: patient.seat_secret.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(again.is_err(), "refused");
    assert_eq!(try_join(&s, &token).await, refused("revoked"));
    // The revocation is in the store (it outlives this process).
    let jti = jti_of(&token);
    poll(T, "the invitation revoked in the store", || async {
        store(&s)
            .invitation(&jti)
            .await
            .unwrap()
            .and_then(|i| i.revoked_at)
    })
    .await;
    s.shutdown().await;
}
