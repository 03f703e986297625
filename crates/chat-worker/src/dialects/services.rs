//! The old push service (`socket-message-push`) and notices service: `user_login {userId,
//! socketId?, tokenId?}` binds the socket to the user, beside the user's other sockets (no
//! kick-out either way); `todo {receiver_id, ...}` from a logged-in socket is kept in the
//! receiver's unread store (category `todo`) and delivered live as `todo_message`.
//!
//! Such a session takes pushes (`receive_message` from `POST /api`, `todo_message`, the
//! `push_message` of unread notices after its login) but no direct messages: those wait for the
//! user's chat client. A `tokenId` is registered for the token ([`Pusher::register_token`]) so
//! that `POST /api` with the token reaches this socket, wherever it is in the cluster.
//!
//! Differences from the old services, all on the safe side: `socketId` is ignored (the old
//! server sent the user's notices to whatever socket id the client named); with `--auth jwt` the
//! `userId` must be the token's subject and a `tokenId` the user id; a `todo` needs a login, and
//! its `from` is the sender's user id, never the client's.
//!
//! [`Pusher::register_token`]: crate::push::Pusher::register_token

use std::{borrow::Cow, sync::Arc};

use chat_protocol::{
    DeviceId, ErrorCode, ProtocolError,
    dialects::{TODO_MESSAGE_EVENT, Todo, UserLogin},
    people::Login,
    push::{Category, NotificationFields},
    server::Ack,
};
use serde_json::value::RawValue;
use socketioxide::extract::AckSender;

use super::{Client, Dialects, logged_in};
use crate::{
    people::{
        LoginOptions,
        format::{SessionFormat, notification_data},
    },
    push::Push,
    unix_millis,
};

/// `user_login {userId, socketId?, tokenId?}`.
pub async fn user_login(
    dialects: &Dialects,
    client: &Client<'_>,
    data: Option<serde_json::Value>,
    ack: AckSender,
) {
    let outcome = async {
        let parsed = UserLogin::parse(data, &dialects.limits, client.authenticated)?;
        // Each socket is a device of its own: no login replaces another.
        let device = DeviceId::parse(&client.socket.id.to_string(), &dialects.limits)?;
        if let Some(token) = &parsed.token {
            dialects
                .pusher()?
                .register_token(token, &parsed.user)
                .await
                .map_err(|err| {
                    tracing::debug!(cause = %err, "token registration failed");
                    ProtocolError::new(
                        ErrorCode::Unavailable,
                        "the push store did not answer; retry the login",
                    )
                })?;
        }
        let options = LoginOptions {
            format: Arc::new(ServiceFormat),
            exclusive: false,
            hook_fields: None,
            logout_hook: true,
            tag: parsed.token,
        };
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

/// `todo {receiver_id, ...}`: kept for the receiver and pushed to its sockets as `todo_message`.
pub async fn todo(
    dialects: &Dialects,
    client: &Client<'_>,
    data: Option<serde_json::Value>,
) -> Result<Ack<'static>, ProtocolError> {
    let sender = client.login.settled_identity().await?;
    let mut todo = Todo::parse(data, &dialects.limits)?;
    let pusher = dialects.pusher()?;
    todo.item
        .insert("from", serde_json::Value::String(sender.user.to_string()));
    // Paid for like a direct message: counted per user across the cluster.
    dialects.people.spend_send(&sender.user).await?;
    let item = RawValue::from_string(todo.item.to_json())
        .map_err(|_| ProtocolError::new(ErrorCode::InvalidPayload, "todo is not a JSON object"))?;
    let body = NotificationFields {
        category: Category::Todo,
        data: &item,
        ts: unix_millis(),
    }
    .body();
    pusher
        .push(Push {
            users: std::slice::from_ref(&todo.receiver),
            event: TODO_MESSAGE_EVENT,
            body: &body,
            store: true,
            remove_on_ack: false,
            idempotency_key: None,
        })
        .await
        .map_err(|err| {
            tracing::debug!(cause = %err, "todo not confirmed");
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the notice store did not answer in time, so the todo may or may not have been stored",
            )
        })?;
    Ok(Ack::ok())
}

/// How push and notices clients take their deliveries.
#[derive(Debug, Clone, Copy)]
pub struct ServiceFormat;

impl SessionFormat for ServiceFormat {
    fn takes_direct_messages(&self) -> bool {
        false
    }

    /// `todo_message`: the todo object as its sender sent it (with `from`), as the old service
    /// emitted it. Other pushes as they are.
    fn push<'a>(&self, event: &str, payload: &'a RawValue) -> Cow<'a, RawValue> {
        if event != TODO_MESSAGE_EVENT {
            return Cow::Borrowed(payload);
        }
        match notification_data(payload) {
            Some(data) => Cow::Owned(data.to_owned()),
            None => Cow::Borrowed(payload),
        }
    }
}
