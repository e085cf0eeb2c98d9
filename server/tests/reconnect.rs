//! A participant whose connection drops is shown as reconnecting and may rejoin with the same
//! token: an admitted patient comes back admitted, with media, without a new admission.

mod common;

use common::{T, TestServer, admit, eventually, wait_admitted};
use std::time::Duration;
use teleconsult::protocol::{ParticipantState, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_patient_is_reconnecting_then_rejoins_admitted_with_media() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-re", "Dr Grey", Role::Practitioner).await;
    let patient_token = server.token("c-re", "Pat Doe", Role::Patient).await;
    let mut patient = Participant::join(&server.ws_url(), &patient_token)
        .await
        .unwrap();
    admit(&mut doctor, &patient.id).await;
    let _a = doctor.peer.start_publishing(1);
    let _b = patient.peer.start_publishing(2);
    let id = patient.id.clone();
    assert!(
        eventually(Duration::from_secs(20), || doctor
            .peer
            .received()
            .get(&id)
            .is_some_and(|r| r.distinct_video() > 10))
        .await
    );

    patient.drop_connection().await;
    doctor
        .expect(T, |m| {
            *m == ServerMessage::ParticipantState {
                participant: id.clone().into(),
                state: ParticipantState::Reconnecting,
            }
        })
        .await
        .expect("the doctor sees the patient reconnecting");

    // Same token and the same tab's seat secret: same participant id, straight back in (no
    // waiting room).
    let back = common::rejoin(&server.ws_url(), &patient_token, &patient).await;
    assert_eq!(
        back.id, id,
        "a rejoin keeps the participant's identity in the call"
    );
    {
        let history = back.history.lock().unwrap();
        let Some(ServerMessage::Joined {
            you, participants, ..
        }) = history.first()
        else {
            panic!("first message is joined: {history:?}");
        };
        assert_eq!(you.state, ParticipantState::Admitted);
        assert_eq!(participants.len(), 1, "sees the doctor again");
    }
    doctor
        .expect(T, |m| {
            *m == ServerMessage::ParticipantState {
                participant: id.clone().into(),
                state: ParticipantState::Admitted,
            }
        })
        .await
        .expect("the doctor sees the patient back");
    let _c = back.peer.start_publishing(3);
    assert!(
        eventually(Duration::from_secs(20), || {
            back.peer
                .received()
                .get(&doctor.id)
                .is_some_and(|r| r.distinct_video() > 10)
                && doctor
                    .peer
                    .received()
                    .get(&id)
                    .is_some_and(|r| r.tags.contains(&3))
        })
        .await,
        "media flows both ways on the new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_grace_expiry_counts_the_participant_as_left() {
    let mut config = teleconsult::config::Config::for_tests();
    config.consultation.reconnect_grace_secs = 1;
    let server = TestServer::start_with(config).await;
    let mut doctor = server.join("c-grace", "Dr Grey", Role::Practitioner).await;
    let mut patient = server.join("c-grace", "Pat Doe", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    let id = patient.id.clone();
    patient.drop_connection().await;
    doctor
        .expect(T, |m| {
            matches!(m, ServerMessage::ParticipantLeft { participant, reason: teleconsult::protocol::LeftReason::Timeout } if *participant == id)
        })
        .await
        .expect("left after the grace period");
}
