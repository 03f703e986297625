//! The fanout scenario: C clients in R rooms, S of them sending timestamped `say` at a rate;
//! every delivery is accounted (delivered, lost, duplicated, foreign) and timed.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, event_packet};

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub targets: Vec<SocketAddr>,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    /// `say` per second per sender.
    pub rate: f64,
    pub duration: Duration,
    /// Longest wait for in-flight messages after sending stops.
    pub drain: Duration,
    /// Source addresses to spread clients over (for nginx ip_hash); empty = the default.
    pub sources: Vec<IpAddr>,
    pub room_prefix: String,
    /// Server processes (workers, Redis) whose CPU time is measured over the run.
    pub server_pids: Vec<u32>,
    /// Talk to the bare-websocket floor server instead of socket.io: no handshake, no join, and
    /// each say is sent as the very `message` packet members should receive (the floor
    /// forwards frames as they are), so accounting is the same as for socket.io servers.
    pub raw: bool,
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub connected: usize,
    pub connect_failures: usize,
    pub connect_per_sec: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub foreign: u64,
    pub deliveries_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
    pub send_seconds: f64,
    pub bench_cpu_seconds: f64,
    /// CPU time of the server processes from the start of sending to the end of the drain.
    pub server_cpu_seconds: f64,
    pub server_cpu_us_per_delivery: f64,
}

/// What one receiving client saw.
struct Tally {
    latency_us: Histogram<u64>,
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

/// The text a sender sends: `b:<sender>:<seq>:<microseconds since the run's start>`.
fn probe_text(sender: usize, seq: u64, micros: u64) -> String {
    format!("b:{sender}:{seq}:{micros}")
}

fn parse_probe(text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.strip_prefix("b:")?.split(':');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

pub async fn run(config: FanoutConfig) -> anyhow::Result<FanoutReport> {
    anyhow::ensure!(
        config.clients > 0 && config.rooms > 0,
        "need clients and rooms"
    );
    anyhow::ensure!(
        config.senders <= config.clients,
        "more senders than clients"
    );
    anyhow::ensure!(!config.targets.is_empty(), "no target");
    let start = Instant::now();
    let cpu_start = crate::cpu_seconds();
    let room_of = |i: usize| i % config.rooms;

    // Connect and join everyone first.
    let connect_started = Instant::now();
    let mut connections = Vec::with_capacity(config.clients);
    let mut failures = 0;
    let mut pending = futures_util::stream::FuturesOrdered::new();
    for i in 0..config.clients {
        let target = config.targets[i % config.targets.len()];
        let source = (!config.sources.is_empty()).then(|| config.sources[i % config.sources.len()]);
        let query = format!("roomid={}{}", config.room_prefix, room_of(i));
        let raw = config.raw;
        pending.push_back(async move {
            if raw {
                return conn::open(target, source, &format!("/?{query}")).await;
            }
            let mut ws = conn::connect(target, source, &query).await?;
            ws.send(event_packet(
                "join",
                &json!({ "username": format!("c{i}") }),
            ))
            .await?;
            anyhow::Ok(ws)
        });
        // Bounded concurrency: at most 256 handshakes in flight.
        if pending.len() >= 256 {
            collect(pending.next().await, &mut connections, &mut failures);
        }
    }
    while let Some(result) = pending.next().await {
        collect(Some(result), &mut connections, &mut failures);
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let connected = connections.len();
    let mut members = vec![0u64; config.rooms];
    for (i, _) in connections.iter().enumerate() {
        members[room_of(i)] += 1;
    }

    // Every client reads; senders also write. The barrier lines up the start of sending.
    let barrier = Arc::new(Barrier::new(connected + 1));
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(0.001));
    let send_for = config.duration;
    let mut tasks = Vec::with_capacity(connected);
    for (i, ws) in connections.into_iter().enumerate() {
        let my_room = format!("{}{}", config.room_prefix, room_of(i));
        let sender = i < config.senders;
        let barrier = Arc::clone(&barrier);
        let deadline_drain = config.drain;
        let raw = config.raw;
        tasks.push(tokio::spawn(async move {
            let (mut write, mut read) = ws.split();
            let mut tally = Tally {
                latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
                delivered: 0,
                duplicated: 0,
                foreign: 0,
            };
            let mut next_seq: HashMap<usize, u64> = HashMap::new();
            barrier.wait().await;
            let send_start = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sending = sender;
            let stop_reading = tokio::time::sleep(send_for + deadline_drain);
            tokio::pin!(stop_reading);
            loop {
                tokio::select! {
                    _ = tick.tick(), if sending => {
                        if send_start.elapsed() >= send_for {
                            sending = false;
                            continue;
                        }
                        let micros = start.elapsed().as_micros() as u64;
                        let text = probe_text(i, sent, micros);
                        let packet = if raw {
                            let message = json!({ "event": "broadcast_say", "data": { "username": format!("c{i}"), "text": text }, "room": my_room });
                            event_packet("message", &message)
                        } else {
                            event_packet("say", &json!({ "text": text }))
                        };
                        if write.send(packet).await.is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    frame = read.next() => {
                        let Some(Ok(frame)) = frame else { break };
                        let Message::Text(text) = frame else { continue };
                        let text = text.as_str();
                        if text == "2" {
                            let _ = write.send(Message::text("3")).await;
                            continue;
                        }
                        let Some(body) = text.strip_prefix("42[\"message\",").and_then(|b| b.strip_suffix(']')) else { continue };
                        let Ok(message) = serde_json::from_str::<Incoming>(body) else { continue };
                        if message.event != "broadcast_say" {
                            continue;
                        }
                        let Some((from, seq, micros)) = message.data.text.and_then(parse_probe) else { continue };
                        if message.room != my_room {
                            tally.foreign += 1;
                            continue;
                        }
                        let next = next_seq.entry(from).or_insert(0);
                        if seq < *next {
                            tally.duplicated += 1;
                            continue;
                        }
                        *next = seq + 1;
                        tally.delivered += 1;
                        let latency = (start.elapsed().as_micros() as u64).saturating_sub(micros);
                        let _ = tally.latency_us.record(latency.max(1));
                    }
                    _ = &mut stop_reading => break,
                }
            }
            let _ = write.send(Message::Close(None)).await;
            (i, sent, tally)
        }));
    }
    let server_cpu_before = crate::processes_cpu_seconds(&config.server_pids);
    barrier.wait().await;

    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let (mut sent_total, mut expected, mut delivered, mut duplicated, mut foreign) =
        (0, 0, 0, 0, 0);
    for task in tasks {
        let (i, sent, tally) = task.await?;
        sent_total += sent;
        expected += sent * members[room_of(i)];
        delivered += tally.delivered;
        duplicated += tally.duplicated;
        foreign += tally.foreign;
        histogram.add(&tally.latency_us).ok();
    }
    let server_cpu_seconds = crate::processes_cpu_seconds(&config.server_pids) - server_cpu_before;
    let send_seconds = config.duration.as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(FanoutReport {
        scenario: "fanout",
        clients: config.clients,
        rooms: config.rooms,
        senders: config.senders,
        connected,
        connect_failures: failures,
        connect_per_sec: connected as f64 / connect_seconds.max(1e-9),
        sent: sent_total,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicated,
        foreign,
        deliveries_per_sec: delivered as f64 / send_seconds.max(1e-9),
        latency_ms_p50: ms(0.50),
        latency_ms_p99: ms(0.99),
        latency_ms_p999: ms(0.999),
        latency_ms_max: histogram.max() as f64 / 1000.0,
        send_seconds,
        bench_cpu_seconds: crate::cpu_seconds() - cpu_start,
        server_cpu_seconds,
        server_cpu_us_per_delivery: server_cpu_seconds * 1e6 / delivered.max(1) as f64,
    })
}

fn collect(
    result: Option<anyhow::Result<conn::Ws>>,
    connections: &mut Vec<conn::Ws>,
    failures: &mut usize,
) {
    match result {
        Some(Ok(ws)) => connections.push(ws),
        Some(Err(err)) => {
            *failures += 1;
            if *failures <= 3 {
                eprintln!("chat-bench: connect failed: {err:#}");
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_texts_round_trip() {
        assert_eq!(
            parse_probe(&probe_text(7, 42, 123_456)),
            Some((7, 42, 123_456))
        );
        assert_eq!(parse_probe("hello"), None);
        assert_eq!(parse_probe("b:1:x:3"), None);
    }
}
