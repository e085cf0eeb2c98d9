//! One typed configuration. Defaults are documented key by key in `config/default.toml`.
//! (Loading, environment overrides and validation: see `load`.)

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

/// The development signing secret used by `serve --dev` and `token --dev`. Refused outside dev mode.
pub const DEV_SIGNING_SECRET: &str = "teleconsult-development-secret-do-not-use-in-production";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub media: MediaConfig,
    pub consultation: ConsultationConfig,
    pub signaling: SignalingConfig,
    pub auth: AuthConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP(S) listener binds.
    pub bind: IpAddr,
    /// HTTP(S) port; 0 picks a free one (tests).
    pub port: u16,
    /// Base URL printed in join links, e.g. `https://consult.example.org`. Empty: derived from bind/port.
    pub public_url: String,
    /// Serve TLS (rustls). Required outside `--dev`.
    pub tls: bool,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address the single media UDP socket binds.
    pub bind: IpAddr,
    /// Media UDP port (one firewall rule); 0 picks a free one (tests).
    pub udp_port: u16,
    /// Address announced in ICE candidates (the server's public address). Empty: the bind address.
    pub announce_ip: Option<IpAddr>,
    /// Media worker threads; 0 means one per CPU core.
    pub workers: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsultationConfig {
    pub max_participants: usize,
    /// How long a dropped participant may come back before being counted as left.
    pub reconnect_grace_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    /// Largest WebSocket message accepted; bigger closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Time allowed between opening the socket and sending `join`.
    pub join_timeout_secs: u64,
    /// A socket silent for this long is closed.
    pub idle_timeout_secs: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC key for join tokens: at least 32 bytes, and not the development secret outside `--dev`.
    pub signing_secret: String,
    /// Default lifetime of tokens minted by `teleconsult token`.
    pub token_ttl_secs: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("signing_secret", &"<redacted>")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            media: MediaConfig::default(),
            consultation: ConsultationConfig::default(),
            signaling: SignalingConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 443,
            public_url: String::new(),
            tls: true,
            tls_cert: PathBuf::from("/etc/teleconsult/tls/cert.pem"),
            tls_key: PathBuf::from("/etc/teleconsult/tls/key.pem"),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            udp_port: 40000,
            announce_ip: None,
            workers: 0,
        }
    }
}

impl Default for ConsultationConfig {
    fn default() -> Self {
        ConsultationConfig {
            max_participants: 12,
            reconnect_grace_secs: 60,
        }
    }
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            max_message_bytes: 64 * 1024,
            join_timeout_secs: 10,
            idle_timeout_secs: 30,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signing_secret: String::new(),
            token_ttl_secs: 2 * 3600,
        }
    }
}

impl Config {
    /// The development configuration behind `serve --dev`: loopback only, plain HTTP on 8080,
    /// media on UDP 40000, the development signing secret.
    pub fn dev() -> Config {
        let mut c = Config::default();
        c.server.bind = IpAddr::from([127, 0, 0, 1]);
        c.server.port = 8080;
        c.server.tls = false;
        c.media.bind = IpAddr::from([127, 0, 0, 1]);
        c.media.udp_port = 40000;
        c.auth.signing_secret = DEV_SIGNING_SECRET.to_string();
        c
    }

    /// A configuration for in-process tests: loopback, free ports, plain HTTP, dev secret.
    pub fn for_tests() -> Config {
        let mut c = Config::dev();
        c.server.port = 0;
        c.media.udp_port = 0;
        c.media.workers = 2;
        c
    }
}
