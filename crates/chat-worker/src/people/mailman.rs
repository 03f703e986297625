//! The mailman: one task per logged-in socket that delivers the user's direct messages as `chat`
//! events with acks, and removes from the inbox what the client acknowledged. It also sends the
//! unread notifications once after login and live pushes. What the events look like and what an
//! ack means is the session's [`SessionFormat`] (the core's, or an old client dialect's).
//!
//! Whole acks (the core's): the mailman sends the inbox in batches, oldest first, then live mail
//! as it comes, never waiting for an ack before the next event while fewer than
//! `--delivery-window` messages are in flight (sent, neither acknowledged nor timed out). A
//! client that never acks (some libraries cannot) gets every waiting message at once and its
//! live messages as they come, up to the window; `chat_ack {ids}` takes messages out of flight
//! as an ack does. It remembers the highest id it delivered, so a live message already sent in
//! a batch is not sent twice; ids only grow, so the order is the inbox's order. Anything
//! unacknowledged stays in the inbox for the next login.
//!
//! Counted acks (the old chat app's): one event in flight at a time, carrying the waiting
//! messages from the oldest; the ack is how many the client handled, from the front, and
//! exactly those are removed. The others come again, first, with the next event, which goes
//! out when new mail arrives (as the old server resent the whole list with every new message)
//! or when the previous one was full and fully handled.

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use chat_protocol::{
    UserId,
    people::{CHAT_EVENT, StreamId, message_json},
    push::{Category, PUSH_MESSAGE_EVENT, StoredCategory},
};
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde_json::value::RawValue;
use socketioxide::{AckError, SendError, extract::SocketRef};

use super::{
    format::{ChatAck, SessionFormat, UnreadAtLogin},
    inbox::Inbox,
    sessions::{Mail, Mailbox},
};
use crate::{payload::Encoded, push::unread::Unread};

/// Which store an acked delivery is removed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Inbox,
    Unread,
}

/// An event's ack, or its absence: `handled` of its entries, from the front, are acknowledged.
#[derive(Debug)]
struct Settled {
    store: Store,
    ids: Vec<StreamId>,
    handled: usize,
}

type PendingAck = Pin<Box<dyn Future<Output = Settled> + Send>>;

pub struct Mailman {
    pub inbox: Inbox,
    pub unread: Unread,
    pub user: UserId,
    pub socket: SocketRef,
    pub batch: usize,
    /// Most direct messages in flight (whole acks).
    pub window: usize,
    pub ack_timeout: Duration,
    pub format: Arc<dyn SessionFormat>,
}

/// What became of an emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emitted {
    /// Queued for the client; an ack (or its timeout) follows.
    Queued,
    /// Not queued (the client's send queue is full): the entries stay in their store.
    Skipped,
    /// The socket is closed: the mailman stops.
    SocketGone,
}

/// Where a session's direct messages stand.
enum Flow {
    /// The session takes no direct messages.
    Off,
    Window {
        /// The highest id sent.
        delivered: StreamId,
        /// Whether everything in the inbox up to `delivered` has been read (live mail above it
        /// may be sent as it comes).
        caught_up: bool,
        in_flight: HashSet<StreamId>,
    },
    Front {
        /// The highest id ever sent.
        sent_max: StreamId,
        in_flight: bool,
        /// Whether there is something the client has not been sent yet.
        dirty: bool,
    },
}

impl Flow {
    fn new(format: &dyn SessionFormat) -> Self {
        if !format.takes_direct_messages() {
            return Self::Off;
        }
        match format.chat_ack() {
            ChatAck::Whole => Self::Window {
                delivered: StreamId::default(),
                caught_up: false,
                in_flight: HashSet::new(),
            },
            ChatAck::Count => Self::Front {
                sent_max: StreamId::default(),
                in_flight: false,
                dirty: true,
            },
        }
    }

    /// Something may be in the inbox that was not read (a bus reconnection, a full queue).
    fn catch_up(&mut self) {
        match self {
            Self::Off => {}
            Self::Window { caught_up, .. } => *caught_up = false,
            Self::Front { dirty, .. } => *dirty = true,
        }
    }

    /// Messages acknowledged by id are out of flight.
    fn acked(&mut self, ids: &[StreamId]) {
        if let Self::Window { in_flight, .. } = self {
            for id in ids {
                in_flight.remove(id);
            }
        }
    }

    fn settled(&mut self, settled: &Settled, batch: usize) {
        if settled.store != Store::Inbox {
            return;
        }
        match self {
            Self::Off => {}
            Self::Window { in_flight, .. } => {
                for id in &settled.ids {
                    in_flight.remove(id);
                }
            }
            Self::Front {
                in_flight, dirty, ..
            } => {
                *in_flight = false;
                // A full event fully handled: more may be waiting that was never sent.
                if settled.ids.len() == batch && settled.handled == settled.ids.len() {
                    *dirty = true;
                }
            }
        }
    }
}

impl Mailman {
    pub async fn run(self, mailbox: Mailbox) {
        let Mailbox { mut mail, behind } = mailbox;
        let mut acks: FuturesUnordered<PendingAck> = FuturesUnordered::new();
        let mut flow = Flow::new(&*self.format);
        if let Emitted::SocketGone = self.send_unread(&mut acks).await {
            return;
        }
        loop {
            if let Emitted::SocketGone = self.pump(&mut flow, &mut acks).await {
                break;
            }
            tokio::select! {
                next = mail.recv() => {
                    let outcome = match next {
                        None => break,
                        Some(Mail::Push { event, id, remove_on_ack, payload }) => {
                            self.push(&event, id.filter(|_| remove_on_ack), &payload, &mut acks)
                        }
                        Some(Mail::Live { id, message }) => self.live(&mut flow, id, &message, &mut acks),
                        Some(Mail::CatchUp) => {
                            flow.catch_up();
                            Emitted::Queued
                        }
                        Some(Mail::Acked(ids)) => {
                            flow.acked(&ids);
                            Emitted::Queued
                        }
                    };
                    if let Emitted::SocketGone = outcome {
                        break;
                    }
                }
                Some(settled) = acks.next(), if !acks.is_empty() => {
                    self.settle(&settled).await;
                    flow.settled(&settled, self.batch);
                }
            }
            if behind.swap(false, Ordering::Relaxed) {
                flow.catch_up();
            }
        }
        // Acks already on their way still count; the rest resolve as timeouts.
        while let Some(settled) = acks.next().await {
            self.settle(&settled).await;
        }
        tracing::debug!(user = %self.user, sid = %self.socket.id, "mailman done");
    }

    /// Sends from the inbox what the flow allows now.
    async fn pump(&self, flow: &mut Flow, acks: &mut FuturesUnordered<PendingAck>) -> Emitted {
        match flow {
            Flow::Off => Emitted::Queued,
            Flow::Window {
                delivered,
                caught_up,
                in_flight,
            } => {
                while !*caught_up && in_flight.len() < self.window {
                    let room = (self.window - in_flight.len()).min(self.batch);
                    let Some(waiting) = self.read(*delivered, room).await else {
                        // The messages stay in the inbox; the next catch-up (bus reconnection,
                        // next login) delivers them.
                        *caught_up = true;
                        break;
                    };
                    if waiting.len() < room {
                        *caught_up = true;
                    }
                    let Some(last) = waiting.last().map(|(id, _)| *id) else {
                        break;
                    };
                    let ids = waiting.iter().map(|(id, _)| *id).collect::<Vec<_>>();
                    match self.send_batch(&waiting, ids.clone(), acks) {
                        Emitted::SocketGone => return Emitted::SocketGone,
                        Emitted::Queued => in_flight.extend(ids),
                        Emitted::Skipped => {}
                    }
                    *delivered = last;
                }
                Emitted::Queued
            }
            Flow::Front {
                sent_max,
                in_flight,
                dirty,
            } => {
                if *in_flight || !*dirty {
                    return Emitted::Queued;
                }
                *dirty = false;
                let Some(waiting) = self.read(StreamId::default(), self.batch).await else {
                    return Emitted::Queued;
                };
                let Some(last) = waiting.last().map(|(id, _)| *id) else {
                    return Emitted::Queued;
                };
                let ids = waiting.iter().map(|(id, _)| *id).collect();
                let emitted = self.send_batch(&waiting, ids, acks);
                if emitted == Emitted::Queued {
                    *in_flight = true;
                }
                *sent_max = (*sent_max).max(last);
                emitted
            }
        }
    }

    /// Up to `count` waiting messages above `after`, each as the JSON clients receive; `None`
    /// when the inbox could not be read (logged).
    async fn read(&self, after: StreamId, count: usize) -> Option<Vec<(StreamId, String)>> {
        match self.inbox.after(&self.user, after, count).await {
            Ok(waiting) => Some(
                waiting
                    .into_iter()
                    .map(|entry| (entry.id, message_json(&entry.id.to_string(), &entry.body)))
                    .collect(),
            ),
            Err(err) => {
                tracing::warn!(user = %self.user, cause = %err, "could not read the inbox");
                None
            }
        }
    }

    fn send_batch(
        &self,
        waiting: &[(StreamId, String)],
        ids: Vec<StreamId>,
        acks: &mut FuturesUnordered<PendingAck>,
    ) -> Emitted {
        let messages: Vec<&str> = waiting.iter().map(|(_, json)| json.as_str()).collect();
        let Some(payload) = self.format.batch(&messages) else {
            tracing::error!(user = %self.user, "inbox batch is not valid JSON; skipping it");
            return Emitted::Skipped;
        };
        self.send(CHAT_EVENT, Store::Inbox, &payload, ids, acks)
    }

    /// A message just stored: sent now if the flow allows, else left for the inbox reads.
    fn live(
        &self,
        flow: &mut Flow,
        id: StreamId,
        message: &RawValue,
        acks: &mut FuturesUnordered<PendingAck>,
    ) -> Emitted {
        match flow {
            Flow::Off => Emitted::Queued,
            Flow::Front {
                sent_max, dirty, ..
            } => {
                if id > *sent_max {
                    *dirty = true;
                }
                Emitted::Queued
            }
            Flow::Window {
                delivered,
                caught_up,
                in_flight,
            } => {
                // Not caught up: the inbox read reaches it, in order. At or below `delivered`:
                // it went out in a batch already.
                if !*caught_up || id <= *delivered {
                    return Emitted::Queued;
                }
                if in_flight.len() >= self.window {
                    *caught_up = false;
                    return Emitted::Queued;
                }
                let payload = self.format.live(message);
                let emitted = self.send(CHAT_EVENT, Store::Inbox, &payload, vec![id], acks);
                match emitted {
                    Emitted::SocketGone => return Emitted::SocketGone,
                    Emitted::Queued => {
                        in_flight.insert(id);
                    }
                    Emitted::Skipped => {}
                }
                *delivered = id;
                emitted
            }
        }
    }

    /// Sends the unread notifications after login, as the session's format wants them.
    async fn send_unread(&self, acks: &mut FuturesUnordered<PendingAck>) -> Emitted {
        let unread = match self.unread.all(&self.user).await {
            Ok(unread) if !unread.is_empty() => unread,
            Ok(_) => return Emitted::Queued,
            Err(err) => {
                tracing::warn!(user = %self.user, cause = %err, "could not read unread notifications");
                return Emitted::Queued;
            }
        };
        match self.format.unread_at_login() {
            UnreadAtLogin::Grouped => {
                let mut grouped: BTreeMap<Category, Vec<Box<RawValue>>> = BTreeMap::new();
                for entry in unread {
                    let json = message_json(&entry.id.to_string(), &entry.body);
                    let category =
                        serde_json::from_str::<StoredCategory>(&json).map(|c| c.category);
                    match (category, RawValue::from_string(json)) {
                        (Ok(category), Ok(raw)) => grouped.entry(category).or_default().push(raw),
                        _ => {
                            tracing::warn!(user = %self.user, id = %entry.id, "skipping a malformed unread entry")
                        }
                    }
                }
                match serde_json::value::to_raw_value(&grouped) {
                    Ok(payload) => self.emit(PUSH_MESSAGE_EVENT, &payload),
                    Err(err) => {
                        tracing::warn!(user = %self.user, cause = %err, "unread notifications did not encode");
                        Emitted::Skipped
                    }
                }
            }
            UnreadAtLogin::EachAs(event) => {
                for entry in unread {
                    let Ok(raw) =
                        RawValue::from_string(message_json(&entry.id.to_string(), &entry.body))
                    else {
                        tracing::warn!(user = %self.user, id = %entry.id, "skipping a malformed unread entry");
                        continue;
                    };
                    let payload = self.format.push(event, &raw);
                    if let Emitted::SocketGone =
                        self.send(event, Store::Unread, &payload, vec![entry.id], acks)
                    {
                        return Emitted::SocketGone;
                    }
                }
                Emitted::Queued
            }
        }
    }

    /// Emits a live push; one that is acked away from the unread store waits for its ack.
    fn push(
        &self,
        event: &str,
        removed_by_ack: Option<StreamId>,
        payload: &RawValue,
        acks: &mut FuturesUnordered<PendingAck>,
    ) -> Emitted {
        let payload = self.format.push(event, payload);
        if let Some(id) = removed_by_ack {
            return self.send(event, Store::Unread, &payload, vec![id], acks);
        }
        self.emit(event, &payload)
    }

    fn emit(&self, event: &str, payload: &RawValue) -> Emitted {
        match self.socket.emit(event, &Encoded(payload)) {
            Ok(()) => Emitted::Queued,
            Err(SendError::Socket(_)) if !self.socket.connected() => Emitted::SocketGone,
            Err(_) => Emitted::Skipped,
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
    ) -> Emitted {
        let counted = store == Store::Inbox && self.format.chat_ack() == ChatAck::Count;
        let sent = self
            .socket
            .timeout(self.ack_timeout)
            .emit_with_ack::<_, serde_json::Value>(event, &Encoded(payload));
        match sent {
            Ok(ack) => {
                acks.push(Box::pin(async move {
                    let handled = match ack.await {
                        // Only silence is no ack; what the ack says matters only when counted.
                        Err(AckError::Timeout | AckError::Socket(_)) => 0,
                        Ok(answer) if counted => handled_count(&answer, ids.len()),
                        Err(_) if counted => 0,
                        Ok(_) | Err(_) => ids.len(),
                    };
                    Settled {
                        store,
                        ids,
                        handled,
                    }
                }));
                Emitted::Queued
            }
            Err(SendError::Socket(_)) if !self.socket.connected() => Emitted::SocketGone,
            Err(err) => {
                // A full send queue: the entries stay in their store for the next login.
                tracing::debug!(user = %self.user, cause = %err, "delivery skipped");
                Emitted::Skipped
            }
        }
    }

    async fn settle(&self, settled: &Settled) {
        let acked = &settled.ids[..settled.handled.min(settled.ids.len())];
        if acked.len() < settled.ids.len() {
            tracing::debug!(user = %self.user, store = ?settled.store, entries = settled.ids.len(), handled = acked.len(), "delivery not fully acked; the rest is kept");
        }
        if acked.is_empty() {
            return;
        }
        let removed = match settled.store {
            Store::Inbox => self.inbox.remove(&self.user, acked).await.map(drop),
            Store::Unread => self.unread.remove(&self.user, acked).await.map(drop),
        };
        if let Err(err) = removed {
            tracing::warn!(user = %self.user, store = ?settled.store, cause = %err, "could not remove acked entries; they will come again");
        }
    }
}

/// The number of messages a counted ack says the client handled, at most `sent`: a number (a
/// fraction counts its whole part) or a string of one, as the old server's JavaScript read it;
/// anything else (none, negative) handles nothing.
fn handled_count(answer: &serde_json::Value, sent: usize) -> usize {
    let number = match answer {
        serde_json::Value::Number(number) => number.as_f64(),
        serde_json::Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(n) if n.is_finite() && n >= 1.0 => (n.floor() as u64).min(sent as u64) as usize,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counted_acks_read_like_the_old_server() {
        assert_eq!(handled_count(&json!(3), 5), 3);
        assert_eq!(handled_count(&json!(9), 5), 5);
        assert_eq!(handled_count(&json!(2.7), 5), 2);
        assert_eq!(handled_count(&json!("4"), 5), 4);
        assert_eq!(handled_count(&json!(0), 5), 0);
        assert_eq!(handled_count(&json!(-1), 5), 0);
        assert_eq!(handled_count(&json!(null), 5), 0);
        assert_eq!(handled_count(&json!({"ok": true}), 5), 0);
        assert_eq!(handled_count(&json!("x"), 5), 0);
    }
}
