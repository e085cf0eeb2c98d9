//! Storage behind one trait, [`Store`], with two real implementations: MongoDB (collections +
//! a GridFS bucket) in production, and an embedded database used whenever no MongoDB URI is
//! configured. Every write is an idempotent upsert keyed by an id the caller chooses, so a
//! retried or replayed write (after an outage, after a crash) never counts twice.
//!
//! Times are milliseconds since the Unix epoch, UTC.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

pub mod accounts;
pub mod api_keys;
pub mod chat;
pub mod cluster;
pub mod invitations;
pub mod mongo;
pub mod recordings;
pub mod sqlite;

pub use accounts::{Account, AccountStore, LoginThrottle, Organisation, SessionRecord, TotpRecord};
pub use api_keys::{ApiKey, ApiKeyStore, ConsultationCursor};
pub use chat::{ChatKeyRecord, ChatStore, StoredChatMessage};
pub use cluster::{ClusterStore, NodeRecord, NodeState, Placement, Renewal, StoredAdmissions};
pub use invitations::{
    ConsultationStatus, Invitation, InvitationStore, Policy, Pseudonym, ScheduledConsultation,
};

pub use mongo::MongoStore;
pub use recordings::{RecordingRecord, RecordingStore};
pub use sqlite::SqliteStore;

/// Bytes per stored document chunk in both backends (GridFS's default chunk size, 255 KiB).
pub const CHUNK_SIZE: usize = 255 * 1024;

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (network, server down): retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("not found")]
    NotFound,
    /// The caller's stream of document bytes failed (client gone, size limit): the write was
    /// rolled back and nothing is visible.
    #[error("upload aborted: {0}")]
    Aborted(String),
    #[error("storage error: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One stretch of billable time of a consultation: practitioner and at least one admitted patient
/// connected. Open while `end` is `None`; `checkpoint` is the last time it was known to be running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingInterval {
    pub id: String,
    pub consultation: String,
    /// The practitioner's identity (the practitioner billed for the time).
    pub practitioner: String,
    pub start: Millis,
    pub end: Option<Millis>,
    pub checkpoint: Millis,
    /// Closed at its last checkpoint after a crash, not observed closing.
    pub recovered: bool,
}

/// One stretch of one participant's presence (audit and disputes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceInterval {
    pub id: String,
    pub consultation: String,
    /// Participant id (opaque), never a name.
    pub participant: String,
    /// `practitioner`, `patient` or `guest`.
    pub role: String,
    pub start: Millis,
    pub end: Option<Millis>,
    pub checkpoint: Millis,
    pub recovered: bool,
}

/// The billing summary of one consultation, as exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsultationSummary {
    pub consultation: String,
    pub practitioner: String,
    /// Stable pseudonym of the (first) patient; never the patient's name.
    pub patient_pseudonym: String,
    pub start: Millis,
    pub end: Option<Millis>,
    /// Exact sum of the consultation's closed billing intervals.
    pub billable_ms: i64,
    pub participants: u32,
    /// Any of its intervals was recovered after a crash.
    pub recovered: bool,
}

/// Which summaries to export: consultations *starting* in `[from, to)`.
#[derive(Clone, Debug, Default)]
pub struct ExportQuery {
    pub from: Millis,
    pub to: Millis,
    pub practitioner: Option<String>,
}

/// A shared document's metadata. The stored bytes are ciphertext (see the `documents` crate);
/// `size` and `sha256` describe the plaintext. Under the current scheme `filename`, `sha256` and
/// `uploader` are stored empty and sealed in [`EncryptionInfo::sealed_meta`]: the documents
/// service fills them in after opening it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentMeta {
    pub id: String,
    pub consultation: String,
    /// Sanitised file name.
    pub filename: String,
    pub content_type: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Participant id of the uploader.
    pub uploader: String,
    /// Uploader's role (`practitioner`, ...).
    pub uploader_role: String,
    pub uploaded_at: Millis,
    /// Per-document data key, wrapped by the master key (AES-256-GCM), and its encryption layout.
    pub encryption: EncryptionInfo,
}

/// Completes a document's metadata once its bytes have all been stored (see
/// [`Store::put_document`]).
pub type DocumentFinish<'a> = Box<dyn FnOnce(&mut DocumentMeta) + Send + 'a>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// Algorithm name, e.g. `AES-256-GCM-chunked-v1`.
    pub scheme: String,
    /// Wrapped data key (nonce ‖ ciphertext ‖ tag), base64.
    pub wrapped_key: String,
    /// Plaintext bytes per encrypted chunk.
    pub chunk_size: u32,
    /// Id of the master key that wrapped the data key (key rotation).
    pub master_key_id: String,
    /// The metadata a database reader could misuse (file name, uploader, plaintext SHA-256),
    /// sealed with the document's data key (base64). When set, those fields of
    /// [`DocumentMeta`] are stored empty. `None` for documents stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_meta: Option<String>,
}

/// An audit event: who did what, when, in which consultation. No names, no contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    pub at: Millis,
    /// Participant id, `admin`, or `system`.
    pub actor: String,
    /// E.g. `document.upload`, `document.download`, `document.delete`, `billing.export`,
    /// `participant.admit`, `participant.remove`.
    pub action: String,
    pub consultation: Option<String>,
    /// What it was done to (document id, participant id), if anything.
    pub target: Option<String>,
}

/// The storage interface. Implementations must be safe to call concurrently.
#[async_trait::async_trait]
pub trait Store:
    AccountStore + ApiKeyStore + ChatStore + InvitationStore + RecordingStore + Send + Sync + 'static
{
    /// Cheap liveness check (for `/healthz`).
    async fn ping(&self) -> Result<()>;

    /// Insert or replace by `id`.
    async fn upsert_billing_interval(&self, interval: &BillingInterval) -> Result<()>;
    /// Insert or replace by `id`.
    async fn upsert_presence_interval(&self, interval: &PresenceInterval) -> Result<()>;
    /// Insert or replace by `consultation`.
    async fn upsert_consultation_summary(&self, summary: &ConsultationSummary) -> Result<()>;

    /// Every billing interval still open (`end` is `None`), for crash recovery.
    async fn open_billing_intervals(&self) -> Result<Vec<BillingInterval>>;
    /// Every presence interval still open.
    async fn open_presence_intervals(&self) -> Result<Vec<PresenceInterval>>;
    /// All billing intervals of one consultation.
    async fn billing_intervals(&self, consultation: &str) -> Result<Vec<BillingInterval>>;
    /// All presence intervals of one consultation.
    async fn presence_intervals(&self, consultation: &str) -> Result<Vec<PresenceInterval>>;
    async fn consultation_summary(&self, consultation: &str)
    -> Result<Option<ConsultationSummary>>;

    /// Summaries matching `query`, ordered by start then id, streamed (constant memory).
    fn export_summaries(&self, query: ExportQuery) -> BoxStream<'_, Result<ConsultationSummary>>;

    /// Store a document's (already encrypted) bytes and its metadata. If `body` yields an error,
    /// everything written so far is removed and `StoreError::Aborted` is returned: no partial
    /// document is ever visible, no orphan chunks remain.
    ///
    /// `meta` is what is known before the bytes arrive (`id`, `consultation`, ...); once `body`
    /// has ended without error, the implementation calls `finish` on its own copy of `meta` (it
    /// fills in `size` and `sha256`, only known then) and stores that copy.
    async fn put_document(
        &self,
        meta: &DocumentMeta,
        body: BoxStream<'_, std::result::Result<Bytes, String>>,
        finish: DocumentFinish<'_>,
    ) -> Result<()>;
    async fn list_documents(&self, consultation: &str) -> Result<Vec<DocumentMeta>>;
    async fn document(&self, consultation: &str, id: &str) -> Result<Option<DocumentMeta>>;
    /// The stored (encrypted) bytes, in order.
    fn document_body<'a>(&'a self, id: &'a str) -> BoxStream<'a, Result<Bytes>>;
    /// Remove metadata and bytes. `NotFound` if absent.
    async fn delete_document(&self, consultation: &str, id: &str) -> Result<()>;

    /// Insert by `id` (idempotent).
    async fn record_audit(&self, event: &AuditEvent) -> Result<()>;
    /// Audit events with `from <= at < to`, ordered by time, streamed.
    fn export_audit(&self, from: Millis, to: Millis) -> BoxStream<'_, Result<AuditEvent>>;
}

/// Open the configured store: MongoDB when `mongodb_uri` is non-empty (database `database`),
/// else the embedded store in `data_dir` (created, mode 0700).
pub async fn open(mongodb_uri: &str, database: &str, data_dir: &Path) -> Result<Arc<dyn Store>> {
    if mongodb_uri.is_empty() {
        Ok(Arc::new(SqliteStore::open(data_dir).await?))
    } else {
        Ok(Arc::new(MongoStore::open(mongodb_uri, database).await?))
    }
}
