//! Shared documents (health data): streamed upload, list, streamed download with single byte
//! ranges, deletion. Who may do what is decided here; the bytes are encrypted on the way in and
//! decrypted on the way out ([`crate::crypto`]), so the store only ever sees ciphertext.
//!
//! Access: the caller's join token as `Authorization: Bearer <token>`. A missing, malformed,
//! expired or wrongly signed token: **401** `unauthorized`. A token for another consultation
//! than the one in the path: **404** `not_found` (the caller cannot know that one exists).
//! Allowed: the consultation's practitioners, and participants who are in the call (admitted,
//! or reconnecting after having been admitted); anyone else (a patient in the waiting room, one
//! who has left): **403** `forbidden`. Every error body is `{"code", "message"}`.

use crate::AppState;
use crate::consultation::{ConsultationEvent, DocumentInfo};
use crate::crypto::{self, DataKey, Decryptor, Encryptor, MasterKey};
use crate::filetype::{self, FileType};
use crate::token::{self, Role};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use teleconsult_store::{AuditEvent, DocumentMeta, EncryptionInfo, StoreError};

/// Slack above `documents.max_bytes` for the multipart framing (boundaries, part headers).
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// The documents API, mounted under `/api/consultations/{id}/documents`.
pub fn routes(max_bytes: u64) -> Router<AppState> {
    let limit = usize::try_from(max_bytes.saturating_add(MULTIPART_OVERHEAD)).unwrap_or(usize::MAX);
    Router::new()
        .route(
            "/api/consultations/{id}/documents",
            get(list).post(upload).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/api/consultations/{id}/documents/{doc}",
            get(download).delete(delete),
        )
}

/// A refused request: status, stable code and a sentence for people.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("you may not access this consultation's documents")]
    Forbidden,
    #[error("only the uploader or a practitioner may delete a document")]
    NotYours,
    #[error("no such consultation")]
    UnknownConsultation,
    #[error("no such document")]
    NotFound,
    #[error("the document is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("this type of file is not accepted: {0}")]
    UnsupportedType(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the requested range is outside the document")]
    RangeNotSatisfiable(u64),
    #[error("storage is unavailable; try again later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl DocumentError {
    pub fn status(&self) -> StatusCode {
        match self {
            DocumentError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            DocumentError::Forbidden | DocumentError::NotYours => StatusCode::FORBIDDEN,
            DocumentError::UnknownConsultation | DocumentError::NotFound => StatusCode::NOT_FOUND,
            DocumentError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DocumentError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DocumentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DocumentError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            DocumentError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            DocumentError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            DocumentError::Unauthorized(_) => "unauthorized",
            DocumentError::Forbidden => "forbidden",
            DocumentError::NotYours => "not_uploader",
            DocumentError::UnknownConsultation => "not_found",
            DocumentError::NotFound => "document_not_found",
            DocumentError::TooLarge(_) => "too_large",
            DocumentError::UnsupportedType(_) => "unsupported_type",
            DocumentError::BadRequest(_) => "bad_request",
            DocumentError::RangeNotSatisfiable(_) => "range_not_satisfiable",
            DocumentError::Unavailable => "storage_unavailable",
            DocumentError::Internal => "internal",
        }
    }
}

impl IntoResponse for DocumentError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status(),
            Json(serde_json::json!({ "code": self.code(), "message": self.to_string() })),
        )
            .into_response();
        match self {
            DocumentError::Unauthorized(_) => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            DocumentError::RangeNotSatisfiable(size) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        resp
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

/// Who is calling, once authorised.
struct Caller {
    /// Participant id in the call, or `practitioner` for a practitioner not in the call.
    actor: String,
    role: Role,
}

fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    consultation: &str,
) -> Result<Caller, DocumentError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(DocumentError::Unauthorized(
            "a join token is required (Authorization: Bearer)",
        ))?;
    let bearer = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(DocumentError::Unauthorized(
            "the Authorization header must be Bearer <token>",
        ))?;
    let claims = token::verify(
        state.config.auth.signing_secret.as_bytes(),
        bearer,
        token::unix_now(),
    )
    .map_err(|_| DocumentError::Unauthorized("the token is invalid or expired"))?;
    if claims.consultation != consultation {
        return Err(DocumentError::UnknownConsultation);
    }
    let in_call =
        state
            .consultations
            .in_call_participant(consultation, &claims.identity, claims.role);
    match (in_call, claims.role) {
        (Some(id), role) => Ok(Caller {
            actor: id.into_string(),
            role,
        }),
        (None, Role::Practitioner) => Ok(Caller {
            actor: Role::Practitioner.as_str().to_string(),
            role: Role::Practitioner,
        }),
        (None, _) => Err(DocumentError::Forbidden),
    }
}

fn master_key(state: &AppState) -> Result<MasterKey, DocumentError> {
    let d = &state.config.documents;
    MasterKey::from_base64(&d.master_key_id, &d.master_key).map_err(|e| {
        tracing::error!(error = %e, "documents.master_key is unusable");
        DocumentError::Internal
    })
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn info(meta: &DocumentMeta) -> DocumentInfo {
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

async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    consultation: &str,
    document: &str,
) -> Result<(), DocumentError> {
    let event = AuditEvent {
        id: format!("a{:032x}", rand::random::<u128>()),
        at: now_millis(),
        actor: actor.to_string(),
        action: action.to_string(),
        consultation: Some(consultation.to_string()),
        target: Some(document.to_string()),
    };
    state.store.record_audit(&event).await.map_err(Into::into)
}

async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<DocumentInfo>>, DocumentError> {
    authorize(&state, &headers, &id)?;
    let docs = state.store.list_documents(&id).await?;
    Ok(Json(docs.iter().map(info).collect()))
}

/// A multipart stream error: the body limit (413), or a broken or interrupted body.
fn multipart_error(e: MultipartError, max: u64) -> DocumentError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        DocumentError::TooLarge(max)
    } else {
        DocumentError::BadRequest(format!(
            "upload interrupted or malformed: {}",
            e.body_text()
        ))
    }
}

/// What the upload stream found, read by the handler once the store has returned.
#[derive(Default)]
struct Outcome {
    failure: Option<DocumentError>,
    size: u64,
    sha256: String,
}

struct Upload<'a> {
    field: Field<'a>,
    /// Plaintext already read (the sniffed head), fed first.
    head: Option<Bytes>,
    encryptor: Option<Encryptor>,
    hasher: Sha256,
    size: u64,
    max: u64,
    sealed: std::collections::VecDeque<Bytes>,
    outcome: Arc<Mutex<Outcome>>,
}

impl Upload<'_> {
    fn fail(&mut self, e: DocumentError) -> String {
        let msg = e.to_string();
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failure = Some(e);
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
            Err(e) => Err(self.fail(DocumentError::BadRequest(e.to_string()))),
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
            match self.field.chunk().await {
                Ok(Some(data)) => {
                    if let Err(e) = self.feed(&data) {
                        return Some(Err(e));
                    }
                }
                Ok(None) => {
                    let enc = self.encryptor.take()?;
                    match enc.finish() {
                        Ok(last) => {
                            let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
                            o.size = self.size;
                            o.sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
                            return Some(Ok(last));
                        }
                        Err(e) => {
                            return Some(Err(self.fail(DocumentError::BadRequest(e.to_string()))));
                        }
                    }
                }
                Err(e) => {
                    let err = multipart_error(e, self.max);
                    return Some(Err(self.fail(err)));
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read the field until [`filetype::SNIFF_BYTES`] bytes or its end.
async fn sniff(field: &mut Field<'_>, max: u64) -> Result<Bytes, DocumentError> {
    let mut head = Vec::new();
    while head.len() < filetype::SNIFF_BYTES {
        match field.chunk().await {
            Ok(Some(data)) => {
                head.extend_from_slice(&data);
                if head.len() as u64 > max {
                    return Err(DocumentError::TooLarge(max));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, max)),
        }
    }
    Ok(Bytes::from(head))
}

async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<DocumentInfo>), DocumentError> {
    let caller = authorize(&state, &headers, &id)?;
    let mut multipart = multipart.map_err(|e| {
        DocumentError::BadRequest(format!(
            "expected a multipart/form-data body with a file field: {}",
            e.body_text()
        ))
    })?;
    let max = state.config.documents.max_bytes;
    let mut field = loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("file") => break f,
            // Other fields are skipped (the body limit bounds them).
            Ok(Some(mut f)) => {
                while let Some(_skipped) = f.chunk().await.map_err(|e| multipart_error(e, max))? {}
            }
            Ok(None) => {
                return Err(DocumentError::BadRequest(
                    "the form has no file field".to_string(),
                ));
            }
            Err(e) => return Err(multipart_error(e, max)),
        }
    };
    let filename = filetype::sanitize_filename(field.file_name().unwrap_or(""));
    let head = sniff(&mut field, max).await?;
    let kind = filetype::detect(&head).ok_or_else(|| {
        DocumentError::UnsupportedType(
            "only PDF, PNG, JPEG, WebP, DICOM and plain text are recognised".to_string(),
        )
    })?;
    if !state
        .config
        .documents
        .allowed_types
        .iter()
        .any(|t| FileType::from_name(t) == Some(kind))
    {
        return Err(DocumentError::UnsupportedType(format!(
            "{} documents are not accepted here",
            kind.name()
        )));
    }

    let master = master_key(&state)?;
    let doc_id = format!("d{:032x}", rand::random::<u128>());
    let (key, wrapped_key) = DataKey::generate(&master, &doc_id);
    let meta = DocumentMeta {
        id: doc_id.clone(),
        consultation: id.clone(),
        filename,
        content_type: kind.mime().to_string(),
        size: 0,
        sha256: String::new(),
        uploader: caller.actor.clone(),
        uploader_role: caller.role.as_str().to_string(),
        uploaded_at: now_millis(),
        encryption: EncryptionInfo {
            scheme: crypto::SCHEME.to_string(),
            wrapped_key,
            chunk_size: crypto::CHUNK_SIZE,
            master_key_id: master.id().to_string(),
        },
    };
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let upload = Upload {
        field,
        head: Some(head),
        encryptor: Some(Encryptor::new(key, &doc_id)),
        hasher: Sha256::new(),
        size: 0,
        max,
        sealed: Default::default(),
        outcome: outcome.clone(),
    };
    let body = futures_util::stream::unfold(upload, |mut u| async move {
        u.next().await.map(|item| (item, u))
    })
    .boxed();
    let finished = outcome.clone();
    let finish = Box::new(move |m: &mut DocumentMeta| {
        let o = finished.lock().unwrap_or_else(|e| e.into_inner());
        m.size = o.size;
        m.sha256 = o.sha256.clone();
    });
    let stored = state.store.put_document(&meta, body, finish).await;
    let (failure, size, sha256) = {
        let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
        (o.failure.take(), o.size, std::mem::take(&mut o.sha256))
    };
    if let Some(failure) = failure {
        tracing::info!(consultation = %id, code = failure.code(), "upload refused");
        return Err(failure);
    }
    stored?;
    let mut meta = meta;
    meta.size = size;
    meta.sha256 = sha256;
    if let Err(e) = audit(&state, &caller.actor, "document.upload", &id, &doc_id).await {
        tracing::warn!(consultation = %id, document = %doc_id, error = %e, "audit event not recorded");
    }
    let document = info(&meta);
    state.consultations.broadcast_in_call(
        &id,
        &ConsultationEvent::DocumentAdded {
            document: document.clone(),
        },
    );
    tracing::info!(consultation = %id, document = %doc_id, size = meta.size, kind = kind.name(), "document uploaded");
    metrics::counter!("teleconsult_documents_uploaded_total").increment(1);
    Ok((StatusCode::CREATED, Json(document)))
}

/// A single byte range `start..=end` of a `size`-byte document from a `Range` header.
/// `Ok(None)`: serve the whole document (no header, another unit, several ranges or a header
/// we cannot parse, which RFC 9110 lets us ignore).
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, DocumentError> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let range = if a.is_empty() {
        // Suffix: the last `b` bytes.
        let Some(n) = parse(b) else { return Ok(None) };
        if n == 0 || size == 0 {
            return Err(DocumentError::RangeNotSatisfiable(size));
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let Some(start) = parse(a) else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            u64::MAX
        } else {
            match parse(b) {
                Some(e) if e >= start => e,
                _ => return Ok(None),
            }
        };
        if start >= size {
            return Err(DocumentError::RangeNotSatisfiable(size));
        }
        (start, end.min(size - 1))
    };
    Ok(Some(range))
}

/// `Content-Disposition: attachment` with an ASCII fallback and the exact name (RFC 6266/8187).
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

async fn download(
    State(state): State<AppState>,
    Path((id, doc)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, DocumentError> {
    let caller = authorize(&state, &headers, &id)?;
    let meta = state
        .store
        .document(&id, &doc)
        .await?
        .ok_or(DocumentError::NotFound)?;
    if meta.encryption.scheme != crypto::SCHEME {
        tracing::error!(document = %doc, "unknown encryption scheme");
        return Err(DocumentError::Internal);
    }
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        meta.size,
    )?;
    let master = master_key(&state)?;
    let key = DataKey::unwrap(&master, &meta.id, &meta.encryption.wrapped_key).map_err(|e| {
        tracing::error!(document = %doc, error = %e, "document key unwrap failed");
        DocumentError::Internal
    })?;
    // The access is recorded before a byte leaves.
    audit(&state, &caller.actor, "document.download", &id, &doc).await?;

    let (start, end) = range.unwrap_or((0, meta.size.saturating_sub(1)));
    let length = if meta.size == 0 { 0 } else { end - start + 1 };
    let chunk_size = meta.encryption.chunk_size;
    let first = start / u64::from(chunk_size.max(1));
    let decryptor = Decryptor::new(key, &meta.id, chunk_size, meta.size, first).map_err(|e| {
        tracing::error!(document = %doc, error = %e, "bad encryption layout");
        DocumentError::Internal
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = state.store.clone();
    let doc_id = meta.id.clone();
    let whole = range.is_none();
    tokio::spawn(async move {
        if let Err(e) = stream_plaintext(
            store, &doc_id, decryptor, chunk_size, start, length, whole, &tx,
        )
        .await
        {
            tracing::error!(document = %doc_id, error = %e, "document download failed");
            let _ = tx.send(Err(std::io::Error::other(e))).await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));

    let mut resp = Response::new(body);
    *resp.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = resp.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|_| DocumentError::Internal);
    h.insert(header::CONTENT_TYPE, value(&meta.content_type)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_DISPOSITION,
        value(&content_disposition(&meta.filename))?,
    );
    h.insert(header::ETAG, value(&format!("\"{}\"", meta.sha256))?);
    h.insert("x-content-sha256", value(&meta.sha256)?);
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{end}/{}", meta.size))?,
        );
    }
    Ok(resp)
}

/// Read the stored ciphertext, skip the sealed chunks before the range, open the chunks it
/// covers and send exactly `length` plaintext bytes from `start`. A whole-document download
/// also checks that the stored bytes end where the last chunk does.
#[allow(clippy::too_many_arguments)]
async fn stream_plaintext(
    store: Arc<dyn teleconsult_store::Store>,
    doc: &str,
    mut decryptor: Decryptor,
    chunk_size: u32,
    start: u64,
    length: u64,
    whole: bool,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), String> {
    let cs = u64::from(chunk_size);
    let mut skip = Decryptor::offset_of(chunk_size, decryptor.next_chunk());
    let mut remaining = length;
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
        for (index, plain) in decryptor.update(&piece).map_err(|e| e.to_string())? {
            if remaining == 0 {
                continue;
            }
            let chunk_start = index * cs;
            let from = start.saturating_sub(chunk_start).min(plain.len() as u64);
            let to = (from + remaining).min(plain.len() as u64);
            let part = plain.slice(from as usize..to as usize);
            remaining -= part.len() as u64;
            if !part.is_empty() && tx.send(Ok(part)).await.is_err() {
                return Ok(()); // the client went away
            }
        }
        if remaining == 0 && !whole {
            return Ok(());
        }
    }
    if whole {
        decryptor.finish().map_err(|e| e.to_string())?;
    }
    if remaining > 0 {
        return Err("stored document is shorter than its metadata".to_string());
    }
    Ok(())
}

async fn delete(
    State(state): State<AppState>,
    Path((id, doc)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, DocumentError> {
    let caller = authorize(&state, &headers, &id)?;
    let meta = state
        .store
        .document(&id, &doc)
        .await?
        .ok_or(DocumentError::NotFound)?;
    let uploader = caller.role != Role::Practitioner && meta.uploader == caller.actor;
    if caller.role != Role::Practitioner && !uploader {
        return Err(DocumentError::NotYours);
    }
    state.store.delete_document(&id, &doc).await?;
    if let Err(e) = audit(&state, &caller.actor, "document.delete", &id, &doc).await {
        tracing::warn!(consultation = %id, document = %doc, error = %e, "audit event not recorded");
    }
    state.consultations.broadcast_in_call(
        &id,
        &ConsultationEvent::DocumentDeleted {
            document: info(&meta),
        },
    );
    tracing::info!(consultation = %id, document = %doc, "document deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str, size| parse_range(Some(h), size).map_err(|e| e.code());
        assert_eq!(r("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(r("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=90-1000", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-1000", 100), Ok(Some((0, 99))));
        assert_eq!(r("bytes=100-", 100), Err("range_not_satisfiable"));
        assert_eq!(r("bytes=-0", 100), Err("range_not_satisfiable"));
        assert_eq!(r("bytes=0-", 0), Err("range_not_satisfiable"));
        assert_eq!(r("bytes=5-1", 100), Ok(None));
        assert_eq!(r("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(r("items=0-1", 100), Ok(None));
        assert_eq!(r("bytes=x-y", 100), Ok(None));
        assert_eq!(parse_range(None, 100).ok(), Some(None));
    }

    #[test]
    fn disposition_is_safe() {
        assert_eq!(
            content_disposition("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        let d = content_disposition("Résultat \"final\".pdf");
        assert_eq!(
            d,
            "attachment; filename=\"R_sultat _final_.pdf\"; filename*=UTF-8''R%C3%A9sultat%20%22final%22.pdf"
        );
        assert!(HeaderValue::from_str(&d).is_ok());
    }
}
