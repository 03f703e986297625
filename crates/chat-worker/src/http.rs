//! The worker's plain HTTP routes: the chat page, its script, and health checks.

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header},
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

/// Gives a request owned copies of its URI and headers.
///
/// hyper parses them without copying, as slices of the connection's read buffer (16 KB), and
/// socketioxide keeps every socket's request parts for the socket's whole life: without this
/// copy each idle websocket pins that buffer (measured in BENCHMARKS.md). The copy costs a few
/// hundred bytes once per handshake request.
pub async fn detach_from_read_buffer(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    if parts.uri.path().starts_with("/socket.io") {
        parts.headers = owned_headers(&parts.headers);
        if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
            parts.uri = uri;
        }
    }
    Request::from_parts(parts, body)
}

fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter_map(|(name, value)| {
            // Both constructors copy; standard names come back as static values.
            let name = HeaderName::from_bytes(name.as_str().as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            Some((name, value))
        })
        .collect()
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
    if node.bus_connected() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: redis bus disconnected",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detached_requests_keep_their_uri_and_headers() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&roomid=lobby")
            .header("cookie", "token=abc")
            .header("x-custom-name", "value")
            .body(axum::body::Body::empty())
            .expect("valid request");
        let detached = detach_from_read_buffer(request).await;
        assert_eq!(
            detached.uri().query(),
            Some("EIO=4&transport=websocket&roomid=lobby")
        );
        assert_eq!(detached.headers()["cookie"], "token=abc");
        assert_eq!(detached.headers()["x-custom-name"], "value");
        assert_eq!(detached.headers().len(), 2);
    }
}
