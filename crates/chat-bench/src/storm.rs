//! The storm scenario: N clients connected and joined, spread over the workers given as
//! targets; one worker is SIGKILLed; how long until every client of that worker is connected,
//! joined and chatting again (a `say` it sends after reconnecting is received by another member
//! of its room). Clients reconnect by themselves like socket.io-client: a 100 ms delay doubling
//! up to 500 ms, each randomized by ±50%.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, sync::Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::conn;

/// Members per room when the number of rooms is not given.
pub const DEFAULT_ROOM_SIZE: usize = 10;
/// socket.io-client's `reconnectionDelay` and `reconnectionDelayMax` as set here, and its
/// `randomizationFactor`.
const RECONNECT_DELAY_MS: u64 = 100;
const RECONNECT_DELAY_MAX_MS: u64 = 500;
const RANDOMIZATION: f64 = 0.5;
/// How often a reconnected client repeats its `say` until another member has received it.
const SAY_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one connection attempt (TCP, websocket, socket.io, join acknowledged).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `/status` answer read.
const STATUS_MAX_BYTES: u64 = 1 << 20;

/// Which worker to kill.
#[derive(Debug, Clone)]
pub enum Victim {
    /// This pid; its port is found from the listening sockets it holds.
    Pid(i32),
    /// Worker number `worker` of the supervisor's `/status` at `url` (`workers[i].pid`, `.port`).
    Status { url: String, worker: usize },
}

#[derive(Debug, Clone)]
pub struct StormConfig {
    pub targets: Vec<SocketAddr>,
    pub clients: usize,
    pub sources: Vec<IpAddr>,
    /// Rooms; 0: one per `DEFAULT_ROOM_SIZE` clients. Each room has members on every target.
    pub rooms: usize,
    pub victim: Victim,
    /// Longest wait for connecting, and for coming back, each.
    pub timeout: Duration,
    /// First connections in flight at once (reconnections are not paced: that is the storm).
    pub concurrency: usize,
}

#[derive(Debug, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub rooms: usize,
    pub killed_pid: i32,
    pub killed_port: u16,
    pub joined_before: usize,
    pub connect_seconds: f64,
    /// Clients of the killed worker.
    pub victims: usize,
    /// Victims that saw their connection drop.
    pub dropped: usize,
    /// Clients of other workers that lost their connection (should be 0).
    pub survivors_dropped: usize,
    /// From the kill until every victim was connected and joined again.
    pub reconnected_ms: Option<u64>,
    /// From the kill until every victim was joined and another member had received its `say`
    /// (None: not within the timeout).
    pub all_back_ms: Option<u64>,
    /// Per victim, from the kill until it was chatting again.
    pub back_ms_p50: Option<f64>,
    pub back_ms_p99: Option<f64>,
    pub back_ms_max: Option<f64>,
    /// Victims not chatting again when the wait ended.
    pub not_back: usize,
    pub joined_at_end: usize,
    /// Connection attempts that failed (refused, timed out, join refused), all clients.
    pub failed_attempts: usize,
    pub says_sent: u64,
    pub timeout_secs: f64,
    pub bench_cpu_seconds: f64,
}

/// One client's state, as the others and the coordinator see it.
#[derive(Default)]
struct ClientState {
    up: AtomicBool,
    drops: AtomicU32,
    /// µs since the epoch (plus one, so that 0 means "not yet") when another member received
    /// this client's `say` sent after its latest drop.
    chatting_at: AtomicU64,
}

/// What every client task shares with the others and with the coordinator.
struct Shared {
    epoch: Instant,
    clients: Vec<ClientState>,
    joined: AtomicUsize,
    failed_attempts: AtomicUsize,
    says_sent: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Another member received `say` number `nonce` (its drop count) of client `index`.
    fn confirm(&self, index: usize, nonce: u32) {
        let Some(client) = self.clients.get(index) else {
            return;
        };
        if client.drops.load(Ordering::Acquire) == nonce && nonce > 0 {
            let _ = client.chatting_at.compare_exchange(
                0,
                self.now_us(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

/// Connects everyone, kills the victim, waits for its clients to come back, and reports.
pub async fn run(config: StormConfig) -> anyhow::Result<StormReport> {
    anyhow::ensure!(
        config.clients > 0 && !config.targets.is_empty(),
        "need clients and targets"
    );
    let cpu_start = crate::cpu_seconds();
    let (pid, port) = resolve_victim(&config.victim, &config.targets).await?;
    let rooms = if config.rooms == 0 {
        config.clients.div_ceil(DEFAULT_ROOM_SIZE)
    } else {
        config.rooms
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        clients: (0..config.clients)
            .map(|_| ClientState::default())
            .collect(),
        joined: AtomicUsize::new(0),
        failed_attempts: AtomicUsize::new(0),
        says_sent: AtomicU64::new(0),
    });
    let gate = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let tasks: Vec<_> = (0..config.clients)
        .map(|index| {
            let targets = config.targets.len();
            let plan = Plan {
                index,
                target: config.targets[index % targets],
                source: (!config.sources.is_empty())
                    .then(|| config.sources[index % config.sources.len()]),
                // Consecutive clients go to different targets and share a room, so every room
                // has members on every worker.
                query: format!("roomid=storm-{}", (index / targets) % rooms),
            };
            tokio::spawn(client(plan, Arc::clone(&shared), Arc::clone(&gate)))
        })
        .collect();

    let connect_started = Instant::now();
    let everyone = |shared: &Shared| shared.joined.load(Ordering::Acquire) == config.clients;
    wait_until(config.timeout, || everyone(&shared)).await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let joined_before = shared.joined.load(Ordering::Acquire);
    let victims: Vec<usize> = (0..config.clients)
        .filter(|i| config.targets[i % config.targets.len()].port() == port)
        .collect();

    let mut outcome = Outcome::default();
    if joined_before == config.clients {
        kill(pid)?;
        outcome = watch_recovery(&shared, &victims, config.timeout).await;
    } else {
        eprintln!(
            "chat-bench storm: only {joined_before} of {} clients joined; nothing killed",
            config.clients
        );
    }
    for task in &tasks {
        task.abort();
    }
    let dropped = |i: &usize| shared.clients[*i].drops.load(Ordering::Acquire) > 0;
    let back = back_times(&shared, &victims, outcome.killed_at_us);
    Ok(StormReport {
        scenario: "storm",
        clients: config.clients,
        rooms,
        killed_pid: pid,
        killed_port: port,
        joined_before,
        connect_seconds,
        victims: victims.len(),
        dropped: victims.iter().filter(|i| dropped(i)).count(),
        survivors_dropped: (0..config.clients)
            .filter(|i| config.targets[i % config.targets.len()].port() != port && dropped(i))
            .count(),
        reconnected_ms: outcome.reconnected_ms,
        all_back_ms: outcome.all_back_ms,
        back_ms_p50: back
            .as_ref()
            .map(|h| h.value_at_quantile(0.5) as f64 / 1000.0),
        back_ms_p99: back
            .as_ref()
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0),
        back_ms_max: back.as_ref().map(|h| h.max() as f64 / 1000.0),
        not_back: victims
            .iter()
            .filter(|i| !is_back(&shared.clients[**i]))
            .count(),
        joined_at_end: shared.joined.load(Ordering::Acquire),
        failed_attempts: shared.failed_attempts.load(Ordering::Acquire),
        says_sent: shared.says_sent.load(Ordering::Acquire),
        timeout_secs: config.timeout.as_secs_f64(),
        bench_cpu_seconds: crate::cpu_seconds() - cpu_start,
    })
}

/// When the kill happened and what the wait after it saw.
#[derive(Default)]
struct Outcome {
    killed_at_us: u64,
    reconnected_ms: Option<u64>,
    all_back_ms: Option<u64>,
}

/// A victim is back once it dropped, is connected and joined, and was heard after its drop.
fn is_back(client: &ClientState) -> bool {
    client.drops.load(Ordering::Acquire) > 0
        && client.up.load(Ordering::Acquire)
        && client.chatting_at.load(Ordering::Acquire) > 0
}

/// Polls every 10 ms until every victim is back, or the timeout.
async fn watch_recovery(shared: &Shared, victims: &[usize], timeout: Duration) -> Outcome {
    let killed = Instant::now();
    let mut outcome = Outcome {
        killed_at_us: shared.now_us(),
        ..Outcome::default()
    };
    let ms = || killed.elapsed().as_millis() as u64;
    while killed.elapsed() < timeout {
        let reconnected = victims.iter().all(|i| {
            let client = &shared.clients[*i];
            client.drops.load(Ordering::Acquire) > 0 && client.up.load(Ordering::Acquire)
        });
        if reconnected && outcome.reconnected_ms.is_none() {
            outcome.reconnected_ms = Some(ms());
        }
        if victims.iter().all(|i| is_back(&shared.clients[*i])) {
            outcome.all_back_ms = Some(ms());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outcome
}

/// The victims' times from the kill to chatting again (None if none of them came back).
fn back_times(shared: &Shared, victims: &[usize], killed_at_us: u64) -> Option<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
    for i in victims {
        let at = shared.clients[*i].chatting_at.load(Ordering::Acquire);
        if at > killed_at_us {
            let _ = histogram.record((at - killed_at_us).max(1));
        }
    }
    (!histogram.is_empty()).then_some(histogram)
}

/// Polls `done` every 20 ms for at most `timeout`.
async fn wait_until(timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs `pid`, which `resolve_victim` checked is a process serving one of the targets.
fn kill(pid: i32) -> anyhow::Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("SIGKILL {pid}"))
}

/// The pid and port of the worker to kill. Refuses anything but a process (not this one) that
/// holds a listening socket on one of the targets' ports.
async fn resolve_victim(victim: &Victim, targets: &[SocketAddr]) -> anyhow::Result<(i32, u16)> {
    let ports: Vec<u16> = targets.iter().map(SocketAddr::port).collect();
    let (pid, port) = match victim {
        Victim::Pid(pid) => {
            let port = listening_port(*pid, &ports).with_context(|| {
                format!("pid {pid} listens on none of the target ports {ports:?}; not killing it")
            })?;
            (*pid, port)
        }
        Victim::Status { url, worker } => {
            let status = fetch_status(url).await?;
            let (pid, port) = worker_from_status(&status, *worker)?;
            anyhow::ensure!(
                ports.contains(&port),
                "worker {worker} serves port {port}, which is not among the targets {ports:?}"
            );
            (pid, port)
        }
    };
    anyhow::ensure!(
        pid > 1 && pid as u32 != std::process::id(),
        "refusing to kill pid {pid}"
    );
    Ok((pid, port))
}

/// `workers[worker].pid` and `.port` of a supervisor's `/status` document.
fn worker_from_status(status: &serde_json::Value, worker: usize) -> anyhow::Result<(i32, u16)> {
    let entry = status
        .get("workers")
        .and_then(|w| w.get(worker))
        .with_context(|| format!("/status has no workers[{worker}]"))?;
    let pid = entry
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .with_context(|| format!("workers[{worker}] has no live pid (is it down?)"))?;
    let port = entry
        .get("port")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| format!("workers[{worker}] has no port"))?;
    Ok((pid, port))
}

/// `http://<loopback address>:<port>/<path>` as an address and a path.
fn parse_status_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("the status URL must start with http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = authority.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{authority:?} is not an address:port"))?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "{addr} is not a loopback address; chat-bench only talks to this machine"
    );
    Ok((addr, if path.is_empty() { "/" } else { path }.to_owned()))
}

/// GETs the supervisor's `/status` (HTTP/1.0, so the body is plain) and parses it.
async fn fetch_status(url: &str) -> anyhow::Result<serde_json::Value> {
    let (addr, path) = parse_status_url(url)?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream
            .take(STATUS_MAX_BYTES)
            .read_to_end(&mut response)
            .await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {url} timed out"))?
        .with_context(|| format!("GET {url}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {url}: not an HTTP response"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        bail!("GET {url} answered {status}");
    }
    serde_json::from_str(body).with_context(|| format!("GET {url}: the body is not JSON"))
}

/// The port among `ports` on which `pid` holds a listening TCP socket, from /proc.
fn listening_port(pid: i32, ports: &[u16]) -> Option<u16> {
    let inodes: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| listening_sockets(&table))
        .find(|(port, inode)| ports.contains(port) && inodes.contains(inode))
        .map(|(port, _)| port)
}

/// (port, inode) of every listening socket in a /proc/net/tcp table.
fn listening_sockets(table: &str) -> Vec<(u16, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") {
                return None;
            }
            let port = fields.get(1)?.rsplit(':').next()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((port, fields.get(9)?.parse().ok()?))
        })
        .collect()
}

/// Where one client connects.
struct Plan {
    index: usize,
    target: SocketAddr,
    source: Option<IpAddr>,
    query: String,
}

/// One client for the whole run: connect and join, stay (answering pings, saying after a
/// reconnection until heard); on loss, back off like socket.io-client and start over. The
/// first connection waits for a place at `gate`; reconnections do not.
async fn client(plan: Plan, shared: Arc<Shared>, gate: Arc<Semaphore>) {
    let mut rng = Rng::new(plan.index as u64);
    let mut attempt = 0u32;
    loop {
        let first = shared.clients[plan.index].drops.load(Ordering::Acquire) == 0;
        let permit = if first {
            gate.acquire().await.ok()
        } else {
            None
        };
        let connected = tokio::time::timeout(ATTEMPT_TIMEOUT, connect_and_join(&plan)).await;
        drop(permit);
        match connected {
            Ok(Ok(ws)) => {
                attempt = 0;
                session(ws, &plan, &shared).await;
            }
            _ => {
                shared.failed_attempts.fetch_add(1, Ordering::AcqRel);
                attempt = attempt.saturating_add(1);
            }
        }
        tokio::time::sleep(reconnect_delay(attempt, &mut rng)).await;
    }
}

/// socket.io-client's delay before reconnection attempt `attempt` (0 after a drop): 100 ms
/// doubling per failed attempt up to 500 ms, randomized by ±50%.
fn reconnect_delay(attempt: u32, rng: &mut Rng) -> Duration {
    let base = (RECONNECT_DELAY_MS << attempt.min(16)).min(RECONNECT_DELAY_MAX_MS) as f64;
    let jitter = 1.0 + RANDOMIZATION * (2.0 * rng.unit() - 1.0);
    Duration::from_secs_f64(base * jitter / 1000.0)
}

/// Opens a socket.io connection, sends `join` with an ack id, and waits for `{ok:true}`.
async fn connect_and_join(plan: &Plan) -> anyhow::Result<conn::Ws> {
    let mut ws = conn::connect(plan.target, plan.source, &plan.query).await?;
    let join = format!("421[\"join\",{{\"username\":\"s{}\"}}]", plan.index);
    ws.send(Message::text(join)).await?;
    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        let text = text.as_str();
        if text == "2" {
            ws.send(Message::text("3")).await?;
        } else if let Some(ack) = text.strip_prefix("431[") {
            if ack.contains("\"ok\":true") {
                return Ok(ws);
            }
            bail!("join refused: {text}");
        }
    }
    bail!("closed before the join was acknowledged")
}

/// One connection's life after its join was acknowledged. Ends when the connection does.
async fn session(mut ws: conn::Ws, plan: &Plan, shared: &Shared) {
    let me = &shared.clients[plan.index];
    let nonce = me.drops.load(Ordering::Acquire);
    me.up.store(true, Ordering::Release);
    shared.joined.fetch_add(1, Ordering::AcqRel);
    let say = format!("42[\"say\",{{\"text\":\"storm:{}:{nonce}\"}}]", plan.index);
    let mut resend = tokio::time::interval(SAY_EVERY);
    loop {
        let must_say = nonce > 0 && me.chatting_at.load(Ordering::Acquire) == 0;
        tokio::select! {
            _ = resend.tick(), if must_say => {
                shared.says_sent.fetch_add(1, Ordering::AcqRel);
                if ws.send(Message::text(say.clone())).await.is_err() {
                    break;
                }
            }
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { break };
                let Message::Text(text) = frame else { continue };
                if text.as_str() == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        break;
                    }
                } else if let Some((index, nonce)) = heard_say(text.as_str())
                    && index != plan.index
                {
                    shared.confirm(index, nonce);
                }
            }
        }
    }
    me.up.store(false, Ordering::Release);
    me.chatting_at.store(0, Ordering::Release);
    me.drops.fetch_add(1, Ordering::AcqRel);
    shared.joined.fetch_sub(1, Ordering::AcqRel);
}

/// The client index and nonce of a storm `say` in a `message` packet, if it is one.
fn heard_say(packet: &str) -> Option<(usize, u32)> {
    if !packet.starts_with("42[\"message\"") {
        return None;
    }
    let at = packet.find("\"text\":\"storm:")? + "\"text\":\"storm:".len();
    let rest = &packet[at..];
    let (index, rest) = rest.split_once(':')?;
    let (nonce, _) = rest.split_once('"')?;
    Some((index.parse().ok()?, nonce.parse().ok()?))
}

/// A small xorshift generator for reconnection jitter (no need for cryptographic quality).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self((seed.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ clock | 1)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_delays_stay_within_socket_io_client_bounds() {
        let mut rng = Rng::new(7);
        for attempt in 0..20 {
            let base = (RECONNECT_DELAY_MS << attempt.min(16)).min(RECONNECT_DELAY_MAX_MS);
            for _ in 0..100 {
                let ms = reconnect_delay(attempt, &mut rng).as_secs_f64() * 1000.0;
                assert!(ms >= base as f64 * 0.5 && ms <= base as f64 * 1.5, "{ms}");
            }
        }
    }

    #[test]
    fn storm_says_are_recognized_in_message_packets() {
        let packet = r#"42["message",{"event":"broadcast_say","data":{"username":"s4","text":"storm:4:2"},"id":"a-1","ts":5,"room":"storm-1"}]"#;
        assert_eq!(heard_say(packet), Some((4, 2)));
        assert_eq!(heard_say(r#"42["message",{"data":{"text":"hi"}}]"#), None);
        assert_eq!(heard_say(r#"431[{"ok":true}]"#), None);
        assert_eq!(heard_say(r#"42["message",{"text":"storm:x:1"}]"#), None);
    }

    #[test]
    fn status_urls_are_loopback_only() {
        assert_eq!(
            parse_status_url("http://127.0.0.1:9100/status").ok(),
            Some(("127.0.0.1:9100".parse().expect("addr"), "/status".into()))
        );
        assert_eq!(
            parse_status_url("http://localhost:9100").ok(),
            Some(("127.0.0.1:9100".parse().expect("addr"), "/".into()))
        );
        assert!(parse_status_url("http://10.0.0.1:9100/status").is_err());
        assert!(parse_status_url("https://127.0.0.1:9100/status").is_err());
        assert!(parse_status_url("http://127.0.0.1/status").is_err());
    }

    #[test]
    fn workers_are_read_from_status_and_down_ones_refused() {
        let status = serde_json::json!({"total_connections": 0, "workers": [
            {"id": 0, "pid": 4242, "port": 7201},
            {"id": 1, "pid": 0, "port": 7202},
        ]});
        assert_eq!(worker_from_status(&status, 0).ok(), Some((4242, 7201)));
        assert!(worker_from_status(&status, 1).is_err());
        assert!(worker_from_status(&status, 2).is_err());
        assert!(worker_from_status(&serde_json::json!({}), 0).is_err());
    }

    #[test]
    fn listening_sockets_are_read_from_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1C21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0\n   1: 0100007F:1C21 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 99999 1 0\n";
        assert_eq!(listening_sockets(table), vec![(7201, 12345)]);
    }
}
