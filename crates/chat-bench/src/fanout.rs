//! The fanout scenario: C clients in R rooms, S of them sending timestamped `say` at a rate;
//! every delivery is accounted (delivered, lost, duplicated, foreign, and how many arrived out
//! of their sender's order) and timed. Once every client is connected, all of them send `join`
//! at once (the join burst) and every join's delivery to every member of its room is accounted
//! the same way. The ramp runs steps of increasing rate on the same connections and stops at the
//! first step that does not hold (p99 above the limit, or any delivery lost, duplicated or
//! foreign).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, event_packet};

/// Handshakes in flight at once while connecting.
const CONNECT_CONCURRENCY: usize = 256;
/// Time between spawning a step's client tasks and the start of sending.
const STEP_LEAD: Duration = Duration::from_millis(100);
/// A step whose senders sent less than this share of what was asked did not offer its rate:
/// the generator fell behind, and the step does not count as held.
const OFFERED_SHARE_REQUIRED: f64 = 0.9;
/// Highest latency the histograms record (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Most skipped sequence numbers remembered per sender and client, so that a late arrival can
/// be told from a duplicate (a wider gap is remembered only in its last part).
const MAX_REMEMBERED_GAP: u64 = 4096;

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub targets: Vec<SocketAddr>,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    /// `say` per second per sender.
    pub rate: f64,
    pub duration: Duration,
    /// Longest wait for in-flight messages after sending stops (the wait ends as soon as every
    /// expected delivery has arrived).
    pub drain: Duration,
    /// Source addresses to spread clients over (for nginx ip_hash); empty = the default.
    pub sources: Vec<IpAddr>,
    pub room_prefix: String,
    /// Server processes (workers, Redis) whose CPU time is measured over the run.
    pub server_pids: Vec<u32>,
    /// The Redis processes among them, also reported apart: a Redis server runs its commands
    /// on one core, so its share of a core says how near it is to being the bottleneck.
    pub redis_pids: Vec<u32>,
    /// Talk to the bare-websocket floor server instead of socket.io: no handshake, no join, and
    /// each say is sent as the very `message` packet members should receive (the floor
    /// forwards frames as they are), so accounting is the same as for socket.io servers.
    pub raw: bool,
    /// All senders send at the same instants (bursts of `senders` messages), as the generator
    /// did before 2026-11-22; by default each sender has its own phase, so the load is steady.
    pub aligned: bool,
    /// Every member of a room connects to the same target (client `i` to target `i % targets`,
    /// room `i % rooms`: with as many rooms as a multiple of the targets, each room lives on one
    /// worker and no delivery crosses to another), as the generator did before 2026-11-30. By
    /// default a room's members alternate over the targets (client `i` to target
    /// `(i / rooms) % targets`), so with 2 workers half of every room's deliveries cross Redis
    /// to the other worker, as behind a load balancer.
    pub local_rooms: bool,
    /// The server's `--history-size`: a socket.io client enters its room at `join`, and the
    /// joins before its own come in the `history` event, at most this many messages; a member
    /// whose history was that full may not have seen the oldest joins of its room (0: the
    /// server sends no history, and nobody sees the joins before their own). Peers that put a
    /// socket in its room at connect send every join live, so nothing is excused for them.
    pub history_size: usize,
}

impl FanoutConfig {
    /// The target client `index` connects to (see `local_rooms`).
    pub fn target_of(&self, index: usize) -> SocketAddr {
        let slot = if self.local_rooms {
            index
        } else {
            index / self.rooms.max(1)
        };
        self.targets[slot % self.targets.len()]
    }
}

/// The ramp: `fanout` connects once, then runs one step of `fanout.duration` per rate.
#[derive(Debug, Clone)]
pub struct RampConfig {
    pub fanout: FanoutConfig,
    /// `say` per second per sender, one step each, in the order given.
    pub rates: Vec<f64>,
    /// A step holds if its p99 latency is at most this and nothing was lost.
    pub p99_limit_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub rate_per_sender: f64,
    pub connected: usize,
    pub connect_failures: usize,
    pub connect_per_sec: f64,
    #[serde(flatten)]
    pub joins: JoinBurst,
    #[serde(flatten)]
    pub deliveries: Deliveries,
    pub bench_cpu_seconds: f64,
    #[serde(flatten)]
    pub server_cpu: ServerCpu,
    #[serde(flatten)]
    pub redis_cpu: RedisCpu,
}

/// The join burst: once every client is connected, each sends `join` at once, and each join is
/// expected at every member of the joiner's room, the joiner included (in a report's JSON, its
/// fields are the report's own). What a server drops under a burst of room events shows here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JoinBurst {
    pub joins_sent: u64,
    pub joins_expected: u64,
    pub joins_delivered: u64,
    pub joins_lost: u64,
    pub joins_duplicated: u64,
    pub joins_foreign: u64,
    /// From the start of the burst until the last expected join arrived or the drain ran out.
    pub join_burst_seconds: f64,
    /// Of `joins_lost`, how many arrived after all, later than the burst's wait, while the
    /// steps ran: late, rather than dropped (filled in as the steps run).
    pub joins_arrived_late: u64,
    /// Joins not seen by members whose `history` was full (`--history-size` messages): older
    /// than their history, not lost (not counted in `joins_lost`).
    pub joins_before_history: u64,
}

/// CPU time of the server processes from the start of sending to the end of the drain, and per
/// delivery, in all and split into user space and the kernel (in a report's JSON, its fields are
/// the report's own). The split shows what a server's own code costs apart from the system calls
/// every design pays per delivery; it follows where the clock tick found each process, so it is
/// approximate (the totals are exact).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerCpu {
    pub server_cpu_seconds: f64,
    pub server_cpu_us_per_delivery: f64,
    pub server_user_us_per_delivery: f64,
    pub server_system_us_per_delivery: f64,
}

impl ServerCpu {
    fn new(used: crate::CpuTimes, delivered: u64) -> Self {
        let per_delivery = |seconds: f64| seconds * 1e6 / delivered.max(1) as f64;
        ServerCpu {
            server_cpu_seconds: used.total(),
            server_cpu_us_per_delivery: per_delivery(used.total()),
            server_user_us_per_delivery: per_delivery(used.user),
            server_system_us_per_delivery: per_delivery(used.system),
        }
    }
}

/// CPU time of the Redis processes over a step: in all, per delivery, and as cores (CPU time
/// over wall time, summed over the processes; each Redis server saturates at 1.0).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RedisCpu {
    pub redis_cpu_seconds: f64,
    pub redis_cpu_us_per_delivery: f64,
    pub redis_cores: f64,
}

impl RedisCpu {
    fn new(used: crate::CpuTimes, delivered: u64, wall_seconds: f64) -> Self {
        RedisCpu {
            redis_cpu_seconds: used.total(),
            redis_cpu_us_per_delivery: used.total() * 1e6 / delivered.max(1) as f64,
            redis_cores: used.total() / wall_seconds.max(1e-9),
        }
    }
}

/// What was sent and delivered in a step, and how fast (in a report's JSON, its fields are the
/// report's own).
#[derive(Debug, Clone, Serialize)]
pub struct Deliveries {
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub foreign: u64,
    /// Delivered, but after a later message of the same sender (counted in `delivered` too).
    /// Not judged: a ramp step holds on loss, duplicates and foreign messages alone.
    pub reordered: u64,
    /// Expected deliveries per second of sending: what the senders offered.
    pub offered_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
    pub send_seconds: f64,
}

/// One step of a ramp (a plain fanout run is one step).
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub rate_per_sender: f64,
    /// Senders still connected at the start of the step.
    pub senders: usize,
    #[serde(flatten)]
    pub deliveries: Deliveries,
    /// From the start of sending until the last expected delivery or the end of the drain.
    pub step_seconds: f64,
    pub bench_cpu_seconds: f64,
    /// The generator's CPU time over the step's wall time: near 1.0, the generator (one
    /// thread) was saturated and latencies include its own queueing.
    pub generator_busy: f64,
    #[serde(flatten)]
    pub server_cpu: ServerCpu,
    /// Joins of the burst that arrived during this step (late; counted lost in the burst).
    pub joins_arrived_late: u64,
    #[serde(flatten)]
    pub redis_cpu: RedisCpu,
    pub held: bool,
    /// "held", or why not.
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct RampReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub connected: usize,
    pub connect_failures: usize,
    #[serde(flatten)]
    pub joins: JoinBurst,
    pub p99_limit_ms: f64,
    pub step_send_seconds: f64,
    pub steps: Vec<StepReport>,
    /// The last step that held (None: not even the first).
    pub best_step: Option<usize>,
    pub best_rate_per_sender: Option<f64>,
    pub best_offered_per_sec: Option<f64>,
    pub best_deliveries_per_sec: Option<f64>,
    pub best_latency_ms_p99: Option<f64>,
    /// Why the ramp stopped: the failing step's verdict, or "all steps held".
    pub stopped_because: String,
    pub bench_cpu_seconds: f64,
}

/// What one receiving client saw in one step.
#[derive(Default)]
struct Tally {
    delivered: u64,
    duplicated: u64,
    foreign: u64,
    reordered: u64,
    late_joins: u64,
}

/// One sender's messages as one client saw them: the next sequence number in order, and the
/// numbers skipped so far, so that a late arrival fills its gap instead of counting twice.
#[derive(Debug, Default)]
struct SenderSeen {
    next: u64,
    missing: BTreeSet<u64>,
}

/// How one arrival relates to the sender's earlier ones.
#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    InOrder,
    Reordered,
    Duplicate,
}

impl SenderSeen {
    fn arrive(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let remembered_from = self.next.max(seq.saturating_sub(MAX_REMEMBERED_GAP));
            self.missing.extend(remembered_from..seq);
            self.next = seq + 1;
            Arrival::InOrder
        } else if self.missing.remove(&seq) {
            Arrival::Reordered
        } else {
            Arrival::Duplicate
        }
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    event: &'a str,
    #[serde(borrow)]
    data: IncomingData<'a>,
    room: &'a str,
}

/// The messages of a `42["history",{room, messages:[...]}]` frame (an offset may follow it).
fn history_messages(text: &str) -> Option<Vec<Incoming<'_>>> {
    #[derive(Deserialize)]
    struct History<'a> {
        #[serde(borrow)]
        messages: Vec<Incoming<'a>>,
    }
    let body = text.strip_prefix("42[\"history\",")?.strip_suffix(']')?;
    let mut de = serde_json::Deserializer::from_str(body);
    History::deserialize(&mut de)
        .ok()
        .map(|history| history.messages)
}

/// The room message of a `42["message",{event, data, room, ...}]` frame, also when a recovery
/// offset follows it (`42["message",{...},"<offset>"]`); None for any other frame.
fn room_message(text: &str) -> Option<Incoming<'_>> {
    let body = text.strip_prefix("42[\"message\",")?.strip_suffix(']')?;
    let mut de = serde_json::Deserializer::from_str(body);
    // The message is the first value; an offset may follow it.
    Incoming::deserialize(&mut de).ok()
}

#[derive(Deserialize)]
struct IncomingData<'a> {
    #[serde(default, borrow)]
    text: Option<&'a str>,
    #[serde(default, borrow)]
    username: Option<&'a str>,
}

/// A probe's identity: which step, which sender, which of its messages, sent when (µs since
/// the run's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    step: usize,
    sender: usize,
    seq: u64,
    micros: u64,
}

/// The text a sender sends: `b:<step>:<sender>:<seq>:<microseconds since the run's start>`.
fn probe_text(probe: Probe) -> String {
    format!(
        "b:{}:{}:{}:{}",
        probe.step, probe.sender, probe.seq, probe.micros
    )
}

fn parse_probe(text: &str) -> Option<Probe> {
    let mut parts = text.strip_prefix("b:")?.split(':');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some(Probe {
        step: usize::try_from(next()?).ok()?,
        sender: usize::try_from(next()?).ok()?,
        seq: next()?,
        micros: next()?,
    })
}

/// A connected client and its place in the run.
struct Client {
    index: usize,
    room: usize,
    ws: conn::Ws,
    /// The clients whose join this one has received (by index).
    joiners: HashSet<usize>,
}

/// The clients that connected, and how connecting went.
struct Connected {
    clients: Vec<Client>,
    failures: usize,
    seconds: f64,
}

/// What every client task of a step shares with the others and with the step's coordinator.
struct StepShared {
    step: usize,
    epoch: Instant,
    send_start: Instant,
    send_for: Duration,
    drain: Duration,
    interval: Duration,
    senders: usize,
    raw: bool,
    aligned: bool,
    room_names: Vec<String>,
    members: Vec<u64>,
    expected: AtomicU64,
    delivered: AtomicU64,
    senders_left: AtomicUsize,
    latency_us: Mutex<Histogram<u64>>,
}

/// Connects one plain fanout run and reports it.
pub async fn run(config: FanoutConfig) -> anyhow::Result<FanoutReport> {
    validate(&config)?;
    let cpu_start = crate::cpu_seconds();
    let epoch = Instant::now();
    let connected = connect_all(&config).await;
    let (clients, mut joins) = join_burst(connected.clients, &config).await;
    let (clients, step) = run_step(clients, &config, 0, config.rate, epoch).await;
    joins.joins_arrived_late = step.joins_arrived_late;
    close_all(clients).await;
    Ok(FanoutReport {
        scenario: "fanout",
        clients: config.clients,
        rooms: config.rooms,
        senders: config.senders,
        rate_per_sender: config.rate,
        connected: config.clients - connected.failures,
        connect_failures: connected.failures,
        connect_per_sec: (config.clients - connected.failures) as f64 / connected.seconds.max(1e-9),
        joins,
        deliveries: step.deliveries,
        bench_cpu_seconds: crate::cpu_seconds() - cpu_start,
        server_cpu: step.server_cpu,
        redis_cpu: step.redis_cpu,
    })
}

/// Connects once, runs one step per rate until a step does not hold, and reports every step.
pub async fn ramp(config: RampConfig) -> anyhow::Result<RampReport> {
    validate(&config.fanout)?;
    anyhow::ensure!(!config.rates.is_empty(), "the ramp needs at least one rate");
    anyhow::ensure!(
        config.rates.iter().all(|r| r.is_finite() && *r > 0.0),
        "ramp rates must be positive"
    );
    anyhow::ensure!(config.p99_limit_ms > 0.0, "the p99 limit must be positive");
    let cpu_start = crate::cpu_seconds();
    let epoch = Instant::now();
    let connected = connect_all(&config.fanout).await;
    let (mut clients, mut joins) = join_burst(connected.clients, &config.fanout).await;
    let mut steps: Vec<StepReport> = Vec::with_capacity(config.rates.len());
    let mut stopped_because = "all steps held".to_owned();
    for (number, &rate) in config.rates.iter().enumerate() {
        let (left, mut step) = run_step(clients, &config.fanout, number, rate, epoch).await;
        clients = left;
        judge(&mut step, config.p99_limit_ms);
        let held = step.held;
        if !held {
            stopped_because = format!("step {number} at {rate}/s per sender: {}", step.verdict);
        }
        steps.push(step);
        if !held {
            break;
        }
    }
    close_all(clients).await;
    joins.joins_arrived_late = steps.iter().map(|s| s.joins_arrived_late).sum();
    let best = steps.iter().rev().find(|s| s.held);
    Ok(RampReport {
        scenario: "ramp",
        clients: config.fanout.clients,
        rooms: config.fanout.rooms,
        senders: config.fanout.senders,
        connected: config.fanout.clients - connected.failures,
        connect_failures: connected.failures,
        joins,
        p99_limit_ms: config.p99_limit_ms,
        step_send_seconds: config.fanout.duration.as_secs_f64(),
        best_step: best.map(|s| s.step),
        best_rate_per_sender: best.map(|s| s.rate_per_sender),
        best_offered_per_sec: best.map(|s| s.deliveries.offered_per_sec),
        best_deliveries_per_sec: best.map(|s| s.deliveries.deliveries_per_sec),
        best_latency_ms_p99: best.map(|s| s.deliveries.latency_ms_p99),
        stopped_because,
        steps,
        bench_cpu_seconds: crate::cpu_seconds() - cpu_start,
    })
}

/// Refuses configurations that cannot run.
fn validate(config: &FanoutConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.clients > 0 && config.rooms > 0,
        "need clients and rooms"
    );
    anyhow::ensure!(
        config.senders <= config.clients,
        "more senders than clients"
    );
    anyhow::ensure!(!config.targets.is_empty(), "no target");
    anyhow::ensure!(
        config.rate.is_finite() && config.rate > 0.0,
        "the rate must be positive"
    );
    Ok(())
}

/// Marks a step held or not: nothing lost, duplicated or foreign, the rate offered, and the
/// p99 within the limit.
fn judge(step: &mut StepReport, p99_limit_ms: f64) {
    let asked = step.senders as f64 * step.rate_per_sender * step.deliveries.send_seconds;
    let verdict = if step.deliveries.sent == 0 {
        "nothing was sent".to_owned()
    } else if step.deliveries.lost > 0
        || step.deliveries.duplicated > 0
        || step.deliveries.foreign > 0
    {
        format!(
            "{} lost, {} duplicated, {} foreign",
            step.deliveries.lost, step.deliveries.duplicated, step.deliveries.foreign
        )
    } else if (step.deliveries.sent as f64) < OFFERED_SHARE_REQUIRED * asked {
        format!(
            "the generator sent {} of {asked:.0} asked (it fell behind)",
            step.deliveries.sent
        )
    } else if step.deliveries.latency_ms_p99 > p99_limit_ms {
        format!(
            "p99 {:.1} ms above {p99_limit_ms} ms",
            step.deliveries.latency_ms_p99
        )
    } else {
        "held".to_owned()
    };
    step.held = verdict == "held";
    step.verdict = verdict;
}

/// Connects and joins every client, at most `CONNECT_CONCURRENCY` handshakes at once.
async fn connect_all(config: &FanoutConfig) -> Connected {
    let started = Instant::now();
    let mut clients = Vec::with_capacity(config.clients);
    let mut failures = 0;
    let mut pending = futures_util::stream::FuturesOrdered::new();
    for index in 0..config.clients {
        let target = config.target_of(index);
        let source =
            (!config.sources.is_empty()).then(|| config.sources[index % config.sources.len()]);
        let room = index % config.rooms;
        let query = format!("roomid={}{room}", config.room_prefix);
        let raw = config.raw;
        pending.push_back(async move {
            let ws = connect_one(target, source, &query, raw).await;
            ws.map(|ws| Client {
                index,
                room,
                ws,
                joiners: HashSet::new(),
            })
        });
        if pending.len() >= CONNECT_CONCURRENCY
            && let Some(result) = pending.next().await
        {
            collect(result, &mut clients, &mut failures);
        }
    }
    while let Some(result) = pending.next().await {
        collect(result, &mut clients, &mut failures);
    }
    Connected {
        clients,
        failures,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// One client: a plain websocket for the floor; a socket.io connection otherwise (it joins in
/// the join burst).
async fn connect_one(
    target: SocketAddr,
    source: Option<IpAddr>,
    query: &str,
    raw: bool,
) -> anyhow::Result<conn::Ws> {
    if raw {
        conn::open(target, source, &format!("/?{query}")).await
    } else {
        conn::connect(target, source, query).await
    }
}

fn collect(result: anyhow::Result<Client>, clients: &mut Vec<Client>, failures: &mut usize) {
    match result {
        Ok(client) => clients.push(client),
        Err(err) => {
            *failures += 1;
            if *failures <= 3 {
                eprintln!("chat-bench: connect failed: {err:#}");
            }
        }
    }
}

/// Sends a close frame on every connection, waiting at most two seconds in all.
async fn close_all(clients: Vec<Client>) {
    let closing = futures_util::future::join_all(
        clients
            .into_iter()
            .map(|mut client| async move { client.ws.close(None).await }),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
}

/// One step at `rate` per sender: every client reads, senders also write; sending lasts
/// `config.duration`, then the step waits until every expected delivery arrived or
/// `config.drain` passed. Returns the clients still connected, and the step's accounting.
async fn run_step(
    clients: Vec<Client>,
    config: &FanoutConfig,
    step: usize,
    rate: f64,
    epoch: Instant,
) -> (Vec<Client>, StepReport) {
    let cpu_start = crate::cpu_seconds();
    let wall_start = Instant::now();
    let server_cpu_start = crate::processes_cpu(&config.server_pids);
    let redis_cpu_start = crate::processes_cpu(&config.redis_pids);
    let mut members = vec![0u64; config.rooms];
    for client in &clients {
        members[client.room] += 1;
    }
    let senders = clients.iter().filter(|c| c.index < config.senders).count();
    let shared = Arc::new(StepShared {
        step,
        epoch,
        send_start: Instant::now() + STEP_LEAD,
        send_for: config.duration,
        drain: config.drain,
        interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
        senders: config.senders.max(1),
        raw: config.raw,
        aligned: config.aligned,
        room_names: (0..config.rooms)
            .map(|r| format!("{}{r}", config.room_prefix))
            .collect(),
        members,
        expected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        senders_left: AtomicUsize::new(senders),
        latency_us: Mutex::new(new_histogram()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let sender = client.index < config.senders;
            tokio::spawn(client_step(
                client,
                sender,
                Arc::clone(&shared),
                stop_rx.clone(),
            ))
        })
        .collect();
    let ended = wait_for_step_end(&shared, config.drain).await;
    let _ = stop_tx.send(true);

    let (mut left, mut tally, mut sent) = (Vec::with_capacity(tasks.len()), Tally::default(), 0);
    for task in tasks {
        let Ok((client, client_sent, client_tally)) = task.await else {
            continue;
        };
        left.extend(client);
        sent += client_sent;
        tally.delivered += client_tally.delivered;
        tally.duplicated += client_tally.duplicated;
        tally.foreign += client_tally.foreign;
        tally.reordered += client_tally.reordered;
        tally.late_joins += client_tally.late_joins;
    }
    let server_cpu = crate::processes_cpu(&config.server_pids).since(server_cpu_start);
    let redis_cpu = crate::processes_cpu(&config.redis_pids).since(redis_cpu_start);
    let histogram = shared
        .latency_us
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let expected = shared.expected.load(Ordering::Acquire);
    let send_seconds = config.duration.as_secs_f64().max(1e-9);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let bench_cpu_seconds = crate::cpu_seconds() - cpu_start;
    let report = StepReport {
        step,
        rate_per_sender: rate,
        senders,
        deliveries: Deliveries {
            sent,
            expected,
            delivered: tally.delivered,
            lost: expected.saturating_sub(tally.delivered),
            duplicated: tally.duplicated,
            foreign: tally.foreign,
            reordered: tally.reordered,
            offered_per_sec: expected as f64 / send_seconds,
            deliveries_per_sec: tally.delivered as f64 / send_seconds,
            latency_ms_p50: ms(0.50),
            latency_ms_p99: ms(0.99),
            latency_ms_p999: ms(0.999),
            latency_ms_max: histogram.max() as f64 / 1000.0,
            send_seconds,
        },
        step_seconds: ended
            .saturating_duration_since(shared.send_start)
            .as_secs_f64(),
        bench_cpu_seconds,
        generator_busy: bench_cpu_seconds / wall_start.elapsed().as_secs_f64().max(1e-9),
        joins_arrived_late: tally.late_joins,
        server_cpu: ServerCpu::new(server_cpu, tally.delivered),
        redis_cpu: RedisCpu::new(
            redis_cpu,
            tally.delivered,
            wall_start.elapsed().as_secs_f64(),
        ),
        held: false,
        verdict: String::new(),
    };
    (left, report)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Waits until sending is over and every expected delivery arrived, or the drain ran out.
/// Returns when the step ended.
async fn wait_for_step_end(shared: &StepShared, drain: Duration) -> Instant {
    let send_end = shared.send_start + shared.send_for;
    tokio::time::sleep_until(tokio::time::Instant::from_std(send_end)).await;
    let deadline = send_end + drain;
    loop {
        let now = Instant::now();
        let sending_done = shared.senders_left.load(Ordering::Acquire) == 0;
        let all_in =
            shared.delivered.load(Ordering::Acquire) >= shared.expected.load(Ordering::Acquire);
        if (sending_done && all_in) || now >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One client's part in a step. Senders send at their own phase within the interval (spread
/// evenly over the senders, unless `aligned`), so the offered load is steady rather than
/// bursts. Returns the
/// client (None if its connection broke), how many it sent, and what it received.
async fn client_step(
    mut client: Client,
    sender: bool,
    shared: Arc<StepShared>,
    mut stop: watch::Receiver<bool>,
) -> (Option<Client>, u64, Tally) {
    let phase = if shared.aligned {
        Duration::ZERO
    } else {
        shared
            .interval
            .mul_f64((client.index % shared.senders) as f64 / shared.senders as f64)
    };
    let first = tokio::time::Instant::from_std(shared.send_start + phase);
    let mut tick = tokio::time::interval_at(first, shared.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let send_end = shared.send_start + shared.send_for;
    // The coordinator says when to stop; this bounds the task even if it cannot.
    let hard_stop = tokio::time::sleep_until(tokio::time::Instant::from_std(
        send_end + shared.drain + Duration::from_secs(5),
    ));
    tokio::pin!(hard_stop);
    let mut sending = sender;
    let (mut sent, mut tally) = (0u64, Tally::default());
    let mut seen: HashMap<usize, SenderSeen> = HashMap::new();
    let mut alive = true;
    while alive {
        tokio::select! {
            _ = tick.tick(), if sending => {
                if Instant::now() >= send_end {
                    sending = false;
                    shared.senders_left.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let probe = Probe {
                    step: shared.step,
                    sender: client.index,
                    seq: sent,
                    micros: shared.epoch.elapsed().as_micros() as u64,
                };
                shared.expected.fetch_add(shared.members[client.room], Ordering::AcqRel);
                sent += 1;
                alive = client.ws.send(say_packet(&shared, &client, probe)).await.is_ok();
            }
            frame = client.ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    alive = on_text(&mut client, text.as_str(), &shared, &mut seen, &mut tally).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => alive = false,
            },
            _ = stop.changed() => break,
            () = &mut hard_stop => break,
        }
    }
    if sending {
        shared.senders_left.fetch_sub(1, Ordering::AcqRel);
    }
    (alive.then_some(client), sent, tally)
}

/// The packet of one probe: a `say` for socket.io servers; for the floor, the very `message`
/// packet members should receive.
fn say_packet(shared: &StepShared, client: &Client, probe: Probe) -> Message {
    let text = probe_text(probe);
    if shared.raw {
        let message = json!({
            "event": "broadcast_say",
            "data": { "username": format!("c{}", client.index), "text": text },
            "room": shared.room_names[client.room],
        });
        event_packet("message", &message)
    } else {
        event_packet("say", &json!({ "text": text }))
    }
}

/// What every client task of the join burst shares with the others and the coordinator.
struct JoinShared {
    raw: bool,
    room_names: Vec<String>,
    members: Vec<u64>,
    history_size: usize,
    expected: AtomicU64,
    delivered: AtomicU64,
    /// Clients that have not sent their join yet.
    sending: AtomicUsize,
}

/// What one client saw of the join burst.
#[derive(Default)]
struct JoinTally {
    sent: bool,
    delivered: u64,
    duplicated: u64,
    foreign: u64,
    /// Joins of its room this member did not see, its history being full.
    before_history: u64,
}

/// The join burst: every connected client sends `join {username: "c<index>"}` at once (to the
/// floor, the very `join` message members should receive), then reads until every expected
/// join arrived or `config.drain` passed since the burst began. Returns the clients still
/// connected, and the burst's accounting.
async fn join_burst(clients: Vec<Client>, config: &FanoutConfig) -> (Vec<Client>, JoinBurst) {
    let mut members = vec![0u64; config.rooms];
    for client in &clients {
        members[client.room] += 1;
    }
    let shared = Arc::new(JoinShared {
        raw: config.raw,
        room_names: (0..config.rooms)
            .map(|r| format!("{}{r}", config.room_prefix))
            .collect(),
        members,
        history_size: config.history_size,
        expected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        sending: AtomicUsize::new(clients.len()),
    });
    let started = Instant::now();
    let deadline = started + config.drain;
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(client_join(
                client,
                Arc::clone(&shared),
                stop_rx.clone(),
                deadline,
            ))
        })
        .collect();
    loop {
        let all_sent = shared.sending.load(Ordering::Acquire) == 0;
        let all_in =
            shared.delivered.load(Ordering::Acquire) >= shared.expected.load(Ordering::Acquire);
        if (all_sent && all_in) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let (mut left, mut burst) = (Vec::with_capacity(tasks.len()), JoinBurst::default());
    for task in tasks {
        let Ok((client, tally)) = task.await else {
            continue;
        };
        left.extend(client);
        burst.joins_sent += u64::from(tally.sent);
        burst.joins_delivered += tally.delivered;
        burst.joins_duplicated += tally.duplicated;
        burst.joins_foreign += tally.foreign;
        burst.joins_before_history += tally.before_history;
    }
    burst.joins_expected = shared.expected.load(Ordering::Acquire);
    burst.joins_lost = burst
        .joins_expected
        .saturating_sub(burst.joins_delivered + burst.joins_before_history);
    burst.join_burst_seconds = seconds;
    (left, burst)
}

/// One client's part in the join burst: sends its join, then accounts every join it receives
/// until told to stop. Returns the client (None if its connection broke) and what it saw.
async fn client_join(
    mut client: Client,
    shared: Arc<JoinShared>,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) -> (Option<Client>, JoinTally) {
    let username = format!("c{}", client.index);
    let room = &shared.room_names[client.room];
    let packet = if shared.raw {
        let message = json!({ "event": "join", "data": { "username": username }, "room": room });
        event_packet("message", &message)
    } else {
        event_packet("join", &json!({ "username": username }))
    };
    let mut tally = JoinTally {
        sent: client.ws.send(packet).await.is_ok(),
        ..JoinTally::default()
    };
    if tally.sent {
        shared
            .expected
            .fetch_add(shared.members[client.room], Ordering::AcqRel);
    }
    shared.sending.fetch_sub(1, Ordering::AcqRel);
    if !tally.sent {
        return (None, tally);
    }
    // The coordinator says when to stop; this bounds the task even if it cannot.
    let hard_stop = tokio::time::sleep_until(tokio::time::Instant::from_std(
        deadline + Duration::from_secs(5),
    ));
    tokio::pin!(hard_stop);
    let mut alive = true;
    // A server without history shows nobody the joins before their own.
    let mut history_full = shared.history_size == 0;
    let account = |message: &Incoming<'_>, tally: &mut JoinTally, client: &mut Client| {
        let Some(joiner) = joiner_of(message).filter(|_| message.event == "join") else {
            return;
        };
        if message.room != *room {
            tally.foreign += 1;
        } else if !client.joiners.insert(joiner) {
            tally.duplicated += 1;
        } else {
            tally.delivered += 1;
            shared.delivered.fetch_add(1, Ordering::AcqRel);
        }
    };
    while alive {
        tokio::select! {
            frame = client.ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if text == "2" {
                        alive = client.ws.send(Message::text("3")).await.is_ok();
                        continue;
                    }
                    if let Some(message) = room_message(text) {
                        account(&message, &mut tally, &mut client);
                    } else if let Some(messages) = history_messages(text) {
                        // The joins before this member's own, up to the history's size
                        // (a server without history may still answer with an empty one).
                        history_full = messages.len() >= shared.history_size;
                        for message in &messages {
                            account(message, &mut tally, &mut client);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => alive = false,
            },
            _ = stop.changed() => break,
            () = &mut hard_stop => break,
        }
    }
    if history_full {
        tally.before_history =
            shared.members[client.room].saturating_sub(client.joiners.len() as u64);
    }
    (alive.then_some(client), tally)
}

/// The client index a `join` message names (`username` `c<index>`).
fn joiner_of(message: &Incoming<'_>) -> Option<usize> {
    message.data.username?.strip_prefix('c')?.parse().ok()
}

/// Handles one text frame: answers pings, accounts probes of this step. Returns whether the
/// connection is still usable.
async fn on_text(
    client: &mut Client,
    text: &str,
    shared: &StepShared,
    seen: &mut HashMap<usize, SenderSeen>,
    tally: &mut Tally,
) -> bool {
    if text == "2" {
        return client.ws.send(Message::text("3")).await.is_ok();
    }
    let Some(message) = room_message(text) else {
        return true;
    };
    if message.event == "join" {
        // A join of the burst arriving after the burst's wait: counted lost there, and late here.
        if message.room == shared.room_names[client.room]
            && let Some(joiner) = joiner_of(&message)
            && client.joiners.insert(joiner)
        {
            tally.late_joins += 1;
        }
        return true;
    }
    if message.event != "broadcast_say" {
        return true;
    }
    // Probes of an earlier step arriving late were counted lost in their own step.
    let Some(probe) = message.data.text.and_then(parse_probe) else {
        return true;
    };
    if probe.step != shared.step {
        return true;
    }
    if message.room != shared.room_names[client.room] {
        tally.foreign += 1;
        return true;
    }
    match seen.entry(probe.sender).or_default().arrive(probe.seq) {
        Arrival::Duplicate => {
            tally.duplicated += 1;
            return true;
        }
        Arrival::Reordered => tally.reordered += 1,
        Arrival::InOrder => {}
    }
    tally.delivered += 1;
    shared.delivered.fetch_add(1, Ordering::AcqRel);
    let latency = (shared.epoch.elapsed().as_micros() as u64).saturating_sub(probe.micros);
    if let Ok(mut histogram) = shared.latency_us.lock() {
        let _ = histogram.record(latency.clamp(1, MAX_LATENCY_US));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_texts_round_trip() {
        let probe = Probe {
            step: 3,
            sender: 7,
            seq: 42,
            micros: 123_456,
        };
        assert_eq!(parse_probe(&probe_text(probe)), Some(probe));
        assert_eq!(parse_probe("hello"), None);
        assert_eq!(parse_probe("b:1:2:x:3"), None);
        assert_eq!(parse_probe("b:1:2:3"), None);
    }

    fn step(lost: u64, sent: u64, p99: f64) -> StepReport {
        StepReport {
            step: 0,
            rate_per_sender: 10.0,
            senders: 10,
            deliveries: Deliveries {
                sent,
                expected: sent * 5,
                delivered: sent * 5 - lost,
                lost,
                duplicated: 0,
                foreign: 0,
                reordered: 0,
                offered_per_sec: 0.0,
                deliveries_per_sec: 0.0,
                latency_ms_p50: 1.0,
                latency_ms_p99: p99,
                latency_ms_p999: p99,
                latency_ms_max: p99,
                send_seconds: 2.0,
            },
            step_seconds: 2.0,
            bench_cpu_seconds: 0.0,
            generator_busy: 0.0,
            server_cpu: ServerCpu::new(crate::CpuTimes::default(), 0),
            joins_arrived_late: 0,
            redis_cpu: RedisCpu::new(crate::CpuTimes::default(), 0, 1.0),
            held: false,
            verdict: String::new(),
        }
    }

    #[test]
    fn every_room_spans_every_target_unless_rooms_are_local() {
        let mut config = FanoutConfig {
            targets: vec![
                SocketAddr::from(([127, 0, 0, 1], 1)),
                SocketAddr::from(([127, 0, 0, 1], 2)),
            ],
            clients: 1000,
            rooms: 10,
            senders: 100,
            rate: 5.0,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            sources: Vec::new(),
            room_prefix: "r".into(),
            server_pids: Vec::new(),
            redis_pids: Vec::new(),
            raw: false,
            aligned: false,
            local_rooms: false,
            history_size: 50,
        };
        let targets_of_room = |config: &FanoutConfig, room: usize, upto: usize| {
            (0..upto)
                .filter(|i| i % config.rooms == room)
                .map(|i| config.target_of(i).port())
                .collect::<HashSet<_>>()
        };
        for room in 0..10 {
            // Its members, and its senders (the first 100 clients), on both targets.
            assert_eq!(targets_of_room(&config, room, 1000).len(), 2);
            assert_eq!(targets_of_room(&config, room, 100).len(), 2);
        }
        let per_target = (0..1000)
            .filter(|&i| config.target_of(i).port() == 1)
            .count();
        assert_eq!(per_target, 500);
        config.local_rooms = true;
        for room in 0..10 {
            assert_eq!(targets_of_room(&config, room, 1000).len(), 1);
        }
    }

    #[test]
    fn a_late_arrival_fills_its_gap_and_a_repeat_is_a_duplicate() {
        let mut seen = SenderSeen::default();
        assert_eq!(seen.arrive(0), Arrival::InOrder);
        assert_eq!(seen.arrive(2), Arrival::InOrder);
        assert_eq!(seen.arrive(1), Arrival::Reordered);
        assert_eq!(seen.arrive(1), Arrival::Duplicate);
        assert_eq!(seen.arrive(2), Arrival::Duplicate);
        assert_eq!(seen.arrive(3), Arrival::InOrder);
        // A gap wider than what is remembered: its oldest part counts as duplicates if it
        // ever arrives, which the bound accepts.
        let mut seen = SenderSeen::default();
        assert_eq!(seen.arrive(MAX_REMEMBERED_GAP + 10), Arrival::InOrder);
        assert_eq!(seen.missing.len() as u64, MAX_REMEMBERED_GAP);
        assert_eq!(seen.arrive(MAX_REMEMBERED_GAP + 9), Arrival::Reordered);
        assert_eq!(seen.arrive(0), Arrival::Duplicate);
    }

    #[test]
    fn room_messages_are_read_from_socket_io_event_frames() {
        let frame = r#"42["message",{"event":"join","data":{"username":"c7"},"ts":1,"room":"r1"}]"#;
        let message = room_message(frame).expect("a room message");
        assert_eq!(
            (message.event, message.data.username, message.room),
            ("join", Some("c7"), "r1")
        );
        let with_offset = r#"42["message",{"event":"join","data":{"username":"c7"},"ts":1,"room":"r1"},"1700000000000-0~3"]"#;
        assert_eq!(room_message(with_offset).map(|m| m.room), Some("r1"));
        assert!(room_message(r#"42["other",{}]"#).is_none());
        assert!(room_message("2").is_none());
        let history = r#"42["history",{"room":"r1","messages":[{"event":"join","data":{"username":"c1"},"ts":1,"room":"r1"},{"event":"broadcast_say","data":{"username":"c1","text":"hi"},"ts":2,"room":"r1"}]},"1-0~0"]"#;
        let messages = history_messages(history).expect("a history");
        assert_eq!(
            messages
                .iter()
                .map(|m| (m.event, m.data.username))
                .collect::<Vec<_>>(),
            [("join", Some("c1")), ("broadcast_say", Some("c1"))]
        );
        assert!(history_messages(frame).is_none());
    }

    #[test]
    fn a_step_holds_only_without_loss_within_the_limit_at_the_rate_asked() {
        let judged = |mut s: StepReport| {
            judge(&mut s, 50.0);
            (s.held, s.verdict)
        };
        assert_eq!(judged(step(0, 200, 20.0)), (true, "held".to_owned()));
        assert!(!judged(step(1, 200, 20.0)).0);
        assert!(!judged(step(0, 200, 50.5)).0);
        let (held, verdict) = judged(step(0, 100, 20.0));
        assert!(!held && verdict.contains("fell behind"), "{verdict}");
        assert!(!judged(step(0, 0, 0.0)).0);
    }
}
