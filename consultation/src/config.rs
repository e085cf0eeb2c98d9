//! Consultation rules (`[consultation]`), defaults documented in `config/default.toml`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsultationConfig {
    pub max_participants: usize,
    /// How long a dropped participant may come back before being counted as left.
    pub reconnect_grace_secs: u64,
}

impl Default for ConsultationConfig {
    fn default() -> Self {
        ConsultationConfig {
            max_participants: 12,
            reconnect_grace_secs: 60,
        }
    }
}
