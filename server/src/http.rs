//! The HTTP edge: health, metrics, the WebSocket endpoint and the embedded web client, with
//! security headers on every response and request logs that never carry a query string,
//! a fragment or an unknown path (a token must never reach the logs).

use crate::AppState;
use crate::config::ServerConfig;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::time::Instant;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// The web client's files, embedded at build time: `(path relative to web-client/public, bytes)`.
pub fn web_assets() -> &'static [(&'static str, &'static [u8])] {
    assets::WEB_ASSETS
}

fn asset(path: &str) -> Option<&'static [u8]> {
    assets::WEB_ASSETS
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| assets::WEB_ASSETS[i].1)
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

/// The router of the whole HTTP edge.
pub fn router(state: AppState) -> Router {
    crate::telemetry::install();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws", get(teleconsult_signaling::handler))
        .route("/", get(|| async { serve_asset("index.html") }))
        .route("/join", get(|| async { serve_asset("join.html") }))
        .merge(crate::routes::documents::routes(
            state.config.documents.max_bytes,
        ))
        .merge(crate::billing_api::routes())
        .fallback(static_file)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(middleware::from_fn(log_requests))
        .with_state(state)
}

/// How long `/healthz` waits for the store to answer a ping.
pub const STORAGE_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /healthz`: always 200 while the process serves requests (media and signalling work
/// without the store); `status` is `degraded` when the store does not answer a ping within
/// [`STORAGE_PING_TIMEOUT`] (`storage: "unavailable"`) or billing events wait in the on-disk queue.
async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    // Billing events waiting on disk for the store: media works, persistence is behind.
    let billing_queue = state.billing.queue_depth();
    let storage_ok = matches!(
        tokio::time::timeout(STORAGE_PING_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    let storage = if storage_ok { "ok" } else { "unavailable" };
    let status = if billing_queue > 0 || !storage_ok {
        "degraded"
    } else {
        "ok"
    };
    Json(
        serde_json::json!({ "status": status, "storage": storage, "billing_queue": billing_queue }),
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
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

fn serve_asset(path: &str) -> Response {
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
fn sane_host(host: &str) -> bool {
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
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; font-src 'self'; manifest-src 'self'; connect-src 'self'{ws}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let mut resp = next.run(req).await;
    let csp = content_security_policy(&state.config.server, host.as_deref());
    let tls = state.config.server.tls || state.config.server.public_url.starts_with("https://");
    let h: &mut HeaderMap = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static(
            "camera=(self), microphone=(self), display-capture=(self), geolocation=()",
        ),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Log method, path and status. The query string and fragment are never logged, and neither
/// is the path of a request that matched nothing (it is client-chosen text).
async fn log_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let path = if status == StatusCode::NOT_FOUND.as_u16() {
        "<unmatched>"
    } else {
        path.as_str()
    };
    let elapsed_ms = start.elapsed().as_millis() as u64;
    if path == "/healthz" || path == "/metrics" {
        tracing::debug!(%method, path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, "request");
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
    fn embedded_assets_are_sorted_for_lookup() {
        let assets = web_assets();
        assert!(assets.windows(2).all(|w| w[0].0 < w[1].0));
        for (path, bytes) in assets {
            assert_eq!(asset(path), Some(*bytes));
        }
        assert_eq!(asset("../Cargo.toml"), None);
    }
}
