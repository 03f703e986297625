//! The supervisor's HTTP endpoint for operators, on the admin port: the live console (`GET /`),
//! `/status` and `/history` (JSON for the console and scripts), `/metrics` (Prometheus), and
//! `POST /login` (the console's token form). Anything else is 404.
//!
//! With an admin token (`CHAT_ADMIN_TOKEN` or `--admin-token-file`), every path but `/login`
//! answers 401 unless the request carries the token, as `Authorization: Bearer <token>` (for
//! Prometheus and scripts) or in the `chat_admin_token` cookie that `/login` sets (for a
//! browser). A 401 says nothing else: no path, no worker, no count.
//!
//! Every answer is computed from the supervisor's state in one short lock, never waiting on a
//! worker: a slow or stuck client of this port only holds its own connection.
//!
//! It is served so that no client can exhaust the supervisor: at most
//! `--admin-max-connections` connections at once (more wait in the kernel's backlog, holding no
//! descriptor of the supervisor's, which it needs to respawn workers), with the workers' header
//! and body timeouts.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chat_protocol::status::{ConsoleHistory, StatusResponse};
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;

use crate::{config::SupervisorSettings, state::ClusterState};

/// Serves `app` on the admin listener until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, settings: &SupervisorSettings) {
    let edge = &settings.worker.edge;
    let options = chat_worker::edge::serve::ServeOptions {
        header_read_timeout: edge.header_read_timeout(),
        body_read_timeout: edge.body_read_timeout(),
        max_header_bytes: edge.max_header_bytes,
        write_stall_timeout: settings.worker.write_stall_timeout(),
        max_connections: Some(settings.admin_max_connections),
        clients: None,
    };
    chat_worker::edge::serve::serve(listener, app, options, std::future::pending()).await;
}

/// The cookie that carries the admin token for the console.
pub const TOKEN_COOKIE: &str = "chat_admin_token";

const CONSOLE_PAGE: &str = include_str!("../assets/console.html");
const LOGIN_PAGE: &str = include_str!("../assets/login.html");

#[derive(Clone)]
struct Admin {
    state: Arc<ClusterState>,
    registry: Arc<Registry>,
    token: Option<Arc<str>>,
}

/// The admin routes. `token`: the secret every request must carry (none: open, which is
/// acceptable only on the loopback address that `--admin-bind` defaults to).
pub fn routes(state: Arc<ClusterState>, token: Option<String>) -> Router {
    let admin = Admin {
        registry: Arc::new(crate::metrics::registry(Arc::clone(&state))),
        state,
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/", get(console))
        .route("/status", get(status))
        .route("/history", get(history))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token))
        // After the layer: the form is how a browser without the token gets it.
        .route("/login", post(login))
        .with_state(admin)
}

async fn console() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // Everything the page needs is in it; it may talk only to this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; form-action 'self'",
            ),
        ],
        Html(CONSOLE_PAGE),
    )
}

async fn status(State(admin): State<Admin>) -> Json<StatusResponse> {
    Json(admin.state.status())
}

async fn history(State(admin): State<Admin>) -> Json<ConsoleHistory> {
    Json(admin.state.history())
}

async fn metrics(State(admin): State<Admin>) -> Response {
    match crate::metrics::encode(&admin.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(cause = %err, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// `POST /login` with the form field `token`: a right token sets the cookie and goes to the
/// console; a wrong one is 401, like any request without the token.
async fn login(State(admin): State<Admin>, body: Bytes) -> Response {
    let given = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let Some(expected) = &admin.token else {
        return Redirect::to("/").into_response();
    };
    if !token_matches(expected, &given) {
        return unauthorized(true);
    }
    // The token only ever goes back to this origin's paths, never to scripts.
    let cookie = format!("{TOKEN_COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict");
    match HeaderValue::from_str(&cookie) {
        Ok(cookie) => {
            let mut response = Redirect::to("/").into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        // A token that is not a valid header value cannot be the expected one (it was checked
        // to be one at start); answer like a wrong token.
        Err(_) => unauthorized(true),
    }
}

async fn require_token(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let Some(expected) = &admin.token else {
        return next.run(request).await;
    };
    if presented_tokens(request.headers()).any(|given| token_matches(expected, given)) {
        return next.run(request).await;
    }
    unauthorized(request.uri().path() == "/")
}

/// The tokens a request presents: its bearer token and its cookie's.
fn presented_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then_some(value)
        });
    bearer.chain(cookies)
}

fn token_matches(expected: &str, given: &str) -> bool {
    // Constant time over the expected token's length; lengths differing is not a secret worth
    // hiding (the token is long and random).
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// 401: the console's path gets the token form, the others a plain line.
fn unauthorized(console: bool) -> Response {
    let challenge = [(
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"chat-cluster admin\"",
    )];
    if console {
        (StatusCode::UNAUTHORIZED, challenge, Html(LOGIN_PAGE)).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, challenge, "unauthorized\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; chat_admin_token=def; y=2"),
        );
        let tokens: Vec<&str> = presented_tokens(&headers).collect();
        assert_eq!(tokens, vec!["abc", "def"]);
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", ""));
    }
}
