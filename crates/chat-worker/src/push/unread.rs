//! The unread store: each user's notifications kept until read, a Redis stream
//! `<prefix>unread:<user>` capped in length (oldest dropped first) and in idle lifetime.
//!
//! Storing is one Lua script per chunk of users that appends, trims and publishes the live push
//! frame atomically, so a notification is never announced without being stored or stored twice.

use std::time::Duration;

use chat_protocol::{
    UserId,
    people::{StreamId, UserKeys},
};
use fred::prelude::{Client, LuaInterface};

use crate::{
    config::PushSettings,
    people::inbox::{InboxError, Waiting, delete_entries, read_stream},
};

const STORE_LUA: &str = include_str!("lua/store.lua");
/// Users per script call: bounds how long one call holds Redis.
const USERS_PER_CALL: usize = 500;

#[derive(Clone)]
pub struct Unread {
    client: Client,
    prefix: String,
    max: u64,
    max_age: Duration,
}

impl Unread {
    pub fn new(client: Client, prefix: &str, settings: &PushSettings) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            max: settings.unread_max,
            max_age: Duration::from_secs(settings.unread_max_age_secs),
        }
    }

    /// Stores the notification `body` for every user and publishes it to their channels as
    /// `event`. Answers how many users were online.
    pub async fn store(
        &self,
        users: &[UserId],
        body: &str,
        event: &str,
        remove_on_ack: bool,
    ) -> Result<usize, InboxError> {
        let mut online = 0;
        for chunk in users.chunks(USERS_PER_CALL) {
            let keys: Vec<UserKeys> = chunk
                .iter()
                .map(|user| UserKeys::new(&self.prefix, user))
                .collect();
            let mut args = vec![
                self.max.to_string(),
                self.max_age.as_millis().to_string(),
                body.to_owned(),
                event.to_owned(),
                remove_on_ack.to_string(),
            ];
            args.extend(keys.iter().map(|k| k.channel.clone()));
            let streams: Vec<String> = keys.into_iter().map(|k| k.unread).collect();
            // EVAL, not EVALSHA, for the order of pushes (see people::inbox).
            let _timer = crate::metrics::redis_command_timer();
            let reached: u64 = self.client.eval(STORE_LUA, streams, args).await?;
            online += reached as usize;
        }
        Ok(online)
    }

    /// Every unread notification of `user`, oldest first.
    pub async fn all(&self, user: &UserId) -> Result<Vec<Waiting>, InboxError> {
        let key = UserKeys::new(&self.prefix, user).unread;
        read_stream(
            &self.client,
            key,
            "n",
            StreamId::default(),
            self.max as usize,
        )
        .await
    }

    /// Marks notifications read; answers how many were unread.
    pub async fn remove(&self, user: &UserId, ids: &[StreamId]) -> Result<u64, InboxError> {
        delete_entries(&self.client, UserKeys::new(&self.prefix, user).unread, ids).await
    }
}
