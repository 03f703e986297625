//! The mailman: one task per logged-in socket that delivers the user's direct messages as `chat`
//! events with acks, and removes from the inbox what the client acknowledged.
//!
//! First it empties the inbox in batches, oldest first, each batch awaiting its ack (or the ack
//! timeout) before the next. Then it delivers live mail as it comes. It remembers the highest id
//! it delivered, so a live message already sent in a batch is not sent twice; ids only grow, so
//! the order is the inbox's order. Anything unacknowledged stays in the inbox for the next login.

use std::{future::Future, pin::Pin, sync::atomic::Ordering, time::Duration};

use chat_protocol::{
    UserId,
    people::{CHAT_EVENT, StreamId, message_json},
};
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use socketioxide::{AckError, SendError, extract::SocketRef};

use super::{
    inbox::{Inbox, Waiting},
    sessions::{Mail, Mailbox},
};

type PendingAck = Pin<Box<dyn Future<Output = (Vec<StreamId>, bool)> + Send>>;

pub struct Mailman {
    pub inbox: Inbox,
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
        if let Delivery::SocketGone = self.catch_up(&mut delivered).await {
            return;
        }
        loop {
            tokio::select! {
                next = mail.recv() => {
                    let outcome = match next {
                        None => break,
                        Some(Mail::Live { id, message }) if id > delivered => {
                            let outcome = self.send(&message, vec![id], &mut acks);
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
                Some((ids, acked)) = acks.next(), if !acks.is_empty() => {
                    self.settle(&ids, acked).await;
                }
            }
            if behind.swap(false, Ordering::Relaxed)
                && let Delivery::SocketGone = self.catch_up(&mut delivered).await
            {
                break;
            }
        }
        // Acks already on their way still count; the rest resolve as timeouts.
        while let Some((ids, acked)) = acks.next().await {
            self.settle(&ids, acked).await;
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
            if let Delivery::SocketGone = self.send(&batch, ids, &mut acks) {
                return Delivery::SocketGone;
            }
            *delivered = last;
            if let Some((ids, acked)) = acks.next().await {
                self.settle(&ids, acked).await;
            }
            if !full {
                return Delivery::Sent;
            }
        }
    }

    /// Emits one `chat` event and queues the wait for its ack.
    fn send(
        &self,
        payload: &RawValue,
        ids: Vec<StreamId>,
        acks: &mut FuturesUnordered<PendingAck>,
    ) -> Delivery {
        let sent = self
            .socket
            .timeout(self.ack_timeout)
            .emit_with_ack::<_, IgnoredAny>(CHAT_EVENT, payload);
        match sent {
            Ok(ack) => {
                acks.push(Box::pin(async move {
                    // Whatever the client acks with counts; only silence does not.
                    let acked = !matches!(ack.await, Err(AckError::Timeout | AckError::Socket(_)));
                    (ids, acked)
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

    async fn settle(&self, ids: &[StreamId], acked: bool) {
        if !acked {
            tracing::debug!(user = %self.user, messages = ids.len(), "chat not acked; kept in the inbox");
            return;
        }
        if let Err(err) = self.inbox.remove(&self.user, ids).await {
            tracing::warn!(user = %self.user, cause = %err, "could not remove acked messages; they will come again");
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
