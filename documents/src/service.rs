//! The documents service: who may do what with a consultation's documents, and the work behind
//! each operation (sealing an upload stream, opening a download, deletion, audit). It knows no
//! HTTP: the server's routes turn requests into these calls and [`DocumentError`]s into status
//! codes.
//!
//! Access: the consultation's practitioners always; anyone else only while in the call
//! (admitted, or reconnecting after having been admitted); a document is deleted by its
//! uploader or a practitioner. The bytes are encrypted on the way in and decrypted on the way
//! out ([`crate::crypto`]), and so are the file name, uploader and checksum: the store sees
//! ciphertext, sizes, types and times.

use crate::config::DocumentsConfig;
use crate::crypto::{self, Binding, CryptoError, DataKey, Decryptor, Encryptor, KeyRing};
use crate::filetype::{self, FileType};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use teleconsult_consultation::{ConsultationEvent, ConsultationService, DocumentInfo};
use teleconsult_consultation::{Credential, Role};
use teleconsult_store::{AuditEvent, DocumentMeta, EncryptionInfo, Store, StoreError};

/// Why a document operation was refused or failed: a stable [`code`](DocumentError::code) and
/// a sentence for people. Internal details are logged where they happen, never carried here.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("you may not access this consultation's documents")]
    Forbidden,
    #[error("only the uploader or a practitioner may delete a document")]
    NotYours,
    /// The caller's token is for another consultation (they cannot know that one exists).
    #[error("no such consultation")]
    UnknownConsultation,
    #[error("no such document")]
    NotFound,
    #[error("the document is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("this type of file is not accepted: {0}")]
    UnsupportedType(String),
    /// A broken, interrupted or unusable upload.
    #[error("{0}")]
    BadUpload(String),
    /// The requested range lies outside the document (of this many bytes).
    #[error("the requested range is outside the document")]
    RangeNotSatisfiable(u64),
    #[error("storage is unavailable; try again later")]
    Unavailable,
    #[error("{0} uploads to this consultation are already under way; try again when one is done")]
    TooManyUploads(usize),
    #[error("internal error")]
    Internal,
}

impl DocumentError {
    /// The stable code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            DocumentError::Forbidden => "forbidden",
            DocumentError::NotYours => "not_uploader",
            DocumentError::UnknownConsultation => "not_found",
            DocumentError::NotFound => "document_not_found",
            DocumentError::TooLarge(_) => "too_large",
            DocumentError::UnsupportedType(_) => "unsupported_type",
            DocumentError::BadUpload(_) => "bad_request",
            DocumentError::RangeNotSatisfiable(_) => "range_not_satisfiable",
            DocumentError::Unavailable => "storage_unavailable",
            DocumentError::TooManyUploads(_) => "too_many_uploads",
            DocumentError::Internal => "internal",
        }
    }
}

impl From<StoreError> for DocumentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => DocumentError::NotFound,
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "document storage unavailable");
                DocumentError::Unavailable
            }
            other => {
                tracing::error!(error = %other, "document storage failed");
                DocumentError::Internal
            }
        }
    }
}

/// Who is calling, once [authorised](DocumentService::authorize) for one consultation.
#[derive(Clone, Debug)]
pub struct Caller {
    consultation: String,
    /// Participant id in the call, or the account id of a practitioner not in the call.
    actor: String,
    role: Role,
}

impl Caller {
    pub fn consultation(&self) -> &str {
        &self.consultation
    }
    /// Participant id (or a practitioner's account id outside the call), as recorded in audit
    /// events and as uploader.
    pub fn actor(&self) -> &str {
        &self.actor
    }
    pub fn role(&self) -> Role {
        self.role
    }
}

/// A stored document found for a caller, ready to be [opened](DocumentService::open): its
/// metadata unsealed, and its data key.
pub struct Found {
    meta: DocumentMeta,
    key: DataKey,
    binding: Binding,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("document", &self.meta.id)
            .finish()
    }
}

impl Found {
    pub fn meta(&self) -> &DocumentMeta {
        &self.meta
    }
}

/// An opened download: the plaintext bytes of `range` (the whole document when `partial` is
/// false), streamed and decrypted chunk by chunk.
pub struct Download {
    pub meta: DocumentMeta,
    /// First and last byte served (`0..=0` with `length` 0 for an empty document).
    pub range: RangeInclusive<u64>,
    pub length: u64,
    /// A single range was asked for and is served (206).
    pub partial: bool,
    pub body: BoxStream<'static, Result<Bytes, DocumentError>>,
}

/// The documents service. Cheap to clone.
#[derive(Clone)]
pub struct DocumentService {
    store: Arc<dyn Store>,
    consultations: ConsultationService,
    keys: Arc<KeyRing>,
    max_bytes: u64,
    allowed: Arc<[FileType]>,
    /// Uploads streaming now, by consultation (`documents.max_concurrent_uploads` each).
    uploads: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    max_uploads: usize,
}

/// One upload's place among its consultation's concurrent uploads; given back on drop (also
/// when the request is abandoned half-way).
struct UploadSlot {
    uploads: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    consultation: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut u = lock(&self.uploads);
        if let Some(n) = u.get_mut(&self.consultation) {
            *n -= 1;
            if *n == 0 {
                u.remove(&self.consultation);
            }
        }
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The listing entry of a stored document.
pub fn info(meta: &DocumentMeta) -> DocumentInfo {
    DocumentInfo {
        id: meta.id.clone(),
        filename: meta.filename.clone(),
        size: meta.size,
        content_type: meta.content_type.clone(),
        sha256: meta.sha256.clone(),
        uploader: meta.uploader.clone(),
        uploader_role: meta.uploader_role.parse().unwrap_or(Role::Guest),
        uploaded_at: meta.uploaded_at,
    }
}

/// The sealed part of a document's metadata ([`EncryptionInfo::sealed_meta`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFields {
    filename: String,
    uploader: String,
    sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl DocumentService {
    /// The service over `store`, deciding access from `consultations`. Fails if
    /// `documents.master_key` or a previous master key is not base64 of 32 bytes, or if a key id
    /// repeats (validated configurations never do).
    pub fn new(
        config: &DocumentsConfig,
        store: Arc<dyn Store>,
        consultations: ConsultationService,
    ) -> Result<DocumentService, CryptoError> {
        let keys = crate::config::keyring(config)?;
        Ok(DocumentService {
            store,
            consultations,
            keys: Arc::new(keys),
            max_bytes: config.max_bytes,
            uploads: Default::default(),
            max_uploads: config.max_concurrent_uploads.max(1),
            allowed: config
                .allowed_types
                .iter()
                .filter_map(|t| FileType::from_name(t))
                .collect(),
        })
    }

    /// A place for one more upload to `consultation`, if it has fewer than the limit streaming.
    fn upload_slot(&self, consultation: &str) -> Result<UploadSlot, DocumentError> {
        let mut u = lock(&self.uploads);
        let n = u.entry(consultation.to_string()).or_insert(0);
        if *n >= self.max_uploads {
            metrics::counter!("teleconsult_documents_refused_total", "reason" => "too_many_uploads")
                .increment(1);
            return Err(DocumentError::TooManyUploads(self.max_uploads));
        }
        *n += 1;
        Ok(UploadSlot {
            uploads: self.uploads.clone(),
            consultation: consultation.to_string(),
        })
    }

    /// Largest document accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The access rule, for the holder of a verified `credential` asking about `consultation`:
    /// another consultation than the credential's is unknown to them; practitioners always
    /// pass; others only while in the call. The actor recorded (uploader, audit) is the
    /// participant id in the call, or a practitioner's account id outside it: never a name.
    pub fn authorize(
        &self,
        credential: &Credential,
        consultation: &str,
    ) -> Result<Caller, DocumentError> {
        if credential.consultation().as_str() != consultation {
            return Err(DocumentError::UnknownConsultation);
        }
        let in_call = self
            .consultations
            .in_call_participant(consultation, &credential.seat());
        let (actor, role) = match (in_call, credential) {
            (Some(id), c) => (id.into_string(), c.role()),
            (None, Credential::Practitioner { account, .. }) => {
                (account.clone(), Role::Practitioner)
            }
            (None, _) => return Err(DocumentError::Forbidden),
        };
        Ok(Caller {
            consultation: consultation.to_string(),
            actor,
            role,
        })
    }

    async fn audit(&self, caller: &Caller, action: &str, document: &str) -> Result<(), StoreError> {
        let event = AuditEvent {
            id: format!("a{:032x}", rand::random::<u128>()),
            at: now_millis(),
            actor: caller.actor.clone(),
            action: action.to_string(),
            consultation: Some(caller.consultation.clone()),
            target: Some(document.to_string()),
        };
        self.store.record_audit(&event).await
    }

    /// The consultation's documents, oldest first. One whose key or metadata does not open
    /// (altered, moved from another consultation, its master key gone) is left out and logged.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<DocumentInfo>, DocumentError> {
        let docs = self.store.list_documents(&caller.consultation).await?;
        Ok(docs
            .into_iter()
            .filter_map(|meta| self.unseal(meta).ok())
            .map(|found| info(&found.meta))
            .collect())
    }

    /// Unwrap a stored document's key and open its sealed metadata, filling in `filename`,
    /// `uploader` and `sha256`. Failures are logged here (ids only) and are `Internal`.
    fn unseal(&self, mut meta: DocumentMeta) -> Result<Found, DocumentError> {
        let fail = |meta: &DocumentMeta, error: CryptoError| {
            tracing::error!(
                document = %meta.id,
                master_key_id = %meta.encryption.master_key_id,
                %error,
                "stored document does not open"
            );
            metrics::counter!("teleconsult_documents_unreadable_total").increment(1);
            DocumentError::Internal
        };
        let binding = Binding::stored(&meta.encryption.scheme, &meta.consultation, &meta.id)
            .map_err(|e| fail(&meta, e))?;
        let master = self
            .keys
            .get(&meta.encryption.master_key_id)
            .map_err(|e| fail(&meta, e))?;
        let key = DataKey::unwrap(master, &binding, &meta.encryption.wrapped_key)
            .map_err(|e| fail(&meta, e))?;
        match (&meta.encryption.sealed_meta, binding.seals_metadata()) {
            (Some(sealed), true) => {
                let plain = key
                    .open_metadata(&binding, sealed)
                    .map_err(|e| fail(&meta, e))?;
                let fields: SealedFields = serde_json::from_slice(&plain)
                    .map_err(|_| fail(&meta, CryptoError::Metadata))?;
                meta.filename = fields.filename;
                meta.uploader = fields.uploader;
                meta.sha256 = fields.sha256;
            }
            (None, false) => {}
            // A v2 document without its sealed metadata (or v1 with one): altered.
            _ => return Err(fail(&meta, CryptoError::Metadata)),
        }
        Ok(Found { meta, key, binding })
    }

    /// Store the document read from `body` under the (sanitised) `filename`: its type is
    /// detected from the first bytes, it is sealed chunk by chunk while streaming (never held
    /// whole), audited and announced to the call. An error of `body` ends the upload with
    /// that error and nothing is kept.
    pub async fn upload<S, E>(
        &self,
        caller: &Caller,
        filename: &str,
        body: S,
    ) -> Result<DocumentInfo, DocumentError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<DocumentError>,
    {
        let consultation = caller.consultation.as_str();
        let _slot = self.upload_slot(consultation)?;
        let mut body = Box::pin(body);
        let max = self.max_bytes;
        let head = sniff(&mut body, max).await?;
        let kind = filetype::detect(&head).ok_or_else(|| {
            DocumentError::UnsupportedType(
                "only PDF, PNG, JPEG, WebP, DICOM and plain text are recognised".to_string(),
            )
        })?;
        if !self.allowed.contains(&kind) {
            return Err(DocumentError::UnsupportedType(format!(
                "{} documents are not accepted here",
                kind.name()
            )));
        }

        let doc_id = format!("d{:032x}", rand::random::<u128>());
        let binding = Binding::new(consultation, &doc_id);
        let (key, wrapped_key) = DataKey::generate(self.keys.current(), &binding);
        let filename = filetype::sanitize_filename(filename);
        // What the store gets: the name, uploader and checksum stay empty here and are sealed
        // into `sealed_meta` once the checksum is known (`finish` below).
        let mut meta = DocumentMeta {
            id: doc_id.clone(),
            consultation: consultation.to_string(),
            filename: String::new(),
            content_type: kind.mime().to_string(),
            size: 0,
            sha256: String::new(),
            uploader: String::new(),
            uploader_role: caller.role.as_str().to_string(),
            uploaded_at: now_millis(),
            encryption: EncryptionInfo {
                scheme: crypto::SCHEME.to_string(),
                wrapped_key,
                chunk_size: crypto::CHUNK_SIZE,
                master_key_id: self.keys.current().id().to_string(),
                sealed_meta: None,
            },
        };
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let sealer = Sealer {
            body,
            head: Some(head),
            encryptor: Some(Encryptor::new(key.clone(), &binding)),
            hasher: Sha256::new(),
            size: 0,
            max,
            sealed: VecDeque::new(),
            outcome: outcome.clone(),
        };
        let sealed = futures_util::stream::unfold(sealer, |mut s| async move {
            s.next().await.map(|item| (item, s))
        })
        .boxed();
        let finished = outcome.clone();
        let (sealing_name, sealing_uploader) = (filename.clone(), caller.actor.clone());
        let finish = Box::new(move |m: &mut DocumentMeta| {
            let o = lock(&finished);
            m.size = o.size;
            let fields = SealedFields {
                filename: sealing_name,
                uploader: sealing_uploader,
                sha256: o.sha256.clone(),
            };
            // A struct of three strings always serialises.
            let plain = serde_json::to_vec(&fields).expect("sealed fields serialise");
            m.encryption.sealed_meta = Some(key.seal_metadata(&binding, &plain));
        });
        let stored = self.store.put_document(&meta, sealed, finish).await;
        let (failure, size, sha256) = {
            let mut o = lock(&outcome);
            (o.failure.take(), o.size, std::mem::take(&mut o.sha256))
        };
        if let Some(failure) = failure {
            tracing::info!(consultation, code = failure.code(), "upload refused");
            return Err(failure);
        }
        stored?;
        meta.size = size;
        meta.sha256 = sha256;
        meta.filename = filename;
        meta.uploader = caller.actor.clone();
        if let Err(e) = self.audit(caller, "document.upload", &doc_id).await {
            tracing::warn!(consultation, document = %doc_id, error = %e, "audit event not recorded");
        }
        let document = info(&meta);
        self.consultations.broadcast_in_call(
            consultation,
            &ConsultationEvent::DocumentAdded {
                document: document.clone(),
            },
        );
        tracing::info!(consultation, document = %doc_id, size = meta.size, kind = kind.name(), "document uploaded");
        metrics::counter!("teleconsult_documents_uploaded_total").increment(1);
        Ok(document)
    }

    /// The document `id` of the caller's consultation, if it exists and can be opened.
    pub async fn find(&self, caller: &Caller, id: &str) -> Result<Found, DocumentError> {
        let meta = self
            .store
            .document(&caller.consultation, id)
            .await?
            .ok_or(DocumentError::NotFound)?;
        self.unseal(meta)
    }

    /// Open `found` for reading: the bytes of `range` (a single satisfiable range of the
    /// document, see [`Found::meta`]'s size), or the whole document. The access is audited
    /// before a byte leaves; a failure while streaming is logged and ends the body with an error.
    pub async fn open(
        &self,
        caller: &Caller,
        found: Found,
        range: Option<RangeInclusive<u64>>,
    ) -> Result<Download, DocumentError> {
        let Found { meta, key, binding } = found;
        let size = meta.size;
        let partial = range.is_some();
        let range = match range {
            Some(r) if r.start() <= r.end() && *r.end() < size => r,
            Some(_) => return Err(DocumentError::RangeNotSatisfiable(size)),
            None => 0..=size.saturating_sub(1),
        };
        self.audit(caller, "document.download", &meta.id).await?;

        let (start, end) = (*range.start(), *range.end());
        let length = if size == 0 { 0 } else { end - start + 1 };
        let chunk_size = meta.encryption.chunk_size;
        let first = start / u64::from(chunk_size.max(1));
        let decryptor = Decryptor::new(key, &binding, chunk_size, size, first).map_err(|e| {
            tracing::error!(document = %meta.id, error = %e, "bad encryption layout");
            DocumentError::Internal
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, DocumentError>>(4);
        let store = self.store.clone();
        let doc_id = meta.id.clone();
        tokio::spawn(async move {
            let plain = Plaintext {
                decryptor,
                chunk_size,
                start,
                length,
                whole: !partial,
            };
            if let Err(e) = plain.send(&*store, &doc_id, &tx).await {
                tracing::error!(document = %doc_id, error = %e, "document download failed");
                let _ = tx.send(Err(DocumentError::Internal)).await;
            }
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(Download {
            meta,
            range,
            length,
            partial,
            body,
        })
    }

    /// Delete the document `id`: its uploader or a practitioner only. Audited and announced.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), DocumentError> {
        let consultation = caller.consultation.as_str();
        let stored = self
            .store
            .document(consultation, id)
            .await?
            .ok_or(DocumentError::NotFound)?;
        let practitioner = caller.role == Role::Practitioner;
        // A practitioner may remove a document that no longer opens; nobody else can be shown
        // to be its uploader then.
        let meta = match self.unseal(stored.clone()) {
            Ok(found) => found.meta,
            Err(_) if practitioner => stored,
            Err(e) => return Err(e),
        };
        if !practitioner && meta.uploader != caller.actor {
            return Err(DocumentError::NotYours);
        }
        self.store.delete_document(consultation, id).await?;
        if let Err(e) = self.audit(caller, "document.delete", id).await {
            tracing::warn!(consultation, document = %id, error = %e, "audit event not recorded");
        }
        self.consultations.broadcast_in_call(
            consultation,
            &ConsultationEvent::DocumentDeleted {
                document: info(&meta),
            },
        );
        tracing::info!(consultation, document = %id, "document deleted");
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic while holding it; the plain values inside stay usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read `body` until [`filetype::SNIFF_BYTES`] bytes or its end.
async fn sniff<S, E>(body: &mut Pin<Box<S>>, max: u64) -> Result<Bytes, DocumentError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<DocumentError>,
{
    let mut head = Vec::new();
    while head.len() < filetype::SNIFF_BYTES {
        match body.next().await {
            Some(Ok(data)) => {
                head.extend_from_slice(&data);
                if head.len() as u64 > max {
                    return Err(DocumentError::TooLarge(max));
                }
            }
            None => break,
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Ok(Bytes::from(head))
}

/// What the upload stream found, read once the store has returned.
#[derive(Default)]
struct Outcome {
    failure: Option<DocumentError>,
    size: u64,
    sha256: String,
}

/// Turns the plaintext upload into sealed chunks for the store, counting and hashing it.
struct Sealer<S> {
    body: Pin<Box<S>>,
    /// Plaintext already read (the sniffed head), fed first.
    head: Option<Bytes>,
    encryptor: Option<Encryptor>,
    hasher: Sha256,
    size: u64,
    max: u64,
    sealed: VecDeque<Bytes>,
    outcome: Arc<Mutex<Outcome>>,
}

impl<S, E> Sealer<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<DocumentError>,
{
    /// Record why the upload failed; the message tells the store why its input ended.
    fn fail(&mut self, e: DocumentError) -> String {
        let msg = e.to_string();
        lock(&self.outcome).failure = Some(e);
        self.encryptor = None;
        msg
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.size += data.len() as u64;
        if self.size > self.max {
            return Err(self.fail(DocumentError::TooLarge(self.max)));
        }
        self.hasher.update(data);
        let Some(enc) = self.encryptor.as_mut() else {
            return Err("upload already failed".to_string());
        };
        match enc.update(data) {
            Ok(chunks) => {
                self.sealed.extend(chunks);
                Ok(())
            }
            Err(e) => Err(self.fail(DocumentError::BadUpload(e.to_string()))),
        }
    }

    /// The next sealed chunk for the store, `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            if let Some(c) = self.sealed.pop_front() {
                return Some(Ok(c));
            }
            self.encryptor.as_ref()?;
            if let Some(head) = self.head.take() {
                if let Err(e) = self.feed(&head) {
                    return Some(Err(e));
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(data)) => {
                    if let Err(e) = self.feed(&data) {
                        return Some(Err(e));
                    }
                }
                None => {
                    let enc = self.encryptor.take()?;
                    return Some(match enc.finish() {
                        Ok(last) => {
                            let mut o = lock(&self.outcome);
                            o.size = self.size;
                            o.sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
                            Ok(last)
                        }
                        Err(e) => Err(self.fail(DocumentError::BadUpload(e.to_string()))),
                    });
                }
                Some(Err(e)) => {
                    let e = e.into();
                    return Some(Err(self.fail(e)));
                }
            }
        }
    }
}

/// Which plaintext bytes a download sends.
struct Plaintext {
    decryptor: Decryptor,
    chunk_size: u32,
    start: u64,
    length: u64,
    /// The whole document: also check that the stored bytes end where the last chunk does.
    whole: bool,
}

impl Plaintext {
    /// Read the stored ciphertext, skip the sealed chunks before the range, open the chunks it
    /// covers and send exactly `length` plaintext bytes from `start`.
    async fn send(
        mut self,
        store: &dyn Store,
        doc: &str,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, DocumentError>>,
    ) -> Result<(), String> {
        let cs = u64::from(self.chunk_size);
        let mut skip = Decryptor::offset_of(self.chunk_size, self.decryptor.next_chunk());
        let mut remaining = self.length;
        let mut body = store.document_body(doc);
        while let Some(piece) = body.next().await {
            let mut piece = piece.map_err(|e| e.to_string())?;
            if skip > 0 {
                let n = skip.min(piece.len() as u64);
                skip -= n;
                piece = piece.slice(n as usize..);
                if piece.is_empty() {
                    continue;
                }
            }
            for (index, plain) in self.decryptor.update(&piece).map_err(|e| e.to_string())? {
                if remaining == 0 {
                    continue;
                }
                let chunk_start = index * cs;
                let from = self
                    .start
                    .saturating_sub(chunk_start)
                    .min(plain.len() as u64);
                let to = (from + remaining).min(plain.len() as u64);
                let part = plain.slice(from as usize..to as usize);
                remaining -= part.len() as u64;
                if !part.is_empty() && tx.send(Ok(part)).await.is_err() {
                    return Ok(()); // the client went away
                }
            }
            if remaining == 0 && !self.whole {
                return Ok(());
            }
        }
        if self.whole {
            self.decryptor.finish().map_err(|e| e.to_string())?;
        }
        if remaining > 0 {
            return Err("stored document is shorter than its metadata".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use teleconsult_consultation::OutboxReceiver;
    use teleconsult_consultation::config::ConsultationConfig;
    use teleconsult_consultation::{ConsultationId, Label, NoMedia, Outbound};

    const CONSULTATION: &str = "c-docs";

    struct World {
        service: DocumentService,
        consultations: ConsultationService,
        _dir: TempDir,
    }

    /// A directory removed when the test ends.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn world(config: DocumentsConfig) -> World {
        let dir = std::env::temp_dir().join(format!(
            "teleconsult-documents-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let store = teleconsult_store::open("", "test", &dir)
            .await
            .expect("embedded store");
        let consultations = ConsultationService::new(
            &ConsultationConfig::default(),
            Duration::from_secs(60),
            Arc::new(NoMedia),
        );
        let service = DocumentService::new(&config, store, consultations.clone()).expect("key");
        World {
            service,
            consultations,
            _dir: TempDir(dir),
        }
    }

    fn config() -> DocumentsConfig {
        DocumentsConfig {
            master_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            max_bytes: 200_000,
            ..DocumentsConfig::default()
        }
    }

    /// The credential of `who`: a practitioner's account, else an invitation of their own.
    fn claims(who: &str, role: Role) -> Credential {
        match role {
            Role::Practitioner => Credential::Practitioner {
                account: format!("acct-{who}"),
                organisation: "org".into(),
                consultation: ConsultationId::new(CONSULTATION),
                display_name: Label::new(who),
                policy: Default::default(),
            },
            _ => Credential::Invitation {
                jti: format!("jti-{who}"),
                consultation: ConsultationId::new(CONSULTATION),
                role,
                label: Label::new(who),
                policy: Default::default(),
            },
        }
    }

    /// Join `who`; returns the participant id and the events it receives.
    fn join(w: &World, who: &str, role: Role) -> (String, OutboxReceiver) {
        let (tx, rx) = teleconsult_consultation::outbox(1024);
        let joined = w
            .consultations
            .join(&claims(who, role), None, tx)
            .expect("join");
        (joined.participant.into_string(), rx)
    }

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, DocumentError>> + Send {
        let parts: Vec<Result<Bytes, DocumentError>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(parts)
    }

    async fn read_all(d: Download) -> Result<Vec<u8>, DocumentError> {
        let mut out = Vec::new();
        let mut body = d.body;
        while let Some(part) = body.next().await {
            out.extend_from_slice(&part?);
        }
        Ok(out)
    }

    fn pdf(len: usize) -> Vec<u8> {
        let mut v = b"%PDF-1.7\n".to_vec();
        v.extend((0..len - v.len()).map(|i| (i % 251) as u8));
        v
    }

    #[tokio::test]
    async fn practitioners_always_others_only_in_the_call() {
        let w = world(config()).await;
        // A practitioner not (yet) in the call may act, named by their account id.
        let doctor = w
            .service
            .authorize(&claims("Dr A", Role::Practitioner), CONSULTATION)
            .expect("practitioner");
        assert_eq!(doctor.actor(), "acct-Dr A");
        // Another consultation is unknown to the caller.
        let err = w
            .service
            .authorize(&claims("Dr A", Role::Practitioner), "c-other")
            .expect_err("other consultation");
        assert_eq!(err.code(), "not_found");
        // A patient who never joined, then one waiting, may not; once admitted they may.
        let patient = claims("Pat", Role::Patient);
        assert_eq!(
            w.service
                .authorize(&patient, CONSULTATION)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err("forbidden")
        );
        let (doctor_id, _doctor_rx) = join(&w, "Dr A", Role::Practitioner);
        let (patient_id, _patient_rx) = join(&w, "Pat", Role::Patient);
        assert!(
            w.service.authorize(&patient, CONSULTATION).is_err(),
            "waiting"
        );
        w.consultations
            .admit(
                &ConsultationId::new(CONSULTATION),
                &doctor_id.as_str().into(),
                &patient_id,
            )
            .expect("admit");
        let caller = w
            .service
            .authorize(&patient, CONSULTATION)
            .expect("admitted");
        assert_eq!(caller.actor(), patient_id);
        assert_eq!(caller.role(), Role::Patient);
        // In the call, the practitioner acts under their participant id.
        let doctor = w
            .service
            .authorize(&claims("Dr A", Role::Practitioner), CONSULTATION)
            .expect("practitioner");
        assert_eq!(doctor.actor(), doctor_id);
    }

    /// Uploads streaming at once to one consultation are limited: one more is refused at once
    /// (429 `too_many_uploads`), another consultation is not affected, and a place is given
    /// back when an upload ends (here: abandoned half-way, as a client dropping the request).
    #[tokio::test]
    async fn concurrent_uploads_per_consultation_are_limited() {
        let w = world(DocumentsConfig {
            max_concurrent_uploads: 2,
            ..config()
        })
        .await;
        let _ = join(&w, "Dr A", Role::Practitioner);
        let doctor = w
            .service
            .authorize(&claims("Dr A", Role::Practitioner), CONSULTATION)
            .expect("practitioner");
        // Two uploads whose bodies send their first bytes, then stall.
        let stalled = || {
            let head = pdf(1000);
            futures_util::stream::iter([Ok::<Bytes, DocumentError>(Bytes::from(head))])
                .chain(futures_util::stream::pending())
        };
        let mut first = Box::pin(w.service.upload(&doctor, "a.pdf", stalled()));
        let mut second = Box::pin(w.service.upload(&doctor, "b.pdf", stalled()));
        for u in [&mut first, &mut second] {
            assert!(
                tokio::time::timeout(Duration::from_millis(200), u.as_mut())
                    .await
                    .is_err(),
                "a stalled upload is still streaming"
            );
        }
        let third = w
            .service
            .upload(&doctor, "c.pdf", chunks(&pdf(1000), 100))
            .await;
        assert!(
            matches!(third, Err(DocumentError::TooManyUploads(2))),
            "{third:?}"
        );
        assert_eq!(
            third.unwrap_err().code(),
            "too_many_uploads",
            "a stable code"
        );
        // One abandoned: its place is free again.
        drop(first);
        let info = w
            .service
            .upload(&doctor, "c.pdf", chunks(&pdf(1000), 100))
            .await
            .expect("a place again");
        assert_eq!(info.size, 1000);
        drop(second);
    }

    #[tokio::test]
    async fn upload_seals_and_download_opens_ranges() {
        let w = world(config()).await;
        let (_, mut rx) = join(&w, "Dr A", Role::Practitioner);
        let doctor = w
            .service
            .authorize(&claims("Dr A", Role::Practitioner), CONSULTATION)
            .expect("practitioner");
        // Larger than one sealed chunk, fed in odd pieces.
        let data = pdf(150_000);
        let info = w
            .service
            .upload(&doctor, "../scan\u{202E}.pdf", chunks(&data, 7_777))
            .await
            .expect("upload");
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(info.filename, "scan.pdf");
        assert_eq!(info.content_type, "application/pdf");
        assert_eq!(info.sha256, hex(&Sha256::digest(&data)));
        assert!(
            std::iter::from_fn(|| rx.try_recv()).any(|m| matches!(
                m,
                Outbound::Event(ConsultationEvent::DocumentAdded { ref document }) if document.id == info.id
            )),
            "the call is told"
        );
        assert_eq!(
            w.service.list(&doctor).await.expect("list"),
            vec![info.clone()]
        );

        let whole = w.service.find(&doctor, &info.id).await.expect("found");
        let d = w.service.open(&doctor, whole, None).await.expect("open");
        assert!(!d.partial);
        assert_eq!(d.length, data.len() as u64);
        assert_eq!(read_all(d).await.expect("read"), data);
        // A range across the boundary of two sealed chunks.
        let (a, b) = (65_000u64, 70_000u64);
        let found = w.service.find(&doctor, &info.id).await.expect("found");
        let d = w
            .service
            .open(&doctor, found, Some(a..=b))
            .await
            .expect("open");
        assert!(d.partial);
        assert_eq!(d.length, b - a + 1);
        assert_eq!(
            read_all(d).await.expect("read"),
            data[a as usize..=b as usize]
        );
        let found = w.service.find(&doctor, &info.id).await.expect("found");
        let err = w
            .service
            .open(&doctor, found, Some(0..=data.len() as u64))
            .await
            .err()
            .expect("past the end");
        assert_eq!(err.code(), "range_not_satisfiable");
        assert_eq!(
            w.service
                .find(&doctor, "d-none")
                .await
                .map(|_| ())
                .map_err(|e| e.code()),
            Err("document_not_found")
        );
    }

    #[tokio::test]
    async fn refused_uploads_keep_nothing() {
        let mut c = config();
        c.allowed_types = vec!["png".into()];
        let w = world(c).await;
        let doctor = w
            .service
            .authorize(&claims("Dr A", Role::Practitioner), CONSULTATION)
            .expect("practitioner");
        let refuse = |data: Vec<u8>| {
            let service = w.service.clone();
            let doctor = doctor.clone();
            async move {
                service
                    .upload(&doctor, "x", chunks(&data, 1000))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.code())
            }
        };
        // Not a type we recognise; recognised but not allowed here; too large while streaming.
        assert_eq!(
            refuse(b"MZ\x90\0\x03\0\0\0".to_vec()).await,
            Err("unsupported_type")
        );
        assert_eq!(refuse(pdf(5000)).await, Err("unsupported_type"));
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.resize(200_001, 0);
        assert_eq!(refuse(png.clone()).await, Err("too_large"));
        // The body's own error ends the upload with that error.
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from(png[..5000].to_vec())),
            Err(DocumentError::BadUpload("connection reset".into())),
        ]);
        let err = w
            .service
            .upload(&doctor, "x.png", broken)
            .await
            .expect_err("broken body");
        assert_eq!(err.to_string(), "connection reset");
        assert!(w.service.list(&doctor).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn uploader_or_practitioner_deletes() {
        let w = world(config()).await;
        let (doctor_id, _d) = join(&w, "Dr A", Role::Practitioner);
        let consultation = ConsultationId::new(CONSULTATION);
        let mut callers = Vec::new();
        for name in ["Pat", "Gus"] {
            let (id, rx) = join(&w, name, Role::Patient);
            w.consultations
                .admit(&consultation, &doctor_id.as_str().into(), &id)
                .expect("admit");
            let caller = w
                .service
                .authorize(&claims(name, Role::Patient), CONSULTATION)
                .expect("in call");
            callers.push((caller, rx));
        }
        let (pat, gus) = (&callers[0].0, &callers[1].0);
        let upload = async |by: &Caller| {
            w.service
                .upload(by, "notes.txt", chunks(b"blood pressure 120/80\n", 5))
                .await
                .expect("upload")
        };
        let first = upload(pat).await;
        let second = upload(pat).await;
        assert_eq!(first.uploader, pat.actor());
        assert_eq!(
            w.service.delete(gus, &first.id).await.map_err(|e| e.code()),
            Err("not_uploader")
        );
        w.service
            .delete(pat, &first.id)
            .await
            .expect("uploader deletes");
        let doctor = w
            .service
            .authorize(&claims("Dr A", Role::Practitioner), CONSULTATION)
            .expect("practitioner");
        w.service
            .delete(&doctor, &second.id)
            .await
            .expect("practitioner deletes");
        assert_eq!(
            w.service
                .delete(&doctor, &second.id)
                .await
                .map_err(|e| e.code()),
            Err("document_not_found")
        );
        assert!(w.service.list(&doctor).await.expect("list").is_empty());
    }
}
