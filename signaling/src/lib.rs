//! Teleconsult server library: configuration, join tokens, the consultation service
//! (roles, waiting room), WebSocket signalling and the HTTP edge. The `teleconsult`
//! binary is a thin command line over this crate; integration tests start it in-process.

pub mod billing;
pub mod billing_api;
pub mod config;
pub mod consultation;
pub mod crypto;
pub mod documents;
pub mod filetype;
pub mod http;
pub mod protocol;
pub mod server;
pub mod telemetry;
pub mod token;
pub mod ws;

use std::sync::Arc;

/// Shared state of the HTTP edge.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<config::Config>,
    pub consultations: consultation::ConsultationService,
    /// Billing, presence, documents and audit (MongoDB or the embedded store).
    pub store: Arc<dyn teleconsult_store::Store>,
}
