//! Listening sockets: bound by the worker itself, or inherited from the supervisor, which binds
//! each worker port once and keeps it across respawns so that no connection is refused while a
//! worker restarts (they wait in the kernel's backlog).

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    os::fd::{FromRawFd, RawFd},
};

use nix::sys::socket::Backlog;

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
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let listener = bind_with_backlog(addr, backlog)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Binds `addr` and listens with room for `backlog` connections waiting to be accepted (capped
/// at `SOMAXCONN`, and by the kernel at `net.core.somaxconn`). The standard library's 128 is too
/// few for a worker that restarts under thousands of clients: a SYN that finds the queue full is
/// dropped and retried only after 1 s, 3 s, 7 s.
pub fn bind_with_backlog(addr: SocketAddr, backlog: u32) -> std::io::Result<StdListener> {
    let listener = StdListener::bind(addr)?;
    // Listening again on a listening socket only changes its backlog (Linux).
    let most = i32::from(Backlog::MAXCONN);
    let backlog = Backlog::new(i32::try_from(backlog).unwrap_or(most).min(most))
        .map_err(std::io::Error::from)?;
    nix::sys::socket::listen(&listener, backlog).map_err(std::io::Error::from)?;
    Ok(listener)
}
