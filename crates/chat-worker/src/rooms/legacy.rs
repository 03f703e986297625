//! Rooms beside the old node cluster (`--bus-format legacy`), for a migration worker by worker:
//! the product's workers keep talking to each other on the rooms' own channels, and the room
//! scripts also publish every message, as the node design's plain `{event, data, ...}` JSON, on
//! the room's classic channel `<prefix><room id>`, where node workers hear it
//! ([`chat_protocol::legacy`]). What node workers publish there reaches this worker's members as
//! it came, once: the product's own copies are recognized by their id and skipped.
//!
//! What does not cross to node's side is not served rather than served wrong: node workers keep
//! no shared member list and none of their messages reach the history, so `members` and
//! `history` are refused with `unsupported`, no history is handed out after a join, recovery is
//! off (a client that reconnects joins again, as with node), and joins and quits carry no
//! `count`. The history is written all the same, each entry flagged, for the native workers of
//! the switch that ends a migration ([`crate::store::rooms::cut_at_legacy`]).

use std::collections::HashSet;

use chat_protocol::{
    ErrorCode, ProtocolError, RoomId,
    keys::legacy_room_channel,
    legacy::{LegacyMessage, classify},
};

use super::{Rooms, lock};
use crate::config::WorkerSettings;

/// The legacy side of a worker's rooms.
pub struct Legacy {
    prefix: String,
    /// Classic channels the worker uses for something else (hooks, notifications,
    /// announcements): a room whose legacy channel is one of them cannot be served.
    reserved: HashSet<String>,
}

impl Legacy {
    /// `None` unless the settings ask for `--bus-format legacy`.
    pub fn from_settings(settings: &WorkerSettings) -> Option<Self> {
        settings.rooms.legacy().then(|| Self {
            prefix: settings.channel_prefix.clone(),
            reserved: settings.classic_channels().into_iter().collect(),
        })
    }
}

impl Rooms {
    /// Checks at the handshake that `room` can be served: under `--bus-format legacy` its
    /// channel must not be one the worker uses for something else (with the node design's
    /// empty prefix, a room named `notification` would be the notification channel).
    pub fn admit(&self, room: &RoomId) -> Result<(), ProtocolError> {
        let Some(legacy) = &self.legacy else {
            return Ok(());
        };
        let channel = legacy_room_channel(&legacy.prefix, room);
        if legacy.reserved.contains(&channel) {
            return Err(ProtocolError::new(
                ErrorCode::InvalidRoom,
                format!(
                    "invalid room id: the Redis channel of room \"{room}\" would be \
                     \"{channel}\", which this server uses for something else (--bus-format \
                     legacy)"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses `event` (`members`, `history`) in legacy mode, where node workers' members and
    /// messages are in no shared record.
    pub fn refuse_in_legacy(&self, event: &str) -> Result<(), ProtocolError> {
        if self.legacy.is_none() {
            return Ok(());
        }
        Err(ProtocolError::new(
            ErrorCode::Unsupported,
            format!(
                "{event} is not available while this room is shared with the old node cluster \
                 (--bus-format legacy): node workers keep no shared record of it"
            ),
        ))
    }

    /// Handles a message of a room's legacy channel: a node worker's message is delivered to
    /// the room's local members as it came; a product worker's copy (its members have the
    /// message from the room's own channel) and anything that is not a JSON object are dropped.
    pub fn on_legacy_message(&self, room: &str, raw: &str) {
        let json = match classify(raw) {
            Ok(LegacyMessage::Node(json)) => json,
            Ok(LegacyMessage::Product) => return,
            Err(err) => {
                // Not from a client of ours, and node's own workers crash on it: counted as a
                // bus frame, not logged at info per message.
                tracing::debug!(room, cause = %err, "dropping a message of a legacy room channel");
                return;
            }
        };
        // A room with a joined member here has a log; without one nobody here takes it.
        let Some(log) = lock(&self.logs).get(room).cloned() else {
            return;
        };
        let mut log = lock(&log);
        self.deliver(&mut log, room, json, None, None);
    }
}
