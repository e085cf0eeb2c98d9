//! `[accounts]`: sessions, lockout, passwords and the TOTP sealing key. Every key is documented
//! in `config/default.toml`.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The development TOTP sealing key (base64 of 32 bytes), used by `--dev` only.
pub const DEV_TOTP_KEY: &str = "ZGV2LXRvdHAta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// A session with no authenticated request for this long is over (idle logoff).
    pub idle_timeout_secs: u64,
    /// A session is over this long after login, however active.
    pub session_lifetime_secs: u64,
    /// Consecutive failed logins for one email before it is locked.
    pub lockout_threshold: u32,
    /// First lock's duration; each further failure doubles it.
    pub lockout_base_secs: u64,
    /// Longest lock. Failures are forgotten after a day without a new one.
    pub lockout_max_secs: u64,
    /// Shortest password accepted (characters).
    pub min_password_length: usize,
    /// Key sealing TOTP secrets at rest: base64 of 32 random bytes. Empty: TOTP enrolment is
    /// refused (logins of accounts already enrolled then fail). A secret.
    #[serde(serialize_with = "redacted")]
    pub totp_key: SecretString,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
    /// Requests one API key may make per minute (REST API v1), sustained.
    pub api_key_requests_per_minute: u32,
    /// Requests one API key may make at once above that rate.
    pub api_key_burst: u32,
}

fn redacted<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "<redacted>"
    })
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            idle_timeout_secs: 15 * 60,
            session_lifetime_secs: 12 * 3600,
            lockout_threshold: 5,
            lockout_base_secs: 30,
            lockout_max_secs: 3600,
            min_password_length: 12,
            totp_key: SecretString::default(),
            totp_issuer: "Teleconsult".to_string(),
            api_key_requests_per_minute: 600,
            api_key_burst: 60,
        }
    }
}

impl AccountsConfig {
    /// The TOTP sealing key, if configured and well-formed.
    pub fn totp_key_bytes(&self) -> Option<[u8; 32]> {
        let k = self.totp_key.expose_secret();
        if k.is_empty() {
            return None;
        }
        base64::engine::general_purpose::STANDARD
            .decode(k)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
    }

    /// Every problem, as `accounts.key: what is expected` (never quoting the key).
    pub fn problems(&self, dev: bool) -> Vec<String> {
        let mut p = Vec::new();
        let mut bad = |key: &str, msg: &str| p.push(format!("accounts.{key}: {msg}"));
        if !(2..=24 * 3600).contains(&self.idle_timeout_secs) {
            bad(
                "idle_timeout_secs",
                "must be between 2 seconds and 24 hours",
            );
        }
        if !(60..=30 * 24 * 3600).contains(&self.session_lifetime_secs) {
            bad(
                "session_lifetime_secs",
                "must be between 60 seconds and 30 days",
            );
        } else if self.session_lifetime_secs < self.idle_timeout_secs {
            bad(
                "session_lifetime_secs",
                "must be at least accounts.idle_timeout_secs",
            );
        }
        if !(1..=100).contains(&self.lockout_threshold) {
            bad("lockout_threshold", "must be in 1..=100");
        }
        if !(1..=3600).contains(&self.lockout_base_secs) {
            bad("lockout_base_secs", "must be between 1 and 3600 seconds");
        }
        if !(self.lockout_base_secs..=7 * 24 * 3600).contains(&self.lockout_max_secs) {
            bad(
                "lockout_max_secs",
                "must be at least accounts.lockout_base_secs and at most 7 days",
            );
        }
        if !(8..=128).contains(&self.min_password_length) {
            bad("min_password_length", "must be in 8..=128");
        }
        let key = self.totp_key.expose_secret();
        if !key.is_empty() {
            if self.totp_key_bytes().is_none() {
                bad("totp_key", "must be base64 of exactly 32 bytes (or empty)");
            } else if !dev && key == DEV_TOTP_KEY {
                bad("totp_key", "the development key is refused outside --dev");
            }
        }
        if self.totp_issuer.is_empty() || self.totp_issuer.contains(':') {
            bad("totp_issuer", "must be non-empty and contain no ':'");
        }
        if !(1..=600_000).contains(&self.api_key_requests_per_minute) {
            bad("api_key_requests_per_minute", "must be in 1..=600000");
        }
        if !(1..=10_000).contains(&self.api_key_burst) {
            bad("api_key_burst", "must be in 1..=10000");
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_dev_key_only_in_dev() {
        let mut c = AccountsConfig::default();
        assert!(c.problems(false).is_empty(), "{:?}", c.problems(false));
        assert_eq!(c.idle_timeout_secs, 900);
        c.totp_key = DEV_TOTP_KEY.into();
        assert!(c.totp_key_bytes().is_some());
        assert!(c.problems(true).is_empty());
        let p = c.problems(false);
        assert!(
            p.iter().any(|p| p.starts_with("accounts.totp_key:")),
            "{p:?}"
        );
        assert!(!p.iter().any(|p| p.contains(DEV_TOTP_KEY)));
        c.totp_key = "c2hvcnQ=".into();
        assert!(c.problems(true)[0].starts_with("accounts.totp_key:"));
        let json = format!("{:?}", c);
        assert!(!json.contains("c2hvcnQ="), "{json}");
    }

    #[test]
    fn bad_values_are_named() {
        let c = AccountsConfig {
            idle_timeout_secs: 0,
            lockout_threshold: 0,
            lockout_base_secs: 10,
            lockout_max_secs: 5,
            min_password_length: 4,
            ..Default::default()
        };
        let p = c.problems(false).join("\n");
        for key in [
            "idle_timeout_secs",
            "lockout_threshold",
            "lockout_max_secs",
            "min_password_length",
        ] {
            assert!(p.contains(&format!("accounts.{key}:")), "{key}: {p}");
        }
    }
}
