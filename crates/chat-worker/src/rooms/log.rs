//! A room's local log: the offset of the last message this worker delivered in the room, and
//! the joins and recoveries in flight, with what they must be handed when they complete. Pure
//! logic (no IO), driven by [`super::Rooms`].
//!
//! A join (or recovery) completes when both its script's reply (the history it read) and its
//! marker (its place in the room's channel) are in, and, for a recovery, once the socket's
//! CONNECT answer is out. Until then the room's deliveries are kept for it: those after the
//! marker (the history has none of them), and this worker's own messages said meanwhile
//! (delivered here before Redis had them, so a history read may miss them).

use std::{collections::HashMap, sync::Arc};

use chat_protocol::{
    memory::{Offset, split_message_id},
    people::StreamId,
};
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use tokio::sync::oneshot;

use crate::store::rooms::{HistoryEntry, Joined, Resumed};

/// Every room's log on this worker, by room id.
pub type RoomLogs = HashMap<Box<str>, RoomLog>;

#[derive(Default)]
pub struct RoomLog {
    /// The last history entry delivered here through the bus (other workers' messages, joins,
    /// quits), in stream order.
    last_stream: Option<StreamId>,
    /// The counter of this worker's last message delivered in the room.
    own: u64,
    pending: Vec<Pending>,
}

/// A message kept for a pending join or recovery, with the offset the room had after it.
pub struct Buffered {
    pub json: Arc<RawValue>,
    pub offset: Offset,
    /// For a message said on this worker: its counter (it may also be in the history the
    /// operation read, if it reached Redis first).
    pub own: Option<u64>,
}

/// What a pending operation is.
pub enum PendingKind {
    Join,
    /// A recovery of a client that has seen `seen` on the worker `old_node` (known once the
    /// script answered).
    Resume {
        old_node: String,
        seen: Offset,
    },
}

/// A script's reply for a pending operation.
pub enum Reply {
    Joined(Joined),
    Resumed(Resumed),
}

pub struct Pending {
    token: String,
    pub socket: SocketRef,
    /// The member's private session id (its key in the room's members).
    pub pid: String,
    /// The socket's engine id, to find it when it connects.
    conn: String,
    pub offsets: bool,
    kind: PendingKind,
    reply: Option<Reply>,
    marker_seen: bool,
    connected: bool,
    buffer: Vec<Buffered>,
    done: Option<oneshot::Sender<()>>,
}

/// What a completed operation hands its socket, in order.
pub struct Handover {
    /// The `history` event's messages (joins), oldest first.
    pub history: Option<Vec<HistoryEntry>>,
    /// The offset the `history` event carries.
    pub history_offset: Offset,
    /// `message` events: a recovery's replay, then what was kept for it.
    pub messages: Vec<Buffered>,
}

impl Pending {
    pub fn new(
        token: String,
        socket: SocketRef,
        pid: String,
        offsets: bool,
        kind: PendingKind,
        connected: bool,
        done: oneshot::Sender<()>,
    ) -> Self {
        Self {
            token,
            conn: socket.id.to_string(),
            socket,
            pid,
            offsets,
            kind,
            reply: None,
            marker_seen: false,
            connected,
            buffer: Vec::new(),
            done: Some(done),
        }
    }

    /// The socket's engine id.
    pub fn conn(&self) -> &str {
        &self.conn
    }

    /// Whether the operation's script has answered (the member is registered in Redis).
    pub fn recorded(&self) -> bool {
        self.reply.is_some()
    }

    fn ready(&self) -> bool {
        self.reply.is_some() && self.marker_seen && self.connected
    }

    /// What the socket is owed (taken out of the operation): the history or the replay, then
    /// the kept messages that are not in it, each with an offset that never goes back behind
    /// what the socket was handed before it. `origin` is this worker's node id.
    pub fn handover(&mut self, origin: &str) -> Handover {
        // This worker's messages said while the operation was queued may be in what it read.
        let read = match &self.reply {
            Some(Reply::Joined(joined)) => joined.history.as_slice(),
            Some(Reply::Resumed(resumed)) => resumed.missed.as_slice(),
            None => &[],
        };
        let read_own: Vec<u64> = read
            .iter()
            .filter_map(|entry| entry.said.as_deref().and_then(split_message_id))
            .filter(|(node, _)| *node == origin)
            .map(|(_, counter)| counter)
            .collect();
        let (history, mut messages, mut floor) = match (self.reply.take(), &self.kind) {
            (Some(Reply::Joined(joined)), _) => {
                let floor = joined.history.last().map(|entry| entry.stream);
                (Some(joined.history), Vec::new(), floor)
            }
            (Some(Reply::Resumed(resumed)), PendingKind::Resume { old_node, seen }) => {
                let mut floor = seen.stream;
                let replay: Vec<Buffered> = resumed
                    .missed
                    .into_iter()
                    .filter(|entry| !super::seen_own(entry, old_node, seen.own))
                    .filter_map(|entry| {
                        floor = Some(entry.stream);
                        let json = RawValue::from_string(entry.json).ok()?;
                        // Own messages of this worker placed after it are not seen yet: 0.
                        Some(Buffered {
                            json: Arc::from(json),
                            offset: Offset {
                                stream: Some(entry.stream),
                                own: 0,
                            },
                            own: None,
                        })
                    })
                    .collect();
                (None, replay, floor)
            }
            _ => (None, Vec::new(), None),
        };
        let history_offset = Offset {
            stream: floor,
            own: 0,
        };
        for kept in self.buffer.drain(..) {
            if kept.own.is_some_and(|own| read_own.contains(&own)) {
                continue;
            }
            floor = floor.max(kept.offset.stream);
            messages.push(Buffered {
                json: kept.json,
                offset: Offset {
                    stream: floor,
                    own: kept.offset.own,
                },
                own: kept.own,
            });
        }
        Handover {
            history,
            history_offset,
            messages,
        }
    }

    /// Tells whoever waits for the operation that it completed.
    pub fn finish(mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl RoomLog {
    /// Records a delivery in the room and returns the room's offset after it; keeps the message
    /// for the pending operations that must see it.
    pub fn delivered(
        &mut self,
        json: &RawValue,
        stream: Option<StreamId>,
        own: Option<u64>,
    ) -> Offset {
        if let Some(stream) = stream {
            self.last_stream = Some(self.last_stream.map_or(stream, |last| last.max(stream)));
        }
        if let Some(own) = own {
            self.own = self.own.max(own);
        }
        let offset = Offset {
            stream: self.last_stream,
            own: self.own,
        };
        let mut shared: Option<Arc<RawValue>> = None;
        for pending in &mut self.pending {
            if pending.marker_seen || own.is_some() {
                let json = shared.get_or_insert_with(|| Arc::from(json.to_owned()));
                pending.buffer.push(Buffered {
                    json: Arc::clone(json),
                    offset,
                    own,
                });
            }
        }
        offset
    }

    pub fn begin(&mut self, pending: Pending) {
        self.pending.push(pending);
    }

    /// The script of `token` answered; returns the operation if it is now complete.
    pub fn reply(&mut self, token: &str, reply: Reply) -> Option<Pending> {
        let index = self.index(token)?;
        let pending = &mut self.pending[index];
        if let (Reply::Resumed(resumed), PendingKind::Resume { old_node, .. }) =
            (&reply, &mut pending.kind)
        {
            old_node.clone_from(&resumed.session.node);
        }
        pending.reply = Some(reply);
        self.take_if_ready(index)
    }

    /// The marker of `token` came back; returns the operation if it is now complete.
    pub fn marker(&mut self, token: &str) -> Option<Pending> {
        let index = self.index(token)?;
        self.pending[index].marker_seen = true;
        self.take_if_ready(index)
    }

    /// The socket of engine id `conn` is connected; returns its operation if now complete.
    pub fn connected(&mut self, conn: &str) -> Option<Pending> {
        let index = self.pending.iter().position(|p| p.conn == conn)?;
        self.pending[index].connected = true;
        self.take_if_ready(index)
    }

    /// Removes the operation of `token`, complete or not.
    pub fn take(&mut self, token: &str) -> Option<Pending> {
        let index = self.index(token)?;
        Some(self.pending.remove(index))
    }

    /// No operation in flight: the log may be dropped when the room has no member here.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
    }

    fn index(&self, token: &str) -> Option<usize> {
        self.pending.iter().position(|p| p.token == token)
    }

    fn take_if_ready(&mut self, index: usize) -> Option<Pending> {
        self.pending[index]
            .ready()
            .then(|| self.pending.remove(index))
    }
}
