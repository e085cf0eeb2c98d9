//! The practitioner's workspace (`/workspace`) and `/api/workspace/*`: a signed-in practitioner
//! lists, creates and cancels their own consultations and revokes single links. Every route
//! needs the `practitioner` role (403 otherwise); state-changing ones are CSRF-checked by the
//! [`StaffSession`] extractor; a consultation of another organisation or another practitioner is
//! 404. The work itself is [`crate::scheduling`]'s (shared with the REST API).
//!
//! Responses carry the link tokens of live invitations (to their owner only; `Cache-Control:
//! no-store` on every response); the page builds `/join#token=…` from them. Patient and guest
//! labels are shown back to the practitioner who chose them, never logged.

use crate::AppState;
use crate::error::ApiError;
use crate::routes::auth::{StaffSession, json_body, staff_from_cookie};
use crate::scheduling::{self, NewConsultation, Owner, SchedulingError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use teleconsult_accounts::{StaffRole, now_millis};
use teleconsult_store::{ConsultationStatus, Invitation, Policy, ScheduledConsultation};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/workspace", get(page))
        .route("/api/workspace/consultations", get(list).post(create))
        .route("/api/workspace/consultations/{id}", get(one))
        .route("/api/workspace/consultations/{id}/cancel", post(cancel))
        .route("/api/workspace/consultations/{id}/chat", get(chat))
        .route(
            "/api/workspace/consultations/{id}/chat/export",
            get(chat_export),
        )
        .route(
            "/api/workspace/consultations/{id}/invitations/{jti}/revoke",
            post(revoke),
        )
        .route(
            "/api/workspace/consultations/{id}/invitations/{jti}/qr.svg",
            get(qr_code),
        )
        .route(
            "/api/workspace/consultations/{id}/recordings",
            get(recordings),
        )
        .route(
            "/api/workspace/consultations/{id}/recordings/{rid}/delete",
            post(delete_recording),
        )
        .route(
            "/api/workspace/consultations/{id}/recordings/{rid}/files",
            get(recording_files),
        )
        .route(
            "/api/workspace/consultations/{id}/recordings/{rid}/files/{name}",
            get(recording_file),
        )
}

/// Who may see a consultation's recordings: its practitioner, and the organisation's admins
/// (issue 13's access rule); everyone else gets 404 from the ownership check, or 403 without
/// either role.
fn recording_reader(s: &StaffSession) -> Result<Owner<'_>, ApiError> {
    if s.has(StaffRole::Admin) {
        Ok(Owner {
            organisation: &s.organisation,
            practitioner: None,
        })
    } else if s.has(StaffRole::Practitioner) {
        Ok(owner(s))
    } else {
        Err(ApiError::forbidden(
            "recordings need the practitioner or the admin role",
        ))
    }
}

/// The recording `rid` of consultation `id`, if the caller may read it (else 404).
async fn readable_recording(
    state: &AppState,
    s: &StaffSession,
    id: &str,
    rid: &str,
) -> Result<(ScheduledConsultation, teleconsult_store::RecordingRecord), ApiError> {
    let c = scheduling::owned_consultation(&*state.store, recording_reader(s)?, id).await?;
    match state.store.recording(rid).await {
        Ok(Some(r)) if r.consultation == c.id => Ok((c, r)),
        Ok(_) => Err(SchedulingError::NotFound.into()),
        Err(e) => Err(SchedulingError::from(e).into()),
    }
}

async fn audit_recording(
    state: &AppState,
    s: &StaffSession,
    action: &str,
    consultation: &str,
    target: String,
) -> Result<(), ApiError> {
    state
        .store
        .record_audit(&teleconsult_store::AuditEvent {
            id: format!("a{:032x}", rand::random::<u128>()),
            at: now_millis(),
            actor: s.account.clone(),
            action: action.into(),
            consultation: Some(consultation.to_string()),
            target: Some(target),
        })
        .await
        .map_err(|e| SchedulingError::from(e).into())
}

async fn exported(
    state: &AppState,
    rid: &str,
) -> Result<std::sync::Arc<crate::recording::Exported>, ApiError> {
    let keys =
        crate::recording::master_keys(&state.config.documents).map_err(ApiError::internal)?;
    state
        .playback
        .get(&*state.store, &state.config.storage.data_dir, &keys, rid)
        .await
        .map_err(|e| {
            tracing::error!(recording = %rid, error = %e, "recording export for playback failed");
            ApiError::internal("the recording could not be exported")
        })
}

/// `GET /api/workspace/consultations/{id}/recordings/{rid}/files`: the recording exported
/// (one WebM per participant, by pseudonym, and `manifest.json`), audited `recording.export`.
async fn recording_files(
    State(state): State<AppState>,
    s: StaffSession,
    Path((id, rid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (c, _) = readable_recording(&state, &s, &id, &rid).await?;
    let export = exported(&state, &rid).await?;
    audit_recording(&state, &s, "recording.export", &c.id, rid.clone()).await?;
    let files: Vec<serde_json::Value> = export
        .participants
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.file,
                "pseudonym": p.pseudonym,
                "duration_ms": p.duration_ms.round() as u64,
                "start_offset_ms": p.start_offset_ms.round() as u64,
                "bytes": export.file(&p.file).map_or(0, |b| b.len()),
                "content_type": "video/webm",
            })
        })
        .chain(export.file("manifest.json").map(|b| {
            serde_json::json!({
                "name": "manifest.json",
                "bytes": b.len(),
                "content_type": "application/json",
            })
        }))
        .collect();
    Ok(Json(serde_json::json!({ "files": files })).into_response())
}

/// `GET /api/workspace/consultations/{id}/recordings/{rid}/files/{name}`: one exported file,
/// streamed, with a single byte range when asked (`Range`, 206; 416 outside the file), so the
/// page's `<video>` can seek. Audited `recording.download`, once per playback or download (a
/// request from the file's first byte), not for every later range of the same playback.
async fn recording_file(
    State(state): State<AppState>,
    s: StaffSession,
    headers: HeaderMap,
    Path((id, rid, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (c, _) = readable_recording(&state, &s, &id, &rid).await?;
    let export = exported(&state, &rid).await?;
    let Some(body) = export.file(&name).cloned() else {
        return Err(SchedulingError::NotFound.into());
    };
    let size = body.len() as u64;
    let range = crate::routes::documents::parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    )?;
    if range.as_ref().is_none_or(|r| *r.start() == 0) {
        audit_recording(
            &state,
            &s,
            "recording.download",
            &c.id,
            format!("{rid}/{name}"),
        )
        .await?;
    }
    let content_type = if name.ends_with(".json") {
        "application/json"
    } else {
        "video/webm"
    };
    let (status, part) = match &range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            body.slice(*r.start() as usize..=*r.end() as usize),
        ),
        None => (StatusCode::OK, body),
    };
    let mut resp = Response::new(axum::body::Body::from(part.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(r) = &range {
        let v = format!("bytes {}-{}/{size}", r.start(), r.end());
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&v).map_err(ApiError::internal)?,
        );
    }
    if content_type == "application/json" {
        // The manifest is a download (a participant's pseudonym, consent records), not a page.
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"manifest.json\""),
        );
    }
    Ok(resp)
}

/// `GET /api/workspace/consultations/{id}/recordings`: the stored recordings of one of the
/// caller's consultations (ids, times, sizes; 404 for anyone else's).
async fn recordings(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c = scheduling::owned_consultation(&*state.store, recording_reader(&s)?, &id).await?;
    let list = state
        .store
        .recordings(Some(&c.id))
        .await
        .map_err(SchedulingError::from)?;
    let list: Vec<serde_json::Value> = list
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "created_at": r.created_at,
                "duration_ms": r.duration_ms,
                "bytes": r.bytes,
                "interrupted": r.interrupted,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "recordings": list })))
}

/// `POST /api/workspace/consultations/{id}/recordings/{rid}/delete`: delete one recording of
/// one of the caller's consultations, audited (`recording.delete` by the account); 404 for
/// anyone else's, or a recording of another consultation.
async fn delete_recording(
    State(state): State<AppState>,
    s: StaffSession,
    Path((id, rid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (c, _) = readable_recording(&state, &s, &id, &rid).await?;
    state
        .store
        .delete_recording(&rid)
        .await
        .map_err(SchedulingError::from)?;
    state.playback.forget(&rid).await;
    audit_recording(&state, &s, "recording.delete", &c.id, rid.clone()).await?;
    tracing::info!(account = %s.account, consultation = %c.id, recording = %rid, "recording deleted");
    Ok(StatusCode::NO_CONTENT)
}

impl From<SchedulingError> for ApiError {
    fn from(e: SchedulingError) -> ApiError {
        let status = match &e {
            SchedulingError::NotFound => StatusCode::NOT_FOUND,
            SchedulingError::BadPatientLabel
            | SchedulingError::BadGuestLabel(_)
            | SchedulingError::TooManyGuests
            | SchedulingError::BadScheduledAt
            | SchedulingError::BadPolicy => StatusCode::BAD_REQUEST,
            SchedulingError::NotScheduled(_) => StatusCode::CONFLICT,
            SchedulingError::Store(teleconsult_store::StoreError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            SchedulingError::Keyring(_) | SchedulingError::Store(_) => {
                return ApiError::internal(e);
            }
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// `GET /ws`: the signalling WebSocket. A practitioner's session cookie counts only when the
/// handshake's `Origin` is this server's own (browsers always send it on a WebSocket handshake;
/// a page of another site must not ride on the cookie: cross-site WebSocket hijacking).
/// Without a (usable) session the socket still serves join links.
pub async fn websocket(
    ws: axum::extract::WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = foreign_origin(&state, &headers) {
        return refused;
    }
    let signed_in = signed_in_practitioner(&state, &headers).await;
    teleconsult_signaling::upgrade_from(ws, state.signaling.clone(), signed_in, None, peer.ip())
}

/// A WebSocket handshake from a page of another site: refused (403 `origin_not_allowed`).
/// Allowed: no `Origin` (not a browser: it could claim any), this server's own origin
/// ([`own_origin`]), `server.allowed_origins`, and in a cluster the live nodes' own.
fn foreign_origin(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?;
    if own_origin(&state.config, headers) {
        return None;
    }
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    if state
        .config
        .server
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return None;
    }
    // In a cluster a redirected page comes from another node (or the load balancer's public
    // URL, `server.public_url`): the live nodes' origins count as ours.
    if let Some(node) = &state.cluster {
        let as_ws = origin
            .strip_prefix("https://")
            .map(|rest| format!("wss://{rest}"))
            .or_else(|| {
                origin
                    .strip_prefix("http://")
                    .map(|rest| format!("ws://{rest}"))
            });
        if as_ws.is_some_and(|o| node.origins().iter().any(|n| n.eq_ignore_ascii_case(&o))) {
            return None;
        }
    }
    metrics::counter!(crate::telemetry::names::WEBSOCKET_ORIGIN_REFUSED).increment(1);
    Some(
        ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not open the signalling WebSocket",
        )
        .into_response(),
    )
}

/// `GET /ws/{consultation}`: the same WebSocket, with the consultation in the path so that a
/// load balancer can hash on it (cluster mode); the join must be for that consultation. The
/// token still travels in the first message, never in the URL.
pub async fn websocket_for(
    ws: axum::extract::WebSocketUpgrade,
    State(state): State<AppState>,
    Path(consultation): Path<String>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = foreign_origin(&state, &headers) {
        return refused;
    }
    let signed_in = signed_in_practitioner(&state, &headers).await;
    teleconsult_signaling::upgrade_from(
        ws,
        state.signaling.clone(),
        signed_in,
        Some(consultation),
        peer.ip(),
    )
}

async fn signed_in_practitioner(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<teleconsult_signaling::SignedIn> {
    crate::routes::auth::session_secret(&state.config, headers)?;
    if !own_origin(&state.config, headers) {
        tracing::warn!(
            "a WebSocket handshake with a session cookie from a foreign origin: cookie ignored"
        );
        return None;
    }
    match staff_from_cookie(state, &Method::GET, headers).await {
        Ok(Some(s)) if s.has(StaffRole::Practitioner) => Some(teleconsult_signaling::SignedIn {
            account: s.account.clone(),
            organisation: s.organisation.clone(),
            display_name: s.display_name.clone(),
        }),
        _ => None,
    }
}

/// Whether the request's `Origin` is this server's own: `server.public_url`'s origin when one
/// is configured, else the scheme and the request's `Host`. A missing `Origin` is not ours.
pub fn own_origin(config: &crate::config::Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let public = config.server.public_url.trim_end_matches('/');
    if !public.is_empty() {
        let own = match public.split_once("://") {
            Some((scheme, rest)) => {
                format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest))
            }
            None => return false,
        };
        return origin.eq_ignore_ascii_case(&own);
    }
    let scheme = if crate::routes::auth::secure(config) {
        "https"
    } else {
        "http"
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
}

/// The caller, if a practitioner; 403 otherwise.
fn practitioner(s: StaffSession) -> Result<StaffSession, ApiError> {
    if s.has(StaffRole::Practitioner) {
        Ok(s)
    } else {
        Err(ApiError::forbidden(
            "the workspace needs the practitioner role",
        ))
    }
}

fn owner(s: &StaffSession) -> Owner<'_> {
    Owner {
        organisation: &s.organisation,
        practitioner: Some(&s.account),
    }
}

/// `GET /workspace`: the page for practitioners; a sign-in redirect without a session.
async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match staff_from_cookie(&state, &Method::GET, &headers).await {
        Ok(Some(s)) if s.has(StaffRole::Practitioner) => crate::http::serve_asset("workspace.html"),
        Ok(Some(_)) => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "forbidden: the workspace needs the practitioner role\n",
        )
            .into_response(),
        Ok(None) => redirect_to_login(),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => redirect_to_login(),
        Err(e) => e.into_response(),
    }
}

fn redirect_to_login() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_static("/login#next=/workspace"),
        )],
    )
        .into_response()
}

/// One invitation as the page sees it: the token only while the link can still work.
fn invitation_view(
    state: &AppState,
    c: &ScheduledConsultation,
    i: &Invitation,
    now: i64,
) -> Result<serde_json::Value, ApiError> {
    let live =
        i.revoked_at.is_none() && i.expires > now && c.status == ConsultationStatus::Scheduled;
    let token = if live {
        Some(scheduling::link_token(&state.config, i)?)
    } else {
        None
    };
    Ok(serde_json::json!({
        "id": i.jti,
        "role": i.role,
        "label": i.pseudonym.expose(),
        "not_before": i.not_before,
        "expires": i.expires,
        "revoked": i.revoked_at.is_some(),
        "token": token,
    }))
}

async fn consultation_view(
    state: &AppState,
    c: &ScheduledConsultation,
    now: i64,
) -> Result<serde_json::Value, ApiError> {
    let store = &*state.store;
    let invitations = store
        .invitations(&c.id)
        .await
        .map_err(SchedulingError::from)?;
    let mut seats = Vec::with_capacity(invitations.len());
    for i in &invitations {
        seats.push(invitation_view(state, c, i, now)?);
    }
    // Past consultations: billed time (from the billing summary) and documents shared.
    let summary = store
        .consultation_summary(&c.id)
        .await
        .map_err(SchedulingError::from)?;
    let documents = store
        .list_documents(&c.id)
        .await
        .map_err(SchedulingError::from)?
        .len();
    Ok(serde_json::json!({
        "id": c.id,
        "status": c.status.as_str(),
        "policy": c.policy.as_str(),
        "scheduled_at": c.scheduled_at,
        "created_at": c.created_at,
        "invitations": seats,
        "started_at": summary.as_ref().map(|s| s.start),
        "ended_at": summary.as_ref().and_then(|s| s.end),
        "billable_ms": summary.as_ref().map(|s| s.billable_ms),
        "documents": documents,
    }))
}

/// `GET /api/workspace/consultations`: the caller's consultations, newest first.
async fn list(
    State(state): State<AppState>,
    s: StaffSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = practitioner(s)?;
    let now = now_millis();
    let mut all = state
        .store
        .scheduled_consultations(&s.organisation, Some(&s.account))
        .await
        .map_err(SchedulingError::from)?;
    all.reverse();
    let mut out = Vec::with_capacity(all.len());
    for c in &all {
        out.push(consultation_view(&state, c, now).await?);
    }
    Ok(Json(
        serde_json::json!({ "consultations": out, "now": now }),
    ))
}

/// `GET /api/workspace/consultations/{id}`.
async fn one(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = practitioner(s)?;
    let c = scheduling::owned_consultation(&*state.store, owner(&s), &id).await?;
    Ok(Json(consultation_view(&state, &c, now_millis()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestBody {
    label: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    scheduled_at: Option<i64>,
    patient_label: String,
    #[serde(default)]
    guests: Vec<GuestBody>,
    /// `standard` (default), `recordable` or `end_to_end`.
    #[serde(default)]
    policy: Option<String>,
}

/// `POST /api/workspace/consultations`: 201 with the new consultation and its links.
async fn create(
    State(state): State<AppState>,
    s: StaffSession,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = practitioner(s)?;
    let body = json_body(body)?;
    let guests: Vec<String> = body.guests.into_iter().map(|g| g.label).collect();
    let policy = match body.policy.as_deref() {
        None => Policy::Standard,
        Some(p) => Policy::parse(p).ok_or(SchedulingError::BadPolicy)?,
    };
    let now = now_millis();
    let created = scheduling::create_consultation(
        &*state.store,
        &state.config,
        NewConsultation {
            organisation: &s.organisation,
            practitioner: &s.account,
            scheduled_at: body.scheduled_at,
            patient_label: &body.patient_label,
            guest_labels: &guests,
            policy,
        },
        now,
    )
    .await?;
    tracing::info!(
        organisation = %s.organisation,
        account = %s.account,
        consultation = %created.consultation.id,
        guests = guests.len(),
        "consultation created"
    );
    let view = consultation_view(&state, &created.consultation, now).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `POST /api/workspace/consultations/{id}/cancel`: every link stops working.
async fn cancel(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = practitioner(s)?;
    let revoked =
        scheduling::cancel_consultation(&*state.store, owner(&s), &id, now_millis()).await?;
    // A live call of it ends now for everyone (the links are refused from here on).
    state
        .consultations
        .cancel(&teleconsult_consultation::ConsultationId::from(id.clone()));
    tracing::info!(organisation = %s.organisation, account = %s.account, consultation = %id, revoked, "consultation cancelled");
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

/// The chat and notices of one of the caller's consultations, opened (audited as
/// `chat.read` / `chat.export`: who read it, never what).
async fn chat_records(
    state: &AppState,
    s: &StaffSession,
    id: &str,
    action: &str,
) -> Result<Vec<teleconsult_documents::ChatRecord>, ApiError> {
    let c = scheduling::owned_consultation(&*state.store, owner(s), id).await?;
    let records = state.chat.read(&c.id).await.map_err(|e| match e {
        teleconsult_documents::ChatArchiveError::Store(e) => {
            ApiError::from(SchedulingError::from(e))
        }
        e => ApiError::internal(e),
    })?;
    let event = teleconsult_store::AuditEvent {
        id: format!("a{:032x}", rand::random::<u128>()),
        at: now_millis(),
        actor: s.account.clone(),
        action: action.to_string(),
        consultation: Some(c.id.clone()),
        target: None,
    };
    state
        .store
        .record_audit(&event)
        .await
        .map_err(SchedulingError::from)?;
    Ok(records)
}

/// `GET /api/workspace/consultations/{id}/chat`: the consultation's chat and notices, oldest
/// first, as JSON (the page renders them as text).
async fn chat(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = practitioner(s)?;
    let records = chat_records(&state, &s, &id, "chat.read").await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "consultation": id, "messages": records })),
    )
        .into_response())
}

/// `GET /api/workspace/consultations/{id}/chat/export`: the same as a JSON file to keep with
/// the patient's record (`Content-Disposition: attachment`).
async fn chat_export(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = practitioner(s)?;
    let records = chat_records(&state, &s, &id, "chat.export").await?;
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "consultation": id,
        "exported_at": now_millis(),
        "messages": records,
    }))
    .map_err(ApiError::internal)?;
    // The id is ours (checked above by the ownership lookup): safe in a header.
    let safe: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"chat-{safe}.json\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// `GET /api/workspace/consultations/{id}/invitations/{jti}/qr.svg`: the join link of a live
/// invitation as a QR code (SVG, rendered here by the `qrcode` crate: no script in the page).
/// 404 for a revoked, expired or cancelled seat, or one of another practitioner.
async fn qr_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    s: StaffSession,
    Path((id, jti)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let s = practitioner(s)?;
    let c = scheduling::owned_consultation(&*state.store, owner(&s), &id).await?;
    let now = now_millis();
    let invitation = state
        .store
        .invitation(&jti)
        .await
        .map_err(SchedulingError::from)?
        .filter(|i| {
            i.consultation == c.id
                && i.revoked_at.is_none()
                && i.expires > now
                && c.status == ConsultationStatus::Scheduled
        })
        .ok_or(SchedulingError::NotFound)?;
    let token = scheduling::link_token(&state.config, &invitation)?;
    // The link the page shows: the public URL when configured, else the address the
    // practitioner reached us at (the bound port may differ from the configured one).
    let link = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if state.config.server.public_url.is_empty() && crate::http::sane_host(host) => {
            let scheme = if crate::routes::auth::secure(&state.config) {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{host}/join#token={token}")
        }
        _ => state.config.join_link(&token),
    };
    let code = qrcode::QrCode::new(link.as_bytes()).map_err(ApiError::internal)?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

/// `POST /api/workspace/consultations/{id}/invitations/{jti}/revoke`: one link stops working.
async fn revoke(
    State(state): State<AppState>,
    s: StaffSession,
    Path((id, jti)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let s = practitioner(s)?;
    scheduling::revoke_invitation(&*state.store, owner(&s), &id, &jti, now_millis()).await?;
    // Whoever holds the seat now (in the call or waiting) is removed at once.
    state.consultations.revoke_seat(
        &teleconsult_consultation::ConsultationId::from(id.clone()),
        &teleconsult_consultation::invitation::SeatKey::Invitation(jti.clone()),
    );
    tracing::info!(organisation = %s.organisation, account = %s.account, consultation = %id, invitation = %jti, "link revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn only_the_servers_own_origin_may_use_the_cookie_on_a_websocket() {
        let dev = Config::dev();
        assert!(own_origin(
            &dev,
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")
        ));
        assert!(
            !own_origin(&dev, &headers(None, "127.0.0.1:8080")),
            "no Origin"
        );
        assert!(!own_origin(
            &dev,
            &headers(Some("https://evil.example"), "127.0.0.1:8080")
        ));
        assert!(!own_origin(
            &dev,
            &headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")
        ));
        assert!(!own_origin(&dev, &headers(Some("null"), "127.0.0.1:8080")));
        let mut prod = Config::default();
        prod.server.public_url = "https://consult.example.org/".into();
        assert!(own_origin(
            &prod,
            &headers(Some("https://consult.example.org"), "10.0.0.1")
        ));
        assert!(!own_origin(
            &prod,
            &headers(Some("http://consult.example.org"), "10.0.0.1")
        ));
        assert!(!own_origin(
            &prod,
            &headers(Some("https://10.0.0.1"), "10.0.0.1")
        ));
    }
}
