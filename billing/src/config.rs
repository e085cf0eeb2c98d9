//! Billing settings (`[billing]`), defaults documented in `config/default.toml`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// How billable time is rounded at export (the stored record stays exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Units are seconds, rounded down.
    PerSecond,
    /// Units are minutes, every started minute counts.
    PerStartedMinute,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Open intervals are checkpointed this often; a crash loses at most this much.
    pub checkpoint_secs: u64,
    pub rounding: Rounding,
    /// Most billing events kept in the on-disk queue while the database is unreachable.
    pub outage_queue_max_events: usize,
    /// HMAC key of the patients' and practitioners' pseudonyms in billing records and the
    /// audit log: at least 32 bytes, and never the join-token signing key (a key that signs
    /// links must not also be the one that hides who a pseudonym is). `Debug` shows
    /// `[REDACTED]`.
    #[serde(serialize_with = "redacted")]
    pub pseudonym_key: SecretString,
}

/// Serialise a secret as `""` when unset and `"<redacted>"` otherwise.
fn redacted<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "<redacted>"
    })
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            checkpoint_secs: 5,
            rounding: Rounding::PerSecond,
            outage_queue_max_events: 100_000,
            pseudonym_key: SecretString::default(),
        }
    }
}
