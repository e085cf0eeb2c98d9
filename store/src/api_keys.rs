//! API keys of organisations (REST API v1 for booking and practice software), and the query the
//! API lists consultations with. [`ApiKeyStore`] is implemented by both backends
//! (`sqlite_api_keys.rs`, `mongo_api_keys.rs`); the conformance tests in `store/tests/api_keys.rs`
//! run against each.
//!
//! A key is presented as `tc_<id>_<secret>`; the store keeps only the secret's SHA-256 (hex), so
//! a database reader cannot turn a stored key into a credential.

use crate::invitations::ScheduledConsultation;
use crate::{Millis, Result};
use serde::{Deserialize, Serialize};

/// One API key of an organisation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id (lowercase hex), the `<id>` of `tc_<id>_<secret>`.
    pub id: String,
    pub organisation: String,
    /// What the admin called it ("Booking system"): an operator's label, not health data.
    pub name: String,
    /// Granted scopes, e.g. `consultations:read`, `consultations:write`.
    pub scopes: Vec<String>,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    /// The admin account that created it.
    pub created_by: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
    /// Last authenticated use (kept to the minute).
    pub last_used_at: Option<Millis>,
}

/// Debug without the secret's hash.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("organisation", &self.organisation)
            .field("scopes", &self.scopes)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Where a page of consultations starts: after this `(scheduled_at, id)`.
pub type ConsultationCursor = (Millis, String);

/// Storage of API keys, and the organisation's consultations by scheduled time.
#[async_trait::async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Insert a new key (its id is random; an existing id is replaced).
    async fn insert_api_key(&self, key: &ApiKey) -> Result<()>;
    /// The key `id`, of whatever organisation (authentication looks it up by id).
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// Every key of `organisation`, by creation time then id.
    async fn api_keys(&self, organisation: &str) -> Result<Vec<ApiKey>>;
    /// Revoke key `id` of `organisation` at `at` (an earlier revocation time is kept);
    /// `NotFound` if there is no such key in that organisation.
    async fn revoke_api_key(&self, organisation: &str, id: &str, at: Millis) -> Result<()>;
    /// Record a use of key `id` at `at`.
    async fn touch_api_key(&self, id: &str, at: Millis) -> Result<()>;

    /// Scheduled consultations of `organisation` with `from <= scheduled_at < to`, ordered by
    /// `(scheduled_at, id)`, starting after `after`, at most `limit`.
    async fn consultations_scheduled_between(
        &self,
        organisation: &str,
        from: Millis,
        to: Millis,
        after: Option<ConsultationCursor>,
        limit: u32,
    ) -> Result<Vec<ScheduledConsultation>>;
}
