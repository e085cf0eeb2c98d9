//! Bad input gets a clear answer, and nobody else is affected.

mod common;

use common::{
    T, TestServer, admit, assert_signaling_errors, eventually, metrics, poll, wait_admitted,
};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use teleconsult::config::ExposeSecret;
use teleconsult::protocol::{ClientMessage, ErrorCode, ServerMessage};
use teleconsult::token::{self, Claims, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(server: &TestServer) -> Ws {
    tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("connects")
        .0
}

/// Next text message as a server message, or the close frame's (code, reason).
async fn next(ws: &mut Ws) -> Result<ServerMessage, (u16, String)> {
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("server answers in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Ok(serde_json::from_str(&t).expect("server sends protocol messages"));
            }
            Some(Ok(Message::Close(f))) => {
                return Err(f
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new())));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((1006, e.to_string())),
            None => return Err((1006, "eof".into())),
        }
    }
}

async fn send(ws: &mut Ws, text: String) {
    ws.send(Message::Text(text.into())).await.expect("sends");
}

async fn join_with(server: &TestServer, token: &str) -> Result<ServerMessage, (u16, String)> {
    let mut ws = raw(server).await;
    send(
        &mut ws,
        serde_json::json!({"type": "join", "token": token, "protocol": 1}).to_string(),
    )
    .await;
    next(&mut ws).await
}

/// A raw socket joined to `consultation` as a practitioner, its `joined` read.
async fn join_raw(server: &TestServer, consultation: &str) -> Ws {
    let mut ws = raw(server).await;
    let token = server
        .token(consultation, "Dr Grey", Role::Practitioner)
        .await;
    send(
        &mut ws,
        serde_json::json!({"type":"join","token":token}).to_string(),
    )
    .await;
    // `joined` always comes first, before the media offer (session.rs: biased select).
    let first = next(&mut ws).await;
    assert!(
        matches!(first, Ok(ServerMessage::Joined { .. })),
        "expected joined, got {first:?}"
    );
    ws
}

#[tokio::test]
async fn bad_tokens_close_with_4401_and_a_reason() {
    let server = TestServer::start().await;
    // Version-1 (pre-accounts practitioner) tokens; invitation links: tests/invitations.rs.
    let claims = |exp| Claims {
        consultation: "c-tok".into(),
        identity: "Dr Tok".into(),
        role: Role::Practitioner,
        exp,
    };
    let expired = token::sign(
        server.config.auth.signing_secret.expose_secret().as_bytes(),
        &claims(1),
    );
    let forged = token::sign(
        b"not-the-server-secret-not-the-server-secret",
        &claims(token::unix_now() + 60),
    );
    for (token, reason) in [
        // An empty token asks for the handshake's login session (there is none here).
        ("", "not_signed_in"),
        ("garbage", "malformed"),
        ("a.b", "malformed"),
        (expired.as_str(), "expired"),
        (forged.as_str(), "bad_signature"),
    ] {
        assert_eq!(
            join_with(&server, token).await,
            Err((4401, reason.to_string())),
            "token {token:?}"
        );
    }
    // A first message that is not a join at all.
    let mut ws = raw(&server).await;
    send(&mut ws, r#"{"type":"ping"}"#.into()).await;
    assert_eq!(next(&mut ws).await, Ok(ServerMessage::Pong));
    send(&mut ws, r#"{"type":"leave"}"#.into()).await;
    assert!(matches!(
        next(&mut ws).await,
        Ok(ServerMessage::Error {
            code: ErrorCode::NotJoined,
            ..
        })
    ));
    assert_eq!(next(&mut ws).await.unwrap_err().0, 4400);
    // Counted by this server (each refusal is counted before it is sent).
    assert_signaling_errors(&server, &[("bad_token", 5), ("not_joined", 1)]).await;
}

#[tokio::test]
async fn token_for_another_consultation_is_refused() {
    let server = TestServer::start().await;
    let token = server.token("c-a", "Pat", Role::Patient).await;
    let mut ws = raw(&server).await;
    send(
        &mut ws,
        serde_json::json!({"type": "join", "token": token, "consultation": "c-b"}).to_string(),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Err((4403, "token is for another consultation".into()))
    );
    assert_signaling_errors(&server, &[("wrong_consultation", 1)]).await;
}

#[tokio::test]
async fn patient_cannot_do_practitioner_actions() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-roles", "Dr Grey", Role::Practitioner).await;
    let mut patient = server.join("c-roles", "Pat Doe", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    for msg in [
        ClientMessage::EndConsultation,
        ClientMessage::Remove {
            participant: doctor.id.clone().into(),
        },
        ClientMessage::Admit {
            participant: doctor.id.clone().into(),
        },
    ] {
        patient.send(msg);
        let reply = patient
            .expect(T, |m| matches!(m, ServerMessage::Error { .. }))
            .await
            .unwrap();
        assert!(
            matches!(
                reply,
                ServerMessage::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
    // Nothing happened: both still in, the connection still answers.
    patient.send(ClientMessage::Ping);
    patient
        .expect(T, |m| *m == ServerMessage::Pong)
        .await
        .unwrap();
    doctor.send(ClientMessage::Ping);
    doctor
        .expect(T, |m| *m == ServerMessage::Pong)
        .await
        .unwrap();
    assert!(doctor.close_code().is_none() && patient.close_code().is_none());
    {
        let history = doctor.history.lock().unwrap();
        assert!(
            !history
                .iter()
                .any(|m| matches!(m, ServerMessage::ConsultationEnded | ServerMessage::Removed))
        );
    }
    assert_signaling_errors(&server, &[("forbidden", 3)]).await;
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_an_error_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut ws = join_raw(&server, "c-json").await;
    for junk in [
        "{not json",
        r#"{"type":"launch_missiles"}"#,
        r#"{"type":"admit"}"#,
        r#"[1,2,3]"#,
        "",
    ] {
        send(&mut ws, junk.to_string()).await;
        // Skip what the server says on its own (waiting list, the media offer).
        let reply = loop {
            match next(&mut ws).await {
                Ok(ServerMessage::WaitingList { .. } | ServerMessage::Offer { .. }) => continue,
                other => break other,
            }
        };
        assert!(
            matches!(
                reply,
                Ok(ServerMessage::Error {
                    code: ErrorCode::BadMessage,
                    ..
                })
            ),
            "{junk:?} → {reply:?}"
        );
    }
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut ws).await,
        Ok(ServerMessage::Error {
            code: ErrorCode::BinaryNotSupported,
            ..
        })
    ));
    send(&mut ws, r#"{"type":"ping"}"#.into()).await;
    assert_eq!(next(&mut ws).await, Ok(ServerMessage::Pong));
    assert_signaling_errors(&server, &[("bad_message", 5), ("binary", 1)]).await;
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let server = TestServer::start().await;
    let mut ws = join_raw(&server, "c-big").await;
    let big = format!(
        r#"{{"type":"answer","sdp":"{}"}}"#,
        "x".repeat(server.config.signaling.max_message_bytes + 10)
    );
    send(&mut ws, big).await;
    let closed = loop {
        match next(&mut ws).await {
            Ok(_) => continue,
            Err(c) => break c,
        }
    };
    assert_eq!(closed.0, u16::from(CloseCode::Size));
    assert_signaling_errors(&server, &[("too_big", 1)]).await;
}

#[tokio::test]
async fn a_frame_over_twice_the_limit_closes_with_1009_and_invalid_utf8_with_1007() {
    let server = TestServer::start().await;
    // Past what the transport itself accepts (twice the limit): still a 1009, not a torn socket.
    let mut ws = join_raw(&server, "c-huge").await;
    let huge = "x".repeat(server.config.signaling.max_message_bytes * 2 + 100);
    // The client may see the close before it has written the whole frame.
    let _ = ws.send(Message::Text(huge.into())).await;
    let closed = loop {
        match next(&mut ws).await {
            Ok(_) => continue,
            Err(c) => break c,
        }
    };
    assert_eq!(closed.0, u16::from(CloseCode::Size), "{closed:?}");

    // A text frame that is not UTF-8 (sent as a raw frame: the client library would refuse).
    let mut ws = join_raw(&server, "c-utf8").await;
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    ws.send(Message::Frame(frame)).await.expect("sends");
    let closed = loop {
        match next(&mut ws).await {
            Ok(_) => continue,
            Err(c) => break c,
        }
    };
    assert_eq!(closed.0, u16::from(CloseCode::Invalid), "{closed:?}");
    assert_signaling_errors(&server, &[("too_big", 1), ("bad_utf8", 1)]).await;
}

#[tokio::test]
async fn a_message_flood_closes_with_1008_and_others_are_unaffected() {
    let server = TestServer::start().await;
    let burst = server.config.signaling.message_burst as usize;
    let mut calm = join_raw(&server, "c-calm").await;
    let mut flood = join_raw(&server, "c-flood").await;
    // Far past the burst, as fast as the socket takes them: pings cost the server nothing to
    // answer, so only the budget stops them.
    for _ in 0..burst * 4 {
        if flood
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = loop {
        match next(&mut flood).await {
            Ok(_) => continue,
            Err(c) => break c,
        }
    };
    assert_eq!(closed.0, u16::from(CloseCode::Policy), "{closed:?}");
    assert_signaling_errors(&server, &[("flood", 1)]).await;
    // Another connection still answers.
    send(&mut calm, r#"{"type":"ping"}"#.into()).await;
    loop {
        match next(&mut calm).await {
            Ok(ServerMessage::Pong) => break,
            Ok(_) => continue,
            Err(c) => panic!("the calm connection was closed: {c:?}"),
        }
    }
}

#[tokio::test]
async fn a_websocket_from_a_foreign_origin_is_refused_own_and_none_are_served() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start().await;
    let handshake = |origin: Option<String>| {
        let mut req = server.ws_url().into_client_request().expect("a request");
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", o.parse().expect("a header value"));
        }
        tokio_tungstenite::connect_async(req)
    };
    match handshake(Some("https://evil.example".into())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("a foreign origin must be refused: {:?}", other.map(|_| ())),
    }
    // The server's own origin (no public URL in tests: the Host it is reached at), and no
    // Origin at all (not a browser), are served.
    let own = format!("http://{}", server.http_addr);
    assert!(handshake(Some(own)).await.is_ok());
    assert!(handshake(None).await.is_ok());
}

#[tokio::test]
async fn websockets_past_the_per_address_cap_get_429_and_a_closed_one_frees_its_slot() {
    let mut config = teleconsult::config::Config::for_tests();
    config.signaling.max_connections_per_ip = 3;
    let server = TestServer::start_with(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(raw(&server).await);
    }
    match tokio_tungstenite::connect_async(server.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("a fourth socket must be refused: {:?}", other.map(|_| ())),
    }
    assert_signaling_errors(&server, &[("too_many_connections", 1)]).await;
    // One closes: its slot comes back once its session has ended.
    let mut first = open.remove(0);
    first.close(None).await.expect("closes");
    drop(first);
    assert!(
        eventually(Duration::from_secs(5), || server
            .server
            .state
            .signaling
            .limits
            .open()
            < 3)
        .await
    );
    assert!(
        tokio_tungstenite::connect_async(server.ws_url())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_precall_test_session_offers_refuses_stray_answers_and_ends() {
    let server = TestServer::start().await;
    let mut ws = raw(&server).await;
    let token = server.token("c-precall", "Pat Test", Role::Patient).await;
    send(
        &mut ws,
        serde_json::json!({"type":"join","token":token}).to_string(),
    )
    .await;
    let me = match next(&mut ws).await {
        Ok(ServerMessage::Joined { you, .. }) => you.id,
        other => panic!("expected joined, got {other:?}"),
    };
    let probe = format!("{me}~precall");
    let sfu = server.server.state.signaling.sfu.clone();
    // (The patient waits: nobody admits them, and the test needs no admission.)
    // An answer with no test running is refused, and the connection stays.
    send(
        &mut ws,
        r#"{"type":"precall_answer","sdp":"v=0\r\n"}"#.into(),
    )
    .await;
    let reply = loop {
        match next(&mut ws).await.expect("still open") {
            ServerMessage::Error { code, .. } => break code,
            _ => continue,
        }
    };
    assert_eq!(reply, ErrorCode::BadSdp);
    // A test: an offer with the call's three receiving sections and our candidates.
    send(&mut ws, r#"{"type":"precall_start"}"#.into()).await;
    let sdp = loop {
        match next(&mut ws).await.expect("still open") {
            ServerMessage::PrecallOffer { sdp } => break sdp,
            _ => continue,
        }
    };
    assert_eq!(sdp.matches("a=recvonly").count(), 3, "{sdp}");
    assert!(sfu.has_participant(&probe));
    assert!(sdp.contains("a=candidate:"), "{sdp}");
    // A hostile answer to it is refused like any other.
    send(
        &mut ws,
        r#"{"type":"precall_answer","sdp":"v=0\r\n"}"#.into(),
    )
    .await;
    loop {
        match next(&mut ws).await.expect("still open") {
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, ErrorCode::BadSdp);
                break;
            }
            _ => continue,
        }
    }
    // Stopped: said once, and the SFU forgets the test session.
    send(&mut ws, r#"{"type":"precall_stop"}"#.into()).await;
    loop {
        match next(&mut ws).await.expect("still open") {
            ServerMessage::PrecallEnded => break,
            _ => continue,
        }
    }
    assert!(
        !sfu.has_participant(&probe),
        "the SFU forgot the test session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sdp_is_refused_and_the_call_goes_on() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-sdp", "Dr Grey", Role::Practitioner).await;
    let patient = server.join("c-sdp", "Pat Doe", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    let _a = doctor.peer.start_publishing(1);
    let _b = patient.peer.start_publishing(2);
    assert!(eventually(Duration::from_secs(20), || video_received(&patient) > 20).await);

    // An attacker joins the same consultation as a guest and, once admitted, sends garbage SDP.
    let mut attacker = server.join("c-sdp", "Mallory", Role::Guest).await;
    admit(&mut doctor, &attacker.id).await;
    wait_admitted(&mut attacker).await;
    let hostile = [
        String::new(),
        "v=0\r\n".to_string(),
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=mid:\u{0}\r\n".to_string(),
        format!("v=0\r\n{}", "a=x\r\n".repeat(2000)),
        "m=audio 99999999999999999999 RTP/AVP 1\r\n".to_string(),
        "\u{feff}\u{202e}<script>".to_string(),
    ];
    for sdp in hostile {
        attacker.send(ClientMessage::Answer { sdp });
        let reply = attacker
            .expect(T, |m| matches!(m, ServerMessage::Error { .. }))
            .await
            .expect("an error comes back");
        assert!(
            matches!(
                reply,
                ServerMessage::Error {
                    code: ErrorCode::BadSdp,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
    attacker.send(ClientMessage::IceCandidate {
        candidate: Some(teleconsult::protocol::IceCandidate {
            candidate: "candidate:garbage".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        }),
    });
    attacker
        .expect(T, |m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::BadCandidate,
                    ..
                }
            )
        })
        .await
        .expect("bad candidate refused");
    assert_signaling_errors(&server, &[("bad_sdp", 6), ("bad_candidate", 1)]).await;
    // The doctor and patient are still receiving.
    let before = video_received(&patient);
    assert!(
        eventually(Duration::from_secs(5), || video_received(&patient)
            > before + 20)
        .await,
        "media still flows to the patient"
    );
    let before = video_received(&doctor);
    assert!(
        eventually(Duration::from_secs(5), || video_received(&doctor)
            > before + 20)
        .await
    );
}

#[tokio::test]
async fn full_consultation_refuses_clearly() {
    let mut config = teleconsult::config::Config::for_tests();
    config.consultation.max_participants = 2;
    let server = TestServer::start_with(config).await;
    let _doctor = server.join("c-full", "Dr Grey", Role::Practitioner).await;
    let _patient = server.join("c-full", "Pat Doe", Role::Patient).await;
    let token = server.token("c-full", "One Too Many", Role::Guest).await;
    assert_eq!(
        join_with(&server, &token).await,
        Err((4409, "consultation is full".into()))
    );
    assert_signaling_errors(&server, &[("join_refused", 1)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_media_port_is_dropped_and_counted() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-udp", "Dr Grey", Role::Practitioner).await;
    let patient = server.join("c-udp", "Pat Doe", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    let _a = doctor.peer.start_publishing(1);
    let _b = patient.peer.start_publishing(2);
    assert!(eventually(Duration::from_secs(20), || video_received(&patient) > 20).await);
    let dropped_before = dropped(&metrics(server.server.metrics_addr).await);
    // Random bytes, and STUN-looking packets with unknown ufrags, from a stranger.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut state = 0x9e37_79b9_u32;
    for i in 0..500 {
        let len = 1 + (i * 7) % 1400;
        let mut buf = vec![0u8; len];
        for b in buf.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *b = state as u8;
        }
        if i % 5 == 0 && len >= 20 {
            buf[0] = 0;
            buf[1] = 1;
            buf[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        }
        socket.send_to(&buf, server.media_addr).await.unwrap();
        if i % 50 == 49 {
            // Paced, so the kernel's socket buffer (not the server) is never the one dropping.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    poll(
        Duration::from_secs(5),
        "every garbage datagram counted as dropped",
        || async {
            (dropped(&metrics(server.server.metrics_addr).await) >= dropped_before + 500.0)
                .then_some(())
        },
    )
    .await;
    let before = video_received(&patient);
    assert!(
        eventually(Duration::from_secs(5), || video_received(&patient)
            > before + 20)
        .await,
        "the live call is unaffected"
    );
    // Nothing of it reached signalling.
    assert_signaling_errors(&server, &[]).await;
}

/// Distinct video packets a participant received, from everyone.
fn video_received(p: &teleconsult_loadtest::participant::Participant) -> usize {
    p.peer.received().values().map(|r| r.distinct_video()).sum()
}

fn dropped(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("teleconsult_media_datagrams_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `video_size` (issue 11): only from admitted participants, with a bounded track id; an unknown
/// track is ignored quietly, and the connection goes on.
#[tokio::test]
async fn video_size_is_checked_and_never_harms_the_call() {
    let server = TestServer::start().await;
    let mut doctor = server.join("c-size", "Dr Size", Role::Practitioner).await;
    let mut patient = server.join("c-size", "Pat Size", Role::Patient).await;
    let size = |track: String| ClientMessage::VideoSize {
        track,
        width: 320,
        height: 180,
    };
    // Waiting: not admitted yet.
    patient.send(size("t".into()));
    let reply = patient
        .expect(T, |m| matches!(m, ServerMessage::Error { .. }))
        .await
        .unwrap();
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::NotAdmitted,
                ..
            }
        ),
        "{reply:?}"
    );
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    // A track id far too long: refused.
    patient.send(size("x".repeat(200)));
    let reply = patient
        .expect(T, |m| matches!(m, ServerMessage::Error { .. }))
        .await
        .unwrap();
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::BadMessage,
                ..
            }
        ),
        "{reply:?}"
    );
    // A track it does not receive: ignored, no error; the next reply is the pong.
    patient.send(size("nobody-1".into()));
    patient.send(ClientMessage::Ping);
    let reply = patient
        .expect(T, |m| {
            matches!(m, ServerMessage::Pong | ServerMessage::Error { .. })
        })
        .await
        .unwrap();
    assert_eq!(reply, ServerMessage::Pong);
    assert!(doctor.close_code().is_none() && patient.close_code().is_none());
}
