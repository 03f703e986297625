//! The inbox: each user's waiting direct messages, a Redis stream `<prefix>inbox:<user>` whose
//! entry ids are the messages' stable ids.
//!
//! Architecture invariant (nothing lost): a message is written by one Lua script that trims,
//! checks the bound, appends and publishes atomically (no read-modify-write from a worker), before
//! the sender's ack; it leaves the stream only by XDEL of ids a recipient acknowledged, or by the
//! age bound. Every delivery path reads from here or carries the id the stream gave.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_protocol::{
    DeviceId, UserId,
    people::{StreamId, UserKeys},
};
use fred::{
    prelude::LuaInterface,
    prelude::{Client, HashesInterface, PubsubInterface, StreamsInterface},
    types::Value,
};

use crate::config::PeopleSettings;

// Run with EVAL, not EVALSHA: a NOSCRIPT answer (fresh or restarted Redis) followed by a reload
// and a retry would let a sender's later message overtake its first one; EVAL commands run in
// the order queued. Redis caches the compiled script by its hash either way.
const SEND_LUA: &str = include_str!("lua/send.lua");
const LOGIN_LUA: &str = include_str!("lua/login.lua");

/// What became of a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Appended under this id.
    New(String),
    /// The sender's `clientMsgId` was used before; this is the first send's id.
    Duplicate(String),
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("the recipient's inbox is full ({waiting} messages waiting)")]
    Full { waiting: u64 },
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected answer from redis: {0}")]
    Protocol(String),
}

/// One message read back from an inbox: its id and its body (see [`chat_protocol::people`]).
#[derive(Debug, Clone)]
pub struct Waiting {
    pub id: StreamId,
    pub body: String,
}

/// The outcome of a login script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRecord {
    /// The user's login counter after this login; higher logins win.
    pub generation: u64,
    /// Direct messages waiting.
    pub waiting: u64,
    /// Unread notifications.
    pub unread: u64,
}

/// A message a `send` stores: its body, and where it is announced.
pub struct Outgoing<'a> {
    pub to: &'a UserId,
    pub body: &'a str,
    /// Key marking the sender's `clientMsgId` as used, if the sender gave one.
    pub sent_marker: Option<&'a str>,
}

#[derive(Clone)]
pub struct Inbox {
    client: Client,
    prefix: String,
    max_messages: u64,
    max_age: Duration,
    retry_window: Duration,
    offline_channel: String,
    history_channel: String,
}

impl Inbox {
    /// An inbox on `client`, a connection that is not in subscriber mode.
    pub fn new(client: Client, prefix: &str, settings: &PeopleSettings) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            max_messages: settings.inbox_max_messages,
            max_age: settings.inbox_max_age(),
            retry_window: settings.retry_window(),
            offline_channel: settings.offline_channel.clone(),
            history_channel: settings.history_channel.clone(),
        }
    }

    pub fn keys(&self, user: &UserId) -> UserKeys {
        UserKeys::new(&self.prefix, user)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Stores `message` in its recipient's inbox, publishes it on the recipient's channel (and
    /// the hook channels), all in one script. Returns once Redis has it.
    pub async fn send(&self, message: Outgoing<'_>) -> Result<Stored, InboxError> {
        let _timer = crate::metrics::redis_command_timer();
        let keys = self.keys(message.to);
        let answer: Vec<Value> = self
            .client
            .eval(
                SEND_LUA,
                vec![
                    keys.inbox,
                    message.sent_marker.unwrap_or_default().to_owned(),
                ],
                vec![
                    self.max_messages.to_string(),
                    self.oldest_kept_ms().to_string(),
                    self.max_age.as_millis().to_string(),
                    message.body.to_owned(),
                    keys.channel,
                    self.offline_channel.clone(),
                    self.history_channel.clone(),
                    self.retry_window.as_millis().to_string(),
                ],
            )
            .await?;
        let text = |value: Option<&Value>| value.and_then(Value::as_string);
        match (text(answer.first()).as_deref(), text(answer.get(1))) {
            (Some("stored"), Some(id)) => Ok(Stored::New(id)),
            (Some("duplicate"), Some(id)) => Ok(Stored::Duplicate(id)),
            (Some("full"), Some(waiting)) => Err(InboxError::Full {
                waiting: waiting.parse().unwrap_or(self.max_messages),
            }),
            _ => Err(InboxError::Protocol(format!(
                "send script answered {answer:?}"
            ))),
        }
    }

    /// Records a login of `user` from `device`: bumps the login generation, publishes the login
    /// frame (older sessions act on it) and the hook message, and counts waiting messages.
    pub async fn login(
        &self,
        user: &UserId,
        device: &DeviceId,
        hook: Option<(&str, String)>,
    ) -> Result<LoginRecord, InboxError> {
        let _timer = crate::metrics::redis_command_timer();
        let keys = self.keys(user);
        let (hook_channel, hook_message) = hook.unwrap_or_default();
        let (generation, waiting, unread): (u64, u64, u64) = self
            .client
            .eval(
                LOGIN_LUA,
                vec![keys.login, keys.inbox, keys.unread],
                vec![
                    device.as_str().to_owned(),
                    self.oldest_kept_ms().to_string(),
                    keys.channel,
                    hook_channel.to_owned(),
                    hook_message,
                ],
            )
            .await?;
        Ok(LoginRecord {
            generation,
            waiting,
            unread,
        })
    }

    /// The user's latest login generation and device, if any.
    pub async fn latest_login(&self, user: &UserId) -> Result<Option<(u64, String)>, InboxError> {
        let (generation, device): (Option<u64>, Option<String>) = self
            .client
            .hmget(self.keys(user).login, vec!["generation", "device"])
            .await?;
        Ok(generation.zip(device))
    }

    /// Up to `count` waiting messages with ids above `after`, oldest first.
    pub async fn after(
        &self,
        user: &UserId,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<Waiting>, InboxError> {
        read_stream(&self.client, self.keys(user).inbox, "b", after, count).await
    }

    /// Removes acknowledged messages.
    pub async fn remove(&self, user: &UserId, ids: &[StreamId]) -> Result<(), InboxError> {
        delete_entries(&self.client, self.keys(user).inbox, ids)
            .await
            .map(drop)
    }

    /// Publishes a hook message; answers how many subscribers received it.
    pub async fn publish(&self, channel: &str, message: String) -> Result<u64, InboxError> {
        let _timer = crate::metrics::redis_command_timer();
        Ok(self.client.publish(channel, message).await?)
    }

    /// Entries older than this (unix ms) are past the age bound.
    fn oldest_kept_ms(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(self.max_age).as_millis() as u64
    }
}

/// Up to `count` entries of stream `key` with ids above `after`, oldest first, each with the
/// value of its field `field` (entries without it are skipped with a warning).
pub async fn read_stream(
    client: &Client,
    key: String,
    field: &str,
    after: StreamId,
    count: usize,
) -> Result<Vec<Waiting>, InboxError> {
    let _timer = crate::metrics::redis_command_timer();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = client
        .xrange_values(key.as_str(), format!("({after}"), "+", Some(count as u64))
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, mut fields)| {
            let parsed = id.parse().ok();
            let body = fields.remove(field);
            if parsed.is_none() || body.is_none() {
                tracing::warn!(key, id, "skipping a malformed stream entry");
            }
            Some(Waiting {
                id: parsed?,
                body: body?,
            })
        })
        .collect())
}

/// Deletes entries of stream `key`; answers how many existed.
pub async fn delete_entries(
    client: &Client,
    key: String,
    ids: &[StreamId],
) -> Result<u64, InboxError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = ids.iter().map(StreamId::to_string).collect();
    let _timer = crate::metrics::redis_command_timer();
    Ok(client.xdel(key, ids).await?)
}
