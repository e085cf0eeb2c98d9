//! [`ChatStore`] on the embedded SQLite store: tables `chat_keys` and `chat_messages`.

use super::SqliteStore;
use crate::Result;
use crate::chat::{ChatKeyRecord, ChatStore, StoredChatMessage};
use rusqlite::{OptionalExtension, Row, params};

/// Created at open.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chat_keys (
    consultation TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_messages (
    id TEXT PRIMARY KEY,
    consultation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sender_role TEXT NOT NULL,
    sealed TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_consultation ON chat_messages (consultation, at, seq, id);
";

fn key_row(r: &Row<'_>) -> rusqlite::Result<ChatKeyRecord> {
    Ok(ChatKeyRecord {
        consultation: r.get(0)?,
        scheme: r.get(1)?,
        wrapped_key: r.get(2)?,
        master_key_id: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<StoredChatMessage> {
    Ok(StoredChatMessage {
        id: r.get(0)?,
        consultation: r.get(1)?,
        seq: r.get(2)?,
        at: r.get(3)?,
        kind: r.get(4)?,
        sender_role: r.get(5)?,
        sealed: r.get(6)?,
    })
}

const KEY_COLUMNS: &str = "consultation, scheme, wrapped_key, master_key_id, created_at";

#[async_trait::async_trait]
impl ChatStore for SqliteStore {
    async fn insert_chat_key(&self, key: &ChatKeyRecord) -> Result<ChatKeyRecord> {
        let k = key.clone();
        self.write(move |conn| {
            conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO chat_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
                ),
                params![
                    k.consultation,
                    k.scheme,
                    k.wrapped_key,
                    k.master_key_id,
                    k.created_at
                ],
            )?;
            conn.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM chat_keys WHERE consultation = ?1"),
                [&k.consultation],
                key_row,
            )
        })
        .await
    }

    async fn chat_key(&self, consultation: &str) -> Result<Option<ChatKeyRecord>> {
        let consultation = consultation.to_string();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM chat_keys WHERE consultation = ?1"),
                [&consultation],
                key_row,
            )
            .optional()
        })
        .await
    }

    async fn upsert_chat_message(&self, m: &StoredChatMessage) -> Result<()> {
        let m = m.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO chat_messages (id, consultation, seq, at, kind, sender_role, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![m.id, m.consultation, m.seq, m.at, m.kind, m.sender_role, m.sealed],
            )
            .map(|_| ())
        })
        .await
    }

    async fn chat_messages(&self, consultation: &str) -> Result<Vec<StoredChatMessage>> {
        let consultation = consultation.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, consultation, seq, at, kind, sender_role, sealed FROM chat_messages
                 WHERE consultation = ?1 ORDER BY at, seq, id",
            )?;
            let rows = stmt.query_map([&consultation], message_row)?;
            rows.collect()
        })
        .await
    }
}
