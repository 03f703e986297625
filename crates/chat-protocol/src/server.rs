//! Events the server emits to clients: the room `message` event and event acks.

use serde::Serialize;

use crate::ProtocolError;

/// The name of the one event that carries room traffic to clients.
pub const MESSAGE_EVENT: &str = "message";

/// What happened in a room; the `event` field of a `message`, named as the old node server did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RoomEventKind {
    #[serde(rename = "join")]
    Join,
    #[serde(rename = "broadcast_say")]
    Say,
    #[serde(rename = "broadcast_quit")]
    Quit,
}

/// The payload of a `message` event:
/// `{event, data: {username, text?, userId?}, id, ts, room}`. `event` and `data` are the old
/// node client's shapes; `id` (unique in the cluster), `ts` (server time, unix milliseconds),
/// `room` and `data.userId` are additions old clients ignore.
#[derive(Debug, Serialize)]
pub struct RoomMessage<'a> {
    pub event: RoomEventKind,
    pub data: RoomEventData<'a>,
    pub id: &'a str,
    pub ts: u64,
    pub room: &'a str,
}

#[derive(Debug, Serialize)]
pub struct RoomEventData<'a> {
    /// The name the sender chose with `join` (anyone can choose any name).
    pub username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    /// The sender's authenticated user id (the subject of its handshake token, `--auth jwt`):
    /// what tells two people of the same name apart. Absent without authentication.
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
}

/// The payload of the `logout` event the server sends just before it ends a socket's session
/// for a reason of its own: `{reason}`.
#[derive(Debug, Serialize)]
pub struct SessionEnd {
    pub reason: &'static str,
}

impl SessionEnd {
    /// The socket's handshake token expired (`--auth jwt`): connect again with a fresh one.
    pub const TOKEN_EXPIRED: Self = Self {
        reason: "token_expired",
    };
}

/// The answer to an event sent with an ack: `{ok:true, id?}` or
/// `{ok:false, error:{code, message}}`.
#[derive(Debug, Serialize)]
pub struct Ack<'a> {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a ProtocolError>,
}

impl<'a> Ack<'a> {
    pub fn ok() -> Self {
        Self {
            ok: true,
            id: None,
            error: None,
        }
    }

    pub fn ok_with_id(id: &'a str) -> Self {
        Self {
            ok: true,
            id: Some(id),
            error: None,
        }
    }

    pub fn error(error: &'a ProtocolError) -> Self {
        Self {
            ok: false,
            id: None,
            error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn room_message_keeps_the_old_client_shapes() {
        let say = RoomMessage {
            event: RoomEventKind::Say,
            data: RoomEventData {
                username: "ann",
                text: Some("hi"),
                user_id: None,
            },
            id: "00ff-1",
            ts: 5,
            room: "lobby",
        };
        assert_eq!(
            serde_json::to_string(&say).unwrap(),
            r#"{"event":"broadcast_say","data":{"username":"ann","text":"hi"},"id":"00ff-1","ts":5,"room":"lobby"}"#
        );
        let quit = RoomMessage {
            event: RoomEventKind::Quit,
            data: RoomEventData {
                username: "ann",
                text: None,
                user_id: Some("u-17"),
            },
            id: "00ff-2",
            ts: 6,
            room: "lobby",
        };
        assert_eq!(
            serde_json::to_string(&quit).unwrap(),
            r#"{"event":"broadcast_quit","data":{"username":"ann","userId":"u-17"},"id":"00ff-2","ts":6,"room":"lobby"}"#
        );
    }

    #[test]
    fn acks() {
        assert_eq!(serde_json::to_string(&Ack::ok()).unwrap(), r#"{"ok":true}"#);
        assert_eq!(
            serde_json::to_string(&Ack::ok_with_id("x-1")).unwrap(),
            r#"{"ok":true,"id":"x-1"}"#
        );
        let err = ProtocolError::new(ErrorCode::NotJoined, "join first");
        assert_eq!(
            serde_json::to_string(&Ack::error(&err)).unwrap(),
            r#"{"ok":false,"error":{"code":"not_joined","message":"join first"}}"#
        );
    }
}
