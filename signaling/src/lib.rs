//! Teleconsult signalling: the WebSocket protocol ([`protocol`], version 1, `docs/signaling.md`)
//! and the session behind `/ws` ([`session`]). A session authenticates the first message, then
//! carries requests to the consultation service (and SDP to the media plane) and delivers what
//! the consultation emits. Domain events become protocol messages and close codes in one place:
//! [`wire`].

pub mod config;
pub mod limits;
mod precall;
pub mod protocol;
pub mod session;
pub mod wire;

pub use config::SignalingConfig;
pub use session::{
    ConsultationRouter, ErrorCounters, ErrorKind, Redemption, Route, Signaling, SignedIn, handler,
    upgrade, upgrade_from,
};

/// Names of the metrics this crate records.
pub mod metric_names {
    /// Gauge: open WebSocket connections.
    pub const WEBSOCKET_CONNECTIONS: &str = "teleconsult_websocket_connections";
    /// Counter, label `kind`: refused or invalid signalling input. Counted per server
    /// ([`crate::ErrorCounters`]), rendered by the server's telemetry.
    pub const SIGNALING_ERRORS: &str = "teleconsult_signaling_errors_total";
    /// Counter: joins answered with `redirect` (cluster mode: another node owns the
    /// consultation).
    pub const REDIRECTS: &str = "teleconsult_cluster_redirects_total";
    /// Histogram (seconds), label `type`: handling one client message (for `join`: from its
    /// arrival to `joined` queued, authentication and placement included).
    pub const SIGNALING_MESSAGE_DURATION: &str = "teleconsult_signaling_message_duration_seconds";
}
