//! API-key management for an organisation's admins (`/api/admin/api-keys`): list, create (the
//! key is shown once, in the answer), revoke. Keys of another organisation are 404. The keys
//! authenticate `/api/v1` (`routes/api_v1`).

use crate::AppState;
use crate::error::ApiError;
use crate::routes::api_v1::auth::{self, Scope};
use crate::routes::auth::{StaffSession, json_body};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use teleconsult_accounts::{StaffRole, now_millis};
use teleconsult_store::{ApiKey, StoreError};

/// Longest key name (bytes).
pub const MAX_NAME_LEN: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/api-keys", get(list).post(create))
        .route("/api/admin/api-keys/{id}/revoke", post(revoke))
}

fn admin(s: StaffSession) -> Result<StaffSession, ApiError> {
    if s.has(StaffRole::Admin) {
        Ok(s)
    } else {
        Err(ApiError::forbidden(
            "managing API keys needs the admin role",
        ))
    }
}

fn store_err(e: StoreError) -> ApiError {
    crate::routes::api_v1::store_error(e)
}

/// What the admin page shows of a key (never its hash).
fn view(k: &ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "name": k.name,
        "scopes": k.scopes,
        "created_by": k.created_by,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
        "last_used_at": k.last_used_at,
    })
}

async fn list(
    State(state): State<AppState>,
    s: StaffSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = admin(s)?;
    let keys = state
        .store
        .api_keys(&s.organisation)
        .await
        .map_err(store_err)?;
    Ok(Json(serde_json::json!({
        "api_keys": keys.iter().map(view).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    scopes: Vec<String>,
}

async fn create(
    State(state): State<AppState>,
    s: StaffSession,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = admin(s)?;
    let body = json_body(body)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("name: 1 to {MAX_NAME_LEN} bytes of printable text"),
        ));
    }
    let mut scopes = Vec::new();
    for raw in &body.scopes {
        let scope = Scope::parse(raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_field",
                "scopes: each is consultations:read or consultations:write",
            )
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "scopes: at least one",
        ));
    }
    let (id, presented, secret_hash) = auth::generate();
    let key = ApiKey {
        id,
        organisation: s.organisation.clone(),
        name: name.to_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        secret_hash,
        created_by: s.account.clone(),
        created_at: now_millis(),
        revoked_at: None,
        last_used_at: None,
    };
    state.store.insert_api_key(&key).await.map_err(store_err)?;
    state
        .billing
        .audit("api_key.create", &s.account, None, Some(&key.id));
    tracing::info!(organisation = %s.organisation, account = %s.account, key = %key.id, "API key created");
    let mut answer = view(&key);
    answer["key"] = serde_json::Value::String(presented);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    s: StaffSession,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = admin(s)?;
    match state
        .store
        .revoke_api_key(&s.organisation, &id, now_millis())
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API key",
            ));
        }
        Err(e) => return Err(store_err(e)),
    }
    state
        .billing
        .audit("api_key.revoke", &s.account, None, Some(&id));
    tracing::info!(organisation = %s.organisation, account = %s.account, key = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
