//! The Redis topology fixtures of `support/topologies.rs`, tested on their own: a Redis Cluster
//! of 3 masters + 3 replicas and a Sentinel setup (master, replica, 3 sentinels) start with the
//! roles they claim, a killed master's replica is promoted, what was replicated before survives,
//! and what was written while `lag_replica` held the replica back is lost with the master: the
//! window that tests of replicated acknowledgements need to be real.

mod support;

use std::time::Duration;

use support::topologies::{RedisCluster, RedisSentinel, redis_cli_with};

/// SET then WAIT on one connection; returns how many replicas confirmed the write.
fn set_and_wait(port: u16, key: &str, value: &str, wait_ms: u64) -> u32 {
    let input = format!("SET {key} {value}\nWAIT 1 {wait_ms}\n");
    let reply =
        redis_cli_with(port, &[], Some(&input), Duration::from_secs(10)).expect("SET, WAIT");
    let mut lines = reply.lines();
    assert_eq!(lines.next(), Some("OK"));
    lines
        .next()
        .and_then(|n| n.parse().ok())
        .expect("WAIT's count")
}

#[test]
fn cluster_roles_read_back_and_a_lagging_replica_loses_what_the_dead_master_held() {
    let mut cluster = RedisCluster::start();
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6);
    let masters: Vec<_> = nodes.iter().filter(|n| n.master).collect();
    assert_eq!(masters.len(), 3);
    assert_eq!(masters.iter().map(|m| m.slot_count()).sum::<usize>(), 16384);
    let mut replica_of: Vec<_> = nodes.iter().filter_map(|n| n.master_id.clone()).collect();
    let mut master_ids: Vec<_> = masters.iter().map(|m| m.id.clone()).collect();
    replica_of.sort();
    master_ids.sort();
    assert_eq!(replica_of, master_ids, "one replica per master");
    for node in &nodes {
        let role = cluster.cli(node.port, &["ROLE"]).expect("ROLE");
        let expected = if node.master { "master" } else { "slave" };
        assert!(role.starts_with(expected), "{} says {role}", node.port);
    }

    let master = cluster.master_of_key("{kept}");
    assert_eq!(cluster.master_of_key("{lost}").port, master.port);
    let replica = cluster.replica_of(master.port).expect("a live replica");
    assert_eq!(set_and_wait(master.port, "{kept}", "before", 2000), 1);
    let lag = cluster.lag_replica(replica.port, 3000);
    assert_eq!(set_and_wait(master.port, "{lost}", "during", 300), 0);

    cluster.kill(master.port);
    assert!(
        cluster.cli(master.port, &["PING"]).is_err(),
        "the master is dead"
    );
    let promoted = cluster.wait_for_promotion(master.port);
    assert_eq!(promoted.port, replica.port);
    lag.wait_awake();
    assert_eq!(
        cluster.cli(promoted.port, &["GET", "{kept}"]).as_deref(),
        Ok("before")
    );
    assert_eq!(
        cluster.cli(promoted.port, &["GET", "{lost}"]).as_deref(),
        Ok("")
    );

    cluster.restart(master.port);
    let back = cluster
        .nodes()
        .into_iter()
        .find(|n| n.port == master.port)
        .expect("listed");
    assert!(!back.master);
    assert_eq!(back.master_id.as_deref(), Some(promoted.id.as_str()));
}

#[test]
fn sentinel_roles_read_back_and_a_lagging_replica_loses_what_the_dead_master_held() {
    let mut sentinel = RedisSentinel::start();
    let [first, second] = sentinel.data_ports;
    assert_eq!(sentinel.master_port(), first);
    assert_eq!(sentinel.role(first), "master");
    assert_eq!(sentinel.role(second), "slave");
    assert!(sentinel.url().starts_with("redis-sentinel://127.0.0.1:"));

    assert_eq!(set_and_wait(first, "kept", "before", 2000), 1);
    let lag = sentinel.lag_replica(3000);
    assert_eq!(set_and_wait(first, "lost", "during", 300), 0);
    assert_eq!(sentinel.kill_master(), first);
    assert!(
        sentinel.cli(first, &["PING"]).is_err(),
        "the master is dead"
    );
    let promoted = sentinel.wait_for_promotion(first);
    assert_eq!(promoted, second);
    lag.wait_awake();
    assert_eq!(sentinel.role(second), "master");
    assert_eq!(
        sentinel.cli(second, &["GET", "kept"]).as_deref(),
        Ok("before")
    );
    assert_eq!(sentinel.cli(second, &["GET", "lost"]).as_deref(), Ok(""));

    sentinel.restart(first);
    assert_eq!(sentinel.role(first), "slave");
    assert_eq!(sentinel.replica_port(), first);
}
