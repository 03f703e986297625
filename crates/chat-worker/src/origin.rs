//! Browser origins and host names. A request is served only if its `Host` is one the workers
//! may be reached by (`--allowed-hosts`; IP addresses, `localhost` and the hosts of
//! `--allowed-origins` always), so a page on a DNS-rebinding domain cannot talk to them as its
//! own origin. A request carrying an `Origin` header (browsers send one on websocket upgrades
//! and cross-origin requests) is served only if that origin is allowed: the page's own origin
//! (same host and port as the request's `Host`), one listed in `--allowed-origins`, or any with
//! `*` — but `*` never allows `null` (sandboxed frames, files), never sends
//! `Access-Control-Allow-Credentials`, and the cookie of a request it let through is not used
//! to authenticate. Allowed cross-origin requests get CORS headers; preflights are answered here,
//! allowing the request headers the browser asks for (socket.io-client's `extraHeaders`).

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    config::AuthSettings,
    edge::counters::{self, Refusal},
};

/// Longest `Access-Control-Request-Headers` list answered (bytes).
const MAX_REQUEST_HEADERS_LIST: usize = 1024;

/// How an origin was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The page's own origin, or one listed in `--allowed-origins`: credentials allowed.
    Trusted,
    /// Allowed only by `--allowed-origins '*'`: no credentials, the cookie is not used.
    Wildcard,
    Refused,
}

/// Marks a request let through by the wildcard only: its cookie must not authenticate it.
#[derive(Debug, Clone, Copy)]
pub struct WildcardOrigin;

/// The configured allowlists of origins and hosts.
#[derive(Debug, Default)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
    any_host: bool,
    hosts: Vec<String>,
}

impl Origins {
    pub fn new(allowed: &[String]) -> Self {
        Self::with_hosts(allowed, &[])
    }

    pub fn with_hosts(allowed: &[String], allowed_hosts: &[String]) -> Self {
        let listed: Vec<String> = allowed
            .iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| !origin.is_empty() && origin != "*")
            .collect();
        let mut hosts: Vec<String> = allowed_hosts
            .iter()
            .map(|host| host.trim().to_ascii_lowercase())
            .filter(|host| !host.is_empty() && host != "*")
            .collect();
        // The hosts of the listed origins are hosts the operator configured.
        hosts.extend(
            listed
                .iter()
                .filter_map(|origin| origin.split_once("://"))
                .map(|(_, authority)| hostname(authority).to_owned()),
        );
        Self {
            any: allowed.iter().any(|origin| origin.trim() == "*"),
            listed,
            any_host: allowed_hosts.iter().any(|host| host.trim() == "*"),
            hosts,
        }
    }

    /// Whether `origin` may use a worker reached as `host`.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        self.judge(origin, host) != Verdict::Refused
    }

    /// How `origin` may use a worker reached as `host`.
    pub fn judge(&self, origin: &str, host: Option<&str>) -> Verdict {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if origin == "null" {
            return Verdict::Refused;
        }
        if self.listed.contains(&origin) {
            return Verdict::Trusted;
        }
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if matches!((origin_host, host), (Some(origin_host), Some(host)) if origin_host == host.to_ascii_lowercase())
        {
            return Verdict::Trusted;
        }
        if self.any {
            return Verdict::Wildcard;
        }
        Verdict::Refused
    }

    /// Whether a request may name `host` (its `Host` header, port included).
    pub fn allows_host(&self, host: &str) -> bool {
        if self.any_host {
            return true;
        }
        let name = hostname(host).to_ascii_lowercase();
        // An IP address cannot be rebound: a page that reaches it by address has that address
        // as its own origin.
        if name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
        {
            return true;
        }
        name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.iter().any(|allowed| {
                allowed == &name
                    || allowed
                        .strip_prefix("*.")
                        .is_some_and(|domain| name.ends_with(&format!(".{domain}")))
            })
    }
}

/// The host name of an authority (`host:port`, `[v6]:port`, `host`), without the port.
fn hostname(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split(']')
            .next()
            .map_or(authority, |h| &authority[..h.len() + 1]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Checks the origin and host settings at start.
pub fn validate(auth: &AuthSettings) -> Result<(), String> {
    if auth
        .allowed_origins
        .iter()
        .any(|origin| origin.trim().eq_ignore_ascii_case("null"))
    {
        return Err(
            "--allowed-origins cannot allow `null`: it is the origin of sandboxed frames and \
             local files, which any site can create"
                .into(),
        );
    }
    if let Some(bad) = auth
        .allowed_hosts
        .iter()
        .map(|host| host.trim())
        .find(|host| host.contains('/') || host.contains(' '))
    {
        return Err(format!(
            "--allowed-hosts: {bad:?} is not a host name (like chat.example.com or *.example.com)"
        ));
    }
    Ok(())
}

/// Refuses requests for hosts or from origins not allowed; adds CORS headers for allowed
/// cross-origin ones.
pub async fn guard(
    State(origins): State<Arc<Origins>>,
    mut request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if let Some(host) = &host
        && !origins.allows_host(host)
    {
        counters::count(Refusal::Host);
        tracing::debug!(host, path = request.uri().path(), "host refused");
        return (
            StatusCode::FORBIDDEN,
            format!("host {host} is not allowed (see --allowed-hosts)"),
        )
            .into_response();
    }
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    let verdict = origins.judge(&origin, host.as_deref());
    if verdict == Verdict::Refused {
        counters::count(Refusal::Origin);
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
        let asked = request
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .filter(|value| is_header_list(value))
            .cloned();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            asked.unwrap_or(HeaderValue::from_static("authorization, content-type")),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        headers.append(
            header::VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
        response
    } else {
        if verdict == Verdict::Wildcard {
            request.extensions_mut().insert(WildcardOrigin);
        }
        next.run(request).await
    };
    if let Ok(value) = HeaderValue::from_str(&origin) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if verdict == Verdict::Trusted {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// Whether `value` is a comma-separated list of header names (RFC 9110 tokens), bounded.
fn is_header_list(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    bytes.len() <= MAX_REQUEST_HEADERS_LIST
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~, ".contains(b))
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

    #[test]
    fn the_wildcard_never_trusts_and_never_allows_null() {
        let origins = Origins::new(&["*".into()]);
        assert_eq!(
            origins.judge("http://evil.example", Some("127.0.0.1:8080")),
            Verdict::Wildcard
        );
        assert_eq!(
            origins.judge("null", Some("127.0.0.1:8080")),
            Verdict::Refused
        );
        assert_eq!(
            origins.judge("http://127.0.0.1:8080", Some("127.0.0.1:8080")),
            Verdict::Trusted
        );
    }

    #[test]
    fn hosts_are_ip_addresses_localhost_or_configured() {
        let origins = Origins::with_hosts(
            &["https://app.example.com".into()],
            &["chat.example.com".into(), "*.corp.example".into()],
        );
        for allowed in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:6001",
            "localhost:3000",
            "LOCALHOST",
            "chat.example.com",
            "app.example.com:443",
            "eu.corp.example",
        ] {
            assert!(origins.allows_host(allowed), "{allowed} is allowed");
        }
        for refused in [
            "rebind.attacker.example:8080",
            "corp.example",
            "example.com",
        ] {
            assert!(!origins.allows_host(refused), "{refused} is refused");
        }
        assert!(Origins::with_hosts(&[], &["*".into()]).allows_host("anything.example"));
    }
}
