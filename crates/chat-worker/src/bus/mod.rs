//! The bus: how messages cross workers. One pub/sub channel per topic (room, logged-in user); a
//! worker subscribes to a topic's channel while the topic has local sockets (the hub says which)
//! and publishes every room message once. User channels are published to by the Redis scripts
//! of [`crate::people::inbox`], never by the bus.
//!
//! Architecture invariant: publishing never waits. Local delivery happens before and without the
//! bus, so a slow or absent Redis cannot delay or stop same-worker chat.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use chat_protocol::{RoomId, bus::Topic};
use tokio::sync::mpsc;

use crate::{fanout::LocalFanout, people::sessions::Sessions};

pub trait Bus: Send + Sync + 'static {
    /// Queues `frame` for the room's channel. Never waits; frames queued by one caller are
    /// published in the order queued.
    fn publish(&self, room: &RoomId, frame: String);

    /// The hub's occupancy of `topic` changed: subscribe or unsubscribe to match it.
    fn occupancy_changed(&self, topic: &Topic);

    /// Asks for `topic`'s channel to be subscribed before a first local socket relies on it, so
    /// that socket misses nothing published afterwards. The answer resolves once subscribed;
    /// `None` (or a dropped sender) means "do not wait": already subscribed, the bus subscribes
    /// synchronously, or Redis is away.
    fn prepare(&self, topic: &Topic) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let _ = topic;
        None
    }

    /// Whether the bus is connected now (for health reporting).
    fn is_connected(&self) -> bool;

    /// Resolves once every frame queued so far has been handed to the medium (for a draining
    /// worker's last words). Callers bound the wait.
    fn flush(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Where frames arriving from the bus go.
#[derive(Clone)]
pub struct Inbound {
    /// Room frames: to the room's local members.
    pub rooms: LocalFanout,
    /// User frames: to the user's local sessions.
    pub users: Arc<Sessions>,
    /// Channels every worker subscribes for its whole life (moderation return, notification,
    /// broadcast), each with the queue of the task that handles its messages.
    pub backend: Vec<(String, mpsc::Sender<String>)>,
}
