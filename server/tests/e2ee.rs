//! End-to-end encryption's key exchange over the real signalling (issue 13): an `end_to_end`
//! consultation is created (the CLI's path); the waiting room neither sends nor receives key
//! messages; only the practitioner sends wrapped keys, to one participant in the call; sizes are
//! bounded; a recording is refused; other policies refuse key messages. The media (frames
//! encrypted in the browsers, ciphertext at the SFU) is proven by `web-client/tests/e2ee.test.mjs`.

mod common;

use common::{T, TestServer, admit, sign_token};
use teleconsult::config::{Config, ExposeSecret};
use teleconsult::protocol::{ClientMessage, ErrorCode, Policy, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;

async fn patient_link(s: &TestServer, consultation: &str, label: &str, policy: Policy) -> String {
    common::invite_with_policy(
        &*s.server.state.store,
        &s.config,
        consultation,
        label,
        Role::Patient,
        Some(policy),
        "acct-e2ee",
    )
    .await
    .expect("an end_to_end consultation is created")
}

async fn practitioner(s: &TestServer, consultation: &str) -> Participant {
    let token = sign_token(
        s.config.auth.signing_secret.expose_secret().as_bytes(),
        consultation,
        "acct-e2ee",
        Role::Practitioner,
    );
    Participant::join(&s.ws_url(), &token)
        .await
        .expect("practitioner joins")
}

async fn error(p: &mut Participant, code: ErrorCode) {
    p.expect(
        T,
        |m| matches!(m, ServerMessage::Error { code: c, .. } if *c == code),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: error {code:?}: {e}", p.id));
}

fn is_key_message(m: &ServerMessage) -> bool {
    matches!(
        m,
        ServerMessage::E2eePublicKey { .. } | ServerMessage::E2eeKey { .. }
    )
}

const DOC_KEY: &str = "BDoctorsP256PublicKey_base64url-0123456789";
const PAT_KEY: &str = "BPatientsP256PublicKey_base64url-9876543210";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_relayed_between_participants_in_the_call_only() {
    let s = TestServer::start_with(Config::for_tests()).await;
    let c = "c-e2ee";
    let link = patient_link(&s, c, "Pat", Policy::EndToEnd).await;
    let mut patient = Participant::join(&s.ws_url(), &link)
        .await
        .expect("patient joins");
    let mut doctor = practitioner(&s, c).await;
    doctor
        .expect(T, |m| {
            matches!(m, ServerMessage::WaitingList { participants } if !participants.is_empty())
        })
        .await
        .expect("the patient waits");
    doctor.send(ClientMessage::E2eePublicKey {
        key: DOC_KEY.into(),
    });
    // The waiting room may not publish, and no key is sent to it.
    patient.send(ClientMessage::E2eePublicKey {
        key: PAT_KEY.into(),
    });
    error(&mut patient, ErrorCode::NotAdmitted).await;
    doctor.send(ClientMessage::E2eeKey {
        participant: patient.id.as_str().into(),
        epoch: 1,
        key: "wrappedForTheWaitingRoom".into(),
    });
    error(&mut doctor, ErrorCode::UnknownParticipant).await;
    // A second patient stays in the waiting room throughout.
    let second = patient_link(&s, c, "Second", Policy::EndToEnd).await;
    let mut waiting = Participant::join(&s.ws_url(), &second)
        .await
        .expect("second patient joins");

    admit(&mut doctor, &patient.id).await;
    // Nothing of the key exchange reached the patient before admission; then the doctor's key.
    patient
        .expect(T, |m| {
            assert!(!is_key_message(m), "sent to the waiting room: {m:?}");
            matches!(m, ServerMessage::Admitted { .. })
        })
        .await
        .expect("admitted");
    let m = patient
        .expect(T, is_key_message)
        .await
        .expect("the practitioner's public key");
    assert_eq!(
        m,
        ServerMessage::E2eePublicKey {
            participant: doctor.id.as_str().into(),
            key: DOC_KEY.into()
        }
    );
    patient.send(ClientMessage::E2eePublicKey {
        key: PAT_KEY.into(),
    });
    let m = doctor
        .expect(T, is_key_message)
        .await
        .expect("patient's key");
    assert_eq!(
        m,
        ServerMessage::E2eePublicKey {
            participant: patient.id.as_str().into(),
            key: PAT_KEY.into()
        }
    );
    doctor.send(ClientMessage::E2eeKey {
        participant: patient.id.as_str().into(),
        epoch: 1,
        key: "wrappedConsultationKey_1".into(),
    });
    let m = patient
        .expect(T, is_key_message)
        .await
        .expect("wrapped key");
    assert_eq!(
        m,
        ServerMessage::E2eeKey {
            from: doctor.id.as_str().into(),
            epoch: 1,
            key: "wrappedConsultationKey_1".into()
        }
    );
    // Only a practitioner sends keys; bad or oversized keys are refused.
    patient.send(ClientMessage::E2eeKey {
        participant: doctor.id.as_str().into(),
        epoch: 2,
        key: "forged".into(),
    });
    error(&mut patient, ErrorCode::Forbidden).await;
    patient.send(ClientMessage::E2eePublicKey {
        key: "A".repeat(teleconsult::consultation::MAX_PUBLIC_KEY_CHARS + 1),
    });
    error(&mut patient, ErrorCode::BadMessage).await;
    doctor.send(ClientMessage::E2eeKey {
        participant: patient.id.as_str().into(),
        epoch: 2,
        key: "not base64url!".into(),
    });
    error(&mut doctor, ErrorCode::BadMessage).await;
    // Recording is refused under end_to_end.
    doctor.send(ClientMessage::RecordingRequest {
        language: Some("en".into()),
    });
    error(&mut doctor, ErrorCode::RecordingNotAllowed).await;
    // The one still waiting was sent none of it (a ping's pong marks the end of what came).
    waiting.send(ClientMessage::Ping);
    waiting
        .expect(T, |m| {
            assert!(!is_key_message(m), "sent to the waiting room: {m:?}");
            matches!(m, ServerMessage::Pong)
        })
        .await
        .expect("pong");

    // A standard consultation refuses key messages.
    let link = patient_link(&s, "c-standard", "Pat", Policy::Standard).await;
    let _p = Participant::join(&s.ws_url(), &link).await.expect("joins");
    let mut doctor = practitioner(&s, "c-standard").await;
    doctor.send(ClientMessage::E2eePublicKey {
        key: DOC_KEY.into(),
    });
    error(&mut doctor, ErrorCode::E2eeNotEnabled).await;
}
