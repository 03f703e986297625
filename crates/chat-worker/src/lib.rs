//! One chat worker: a socket.io server for rooms, with a local hub of room membership, a Redis
//! bus to the other workers, and the HTTP routes of the page and health checks.

pub mod auth;
pub mod bus;
pub mod config;
pub mod dialects;
pub mod edge;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod payload;
pub mod people;
pub mod protocols;
pub mod push;
pub mod rate;
pub mod redact;
pub mod report;
pub mod rooms;
pub mod server;
pub mod stall;
pub mod store;

pub use config::WorkerSettings;
pub use server::{BusKind, run};

/// Now, in unix milliseconds (the `ts` of every message).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
