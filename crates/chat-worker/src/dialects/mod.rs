//! The old clients' dialects: an edge adapter that serves the apps and backends of the node.js
//! systems this product replaces, unchanged, on top of today's features (stored, acknowledged,
//! cluster-wide, validated, rate limited). Each dialect translates its events and payload shapes
//! (parsed and checked in [`chat_protocol::dialects`]) into the core's operations ([`People`],
//! [`Pusher`]) and chooses, at login, the session format ([`SessionFormat`]) in which the
//! mailman delivers to its clients. The core never knows a dialect.
//!
//! - [`chat_app`]: the chat + push app (`login {myAuraId}`, free-form `chat`, `geo`, `chat` as a
//!   JSON string acknowledged by a count, `notification` as the published string).
//! - [`services`]: the push service and the notices service (`user_login`, `todo`).
//!
//! The node hands an event here before its own handlers when [`Dialects::claims`] says it is a
//! dialect's: by its name (`user_login`, `todo`), by its payload (`login` with `myAuraId`), or by
//! the socket's login (`chat`, `geo` of a chat app session).
//!
//! [`SessionFormat`]: crate::people::format::SessionFormat

pub mod chat_app;
pub mod services;

use std::sync::Arc;

use chat_protocol::{
    ErrorCode, Limits, ProtocolError, UserId,
    dialects::{TODO_EVENT, USER_LOGIN_EVENT, is_chat_app_login},
    people::{CHAT_EVENT, GEO_EVENT, LOGIN_EVENT},
};
use serde::Serialize;
use socketioxide::extract::{AckSender, SocketRef};

use crate::{
    people::{LoggedIn, LoginSlot, People},
    push::Pusher,
};

/// What the node keeps for a socket that a dialect's handler needs.
pub struct Client<'a> {
    pub socket: &'a SocketRef,
    pub login: &'a LoginSlot,
    /// The user the handshake proved (`--auth jwt`).
    pub authenticated: Option<&'a UserId>,
    /// Takes one event from the socket's rate budget, or refuses it.
    pub spend: &'a (dyn Fn() -> Result<(), ProtocolError> + Send + Sync),
}

pub struct Dialects {
    people: Arc<People>,
    /// `None` when the worker runs without Redis.
    pusher: Option<Pusher>,
    limits: Limits,
}

impl Dialects {
    pub fn new(people: Arc<People>, pusher: Option<Pusher>, limits: Limits) -> Self {
        Self {
            people,
            pusher,
            limits,
        }
    }

    /// Whether `event` is a dialect's. Runs before the core's handlers for every event, so it
    /// answers room events at once.
    pub fn claims(
        &self,
        socket: &SocketRef,
        event: &str,
        data: Option<&serde_json::Value>,
    ) -> bool {
        match event {
            LOGIN_EVENT => is_chat_app_login(data),
            CHAT_EVENT | GEO_EVENT => chat_app::is_session(socket),
            USER_LOGIN_EVENT | TODO_EVENT => true,
            _ => false,
        }
    }

    /// Serves an event [`Self::claims`] said is a dialect's. Every event is paid for from the
    /// socket's rate budget first, and every refusal is answered on the event's ack if it has
    /// one (the old events mostly had none: then the refusal is only logged, at debug).
    pub async fn handle(
        &self,
        client: Client<'_>,
        event: &str,
        data: Option<serde_json::Value>,
        ack: AckSender,
    ) {
        if let Err(err) = (client.spend)() {
            return answer::<()>(ack, Err(err));
        }
        match event {
            LOGIN_EVENT => chat_app::login(self, &client, data, ack).await,
            CHAT_EVENT => match chat_app::chat(self, &client, data).await {
                Ok(sent) => answer(ack, Ok(sent.ack())),
                Err(err) => answer::<()>(ack, Err(err)),
            },
            GEO_EVENT => answer(ack, chat_app::geo(self, &client, data).await),
            USER_LOGIN_EVENT => services::user_login(self, &client, data, ack).await,
            TODO_EVENT => answer(ack, services::todo(self, &client, data).await),
            _ => answer::<()>(
                ack,
                Err(ProtocolError::new(
                    ErrorCode::UnknownEvent,
                    "not an event of an old client",
                )),
            ),
        }
    }

    fn pusher(&self) -> Result<&Pusher, ProtocolError> {
        self.pusher.as_ref().ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::Unavailable,
                "this feature needs Redis, and this worker runs without it",
            )
        })
    }
}

/// Answers a login on its ack (if any), then starts the session's deliveries: the ack goes out
/// before the first waiting message.
fn logged_in(ack: AckSender, outcome: Result<LoggedIn, ProtocolError>) {
    match outcome {
        Ok(logged_in) => {
            answer(ack, Ok(logged_in.ack()));
            (logged_in.start_delivery)();
        }
        Err(err) => answer::<()>(ack, Err(err)),
    }
}

/// Answers an event with its result or `{ok:false, error}`; a refusal is logged at debug.
fn answer<T: Serialize>(ack: AckSender, outcome: Result<T, ProtocolError>) {
    let sent = match &outcome {
        Ok(reply) => ack.send(reply),
        Err(err) => {
            tracing::debug!(code = err.code.as_str(), reason = %err.message, "old client event refused");
            ack.send(&chat_protocol::server::Ack::error(err))
        }
    };
    // Fails only when the client asked for no ack, is gone, or its queue is full: no one to tell.
    let _ = sent;
}
