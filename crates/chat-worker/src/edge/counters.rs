//! Refusals at the edge, counted instead of logged: what a client sends never produces a log
//! line per frame at info or above. Each refusal is logged at debug where it happens and counted
//! here; a worker prints one summary line at info per minute in which something was refused.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Why a client, a request or a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request head larger than `--max-header-bytes` (answered 431).
    HeaderTooLarge,
    /// A request head not complete within `--header-read-timeout-ms` (also: a silent or idle
    /// connection), closed.
    HeaderTimeout,
    /// A request body not complete within `--body-read-timeout-ms`.
    BodyTimeout,
    /// A request hyper could not parse (not HTTP/1), closed.
    BadRequest,
    /// A TCP connection over `--max-connections-per-ip`, closed at once.
    ConnectionsPerIp,
    /// A socket handshake over `--max-connections-per-ip` (answered 429).
    SocketsPerIp,
    /// A socket handshake over `--max-sessions-per-connection` (answered 429).
    SessionsPerConnection,
    /// A `Host` not in `--allowed-hosts` (answered 403).
    Host,
    /// An `Origin` not allowed (answered 403).
    Origin,
    /// An event over the rate limit (answered `rate_limited`).
    RateLimited,
    /// A socket disconnected after `--max-refusals` refusals within `--refusal-window-ms`.
    TooManyRefusals,
    /// A socket closed for a packet the parser refuses (binary attachments among them).
    BadPacket,
    /// A socket disconnected because its token expired.
    TokenExpired,
    /// `accept` failed (descriptors exhausted, most often).
    AcceptFailed,
}

impl Refusal {
    pub const ALL: [Refusal; 14] = [
        Refusal::HeaderTooLarge,
        Refusal::HeaderTimeout,
        Refusal::BodyTimeout,
        Refusal::BadRequest,
        Refusal::ConnectionsPerIp,
        Refusal::SocketsPerIp,
        Refusal::SessionsPerConnection,
        Refusal::Host,
        Refusal::Origin,
        Refusal::RateLimited,
        Refusal::TooManyRefusals,
        Refusal::BadPacket,
        Refusal::TokenExpired,
        Refusal::AcceptFailed,
    ];

    /// The reason's name in logs (and, later, in metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTooLarge => "header_too_large",
            Self::HeaderTimeout => "header_timeout",
            Self::BodyTimeout => "body_timeout",
            Self::BadRequest => "bad_request",
            Self::ConnectionsPerIp => "connections_per_ip",
            Self::SocketsPerIp => "sockets_per_ip",
            Self::SessionsPerConnection => "sessions_per_connection",
            Self::Host => "host",
            Self::Origin => "origin",
            Self::RateLimited => "rate_limited",
            Self::TooManyRefusals => "too_many_refusals",
            Self::BadPacket => "bad_packet",
            Self::TokenExpired => "token_expired",
            Self::AcceptFailed => "accept_failed",
        }
    }
}

static COUNTS: [AtomicU64; Refusal::ALL.len()] = [const { AtomicU64::new(0) }; Refusal::ALL.len()];

/// Counts one refusal.
pub fn count(refusal: Refusal) {
    COUNTS[refusal as usize].fetch_add(1, Ordering::Relaxed);
    if refusal == Refusal::TooManyRefusals {
        crate::metrics::dropped(crate::metrics::Dropped::Refusals, 1);
    }
}

/// Every reason with its count since the process started.
pub fn snapshot() -> Vec<(&'static str, u64)> {
    Refusal::ALL
        .iter()
        .map(|refusal| {
            (
                refusal.as_str(),
                COUNTS[*refusal as usize].load(Ordering::Relaxed),
            )
        })
        .collect()
}

/// Prints, once per `every` in which something was refused, one line with what was refused
/// since the previous line.
pub fn spawn_summary(every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = snapshot();
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let now = snapshot();
            let changed: Vec<String> = now
                .iter()
                .zip(&last)
                .filter(|((_, new), (_, old))| new > old)
                .map(|((name, new), (_, old))| format!("{name}={}", new - old))
                .collect();
            if !changed.is_empty() {
                tracing::info!(
                    refused = %changed.join(" "),
                    window_secs = every.as_secs(),
                    "clients refused at the edge (details at debug)"
                );
            }
            last = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let before = snapshot();
        count(Refusal::Host);
        count(Refusal::Host);
        count(Refusal::AcceptFailed);
        let after = snapshot();
        let delta = |name: &str| {
            let find = |list: &[(&str, u64)]| list.iter().find(|(n, _)| *n == name).unwrap().1;
            find(&after) - find(&before)
        };
        assert!(delta("host") >= 2);
        assert!(delta("accept_failed") >= 1);
        for (index, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*refusal as usize, index, "ALL is in declaration order");
        }
    }
}
