//! Listening sockets: bound by the worker itself, or inherited from the supervisor, which binds
//! each worker port once and keeps it across respawns so that no connection is refused while a
//! worker restarts (they wait in the kernel's backlog).

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    os::fd::{FromRawFd, RawFd},
};

/// Takes ownership of the listening socket at `fd`, inherited from the parent process.
///
/// # Safety
/// `fd` must be an open file descriptor that nothing else in this process owns or will close.
pub unsafe fn inherited(fd: RawFd) -> std::io::Result<tokio::net::TcpListener> {
    // SAFETY: the caller guarantees `fd` is open and unowned; from here the listener owns it.
    let listener = unsafe { StdListener::from_raw_fd(fd) };
    // Fails with ENOTSOCK if the descriptor is not a socket: a clear error rather than
    // undefined behavior later.
    listener.local_addr()?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Binds `addr` for a worker that runs on its own.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = StdListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}
