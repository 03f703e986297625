//! Rooms that remember: what crosses the wire and Redis for a room's history, its members
//! (presence) and socket.io connection state recovery.
//!
//! - **Offsets.** Every room event a client receives carries an offset as its last argument
//!   (socket.io's recovery protocol: the client sends the last one back when it reconnects). An
//!   offset `<S>~<k>` says what the client has seen: every entry of the room's history stream up
//!   to id `S` (empty: none), and every message the client's worker said itself up to that
//!   worker's message counter `k`. A worker delivers other workers' messages in stream order
//!   and its own before they reach the stream, so this pair is exact (see the worker's
//!   `rooms` module).
//! - **Sessions.** A joined socket has a session record under its private session id (`pid`,
//!   never shown to anyone else): the socket id the client knows, its name, its user, and the
//!   worker it is on. A client that reconnects with `{pid, offset}` within the recovery window
//!   gets the same session back on whichever worker it reaches.
//! - **Members.** A room's members, cluster-wide, keyed by `pid`: who, and on which worker.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorCode, ProtocolError, people::StreamId};

/// Sent to a socket right after its `join` succeeds: the room's recent messages, oldest first,
/// each exactly as a `message` event carried it.
pub const HISTORY_EVENT: &str = "history";
/// Asked by a client with an ack: the room's members.
pub const MEMBERS_EVENT: &str = "members";

/// Where a client is in a room's messages (see the module docs). Formatted `<S>~<k>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offset {
    /// The last history entry the client has seen in stream order, if any.
    pub stream: Option<StreamId>,
    /// The highest message counter of the client's own worker it has seen.
    pub own: u64,
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stream {
            Some(stream) => write!(f, "{stream}~{}", self.own),
            None => write!(f, "~{}", self.own),
        }
    }
}

impl FromStr for Offset {
    type Err = ();

    fn from_str(raw: &str) -> Result<Self, ()> {
        if raw.len() > 64 {
            return Err(());
        }
        let (stream, own) = raw.split_once('~').ok_or(())?;
        Ok(Self {
            stream: if stream.is_empty() {
                None
            } else {
                Some(stream.parse()?)
            },
            own: own.parse().map_err(|_| ())?,
        })
    }
}

/// What a client sends in its CONNECT to recover a session: socket.io-client adds `pid` and
/// `offset` to the handshake's auth payload (next to any auth of the application's, e.g.
/// `token`).
#[derive(Debug, Default, Deserialize)]
pub struct RecoveryRequest {
    #[serde(default)]
    pub pid: Option<String>,
    #[serde(default)]
    pub offset: Option<String>,
}

/// A session record, kept in Redis while the session may be recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The socket id the client knows (given back on recovery).
    pub sid: String,
    pub username: String,
    #[serde(rename = "userId", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The worker (node id, 16 hex digits) the session is on; the `k` of its offsets counts
    /// that worker's messages.
    pub node: String,
}

/// A room member, cluster-wide: the value of its entry in the room's members hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The worker (node id) holding the member's socket.
    pub node: String,
    pub username: String,
    #[serde(rename = "userId", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The connection (engine.io session id) of the member's socket: a quit removes the member
    /// only if it is still that connection (a recovered member has another one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
}

/// Payload of the `history` event: `{room, messages: [message, ...]}`, oldest first.
#[derive(Debug, Serialize)]
pub struct HistoryEvent<'a> {
    pub room: &'a str,
    pub messages: Vec<&'a RawValue>,
}

/// Payload of a `history` request: `{before?: <message id>, limit?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
}

/// A checked `history` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Messages older than this message id; `None`: the newest.
    pub before: Option<String>,
    pub limit: usize,
}

impl HistoryRequest {
    pub const EXPECTED: &'static str =
        "history expects {\"before\"?: <message id>, \"limit\"?: <1..max>}";

    /// Checks the request against the largest page (`max`, at least 1).
    pub fn validate(self, max: usize) -> Result<HistoryQuery, ProtocolError> {
        let invalid = |message: String| ProtocolError::new(ErrorCode::InvalidPayload, message);
        let limit = match self.limit {
            None => max,
            Some(0) => return Err(invalid(format!("limit must be 1 to {max}"))),
            Some(limit) if limit > max as u64 => {
                return Err(invalid(format!("limit must be 1 to {max}")));
            }
            Some(limit) => limit as usize,
        };
        if let Some(before) = &self.before
            && !is_message_id(before)
        {
            return Err(invalid(
                "before must be the id of a message (<16 hex digits>-<number>)".into(),
            ));
        }
        Ok(HistoryQuery {
            before: self.before,
            limit,
        })
    }
}

/// Whether `id` has the shape of a room message id: `<origin, 16 hex digits>-<counter>`.
pub fn is_message_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(origin, counter)| {
        origin.len() == 16
            && origin.bytes().all(|b| b.is_ascii_hexdigit())
            && !counter.is_empty()
            && counter.len() <= 20
            && counter.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The origin and counter of a room message id (`<origin>-<counter>`).
pub fn split_message_id(id: &str) -> Option<(&str, u64)> {
    let (origin, counter) = id.split_once('-')?;
    Some((origin, counter.parse().ok()?))
}

/// The answer to `members`: `{ok:true, room, count, members:[username, ...]}`.
#[derive(Debug, Serialize)]
pub struct MembersAck {
    pub ok: bool,
    pub room: String,
    pub count: usize,
    pub members: Vec<String>,
}

/// The answer to a `history` request: `{ok:true, room, messages:[...]}`, oldest first.
#[derive(Debug, Serialize)]
pub struct HistoryAck<'a> {
    pub ok: bool,
    pub room: &'a str,
    pub messages: Vec<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_refuse_garbage() {
        for raw in ["1700000000000-3~12", "~0", "5-0~18446744073709551615"] {
            let offset: Offset = raw.parse().unwrap();
            assert_eq!(offset.to_string(), raw);
        }
        for raw in ["", "12", "a-b~1", "1-1~x", "1-1~-1", &"9".repeat(70)] {
            assert!(raw.parse::<Offset>().is_err(), "{raw}");
        }
    }

    #[test]
    fn history_requests_are_bounded() {
        let ok = HistoryRequest {
            before: Some("00000000000000ab-7".into()),
            limit: Some(10),
        };
        assert_eq!(
            ok.validate(100).unwrap(),
            HistoryQuery {
                before: Some("00000000000000ab-7".into()),
                limit: 10
            }
        );
        assert_eq!(HistoryRequest::default().validate(50).unwrap().limit, 50);
        for bad in [
            HistoryRequest {
                before: None,
                limit: Some(0),
            },
            HistoryRequest {
                before: None,
                limit: Some(1_000_000),
            },
            HistoryRequest {
                before: Some("x".into()),
                limit: None,
            },
        ] {
            assert!(bad.validate(100).is_err());
        }
        assert_eq!(
            split_message_id("00000000000000ab-7"),
            Some(("00000000000000ab", 7))
        );
    }
}
