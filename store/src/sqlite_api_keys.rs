//! [`ApiKeyStore`] on the embedded SQLite store: table `api_keys` (scopes as a JSON column), and
//! the organisation's consultations by scheduled time (`scheduled_consultations`).

use super::SqliteStore;
use super::invitations::consultation_row;
use crate::api_keys::{ApiKey, ApiKeyStore, ConsultationCursor};
use crate::invitations::ScheduledConsultation;
use crate::{Millis, Result, StoreError};
use rusqlite::{OptionalExtension, Row, params};

/// Created at open, after the invitations' schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    organisation TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_organisation ON api_keys (organisation, created_at, id);
CREATE INDEX IF NOT EXISTS scheduled_consultations_organisation
    ON scheduled_consultations (organisation, scheduled_at, id);
";

const COLUMNS: &str =
    "id, organisation, name, scopes, secret_hash, created_by, created_at, revoked_at, last_used_at";

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let scopes: String = r.get(3)?;
    Ok(ApiKey {
        id: r.get(0)?,
        organisation: r.get(1)?,
        name: r.get(2)?,
        scopes: serde_json::from_str(&scopes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        secret_hash: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        revoked_at: r.get(7)?,
        last_used_at: r.get(8)?,
    })
}

#[async_trait::async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(&self, k: &ApiKey) -> Result<()> {
        let k = k.clone();
        let scopes =
            serde_json::to_string(&k.scopes).map_err(|e| StoreError::Other(e.to_string()))?;
        self.write(move |conn| {
            conn.execute(
                &format!(
                    "INSERT OR REPLACE INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    k.id,
                    k.organisation,
                    k.name,
                    scopes,
                    k.secret_hash,
                    k.created_by,
                    k.created_at,
                    k.revoked_at,
                    k.last_used_at
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                [&id],
                key_row,
            )
            .optional()
        })
        .await
    }

    async fn api_keys(&self, organisation: &str) -> Result<Vec<ApiKey>> {
        let organisation = organisation.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE organisation = ?1 ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([&organisation], key_row)?;
            rows.collect()
        })
        .await
    }

    async fn revoke_api_key(&self, organisation: &str, id: &str, at: Millis) -> Result<()> {
        let (organisation, id) = (organisation.to_string(), id.to_string());
        let n = self
            .write(move |conn| {
                conn.execute(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3)
                     WHERE id = ?1 AND organisation = ?2",
                    params![id, organisation, at],
                )
            })
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn touch_api_key(&self, id: &str, at: Millis) -> Result<()> {
        let id = id.to_string();
        self.write(move |conn| {
            conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                params![id, at],
            )
            .map(|_| ())
        })
        .await
    }

    async fn consultations_scheduled_between(
        &self,
        organisation: &str,
        from: Millis,
        to: Millis,
        after: Option<ConsultationCursor>,
        limit: u32,
    ) -> Result<Vec<ScheduledConsultation>> {
        let organisation = organisation.to_string();
        // Without a cursor: after (from - 1, "") admits every id at `from` ("" sorts first).
        let (after_at, after_id) = after.unwrap_or((from.saturating_sub(1), String::new()));
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, organisation, practitioner, scheduled_at, status, created_at, policy
                 FROM scheduled_consultations
                 WHERE organisation = ?1 AND scheduled_at >= ?2 AND scheduled_at < ?3
                   AND (scheduled_at > ?4 OR (scheduled_at = ?4 AND id > ?5))
                 ORDER BY scheduled_at, id LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![organisation, from, to, after_at, after_id, limit],
                consultation_row,
            )?;
            rows.collect()
        })
        .await
    }
}
