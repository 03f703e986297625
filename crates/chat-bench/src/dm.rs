//! The direct-message scenario: S senders and R recipients log in (distinct users, spread over
//! the targets), each sender sends `chat` to the recipients in turn at a rate, each recipient
//! acknowledges every message it is given. Measured per step: how many sends were acknowledged
//! `{ok:true}` per second, the sender's ack latency (emit to ack: the store script, and under
//! `--durability replicated` the replica's confirmation), the delivery latency, refusals by
//! code, and acknowledged messages never delivered. A ramp runs steps of increasing rate on the
//! same connections and stops at the first that does not hold (ack p99 above the limit, any
//! refusal or loss, or the generator behind).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::conn;

/// Handshakes and logins in flight at once while connecting.
const CONNECT_CONCURRENCY: usize = 128;
/// Time between spawning a step's tasks and the start of sending.
const STEP_LEAD: Duration = Duration::from_millis(100);
/// A step whose senders sent less than this share of what was asked did not offer its rate.
const OFFERED_SHARE_REQUIRED: f64 = 0.9;
/// Highest latency the histograms record (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Longest wait for a login's answer.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DmConfig {
    pub targets: Vec<SocketAddr>,
    pub senders: usize,
    pub recipients: usize,
    /// `chat` per second per sender, one step each (one value: a plain run).
    pub rates: Vec<f64>,
    /// Sending time of each step.
    pub duration: Duration,
    /// Longest wait, after sending stops, for outstanding acks and deliveries.
    pub drain: Duration,
    /// Source addresses to spread connections over; empty = the default.
    pub sources: Vec<IpAddr>,
    /// User ids are `<prefix>s<i>` (senders) and `<prefix>r<j>` (recipients).
    pub user_prefix: String,
    /// Server processes (workers, Redis) whose CPU time is measured per step.
    pub server_pids: Vec<u32>,
    /// The Redis processes among them, also reported apart (a Redis server uses one core).
    pub redis_pids: Vec<u32>,
    /// This run's nonce (e.g. the start time in milliseconds): part of every message text and
    /// `clientMsgId`, so an earlier run on the same Redis cannot be mistaken for this one.
    pub run: u64,
    /// A step holds if the p99 of the sender's ack is at most this, and nothing was refused or
    /// lost.
    pub p99_limit_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct DmReport {
    pub scenario: &'static str,
    pub senders: usize,
    pub recipients: usize,
    pub connected: usize,
    pub connect_failures: usize,
    pub p99_limit_ms: f64,
    pub step_send_seconds: f64,
    pub steps: Vec<DmStep>,
    /// The last step that held (None: not even the first).
    pub best_step: Option<usize>,
    pub best_acked_per_sec: Option<f64>,
    pub best_ack_ms_p99: Option<f64>,
    /// Why the run stopped: the failing step's verdict, or "all steps held".
    pub stopped_because: String,
    pub bench_cpu_seconds: f64,
}

/// One step at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct DmStep {
    pub step: usize,
    pub rate_per_sender: f64,
    /// Senders still connected at the start of the step.
    pub senders: usize,
    pub sent: u64,
    /// Answered `{ok:true}` with a new id.
    pub acked: u64,
    /// Answered `{ok:false}`, by error code (and `answered_duplicate`: `{ok:true,
    /// duplicate:true}`, which no send here should get).
    pub refused: HashMap<String, u64>,
    /// Sent but never answered within the drain.
    pub unanswered: u64,
    /// Acknowledged but not delivered to the recipient within the drain.
    pub lost: u64,
    /// Delivered again after a first delivery (at-least-once delivery allows it).
    pub duplicated: u64,
    pub offered_per_sec: f64,
    pub acked_per_sec: f64,
    pub ack_ms_p50: f64,
    pub ack_ms_p99: f64,
    pub ack_ms_p999: f64,
    pub ack_ms_max: f64,
    pub delivery_ms_p50: f64,
    pub delivery_ms_p99: f64,
    pub send_seconds: f64,
    pub step_seconds: f64,
    pub bench_cpu_seconds: f64,
    /// The generator's CPU time over the step's wall time (near 1.0: it was saturated).
    pub generator_busy: f64,
    pub server_cpu_seconds: f64,
    pub server_cpu_us_per_message: f64,
    pub redis_cpu_seconds: f64,
    pub redis_cpu_us_per_message: f64,
    /// Redis CPU over the step's wall time, summed over the Redis processes: 1.0 is one core.
    pub redis_cores: f64,
    pub held: bool,
    pub verdict: String,
}

/// A probe's identity: the run (a nonce, so that messages and `clientMsgId`s of an earlier run
/// on the same Redis are neither counted nor answered as duplicates), step, sender, sequence
/// number, sent when (µs since the run's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Probe {
    run: u64,
    step: usize,
    sender: usize,
    seq: u64,
    micros: u64,
}

/// The text of a direct message:
/// `d:<run>:<step>:<sender>:<seq>:<microseconds since the run's start>`.
fn probe_text(probe: Probe) -> String {
    format!(
        "d:{}:{}:{}:{}:{}",
        probe.run, probe.step, probe.sender, probe.seq, probe.micros
    )
}

fn parse_probe(text: &str) -> Option<Probe> {
    let mut parts = text.strip_prefix("d:")?.split(':');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some(Probe {
        run: next()?,
        step: usize::try_from(next()?).ok()?,
        sender: usize::try_from(next()?).ok()?,
        seq: next()?,
        micros: next()?,
    })
}

/// A socket.io packet with an ack id: `42<id>[...]` (an event asking for an ack) or `43<id>[...]`
/// (an ack), as `(kind, id, the JSON array)`.
fn split_packet(text: &str) -> Option<(&str, u64, &str)> {
    let kind = text.get(..2)?;
    let rest = &text[2..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse().ok()?;
    Some((kind, id, &rest[digits..]))
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    /// A `clientMsgId` already used: nothing was stored. Every send here has a new one, so
    /// this would be a generator or server bug.
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<AnswerError>,
}

#[derive(Deserialize)]
struct AnswerError {
    code: String,
}

#[derive(Deserialize)]
struct Delivered {
    text: String,
}

/// `chat` delivers one message or an array of them (waiting messages at login).
#[derive(Deserialize)]
#[serde(untagged)]
enum Deliveries {
    One(Delivered),
    Many(Vec<Delivered>),
}

/// What the tasks of a step share.
struct StepShared {
    run: u64,
    step: usize,
    epoch: Instant,
    send_start: Instant,
    send_for: Duration,
    drain: Duration,
    interval: Duration,
    senders: usize,
    recipients: usize,
    user_prefix: String,
    sent: AtomicU64,
    answered: AtomicU64,
    senders_left: AtomicUsize,
    acked: Mutex<HashSet<(usize, u64)>>,
    delivered: Mutex<HashSet<(usize, u64)>>,
    refused: Mutex<HashMap<String, u64>>,
    duplicated: AtomicU64,
    ack_us: Mutex<Histogram<u64>>,
    delivery_us: Mutex<Histogram<u64>>,
}

struct Conn {
    index: usize,
    sender: bool,
    ws: conn::Ws,
    next_ack_id: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Logs everyone in, runs one step per rate until one does not hold, and reports every step.
pub async fn run(config: DmConfig) -> anyhow::Result<DmReport> {
    anyhow::ensure!(
        config.senders > 0 && config.recipients > 0,
        "need senders and recipients"
    );
    anyhow::ensure!(!config.targets.is_empty(), "no target");
    anyhow::ensure!(!config.rates.is_empty(), "at least one rate");
    anyhow::ensure!(
        config.rates.iter().all(|r| r.is_finite() && *r > 0.0),
        "rates must be positive"
    );
    anyhow::ensure!(config.p99_limit_ms > 0.0, "the p99 limit must be positive");
    let cpu_start = crate::cpu_seconds();
    let epoch = Instant::now();
    let (mut conns, failures) = connect_all(&config).await;
    let mut steps: Vec<DmStep> = Vec::with_capacity(config.rates.len());
    let mut stopped_because = "all steps held".to_owned();
    for (number, &rate) in config.rates.iter().enumerate() {
        let (left, step) = run_step(conns, &config, number, rate, epoch).await;
        conns = left;
        let held = step.held;
        if !held {
            stopped_because = format!("step {number} at {rate}/s per sender: {}", step.verdict);
        }
        steps.push(step);
        if !held {
            break;
        }
    }
    let closing = futures_util::future::join_all(
        conns
            .into_iter()
            .map(|mut c| async move { c.ws.close(None).await }),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    let best = steps.iter().rev().find(|s| s.held);
    Ok(DmReport {
        scenario: "dm",
        senders: config.senders,
        recipients: config.recipients,
        connected: config.senders + config.recipients - failures,
        connect_failures: failures,
        p99_limit_ms: config.p99_limit_ms,
        step_send_seconds: config.duration.as_secs_f64(),
        best_step: best.map(|s| s.step),
        best_acked_per_sec: best.map(|s| s.acked_per_sec),
        best_ack_ms_p99: best.map(|s| s.ack_ms_p99),
        stopped_because,
        steps,
        bench_cpu_seconds: crate::cpu_seconds() - cpu_start,
    })
}

/// Connects and logs in every sender and recipient (recipients first, so none is offline when
/// the first message comes), at most `CONNECT_CONCURRENCY` at once.
async fn connect_all(config: &DmConfig) -> (Vec<Conn>, usize) {
    let total = config.senders + config.recipients;
    let mut conns = Vec::with_capacity(total);
    let mut failures = 0;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    // Recipients are indexes 0..R, senders R..R+S; senders land on other targets than the
    // recipients they write to whenever there are several targets.
    for index in 0..total {
        let target = config.targets[index % config.targets.len()];
        let source =
            (!config.sources.is_empty()).then(|| config.sources[index % config.sources.len()]);
        let sender = index >= config.recipients;
        let user = if sender {
            format!("{}s{}", config.user_prefix, index - config.recipients)
        } else {
            format!("{}r{index}", config.user_prefix)
        };
        pending.push(async move {
            connect_one(target, source, &user).await.map(|ws| Conn {
                index: if sender {
                    index - config.recipients
                } else {
                    index
                },
                sender,
                ws,
                next_ack_id: 1,
            })
        });
        if pending.len() >= CONNECT_CONCURRENCY
            && let Some(result) = pending.next().await
        {
            collect(result, &mut conns, &mut failures);
        }
    }
    while let Some(result) = pending.next().await {
        collect(result, &mut conns, &mut failures);
    }
    (conns, failures)
}

fn collect(result: anyhow::Result<Conn>, conns: &mut Vec<Conn>, failures: &mut usize) {
    match result {
        Ok(conn) => conns.push(conn),
        Err(err) => {
            *failures += 1;
            if *failures <= 3 {
                eprintln!("chat-bench: connect or login failed: {err:#}");
            }
        }
    }
}

/// A socket.io connection logged in as `user` (ack id 0 of the connection).
async fn connect_one(
    target: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
) -> anyhow::Result<conn::Ws> {
    let mut ws = conn::connect(target, source, "").await?;
    let login = json!({ "userId": user, "deviceId": "bench" });
    ws.send(Message::text(format!("420[\"login\",{login}]")))
        .await?;
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("login answer timed out")?;
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.into()),
            None => bail!("closed before the login answer"),
        };
        if text.as_str() == "2" {
            ws.send(Message::text("3")).await?;
            continue;
        }
        if let Some(("43", 0, body)) = split_packet(text.as_str()) {
            let [answer]: [Answer; 1] = serde_json::from_str(body).context("login answer")?;
            anyhow::ensure!(answer.ok, "login refused: {body}");
            return Ok(ws);
        }
    }
}

/// One step at `rate` per sender. Returns the connections still open, and the step's report.
async fn run_step(
    conns: Vec<Conn>,
    config: &DmConfig,
    step: usize,
    rate: f64,
    epoch: Instant,
) -> (Vec<Conn>, DmStep) {
    let cpu_start = crate::cpu_seconds();
    let wall_start = Instant::now();
    let server_start = crate::processes_cpu(&config.server_pids);
    let redis_start = crate::processes_cpu(&config.redis_pids);
    let senders = conns.iter().filter(|c| c.sender).count();
    let shared = Arc::new(StepShared {
        run: config.run,
        step,
        epoch,
        send_start: Instant::now() + STEP_LEAD,
        send_for: config.duration,
        drain: config.drain,
        interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
        senders: config.senders,
        recipients: config.recipients,
        user_prefix: config.user_prefix.clone(),
        sent: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        senders_left: AtomicUsize::new(senders),
        acked: Mutex::new(HashSet::new()),
        delivered: Mutex::new(HashSet::new()),
        refused: Mutex::new(HashMap::new()),
        duplicated: AtomicU64::new(0),
        ack_us: Mutex::new(new_histogram()),
        delivery_us: Mutex::new(new_histogram()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(conn_step(conn, Arc::clone(&shared), stop_rx.clone())))
        .collect();
    let ended = wait_for_step_end(&shared, config.drain).await;
    let _ = stop_tx.send(true);
    let mut left = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(Some(conn)) = task.await {
            left.push(conn);
        }
    }
    let server = crate::processes_cpu(&config.server_pids).since(server_start);
    let redis = crate::processes_cpu(&config.redis_pids).since(redis_start);
    let wall = wall_start.elapsed().as_secs_f64().max(1e-9);
    let bench_cpu_seconds = crate::cpu_seconds() - cpu_start;
    let report = report_step(
        &shared,
        config,
        rate,
        senders,
        ended,
        server,
        redis,
        wall,
        bench_cpu_seconds,
    );
    (left, report)
}

#[allow(clippy::too_many_arguments)]
fn report_step(
    shared: &StepShared,
    config: &DmConfig,
    rate: f64,
    senders: usize,
    ended: Instant,
    server: crate::CpuTimes,
    redis: crate::CpuTimes,
    wall: f64,
    bench_cpu_seconds: f64,
) -> DmStep {
    let lock = |m: &Mutex<Histogram<u64>>| {
        m.lock()
            .map_or_else(|p| p.into_inner().clone(), |h| h.clone())
    };
    let (ack, delivery) = (lock(&shared.ack_us), lock(&shared.delivery_us));
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let acked = shared.acked.lock().map(|s| s.clone()).unwrap_or_default();
    let delivered = shared
        .delivered
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let refused = shared.refused.lock().map(|r| r.clone()).unwrap_or_default();
    let sent = shared.sent.load(Ordering::Acquire);
    let answered = shared.answered.load(Ordering::Acquire);
    let send_seconds = config.duration.as_secs_f64().max(1e-9);
    let messages = sent.max(1) as f64;
    let mut step = DmStep {
        step: shared.step,
        rate_per_sender: rate,
        senders,
        sent,
        acked: acked.len() as u64,
        unanswered: sent.saturating_sub(answered),
        lost: acked.difference(&delivered).count() as u64,
        duplicated: shared.duplicated.load(Ordering::Acquire),
        refused,
        offered_per_sec: sent as f64 / send_seconds,
        acked_per_sec: acked.len() as f64 / send_seconds,
        ack_ms_p50: ms(&ack, 0.5),
        ack_ms_p99: ms(&ack, 0.99),
        ack_ms_p999: ms(&ack, 0.999),
        ack_ms_max: ack.max() as f64 / 1000.0,
        delivery_ms_p50: ms(&delivery, 0.5),
        delivery_ms_p99: ms(&delivery, 0.99),
        send_seconds,
        step_seconds: ended
            .saturating_duration_since(shared.send_start)
            .as_secs_f64(),
        bench_cpu_seconds,
        generator_busy: bench_cpu_seconds / wall,
        server_cpu_seconds: server.total(),
        server_cpu_us_per_message: server.total() * 1e6 / messages,
        redis_cpu_seconds: redis.total(),
        redis_cpu_us_per_message: redis.total() * 1e6 / messages,
        redis_cores: redis.total() / wall,
        held: false,
        verdict: String::new(),
    };
    judge(&mut step, config.p99_limit_ms);
    step
}

/// Held: every send acknowledged `{ok:true}` and delivered, the rate offered, the ack p99
/// within the limit.
fn judge(step: &mut DmStep, p99_limit_ms: f64) {
    let asked = step.senders as f64 * step.rate_per_sender * step.send_seconds;
    let refused: u64 = step.refused.values().sum();
    let verdict = if step.sent == 0 {
        "nothing was sent".to_owned()
    } else if refused > 0 || step.unanswered > 0 {
        format!(
            "{refused} refused {:?}, {} unanswered",
            step.refused, step.unanswered
        )
    } else if step.lost > 0 {
        format!("{} acknowledged but not delivered", step.lost)
    } else if (step.sent as f64) < OFFERED_SHARE_REQUIRED * asked {
        format!(
            "the generator sent {} of {asked:.0} asked (it fell behind)",
            step.sent
        )
    } else if step.ack_ms_p99 > p99_limit_ms {
        format!("ack p99 {:.1} ms above {p99_limit_ms} ms", step.ack_ms_p99)
    } else {
        "held".to_owned()
    };
    step.held = verdict == "held";
    step.verdict = verdict;
}

/// Waits until sending is over and every send was answered and every acknowledged message
/// delivered, or the drain ran out. Returns when the step ended.
async fn wait_for_step_end(shared: &StepShared, drain: Duration) -> Instant {
    let send_end = shared.send_start + shared.send_for;
    tokio::time::sleep_until(tokio::time::Instant::from_std(send_end)).await;
    let deadline = send_end + drain;
    loop {
        let now = Instant::now();
        let done = shared.senders_left.load(Ordering::Acquire) == 0
            && shared.answered.load(Ordering::Acquire) >= shared.sent.load(Ordering::Acquire)
            && shared
                .acked
                .lock()
                .ok()
                .zip(shared.delivered.lock().ok())
                .is_some_and(|(acked, delivered)| acked.is_subset(&delivered));
        if done || now >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One connection's part in a step: a sender sends at its own phase and times the answers; a
/// recipient acknowledges what it is given and times the deliveries; both answer pings.
async fn conn_step(
    mut conn: Conn,
    shared: Arc<StepShared>,
    mut stop: watch::Receiver<bool>,
) -> Option<Conn> {
    let phase = shared
        .interval
        .mul_f64((conn.index % shared.senders) as f64 / shared.senders as f64);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(shared.send_start + phase),
        shared.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let send_end = shared.send_start + shared.send_for;
    // The coordinator says when to stop; this bounds the task even if it cannot.
    let hard_stop = tokio::time::sleep_until(tokio::time::Instant::from_std(
        send_end + shared.drain + Duration::from_secs(5),
    ));
    tokio::pin!(hard_stop);
    let mut sending = conn.sender;
    let mut seq = 0u64;
    // Ack id → (the probe, when it was sent).
    let mut waiting: HashMap<u64, (Probe, Instant)> = HashMap::new();
    let mut seen: HashSet<(usize, u64)> = HashSet::new();
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
                    run: shared.run,
                    step: shared.step,
                    sender: conn.index,
                    seq,
                    micros: shared.epoch.elapsed().as_micros() as u64,
                };
                seq += 1;
                let to = format!("{}r{}", shared.user_prefix, (conn.index + probe.seq as usize) % shared.recipients);
                let id = conn.next_ack_id;
                conn.next_ack_id += 1;
                let body = json!({
                    "to": to,
                    "text": probe_text(probe),
                    "clientMsgId": format!("{}-{}-{}", probe.run, probe.step, probe.seq),
                });
                waiting.insert(id, (probe, Instant::now()));
                shared.sent.fetch_add(1, Ordering::AcqRel);
                alive = conn.ws.send(Message::text(format!("42{id}[\"chat\",{body}]"))).await.is_ok();
            }
            frame = conn.ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    alive = on_text(&mut conn, text.as_str(), &shared, &mut waiting, &mut seen).await;
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
    alive.then_some(conn)
}

/// Handles one text frame. Returns whether the connection is still usable.
async fn on_text(
    conn: &mut Conn,
    text: &str,
    shared: &StepShared,
    waiting: &mut HashMap<u64, (Probe, Instant)>,
    seen: &mut HashSet<(usize, u64)>,
) -> bool {
    if text == "2" {
        return conn.ws.send(Message::text("3")).await.is_ok();
    }
    match split_packet(text) {
        Some(("43", id, body)) => {
            if let Some((probe, sent_at)) = waiting.remove(&id) {
                shared.answered.fetch_add(1, Ordering::AcqRel);
                let micros = sent_at.elapsed().as_micros() as u64;
                match serde_json::from_str::<[Answer; 1]>(body) {
                    Ok([answer]) if answer.ok && answer.duplicate => {
                        if let Ok(mut refused) = shared.refused.lock() {
                            *refused.entry("answered_duplicate".to_owned()).or_default() += 1;
                        }
                    }
                    Ok([answer]) if answer.ok => {
                        if let Ok(mut histogram) = shared.ack_us.lock() {
                            let _ = histogram.record(micros.clamp(1, MAX_LATENCY_US));
                        }
                        if let Ok(mut acked) = shared.acked.lock() {
                            acked.insert((probe.sender, probe.seq));
                        }
                    }
                    Ok([answer]) => {
                        let code = answer
                            .error
                            .map_or_else(|| "unknown".to_owned(), |e| e.code);
                        if let Ok(mut refused) = shared.refused.lock() {
                            *refused.entry(code).or_default() += 1;
                        }
                    }
                    Err(_) => {
                        if let Ok(mut refused) = shared.refused.lock() {
                            *refused.entry("unreadable".to_owned()).or_default() += 1;
                        }
                    }
                }
            }
            true
        }
        Some(("42", id, body)) => {
            let Some(payload) = body
                .strip_prefix("[\"chat\",")
                .and_then(|b| b.strip_suffix(']'))
            else {
                return true;
            };
            let now = shared.epoch.elapsed().as_micros() as u64;
            let messages = match serde_json::from_str::<Deliveries>(payload) {
                Ok(Deliveries::One(one)) => vec![one],
                Ok(Deliveries::Many(many)) => many,
                Err(_) => Vec::new(),
            };
            for message in messages {
                let Some(probe) = parse_probe(&message.text) else {
                    continue;
                };
                if probe.run != shared.run || probe.step != shared.step {
                    continue;
                }
                if !seen.insert((probe.sender, probe.seq)) {
                    shared.duplicated.fetch_add(1, Ordering::AcqRel);
                    continue;
                }
                if let Ok(mut delivered) = shared.delivered.lock() {
                    delivered.insert((probe.sender, probe.seq));
                }
                if let Ok(mut histogram) = shared.delivery_us.lock() {
                    let _ =
                        histogram.record(now.saturating_sub(probe.micros).clamp(1, MAX_LATENCY_US));
                }
            }
            // Acknowledge the delivery, as a client does, so the message leaves the inbox.
            conn.ws
                .send(Message::text(format!("43{id}[{{\"ok\":true}}]")))
                .await
                .is_ok()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_packets_parse() {
        let probe = Probe {
            run: 1_700_000_000_000,
            step: 2,
            sender: 5,
            seq: 9,
            micros: 77,
        };
        assert_eq!(parse_probe(&probe_text(probe)), Some(probe));
        assert_eq!(parse_probe("b:1:2:3:4:5"), None);
        assert_eq!(parse_probe("d:1:2:3:4"), None);
        assert_eq!(
            split_packet("4317[{\"ok\":true}]"),
            Some(("43", 17, "[{\"ok\":true}]"))
        );
        assert_eq!(
            split_packet("420[\"chat\",{}]"),
            Some(("42", 0, "[\"chat\",{}]"))
        );
        assert_eq!(split_packet("42[\"chat\",{}]"), None);
        assert_eq!(split_packet("2"), None);
    }

    #[test]
    fn a_step_holds_only_with_every_send_acknowledged_and_delivered() {
        let step = |refused: u64, lost: u64, p99: f64| {
            let mut s = DmStep {
                step: 0,
                rate_per_sender: 10.0,
                senders: 10,
                sent: 200,
                acked: 200 - refused,
                refused: if refused > 0 {
                    HashMap::from([("unavailable".to_owned(), refused)])
                } else {
                    HashMap::new()
                },
                unanswered: 0,
                lost,
                duplicated: 0,
                offered_per_sec: 100.0,
                acked_per_sec: 100.0,
                ack_ms_p50: 1.0,
                ack_ms_p99: p99,
                ack_ms_p999: p99,
                ack_ms_max: p99,
                delivery_ms_p50: 1.0,
                delivery_ms_p99: 1.0,
                send_seconds: 2.0,
                step_seconds: 2.0,
                bench_cpu_seconds: 0.0,
                generator_busy: 0.0,
                server_cpu_seconds: 0.0,
                server_cpu_us_per_message: 0.0,
                redis_cpu_seconds: 0.0,
                redis_cpu_us_per_message: 0.0,
                redis_cores: 0.0,
                held: false,
                verdict: String::new(),
            };
            judge(&mut s, 50.0);
            (s.held, s.verdict)
        };
        assert_eq!(step(0, 0, 10.0), (true, "held".to_owned()));
        assert!(!step(1, 0, 10.0).0);
        assert!(!step(0, 1, 10.0).0);
        assert!(!step(0, 0, 60.0).0);
    }
}
