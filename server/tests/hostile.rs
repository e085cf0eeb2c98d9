//! `scripts/hostile.py` (issue 15) against a real server: every probe — WebSocket garbage, bad
//! tokens, floods, oversized frames, pings instead of a join, a header that never ends, a body
//! larger than allowed, a token in a query string, garbage on the UDP media port, silent and
//! piled-up ICE-TCP connections, a UDP flood from one source, a joined client that stops
//! reading — gets the answer the server promises, and the server answers
//! its health check after each. Timeouts are shortened so the whole run takes seconds.

mod common;

use common::{TestServer, python, root};
use teleconsult::config::Config;
use teleconsult::token::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_probe_gets_its_promised_answer_and_the_server_stays_healthy() {
    let mut config = Config::for_tests();
    config.signaling.join_timeout_secs = 2;
    config.server.header_read_timeout_secs = 2;
    config.media.tcp_first_message_ms = 1000;
    // The slow-reader probe: a small outbox, and a talker allowed to toggle fast.
    config.signaling.outbox_messages = 64;
    // (The flood probe's 500 pings at once still go past this burst.)
    config.signaling.messages_per_second = 1000;
    config.signaling.message_burst = 400;
    let server = TestServer::start_with(config).await;
    let slow = server
        .token("c-hostile", "acct-slow", Role::Practitioner)
        .await;
    let talker = server
        .token("c-hostile", "acct-talker", Role::Practitioner)
        .await;
    let tcp = server
        .server
        .state
        .signaling
        .sfu
        .tcp_addr()
        .expect("ICE-TCP is on in tests");
    let out = tokio::process::Command::new(python())
        .arg(root().join("scripts/hostile.py"))
        .args(["--http", &server.http_addr.to_string()])
        .args(["--media", &server.media_addr.to_string()])
        .args(["--tcp", &tcp.to_string()])
        .args([
            "--join-timeout",
            "2",
            "--header-timeout",
            "2",
            "--tcp-first-message",
            "1",
        ])
        .args([
            "--max-message-bytes",
            &server.config.signaling.max_message_bytes.to_string(),
        ])
        .args([
            "--tcp-max-per-ip",
            &server.config.media.tcp_max_per_ip.to_string(),
        ])
        .args(["--metrics", &server.server.metrics_addr.to_string()])
        .args(["--slow-token", &slow, "--talker-token", &talker])
        .args(["--talk-seconds", "20"])
        .output()
        .await
        .expect("the script runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("probes answered as promised"), "{text}");
}
