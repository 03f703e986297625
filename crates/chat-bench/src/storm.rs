//! The storm scenario: N clients connected and joined; one worker is SIGKILLed; how long until
//! every client is connected and joined again. Clients reconnect by themselves like
//! socket.io-client (100-500 ms backoff with jitter); a client counts as back once the server
//! has acknowledged its `join`, i.e. it is chatting again.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::conn;

#[derive(Debug, Clone)]
pub struct StormConfig {
    pub targets: Vec<SocketAddr>,
    pub clients: usize,
    pub sources: Vec<IpAddr>,
    pub rooms: usize,
    /// The worker process to SIGKILL once every client is in.
    pub kill_pid: i32,
    /// Longest wait, for connecting and for coming back each.
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub joined_before: usize,
    /// Clients that lost their connection when the worker died.
    pub dropped: usize,
    /// From the kill until every client was joined again (None: not within the timeout).
    pub all_back_ms: Option<u64>,
    pub joined_at_end: usize,
    pub failed_attempts: usize,
}

#[derive(Default)]
struct Counters {
    joined: AtomicUsize,
    drops: AtomicUsize,
    failed_attempts: AtomicUsize,
    stop: AtomicBool,
}

pub async fn run(config: StormConfig) -> anyhow::Result<StormReport> {
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let target = config.targets[i % config.targets.len()];
        let source = (!config.sources.is_empty()).then(|| config.sources[i % config.sources.len()]);
        let query = format!("roomid=storm-{}", i % config.rooms.max(1));
        tasks.push(tokio::spawn(client(
            i,
            target,
            source,
            query,
            Arc::clone(&counters),
        )));
    }
    let all_joined =
        |counters: &Counters| counters.joined.load(Ordering::Acquire) == config.clients;
    let deadline = Instant::now() + config.timeout;
    while !all_joined(&counters) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined_before = counters.joined.load(Ordering::Acquire);

    let mut all_back_ms = None;
    if joined_before == config.clients {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(config.kill_pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let killed = Instant::now();
        // First the drops must be seen, then every client back.
        while counters.drops.load(Ordering::Acquire) == 0 && killed.elapsed() < config.timeout {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while !all_joined(&counters) && killed.elapsed() < config.timeout {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if all_joined(&counters) {
            all_back_ms = Some(killed.elapsed().as_millis() as u64);
        }
    }
    counters.stop.store(true, Ordering::Release);
    for task in tasks {
        task.abort();
    }
    Ok(StormReport {
        scenario: "storm",
        clients: config.clients,
        joined_before,
        dropped: counters.drops.load(Ordering::Acquire),
        all_back_ms,
        joined_at_end: counters.joined.load(Ordering::Acquire),
        failed_attempts: counters.failed_attempts.load(Ordering::Acquire),
    })
}

/// One client: connect, join, stay (answering pings); on loss, back off and start over.
async fn client(
    index: usize,
    target: SocketAddr,
    source: Option<IpAddr>,
    query: String,
    counters: Arc<Counters>,
) {
    let join = format!("421[\"join\",{{\"username\":\"s{index}\"}}]");
    let mut attempt = 0usize;
    while !counters.stop.load(Ordering::Acquire) {
        attempt += 1;
        if let Ok(mut ws) = conn::connect(target, source, &query).await
            && ws.send(Message::text(join.clone())).await.is_ok()
        {
            let mut joined = false;
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if text.as_str() == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        break;
                    }
                } else if !joined && text.as_str().starts_with("431[") {
                    joined = true;
                    counters.joined.fetch_add(1, Ordering::AcqRel);
                }
            }
            if joined {
                counters.joined.fetch_sub(1, Ordering::AcqRel);
                counters.drops.fetch_add(1, Ordering::AcqRel);
                attempt = 0;
            }
        } else {
            counters.failed_attempts.fetch_add(1, Ordering::AcqRel);
        }
        // Like socket.io-client: 100 ms growing to 500 ms, with a per-client jitter.
        let jitter = (index.wrapping_mul(7919) + attempt.wrapping_mul(104_729)) % 100;
        let backoff = (100 * attempt.max(1)).min(500) + jitter;
        tokio::time::sleep(Duration::from_millis(backoff as u64)).await;
    }
}
