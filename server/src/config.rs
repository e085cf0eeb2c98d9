//! One typed configuration. Defaults are documented key by key in `config/default.toml`.
//! Loading layers the defaults (or `config/dev.toml` with `--dev`), the TOML file and
//! `TELECONSULT_SECTION__KEY` environment variables with `figment`, then validates (see
//! [`Config::load`]). Secrets are [`SecretString`]s: `Debug` shows `[REDACTED]`, serialising
//! writes `<redacted>`, and reading one takes an explicit [`ExposeSecret::expose_secret`].

use figment::Figment;
use figment::providers::{Format, Toml};
pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
pub use teleconsult_accounts::config::{AccountsConfig, DEV_TOTP_KEY};
pub use teleconsult_billing::config::{BillingConfig, Rounding};
pub use teleconsult_consultation::config::ConsultationConfig;
pub use teleconsult_documents::config::DocumentsConfig;
use teleconsult_documents::config::redacted;
pub use teleconsult_signaling::config::SignalingConfig;

/// The development signing secret used by `serve --dev` and `token --dev`. Refused outside dev mode.
pub const DEV_SIGNING_SECRET: &str = "teleconsult-development-secret-do-not-use-in-production";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub media: MediaConfig,
    pub consultation: ConsultationConfig,
    pub signaling: SignalingConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub billing: BillingConfig,
    pub documents: DocumentsConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    pub accounts: AccountsConfig,
    pub cluster: ClusterConfig,
    pub turn: TurnConfig,
    pub recording: RecordingConfig,
}

/// Recordings (`[recording]`, issue 13): how their journals are buffered and synced.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Seal and `fsync` a recording's journal at least this often: what a crash can lose.
    pub sync_interval_ms: u64,
    /// Packets a recording may queue before its taps drop (and count) the next ones.
    pub queue_packets: usize,
    /// Stored recordings older than this are deleted (audited as `recording.delete` by
    /// `system`), checked at start-up and hourly. 0: kept until deleted by hand.
    pub retention_days: u64,
    /// Per organisation (`org_…` id → days, 0: kept until deleted by hand), instead of
    /// `retention_days` for that organisation's consultations.
    pub retention_days_by_organisation: std::collections::BTreeMap<String, u64>,
    /// Recordings exported for playback on the practitioner's page are kept in memory (never
    /// as plaintext files on disk), up to this many MiB in all...
    pub playback_cache_mib: u64,
    /// ...and each for this long after its last request.
    pub playback_idle_secs: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            sync_interval_ms: 1000,
            queue_packets: 4096,
            retention_days: 90,
            retention_days_by_organisation: Default::default(),
            playback_cache_mib: 256,
            playback_idle_secs: 600,
        }
    }
}

/// Many nodes, one service (`[cluster]`, issue 14): this node's heartbeat in the shared MongoDB.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Run as one node of a cluster (requires `storage.mongodb_uri`).
    pub enabled: bool,
    /// This node's id, unique in the cluster (letters, digits, `-`, `_`; at most 64).
    pub node_id: String,
    /// Where clients reach this node directly, e.g. `http://10.0.0.5:8080` (not the load
    /// balancer's URL: join links keep pointing there, `server.public_url`).
    pub public_url: String,
    /// Optional region; placements prefer nodes of the joining node's region.
    pub region: String,
    /// A node is alive while its heartbeat is at most this old; it heartbeats five times a lease.
    pub lease_secs: u64,
    /// On SIGTERM, wait at most this long for the calls on this node to end (draining).
    pub drain_limit_secs: u64,
    /// The operator's credential for `teleconsult drain` (`POST /drain` on the metrics
    /// listener, `Authorization: Bearer <token>`). Empty: no drain endpoint (SIGTERM only).
    /// At least 32 bytes if set.
    #[serde(serialize_with = "redacted")]
    pub operator_token: SecretString,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            node_id: String::new(),
            public_url: String::new(),
            region: String::new(),
            lease_secs: 5,
            drain_limit_secs: 4 * 3600,
            operator_token: SecretString::default(),
        }
    }
}

/// TURN servers handed to clients (`[turn]`): coturn with `use-auth-secret`; the server mints
/// each participant time-limited credentials (REST-API style, see `crate::turn`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// TURN URLs sent to clients, e.g. `turns:turn.example.org:443?transport=tcp`. Empty: no
    /// TURN server is offered.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`; at least 32 bytes when `urls` is set.
    #[serde(serialize_with = "redacted")]
    pub secret: SecretString,
    /// Lifetime of a minted credential, seconds (60..=86400).
    pub ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            urls: Vec::new(),
            secret: SecretString::default(),
            ttl_secs: 6 * 3600,
        }
    }
}

/// The Prometheus listener (`[metrics]`): its own plain-HTTP listener serving `/metrics` only,
/// never the public one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address it binds: loopback by default (a scraper on the same host, or a sidecar).
    pub bind: IpAddr,
    /// Its port; 0 picks a free one.
    pub port: u16,
    /// When set, every scrape must send `Authorization: Bearer <token>`; required (at least
    /// 32 bytes) when `bind` is not a loopback address.
    #[serde(serialize_with = "redacted")]
    pub bearer_token: SecretString,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 9464,
            bearer_token: SecretString::default(),
        }
    }
}

/// The development key of billing pseudonyms. Refused outside dev.
pub const DEV_PSEUDONYM_KEY: &str = "teleconsult-development-pseudonym-key-not-for-production";

/// The development master key for document encryption (base64 of 32 bytes). Refused outside dev.
pub const DEV_MASTER_KEY: &str = "ZGV2LW1hc3Rlci1rZXktZG8tbm90LXVzZS0xMjM0NTY=";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// MongoDB connection string (replica sets, `tls=true` pass to the driver). Empty: the
    /// embedded store in `data_dir`. A configured URI wins, in `--dev` too. A secret: it may
    /// carry a password.
    #[serde(serialize_with = "redacted")]
    pub mongodb_uri: SecretString,
    /// MongoDB database name.
    pub database: String,
    /// Directory of the embedded store and of the on-disk billing queue used during outages.
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// API key for admin exports (billing for all practitioners, audit log), sent as
    /// `Authorization: Bearer <key>`. Empty: admin access disabled. At least 32 bytes if set.
    #[serde(serialize_with = "redacted")]
    pub api_key: SecretString,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            mongodb_uri: SecretString::default(),
            database: "teleconsult".to_string(),
            data_dir: PathBuf::from("/var/lib/teleconsult"),
        }
    }
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
    /// A client must send a request's whole header within this long (slow-loris), on the
    /// public and the metrics listener.
    pub header_read_timeout_secs: u64,
    /// Largest request body of every route but document uploads (`documents.max_bytes`); a
    /// larger declared length is refused at once with 413.
    pub max_body_bytes: usize,
    /// A request body that sends nothing for this long is abandoned (slow body).
    pub body_idle_timeout_secs: u64,
    /// A handler that has not produced its response within this long (the storage paused or
    /// unreachable) answers 503 `timeout`; document uploads are exempt (they stream for as long
    /// as their body does, bounded by `body_idle_timeout_secs`).
    pub request_timeout_secs: u64,
    /// Origins (`https://host[:port]`) besides this server's own whose pages may open the
    /// signalling WebSocket; a handshake from any other is refused with 403.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address the media UDP port binds (one socket per worker on it, `SO_REUSEPORT`).
    pub bind: IpAddr,
    /// Media UDP port (one firewall rule); 0 picks a free one (tests).
    pub udp_port: u16,
    /// Address announced in ICE candidates (the server's public address). Empty: the bind address.
    pub announce_ip: Option<IpAddr>,
    /// Media worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// ICE-TCP (RFC 6544) on one TCP port beside the UDP one, for networks that drop UDP.
    pub tcp_enabled: bool,
    /// The ICE-TCP port (on `bind`); 0 picks a free one (tests).
    pub tcp_port: u16,
    /// ICE-TCP connections per source IP address (pending or established).
    pub tcp_max_per_ip: usize,
    /// Milliseconds a new ICE-TCP connection has to send its first STUN binding request.
    pub tcp_first_message_ms: u64,
    /// Datagrams a source address that is no participant's may send to the media port within
    /// a second before it is ignored for `unknown_source_ignore_secs`.
    pub unknown_source_datagrams_per_sec: u32,
    pub unknown_source_ignore_secs: u64,
}

impl MediaConfig {
    /// The SFU's ICE-TCP settings, `None` when off.
    pub fn tcp_settings(&self) -> Option<teleconsult_sfu::tcp::TcpSettings> {
        self.tcp_enabled.then(|| teleconsult_sfu::tcp::TcpSettings {
            port: self.tcp_port,
            max_per_ip: self.tcp_max_per_ip,
            first_message_timeout: std::time::Duration::from_millis(self.tcp_first_message_ms),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC key for join tokens: at least 32 bytes, and not the development secret outside `--dev`.
    #[serde(serialize_with = "redacted")]
    pub signing_secret: SecretString,
    /// Default lifetime of tokens minted by `teleconsult token`.
    pub token_ttl_secs: u64,
    /// Key id of `signing_secret` in join links (`kid`): the key that signs new links.
    pub signing_key_id: String,
    /// Retired link signing keys: they still verify the unexpired links they signed.
    pub previous_signing_keys: Vec<PreviousSigningKey>,
}

/// One retired join-link signing key (`auth.previous_signing_keys`). `Debug` shows no key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSigningKey {
    /// The `signing_key_id` it had when it was current.
    pub id: String,
    /// At least 32 bytes.
    #[serde(serialize_with = "redacted")]
    pub key: SecretString,
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
            header_read_timeout_secs: 10,
            max_body_bytes: 64 * 1024,
            body_idle_timeout_secs: 30,
            request_timeout_secs: 15,
            allowed_origins: Vec::new(),
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
            tcp_enabled: true,
            tcp_port: 40000,
            tcp_max_per_ip: 16,
            tcp_first_message_ms: 5000,
            unknown_source_datagrams_per_sec: 50,
            unknown_source_ignore_secs: 10,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signing_secret: SecretString::default(),
            token_ttl_secs: 2 * 3600,
            signing_key_id: "k1".to_string(),
            previous_signing_keys: Vec::new(),
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
        c.auth.signing_secret = DEV_SIGNING_SECRET.into();
        c.documents.master_key = DEV_MASTER_KEY.into();
        c.billing.pseudonym_key = DEV_PSEUDONYM_KEY.into();
        c.accounts.totp_key = DEV_TOTP_KEY.into();
        c.storage.data_dir = PathBuf::from(".teleconsult-data");
        c
    }

    /// A configuration for in-process tests: loopback, free ports, plain HTTP, dev secret.
    pub fn for_tests() -> Config {
        let mut c = Config::dev();
        c.server.port = 0;
        c.media.udp_port = 0;
        c.media.tcp_port = 0;
        c.metrics.port = 0;
        c.media.workers = 2;
        c.storage.data_dir = std::env::temp_dir().join(format!(
            "teleconsult-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        c
    }
}

/// Prefix of environment overrides: `TELECONSULT_SECTION__KEY=value`.
pub const ENV_PREFIX: &str = "TELECONSULT_";

/// Why the configuration could not be loaded. Messages name the file, variable or key at fault
/// and never contain the signing secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Load the configuration: `Config::dev()` if `dev` else `Config::default()`, then the TOML
    /// file at `path` (if any), then `TELECONSULT_SECTION__KEY` environment variables, then
    /// [`Config::validate`].
    pub fn load(path: Option<&Path>, dev: bool) -> Result<Config, ConfigError> {
        Config::load_from(path, dev, Config::process_env())
    }

    /// The process environment's `TELECONSULT_` variables.
    fn process_env() -> impl Iterator<Item = (String, String)> {
        std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with(ENV_PREFIX)
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
    }

    /// Like [`Config::load`], but only the keys that minting a join link needs are validated
    /// (`auth.*`, `server.public_url`): `teleconsult token` need not read the TLS key.
    pub fn load_for_tokens(path: Option<&Path>, dev: bool) -> Result<Config, ConfigError> {
        Config::load_for_tokens_from(path, dev, Config::process_env())
    }

    /// [`Config::load_for_tokens`] with the environment given as pairs.
    pub fn load_for_tokens_from<I, K, V>(
        path: Option<&Path>,
        dev: bool,
        env: I,
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let config = Config::merge_sources(path, dev, env)?;
        let problems: Vec<String> = config
            .problems(dev)
            .into_iter()
            .filter(|p| p.starts_with("auth.") || p.starts_with("server.public_url:"))
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// [`Config::load`] with the environment given as `(name, value)` pairs. Only names of the form
    /// `TELECONSULT_SECTION__KEY` are read; others (`PATH`, `TELECONSULT_BIN`) are ignored.
    pub fn load_from<I, K, V>(path: Option<&Path>, dev: bool, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let config = Config::merge_sources(path, dev, env)?;
        config.validate(dev)?;
        Ok(config)
    }

    /// Base, file and environment layered, not yet validated.
    fn merge_sources<I, K, V>(path: Option<&Path>, dev: bool, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        // The base: every key's default (serde), or the development settings over them.
        let mut figment = Figment::new();
        if dev {
            figment = figment.merge(Toml::string(DEV_TOML));
        }
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            // Check the file on its own so that syntax errors, unknown keys and wrong types are
            // blamed on it with a line number (figment knows no lines), without quoting it.
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                message: toml_error_message(&text, &e),
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            // Only `TELECONSULT_SECTION__KEY` names are configuration; others with the prefix
            // (e.g. `TELECONSULT_BIN`, used by test harnesses) are not ours to refuse.
            .filter(|(k, _)| {
                k.as_ref()
                    .strip_prefix(ENV_PREFIX)
                    .is_some_and(|rest| rest.contains("__"))
            })
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        vars.sort();
        for (var, value) in vars {
            figment = apply_env(figment, &var, &value)?;
        }
        figment
            .extract::<Config>()
            .map_err(|e| ConfigError::Invalid(vec![figment_message(&e)]))
    }

    /// Check every value; all problems are reported at once, each naming its key.
    pub fn validate(&self, dev: bool) -> Result<(), ConfigError> {
        let p = self.problems(dev);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    /// Every problem, as `key: what is expected`.
    fn problems(&self, dev: bool) -> Vec<String> {
        let mut p: Vec<String> = Vec::new();
        let mut bad = |key: &str, msg: &str| p.push(format!("{key}: {msg}"));

        if !(50..=60_000).contains(&self.recording.sync_interval_ms) {
            bad("recording.sync_interval_ms", "must be 50..=60000");
        }
        if !(64..=1_000_000).contains(&self.recording.queue_packets) {
            bad("recording.queue_packets", "must be 64..=1000000");
        }
        if self.recording.retention_days > 36_500 {
            bad("recording.retention_days", "must be 0..=36500");
        }

        // server
        if !self.server.public_url.is_empty() {
            let u = &self.server.public_url;
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            match rest {
                None => bad(
                    "server.public_url",
                    "must start with https:// or http:// (or be empty)",
                ),
                Some(rest) => {
                    let host = rest.trim_end_matches('/');
                    if host.is_empty()
                        || host.contains(['?', '#', ' ', '@'])
                        || !u.is_ascii()
                        || u.chars().any(|c| c.is_ascii_control())
                    {
                        bad(
                            "server.public_url",
                            "must be a base URL like https://consult.example.org, without query, fragment or credentials",
                        );
                    } else if !dev && u.starts_with("http://") {
                        bad(
                            "server.public_url",
                            "must use https:// outside --dev (browsers need a secure context)",
                        );
                    }
                }
            }
        }
        if !dev && !self.server.tls {
            bad(
                "server.tls",
                "must be true outside --dev (plain HTTP only with --dev)",
            );
        }
        if self.server.tls {
            for (key, path) in [
                ("server.tls_cert", &self.server.tls_cert),
                ("server.tls_key", &self.server.tls_key),
            ] {
                if path.as_os_str().is_empty() {
                    bad(
                        key,
                        "missing: a PEM file is required when server.tls = true",
                    );
                } else if let Err(e) = std::fs::File::open(path) {
                    bad(
                        key,
                        &format!("cannot read PEM file {}: {e}", path.display()),
                    );
                }
            }
        }

        // media
        if !dev && self.media.bind.is_unspecified() && self.media.announce_ip.is_none() {
            bad(
                "media.announce_ip",
                "missing: required when media.bind is a wildcard address (the address browsers reach the server at)",
            );
        }
        if self
            .media
            .announce_ip
            .is_some_and(|ip| ip.is_unspecified() || ip.is_multicast())
        {
            bad(
                "media.announce_ip",
                "must be a unicast address, not a wildcard or multicast address",
            );
        }
        if self.media.workers > 256 {
            bad("media.workers", "must be in 0..=256 (0 = one per CPU core)");
        }
        if !(1..=100_000).contains(&self.media.unknown_source_datagrams_per_sec) {
            bad(
                "media.unknown_source_datagrams_per_sec",
                "must be in 1..=100000",
            );
        }
        if !(1..=3600).contains(&self.media.unknown_source_ignore_secs) {
            bad(
                "media.unknown_source_ignore_secs",
                "must be between 1 and 3600 seconds",
            );
        }
        if self.media.tcp_enabled {
            if !(1..=1024).contains(&self.media.tcp_max_per_ip) {
                bad("media.tcp_max_per_ip", "must be in 1..=1024");
            }
            if !(100..=60_000).contains(&self.media.tcp_first_message_ms) {
                bad(
                    "media.tcp_first_message_ms",
                    "must be between 100 and 60000 milliseconds",
                );
            }
            if self.media.tcp_port != 0 && self.media.tcp_port == self.server.port {
                // Both bind TCP: they cannot share a port on the same address.
                if self.media.bind == self.server.bind
                    || self.media.bind.is_unspecified()
                    || self.server.bind.is_unspecified()
                {
                    bad(
                        "media.tcp_port",
                        "must differ from server.port on the same address",
                    );
                }
            }
        }

        // turn
        if !self.turn.urls.is_empty() {
            if self.turn.secret.expose_secret().len() < 32 {
                bad(
                    "turn.secret",
                    "must be at least 32 bytes when turn.urls is set (coturn's static-auth-secret)",
                );
            }
            for url in &self.turn.urls {
                if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                    bad("turn.urls", "every URL must start with turn: or turns:");
                    break;
                }
            }
        }
        if !(60..=86_400).contains(&self.turn.ttl_secs) {
            bad("turn.ttl_secs", "must be between 60 and 86400 seconds");
        }

        // consultation
        if !(2..=256).contains(&self.consultation.max_participants) {
            bad("consultation.max_participants", "must be in 2..=256");
        }
        if !(60..=7 * 24 * 3600).contains(&self.consultation.invitation_after_secs) {
            bad(
                "consultation.invitation_after_secs",
                "must be between 60 seconds and 7 days (604800)",
            );
        }
        if self.consultation.invitation_before_secs > 24 * 3600 {
            bad(
                "consultation.invitation_before_secs",
                "must be at most one day (86400)",
            );
        }
        if self.consultation.reconnect_grace_secs > 3600 {
            bad(
                "consultation.reconnect_grace_secs",
                "must be at most 3600 seconds",
            );
        }
        if !(1..=10_000).contains(&self.consultation.chat_max_chars) {
            bad("consultation.chat_max_chars", "must be in 1..=10000");
        }
        if !(1..=100).contains(&self.consultation.chat_burst) {
            bad("consultation.chat_burst", "must be in 1..=100");
        }
        if !(100..=60_000).contains(&self.consultation.chat_refill_ms) {
            bad("consultation.chat_refill_ms", "must be in 100..=60000");
        }
        if !(1..=10_000).contains(&self.consultation.chat_history) {
            bad("consultation.chat_history", "must be in 1..=10000");
        }

        // signaling
        if !(1024..=16 * 1024 * 1024).contains(&self.signaling.max_message_bytes) {
            bad(
                "signaling.max_message_bytes",
                "must be at least 1024 and at most 16777216 (16 MiB)",
            );
        }
        if !(1..=300).contains(&self.signaling.join_timeout_secs) {
            bad("signaling.join_timeout_secs", "must be in 1..=300 seconds");
        }
        if !(15..=3600).contains(&self.signaling.idle_timeout_secs) {
            bad(
                "signaling.idle_timeout_secs",
                "must be in 15..=3600 seconds (clients ping every 10 s)",
            );
        }
        if !(1..=1000).contains(&self.signaling.messages_per_second) {
            bad("signaling.messages_per_second", "must be in 1..=1000");
        }
        if !(1..=10_000).contains(&self.signaling.message_burst) {
            bad("signaling.message_burst", "must be in 1..=10000");
        }
        if !(1..=100_000).contains(&self.signaling.max_connections_per_ip) {
            bad("signaling.max_connections_per_ip", "must be in 1..=100000");
        }
        if !(1..=1_000_000).contains(&self.signaling.max_connections) {
            bad("signaling.max_connections", "must be in 1..=1000000");
        }
        if !(8..=65_536).contains(&self.signaling.outbox_messages) {
            bad("signaling.outbox_messages", "must be in 8..=65536");
        }

        // auth (never print the secret itself)
        let secret = self.auth.signing_secret.expose_secret();
        if secret.is_empty() {
            bad(
                "auth.signing_secret",
                "missing: set it in the configuration file or TELECONSULT_AUTH__SIGNING_SECRET (at least 32 bytes)",
            );
        } else if secret.len() < 32 {
            bad("auth.signing_secret", "must be at least 32 bytes");
        } else if !dev && bool::from(secret.as_bytes().ct_eq(DEV_SIGNING_SECRET.as_bytes())) {
            bad(
                "auth.signing_secret",
                "the development secret is refused outside --dev; generate one (e.g. `openssl rand -base64 48`)",
            );
        }
        if secret.len() >= 32
            && let Err(e) = self.keyring()
        {
            bad(
                "auth.signing_key_id or auth.previous_signing_keys",
                &e.to_string(),
            );
        }
        for (i, previous) in self.auth.previous_signing_keys.iter().enumerate() {
            let key = previous.key.expose_secret();
            if !dev && bool::from(key.as_bytes().ct_eq(DEV_SIGNING_SECRET.as_bytes())) {
                bad(
                    &format!("auth.previous_signing_keys[{i}].key"),
                    "the development secret is refused outside --dev",
                );
            }
        }
        if !(60..=30 * 24 * 3600).contains(&self.auth.token_ttl_secs) {
            bad(
                "auth.token_ttl_secs",
                "must be between 60 seconds and 30 days (2592000)",
            );
        }

        // storage
        if self.storage.database.is_empty()
            || !self
                .storage
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bad(
                "storage.database",
                "must be a non-empty name of letters, digits, '_' or '-'",
            );
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            bad("storage.data_dir", "must be a directory path");
        }
        let uri = self.storage.mongodb_uri.expose_secret();
        let mongo_scheme = uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://");
        if !uri.is_empty() && !mongo_scheme {
            bad(
                "storage.mongodb_uri",
                "must start with mongodb:// or mongodb+srv:// (or be empty for the embedded store)",
            );
        }

        // billing
        if !(1..=60).contains(&self.billing.checkpoint_secs) {
            bad("billing.checkpoint_secs", "must be between 1 and 60");
        }
        if self.billing.outage_queue_max_events < 100 {
            bad("billing.outage_queue_max_events", "must be at least 100");
        }
        let pseudonym_key = self.billing.pseudonym_key.expose_secret();
        if pseudonym_key.is_empty() {
            bad(
                "billing.pseudonym_key",
                "missing: set it in the configuration file or TELECONSULT_BILLING__PSEUDONYM_KEY (at least 32 bytes, not the signing secret)",
            );
        } else if pseudonym_key.len() < 32 {
            bad("billing.pseudonym_key", "must be at least 32 bytes");
        } else if bool::from(pseudonym_key.as_bytes().ct_eq(secret.as_bytes())) {
            bad(
                "billing.pseudonym_key",
                "must differ from auth.signing_secret (one key, one purpose)",
            );
        } else if !dev && bool::from(pseudonym_key.as_bytes().ct_eq(DEV_PSEUDONYM_KEY.as_bytes())) {
            bad(
                "billing.pseudonym_key",
                "the development key is refused outside --dev; generate one (e.g. `openssl rand -base64 48`)",
            );
        }

        // documents (never print the key itself)
        if self.documents.max_bytes < 1024 {
            bad("documents.max_bytes", "must be at least 1024");
        }
        if !(1..=100).contains(&self.documents.max_concurrent_uploads) {
            bad("documents.max_concurrent_uploads", "must be in 1..=100");
        }
        const KNOWN_TYPES: [&str; 6] = ["pdf", "png", "jpeg", "webp", "text", "dicom"];
        for t in &self.documents.allowed_types {
            if !KNOWN_TYPES.contains(&t.as_str()) {
                bad(
                    "documents.allowed_types",
                    "each entry must be one of pdf, png, jpeg, webp, text, dicom",
                );
                break;
            }
        }
        let key = self.documents.master_key.expose_secret();
        if key.is_empty() {
            bad(
                "documents.master_key",
                "missing: base64 of 32 random bytes (e.g. `openssl rand -base64 32`), or TELECONSULT_DOCUMENTS__MASTER_KEY",
            );
        } else {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(key) {
                Ok(k) if k.len() == 32 => {
                    if !dev && bool::from(key.as_bytes().ct_eq(DEV_MASTER_KEY.as_bytes())) {
                        bad(
                            "documents.master_key",
                            "the development key is refused outside --dev",
                        );
                    }
                }
                _ => bad("documents.master_key", "must be base64 of exactly 32 bytes"),
            }
        }
        if self.documents.master_key_id.is_empty() {
            bad("documents.master_key_id", "must not be empty");
        }
        let mut ids = vec![self.documents.master_key_id.as_str()];
        for (i, previous) in self.documents.previous_master_keys.iter().enumerate() {
            let at = |field: &str| format!("documents.previous_master_keys[{i}].{field}");
            if previous.id.is_empty() {
                bad(&at("id"), "must not be empty");
            } else if ids.contains(&previous.id.as_str()) {
                bad(
                    &at("id"),
                    "repeats a master key id (documents.master_key_id or an earlier entry): each key needs its own",
                );
            }
            ids.push(previous.id.as_str());
            let key = previous.key.expose_secret();
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(key) {
                Ok(k) if k.len() == 32 => {
                    if !dev && bool::from(key.as_bytes().ct_eq(DEV_MASTER_KEY.as_bytes())) {
                        bad(&at("key"), "the development key is refused outside --dev");
                    }
                }
                _ => bad(&at("key"), "must be base64 of exactly 32 bytes"),
            }
        }

        // metrics
        let metrics_token = self.metrics.bearer_token.expose_secret();
        if !metrics_token.is_empty() && metrics_token.len() < 32 {
            bad(
                "metrics.bearer_token",
                "must be at least 32 bytes (or empty on a loopback listener)",
            );
        } else if metrics_token.is_empty() && !self.metrics.bind.is_loopback() {
            bad(
                "metrics.bearer_token",
                "required when metrics.bind is not a loopback address (anyone who can reach it could read the server's load)",
            );
        }
        if self.metrics.port != 0
            && self.metrics.port == self.server.port
            && (self.metrics.bind == self.server.bind
                || self.metrics.bind.is_unspecified()
                || self.server.bind.is_unspecified())
        {
            bad("metrics.port", "must differ from server.port");
        }

        // admin
        let admin_key = self.admin.api_key.expose_secret();
        if !admin_key.is_empty() && admin_key.len() < 32 {
            bad(
                "admin.api_key",
                "must be at least 32 bytes (or empty to disable admin access)",
            );
        }

        // accounts (never print the key itself)
        if !(1..=300).contains(&self.server.request_timeout_secs) {
            p.push("server.request_timeout_secs: must be between 1 and 300 seconds".into());
        }
        if !(1..=300).contains(&self.server.header_read_timeout_secs) {
            p.push("server.header_read_timeout_secs: must be between 1 and 300 seconds".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.server.max_body_bytes) {
            p.push("server.max_body_bytes: must be between 1024 and 16777216".into());
        }
        if !(1..=600).contains(&self.server.body_idle_timeout_secs) {
            p.push("server.body_idle_timeout_secs: must be between 1 and 600 seconds".into());
        }
        p.extend(self.accounts.problems(dev));
        if self.cluster.enabled {
            let c = &self.cluster;
            let mut bad = |key: &str, msg: &str| p.push(format!("cluster.{key}: {msg}"));
            if self.storage.mongodb_uri.expose_secret().is_empty() {
                bad(
                    "enabled",
                    "a cluster needs the MongoDB backend (storage.mongodb_uri): the embedded store is one process's",
                );
            }
            if c.node_id.is_empty()
                || c.node_id.len() > 64
                || !c
                    .node_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bad(
                    "node_id",
                    "must be 1 to 64 letters, digits, '-' or '_', unique in the cluster",
                );
            }
            let url_ok = c
                .public_url
                .strip_prefix("https://")
                .or_else(|| c.public_url.strip_prefix("http://"))
                .is_some_and(|h| {
                    !h.trim_end_matches('/').is_empty() && !h.contains(['?', '#', ' '])
                });
            if !url_ok {
                bad(
                    "public_url",
                    "must be this node's own http(s):// URL (how clients reach it directly)",
                );
            }
            if !(2..=60).contains(&c.lease_secs) {
                bad("lease_secs", "must be between 2 and 60 seconds");
            }
            if c.drain_limit_secs > 24 * 3600 {
                bad("drain_limit_secs", "must be at most 24 hours");
            }
            let operator = c.operator_token.expose_secret();
            if !operator.is_empty() && operator.len() < 32 {
                bad(
                    "operator_token",
                    "must be at least 32 bytes (or empty: no drain endpoint, SIGTERM only)",
                );
            }
        }

        p
    }

    /// The base of join links: `server.public_url` if set, else `http(s)://bind:port`.
    pub fn base_url(&self) -> String {
        if !self.server.public_url.is_empty() {
            return self.server.public_url.trim_end_matches('/').to_string();
        }
        let scheme = if self.server.tls { "https" } else { "http" };
        let host = match self.server.bind {
            IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        match (self.server.tls, self.server.port) {
            (true, 443) | (false, 80) => format!("{scheme}://{host}"),
            (_, port) => format!("{scheme}://{host}:{port}"),
        }
    }

    /// The join link for `token`: the token travels in the fragment, never sent to the server.
    /// The join-link keyring: `auth.signing_secret` under `auth.signing_key_id` signs, the
    /// `auth.previous_signing_keys` still verify.
    pub fn keyring(
        &self,
    ) -> Result<teleconsult_consultation::Keyring, teleconsult_consultation::invitation::KeyringError>
    {
        let previous: Vec<(&str, &[u8])> = self
            .auth
            .previous_signing_keys
            .iter()
            .map(|k| (k.id.as_str(), k.key.expose_secret().as_bytes()))
            .collect();
        teleconsult_consultation::Keyring::new(
            (
                self.auth.signing_key_id.as_str(),
                self.auth.signing_secret.expose_secret().as_bytes(),
            ),
            &previous,
        )
    }

    pub fn join_link(&self, token: &str) -> String {
        format!("{}/join#token={token}", self.base_url())
    }
}

/// The development settings behind `--dev` (equal to [`Config::dev`], checked by a test).
const DEV_TOML: &str = include_str!("../../config/dev.toml");

/// A TOML error naming the line, without quoting it (it may hold a secret).
fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// A figment error as `key: what is wrong`, in serde's words for unknown keys.
fn figment_message(e: &figment::Error) -> String {
    if e.path.is_empty() {
        figment_problem(e)
    } else {
        format!("{}: {}", e.path.join("."), figment_problem(e))
    }
}

/// What is wrong, without the key.
fn figment_problem(e: &figment::Error) -> String {
    match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            let expected: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
            format!(
                "unknown field `{field}`, expected one of {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string(),
    }
}

/// Layer one `TELECONSULT_SECTION__KEY=value` override over `figment`. The value is taken as
/// a string when the key accepts one (verbatim: a secret may look like a literal), else as a
/// TOML literal (`9000`, `true`, `["a"]`); an override the configuration cannot take is an error
/// naming the variable and the key.
fn apply_env(figment: Figment, var: &str, raw: &str) -> Result<Figment, ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let rest = &var[ENV_PREFIX.len()..];
    let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.len() < 2 || path.iter().any(|s| s.is_empty()) {
        return Err(err(
            "expected TELECONSULT_SECTION__KEY, e.g. TELECONSULT_SERVER__PORT".to_string(),
        ));
    }
    let key = path.join(".");
    let mut candidates = vec![toml::Value::String(raw.to_string())];
    if let Some(literal) = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
    {
        candidates.push(literal);
    }
    let mut first_error = None;
    for candidate in candidates {
        let trial = figment.clone().merge((key.as_str(), candidate));
        match trial.extract::<Config>() {
            Ok(_) => return Ok(trial),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // The key is named once, in the variable's spelling of it.
    let message = first_error.map_or_else(|| "invalid value".to_string(), |e| figment_problem(&e));
    Err(err(format!("{key}: {message}")))
}

/// Parse a duration like `90s`, `15m`, `2h`, `1d`, `1h 30m` ([`humantime`]), or a bare number
/// of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| format!("invalid duration {s:?}: number too large"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 90s, 15m, 2h, 1d)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
    const PSEUDONYM_KEY: &str = "fedcba9876543210fedcba9876543210-test";

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn ser(c: &Config) -> String {
        toml::to_string(c).expect("serialise")
    }

    fn to_table(config: &Config) -> toml::Table {
        toml::Table::try_from(config).expect("configuration serialises to TOML")
    }

    /// The secrets, which `ser` writes as `<redacted>`.
    fn secrets(c: &Config) -> [&str; 8] {
        [
            c.cluster.operator_token.expose_secret(),
            c.metrics.bearer_token.expose_secret(),
            c.accounts.totp_key.expose_secret(),
            c.auth.signing_secret.expose_secret(),
            c.billing.pseudonym_key.expose_secret(),
            c.documents.master_key.expose_secret(),
            c.admin.api_key.expose_secret(),
            c.storage.mongodb_uri.expose_secret(),
        ]
    }

    fn invalid(c: &Config, dev: bool) -> Vec<String> {
        match c.validate(dev) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn write_temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "teleconsult-config-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("config.toml");
        std::fs::write(&path, text).expect("write temp config");
        path
    }

    #[test]
    fn default_toml_documents_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).expect("config/default.toml parses");
        assert_eq!(ser(&parsed), ser(&Config::default()));
        // Every key present in the defaults appears in the file (announce_ip is optional and
        // documented commented out).
        let file: toml::Table = DEFAULT_TOML.parse().expect("toml");
        for (section, keys) in to_table(&Config::default()) {
            let keys = keys.as_table().expect("section").clone();
            let file_section = file[&section].as_table().expect("section in file");
            for key in keys.keys() {
                assert!(file_section.contains_key(key), "{section}.{key} missing");
            }
        }
        assert!(DEFAULT_TOML.contains("# announce_ip ="));
    }

    #[test]
    fn dev_toml_matches_dev_settings() {
        let parsed: Config = toml::from_str(DEV_TOML).expect("config/dev.toml parses");
        assert_eq!(ser(&parsed), ser(&Config::dev()));
        assert_eq!(secrets(&parsed), secrets(&Config::dev()));
        Config::dev()
            .validate(true)
            .expect("dev settings are valid in dev");
        Config::for_tests()
            .validate(true)
            .expect("test settings are valid in dev");
    }

    #[test]
    fn dev_load_without_file_or_env() {
        let c = Config::load_from(None, true, no_env()).expect("dev loads");
        assert_eq!(ser(&c), ser(&Config::dev()));
        assert_eq!(secrets(&c), secrets(&Config::dev()));
        assert_eq!(c.base_url(), "http://127.0.0.1:8080");
        assert_eq!(c.join_link("abc"), "http://127.0.0.1:8080/join#token=abc");
    }

    #[test]
    fn file_is_merged_over_the_base() {
        let path = write_temp(
            "merge",
            "[server]\nport = 9100\n\n[consultation]\nmax_participants = 4\n",
        );
        let c = Config::load_from(Some(&path), true, no_env()).expect("loads");
        assert_eq!(c.server.port, 9100);
        assert_eq!(c.consultation.max_participants, 4);
        // Untouched keys keep the dev values.
        assert_eq!(c.server.bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.auth.signing_secret.expose_secret(), DEV_SIGNING_SECRET);
    }

    #[test]
    fn file_unknown_key_is_refused_with_line() {
        let path = write_temp("unknown", "[server]\nport = 9100\nprot = 1\n");
        let err = Config::load_from(Some(&path), true, no_env())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("unknown field `prot`"), "{err}");
        let path = write_temp("unknown-section", "[sever]\nport = 9100\n");
        let err = Config::load_from(Some(&path), true, no_env())
            .expect_err("unknown section")
            .to_string();
        assert!(err.contains("sever"), "{err}");
    }

    #[test]
    fn file_syntax_error_does_not_quote_the_secret() {
        let path = write_temp(
            "syntax",
            "[auth]\nsigning_secret = \"super-secret-value-that-is-long-enough\" junk\n",
        );
        let err = Config::load_from(Some(&path), true, no_env())
            .expect_err("syntax error")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("super-secret"), "{err}");
    }

    #[test]
    fn missing_file_names_it() {
        let err = Config::load_from(
            Some(Path::new("/nonexistent/teleconsult.toml")),
            true,
            no_env(),
        )
        .expect_err("missing file")
        .to_string();
        assert!(err.contains("/nonexistent/teleconsult.toml"), "{err}");
    }

    #[test]
    fn env_overrides_any_key_with_its_type() {
        let env = [
            ("TELECONSULT_SERVER__PORT", "9000"),
            ("TELECONSULT_SERVER__PUBLIC_URL", "http://10.0.0.1:9000"),
            ("TELECONSULT_MEDIA__ANNOUNCE_IP", "192.0.2.10"),
            ("TELECONSULT_MEDIA__WORKERS", "3"),
            ("TELECONSULT_AUTH__SIGNING_SECRET", SECRET),
            ("TELECONSULT_SIGNALING__MAX_MESSAGE_BYTES", "4096"),
            ("PATH", "/usr/bin"),
            ("TELECONSULT_BIN", "/not/configuration"),
        ];
        let c = Config::load_from(None, true, env).expect("loads");
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.public_url, "http://10.0.0.1:9000");
        assert_eq!(c.media.announce_ip, Some(IpAddr::from([192, 0, 2, 10])));
        assert_eq!(c.media.workers, 3);
        assert_eq!(c.auth.signing_secret.expose_secret(), SECRET);
        assert_eq!(c.signaling.max_message_bytes, 4096);
        assert_eq!(c.join_link("t"), "http://10.0.0.1:9000/join#token=t");
    }

    #[test]
    fn env_beats_file() {
        let path = write_temp("env-beats-file", "[server]\nport = 9100\n");
        let c = Config::load_from(Some(&path), true, [("TELECONSULT_SERVER__PORT", "9200")])
            .expect("loads");
        assert_eq!(c.server.port, 9200);
    }

    #[test]
    fn env_string_keys_take_the_value_verbatim() {
        let secret = "\"12345678901234567890123456789012345\"";
        let c = Config::load_from(None, true, [("TELECONSULT_AUTH__SIGNING_SECRET", secret)])
            .expect("loads");
        assert_eq!(c.auth.signing_secret.expose_secret(), secret);
        // Digits only: still a string, not a number.
        let digits = "123456789012345678901234567890123456";
        let c = Config::load_from(None, true, [("TELECONSULT_AUTH__SIGNING_SECRET", digits)])
            .expect("loads");
        assert_eq!(c.auth.signing_secret.expose_secret(), digits);
        let c = Config::load_from(
            None,
            true,
            [
                ("TELECONSULT_DOCUMENTS__ALLOWED_TYPES", "[\"pdf\", \"png\"]"),
                ("TELECONSULT_BILLING__ROUNDING", "per_second"),
                ("TELECONSULT_SERVER__TLS", "false"),
            ],
        )
        .expect("loads");
        assert_eq!(c.documents.allowed_types, ["pdf", "png"]);
        assert_eq!(c.billing.rounding, Rounding::PerSecond);
        let c = Config::load_from(None, true, [("TELECONSULT_SERVER__TLS_CERT", "123")]);
        // tls is false in dev, so the path need not exist.
        assert_eq!(c.expect("loads").server.tls_cert, PathBuf::from("123"));
    }

    #[test]
    fn env_errors_name_the_variable() {
        for (var, value, expect) in [
            ("TELECONSULT_SERVER__PROT", "1", "unknown field `prot`"),
            ("TELECONSULT_SERVRE__PORT", "1", "unknown field `servre`"),
            (
                "TELECONSULT___PORT",
                "1",
                "expected TELECONSULT_SECTION__KEY",
            ),
            ("TELECONSULT_SERVER__PORT", "abc", "server.port"),
            ("TELECONSULT_SERVER__PORT", "70000", "server.port"),
            ("TELECONSULT_SERVER__TLS", "yes", "server.tls"),
            ("TELECONSULT_SERVER__PORT__X", "1", "server.port.x"),
        ] {
            let err = Config::load_from(None, true, [(var, value)])
                .expect_err(var)
                .to_string();
            assert!(err.contains(var), "{err}");
            assert!(err.contains(expect), "{var}: {err}");
        }
    }

    #[test]
    fn secret_errors() {
        let mut c = Config::dev();
        c.auth.signing_secret = SecretString::default();
        let p = invalid(&c, true);
        assert!(p[0].starts_with("auth.signing_secret: missing"), "{p:?}");
        c.auth.signing_secret = "short-secret-value".into();
        assert_eq!(
            invalid(&c, true),
            vec!["auth.signing_secret: must be at least 32 bytes"]
        );
        // The dev secret is fine in dev and refused outside, without printing it.
        c.auth.signing_secret = DEV_SIGNING_SECRET.into();
        c.validate(true).expect("dev secret allowed in dev");
        let err = ConfigError::Invalid(invalid(&c, false)).to_string();
        assert!(
            err.contains("auth.signing_secret: the development secret is refused"),
            "{err}"
        );
        assert!(!err.contains(DEV_SIGNING_SECRET), "{err}");
    }

    /// A valid, non-development master key (32 zero bytes).
    const MASTER: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn metrics_off_loopback_need_a_bearer_token() {
        let mut c = Config::dev();
        c.metrics.bind = IpAddr::from([10, 0, 0, 5]);
        assert_eq!(
            invalid(&c, true),
            vec![
                "metrics.bearer_token: required when metrics.bind is not a loopback address (anyone who can reach it could read the server's load)"
            ]
        );
        c.metrics.bearer_token = "short".into();
        assert!(invalid(&c, true)[0].starts_with("metrics.bearer_token: must be at least 32"));
        c.metrics.bearer_token = SECRET.into();
        c.validate(true).expect("a long token off loopback");
        assert!(!format!("{c:?}{}", ser(&c)).contains(SECRET));
        let mut c = Config::dev();
        c.metrics.port = c.server.port;
        assert_eq!(
            invalid(&c, true),
            vec!["metrics.port: must differ from server.port"]
        );
    }

    #[test]
    fn the_pseudonym_key_is_required_long_and_its_own() {
        let mut c = Config::dev();
        c.billing.pseudonym_key = SecretString::default();
        assert!(invalid(&c, true)[0].starts_with("billing.pseudonym_key: missing"));
        c.billing.pseudonym_key = "too-short".into();
        assert_eq!(
            invalid(&c, true),
            vec!["billing.pseudonym_key: must be at least 32 bytes"]
        );
        c.billing.pseudonym_key = DEV_SIGNING_SECRET.into();
        assert_eq!(
            invalid(&c, true),
            vec![
                "billing.pseudonym_key: must differ from auth.signing_secret (one key, one purpose)"
            ]
        );
        c.billing.pseudonym_key = DEV_PSEUDONYM_KEY.into();
        c.validate(true).expect("the development key in --dev");
        assert!(
            invalid(&c, false)
                .iter()
                .any(|l| l.starts_with("billing.pseudonym_key: the development key is refused"))
        );
        assert!(!format!("{c:?}{}", ser(&c)).contains(DEV_PSEUDONYM_KEY));
    }

    #[test]
    fn storage_billing_documents_and_admin_are_checked() {
        let mut c = Config::dev();
        c.validate(true).expect("dev defaults are valid");
        c.documents.master_key = "c2hvcnQ=".into();
        c.billing.checkpoint_secs = 0;
        c.documents.allowed_types = vec!["exe".into()];
        c.admin.api_key = "short".into();
        c.storage.mongodb_uri = "postgres://x".into();
        let p = invalid(&c, true);
        for key in [
            "documents.master_key: must be base64 of exactly 32 bytes",
            "billing.checkpoint_secs:",
            "documents.allowed_types:",
            "admin.api_key:",
            "storage.mongodb_uri:",
        ] {
            assert!(p.iter().any(|l| l.starts_with(key)), "{key} in {p:?}");
        }
        let mut c = Config::dev();
        c.documents.master_key = DEV_MASTER_KEY.into();
        assert!(
            invalid(&c, false)
                .iter()
                .any(|l| l == "documents.master_key: the development key is refused outside --dev")
        );
        assert!(!format!("{c:?}").contains(DEV_MASTER_KEY));
        c.admin.api_key = SECRET.into();
        c.storage.mongodb_uri = "mongodb://user:hunter2-password@db.example/".into();
        let shown = format!("{c:?}{}", ser(&c));
        for secret in [DEV_MASTER_KEY, DEV_SIGNING_SECRET, SECRET, "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn previous_master_keys_are_loaded_and_checked() {
        use teleconsult_documents::config::PreviousMasterKey;
        const OLD: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        // From a file, with the current key from the environment as today.
        let path = write_temp(
            "rotation",
            &format!(
                "[documents]\nmaster_key_id = \"k2\"\nprevious_master_keys = [{{ id = \"k1\", key = \"{OLD}\" }}]\n"
            ),
        );
        let c = Config::load_from(
            Some(&path),
            true,
            [("TELECONSULT_DOCUMENTS__MASTER_KEY", MASTER)],
        )
        .expect("loads");
        assert_eq!(c.documents.master_key.expose_secret(), MASTER);
        assert_eq!(c.documents.master_key_id, "k2");
        assert_eq!(c.documents.previous_master_keys.len(), 1);
        assert_eq!(c.documents.previous_master_keys[0].id, "k1");
        assert_eq!(c.documents.previous_master_keys[0].key.expose_secret(), OLD);
        c.validate(true).expect("valid");
        let shown = format!("{c:?}{}", ser(&c));
        assert!(!shown.contains(OLD), "{shown}");
        // And entirely from the environment (the dev current key is k1, so the old one is k0).
        let list = format!("[{{ id = \"k0\", key = \"{OLD}\" }}]");
        let c = Config::load_from(
            None,
            true,
            [("TELECONSULT_DOCUMENTS__PREVIOUS_MASTER_KEYS", list.as_str())],
        )
        .expect("loads");
        assert_eq!(c.documents.previous_master_keys[0].id, "k0");

        let mut c = Config::dev();
        let entry = |id: &str, key: &str| PreviousMasterKey {
            id: id.into(),
            key: key.into(),
        };
        c.documents.previous_master_keys = vec![
            entry("k1", "c2hvcnQ="), // master_key_id is k1 too
            entry("k0", OLD),
            entry("k0", "not base64!"), // repeats the entry before
            entry("", DEV_MASTER_KEY),  // the dev key, outside --dev
        ];
        let p = invalid(&c, false);
        for line in [
            "documents.previous_master_keys[0].id: repeats a master key id",
            "documents.previous_master_keys[0].key: must be base64 of exactly 32 bytes",
            "documents.previous_master_keys[2].id: repeats a master key id",
            "documents.previous_master_keys[2].key: must be base64 of exactly 32 bytes",
            "documents.previous_master_keys[3].id: must not be empty",
            "documents.previous_master_keys[3].key: the development key is refused outside --dev",
        ] {
            assert!(p.iter().any(|l| l.starts_with(line)), "{line} in {p:?}");
        }
        assert!(
            !p.iter()
                .any(|l| l.starts_with("documents.previous_master_keys[1]")),
            "{p:?}"
        );
        let shown = format!("{p:?}");
        assert!(
            !shown.contains(OLD) && !shown.contains(DEV_MASTER_KEY) && !shown.contains("c2hvcnQ")
        );
    }

    #[test]
    fn production_requires_tls_with_readable_files() {
        let mut c = Config::default();
        c.auth.signing_secret = SECRET.into();
        c.billing.pseudonym_key = PSEUDONYM_KEY.into();
        c.documents.master_key = MASTER.into();
        c.media.announce_ip = Some(IpAddr::from([192, 0, 2, 1]));
        c.server.tls = false;
        assert_eq!(
            invalid(&c, false),
            vec!["server.tls: must be true outside --dev (plain HTTP only with --dev)"]
        );
        c.server.tls = true;
        c.server.tls_cert = "/nonexistent/cert.pem".into();
        c.server.tls_key = PathBuf::new();
        let p = invalid(&c, false);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("server.tls_cert: cannot read PEM file /nonexistent/cert.pem"),
            "{p:?}"
        );
        assert!(p[1].starts_with("server.tls_key: missing"), "{p:?}");
        let cert = write_temp("cert", "not really a cert");
        c.server.tls_cert = cert.clone();
        c.server.tls_key = cert;
        c.validate(false).expect("valid production config");
    }

    #[test]
    fn production_needs_announce_ip_for_wildcard_bind() {
        let mut c = Config::default();
        c.auth.signing_secret = SECRET.into();
        c.billing.pseudonym_key = PSEUDONYM_KEY.into();
        c.documents.master_key = MASTER.into();
        let cert = write_temp("cert2", "x");
        c.server.tls_cert = cert.clone();
        c.server.tls_key = cert;
        let p = invalid(&c, false);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("media.announce_ip: missing"), "{p:?}");
        c.media.announce_ip = Some(IpAddr::from([0, 0, 0, 0]));
        assert!(invalid(&c, false)[0].starts_with("media.announce_ip: must be a unicast"));
    }

    #[test]
    fn range_errors_name_each_key() {
        let mut c = Config::dev();
        c.consultation.max_participants = 1;
        c.signaling.max_message_bytes = 1023;
        c.signaling.join_timeout_secs = 0;
        c.signaling.idle_timeout_secs = 5;
        c.consultation.reconnect_grace_secs = 100_000;
        c.media.workers = 1000;
        c.auth.token_ttl_secs = 0;
        c.server.public_url = "ftp://x".into();
        let p = invalid(&c, true);
        let keys: Vec<&str> = p
            .iter()
            .map(|m| m.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "server.public_url",
                "media.workers",
                "consultation.max_participants",
                "consultation.reconnect_grace_secs",
                "signaling.max_message_bytes",
                "signaling.join_timeout_secs",
                "signaling.idle_timeout_secs",
                "auth.token_ttl_secs",
            ]
        );
        assert!(p.contains(&"consultation.max_participants: must be in 2..=256".to_string()));
        c = Config::dev();
        c.consultation.max_participants = 256;
        c.signaling.max_message_bytes = 1024;
        c.validate(true).expect("bounds are inclusive");
        c.consultation.max_participants = 257;
        assert_eq!(invalid(&c, true).len(), 1);
    }

    #[test]
    fn public_url_rules() {
        let mut c = Config::dev();
        for bad in [
            "consult.example.org",
            "https://",
            "https://x/?a=1",
            "https://u@x",
            "https://x/#f",
        ] {
            c.server.public_url = bad.into();
            assert!(
                invalid(&c, true)[0].starts_with("server.public_url"),
                "{bad}"
            );
        }
        c.server.public_url = "https://consult.example.org/".into();
        c.validate(true).expect("valid");
        assert_eq!(c.join_link("t"), "https://consult.example.org/join#token=t");
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let c = Config::load_from(None, true, [("TELECONSULT_AUTH__SIGNING_SECRET", SECRET)])
            .expect("loads");
        assert!(!format!("{c:?}").contains(SECRET));
        let err = Config::load_from(
            None,
            false,
            [("TELECONSULT_AUTH__SIGNING_SECRET", "short-but-secret")],
        )
        .expect_err("invalid")
        .to_string();
        assert!(!err.contains("short-but-secret"), "{err}");
    }

    #[test]
    fn token_loading_checks_only_what_tokens_need() {
        let env = [("TELECONSULT_AUTH__SIGNING_SECRET", SECRET)];
        // Production defaults: no TLS files, no announce_ip — irrelevant to minting links.
        assert!(Config::load_from(None, false, env).is_err());
        let c = Config::load_for_tokens_from(None, false, env).expect("enough for tokens");
        assert_eq!(c.auth.signing_secret.expose_secret(), SECRET);
        let err = Config::load_for_tokens_from(None, false, no_env())
            .expect_err("no secret")
            .to_string();
        assert!(err.contains("auth.signing_secret: missing"), "{err}");
        assert!(!err.contains("tls_cert"), "{err}");
        // Default ports are left out of links.
        assert_eq!(c.join_link("t"), "https://127.0.0.1/join#token=t");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "h",
            "2x",
            "-1s",
            "99999999999999999999s",
            "99999999999999999999",
            "18446744073709551615d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
