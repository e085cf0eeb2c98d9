//! Starting and stopping the whole server in-process: the HTTP(S) listener (axum, rustls), the
//! SFU's media socket, the consultation service. Used by `teleconsult serve` and by tests.

use crate::AppState;
use crate::config::Config;
use crate::config::ExposeSecret;
use crate::consultation::ConsultationService;
use crate::media::SfuMedia;
use anyhow::Context as _;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use teleconsult_sfu::{Sfu, SfuConfig};
use tokio::task::JoinHandle;

/// How long open connections (WebSockets included) get to finish on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Close HTTP/1 connections that do not deliver a request's header in time (slow-loris). hyper
/// only enforces its header timeout with a timer set, which axum-server does not set.
fn header_timeout(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

/// A running server. Dropping it leaves the server running; call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// Where the HTTP(S) listener is bound.
    pub http_addr: SocketAddr,
    /// The media address announced in ICE candidates (announce IP, bound UDP port).
    pub media_addr: SocketAddr,
    pub state: AppState,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// Where the metrics listener (plain HTTP, `/metrics` only) is bound.
    pub metrics_addr: SocketAddr,
    handle: Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
    metrics_handle: Handle<SocketAddr>,
    metrics_task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Base URL of this server, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// WebSocket URL of `/ws`.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.http_addr)
    }

    /// Drain before a shutdown (a rolling update): in a cluster, announce `draining` (readiness
    /// turns 503, so the load balancer sends no one new), then wait until nobody is in a call on
    /// this server, at most `limit`. Returns whether it emptied in time. Without a cluster there
    /// is nowhere else to go, so there is nothing to wait for.
    pub async fn drain(&self, limit: Duration) -> bool {
        let Some(node) = &self.state.cluster else {
            return true;
        };
        node.drain().await;
        let (consultations, participants) = self.state.consultations.load();
        tracing::info!(
            consultations,
            participants,
            "draining: waiting for calls to end"
        );
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.state.consultations.load().1 == 0 {
                tracing::info!("drained");
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    participants = self.state.consultations.load().1,
                    "drain limit reached; stopping with calls still running"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop accepting connections, give open ones [`SHUTDOWN_GRACE`] to finish, then stop.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(node) = &self.state.cluster {
            node.leave().await;
        }
        self.metrics_handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        self.handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        self.metrics_task
            .await
            .context("metrics server task panicked")?
            .context("metrics server failed")?;
        self.task
            .await
            .context("HTTP server task panicked")?
            .context("HTTP server failed")?;
        tracing::info!("HTTP server stopped");
        Ok(())
    }

    /// Wait until the server stops by itself (it only does on error or after shutdown).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("HTTP server task panicked")?
            .context("HTTP server failed")
    }
}

/// Load the PEM certificate chain and private key into a rustls configuration (ring provider,
/// HTTP/1.1 ALPN so WebSockets upgrade as usual). Errors name the file at fault.
pub fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "server.tls_cert: cannot read PEM certificates from {}",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "server.tls_cert: no certificate found in {}",
            cert.display()
        );
    }
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "server.tls_key: cannot read a PEM private key from {}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "server.tls_cert/server.tls_key: {} and {} do not form a usable certificate and key",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Start everything: media socket, consultation service, HTTP(S) listener. Port 0 in the
/// configuration picks a free port (see [`RunningServer::http_addr`]).
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    crate::telemetry::install();
    let tls_config = if config.server.tls {
        Some(load_tls(&config.server.tls_cert, &config.server.tls_key)?)
    } else {
        None
    };

    let listener = std::net::TcpListener::bind((config.server.bind, config.server.port))
        .with_context(|| {
            format!(
                "server.bind/server.port: cannot listen on {}:{}",
                config.server.bind, config.server.port
            )
        })?;
    let http_addr = listener.local_addr().context("HTTP listener address")?;
    let metrics_listener = std::net::TcpListener::bind((config.metrics.bind, config.metrics.port))
        .with_context(|| {
            format!(
                "metrics.bind/metrics.port: cannot listen on {}:{}",
                config.metrics.bind, config.metrics.port
            )
        })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .context("metrics listener address")?;

    let sfu = Sfu::start(SfuConfig {
        bind: SocketAddr::new(config.media.bind, config.media.udp_port),
        announce_ip: config.media.announce_ip,
        workers: config.media.workers,
        tcp: config.media.tcp_settings(),
        unknown_sources: teleconsult_sfu::unknown::UnknownSourceLimits {
            per_second: config.media.unknown_source_datagrams_per_sec,
            ignore: Duration::from_secs(config.media.unknown_source_ignore_secs),
        },
    })
    .with_context(|| {
        format!(
            "media.bind/media.udp_port/media.tcp_port: cannot start the media plane on {} (UDP {}, ICE-TCP {})",
            config.media.bind,
            config.media.udp_port,
            if config.media.tcp_enabled {
                config.media.tcp_port.to_string()
            } else {
                "off".to_string()
            }
        )
    })?;
    let media_addr = sfu.local_addr();
    let media_tcp_addr = sfu.tcp_addr();

    let store = teleconsult_store::open(
        config.storage.mongodb_uri.expose_secret(),
        &config.storage.database,
        &config.storage.data_dir,
    )
    .await
    .with_context(|| {
        format!(
            "storage: cannot open the {}",
            if config.storage.mongodb_uri.expose_secret().is_empty() {
                format!("embedded store in {}", config.storage.data_dir.display())
            } else {
                "MongoDB store (storage.mongodb_uri)".to_string()
            }
        )
    })?;

    let config = Arc::new(config);
    // Billing before serving: replay the outage queue, close what a crashed process left open.
    // In a cluster no boot recovery: the open intervals in the shared store may be other live
    // nodes'; takeovers close a dead owner's (crate::cluster).
    let (pseudonym_key, data_dir) = (
        config.billing.pseudonym_key.expose_secret().as_bytes(),
        &config.storage.data_dir,
    );
    let billing = if config.cluster.enabled {
        crate::billing::Billing::start_in_cluster(
            &config.billing,
            data_dir,
            pseudonym_key,
            store.clone(),
        )
        .await
    } else {
        crate::billing::Billing::start(&config.billing, data_dir, pseudonym_key, store.clone())
            .await
    }
    .context("billing: cannot open the outage queue in storage.data_dir")?;
    // An ended consultation is remembered at least as long as a token for it likely lives.
    let keep_ended = Duration::from_secs(config.auth.token_ttl_secs.max(24 * 3600));
    let consultations = ConsultationService::new(
        &config.consultation,
        keep_ended,
        Arc::new(SfuMedia::new(sfu.clone())),
    );
    consultations.attach_observer(Arc::new(billing.clone()));
    let invitations: Arc<dyn teleconsult_store::InvitationStore> = store.clone();
    consultations.attach_invitations(invitations.clone());
    let authenticator = Arc::new(teleconsult_consultation::Authenticator::new(
        config
            .keyring()
            .context("auth.signing_key_id or auth.previous_signing_keys")?,
        config
            .auth
            .signing_secret
            .expose_secret()
            .as_bytes()
            .to_vec(),
        invitations,
    ));
    let cluster = if config.cluster.enabled {
        Some(
            crate::cluster::ClusterNode::start(&config, media_addr, consultations.clone())
                .await
                .context("cluster: cannot reach the MongoDB store (storage.mongodb_uri)")?,
        )
    } else {
        None
    };
    if let Some(node) = &cluster {
        let node = node.clone();
        billing.attach_gate(Arc::new(move |c: &str, now| node.may_write(c, now)));
    }
    if let Some(node) = &cluster {
        // Admissions kept in the store, for a takeover to rebuild (crate::cluster).
        consultations.attach_admission_recorder(Arc::new(node.clone()));
    }
    // Recordings (consultations created `recordable`, with everyone's consent): journals
    // sealed with the documents' current master key.
    let recording_keys = crate::recording::master_keys(&config.documents)
        .context("documents.master_key or documents.previous_master_keys")?;
    // Journals a crash (or a store outage) left on disk go into the store first.
    crate::recording::recover(&*store, &config.storage.data_dir, &recording_keys).await;
    crate::recording::start_retention(store.clone(), config.recording.clone());
    consultations.attach_recorder(Arc::new(crate::recording::Recordings::new(
        &config.storage.data_dir,
        recording_keys[0].clone(),
        sfu.clone(),
        teleconsult_recording::RecorderConfig {
            queue: config.recording.queue_packets,
            sync_interval: Duration::from_millis(config.recording.sync_interval_ms),
        },
        store.clone(),
    )));
    let signaling = Arc::new(teleconsult_signaling::Signaling {
        consultations: consultations.clone(),
        sfu,
        authenticator,
        config: config.signaling.clone(),
        errors: Default::default(),
        ice_servers: crate::turn::source(&config.turn),
        limits: Default::default(),
        router: cluster
            .clone()
            .map(|n| Arc::new(n) as Arc<dyn teleconsult_signaling::ConsultationRouter>),
    });
    let documents = teleconsult_documents::DocumentService::new(
        &config.documents,
        store.clone(),
        consultations.clone(),
    )
    .context("documents.master_key or documents.previous_master_keys")?;
    // Chat is sealed with the documents' master keys (a key per consultation, wrapped).
    let chat = teleconsult_documents::ChatArchive::start(
        store.clone(),
        Arc::new(
            teleconsult_documents::config::keyring(&config.documents)
                .context("documents.master_key or documents.previous_master_keys")?,
        ),
    );
    consultations.attach_chat_recorder(Arc::new(chat.clone()));
    let accounts = teleconsult_accounts::AccountService::new(
        &config.accounts,
        store.clone() as Arc<dyn teleconsult_store::AccountStore>,
    );
    let playback = crate::recording::Playback::new(
        &config.storage.data_dir,
        config
            .recording
            .playback_cache_mib
            .saturating_mul(1024 * 1024),
        Duration::from_secs(config.recording.playback_idle_secs.max(1)),
    );
    let state = AppState {
        accounts,
        cluster,
        playback,
        config: config.clone(),
        consultations,
        billing,
        signaling,
        store,
        documents,
        chat,
    };
    let app = crate::http::router(state.clone());
    let header_read_timeout = Duration::from_secs(config.server.header_read_timeout_secs);
    let metrics_handle: Handle<SocketAddr> = Handle::new();
    let metrics_task = {
        let mut server = axum_server::from_tcp(metrics_listener)
            .context("metrics listener")?
            .handle(metrics_handle.clone());
        header_timeout(server.http_builder(), header_read_timeout);
        tokio::spawn(server.serve(crate::http::metrics_router(state.clone()).into_make_service()))
    };
    let handle: Handle<SocketAddr> = Handle::new();
    let tls = tls_config.is_some();
    let task = match tls_config {
        Some(tls_config) => {
            let server = axum_server::from_tcp_rustls(
                listener,
                RustlsConfig::from_config(Arc::new(tls_config)),
            )
            .context("HTTPS listener")?
            .handle(handle.clone());
            let mut server = server;
            header_timeout(server.http_builder(), header_read_timeout);
            tokio::spawn(server.serve(app.into_make_service_with_connect_info::<SocketAddr>()))
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .context("HTTP listener")?
                .handle(handle.clone());
            header_timeout(server.http_builder(), header_read_timeout);
            tokio::spawn(server.serve(app.into_make_service_with_connect_info::<SocketAddr>()))
        }
    };
    tracing::info!(
        %http_addr,
        %media_addr,
        %metrics_addr,
        tls,
        "listening (HTTP{} on {http_addr}, media UDP on {media_addr})",
        if tls { "S" } else { "" }
    );
    if let Some(tcp_addr) = media_tcp_addr {
        tracing::info!(%tcp_addr, "media ICE-TCP on {tcp_addr}");
    }
    Ok(RunningServer {
        http_addr,
        media_addr,
        state,
        tls,
        metrics_addr,
        handle,
        task,
        metrics_handle,
        metrics_task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Slow-loris: a connection that never finishes its request header is closed after
    /// `server.header_read_timeout_secs`, on the public and the metrics listener, while a
    /// normal request on the same server is served.
    #[tokio::test]
    async fn a_header_that_never_ends_is_cut_off() {
        let mut config = Config::for_tests();
        config.server.header_read_timeout_secs = 1;
        let server = start(config).await.expect("starts");
        for addr in [server.http_addr, server.metrics_addr] {
            let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
            slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
                .await
                .expect("write");
            let ok = get(server.http_addr, "/healthz").await;
            assert_eq!(ok.status, 200, "others are served meanwhile");
            // The server ends the connection (maybe after a 408); a timeout here means it
            // would have held it forever.
            let closed = tokio::time::timeout(Duration::from_secs(15), async {
                let mut buf = [0u8; 1024];
                loop {
                    match slow.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "{addr}: the slow connection was not closed");
        }
        server.shutdown().await.expect("shutdown");
    }

    struct Reply {
        status: u16,
        headers: HashMap<String, String>,
        body: String,
    }

    /// A minimal HTTP/1.1 client: one request per connection.
    async fn request<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        method: &str,
        path: &str,
    ) -> Reply {
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        // A TLS peer may close without close_notify after the body: keep what was read.
        let _ = stream.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("complete response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = s.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            s = rest[n..].trim_start_matches("\r\n");
        }
        out
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        request(stream, "GET", path).await
    }

    fn assert_security_headers(r: &Reply) {
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(
            r.headers["permissions-policy"],
            "camera=(self), microphone=(self), display-capture=(self), geolocation=()"
        );
        assert_eq!(r.headers["cross-origin-opener-policy"], "same-origin");
        assert!(r.headers.contains_key("cache-control"));
        // Plain HTTP (tests): no HSTS.
        assert!(!r.headers.contains_key("strict-transport-security"));
        let csp = &r.headers["content-security-policy"];
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            // The end_to_end frame encryption runs in a worker of ours (e2ee-worker.js).
            "worker-src 'self'",
            "style-src 'self'",
            "connect-src 'self' ws://localhost",
            "media-src 'self' blob:",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{part} missing in {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }

    #[tokio::test]
    async fn plain_http_edge() {
        let server = start(Config::for_tests()).await.expect("server starts");
        let addr = server.http_addr;
        assert_ne!(addr.port(), 0);
        assert_ne!(server.media_addr.port(), 0);

        let r = get(addr, "/healthz").await;
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["status"], "ok");
        assert_eq!(v["storage"], "ok");
        assert_eq!(v["billing_queue"], 0);
        assert_security_headers(&r);

        // Scrapes are not served on the public listener...
        assert_eq!(get(addr, "/metrics").await.status, 404);
        // ...but on their own, which serves nothing else.
        assert_eq!(get(server.metrics_addr, "/healthz").await.status, 404);
        assert_ne!(server.metrics_addr, addr);
        let r = get(server.metrics_addr, "/metrics").await;
        assert_eq!(r.status, 200);
        assert!(r.headers["content-type"].starts_with("text/plain"));
        for name in [
            "# TYPE teleconsult_websocket_connections gauge",
            "# TYPE teleconsult_consultations gauge",
            "# TYPE teleconsult_participants gauge",
            "# TYPE teleconsult_tracks gauge",
            "# TYPE teleconsult_rtp_packets_in_total counter",
            "# HELP teleconsult_websocket_connections Open signalling WebSockets",
        ] {
            assert!(r.body.contains(name), "{name} missing in\n{}", r.body);
        }

        // The web client is always embedded (build.rs refuses to build without it).
        for path in ["/join", "/"] {
            let r = get(addr, path).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
            assert_eq!(r.headers["cache-control"], "no-store");
            assert!(r.body.to_ascii_lowercase().contains("<html"), "{path}");
            assert_security_headers(&r);
        }
        // Every embedded file is served with its content type.
        for file in crate::http::web_asset_paths() {
            let file = file.as_ref();
            let bytes = crate::http::asset(file).expect("listed files are embedded");
            let r = get(addr, &format!("/{file}")).await;
            assert_eq!(r.status, 200, "{file}");
            assert_eq!(r.headers["content-type"], crate::http::content_type(file));
            assert_eq!(r.headers["content-length"], bytes.len().to_string());
            assert_security_headers(&r);
        }

        for path in [
            "/nope",
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "//etc/passwd",
            "/join/x",
        ] {
            let r = get(addr, path).await;
            assert_eq!(r.status, 404, "{path}");
            assert_security_headers(&r);
        }
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let r = request(stream, "POST", "/app.js").await;
        assert!(r.status == 404 || r.status == 405, "{}", r.status);

        // A plain GET on /ws is not an upgrade: refused, not served.
        let r = get(addr, "/ws").await;
        assert!(r.status >= 400, "{}", r.status);

        server.shutdown().await.expect("clean shutdown");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener closed after shutdown"
        );
    }

    /// An unreachable MongoDB does not stop the server: it starts, and `/healthz` answers 200
    /// with `degraded` and `storage: unavailable`.
    #[tokio::test]
    async fn healthz_reports_unreachable_storage() {
        let mut config = Config::for_tests();
        // Port 1 on loopback: nothing listens there, connections are refused at once.
        config.storage.mongodb_uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300".into();
        config.validate(true).expect("valid");
        let server = start(config).await.expect("starts without its database");
        let r = get(server.http_addr, "/healthz").await;
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["status"], "degraded", "{v}");
        assert_eq!(v["storage"], "unavailable", "{v}");
        server.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn two_servers_in_one_process() {
        let a = start(Config::for_tests()).await.expect("first");
        let b = start(Config::for_tests()).await.expect("second");
        assert_ne!(a.http_addr, b.http_addr);
        assert_eq!(get(b.metrics_addr, "/metrics").await.status, 200);
        a.shutdown().await.expect("a");
        b.shutdown().await.expect("b");
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "teleconsult-server-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[tokio::test]
    async fn https_with_self_signed_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let dir = temp_dir("tls");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, ck.cert.pem()).expect("write cert");
        std::fs::write(&key_path, ck.signing_key.serialize_pem()).expect("write key");

        let mut config = Config::for_tests();
        config.server.tls = true;
        config.server.tls_cert = cert_path;
        config.server.tls_key = key_path;
        config.validate(true).expect("valid");
        let server = start(config).await.expect("TLS server starts");
        assert!(server.base_url().starts_with("https://"));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let r = request(tls, "GET", "/healthz").await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains(r#""status":"ok""#), "{}", r.body);
        assert!(r.headers["strict-transport-security"].contains("max-age="));
        assert!(r.headers["content-security-policy"].contains("wss://localhost"));

        // Plain HTTP on the TLS port gets nothing useful.
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            let mut s = tokio::net::TcpStream::connect(server.http_addr)
                .await
                .expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            buf
        })
        .await
        .expect("server closes a non-TLS connection");
        assert!(!String::from_utf8_lossy(&r).contains("\"ok\""));

        server.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn unreadable_tls_files_are_named() {
        let mut config = Config::for_tests();
        config.server.tls = true;
        config.server.tls_cert = "/nonexistent/teleconsult/cert.pem".into();
        config.server.tls_key = "/nonexistent/teleconsult/key.pem".into();
        let err = format!("{:#}", start(config).await.err().expect("refused"));
        assert!(err.contains("server.tls_cert"), "{err}");
        assert!(err.contains("/nonexistent/teleconsult/cert.pem"), "{err}");

        let dir = temp_dir("badkey");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, ck.cert.pem()).expect("write cert");
        std::fs::write(&key_path, "not a key").expect("write key");
        let mut config = Config::for_tests();
        config.server.tls = true;
        config.server.tls_cert = cert_path;
        config.server.tls_key = key_path.clone();
        let err = format!("{:#}", start(config).await.err().expect("refused"));
        assert!(err.contains("server.tls_key"), "{err}");
        assert!(err.contains(&key_path.display().to_string()), "{err}");
    }

    /// Tokens travel in fragments and messages, but a client could still put one in a query
    /// string or a path: neither may reach the logs.
    #[test]
    fn request_logs_carry_no_query_or_unknown_path() {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        // One thread: the server's spawned tasks log through this thread's subscriber.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let server = start(Config::for_tests()).await.expect("server starts");
            let addr = server.http_addr;
            // Parallel tests may have registered the log callsites while no subscriber was
            // listening (cached as disabled): recompute now that ours is in place.
            tracing::callsite::rebuild_interest_cache();
            get(addr, "/join?token=SECRET-QUERY-TOKEN").await;
            get(addr, "/healthz?token=SECRET-QUERY-TOKEN2").await;
            get(addr, "/SECRET-PATH-TOKEN").await;
            get(addr, "/ws?token=SECRET-WS-TOKEN").await;
            server.shutdown().await.expect("shutdown");
        });
        let logs = String::from_utf8_lossy(&buf.0.lock().expect("lock")).into_owned();
        assert!(logs.contains("path=\"/join\""), "{logs}");
        assert!(logs.contains("path=\"<unmatched>\""), "{logs}");
        assert!(!logs.contains("SECRET"), "{logs}");
        assert!(!logs.contains("token="), "{logs}");
    }
}
