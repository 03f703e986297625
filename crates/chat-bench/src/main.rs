//! The `chat-bench` binary: parses a scenario's flags and runs it.

use std::{net::SocketAddr, time::Duration};

use chat_bench::{fanout, idle, loopback_sources, print_report, storm};
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
        /// The target is the bare-websocket floor (`chat-bench floor`), not socket.io.
        #[arg(long)]
        raw: bool,
    },
    /// Serve the bare-websocket floor: plain websocket rooms, every frame forwarded as it is.
    Floor {
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
        /// Runtime threads; 1 (the default) runs on one thread, like a product worker.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Open and hold N connections; report server RSS per connection.
    /// Connect and join N clients, SIGKILL one worker, time until every client is back.
    Storm {
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 64)]
        sources: usize,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// The worker process to SIGKILL (its pid in the supervisor's /status).
        #[arg(long)]
        kill_pid: i32,
        /// Longest wait for connecting, and for coming back, each.
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
    },
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
    if let Scenario::Floor { listen, threads } = cli.scenario {
        ensure_loopback(&[listen])?;
        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
        };
        return runtime.block_on(chat_bench::floor::serve(listen));
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
                raw,
            } => {
                ensure_loopback(&target)?;
                let report = fanout::run(fanout::FanoutConfig {
                    targets: target,
                    clients,
                    rooms,
                    senders,
                    rate,
                    duration: Duration::from_secs_f64(duration_secs),
                    drain: Duration::from_secs_f64(drain_secs),
                    sources: if sources == 0 {
                        Vec::new()
                    } else {
                        loopback_sources(sources)
                    },
                    room_prefix,
                    server_pids,
                    raw,
                })
                .await?;
                print_report(&report);
            }
            // Served above, on its own multi-thread runtime.
            Scenario::Floor { .. } => {}
            Scenario::Storm {
                target,
                clients,
                sources,
                rooms,
                kill_pid,
                timeout_secs,
            } => {
                ensure_loopback(&target)?;
                let report = storm::run(storm::StormConfig {
                    targets: target,
                    clients,
                    sources: loopback_sources(sources.max(1)),
                    rooms,
                    kill_pid,
                    timeout: Duration::from_secs_f64(timeout_secs.clamp(1.0, 600.0)),
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
                let report = idle::run(idle::IdleConfig {
                    targets: target,
                    connections,
                    sources: loopback_sources(sources.max(1)),
                    pids,
                    hold: Duration::from_secs_f64(hold_secs),
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

/// Load goes to this machine only.
fn ensure_loopback(targets: &[SocketAddr]) -> anyhow::Result<()> {
    match targets.iter().find(|t| !t.ip().is_loopback()) {
        Some(bad) => {
            anyhow::bail!("{bad} is not a loopback address; chat-bench only loads this machine")
        }
        None => Ok(()),
    }
}
