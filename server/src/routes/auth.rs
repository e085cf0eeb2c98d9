//! Staff sign-in: the session cookie, the CSRF check, the [`StaffSession`] extractor, and the
//! `/api/auth/*` routes (login, session, logout, logout everywhere, TOTP enrolment).
//!
//! - The session secret travels only in a cookie: `HttpOnly`, `SameSite=Strict`, `Path=/`, and
//!   `Secure` with the `__Host-` prefix whenever the server is reached over HTTPS (always outside
//!   `--dev`). No `Max-Age`: the browser forgets it when closed; the server enforces the idle
//!   and absolute lifetimes.
//! - Every state-changing request (any method but GET/HEAD/OPTIONS) authenticated by the cookie
//!   must carry `X-CSRF-Token`: the session's CSRF token (an HMAC keyed by the session secret,
//!   handed to the page by `POST /api/auth/login` and `GET /api/auth/session`). It is checked
//!   before the session is looked up, so a forged request does not even count as activity.
//! - The login itself has no session yet: it takes JSON only (a cross-site form cannot send
//!   `application/json` without a preflight we never grant) and refuses a foreign `Origin`.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use teleconsult_accounts::{AccountError, LoginError, SessionError, Staff, now_millis, secrets};

/// The session cookie's name over HTTPS (`__Host-`: Secure, no Domain, Path=/ enforced by the
/// browser).
pub const SECURE_COOKIE: &str = "__Host-teleconsult_session";
/// Its name over plain HTTP (`--dev` only; browsers refuse `__Host-` without Secure).
pub const DEV_COOKIE: &str = "teleconsult_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The auth routes, to merge into the main router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/session", get(session))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/logout-everywhere", post(logout_everywhere))
        .route("/api/auth/totp", post(begin_totp))
        .route("/api/auth/totp/confirm", post(confirm_totp))
}

/// Whether browsers reach this server over HTTPS (then the cookie is `Secure`).
pub fn secure(config: &crate::config::Config) -> bool {
    config.server.tls || config.server.public_url.starts_with("https://")
}

fn cookie_name(config: &crate::config::Config) -> &'static str {
    if secure(config) {
        SECURE_COOKIE
    } else {
        DEV_COOKIE
    }
}

/// The session secret in the request's `Cookie` header(s), if any.
pub fn session_secret(config: &crate::config::Config, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(config);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

fn session_cookie(config: &crate::config::Config, value: &str, remove: bool) -> HeaderValue {
    let mut c = cookie::Cookie::build((cookie_name(config), value.to_string()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure(config));
    if remove {
        c = c.max_age(cookie::time::Duration::ZERO);
    }
    // A base64url secret and fixed attributes: always a valid header value.
    HeaderValue::from_str(&c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
}

fn not_signed_in(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "not_signed_in", message)
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::Invalid => not_signed_in("not signed in"),
        SessionError::Expired => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the session has expired; please sign in again",
        ),
        SessionError::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e.to_string(),
        ),
        SessionError::Internal => ApiError::internal("session lookup failed"),
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        let status = match &e {
            AccountError::NotFound => StatusCode::NOT_FOUND,
            AccountError::EmailTaken
            | AccountError::TotpAlreadyEnabled
            | AccountError::TotpNotEnrolled
            | AccountError::TotpUnavailable => StatusCode::CONFLICT,
            AccountError::InvalidEmail
            | AccountError::InvalidDisplayName
            | AccountError::InvalidOrganisationName
            | AccountError::WeakPassword(_)
            | AccountError::NoRole
            | AccountError::InvalidCode => StatusCode::BAD_REQUEST,
            AccountError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AccountError::Internal => return ApiError::internal("account operation failed"),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// A JSON body, or 400 `bad_request` naming what is wrong with it.
pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request("bad_request", e.body_text()))
}

/// The signed-in staff member of a request: organisation, account, roles. The one extractor
/// every staff route uses; it refuses (401) a request without a live session and (403) a
/// state-changing request without the session's CSRF token.
#[derive(Clone, Debug)]
pub struct StaffSession {
    pub staff: Staff,
    /// The session's CSRF token (for the page to send back).
    pub csrf_token: String,
}

impl std::ops::Deref for StaffSession {
    type Target = Staff;
    fn deref(&self) -> &Staff {
        &self.staff
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Authenticate a request from its cookie: `Ok(None)` when it carries no session cookie.
pub async fn staff_from_cookie(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<StaffSession>, ApiError> {
    let Some(secret) = session_secret(&state.config, headers) else {
        return Ok(None);
    };
    if !is_safe(method) {
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_missing",
                    "this request needs the session's X-CSRF-Token header",
                )
            })?;
        if !secrets::csrf_matches(&secret, presented) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_invalid",
                "the X-CSRF-Token header does not belong to this session",
            ));
        }
    }
    let staff = state
        .accounts
        .authenticate(&secret, now_millis())
        .await
        .map_err(session_error)?;
    Ok(Some(StaffSession {
        staff,
        csrf_token: secrets::csrf_token(&secret),
    }))
}

impl FromRequestParts<AppState> for StaffSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        staff_from_cookie(state, &parts.method, &parts.headers)
            .await?
            .ok_or_else(|| not_signed_in("not signed in"))
    }
}

/// What the pages learn about the signed-in person.
fn session_view(state: &AppState, s: &StaffSession) -> serde_json::Value {
    serde_json::json!({
        "organisation": s.organisation,
        "account": s.account,
        "display_name": s.display_name,
        "email": s.email,
        "roles": s.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "totp": s.totp,
        "csrf_token": s.csrf_token,
        "idle_timeout_secs": state.accounts.config().idle_timeout_secs,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    #[serde(default)]
    code: Option<String>,
}

/// Refuse a request whose `Origin` is another site's (browsers send it on every POST).
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(ApiError::forbidden("cross-site sign-in refused")),
    }
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let body = json_body(body)?;
    let result = state
        .accounts
        .login(
            &body.email,
            &body.password,
            body.code.as_deref(),
            now_millis(),
        )
        .await;
    let session = match result {
        Ok(s) => s,
        Err(e) => {
            let api = match &e {
                LoginError::InvalidCredentials => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    e.to_string(),
                ),
                LoginError::TotpRequired => {
                    ApiError::new(StatusCode::UNAUTHORIZED, "totp_required", e.to_string())
                }
                LoginError::Locked { retry_after_secs } => {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "locked", e.to_string())
                        .with_header(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs))
                }
                LoginError::Unavailable => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    e.to_string(),
                ),
                LoginError::Internal => ApiError::internal("login failed"),
            };
            return Err(api);
        }
    };
    let view = StaffSession {
        csrf_token: secrets::csrf_token(&session.secret),
        staff: session.staff,
    };
    let cookie = session_cookie(&state.config, &session.secret, false);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(session_view(&state, &view)),
    )
        .into_response())
}

async fn session(State(state): State<AppState>, s: StaffSession) -> Json<serde_json::Value> {
    Json(session_view(&state, &s))
}

async fn logout(State(state): State<AppState>, s: StaffSession) -> Result<Response, ApiError> {
    state.accounts.logout(&s).await?;
    tracing::info!(organisation = %s.organisation, account = %s.account, "signed out");
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session_cookie(&state.config, "", true))],
    )
        .into_response())
}

async fn logout_everywhere(
    State(state): State<AppState>,
    s: StaffSession,
) -> Result<Response, ApiError> {
    let n = state.accounts.logout_everywhere(&s).await?;
    Ok((
        [(header::SET_COOKIE, session_cookie(&state.config, "", true))],
        Json(serde_json::json!({ "sessions_ended": n })),
    )
        .into_response())
}

async fn begin_totp(
    State(state): State<AppState>,
    s: StaffSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let e = state.accounts.begin_totp(&s).await?;
    Ok(Json(serde_json::json!({
        "secret": e.secret_base32,
        "otpauth_uri": e.otpauth_uri,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

async fn confirm_totp(
    State(state): State<AppState>,
    s: StaffSession,
    body: Result<Json<CodeBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let body = json_body(body)?;
    state
        .accounts
        .confirm_totp(&s, &body.code, now_millis())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_cookie_is_host_prefixed_and_secure_over_https_only() {
        let dev = Config::dev();
        let c = session_cookie(&dev, "abc", false);
        let c = c.to_str().expect("ascii");
        assert!(c.starts_with("teleconsult_session=abc"), "{c}");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{part} in {c}");
        }
        assert!(!c.contains("Secure"), "{c}");
        let mut prod = Config::default();
        prod.server.tls = true;
        let c = session_cookie(&prod, "abc", false);
        let c = c.to_str().expect("ascii");
        assert!(c.starts_with("__Host-teleconsult_session=abc"), "{c}");
        assert!(c.contains("Secure") && c.contains("HttpOnly"), "{c}");
        assert!(!c.contains("Domain"), "{c}");
        let gone = session_cookie(&prod, "", true);
        assert!(gone.to_str().expect("ascii").contains("Max-Age=0"));
    }

    #[test]
    fn the_secret_is_read_from_the_right_cookie_only() {
        let dev = Config::dev();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; teleconsult_session=s3cret; b=2"),
        );
        assert_eq!(session_secret(&dev, &h).as_deref(), Some("s3cret"));
        let mut prod = Config::default();
        prod.server.tls = true;
        assert_eq!(session_secret(&prod, &h), None, "the dev name over HTTPS");
        assert_eq!(session_secret(&dev, &HeaderMap::new()), None);
    }

    #[test]
    fn foreign_origins_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok(), "no Origin (not a browser)");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(same_origin(&h).expect_err("refused").status(), 403);
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }
}
