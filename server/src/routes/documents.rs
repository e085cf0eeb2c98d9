//! Shared documents (health data), the HTTP side: streamed upload (multipart), list, streamed
//! download with single byte ranges, deletion. Who may do what, and the sealing and opening of
//! the bytes, is the documents service's ([`teleconsult_documents::DocumentService`]); here
//! requests become its calls and its errors become status codes.
//!
//! Access: the caller's join token as `Authorization: Bearer <token>`. A missing, malformed,
//! expired or wrongly signed token: **401** `unauthorized`. A token for another consultation
//! than the one in the path: **404** `not_found` (the caller cannot know that one exists).
//! Allowed: the consultation's practitioners, and participants who are in the call (admitted,
//! or reconnecting after having been admitted); anyone else (a patient in the waiting room, one
//! who has left): **403** `forbidden`. Every error body is `{"code", "message"}` ([`ApiError`]).

use crate::AppState;
use crate::consultation::DocumentInfo;
use crate::consultation::Refusal;
use crate::consultation::invitation::now_millis;
use crate::error::ApiError;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use futures_util::StreamExt;
use std::ops::RangeInclusive;
use teleconsult_documents::{Caller, DocumentError};

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

/// Verify the bearer token and apply the service's access rule for `consultation`.
async fn authorize(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    consultation: &str,
) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        // No link: a practitioner who joined through their login session (the cookie, with its
        // CSRF token on uploads and deletions) for their own consultation.
        return authorize_session(state, method, headers, consultation).await;
    };
    let bearer = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be Bearer <token>"))?;
    let credential = state
        .signaling
        .authenticator
        .authenticate(bearer, now_millis())
        .await
        .map_err(|r| match r {
            Refusal::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", r.sentence())
            }
            _ => ApiError::unauthorized(r.sentence()),
        })?;
    Ok(state.documents.authorize(&credential, consultation)?)
}

async fn authorize_session(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    consultation: &str,
) -> Result<Caller, ApiError> {
    let staff = crate::routes::auth::staff_from_cookie(state, method, headers)
        .await?
        .filter(|s| s.has(teleconsult_accounts::StaffRole::Practitioner))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "a join token (Authorization: Bearer) or a practitioner's session is required",
            )
        })?;
    let credential = state
        .signaling
        .authenticator
        .practitioner(
            &staff.account,
            &staff.organisation,
            &staff.display_name,
            consultation,
        )
        .await
        .map_err(|r| match r {
            Refusal::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", r.sentence())
            }
            // Not theirs, or no such consultation: the same answer.
            _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such consultation"),
        })?;
    Ok(state.documents.authorize(&credential, consultation)?)
}

async fn list(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<DocumentInfo>>, ApiError> {
    let caller = authorize(&state, &method, &headers, &id).await?;
    Ok(Json(state.documents.list(&caller).await?))
}

/// A multipart stream error: the body limit (413), or a broken or interrupted body.
fn multipart_error(e: MultipartError, max: u64) -> DocumentError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        DocumentError::TooLarge(max)
    } else {
        DocumentError::BadUpload(format!(
            "upload interrupted or malformed: {}",
            e.body_text()
        ))
    }
}

async fn upload(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<DocumentInfo>), ApiError> {
    let caller = authorize(&state, &method, &headers, &id).await?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!(
                "expected a multipart/form-data body with a file field: {}",
                e.body_text()
            ),
        )
    })?;
    let max = state.documents.max_bytes();
    let field = loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("file") => break f,
            // Other fields are skipped (the body limit bounds them).
            Ok(Some(mut f)) => {
                while let Some(_skipped) = f.chunk().await.map_err(|e| multipart_error(e, max))? {}
            }
            Ok(None) => {
                return Err(ApiError::bad_request(
                    "bad_request",
                    "the form has no file field",
                ));
            }
            Err(e) => return Err(multipart_error(e, max).into()),
        }
    };
    let filename = field.file_name().unwrap_or("").to_string();
    let body = field.map(|chunk| chunk.map_err(|e| multipart_error(e, max)));
    let document = state.documents.upload(&caller, &filename, body).await?;
    Ok((StatusCode::CREATED, Json(document)))
}

/// The single byte range of a `size`-byte document asked for by a `Range` header.
/// `Ok(None)`: serve the whole document (no header, another unit, several ranges or a header
/// we cannot parse, which RFC 9110 lets us ignore). A range outside the document: 416.
pub fn parse_range(
    header: Option<&str>,
    size: u64,
) -> Result<Option<RangeInclusive<u64>>, DocumentError> {
    let Some(parsed) = header.and_then(|h| http_range_header::parse_range_header(h).ok()) else {
        return Ok(None);
    };
    if parsed.len() != 1 {
        return Ok(None);
    }
    match parsed.validate(size) {
        Ok(ranges) => match <[_; 1]>::try_from(ranges) {
            Ok([range]) => Ok(Some(range)),
            // Only a suffix of an empty document gets here: nothing to serve a part of.
            Err(_) => Err(DocumentError::RangeNotSatisfiable(size)),
        },
        Err(_) => Err(DocumentError::RangeNotSatisfiable(size)),
    }
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
    method: Method,
    Path((id, doc)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &method, &headers, &id).await?;
    let found = state.documents.find(&caller, &doc).await?;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        found.meta().size,
    )?;
    let download = state.documents.open(&caller, found, range).await?;
    let meta = &download.meta;
    let value = |s: &str| HeaderValue::from_str(s).map_err(ApiError::internal);
    let content_type = value(&meta.content_type)?;
    let disposition = value(&content_disposition(&meta.filename))?;
    let etag = value(&format!("\"{}\"", meta.sha256))?;
    let sha256 = value(&meta.sha256)?;
    let content_range = if download.partial {
        Some(value(&format!(
            "bytes {}-{}/{}",
            download.range.start(),
            download.range.end(),
            meta.size
        ))?)
    } else {
        None
    };
    let length = download.length;
    let status = if download.partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = Response::new(Body::from_stream(download.body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(header::ETAG, etag);
    h.insert("x-content-sha256", sha256);
    if let Some(v) = content_range {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

async fn delete(
    State(state): State<AppState>,
    method: Method,
    Path((id, doc)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &method, &headers, &id).await?;
    state.documents.delete(&caller, &doc).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str, size| {
            parse_range(Some(h), size)
                .map(|r| r.map(|r| (*r.start(), *r.end())))
                .map_err(|e| e.code())
        };
        assert_eq!(r("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(r("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=90-1000", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-1000", 100), Ok(Some((0, 99))));
        assert_eq!(r("bytes=100-", 100), Err("range_not_satisfiable"));
        assert_eq!(r("bytes=-0", 100), Err("range_not_satisfiable"));
        assert_eq!(r("bytes=0-", 0), Err("range_not_satisfiable"));
        assert_eq!(r("bytes=-5", 0), Err("range_not_satisfiable"));
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
