//! HTTP exports: `GET /api/billing/export` (admin key: every practitioner; a practitioner's join
//! token: their own consultations; a staff session: with the `billing` or `admin` role the whole
//! organisation's consultations, as a `practitioner` their own) and `GET /api/audit/export`
//! (admin key only). Credentials only
//! in `Authorization: Bearer …`, never in the query string. Bodies are streamed from the store
//! in constant memory. Columns and rules: `docs/billing.md`.

use crate::AppState;
use crate::billing::{self, ExportFormat, ExportWriter};
use crate::config::ExposeSecret;
use crate::error::ApiError;
use crate::token::{self, Role};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use teleconsult_store::{ExportQuery, Store};
use tokio::sync::mpsc;

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 32 * 1024;

/// The export routes, to merge into the main router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/billing/export", get(billing_export))
        .route("/api/audit/export", get(audit_export))
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    Admin,
    /// A practitioner (their identity).
    Practitioner(String),
    /// A signed-in staff member (session cookie).
    Staff(teleconsult_accounts::Staff),
}

fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let denied = "an admin API key or a practitioner's token is required (Authorization: Bearer …)";
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::forbidden(denied))?;
    let bearer = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ApiError::forbidden(denied))?;
    let admin = state.config.admin.api_key.expose_secret().as_bytes();
    // Constant time in the key's content (a length mismatch is refused at once).
    if !admin.is_empty() && bool::from(admin.ct_eq(bearer.as_bytes())) {
        return Ok(Caller::Admin);
    }
    match token::verify(
        state.config.auth.signing_secret.expose_secret().as_bytes(),
        bearer,
        token::unix_now(),
    ) {
        Ok(claims) if claims.role == Role::Practitioner => {
            Ok(Caller::Practitioner(claims.identity))
        }
        _ => Err(ApiError::forbidden(denied)),
    }
}

fn refuse_token_in_query(q: &HashMap<String, String>) -> Result<(), ApiError> {
    for k in ["token", "access_token", "api_key", "key"] {
        if q.contains_key(k) {
            return Err(ApiError::bad_request(
                "credentials_in_query",
                "credentials go in the Authorization header, never in the URL",
            ));
        }
    }
    Ok(())
}

fn time_param(q: &HashMap<String, String>, name: &str) -> Result<i64, ApiError> {
    let v = q.get(name).ok_or_else(|| {
        ApiError::bad_request("bad_time", format!("`{name}` is required (ISO-8601 UTC)"))
    })?;
    billing::time::parse(v).map_err(|_| {
        ApiError::bad_request(
            "bad_time",
            format!(
                "`{name}` must be an ISO-8601 UTC time, e.g. 2026-01-31 or 2026-01-31T08:00:00Z"
            ),
        )
    })
}

/// The `[from, to)` period of an export, `to` after `from`.
fn period(q: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let from = time_param(q, "from")?;
    let to = time_param(q, "to")?;
    if to <= from {
        return Err(ApiError::bad_request(
            "bad_range",
            "`to` must be after `from`",
        ));
    }
    Ok((from, to))
}

/// Stream what `produce` writes into the response body through a small bounded channel, so the
/// export holds at most a few chunks in memory whatever its size.
fn streamed<F, Fut>(content_type: &'static str, filename: &str, produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(produce(tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn send(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, buf: &mut String) -> bool {
    let chunk = Bytes::from(std::mem::take(buf));
    *buf = String::with_capacity(CHUNK + 1024);
    tx.send(Ok(chunk)).await.is_ok()
}

/// Write every item of `items` into `buf` with `write`, sending about [`CHUNK`] bytes at a
/// time. `None` when the export stops early: the client went away, or the store failed midway
/// (logged; the body then ends with an error so the client sees a broken download).
async fn pump<T>(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    mut buf: String,
    mut items: futures_util::stream::BoxStream<'_, teleconsult_store::Result<T>>,
    export: &'static str,
    mut write: impl FnMut(&mut String, T),
) -> Option<String> {
    while let Some(item) = items.next().await {
        match item {
            Ok(item) => {
                write(&mut buf, item);
                if buf.len() >= CHUNK && !send(tx, &mut buf).await {
                    return None;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, export, "export failed midway");
                let _ = tx
                    .send(Err(std::io::Error::other("export failed midway")))
                    .await;
                return None;
            }
        }
    }
    Some(buf)
}

async fn billing_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    refuse_token_in_query(&q)?;
    // An explicit bearer credential wins over a session cookie the browser may also hold.
    let session = if headers.contains_key(header::AUTHORIZATION) {
        None
    } else {
        crate::routes::auth::staff_from_cookie(&state, &axum::http::Method::GET, &headers).await?
    };
    let caller = match session {
        Some(s) => Caller::Staff(s.staff),
        None => caller(&state, &headers)?,
    };
    let (from, to) = period(&q)?;
    let format: ExportFormat = q
        .get("format")
        .map(String::as_str)
        .unwrap_or("csv")
        .parse()
        .map_err(|e: String| ApiError::bad_request("bad_format", e))?;
    let asked = q.get("practitioner").filter(|p| !p.is_empty()).cloned();
    // A staff session's export is its organisation's practitioners' (by account id): a set
    // filtered while streaming, since summaries carry the practitioner, not the organisation.
    let mut organisation_practitioners: Option<std::collections::HashSet<String>> = None;
    let practitioner = match &caller {
        Caller::Admin => asked,
        Caller::Staff(staff) => {
            use teleconsult_accounts::StaffRole;
            if staff.has(StaffRole::Billing) || staff.has(StaffRole::Admin) {
                let ids: std::collections::HashSet<String> = state
                    .accounts
                    .accounts(&staff.organisation)
                    .await?
                    .into_iter()
                    .map(|a| a.id)
                    .collect();
                if asked.as_ref().is_some_and(|a| !ids.contains(a)) {
                    return Err(ApiError::new(
                        axum::http::StatusCode::NOT_FOUND,
                        "not_found",
                        "no such practitioner in your organisation",
                    ));
                }
                organisation_practitioners = Some(ids);
                asked
            } else if staff.has(StaffRole::Practitioner) {
                if asked.as_ref().is_some_and(|a| a != &staff.account) {
                    return Err(ApiError::forbidden(
                        "a practitioner may export only their own consultations",
                    ));
                }
                Some(staff.account.clone())
            } else {
                return Err(ApiError::forbidden(
                    "billing exports need the billing, admin or practitioner role",
                ));
            }
        }
        Caller::Practitioner(me) => {
            if asked.as_ref().is_some_and(|a| a != me) {
                return Err(ApiError::forbidden(
                    "a practitioner may export only their own consultations",
                ));
            }
            Some(me.clone())
        }
    };
    let actor = match &caller {
        Caller::Admin => "admin".to_string(),
        Caller::Staff(staff) => format!("account:{}", staff.account),
        Caller::Practitioner(me) => format!(
            "practitioner:{}",
            billing::practitioner_pseudonym(
                state
                    .config
                    .billing
                    .pseudonym_key
                    .expose_secret()
                    .as_bytes(),
                me
            )
        ),
    };
    state.billing.audit("billing.export", &actor, None, None);
    tracing::info!(
        actor = match &caller {
            Caller::Admin => "admin",
            Caller::Practitioner(_) => "practitioner",
            Caller::Staff(_) => "staff",
        },
        from,
        to,
        "billing export"
    );
    let store: Arc<dyn Store> = state.store.clone();
    let rounding = state.config.billing.rounding;
    let query = ExportQuery {
        from,
        to,
        practitioner,
    };
    let ext = match format {
        ExportFormat::Csv => "csv",
        ExportFormat::Json => "json",
    };
    let filename = format!(
        "billing-{}-{}.{ext}",
        billing::time::format_date(from),
        billing::time::format_date(to)
    );
    Ok(streamed(
        billing::content_type(format),
        &filename,
        move |tx| async move {
            let mut w = ExportWriter::new(format, rounding);
            let mut buf = String::with_capacity(CHUNK + 1024);
            w.begin(&mut buf);
            let rows = match organisation_practitioners {
                None => store.export_summaries(query),
                Some(ids) => store
                    .export_summaries(query)
                    .filter(move |r| {
                        std::future::ready(match r {
                            Ok(s) => ids.contains(&s.practitioner),
                            Err(_) => true,
                        })
                    })
                    .boxed(),
            };
            let Some(mut buf) = pump(&tx, buf, rows, "billing", |buf, s| w.row(buf, &s)).await
            else {
                return;
            };
            w.end(&mut buf);
            send(&tx, &mut buf).await;
        },
    ))
}

/// CSV header of the audit export.
pub const AUDIT_CSV_HEADER: &str = "id,at,actor,action,consultation,target\n";

async fn audit_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    refuse_token_in_query(&q)?;
    if caller(&state, &headers)? != Caller::Admin {
        return Err(ApiError::forbidden(
            "the audit log is for the admin API key only",
        ));
    }
    let (from, to) = period(&q)?;
    let csv = match q.get("format").map(String::as_str).unwrap_or("jsonl") {
        "jsonl" | "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::bad_request(
                "bad_format",
                format!("format must be jsonl or csv, not {other:?}"),
            ));
        }
    };
    let store: Arc<dyn Store> = state.store.clone();
    let (ct, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "jsonl")
    };
    let filename = format!(
        "audit-{}-{}.{ext}",
        billing::time::format_date(from),
        billing::time::format_date(to)
    );
    Ok(streamed(ct, &filename, move |tx| async move {
        let mut buf = String::with_capacity(CHUNK + 1024);
        let mut rows = csv.then(billing::CsvRows::new);
        if csv {
            buf.push_str(AUDIT_CSV_HEADER);
        }
        let events = store.export_audit(from, to);
        let Some(mut buf) = pump(&tx, buf, events, "audit", |buf, e| {
            if let Some(rows) = rows.as_mut() {
                rows.record(
                    buf,
                    [
                        e.id.as_str(),
                        &billing::time::format(e.at),
                        &e.actor,
                        &e.action,
                        e.consultation.as_deref().unwrap_or(""),
                        e.target.as_deref().unwrap_or(""),
                    ],
                );
            } else {
                let line = serde_json::json!({
                    "id": e.id,
                    "at": billing::time::format(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "consultation": e.consultation,
                    "target": e.target,
                });
                buf.push_str(&line.to_string());
                buf.push('\n');
            }
        })
        .await
        else {
            return;
        };
        send(&tx, &mut buf).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_query_are_refused() {
        let mut q = HashMap::new();
        q.insert("from".to_string(), "2026-01-01".to_string());
        assert!(refuse_token_in_query(&q).is_ok());
        q.insert("token".to_string(), "x".to_string());
        let e = refuse_token_in_query(&q).expect_err("refused");
        assert_eq!(e.code(), "credentials_in_query");
    }
}
