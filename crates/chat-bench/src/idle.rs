//! The idle scenario: open N connections (spread over many loopback source addresses), hold
//! them, and report the server processes' resident memory per connection, with the kernel's
//! TCP memory reported apart (process RSS does not include it).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde::Serialize;

use crate::conn;

#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub targets: Vec<SocketAddr>,
    pub connections: usize,
    pub sources: Vec<IpAddr>,
    /// Processes whose RSS is measured (the workers).
    pub pids: Vec<u32>,
    pub hold: Duration,
    pub room_prefix: String,
    pub rooms: usize,
    /// The target is the bare-websocket floor (no socket.io handshake).
    pub raw: bool,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub scenario: &'static str,
    pub connections: usize,
    pub connected: usize,
    pub connect_failures: usize,
    pub connect_per_sec: f64,
    pub server_rss_before_kb: u64,
    pub server_rss_after_kb: u64,
    pub server_rss_per_connection_bytes: f64,
    pub kernel_tcp_mem_before_kb: u64,
    pub kernel_tcp_mem_after_kb: u64,
    /// Connections still open at the end of the hold (each answers the server's pings).
    pub open_after_hold: usize,
    pub bench_cpu_seconds: f64,
}

pub async fn run(config: IdleConfig) -> anyhow::Result<IdleReport> {
    let cpu_start = crate::cpu_seconds();
    let rss_before = total_rss_kb(&config.pids)?;
    let tcp_before = kernel_tcp_mem_kb();
    let started = Instant::now();
    let mut held = Vec::with_capacity(config.connections);
    let mut failures = 0;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in 0..config.connections {
        let target = config.targets[i % config.targets.len()];
        let source = (!config.sources.is_empty()).then(|| config.sources[i % config.sources.len()]);
        let query = format!("roomid={}{}", config.room_prefix, i % config.rooms.max(1));
        let raw = config.raw;
        pending.push(async move {
            if raw {
                conn::open(target, source, &format!("/?{query}")).await
            } else {
                conn::connect(target, source, &query).await
            }
        });
        if pending.len() >= config.concurrency.max(1) {
            match pending.next().await {
                Some(Ok(ws)) => held.push(keep_alive(ws)),
                Some(Err(_)) => failures += 1,
                None => {}
            }
        }
    }
    while let Some(result) = pending.next().await {
        match result {
            Ok(ws) => held.push(keep_alive(ws)),
            Err(err) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("chat-bench: connect failed: {err:#}");
                }
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // Let the workers finish their per-connection setup before measuring.
    tokio::time::sleep(config.hold).await;
    let rss_after = total_rss_kb(&config.pids)?;
    let tcp_after = kernel_tcp_mem_kb();
    let connected = held.len();
    let open_after_hold = held.iter().filter(|task| !task.is_finished()).count();
    for task in held {
        task.abort();
    }
    Ok(IdleReport {
        scenario: "idle",
        connections: config.connections,
        connected,
        connect_failures: failures,
        connect_per_sec: connected as f64 / connect_seconds.max(1e-9),
        server_rss_before_kb: rss_before,
        server_rss_after_kb: rss_after,
        server_rss_per_connection_bytes: (rss_after.saturating_sub(rss_before) * 1024) as f64
            / connected.max(1) as f64,
        kernel_tcp_mem_before_kb: tcp_before,
        open_after_hold,
        kernel_tcp_mem_after_kb: tcp_after,
        bench_cpu_seconds: crate::cpu_seconds() - cpu_start,
    })
}

fn total_rss_kb(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        total += status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
    }
    Ok(total)
}

/// The kernel's TCP buffer memory (`TCP: ... mem <pages>` in /proc/net/sockstat), in KiB.
fn kernel_tcp_mem_kb() -> u64 {
    let page_kb = 4;
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("TCP:"))?;
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                if word == "mem" {
                    return words.next()?.parse::<u64>().ok();
                }
            }
            None
        })
        .map_or(0, |pages| pages * page_kb)
}

/// Holds a connection open like a live client: answers engine.io pings (`2` → `3`) until the
/// server closes it. The task ends when the connection does.
fn keep_alive(mut ws: conn::Ws) -> tokio::task::JoinHandle<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message
                && text.as_str() == "2"
                && ws.send(Message::text("3")).await.is_err()
            {
                return;
            }
        }
    })
}
