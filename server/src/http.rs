//! The HTTP edge: health, the WebSocket endpoint and the embedded web client, with
//! security headers on every response and request logs that never carry a query string,
//! a fragment or an unknown path (a token must never reach the logs).

use crate::AppState;
use crate::config::ServerConfig;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::borrow::Cow;
use std::time::Duration;
use tower_http::LatencyUnit;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, HttpMakeClassifier, TraceLayer};
use tracing::{Level, Span};

/// The web client's files (`web-client/public`, dot files left out), embedded at build time
/// (`build.rs` refuses to build without them).
#[derive(rust_embed::Embed)]
#[folder = "../web-client/public/"]
#[exclude = ".*"]
#[exclude = "*/.*"]
struct WebAssets;

/// Paths of the embedded web client's files, relative to `web-client/public`.
pub fn web_asset_paths() -> impl Iterator<Item = Cow<'static, str>> {
    WebAssets::iter()
}

/// An embedded file's bytes by its path relative to `web-client/public`.
pub(crate) fn asset(path: &str) -> Option<Cow<'static, [u8]>> {
    WebAssets::get(path).map(|f| f.data)
}

/// Content type by file extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "webm" => "video/webm",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// A request whose declared `Content-Length` is over `limit`: refused before its body is read
/// (413 `too_large`, the error every API speaks), so a stranger cannot hold a connection open
/// by promising a large body it never sends.
async fn declared_within(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return crate::error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than {limit} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// A handler that has not answered within `limit` (the store paused, a lock held elsewhere) is
/// dropped and answered 503 `timeout` with `Retry-After`, so no request hangs however its
/// dependencies do. Handlers are already cancel-safe (hyper drops them when a client goes).
/// Document uploads are exempt: they last as long as their body streams.
async fn within_deadline(limit: Duration, req: Request, next: Next) -> Response {
    let upload = req.method() == Method::POST && req.uri().path().ends_with("/documents");
    if upload {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("teleconsult_http_timeouts_total").increment(1);
            let mut response = crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the server could not answer in time; try again shortly",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

/// The router of the whole HTTP edge. Request bodies: every route but the document uploads takes
/// at most `server.max_body_bytes` (a declared length past it refused before reading, 413
/// `too_large`), the uploads `documents.max_bytes` (checked while streaming); a body that goes quiet for `server.body_idle_timeout_secs` is
/// abandoned (slow body).
pub fn router(state: AppState) -> Router {
    crate::telemetry::install();
    // Probes are logged at debug level only. (Scrapes have their own listener: `metrics_router`.)
    let quiet = Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready))
        .layer(request_logs(Level::DEBUG));
    let max_body = state.config.server.max_body_bytes;
    let request_timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    let router = Router::new()
        .route("/ws", get(crate::routes::workspace::websocket))
        .route(
            "/ws/{consultation}",
            get(crate::routes::workspace::websocket_for),
        )
        .route("/", get(|| async { serve_asset("index.html") }))
        .route("/join", get(|| async { serve_asset("join.html") }))
        .route("/login", get(|| async { serve_asset("login.html") }))
        .merge(crate::routes::auth::routes())
        .merge(crate::routes::admin::routes())
        .merge(crate::routes::api_keys_admin::routes())
        .merge(crate::routes::api_v1::routes())
        .merge(crate::routes::workspace::routes())
        .merge(crate::billing_api::routes())
        .fallback(static_file)
        // Every route but the uploads: bodies of at most `server.max_body_bytes`, a larger
        // declared length refused before reading (413).
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            declared_within(max_body, req, next)
        }))
        // The uploads check their own limit while streaming (a JSON `too_large` naming it).
        .merge(crate::routes::documents::routes(
            state.config.documents.max_bytes,
        ))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            state.config.server.body_idle_timeout_secs,
        )))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            within_deadline(request_timeout, req, next)
        }))
        .layer(middleware::from_fn(record_latency))
        .layer(request_logs(Level::INFO))
        .merge(quiet)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            content_security_policy_header,
        ));
    security_headers(router, &state.config.server).with_state(state)
}

/// The fixed security headers of every response (the CSP, which depends on the request, is
/// [`content_security_policy_header`]'s).
fn security_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    server: &ServerConfig,
) -> Router<S> {
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(self), microphone=(self), display-capture=(self), geolocation=()",
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    let mut router = router.layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    for (name, value) in fixed {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    if server.tls || server.public_url.starts_with("https://") {
        router = router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    router
}

/// Request logs: a span per request with the method and the path only, then status and
/// latency. The query string and fragment are never logged; the path is the matched route's
/// template (`/api/consultations/{id}/documents`), or an embedded file's path, else
/// `<unmatched>` (client-chosen text, which may be a token).
fn request_logs(
    level: Level,
) -> TraceLayer<HttpMakeClassifier, fn(&Request) -> Span, DefaultOnRequest, DefaultOnResponse> {
    let make_span: fn(&Request) -> Span = if level == Level::DEBUG {
        |req: &Request| tracing::debug_span!("request", method = %req.method(), path = logged_path(req))
    } else {
        |req: &Request| tracing::info_span!("request", method = %req.method(), path = logged_path(req))
    };
    TraceLayer::new_for_http()
        .make_span_with(make_span)
        .on_response(
            DefaultOnResponse::new()
                .level(level)
                .latency_unit(LatencyUnit::Millis),
        )
}

/// Every request's latency into `teleconsult_http_request_duration_seconds`, labelled by the
/// matched route's template (never an id: `/api/workspace/consultations/{id}`), or `fallback`
/// for embedded files and unknown paths (client-chosen text never becomes a label).
async fn record_latency(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "fallback".to_string(), |m| m.as_str().to_string());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let resp = next.run(req).await;
    let status = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!(
        crate::telemetry::names::HTTP_REQUEST_DURATION,
        "route" => route,
        "method" => method,
        "status" => status
    )
    .record(started.elapsed().as_secs_f64());
    resp
}

/// What a request log may say of the path (see [`request_logs`]).
fn logged_path(req: &Request) -> &str {
    if let Some(matched) = req.extensions().get::<MatchedPath>() {
        return matched.as_str();
    }
    let path = req.uri().path();
    match path.strip_prefix('/') {
        Some(file) if WebAssets::get(file).is_some() => path,
        _ => "<unmatched>",
    }
}

/// How long `/healthz` waits for the store to answer a ping.
pub const STORAGE_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /healthz`: always 200 while the process serves requests (media and signalling work
/// without the store); `status` is `degraded` when the store does not answer a ping within
/// [`STORAGE_PING_TIMEOUT`] (`storage: "unavailable"`) or billing events wait in the on-disk queue.
async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    // Billing events waiting on disk for the store: media works, persistence is behind.
    let billing_queue = state.billing.queue_depth();
    let storage_ok = storage_ok(&state).await;
    let storage = if storage_ok { "ok" } else { "unavailable" };
    // The on-disk queue refused its last event (the disk full): billing is being lost.
    let queue_writable = state.billing.queue_writable();
    let status = if billing_queue > 0 || !storage_ok || !queue_writable {
        "degraded"
    } else {
        "ok"
    };
    let mut body =
        serde_json::json!({ "status": status, "storage": storage, "billing_queue": billing_queue });
    if !queue_writable {
        body["billing_queue_error"] = "cannot write the billing queue (disk full?)".into();
    }
    if let Some(node) = &state.cluster {
        body["cluster"] = serde_json::json!({
            "node": node.id(),
            "ready": node.ready(),
            "draining": node.draining(),
        });
    }
    Json(body)
}

async fn storage_ok(state: &AppState) -> bool {
    matches!(
        tokio::time::timeout(STORAGE_PING_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    )
}

/// `GET /healthz/live`: the process is up and answering (Kubernetes liveness: restart it if not).
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /healthz/ready`: 200 when this server should get new consultations — the store answers
/// and, in a cluster, its heartbeat is current and it is not draining; 503 otherwise, naming why
/// (Kubernetes readiness and load-balancer health checks).
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut not_ready = Vec::new();
    if !storage_ok(&state).await {
        not_ready.push("storage_unavailable");
    }
    if let Some(node) = &state.cluster {
        if node.draining() {
            not_ready.push("draining");
        } else if !node.ready() {
            not_ready.push("no_lease");
        }
    }
    if not_ready.is_empty() {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not_ready", "reasons": not_ready })),
        )
    }
}

/// The router of the metrics listener: `/metrics` only, behind `metrics.bearer_token` when one
/// is set; every other path is 404.
pub fn metrics_router(state: AppState) -> Router {
    crate::telemetry::install();
    let router = Router::new()
        .route("/metrics", get(metrics))
        // `teleconsult drain` (operator token; 404 when none is set): crate::drain.
        .merge(crate::drain::routes())
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(request_logs(Level::DEBUG));
    security_headers(router, &state.config.server).with_state(state)
}

/// Whether `headers` carry the configured metrics bearer token (constant time in its content).
fn scrape_allowed(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    use crate::config::ExposeSecret;
    use subtle::ConstantTimeEq;
    let expected = state.config.metrics.bearer_token.expose_secret().as_bytes();
    if expected.is_empty() {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(expected)))
}

async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if !scrape_allowed(&state, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render(&state),
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

pub(crate) fn serve_asset(path: &str) -> Response {
    let Some(bytes) = asset(path) else {
        return not_found();
    };
    let ct = content_type(path);
    // HTML is never cached (it is the entry point); other files are revalidated.
    let cache = if ct.starts_with("text/html") {
        "no-store"
    } else {
        "no-cache"
    };
    (
        [(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, cache)],
        Body::from(bytes),
    )
        .into_response()
}

async fn static_file(method: Method, uri: axum::http::Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return not_found();
    }
    let path = uri.path().trim_start_matches('/');
    if path.is_empty()
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return not_found();
    }
    serve_asset(path)
}

/// Whether `host` is a plain `name[:port]` or `[v6][:port]` safe to echo into a header.
pub(crate) fn sane_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The `Content-Security-Policy` for a response to a request carrying `Host: host`.
pub fn content_security_policy(server: &ServerConfig, host: Option<&str>) -> String {
    // Where the browser reaches us: the public URL if configured, else the Host header.
    let (secure, authority) = match server
        .public_url
        .strip_prefix("https://")
        .map(|r| (true, r))
        .or_else(|| {
            server
                .public_url
                .strip_prefix("http://")
                .map(|r| (false, r))
        }) {
        Some((secure, rest)) => (secure, Some(rest.split('/').next().unwrap_or(rest))),
        None => (server.tls, host),
    };
    let ws = match authority.filter(|a| sane_host(a)) {
        Some(a) if secure => format!(" wss://{a}"),
        Some(a) => format!(" ws://{a}"),
        None => String::new(),
    };
    format!(
        "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
         img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self'; manifest-src 'self'; connect-src 'self'{ws}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `Content-Security-Policy` on every response; it names the WebSocket origin, which comes
/// from the request's `Host` when no public URL is configured.
async fn content_security_policy_header(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let mut resp = next.run(req).await;
    let mut csp = content_security_policy(&state.config.server, host.as_deref());
    // In a cluster the client may be redirected to another node: allow the live nodes' origins.
    if let Some(node) = &state.cluster {
        let extra: String = node.origins().iter().map(|o| format!(" {o}")).collect();
        csp = csp.replacen("; base-uri", &format!("{extra}; base-uri"), 1);
    }
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn content_types() {
        assert_eq!(content_type("join.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("x/y.PNG"), "image/png");
        assert_eq!(content_type("README"), "application/octet-stream");
    }

    #[test]
    fn csp_allows_websockets_to_self_only() {
        let dev = Config::dev();
        let csp = content_security_policy(&dev.server, Some("127.0.0.1:8080"));
        assert!(
            csp.contains("connect-src 'self' ws://127.0.0.1:8080;"),
            "{csp}"
        );
        // A hostile Host header is not echoed.
        let csp = content_security_policy(&dev.server, Some("evil.example; script-src *"));
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(!csp.contains("evil"), "{csp}");
        // The public URL wins over the Host header, and https means wss.
        let mut prod = Config::default();
        prod.server.public_url = "https://consult.example.org/".into();
        let csp = content_security_policy(&prod.server, Some("10.0.0.1"));
        assert!(
            csp.contains("connect-src 'self' wss://consult.example.org;"),
            "{csp}"
        );
        prod.server.public_url = String::new();
        let csp = content_security_policy(&prod.server, Some("[::1]:8443"));
        assert!(
            csp.contains("connect-src 'self' wss://[::1]:8443;"),
            "{csp}"
        );
    }

    #[test]
    fn the_web_client_is_embedded() {
        for page in ["index.html", "join.html", "app.js", "style.css"] {
            let bytes = asset(page).unwrap_or_else(|| panic!("{page} is not embedded"));
            assert!(!bytes.is_empty(), "{page} is empty");
        }
        assert!(
            asset("join.html").is_some_and(|b| String::from_utf8_lossy(&b).contains("<html")),
            "join.html is the page"
        );
        let paths: Vec<_> = web_asset_paths().collect();
        assert!(paths.iter().all(|p| !p.starts_with('.')), "{paths:?}");
        assert_eq!(asset("../Cargo.toml"), None);
        assert_eq!(asset("missing.js"), None);
    }

    #[test]
    fn logged_paths_are_templates_files_or_unmatched() {
        let req = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("request")
        };
        assert_eq!(logged_path(&req("/app.js?token=x")), "/app.js");
        assert_eq!(logged_path(&req("/SECRET-TOKEN")), "<unmatched>");
        assert_eq!(logged_path(&req("/../Cargo.toml")), "<unmatched>");
    }
}
