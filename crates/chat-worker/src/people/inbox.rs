//! The inbox: each user's waiting direct messages, a Redis stream `<prefix>{user:<id>}:inbox`
//! whose entry ids are the messages' stable ids, with a count of waiting messages per sender
//! (`--inbox-max-per-sender`) and a send rate per sender shared by every worker.
//!
//! Architecture invariant (nothing lost): a message is written by one Lua script that trims,
//! checks the bound, appends and publishes atomically (no read-modify-write from a worker), before
//! the sender's ack; it leaves the stream only by XDEL of ids a recipient acknowledged, or by the
//! age bound. Every delivery path reads from here or carries the id the stream gave.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_protocol::{DeviceId, UserId, keys::UserKeys, people::StreamId};
use fred::{
    prelude::LuaInterface,
    prelude::{Client, PubsubInterface, StreamsInterface},
    types::Value,
};

use crate::{
    config::PeopleSettings,
    store::{Store, StoreError},
};

// Run with EVAL, not EVALSHA: a NOSCRIPT answer (fresh or restarted Redis) followed by a reload
// and a retry would let a sender's later message overtake its first one; EVAL commands run in
// the order queued. Redis caches the compiled script by its hash either way.
const SEND_LUA: &str = include_str!("lua/send.lua");
const LOGIN_LUA: &str = include_str!("lua/login.lua");
const REMOVE_LUA: &str = include_str!("lua/remove.lua");
const RATE_LUA: &str = include_str!("lua/rate.lua");

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
    #[error("the recipient has {waiting} messages of this sender waiting")]
    SenderFull { waiting: u64 },
    #[error("the sender is over its rate; retry in {retry_ms} ms")]
    Rate { retry_ms: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unexpected answer from redis: {0}")]
    Protocol(String),
}

impl From<fred::error::Error> for InboxError {
    fn from(err: fred::error::Error) -> Self {
        Self::Store(StoreError::Redis(err))
    }
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

/// A message a `send` stores: its body, who sends it, and the sender's `clientMsgId` if any.
pub struct Outgoing<'a> {
    pub to: &'a UserId,
    pub from: &'a str,
    pub body: &'a str,
    /// The sender's retry token (`clientMsgId`, or a moderation token), if any.
    pub client_msg_id: Option<&'a str>,
}

#[derive(Clone)]
pub struct Inbox {
    store: Store,
    max_messages: u64,
    max_per_sender: u64,
    max_age: Duration,
    retry_window: Duration,
    /// Milliseconds between sends at `--sender-rate-per-sec` (at least 1).
    rate_interval_ms: u64,
    rate_burst: u64,
    offline_channel: String,
    history_channel: String,
}

impl Inbox {
    /// An inbox on `store`'s connection (not in subscriber mode).
    pub fn new(store: Store, settings: &PeopleSettings) -> Self {
        Self {
            store,
            max_messages: settings.inbox_max_messages,
            max_per_sender: settings.inbox_max_per_sender,
            max_age: settings.inbox_max_age(),
            retry_window: settings.retry_window(),
            rate_interval_ms: ((1000.0 / settings.sender_rate_per_sec).round() as u64).max(1),
            rate_burst: settings.sender_rate_burst,
            offline_channel: settings.offline_channel.clone(),
            history_channel: settings.history_channel.clone(),
        }
    }

    fn client(&self) -> &Client {
        self.store.client()
    }

    pub fn keys(&self, user: &UserId) -> UserKeys {
        UserKeys::new(self.store.prefix(), user)
    }

    /// Takes one send from `sender`'s budget, shared by every worker; refuses with the wait.
    pub async fn spend_send(&self, sender: &UserId) -> Result<(), InboxError> {
        let retry_ms: u64 = self
            .client()
            .eval(
                RATE_LUA,
                vec![self.keys(sender).rate],
                vec![
                    self.rate_interval_ms.to_string(),
                    self.rate_burst.to_string(),
                ],
            )
            .await?;
        if retry_ms == 0 {
            Ok(())
        } else {
            Err(InboxError::Rate { retry_ms })
        }
    }

    /// Stores `message` in its recipient's inbox and publishes it on the recipient's channel
    /// (and the hook channels), all in one script; under `--durability replicated` also waits
    /// for a replica to have it. Returns once Redis has it as promised.
    pub async fn send(&self, message: Outgoing<'_>) -> Result<Stored, InboxError> {
        let _timer = crate::metrics::redis_command_timer();
        let keys = self.keys(message.to);
        let mut script_keys = vec![keys.inbox.clone(), keys.senders.clone()];
        if let Some(token) = message.client_msg_id {
            script_keys.push(keys.sent_marker(message.from, token));
        }
        let answer: Vec<Value> = self
            .client()
            .eval(
                SEND_LUA,
                script_keys,
                vec![
                    self.max_messages.to_string(),
                    self.oldest_kept_ms().to_string(),
                    self.max_age.as_millis().to_string(),
                    message.body.to_owned(),
                    keys.channel,
                    self.offline_channel.clone(),
                    self.history_channel.clone(),
                    self.retry_window.as_millis().to_string(),
                    message.from.to_owned(),
                    self.max_per_sender.to_string(),
                ],
            )
            .await?;
        let text = |value: Option<&Value>| value.and_then(Value::as_string);
        let count =
            |value: Option<&Value>, or: u64| text(value).and_then(|n| n.parse().ok()).unwrap_or(or);
        let stored = match (text(answer.first()).as_deref(), text(answer.get(1))) {
            (Some("stored"), Some(id)) => Stored::New(id),
            (Some("duplicate"), Some(id)) => Stored::Duplicate(id),
            (Some("full"), _) => {
                return Err(InboxError::Full {
                    waiting: count(answer.get(1), self.max_messages),
                });
            }
            (Some("sender_full"), _) => {
                return Err(InboxError::SenderFull {
                    waiting: count(answer.get(1), self.max_per_sender),
                });
            }
            _ => {
                return Err(InboxError::Protocol(format!(
                    "send script answered {answer:?}"
                )));
            }
        };
        // A duplicate too: the first send's write may not have reached a replica yet.
        self.store.confirm(&keys.inbox).await?;
        Ok(stored)
    }

    /// Records a login of `user` from `device`: bumps the login generation, publishes the login
    /// frame (older sessions act on it; only for an `exclusive` login) and the hook message,
    /// and counts waiting messages.
    pub async fn login(
        &self,
        user: &UserId,
        device: &DeviceId,
        exclusive: bool,
        hook: Option<(&str, String)>,
    ) -> Result<LoginRecord, InboxError> {
        let _timer = crate::metrics::redis_command_timer();
        let keys = self.keys(user);
        let (hook_channel, hook_message) = hook.unwrap_or_default();
        let (generation, waiting, unread): (u64, u64, u64) = self
            .client()
            .eval(
                LOGIN_LUA,
                vec![keys.login, keys.inbox, keys.unread, keys.senders],
                vec![
                    device.as_str().to_owned(),
                    self.oldest_kept_ms().to_string(),
                    if exclusive {
                        keys.channel
                    } else {
                        String::new()
                    },
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

    /// Up to `count` waiting messages with ids above `after`, oldest first.
    pub async fn after(
        &self,
        user: &UserId,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<Waiting>, InboxError> {
        read_stream(self.client(), self.keys(user).inbox, "b", after, count).await
    }

    /// Removes acknowledged messages (and their senders' counts); answers how many were still
    /// there.
    pub async fn remove(&self, user: &UserId, ids: &[StreamId]) -> Result<u64, InboxError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys = self.keys(user);
        let removed: u64 = self
            .client()
            .eval(
                REMOVE_LUA,
                vec![keys.inbox, keys.senders],
                ids.iter().map(StreamId::to_string).collect::<Vec<_>>(),
            )
            .await?;
        Ok(removed)
    }

    /// Publishes a hook message; answers how many subscribers received it.
    pub async fn publish(&self, channel: &str, message: String) -> Result<u64, InboxError> {
        let _timer = crate::metrics::redis_command_timer();
        Ok(self.client().publish(channel, message).await?)
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
