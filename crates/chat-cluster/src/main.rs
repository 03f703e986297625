//! The `chat-cluster` binary: parses the command line and hands over to the supervisor, worker
//! or config-printing library code.

mod cli;
mod conformance;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line with the whole chain of causes (logging it too would say it twice on
            // the same stderr).
            eprintln!("chat-cluster: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by RUST_LOG (default `info`). Libraries are kept quiet unless
/// RUST_LOG names them: fred below error (Redis outages are logged by the bus), socketioxide
/// off, because it logs what clients send at error level, one line per frame (a client that
/// never reads and asks for unknown namespaces wrote 96,288 lines in 3 s); the worker counts
/// refusals instead (chat-worker's `edge::counters`).
fn init_logging() {
    const QUIET_LIBRARIES: [&str; 2] = ["fred=error", "socketioxide=off"];
    let given = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let mut directives = vec![given.clone()];
    for quiet in QUIET_LIBRARIES {
        let library = quiet.split('=').next().unwrap_or(quiet);
        if !given.contains(library) {
            directives.push(quiet.to_owned());
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fred=error,socketioxide=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
