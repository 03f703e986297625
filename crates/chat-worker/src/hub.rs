//! The hub: which rooms have members on this worker, and how many. It reports the two
//! transitions the bus acts on: a room's first local member (subscribe) and its last (unsubscribe).
//!
//! Architecture invariant: a room is in the hub exactly while at least one local socket is in it;
//! the bus reconciles its subscriptions against [`Hub::is_occupied`], never against its own memory
//! of past transitions, so a lost or reordered notice cannot leave a room deaf or subscribed forever.

use std::{collections::HashMap, sync::Mutex};

use chat_protocol::RoomId;

#[derive(Debug, Default)]
pub struct Hub {
    members: Mutex<HashMap<RoomId, u32>>,
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
    pub fn enter(&self, room: &RoomId) -> Occupancy {
        let mut members = self.lock();
        let count = members.entry(room.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            Occupancy::Changed
        } else {
            Occupancy::Unchanged
        }
    }

    pub fn leave(&self, room: &RoomId) -> Occupancy {
        let mut members = self.lock();
        match members.get_mut(room) {
            Some(count) if *count > 1 => {
                *count -= 1;
                Occupancy::Unchanged
            }
            Some(_) => {
                members.remove(room);
                Occupancy::Changed
            }
            // Leaving a room never entered is a caller bug; it must not corrupt the counts.
            None => Occupancy::Unchanged,
        }
    }

    pub fn is_occupied(&self, room: &RoomId) -> bool {
        self.lock().contains_key(room)
    }

    pub fn occupied_rooms(&self) -> Vec<RoomId> {
        self.lock().keys().cloned().collect()
    }

    pub fn room_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, u32>> {
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
    use chat_protocol::Limits;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name, &Limits::default()).expect("valid test room")
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
        let mut rooms = hub.occupied_rooms();
        rooms.sort();
        assert_eq!(rooms, vec![room("a"), room("b")]);
    }
}
