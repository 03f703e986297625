//! A seconds-long smoke of each load scenario against real processes, and of each peer server
//! `scripts/bench.sh` measures the product against (the stock socketioxide server and node with
//! the official Redis adapter): it checks the load generator and its accounting (every
//! expected delivery is delivered or counted lost, nothing foreign, nothing twice), not the
//! speed, which BENCHMARKS.md measures.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use chat_bench::{dm, fanout, idle, loopback_sources, storm};
use support::{Redis, Supervisor};

fn worker_targets(supervisor: &Supervisor) -> Vec<SocketAddr> {
    (0..2)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], supervisor.base_port + i)))
        .collect()
}

fn ready(supervisor: &Supervisor) {
    support::wait_until("both workers ready with Redis", support::WAIT, || {
        (0..2).all(|i| {
            support::http_get(supervisor.base_port + i, "/ready")
                .is_ok_and(|(status, _)| status == 200)
        })
    });
}

/// Every client connected and its deliveries are accounted for.
fn assert_accounted(report: &fanout::FanoutReport, clients: usize, members: u64) {
    assert_eq!(report.connected, clients, "{report:?}");
    assert_eq!(report.connect_failures, 0, "{report:?}");
    assert_delivered(&report.deliveries, members);
}

/// Something was sent, each message was expected at every member of its room (`members` each,
/// the sender included), and each expected delivery arrived exactly once, in its own room.
fn assert_delivered(deliveries: &fanout::Deliveries, members: u64) {
    assert!(deliveries.sent > 0, "{deliveries:?}");
    assert_eq!(
        deliveries.expected,
        deliveries.sent * members,
        "{deliveries:?}"
    );
    assert_eq!(
        deliveries.delivered + deliveries.lost,
        deliveries.expected,
        "{deliveries:?}"
    );
    assert_eq!(
        (deliveries.lost, deliveries.foreign, deliveries.duplicated),
        (0, 0, 0),
        "{deliveries:?}"
    );
}

/// 40 clients of the supervisor's two workers in 4 rooms, 8 senders at 5/s for a second, after
/// the join burst; `history_size`: the workers' `--history-size`.
fn smoke_fanout(
    supervisor: &Supervisor,
    room_prefix: &str,
    history_size: usize,
) -> fanout::FanoutConfig {
    fanout::FanoutConfig {
        targets: worker_targets(supervisor),
        clients: 40,
        rooms: 4,
        senders: 8,
        rate: 5.0,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(3),
        sources: loopback_sources(4),
        room_prefix: room_prefix.into(),
        server_pids: Vec::new(),
        redis_pids: Vec::new(),
        raw: false,
        aligned: false,
        local_rooms: false,
        history_size,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_accounts_for_every_delivery() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    ready(&supervisor);
    let report = fanout::run(smoke_fanout(&supervisor, "smoke-", 50))
        .await
        .expect("fanout runs");
    assert_accounted(&report, 40, 10);
    assert_joins_accounted(&report);
    assert_eq!(report.joins.joins_lost, 0, "{:?}", report.joins);
    assert!(report.deliveries.latency_ms_max >= report.deliveries.latency_ms_p50);
}

/// Without history (`--history-size 0`), a member cannot see the joins said before its own:
/// they are counted as older than its history, not lost (until 2026-12-01 the server's empty
/// `history` answer made chat-bench count them lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_before_a_member_own_are_not_lost_without_history() {
    let redis = Redis::start();
    let supervisor = Supervisor::start_with(2, &redis.url(), &["--history-size", "0"]);
    ready(&supervisor);
    let report = fanout::run(smoke_fanout(&supervisor, "smoke-nohistory-", 0))
        .await
        .expect("fanout runs");
    assert_accounted(&report, 40, 10);
    assert_joins_accounted(&report);
    // Every member but one per room missed some joins, which is what history-off means.
    assert!(report.joins.joins_before_history > 0, "{:?}", report.joins);
    assert_eq!(report.joins.joins_lost, 0, "{:?}", report.joins);
}

/// The repository's root (peers live under bench/).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Two peer processes, one per port, each given `PORT` and `REDIS_URL` (the accounting is
/// checked from the clients' side, their output is kept only to explain a failure); waits until
/// both accept. A peer that exits before it listens (its port taken meanwhile: the ports are
/// picked free, but outgoing connections of the tests running beside this one take ephemeral
/// ports too) is started again on other ports, twice at most.
fn start_peers(
    name: &str,
    command: impl Fn() -> Command,
    redis: &Redis,
) -> (Vec<support::ChildGuard>, Vec<SocketAddr>) {
    let mut exits = Vec::new();
    for _attempt in 0..3 {
        let base = support::free_port_range(2);
        let ports = [base, base + 1];
        let mut guards: Vec<support::ChildGuard> = ports
            .iter()
            .map(|port| {
                let log = peer_log(name, *port);
                let stderr = std::fs::File::create(&log)
                    .unwrap_or_else(|err| panic!("create {}: {err}", log.display()));
                support::ChildGuard {
                    child: command()
                        .env("PORT", port.to_string())
                        .env("REDIS_URL", redis.url())
                        .stdout(Stdio::null())
                        .stderr(stderr)
                        .spawn()
                        .unwrap_or_else(|err| panic!("start {name}: {err}")),
                    name: name.to_owned(),
                }
            })
            .collect();
        let mut exited = None;
        support::wait_until(
            &format!("both {name} processes to listen"),
            support::WAIT,
            || {
                exited = guards.iter_mut().zip(ports).find_map(|(guard, port)| {
                    let status = guard.child.try_wait().ok()??;
                    let output = std::fs::read_to_string(peer_log(name, port)).unwrap_or_default();
                    Some(format!("port {port}: {status}: {}", output.trim()))
                });
                exited.is_some()
                    || ports
                        .iter()
                        .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok())
            },
        );
        // The peers keep writing to their logs, unlinked (read above if one exited).
        for port in ports {
            let _ = std::fs::remove_file(peer_log(name, port));
        }
        match exited {
            Some(exit) => exits.push(exit),
            None => {
                let targets = ports
                    .iter()
                    .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
                    .collect();
                return (guards, targets);
            }
        }
    }
    panic!("{name} exited before listening, three times: {exits:#?}");
}

/// Where a peer started by [`start_peers`] writes its standard error.
fn peer_log(name: &str, port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("bench-smoke-{name}-{port}.stderr"))
}

/// 40 clients of a peer's two processes in 4 rooms that span both, 8 senders at 5/s for a
/// second, after the join burst.
async fn fanout_against_peer(targets: Vec<SocketAddr>) -> fanout::FanoutReport {
    fanout::run(fanout::FanoutConfig {
        targets,
        clients: 40,
        rooms: 4,
        senders: 8,
        rate: 5.0,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(3),
        sources: loopback_sources(4),
        room_prefix: "peer-".into(),
        server_pids: Vec::new(),
        redis_pids: Vec::new(),
        raw: false,
        aligned: false,
        local_rooms: false,
        history_size: 50,
    })
    .await
    .expect("fanout against the peer runs")
}

/// Every client joined, and every join of the burst was delivered, counted lost, or was older
/// than the member's history: each of the 40 was expected at the 10 members of its room,
/// nothing foreign, nothing twice.
fn assert_joins_accounted(report: &fanout::FanoutReport) {
    let joins = &report.joins;
    assert_eq!(
        (joins.joins_sent, joins.joins_expected),
        (40, 400),
        "{joins:?}"
    );
    assert_eq!(
        joins.joins_delivered + joins.joins_lost + joins.joins_before_history,
        joins.joins_expected,
        "{joins:?}"
    );
    assert!(joins.joins_delivered > 0, "{joins:?}");
    assert!(joins.joins_arrived_late <= joins.joins_lost, "{joins:?}");
    assert_eq!(
        (joins.joins_duplicated, joins.joins_foreign),
        (0, 0),
        "{joins:?}"
    );
}

/// The stock socketioxide + socketioxide-redis (fred) peer, built from bench/socketioxide-peer
/// by scripts/test.sh (`CHAT_SOCKETIOXIDE_PEER` names another build): the `say` traffic is
/// accounted and, at this trickle, nothing is lost; the join burst is accounted, and what its
/// fred channel drops under the burst (it holds 32 messages) is counted lost, not asserted away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_socketioxide_peer_is_accounted_the_same_way() {
    let binary = std::env::var_os("CHAT_SOCKETIOXIDE_PEER").map_or_else(
        || {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo_root().join("target"), PathBuf::from);
            target.join("debug/socketioxide-peer")
        },
        PathBuf::from,
    );
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --locked --manifest-path \
         bench/socketioxide-peer/Cargo.toml --target-dir target` (scripts/test.sh does)",
        binary.display()
    );
    let redis = Redis::start();
    let (_peers, targets) = start_peers("socketioxide-peer", || Command::new(&binary), &redis);
    let report = fanout_against_peer(targets).await;
    assert_accounted(&report, 40, 10);
    assert_joins_accounted(&report);
    eprintln!("socketioxide peer: join burst {:?}", report.joins);
}

/// node socket.io with @socket.io/redis-adapter (bench/node-adapter-peer, its packages
/// installed by scripts/test.sh with `npm ci`): everything accounted, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_adapter_peer_is_accounted_the_same_way() {
    let dir = repo_root().join("bench/node-adapter-peer");
    assert!(
        dir.join("node_modules/@socket.io/redis-adapter").exists(),
        "run `npm ci` in {} (scripts/test.sh does)",
        dir.display()
    );
    let redis = Redis::start();
    let (_peers, targets) = start_peers(
        "node-adapter-peer",
        || {
            let mut node = Command::new("node");
            node.arg("server.js").current_dir(&dir);
            node
        },
        &redis,
    );
    let report = fanout_against_peer(targets).await;
    assert_accounted(&report, 40, 10);
    assert_joins_accounted(&report);
    assert_eq!(report.joins.joins_lost, 0, "{:?}", report.joins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_accounts_for_every_message() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    ready(&supervisor);
    let report = dm::run(dm::DmConfig {
        targets: worker_targets(&supervisor),
        senders: 4,
        recipients: 3,
        // Within the default per-sender bound (5/s, burst 20).
        rates: vec![2.0, 4.0],
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(3),
        sources: loopback_sources(4),
        user_prefix: "smoke-".into(),
        server_pids: Vec::new(),
        redis_pids: redis.pid().into_iter().collect(),
        run: 1,
        p99_limit_ms: 1000.0,
    })
    .await
    .expect("dm runs");
    assert_eq!(
        (report.connected, report.connect_failures),
        (7, 0),
        "{report:?}"
    );
    assert_eq!(report.steps.len(), 2, "{report:?}");
    for step in &report.steps {
        assert!(step.sent > 0, "{step:?}");
        assert_eq!(step.acked, step.sent, "every send acknowledged: {step:?}");
        assert_eq!((step.lost, step.unanswered), (0, 0), "{step:?}");
        assert!(step.refused.is_empty(), "{step:?}");
        assert!(step.held, "{step:?}");
        assert!(step.redis_cpu_seconds >= 0.0 && step.ack_ms_max >= step.ack_ms_p50);
    }
    assert_eq!(report.best_step, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_connections_from_many_source_addresses() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    ready(&supervisor);
    let pids: Vec<u32> = supervisor.status()["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["pid"].as_u64().expect("pid") as u32)
        .collect();
    let report = idle::run(idle::IdleConfig {
        targets: worker_targets(&supervisor),
        connections: 300,
        sources: loopback_sources(16),
        pids,
        hold: Duration::from_millis(500),
        room_prefix: "idle-".into(),
        rooms: 10,
        raw: false,
        concurrency: 64,
    })
    .await
    .expect("idle runs");
    assert_eq!(report.connected, 300, "{report:?}");
    assert_eq!(report.open_after_hold, 300, "{report:?}");
    assert_eq!(report.connect_failures, 0);
    assert!(report.server_rss_after_kb >= report.server_rss_before_kb);
    support::wait_until(
        "the supervisor to count the held connections gone",
        support::WAIT,
        || supervisor.status()["total_connections"] == 0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_forwards_frames_and_is_accounted_the_same_way() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the floor");
    let addr = listener.local_addr().expect("the floor's address");
    // The floor runs on a single-threaded runtime of its own, as in `chat-bench floor`.
    std::thread::spawn(move || chat_bench::floor::run(listener));
    let report = fanout::run(floor_config(addr, 5.0))
        .await
        .expect("fanout against the floor runs");
    assert_accounted(&report, 30, 10);
}

/// 30 clients of the floor in 3 rooms, 6 senders at `rate` for a second.
fn floor_config(addr: SocketAddr, rate: f64) -> fanout::FanoutConfig {
    fanout::FanoutConfig {
        targets: vec![addr],
        clients: 30,
        rooms: 3,
        senders: 6,
        rate,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(2),
        sources: Vec::new(),
        room_prefix: "floor-".into(),
        server_pids: Vec::new(),
        redis_pids: Vec::new(),
        raw: true,
        aligned: false,
        local_rooms: false,
        history_size: 50,
    }
}

/// Two tiny steps on the same connections: each is accounted on its own (a step's messages
/// are expected at every member of the sender's room and arrive exactly once), the rates are
/// the ones asked, and the best step is the last that held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_accounts_every_step_on_the_same_connections() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    ready(&supervisor);
    let report = fanout::ramp(fanout::RampConfig {
        fanout: fanout::FanoutConfig {
            targets: worker_targets(&supervisor),
            clients: 40,
            rooms: 4,
            senders: 8,
            rate: 2.0,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(3),
            sources: loopback_sources(4),
            room_prefix: "ramp-".into(),
            server_pids: Vec::new(),
            redis_pids: Vec::new(),
            raw: false,
            aligned: false,
            local_rooms: false,
            history_size: 50,
        },
        rates: vec![2.0, 4.0],
        // Generous: the smoke checks the accounting, not the speed.
        p99_limit_ms: 5_000.0,
    })
    .await
    .expect("ramp runs");
    assert_eq!(report.connected, 40, "{report:?}");
    assert_eq!(report.steps.len(), 2, "{report:?}");
    for (number, step) in report.steps.iter().enumerate() {
        assert_eq!(step.step, number);
        assert_eq!(step.senders, 8, "{step:?}");
        assert_delivered(&step.deliveries, 10);
        assert!(step.held, "{step:?}");
    }
    assert_eq!(report.steps[0].rate_per_sender, 2.0);
    assert_eq!(report.steps[1].rate_per_sender, 4.0);
    assert!(
        report.steps[1].deliveries.sent > report.steps[0].deliveries.sent,
        "the second step sends more: {report:?}"
    );
    assert_eq!(report.best_step, Some(1), "{report:?}");
    assert_eq!(report.stopped_because, "all steps held");
}

/// A step that cannot hold (a p99 limit no server meets) stops the ramp there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_stops_at_the_first_step_that_does_not_hold() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the floor");
    let addr = listener.local_addr().expect("the floor's address");
    std::thread::spawn(move || chat_bench::floor::run(listener));
    let report = fanout::ramp(fanout::RampConfig {
        fanout: floor_config(addr, 2.0),
        rates: vec![2.0, 4.0, 8.0],
        p99_limit_ms: 0.000_001,
    })
    .await
    .expect("ramp runs");
    assert_eq!(report.steps.len(), 1, "{report:?}");
    assert!(!report.steps[0].held, "{report:?}");
    assert_eq!(report.steps[0].deliveries.lost, 0, "{report:?}");
    assert_eq!(report.best_step, None, "{report:?}");
    assert!(report.stopped_because.contains("p99"), "{report:?}");
}

/// 20 clients on 2 workers, worker 0 (read from the supervisor's /status) SIGKILLed: its 10
/// clients, and only they, drop; every one reconnects, rejoins and is heard by another member
/// again; the supervisor's restarted worker serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_every_client_back_after_a_worker_is_killed() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    ready(&supervisor);
    let victim = supervisor.status()["workers"][0]["pid"]
        .as_u64()
        .expect("worker 0's pid") as u32;
    let report = storm::run(storm::StormConfig {
        targets: worker_targets(&supervisor),
        clients: 20,
        sources: loopback_sources(4),
        rooms: 5,
        victim: storm::Victim::Status {
            url: format!("http://127.0.0.1:{}/status", supervisor.admin_port),
            worker: 0,
        },
        timeout: Duration::from_secs(20),
        concurrency: 16,
    })
    .await
    .expect("storm runs");
    assert_eq!(report.killed_pid as u32, victim, "{report:?}");
    assert_eq!(report.killed_port, supervisor.base_port, "{report:?}");
    assert_eq!(report.joined_before, 20, "{report:?}");
    assert_eq!(report.victims, 10, "{report:?}");
    assert_eq!(report.dropped, 10, "the killed worker's half: {report:?}");
    assert_eq!(report.survivors_dropped, 0, "{report:?}");
    assert!(report.reconnected_ms.is_some(), "{report:?}");
    assert!(report.all_back_ms >= report.reconnected_ms, "{report:?}");
    assert_eq!(report.not_back, 0, "{report:?}");
    assert!(
        report.says_sent >= 10,
        "each victim said something: {report:?}"
    );
    assert_eq!(report.joined_at_end, 20, "{report:?}");
    assert!(!support::process_alive(victim), "the victim was killed");
    support::wait_until("the supervisor to restart worker 0", support::WAIT, || {
        let worker = &supervisor.status()["workers"][0];
        worker["pid"]
            .as_u64()
            .is_some_and(|pid| pid != 0 && pid as u32 != victim)
    });
}

/// A pid that serves none of the targets is refused, and nothing is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_refuses_to_kill_a_process_that_serves_no_target() {
    let bystander = support::ChildGuard {
        child: std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep"),
        name: "sleep".into(),
    };
    let result = storm::run(storm::StormConfig {
        targets: vec![SocketAddr::from(([127, 0, 0, 1], support::free_port()))],
        clients: 2,
        sources: Vec::new(),
        rooms: 1,
        victim: storm::Victim::Pid(bystander.pid() as i32),
        timeout: Duration::from_secs(2),
        concurrency: 2,
    })
    .await;
    assert!(result.is_err(), "{result:?}");
    assert!(support::process_alive(bystander.pid()));
}
