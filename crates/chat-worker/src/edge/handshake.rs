//! The `/socket.io` requests before the engine sees them: a handshake (a request without `sid`)
//! opens a socket only within the per-address and per-connection limits, and every request
//! reaches the engine trimmed to what the product uses, as owned copies.
//!
//! The engine keeps a handshake's request parts for the socket's whole life. hyper parses them
//! without copying, as slices of the connection's 16 KB read buffer, so keeping them as they
//! came would pin that buffer per idle socket (BENCHMARKS.md), and a client could make every
//! socket hold up to `--max-header-bytes` of headers and query. What is kept: the websocket
//! upgrade headers, `content-type`, the auth cookie alone (`--auth jwt`, and only if the origin
//! is trusted), the query parameters `EIO`, `transport`, `sid` and the first `roomid`; and, in
//! the extensions, hyper's upgrade handle and the socket's slots in the per-address and
//! per-connection counts.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    extract::{Request, State},
    http::{
        Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header, request::Parts,
    },
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    clients::{Clients, Connection, SocketSlots},
    counters::{self, Refusal},
};
use crate::origin::WildcardOrigin;

/// The headers of a `/socket.io` request the engine reads: the websocket key it answers the
/// upgrade with, and a polling request's content type. (hyper decides on the upgrade from the
/// request as it parsed it, before this trim.)
const KEPT_HEADERS: [HeaderName; 2] = [header::SEC_WEBSOCKET_KEY, header::CONTENT_TYPE];

/// The query parameters of a `/socket.io` request the engine or the product reads.
const KEPT_PARAMS: [&str; 4] = ["EIO", "transport", "sid", "roomid"];

/// The query parameter the trimmed handshake carries for a client that takes no offsets.
pub const NO_OFFSETS: (&str, &str) = ("offsets", "0");

/// Whether a handshake parameter says the client takes no offset as the last argument of room
/// events (socket.io connection state recovery): `offsets=0`, or the timestamp python-engineio
/// adds to every handshake (`t=<seconds with a fraction>`; engine.io's own clients send a
/// letters-and-digits `t`, or none). python-socketio does not recover sessions, and calls an
/// event handler with every argument: a handler written for one would fail on two. Nor does a
/// socket.io 2.x client (`EIO=3`, with `--allow-eio3`): its protocol's CONNECT answer carries no
/// private session id, so it can never recover; offsets would only cost it bytes, and keep it
/// in its room for `--presence-grace-ms` after its connection dropped, for a recovery that
/// cannot come.
fn takes_no_offsets(key: &str, value: &str) -> bool {
    match key {
        "offsets" => value == "0",
        "EIO" => value == "3",
        "t" => value.contains('.') && value.parse::<f64>().is_ok(),
        _ => false,
    }
}

/// What the handshake guard needs.
#[derive(Debug)]
pub struct Handshakes {
    pub clients: Arc<Clients>,
    /// The cookie that may carry the token (`--auth jwt`); `None`: no cookie is kept.
    pub auth_cookie: Option<String>,
}

/// Admits or refuses a handshake, and trims every `/socket.io` request.
pub async fn guard(State(state): State<Arc<Handshakes>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let connection = parts.extensions.remove::<Arc<Connection>>();
    if !parts.uri.path().starts_with("/socket.io") {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let handshake = !parts
        .uri
        .query()
        .is_some_and(|query| form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "sid"));
    // A websocket handshake's connection is the socket's transport; a polling one's is not.
    let websocket = parts
        .uri
        .query()
        .is_some_and(|query| query.contains("transport=websocket"));
    let slots = match (handshake, connection) {
        (true, Some(connection)) => match admit(&state, &connection, &parts.headers, websocket) {
            Ok(slots) => Some(slots),
            Err(refusal) => return (StatusCode::TOO_MANY_REQUESTS, refusal).into_response(),
        },
        _ => None,
    };
    let trusted_origin = parts.extensions.get::<WildcardOrigin>().is_none();
    trim(
        &mut parts,
        state.auth_cookie.as_deref().filter(|_| trusted_origin),
    );
    if let Some(slots) = slots {
        parts.extensions.insert(slots);
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The slots of a new socket, or the refusal (429) if the client holds as many as allowed.
fn admit(
    state: &Handshakes,
    connection: &Connection,
    headers: &HeaderMap,
    websocket: bool,
) -> Result<SocketSlots, String> {
    let clients = &state.clients;
    let per_connection = if connection.proxied {
        None
    } else {
        match connection.admit_session(clients.max_sessions_per_connection) {
            Ok(slot) => Some(slot),
            Err(held) => {
                counters::count(Refusal::SessionsPerConnection);
                tracing::debug!(peer = %connection.peer, held, "socket refused: too many on one connection");
                return Err(format!(
                    "too many sockets on one connection (at most {}; see \
                     --max-sessions-per-connection)",
                    clients.max_sessions_per_connection
                ));
            }
        }
    };
    let client = clients.trusted.client_of(connection.peer.ip(), headers);
    match clients.admit_socket(client) {
        Ok(address) => Ok(SocketSlots::new(
            address,
            per_connection,
            websocket.then(|| connection.cutter.clone()).flatten(),
        )),
        Err(held) => {
            counters::count(Refusal::SocketsPerIp);
            tracing::debug!(%client, peer = %connection.peer, held, "socket refused: too many from this address");
            if !connection.proxied && headers.contains_key("x-forwarded-for") {
                warn_untrusted_proxy(connection.peer.ip());
            }
            Err(format!(
                "too many connections from {client} (at most {held}; see --max-connections-per-ip)"
            ))
        }
    }
}

/// A proxy that is not trusted makes all its clients one address: said to the operator, at most
/// once a minute.
fn warn_untrusted_proxy(peer: IpAddr) {
    static LAST_WARNED_SECS: AtomicU64 = AtomicU64::new(0);
    let now = crate::unix_millis() / 1000;
    let last = LAST_WARNED_SECS.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST_WARNED_SECS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(%peer, "sockets refused for a peer that sends X-Forwarded-For but is not in --trusted-proxies: if it is your proxy, add it there, or all its clients count as one address");
    }
}

/// Keeps, as owned copies, only the headers and query parameters the engine and the product
/// read; `cookie`: the one cookie to keep, if any.
fn trim(parts: &mut Parts, cookie: Option<&str>) {
    // from_bytes copies a value out of the read buffer.
    let values = KEPT_HEADERS.map(|name| {
        let value = parts.headers.get(&name)?;
        Some((name, HeaderValue::from_bytes(value.as_bytes()).ok()?))
    });
    let cookie = cookie.and_then(|name| {
        let pair = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .map(str::trim)
            .find(|pair| pair.split_once('=').is_some_and(|(key, _)| key == name))?;
        Some((header::COOKIE, HeaderValue::from_str(pair).ok()?))
    });
    // Sized to what is kept: the map lives as long as the socket (one sized for five headers
    // took 624 bytes per websocket, by massif on 2026-12-01).
    let kept: Vec<_> = values.into_iter().chain([cookie]).flatten().collect();
    let mut headers = HeaderMap::with_capacity(kept.len());
    for (name, value) in kept {
        headers.insert(name, value);
    }
    parts.headers = headers;

    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut room_seen = false;
    let mut plain = false;
    for (key, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        plain |= takes_no_offsets(&key, &value);
        if !KEPT_PARAMS.contains(&key.as_ref())
            || (key == "roomid" && std::mem::replace(&mut room_seen, true))
        {
            continue;
        }
        query.append_pair(&key, &value);
    }
    if plain {
        query.append_pair(NO_OFFSETS.0, NO_OFFSETS.1);
    }
    let rebuilt = format!("{}?{}", parts.uri.path(), query.finish());
    if let Ok(uri) = Uri::try_from(rebuilt) {
        parts.uri = uri;
    }

    // Of the extensions, only hyper's upgrade handle goes on (the engine takes it for a
    // websocket): what an earlier layer put there for its own use (`WildcardOrigin`; axum's
    // copies of the URI and matched path, were its default features on) would otherwise stay
    // with the socket for its life.
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    parts.extensions = Extensions::new();
    if let Some(on_upgrade) = on_upgrade {
        parts.extensions.insert(on_upgrade);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_that_take_no_offsets_are_marked() {
        for (query, plain) in [
            ("EIO=4&transport=polling&t=1796056884.3186", true),
            ("EIO=4&transport=polling&t=PvKq8Xa", false),
            ("EIO=4&transport=websocket", false),
            ("EIO=4&transport=websocket&offsets=0", true),
            ("EIO=3&transport=polling&t=PvKq8Xa", true),
            ("EIO=3&transport=websocket", true),
        ] {
            let (mut parts, ()) = Request::builder()
                .uri(format!("/socket.io/?{query}"))
                .body(())
                .expect("valid request")
                .into_parts();
            trim(&mut parts, None);
            let kept = parts.uri.query().unwrap_or("");
            assert_eq!(kept.contains("offsets=0"), plain, "{query} -> {kept}");
        }
    }

    #[test]
    fn requests_keep_only_what_is_read() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&roomid=lobby&roomid=other&junk=xxxxxxxx&t=123")
            .header("cookie", "theme=dark; chat_token=abc; tracking=yyyyyyyy")
            .header("x-custom-name", "value")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .expect("valid request");
        let (mut parts, ()) = request.into_parts();
        // What earlier layers put in the extensions for handlers (such as a copy of the URI)
        // does not stay with the socket.
        #[derive(Clone)]
        struct UriCopy(#[allow(dead_code)] Uri);
        parts.extensions.insert(UriCopy(parts.uri.clone()));
        trim(&mut parts, Some("chat_token"));
        assert!(
            parts.extensions.is_empty(),
            "only hyper's upgrade handle goes on"
        );
        assert_eq!(
            parts.uri.query(),
            Some("EIO=4&transport=websocket&roomid=lobby")
        );
        assert_eq!(parts.headers["cookie"], "chat_token=abc");
        assert_eq!(
            parts.headers["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert!(parts.headers.get("x-custom-name").is_none());
        assert!(parts.headers.get("upgrade").is_none());
        assert_eq!(parts.headers.len(), 2);

        // Without a cookie to keep (--auth none, or an origin let through by `*`), none.
        let (mut parts, ()) = Request::builder()
            .uri("/socket.io/?EIO=4&transport=polling&sid=abc")
            .header("cookie", "chat_token=abc")
            .body(())
            .expect("valid request")
            .into_parts();
        trim(&mut parts, None);
        assert!(parts.headers.get("cookie").is_none());
        assert_eq!(parts.uri.query(), Some("EIO=4&transport=polling&sid=abc"));
    }
}
