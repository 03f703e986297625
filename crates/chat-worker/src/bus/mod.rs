//! The bus: how messages cross workers. One pub/sub channel per topic (room, logged-in user); a
//! worker subscribes to a topic's channel while the topic has local sockets (the hub says which)
//! and publishes every room message once. User channels are published to by the Redis scripts
//! of [`crate::people::inbox`], never by the bus.
//!
//! Architecture invariant: publishing never waits. Local delivery happens before and without the
//! bus, so a slow or absent Redis cannot delay or stop same-worker chat.

pub mod memory;
pub mod redis;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration as StdDuration,
    time::{Duration, Instant},
};

use chat_protocol::{RoomId, bus::Topic, memory::MemberRecord};
use futures_util::future::BoxFuture;

/// Longest the room sockets of a worker that just started wait for its first Redis connection
/// (counted from the bus's start).
pub const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::{
    people::sessions::Sessions,
    rooms::{Rooms, hub::Hub},
    store::rooms::{HistoryEntry, JoinOp, Joined, QuitOp, ResumeOp, Resumed},
};

/// Longest a first local socket of a topic waits for the topic's subscription.
pub const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// First sockets of a topic that went ahead without a confirmed subscription (Redis did not
/// confirm within [`SUBSCRIBE_WAIT`]): they may miss what is published in the meantime.
static UNCONFIRMED_SUBSCRIPTIONS: AtomicU64 = AtomicU64::new(0);
/// When an unconfirmed subscription was last logged, to log at most one line per interval.
static LAST_UNCONFIRMED_LOG: Mutex<Option<Instant>> = Mutex::new(None);
const UNCONFIRMED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Makes sure `topic`'s channel is subscribed before a first local socket relies on it: if the
/// hub has no socket for it yet, waits (at most [`SUBSCRIBE_WAIT`]) until Redis confirmed the
/// subscription, so the socket misses nothing published afterwards. If Redis does not confirm
/// in time, the socket goes ahead anyway (local delivery does not need Redis); that is counted
/// ([`unconfirmed_subscriptions`]) and logged at most once per 10 s.
pub async fn subscribe_before_first_socket(hub: &Hub, bus: &dyn Bus, topic: &Topic) {
    if hub.is_occupied(topic) {
        return;
    }
    let Some(subscribed) = bus.prepare(topic) else {
        return;
    };
    // A dropped sender (the SSUBSCRIBE failed) is the same as no confirmation.
    if let Ok(Ok(())) = tokio::time::timeout(SUBSCRIBE_WAIT, subscribed).await {
        return;
    }
    let unconfirmed = UNCONFIRMED_SUBSCRIPTIONS.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::debug!(%topic, "subscription not confirmed in time; the socket goes ahead");
    let mut last = LAST_UNCONFIRMED_LOG
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if last.is_none_or(|at| at.elapsed() >= UNCONFIRMED_LOG_INTERVAL) {
        *last = Some(Instant::now());
        tracing::warn!(
            unconfirmed,
            wait_ms = SUBSCRIBE_WAIT.as_millis() as u64,
            "redis did not confirm a subscription in time: a first socket of a topic went ahead and may miss messages from other workers"
        );
    }
}

/// How many first sockets went ahead without a confirmed subscription since the worker started.
pub fn unconfirmed_subscriptions() -> u64 {
    UNCONFIRMED_SUBSCRIPTIONS.load(Ordering::Relaxed)
}

/// A message said on this worker, for the room's history and the other workers: its id and
/// its JSON, exactly as the local members got it (moved, not copied, into the bus).
#[derive(Debug)]
pub struct Said {
    pub id: String,
    pub json: Box<RawValue>,
}

/// A change of a room's membership, run in Redis in queue order with the room's messages (see
/// [`crate::store::rooms`]).
#[derive(Debug)]
pub enum RoomOp {
    Join(JoinOp),
    Quit(QuitOp),
    Resume(ResumeOp),
    /// Sets the lifetime of sessions of the room: renewed while connected, the recovery window
    /// once ended.
    ExpireSessions {
        pids: Vec<String>,
        ttl: StdDuration,
    },
}

/// What a [`RoomOp`] got.
#[derive(Debug)]
pub enum RoomReply {
    Joined(Joined),
    /// Whether the member was removed, and the room's count after.
    Quit(bool, u64),
    /// `None`: the session could not be recovered.
    Resumed(Option<Resumed>),
    Done,
}

/// Why a room operation or read could not be done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("the bus's queue is full")]
    QueueFull,
    #[error("the bus stopped")]
    Stopped,
    #[error("{0}")]
    Store(String),
}

pub type RoomReplyReceiver = oneshot::Receiver<Result<RoomReply, BusError>>;

pub trait Bus: Send + Sync + 'static {
    /// Queues a message said on this worker: it is kept in the room's history and published to
    /// the other workers, in the order queued. Never waits; a full queue drops it (local
    /// delivery is done already).
    fn publish(&self, room: &RoomId, said: Said);

    /// Queues a room operation behind everything queued before it; its reply comes back on the
    /// receiver. The operation's marker frame (joins, recoveries) reaches every subscribed
    /// worker through the room's channel like a message.
    fn room_op(&self, room: &RoomId, op: RoomOp) -> RoomReplyReceiver;

    /// Records, before a member of this worker is registered in `room`, that this worker has
    /// members there: if it dies, whoever reaps it finds them (see [`crate::rooms::presence`]).
    fn note_room(&self, room: &RoomId) -> BoxFuture<'_, Result<(), BusError>> {
        let _ = room;
        Box::pin(async { Ok(()) })
    }

    /// The room's members, cluster-wide.
    fn members(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<MemberRecord>, BusError>>;

    /// The room's history (capped at `--history-size`), newest first.
    fn history(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<HistoryEntry>, BusError>>;

    /// The hub's occupancy of `topic` changed: subscribe or unsubscribe to match it.
    fn occupancy_changed(&self, topic: &Topic);

    /// Asks for `topic`'s channel to be subscribed before a first local socket relies on it, so
    /// that socket misses nothing published afterwards. The answer resolves once Redis has
    /// confirmed the subscription;
    /// `None` (or a dropped sender) means "do not wait": already subscribed, the bus subscribes
    /// synchronously, or Redis is away.
    fn prepare(&self, topic: &Topic) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let _ = topic;
        None
    }

    /// Whether the bus is connected now (for health reporting).
    fn is_connected(&self) -> bool;

    /// Resolves once the bus has connected for the first time, or [`STARTUP_WAIT`] after it was
    /// made, whichever comes first (at once after that, connected or not): the sockets of a
    /// worker that just started wait for Redis rather than be served as if it were away, and a
    /// worker started while Redis is away makes them wait once, not each.
    fn started(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Resolves once every frame queued so far has been handed to the medium (for a draining
    /// worker's last words). Callers bound the wait.
    fn flush(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Where frames arriving from the bus go.
#[derive(Clone)]
pub struct Inbound {
    /// Room frames: to the room's local members (and the room's pending joins).
    pub rooms: Arc<Rooms>,
    /// User frames: to the user's local sessions.
    pub users: Arc<Sessions>,
    /// Channels every worker subscribes for its whole life (moderation return, notification,
    /// broadcast), each with the queue of the task that handles its messages.
    pub backend: Vec<(String, mpsc::Sender<String>)>,
}
