//! The unread store: each user's notifications kept until read, a Redis stream
//! `<prefix>{user:<id>}:unread` capped in length (oldest dropped first) and in idle lifetime.
//!
//! Storing is one Lua script per user that appends, trims and publishes the live push frame
//! atomically, so a notification is never announced without being stored; an API request's
//! idempotency key makes a retry store nothing twice.

use std::time::Duration;

use chat_protocol::{UserId, keys::UserKeys, people::StreamId};
use fred::prelude::{Client, LuaInterface};

use crate::{
    config::PushSettings,
    people::inbox::{InboxError, Waiting, delete_entries, read_stream},
    store::Store,
};

const STORE_LUA: &str = include_str!("lua/store.lua");

/// What storing a notification for a list of users did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Users whose channel had a subscriber (a socket somewhere).
    pub online: usize,
    /// Users it was stored for now.
    pub stored: usize,
    /// Users it had been stored for already under the same idempotency key.
    pub duplicates: usize,
}

#[derive(Clone)]
pub struct Unread {
    store: Store,
    max: u64,
    max_age: Duration,
    idempotency_window: Duration,
}

impl Unread {
    pub fn new(store: Store, settings: &PushSettings) -> Self {
        Self {
            store,
            max: settings.unread_max,
            max_age: Duration::from_secs(settings.unread_max_age_secs),
            idempotency_window: Duration::from_secs(settings.idempotency_window_secs),
        }
    }

    fn client(&self) -> &Client {
        self.store.client()
    }

    fn keys(&self, user: &UserId) -> UserKeys {
        UserKeys::new(self.store.prefix(), user)
    }

    /// Stores the notification `body` for every user and publishes it to their channels as
    /// `event`, one script per user (each user's keys are in their own hash slot). With an
    /// idempotency key, a user it was stored for already under that key is skipped. Under
    /// `--durability replicated`, each store is confirmed by a replica before the next.
    pub async fn store(
        &self,
        users: &[UserId],
        body: &str,
        event: &str,
        remove_on_ack: bool,
        idempotency_key: Option<&str>,
    ) -> Result<StoreOutcome, InboxError> {
        let mut outcome = StoreOutcome::default();
        for user in users {
            let keys = self.keys(user);
            let mut script_keys = vec![keys.unread.clone()];
            if let Some(key) = idempotency_key {
                script_keys.push(keys.idempotency_marker(key));
            }
            // EVAL, not EVALSHA, for the order of pushes (see people::inbox).
            let _timer = crate::metrics::redis_command_timer();
            let (online, duplicate): (u64, u64) = self
                .client()
                .eval(
                    STORE_LUA,
                    script_keys,
                    vec![
                        self.max.to_string(),
                        self.max_age.as_millis().to_string(),
                        body.to_owned(),
                        event.to_owned(),
                        remove_on_ack.to_string(),
                        keys.channel,
                        self.idempotency_window.as_millis().to_string(),
                    ],
                )
                .await?;
            self.store.confirm(&keys.unread).await?;
            outcome.online += online as usize;
            if duplicate == 1 {
                outcome.duplicates += 1;
            } else {
                outcome.stored += 1;
            }
        }
        Ok(outcome)
    }

    /// Every unread notification of `user`, oldest first.
    pub async fn all(&self, user: &UserId) -> Result<Vec<Waiting>, InboxError> {
        read_stream(
            self.client(),
            self.keys(user).unread,
            "n",
            StreamId::default(),
            self.max as usize,
        )
        .await
    }

    /// Marks notifications read; answers how many were unread.
    pub async fn remove(&self, user: &UserId, ids: &[StreamId]) -> Result<u64, InboxError> {
        delete_entries(self.client(), self.keys(user).unread, ids).await
    }
}
