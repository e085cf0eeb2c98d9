//! Signalling limits (`[signaling]`), defaults documented in `config/default.toml`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    /// Largest WebSocket message accepted; bigger closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Time allowed between opening the socket and sending `join`.
    pub join_timeout_secs: u64,
    /// A socket silent for this long is closed.
    pub idle_timeout_secs: u64,
    /// Messages per second one connection may send, on average (every frame counts, before
    /// and after `join`); past the burst, the socket closes with 1008.
    pub messages_per_second: u32,
    /// Messages one connection may send at once above the average.
    pub message_burst: u32,
    /// Open signalling WebSockets from one source address; one more is refused (429).
    pub max_connections_per_ip: usize,
    /// Open signalling WebSockets in all; one more is refused (503).
    pub max_connections: usize,
    /// Messages queued for one connection that its client has not read yet; one more closes
    /// the connection (4008 `slow_consumer`): a client that does not read is never buffered
    /// without limit, and the consultation never waits for it.
    pub outbox_messages: usize,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            max_message_bytes: 64 * 1024,
            join_timeout_secs: 10,
            idle_timeout_secs: 30,
            messages_per_second: 20,
            message_burst: 50,
            max_connections_per_ip: 20,
            max_connections: 10_000,
            outbox_messages: 1024,
        }
    }
}
