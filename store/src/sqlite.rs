//! The embedded backend: SQLite (bundled, nothing to install) in one data directory.
//!
//! - One writer connection behind a mutex and a small pool of reader connections; WAL mode, so
//!   readers never wait for the writer; `synchronous=FULL`, so a committed billing interval
//!   survives a power cut. Every call runs in `spawn_blocking`.
//! - Exports page through results with keyset pagination (`(start, id) > (last start, last id)`,
//!   [`PAGE`] rows at a time): memory stays constant whatever the number of rows.
//! - Documents are stored as [`CHUNK_SIZE`] chunks under a fresh *blob key*; the metadata row
//!   (which points at the blob key) is inserted only after every chunk is written, in one
//!   transaction that also checks the chunk count. Until then nothing is visible. Chunks are
//!   written in their own short transactions rather than in one transaction spanning the whole
//!   upload: an upload from a slow client can take minutes, and one transaction would hold
//!   SQLite's single write lock — and so every billing checkpoint — for that long. An aborted
//!   upload deletes its chunks at once; chunks orphaned by a crash mid-upload (no metadata row
//!   points at them) are swept when the store is opened.

use crate::{
    AuditEvent, BillingInterval, ConsultationSummary, DocumentFinish, DocumentMeta, ExportQuery,
    Millis, PresenceInterval, Result, Store, StoreError,
};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[path = "sqlite_accounts.rs"]
mod accounts;
#[path = "sqlite_api_keys.rs"]
mod api_keys;
#[path = "sqlite_chat.rs"]
mod chat;
#[path = "sqlite_invitations.rs"]
mod invitations;
#[path = "sqlite_recordings.rs"]
mod recordings;

/// Bytes per stored document chunk.
pub use crate::CHUNK_SIZE;
/// Rows fetched per page of an export.
const PAGE: i64 = 1000;
/// Reader connections kept open.
const MAX_IDLE_READERS: usize = 4;
/// The database file inside the data directory.
pub const DB_FILE: &str = "teleconsult.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS billing_intervals (
    id TEXT PRIMARY KEY,
    consultation TEXT NOT NULL,
    practitioner TEXT NOT NULL,
    start INTEGER NOT NULL,
    \"end\" INTEGER,
    checkpoint INTEGER NOT NULL,
    recovered INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_intervals_consultation ON billing_intervals (consultation, start, id);
CREATE INDEX IF NOT EXISTS billing_intervals_open ON billing_intervals (id) WHERE \"end\" IS NULL;
CREATE TABLE IF NOT EXISTS presence_intervals (
    id TEXT PRIMARY KEY,
    consultation TEXT NOT NULL,
    participant TEXT NOT NULL,
    role TEXT NOT NULL,
    start INTEGER NOT NULL,
    \"end\" INTEGER,
    checkpoint INTEGER NOT NULL,
    recovered INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS presence_intervals_consultation ON presence_intervals (consultation, start, id);
CREATE INDEX IF NOT EXISTS presence_intervals_open ON presence_intervals (id) WHERE \"end\" IS NULL;
CREATE TABLE IF NOT EXISTS consultations (
    consultation TEXT PRIMARY KEY,
    practitioner TEXT NOT NULL,
    patient_pseudonym TEXT NOT NULL,
    start INTEGER NOT NULL,
    \"end\" INTEGER,
    billable_ms INTEGER NOT NULL,
    participants INTEGER NOT NULL,
    recovered INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS consultations_start ON consultations (start, consultation);
CREATE INDEX IF NOT EXISTS consultations_practitioner ON consultations (practitioner, start, consultation);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    consultation TEXT NOT NULL,
    uploaded_at INTEGER NOT NULL,
    blob TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_consultation ON documents (consultation, uploaded_at, id);
CREATE TABLE IF NOT EXISTS document_chunks (
    blob TEXT NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    consultation TEXT,
    target TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at, id);
";

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("embedded database busy: {e}"))
        }
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::CannotOpen) => {
            StoreError::Unavailable(format!("embedded database: {e}"))
        }
        _ => StoreError::Other(format!("embedded database: {e}")),
    }
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl Inner {
    fn connect(path: &Path) -> Result<Connection> {
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql_err)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
            .map_err(sql_err)?;
        Ok(conn)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        // A poisoned lock means a panic while holding it; the connection itself is still
        // usable (SQLite rolls back an unfinished transaction when the next one begins).
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(sql_err)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.path)?,
        };
        let out = f(&conn).map_err(sql_err);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl SqliteStore {
    /// Open (creating if needed) the store in `data_dir`, which is created with mode 0700.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore> {
        let dir = data_dir.to_path_buf();
        blocking(move || Self::open_blocking(&dir)).await
    }

    fn open_blocking(data_dir: &Path) -> Result<SqliteStore> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let conn = Inner::connect(&path)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!(
                "embedded database: cannot enable WAL mode (got {mode})"
            )));
        }
        conn.execute_batch(SCHEMA).map_err(sql_err)?;
        conn.execute_batch(accounts::SCHEMA).map_err(sql_err)?;
        conn.execute_batch(invitations::SCHEMA).map_err(sql_err)?;
        invitations::migrate(&conn).map_err(sql_err)?;
        conn.execute_batch(api_keys::SCHEMA).map_err(sql_err)?;
        conn.execute_batch(chat::SCHEMA).map_err(sql_err)?;
        conn.execute_batch(recordings::SCHEMA).map_err(sql_err)?;
        // Chunks that no document points at: left by a crash in the middle of an upload.
        let swept = conn
            .execute(
                "DELETE FROM document_chunks WHERE blob NOT IN (SELECT blob FROM documents)",
                [],
            )
            .map_err(sql_err)?;
        if swept > 0 {
            tracing::info!(chunks = swept, "removed chunks of unfinished uploads");
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || inner.write(f)).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || inner.read(f)).await
    }

    /// Number of stored document chunks, including those of unfinished uploads (for tests).
    pub async fn chunk_count(&self) -> Result<u64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM document_chunks", [], |r| r.get(0)))
            .await
    }

    /// Number of stored documents (for tests).
    pub async fn document_count(&self) -> Result<u64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0)))
            .await
    }

    async fn write_chunk(&self, blob: Arc<str>, n: i64, data: Bytes) -> Result<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO document_chunks (blob, n, data) VALUES (?1, ?2, ?3)",
                params![&*blob, n, &data[..]],
            )
            .map(|_| ())
        })
        .await
    }

    async fn remove_blob(&self, blob: Arc<str>) -> Result<()> {
        self.write(move |c| {
            c.execute("DELETE FROM document_chunks WHERE blob = ?1", [&*blob])
                .map(|_| ())
        })
        .await
    }

    async fn upload(
        &self,
        blob: &Arc<str>,
        mut body: BoxStream<'_, std::result::Result<Bytes, String>>,
    ) -> Result<i64> {
        let mut n = 0i64;
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
        while let Some(item) = body.next().await {
            let mut bytes = item.map_err(StoreError::Aborted)?;
            while !bytes.is_empty() {
                let take = (CHUNK_SIZE - buf.len()).min(bytes.len());
                buf.extend_from_slice(&bytes.split_to(take));
                if buf.len() == CHUNK_SIZE {
                    let chunk = buf.split().freeze();
                    self.write_chunk(blob.clone(), n, chunk).await?;
                    n += 1;
                }
            }
        }
        if !buf.is_empty() {
            self.write_chunk(blob.clone(), n, buf.freeze()).await?;
            n += 1;
        }
        Ok(n)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("embedded database task failed: {e}")))?
}

/// Create `dir` (and parents) if missing; the directory itself gets mode 0700.
fn create_private_dir(dir: &Path) -> Result<()> {
    let unavailable = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", dir.display()))
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| unavailable("cannot create data directory", e))?;
        }
        let meta = std::fs::metadata(dir).map_err(|e| unavailable("cannot read", e))?;
        if !meta.is_dir() {
            return Err(StoreError::Unavailable(format!(
                "data directory {} is not a directory",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| unavailable("cannot make private (0700)", e))?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(|e| unavailable("cannot create data directory", e))?;
    Ok(())
}

fn billing_from_row(r: &Row<'_>) -> rusqlite::Result<BillingInterval> {
    Ok(BillingInterval {
        id: r.get(0)?,
        consultation: r.get(1)?,
        practitioner: r.get(2)?,
        start: r.get(3)?,
        end: r.get(4)?,
        checkpoint: r.get(5)?,
        recovered: r.get(6)?,
    })
}

fn presence_from_row(r: &Row<'_>) -> rusqlite::Result<PresenceInterval> {
    Ok(PresenceInterval {
        id: r.get(0)?,
        consultation: r.get(1)?,
        participant: r.get(2)?,
        role: r.get(3)?,
        start: r.get(4)?,
        end: r.get(5)?,
        checkpoint: r.get(6)?,
        recovered: r.get(7)?,
    })
}

fn summary_from_row(r: &Row<'_>) -> rusqlite::Result<ConsultationSummary> {
    Ok(ConsultationSummary {
        consultation: r.get(0)?,
        practitioner: r.get(1)?,
        patient_pseudonym: r.get(2)?,
        start: r.get(3)?,
        end: r.get(4)?,
        billable_ms: r.get(5)?,
        participants: r.get(6)?,
        recovered: r.get(7)?,
    })
}

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        consultation: r.get(4)?,
        target: r.get(5)?,
    })
}

fn meta_from_json(s: String) -> rusqlite::Result<DocumentMeta> {
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

const BILLING_COLS: &str = "id, consultation, practitioner, start, \"end\", checkpoint, recovered";
const PRESENCE_COLS: &str =
    "id, consultation, participant, role, start, \"end\", checkpoint, recovered";
const SUMMARY_COLS: &str = "consultation, practitioner, patient_pseudonym, start, \"end\", \
     billable_ms, participants, recovered";
const AUDIT_COLS: &str = "id, at, actor, action, consultation, target";

/// Keyset pagination: `fetch(after)` returns the next page of rows after the key `after`
/// (`None`: from the beginning); the stream ends on a short page.
fn paged<'a, T, K, F>(fetch: F, key: fn(&T) -> K) -> BoxStream<'a, Result<T>>
where
    T: Send + 'a,
    K: Send + Clone + 'a,
    F: Fn(Option<K>) -> futures_util::future::BoxFuture<'a, Result<Vec<T>>> + Send + 'a,
{
    struct State<T, K, F> {
        fetch: F,
        after: Option<K>,
        page: std::vec::IntoIter<T>,
        done: bool,
    }
    let state = State {
        fetch,
        after: None,
        page: Vec::new().into_iter(),
        done: false,
    };
    stream::unfold(state, move |mut s| async move {
        loop {
            if let Some(item) = s.page.next() {
                s.after = Some(key(&item));
                return Some((Ok(item), s));
            }
            if s.done {
                return None;
            }
            match (s.fetch)(s.after.clone()).await {
                Ok(rows) => {
                    s.done = (rows.len() as i64) < PAGE;
                    s.page = rows.into_iter();
                }
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            }
        }
    })
    .boxed()
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await
            .map(|_| ())
    }

    async fn upsert_billing_interval(&self, i: &BillingInterval) -> Result<()> {
        let i = i.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO billing_intervals (id, consultation, practitioner, start, \"end\", \
                 checkpoint, recovered) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (id) DO UPDATE SET consultation = excluded.consultation, \
                 practitioner = excluded.practitioner, start = excluded.start, \
                 \"end\" = excluded.\"end\", checkpoint = excluded.checkpoint, \
                 recovered = excluded.recovered",
                params![
                    i.id,
                    i.consultation,
                    i.practitioner,
                    i.start,
                    i.end,
                    i.checkpoint,
                    i.recovered
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn upsert_presence_interval(&self, i: &PresenceInterval) -> Result<()> {
        let i = i.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO presence_intervals (id, consultation, participant, role, start, \
                 \"end\", checkpoint, recovered) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (id) DO UPDATE SET consultation = excluded.consultation, \
                 participant = excluded.participant, role = excluded.role, \
                 start = excluded.start, \"end\" = excluded.\"end\", \
                 checkpoint = excluded.checkpoint, recovered = excluded.recovered",
                params![
                    i.id,
                    i.consultation,
                    i.participant,
                    i.role,
                    i.start,
                    i.end,
                    i.checkpoint,
                    i.recovered
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn upsert_consultation_summary(&self, s: &ConsultationSummary) -> Result<()> {
        let s = s.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO consultations (consultation, practitioner, patient_pseudonym, \
                 start, \"end\", billable_ms, participants, recovered) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (consultation) DO UPDATE SET practitioner = excluded.practitioner, \
                 patient_pseudonym = excluded.patient_pseudonym, start = excluded.start, \
                 \"end\" = excluded.\"end\", billable_ms = excluded.billable_ms, \
                 participants = excluded.participants, recovered = excluded.recovered",
                params![
                    s.consultation,
                    s.practitioner,
                    s.patient_pseudonym,
                    s.start,
                    s.end,
                    s.billable_ms,
                    s.participants,
                    s.recovered
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn open_billing_intervals(&self) -> Result<Vec<BillingInterval>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BILLING_COLS} FROM billing_intervals WHERE \"end\" IS NULL ORDER BY id"
            ))?;
            st.query_map([], billing_from_row)?.collect()
        })
        .await
    }

    async fn open_presence_intervals(&self) -> Result<Vec<PresenceInterval>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PRESENCE_COLS} FROM presence_intervals WHERE \"end\" IS NULL ORDER BY id"
            ))?;
            st.query_map([], presence_from_row)?.collect()
        })
        .await
    }

    async fn billing_intervals(&self, consultation: &str) -> Result<Vec<BillingInterval>> {
        let consultation = consultation.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BILLING_COLS} FROM billing_intervals WHERE consultation = ?1 \
                 ORDER BY start, id"
            ))?;
            st.query_map([consultation], billing_from_row)?.collect()
        })
        .await
    }

    async fn presence_intervals(&self, consultation: &str) -> Result<Vec<PresenceInterval>> {
        let consultation = consultation.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PRESENCE_COLS} FROM presence_intervals WHERE consultation = ?1 \
                 ORDER BY start, id"
            ))?;
            st.query_map([consultation], presence_from_row)?.collect()
        })
        .await
    }

    async fn consultation_summary(
        &self,
        consultation: &str,
    ) -> Result<Option<ConsultationSummary>> {
        let consultation = consultation.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {SUMMARY_COLS} FROM consultations WHERE consultation = ?1"),
                [consultation],
                summary_from_row,
            )
            .optional()
        })
        .await
    }

    fn export_summaries(&self, query: ExportQuery) -> BoxStream<'_, Result<ConsultationSummary>> {
        let query = Arc::new(query);
        paged(
            move |after: Option<(Millis, String)>| {
                let query = query.clone();
                let this = self.clone();
                Box::pin(async move {
                    this.read(move |c| {
                        // Separate statements per shape, so SQLite seeks the matching index
                        // (`consultations_start` or `consultations_practitioner`) to the key.
                        let mut sql = format!(
                            "SELECT {SUMMARY_COLS} FROM consultations WHERE start >= ? AND start < ?"
                        );
                        // The lower bound also carries the previous page's last start: SQLite
                        // seeks the index on `start` alone and would otherwise re-scan every
                        // earlier row on each page (quadratic over a large export).
                        let lower = after.as_ref().map_or(query.from, |(s, _)| query.from.max(*s));
                        let mut args: Vec<rusqlite::types::Value> =
                            vec![lower.into(), query.to.into()];
                        if let Some(p) = &query.practitioner {
                            sql.push_str(" AND practitioner = ?");
                            args.push(p.clone().into());
                        }
                        if let Some((start, id)) = after {
                            sql.push_str(" AND (start, consultation) > (?, ?)");
                            args.push(start.into());
                            args.push(id.into());
                        }
                        sql.push_str(" ORDER BY start, consultation LIMIT ?");
                        args.push(PAGE.into());
                        let mut st = c.prepare_cached(&sql)?;
                        st.query_map(rusqlite::params_from_iter(args), summary_from_row)?
                            .collect()
                    })
                    .await
                })
            },
            |s: &ConsultationSummary| (s.start, s.consultation.clone()),
        )
    }

    async fn put_document(
        &self,
        meta: &DocumentMeta,
        body: BoxStream<'_, std::result::Result<Bytes, String>>,
        finish: DocumentFinish<'_>,
    ) -> Result<()> {
        let id = meta.id.clone();
        let exists = self
            .read(move |c| {
                c.query_row("SELECT 1 FROM documents WHERE id = ?1", [id], |_| Ok(()))
                    .optional()
            })
            .await?;
        if exists.is_some() {
            return Err(StoreError::Other(format!(
                "document {} already exists",
                meta.id
            )));
        }
        let blob: Arc<str> = format!("{}.{:016x}", meta.id, rand::random::<u64>()).into();
        let chunks = match self.upload(&blob, body).await {
            Ok(n) => n,
            Err(e) => {
                if let Err(cleanup) = self.remove_blob(blob.clone()).await {
                    tracing::warn!(error = %cleanup, "removing chunks of an aborted upload failed; swept at next start");
                }
                return Err(e);
            }
        };
        let mut meta = meta.clone();
        finish(&mut meta);
        let json = serde_json::to_string(&meta).map_err(other)?;
        let blob2 = blob.clone();
        let finished = self
            .write(move |c| {
                let tx = c.transaction()?;
                let written: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM document_chunks WHERE blob = ?1",
                    [&*blob2],
                    |r| r.get(0),
                )?;
                if written != chunks {
                    return Ok(Err(StoreError::Other(format!(
                        "document {}: {written} chunks stored, {chunks} written",
                        meta.id
                    ))));
                }
                let inserted = tx.execute(
                    "INSERT INTO documents (id, consultation, uploaded_at, blob, chunks, meta) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                    params![
                        meta.id,
                        meta.consultation,
                        meta.uploaded_at,
                        &*blob2,
                        chunks,
                        json
                    ],
                )?;
                if inserted == 0 {
                    return Ok(Err(StoreError::Other(format!(
                        "document {} already exists",
                        meta.id
                    ))));
                }
                tx.commit()?;
                Ok(Ok(()))
            })
            .await;
        match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => {
                let _ = self.remove_blob(blob).await;
                Err(e)
            }
        }
    }

    async fn list_documents(&self, consultation: &str) -> Result<Vec<DocumentMeta>> {
        let consultation = consultation.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT meta FROM documents WHERE consultation = ?1 ORDER BY uploaded_at, id",
            )?;
            st.query_map([consultation], |r| meta_from_json(r.get(0)?))?
                .collect()
        })
        .await
    }

    async fn document(&self, consultation: &str, id: &str) -> Result<Option<DocumentMeta>> {
        let (consultation, id) = (consultation.to_string(), id.to_string());
        self.read(move |c| {
            c.query_row(
                "SELECT meta FROM documents WHERE consultation = ?1 AND id = ?2",
                [consultation, id],
                |r| meta_from_json(r.get(0)?),
            )
            .optional()
        })
        .await
    }

    fn document_body<'a>(&'a self, id: &'a str) -> BoxStream<'a, Result<Bytes>> {
        enum St {
            Start,
            Chunk { blob: Arc<str>, n: i64, count: i64 },
            Done,
        }
        stream::unfold(St::Start, move |st| async move {
            let (blob, n, count) = match st {
                St::Done => return None,
                St::Start => {
                    let id = id.to_string();
                    let found = self
                        .read(move |c| {
                            c.query_row(
                                "SELECT blob, chunks FROM documents WHERE id = ?1",
                                [id],
                                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                            )
                            .optional()
                        })
                        .await;
                    match found {
                        Ok(Some((blob, count))) => (Arc::<str>::from(blob), 0, count),
                        Ok(None) => return Some((Err(StoreError::NotFound), St::Done)),
                        Err(e) => return Some((Err(e), St::Done)),
                    }
                }
                St::Chunk { blob, n, count } => (blob, n, count),
            };
            if n >= count {
                return None;
            }
            let b = blob.clone();
            let chunk = self
                .read(move |c| {
                    c.query_row(
                        "SELECT data FROM document_chunks WHERE blob = ?1 AND n = ?2",
                        params![&*b, n],
                        |r| r.get::<_, Vec<u8>>(0),
                    )
                    .optional()
                })
                .await;
            match chunk {
                Ok(Some(data)) => Some((
                    Ok(Bytes::from(data)),
                    St::Chunk {
                        blob,
                        n: n + 1,
                        count,
                    },
                )),
                // Deleted while being read.
                Ok(None) => Some((Err(StoreError::NotFound), St::Done)),
                Err(e) => Some((Err(e), St::Done)),
            }
        })
        .boxed()
    }

    async fn delete_document(&self, consultation: &str, id: &str) -> Result<()> {
        let (consultation, id) = (consultation.to_string(), id.to_string());
        let deleted = self
            .write(move |c| {
                let tx = c.transaction()?;
                let blob: Option<String> = tx
                    .query_row(
                        "SELECT blob FROM documents WHERE consultation = ?1 AND id = ?2",
                        [&consultation, &id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(blob) = blob else {
                    return Ok(false);
                };
                tx.execute("DELETE FROM documents WHERE id = ?1", [&id])?;
                tx.execute("DELETE FROM document_chunks WHERE blob = ?1", [&blob])?;
                tx.commit()?;
                Ok(true)
            })
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn record_audit(&self, e: &AuditEvent) -> Result<()> {
        let e = e.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO audit (id, at, actor, action, consultation, target) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                params![e.id, e.at, e.actor, e.action, e.consultation, e.target],
            )
            .map(|_| ())
        })
        .await
    }

    fn export_audit(&self, from: Millis, to: Millis) -> BoxStream<'_, Result<AuditEvent>> {
        paged(
            move |after: Option<(Millis, String)>| {
                let this = self.clone();
                Box::pin(async move {
                    this.read(move |c| {
                        let mut sql =
                            format!("SELECT {AUDIT_COLS} FROM audit WHERE at >= ? AND at < ?");
                        // Seek from the previous page's last `at` (see export_summaries).
                        let lower = after.as_ref().map_or(from, |(at, _)| from.max(*at));
                        let mut args: Vec<rusqlite::types::Value> = vec![lower.into(), to.into()];
                        if let Some((at, id)) = after {
                            sql.push_str(" AND (at, id) > (?, ?)");
                            args.push(at.into());
                            args.push(id.into());
                        }
                        sql.push_str(" ORDER BY at, id LIMIT ?");
                        args.push(PAGE.into());
                        let mut st = c.prepare_cached(&sql)?;
                        st.query_map(rusqlite::params_from_iter(args), audit_from_row)?
                            .collect()
                    })
                    .await
                })
            },
            |e: &AuditEvent| (e.at, e.id.clone()),
        )
    }
}
