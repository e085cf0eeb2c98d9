//! [`AccountStore`] on the embedded SQLite store: tables `organisations`, `accounts` (email
//! unique), `login_throttles`, `staff_sessions`. Accounts keep their roles and TOTP record as
//! JSON columns (read and written whole, never queried into).

use super::SqliteStore;
use crate::accounts::{Account, AccountStore, LoginThrottle, Organisation, SessionRecord};
use crate::{Millis, Result, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Created at open, after the main schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS organisations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    organisation TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    password_hash TEXT NOT NULL,
    totp TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_organisation ON accounts (organisation, email);
CREATE TABLE IF NOT EXISTS login_throttles (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    last_failure INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS staff_sessions (
    id_hash TEXT PRIMARY KEY,
    organisation TEXT NOT NULL,
    account TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS staff_sessions_account ON staff_sessions (organisation, account);
";

const ACCOUNT_COLUMNS: &str =
    "id, organisation, email, display_name, roles, disabled, password_hash, totp, created_at";

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn account_from_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    let roles: String = r.get(4)?;
    let totp: Option<String> = r.get(7)?;
    let parse = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(Account {
        id: r.get(0)?,
        organisation: r.get(1)?,
        email: r.get(2)?,
        display_name: r.get(3)?,
        roles: serde_json::from_str(&roles).map_err(|e| parse(4, e))?,
        disabled: r.get(5)?,
        password_hash: r.get(6)?,
        totp: totp
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| parse(7, e))?,
        created_at: r.get(8)?,
    })
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id_hash: r.get(0)?,
        organisation: r.get(1)?,
        account: r.get(2)?,
        created_at: r.get(3)?,
        last_seen: r.get(4)?,
        expires_at: r.get(5)?,
    })
}

fn write_account(c: &Connection, a: &Account, insert: bool) -> rusqlite::Result<usize> {
    let roles = serde_json::to_string(&a.roles).map_err(json_err)?;
    let totp = a
        .totp
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_err)?;
    if insert {
        c.execute(
            &format!(
                "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT DO NOTHING"
            ),
            params![
                a.id,
                a.organisation,
                a.email,
                a.display_name,
                roles,
                a.disabled,
                a.password_hash,
                totp,
                a.created_at
            ],
        )
    } else {
        c.execute(
            "UPDATE accounts SET display_name = ?3, roles = ?4, disabled = ?5, \
             password_hash = ?6, totp = ?7 WHERE id = ?1 AND organisation = ?2",
            params![
                a.id,
                a.organisation,
                a.display_name,
                roles,
                a.disabled,
                a.password_hash,
                totp
            ],
        )
    }
}

#[async_trait::async_trait]
impl AccountStore for SqliteStore {
    async fn upsert_organisation(&self, org: &Organisation) -> Result<()> {
        let o = org.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO organisations (id, name, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                params![o.id, o.name, o.created_at],
            )
            .map(|_| ())
        })
        .await
    }

    async fn organisation(&self, id: &str) -> Result<Option<Organisation>> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT id, name, created_at FROM organisations WHERE id = ?1",
                [id],
                |r| {
                    Ok(Organisation {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn insert_account(&self, account: &Account) -> Result<bool> {
        let a = account.clone();
        let n = self.write(move |c| write_account(c, &a, true)).await?;
        Ok(n == 1)
    }

    async fn update_account(&self, account: &Account) -> Result<()> {
        let a = account.clone();
        match self.write(move |c| write_account(c, &a, false)).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn account(&self, organisation: &str, id: &str) -> Result<Option<Account>> {
        let (org, id) = (organisation.to_string(), id.to_string());
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1 AND organisation = ?2"
                ),
                params![id, org],
                account_from_row,
            )
            .optional()
        })
        .await
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let email = email.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = ?1"),
                [email],
                account_from_row,
            )
            .optional()
        })
        .await
    }

    async fn accounts(&self, organisation: &str) -> Result<Vec<Account>> {
        let org = organisation.to_string();
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE organisation = ?1 ORDER BY email"
            ))?;
            st.query_map([org], account_from_row)?.collect()
        })
        .await
    }

    async fn login_throttle(&self, key: &str) -> Result<Option<LoginThrottle>> {
        let key = key.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT key, failures, locked_until, last_failure FROM login_throttles \
                 WHERE key = ?1",
                [key],
                |r| {
                    Ok(LoginThrottle {
                        key: r.get(0)?,
                        failures: r.get(1)?,
                        locked_until: r.get(2)?,
                        last_failure: r.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn record_login_failure(&self, key: &str, now: Millis) -> Result<u32> {
        let key = key.to_string();
        self.write(move |c| {
            c.query_row(
                "INSERT INTO login_throttles (key, failures, locked_until, last_failure) \
                 VALUES (?1, 1, 0, ?2) ON CONFLICT (key) DO UPDATE SET \
                 failures = failures + 1, last_failure = excluded.last_failure \
                 RETURNING failures",
                params![key, now],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn lock_login(&self, key: &str, until: Millis) -> Result<()> {
        let key = key.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE login_throttles SET locked_until = ?2 WHERE key = ?1",
                params![key, until],
            )
            .map(|_| ())
        })
        .await
    }

    async fn clear_login_throttle(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM login_throttles WHERE key = ?1", [key])
                .map(|_| ())
        })
        .await
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        let s = session.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO staff_sessions (id_hash, organisation, account, created_at, \
                 last_seen, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.id_hash,
                    s.organisation,
                    s.account,
                    s.created_at,
                    s.last_seen,
                    s.expires_at
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let id = id_hash.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT id_hash, organisation, account, created_at, last_seen, expires_at \
                 FROM staff_sessions WHERE id_hash = ?1",
                [id],
                session_from_row,
            )
            .optional()
        })
        .await
    }

    async fn touch_session(&self, id_hash: &str, last_seen: Millis) -> Result<()> {
        let id = id_hash.to_string();
        let n = self
            .write(move |c| {
                c.execute(
                    "UPDATE staff_sessions SET last_seen = MAX(last_seen, ?2) WHERE id_hash = ?1",
                    params![id, last_seen],
                )
            })
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let id = id_hash.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM staff_sessions WHERE id_hash = ?1", [id])
                .map(|_| ())
        })
        .await
    }

    async fn delete_account_sessions(&self, organisation: &str, account: &str) -> Result<u64> {
        let (org, acc) = (organisation.to_string(), account.to_string());
        let n = self
            .write(move |c| {
                c.execute(
                    "DELETE FROM staff_sessions WHERE organisation = ?1 AND account = ?2",
                    params![org, acc],
                )
            })
            .await?;
        Ok(n as u64)
    }
}
