//! Real processes: the `chat-cluster` binary's workers and supervisor against a real
//! redis-server, driven by a socket.io client over websockets.

mod support;

use std::time::Duration;

use chat_client::{Client, Event};
use serde_json::{Value, json};
use support::{
    Redis, Supervisor, WAIT, free_port, http_get, process_alive, start_worker, wait_until,
};

const ACK_WAIT: Duration = Duration::from_secs(5);

async fn member(port: u16, room: &str, name: &str) -> Client {
    let mut client = Client::connect(
        &format!("http://127.0.0.1:{port}"),
        &format!("roomid={room}"),
    )
    .await
    .unwrap_or_else(|err| panic!("connect to {port}: {err}"));
    let ack = client
        .emit_with_ack("join", &json!({ "username": name }), ACK_WAIT)
        .await
        .expect("join ack");
    assert_eq!(ack["ok"], json!(true), "{ack}");
    client
}

fn said(event: &Event, text: &str) -> bool {
    event.name == "message"
        && event.data["event"] == "broadcast_say"
        && event.data["data"]["text"] == text
}

async fn say(client: &mut Client, text: &str) -> Value {
    client
        .emit_with_ack("say", &json!({ "text": text }), ACK_WAIT)
        .await
        .expect("say ack")
}

/// Says probe messages from `from` until one reaches `to` (bounded): after a restart, each
/// worker re-subscribes on its own schedule, and pub/sub keeps nothing for a late subscriber.
async fn until_crosses(from: &mut Client, to: &mut Client, label: &str) {
    for attempt in 0..50 {
        let text = format!("{label} {attempt}");
        say(from, &text).await;
        if to
            .next_matching(Duration::from_millis(200), |e| said(e, &text))
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("no {label} message crossed workers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_span_worker_processes_through_redis_with_a_channel_per_occupied_room() {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start_worker(port_a, &redis.url(), &["--channel-prefix", "t1:"]);
    let _b = start_worker(port_b, &redis.url(), &["--channel-prefix", "t1:"]);

    let mut ann = member(port_a, "lobby", "ann").await;
    let mut bob = member(port_b, "lobby", "bob").await;
    let mut eve = member(port_b, "side", "eve").await;
    // Both workers, not just the first: a worker that connects to Redis after its clients
    // joined subscribes a moment later, and a message published before that misses it.
    wait_until("both workers to subscribe to their rooms", WAIT, || {
        redis.subscribers("t1:{room:lobby}") == 2 && redis.subscribers("t1:{room:side}") == 1
    });

    // Subscriptions are in place; from here a message must cross.
    say(&mut ann, "hi bob").await;
    let heard = bob
        .next_matching(WAIT, |e| said(e, "hi bob"))
        .await
        .expect("bob, on the other worker, hears ann");
    assert_eq!(heard.data["data"]["username"], "ann");
    say(&mut bob, "hi ann").await;
    ann.next_matching(WAIT, |e| said(e, "hi ann"))
        .await
        .expect("ann hears bob");

    say(&mut eve, "barrier").await;
    eve.next_matching(WAIT, |e| said(e, "barrier"))
        .await
        .expect("eve hears herself");
    let foreign: Vec<Event> = eve
        .drain_events()
        .into_iter()
        .filter(|e| e.data["room"] != "side")
        .collect();
    assert!(
        foreign.is_empty(),
        "eve got messages of another room: {foreign:?}"
    );

    // The last local member leaving unsubscribes that worker from the room's channel.
    eve.disconnect();
    wait_until("the empty room's channel to be unsubscribed", WAIT, || {
        !redis.channels().contains(&"t1:{room:side}".to_owned())
    });
    assert!(redis.channels().contains(&"t1:{room:lobby}".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_workers_resubscribe_and_local_chat_never_stops() {
    let mut redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start_worker(port_a, &redis.url(), &[]);
    let _b = start_worker(port_b, &redis.url(), &[]);
    let mut ann = member(port_a, "r", "ann").await;
    let mut amy = member(port_a, "r", "amy").await;
    let mut bob = member(port_b, "r", "bob").await;
    wait_until("subscriptions", WAIT, || {
        redis.channels().contains(&"chat:{room:r}".to_owned())
    });

    redis.stop();
    wait_until("worker a to report degraded", WAIT, || {
        http_get(port_a, "/ready").is_ok_and(|(status, _)| status == 503)
    });
    // Same-worker delivery does not need Redis.
    let ack = say(&mut ann, "during the outage").await;
    assert_eq!(ack["ok"], true);
    amy.next_matching(WAIT, |e| said(e, "during the outage"))
        .await
        .expect("a member on the same worker hears it while Redis is down");

    redis.restart();
    wait_until("the room channel to be subscribed again", WAIT, || {
        redis.channels().contains(&"chat:{room:r}".to_owned())
    });
    wait_until("worker b to report ready", WAIT, || {
        http_get(port_b, "/ready").is_ok_and(|(status, _)| status == 200)
    });
    until_crosses(&mut ann, &mut bob, "a to b after the restart").await;
    until_crosses(&mut bob, &mut ann, "b to a after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_without_redis_serves_local_rooms_and_joins_when_redis_appears() {
    let mut redis = Redis::start();
    redis.stop();
    let port = free_port();
    let _worker = start_worker(port, &redis.url(), &[]);
    assert_eq!(http_get(port, "/ready").expect("ready").0, 503);
    let mut one = member(port, "solo", "one").await;
    let mut two = member(port, "solo", "two").await;
    say(&mut one, "no redis needed").await;
    two.next_matching(WAIT, |e| said(e, "no redis needed"))
        .await
        .expect("local delivery");
    redis.restart();
    wait_until("the worker to connect and subscribe", WAIT, || {
        redis.channels().contains(&"chat:{room:solo}".to_owned())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_counts_respawns_killed_workers_and_stops_cleanly() {
    let redis = Redis::start();
    let supervisor = Supervisor::start(2, &redis.url());
    // Both ready lines, in whichever order the workers finish starting.
    let mut ready = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    while ready.len() < 2 {
        let line = supervisor.wait_line("worker_ready", |l| l["event"] == "worker_ready");
        ready.insert(line["id"].as_u64().expect("id"));
    }
    assert!(
        supervisor.status()["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .all(|w| w["state"] == "ready")
    );
    let status = supervisor.status();
    let ports: Vec<u16> = status["workers"]
        .as_array()
        .expect("workers array")
        .iter()
        .map(|w| w["port"].as_u64().expect("port") as u16)
        .collect();
    assert_eq!(ports, vec![supervisor.base_port, supervisor.base_port + 1]);

    let mut ann = member(ports[0], "sup", "ann").await;
    let mut amy = member(ports[0], "sup2", "amy").await;
    let mut bob = member(ports[1], "sup", "bob").await;
    let _carl = member(ports[1], "sup", "carl").await;
    wait_until("/status to count 4 connections", WAIT, || {
        let status = supervisor.status();
        status["total_connections"] == 4
            && status["workers"][0]["connections"] == 2
            && status["workers"][1]["connections"] == 2
            && status["workers"][0]["rooms"] == 2
    });
    // A worker that dies within 5 s of its start is respawned after a 250 ms backoff: the
    // window in which /status shows the dead worker's slot.
    let ran_for = started.elapsed();
    assert!(
        ran_for < Duration::from_secs(4),
        "worker 0 ran {ran_for:?} before the kill; the backoff window needs under 5 s"
    );

    let old_pid = status["workers"][0]["pid"].as_u64().expect("pid") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill worker 0");
    supervisor.wait_line("worker_exited", |l| {
        l["event"] == "worker_exited" && l["pid"] == old_pid
    });
    let dead = supervisor.status();
    assert!(!process_alive(old_pid), "the killed worker is gone");
    let slot = &dead["workers"][0];
    assert_eq!(
        (
            &slot["pid"],
            &slot["state"],
            &slot["connections"],
            &slot["rooms"]
        ),
        (&json!(0), &json!("down"), &json!(0), &json!(0)),
        "right after worker_exited, before the respawn: {slot}"
    );
    assert_eq!(dead["total_connections"], 2, "only bob and carl");
    let ready = supervisor.wait_line("worker_ready after respawn", |l| {
        l["event"] == "worker_ready" && l["id"] == 0
    });
    let new_pid = ready["pid"].as_u64().expect("pid") as u32;
    assert_ne!(new_pid, old_pid);
    assert_eq!(ready["port"], ports[0]);
    let status = supervisor.status();
    assert_eq!(status["workers"][0]["restarts"], 1);
    assert_eq!(
        status["workers"][0]["connections"], 0,
        "a dead worker's connections count as gone"
    );
    ann.closed(WAIT)
        .await
        .expect("ann's connection died with its worker");
    amy.closed(WAIT)
        .await
        .expect("amy's connection died with its worker");

    // The respawned worker serves on the same port and rooms still span workers.
    let mut ann = member(ports[0], "sup", "ann").await;
    wait_until("the respawned worker to subscribe", WAIT, || {
        redis.channels().contains(&"chat:{room:sup}".to_owned())
    });
    until_crosses(&mut ann, &mut bob, "from the respawned worker").await;
    until_crosses(&mut bob, &mut ann, "to the respawned worker").await;

    let worker_pids: Vec<u32> = supervisor.status()["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["pid"].as_u64().expect("pid") as u32)
        .collect();
    let mut supervisor = supervisor;
    let stopping = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor.guard.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the supervisor");
    bob.closed(WAIT)
        .await
        .expect("clients are closed on shutdown");
    // A clean drain, not the SIGKILL fallback after the grace period (2 s here, plus a 2 s
    // margin): every worker exits by itself with code 0, and sooner than the grace.
    let mut exits = Vec::new();
    loop {
        let line = supervisor.wait_line("worker_exited or stopped", |l| {
            l["event"] == "worker_exited" || l["event"] == "stopped"
        });
        if line["event"] == "stopped" {
            break;
        }
        exits.push(line["status"].clone());
    }
    let took = stopping.elapsed();
    assert_eq!(
        exits,
        vec![json!("exit code 0"); 2],
        "how the workers exited"
    );
    assert!(
        took < Duration::from_secs(2),
        "the stop took {took:?}, not less than the 2 s grace"
    );
    let exit = supervisor
        .guard
        .child
        .wait()
        .expect("supervisor exit status");
    assert!(exit.success(), "supervisor exited with {exit}");
    for pid in worker_pids {
        assert!(!process_alive(pid), "worker {pid} outlived the supervisor");
    }
}

/// A TCP listener on a stopped Redis's port that accepts each connection and closes it at
/// once, recording when: every connection attempt of the workers shows here.
struct AttemptRecorder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<std::time::Instant>>,
}

impl AttemptRecorder {
    fn listen(port: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind Redis's port");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut attempts = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((connection, _)) => {
                        attempts.push(std::time::Instant::now());
                        drop(connection);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            attempts
        });
        Self { stop, thread }
    }

    /// Stops listening (the port is free again) and returns the attempts' times.
    fn finish(self) -> Vec<std::time::Instant> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the recorder thread")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_degrades_without_a_crash_loop() {
    let mut redis = Redis::start();
    redis.stop();
    let recorder = AttemptRecorder::listen(redis.port);
    let supervisor = Supervisor::start(2, &redis.url());
    let watch_from = std::time::Instant::now();
    let ports = [supervisor.base_port, supervisor.base_port + 1];
    for port in ports {
        wait_until(
            "a worker to answer /ready with 503 (degraded)",
            WAIT,
            || {
                http_get(port, "/ready")
                    .is_ok_and(|(status, body)| status == 503 && body.contains("redis"))
            },
        );
    }
    let pids = |status: &Value| -> Vec<u64> {
        status["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| w["pid"].as_u64().expect("pid"))
            .collect()
    };
    let first_pids = pids(&supervisor.status());
    // Local rooms work meanwhile.
    let mut one = member(ports[0], "local", "one").await;
    let mut two = member(ports[0], "local", "two").await;
    say(&mut one, "degraded but serving").await;
    two.next_matching(WAIT, |e| said(e, "degraded but serving"))
        .await
        .expect("same-worker delivery without Redis");
    // Redis stays away for 3 s: the workers keep retrying, backing off (100 ms doubling to
    // 2 s), neither giving up nor retrying in a loop, and no worker exits or is restarted.
    let elapsed = watch_from.elapsed();
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(elapsed)).await;
    let status = supervisor.status();
    assert_eq!(
        pids(&status),
        first_pids,
        "the same worker processes all along"
    );
    for worker in status["workers"].as_array().expect("workers") {
        assert_eq!(worker["restarts"], 0, "{worker}");
        assert_eq!(worker["state"], "ready", "{worker}");
    }
    let attempts = recorder.finish();
    let window = watch_from.elapsed();
    let in_first_second = attempts
        .iter()
        .filter(|t| t.duration_since(watch_from) < Duration::from_secs(1))
        .count();
    let in_last_second = attempts
        .iter()
        .filter(|t| t.duration_since(watch_from) + Duration::from_secs(1) >= window)
        .count();
    // Two workers, a publisher and a subscriber connection each: about 5 attempts per
    // connection in 3 s with the backoff; a retry loop makes thousands.
    assert!(
        (4..=60).contains(&attempts.len()),
        "{} connection attempts in {window:?}",
        attempts.len()
    );
    assert!(
        in_last_second < in_first_second,
        "no backoff: {in_first_second} attempts in the first second, {in_last_second} in the last"
    );

    redis.restart();
    for port in ports {
        wait_until("the workers to connect once Redis is up", WAIT, || {
            http_get(port, "/ready").is_ok_and(|(status, _)| status == 200)
        });
    }
    let status = supervisor.status();
    assert_eq!(
        pids(&status),
        first_pids,
        "the same worker processes joined"
    );
    for worker in status["workers"].as_array().expect("workers") {
        assert_eq!(worker["restarts"], 0, "{worker}");
    }
}
