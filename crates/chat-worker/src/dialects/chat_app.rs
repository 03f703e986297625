//! The old chat + push app (`nodejs-socket-redis`): `login {myAuraId, deviceId}` logs in as
//! `myAuraId`; `chat {to, ...}` is a free-form object stored and delivered with every field kept
//! (`from`, `id`, `ts` set by the server); `geo` goes to the geo channel as `{geo, time}`. Its
//! sessions take `chat` as a JSON *string* of an array of messages, acknowledged with the number
//! of messages handled (exactly that many, from the front, are removed), and `notification` as
//! the JSON string the backend published; unread notifications come one by one at login, each
//! removed by its ack, as the old server sent its stored ones.
//!
//! Differences from the old server, all on the safe side: the sender is the socket's login, not
//! the message's `from`; `geo` does not log in (the old server took its `myAuraId` as a login)
//! and may only name the socket's user; the login hook keeps the app's login object (backends
//! read its fields) but carries the verified user; no logout hook is published for these
//! sessions, since old backends take every message on the login channel for a login.

use std::{borrow::Cow, sync::Arc};

use chat_protocol::{
    DeviceId, ProtocolError,
    dialects::{ChatAppLogin, ChatAppMessage, chat_app_geo},
    people::Login,
    push::NOTIFICATION_EVENT,
    server::Ack,
};
use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::extract::{AckSender, SocketRef};

use super::{Client, Dialects, logged_in};
use crate::{
    people::{
        Content, LoginOptions, Sent,
        format::{ChatAck, SessionFormat, UnreadAtLogin, json_array, notification_data},
    },
    unix_millis,
};

/// The device of a chat app login without `deviceId`: every such login of a user replaces the
/// previous one quietly, as the old server did (it sent `logout` only between two known
/// devices).
const NO_DEVICE: &str = "chat-app";

/// Marks a socket logged in (or logging in) through the chat app's `login`: its `chat` and `geo`
/// are the app's.
#[derive(Debug, Clone, Copy)]
struct ChatAppSession;

/// Whether the socket logged in through the chat app's `login`.
pub fn is_session(socket: &SocketRef) -> bool {
    socket.extensions.get::<ChatAppSession>().is_some()
}

/// `login {myAuraId, deviceId, ...}`.
pub async fn login(
    dialects: &Dialects,
    client: &Client<'_>,
    data: Option<serde_json::Value>,
    ack: AckSender,
) {
    let outcome = async {
        let parsed = ChatAppLogin::parse(data, &dialects.limits, client.authenticated)?;
        let device = DeviceId::parse(
            parsed.device.as_deref().unwrap_or(NO_DEVICE),
            &dialects.limits,
        )?;
        let options = LoginOptions {
            format: Arc::new(ChatAppFormat),
            exclusive: true,
            hook_fields: Some(parsed.userinfo.fields().clone()),
            logout_hook: false,
            tag: None,
        };
        // Marked before the login completes, so that a `chat` sent right behind the login is
        // the app's (it is refused as not logged in until the login completes, as in the core).
        client.socket.extensions.insert(ChatAppSession);
        dialects
            .people
            .login_as(
                client.socket,
                client.login,
                Login {
                    user: parsed.user,
                    device,
                },
                options,
            )
            .await
    };
    logged_in(ack, outcome.await);
}

/// `chat {to, ...}`: stored for `to` with every field the app sent, from the socket's user.
pub async fn chat(
    dialects: &Dialects,
    client: &Client<'_>,
    data: Option<serde_json::Value>,
) -> Result<Sent, ProtocolError> {
    let sender = client.login.settled_identity().await?;
    let message = ChatAppMessage::parse(data, &dialects.limits)?;
    dialects
        .people
        .send_message(
            &sender,
            &message.to,
            Content::Fields(&message.fields),
            message.client_msg_id.as_ref(),
        )
        .await
}

/// `geo {...}`: published as `{"geo": {...}, "time": <ms>}`, the old server's message.
pub async fn geo(
    dialects: &Dialects,
    client: &Client<'_>,
    data: Option<serde_json::Value>,
) -> Result<Ack<'static>, ProtocolError> {
    let sender = client.login.settled_identity().await?;
    let geo = chat_app_geo(data, &sender.user, &dialects.limits)?;
    #[derive(Serialize)]
    struct GeoMessage<'a> {
        geo: &'a serde_json::Map<String, serde_json::Value>,
        time: u64,
    }
    let message = serde_json::to_string(&GeoMessage {
        geo: geo.fields(),
        time: unix_millis(),
    })
    .unwrap_or_default();
    dialects.people.publish_geo(message).await?;
    Ok(Ack::ok())
}

/// How the chat app takes its deliveries.
#[derive(Debug, Clone, Copy)]
pub struct ChatAppFormat;

impl SessionFormat for ChatAppFormat {
    fn chat_ack(&self) -> ChatAck {
        ChatAck::Count
    }

    /// A JSON string of the array of messages: the old server emitted its stored list, a
    /// string, as it was.
    fn batch(&self, messages: &[&str]) -> Option<Box<RawValue>> {
        let array = json_array(messages)?;
        serde_json::value::to_raw_value(array.get()).ok()
    }

    fn live<'a>(&self, message: &'a RawValue) -> Cow<'a, RawValue> {
        match self.batch(&[message.get()]) {
            Some(batch) => Cow::Owned(batch),
            None => Cow::Borrowed(message),
        }
    }

    /// `notification`: the JSON string of the notification's `data`, which for a message of the
    /// `notification` channel is the message exactly as published. Other pushes as they are.
    fn push<'a>(&self, event: &str, payload: &'a RawValue) -> Cow<'a, RawValue> {
        if event != NOTIFICATION_EVENT {
            return Cow::Borrowed(payload);
        }
        match notification_data(payload)
            .and_then(|data| serde_json::value::to_raw_value(data.get()).ok())
        {
            Some(text) => Cow::Owned(text),
            None => Cow::Borrowed(payload),
        }
    }

    fn unread_at_login(&self) -> UnreadAtLogin {
        UnreadAtLogin::EachAs(NOTIFICATION_EVENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_is_a_json_string_of_the_list() {
        let batch = ChatAppFormat
            .batch(&[
                r#"{"id":"1-0","content":"a"}"#,
                r#"{"id":"2-0","content":"b"}"#,
            ])
            .unwrap();
        let text: String = serde_json::from_str(batch.get()).unwrap();
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["content"], "b");
    }

    #[test]
    fn notification_is_the_published_string() {
        let published = r#"{"toWho":["bob"], "needStore":true,"title":"t"}"#;
        let payload = RawValue::from_string(format!(
            r#"{{"id":"1-0","category":"system","data":{published},"ts":5}}"#
        ))
        .unwrap();
        let shaped = ChatAppFormat.push(NOTIFICATION_EVENT, &payload);
        let text: String = serde_json::from_str(shaped.get()).unwrap();
        assert_eq!(text, published, "byte for byte, white space included");
        let other = RawValue::from_string(r#"{"data":1}"#.to_owned()).unwrap();
        assert_eq!(
            ChatAppFormat.push("receive_message", &other).get(),
            other.get()
        );
    }
}
