//! The REST API v1 for booking and practice software (`/api/v1`): consultations with their
//! invitation links, authenticated by an organisation's API keys ([`auth`]). Every object lookup
//! names the key's organisation: another organisation's consultation is `404 not_found`, never
//! `403`. Errors are `{code, message}` ([`ApiError`]); a malformed, oversized or unknown-field
//! body is refused naming what is wrong. The OpenAPI 3.1 document is generated from the types
//! and handlers here ([`ApiDoc`]) and served at `/api/v1/openapi.json`.

pub mod auth;

use crate::AppState;
use crate::error::ApiError;
use crate::scheduling::{self, NewConsultation, Owner, SchedulingError};
use auth::{ApiClient, Scope};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use teleconsult_accounts::{StaffRole, now_millis, roles_of};
use teleconsult_consultation::invitation::MAX_LABEL_LEN;
use teleconsult_consultation::{ConsultationId, Role};
use teleconsult_store::{
    ConsultationStatus, Invitation, Policy, ScheduledConsultation, StoreError,
};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Largest accepted request body (bytes): a consultation with its guests is well under 2 KiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most guests one consultation may be created with (the scheduling rule's).
pub const MAX_GUESTS: usize = scheduling::MAX_GUESTS;
/// Largest page of `GET /api/v1/consultations`.
pub const MAX_PAGE: u32 = 100;
const DEFAULT_PAGE: u32 = 50;

/// Every `/api/v1` route: path template, method, handler. [`routes`] is built from it, and the
/// OpenAPI test checks each entry is documented.
fn table() -> Vec<(&'static str, Method, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/openapi.json", Method::GET, get(openapi_json)),
        (
            "/api/v1/practitioners",
            Method::GET,
            get(list_practitioners),
        ),
        (
            "/api/v1/consultations",
            Method::POST,
            post(create_consultation),
        ),
        (
            "/api/v1/consultations",
            Method::GET,
            get(list_consultations),
        ),
        (
            "/api/v1/consultations/{id}",
            Method::GET,
            get(get_consultation),
        ),
        (
            "/api/v1/consultations/{id}",
            Method::DELETE,
            delete(cancel_consultation),
        ),
        (
            "/api/v1/consultations/{id}/invitations",
            Method::POST,
            post(create_invitation),
        ),
        (
            "/api/v1/consultations/{id}/invitations/{jti}",
            Method::DELETE,
            delete(revoke_invitation),
        ),
    ]
}

/// The `(path template, method)` of every `/api/v1` route.
pub fn route_list() -> Vec<(&'static str, Method)> {
    table().into_iter().map(|(p, m, _)| (p, m)).collect()
}

pub fn routes() -> Router<AppState> {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (path, _, handler) in table() {
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(handler),
            None => by_path.push((path, handler)),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(path, handler))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

// ---------------------------------------------------------------------------------------------
// Wire types

/// Every error: a stable machine-readable code and a sentence for people.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `invalid_field`, `not_found`, `invalid_api_key`, `insufficient_scope`.
    pub code: String,
    pub message: String,
}

/// One seat to invite.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatRequest {
    /// The pseudonym shown in the call (1–200 bytes). It need not be a real name.
    pub label: String,
}

/// `POST /api/v1/consultations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConsultation {
    /// The practitioner's account id (`acc_…`) in the key's organisation.
    pub practitioner: String,
    /// When it is planned: RFC 3339 in UTC, e.g. `2026-12-01T14:30:00Z`.
    pub scheduled_at: String,
    /// The patient's seat.
    pub patient: SeatRequest,
    /// Guests (interpreter, family member), at most 8.
    #[serde(default)]
    pub guests: Vec<SeatRequest>,
    /// What may happen to its media, fixed now (`docs/compliance.md`); default `standard`.
    #[serde(default)]
    pub policy: PolicyView,
}

/// A consultation's media policy (`docs/compliance.md`).
#[derive(Clone, Copy, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyView {
    /// Relayed, never recorded.
    #[default]
    Standard,
    /// May be recorded, each participant only with their consent.
    Recordable,
    /// Media encrypted between the browsers; recording refused.
    EndToEnd,
}

impl From<PolicyView> for Policy {
    fn from(p: PolicyView) -> Policy {
        match p {
            PolicyView::Standard => Policy::Standard,
            PolicyView::Recordable => Policy::Recordable,
            PolicyView::EndToEnd => Policy::EndToEnd,
        }
    }
}

impl From<Policy> for PolicyView {
    fn from(p: Policy) -> PolicyView {
        match p {
            Policy::Standard => PolicyView::Standard,
            Policy::Recordable => PolicyView::Recordable,
            Policy::EndToEnd => PolicyView::EndToEnd,
        }
    }
}

/// The seat role of an invitation.
#[derive(Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeatRole {
    Patient,
    Guest,
}

/// `POST /api/v1/consultations/{id}/invitations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    pub role: SeatRole,
    /// The pseudonym shown in the call (1–200 bytes).
    pub label: String,
}

/// Where a consultation stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Scheduled,
    Cancelled,
    Ended,
}

/// One invitation (one seat, one link).
#[derive(Serialize, ToSchema)]
pub struct InvitationView {
    /// The invitation id (the link's `jti`).
    pub jti: String,
    pub role: SeatRole,
    pub label: String,
    /// The link is valid from (RFC 3339, UTC).
    pub not_before: String,
    /// The link is valid until (RFC 3339, UTC).
    pub expires: String,
    /// When it was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The join link to send to this person: only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// A consultation and its invitations.
#[derive(Serialize, ToSchema)]
pub struct ConsultationView {
    pub id: String,
    /// The practitioner's account id.
    pub practitioner: String,
    /// RFC 3339, UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    pub status: Status,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub invitations: Vec<InvitationView>,
    pub policy: PolicyView,
}

/// A practitioner a consultation can be booked for.
#[derive(Serialize, ToSchema)]
pub struct PractitionerView {
    /// The account id to give as `practitioner`.
    pub id: String,
    pub display_name: String,
}

/// The organisation's active practitioners.
#[derive(Serialize, ToSchema)]
pub struct PractitionerList {
    pub practitioners: Vec<PractitionerView>,
}

/// A page of consultations.
#[derive(Serialize, ToSchema)]
pub struct ConsultationPage {
    pub consultations: Vec<ConsultationView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/consultations`: consultations scheduled in `[from, to)`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Scheduled at or after (RFC 3339, UTC).
    pub from: String,
    /// Scheduled before (RFC 3339, UTC).
    pub to: String,
    /// Page size, 1–100 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// OpenAPI

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Teleconsult API",
        version = "1",
        description = "Consultations and their join links for booking and practice software. \
                       Authenticate with an organisation's API key: `Authorization: Bearer tc_<id>_<secret>`."
    ),
    paths(
        create_consultation,
        list_consultations,
        get_consultation,
        cancel_consultation,
        create_invitation,
        revoke_invitation,
        list_practitioners,
        openapi_json
    ),
    components(schemas(
        ErrorBody,
        CreateConsultation,
        SeatRequest,
        CreateInvitation,
        SeatRole,
        Status,
        PolicyView,
        InvitationView,
        ConsultationView,
        ConsultationPage,
        PractitionerView,
        PractitionerList
    )),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tc_<id>_<secret>")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Errors and parsing

/// Storage errors as the client sees them.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => not_found(),
        StoreError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is unavailable; retry later",
        ),
        e => ApiError::internal(e),
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such consultation")
}

fn invalid_field(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {why}"))
}

/// A JSON body, or a refusal naming what is wrong: 400 `malformed_json` (not JSON),
/// 400 `invalid_field` (a missing, unknown or mistyped field, named), 413 `too_large`,
/// 415 `unsupported_media_type`.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match b {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(
            "invalid_field",
            // serde's sentence names the field: "missing field `patient`", "unknown field `x`".
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
                .to_string(),
        )),
        Err(JsonRejection::JsonSyntaxError(e)) => {
            Err(ApiError::bad_request("malformed_json", e.body_text()))
        }
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        )),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request("bad_request", e.body_text())),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| {
        ApiError::bad_request(
            "invalid_field",
            e.body_text()
                .trim_start_matches("Failed to deserialize query string: ")
                .to_string(),
        )
    })
}

/// Path parameters; an impossible id is simply not found.
fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v).map_err(|_| not_found())
}

/// Milliseconds since the epoch from RFC 3339 in UTC (`…Z`).
fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    let t = humantime::parse_rfc3339(s)
        .map_err(|_| invalid_field(field, "an RFC 3339 time in UTC, e.g. 2026-12-01T14:30:00Z"))?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| invalid_field(field, "before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| invalid_field(field, "too far in the future"))
}

fn format_time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The scheduling rules' refusals (`crate::scheduling`, shared with the workspace page) in
/// this API's terms: an invalid field is named as the request spells it.
fn scheduling_error(e: SchedulingError) -> ApiError {
    match e {
        SchedulingError::NotFound => not_found(),
        SchedulingError::BadPatientLabel => invalid_field(
            "patient.label",
            format!("1 to {} bytes, not blank", MAX_LABEL_LEN),
        ),
        SchedulingError::BadGuestLabel(i) => invalid_field(
            &format!("guests[{i}].label"),
            format!("1 to {} bytes, not blank", MAX_LABEL_LEN),
        ),
        SchedulingError::TooManyGuests => invalid_field("guests", format!("at most {MAX_GUESTS}")),
        SchedulingError::BadScheduledAt => {
            invalid_field("scheduled_at", "a time between 2020 and 2100")
        }
        SchedulingError::BadPolicy => invalid_field("policy", "standard, recordable or end_to_end"),
        SchedulingError::NotScheduled(status) => ApiError::new(
            StatusCode::CONFLICT,
            "not_scheduled",
            format!("the consultation is {status}"),
        ),
        SchedulingError::Keyring(e) => ApiError::internal(e),
        SchedulingError::Store(e) => store_error(e),
    }
}

/// The caller's organisation, every practitioner's consultations (an API key is the
/// organisation's, not one practitioner's).
fn owner(client: &ApiClient) -> Owner<'_> {
    Owner {
        organisation: &client.organisation,
        practitioner: None,
    }
}

fn invitation_view(i: &Invitation, link: Option<String>) -> InvitationView {
    InvitationView {
        jti: i.jti.clone(),
        role: if i.role == "guest" {
            SeatRole::Guest
        } else {
            SeatRole::Patient
        },
        label: i.pseudonym.expose().to_string(),
        not_before: format_time(i.not_before),
        expires: format_time(i.expires),
        revoked_at: i.revoked_at.map(format_time),
        link,
    }
}

fn consultation_view(
    c: &ScheduledConsultation,
    invitations: Vec<InvitationView>,
) -> ConsultationView {
    ConsultationView {
        id: c.id.clone(),
        practitioner: c.practitioner.clone(),
        scheduled_at: c.scheduled_at.map(format_time),
        status: match c.status {
            ConsultationStatus::Scheduled => Status::Scheduled,
            ConsultationStatus::Cancelled => Status::Cancelled,
            ConsultationStatus::Ended => Status::Ended,
        },
        created_at: format_time(c.created_at),
        invitations,
        policy: c.policy.into(),
    }
}

/// Consultation `id` of the caller's organisation, or 404.
async fn owned(
    state: &AppState,
    client: &ApiClient,
    id: &str,
) -> Result<ScheduledConsultation, ApiError> {
    scheduling::owned_consultation(&*state.store, owner(client), id)
        .await
        .map_err(scheduling_error)
}

fn issued_view(state: &AppState, issued: &scheduling::IssuedInvitation) -> InvitationView {
    invitation_view(
        &issued.invitation,
        Some(state.config.join_link(&issued.token)),
    )
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Create a consultation with a patient's invitation and any guests'; the answer carries each
/// person's join link (shown only here).
#[utoipa::path(post, path = "/api/v1/consultations", tag = "consultations",
    request_body = CreateConsultation,
    security(("api_key" = ["consultations:write"])),
    responses(
        (status = 201, description = "Created, with every link", body = ConsultationView),
        (status = 400, description = "Malformed body or invalid field (named)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 429, description = "Too many requests for this key; retry after Retry-After seconds", body = ErrorBody),
        (status = 403, description = "The key lacks consultations:write", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry later", body = ErrorBody),
    ))]
async fn create_consultation(
    State(state): State<AppState>,
    client: ApiClient,
    b: Result<Json<CreateConsultation>, JsonRejection>,
) -> Result<Response, ApiError> {
    client.require(Scope::ConsultationsWrite)?;
    let req = body(b)?;
    let scheduled_at = parse_time("scheduled_at", &req.scheduled_at)?;
    let practitioner = match state
        .accounts
        .account(&client.organisation, &req.practitioner)
        .await
    {
        Ok(a) if !a.disabled && roles_of(&a).contains(&StaffRole::Practitioner) => a,
        Ok(_) | Err(teleconsult_accounts::AccountError::NotFound) => {
            return Err(invalid_field(
                "practitioner",
                "no active practitioner account with this id in your organisation",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let guests: Vec<String> = req.guests.iter().map(|g| g.label.clone()).collect();
    let created = scheduling::create_consultation(
        &*state.store,
        &state.config,
        NewConsultation {
            organisation: &client.organisation,
            practitioner: &practitioner.id,
            scheduled_at: Some(scheduled_at),
            patient_label: &req.patient.label,
            guest_labels: &guests,
            policy: req.policy.into(),
        },
        now_millis(),
    )
    .await
    .map_err(scheduling_error)?;
    let c = &created.consultation;
    let invitations = created
        .invitations
        .iter()
        .map(|i| issued_view(&state, i))
        .collect();
    state
        .billing
        .audit("consultation.create", &client.actor(), Some(&c.id), None);
    tracing::info!(key = %client.key_id, consultation = %c.id, guests = req.guests.len(), "consultation created through the API");
    Ok((StatusCode::CREATED, Json(consultation_view(c, invitations))).into_response())
}

/// The active practitioners of the key's organisation (whom consultations can be booked for).
#[utoipa::path(get, path = "/api/v1/practitioners", tag = "consultations",
    security(("api_key" = ["consultations:read"])),
    responses(
        (status = 200, description = "The organisation's active practitioners", body = PractitionerList),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 429, description = "Too many requests for this key; retry after Retry-After seconds", body = ErrorBody),
        (status = 403, description = "The key lacks consultations:read", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry later", body = ErrorBody),
    ))]
async fn list_practitioners(
    State(state): State<AppState>,
    client: ApiClient,
) -> Result<Json<PractitionerList>, ApiError> {
    client.require(Scope::ConsultationsRead)?;
    let accounts = state.accounts.accounts(&client.organisation).await?;
    Ok(Json(PractitionerList {
        practitioners: accounts
            .iter()
            .filter(|a| !a.disabled && roles_of(a).contains(&StaffRole::Practitioner))
            .map(|a| PractitionerView {
                id: a.id.clone(),
                display_name: a.display_name.clone(),
            })
            .collect(),
    }))
}

/// Consultations of the key's organisation scheduled in `[from, to)`, by time, paged.
#[utoipa::path(get, path = "/api/v1/consultations", tag = "consultations",
    params(ListQuery),
    security(("api_key" = ["consultations:read"])),
    responses(
        (status = 200, description = "A page of consultations (without links)", body = ConsultationPage),
        (status = 400, description = "Invalid query parameter (named)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 429, description = "Too many requests for this key; retry after Retry-After seconds", body = ErrorBody),
        (status = 403, description = "The key lacks consultations:read", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry later", body = ErrorBody),
    ))]
async fn list_consultations(
    State(state): State<AppState>,
    client: ApiClient,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConsultationPage>, ApiError> {
    client.require(Scope::ConsultationsRead)?;
    let q = query(q)?;
    let from = parse_time("from", &q.from)?;
    let to = parse_time("to", &q.to)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(invalid_field("limit", format!("1 to {MAX_PAGE}")));
    }
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(
            c.split_once('.')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| invalid_field("cursor", "not a cursor this API returned"))?,
        ),
    };
    let found = state
        .store
        .consultations_scheduled_between(&client.organisation, from, to, after, limit)
        .await
        .map_err(store_error)?;
    let next_cursor = (found.len() == limit as usize)
        .then(|| found.last())
        .flatten()
        .map(|c| format!("{}.{}", c.scheduled_at.unwrap_or(0), c.id));
    let mut consultations = Vec::with_capacity(found.len());
    for c in &found {
        let invitations = state.store.invitations(&c.id).await.map_err(store_error)?;
        consultations.push(consultation_view(
            c,
            invitations
                .iter()
                .map(|i| invitation_view(i, None))
                .collect(),
        ));
    }
    Ok(Json(ConsultationPage {
        consultations,
        next_cursor,
    }))
}

/// One consultation of the key's organisation, with its invitations (without links).
#[utoipa::path(get, path = "/api/v1/consultations/{id}", tag = "consultations",
    params(("id" = String, Path, description = "Consultation id")),
    security(("api_key" = ["consultations:read"])),
    responses(
        (status = 200, description = "The consultation", body = ConsultationView),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 429, description = "Too many requests for this key; retry after Retry-After seconds", body = ErrorBody),
        (status = 403, description = "The key lacks consultations:read", body = ErrorBody),
        (status = 404, description = "No such consultation in the key's organisation", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry later", body = ErrorBody),
    ))]
async fn get_consultation(
    State(state): State<AppState>,
    client: ApiClient,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ConsultationView>, ApiError> {
    client.require(Scope::ConsultationsRead)?;
    let id = path(id)?;
    let c = owned(&state, &client, &id).await?;
    let invitations = state.store.invitations(&c.id).await.map_err(store_error)?;
    Ok(Json(consultation_view(
        &c,
        invitations
            .iter()
            .map(|i| invitation_view(i, None))
            .collect(),
    )))
}

/// Cancel a consultation: every link of it is refused from now on (`cancelled`), and a call in
/// progress on this server ends. Cancelling twice is not an error.
#[utoipa::path(delete, path = "/api/v1/consultations/{id}", tag = "consultations",
    params(("id" = String, Path, description = "Consultation id")),
    security(("api_key" = ["consultations:write"])),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 429, description = "Too many requests for this key; retry after Retry-After seconds", body = ErrorBody),
        (status = 403, description = "The key lacks consultations:write", body = ErrorBody),
        (status = 404, description = "No such consultation in the key's organisation", body = ErrorBody),
        (status = 409, description = "The consultation has already ended", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry later", body = ErrorBody),
    ))]
async fn cancel_consultation(
    State(state): State<AppState>,
    client: ApiClient,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    client.require(Scope::ConsultationsWrite)?;
    let id = path(id)?;
    let revoked =
        match scheduling::cancel_consultation(&*state.store, owner(&client), &id, now_millis())
            .await
        {
            Ok(n) => n,
            Err(SchedulingError::NotScheduled(_)) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "consultation_ended",
                    "the consultation has already ended",
                ));
            }
            Err(e) => return Err(scheduling_error(e)),
        };
    // A live call of it ends now for everyone (the links are refused from here on).
    state.consultations.cancel(&ConsultationId::new(id.clone()));
    state
        .billing
        .audit("consultation.cancel", &client.actor(), Some(&id), None);
    tracing::info!(key = %client.key_id, consultation = %id, revoked, "consultation cancelled through the API");
    Ok(StatusCode::NO_CONTENT)
}

/// A new invitation (one more seat, one more link) of a scheduled consultation.
#[utoipa::path(post, path = "/api/v1/consultations/{id}/invitations", tag = "consultations",
    params(("id" = String, Path, description = "Consultation id")),
    request_body = CreateInvitation,
    security(("api_key" = ["consultations:write"])),
    responses(
        (status = 201, description = "Created, with its link", body = InvitationView),
        (status = 400, description = "Malformed body or invalid field (named)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 429, description = "Too many requests for this key; retry after Retry-After seconds", body = ErrorBody),
        (status = 403, description = "The key lacks consultations:write", body = ErrorBody),
        (status = 404, description = "No such consultation in the key's organisation", body = ErrorBody),
        (status = 409, description = "The consultation is cancelled or ended", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry later", body = ErrorBody),
    ))]
async fn create_invitation(
    State(state): State<AppState>,
    client: ApiClient,
    id: Result<Path<String>, PathRejection>,
    b: Result<Json<CreateInvitation>, JsonRejection>,
) -> Result<Response, ApiError> {
    client.require(Scope::ConsultationsWrite)?;
    let id = path(id)?;
    let req = body(b)?;
    let role = match req.role {
        SeatRole::Patient => Role::Patient,
        SeatRole::Guest => Role::Guest,
    };
    let issued = scheduling::add_invitation(
        &*state.store,
        &state.config,
        owner(&client),
        &id,
        role,
        &req.label,
        now_millis(),
    )
    .await
    .map_err(|e| match e {
        SchedulingError::BadPatientLabel | SchedulingError::BadGuestLabel(_) => {
            invalid_field("label", format!("1 to {} bytes, not blank", MAX_LABEL_LEN))
        }
        e => scheduling_error(e),
    })?;
    let view = issued_view(&state, &issued);
    state.billing.audit(
        "invitation.create",
        &client.actor(),
        Some(&id),
        Some(&view.jti),
    );
    tracing::info!(key = %client.key_id, consultation = %id, jti = %view.jti, "invitation created through the API");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Revoke one invitation: its link is refused from now on (`revoked`). Revoking twice is not
/// an error.
#[utoipa::path(delete, path = "/api/v1/consultations/{id}/invitations/{jti}", tag = "consultations",
    params(
        ("id" = String, Path, description = "Consultation id"),
        ("jti" = String, Path, description = "Invitation id"),
    ),
    security(("api_key" = ["consultations:write"])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No API key, or an unknown or revoked one", body = ErrorBody),
        (status = 429, description = "Too many requests for this key; retry after Retry-After seconds", body = ErrorBody),
        (status = 403, description = "The key lacks consultations:write", body = ErrorBody),
        (status = 404, description = "No such consultation or invitation in the key's organisation", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry later", body = ErrorBody),
    ))]
async fn revoke_invitation(
    State(state): State<AppState>,
    client: ApiClient,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    client.require(Scope::ConsultationsWrite)?;
    let (id, jti) = path(ids)?;
    scheduling::revoke_invitation(&*state.store, owner(&client), &id, &jti, now_millis())
        .await
        .map_err(|e| match e {
            SchedulingError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such consultation or invitation",
            ),
            e => scheduling_error(e),
        })?;
    // Whoever holds the seat now (in the call or waiting) is removed at once.
    state.consultations.revoke_seat(
        &ConsultationId::new(id.clone()),
        &teleconsult_consultation::invitation::SeatKey::Invitation(jti.clone()),
    );
    state
        .billing
        .audit("invitation.revoke", &client.actor(), Some(&id), Some(&jti));
    tracing::info!(key = %client.key_id, consultation = %id, %jti, "invitation revoked through the API");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_utc() {
        let ms = parse_time("t", "2026-12-01T14:30:00Z").expect("parses");
        assert_eq!(format_time(ms), "2026-12-01T14:30:00.000Z");
        assert_eq!(
            parse_time("t", "2026-12-01T14:30:00.250Z").expect("ms"),
            ms + 250
        );
        let e = parse_time("scheduled_at", "tomorrow").expect_err("refused");
        assert_eq!(e.code(), "invalid_field");
        assert!(e.message().starts_with("scheduled_at:"), "{}", e.message());
    }

    #[test]
    fn every_route_is_in_the_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, method) in route_list() {
            let m = method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][path][&m].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
}
