//! The command line: `supervise`, `worker`, `nginx-config`, `check-config`, `conformance`.

use std::{net::SocketAddr, os::fd::FromRawFd, path::PathBuf, process::ExitCode};

use anyhow::Context;
use chat_supervisor::{
    LogFormat, SupervisorSettings,
    nginx::{self, NginxOptions},
};
use chat_worker::{BusKind, WorkerSettings, listener, report::Reporter};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "chat-cluster",
    version,
    about = "A horizontally scaled socket.io chat cluster"
)]
pub struct Cli {
    /// Log lines on stderr: `text`, or `json` (one object per line with timestamp, level,
    /// worker, message and fields). The supervisor starts its workers with the same.
    #[arg(
        long,
        global = true,
        env = "CHAT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

impl Cli {
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// Who writes this process's log lines: `supervisor`, a worker's id, or the subcommand.
    pub fn log_identity(&self) -> String {
        match &self.command {
            Command::Supervise(_) => "supervisor".to_owned(),
            Command::Worker(args) => args.worker_id.to_string(),
            Command::NginxConfig(_) => "nginx-config".to_owned(),
            Command::CheckConfig(_) => "check-config".to_owned(),
            Command::Conformance(_) => "conformance".to_owned(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one worker process per CPU on consecutive ports and keep them running.
    Supervise(SupervisorSettings),
    /// Run one worker (the supervisor starts these; also runnable alone).
    Worker(WorkerArgs),
    /// Print an nginx config for an ip_hash upstream over the workers.
    NginxConfig(NginxArgs),
    /// Check the settings `supervise` would run with (flags, environment, files, URLs, ports)
    /// and print them, secrets redacted; exit 2 with one line on the first error.
    CheckConfig(SupervisorSettings),
    /// Serve the fixture of the socket.io and engine.io protocol test suites.
    Conformance(ConformanceArgs),
}

#[derive(Debug, clap::Args)]
struct ConformanceArgs {
    /// Port to listen on (the suites expect 3000).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
}

#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// Port to listen on (ignored with --listen-fd).
    #[arg(long, env = "CHAT_PORT", default_value_t = 6001)]
    port: u16,
    /// This worker's number, for logs.
    #[arg(long, default_value_t = 0)]
    worker_id: u32,
    /// Inherited listening socket (set by the supervisor).
    #[arg(long, hide = true)]
    listen_fd: Option<i32>,
    /// Inherited report pipe (set by the supervisor).
    #[arg(long, hide = true)]
    report_fd: Option<i32>,
    #[command(flatten)]
    settings: WorkerSettings,
}

#[derive(Debug, clap::Args)]
struct NginxArgs {
    /// Comma-separated `host:port` of every worker.
    #[arg(long, value_delimiter = ',', conflicts_with = "hosts")]
    upstream: Vec<String>,
    /// Comma-separated hosts, each running --workers workers from --base-port.
    #[arg(long, value_delimiter = ',', requires = "workers")]
    hosts: Vec<String>,
    /// Workers per host (with --hosts).
    #[arg(long)]
    workers: Option<u32>,
    /// First worker port on each host (with --hosts).
    #[arg(long, default_value_t = 6001)]
    base_port: u16,
    /// Where nginx listens.
    #[arg(long, default_value = "80")]
    listen: String,
    /// Print a complete nginx.conf keeping pid, logs and temp files here; without it, print
    /// only the blocks to include in an existing nginx's http { }.
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// The workers' engine.io ping interval + timeout, in seconds (proxy timeouts exceed it).
    #[arg(long, default_value_t = 45)]
    ping_cycle_secs: u64,
}

/// `matches`: what clap parsed `cli` from (check-config reports where each value came from).
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    let log_format = cli.log_format;
    match cli.command {
        Command::Supervise(mut settings) => {
            settings.log_format = log_format;
            current_thread_runtime()?.block_on(chat_supervisor::run(settings))?;
        }
        Command::Worker(args) => run_worker(args)?,
        Command::NginxConfig(args) => print!("{}", nginx::render(&nginx_options(args)?)),
        Command::CheckConfig(settings) => return Ok(check_config(&settings, matches)),
        Command::Conformance(args) => current_thread_runtime()?.block_on(async move {
            let stop = stop_signal()?;
            crate::conformance::serve(SocketAddr::new(args.bind, args.port), stop).await
        })?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `check-config` for settings that would not start (as for a usage error).
const INVALID_SETTINGS: u8 = 2;

fn check_config(settings: &SupervisorSettings, matches: &clap::ArgMatches) -> ExitCode {
    if let Err(error) = chat_supervisor::check::check(settings) {
        eprintln!("chat-cluster check-config: {error}");
        return ExitCode::from(INVALID_SETTINGS);
    }
    let probed = current_thread_runtime()
        .map_err(|err| err.to_string())
        .and_then(|runtime| runtime.block_on(chat_supervisor::check::probe_redis(settings)));
    match probed {
        Ok(None) => {}
        Ok(Some(warning)) => eprintln!("chat-cluster check-config: warning: {warning}"),
        Err(error) => {
            eprintln!("chat-cluster check-config: {error}");
            return ExitCode::from(INVALID_SETTINGS);
        }
    }
    let mut command = <Cli as clap::CommandFactory>::command();
    // Built, so that global flags (--log-format) are listed under the subcommand too.
    command.build();
    let (Some(sub_command), Some(sub_matches)) = (
        command.find_subcommand("check-config"),
        matches.subcommand_matches("check-config"),
    ) else {
        // Only reached through the check-config subcommand, which both name.
        return ExitCode::FAILURE;
    };
    println!("# chat-cluster check-config: the settings are valid; effective values:");
    for line in chat_supervisor::check::effective_settings(sub_command, sub_matches, settings) {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// Workers and the supervisor each run on one thread: one worker per CPU is the unit of
/// parallelism, and a single thread keeps each sender's events in order (see chat-worker's node).
fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let settings = match WorkerSettings::from_env_json().map_err(|msg| anyhow::anyhow!(msg))? {
        Some(from_supervisor) => from_supervisor,
        None => args.settings,
    };
    settings
        .validate()
        .map_err(|msg| anyhow::anyhow!(msg))
        .context("invalid settings")?;
    chat_supervisor::raise_open_file_limit();
    let runtime = current_thread_runtime()?;
    let span = tracing::info_span!("worker", id = args.worker_id, port = args.port);
    // The worker runs on this one thread, so entering the span here puts every log line of the
    // process, spawned tasks included, under `worker{id, port}`.
    span.in_scope(|| {
        runtime.block_on(async move {
            let listener = match args.listen_fd {
                // SAFETY: the supervisor put a listening socket at this descriptor for this
                // process alone (see chat-supervisor's spawn); nothing else here owns it.
                Some(fd) => unsafe { listener::inherited(fd) }
                    .context("the inherited listening socket is unusable")?,
                None => {
                    let addr = SocketAddr::new(settings.bind, args.port);
                    listener::bind(addr, settings.listen_backlog)
                        .with_context(|| format!("cannot listen on {addr}"))?
                }
            };
            let reporter = match args.report_fd {
                // SAFETY: as above, the report pipe's write end was placed here for this process.
                Some(fd) => Reporter::from_fd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
                    .context("the report pipe is unusable")?,
                None => Reporter::disabled(),
            };
            chat_worker::run(listener, settings, BusKind::Redis, reporter, stop_signal()?).await
        })
    })
}

/// Resolves on the first SIGTERM or SIGINT.
fn stop_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = interrupt.recv() => tracing::info!("SIGINT"),
        }
    })
}

fn nginx_options(args: NginxArgs) -> anyhow::Result<NginxOptions> {
    let upstreams = if !args.upstream.is_empty() {
        args.upstream
    } else if let Some(workers) = args.workers {
        NginxOptions::upstreams_for(&args.hosts, workers, args.base_port)
    } else {
        anyhow::bail!("give --upstream host:port,... or --hosts h1,h2 --workers N");
    };
    if upstreams.is_empty() {
        anyhow::bail!("the upstream list is empty");
    }
    Ok(NginxOptions {
        upstreams,
        listen: args.listen,
        runtime_dir: args.runtime_dir,
        ping_cycle_secs: args.ping_cycle_secs,
    })
}
