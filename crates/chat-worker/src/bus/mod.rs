//! The bus: how room messages cross workers. One pub/sub channel per room; a worker subscribes
//! to a room's channel while the room has local members (the hub says which) and publishes
//! every room message once.
//!
//! Architecture invariant: publishing never waits. Local delivery happens before and without the
//! bus, so a slow or absent Redis cannot delay or stop same-worker chat.

pub mod memory;
pub mod redis;

use chat_protocol::RoomId;

pub trait Bus: Send + Sync + 'static {
    /// Queues `frame` for the room's channel. Never waits; frames queued by one caller are
    /// published in the order queued.
    fn publish(&self, room: &RoomId, frame: String);

    /// The hub's occupancy of `room` changed: subscribe or unsubscribe to match it.
    fn occupancy_changed(&self, room: &RoomId);

    /// Asks for `room`'s channel to be subscribed before a first local member's connection
    /// completes, so that member misses nothing published after it connected. The answer
    /// resolves once subscribed; `None` (or a dropped sender) means "do not wait": already
    /// subscribed, the bus subscribes synchronously, or Redis is away.
    fn prepare(&self, room: &RoomId) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let _ = room;
        None
    }

    /// Whether the bus is connected now (for health reporting).
    fn is_connected(&self) -> bool;
}
