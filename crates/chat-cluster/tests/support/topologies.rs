//! Redis topologies for process-level tests, from Debian's redis-server on free loopback ports:
//! a Redis Cluster (3 masters + 3 replicas by default, made by `redis-cli --cluster create`) and
//! a Sentinel setup (1 master + 1 replica + 3 sentinels, `redis-server sentinel.conf
//! --sentinel`). Every process sits in a [`ChildGuard`] (SIGKILL on drop); the temp directory
//! goes with the fixture. The JavaScript twin is `tests/support/redis-topologies.mjs`.
//!
//! Roles are always read back from Redis (CLUSTER NODES, SENTINEL get-master-addr-by-name,
//! ROLE): `redis-cli --cluster create` may make any port a master, and a failover changes them.
//!
//! Making a replica lag: `DEBUG SLEEP` alone is not enough on loopback, because the master has
//! already handed the replication stream to the kernel and the sleeping replica reads it from
//! its socket when it wakes. So `lag_replica` puts the replica to sleep and then writes a filler
//! value (32 MiB, more than the socket buffers on both sides hold) on its master: every write
//! after it waits in the master's own output buffer, and is lost if the master dies before the
//! replica wakes. That is the asynchronous-replication window a `WAIT` closes.

use std::{
    collections::HashMap,
    io::{Read, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{ChildGuard, free_port, wait_until};

const LAG_FILLER_BYTES: usize = 32 * 1024 * 1024;
const SETUP_WAIT: Duration = Duration::from_secs(20);
/// Settings every node shares: no persistence, DEBUG allowed from loopback, no delay before a
/// replica's full sync.
const COMMON: &[&str] = &[
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--enable-debug-command",
    "local",
    "--repl-diskless-sync-delay",
    "0",
];

/// `redis-cli -p <port> <args...>` against 127.0.0.1, with `input` on its stdin (commands, one a
/// line, run on one connection). Returns the output trimmed (arrays: one element a line), or why
/// not: an error reply, an unreachable server, or no answer within `timeout`.
pub fn redis_cli_with(
    port: u16,
    args: &[&str],
    input: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            format!("redis-cli is not installed (run `bash scripts/install-deps.sh`): {err}")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.unwrap_or("").as_bytes())
            .map_err(|err| err.to_string())?;
    }
    // Read stdout on a thread: a large reply must not block redis-cli while we poll for its exit.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(|err| err.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-cli -p {port} {}: no answer within {timeout:?}",
                    args.join(" ")
                ));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let out = reader.join().unwrap_or_default().trim().to_owned();
    let error_reply = [
        "ERR",
        "WRONGTYPE",
        "MOVED",
        "ASK",
        "CLUSTERDOWN",
        "CROSSSLOT",
        "NOAUTH",
        "LOADING",
        "BUSY",
        "READONLY",
        "MASTERDOWN",
        "NOREPLICAS",
        "TRYAGAIN",
        "Could not connect",
    ]
    .iter()
    .any(|prefix| out.starts_with(prefix));
    if !status.success() || error_reply {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        return Err(format!(
            "redis-cli -p {port} {}: {} {}",
            args.join(" "),
            out,
            err.trim()
        ));
    }
    Ok(out)
}

/// `redis-cli -p <port> <args...>` with a 5 s limit.
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    redis_cli_with(port, args, None, Duration::from_secs(5))
}

/// `count` distinct free loopback ports.
fn free_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts one redis-server (or sentinel) and waits until it answers PING.
fn start_server(name: String, port: u16, args: &[String]) -> ChildGuard {
    let child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: run `bash scripts/install-deps.sh`");
    let mut guard = ChildGuard { child, name };
    wait_until(
        &format!("{} to answer PING", guard.name),
        SETUP_WAIT,
        || {
            if let Ok(Some(status)) = guard.child.try_wait() {
                panic!("{} exited while starting: {status}", guard.name);
            }
            redis_cli_with(port, &["PING"], None, Duration::from_secs(1)).is_ok_and(|r| r == "PONG")
        },
    );
    guard
}

/// A write acknowledged by the master while the replica sleeps; `wait_awake` joins the sleep.
pub struct Lag {
    sleeper: Option<JoinHandle<Result<String, String>>>,
}

impl Lag {
    /// Blocks until the replica answers again.
    pub fn wait_awake(mut self) {
        if let Some(sleeper) = self.sleeper.take() {
            let _ = sleeper.join();
        }
    }
}

/// Puts the replica on `replica_port` to sleep for `ms` (DEBUG SLEEP), confirms it sleeps, then
/// writes the filler under `filler_key` on `master_port`: from then until it wakes, writes on
/// the master live in the master's memory only.
fn lag_replica(replica_port: u16, master_port: u16, ms: u64, filler_key: &str) -> Lag {
    let seconds = format!("{}", ms as f64 / 1000.0);
    let sleeper = std::thread::spawn(move || {
        redis_cli_with(
            replica_port,
            &["DEBUG", "SLEEP", &seconds],
            None,
            Duration::from_millis(ms + 10_000),
        )
    });
    wait_until(
        &format!("the replica on {replica_port} to be asleep"),
        SETUP_WAIT,
        || {
            redis_cli_with(replica_port, &["PING"], None, Duration::from_millis(150))
                .is_err_and(|err| err.contains("no answer"))
        },
    );
    let script = "return redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1])))";
    redis_cli(
        master_port,
        &[
            "EVAL",
            script,
            "1",
            filler_key,
            &LAG_FILLER_BYTES.to_string(),
        ],
    )
    .expect("write the lag filler");
    Lag {
        sleeper: Some(sleeper),
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Flagged `fail` or `fail?` by the node asked.
    pub failed: bool,
    /// Slot ranges, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum()
    }
}

/// Parses CLUSTER NODES (`<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link>
/// <slot>...`); slots being migrated (`[...]`) are skipped.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields[2].split(',').collect();
            let port = fields[1]
                .split('@')
                .next()
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|port| port.parse().ok())
                .unwrap_or(0);
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            ClusterNode {
                id: fields[0].to_owned(),
                port,
                master: flags.contains(&"master"),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                failed: flags.contains(&"fail") || flags.contains(&"fail?"),
                slots,
            }
        })
        .collect()
}

/// A Redis Cluster on free loopback ports: `cluster-node-timeout` 1 s,
/// `cluster-replica-validity-factor 0` (a replica that lagged may still take over).
pub struct RedisCluster {
    /// Every node's port, in the order given to `redis-cli --cluster create`.
    pub ports: Vec<u16>,
    bus_ports: Vec<u16>,
    node_timeout_ms: u64,
    nodes: HashMap<u16, ChildGuard>,
    /// The slots each killed master served, for `wait_for_promotion`.
    killed_slots: HashMap<u16, Vec<(u16, u16)>>,
    dir: TempDir,
}

impl RedisCluster {
    /// 3 masters, 1 replica each.
    pub fn start() -> Self {
        Self::start_with(3, 1, 1000)
    }

    /// `masters` masters with `replicas_per_master` replicas each; returns once every node sees
    /// `cluster_state:ok` and knows every other node.
    pub fn start_with(masters: usize, replicas_per_master: usize, node_timeout_ms: u64) -> Self {
        let count = masters * (1 + replicas_per_master);
        let mut all = free_ports(count * 2);
        let bus_ports = all.split_off(count);
        let mut cluster = Self {
            ports: all,
            bus_ports,
            node_timeout_ms,
            nodes: HashMap::new(),
            killed_slots: HashMap::new(),
            dir: TempDir::new("chat-redis-cluster"),
        };
        for port in cluster.ports.clone() {
            cluster.start_node(port);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is not installed: run `bash scripts/install-deps.sh`");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.until_healthy("every node of the new cluster to see cluster_state:ok");
        wait_until("every node to know every node", SETUP_WAIT, || {
            cluster.ports.iter().all(|&port| {
                redis_cli(port, &["CLUSTER", "NODES"]).is_ok_and(|text| {
                    let nodes = parse_cluster_nodes(&text);
                    nodes.len() == count && nodes.iter().all(|n| !n.failed)
                })
            })
        });
        cluster
    }

    fn start_node(&mut self, port: u16) {
        let index = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node port");
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &self.bus_ports[index].to_string(),
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            &self.node_timeout_ms.to_string(),
            "--cluster-replica-validity-factor",
            "0",
            "--dir",
            &self.dir.0.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(COMMON.iter().map(|s| s.to_string()));
        let guard = start_server(format!("redis-cluster:{port}"), port, &args);
        self.nodes.insert(port, guard);
    }

    fn alive(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|port| self.nodes.contains_key(port))
            .collect()
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&...`, every node.
    pub fn url(&self) -> String {
        let others: Vec<String> = self.ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            self.ports[0],
            others.join("&")
        )
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        redis_cli(port, args)
    }

    /// CLUSTER NODES as the first live node sees it.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let port = self.alive()[0];
        parse_cluster_nodes(&redis_cli(port, &["CLUSTER", "NODES"]).expect("CLUSTER NODES"))
    }

    /// Masters not flagged failed.
    pub fn masters(&self) -> Vec<ClusterNode> {
        self.nodes()
            .into_iter()
            .filter(|n| n.master && !n.failed)
            .collect()
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        redis_cli(self.alive()[0], &["CLUSTER", "KEYSLOT", key])
            .ok()
            .and_then(|slot| slot.parse().ok())
            .expect("CLUSTER KEYSLOT")
    }

    /// The live master serving `key` now.
    pub fn master_of_key(&self, key: &str) -> ClusterNode {
        let slot = self.slot_of(key);
        self.masters()
            .into_iter()
            .find(|n| n.serves(slot))
            .unwrap_or_else(|| panic!("no live master serves slot {slot}"))
    }

    /// A live replica of the master on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> Option<ClusterNode> {
        let nodes = self.nodes();
        let master = nodes.iter().find(|n| n.port == master_port)?;
        nodes
            .iter()
            .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.failed)
            .cloned()
    }

    /// Waits until every live node answers `cluster_state:ok` and live masters cover every slot.
    pub fn until_healthy(&self, what: &str) {
        wait_until(what, SETUP_WAIT, || {
            let ok = self.alive().iter().all(|&port| {
                redis_cli(port, &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            ok && self
                .masters()
                .iter()
                .map(ClusterNode::slot_count)
                .sum::<usize>()
                == 16384
        });
    }

    /// SIGKILLs one node (reaped before this returns); a master's slots are remembered.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self
            .nodes()
            .into_iter()
            .find(|n| n.port == port && n.master)
        {
            self.killed_slots.insert(port, node.slots);
        }
        // Dropping the guard kills and reaps.
        self.nodes.remove(&port);
    }

    /// Starts a killed node again (its cluster config kept) and waits until the others see it.
    pub fn restart(&mut self, port: u16) {
        self.start_node(port);
        wait_until(&format!("{port} to rejoin the cluster"), SETUP_WAIT, || {
            self.nodes().iter().any(|n| n.port == port && !n.failed)
        });
    }

    /// Waits until a live master serves the slots the killed master on `old_master_port` served
    /// and the cluster is healthy again; returns that master.
    pub fn wait_for_promotion(&self, old_master_port: u16) -> ClusterNode {
        let first_slot = self
            .killed_slots
            .get(&old_master_port)
            .and_then(|slots| slots.first())
            .map(|&(a, _)| a)
            .unwrap_or_else(|| panic!("{old_master_port} was not a master when it was killed"));
        let mut promoted = None;
        wait_until(
            &format!("a replica of {old_master_port} to take over its slots"),
            SETUP_WAIT,
            || {
                promoted = self
                    .masters()
                    .into_iter()
                    .find(|n| n.port != old_master_port && n.serves(first_slot));
                promoted.is_some()
            },
        );
        self.until_healthy("every live node to see cluster_state:ok after the promotion");
        promoted.expect("found above")
    }

    /// Makes the replica on `replica_port` lag for `ms` (see the module doc).
    pub fn lag_replica(&self, replica_port: u16, ms: u64) -> Lag {
        let nodes = self.nodes();
        let master = nodes
            .iter()
            .find(|n| n.port == replica_port)
            .and_then(|replica| replica.master_id.clone())
            .and_then(|id| nodes.iter().find(|n| n.id == id))
            .unwrap_or_else(|| panic!("{replica_port} is not a replica of a known master"));
        // A filler key in that master's own slots: hash tags until one lands there.
        let filler_key = (0..)
            .map(|i| format!("{{lag-filler-{i}}}"))
            .find(|key| master.serves(self.slot_of(key)))
            .expect("some key lands on every master");
        lag_replica(replica_port, master.port, ms, &filler_key)
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel

/// A master, one replica and 3 sentinels monitoring it as `chat` (quorum 2,
/// `down-after-milliseconds` 1000, `failover-timeout` 3000). Each sentinel runs from its own
/// writable copy of a sentinel.conf.
pub struct RedisSentinel {
    pub service_name: String,
    /// Master and replica, as started (roles change with failovers: ask `master_port`).
    pub data_ports: [u16; 2],
    pub sentinel_ports: Vec<u16>,
    processes: HashMap<u16, ChildGuard>,
    dir: TempDir,
}

impl RedisSentinel {
    pub fn start() -> Self {
        let ports = free_ports(5);
        let mut setup = Self {
            service_name: "chat".into(),
            data_ports: [ports[0], ports[1]],
            sentinel_ports: ports[2..].to_vec(),
            processes: HashMap::new(),
            dir: TempDir::new("chat-redis-sentinel"),
        };
        let [master, replica] = setup.data_ports;
        setup.start_data(master, None);
        setup.start_data(replica, Some(master));
        wait_until("the replica to be in sync", SETUP_WAIT, || {
            redis_cli(replica, &["INFO", "replication"])
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        let quorum = setup.sentinel_ports.len() / 2 + 1;
        for port in setup.sentinel_ports.clone() {
            let conf = setup.dir.0.join(format!("sentinel-{port}.conf"));
            let name = &setup.service_name;
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {master} {quorum}\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 3000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = setup.dir.0.display()
                ),
            )
            .expect("write a sentinel.conf");
            let args = vec![conf.display().to_string(), "--sentinel".into()];
            let guard = start_server(format!("redis-sentinel:{port}"), port, &args);
            setup.processes.insert(port, guard);
        }
        let others = (setup.sentinel_ports.len() - 1).to_string();
        wait_until(
            "every sentinel to know the replica and the other sentinels",
            SETUP_WAIT,
            || {
                setup.sentinel_ports.iter().all(|&port| {
                    setup.master_field(port, "num-slaves").as_deref() == Some("1")
                        && setup.master_field(port, "num-other-sentinels").as_deref()
                            == Some(others.as_str())
                })
            },
        );
        setup
    }

    fn start_data(&mut self, port: u16, replica_of: Option<u16>) {
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--dir".into(),
            self.dir.0.display().to_string(),
            "--dbfilename".into(),
            format!("dump-{port}.rdb"),
        ];
        args.extend(COMMON.iter().map(|s| s.to_string()));
        if let Some(master) = replica_of {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
        }
        let guard = start_server(format!("redis-data:{port}"), port, &args);
        self.processes.insert(port, guard);
    }

    /// One field of SENTINEL MASTER (field/value lines).
    fn master_field(&self, sentinel: u16, field: &str) -> Option<String> {
        let text = redis_cli(sentinel, &["SENTINEL", "MASTER", &self.service_name]).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().position(|line| *line == field)?;
        lines.get(at + 1).map(|value| value.to_string())
    }

    fn live_sentinels(&self) -> Vec<u16> {
        self.sentinel_ports
            .iter()
            .copied()
            .filter(|port| self.processes.contains_key(port))
            .collect()
    }

    /// `redis-sentinel://127.0.0.1:S1/0?sentinelServiceName=chat&node=127.0.0.1:S2&...`.
    pub fn url(&self) -> String {
        let others: Vec<String> = self.sentinel_ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={}&{}",
            self.sentinel_ports[0],
            self.service_name,
            others.join("&")
        )
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        redis_cli(port, args)
    }

    fn master_named_by(&self, sentinel: u16) -> Option<u16> {
        let text = redis_cli(
            sentinel,
            &["SENTINEL", "get-master-addr-by-name", &self.service_name],
        )
        .ok()?;
        text.lines().nth(1)?.parse().ok()
    }

    /// The master's port as the (first live) sentinel names it now.
    pub fn master_port(&self) -> u16 {
        self.master_named_by(self.live_sentinels()[0])
            .expect("SENTINEL get-master-addr-by-name")
    }

    /// The data port that is not the master.
    pub fn replica_port(&self) -> u16 {
        let master = self.master_port();
        self.data_ports
            .into_iter()
            .find(|&p| p != master)
            .expect("two data ports")
    }

    /// `master` or `slave`, as the server on `port` says (ROLE).
    pub fn role(&self, port: u16) -> String {
        redis_cli(port, &["ROLE"])
            .expect("ROLE")
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// SIGKILLs the current master (reaped before this returns); returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        self.processes.remove(&port);
        port
    }

    /// Waits until every live sentinel names one new master and it says it is master; returns
    /// its port.
    pub fn wait_for_promotion(&self, old_master_port: u16) -> u16 {
        let mut promoted = 0;
        wait_until(
            &format!("the sentinels to promote a new master in place of {old_master_port}"),
            Duration::from_secs(30),
            || {
                let named: Vec<Option<u16>> = self
                    .live_sentinels()
                    .iter()
                    .map(|&s| self.master_named_by(s))
                    .collect();
                let Some(Some(first)) = named.first().copied() else {
                    return false;
                };
                promoted = first;
                named.iter().all(|n| *n == Some(first))
                    && first != old_master_port
                    && redis_cli(first, &["ROLE"]).is_ok_and(|r| r.starts_with("master"))
            },
        );
        promoted
    }

    /// Starts a data node again as a replica of the current master; returns once it is in sync.
    pub fn restart(&mut self, port: u16) {
        let master = self.master_port();
        self.start_data(port, Some(master));
        wait_until(
            &format!("{port} to be a replica in sync"),
            SETUP_WAIT,
            || {
                redis_cli(port, &["INFO", "replication"])
                    .is_ok_and(|info| info.contains("master_link_status:up"))
            },
        );
        // A later failover needs every sentinel to count it as a replica that is up.
        wait_until(
            &format!("every sentinel to see {port} as a replica that is up"),
            Duration::from_secs(30),
            || {
                self.live_sentinels().iter().all(|&sentinel| {
                    redis_cli(sentinel, &["SENTINEL", "REPLICAS", &self.service_name]).is_ok_and(
                        |text| {
                            // Field/value lines per replica: this port's `flags` must be `slave`.
                            let lines: Vec<&str> = text.lines().collect();
                            lines
                                .windows(2)
                                .position(|w| w[0] == "port" && w[1] == port.to_string())
                                .and_then(|at| {
                                    let flags = lines[at..].iter().position(|l| *l == "flags")?;
                                    lines.get(at + flags + 1).copied()
                                })
                                == Some("slave")
                        },
                    )
                })
            },
        );
    }

    /// Makes the current replica lag for `ms` (see the module doc).
    pub fn lag_replica(&self, ms: u64) -> Lag {
        lag_replica(self.replica_port(), self.master_port(), ms, "lag-filler")
    }
}
