//! One chat worker: a socket.io server for rooms, with a local hub of room membership, a Redis
//! bus to the other workers, and the HTTP routes of the page and health checks.

pub mod bus;
pub mod config;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod listener;
pub mod node;
pub mod rate;
pub mod report;
pub mod server;

pub use config::WorkerSettings;
pub use server::{BusKind, run};
