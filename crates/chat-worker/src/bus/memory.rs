//! An in-memory bus for tests: several nodes in one process, each subscribed exactly while its
//! hub has the topic occupied, like the Redis bus but without Redis. Rooms only (user topics
//! need the inbox's Redis scripts, so they are tracked but never published to); a room's
//! history and members are kept here as the Redis scripts keep them, recovery excepted (a
//! recovery answers "not recoverable").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chat_protocol::{
    RoomId,
    bus::{FrameKind, NodeId, Topic, encode_frame},
    memory::MemberRecord,
    people::StreamId,
};
use futures_util::future::BoxFuture;

use super::{Bus, BusError, Inbound, RoomOp, RoomReply, RoomReplyReceiver, Said};
use crate::{
    rooms::{Rooms, hub::Hub},
    store::rooms::{HistoryEntry, Joined},
};

/// Per topic, the nodes subscribed to it (by node number) and how to reach them.
type Subscriptions = HashMap<Topic, Vec<(usize, Arc<Rooms>)>>;

/// What Redis would keep of a room.
#[derive(Default)]
struct RoomData {
    history: Vec<HistoryEntry>,
    members: HashMap<String, MemberRecord>,
}

#[derive(Default)]
struct Shared {
    subscribers: Subscriptions,
    rooms: HashMap<RoomId, RoomData>,
    next_node: usize,
    next_entry: u64,
}

/// The shared medium; every [`MemoryBus`] made from one broker reaches the others.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    shared: Arc<Mutex<Shared>>,
    /// Messages a room's history keeps.
    history_size: usize,
}

impl MemoryBroker {
    pub fn with_history(history_size: usize) -> Self {
        Self {
            history_size,
            ..Self::default()
        }
    }

    pub fn bus(&self, hub: Arc<Hub>, inbound: Inbound) -> Arc<MemoryBus> {
        let node = {
            let mut shared = self.lock();
            shared.next_node += 1;
            shared.next_node
        };
        Arc::new(MemoryBus {
            broker: self.clone(),
            node,
            hub,
            rooms: inbound.rooms,
        })
    }

    /// How many nodes are subscribed to `room` now.
    pub fn subscriber_count(&self, room: &RoomId) -> usize {
        self.lock()
            .subscribers
            .get(&Topic::Room(room.clone()))
            .map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `json` in the room's history (if kept) and sends `frame(stream)` to every node
    /// subscribed to the room, like the scripts' XADD and SPUBLISH.
    fn append_and_publish(
        &self,
        room: &RoomId,
        json: &str,
        said: Option<String>,
        frame: impl FnOnce(Option<StreamId>) -> String,
    ) {
        let (targets, stream) = {
            let mut shared = self.lock();
            let stream = (self.history_size > 0).then(|| {
                shared.next_entry += 1;
                StreamId {
                    ms: crate::unix_millis(),
                    seq: shared.next_entry,
                }
            });
            if let Some(stream) = stream {
                let history = &mut shared.rooms.entry(room.clone()).or_default().history;
                history.push(HistoryEntry {
                    stream,
                    json: json.to_owned(),
                    said,
                    legacy: false,
                });
                let excess = history.len().saturating_sub(self.history_size);
                history.drain(..excess);
            }
            let targets: Vec<Arc<Rooms>> = shared
                .subscribers
                .get(&Topic::Room(room.clone()))
                .map(|subs| subs.iter().map(|(_, rooms)| Arc::clone(rooms)).collect())
                .unwrap_or_default();
            (targets, stream)
        };
        let frame = frame(stream);
        let room = room.as_str().to_owned();
        // Like Redis, the publisher's own node receives its frame too.
        tokio::spawn(async move {
            for rooms in targets {
                rooms.on_frame(&room, &frame);
            }
        });
    }
}

pub struct MemoryBus {
    broker: MemoryBroker,
    node: usize,
    hub: Arc<Hub>,
    rooms: Arc<Rooms>,
}

impl MemoryBus {
    fn origin(&self) -> NodeId {
        self.rooms.origin()
    }

    fn run(&self, room: &RoomId, op: RoomOp) -> RoomReply {
        match op {
            RoomOp::Join(op) => {
                let (count, history) = {
                    let mut shared = self.broker.lock();
                    let data = shared.rooms.entry(room.clone()).or_default();
                    data.members.insert(op.pid.clone(), op.member.clone());
                    let history: Vec<HistoryEntry> = data
                        .history
                        .iter()
                        .rev()
                        .take(op.read_back)
                        .rev()
                        .cloned()
                        .collect();
                    (data.members.len() as u64, history)
                };
                let message = format!(r#"{},"count":{count}}}"#, op.message_prefix);
                let origin = self.origin();
                let mut joined_at = None;
                self.broker
                    .append_and_publish(room, &message, None, |stream| {
                        joined_at = stream;
                        encode_frame(origin, stream, FrameKind::Marker(&op.token), &message)
                    });
                RoomReply::Joined(Joined {
                    count,
                    stream: joined_at,
                    history,
                })
            }
            RoomOp::Quit(op) => {
                let removed = {
                    let mut shared = self.broker.lock();
                    let data = shared.rooms.entry(room.clone()).or_default();
                    match data.members.get(&op.pid) {
                        Some(member) if member.conn.as_deref() == Some(op.conn.as_str()) => {
                            let member = data.members.remove(&op.pid);
                            member.map(|m| (m, data.members.len() as u64))
                        }
                        _ => None,
                    }
                };
                let Some((member, count)) = removed else {
                    return RoomReply::Quit(false, 0);
                };
                let data =
                    serde_json::json!({"username": member.username, "userId": member.user_id});
                let message = format!(r#"{},"data":{data},"count":{count}}}"#, op.message_prefix);
                let origin = self.origin();
                self.broker
                    .append_and_publish(room, &message, None, |stream| {
                        encode_frame(origin, stream, FrameKind::Presence, &message)
                    });
                RoomReply::Quit(true, count)
            }
            RoomOp::Resume(_) => RoomReply::Resumed(None),
            RoomOp::ExpireSessions { .. } => RoomReply::Done,
        }
    }
}

impl Bus for MemoryBus {
    fn publish(&self, room: &RoomId, said: Said) {
        let origin = self.origin();
        let json = said.json.get().to_owned();
        self.broker
            .append_and_publish(room, &json, Some(said.id), |stream| {
                encode_frame(origin, stream, FrameKind::Say, &json)
            });
    }

    fn room_op(&self, room: &RoomId, op: RoomOp) -> RoomReplyReceiver {
        let (reply, wait) = tokio::sync::oneshot::channel();
        let _ = reply.send(Ok(self.run(room, op)));
        wait
    }

    fn members(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<MemberRecord>, BusError>> {
        let members = self
            .broker
            .lock()
            .rooms
            .get(room)
            .map(|data| data.members.values().cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(members) })
    }

    fn history(&self, room: &RoomId) -> BoxFuture<'_, Result<Vec<HistoryEntry>, BusError>> {
        let history: Vec<HistoryEntry> = self
            .broker
            .lock()
            .rooms
            .get(room)
            .map(|data| data.history.iter().rev().cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(history) })
    }

    fn occupancy_changed(&self, topic: &Topic) {
        let mut shared = self.broker.lock();
        let subs = shared.subscribers.entry(topic.clone()).or_default();
        subs.retain(|(node, _)| *node != self.node);
        if self.hub.is_occupied(topic) {
            subs.push((self.node, Arc::clone(&self.rooms)));
        }
        if subs.is_empty() {
            shared.subscribers.remove(topic);
        }
    }

    fn is_connected(&self) -> bool {
        true
    }
}
