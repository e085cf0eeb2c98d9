//! Shared test harness, one copy for every integration test of the server: an in-process server
//! on loopback with free ports, the real binary as a child process, FerretDB instances of the
//! test's own, token minting, synthetic participants, an HTTP client (reqwest), and waits on
//! conditions (never a fixed sleep standing in for one).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use teleconsult::config::Config;
use teleconsult::config::ExposeSecret;
use teleconsult::protocol::ServerMessage;
use teleconsult::token::{self, Claims, Role};
use teleconsult_loadtest::participant::Participant;
use teleconsult_store::Store;

/// How long a test waits for something that normally takes well under a second.
pub const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Servers

/// The server started in this process (`teleconsult::server::start`).
pub struct TestServer {
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
    pub config: Config,
    pub server: teleconsult::server::RunningServer,
    /// The invitation links handed out so far, by (consultation, label, role): one person,
    /// one link, as a practitioner would send it.
    links: std::sync::Mutex<std::collections::HashMap<(String, String, &'static str), String>>,
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
            links: Default::default(),
        }
    }

    /// Stop the server gracefully (open connections finish first; its HTTP tasks are done).
    pub async fn shutdown(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }

    /// A join credential: the pre-accounts token for a practitioner (`identity` is their
    /// account id), else the invitation (seat) labelled `identity` in this server's store,
    /// created at the first request (the same link for the same person afterwards).
    pub async fn token(&self, consultation: &str, identity: &str, role: Role) -> String {
        match role {
            Role::Practitioner => sign_token(
                self.config.auth.signing_secret.expose_secret().as_bytes(),
                consultation,
                identity,
                role,
            ),
            _ => {
                let key = (
                    consultation.to_string(),
                    identity.to_string(),
                    role.as_str(),
                );
                if let Some(t) = self.links.lock().unwrap().get(&key) {
                    return t.clone();
                }
                let t = invite_token(
                    &*self.server.state.store,
                    &self.config,
                    consultation,
                    identity,
                    role,
                )
                .await;
                self.links.lock().unwrap().insert(key, t.clone());
                t
            }
        }
    }

    pub async fn join(&self, consultation: &str, identity: &str, role: Role) -> Participant {
        Participant::join(
            &self.ws_url(),
            &self.token(consultation, identity, role).await,
        )
        .await
        .expect("join succeeds")
    }
}

/// A new invitation of `consultation` (created, unscheduled, if missing) for a seat `role`
/// labelled `label`, in `store`, signed with `config`'s keys; returns the link token.
pub async fn invite_token(
    store: &dyn Store,
    config: &Config,
    consultation: &str,
    label: &str,
    role: Role,
) -> String {
    invite_with_policy(store, config, consultation, label, role, None, "acct-test")
        .await
        .expect("invitation issued")
}

/// The CLI's invitation: a consultation it creates (owned by `practitioner`) gets `policy`.
pub async fn invite_with_policy(
    store: &dyn Store,
    config: &Config,
    consultation: &str,
    label: &str,
    role: Role,
    policy: Option<teleconsult::protocol::Policy>,
    practitioner: &str,
) -> Result<String, teleconsult::invite::InviteError> {
    let (_, token) = teleconsult::invite::invite(
        store,
        config,
        teleconsult::invite::InviteRequest {
            consultation,
            role,
            label,
            scheduled_at: None,
            organisation: Some("org-test"),
            practitioner: Some(practitioner),
            policy,
        },
        teleconsult::consultation::invitation::now_millis(),
    )
    .await?;
    Ok(token)
}

/// The invitation id (`jti`) a link names: the patient's or guest's stable seat id.
pub fn jti_of(token: &str) -> String {
    use base64::Engine;
    let body = token.split('.').next().expect("a body");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .expect("base64url"),
    )
    .expect("JSON claims");
    claims["jti"].as_str().expect("a jti").to_string()
}

/// Join again with `token` from the same "tab" as `earlier` (its seat secret): resumes the seat.
pub async fn rejoin(ws_url: &str, token: &str, earlier: &Participant) -> Participant {
    Participant::join_with(
        ws_url,
        token,
        teleconsult_loadtest::participant::JoinOptions {
            seat_secret: earlier.seat_secret.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("rejoin succeeds")
}

/// A join token for `consultation`/`identity`/`role` signed with `secret`, valid for an hour.
pub fn sign_token(secret: &[u8], consultation: &str, identity: &str, role: Role) -> String {
    token::sign(
        secret,
        &Claims {
            consultation: consultation.into(),
            identity: identity.into(),
            role,
            exp: token::unix_now() + 3600,
        },
    )
}

/// The real `teleconsult serve --dev` binary as a child process (killed when dropped), bound to
/// ports it picked itself (0 in its configuration) and read back from its start-up log line.
pub struct BinaryServer {
    pub child: Child,
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
}

impl BinaryServer {
    /// Start it with `config_toml` (written to `dir/teleconsult.toml`; `[server] port` and
    /// `[media] udp_port` and `[metrics] port` are set to 0 by the environment) and `env`, its log in `dir/log`.
    /// Returns once `/healthz` answers 200.
    pub async fn start(dir: &Path, config_toml: &str, env: &[(&str, &str)], log: &str) -> Self {
        let config = dir.join("teleconsult.toml");
        std::fs::write(&config, config_toml).expect("config");
        let log_path = dir.join(log);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_teleconsult"));
        cmd.args(["serve", "--dev", "--config"])
            .arg(&config)
            // The start-up line that names the bound addresses is logged at info.
            .env("RUST_LOG", "info")
            .env("TELECONSULT_SERVER__BIND", "127.0.0.1")
            .env("TELECONSULT_SERVER__PORT", "0")
            .env("TELECONSULT_MEDIA__BIND", "127.0.0.1")
            .env("TELECONSULT_MEDIA__UDP_PORT", "0")
            .env("TELECONSULT_MEDIA__TCP_PORT", "0")
            .env("TELECONSULT_METRICS__PORT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"));
        let mut child = cmd.spawn().expect("teleconsult starts");
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let (http_addr, media_addr) =
            poll(Duration::from_secs(30), "teleconsult listening", || {
                let log = read_log();
                let exited = child.try_wait().expect("child status");
                async move {
                    assert!(exited.is_none(), "teleconsult exited ({exited:?}):\n{log}");
                    bound_addresses(&log)
                }
            })
            .await;
        let server = BinaryServer {
            child,
            http_addr,
            media_addr,
        };
        wait_health(http_addr, |h| h["status"].is_string()).await;
        server
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses in the server's start-up line
/// `listening (HTTP on 127.0.0.1:PORT, media UDP on 127.0.0.1:PORT)`, once it is in `log`.
fn bound_addresses(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log.lines().find(|l| l.contains("listening (HTTP"))?;
    let (_, rest) = line.split_once(" on ")?;
    let (http, rest) = rest.split_once(", media UDP on ")?;
    let (media, _) = rest.split_once(')')?;
    Some((http.parse().ok()?, media.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Storage

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

/// A fresh, private directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "teleconsult-test-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A FerretDB server of the test's own (`scripts/ferretdb`), for tests that stop and restart
/// their database. Stopped, and its data removed, when dropped.
pub struct FerretDb {
    dir: PathBuf,
    /// Fixed for its lifetime: the server under test reconnects to the same URI after a restart.
    port: u16,
}

impl FerretDb {
    /// Start one on a free loopback port; returns it and its MongoDB URI.
    pub fn start(name: &str) -> (FerretDb, String) {
        // FerretDB takes the port on its command line and must come back on the same one after a
        // restart, so the port is chosen here (a free one, released just before FerretDB binds it).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let db = FerretDb {
            dir: temp_dir(name),
            port,
        };
        let uri = db.restart();
        (db, uri)
    }

    /// Start it again (same data, same port); returns the URI. Waits until it accepts
    /// connections.
    pub fn restart(&self) -> String {
        self.script(&[
            "start",
            self.dir.to_str().expect("utf-8"),
            &self.port.to_string(),
        ])
    }

    pub fn stop(&self) {
        self.script(&["stop", self.dir.to_str().expect("utf-8")]);
    }

    /// Pause (`SIGSTOP`: connections stay open, nothing is answered) or resume (`SIGCONT`) it.
    pub fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join("ferretdb.pid")).expect("pid file");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    fn script(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ferretdb");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .output()
            .expect("scripts/ferretdb runs");
        assert!(
            out.status.success(),
            "scripts/ferretdb {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stored document chunks that belong to no document (an aborted or killed upload's leftovers),
/// read from the database itself rather than through the store: the embedded store in
/// `data_dir`, or MongoDB `(uri, database)`.
pub async fn orphan_chunks(data_dir: &Path, mongodb: Option<(&str, &str)>) -> u64 {
    match mongodb {
        None => {
            let path = data_dir.join(teleconsult_store::sqlite::DB_FILE);
            let conn = rusqlite::Connection::open(path).expect("open the embedded database");
            conn.query_row(
                "SELECT COUNT(*) FROM document_chunks WHERE blob NOT IN (SELECT blob FROM documents)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .expect("count chunks") as u64
        }
        Some((uri, db)) => {
            use futures_util::StreamExt;
            use mongodb::bson::{Document, doc};
            let client = mongodb::Client::with_uri_str(uri).await.expect("connect");
            let db = client.database(db);
            let bucket = teleconsult_store::mongo::BUCKET;
            let mut ids = Vec::new();
            let mut files = db
                .collection::<Document>(&format!("{bucket}.files"))
                .find(doc! {})
                .await
                .expect("files");
            while let Some(f) = files.next().await {
                ids.push(f.expect("file").get("_id").cloned().expect("_id"));
            }
            db.collection::<Document>(&format!("{bucket}.chunks"))
                .count_documents(doc! { "files_id": { "$nin": ids } })
                .await
                .expect("count chunks")
        }
    }
}

/// How many audit events with `action` the store holds.
pub async fn audit_count(store: &dyn Store, action: &str) -> usize {
    let mut audit = store.export_audit(0, i64::MAX);
    let mut n = 0;
    while let Some(e) = futures_util::StreamExt::next(&mut audit).await {
        if e.expect("audit event").action == action {
            n += 1;
        }
    }
    n
}

/// Wait until the consultation's stored summary satisfies `pred` (the billing writer is
/// asynchronous); returns it.
pub async fn summary_when(
    store: &dyn Store,
    consultation: &str,
    pred: impl Fn(&teleconsult_store::ConsultationSummary) -> bool,
) -> teleconsult_store::ConsultationSummary {
    poll(
        Duration::from_secs(20),
        "the consultation's summary",
        || async {
            store
                .consultation_summary(consultation)
                .await
                .ok()
                .flatten()
                .filter(|s| pred(s))
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// An HTTP response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The stable error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    /// A header's value (empty when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One request to `http://{addr}{path}`. A client per request: each test has its own runtime,
/// and a pooled connection must not outlive it.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Reply {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(T)
        .build()
        .expect("HTTP client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await.expect("response body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// `Authorization: Bearer {token}`.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// `GET path`, with an optional bearer credential: status and body text.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let headers: Vec<_> = token.map(bearer).into_iter().collect();
    let r = request(addr, "GET", path, &headers, Vec::new()).await;
    (r.status, r.text())
}

/// `/healthz` as JSON (it always answers 200 while the server serves).
pub async fn health(addr: SocketAddr) -> serde_json::Value {
    let r = request(addr, "GET", "/healthz", &[], Vec::new()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Wait until `/healthz` (connection refusals included: the server may still be starting)
/// satisfies `pred`.
pub async fn wait_health(addr: SocketAddr, pred: impl Fn(&serde_json::Value) -> bool) {
    poll(Duration::from_secs(30), "/healthz to match", || async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(T)
            .build()
            .ok()?;
        let res = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        let h: serde_json::Value = serde_json::from_slice(&res.bytes().await.ok()?).ok()?;
        pred(&h).then_some(())
    })
    .await
}

/// The server's Prometheus scrape.
pub async fn metrics(addr: SocketAddr) -> String {
    let (status, text) = http_get(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// This server's `teleconsult_signaling_errors_total`, by `kind`, the kinds counted so far only.
/// Read from its own `/metrics`: the counters are the server's, so tests running in parallel in
/// this process (each with its own server) do not add to them.
pub async fn signaling_errors(server: &TestServer) -> std::collections::BTreeMap<String, u64> {
    let prefix = "teleconsult_signaling_errors_total{kind=\"";
    metrics(server.server.metrics_addr)
        .await
        .lines()
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

// ---------------------------------------------------------------------------------------------
// Participants

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

/// Wait for `p`'s `admitted`.
pub async fn wait_admitted(p: &mut Participant) {
    p.expect(T, |m| matches!(m, ServerMessage::Admitted { .. }))
        .await
        .expect("admitted");
}

// ---------------------------------------------------------------------------------------------
// Waiting

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

/// Poll `cond` until it holds or `timeout` passes; returns whether it held.
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

/// Wait until the wall clock has passed `when`: for rules defined by time itself (a throttle
/// window, billable seconds), never as a stand-in for an event.
pub async fn wall_clock_past(when: std::time::Instant) {
    while std::time::Instant::now() < when {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The workspace root (scripts live there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The Python of the test dependencies (`target/test-venv`, made by scripts/install-test-deps:
/// aiortc, websockets, pymongo), or `TELECONSULT_TEST_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TELECONSULT_TEST_PYTHON") {
        return p.into();
    }
    let venv = root().join("target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run scripts/install-test-deps",
        venv.display()
    );
    venv
}
