//! [`RecordingStore`] for MongoDB: the journal's bytes in the GridFS bucket `recordings`
//! (`recordings.files` `_id` = recording id), its record in the collection `recordings`
//! (`_id` = recording id), inserted only after the upload closed. A partial upload left by a
//! crash (a files document or chunks without a record) is removed before the next attempt.

use super::{MongoStore, from_doc, is_duplicate_key, map_err, to_doc};
use crate::recordings::{RecordingRecord, RecordingStore};
use crate::{CHUNK_SIZE, Result, StoreError};
use bytes::Bytes;
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use mongodb::bson::{Bson, doc};
use mongodb::error::ErrorKind;
use mongodb::gridfs::GridFsBucket;
use serde::{Deserialize, Serialize};

const RECORDS: &str = "recordings";
const BUCKET: &str = "recordings";

#[derive(Serialize, Deserialize)]
struct RecordDoc {
    #[serde(rename = "_id")]
    id: String,
    consultation: String,
    created_at: i64,
    stored_at: i64,
    bytes: i64,
    duration_ms: i64,
    interrupted: bool,
}

impl From<RecordDoc> for RecordingRecord {
    fn from(d: RecordDoc) -> Self {
        RecordingRecord {
            id: d.id,
            consultation: d.consultation,
            created_at: d.created_at,
            stored_at: d.stored_at,
            bytes: d.bytes.max(0) as u64,
            duration_ms: d.duration_ms,
            interrupted: d.interrupted,
        }
    }
}

impl MongoStore {
    fn recordings_bucket(&self) -> GridFsBucket {
        self.db.gridfs_bucket(
            mongodb::options::GridFsBucketOptions::builder()
                .bucket_name(BUCKET.to_string())
                .chunk_size_bytes(CHUNK_SIZE as u32)
                .build(),
        )
    }

    /// Remove a recording's GridFS file and chunks, if any (an earlier attempt's).
    async fn discard_recording_bytes(&self, id: &str) -> Result<()> {
        self.coll(&format!("{BUCKET}.files"))
            .delete_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        self.coll(&format!("{BUCKET}.chunks"))
            .delete_many(doc! {"files_id": id})
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl RecordingStore for MongoStore {
    async fn put_recording(
        &self,
        record: &RecordingRecord,
        mut body: BoxStream<'_, std::result::Result<Bytes, String>>,
    ) -> Result<()> {
        if self.recording(&record.id).await?.is_some() {
            return Ok(());
        }
        self.discard_recording_bytes(&record.id).await?;
        let bucket = self.recordings_bucket();
        let mut upload = bucket
            .open_upload_stream(&record.id)
            .id(Bson::String(record.id.clone()))
            .await
            .map_err(map_err)?;
        let mut failed = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(bytes) => {
                    if let Err(e) = upload.write_all(&bytes).await {
                        failed = Some(StoreError::Unavailable(e.to_string()));
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(StoreError::Aborted(e));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            let _ = upload.abort().await;
            let _ = self.discard_recording_bytes(&record.id).await;
            return Err(e);
        }
        if let Err(e) = upload.close().await {
            let _ = self.discard_recording_bytes(&record.id).await;
            return Err(StoreError::Unavailable(e.to_string()));
        }
        let d = to_doc(&RecordDoc {
            id: record.id.clone(),
            consultation: record.consultation.clone(),
            created_at: record.created_at,
            stored_at: record.stored_at,
            bytes: i64::try_from(record.bytes).unwrap_or(i64::MAX),
            duration_ms: record.duration_ms,
            interrupted: record.interrupted,
        })?;
        match self.coll(RECORDS).insert_one(d).await {
            Ok(_) => Ok(()),
            // Stored meanwhile by another attempt: the same bytes.
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn recordings(&self, consultation: Option<&str>) -> Result<Vec<RecordingRecord>> {
        let filter = match consultation {
            Some(c) => doc! {"consultation": c},
            None => doc! {},
        };
        let cursor = self
            .coll(RECORDS)
            .find(filter)
            .sort(doc! {"created_at": 1, "_id": 1})
            .await
            .map_err(map_err)?;
        cursor
            .map_err(map_err)
            .and_then(|d| async move { from_doc::<RecordDoc>(d).map(Into::into) })
            .try_collect()
            .await
    }

    async fn recording(&self, id: &str) -> Result<Option<RecordingRecord>> {
        let d = self
            .coll(RECORDS)
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        d.map(|d| from_doc::<RecordDoc>(d).map(Into::into))
            .transpose()
    }

    fn recording_body<'a>(&'a self, id: &'a str) -> BoxStream<'a, Result<Bytes>> {
        let bucket = self.recordings_bucket();
        stream::once(async move {
            // Only a recording with a record is readable (never a partial upload).
            match self.recording(id).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(StoreError::NotFound),
                Err(e) => return Err(e),
            }
            bucket
                .open_download_stream(Bson::String(id.to_string()))
                .await
                .map_err(|e| match e.kind.as_ref() {
                    ErrorKind::GridFs(mongodb::error::GridFsErrorKind::FileNotFound { .. }) => {
                        StoreError::NotFound
                    }
                    _ => map_err(e),
                })
        })
        .map(|r| match r {
            Ok(download) => stream::unfold(Some(download), |s| async move {
                let mut download = s?;
                let mut buf = vec![0u8; CHUNK_SIZE];
                let mut filled = 0;
                while filled < CHUNK_SIZE {
                    match download.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            return Some((Err(StoreError::Unavailable(e.to_string())), None));
                        }
                    }
                }
                if filled == 0 {
                    return None;
                }
                buf.truncate(filled);
                let next = (filled == CHUNK_SIZE).then_some(download);
                Some((Ok(Bytes::from(buf)), next))
            })
            .boxed(),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    async fn delete_recording(&self, id: &str) -> Result<()> {
        let deleted = self
            .coll(RECORDS)
            .delete_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        self.discard_recording_bytes(id).await?;
        if deleted.deleted_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
