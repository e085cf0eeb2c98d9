//! `teleconsult drain`: an operator drains one node of a cluster (issue 14) without sending it a
//! signal — from a shell on the node, or from a Kubernetes `preStop` hook.
//!
//! The node side is `POST /drain` (start) and `GET /drain` (progress) on the **metrics
//! listener** (loopback by default, never the public one), behind
//! `Authorization: Bearer <cluster.operator_token>`; with no token configured the endpoint does
//! not exist (404) and SIGTERM remains the only way. A drain stops new placements on the node
//! (`draining` in its heartbeat, `/healthz/ready` 503), waits for the calls it carries to end, at
//! most the limit, then the process leaves the cluster and exits — the same path as SIGTERM.
//!
//! The client side ([`run`]) posts the request and then polls `GET /drain` until the node stops
//! answering (it exited), or gives up after its own wait.

use crate::AppState;
use crate::config::ExposeSecret;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest drain anyone may ask for (the same bound as `cluster.drain_limit_secs`).
pub const MAX_LIMIT_SECS: u64 = 24 * 3600;

/// `POST /drain` body (optional): how long the node waits for its calls, at most.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Default: `cluster.drain_limit_secs`.
    pub limit_secs: Option<u64>,
}

/// `GET /drain` and `POST /drain` answer.
#[derive(Debug, Deserialize, Serialize)]
pub struct DrainStatus {
    pub node: String,
    pub draining: bool,
    pub consultations: usize,
    pub participants: usize,
}

/// The drain routes, merged into the metrics listener's router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/drain", get(status).post(start))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// `None` when the caller may drain this node; else the response to send.
fn refused(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    use subtle::ConstantTimeEq;
    let expected = state
        .config
        .cluster
        .operator_token
        .expose_secret()
        .as_bytes();
    if state.cluster.is_none() || expected.is_empty() {
        // Not offered: no cluster (nowhere to send anyone), or no operator credential set.
        return Some(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no drain endpoint on this server (cluster.enabled and cluster.operator_token)",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected)) {
        None
    } else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <cluster.operator_token>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    }
}

fn current(state: &AppState) -> DrainStatus {
    let (consultations, participants) = state.consultations.load();
    DrainStatus {
        node: state
            .cluster
            .as_ref()
            .map(|n| n.id().to_string())
            .unwrap_or_default(),
        draining: state.cluster.as_ref().is_some_and(|n| n.draining()),
        consultations,
        participants,
    }
}

async fn status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    Json(current(&state)).into_response()
}

async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let request: DrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DrainRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the body is empty or {\"limit_secs\": N}",
                );
            }
        }
    };
    let limit = request
        .limit_secs
        .unwrap_or(state.config.cluster.drain_limit_secs);
    if limit > MAX_LIMIT_SECS {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit_secs must be at most 86400",
        );
    }
    let Some(node) = &state.cluster else {
        return error(StatusCode::NOT_FOUND, "not_found", "not in a cluster");
    };
    tracing::info!(node = %node.id(), limit_secs = limit, "drain requested by the operator");
    node.request_drain(Duration::from_secs(limit)).await;
    (StatusCode::ACCEPTED, Json(current(&state))).into_response()
}

/// What [`run`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node stopped answering: it drained and exited.
    Exited,
    /// Still running after the wait (calls still in progress; it goes on draining).
    StillRunning { participants: usize },
}

/// The operator's side: ask the node at `base` (its metrics listener, e.g.
/// `http://127.0.0.1:9464`) to drain with `limit` (`None`: its own `cluster.drain_limit_secs`),
/// then wait up to `wait` for it to exit, calling `progress` at every change.
pub async fn run(
    base: &str,
    token: &str,
    limit: Option<u64>,
    wait: Duration,
    mut progress: impl FnMut(&DrainStatus),
) -> anyhow::Result<Outcome> {
    use anyhow::Context as _;
    let base = base.trim_end_matches('/');
    let url = format!("{base}/drain");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let reply = client
        .post(&url)
        .bearer_auth(token)
        .json(&DrainRequest { limit_secs: limit })
        .send()
        .await
        .with_context(|| format!("cannot reach the node's metrics listener at {base}"))?;
    let code = reply.status();
    if !code.is_success() {
        let body = reply.text().await.unwrap_or_default();
        anyhow::bail!("{url}: {code}: {body}");
    }
    let first: DrainStatus = reply.json().await.context("the node's answer")?;
    progress(&first);
    let mut last = (first.consultations, first.participants);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reply = match client.get(&url).bearer_auth(token).send().await {
            Ok(r) => Some(r),
            // Nothing answers any more: the node drained and exited.
            Err(e) if e.is_connect() => return Ok(Outcome::Exited),
            // Cut off while it shuts down: ask again (refused next time once it is gone).
            Err(_) => None,
        };
        if let Some(reply) = reply
            && let Ok(s) = reply.json::<DrainStatus>().await
            && (s.consultations, s.participants) != last
        {
            last = (s.consultations, s.participants);
            progress(&s);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome::StillRunning {
                participants: last.1,
            });
        }
    }
}
