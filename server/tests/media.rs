//! Media through the SFU, end to end: real webrtc-rs peers join through signalling, publish Opus
//! and VP8 RTP with verifiable payloads, and check what every other peer receives.

mod common;

use common::{T, TestServer, admit, eventually, wait_admitted};
use std::time::Duration;
use teleconsult::protocol::{ClientMessage, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;

/// Enough packets to call a stream flowing: ~1 s of audio, ~1 s of video.
const AUDIO_ENOUGH: usize = 40;
const VIDEO_ENOUGH: usize = 25;

fn receives_from(receiver: &Participant, sender: &Participant) -> bool {
    receiver
        .peer
        .received()
        .get(&sender.id)
        .is_some_and(|r| r.distinct_audio() >= AUDIO_ENOUGH && r.distinct_video() >= VIDEO_ENOUGH)
}

fn assert_intact(receiver: &Participant, sender: &Participant, tag: u16) {
    let all = receiver.peer.received();
    let r = all.get(&sender.id).expect("stream from sender");
    assert_eq!(r.corrupt, 0, "corrupt packets from {}", sender.id);
    assert_eq!(
        r.tags.iter().copied().collect::<Vec<_>>(),
        vec![tag],
        "the stream labelled with the sender's id carries only the sender's packets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_forwards_audio_and_video_intact() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-1to1", "Dr Grey", Role::Practitioner).await;
    let patient = server.join("c-1to1", "Pat Doe", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    let _a = doctor.peer.start_publishing(1);
    let _b = patient.peer.start_publishing(2);
    assert!(
        eventually(Duration::from_secs(20), || receives_from(&patient, &doctor)
            && receives_from(&doctor, &patient))
        .await,
        "both directions flow: doctor got {:?}, patient got {:?}",
        doctor.peer.received().keys().collect::<Vec<_>>(),
        patient.peer.received().keys().collect::<Vec<_>>()
    );
    assert_intact(&patient, &doctor, 1);
    assert_intact(&doctor, &patient, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_patient_receives_no_media_until_admitted() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-wait", "Dr Grey", Role::Practitioner).await;
    let _a = doctor.peer.start_publishing(1);
    let mut patient = server.join("c-wait", "Pat Doe", Role::Patient).await;
    let _b = patient.peer.start_publishing(2);
    // A witness admitted after the patient joined: once it receives the doctor's media, the
    // consultation has announced the call to the admitted (roster, tracks, offers) and the SFU
    // forwards — the waiting patient had every chance to be told, or sent packets, too.
    let mut witness = server.join("c-wait", "Ida Witness", Role::Guest).await;
    admit(&mut doctor, &witness.id).await;
    wait_admitted(&mut witness).await;
    assert!(
        eventually(Duration::from_secs(20), || receives_from(&witness, &doctor)).await,
        "the admitted witness receives the doctor"
    );
    // Then a round trip on the patient's own socket: the session sends what the consultation
    // queued for it before answering a ping, so anything told before now is in its history.
    patient.send(ClientMessage::Ping);
    patient
        .expect(T, |m| *m == ServerMessage::Pong)
        .await
        .expect("pong");
    // In the waiting room: no offer, no participant identities, no packets.
    {
        let history = patient.history.lock().unwrap();
        assert!(
            history.iter().all(|m| match m {
                ServerMessage::Joined {
                    participants, you, ..
                } => participants.is_empty() && you.display_name == "Pat Doe",
                ServerMessage::Offer { .. }
                | ServerMessage::ParticipantJoined { .. }
                | ServerMessage::TrackPublished { .. }
                | ServerMessage::WaitingList { .. } => false,
                _ => true,
            }),
            "a waiting patient learns nothing about the call: {history:?}"
        );
    }
    assert!(patient.peer.received().is_empty());
    assert!(!patient.peer.is_connected());
    // A patient cannot admit themself.
    patient.send(ClientMessage::Admit {
        participant: patient.id.clone().into(),
    });
    patient
        .expect(T, |m| matches!(m, ServerMessage::Error { .. }))
        .await
        .expect("refused");
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    assert!(
        eventually(Duration::from_secs(20), || receives_from(&patient, &doctor)
            && receives_from(&doctor, &patient))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_party_group_everyone_receives_everyone() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-group", "Dr Grey", Role::Practitioner).await;
    let mut others = Vec::new();
    for (name, role) in [
        ("Pat Doe", Role::Patient),
        ("Ida Interpreter", Role::Guest),
        ("Dr Second", Role::Practitioner),
    ] {
        let p = server.join("c-group", name, role).await;
        if role != Role::Practitioner {
            admit(&mut doctor, &p.id).await;
        }
        others.push(p);
    }
    let mut everyone = vec![doctor];
    everyone.extend(others);
    let _publishers: Vec<_> = everyone
        .iter()
        .enumerate()
        .map(|(i, p)| p.peer.start_publishing(i as u16 + 1))
        .collect();
    let all_flowing = || {
        everyone.iter().all(|r| {
            everyone
                .iter()
                .filter(|s| s.id != r.id)
                .all(|s| receives_from(r, s))
        })
    };
    assert!(
        eventually(Duration::from_secs(30), all_flowing).await,
        "every peer receives the three others: {:?}",
        everyone
            .iter()
            .map(|p| p.peer.received().len())
            .collect::<Vec<_>>()
    );
    for (ri, r) in everyone.iter().enumerate() {
        for (si, s) in everyone.iter().enumerate() {
            if ri != si {
                assert_intact(r, s, si as u16 + 1);
            }
        }
        assert!(
            !r.peer.received().contains_key(&r.id),
            "no echo of one's own media"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_a_keyframe_requested_from_the_publisher() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-late", "Dr Grey", Role::Practitioner).await;
    let patient = server.join("c-late", "Pat Doe", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    let _a = doctor.peer.start_publishing(1);
    let _b = patient.peer.start_publishing(2);
    assert!(eventually(Duration::from_secs(20), || receives_from(&patient, &doctor)).await);
    // The SFU asks a publisher for a keyframe when a subscription to its video starts, and on a
    // subscriber's PLI (none of our synthetic peers sends one): so far, the patient's
    // subscription — exactly one request.
    assert!(
        eventually(T, || doctor.peer.keyframe_requests() >= 1).await,
        "the patient's subscription asked the doctor for a keyframe"
    );
    let first_request_seen = std::time::Instant::now();
    assert_eq!(
        doctor.peer.keyframe_requests(),
        1,
        "one subscription, one keyframe request"
    );
    // Requests to one track are spaced by at least 250 ms: let the newcomer's subscription
    // start outside that window, or its request would rightly be swallowed.
    let late = server.join("c-late", "Ida Interpreter", Role::Guest).await;
    common::wall_clock_past(first_request_seen + KEYFRAME_REQUEST_SPACING).await;
    admit(&mut doctor, &late.id).await;
    assert!(
        eventually(Duration::from_secs(20), || receives_from(&late, &doctor)).await,
        "late joiner receives the doctor"
    );
    assert!(
        eventually(T, || doctor.peer.keyframe_requests() >= 2).await,
        "the publisher was asked for a keyframe for the newcomer"
    );
    assert_eq!(
        doctor.peer.keyframe_requests(),
        2,
        "exactly one more request: the newcomer's subscription's"
    );
}

/// A little more than the SFU's minimum spacing of keyframe requests to one track (250 ms).
const KEYFRAME_REQUEST_SPACING: Duration = Duration::from_millis(300);
