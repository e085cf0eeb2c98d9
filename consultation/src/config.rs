//! Consultation rules (`[consultation]`), defaults documented in `config/default.toml`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsultationConfig {
    pub max_participants: usize,
    /// How long a dropped participant may come back before being counted as left.
    pub reconnect_grace_secs: u64,
    /// A scheduled consultation's invitations are valid from this long before its time.
    pub invitation_before_secs: u64,
    /// ... until this long after it (unscheduled: this long after they are issued).
    pub invitation_after_secs: u64,
    /// Longest chat message or notice, in characters.
    pub chat_max_chars: usize,
    /// Chat messages a participant may send in a burst ...
    pub chat_burst: u32,
    /// ... then one more per this many milliseconds.
    pub chat_refill_ms: u64,
    /// Chat messages kept in memory for a live call (sent to whoever is admitted later).
    pub chat_history: usize,
}

impl Default for ConsultationConfig {
    fn default() -> Self {
        ConsultationConfig {
            max_participants: 12,
            reconnect_grace_secs: 60,
            invitation_before_secs: 15 * 60,
            invitation_after_secs: 4 * 3600,
            chat_max_chars: 2000,
            chat_burst: 5,
            chat_refill_ms: 2000,
            chat_history: 500,
        }
    }
}
