//! Stop 11 limits (issue 15), end to end against a real server: a client that stops reading
//! its WebSocket is disconnected once its bounded outbox is full, and nobody else notices.

mod common;

use common::{T, TestServer, signaling_errors};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use teleconsult::config::Config;
use teleconsult::protocol::{ClientMessage, ServerMessage};
use teleconsult::token::Role;
use teleconsult_consultation::MediaKind;
use tokio_tungstenite::tungstenite::Message;

/// A practitioner joins over a socket with a tiny receive buffer, reads `joined`, then never
/// reads again while another practitioner toggles mute (each toggle is an event for everyone
/// else). The server must close the silent reader (counted as `slow_consumer`) instead of
/// queueing for it without limit; a third participant gets every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_the_others_are_unaffected() {
    let mut config = Config::for_tests();
    // Small, to fill quickly, yet above the bursts of 20 below: a client that reads keeps up.
    config.signaling.outbox_messages = 64;
    // The talker sends fast: the per-connection rate limit is not what this test is about.
    config.signaling.messages_per_second = 1000;
    config.signaling.message_burst = 10_000;
    let server = TestServer::start_with(config).await;
    let c = "c-slow-reader";

    let talker = server.join(c, "acct-talker", Role::Practitioner).await;
    let mut listener = server.join(c, "acct-listener", Role::Practitioner).await;

    // The slow reader: a real WebSocket client over a TCP socket whose receive buffer is as
    // small as the kernel allows, and with a small MSS (on loopback the 64 KiB MSS lets the
    // server's send buffer grow to megabytes), so the server's sends block soon.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.set_mss(536).unwrap();
    socket.connect(&server.http_addr.into()).expect("connects");
    socket.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(server.ws_url(), tcp)
        .await
        .expect("handshake");
    let token = server.token(c, "acct-slow", Role::Practitioner).await;
    slow.send(Message::Text(
        serde_json::json!({"type": "join", "token": token})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let slow_id = loop {
        let m = tokio::time::timeout(T, slow.next())
            .await
            .expect("joined in time")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m
            && let Ok(ServerMessage::Joined { you, .. }) = serde_json::from_str(&t)
        {
            break you.id;
        }
    };
    // The others see the slow reader arrive.
    listener
        .expect(T, |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.id == slow_id))
        .await
        .expect("listener sees the slow reader join");

    // From here on `slow` is never polled: its socket fills up. Toggle until the server gives
    // up on it (bounded: if it never did, the loop ends and the assertion below fails).
    let mut sent = 0u32;
    let mut overflowed = false;
    for _round in 0..1000 {
        for _ in 0..20 {
            talker.send(ClientMessage::Mute {
                kind: MediaKind::Audio,
                muted: sent.is_multiple_of(2),
            });
            sent += 1;
        }
        // Every toggle reaches the listener, in order, while the slow reader is stuck.
        for i in sent - 20..sent {
            let want = i.is_multiple_of(2);
            listener
                .expect(
                    T,
                    |m| matches!(m, ServerMessage::Mute { muted, .. } if *muted == want),
                )
                .await
                .unwrap_or_else(|e| panic!("listener missed toggle {i}: {e}"));
        }
        if signaling_errors(&server).await.get("slow_consumer") == Some(&1) {
            overflowed = true;
            break;
        }
    }
    assert!(
        overflowed,
        "the server never closed the client that does not read ({sent} events sent)"
    );
    // The others are told the slow reader dropped (it may come back within the grace).
    listener
        .expect(T, |m| {
            matches!(m, ServerMessage::ParticipantState { participant, .. } if *participant == slow_id)
                || matches!(m, ServerMessage::ParticipantLeft { participant, .. } if *participant == slow_id)
        })
        .await
        .expect("listener told the slow reader dropped");

    // The consultation goes on for the others: more toggles, all delivered.
    for i in 0..20u32 {
        talker.send(ClientMessage::Mute {
            kind: MediaKind::Video,
            muted: i.is_multiple_of(2),
        });
        let want = i.is_multiple_of(2);
        listener
            .expect(T, |m| {
                matches!(m, ServerMessage::Mute { kind: MediaKind::Video, muted, .. } if *muted == want)
            })
            .await
            .expect("the call goes on");
    }
    assert!(talker.close_code().is_none() && listener.close_code().is_none());

    // The slow reader's socket, read at last: what was queued before the cut, then the end
    // of the connection — far fewer events than were sent.
    let mut got = 0u32;
    let ended = tokio::time::timeout(T, async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(t))) => {
                    if t.contains("\"mute\"") {
                        got += 1;
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    break f.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        }
    })
    .await;
    let close = ended.expect("the slow reader's connection ends");
    println!("events sent {sent}, the slow reader got {got}, then close {close:?}");
    assert!(
        close.is_none() || close == Some(4008),
        "closed with {close:?}"
    );
    assert!(
        got < sent,
        "the slow reader got {got} of {sent}: it was not cut off"
    );
    // Counted once, and nothing else was.
    let errors = signaling_errors(&server).await;
    assert_eq!(errors.get("slow_consumer"), Some(&1), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
}

/// Slow-loris: fifty connections each dribbling a header that never ends are all cut off by
/// `server.header_read_timeout_secs`, and the server answers others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_slow_header_connections_are_all_closed_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = Config::for_tests();
    config.server.header_read_timeout_secs = 2;
    let server = TestServer::start_with(config).await;
    let addr = server.http_addr;
    let started = tokio::time::Instant::now();
    let mut loris = Vec::new();
    for _ in 0..50 {
        loris.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            // A byte every 200 ms until the server ends the connection (or 20 s pass).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::time::Instant::now() < deadline {
                if s.write_all(b"a").await.is_err() {
                    return true;
                }
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    // A 408 before the close counts as cut off too.
                    Ok(Ok(_)) => return true,
                    Err(_) => {}
                }
            }
            false
        }));
    }
    // Meanwhile a normal request is answered.
    let (status, _) = common::http_get(addr, "/healthz/live", None).await;
    assert_eq!(status, 200);
    let mut closed = 0;
    for l in loris {
        if l.await.unwrap() {
            closed += 1;
        }
    }
    let took = started.elapsed();
    assert_eq!(closed, 50, "every slow connection is closed");
    println!("50 slow-header connections closed within {took:?} (header timeout 2 s)");
    assert!(took < Duration::from_secs(20));
}
