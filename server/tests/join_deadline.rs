//! The join deadline counts from the connection: a client that keeps sending `ping` (or anything
//! else) without ever joining is closed with 4408 all the same. Before, every message restarted
//! the timer, so a pinging socket stayed connected, unauthenticated, for ever.

mod common;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use teleconsult::config::Config;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinging_without_joining_does_not_hold_the_connection_open() {
    let mut config = Config::for_tests();
    config.signaling.join_timeout_secs = 1;
    let s = TestServer::start_with(config).await;
    let (ws, _) = tokio_tungstenite::connect_async(s.ws_url())
        .await
        .expect("connects");
    let (mut tx, mut rx) = ws.split();
    // Ping four times a second for up to 10 s (ten join timeouts): the server must close us
    // meanwhile, with the join-timeout code.
    let pinger = tokio::spawn(async move {
        for _ in 0..40 {
            if tx
                .send(Message::Text(r#"{"type":"ping"}"#.into()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut pongs = 0;
    let closed = loop {
        match rx.next().await {
            Some(Ok(Message::Text(t))) if t.contains("pong") => pongs += 1,
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
            None => break None,
        }
    };
    assert!(
        !pinger.is_finished(),
        "the server closed only after the client stopped pinging"
    );
    pinger.abort();
    assert_eq!(closed, Some(4408), "closed for not joining");
    assert!(pongs > 0, "pings before the join are still answered");
    s.shutdown().await;
}
