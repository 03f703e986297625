//! The supervisor's settings. Worker settings are flattened in, so every worker flag can be
//! given to `supervise` too; each flag also reads a `CHAT_*` environment variable.
//! Precedence: flag > environment > default.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use chat_worker::WorkerSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct SupervisorSettings {
    /// Worker processes to run (default: the number of CPUs).
    #[arg(long, env = "CHAT_WORKERS")]
    pub workers: Option<u32>,

    /// Port of the first worker; worker i listens on base-port + i.
    #[arg(long, env = "CHAT_BASE_PORT", default_value_t = 6001)]
    pub base_port: u16,

    /// Port of the supervisor's HTTP status endpoint (`GET /status`).
    #[arg(long, env = "CHAT_ADMIN_PORT", default_value_t = 9100)]
    pub admin_port: u16,

    /// Address of the admin endpoint (console, `/status`, `/metrics`). Keep it private, or set
    /// an admin token: it lists process ids and counts.
    #[arg(long, env = "CHAT_ADMIN_BIND", default_value = "127.0.0.1")]
    pub admin_bind: IpAddr,

    /// File holding the admin token that the console, `/status` and `/metrics` require (else
    /// `CHAT_ADMIN_TOKEN`; with neither, the admin port is open to whoever reaches it).
    #[arg(long, env = "CHAT_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Connections the admin port serves at once; more wait in the kernel's queue, so that no
    /// client can take the descriptors the supervisor needs to respawn workers.
    #[arg(long, env = "CHAT_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub admin_max_connections: usize,

    /// Longest wait before respawning a worker that keeps crashing, in milliseconds.
    #[arg(long, env = "CHAT_RESPAWN_BACKOFF_MAX_MS", default_value_t = 10_000)]
    pub respawn_backoff_max_ms: u64,

    /// A line shown above the live table on a terminal (e.g. the URL users open).
    #[arg(long, env = "CHAT_CONSOLE_NOTE", default_value = "")]
    pub console_note: String,

    #[command(flatten)]
    pub worker: WorkerSettings,

    /// How the supervisor and its workers write logs (a global flag of the command line, set
    /// here by the binary so that workers are started with the same).
    #[arg(skip)]
    pub log_format: LogFormat,
}

/// The format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `worker`, `message`, `fields`.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl SupervisorSettings {
    pub fn worker_count(&self) -> u32 {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
    }

    pub fn respawn_backoff_max(&self) -> Duration {
        Duration::from_millis(self.respawn_backoff_max_ms)
    }

    pub fn validate(&self) -> Result<(), String> {
        let count = self.worker_count();
        if count == 0 {
            return Err("--workers must be at least 1".into());
        }
        if self.base_port == 0 || self.admin_port == 0 {
            return Err("--base-port and --admin-port must be ports from 1 to 65535".into());
        }
        if self.admin_max_connections == 0 {
            return Err("--admin-max-connections must be greater than 0".into());
        }
        if u32::from(self.base_port) + count - 1 > u32::from(u16::MAX) {
            return Err(format!(
                "{count} workers from port {} run past port 65535",
                self.base_port
            ));
        }
        let worker_ports = u32::from(self.base_port)..u32::from(self.base_port) + count;
        if worker_ports.contains(&u32::from(self.admin_port)) {
            return Err(format!(
                "--admin-port {} is one of the worker ports",
                self.admin_port
            ));
        }
        self.worker.validate()
    }
}
