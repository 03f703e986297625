//! Test support for process-level tests: a real redis-server on a free port, the real
//! `chat-cluster` binary, kill-on-drop guards, and small HTTP and Redis probes.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub const WAIT: Duration = Duration::from_secs(10);

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Consecutive free ports (the supervisor wants base, base+1, ...). Tries random bases.
pub fn free_port_range(count: u16) -> u16 {
    for _ in 0..100 {
        let base = free_port();
        if base.checked_add(count).is_none() {
            continue;
        }
        let all_free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chat-cluster"))
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub struct Redis {
    pub port: u16,
    guard: Option<ChildGuard>,
    /// More redis-server arguments (e.g. `--cluster-enabled yes`).
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A redis-server with more arguments, in a temp dir of its own (a cluster node writes
    /// its nodes.conf there).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chat-redis-{port}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut redis = Self {
            port,
            guard: None,
            extra: ["--dir", &dir.display().to_string()]
                .into_iter()
                .chain(extra.iter().copied())
                .map(str::to_owned)
                .collect(),
        };
        redis.restart();
        redis
    }

    /// The running server's pid, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.guard.as_ref().map(ChildGuard::pid)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `bash scripts/install-deps.sh`");
        self.guard = Some(ChildGuard {
            child,
            name: "redis-server".into(),
        });
        let port = self.port;
        wait_until("redis to answer PING", WAIT, || {
            redis_command(port, &["PING"]).is_ok_and(|r| r.contains("PONG"))
        });
    }

    pub fn stop(&mut self) {
        self.guard = None;
    }

    /// The channels with at least one subscriber, classic or sharded (PUBSUB CHANNELS * and
    /// PUBSUB SHARDCHANNELS *): rooms and users are sharded channels, backend channels classic.
    pub fn channels(&self) -> Vec<String> {
        ["CHANNELS", "SHARDCHANNELS"]
            .iter()
            .flat_map(|kind| {
                let reply = redis_command(self.port, &["PUBSUB", kind, "*"]).unwrap_or_default();
                // Bulk strings: "$<len>\r\n<name>\r\n"; take every line after a "$" line.
                let lines: Vec<String> = reply.split("\r\n").map(str::to_owned).collect();
                lines
                    .windows(2)
                    .filter(|pair| pair[0].starts_with('$'))
                    .map(|pair| pair[1].clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many clients subscribe to `channel`, classic or sharded (PUBSUB NUMSUB and
    /// PUBSUB SHARDNUMSUB).
    pub fn subscribers(&self, channel: &str) -> usize {
        ["NUMSUB", "SHARDNUMSUB"]
            .iter()
            .map(|kind| {
                let reply =
                    redis_command(self.port, &["PUBSUB", kind, channel]).unwrap_or_default();
                // "*2\r\n$<len>\r\n<channel>\r\n:<count>\r\n": the count is the integer line.
                reply
                    .split("\r\n")
                    .find_map(|line| line.strip_prefix(':')?.parse::<usize>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Sends one command in RESP and returns the raw reply.
pub fn redis_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut buf = vec![0u8; 65536];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// GET `path` on 127.0.0.1:`port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A standalone worker process (`chat-cluster worker`).
pub fn start_worker(port: u16, redis_url: &str, extra: &[&str]) -> ChildGuard {
    let child = Command::new(binary())
        .args([
            "worker",
            "--port",
            &port.to_string(),
            "--redis-url",
            redis_url,
        ])
        .args(extra)
        .env_remove("CHAT_WORKER_SETTINGS")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start worker");
    let guard = ChildGuard {
        child,
        name: format!("worker:{port}"),
    };
    wait_until("the worker to answer /monitor", WAIT, || {
        http_get(port, "/monitor").is_ok_and(|(status, body)| status == 200 && body == "OK")
    });
    guard
}

/// A supervisor process whose stdout JSON lines arrive on `lines`.
pub struct Supervisor {
    pub guard: ChildGuard,
    pub lines: mpsc::Receiver<serde_json::Value>,
    pub admin_port: u16,
    pub base_port: u16,
}

impl Supervisor {
    pub fn start(workers: u16, redis_url: &str) -> Self {
        Self::start_with(workers, redis_url, &[])
    }

    /// As `start`, with `extra` flags for the supervisor (and so its workers).
    pub fn start_with(workers: u16, redis_url: &str, extra: &[&str]) -> Self {
        let base_port = free_port_range(workers);
        let admin_port = free_port();
        let mut child = Command::new(binary())
            .args(["supervise", "--workers", &workers.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .args(["--redis-url", redis_url, "--shutdown-grace-ms", "2000"])
            .args(extra)
            .env_remove("CHAT_WORKER_SETTINGS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start supervisor");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|err| {
                    panic!("supervisor printed a non-JSON line {line:?}: {err}")
                });
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self {
            guard: ChildGuard {
                child,
                name: "supervisor".into(),
            },
            lines,
            admin_port,
            base_port,
        }
    }

    /// The next console line that satisfies `wanted` (others are skipped).
    pub fn wait_line(
        &self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!("timed out waiting for the supervisor to print {what}"),
            }
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let (status, body) = http_get(self.admin_port, "/status").expect("GET /status");
        assert_eq!(status, 200, "/status answered {status}: {body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }
}

pub fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie would still count, which the tests also want to catch.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Redis Cluster and Sentinel fixtures (`topologies.rs`).
pub mod topologies;
