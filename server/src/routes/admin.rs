//! The admin page (`/admin`) and `/api/admin/*`: an organisation's admins list, create, disable
//! and enable accounts, and reset passwords — of their own organisation only. Without the
//! `admin` role: 403. An account of another organisation is 404, never 403 (its existence is not
//! revealed). Passwords for new accounts and resets are generated here and shown once.

use crate::AppState;
use crate::error::ApiError;
use crate::routes::auth::{StaffSession, json_body, staff_from_cookie};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use teleconsult_accounts::{Account, NewAccount, StaffRole, now_millis, roles_of, secrets};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route("/api/admin/accounts", get(list).post(create))
        .route("/api/admin/accounts/{id}/disable", post(disable))
        .route("/api/admin/accounts/{id}/enable", post(enable))
        .route(
            "/api/admin/accounts/{id}/reset-password",
            post(reset_password),
        )
}

/// The caller, if an admin; 403 otherwise.
fn admin(s: StaffSession) -> Result<StaffSession, ApiError> {
    if s.has(StaffRole::Admin) {
        Ok(s)
    } else {
        Err(ApiError::forbidden(
            "account administration needs the admin role",
        ))
    }
}

/// `GET /admin`: the page for admins; a sign-in redirect without a session; 403 for others.
async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match staff_from_cookie(&state, &Method::GET, &headers).await {
        Ok(Some(s)) if s.has(StaffRole::Admin) => crate::http::serve_asset("admin.html"),
        Ok(Some(_)) => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "forbidden: account administration needs the admin role\n",
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
            HeaderValue::from_static("/login#next=/admin"),
        )],
    )
        .into_response()
}

/// What the admin page shows of an account (never its hash or TOTP secret).
fn view(a: &Account) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "email": a.email,
        "display_name": a.display_name,
        "roles": roles_of(a).iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "disabled": a.disabled,
        "totp": a.totp.as_ref().is_some_and(|t| t.confirmed),
        "created_at": a.created_at,
    })
}

async fn list(
    State(state): State<AppState>,
    s: StaffSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = admin(s)?;
    let accounts = state.accounts.accounts(&s.organisation).await?;
    let organisation = state.accounts.organisation(&s.organisation).await?;
    Ok(Json(serde_json::json!({
        "organisation": { "id": organisation.id, "name": organisation.name },
        "accounts": accounts.iter().map(view).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    email: String,
    display_name: String,
    roles: Vec<String>,
}

async fn create(
    State(state): State<AppState>,
    s: StaffSession,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = admin(s)?;
    let body = json_body(body)?;
    let roles = body
        .roles
        .iter()
        .map(|r| r.parse::<StaffRole>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("bad_role", e))?;
    let password = secrets::generate_password();
    let account = state
        .accounts
        .create_account(
            &s.organisation,
            NewAccount {
                email: body.email,
                display_name: body.display_name,
                roles,
                password: password.clone(),
            },
            now_millis(),
        )
        .await?;
    state.billing.audit(
        "account.create",
        &format!("account:{}", s.account),
        None,
        Some(&account.id),
    );
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "account": view(&account), "password": password })),
    )
        .into_response())
}

async fn set_disabled(
    state: AppState,
    s: StaffSession,
    id: String,
    disabled: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = admin(s)?;
    if disabled && id == s.account {
        return Err(ApiError::bad_request(
            "cannot_disable_self",
            "an admin cannot disable their own account",
        ));
    }
    let account = state
        .accounts
        .set_disabled(&s.organisation, &id, disabled)
        .await?;
    let action = if disabled {
        "account.disable"
    } else {
        "account.enable"
    };
    state
        .billing
        .audit(action, &format!("account:{}", s.account), None, Some(&id));
    Ok(Json(view(&account)))
}

async fn disable(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_disabled(state, s, id, true).await
}

async fn enable(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_disabled(state, s, id, false).await
}

async fn reset_password(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = admin(s)?;
    let password = secrets::generate_password();
    state
        .accounts
        .set_password(&s.organisation, &id, &password)
        .await?;
    state.billing.audit(
        "account.reset_password",
        &format!("account:{}", s.account),
        None,
        Some(&id),
    );
    Ok(Json(serde_json::json!({ "password": password })))
}
