//! The Teleconsult server: configuration, wiring of the domain crates (consultation, billing,
//! documents, signalling, the SFU, the store), the HTTP routes and telemetry. The only crate that
//! knows every other one. The `teleconsult` binary is a thin command line over this crate;
//! integration tests start it in-process.

pub mod billing_api;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod error;
pub mod http;
pub mod invite;
pub mod media;
pub mod recording;
pub mod routes;
pub mod scheduling;
pub mod server;
pub mod telemetry;
pub mod ticket;
pub mod turn;

/// The domain crates, under the names the rest of the code (and the tests) use.
pub use teleconsult_accounts as accounts;
pub use teleconsult_billing as billing;
pub use teleconsult_consultation as consultation;
pub use teleconsult_consultation::token;
pub use teleconsult_documents::{crypto, filetype};
pub use teleconsult_signaling::protocol;

use std::sync::Arc;

/// Shared state of the HTTP edge.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<config::Config>,
    pub consultations: consultation::ConsultationService,
    /// Billing clocks, checkpoints and audit.
    pub billing: billing::Billing,
    /// The `/ws` sessions' shared state.
    pub signaling: Arc<teleconsult_signaling::Signaling>,
    /// Billing, presence, documents and audit (MongoDB or the embedded store).
    pub store: Arc<dyn teleconsult_store::Store>,
    /// Shared documents: access rule, sealing, opening, deletion.
    pub documents: teleconsult_documents::DocumentService,
    /// Consultations' chat and notices, sealed at rest (read back for the practitioner).
    pub chat: teleconsult_documents::ChatArchive,
    /// Organisations, staff accounts and their sessions.
    pub accounts: teleconsult_accounts::AccountService,
    /// This node's membership of a cluster (`[cluster]`), when enabled.
    pub cluster: Option<cluster::ClusterNode>,
    /// Recordings exported for the practitioner's page, in memory.
    pub playback: recording::Playback,
}

impl axum::extract::FromRef<AppState> for Arc<teleconsult_signaling::Signaling> {
    fn from_ref(state: &AppState) -> Self {
        state.signaling.clone()
    }
}
