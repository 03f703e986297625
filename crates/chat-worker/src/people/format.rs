//! How a logged-in socket takes its deliveries: the shape of its `chat` events and what its acks
//! mean, how pushes reach it, how its unread notifications arrive after login. The core's own
//! shapes are [`Standard`]; an old client dialect ([`crate::dialects`]) brings its own format,
//! chosen per session at login, so the mailman asks the session's format instead of knowing any
//! dialect.

use std::{borrow::Cow, fmt};

use serde_json::value::RawValue;

/// What the client's ack of a `chat` event acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatAck {
    /// Any ack acknowledges every message the event carried. Events go out as messages come,
    /// within the delivery window.
    Whole,
    /// The ack is the number of messages the client handled, from the front of the event; the
    /// others stay waiting. One event is in flight at a time, and each carries the waiting
    /// messages from the oldest (so the ones not handled come again, first, with the next
    /// event).
    Count,
}

/// How unread notifications reach a session after its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadAtLogin {
    /// One `push_message` with every unread notification grouped by category.
    Grouped,
    /// One event per notification (shaped by [`SessionFormat::push`]), each sent with an ack
    /// that removes it from the unread store.
    EachAs(&'static str),
}

/// A session's delivery format. Every method has the core's behaviour as its default.
pub trait SessionFormat: Send + Sync + fmt::Debug + 'static {
    /// Whether the session takes direct messages at all (a push-only client does not: its
    /// user's messages wait for the user's chat client).
    fn takes_direct_messages(&self) -> bool {
        true
    }

    fn chat_ack(&self) -> ChatAck {
        ChatAck::Whole
    }

    /// The payload of a `chat` event carrying `messages` (JSON objects, oldest first), or
    /// `None` if it cannot be encoded. Core: an array.
    fn batch(&self, messages: &[&str]) -> Option<Box<RawValue>> {
        json_array(messages)
    }

    /// The payload of a `chat` event carrying one message as it arrived. Core: the message.
    fn live<'a>(&self, message: &'a RawValue) -> Cow<'a, RawValue> {
        Cow::Borrowed(message)
    }

    /// A push (an event and its payload) as this client takes it. Core: as it is.
    fn push<'a>(&self, event: &str, payload: &'a RawValue) -> Cow<'a, RawValue> {
        let _ = event;
        Cow::Borrowed(payload)
    }

    fn unread_at_login(&self) -> UnreadAtLogin {
        UnreadAtLogin::Grouped
    }
}

/// The core's delivery format (README "People").
#[derive(Debug, Clone, Copy, Default)]
pub struct Standard;

impl SessionFormat for Standard {}

/// The `data` of a notification payload (`{id?, category, data, ts}`), as its raw JSON.
pub fn notification_data(payload: &RawValue) -> Option<&RawValue> {
    #[derive(serde::Deserialize)]
    struct Notification<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
    }
    serde_json::from_str::<Notification<'_>>(payload.get())
        .ok()
        .map(|notification| notification.data)
}

/// `[a,b,c]` of JSON texts that are each valid JSON.
pub fn json_array(items: &[&str]) -> Option<Box<RawValue>> {
    let size = items.iter().map(|item| item.len() + 1).sum::<usize>() + 2;
    let mut json = String::with_capacity(size);
    json.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        json.push_str(item);
    }
    json.push(']');
    RawValue::from_string(json).ok()
}
