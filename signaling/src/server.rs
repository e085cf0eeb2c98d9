//! Starting and stopping the whole server in-process: the HTTP(S) listener (axum, rustls), the
//! SFU's media socket, the consultation service. Used by `teleconsult serve` and by tests.

use crate::config::Config;
use crate::consultation::ConsultationService;
use crate::AppState;
use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use teleconsult_sfu::{Sfu, SfuConfig};
use tokio::task::JoinHandle;

/// How long open connections (WebSockets included) get to finish on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running server. Dropping it leaves the server running; call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// Where the HTTP(S) listener is bound.
    pub http_addr: SocketAddr,
    /// The media address announced in ICE candidates (announce IP, bound UDP port).
    pub media_addr: SocketAddr,
    pub state: AppState,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    handle: Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
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

    /// Stop accepting connections, give open ones [`SHUTDOWN_GRACE`] to finish, then stop.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
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

    let sfu = Sfu::start(SfuConfig {
        bind: SocketAddr::new(config.media.bind, config.media.udp_port),
        announce_ip: config.media.announce_ip,
        workers: config.media.workers,
    })
    .with_context(|| {
        format!(
            "media.bind/media.udp_port: cannot start the media plane on {}:{}",
            config.media.bind, config.media.udp_port
        )
    })?;
    let media_addr = sfu.local_addr();

    let config = Arc::new(config);
    let state = AppState {
        config: config.clone(),
        consultations: ConsultationService::new(config.clone(), sfu),
    };
    let app = crate::http::router(state.clone());
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
            tokio::spawn(server.serve(app.into_make_service()))
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .context("HTTP listener")?
                .handle(handle.clone());
            tokio::spawn(server.serve(app.into_make_service()))
        }
    };
    tracing::info!(
        %http_addr,
        %media_addr,
        tls,
        "listening (HTTP{} on {http_addr}, media UDP on {media_addr})",
        if tls { "S" } else { "" }
    );
    Ok(RunningServer {
        http_addr,
        media_addr,
        state,
        tls,
        handle,
        task,
    })
}
