//! [`RecordingStore`] for the embedded SQLite store: tables `recordings` and `recording_chunks`
//! (the journal's bytes in [`CHUNK_SIZE`] pieces). A record is inserted only once all its
//! chunks are, in the same transaction that checks their count; chunks without a record (a
//! crash in the middle) are swept at open.

use super::{SqliteStore, other};
use crate::recordings::{RecordingRecord, RecordingStore};
use crate::{CHUNK_SIZE, Result, StoreError};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt};
use rusqlite::{OptionalExtension, Row, params};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    consultation TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    stored_at INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    interrupted INTEGER NOT NULL,
    chunks INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_consultation ON recordings (consultation, created_at, id);
CREATE TABLE IF NOT EXISTS recording_chunks (
    id TEXT NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (id, n)
) WITHOUT ROWID;
DELETE FROM recording_chunks WHERE id NOT IN (SELECT id FROM recordings);
";

fn row(r: &Row<'_>) -> rusqlite::Result<RecordingRecord> {
    Ok(RecordingRecord {
        id: r.get(0)?,
        consultation: r.get(1)?,
        created_at: r.get(2)?,
        stored_at: r.get(3)?,
        bytes: r.get::<_, i64>(4)?.max(0) as u64,
        duration_ms: r.get(5)?,
        interrupted: r.get::<_, i64>(6)? != 0,
    })
}

const COLUMNS: &str = "id, consultation, created_at, stored_at, bytes, duration_ms, interrupted";

impl SqliteStore {
    async fn remove_recording_chunks(&self, id: String) -> Result<()> {
        self.write(move |c| {
            c.execute("DELETE FROM recording_chunks WHERE id = ?1", [id])
                .map(|_| ())
        })
        .await
    }

    async fn write_recording_chunk(&self, id: String, n: i64, data: Vec<u8>) -> Result<()> {
        self.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO recording_chunks (id, n, data) VALUES (?1, ?2, ?3)",
                params![id, n, data],
            )
            .map(|_| ())
        })
        .await
    }
}

#[async_trait::async_trait]
impl RecordingStore for SqliteStore {
    async fn put_recording(
        &self,
        record: &RecordingRecord,
        mut body: BoxStream<'_, std::result::Result<Bytes, String>>,
    ) -> Result<()> {
        if self.recording(&record.id).await?.is_some() {
            return Ok(());
        }
        let mut n: i64 = 0;
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
        let mut failed = None;
        'read: while let Some(item) = body.next().await {
            let mut bytes = match item {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(StoreError::Aborted(e));
                    break;
                }
            };
            while !bytes.is_empty() {
                let take = (CHUNK_SIZE - buf.len()).min(bytes.len());
                buf.extend_from_slice(&bytes.split_to(take));
                if buf.len() == CHUNK_SIZE {
                    if let Err(e) = self
                        .write_recording_chunk(record.id.clone(), n, buf.split().to_vec())
                        .await
                    {
                        failed = Some(e);
                        break 'read;
                    }
                    n += 1;
                }
            }
        }
        if failed.is_none() && !buf.is_empty() {
            match self
                .write_recording_chunk(record.id.clone(), n, buf.to_vec())
                .await
            {
                Ok(()) => n += 1,
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            let _ = self.remove_recording_chunks(record.id.clone()).await;
            return Err(e);
        }
        let r = record.clone();
        let chunks = n;
        let done = self
            .write(move |c| {
                let tx = c.transaction()?;
                let written: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM recording_chunks WHERE id = ?1",
                    [&r.id],
                    |row| row.get(0),
                )?;
                if written != chunks {
                    return Ok(Err(other(format!(
                        "recording {}: {written} chunks stored, {chunks} written",
                        r.id
                    ))));
                }
                tx.execute(
                    "INSERT INTO recordings (id, consultation, created_at, stored_at, bytes, duration_ms, interrupted, chunks)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                    params![
                        r.id,
                        r.consultation,
                        r.created_at,
                        r.stored_at,
                        i64::try_from(r.bytes).unwrap_or(i64::MAX),
                        r.duration_ms,
                        i64::from(r.interrupted),
                        chunks
                    ],
                )?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await;
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => {
                let _ = self.remove_recording_chunks(record.id.clone()).await;
                Err(e)
            }
        }
    }

    async fn recordings(&self, consultation: Option<&str>) -> Result<Vec<RecordingRecord>> {
        let consultation = consultation.map(str::to_string);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM recordings WHERE (?1 IS NULL OR consultation = ?1)
                 ORDER BY created_at, id"
            ))?;
            st.query_map([consultation], row)?.collect()
        })
        .await
    }

    async fn recording(&self, id: &str) -> Result<Option<RecordingRecord>> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM recordings WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
        })
        .await
    }

    fn recording_body<'a>(&'a self, id: &'a str) -> BoxStream<'a, Result<Bytes>> {
        stream::unfold(Some((0i64, None::<i64>)), move |st| async move {
            let (n, count) = st?;
            let count = match count {
                Some(c) => c,
                None => {
                    let id = id.to_string();
                    let found = self
                        .read(move |c| {
                            c.query_row("SELECT chunks FROM recordings WHERE id = ?1", [id], |r| {
                                r.get::<_, i64>(0)
                            })
                            .optional()
                        })
                        .await;
                    match found {
                        Ok(Some(c)) => c,
                        Ok(None) => return Some((Err(StoreError::NotFound), None)),
                        Err(e) => return Some((Err(e), None)),
                    }
                }
            };
            if n >= count {
                return None;
            }
            let key = id.to_string();
            let chunk = self
                .read(move |c| {
                    c.query_row(
                        "SELECT data FROM recording_chunks WHERE id = ?1 AND n = ?2",
                        params![key, n],
                        |r| r.get::<_, Vec<u8>>(0),
                    )
                    .optional()
                })
                .await;
            match chunk {
                Ok(Some(data)) => Some((Ok(Bytes::from(data)), Some((n + 1, Some(count))))),
                Ok(None) => Some((Err(StoreError::NotFound), None)),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }

    async fn delete_recording(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        let deleted = self
            .write(move |c| {
                let tx = c.transaction()?;
                let n = tx.execute("DELETE FROM recordings WHERE id = ?1", [&id])?;
                tx.execute("DELETE FROM recording_chunks WHERE id = ?1", [&id])?;
                tx.commit()?;
                Ok(n)
            })
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
