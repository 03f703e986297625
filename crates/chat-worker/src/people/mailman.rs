//! The mailman: one task per logged-in socket that delivers the user's direct messages as `chat`
//! events with acks, and removes from the inbox what the client acknowledged. It also sends the
//! unread notifications once after login (`push_message`) and live pushes.
//!
//! First it empties the inbox in batches, oldest first, each batch awaiting its ack (or the ack
//! timeout) before the next. Then it delivers live mail as it comes. It remembers the highest id
//! it delivered, so a live message already sent in a batch is not sent twice; ids only grow, so
//! the order is the inbox's order. Anything unacknowledged stays in the inbox for the next login.

use std::{future::Future, pin::Pin, sync::atomic::Ordering, time::Duration};

use std::collections::BTreeMap;

use chat_protocol::{
    UserId,
    people::{CHAT_EVENT, StreamId, message_json},
    push::{Category, PUSH_MESSAGE_EVENT, StoredCategory},
};
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use socketioxide::{AckError, SendError, extract::SocketRef};

use super::{
    inbox::{Inbox, Waiting},
    sessions::{Mail, Mailbox},
};
use crate::push::unread::Unread;

/// Which store an acked delivery is removed from.
#[derive(Debug, Clone, Copy)]
enum Store {
    Inbox,
    Unread,
}

type PendingAck = Pin<Box<dyn Future<Output = (Store, Vec<StreamId>, bool)> + Send>>;

pub struct Mailman {
    pub inbox: Inbox,
    pub unread: Unread,
    pub user: UserId,
    pub socket: SocketRef,
    pub batch: usize,
    pub ack_timeout: Duration,
}

/// Whether the socket can still be written to.
enum Delivery {
    Sent,
    SocketGone,
}

impl Mailman {
    pub async fn run(self, mailbox: Mailbox) {
        let Mailbox { mut mail, behind } = mailbox;
        let mut delivered = StreamId::default();
        let mut acks: FuturesUnordered<PendingAck> = FuturesUnordered::new();
        self.send_unread().await;
        if let Delivery::SocketGone = self.catch_up(&mut delivered).await {
            return;
        }
        loop {
            tokio::select! {
                next = mail.recv() => {
                    let outcome = match next {
                        None => break,
                        Some(Mail::Push { event, id, remove_on_ack, payload }) => {
                            self.push(&event, id.filter(|_| remove_on_ack), &payload, &mut acks)
                        }
                        Some(Mail::Live { id, message }) if id > delivered => {
                            let outcome = self.send(CHAT_EVENT, Store::Inbox, &message, vec![id], &mut acks);
                            if let Delivery::Sent = outcome {
                                delivered = id;
                            }
                            outcome
                        }
                        Some(Mail::Live { .. }) => Delivery::Sent,
                        Some(Mail::CatchUp) => self.catch_up(&mut delivered).await,
                    };
                    if let Delivery::SocketGone = outcome {
                        break;
                    }
                }
                Some((store, ids, acked)) = acks.next(), if !acks.is_empty() => {
                    self.settle(store, &ids, acked).await;
                }
            }
            if behind.swap(false, Ordering::Relaxed)
                && let Delivery::SocketGone = self.catch_up(&mut delivered).await
            {
                break;
            }
        }
        // Acks already on their way still count; the rest resolve as timeouts.
        while let Some((store, ids, acked)) = acks.next().await {
            self.settle(store, &ids, acked).await;
        }
        tracing::debug!(user = %self.user, sid = %self.socket.id, "mailman done");
    }

    /// Sends every waiting message above `delivered`, in batches, each awaiting its ack.
    async fn catch_up(&self, delivered: &mut StreamId) -> Delivery {
        loop {
            let waiting = match self.inbox.after(&self.user, *delivered, self.batch).await {
                Ok(waiting) => waiting,
                Err(err) => {
                    // The messages stay in the inbox; the next catch-up (bus reconnection, next
                    // login) delivers them.
                    tracing::warn!(user = %self.user, cause = %err, "could not read the inbox");
                    return Delivery::Sent;
                }
            };
            let Some(last) = waiting.last().map(|entry| entry.id) else {
                return Delivery::Sent;
            };
            let full = waiting.len() == self.batch;
            let Some(batch) = batch_json(&waiting) else {
                tracing::error!(user = %self.user, "inbox batch is not valid JSON; skipping it");
                *delivered = last;
                continue;
            };
            let ids = waiting.iter().map(|entry| entry.id).collect();
            let mut acks: FuturesUnordered<PendingAck> = FuturesUnordered::new();
            if let Delivery::SocketGone =
                self.send(CHAT_EVENT, Store::Inbox, &batch, ids, &mut acks)
            {
                return Delivery::SocketGone;
            }
            *delivered = last;
            if let Some((store, ids, acked)) = acks.next().await {
                self.settle(store, &ids, acked).await;
            }
            if !full {
                return Delivery::Sent;
            }
        }
    }

    /// Sends the unread notifications, grouped by category, as one `push_message`.
    async fn send_unread(&self) {
        let unread = match self.unread.all(&self.user).await {
            Ok(unread) if !unread.is_empty() => unread,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(user = %self.user, cause = %err, "could not read unread notifications");
                return;
            }
        };
        let mut grouped: BTreeMap<Category, Vec<Box<RawValue>>> = BTreeMap::new();
        for entry in unread {
            let json = message_json(&entry.id.to_string(), &entry.body);
            let category = serde_json::from_str::<StoredCategory>(&json).map(|c| c.category);
            match (category, RawValue::from_string(json)) {
                (Ok(category), Ok(raw)) => grouped.entry(category).or_default().push(raw),
                _ => {
                    tracing::warn!(user = %self.user, id = %entry.id, "skipping a malformed unread entry")
                }
            }
        }
        let _ = self.socket.emit(PUSH_MESSAGE_EVENT, &grouped);
    }

    /// Emits a live push; one that is acked away from the unread store waits for its ack.
    fn push(
        &self,
        event: &str,
        removed_by_ack: Option<StreamId>,
        payload: &RawValue,
        acks: &mut FuturesUnordered<PendingAck>,
    ) -> Delivery {
        if let Some(id) = removed_by_ack {
            return self.send(event, Store::Unread, payload, vec![id], acks);
        }
        match self.socket.emit(event, payload) {
            Err(SendError::Socket(_)) if !self.socket.connected() => Delivery::SocketGone,
            _ => Delivery::Sent,
        }
    }

    /// Emits one event with an ack and queues the wait for the ack.
    fn send(
        &self,
        event: &str,
        store: Store,
        payload: &RawValue,
        ids: Vec<StreamId>,
        acks: &mut FuturesUnordered<PendingAck>,
    ) -> Delivery {
        let sent = self
            .socket
            .timeout(self.ack_timeout)
            .emit_with_ack::<_, IgnoredAny>(event, payload);
        match sent {
            Ok(ack) => {
                acks.push(Box::pin(async move {
                    // Whatever the client acks with counts; only silence does not.
                    let acked = !matches!(ack.await, Err(AckError::Timeout | AckError::Socket(_)));
                    (store, ids, acked)
                }));
                Delivery::Sent
            }
            Err(SendError::Socket(_)) if !self.socket.connected() => Delivery::SocketGone,
            Err(err) => {
                // A full send queue: the messages stay in the inbox for the next login.
                tracing::debug!(user = %self.user, cause = %err, "chat delivery skipped");
                Delivery::Sent
            }
        }
    }

    async fn settle(&self, store: Store, ids: &[StreamId], acked: bool) {
        if !acked {
            tracing::debug!(user = %self.user, ?store, entries = ids.len(), "delivery not acked; kept");
            return;
        }
        let removed = match store {
            Store::Inbox => self.inbox.remove(&self.user, ids).await,
            Store::Unread => self.unread.remove(&self.user, ids).await.map(drop),
        };
        if let Err(err) = removed {
            tracing::warn!(user = %self.user, ?store, cause = %err, "could not remove acked entries; they will come again");
        }
    }
}

/// `[message, message, ...]` of an inbox batch.
fn batch_json(waiting: &[Waiting]) -> Option<Box<RawValue>> {
    let size = waiting.iter().map(|w| w.body.len() + 40).sum::<usize>() + 2;
    let mut json = String::with_capacity(size);
    json.push('[');
    for (index, entry) in waiting.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        json.push_str(&message_json(&entry.id.to_string(), &entry.body));
    }
    json.push(']');
    RawValue::from_string(json).ok()
}
