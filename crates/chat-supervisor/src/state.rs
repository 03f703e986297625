//! The supervisor's picture of its workers, shared by the worker keepers (who write it), the
//! console and the status endpoint (who read it).

use std::{sync::Mutex, time::SystemTime};

use chat_protocol::status::{
    ConsoleEvent, StatusResponse, WorkerCounts, WorkerState, WorkerStatus,
};
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct WorkerSlot {
    pub id: u32,
    pub port: u16,
    pub pid: u32,
    pub state: WorkerState,
    pub connects: u64,
    pub disconnects: u64,
    pub rooms: u64,
    pub restarts: u32,
    pub up_since: SystemTime,
}

impl WorkerSlot {
    pub fn connections(&self) -> u64 {
        self.connects.saturating_sub(self.disconnects)
    }
}

/// Every slot, in port order, plus a channel of lifecycle events for the console and tests.
pub struct ClusterState {
    slots: Mutex<Vec<WorkerSlot>>,
    events: broadcast::Sender<ConsoleEvent>,
}

impl ClusterState {
    pub fn new(base_port: u16, workers: u32) -> Self {
        let slots = (0..workers)
            .map(|id| WorkerSlot {
                id,
                port: base_port + id as u16,
                pid: 0,
                state: WorkerState::Down,
                connects: 0,
                disconnects: 0,
                rooms: 0,
                restarts: 0,
                up_since: SystemTime::now(),
            })
            .collect();
        Self {
            slots: Mutex::new(slots),
            events: broadcast::channel(1024).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ConsoleEvent> {
        self.events.subscribe()
    }

    pub fn announce(&self, event: ConsoleEvent) {
        // No receiver yet is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Applies `change` to worker `id`'s slot.
    pub fn update(&self, id: u32, change: impl FnOnce(&mut WorkerSlot)) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(id as usize) {
            change(slot);
        }
    }

    pub fn status(&self) -> StatusResponse {
        let slots = self.lock();
        let workers: Vec<WorkerStatus> = slots
            .iter()
            .map(|slot| WorkerStatus {
                id: slot.id,
                pid: slot.pid,
                port: slot.port,
                connections: slot.connections(),
                rooms: slot.rooms,
                restarts: slot.restarts,
                up_since: humantime::format_rfc3339_seconds(slot.up_since).to_string(),
                state: slot.state,
            })
            .collect();
        StatusResponse {
            total_connections: workers.iter().map(|w| w.connections).sum(),
            workers,
        }
    }

    pub fn counts(&self) -> ConsoleEvent {
        let slots = self.lock();
        ConsoleEvent::Counts {
            total_connections: slots.iter().map(WorkerSlot::connections).sum(),
            workers: slots
                .iter()
                .map(|slot| WorkerCounts {
                    id: slot.id,
                    port: slot.port,
                    connections: slot.connections(),
                    rooms: slot.rooms,
                })
                .collect(),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.lock()
            .iter()
            .filter(|slot| slot.pid != 0)
            .map(|slot| slot.pid)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WorkerSlot>> {
        // Updates are single assignments that cannot panic midway; a poisoned lock still
        // guards consistent slots.
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}
