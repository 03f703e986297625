//! The worker's plain HTTP routes: the chat page, its script, and health checks.

use std::sync::Arc;

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::node::Node;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const SOCKET_IO_JS: &str = include_str!("../assets/socket.io.min.js");

pub fn routes(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/socket.io.min.js", get(socket_io_js))
        .route("/monitor", get(monitor))
        .route("/ready", get(move || ready(Arc::clone(&node))))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}

async fn socket_io_js() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        SOCKET_IO_JS,
    )
}

/// Liveness, as the old node server answered it: the process serves HTTP.
async fn monitor() -> &'static str {
    "OK"
}

/// Readiness: 200 while the Redis bus is connected; 503 while it is not, because then rooms
/// spanning workers are cut (local rooms still work).
async fn ready(node: Arc<Node>) -> impl IntoResponse {
    if !node.bus_connected() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: redis bus disconnected",
        )
    } else if !node.store_connected() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: redis store disconnected",
        )
    } else {
        (StatusCode::OK, "ready")
    }
}
