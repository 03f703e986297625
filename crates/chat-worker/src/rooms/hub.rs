//! The hub: which topics (rooms, logged-in users) have sockets on this worker, and how many. It
//! reports the two transitions the bus acts on: a topic's first local socket (subscribe) and its
//! last (unsubscribe).
//!
//! Architecture invariant: a topic is in the hub exactly while at least one local socket is in it;
//! the bus reconciles its subscriptions against [`Hub::is_occupied`], never against its own memory
//! of past transitions, so a lost or reordered notice cannot leave a topic deaf or subscribed
//! forever.

use std::{collections::HashMap, sync::Mutex};

use chat_protocol::bus::Topic;

#[derive(Debug, Default)]
pub struct Hub {
    members: Mutex<Members>,
}

#[derive(Debug, Default)]
struct Members {
    counts: HashMap<Topic, u32>,
    /// How many of `counts`' keys are rooms (the rest are users), kept for cheap reporting.
    rooms: usize,
}

/// What a membership change did to the room's local occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// The room went from empty to occupied, or from occupied to empty: the bus must act.
    Changed,
    /// The room had (or still has) other local members.
    Unchanged,
}

impl Hub {
    pub fn enter(&self, topic: &Topic) -> Occupancy {
        let mut members = self.lock();
        let count = members.counts.entry(topic.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return Occupancy::Unchanged;
        }
        if matches!(topic, Topic::Room(_)) {
            members.rooms += 1;
        }
        Occupancy::Changed
    }

    pub fn leave(&self, topic: &Topic) -> Occupancy {
        let mut members = self.lock();
        match members.counts.get_mut(topic) {
            Some(count) if *count > 1 => {
                *count -= 1;
                Occupancy::Unchanged
            }
            Some(_) => {
                members.counts.remove(topic);
                if matches!(topic, Topic::Room(_)) {
                    members.rooms -= 1;
                }
                Occupancy::Changed
            }
            // Leaving a topic never entered is a caller bug; it must not corrupt the counts.
            None => Occupancy::Unchanged,
        }
    }

    pub fn is_occupied(&self, topic: &Topic) -> bool {
        self.lock().counts.contains_key(topic)
    }

    pub fn occupied_topics(&self) -> Vec<Topic> {
        self.lock().counts.keys().cloned().collect()
    }

    /// Rooms with at least one local member.
    pub fn room_count(&self) -> usize {
        self.lock().rooms
    }

    /// The `n` rooms with the most local members, most first (ties by room id), with their
    /// counts. One pass over the hub's topics, keeping `n` at a time.
    pub fn busiest_rooms(&self, n: usize) -> Vec<chat_protocol::report::RoomMembers> {
        use std::{cmp::Reverse, collections::BinaryHeap};
        let members = self.lock();
        // A min-heap of the best `n` so far: the weakest is on top, to be replaced.
        let mut best: BinaryHeap<Reverse<(u32, Reverse<&str>)>> = BinaryHeap::with_capacity(n + 1);
        for (topic, count) in &members.counts {
            if let Topic::Room(room) = topic {
                best.push(Reverse((*count, Reverse(room.as_str()))));
                if best.len() > n {
                    best.pop();
                }
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(
                |Reverse((count, Reverse(room)))| chat_protocol::report::RoomMembers {
                    room: room.to_owned(),
                    members: u64::from(count),
                },
            )
            .collect()
    }

    /// Users with at least one local logged-in socket.
    pub fn user_count(&self) -> usize {
        let members = self.lock();
        members.counts.len() - members.rooms
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        // The map is never left half-updated by a panic (no code between lock and unlock
        // panics), so a poisoned lock still guards consistent data.
        self.members
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::{Limits, RoomId, UserId};

    fn room(name: &str) -> Topic {
        Topic::Room(RoomId::parse(name, &Limits::default()).expect("valid test room"))
    }

    fn user(name: &str) -> Topic {
        Topic::User(UserId::parse(name, &Limits::default()).expect("valid test user"))
    }

    #[test]
    fn first_and_last_member_are_the_transitions() {
        let hub = Hub::default();
        let lobby = room("lobby");
        assert_eq!(hub.enter(&lobby), Occupancy::Changed);
        assert_eq!(hub.enter(&lobby), Occupancy::Unchanged);
        assert!(hub.is_occupied(&lobby));
        assert_eq!(hub.leave(&lobby), Occupancy::Unchanged);
        assert!(hub.is_occupied(&lobby));
        assert_eq!(hub.leave(&lobby), Occupancy::Changed);
        assert!(!hub.is_occupied(&lobby));
        assert_eq!(hub.room_count(), 0);
    }

    #[test]
    fn rooms_are_counted_apart_and_stray_leaves_are_harmless() {
        let hub = Hub::default();
        hub.enter(&room("a"));
        hub.enter(&room("b"));
        hub.enter(&room("b"));
        assert_eq!(hub.room_count(), 2);
        assert_eq!(hub.leave(&room("never")), Occupancy::Unchanged);
        hub.enter(&user("a"));
        assert_eq!((hub.room_count(), hub.user_count()), (2, 1));
        let mut topics = hub.occupied_topics();
        topics.sort();
        assert_eq!(topics, vec![room("a"), room("b"), user("a")]);
        assert_eq!(hub.leave(&user("a")), Occupancy::Changed);
        assert_eq!((hub.room_count(), hub.user_count()), (2, 0));
    }

    #[test]
    fn busiest_rooms_come_first_and_users_are_not_rooms() {
        let hub = Hub::default();
        for (name, members) in [("a", 1), ("b", 3), ("c", 2), ("d", 2)] {
            for _ in 0..members {
                hub.enter(&room(name));
            }
        }
        for _ in 0..9 {
            hub.enter(&user("busy"));
        }
        let top: Vec<(String, u64)> = hub
            .busiest_rooms(3)
            .into_iter()
            .map(|r| (r.room, r.members))
            .collect();
        assert_eq!(top, vec![("b".into(), 3), ("c".into(), 2), ("d".into(), 2)]);
        assert!(hub.busiest_rooms(0).is_empty());
    }
}
