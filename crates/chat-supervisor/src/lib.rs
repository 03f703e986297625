//! The supervisor: runs one worker process per CPU on consecutive ports, keeps them running,
//! collects their reports, shows live counts (terminal, web console, `/status`, `/metrics`),
//! and stops them gracefully on SIGTERM or SIGINT.
//!
//! Architecture invariants:
//! - The supervisor never touches client sockets; it only binds each worker's listening socket
//!   once and hands it to every incarnation of that worker.
//! - Every child is reaped (each keeper awaits its child), and the supervisor exits only after
//!   every worker has exited.
//! - It runs on one thread (a current-thread runtime): workers' parent-death signal is tied to
//!   the forking thread, which must live as long as the supervisor.

pub mod admin;
pub mod check;
pub mod config;
pub mod console;
pub mod keeper;
pub mod metrics;
pub mod nginx;
pub mod spawn;
pub mod state;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use chat_protocol::status::ConsoleEvent;
use nix::sys::signal::{Signal, kill};
use tokio::signal::unix::{SignalKind, signal};

pub use config::{LogFormat, SupervisorSettings};

use crate::{keeper::Keeper, spawn::WorkerCommand, state::ClusterState};

/// Extra time, beyond the workers' own grace period, before stragglers are killed.
const STOP_MARGIN: Duration = Duration::from_secs(2);

/// Runs the cluster until SIGTERM or SIGINT, then drains it. A second SIGINT (or SIGTERM)
/// kills the workers at once.
pub async fn run(settings: SupervisorSettings) -> anyhow::Result<()> {
    check::check(&settings)
        .map_err(|msg| anyhow::anyhow!(msg))
        .context("invalid settings")?;
    let admin_token = check::admin_token(&settings).map_err(|msg| anyhow::anyhow!(msg))?;
    // A URL naming the wrong topology is refused here, once, rather than by every worker in
    // a loop; an unreachable Redis is not (it may start after us).
    match check::probe_redis(&settings).await {
        Ok(None) => {}
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Err(mismatch) => return Err(anyhow::anyhow!(mismatch)),
    }
    raise_open_file_limit();
    let workers = settings.worker_count();

    // Bind every port first: a port in use is reported before anything starts.
    let mut listeners = Vec::with_capacity(workers as usize);
    for id in 0..workers {
        let port = settings.base_port + id as u16;
        let addr = SocketAddr::new(settings.worker.bind, port);
        let listener =
            chat_worker::listener::bind_with_backlog(addr, settings.worker.listen_backlog)
                .with_context(|| format!("cannot listen on {addr} for worker {id}"))?;
        listeners.push((id, port, listener));
    }
    let admin_addr = SocketAddr::new(settings.admin_bind, settings.admin_port);
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot listen on {admin_addr} for the admin endpoint"))?;

    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let state = Arc::new(ClusterState::new(settings.base_port, workers));
    let console = console::spawn(Arc::clone(&state), settings.console_note.clone());
    let sampler = tokio::spawn(sample_history(Arc::clone(&state)));
    if admin_token.is_none() && !settings.admin_bind.is_loopback() {
        tracing::warn!(admin = %admin_addr, "the admin port is open to the network without a token: set CHAT_ADMIN_TOKEN or --admin-token-file");
    }
    let admin = tokio::spawn({
        let settings = settings.clone();
        let routes = admin::routes(Arc::clone(&state), admin_token);
        async move { admin::serve(admin_listener, routes, &settings).await }
    });
    tracing::info!(workers, base_port = settings.base_port, admin = %admin_addr, "supervisor starting");

    let command = Arc::new(WorkerCommand::new(&settings.worker, settings.log_format)?);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut keepers = tokio::task::JoinSet::new();
    for (id, port, listener) in listeners {
        let keeper = Keeper {
            id,
            port,
            listener,
            command: Arc::clone(&command),
            state: Arc::clone(&state),
            backoff_max: settings.respawn_backoff_max(),
        };
        keepers.spawn(keeper.run(stopping.clone()));
    }

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping (again to stop at once)"),
    }
    announce_directly(&state, ConsoleEvent::Stopping);
    let _ = stop.send(true);
    signal_workers(&state, Signal::SIGTERM);

    let deadline = settings.worker.shutdown_grace() + STOP_MARGIN;
    let drained = tokio::select! {
        () = async { while keepers.join_next().await.is_some() {} } => true,
        () = tokio::time::sleep(deadline) => {
            tracing::warn!("workers still running after the grace period; killing them");
            false
        }
        _ = terminate.recv() => false,
        _ = interrupt.recv() => false,
    };
    if !drained {
        signal_workers(&state, Signal::SIGKILL);
        // Killed workers exit at once; their keepers reap them here.
        while keepers.join_next().await.is_some() {}
    }
    admin.abort();
    sampler.abort();
    console.abort();
    announce_directly(&state, ConsoleEvent::Stopped);
    tracing::info!("supervisor stopped");
    Ok(())
}

/// Takes a history sample of every worker every second, for the console's charts.
async fn sample_history(state: Arc<ClusterState>) {
    let mut tick = tokio::time::interval(state::SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        state.sample(now - last);
        last = now;
    }
}

/// Prints a final lifecycle line without going through the console task, which is about to stop.
fn announce_directly(state: &ClusterState, event: ConsoleEvent) {
    if !console::stdout_is_terminal() {
        console::print_json(&event);
    }
    state.announce(event);
}

fn signal_workers(state: &ClusterState, signal: Signal) {
    for pid in state.pids() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        // ESRCH means it exited already, which is what we want.
        if let Err(err) = kill(pid, signal)
            && err != nix::errno::Errno::ESRCH
        {
            tracing::warn!(%pid, %signal, cause = %err, "cannot signal worker");
        }
    }
}

/// Workers inherit this limit; each connection is a descriptor.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(cause = %err, "cannot raise the open file limit");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(cause = %err, "cannot read the open file limit"),
    }
}
