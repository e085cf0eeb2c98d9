//! [`InvitationStore`] for the embedded SQLite store: tables `scheduled_consultations` and
//! `invitations` (created with the rest of the schema when the store opens).

use super::SqliteStore;
use crate::invitations::{
    ConsultationStatus, Invitation, InvitationStore, Policy, Pseudonym, ScheduledConsultation,
};
use crate::{Millis, Result, StoreError};
use rusqlite::{OptionalExtension, Row, params};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS scheduled_consultations (
    id TEXT PRIMARY KEY,
    organisation TEXT NOT NULL,
    practitioner TEXT NOT NULL,
    scheduled_at INTEGER,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    policy TEXT NOT NULL DEFAULT 'standard'
);
CREATE TABLE IF NOT EXISTS invitations (
    jti TEXT PRIMARY KEY,
    consultation TEXT NOT NULL,
    role TEXT NOT NULL,
    pseudonym TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scheduled_consultations_owner
    ON scheduled_consultations (organisation, practitioner, created_at, id);
CREATE INDEX IF NOT EXISTS invitations_consultation ON invitations (consultation, created_at, jti);
";

/// Databases made before consultation policies existed get the column (`standard`).
pub(super) fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has_policy = conn
        .prepare(
            "SELECT 1 FROM pragma_table_info('scheduled_consultations') WHERE name = 'policy'",
        )?
        .exists([])?;
    if !has_policy {
        conn.execute_batch(
            "ALTER TABLE scheduled_consultations ADD COLUMN policy TEXT NOT NULL DEFAULT 'standard'",
        )?;
    }
    Ok(())
}

pub(super) fn consultation_row(r: &Row<'_>) -> rusqlite::Result<ScheduledConsultation> {
    let policy: String = r.get(6)?;
    let policy = Policy::parse(&policy).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            6,
            rusqlite::types::Type::Text,
            format!("unknown consultation policy {policy:?}").into(),
        )
    })?;
    let status: String = r.get(4)?;
    let status = ConsultationStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("unknown consultation status {status:?}").into(),
        )
    })?;
    Ok(ScheduledConsultation {
        id: r.get(0)?,
        organisation: r.get(1)?,
        practitioner: r.get(2)?,
        scheduled_at: r.get(3)?,
        status,
        created_at: r.get(5)?,
        policy,
    })
}

fn invitation_row(r: &Row<'_>) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        jti: r.get(0)?,
        consultation: r.get(1)?,
        role: r.get(2)?,
        pseudonym: Pseudonym::new(r.get::<_, String>(3)?),
        not_before: r.get(4)?,
        expires: r.get(5)?,
        revoked_at: r.get(6)?,
        created_at: r.get(7)?,
    })
}

const INVITATION_COLUMNS: &str =
    "jti, consultation, role, pseudonym, not_before, expires, revoked_at, created_at";

#[async_trait::async_trait]
impl InvitationStore for SqliteStore {
    async fn upsert_scheduled_consultation(&self, c: &ScheduledConsultation) -> Result<()> {
        let c = c.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO scheduled_consultations (id, organisation, practitioner, scheduled_at, status, created_at, policy)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET organisation = ?2, practitioner = ?3,
                   scheduled_at = ?4, status = ?5, created_at = ?6, policy = ?7",
                params![
                    c.id,
                    c.organisation,
                    c.practitioner,
                    c.scheduled_at,
                    c.status.as_str(),
                    c.created_at,
                    c.policy.as_str()
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn scheduled_consultation(&self, id: &str) -> Result<Option<ScheduledConsultation>> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.query_row(
                "SELECT id, organisation, practitioner, scheduled_at, status, created_at, policy
                 FROM scheduled_consultations WHERE id = ?1",
                [&id],
                consultation_row,
            )
            .optional()
        })
        .await
    }

    async fn scheduled_consultations(
        &self,
        organisation: &str,
        practitioner: Option<&str>,
    ) -> Result<Vec<ScheduledConsultation>> {
        let organisation = organisation.to_string();
        let practitioner = practitioner.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, organisation, practitioner, scheduled_at, status, created_at, policy
                 FROM scheduled_consultations
                 WHERE organisation = ?1 AND (?2 IS NULL OR practitioner = ?2)
                 ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map(params![organisation, practitioner], consultation_row)?;
            rows.collect()
        })
        .await
    }

    async fn set_consultation_status(&self, id: &str, status: ConsultationStatus) -> Result<()> {
        let id = id.to_string();
        let n = self
            .write(move |conn| {
                conn.execute(
                    "UPDATE scheduled_consultations SET status = ?2 WHERE id = ?1",
                    params![id, status.as_str()],
                )
            })
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn cancel_consultation(&self, id: &str, at: Millis) -> Result<u64> {
        let id = id.to_string();
        let revoked = self
            .write(move |conn| {
                // One transaction: the status and the revocations are seen together or not at all.
                let tx = conn.transaction()?;
                let n = tx.execute(
                    "UPDATE scheduled_consultations SET status = 'cancelled' WHERE id = ?1",
                    [&id],
                )?;
                if n == 0 {
                    return Ok(None);
                }
                let revoked = tx.execute(
                    "UPDATE invitations SET revoked_at = ?2
                     WHERE consultation = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )?;
                tx.commit()?;
                Ok(Some(revoked as u64))
            })
            .await?;
        revoked.ok_or(StoreError::NotFound)
    }

    async fn upsert_invitation(&self, i: &Invitation) -> Result<()> {
        let i = i.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO invitations (jti, consultation, role, pseudonym, not_before, expires, revoked_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (jti) DO UPDATE SET consultation = ?2, role = ?3, pseudonym = ?4,
                   not_before = ?5, expires = ?6, revoked_at = ?7, created_at = ?8",
                params![
                    i.jti,
                    i.consultation,
                    i.role,
                    i.pseudonym.expose(),
                    i.not_before,
                    i.expires,
                    i.revoked_at,
                    i.created_at
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn invitation(&self, jti: &str) -> Result<Option<Invitation>> {
        let jti = jti.to_string();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE jti = ?1"),
                [&jti],
                invitation_row,
            )
            .optional()
        })
        .await
    }

    async fn invitations(&self, consultation: &str) -> Result<Vec<Invitation>> {
        let consultation = consultation.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {INVITATION_COLUMNS} FROM invitations WHERE consultation = ?1
                 ORDER BY created_at, jti"
            ))?;
            let rows = stmt.query_map([&consultation], invitation_row)?;
            rows.collect()
        })
        .await
    }

    async fn revoke_invitation(&self, jti: &str, at: Millis) -> Result<()> {
        let jti = jti.to_string();
        let n = self
            .write(move |conn| {
                conn.execute(
                    "UPDATE invitations SET revoked_at = COALESCE(revoked_at, ?2) WHERE jti = ?1",
                    params![jti, at],
                )
            })
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before consultation policies existed opens, and its consultations
    /// read as `standard`; new writes keep their policy.
    #[tokio::test]
    async fn a_database_from_before_policies_gets_the_column() {
        let dir = std::env::temp_dir().join(format!(
            "tc-store-migrate-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let conn = rusqlite::Connection::open(dir.join(crate::sqlite::DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE scheduled_consultations (
                    id TEXT PRIMARY KEY, organisation TEXT NOT NULL, practitioner TEXT NOT NULL,
                    scheduled_at INTEGER, status TEXT NOT NULL, created_at INTEGER NOT NULL);
                 INSERT INTO scheduled_consultations VALUES ('old', 'o', 'p', NULL, 'scheduled', 1);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&dir).await.expect("opens and migrates");
        let old = store.scheduled_consultation("old").await.unwrap().unwrap();
        assert_eq!(old.policy, Policy::Standard);
        let mut new = old.clone();
        new.id = "new".into();
        new.policy = Policy::Recordable;
        store.upsert_scheduled_consultation(&new).await.unwrap();
        assert_eq!(
            store
                .scheduled_consultation("new")
                .await
                .unwrap()
                .unwrap()
                .policy,
            Policy::Recordable
        );
        drop(store);
        // Opening again (the column exists now) changes nothing.
        let store = SqliteStore::open(&dir).await.expect("opens again");
        assert_eq!(
            store
                .scheduled_consultation("old")
                .await
                .unwrap()
                .unwrap()
                .policy,
            Policy::Standard
        );
    }
}
