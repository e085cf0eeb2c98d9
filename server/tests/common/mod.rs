//! Shared test harness: an in-process server on loopback with free ports, token minting, and
//! synthetic participants.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use teleconsult::config::Config;
use teleconsult::protocol::ServerMessage;
use teleconsult::token::{self, Claims, Role};
use teleconsult_loadtest::participant::Participant;

pub struct TestServer {
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
    pub config: Config,
    pub server: teleconsult::server::RunningServer,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Config::for_tests()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let server = teleconsult::server::start(config.clone())
            .await
            .expect("server starts");
        TestServer {
            http_addr: server.http_addr,
            media_addr: server.media_addr,
            config,
            server,
        }
    }

    /// Stop the server gracefully (open connections finish first; its HTTP tasks are done).
    pub async fn shutdown(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }

    pub fn token(&self, consultation: &str, identity: &str, role: Role) -> String {
        token::sign(
            self.config.auth.signing_secret.as_bytes(),
            &Claims {
                consultation: consultation.into(),
                identity: identity.into(),
                role,
                exp: token::unix_now() + 3600,
            },
        )
    }

    pub async fn join(&self, consultation: &str, identity: &str, role: Role) -> Participant {
        Participant::join(&self.ws_url(), &self.token(consultation, identity, role))
            .await
            .expect("join succeeds")
    }
}

pub const T: Duration = Duration::from_secs(10);

/// The variable naming the MongoDB (FerretDB) server of the tests; scripts/test sets it.
pub const MONGO_ENV: &str = "TELECONSULT_TEST_MONGODB_URI";

/// The MongoDB URI of the test server, or `None` (with a note) outside CI when unset. In CI
/// (`CI` set; scripts/test exports it) an unset variable fails the test: the MongoDB half never
/// skips silently there.
pub fn mongo_uri() -> Option<String> {
    match std::env::var(MONGO_ENV) {
        Ok(uri) if !uri.is_empty() => Some(uri),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{MONGO_ENV} is not set in CI: scripts/test starts FerretDB and sets it"
            );
            eprintln!(
                "NOTE: {MONGO_ENV} is not set: the MongoDB half of this test did NOT run \
                 (scripts/test starts FerretDB and sets it)"
            );
            None
        }
    }
}

/// Practitioner admits `patient` (waits for the waiting list entry first).
pub async fn admit(practitioner: &mut Participant, patient_id: &str) {
    let id = patient_id.to_string();
    practitioner
        .expect(T, |m| matches!(m, ServerMessage::WaitingList { participants } if participants.iter().any(|p| p.id == id)))
        .await
        .expect("patient appears in the waiting list");
    practitioner.send(teleconsult::protocol::ClientMessage::Admit {
        participant: patient_id.into(),
    });
}

/// This server's `teleconsult_signaling_errors_total`, by `kind`, the kinds counted so far only.
/// Read from its own `/metrics`: the counters are the server's, so tests running in parallel in
/// this process (each with its own server) do not add to them.
pub async fn signaling_errors(server: &TestServer) -> std::collections::BTreeMap<String, u64> {
    let (status, text) = http_get(server.http_addr, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    let prefix = "teleconsult_signaling_errors_total{kind=\"";
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (kind, value) = l.split_once("\"} ")?;
            Some((kind.to_string(), value.trim().parse::<u64>().ok()?))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Assert that this server counted exactly these signalling errors (and no other kind).
pub async fn assert_signaling_errors(server: &TestServer, expected: &[(&str, u64)]) {
    let expected: std::collections::BTreeMap<String, u64> =
        expected.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    assert_eq!(
        signaling_errors(server).await,
        expected,
        "signalling errors counted"
    );
}

/// Wait until the wall clock has passed `when`: for rules defined by time itself (a throttle
/// window, billable seconds), never as a stand-in for an event.
pub async fn wall_clock_past(when: std::time::Instant) {
    while std::time::Instant::now() < when {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll `probe` until it yields a value, at most `timeout`; panics naming `what` otherwise.
pub async fn poll<V, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> V
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<V>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll `cond` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A minimal HTTP/1.1 GET (one request per connection, chunked bodies decoded), with an optional
/// `Authorization: Bearer` credential. Returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .expect("chunk size");
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    (status, String::from_utf8(body).expect("utf-8 body"))
}
