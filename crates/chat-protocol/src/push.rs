//! Push notifications: the HTTP API bodies and answers, the old `notification` Redis channel's
//! messages, the unread store's entries and the events clients receive.
//!
//! A notification is encoded once per request as its *body* (JSON without the leading `{` and
//! without the id, as direct messages are, see [`crate::people`]): the unread store's script
//! splices in the id Redis gives it, and pushes without storage carry no id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorCode, Limits, ProtocolError, RoomId, UserId};

/// The event a push is delivered as, unless the request names another.
pub const NOTIFICATION_EVENT: &str = "notification";
/// The event of the old `POST /api {tokens, data}`.
pub const LEGACY_EVENT: &str = "receive_message";
/// Sent once after login with the unread notifications grouped by category.
pub const PUSH_MESSAGE_EVENT: &str = "push_message";
pub const MARK_READ_EVENT: &str = "mark_read";
pub const UNREAD_COUNT_EVENT: &str = "unread_count";

/// Most users one request may address.
pub const MAX_USERS_PER_REQUEST: usize = 10_000;

/// What a notification is about; the unread store groups by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Announcement,
    Remind,
    Subscription,
    Publish,
    System,
    Mailbox,
    /// An item a notices client sent another user (`todo`).
    Todo,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Self::Announcement,
        Self::Remind,
        Self::Subscription,
        Self::Publish,
        Self::System,
        Self::Mailbox,
        Self::Todo,
    ];
}

/// A user id as backends send it: a string or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UserRef {
    Text(String),
    Number(u64),
}

/// Validates a list of user ids, without duplicates, keeping the first occurrence's order.
pub fn parse_users(
    raw: Vec<UserRef>,
    field: &str,
    limits: &Limits,
) -> Result<Vec<UserId>, ProtocolError> {
    if raw.is_empty() {
        return Err(invalid(format!("{field} must list at least one user")));
    }
    if raw.len() > MAX_USERS_PER_REQUEST {
        return Err(invalid(format!(
            "{field} lists {} users; at most {MAX_USERS_PER_REQUEST} per request",
            raw.len()
        )));
    }
    let mut users: Vec<UserId> = Vec::with_capacity(raw.len());
    for user in raw {
        let text = match user {
            UserRef::Text(text) => text,
            UserRef::Number(number) => number.to_string(),
        };
        let user = UserId::parse(&text, limits)?;
        if !users.contains(&user) {
            users.push(user);
        }
    }
    Ok(users)
}

fn invalid(message: String) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidPayload, message)
}

/// `POST /api/push`: `{users, category, event?, data, store?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub users: Vec<UserRef>,
    pub category: Category,
    #[serde(default)]
    pub event: Option<String>,
    pub data: Box<RawValue>,
    #[serde(default)]
    pub store: bool,
}

/// `POST /api/broadcast`: `{room?, category, data}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    #[serde(default)]
    pub room: Option<String>,
    pub category: Category,
    pub data: Box<RawValue>,
}

impl BroadcastRequest {
    pub fn room(&self, limits: &Limits) -> Result<Option<RoomId>, ProtocolError> {
        self.room
            .as_deref()
            .map(|room| RoomId::parse(room, limits))
            .transpose()
    }
}

/// `POST /api`, the old API of the push service (`socket-message-push`): `{tokens, data,
/// entityType?}`. `data` and `entityType` may be any JSON value (the old example sends a string
/// as `data`); each token names a user, or the sockets that gave it as `tokenId` in `user_login`.
#[derive(Debug, Deserialize)]
pub struct LegacyPushRequest {
    pub tokens: Vec<UserRef>,
    pub data: Box<RawValue>,
    #[serde(default, rename = "entityType")]
    pub entity_type: Option<Box<RawValue>>,
}

/// What a client of the old push API receives as `receive_message`: `{entityType?, data}`, as
/// the old service emitted it, both values exactly as the backend posted them.
#[derive(Debug, Serialize)]
pub struct LegacyMessage<'a> {
    #[serde(rename = "entityType", skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<&'a RawValue>,
    pub data: &'a RawValue,
}

impl LegacyMessage<'_> {
    /// The JSON without its leading `{` (the body convention of [`NotificationFields::body`]).
    pub fn body(&self) -> String {
        // Raw values always serialize.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        json[1..].to_owned()
    }
}

/// A message of the old `notification` Redis channel: `{toWho, needStore?, category?, ...}`.
/// The whole object is the notification's `data`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelNotification {
    pub to_who: Vec<UserRef>,
    #[serde(default)]
    pub need_store: bool,
    #[serde(default)]
    pub category: Option<Category>,
}

/// Checks the name of the event a push is delivered as.
pub fn parse_event_name(event: Option<&str>) -> Result<&str, ProtocolError> {
    const RESERVED: [&str; 7] = [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
        "message",
    ];
    let Some(event) = event else {
        return Ok(NOTIFICATION_EVENT);
    };
    let valid = !event.is_empty()
        && event.len() <= 64
        && event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if !valid {
        return Err(invalid(
            "event must be 1 to 64 characters from A-Z a-z 0-9 _ - . :".into(),
        ));
    }
    if RESERVED.contains(&event) {
        return Err(invalid(format!("event {event:?} is reserved")));
    }
    Ok(event)
}

/// The fields of a notification, serialized once per request.
#[derive(Debug, Serialize)]
pub struct NotificationFields<'a> {
    pub category: Category,
    pub data: &'a RawValue,
    /// Server time, unix milliseconds.
    pub ts: u64,
}

impl NotificationFields<'_> {
    /// The JSON without its leading `{`, ready for an id in front (see
    /// [`crate::people::message_json`]); `{` + body is the notification without an id.
    pub fn body(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        json[1..].to_owned()
    }
}

/// A stored notification as read back: enough to group by category.
#[derive(Debug, Deserialize)]
pub struct StoredCategory {
    pub category: Category,
}

/// Answer to `POST /api/push` and `POST /api`.
#[derive(Debug, Serialize)]
pub struct PushResponse {
    pub ok: bool,
    /// Users with at least one worker holding a logged-in socket of theirs.
    pub online: usize,
    /// Users whose unread store kept the notification.
    pub stored: usize,
    /// Users this request's `Idempotency-Key` had reached already: nothing was done for them.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// Answer to `POST /api/broadcast`.
#[derive(Debug, Serialize)]
pub struct BroadcastResponse {
    pub ok: bool,
    /// Workers that received the announcement.
    pub workers: u64,
}

/// Payload of `mark_read`: `{ids: [...]}`.
#[derive(Debug, Deserialize)]
pub struct MarkReadPayload {
    pub ids: Vec<String>,
}

/// Answer to `mark_read`.
#[derive(Debug, Serialize)]
pub struct MarkReadAck {
    pub ok: bool,
    pub removed: u64,
}

/// Answer to `unread_count`: the total and the count per category.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreadCountAck {
    pub ok: bool,
    pub count: u64,
    pub by_category: BTreeMap<Category, u64>,
}

/// An HTTP API refusal: `{ok:false, error:{code, message}}`.
#[derive(Debug, Serialize)]
pub struct ApiError<'a> {
    pub ok: bool,
    pub error: ApiErrorBody<'a>,
}

#[derive(Debug, Serialize)]
pub struct ApiErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_requests() {
        let request: PushRequest = serde_json::from_str(
            r#"{"users":["ann",42,"ann"],"category":"remind","data":{"x":1},"store":true}"#,
        )
        .unwrap();
        let users = parse_users(request.users, "users", &Limits::default()).unwrap();
        assert_eq!(
            users.iter().map(UserId::as_str).collect::<Vec<_>>(),
            ["ann", "42"]
        );
        assert!(request.store);
        assert!(
            serde_json::from_str::<PushRequest>(r#"{"users":["a"],"category":"nope","data":1}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<PushRequest>(r#"{"users":["a"],"category":"system"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<PushRequest>(
                r#"{"users":["a"],"category":"system","data":1,"extra":1}"#
            )
            .is_err()
        );
        assert_eq!(
            parse_users(vec![], "users", &Limits::default())
                .unwrap_err()
                .code,
            ErrorCode::InvalidPayload
        );
    }

    #[test]
    fn at_most_max_users_per_request() {
        let users = |n: usize| {
            (0..n)
                .map(|_| UserRef::Text("a".into()))
                .collect::<Vec<_>>()
        };
        let limits = Limits::default();
        let most = parse_users(users(MAX_USERS_PER_REQUEST), "users", &limits).unwrap();
        assert_eq!(most.len(), 1, "duplicates are kept once");
        let over = parse_users(users(MAX_USERS_PER_REQUEST + 1), "users", &limits).unwrap_err();
        assert_eq!(over.code, ErrorCode::InvalidPayload);
        assert!(over.message.contains("at most 10000"), "{}", over.message);
    }

    #[test]
    fn event_names() {
        assert_eq!(parse_event_name(None), Ok(NOTIFICATION_EVENT));
        assert_eq!(parse_event_name(Some("like")), Ok("like"));
        assert!(parse_event_name(Some("disconnect")).is_err());
        assert!(parse_event_name(Some("a b")).is_err());
        assert!(parse_event_name(Some("")).is_err());
    }

    #[test]
    fn notification_body() {
        let data = RawValue::from_string(r#"{"post":7}"#.into()).unwrap();
        let body = NotificationFields {
            category: Category::Remind,
            data: &data,
            ts: 3,
        }
        .body();
        assert_eq!(body, r#""category":"remind","data":{"post":7},"ts":3}"#);
    }

    #[test]
    fn legacy_requests_take_any_data() {
        for data in [
            r#""You shall not pass!!!""#,
            "42",
            "null",
            "[1,2]",
            r#"{"a":1}"#,
        ] {
            let json = format!(r#"{{"tokens":["1","2"],"data":{data}}}"#);
            let request: LegacyPushRequest = serde_json::from_str(&json).unwrap();
            assert_eq!(request.data.get(), data);
            let body = LegacyMessage {
                entity_type: request.entity_type.as_deref(),
                data: &request.data,
            }
            .body();
            assert_eq!(body, format!(r#""data":{data}}}"#));
        }
        let typed: LegacyPushRequest =
            serde_json::from_str(r#"{"tokens":[7],"data":"x","entityType":"like"}"#).unwrap();
        let body = LegacyMessage {
            entity_type: typed.entity_type.as_deref(),
            data: &typed.data,
        }
        .body();
        assert_eq!(body, r#""entityType":"like","data":"x"}"#);
        assert!(serde_json::from_str::<LegacyPushRequest>(r#"{"tokens":["a"]}"#).is_err());
    }

    #[test]
    fn channel_notifications() {
        let message: ChannelNotification =
            serde_json::from_str(r#"{"toWho":["ann"],"needStore":true,"title":"t"}"#).unwrap();
        assert!(message.need_store);
        assert_eq!(message.category, None);
    }
}
