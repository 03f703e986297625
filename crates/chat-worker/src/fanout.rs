//! Local fan-out: hands one encoded room message to every socket of the room on this worker, and
//! announcements to every socket (or a room's).

use chat_protocol::{
    bus::{FrameKind, NodeId, decode_frame},
    server::MESSAGE_EVENT,
};
use serde_json::value::RawValue;
use socketioxide::SocketIo;

/// Delivers room messages to this worker's sockets. Cheap to clone.
#[derive(Clone)]
pub struct LocalFanout {
    io: SocketIo,
    origin: NodeId,
}

impl LocalFanout {
    pub fn new(io: SocketIo, origin: NodeId) -> Self {
        Self { io, origin }
    }

    pub fn origin(&self) -> NodeId {
        self.origin
    }

    /// Emits `message` with an already-encoded JSON payload to the local members of `room`.
    /// socketioxide encodes the packet once and shares it among the room's sockets.
    pub async fn emit(&self, room: &str, message: &RawValue) {
        let _probe = crate::metrics::delivery_probe();
        // Sockets whose send queue is full miss this message; socketioxide reports them
        // without ids, so all we can do here is count them.
        if let Err(err) = self
            .io
            .to(room.to_owned())
            .emit(MESSAGE_EVENT, message)
            .await
        {
            crate::metrics::emit_failed(&err);
            tracing::debug!(room, cause = %err, "local fan-out skipped some sockets");
        }
    }

    /// Emits an announcement from the broadcast channel to every local socket, or to the local
    /// members of its room.
    pub async fn announce(&self, frame: &str) {
        let announcement: crate::push::Announcement<'_> = match serde_json::from_str(frame) {
            Ok(announcement) => announcement,
            Err(err) => {
                tracing::warn!(cause = %err, "dropping a bad announcement");
                return;
            }
        };
        let sent = match announcement.room {
            Some(room) => {
                self.io
                    .to(room.to_owned())
                    .emit(announcement.event, announcement.payload)
                    .await
            }
            None => self.io.emit(announcement.event, announcement.payload).await,
        };
        if let Err(err) = sent {
            tracing::debug!(cause = %err, "announcement skipped some sockets");
        }
    }

    /// Handles a frame that arrived from the bus for `room`: skips this node's own frames
    /// (they were delivered locally already) and fans the others out.
    pub async fn deliver_frame(&self, room: &str, frame: &str) {
        let frame = match decode_frame(frame) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::warn!(room, cause = %err, "dropping malformed bus frame");
                return;
            }
        };
        if frame.origin == self.origin && frame.kind == FrameKind::Say {
            return;
        }
        match serde_json::from_str::<&RawValue>(frame.json) {
            Ok(message) => self.emit(room, message).await,
            Err(err) => tracing::warn!(room, cause = %err, "dropping bus frame with bad JSON"),
        }
    }
}
