//! Billing settings (`[billing]`), defaults documented in `config/default.toml`.

use serde::{Deserialize, Serialize};

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
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            checkpoint_secs: 5,
            rounding: Rounding::PerSecond,
            outage_queue_max_events: 100_000,
        }
    }
}
