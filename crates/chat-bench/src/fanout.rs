//! The fanout scenario: C clients in R rooms, S of them sending timestamped `say` at a rate;
//! every delivery is accounted (delivered, lost, duplicated, foreign) and timed. The ramp runs
//! steps of increasing rate on the same connections and stops at the first step that does not
//! hold (p99 above the limit, or any delivery lost, duplicated or foreign).

use std::{
    collections::HashMap,
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
    pub deliveries: Deliveries,
    pub bench_cpu_seconds: f64,
    #[serde(flatten)]
    pub server_cpu: ServerCpu,
    #[serde(flatten)]
    pub redis_cpu: RedisCpu,
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
}

#[derive(Deserialize)]
struct Incoming<'a> {
    event: &'a str,
    #[serde(borrow)]
    data: IncomingData<'a>,
    room: &'a str,
}

#[derive(Deserialize)]
struct IncomingData<'a> {
    #[serde(default, borrow)]
    text: Option<&'a str>,
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
    let (clients, step) = run_step(connected.clients, &config, 0, config.rate, epoch).await;
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
    let mut clients = connected.clients;
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
    let best = steps.iter().rev().find(|s| s.held);
    Ok(RampReport {
        scenario: "ramp",
        clients: config.fanout.clients,
        rooms: config.fanout.rooms,
        senders: config.fanout.senders,
        connected: config.fanout.clients - connected.failures,
        connect_failures: connected.failures,
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
        let target = config.targets[index % config.targets.len()];
        let source =
            (!config.sources.is_empty()).then(|| config.sources[index % config.sources.len()]);
        let room = index % config.rooms;
        let query = format!("roomid={}{room}", config.room_prefix);
        let raw = config.raw;
        pending.push_back(async move {
            let ws = connect_one(target, source, &query, raw, index).await;
            ws.map(|ws| Client { index, room, ws })
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

/// One client: a plain websocket for the floor; a socket.io connection and a `join` otherwise.
async fn connect_one(
    target: SocketAddr,
    source: Option<IpAddr>,
    query: &str,
    raw: bool,
    index: usize,
) -> anyhow::Result<conn::Ws> {
    if raw {
        return conn::open(target, source, &format!("/?{query}")).await;
    }
    let mut ws = conn::connect(target, source, query).await?;
    ws.send(event_packet(
        "join",
        &json!({ "username": format!("c{index}") }),
    ))
    .await?;
    Ok(ws)
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
    let mut next_seq: HashMap<usize, u64> = HashMap::new();
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
                    alive = on_text(&mut client, text.as_str(), &shared, &mut next_seq, &mut tally).await;
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

/// Handles one text frame: answers pings, accounts probes of this step. Returns whether the
/// connection is still usable.
async fn on_text(
    client: &mut Client,
    text: &str,
    shared: &StepShared,
    next_seq: &mut HashMap<usize, u64>,
    tally: &mut Tally,
) -> bool {
    if text == "2" {
        return client.ws.send(Message::text("3")).await.is_ok();
    }
    let Some(body) = text
        .strip_prefix("42[\"message\",")
        .and_then(|b| b.strip_suffix(']'))
    else {
        return true;
    };
    let Ok(message) = serde_json::from_str::<Incoming>(body) else {
        return true;
    };
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
    let next = next_seq.entry(probe.sender).or_insert(0);
    if probe.seq < *next {
        tally.duplicated += 1;
        return true;
    }
    *next = probe.seq + 1;
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
            redis_cpu: RedisCpu::new(crate::CpuTimes::default(), 0, 1.0),
            held: false,
            verdict: String::new(),
        }
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
