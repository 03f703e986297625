//! Which socket.io clients a worker serves: engine.io protocol 3 (socket.io 2.x clients, many
//! shipped mobile apps) only with `--allow-eio3`, as node's `allowEIO3`; and one packet parser
//! for every client (`--parser json|msgpack`), with a clear answer to a client of the other one.
//!
//! The parser is not negotiated by the protocol. A socket.io 3+ client speaks first (its
//! CONNECT), so the first message of a session tells a client of the other parser: text on a
//! msgpack server, binary on a JSON server. Such a client is answered with a CONNECT_ERROR in
//! *its own* parser, saying which parser the server speaks; socket.io clients take a
//! CONNECT_ERROR as final (`connect_error`, no reconnection) instead of reconnecting forever
//! after the server closes a session it cannot read. The guard runs in the vendored
//! engineioxide (`guard.rs`), on the first message of each session only. A socket.io 2.x
//! client (engine.io 3) cannot be told: the server connects it first, in its own parser, which
//! the client cannot read (README "Old clients").

use std::sync::atomic::{AtomicBool, Ordering};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use engineioxide::guard::{FirstMessage, Reply};
use serde::{Deserialize, Serialize};

use crate::config::PacketParser;

/// Engine.io's own answer to a protocol version it does not serve (node's engine.io sends the
/// same), so clients and their logs read it as they would from node.
const UNSUPPORTED_PROTOCOL: &str = r#"{"code":5,"message":"Unsupported protocol version"}"#;

/// Where socket.io is served (socketioxide's default path).
const SOCKET_IO_PATH: &str = "/socket.io";

/// Whether this process serves the msgpack parser (the guard is a plain function, set once per
/// process; every worker process has one parser).
static MSGPACK: AtomicBool = AtomicBool::new(false);

/// Refuses engine.io protocol 3 requests, unless `allow_eio3`, with engine.io's 400 answer.
pub async fn eio3_gate(State(allow_eio3): State<bool>, request: Request, next: Next) -> Response {
    if !allow_eio3
        && request.uri().path().starts_with(SOCKET_IO_PATH)
        && request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair == "EIO=3"))
    {
        tracing::debug!("socket.io 2.x (engine.io 3) client refused: start with --allow-eio3");
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            UNSUPPORTED_PROTOCOL,
        )
            .into_response();
    }
    next.run(request).await
}

/// Answers clients of the other parser (see the module's documentation).
pub fn install_parser_guard(parser: PacketParser) {
    MSGPACK.store(parser == PacketParser::Msgpack, Ordering::Relaxed);
    engineioxide::guard::set_first_message_guard(first_message);
}

fn first_message(request: &Parts, message: FirstMessage<'_>) -> Option<Reply> {
    // Sessions of socket.io only (a bare engine.io in the same process has no parser).
    if !request.uri.path().starts_with(SOCKET_IO_PATH) {
        return None;
    }
    let msgpack_server = MSGPACK.load(Ordering::Relaxed);
    match (message, msgpack_server) {
        (FirstMessage::Text(text), true) => {
            tracing::debug!("a client of the json parser refused: this server speaks msgpack");
            Some(Reply::Text(json_connect_error(
                json_namespace(text),
                "this server uses socket.io's msgpack parser (socket.io-msgpack-parser); connect with it",
            )))
        }
        (FirstMessage::Binary(data), false) => {
            tracing::debug!("a client of the msgpack parser refused: this server speaks json");
            msgpack_connect_error(
                &msgpack_namespace(data),
                "this server uses socket.io's default (JSON) parser; connect without socket.io-msgpack-parser",
            )
            .map(Reply::Binary)
        }
        _ => None,
    }
}

/// `{"message": ...}`, the data of a CONNECT_ERROR packet.
#[derive(Serialize)]
struct ErrorData<'a> {
    message: &'a str,
}

/// The namespace of a JSON CONNECT packet (`0/admin,{...}`), `/` when it names none.
fn json_namespace(text: &str) -> &str {
    text.strip_prefix('0')
        .filter(|rest| rest.starts_with('/'))
        .map(|rest| rest.split(',').next().unwrap_or("/"))
        .filter(|nsp| nsp.len() <= 128)
        .unwrap_or("/")
}

/// A JSON CONNECT_ERROR: `44{"message":..}` on `/`, `44/nsp,{"message":..}` elsewhere.
fn json_connect_error(nsp: &str, message: &str) -> String {
    let data = serde_json::to_string(&ErrorData { message }).unwrap_or_default();
    if nsp == "/" {
        format!("44{data}")
    } else {
        format!("44{nsp},{data}")
    }
}

/// The namespace of a msgpack packet (`{type, nsp, ...}`), `/` when unreadable.
fn msgpack_namespace(data: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        nsp: Option<String>,
    }
    rmp_serde::from_slice::<Head>(data)
        .ok()
        .and_then(|head| head.nsp)
        .filter(|nsp| nsp.starts_with('/') && nsp.len() <= 128)
        .unwrap_or_else(|| "/".to_owned())
}

/// A msgpack CONNECT_ERROR packet: `{type: 4, nsp, data: {message}}`, as socket.io-msgpack-parser
/// encodes packets (a map with named fields).
fn msgpack_connect_error(nsp: &str, message: &str) -> Option<bytes::Bytes> {
    #[derive(Serialize)]
    struct Packet<'a> {
        #[serde(rename = "type")]
        kind: u8,
        nsp: &'a str,
        data: ErrorData<'a>,
    }
    rmp_serde::to_vec_named(&Packet {
        kind: 4,
        nsp,
        data: ErrorData { message },
    })
    .ok()
    .map(bytes::Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_connect_errors_name_the_clients_namespace() {
        assert_eq!(json_namespace(r#"0{"token":"x"}"#), "/");
        assert_eq!(json_namespace("0"), "/");
        assert_eq!(json_namespace("0/admin,"), "/admin");
        assert_eq!(json_namespace(r#"0/admin,{"a":1}"#), "/admin");
        assert_eq!(json_connect_error("/", "no"), r#"44{"message":"no"}"#);
        assert_eq!(
            json_connect_error("/admin", "no"),
            r#"44/admin,{"message":"no"}"#
        );
    }

    #[test]
    fn msgpack_connect_errors_round_trip() {
        #[derive(Serialize)]
        struct Connect<'a> {
            #[serde(rename = "type")]
            kind: u8,
            nsp: &'a str,
        }
        let connect = rmp_serde::to_vec_named(&Connect {
            kind: 0,
            nsp: "/chat",
        })
        .unwrap();
        assert_eq!(msgpack_namespace(&connect), "/chat");
        assert_eq!(msgpack_namespace(b"\xff garbage"), "/");
        let error = msgpack_connect_error("/chat", "why").unwrap();
        let decoded: serde_json::Value = rmp_serde::from_slice(&error).unwrap();
        assert_eq!(
            decoded,
            serde_json::json!({"type": 4, "nsp": "/chat", "data": {"message": "why"}})
        );
    }
}
