//! The HTTP edge of a worker: how connections are served (every phase bounded in time and
//! size), who a client is (its address, through trusted proxies), what one client may hold
//! (connections and sockets per address, sockets per connection), what a handshake keeps, and
//! the counts of what was refused.

pub mod body;
pub mod clients;
pub mod counters;
pub mod handshake;
pub mod serve;
