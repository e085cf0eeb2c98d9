//! WebSocket signalling at `/ws`. (Being written.)
use crate::AppState;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;

pub async fn handler(ws: WebSocketUpgrade, State(_state): State<AppState>) -> Response {
    ws.on_upgrade(|_socket| async {})
}
