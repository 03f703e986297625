//! Push notifications from backends: to users (anywhere in the cluster, through their user
//! channels), to everyone or one room (through the broadcast channel), optionally kept in the
//! unread store. Reached by the HTTP API ([`api`]) and the old `notification` Redis channel.
//!
//! A notification is encoded once per request; per user only the Redis commands differ.

pub mod api;
pub mod unread;

use std::time::Duration;

use chat_protocol::{
    Limits, ProtocolError, RoomId, UserId,
    keys::{self, UserKeys},
    people::push_frame,
    push::{
        Category, ChannelNotification, NOTIFICATION_EVENT, NotificationFields, PushResponse,
        parse_users,
    },
};
use fred::{
    prelude::{Client, KeysInterface, LuaInterface, PubsubInterface, SortedSetsInterface},
    types::{Expiration, SetOptions, sorted_sets::ZSort},
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use self::unread::Unread;
use crate::{config::PushSettings, people::inbox::InboxError, store::Store, unix_millis};

const PUBLISH_LUA: &str = include_str!("lua/publish.lua");

/// How long a worker's claim on a `notification` channel message lasts: every worker hears
/// each message, and the first to claim it handles it. Identical messages within this window
/// count as one.
const CLAIM_WINDOW: Duration = Duration::from_secs(10);

/// A push to deliver: the encoded notification and how.
pub struct Push<'a> {
    pub users: &'a [UserId],
    pub event: &'a str,
    /// The notification JSON without its leading `{` (see [`NotificationFields::body`]).
    pub body: &'a str,
    pub store: bool,
    pub remove_on_ack: bool,
    /// The API request's `Idempotency-Key`: a retry with it does nothing twice per user.
    pub idempotency_key: Option<&'a str>,
}

/// Most users one push token keeps (the newest registrations win): a token names one user's
/// session in the old push service, so more is a token shared or reused, and bounded.
const MAX_TOKEN_USERS: i64 = 16;

/// What one publish of a token push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Offline,
    Duplicate,
    Online,
}

impl std::ops::BitOrAssign for Reach {
    /// The most telling of two outcomes: online over duplicate over offline.
    fn bitor_assign(&mut self, other: Self) {
        *self = match (*self, other) {
            (Self::Online, _) | (_, Self::Online) => Self::Online,
            (Self::Duplicate, _) | (_, Self::Duplicate) => Self::Duplicate,
            _ => Self::Offline,
        };
    }
}

/// What crosses the broadcast channel: `{"room":..,"event":..,"payload":..}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Announcement<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<&'a str>,
    pub event: &'a str,
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

#[derive(Clone)]
pub struct Pusher {
    store: Store,
    unread: Unread,
    limits: Limits,
    idempotency_window: Duration,
    /// How long a token's registrations are kept after the last one.
    token_lifetime: Duration,
}

impl Pusher {
    pub fn new(store: Store, unread: Unread, limits: Limits, settings: &PushSettings) -> Self {
        Self {
            store,
            unread,
            limits,
            idempotency_window: Duration::from_secs(settings.idempotency_window_secs),
            token_lifetime: Duration::from_secs(settings.unread_max_age_secs),
        }
    }

    /// Records that a socket of `user` registered the push token `token` (the old push
    /// service's `tokenId`), so that pushes to the token reach the user's sessions of that tag.
    /// Kept `--unread-max-age-secs` after the last registration, at most [`MAX_TOKEN_USERS`]
    /// users per token. One key, in the token's slot.
    pub async fn register_token(&self, token: &UserId, user: &UserId) -> Result<(), InboxError> {
        let key = keys::token_users(self.store.prefix(), token);
        let now = crate::unix_millis() as f64;
        let pipeline = self.client().pipeline();
        // Queuing into a pipeline only buffers the command.
        let _: Result<(), _> = pipeline
            .zadd(&key, None, None, false, false, (now, user.as_str()))
            .await;
        let _: Result<(), _> = pipeline
            .zremrangebyrank(&key, 0, -(MAX_TOKEN_USERS + 1))
            .await;
        let _: Result<(), _> = pipeline
            .pexpire(&key, self.token_lifetime.as_millis() as i64, None)
            .await;
        let _: Vec<fred::types::Value> = pipeline.all().await?;
        Ok(())
    }

    /// Delivers a push to each token: to every session of the user of that id, and to the
    /// sessions of the users who registered the token that registered it (tagged). `online`
    /// counts the tokens that reached a worker holding one of those users' sockets.
    pub async fn push_to_tokens(
        &self,
        tokens: &[UserId],
        event: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Result<PushResponse, InboxError> {
        let mut payload = String::with_capacity(body.len() + 1);
        payload.push('{');
        payload.push_str(body);
        let untagged = push_frame(event, None, &payload);
        let mut response = PushResponse {
            ok: true,
            online: 0,
            stored: 0,
            duplicates: 0,
        };
        for token in tokens {
            let users: Vec<String> = self
                .client()
                .zrange(
                    keys::token_users(self.store.prefix(), token),
                    0,
                    -1,
                    None::<ZSort>,
                    false,
                    None,
                    false,
                )
                .await?;
            let mut reached = self
                .publish_to(token, None, &untagged, idempotency_key)
                .await?;
            for user in users {
                // A registration is stored only from a validated user id; anything else in the
                // set is skipped.
                let Ok(user) = UserId::parse(&user, &self.limits) else {
                    continue;
                };
                if user == *token {
                    continue;
                }
                let tagged = push_frame(event, Some(token.as_str()), &payload);
                reached |= self
                    .publish_to(&user, Some(token), &tagged, idempotency_key)
                    .await?;
            }
            match reached {
                Reach::Online => response.online += 1,
                Reach::Duplicate => response.duplicates += 1,
                Reach::Offline => {}
            }
        }
        Ok(response)
    }

    /// Publishes `frame` to `user`'s channel, once per idempotency key (and tag) if one is given.
    async fn publish_to(
        &self,
        user: &UserId,
        tag: Option<&UserId>,
        frame: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Reach, InboxError> {
        let keys = UserKeys::new(self.store.prefix(), user);
        let Some(key) = idempotency_key else {
            let receivers: u64 = self.client().spublish(&keys.channel, frame).await?;
            return Ok(if receivers > 0 {
                Reach::Online
            } else {
                Reach::Offline
            });
        };
        let marker = match tag {
            Some(tag) => keys.tagged_idempotency_marker(key, tag),
            None => keys.idempotency_marker(key),
        };
        let (online, duplicate): (u64, u64) = self
            .client()
            .eval(
                PUBLISH_LUA,
                vec![marker],
                vec![
                    keys.channel,
                    frame.to_owned(),
                    self.idempotency_window.as_millis().to_string(),
                ],
            )
            .await?;
        Ok(match (online, duplicate) {
            (_, 1) => Reach::Duplicate,
            (1, _) => Reach::Online,
            _ => Reach::Offline,
        })
    }

    fn client(&self) -> &Client {
        self.store.client()
    }

    /// The channel every worker hears announcements on.
    pub fn broadcast_channel(prefix: &str) -> String {
        keys::broadcast_channel(prefix)
    }

    /// Delivers a notification to every logged-in socket of `users`, storing it first if asked.
    pub async fn push(&self, push: Push<'_>) -> Result<PushResponse, InboxError> {
        if push.store {
            let outcome = self
                .unread
                .store(
                    push.users,
                    push.body,
                    push.event,
                    push.remove_on_ack,
                    push.idempotency_key,
                )
                .await?;
            return Ok(PushResponse {
                ok: true,
                online: outcome.online,
                stored: outcome.stored,
                duplicates: outcome.duplicates,
            });
        }
        let mut payload = String::with_capacity(push.body.len() + 1);
        payload.push('{');
        payload.push_str(push.body);
        let frame = push_frame(push.event, None, &payload);
        if let Some(key) = push.idempotency_key {
            return self.publish_once(push.users, &frame, key).await;
        }
        let pipeline = self.client().pipeline();
        for user in push.users {
            // Queuing into a pipeline only buffers the command.
            let _: Result<(), _> = pipeline
                .spublish(
                    UserKeys::new(self.store.prefix(), user).channel,
                    frame.as_str(),
                )
                .await;
        }
        let reached: Vec<u64> = pipeline.all().await?;
        Ok(PushResponse {
            ok: true,
            online: reached.iter().filter(|count| **count > 0).count(),
            stored: 0,
            duplicates: 0,
        })
    }

    /// Publishes `frame` to each user's channel unless this idempotency key reached the user
    /// already (one script per user: its marker and channel share the user's hash slot).
    async fn publish_once(
        &self,
        users: &[UserId],
        frame: &str,
        idempotency_key: &str,
    ) -> Result<PushResponse, InboxError> {
        let mut response = PushResponse {
            ok: true,
            online: 0,
            stored: 0,
            duplicates: 0,
        };
        for user in users {
            let keys = UserKeys::new(self.store.prefix(), user);
            let (online, duplicate): (u64, u64) = self
                .client()
                .eval(
                    PUBLISH_LUA,
                    vec![keys.idempotency_marker(idempotency_key)],
                    vec![
                        keys.channel,
                        frame.to_owned(),
                        self.idempotency_window.as_millis().to_string(),
                    ],
                )
                .await?;
            response.online += online as usize;
            response.duplicates += duplicate as usize;
        }
        Ok(response)
    }

    /// Announces `body` to every connected socket, or to the members of `room`, on every
    /// worker. Answers how many workers heard it.
    pub async fn broadcast(&self, room: Option<&RoomId>, body: &str) -> Result<u64, InboxError> {
        let payload = RawValue::from_string(format!("{{{body}"))
            .map_err(|err| InboxError::Protocol(format!("notification is not JSON: {err}")))?;
        let announcement = Announcement {
            room: room.map(RoomId::as_str),
            event: NOTIFICATION_EVENT,
            payload: &payload,
        };
        let frame = serde_json::to_string(&announcement).unwrap_or_default();
        Ok(self
            .client()
            .publish(Self::broadcast_channel(self.store.prefix()), frame)
            .await?)
    }

    /// Handles a message of the old `notification` channel, if this worker is the first to
    /// claim it: `{toWho, needStore?, category?, ...}` becomes a `notification` whose `data` is
    /// the whole message; with `needStore` it is stored until the client acks it.
    pub async fn on_channel_notification(&self, message: &str) {
        match self.claim(message).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(cause = %err, "could not claim a notification; another worker may handle it");
                return;
            }
        }
        let outcome = async {
            let parsed: ChannelNotification = serde_json::from_str(message).map_err(|err| {
                ProtocolError::new(chat_protocol::ErrorCode::InvalidPayload, err.to_string())
            })?;
            let users = parse_users(parsed.to_who, "toWho", &self.limits)?;
            let data = RawValue::from_string(message.to_owned()).map_err(|err| {
                ProtocolError::new(chat_protocol::ErrorCode::InvalidPayload, err.to_string())
            })?;
            let body = NotificationFields {
                category: parsed.category.unwrap_or(Category::System),
                data: &data,
                ts: unix_millis(),
            }
            .body();
            Ok::<_, ProtocolError>((users, body, parsed.need_store))
        };
        let (users, body, store) = match outcome.await {
            Ok(parts) => parts,
            Err(err) => {
                tracing::warn!(cause = %err, "dropping a bad notification channel message");
                return;
            }
        };
        let push = Push {
            users: &users,
            event: NOTIFICATION_EVENT,
            body: &body,
            store,
            remove_on_ack: store,
            idempotency_key: None,
        };
        match self.push(push).await {
            Ok(counts) => tracing::debug!(
                online = counts.online,
                stored = counts.stored,
                "channel notification delivered"
            ),
            Err(err) => tracing::warn!(cause = %err, "channel notification not delivered"),
        }
    }

    /// Whether this worker is the first to claim `message` within [`CLAIM_WINDOW`].
    async fn claim(&self, message: &str) -> Result<bool, InboxError> {
        let key = keys::claim_key(self.store.prefix(), &fred::util::sha1_hash(message));
        let set: Option<String> = self
            .client()
            .set(
                key,
                1,
                Some(Expiration::PX(CLAIM_WINDOW.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some())
    }
}
