//! Finished recordings (issue 13): each recording's journal (already sealed by the `recording`
//! crate: the store sees ciphertext and ids only) and a small record naming its consultation.
//! MongoDB keeps the bytes in the GridFS bucket `recordings` (`recordings.files`,
//! `recordings.chunks`), the embedded store in the tables `recordings` and `recording_chunks`.

use crate::{Millis, Result};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// What the store keeps about a recording besides its bytes (no names: ids and times only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRecord {
    /// `rec_…`, the journal's recording id.
    pub id: String,
    pub consultation: String,
    /// When the recording started.
    pub created_at: Millis,
    /// When its journal was stored.
    pub stored_at: Millis,
    /// Journal bytes.
    pub bytes: u64,
    /// From its first to its last record, milliseconds.
    pub duration_ms: i64,
    /// The journal ended without a `stopped` event (the server stopped while recording): it was
    /// recovered up to its last complete chunk.
    pub interrupted: bool,
}

/// Finished recordings. Both backends implement it; `store/tests/recordings.rs` runs against
/// each.
#[async_trait::async_trait]
pub trait RecordingStore: Send + Sync {
    /// Store a recording's journal. Storing an id already stored is a no-op (`Ok`): a retry
    /// after a crash between storing and removing the local file changes nothing. A failing
    /// `body` leaves nothing behind (`StoreError::Aborted`).
    async fn put_recording(
        &self,
        record: &RecordingRecord,
        body: BoxStream<'_, std::result::Result<Bytes, String>>,
    ) -> Result<()>;
    /// The recordings of `consultation` (every one when `None`), oldest first.
    async fn recordings(&self, consultation: Option<&str>) -> Result<Vec<RecordingRecord>>;
    async fn recording(&self, id: &str) -> Result<Option<RecordingRecord>>;
    /// The journal's bytes, in order (`NotFound` if absent).
    fn recording_body<'a>(&'a self, id: &'a str) -> BoxStream<'a, Result<Bytes>>;
    /// Remove record and bytes; `NotFound` if absent.
    async fn delete_recording(&self, id: &str) -> Result<()>;
}
