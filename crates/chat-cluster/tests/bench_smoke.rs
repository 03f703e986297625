//! A seconds-long smoke of each load scenario against real processes: it checks the load
//! generator and its accounting (every expected delivery is delivered or counted lost, nothing
//! foreign, nothing twice), not the speed, which BENCHMARKS.md measures.

mod support;

use std::{net::SocketAddr, time::Duration};

use chat_bench::{fanout, idle, loopback_sources, storm};
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

/// Every client connected, something was sent, each message was expected at every member of
/// its room (`members` each, the sender included), and each expected delivery arrived exactly
/// once, in its own room.
fn assert_accounted(report: &fanout::FanoutReport, clients: usize, members: u64) {
    assert_eq!(report.connected, clients, "{report:?}");
    assert_eq!(report.connect_failures, 0, "{report:?}");
    assert!(report.sent > 0, "{report:?}");
    assert_eq!(report.expected, report.sent * members, "{report:?}");
    assert_eq!(
        report.delivered + report.lost,
        report.expected,
        "{report:?}"
    );
    assert_eq!(
        (report.lost, report.foreign, report.duplicated),
        (0, 0, 0),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_accounts_for_every_delivery() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    ready(&supervisor);
    let report = fanout::run(fanout::FanoutConfig {
        targets: worker_targets(&supervisor),
        clients: 40,
        rooms: 4,
        senders: 8,
        rate: 5.0,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(3),
        sources: loopback_sources(4),
        room_prefix: "smoke-".into(),
        server_pids: Vec::new(),
        raw: false,
    })
    .await
    .expect("fanout runs");
    assert_accounted(&report, 40, 10);
    assert!(report.latency_ms_max >= report.latency_ms_p50);
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
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    tokio::spawn(chat_bench::floor::serve(addr));
    support::wait_until("the floor to listen", support::WAIT, || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    let report = fanout::run(fanout::FanoutConfig {
        targets: vec![addr],
        clients: 30,
        rooms: 3,
        senders: 6,
        rate: 5.0,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(2),
        sources: Vec::new(),
        room_prefix: "floor-".into(),
        server_pids: Vec::new(),
        raw: true,
    })
    .await
    .expect("fanout against the floor runs");
    assert_accounted(&report, 30, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_every_client_back_after_a_worker_is_killed() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    ready(&supervisor);
    let victim = supervisor.status()["workers"][0]["pid"]
        .as_i64()
        .expect("worker 0's pid") as i32;
    let report = storm::run(storm::StormConfig {
        targets: worker_targets(&supervisor),
        clients: 40,
        sources: loopback_sources(4),
        rooms: 4,
        kill_pid: victim,
        timeout: Duration::from_secs(20),
    })
    .await
    .expect("storm runs");
    assert_eq!(report.joined_before, 40, "{report:?}");
    assert_eq!(report.dropped, 20, "the killed worker's half: {report:?}");
    assert!(report.all_back_ms.is_some(), "{report:?}");
    assert_eq!(report.joined_at_end, 40, "{report:?}");
}
