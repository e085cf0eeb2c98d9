//! The production backend: MongoDB through the official driver. Only features that MongoDB 6/7
//! and FerretDB 1.24 both support: single-document writes (no multi-document transactions),
//! idempotent upserts by `_id` (`replace_one` with `upsert`), plain and compound indexes.
//!
//! Collections: `billing_intervals`, `presence_intervals`, `consultations` (`_id` = consultation
//! id), `audit`, and the GridFS bucket `documents` (`documents.files`, `documents.chunks`).
//! Indexes are created idempotently at open; if the server is unreachable then, the store still
//! opens and keeps retrying in the background (the server must start during a database outage).
//!
//! Documents are standard GridFS: file `_id` = document id (a string), `filename` = the sanitised
//! name, our [`DocumentMeta`] under `metadata`, chunks of [`CHUNK_SIZE`] bytes. They are read
//! with the driver's GridFS download stream. They are *written* chunk by chunk by this module
//! rather than through the driver's upload stream, because the stream takes the `metadata` when
//! it is opened, and the metadata (size, sha256 of the plaintext) is complete only once the body
//! has ended ([`crate::DocumentFinish`]). The files document is inserted last, so nothing is
//! visible before every chunk is written; on error the chunks are deleted (what the driver's
//! `abort` does) and the deletion is checked; chunks orphaned by a crash mid-upload (older than
//! an hour, no files document) are removed at open. `scripts/gridfs-crosscheck.py` (pymongo's
//! own GridFS) reads what this module writes, and this module reads what pymongo writes.

use crate::{
    AuditEvent, BillingInterval, ConsultationSummary, DocumentFinish, DocumentMeta, ExportQuery,
    Millis, PresenceInterval, Result, Store, StoreError,
};
use bytes::{Bytes, BytesMut};
use futures_util::io::AsyncReadExt;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use mongodb::bson::{self, Bson, Document, doc, oid::ObjectId, spec::BinarySubtype};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::time::Duration;

#[path = "mongo_accounts.rs"]
mod accounts;
#[path = "mongo_api_keys.rs"]
mod api_keys;
#[path = "mongo_chat.rs"]
mod chat;
#[path = "mongo_cluster.rs"]
mod cluster;
#[path = "mongo_invitations.rs"]
mod invitations;
#[path = "mongo_recordings.rs"]
mod recordings;

/// Bytes per stored document chunk.
pub use crate::CHUNK_SIZE;
/// GridFS bucket name.
pub const BUCKET: &str = "documents";
/// Server selection and connection timeouts when the URI sets none: outages show quickly.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Cursor batch size of exports.
const BATCH: u32 = 1000;

fn map_err(e: mongodb::error::Error) -> StoreError {
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(format!("mongodb: {e}")),
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{WriteError, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(WriteError { code, .. })) => *code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

#[derive(Serialize, Deserialize)]
struct BillingDoc {
    #[serde(rename = "_id")]
    id: String,
    consultation: String,
    practitioner: String,
    start: i64,
    end: Option<i64>,
    checkpoint: i64,
    recovered: bool,
}

impl From<&BillingInterval> for BillingDoc {
    fn from(i: &BillingInterval) -> Self {
        BillingDoc {
            id: i.id.clone(),
            consultation: i.consultation.clone(),
            practitioner: i.practitioner.clone(),
            start: i.start,
            end: i.end,
            checkpoint: i.checkpoint,
            recovered: i.recovered,
        }
    }
}

impl From<BillingDoc> for BillingInterval {
    fn from(d: BillingDoc) -> Self {
        BillingInterval {
            id: d.id,
            consultation: d.consultation,
            practitioner: d.practitioner,
            start: d.start,
            end: d.end,
            checkpoint: d.checkpoint,
            recovered: d.recovered,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PresenceDoc {
    #[serde(rename = "_id")]
    id: String,
    consultation: String,
    participant: String,
    role: String,
    start: i64,
    end: Option<i64>,
    checkpoint: i64,
    recovered: bool,
}

impl From<&PresenceInterval> for PresenceDoc {
    fn from(i: &PresenceInterval) -> Self {
        PresenceDoc {
            id: i.id.clone(),
            consultation: i.consultation.clone(),
            participant: i.participant.clone(),
            role: i.role.clone(),
            start: i.start,
            end: i.end,
            checkpoint: i.checkpoint,
            recovered: i.recovered,
        }
    }
}

impl From<PresenceDoc> for PresenceInterval {
    fn from(d: PresenceDoc) -> Self {
        PresenceInterval {
            id: d.id,
            consultation: d.consultation,
            participant: d.participant,
            role: d.role,
            start: d.start,
            end: d.end,
            checkpoint: d.checkpoint,
            recovered: d.recovered,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SummaryDoc {
    #[serde(rename = "_id")]
    consultation: String,
    practitioner: String,
    patient_pseudonym: String,
    start: i64,
    end: Option<i64>,
    billable_ms: i64,
    participants: i64,
    recovered: bool,
}

impl From<&ConsultationSummary> for SummaryDoc {
    fn from(s: &ConsultationSummary) -> Self {
        SummaryDoc {
            consultation: s.consultation.clone(),
            practitioner: s.practitioner.clone(),
            patient_pseudonym: s.patient_pseudonym.clone(),
            start: s.start,
            end: s.end,
            billable_ms: s.billable_ms,
            participants: i64::from(s.participants),
            recovered: s.recovered,
        }
    }
}

impl TryFrom<SummaryDoc> for ConsultationSummary {
    type Error = StoreError;
    fn try_from(d: SummaryDoc) -> Result<Self> {
        Ok(ConsultationSummary {
            consultation: d.consultation,
            practitioner: d.practitioner,
            patient_pseudonym: d.patient_pseudonym,
            start: d.start,
            end: d.end,
            billable_ms: d.billable_ms,
            participants: u32::try_from(d.participants).map_err(other)?,
            recovered: d.recovered,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct AuditDoc {
    #[serde(rename = "_id")]
    id: String,
    at: i64,
    actor: String,
    action: String,
    consultation: Option<String>,
    target: Option<String>,
}

impl From<&AuditEvent> for AuditDoc {
    fn from(e: &AuditEvent) -> Self {
        AuditDoc {
            id: e.id.clone(),
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            consultation: e.consultation.clone(),
            target: e.target.clone(),
        }
    }
}

impl From<AuditDoc> for AuditEvent {
    fn from(d: AuditDoc) -> Self {
        AuditEvent {
            id: d.id,
            at: d.at,
            actor: d.actor,
            action: d.action,
            consultation: d.consultation,
            target: d.target,
        }
    }
}

/// Our metadata as stored under a GridFS file's `metadata` (integers as Int64).
#[derive(Serialize, Deserialize)]
struct MetaDoc {
    id: String,
    consultation: String,
    filename: String,
    content_type: String,
    size: i64,
    sha256: String,
    uploader: String,
    uploader_role: String,
    uploaded_at: i64,
    encryption: EncryptionDoc,
}

#[derive(Serialize, Deserialize)]
struct EncryptionDoc {
    scheme: String,
    wrapped_key: String,
    chunk_size: i64,
    master_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_meta: Option<String>,
}

impl TryFrom<&DocumentMeta> for MetaDoc {
    type Error = StoreError;
    fn try_from(m: &DocumentMeta) -> Result<Self> {
        Ok(MetaDoc {
            id: m.id.clone(),
            consultation: m.consultation.clone(),
            filename: m.filename.clone(),
            content_type: m.content_type.clone(),
            size: i64::try_from(m.size).map_err(other)?,
            sha256: m.sha256.clone(),
            uploader: m.uploader.clone(),
            uploader_role: m.uploader_role.clone(),
            uploaded_at: m.uploaded_at,
            encryption: EncryptionDoc {
                scheme: m.encryption.scheme.clone(),
                wrapped_key: m.encryption.wrapped_key.clone(),
                chunk_size: i64::from(m.encryption.chunk_size),
                master_key_id: m.encryption.master_key_id.clone(),
                sealed_meta: m.encryption.sealed_meta.clone(),
            },
        })
    }
}

impl TryFrom<MetaDoc> for DocumentMeta {
    type Error = StoreError;
    fn try_from(m: MetaDoc) -> Result<Self> {
        Ok(DocumentMeta {
            id: m.id,
            consultation: m.consultation,
            filename: m.filename,
            content_type: m.content_type,
            size: u64::try_from(m.size).map_err(other)?,
            sha256: m.sha256,
            uploader: m.uploader,
            uploader_role: m.uploader_role,
            uploaded_at: m.uploaded_at,
            encryption: crate::EncryptionInfo {
                scheme: m.encryption.scheme,
                wrapped_key: m.encryption.wrapped_key,
                chunk_size: u32::try_from(m.encryption.chunk_size).map_err(other)?,
                master_key_id: m.encryption.master_key_id,
                sealed_meta: m.encryption.sealed_meta,
            },
        })
    }
}

fn meta_from_files_doc(d: &Document) -> Result<DocumentMeta> {
    let meta = d
        .get_document("metadata")
        .map_err(|e| StoreError::Other(format!("GridFS file without our metadata: {e}")))?;
    let meta: MetaDoc = bson::from_document(meta.clone()).map_err(other)?;
    DocumentMeta::try_from(meta)
}

fn to_doc<T: Serialize>(v: &T) -> Result<Document> {
    bson::to_document(v).map_err(other)
}

fn from_doc<T: DeserializeOwned>(d: Document) -> Result<T> {
    bson::from_document(d).map_err(other)
}

/// The MongoDB store. Cheap to clone.
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
}

impl MongoStore {
    /// Connect lazily to `uri` and use database `database`. Indexes are created now if the
    /// server answers, else in the background once it does.
    pub async fn open(uri: &str, database: &str) -> Result<MongoStore> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| match e.kind.as_ref() {
                ErrorKind::DnsResolve { .. } => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Other(format!("storage.mongodb_uri: {e}")),
            })?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(DEFAULT_TIMEOUT);
        }
        if options.connect_timeout.is_none() {
            options.connect_timeout = Some(DEFAULT_TIMEOUT);
        }
        if options.app_name.is_none() {
            options.app_name = Some("teleconsult".to_string());
        }
        let client = Client::with_options(options).map_err(map_err)?;
        let store = MongoStore {
            db: client.database(database),
            client,
        };
        match store.prepare().await {
            Ok(()) => {}
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "MongoDB unreachable at start; creating indexes once it answers");
                let s = store.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        match s.prepare().await {
                            Ok(()) => break,
                            Err(StoreError::Unavailable(_)) => continue,
                            Err(e) => {
                                tracing::error!(error = %e, "creating MongoDB indexes failed");
                                break;
                            }
                        }
                    }
                });
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// The database handle (tests inspect collections through it).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The driver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    fn files(&self) -> Collection<Document> {
        self.coll(&format!("{BUCKET}.files"))
    }

    fn chunks(&self) -> Collection<Document> {
        self.coll(&format!("{BUCKET}.chunks"))
    }

    /// Create every index (idempotent), then sweep orphan chunks.
    async fn prepare(&self) -> Result<()> {
        let idx = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_string())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        };
        let plan: [(&str, Vec<IndexModel>); 6] = [
            (
                "billing_intervals",
                vec![
                    idx(
                        doc! {"consultation": 1, "start": 1},
                        "consultation_start",
                        false,
                    ),
                    idx(doc! {"end": 1}, "end", false),
                    idx(
                        doc! {"practitioner": 1, "start": 1},
                        "practitioner_start",
                        false,
                    ),
                ],
            ),
            (
                "presence_intervals",
                vec![
                    idx(
                        doc! {"consultation": 1, "start": 1},
                        "consultation_start",
                        false,
                    ),
                    idx(doc! {"end": 1}, "end", false),
                ],
            ),
            (
                "consultations",
                vec![
                    idx(doc! {"start": 1, "_id": 1}, "start_id", false),
                    idx(
                        doc! {"practitioner": 1, "start": 1, "_id": 1},
                        "practitioner_start_id",
                        false,
                    ),
                ],
            ),
            ("audit", vec![idx(doc! {"at": 1, "_id": 1}, "at_id", false)]),
            (
                "documents.files",
                vec![
                    // The index every GridFS driver expects (same name and keys).
                    idx(
                        doc! {"filename": 1, "uploadDate": 1},
                        "filename_1_uploadDate_1",
                        false,
                    ),
                    idx(
                        doc! {"metadata.consultation": 1},
                        "metadata_consultation",
                        false,
                    ),
                ],
            ),
            (
                "documents.chunks",
                vec![idx(doc! {"files_id": 1, "n": 1}, "files_id_1_n_1", true)],
            ),
        ];
        // One index per createIndexes command: FerretDB 1.24.2 drops the connection (a panic
        // in its handler, "slice bounds out of range") when one command re-creates several
        // indexes that already exist, i.e. on every start after the first.
        for (coll, models) in plan {
            for model in models {
                self.coll(coll).create_index(model).await.map_err(map_err)?;
            }
        }
        self.prepare_accounts().await?;
        self.prepare_api_keys().await?;
        self.prepare_cluster().await?;
        self.prepare_chat().await?;
        self.sweep_orphan_chunks().await
    }

    /// Remove chunks older than an hour that no files document claims (a crash mid-upload).
    async fn sweep_orphan_chunks(&self) -> Result<()> {
        let cutoff = std::time::SystemTime::now() - Duration::from_secs(3600);
        let secs = cutoff
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&(secs as u32).to_be_bytes());
        let old = ObjectId::from_bytes(bytes);
        let ids = self
            .chunks()
            .distinct("files_id", doc! {"_id": {"$lt": old}})
            .await
            .map_err(map_err)?;
        let mut orphans = Vec::new();
        for id in ids {
            let exists = self
                .files()
                .find_one(doc! {"_id": id.clone()})
                .projection(doc! {"_id": 1})
                .await
                .map_err(map_err)?;
            if exists.is_none() {
                orphans.push(id);
            }
        }
        if !orphans.is_empty() {
            let n = orphans.len();
            self.chunks()
                .delete_many(doc! {"files_id": {"$in": orphans}, "_id": {"$lt": old}})
                .await
                .map_err(map_err)?;
            tracing::info!(files = n, "removed chunks of unfinished uploads");
        }
        Ok(())
    }

    async fn upsert(&self, coll: &str, id: Bson, doc: Document) -> Result<()> {
        let c = self.coll(coll);
        // Two concurrent upserts of a new id can race to insert; the loser retries as a replace.
        for attempt in 0..2 {
            match c
                .replace_one(doc! {"_id": id.clone()}, doc.clone())
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && is_duplicate_key(&e) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }

    /// [`Self::upsert`] of an interval, except that an interval fenced by a cluster takeover
    /// (`fenced: true`, see `ClusterStore::fence_intervals`) is final: a late write from its old
    /// owner matches nothing, its insert collides with the existing `_id`, and it is discarded.
    async fn upsert_unless_fenced(&self, coll: &str, id: &str, doc: Document) -> Result<()> {
        let c = self.coll(coll);
        for attempt in 0..2 {
            match c
                .replace_one(doc! {"_id": id, "fenced": {"$ne": true}}, doc.clone())
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) => {
                    let fenced = c
                        .find_one(doc! {"_id": id, "fenced": true})
                        .await
                        .map_err(map_err)?
                        .is_some();
                    if fenced {
                        tracing::debug!(
                            collection = coll,
                            "late write to a fenced interval discarded"
                        );
                        return Ok(());
                    }
                    if attempt == 1 {
                        return Err(map_err(e));
                    }
                }
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }

    async fn find_all<T: DeserializeOwned>(
        &self,
        coll: &str,
        filter: Document,
        sort: Document,
    ) -> Result<Vec<T>> {
        let cursor = self
            .coll(coll)
            .find(filter)
            .sort(sort)
            .await
            .map_err(map_err)?;
        cursor
            .map_err(map_err)
            .and_then(|d| async move { from_doc::<T>(d) })
            .try_collect()
            .await
    }

    /// Stream `coll` documents matching `filter` in `sort` order, batch by batch.
    fn find_stream<T: DeserializeOwned + Send + 'static>(
        &self,
        coll: &str,
        filter: Document,
        sort: Document,
    ) -> BoxStream<'static, Result<T>> {
        let c = self.coll(coll);
        stream::once(async move { c.find(filter).sort(sort).batch_size(BATCH).await })
            .map(|r| match r {
                Ok(cursor) => cursor
                    .map(|d| d.map_err(map_err).and_then(from_doc::<T>))
                    .boxed(),
                Err(e) => stream::once(async move { Err(map_err(e)) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn write_chunks(
        &self,
        id: &str,
        mut body: BoxStream<'_, std::result::Result<Bytes, String>>,
    ) -> Result<(i64, i32)> {
        let mut n: i32 = 0;
        let mut length: i64 = 0;
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
        let chunks = self.chunks();
        let insert = |n: i32, data: Vec<u8>| {
            let chunks = chunks.clone();
            let id = id.to_string();
            async move {
                chunks
                    .insert_one(doc! {
                        "_id": ObjectId::new(),
                        "files_id": id,
                        "n": n,
                        "data": bson::Binary { subtype: BinarySubtype::Generic, bytes: data },
                    })
                    .await
                    .map_err(|e| {
                        if is_duplicate_key(&e) {
                            StoreError::Other("a document with this id is being uploaded".into())
                        } else {
                            map_err(e)
                        }
                    })
            }
        };
        while let Some(item) = body.next().await {
            let mut bytes = item.map_err(StoreError::Aborted)?;
            length += bytes.len() as i64;
            while !bytes.is_empty() {
                let take = (CHUNK_SIZE - buf.len()).min(bytes.len());
                buf.extend_from_slice(&bytes.split_to(take));
                if buf.len() == CHUNK_SIZE {
                    insert(n, buf.split().to_vec()).await?;
                    n += 1;
                }
            }
        }
        if !buf.is_empty() {
            insert(n, buf.to_vec()).await?;
            n += 1;
        }
        Ok((length, n))
    }

    /// Delete a failed upload's chunks, and check none remain.
    async fn discard_chunks(&self, id: &str) -> Result<()> {
        self.chunks()
            .delete_many(doc! {"files_id": id})
            .await
            .map_err(map_err)?;
        let left = self
            .chunks()
            .count_documents(doc! {"files_id": id})
            .await
            .map_err(map_err)?;
        if left > 0 {
            return Err(StoreError::Other(format!(
                "{left} chunks of an aborted upload remain"
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> Result<()> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn upsert_billing_interval(&self, i: &BillingInterval) -> Result<()> {
        let d = to_doc(&BillingDoc::from(i))?;
        self.upsert_unless_fenced("billing_intervals", &i.id, d)
            .await
    }

    async fn upsert_presence_interval(&self, i: &PresenceInterval) -> Result<()> {
        let d = to_doc(&PresenceDoc::from(i))?;
        self.upsert_unless_fenced("presence_intervals", &i.id, d)
            .await
    }

    async fn upsert_consultation_summary(&self, s: &ConsultationSummary) -> Result<()> {
        let d = to_doc(&SummaryDoc::from(s))?;
        self.upsert("consultations", Bson::String(s.consultation.clone()), d)
            .await
    }

    async fn open_billing_intervals(&self) -> Result<Vec<BillingInterval>> {
        let docs: Vec<BillingDoc> = self
            .find_all(
                "billing_intervals",
                doc! {"end": Bson::Null},
                doc! {"_id": 1},
            )
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn open_presence_intervals(&self) -> Result<Vec<PresenceInterval>> {
        let docs: Vec<PresenceDoc> = self
            .find_all(
                "presence_intervals",
                doc! {"end": Bson::Null},
                doc! {"_id": 1},
            )
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn billing_intervals(&self, consultation: &str) -> Result<Vec<BillingInterval>> {
        let docs: Vec<BillingDoc> = self
            .find_all(
                "billing_intervals",
                doc! {"consultation": consultation},
                doc! {"start": 1, "_id": 1},
            )
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn presence_intervals(&self, consultation: &str) -> Result<Vec<PresenceInterval>> {
        let docs: Vec<PresenceDoc> = self
            .find_all(
                "presence_intervals",
                doc! {"consultation": consultation},
                doc! {"start": 1, "_id": 1},
            )
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn consultation_summary(
        &self,
        consultation: &str,
    ) -> Result<Option<ConsultationSummary>> {
        let d = self
            .coll("consultations")
            .find_one(doc! {"_id": consultation})
            .await
            .map_err(map_err)?;
        d.map(|d| from_doc::<SummaryDoc>(d).and_then(TryInto::try_into))
            .transpose()
    }

    fn export_summaries(&self, query: ExportQuery) -> BoxStream<'_, Result<ConsultationSummary>> {
        let mut filter = doc! {"start": {"$gte": query.from, "$lt": query.to}};
        if let Some(p) = query.practitioner {
            filter.insert("practitioner", p);
        }
        self.find_stream::<SummaryDoc>("consultations", filter, doc! {"start": 1, "_id": 1})
            .map(|r| r.and_then(TryInto::try_into))
            .boxed()
    }

    async fn put_document(
        &self,
        meta: &DocumentMeta,
        body: BoxStream<'_, std::result::Result<Bytes, String>>,
        finish: DocumentFinish<'_>,
    ) -> Result<()> {
        let id = meta.id.as_str();
        let exists = self
            .files()
            .find_one(doc! {"_id": id})
            .projection(doc! {"_id": 1})
            .await
            .map_err(map_err)?;
        if exists.is_some() {
            return Err(StoreError::Other(format!("document {id} already exists")));
        }
        let written = self.write_chunks(id, body).await;
        let result = match written {
            Ok((length, _chunks)) => {
                let mut meta = meta.clone();
                finish(&mut meta);
                match MetaDoc::try_from(&meta).and_then(|m| to_doc(&m)) {
                    Ok(metadata) => self
                        .files()
                        .insert_one(doc! {
                            "_id": id,
                            "length": length,
                            "chunkSize": CHUNK_SIZE as i32,
                            "uploadDate": bson::DateTime::now(),
                            // GridFS wants a name; a sealed one is not for the database.
                            "filename": if meta.filename.is_empty() { id } else { meta.filename.as_str() },
                            "metadata": metadata,
                        })
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            if is_duplicate_key(&e) {
                                StoreError::Other(format!("document {id} already exists"))
                            } else {
                                map_err(e)
                            }
                        }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if let Err(cleanup) = self.discard_chunks(id).await {
                tracing::warn!(error = %cleanup, "removing chunks of an aborted upload failed; swept later");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn list_documents(&self, consultation: &str) -> Result<Vec<DocumentMeta>> {
        let cursor = self
            .files()
            .find(doc! {"metadata.consultation": consultation})
            .sort(doc! {"metadata.uploaded_at": 1, "_id": 1})
            .await
            .map_err(map_err)?;
        cursor
            .map_err(map_err)
            .and_then(|d| async move { meta_from_files_doc(&d) })
            .try_collect()
            .await
    }

    async fn document(&self, consultation: &str, id: &str) -> Result<Option<DocumentMeta>> {
        let d = self
            .files()
            .find_one(doc! {"_id": id, "metadata.consultation": consultation})
            .await
            .map_err(map_err)?;
        d.map(|d| meta_from_files_doc(&d)).transpose()
    }

    fn document_body<'a>(&'a self, id: &'a str) -> BoxStream<'a, Result<Bytes>> {
        let bucket = self.db.gridfs_bucket(
            mongodb::options::GridFsBucketOptions::builder()
                .bucket_name(BUCKET.to_string())
                .build(),
        );
        stream::once(async move {
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
                // Fill one chunk-sized buffer (the stream returns at most a chunk per read).
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

    async fn delete_document(&self, consultation: &str, id: &str) -> Result<()> {
        let deleted = self
            .files()
            .delete_one(doc! {"_id": id, "metadata.consultation": consultation})
            .await
            .map_err(map_err)?;
        if deleted.deleted_count == 0 {
            return Err(StoreError::NotFound);
        }
        self.chunks()
            .delete_many(doc! {"files_id": id})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn record_audit(&self, e: &AuditEvent) -> Result<()> {
        let mut d = to_doc(&AuditDoc::from(e))?;
        // The upsert takes `_id` from the filter.
        d.remove("_id");
        let c = self.coll("audit");
        for attempt in 0..2 {
            match c
                .update_one(
                    doc! {"_id": e.id.as_str()},
                    doc! {"$setOnInsert": d.clone()},
                )
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(err) if attempt == 0 && is_duplicate_key(&err) => continue,
                Err(err) => return Err(map_err(err)),
            }
        }
        Ok(())
    }

    fn export_audit(&self, from: Millis, to: Millis) -> BoxStream<'_, Result<AuditEvent>> {
        self.find_stream::<AuditDoc>(
            "audit",
            doc! {"at": {"$gte": from, "$lt": to}},
            doc! {"at": 1, "_id": 1},
        )
        .map(|r| r.map(Into::into))
        .boxed()
    }
}
