//! The `chat-bench` binary: parses a scenario's flags and runs it.

use std::{net::SocketAddr, time::Duration};

use chat_bench::{
    bounded_seconds, dm, fanout, idle, loopback_sources, print_report, print_rows, storm,
};

/// Longest sending, draining, holding or waiting time any flag may ask for.
const MAX_RUN_SECS: f64 = 600.0;
/// Most steps a ramp may have.
const MAX_RAMP_STEPS: usize = 50;

/// The columns of the ramp's step table.
const RAMP_COLUMNS: &[&str] = &[
    "step",
    "rate_per_sender",
    "offered_per_sec",
    "deliveries_per_sec",
    "lost",
    "latency_ms_p50",
    "latency_ms_p99",
    "latency_ms_max",
    "generator_busy",
    "server_cpu_us_per_delivery",
    "server_user_us_per_delivery",
    "redis_cores",
    "verdict",
];
/// The columns of the direct-message scenario's step table.
const DM_COLUMNS: &[&str] = &[
    "step",
    "rate_per_sender",
    "offered_per_sec",
    "acked_per_sec",
    "lost",
    "ack_ms_p50",
    "ack_ms_p99",
    "delivery_ms_p99",
    "generator_busy",
    "server_cpu_us_per_message",
    "redis_cores",
    "verdict",
];
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chat-bench",
    about = "Load generator for chat-cluster (loopback targets only)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// C clients in R rooms, S senders at a rate: throughput, latency, loss, isolation.
    Fanout {
        /// Comma-separated host:port of workers (or of nginx).
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 100)]
        senders: usize,
        /// `say` per second per sender.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
        /// Spread clients over this many 127.0.N.1 source addresses (0: default address).
        #[arg(long, default_value_t = 0)]
        sources: usize,
        #[arg(long, default_value = "bench-")]
        room_prefix: String,
        /// Comma-separated pids of the server processes (workers, Redis) to charge CPU to.
        #[arg(long, value_delimiter = ',')]
        server_pids: Vec<u32>,
        /// Comma-separated pids of the Redis servers among them, also reported apart.
        #[arg(long, value_delimiter = ',')]
        redis_pids: Vec<u32>,
        /// The target is the bare-websocket floor (`chat-bench floor`), not socket.io.
        #[arg(long)]
        raw: bool,
        /// All senders send at the same instants (bursts), as the generator did before
        /// 2026-11-22; by default each sender has its own phase.
        #[arg(long)]
        aligned: bool,
        /// Every member of a room connects to the same target, so no delivery crosses to
        /// another worker (the placement before 2026-11-30); by default a room's members
        /// alternate over the targets.
        #[arg(long)]
        local_rooms: bool,
        /// The server's --history-size: joins older than a member's full history are not
        /// counted lost (0: the server sends no history).
        #[arg(long, default_value_t = 50)]
        history_size: usize,
        /// Ramp: comma-separated `say`/s per sender, one step of --duration-secs each on the
        /// same connections, stopping at the first step that does not hold.
        #[arg(long, value_delimiter = ',')]
        ramp: Vec<f64>,
        /// A ramp step holds if its p99 latency is at most this and nothing is lost.
        #[arg(long, default_value_t = 50.0)]
        p99_limit_ms: f64,
    },
    /// S senders and R recipients logged in as users; each sender sends direct messages
    /// (`chat`) to the recipients in turn: acknowledged sends per second, the sender's ack
    /// latency, delivery, loss, server and Redis CPU per message.
    Dm {
        /// Comma-separated host:port of workers.
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<SocketAddr>,
        #[arg(long, default_value_t = 100)]
        senders: usize,
        #[arg(long, default_value_t = 100)]
        recipients: usize,
        /// `chat` per second per sender; several (comma-separated): a ramp, one step each on
        /// the same connections, stopping at the first step that does not hold.
        #[arg(long, value_delimiter = ',', default_value = "2")]
        rate: Vec<f64>,
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
        /// Spread connections over this many 127.0.N.1 source addresses (0: default address).
        #[arg(long, default_value_t = 0)]
        sources: usize,
        /// User ids are `<prefix>s<i>` and `<prefix>r<j>`.
        #[arg(long, default_value = "bench-")]
        user_prefix: String,
        /// Comma-separated pids of the server processes (workers, Redis) to charge CPU to.
        #[arg(long, value_delimiter = ',')]
        server_pids: Vec<u32>,
        /// Comma-separated pids of the Redis servers among them, also reported apart.
        #[arg(long, value_delimiter = ',')]
        redis_pids: Vec<u32>,
        /// A step holds if the p99 of the sender's ack is at most this, and every send was
        /// acknowledged and delivered.
        #[arg(long, default_value_t = 50.0)]
        p99_limit_ms: f64,
    },
    /// Serve the bare-websocket floor on one thread: plain websocket rooms, every frame
    /// forwarded as it is.
    Floor {
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
    },
    /// Connect and join N clients, SIGKILL one worker, time until every client of it is
    /// connected and chatting again.
    Storm {
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 64)]
        sources: usize,
        /// Rooms (0: one per 10 clients); every room has members on every target.
        #[arg(long, default_value_t = 0)]
        rooms: usize,
        /// The worker process to SIGKILL; it must listen on one of the target ports.
        #[arg(
            long,
            conflicts_with = "status_url",
            required_unless_present = "status_url"
        )]
        kill_pid: Option<i32>,
        /// The supervisor's status document (e.g. http://127.0.0.1:9100/status), from which
        /// `workers[--kill-worker]`'s pid and port are read.
        #[arg(long)]
        status_url: Option<String>,
        #[arg(long, default_value_t = 0)]
        kill_worker: usize,
        /// Longest wait for connecting, and for coming back, each (1 to 600 s).
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
        /// First connections in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Open and hold N connections; report server RSS per connection.
    Idle {
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<SocketAddr>,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Comma-separated pids of the server processes to measure.
        #[arg(long, value_delimiter = ',', required = true)]
        pids: Vec<u32>,
        #[arg(long, default_value_t = 64)]
        sources: usize,
        #[arg(long, default_value_t = 2.0)]
        hold_secs: f64,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// The target is the bare-websocket floor (`chat-bench floor`), not socket.io.
        #[arg(long)]
        raw: bool,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::Floor { listen } = cli.scenario {
        ensure_loopback(&[listen])?;
        return chat_bench::floor::run(std::net::TcpListener::bind(listen)?);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.scenario {
            Scenario::Fanout {
                target,
                clients,
                rooms,
                senders,
                rate,
                duration_secs,
                drain_secs,
                sources,
                room_prefix,
                server_pids,
                redis_pids,
                raw,
                aligned,
                local_rooms,
                history_size,
                ramp,
                p99_limit_ms,
            } => {
                ensure_loopback(&target)?;
                ensure_bounded(clients)?;
                let config = fanout::FanoutConfig {
                    targets: target,
                    clients,
                    rooms,
                    senders,
                    rate,
                    duration: bounded_seconds(duration_secs, MAX_RUN_SECS),
                    drain: bounded_seconds(drain_secs, MAX_RUN_SECS),
                    sources: if sources == 0 {
                        Vec::new()
                    } else {
                        loopback_sources(sources)
                    },
                    room_prefix,
                    server_pids,
                    redis_pids,
                    raw,
                    aligned,
                    local_rooms,
                    history_size,
                };
                anyhow::ensure!(
                    ramp.len() <= MAX_RAMP_STEPS,
                    "at most {MAX_RAMP_STEPS} ramp steps"
                );
                if ramp.is_empty() {
                    print_report(&fanout::run(config).await?);
                } else {
                    let report = fanout::ramp(fanout::RampConfig {
                        fanout: config,
                        rates: ramp,
                        p99_limit_ms,
                    })
                    .await?;
                    print_report(&report);
                    print_rows(&report.steps, RAMP_COLUMNS);
                }
            }
            Scenario::Dm {
                target,
                senders,
                recipients,
                rate,
                duration_secs,
                drain_secs,
                sources,
                user_prefix,
                server_pids,
                redis_pids,
                p99_limit_ms,
            } => {
                ensure_loopback(&target)?;
                ensure_bounded(senders.saturating_add(recipients))?;
                anyhow::ensure!(
                    rate.len() <= MAX_RAMP_STEPS,
                    "at most {MAX_RAMP_STEPS} rates"
                );
                let report = dm::run(dm::DmConfig {
                    targets: target,
                    senders,
                    recipients,
                    rates: rate,
                    duration: bounded_seconds(duration_secs, MAX_RUN_SECS),
                    drain: bounded_seconds(drain_secs, MAX_RUN_SECS),
                    sources: if sources == 0 {
                        Vec::new()
                    } else {
                        loopback_sources(sources)
                    },
                    user_prefix,
                    server_pids,
                    redis_pids,
                    run: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    p99_limit_ms,
                })
                .await?;
                print_report(&report);
                print_rows(&report.steps, DM_COLUMNS);
            }
            // Served above, on its own single-threaded runtime.
            Scenario::Floor { .. } => {}
            Scenario::Storm {
                target,
                clients,
                sources,
                rooms,
                kill_pid,
                status_url,
                kill_worker,
                timeout_secs,
                concurrency,
            } => {
                ensure_loopback(&target)?;
                ensure_bounded(clients)?;
                let victim = match (kill_pid, status_url) {
                    (Some(pid), _) => storm::Victim::Pid(pid),
                    (None, Some(url)) => storm::Victim::Status {
                        url,
                        worker: kill_worker,
                    },
                    (None, None) => anyhow::bail!("give --kill-pid or --status-url"),
                };
                let report = storm::run(storm::StormConfig {
                    targets: target,
                    clients,
                    sources: loopback_sources(sources.max(1)),
                    rooms,
                    victim,
                    timeout: bounded_seconds(timeout_secs, MAX_RUN_SECS)
                        .max(Duration::from_secs(1)),
                    concurrency,
                })
                .await?;
                print_report(&report);
            }
            Scenario::Idle {
                target,
                connections,
                pids,
                sources,
                hold_secs,
                rooms,
                raw,
                concurrency,
            } => {
                ensure_loopback(&target)?;
                ensure_bounded(connections)?;
                let report = idle::run(idle::IdleConfig {
                    targets: target,
                    connections,
                    sources: loopback_sources(sources.max(1)),
                    pids,
                    hold: bounded_seconds(hold_secs, MAX_RUN_SECS),
                    room_prefix: "idle-".into(),
                    rooms,
                    raw,
                    concurrency,
                })
                .await?;
                print_report(&report);
            }
        }
        anyhow::Ok(())
    })
}

/// Most clients or connections one chat-bench process opens (the open-file limit caps it
/// lower on most machines).
const MAX_CLIENTS: usize = 200_000;

/// Every load is bounded in count.
fn ensure_bounded(clients: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        clients <= MAX_CLIENTS,
        "at most {MAX_CLIENTS} clients per chat-bench process; run several processes for more"
    );
    Ok(())
}

/// Load goes to this machine only.
fn ensure_loopback(targets: &[SocketAddr]) -> anyhow::Result<()> {
    match targets.iter().find(|t| !t.ip().is_loopback()) {
        Some(bad) => {
            anyhow::bail!("{bad} is not a loopback address; chat-bench only loads this machine")
        }
        None => Ok(()),
    }
}
