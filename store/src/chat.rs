//! The chat of consultations, at rest: one wrapped key per consultation and the sealed messages.
//! [`ChatStore`] is implemented by both backends (`sqlite_chat.rs`, `mongo_chat.rs`); the
//! conformance tests in `store/tests/chat.rs` run against each.
//!
//! The store never sees a message's text, sender id or sender name: those are sealed by the
//! caller (the `documents` crate's chat archive) with the consultation's chat key, itself
//! wrapped by the documents master key. In the clear stay only what ordering and accounting
//! need: ids, time, sequence, kind and the sender's role.

use crate::{Millis, Result};
use serde::{Deserialize, Serialize};

/// A consultation's chat key, wrapped by a master key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatKeyRecord {
    pub consultation: String,
    /// Algorithm name, e.g. `AES-256-GCM-chat-v1`.
    pub scheme: String,
    /// Wrapped key (nonce ‖ ciphertext ‖ tag), base64.
    pub wrapped_key: String,
    /// Id of the master key that wrapped it (key rotation).
    pub master_key_id: String,
    pub created_at: Millis,
}

/// One chat message or notice as stored: everything a database reader could misuse is in
/// `sealed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChatMessage {
    /// Unique id (random), also bound into the seal.
    pub id: String,
    pub consultation: String,
    /// Order within the consultation's live session (ties of `at`).
    pub seq: i64,
    pub at: Millis,
    /// `chat` (to the call) or `notice` (practitioner to the waiting room).
    pub kind: String,
    /// `practitioner`, `patient` or `guest`.
    pub sender_role: String,
    /// Sender id, sender name and text, sealed with the consultation's chat key (base64).
    pub sealed: String,
}

#[async_trait::async_trait]
pub trait ChatStore: Send + Sync {
    /// Store `key` unless the consultation already has one; returns the key that is stored
    /// (the existing one wins a race, so every message of a consultation has one key).
    async fn insert_chat_key(&self, key: &ChatKeyRecord) -> Result<ChatKeyRecord>;
    async fn chat_key(&self, consultation: &str) -> Result<Option<ChatKeyRecord>>;
    /// Insert or replace by `id` (idempotent).
    async fn upsert_chat_message(&self, message: &StoredChatMessage) -> Result<()>;
    /// Every message of `consultation`, ordered by `at`, then `seq`, then `id`.
    async fn chat_messages(&self, consultation: &str) -> Result<Vec<StoredChatMessage>>;
}
