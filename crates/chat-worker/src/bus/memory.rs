//! An in-memory bus for tests: several nodes in one process, each subscribed exactly while its
//! hub has the topic occupied, like the Redis bus but without Redis. Rooms only: user topics
//! need the inbox's Redis scripts, so they are tracked but never published to.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chat_protocol::{RoomId, bus::Topic};

use super::{Bus, Inbound};
use crate::{fanout::LocalFanout, hub::Hub};

/// Per topic, the nodes subscribed to it (by node number) and how to reach them.
type Subscriptions = HashMap<Topic, Vec<(usize, LocalFanout)>>;

/// The shared medium; every [`MemoryBus`] made from one broker reaches the others.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    subscribers: Arc<Mutex<Subscriptions>>,
    next_node: Arc<Mutex<usize>>,
}

impl MemoryBroker {
    pub fn bus(&self, hub: Arc<Hub>, inbound: Inbound) -> Arc<MemoryBus> {
        let mut next = self.next_node.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        Arc::new(MemoryBus {
            broker: self.clone(),
            node: *next,
            hub,
            fanout: inbound.rooms,
        })
    }

    /// How many nodes are subscribed to `room` now.
    pub fn subscriber_count(&self, room: &RoomId) -> usize {
        self.lock()
            .get(&Topic::Room(room.clone()))
            .map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct MemoryBus {
    broker: MemoryBroker,
    node: usize,
    hub: Arc<Hub>,
    fanout: LocalFanout,
}

impl Bus for MemoryBus {
    fn publish(&self, room: &RoomId, frame: String) {
        let targets: Vec<LocalFanout> = self
            .broker
            .lock()
            .get(&Topic::Room(room.clone()))
            .map(|subs| subs.iter().map(|(_, fanout)| fanout.clone()).collect())
            .unwrap_or_default();
        let room = room.as_str().to_owned();
        // Like Redis, the publisher's own node receives its frame too and must skip it.
        tokio::spawn(async move {
            for fanout in targets {
                fanout.deliver_frame(&room, &frame).await;
            }
        });
    }

    fn occupancy_changed(&self, topic: &Topic) {
        let mut subscribers = self.broker.lock();
        let subs = subscribers.entry(topic.clone()).or_default();
        subs.retain(|(node, _)| *node != self.node);
        if self.hub.is_occupied(topic) {
            subs.push((self.node, self.fanout.clone()));
        }
        if subs.is_empty() {
            subscribers.remove(topic);
        }
    }

    fn is_connected(&self) -> bool {
        true
    }
}
