//! HTTP serving with a bound on every phase, for the workers and the supervisor's admin port.
//! `axum::serve` sets no timeout and no size limit; this loop serves each connection with
//! hyper's HTTP/1 builder, configured from the settings:
//! - a request head must be complete within `header_read_timeout`, counted from the start of
//!   the connection or from the end of the previous response (so silent, slowloris and idle
//!   kept-alive connections are all closed), and be at most `max_header_bytes` (else 431);
//! - a request body must be complete within `body_read_timeout` of its head;
//! - every connection is a [`StallGuard`] (a client that stops reading is cut);
//! - optionally, at most `max_connections` are served at once (more wait in the kernel's
//!   backlog, holding no descriptor of ours), and TCP connections per client address are bounded
//!   ([`Clients`]).
//!
//! Each refusal is logged at debug and counted ([`counters`]).

use std::{
    future::Future,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::Request};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use super::{
    body::DeadlineBody,
    clients::{Clients, Connection},
    counters::{self, Refusal},
};
use crate::stall::StallGuard;

/// How the connections of one listener are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub write_stall_timeout: Duration,
    /// Most connections served at once (`None`: no bound but the descriptor limit).
    pub max_connections: Option<usize>,
    /// Per-address accounting (workers); `None` for the admin port.
    pub clients: Option<Arc<Clients>>,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets requests in
/// flight finish, and returns once every connection hyper still serves is closed (upgraded
/// websockets are no longer hyper's: their owners close them).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(options.max_header_bytes)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let permits = options.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let (stop, stopping) = watch::channel(());
    let (open, open_watch) = watch::channel(());
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);

    loop {
        let permit = match &permits {
            Some(permits) => tokio::select! {
                permit = Arc::clone(permits).acquire_owned() => permit.ok(),
                () = &mut shutdown => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_errors.failed(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Chat frames are small and must leave at once, not after the client's (possibly
        // delayed) acknowledgement of the previous one. Failing only costs latency.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
        }
        let slot = match &options.clients {
            Some(clients) => match clients.admit_connection(peer.ip()) {
                Ok(slot) => slot,
                Err(held) => {
                    counters::count(Refusal::ConnectionsPerIp);
                    tracing::debug!(%peer, held, "connection refused: too many from this address");
                    continue;
                }
            },
            None => None,
        };
        let proxied = options
            .clients
            .as_ref()
            .is_some_and(|clients| clients.trusted.contains(peer.ip()));
        let held: Option<Box<dyn Send + Sync>> = match (slot, permit) {
            (None, None) => None,
            held => Some(Box::new(held)),
        };
        let io = StallGuard::new(stream, options.write_stall_timeout).holding(held);
        let connection = Arc::new(Connection::new(peer, proxied, Some(io.cutter())));
        let service = hyper::service::service_fn({
            let app = app.clone();
            let body_read_timeout = options.body_read_timeout;
            move |request: Request<Incoming>| {
                let (mut parts, body) = request.into_parts();
                parts.extensions.insert(Arc::clone(&connection));
                let body = if http_body::Body::is_end_stream(&body) {
                    Body::new(body)
                } else {
                    Body::new(DeadlineBody::new(Body::new(body), body_read_timeout))
                };
                let mut app = app.clone();
                tower_service::Service::call(&mut app, Request::from_parts(parts, body))
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stopping = stopping.clone();
        let open = open_watch.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                refused(&err, peer);
            }
            drop(open);
        });
    }

    drop(listener);
    let _ = stop.send(());
    drop(stopping);
    drop(open_watch);
    // Resolves once every connection task has dropped its receiver.
    open.closed().await;
}

/// Logs (at debug) and counts what a failed connection says about its client.
fn refused(err: &hyper::Error, peer: std::net::SocketAddr) {
    let refusal = if err.is_timeout() {
        Some(Refusal::HeaderTimeout)
    } else if err.is_parse_too_large() {
        Some(Refusal::HeaderTooLarge)
    } else if err.is_parse() {
        Some(Refusal::BadRequest)
    } else {
        None
    };
    if let Some(refusal) = refusal {
        counters::count(refusal);
    }
    tracing::debug!(%peer, cause = %err, reason = refusal.map(Refusal::as_str), "connection ended with an error");
}

/// `accept` errors: descriptors exhausted (the operator must act: logged at warn, at most every
/// 10 s) or a connection that failed before it was accepted (nothing to do).
#[derive(Default)]
struct AcceptErrors {
    last_warned: Option<Instant>,
}

impl AcceptErrors {
    async fn failed(&mut self, err: &io::Error) {
        counters::count(Refusal::AcceptFailed);
        use nix::errno::Errno;
        let exhausted = err.raw_os_error().is_some_and(|code| {
            [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
                .contains(&Errno::from_raw(code))
        });
        if !exhausted {
            tracing::debug!(%err, "accept failed");
            return;
        }
        if self
            .last_warned
            .is_none_or(|last| last.elapsed() >= Duration::from_secs(10))
        {
            self.last_warned = Some(Instant::now());
            tracing::warn!(%err, "cannot accept connections: out of file descriptors or memory; raise the descriptor limit (ulimit -n) or lower the per-address limits");
        }
        // The listener stays readable while the backlog is full: without a pause this loop
        // would spin.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
