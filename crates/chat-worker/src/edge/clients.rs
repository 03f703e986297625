//! Who a client is at the edge, and what one client may hold: its address (the peer's, or the
//! one a trusted proxy names in `X-Forwarded-For`), the TCP connections and sockets per address
//! (`--max-connections-per-ip`), and the sockets per TCP connection
//! (`--max-sessions-per-connection`).
//!
//! Counts are held by guards: a slot is taken when a connection or socket opens and given back
//! when its guard is dropped, whatever ends it. A socket's guard travels in the handshake
//! request's extensions, which the engine keeps for the session's whole life.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::http::HeaderMap;

use crate::stall::Cutter;

/// Peers whose `X-Forwarded-For` is believed: addresses and CIDR blocks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `--trusted-proxies`: `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`; empty entries
    /// are skipped.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (addr, bits) = match entry.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (entry, None),
            };
            let invalid = || {
                format!(
                    "--trusted-proxies: {entry:?} is not an IP address or a CIDR block \
                     (like 127.0.0.1 or 10.0.0.0/8)"
                )
            };
            let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(invalid)?,
                None => max,
            };
            blocks.push((addr, bits));
        }
        Ok(Self(blocks))
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0
            .iter()
            .any(|(block, bits)| prefix_matches(*block, addr, *bits))
    }

    /// The client behind a request that arrived from `peer`: the peer itself, unless it is a
    /// trusted proxy; then the right-most `X-Forwarded-For` entry that is not a trusted proxy
    /// (entries left of it could be made up by the client).
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for entry in entries.iter().rev() {
            let Ok(addr) = entry.trim().parse::<IpAddr>() else {
                break;
            };
            client = canonical(addr);
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

fn prefix_matches(block: IpAddr, addr: IpAddr, bits: u8) -> bool {
    match (canonical(block), addr) {
        (IpAddr::V4(block), IpAddr::V4(addr)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(block) & mask == u32::from(addr) & mask
        }
        (IpAddr::V6(block), IpAddr::V6(addr)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(block) & mask == u128::from(addr) & mask
        }
        _ => false,
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as the IPv4 address they are.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The key a client address counts under: IPv4 addresses as they are, IPv6 addresses by their
/// /64 (one subscriber's allocation; counting single IPv6 addresses would bound nothing).
fn counting_key(addr: IpAddr) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// Open connections and sockets per client address, on this worker.
#[derive(Debug)]
pub struct Clients {
    pub trusted: TrustedProxies,
    max_per_ip: usize,
    pub max_sessions_per_connection: usize,
    tcp: Arc<Mutex<HashMap<IpAddr, usize>>>,
    sockets: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Clients {
    pub fn new(
        trusted: TrustedProxies,
        max_per_ip: usize,
        max_sessions_per_connection: usize,
    ) -> Self {
        Self {
            trusted,
            max_per_ip,
            max_sessions_per_connection,
            tcp: Arc::default(),
            sockets: Arc::default(),
        }
    }

    /// A slot for a TCP connection from `peer`, unless the peer holds as many as allowed.
    /// Trusted proxies carry many clients: their connections are not counted (`Ok(None)`).
    pub fn admit_connection(&self, peer: IpAddr) -> Result<Option<Slot>, usize> {
        if self.trusted.contains(peer) {
            return Ok(None);
        }
        // A long-polling socket uses two connections (its held poll and its sends).
        take(&self.tcp, counting_key(peer), 2 * self.max_per_ip).map(Some)
    }

    /// A slot for a new socket of `client`, unless it holds as many as allowed.
    pub fn admit_socket(&self, client: IpAddr) -> Result<Slot, usize> {
        take(&self.sockets, counting_key(client), self.max_per_ip)
    }
}

fn take(
    counts: &Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
    max: usize,
) -> Result<Slot, usize> {
    let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
    let held = map.entry(key).or_insert(0);
    if *held >= max {
        return Err(*held);
    }
    *held += 1;
    Ok(Slot {
        counts: Arc::clone(counts),
        key,
    })
}

/// One connection or socket counted for an address; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = map.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// What the worker knows of one TCP connection, handed to each of its requests.
#[derive(Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer is a trusted proxy (its requests carry many clients).
    pub proxied: bool,
    /// Sockets opened over this connection that are still open.
    sessions: Arc<AtomicUsize>,
    /// Cuts the TCP connection (a websocket socket's transport).
    pub cutter: Option<Cutter>,
}

impl Connection {
    pub fn new(peer: SocketAddr, proxied: bool, cutter: Option<Cutter>) -> Self {
        Self {
            peer,
            proxied,
            sessions: Arc::default(),
            cutter,
        }
    }

    /// A slot for one more socket opened over this connection, unless it holds `max`.
    pub fn admit_session(&self, max: usize) -> Result<SessionSlot, usize> {
        let held = self.sessions.fetch_add(1, Ordering::AcqRel);
        let slot = SessionSlot(Arc::clone(&self.sessions));
        if held >= max {
            // Dropping the slot gives the count back.
            return Err(held);
        }
        Ok(slot)
    }
}

/// One socket counted against the connection that opened it; given back when dropped.
#[derive(Debug)]
pub struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a socket holds for its whole life: its slots, the cutter of its websocket's TCP
/// connection, and whether it was banned. Kept in the handshake request's extensions (which
/// must be `Clone`: the engine copies the request parts), so shared.
#[derive(Debug, Clone)]
pub struct SocketSlots(Arc<SlotsInner>);

#[derive(Debug)]
struct SlotsInner {
    _address: Slot,
    _connection: Option<SessionSlot>,
    transport: Option<Cutter>,
    banned: AtomicBool,
}

impl SocketSlots {
    pub fn new(address: Slot, connection: Option<SessionSlot>, transport: Option<Cutter>) -> Self {
        Self(Arc::new(SlotsInner {
            _address: address,
            _connection: connection,
            transport,
            banned: AtomicBool::new(false),
        }))
    }

    /// Ends the socket's session for abuse: no new socket may connect over it, and a
    /// websocket's TCP connection is cut (a client that does not read cannot even be told).
    pub fn ban(&self) {
        self.0.banned.store(true, Ordering::Release);
        if let Some(cutter) = &self.0.transport {
            cutter.cut();
        }
    }

    pub fn is_banned(&self) -> bool {
        self.0.banned.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_proxies_parse_and_match() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8", "fd00::/8", ""]);
        assert!(trusted.contains(ip("127.0.0.1")));
        assert!(trusted.contains(ip("::ffff:127.0.0.1")));
        assert!(!trusted.contains(ip("127.0.0.2")));
        assert!(trusted.contains(ip("10.200.3.4")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(!trusted.contains(ip("fe80::1")));
        for bad in ["nginx", "10.0.0.0/33", "1.2.3.4/x", "::1/129"] {
            assert!(
                TrustedProxies::parse(&[bad.to_string()]).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_peers() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.1.1.1"),
        );
        // From a trusted proxy: the right-most entry that is not a proxy; the client's own
        // made-up entry (6.6.6.6) is left of it and ignored.
        assert_eq!(
            trusted.client_of(ip("127.0.0.1"), &headers),
            ip("203.0.113.7")
        );
        // From anyone else: the peer, whatever the header says.
        assert_eq!(
            trusted.client_of(ip("192.0.2.1"), &headers),
            ip("192.0.2.1")
        );
        // Garbage stops the walk at the last good address.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("junk, 10.1.1.1"),
        );
        assert_eq!(trusted.client_of(ip("127.0.0.1"), &headers), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.client_of(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn slots_bound_an_address_and_come_back_when_dropped() {
        let clients = Clients::new(proxies(&["127.0.0.1"]), 2, 1);
        let a = clients.admit_socket(ip("192.0.2.1")).unwrap();
        let _b = clients.admit_socket(ip("192.0.2.1")).unwrap();
        assert_eq!(clients.admit_socket(ip("192.0.2.1")).unwrap_err(), 2);
        // Another address has its own count; an IPv6 /64 counts as one.
        assert!(clients.admit_socket(ip("192.0.2.2")).is_ok());
        let _v6 = clients.admit_socket(ip("2001:db8::1")).unwrap();
        let _v6b = clients.admit_socket(ip("2001:db8::2")).unwrap();
        assert!(clients.admit_socket(ip("2001:db8::3")).is_err());
        drop(a);
        assert!(clients.admit_socket(ip("192.0.2.1")).is_ok());
        // Trusted proxies' connections are not counted.
        assert!(clients.admit_connection(ip("127.0.0.1")).unwrap().is_none());

        let connection = Connection::new("192.0.2.9:5000".parse().unwrap(), false, None);
        let first = connection.admit_session(1).unwrap();
        assert!(connection.admit_session(1).is_err());
        drop(first);
        assert!(connection.admit_session(1).is_ok());
    }
}
