//! People: login, direct messages and heartbeats. What clients send and receive, what the Redis
//! scripts store and publish on a user's channel, and the hook messages for backends.
//!
//! A direct message is encoded once, by the sending worker, as its JSON *body* without the id:
//! `"from":"ann","to":"bob","text":"hi","ts":1700000000000}` (note: no leading `{`). Redis assigns
//! the id (the inbox stream entry id) and the script splices it in front:
//! `{"id":"1700000000000-0","from":...}`. The stored body and every delivered copy are the same
//! bytes, so a message is never re-encoded between sender and recipient.

use std::{cmp::Ordering, fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    ChatText, ClientMsgId, DeviceId, ErrorCode, Limits, ProtocolError, UserId,
    client::invalid_payload,
};

/// Events a client sends for people features.
pub const LOGIN_EVENT: &str = "login";
pub const CHAT_EVENT: &str = "chat";
pub const HEARTBEAT_EVENT: &str = "hb";
pub const GEO_EVENT: &str = "geo";
/// Sent by the server to a device logged out by a login elsewhere, just before disconnecting it.
pub const LOGOUT_EVENT: &str = "logout";

/// Sent by a client to acknowledge delivered direct messages by id, beside (or instead of) the
/// socket.io ack of the `chat` event: for client libraries that cannot answer the server's acks.
pub const CHAT_ACK_EVENT: &str = "chat_ack";

/// A user id or device id as it arrives: old clients send numbers too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IdValue {
    Text(String),
    Number(u64),
}

impl IdValue {
    pub fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Number(number) => number.to_string(),
        }
    }
}

/// Payload of `login`: `{"userId": "...", "deviceId": "..."}` (ids may be numbers). With
/// handshake authentication `userId` may be left out; if given it must be the token's subject.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginPayload {
    #[serde(default)]
    user_id: Option<IdValue>,
    device_id: IdValue,
}

/// A validated login request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: UserId,
    pub device: DeviceId,
}

impl LoginPayload {
    pub const EXPECTED: &'static str = "login expects {\"userId\": string, \"deviceId\": string}";

    /// Validates the payload; `authenticated` is the identity the handshake proved, if any.
    pub fn validate(
        self,
        limits: &Limits,
        authenticated: Option<&UserId>,
    ) -> Result<Login, ProtocolError> {
        let claimed = self
            .user_id
            .map(|id| UserId::parse(&id.into_text(), limits))
            .transpose()?;
        let user = resolve_user(claimed, authenticated, Self::EXPECTED)?;
        Ok(Login {
            user,
            device: DeviceId::parse(&self.device_id.into_text(), limits)?,
        })
    }
}

/// The user a login is for: the one the handshake proved (`authenticated`), which a claimed id
/// must then name; else the claimed one. Neither: `invalid_payload` with `expected`.
pub fn resolve_user(
    claimed: Option<UserId>,
    authenticated: Option<&UserId>,
    expected: &str,
) -> Result<UserId, ProtocolError> {
    match (authenticated, claimed) {
        (Some(proved), Some(claimed)) if claimed != *proved => Err(ProtocolError::new(
            ErrorCode::Forbidden,
            format!("this socket is authenticated as {proved}, not {claimed}"),
        )),
        (Some(proved), _) => Ok(proved.clone()),
        (None, Some(claimed)) => Ok(claimed),
        (None, None) => Err(invalid_payload(expected)),
    }
}

/// Payload of `chat_ack`: `{"ids": ["<id>", ...]}`, ids of direct messages delivered to this
/// user.
#[derive(Debug, Deserialize)]
pub struct ChatAckPayload {
    pub ids: Vec<String>,
}

impl ChatAckPayload {
    pub const EXPECTED: &'static str = "chat_ack expects {\"ids\": [string]}";

    /// The ids, each a message id (`<ms>-<seq>`), at most `max` of them.
    pub fn validate(self, max: usize) -> Result<Vec<StreamId>, ProtocolError> {
        if self.ids.is_empty() || self.ids.len() > max {
            return Err(invalid_payload(&format!(
                "chat_ack takes 1 to {max} ids, not {}",
                self.ids.len()
            )));
        }
        self.ids
            .iter()
            .map(|id| {
                id.parse::<StreamId>().map_err(|()| {
                    invalid_payload(&format!(
                        "{:?} is not a message id",
                        id.chars().take(64).collect::<String>()
                    ))
                })
            })
            .collect()
    }
}

/// Answer to `chat_ack`: `{ok:true, removed}` (how many of the ids were still waiting).
#[derive(Debug, Serialize)]
pub struct ChatAckReply {
    pub ok: bool,
    pub removed: u64,
}

/// Payload of `chat`: `{"to": "...", "text": "...", "clientMsgId"?: "..."}`. Any other field
/// (a `from`, above all) is ignored: the sender is the socket's logged-in user.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatPayload {
    to: IdValue,
    text: String,
    #[serde(default)]
    client_msg_id: Option<IdValue>,
}

/// A validated direct-message request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectRequest {
    pub to: UserId,
    pub text: ChatText,
    pub client_msg_id: Option<ClientMsgId>,
}

impl ChatPayload {
    pub const EXPECTED: &'static str =
        "chat expects {\"to\": string, \"text\": string, \"clientMsgId\"?: string}";

    pub fn validate(self, limits: &Limits) -> Result<DirectRequest, ProtocolError> {
        Ok(DirectRequest {
            to: UserId::parse(&self.to.into_text(), limits)?,
            text: ChatText::parse(self.text, limits)?,
            client_msg_id: self
                .client_msg_id
                .map(|id| ClientMsgId::parse(&id.into_text(), limits))
                .transpose()?,
        })
    }
}

/// The payload of `geo` must be a JSON object; it is forwarded as it came.
pub fn validate_geo(
    payload: Option<serde_json::Value>,
) -> Result<serde_json::Value, ProtocolError> {
    match payload {
        Some(value @ serde_json::Value::Object(_)) => Ok(value),
        _ => Err(invalid_payload("geo expects a JSON object")),
    }
}

/// The fields of a direct message, serialized once by the sender's worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectMessageFields<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub text: &'a str,
    /// Server time of the send, unix milliseconds.
    pub ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<&'a str>,
}

impl DirectMessageFields<'_> {
    /// The message body: the JSON object without its leading `{`, ready for an id in front.
    pub fn body(&self) -> String {
        // Strings and integers always serialize.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        json[1..].to_owned()
    }
}

/// The body of a direct message whose content is a free-form object (the old chat app's
/// `chat`): `"from":..,"to":..,"ts":..,"clientMsgId"?:..,<the object's fields>}`.
pub fn free_form_body(
    from: &str,
    to: &str,
    ts: u64,
    client_msg_id: Option<&str>,
    fields: &crate::FreeForm,
) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Head<'a> {
        from: &'a str,
        to: &'a str,
        ts: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<&'a str>,
    }
    // Strings and integers always serialize.
    let head = serde_json::to_string(&Head {
        from,
        to,
        ts,
        client_msg_id,
    })
    .unwrap_or_else(|_| "{}".to_owned());
    let mut body = head[1..head.len() - 1].to_owned();
    body.push_str(&fields.tail());
    body
}

/// The message as clients receive it: `{"id":"<id>",<body>`.
pub fn message_json(id: &str, body: &str) -> String {
    let mut json = String::with_capacity(id.len() + body.len() + 8);
    json.push_str("{\"id\":\"");
    json.push_str(id);
    json.push_str("\",");
    json.push_str(body);
    json
}

/// A Redis stream entry id, `<ms>-<seq>`: the stable id of a direct message. Ordered as Redis
/// orders them, so "delivered up to" is one comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for StreamId {
    type Err = ();

    fn from_str(raw: &str) -> Result<Self, ()> {
        let (ms, seq) = raw.split_once('-').ok_or(())?;
        Ok(Self {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What arrives on a user's channel `<prefix>user:<id>`, published by the Redis scripts.
#[derive(Debug)]
pub enum UserFrame<'a> {
    /// A direct message was stored in the user's inbox: deliver it to the user's sockets.
    Chat { id: StreamId, message: &'a RawValue },
    /// The user logged in; `generation` counts the user's logins. In the `single` device policy,
    /// every older session is logged out.
    Login { generation: u64, device: &'a str },
    /// A notification to emit as `event` to every logged-in socket of the user. `id` is its
    /// unread-store id when it was stored; `remove_on_ack` says that the client's ack removes it
    /// from the store (the `notification` channel's `needStore`).
    Push {
        event: &'a str,
        id: Option<StreamId>,
        remove_on_ack: bool,
        /// Only the sessions that registered this tag take the push (the old push service's
        /// `tokenId`); `None`: every session of the user.
        tag: Option<&'a str>,
        payload: &'a RawValue,
    },
}

#[derive(Debug, Deserialize)]
struct RawUserFrame<'a> {
    kind: &'a str,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default)]
    generation: Option<u64>,
    #[serde(default)]
    device: Option<&'a str>,
    #[serde(default)]
    event: Option<&'a str>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default, rename = "removeOnAck")]
    remove_on_ack: bool,
    #[serde(default)]
    tag: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad user frame: {0}")]
pub struct UserFrameError(&'static str);

impl<'a> UserFrame<'a> {
    pub fn parse(frame: &'a str) -> Result<Self, UserFrameError> {
        let raw: RawUserFrame<'a> =
            serde_json::from_str(frame).map_err(|_| UserFrameError("not a frame object"))?;
        match raw.kind {
            "chat" => Ok(Self::Chat {
                id: raw
                    .id
                    .and_then(|id| id.parse().ok())
                    .ok_or(UserFrameError("chat frame without a stream id"))?,
                message: raw
                    .message
                    .ok_or(UserFrameError("chat frame without a message"))?,
            }),
            "login" => Ok(Self::Login {
                generation: raw
                    .generation
                    .ok_or(UserFrameError("login frame without a generation"))?,
                device: raw
                    .device
                    .ok_or(UserFrameError("login frame without a device"))?,
            }),
            "push" => Ok(Self::Push {
                event: raw
                    .event
                    .ok_or(UserFrameError("push frame without an event"))?,
                id: match raw.id {
                    Some(id) => Some(
                        id.parse()
                            .map_err(|()| UserFrameError("push frame with a bad id"))?,
                    ),
                    None => None,
                },
                remove_on_ack: raw.remove_on_ack,
                tag: raw.tag,
                payload: raw
                    .payload
                    .ok_or(UserFrameError("push frame without a payload"))?,
            }),
            _ => Err(UserFrameError("unknown kind")),
        }
    }
}

/// The user-channel frame of a push without storage: `{"kind":"push","event":..,"payload":..}`,
/// with `"tag":..` when only the sessions that registered the tag take it. `event` and `tag` are
/// validated names (no character needs escaping in JSON).
pub fn push_frame(event: &str, tag: Option<&str>, payload: &str) -> String {
    let mut frame = String::with_capacity(event.len() + payload.len() + 60);
    frame.push_str("{\"kind\":\"push\",\"event\":\"");
    frame.push_str(event);
    if let Some(tag) = tag {
        frame.push_str("\",\"tag\":\"");
        frame.push_str(tag);
    }
    frame.push_str("\",\"payload\":");
    frame.push_str(payload);
    frame.push('}');
    frame
}

/// Answer to `login`: `{ok:true, userId, deviceId, pending:{chat, notifications}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginAck<'a> {
    pub ok: bool,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub pending: Pending,
}

/// Waiting items of a user at login.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pending {
    /// Direct messages in the inbox, delivered right after the login ack.
    pub chat: u64,
    /// Unread notifications, sent as `push_message` right after the login ack.
    pub notifications: u64,
}

/// Answer to `chat`: `{ok:true, id}`; `duplicate:true` when the `clientMsgId` was sent before
/// (the id is the first send's); `moderation:true` when the message waits for the filter.
#[derive(Debug, Serialize)]
pub struct SendAck<'a> {
    pub ok: bool,
    pub id: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub moderation: bool,
}

/// Answer to `hb`: `{ok:true, ts}`.
#[derive(Debug, Serialize)]
pub struct HeartbeatAck {
    pub ok: bool,
    pub ts: u64,
}

/// Payload of `logout`: why this socket is being disconnected.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogoutNotice<'a> {
    pub reason: &'static str,
    /// The device that logged in.
    pub device_id: &'a str,
}

/// Published on the login hook channel at every login and at every logged-in socket's end:
/// `{"event":"login","userId":"ann","deviceId":"phone","ts":...,"node":"00ab..."}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionHook<'a> {
    pub event: SessionEvent,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub ts: u64,
    pub node: &'a str,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEvent {
    Login,
    Logout,
}

/// Published on the geo hook channel for every `geo` event:
/// `{"userId":"ann","deviceId":"phone","ts":...,"data":{...as sent...}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeoHook<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub ts: u64,
    pub data: &'a serde_json::Value,
}

/// A message on its way through moderation: published on the filter channel, and expected back
/// on the return channel (the filter may rewrite `text`; anything it does not hand back is
/// never delivered): `{"mid":"...","from":"ann","to":"bob","text":"hi","ts":...}`. A message of
/// the old chat app carries its own fields instead of `text` (`{"mid",.."content":..,"type":..}`),
/// as the old server handed the filter the app's object.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModerationItem {
    /// Moderation id, unique in the cluster; also the sender's ack id.
    pub mid: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// A free-form message's fields (every other key).
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn login_payloads() {
        let login = serde_json::from_str::<LoginPayload>(r#"{"userId":"ann","deviceId":"web-1"}"#)
            .unwrap()
            .validate(&limits(), None)
            .unwrap();
        assert_eq!(
            (login.user.as_str(), login.device.as_str()),
            ("ann", "web-1")
        );
        let numeric = serde_json::from_str::<LoginPayload>(r#"{"userId":42,"deviceId":7}"#)
            .unwrap()
            .validate(&limits(), None)
            .unwrap();
        assert_eq!(numeric.user.as_str(), "42");
        assert!(serde_json::from_str::<LoginPayload>(r#"{"userId":"ann"}"#).is_err());
        let bad = serde_json::from_str::<LoginPayload>(r#"{"userId":"a b","deviceId":"d"}"#)
            .unwrap()
            .validate(&limits(), None)
            .unwrap_err();
        assert_eq!(bad.code, ErrorCode::InvalidUser);
        let anonymous = serde_json::from_str::<LoginPayload>(r#"{"deviceId":"d"}"#).unwrap();
        assert_eq!(
            anonymous.validate(&limits(), None).unwrap_err().code,
            ErrorCode::InvalidPayload
        );
        let proved = UserId::parse("ann", &limits()).unwrap();
        let login = serde_json::from_str::<LoginPayload>(r#"{"deviceId":"d"}"#)
            .unwrap()
            .validate(&limits(), Some(&proved))
            .unwrap();
        assert_eq!(login.user, proved);
        let forged = serde_json::from_str::<LoginPayload>(r#"{"userId":"bob","deviceId":"d"}"#)
            .unwrap()
            .validate(&limits(), Some(&proved))
            .unwrap_err();
        assert_eq!(forged.code, ErrorCode::Forbidden);
        // Naming the proved user is allowed.
        let same = serde_json::from_str::<LoginPayload>(r#"{"userId":"ann","deviceId":"d"}"#)
            .unwrap()
            .validate(&limits(), Some(&proved))
            .unwrap();
        assert_eq!(same.user, proved);
    }

    #[test]
    fn geo_payloads_are_objects_forwarded_as_sent() {
        let object = serde_json::json!({"lat": 1.5, "lng": -2});
        assert_eq!(validate_geo(Some(object.clone())), Ok(object));
        for bad in [
            None,
            Some(serde_json::json!(null)),
            Some(serde_json::json!([1, 2])),
            Some(serde_json::json!("here")),
        ] {
            assert_eq!(
                validate_geo(bad).unwrap_err().code,
                ErrorCode::InvalidPayload
            );
        }
    }

    #[test]
    fn chat_payloads_ignore_a_forged_from() {
        let request = serde_json::from_str::<ChatPayload>(
            r#"{"to":"bob","text":"hi","from":"mallory","clientMsgId":"c-1"}"#,
        )
        .unwrap()
        .validate(&limits())
        .unwrap();
        assert_eq!(request.to.as_str(), "bob");
        assert_eq!(request.client_msg_id.unwrap().as_str(), "c-1");
        let empty = serde_json::from_str::<ChatPayload>(r#"{"to":"bob","text":" "}"#)
            .unwrap()
            .validate(&limits())
            .unwrap_err();
        assert_eq!(empty.code, ErrorCode::InvalidText);
        assert!(serde_json::from_str::<ChatPayload>(r#"{"text":"hi"}"#).is_err());
    }

    #[test]
    fn message_json_splices_the_id_into_the_body() {
        let body = DirectMessageFields {
            from: "ann",
            to: "bob",
            text: "say \"hi\"",
            ts: 5,
            client_msg_id: None,
        }
        .body();
        let json = message_json("5-0", &body);
        assert_eq!(
            json,
            r#"{"id":"5-0","from":"ann","to":"bob","text":"say \"hi\"","ts":5}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["text"], "say \"hi\"");
    }

    #[test]
    fn stream_ids_order_numerically() {
        let a: StreamId = "9-5".parse().unwrap();
        let b: StreamId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert!("10".parse::<StreamId>().is_err());
        assert!("x-1".parse::<StreamId>().is_err());
    }

    #[test]
    fn user_frames() {
        let frame = r#"{"kind":"chat","id":"7-1","message":{"id":"7-1","text":"x"}}"#;
        match UserFrame::parse(frame).unwrap() {
            UserFrame::Chat { id, message } => {
                assert_eq!(id, StreamId { ms: 7, seq: 1 });
                assert_eq!(message.get(), r#"{"id":"7-1","text":"x"}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            UserFrame::parse(r#"{"kind":"login","generation":3,"device":"d"}"#),
            Ok(UserFrame::Login {
                generation: 3,
                device: "d"
            })
        ));
        assert!(UserFrame::parse(r#"{"kind":"chat","id":"7"}"#).is_err());
        let push = push_frame("like", None, r#"{"n":1}"#);
        match UserFrame::parse(&push).unwrap() {
            UserFrame::Push {
                event,
                id,
                remove_on_ack,
                tag,
                payload,
            } => {
                assert_eq!((event, id, remove_on_ack, tag), ("like", None, false, None));
                assert_eq!(payload.get(), r#"{"n":1}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        let tagged = push_frame("receive_message", Some("t-1"), r#"{"data":1}"#);
        assert!(matches!(
            UserFrame::parse(&tagged),
            Ok(UserFrame::Push {
                tag: Some("t-1"),
                ..
            })
        ));
        assert!(matches!(
            UserFrame::parse(
                r#"{"kind":"push","event":"n","id":"4-2","removeOnAck":true,"payload":{}}"#
            ),
            Ok(UserFrame::Push {
                id: Some(StreamId { ms: 4, seq: 2 }),
                remove_on_ack: true,
                ..
            })
        ));
        assert!(UserFrame::parse(r#"{"kind":"other"}"#).is_err());
        assert!(UserFrame::parse("not json").is_err());
    }
}
