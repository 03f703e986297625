//! What the supervisor shows operators: the `/status` document and the JSON lines of its
//! console when stdout is not a terminal.

use serde::{Deserialize, Serialize};

use crate::report::RoomMembers;

/// Where a worker is in its life, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Spawned, not yet listening.
    Starting,
    /// Serving clients.
    Ready,
    /// Closing its clients on the way out.
    Draining,
    /// Exited; waiting to be respawned (or the supervisor is stopping).
    Down,
}

/// One worker's line of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: u32,
    /// Zero while the worker is down.
    pub pid: u32,
    pub port: u16,
    pub connections: u64,
    pub rooms: u64,
    pub restarts: u32,
    /// When the current process of this worker started (RFC 3339, UTC).
    pub up_since: String,
    pub state: WorkerState,
    /// Users with a logged-in socket on this worker.
    pub logged_in_users: u64,
    /// Resident memory of the worker process, in bytes (0 until its first metrics report).
    pub memory_bytes: u64,
    /// Whether the worker's Redis bus is connected (`null` until its first metrics report).
    pub redis_up: Option<bool>,
    /// socket.io events written to clients by this worker slot, every incarnation included.
    pub deliveries: u64,
    /// Deliveries in the last second.
    pub deliveries_per_sec: u64,
}

/// `GET /status` on the supervisor's admin port. Workers are in port order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub total_connections: u64,
    /// Deliveries in the last second, all workers.
    pub total_deliveries_per_sec: u64,
    /// Resident memory of all workers, in bytes.
    pub total_memory_bytes: u64,
    pub workers: Vec<WorkerStatus>,
    /// The host's busiest rooms, most members first (members summed over workers; each worker
    /// reports its own busiest, so a room spread thinly over many workers may be missing).
    pub busiest_rooms: Vec<RoomMembers>,
}

/// `GET /history` on the admin port: per worker, one sample a second over the last ten minutes,
/// oldest first (every list of every worker has the same length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleHistory {
    /// Time between samples, in milliseconds.
    pub interval_ms: u64,
    /// When the newest sample was taken, in unix milliseconds.
    pub latest_ms: u64,
    pub workers: Vec<WorkerHistory>,
}

/// One worker's samples in [`ConsoleHistory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHistory {
    pub id: u32,
    pub connections: Vec<u64>,
    pub deliveries_per_sec: Vec<u64>,
    pub memory_bytes: Vec<u64>,
}

/// A compact per-worker count for the console's `counts` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    pub id: u32,
    pub port: u16,
    pub connections: u64,
    pub rooms: u64,
}

/// A line of the supervisor's console when stdout is not a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConsoleEvent {
    WorkerStarted {
        id: u32,
        pid: u32,
        port: u16,
    },
    WorkerReady {
        id: u32,
        pid: u32,
        port: u16,
    },
    WorkerExited {
        id: u32,
        pid: u32,
        port: u16,
        status: String,
    },
    Counts {
        total_connections: u64,
        workers: Vec<WorkerCounts>,
    },
    Stopping,
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_tagged_by_event() {
        let line = serde_json::to_string(&ConsoleEvent::WorkerReady {
            id: 0,
            pid: 42,
            port: 6001,
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"event":"worker_ready","id":0,"pid":42,"port":6001}"#
        );
        assert_eq!(
            serde_json::to_string(&ConsoleEvent::Stopped).unwrap(),
            r#"{"event":"stopped"}"#
        );
    }
}
