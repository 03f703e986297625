//! The `chat-cluster` binary: parses the command line, sets up logging, and hands over to the
//! supervisor, worker or config-printing library code.

mod cli;
mod conformance;
mod logging;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let log_format = cli.log_format();
    logging::init(log_format, cli.log_identity());
    match cli::run(cli, &matches) {
        Ok(code) => code,
        Err(err) => {
            // One line with the whole chain of causes: plain text, or a JSON line when stderr
            // carries JSON lines only (logging it as well would say it twice).
            if log_format == chat_supervisor::LogFormat::Text {
                eprintln!("chat-cluster: {err:#}");
            } else {
                tracing::error!("{err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
