//! Browser origins: a request carrying an `Origin` header (browsers send one on websocket
//! upgrades and cross-origin requests) is served only if that origin is allowed: the page's own
//! origin (same host and port as the request's `Host`), or one listed in `--allowed-origins`.
//! Allowed cross-origin requests get CORS headers; preflights are answered here.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The configured allowlist.
#[derive(Debug, Default)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
}

impl Origins {
    pub fn new(allowed: &[String]) -> Self {
        Self {
            any: allowed.iter().any(|origin| origin.trim() == "*"),
            listed: allowed
                .iter()
                .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|origin| !origin.is_empty() && origin != "*")
                .collect(),
        }
    }

    /// Whether `origin` may use a worker reached as `host`.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.any || self.listed.contains(&origin) {
            return true;
        }
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((origin_host, host), (Some(origin_host), Some(host)) if origin_host == host.to_ascii_lowercase())
    }
}

/// Refuses requests from origins not allowed; adds CORS headers for allowed cross-origin ones.
pub async fn guard(State(origins): State<Arc<Origins>>, request: Request, next: Next) -> Response {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    if !origins.allows(&origin, host) {
        tracing::debug!(origin, host, path = request.uri().path(), "origin refused");
        return (
            StatusCode::FORBIDDEN,
            format!("origin {origin} is not allowed (see --allowed-origins)"),
        )
            .into_response();
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    if let Ok(value) = HeaderValue::from_str(&origin) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_listed_origins_pass() {
        let origins = Origins::new(&["https://app.example.com/".into()]);
        assert!(origins.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(origins.allows("https://App.Example.com", Some("chat.example.com")));
        assert!(!origins.allows("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!origins.allows("http://127.0.0.1:9999", Some("127.0.0.1:8080")));
        assert!(!origins.allows("null", Some("127.0.0.1:8080")));
        assert!(Origins::new(&["*".into()]).allows("http://evil.example", None));
    }
}
