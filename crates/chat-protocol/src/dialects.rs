//! The old clients' events and payloads: the node.js systems this product replaces (their code is
//! in the project's seeds), whose apps are still in users' hands. The worker's `dialects` module
//! translates them into the core's operations; this module only parses and checks them.
//!
//! - **Chat app** (`nodejs-socket-redis`): `login {myAuraId, deviceId}`, `chat {to, ...}` (a
//!   free-form object), `geo {myAuraId?, ...}`; the server sends `chat` as a JSON *string* of an
//!   array of messages, acknowledged with the number of messages handled, and `notification` as
//!   the JSON string the backend published.
//! - **Push service** (`socket-message-push`): `user_login {userId, socketId?, tokenId?}`; the
//!   server sends `receive_message {entityType?, data}` (see [`crate::push::LegacyMessage`]).
//! - **Notices service**: `user_login {userId, socketId?}`, `todo {receiver_id, ...}`; the
//!   server sends `push_message` (unread notices by category) and `todo_message`.
//!
//! Where the old servers trusted a field that names a user (`from`, a `myAuraId` other than the
//! login's, a `socketId` to send to), the field is ignored or refused: a socket acts only as the
//! user it logged in as.

use serde_json::Value;

use crate::{
    ClientMsgId, ErrorCode, FreeForm, Limits, ProtocolError, UserId,
    people::{IdValue, resolve_user},
};

/// The chat app's login field naming the user (the same user as `userId`).
pub const CHAT_APP_USER_FIELD: &str = "myAuraId";
/// The push and notices services' login.
pub const USER_LOGIN_EVENT: &str = "user_login";
/// A notices client's item for another user.
pub const TODO_EVENT: &str = "todo";
/// A `todo` delivered live to its receiver.
pub const TODO_MESSAGE_EVENT: &str = "todo_message";

/// Whether a `login` payload is the chat app's (`myAuraId` instead of `userId`).
pub fn is_chat_app_login(payload: Option<&Value>) -> bool {
    payload.is_some_and(|value| {
        value.get(CHAT_APP_USER_FIELD).is_some() && value.get("userId").is_none()
    })
}

fn field_id(form: &FreeForm, key: &str, what: &str) -> Result<Option<String>, ProtocolError> {
    match form.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value::<IdValue>(value.clone())
            .map(|id| Some(id.into_text()))
            .map_err(|_| {
                ProtocolError::new(
                    ErrorCode::InvalidPayload,
                    format!("{what} must be a string or a number"),
                )
            }),
    }
}

/// The chat app's `login {myAuraId, deviceId, ...}`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAppLogin {
    pub user: UserId,
    /// The device, or `None` when the app sent none (the old server then replaced any older
    /// socket of the user without a `logout` notice, as for the same device).
    pub device: Option<String>,
    /// The whole login object as sent, with `myAuraId` the verified user: the old server
    /// published it as is on the login hook channel, and old backends read its fields.
    pub userinfo: FreeForm,
}

impl ChatAppLogin {
    pub const EXPECTED: &'static str = "login expects {\"myAuraId\": string, \"deviceId\": string} (or {\"userId\", \"deviceId\"})";

    /// Checks the payload; `authenticated` is the user the handshake proved, if any (then
    /// `myAuraId` must name that user).
    pub fn parse(
        payload: Option<Value>,
        limits: &Limits,
        authenticated: Option<&UserId>,
    ) -> Result<Self, ProtocolError> {
        let payload =
            payload.ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, Self::EXPECTED))?;
        let mut userinfo = FreeForm::parse(payload, "login", &[], limits)?;
        let claimed = field_id(&userinfo, CHAT_APP_USER_FIELD, CHAT_APP_USER_FIELD)?
            .map(|id| UserId::parse(&id, limits))
            .transpose()?;
        let user = resolve_user(claimed, authenticated, Self::EXPECTED)?;
        let device = field_id(&userinfo, "deviceId", "deviceId")?;
        userinfo.insert(CHAT_APP_USER_FIELD, Value::String(user.as_str().to_owned()));
        Ok(Self {
            user,
            device,
            userinfo,
        })
    }
}

/// The chat app's `chat {to, ...}`: any fields the app uses, stored and delivered as sent. `from`,
/// `id` and `ts` are the server's (a client's own values are dropped); `clientMsgId`, if any, is
/// the retry token as in today's `chat`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAppMessage {
    pub to: UserId,
    pub client_msg_id: Option<ClientMsgId>,
    /// The app's fields, without `to`, `from`, `id`, `ts` and `clientMsgId`.
    pub fields: FreeForm,
}

impl ChatAppMessage {
    pub const EXPECTED: &'static str = "chat expects {\"to\": string, ...the message's fields}";
    /// Fields the server sets on every direct message.
    pub const SERVER_OWNED: [&'static str; 3] = ["from", "id", "ts"];

    pub fn parse(payload: Option<Value>, limits: &Limits) -> Result<Self, ProtocolError> {
        let payload =
            payload.ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, Self::EXPECTED))?;
        let mut fields = FreeForm::parse(payload, "chat", &Self::SERVER_OWNED, limits)?;
        let to = field_id(&fields, "to", "to")?
            .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, Self::EXPECTED))?;
        let to = UserId::parse(&to, limits)?;
        let client_msg_id = field_id(&fields, "clientMsgId", "clientMsgId")?
            .map(|id| ClientMsgId::parse(&id, limits))
            .transpose()?;
        fields.remove("to");
        fields.remove("clientMsgId");
        if fields.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::InvalidPayload,
                "chat carries nothing but its recipient",
            ));
        }
        Ok(Self {
            to,
            client_msg_id,
            fields,
        })
    }
}

/// The chat app's `geo {myAuraId?, ...}`: published on the geo channel as `{geo, time}`, as the
/// old server did, with `myAuraId` the socket's user (a different one is refused).
pub fn chat_app_geo(
    payload: Option<Value>,
    user: &UserId,
    limits: &Limits,
) -> Result<FreeForm, ProtocolError> {
    let payload = payload.ok_or_else(|| {
        ProtocolError::new(ErrorCode::InvalidPayload, "geo expects a JSON object")
    })?;
    let mut geo = FreeForm::parse(payload, "geo", &[], limits)?;
    if let Some(claimed) = field_id(&geo, CHAT_APP_USER_FIELD, CHAT_APP_USER_FIELD)?
        && claimed != user.as_str()
    {
        return Err(ProtocolError::new(
            ErrorCode::Forbidden,
            format!("this socket is logged in as {user}, not {claimed}"),
        ));
    }
    geo.insert(CHAT_APP_USER_FIELD, Value::String(user.as_str().to_owned()));
    Ok(geo)
}

/// `user_login {userId, socketId?, tokenId?}` of the push and notices services, checked.
/// `socketId` is ignored: the login binds the socket that sends it, never another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLogin {
    pub user: UserId,
    /// The push service's token: `POST /api` with this token reaches this socket.
    pub token: Option<UserId>,
}

impl UserLogin {
    pub const EXPECTED: &'static str =
        "user_login expects {\"userId\": string, \"socketId\"?: string, \"tokenId\"?: string}";

    pub fn parse(
        payload: Option<Value>,
        limits: &Limits,
        authenticated: Option<&UserId>,
    ) -> Result<Self, ProtocolError> {
        let payload =
            payload.ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, Self::EXPECTED))?;
        let form = FreeForm::parse(payload, "user_login", &[], limits)?;
        let claimed = field_id(&form, "userId", "userId")?
            .map(|id| UserId::parse(&id, limits))
            .transpose()?;
        let user = resolve_user(claimed, authenticated, Self::EXPECTED)?;
        let token = field_id(&form, "tokenId", "tokenId")?
            .map(|token| {
                UserId::parse(&token, limits).map_err(|err| {
                    ProtocolError::new(ErrorCode::InvalidPayload, format!("tokenId: {err}"))
                })
            })
            .transpose()?;
        // A token cannot be verified: with handshake authentication, a socket may not claim
        // one that would bring it another user's pushes.
        if let (Some(_), Some(token)) = (authenticated, &token)
            && *token != user
        {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "with handshake authentication, tokenId must be the user id",
            ));
        }
        Ok(Self { user, token })
    }
}

/// A notices client's `todo {receiver_id, ...}`: stored for the receiver and delivered as sent,
/// with `from` the sender (a client's own `from` is dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct Todo {
    pub receiver: UserId,
    /// The whole object, `receiver_id` included, without `from`.
    pub item: FreeForm,
}

impl Todo {
    pub const EXPECTED: &'static str = "todo expects {\"receiver_id\": string, ...}";

    pub fn parse(payload: Option<Value>, limits: &Limits) -> Result<Self, ProtocolError> {
        let payload =
            payload.ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, Self::EXPECTED))?;
        let item = FreeForm::parse(payload, "todo", &["from"], limits)?;
        let receiver = field_id(&item, "receiver_id", "receiver_id")?
            .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, Self::EXPECTED))?;
        Ok(Self {
            receiver: UserId::parse(&receiver, limits)?,
            item,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id, &limits()).unwrap()
    }

    #[test]
    fn chat_app_logins() {
        assert!(is_chat_app_login(Some(
            &json!({"myAuraId": "ann", "deviceId": "d"})
        )));
        assert!(!is_chat_app_login(Some(
            &json!({"userId": "ann", "deviceId": "d"})
        )));
        assert!(!is_chat_app_login(None));
        let login = ChatAppLogin::parse(
            Some(json!({"myAuraId": 42, "deviceId": "phone", "pushToken": "t"})),
            &limits(),
            None,
        )
        .unwrap();
        assert_eq!(login.user.as_str(), "42");
        assert_eq!(login.device.as_deref(), Some("phone"));
        assert_eq!(login.userinfo.get("pushToken"), Some(&json!("t")));
        assert_eq!(login.userinfo.get("myAuraId"), Some(&json!("42")));
        let anonymous =
            ChatAppLogin::parse(Some(json!({"myAuraId": "ann"})), &limits(), None).unwrap();
        assert_eq!(anonymous.device, None);
        let forged = ChatAppLogin::parse(
            Some(json!({"myAuraId": "bob", "deviceId": "d"})),
            &limits(),
            Some(&user("ann")),
        )
        .unwrap_err();
        assert_eq!(forged.code, ErrorCode::Forbidden);
        let bad =
            ChatAppLogin::parse(Some(json!({"myAuraId": "a b"})), &limits(), None).unwrap_err();
        assert_eq!(bad.code, ErrorCode::InvalidUser);
        let typed =
            ChatAppLogin::parse(Some(json!({"myAuraId": true})), &limits(), None).unwrap_err();
        assert_eq!(typed.code, ErrorCode::InvalidPayload);
    }

    #[test]
    fn chat_app_messages_lose_the_servers_fields() {
        let message = ChatAppMessage::parse(
            Some(json!({"to": "bob", "from": "mallory", "content": "hi", "type": 1, "time": 5, "id": "x"})),
            &limits(),
        )
        .unwrap();
        assert_eq!(message.to.as_str(), "bob");
        assert_eq!(message.fields.get("from"), None);
        assert_eq!(message.fields.get("to"), None);
        assert_eq!(message.fields.get("content"), Some(&json!("hi")));
        let code = |value| {
            ChatAppMessage::parse(Some(value), &limits())
                .unwrap_err()
                .code
        };
        assert_eq!(code(json!({"content": "hi"})), ErrorCode::InvalidPayload);
        assert_eq!(code(json!({"to": "bob"})), ErrorCode::InvalidPayload);
        assert_eq!(
            code(json!({"to": "b b", "content": "x"})),
            ErrorCode::InvalidUser
        );
        assert_eq!(
            code(json!({"to": "bob", "content": "\u{0}"})),
            ErrorCode::InvalidText
        );
    }

    #[test]
    fn geo_carries_the_sockets_user() {
        let geo = chat_app_geo(Some(json!({"lat": 1.5})), &user("ann"), &limits()).unwrap();
        assert_eq!(geo.get("myAuraId"), Some(&json!("ann")));
        let forged = chat_app_geo(Some(json!({"myAuraId": "bob"})), &user("ann"), &limits());
        assert_eq!(forged.unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn user_logins_and_todos() {
        let login = UserLogin::parse(
            Some(json!({"userId": 7, "socketId": "someone-else", "tokenId": "t-1"})),
            &limits(),
            None,
        )
        .unwrap();
        assert_eq!(
            (
                login.user.as_str(),
                login.token.as_ref().map(UserId::as_str)
            ),
            ("7", Some("t-1"))
        );
        let claimed = UserLogin::parse(
            Some(json!({"userId": "ann", "tokenId": "bob"})),
            &limits(),
            Some(&user("ann")),
        );
        assert_eq!(claimed.unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(
            UserLogin::parse(Some(json!({"socketId": "x"})), &limits(), None)
                .unwrap_err()
                .code,
            ErrorCode::InvalidPayload
        );
        let todo = Todo::parse(
            Some(json!({"receiver_id": 9, "from": "x", "title": "pay"})),
            &limits(),
        )
        .unwrap();
        assert_eq!(todo.receiver.as_str(), "9");
        assert_eq!(todo.item.get("from"), None);
        assert_eq!(todo.item.get("receiver_id"), Some(&json!(9)));
        assert_eq!(
            Todo::parse(Some(json!({"title": "x"})), &limits())
                .unwrap_err()
                .code,
            ErrorCode::InvalidPayload
        );
    }
}
