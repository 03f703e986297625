//! Workers in process: several workers on port 0 in one test, joined by the in-memory bus, driven
//! by a real socket.io client over websockets.

use std::time::Duration;

use chat_client::{Client, ClientError, Event};
use chat_protocol::{Limits, RoomId};
use chat_worker::{BusKind, WorkerSettings, bus::memory::MemoryBroker, report::Reporter};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

struct TestWorker {
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn start_worker(broker: &MemoryBroker, mut settings: WorkerSettings) -> TestWorker {
    // The in-memory bus does not recover sessions: without recovery a socket's quit is not
    // delayed by the presence grace.
    settings.rooms.recovery_window_secs = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let bus = BusKind::Memory(broker.clone());
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        chat_worker::run(listener, settings, bus, Reporter::disabled(), shutdown)
            .await
            .expect("worker runs");
    });
    TestWorker { base, _stop: stop }
}

async fn member(worker: &TestWorker, room: &str, name: &str) -> Client {
    let mut client = Client::connect(&worker.base, &format!("roomid={room}"))
        .await
        .expect("connect");
    let ack = client
        .emit_with_ack("join", &json!({ "username": name }), WAIT)
        .await
        .expect("join ack");
    assert_eq!(ack["ok"], json!(true), "{ack}");
    assert!(
        ack["count"].as_u64().is_some_and(|count| count >= 1),
        "{ack}"
    );
    client
}

fn is_message(event: &Event, kind: &str, text: Option<&str>) -> bool {
    event.name == "message"
        && event.data["event"] == kind
        && text.is_none_or(|text| event.data["data"]["text"] == text)
}

async fn say(client: &mut Client, text: &str) -> Value {
    client
        .emit_with_ack("say", &json!({ "text": text }), WAIT)
        .await
        .expect("say ack")
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name, &Limits::default()).expect("valid room")
}

/// Waits (bounded) until `condition` holds; the bus reacts to disconnects asynchronously.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn members_on_two_workers_chat_and_other_rooms_hear_nothing() {
    let broker = MemoryBroker::default();
    let one = start_worker(&broker, WorkerSettings::default()).await;
    let two = start_worker(&broker, WorkerSettings::default()).await;

    let mut ann = member(&one, "lobby", "ann").await;
    let mut bob = member(&two, "lobby", "bob").await;
    let mut eve = member(&two, "elsewhere", "eve").await;

    let bob_joined = ann
        .next_matching(WAIT, |e| {
            is_message(e, "join", None) && e.data["data"]["username"] == "bob"
        })
        .await
        .expect("ann sees bob join across workers");
    assert_eq!(bob_joined.data["room"], "lobby");

    let ack = say(&mut ann, "hello bob").await;
    assert_eq!(ack["ok"], true);
    let id = ack["id"].as_str().expect("say ack has an id").to_owned();
    let heard = bob
        .next_matching(WAIT, |e| is_message(e, "broadcast_say", Some("hello bob")))
        .await
        .expect("bob hears ann");
    assert_eq!(heard.data["data"]["username"], "ann");
    assert_eq!(heard.data["id"], id.as_str());
    assert!(heard.data["ts"].as_u64().is_some_and(|ts| ts > 0));
    // The sender is a member too, and hears itself.
    ann.next_matching(WAIT, |e| is_message(e, "broadcast_say", Some("hello bob")))
        .await
        .expect("ann hears herself");

    // Barrier: once eve's own message reached her, anything from lobby would have too.
    say(&mut eve, "barrier").await;
    eve.next_matching(WAIT, |e| is_message(e, "broadcast_say", Some("barrier")))
        .await
        .expect("eve hears herself");
    let leaked: Vec<Event> = eve
        .drain_events()
        .into_iter()
        .filter(|e| e.data["room"] != "elsewhere")
        .collect();
    assert!(
        leaked.is_empty(),
        "eve received another room's messages: {leaked:?}"
    );

    bob.disconnect();
    let quit = ann
        .next_matching(WAIT, |e| is_message(e, "broadcast_quit", None))
        .await
        .expect("ann sees bob quit");
    assert_eq!(quit.data["data"]["username"], "bob");
}

#[tokio::test]
async fn a_worker_subscribes_while_a_room_has_local_members() {
    let broker = MemoryBroker::default();
    let worker = start_worker(&broker, WorkerSettings::default()).await;
    let lobby = room("lobby");
    assert_eq!(broker.subscriber_count(&lobby), 0);

    let first = member(&worker, "lobby", "a").await;
    eventually("the first member to subscribe", || {
        broker.subscriber_count(&lobby) == 1
    })
    .await;
    let second = member(&worker, "lobby", "b").await;
    first.disconnect();
    // Still one local member: still subscribed, and only once.
    let mut probe = member(&worker, "lobby", "c").await;
    say(&mut probe, "still here").await;
    assert_eq!(broker.subscriber_count(&lobby), 1);
    second.disconnect();
    probe.disconnect();
    eventually("the last member's leaving to unsubscribe", || {
        broker.subscriber_count(&lobby) == 0
    })
    .await;
}

#[tokio::test]
async fn one_senders_messages_arrive_in_order_on_another_worker() {
    let broker = MemoryBroker::default();
    // A burst far above the default rate limit, which is not what this test is about.
    let unlimited = WorkerSettings {
        rate_burst: 1000.0,
        ..WorkerSettings::default()
    };
    let one = start_worker(&broker, unlimited.clone()).await;
    let two = start_worker(&broker, unlimited).await;
    let sender = member(&one, "order", "sender").await;
    let mut receiver = member(&two, "order", "receiver").await;
    const COUNT: usize = 200;
    for i in 0..COUNT {
        sender
            .emit("say", &json!({ "text": format!("m{i}") }))
            .expect("emit");
    }
    for i in 0..COUNT {
        let event = receiver
            .next_matching(WAIT, |e| is_message(e, "broadcast_say", None))
            .await
            .unwrap_or_else(|err| panic!("message {i} missing: {err}"));
        assert_eq!(
            event.data["data"]["text"],
            format!("m{i}"),
            "out of order at {i}"
        );
    }
}

/// The heartbeat runs in each websocket's session task: a connection that receives messages
/// without pause, and answers pings, must still be pinged and never be timed out.
#[tokio::test]
async fn a_busy_connection_keeps_its_heartbeat() {
    let broker = MemoryBroker::default();
    let settings = WorkerSettings {
        ping_interval_ms: 100,
        ping_timeout_ms: 100,
        rate_burst: 100_000.0,
        rate_per_sec: 100_000.0,
        ..WorkerSettings::default()
    };
    let worker = start_worker(&broker, settings).await;
    let sender = member(&worker, "busy", "sender").await;
    let mut listener = member(&worker, "busy", "listener").await;
    // About 1.5 s of traffic: 15 ping cycles, with messages queued for the listener throughout.
    const BATCHES: usize = 30;
    const PER_BATCH: usize = 50;
    for batch in 0..BATCHES {
        for i in 0..PER_BATCH {
            sender
                .emit(
                    "say",
                    &json!({ "text": format!("m{}", batch * PER_BATCH + i) }),
                )
                .expect("emit");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 0..BATCHES * PER_BATCH {
        let event = listener
            .next_matching(WAIT, |e| is_message(e, "broadcast_say", None))
            .await
            .unwrap_or_else(|err| panic!("message {n} missing: {err}"));
        assert_eq!(event.data["data"]["text"], format!("m{n}"));
    }
    // Pinged all along (about 15 cycles), and still connected.
    let pings = listener.pings_answered();
    assert!(
        pings >= 8,
        "only {pings} pings in about 15 ping intervals under load"
    );
    let ack = say(&mut listener, "still here").await;
    assert_eq!(ack["ok"], true);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_worker_keeps_serving() {
    let broker = MemoryBroker::default();
    let worker = start_worker(&broker, WorkerSettings::default()).await;

    for bad_room in ["bad%20room", "a%2Fb", &"r".repeat(65)] {
        match Client::connect(&worker.base, &format!("roomid={bad_room}")).await {
            Err(ClientError::Refused(message)) => {
                assert!(message.contains("invalid room id"), "{message}")
            }
            other => panic!(
                "room {bad_room:?} was not refused: {:?}",
                other.map(|c| c.sid().to_owned())
            ),
        }
    }

    let mut roomless = Client::connect(&worker.base, "")
        .await
        .expect("connect without room");
    let ack = roomless
        .emit_with_ack("join", &json!({ "username": "x" }), WAIT)
        .await
        .expect("ack");
    assert_eq!(ack["error"]["code"], "no_room");

    let mut client = Client::connect(&worker.base, "roomid=errors")
        .await
        .expect("connect");
    let code = |ack: Value| ack["error"]["code"].as_str().unwrap_or("none").to_owned();
    let before_join = client
        .emit_with_ack("say", &json!({ "text": "hi" }), WAIT)
        .await
        .expect("ack");
    assert_eq!(code(before_join), "not_joined");
    for (payload, expected) in [
        (json!(42), "invalid_payload"),
        (json!(null), "invalid_payload"),
        (json!([1, 2]), "invalid_payload"),
        (json!({ "name": "x" }), "invalid_payload"),
        (json!({ "username": "" }), "invalid_username"),
        (json!({ "username": "x".repeat(33) }), "invalid_username"),
        (json!({ "username": "a\u{0}b" }), "invalid_username"),
        (
            json!({ "username": "ann\u{202E}gpj.exe" }),
            "invalid_username",
        ),
        (json!({ "username": "ann\u{2067}bob" }), "invalid_username"),
    ] {
        let ack = client
            .emit_with_ack("join", &payload, WAIT)
            .await
            .expect("ack");
        assert_eq!(code(ack), expected, "join {payload}");
    }
    let ack = client
        .emit_with_ack("join", &json!({ "username": "ok" }), WAIT)
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true);
    let again = client
        .emit_with_ack("join", &json!({ "username": "ok" }), WAIT)
        .await
        .expect("ack");
    assert_eq!(code(again), "already_joined");
    for (payload, expected) in [
        (json!({ "text": "" }), "invalid_text"),
        (json!({ "text": "x".repeat(2001) }), "invalid_text"),
        (json!({ "text": "\u{1b}[2J" }), "invalid_text"),
        (json!({ "text": "pay \u{202B}123" }), "invalid_text"),
        (json!({ "text": "pay \u{2068}123\u{2069}" }), "invalid_text"),
        (json!({ "text": 7 }), "invalid_payload"),
        (json!(true), "invalid_payload"),
    ] {
        let ack = client
            .emit_with_ack("say", &payload, WAIT)
            .await
            .expect("ack");
        assert_eq!(code(ack), expected, "say {payload}");
    }
    // An event the server does not know is answered, not left without an ack.
    let ack = client
        .emit_with_ack("nope", &json!({}), WAIT)
        .await
        .expect("ack");
    assert_eq!(code(ack), "unknown_event");
    // Garbage packets, each on a connection of its own that has joined, followed by an event
    // with an ack on the same connection: a malformed packet closes that connection (the ack
    // never comes); an unknown event without an ack is ignored (the ack comes).
    for (garbage, closes) in [
        ("42not json", true),
        ("4", true),
        ("42[]", true),
        ("42[1,2]", true),
        ("42[\"say\"", true),
        ("99", true),
        ("42[\"nope\",{}]", false),
    ] {
        let mut ws = raw_socket(&worker, "errors", None).await;
        raw_send(&mut ws, "420[\"join\",{\"username\":\"garbage\"}]").await;
        assert!(
            raw_answer(&mut ws, "430")
                .await
                .is_some_and(|answer| answer.starts_with("430[{\"ok\":true"))
        );
        raw_send(&mut ws, garbage).await;
        raw_send(&mut ws, "421[\"hb\"]").await;
        let answer = raw_answer(&mut ws, "431").await;
        assert_eq!(answer.is_none(), closes, "after {garbage:?}: {answer:?}");
    }
    let mut fresh = member(&worker, "errors", "fresh").await;
    let ack = say(&mut fresh, "still serving").await;
    assert_eq!(ack["ok"], true);
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_only_that_connection() {
    let broker = MemoryBroker::default();
    let settings = WorkerSettings {
        max_message_bytes: 4096,
        ..WorkerSettings::default()
    };
    let worker = start_worker(&broker, settings).await;
    let mut big = member(&worker, "big", "big").await;
    let mut small = member(&worker, "big", "small").await;
    big.send_raw(format!("42[\"say\",{{\"text\":\"{}\"}}]", "x".repeat(8192)))
        .expect("send");
    big.closed(WAIT)
        .await
        .expect("the oversized sender is cut off");
    let ack = say(&mut small, "unaffected").await;
    assert_eq!(ack["ok"], true);
}

#[tokio::test]
async fn a_flooding_client_is_refused_and_others_are_not() {
    let broker = MemoryBroker::default();
    let settings = WorkerSettings {
        rate_per_sec: 1.0,
        rate_burst: 3.0,
        ..WorkerSettings::default()
    };
    let worker = start_worker(&broker, settings).await;
    // The join spends one event of the burst.
    let mut flooder = member(&worker, "flood", "flooder").await;
    let mut calm = member(&worker, "flood", "calm").await;
    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(say(&mut flooder, &format!("flood {i}")).await);
    }
    let accepted = answers.iter().filter(|a| a["ok"] == true).count();
    assert_eq!(accepted, 2, "burst of 3 minus the join: {answers:?}");
    let refused = answers.last().expect("five answers");
    assert_eq!(refused["error"]["code"], "rate_limited");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 1 per second")),
        "{refused}"
    );
    // Another client's budget is its own.
    assert_eq!(say(&mut calm, "my turn").await["ok"], true);
    // Exactly the accepted messages were broadcast, before calm's own.
    let mut floods_heard = 0;
    loop {
        let event = calm.next_event(WAIT).await.expect("calm's events");
        if is_message(&event, "broadcast_say", Some("my turn")) {
            break;
        }
        if event.data["data"]["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("flood"))
        {
            floods_heard += 1;
        }
    }
    assert_eq!(floods_heard, 2, "refused messages must not reach the room");
}

type RawSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A socket.io client that joins a room and then never reads again, with a tiny receive
/// buffer so the server's writes to it block soon.
async fn stalled_member(worker: &TestWorker, room: &str, name: &str) -> RawSocket {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = raw_socket(worker, room, Some(4096)).await;
    let join = format!("42[\"join\",{{\"username\":\"{name}\"}}]");
    ws.send(Message::text(join)).await.expect("join");
    ws
}

/// A websocket that completed the socket.io handshake by hand, for sending what no client
/// library would.
async fn raw_socket(worker: &TestWorker, room: &str, receive_buffer: Option<u32>) -> RawSocket {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    async fn next_text(ws: &mut RawSocket) -> String {
        loop {
            match ws.next().await {
                // engine.io pings may come first; this client never answers them.
                Some(Ok(Message::Text(text))) if text.as_str() != "2" => return text.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("raw socket's handshake ended: {other:?}"),
            }
        }
    }
    let address = worker.base.trim_start_matches("http://");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket
            .set_recv_buffer_size(size)
            .expect("small receive buffer");
    }
    let stream = socket
        .connect(address.parse().expect("worker address"))
        .await
        .expect("tcp connect");
    let url = format!("ws://{address}/socket.io/?EIO=4&transport=websocket&roomid={room}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    assert!(next_text(&mut ws).await.starts_with('0'), "engine.io open");
    ws.send(Message::text("40")).await.expect("connect");
    let connected = next_text(&mut ws).await;
    assert!(
        connected.starts_with("40"),
        "socket.io connect: {connected}"
    );
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_room_is_unaffected() {
    let broker = MemoryBroker::default();
    let settings = WorkerSettings {
        write_stall_timeout_ms: 500,
        rate_per_sec: 100_000.0,
        rate_burst: 100_000.0,
        ..WorkerSettings::default()
    };
    let worker = start_worker(&broker, settings).await;
    let mut reader = member(&worker, "slow", "reader").await;
    let _stalled = stalled_member(&worker, "slow", "stalled").await;
    reader
        .next_matching(WAIT, |e| {
            is_message(e, "join", None) && e.data["data"]["username"] == "stalled"
        })
        .await
        .expect("the stalled member joined");
    let sender = member(&worker, "slow", "sender").await;

    // Large messages until the stalled member is cut off (its quit reaches the room), bounded.
    let text = "s".repeat(2000);
    let mut sent = 0;
    let mut received = 0;
    let mut cut_off = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cut_off && tokio::time::Instant::now() < deadline && sent < 20_000 {
        for _ in 0..50 {
            sender
                .emit("say", &json!({ "text": text }))
                .expect("sender's say");
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        for event in reader.drain_events() {
            if is_message(&event, "broadcast_say", Some(&text)) {
                received += 1;
            } else if is_message(&event, "broadcast_quit", None) {
                assert_eq!(event.data["data"]["username"], "stalled");
                cut_off = true;
            }
        }
    }
    assert!(
        cut_off,
        "the stalled member was not cut off after {sent} messages"
    );
    // The rest of the room got every message.
    while received < sent {
        let event = reader
            .next_event(WAIT)
            .await
            .expect("the remaining messages");
        if is_message(&event, "broadcast_say", Some(&text)) {
            received += 1;
        }
    }
    assert_eq!(received, sent);
}

#[tokio::test]
async fn hostile_transport_input_never_takes_the_worker_down() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{
        Message,
        protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        },
    };
    let broker = MemoryBroker::default();
    let settings = WorkerSettings {
        rate_per_sec: 100_000.0,
        rate_burst: 100_000.0,
        ..WorkerSettings::default()
    };
    let worker = start_worker(&broker, settings).await;

    // Invalid UTF-8 in a text frame: a protocol error that closes that connection only.
    let mut bad_utf8 = raw_socket(&worker, "hostile", None).await;
    let frame = Frame::message(vec![b'4', b'2', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    let _ = bad_utf8.send(Message::Frame(frame)).await;
    let closed = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        loop {
            match bad_utf8.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "invalid UTF-8 closes the connection");
    // Binary garbage where socket.io expects attachments it never announced: that connection
    // is closed (the ack of the event after it never comes).
    let mut binary = raw_socket(&worker, "hostile", None).await;
    binary
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .expect("send binary");
    raw_send(&mut binary, "421[\"hb\"]").await;
    assert_eq!(
        raw_answer(&mut binary, "431").await,
        None,
        "binary garbage closes"
    );

    // A thousand roomid parameters (a 12 KB query, within --max-header-bytes): the first one
    // counts (a member of r0 hears the join).
    let mut in_r0 = member(&worker, "r0", "in_r0").await;
    let many_rooms = (0..1000)
        .map(|i| format!("roomid=r{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut first_counts = Client::connect(&worker.base, &many_rooms)
        .await
        .expect("connect with many roomids");
    let ack = first_counts
        .emit_with_ack("join", &json!({ "username": "many" }), WAIT)
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true);
    let joined = in_r0
        .next_matching(WAIT, |e| {
            is_message(e, "join", None) && e.data["data"]["username"] != "in_r0"
        })
        .await
        .expect("the member of r0 hears the join");
    assert_eq!(joined.data["room"], "r0");
    assert_eq!(joined.data["data"]["username"], "many");

    // A huge room id is refused at the handshake.
    let huge = format!("roomid={}", "r".repeat(10_000));
    assert!(matches!(
        Client::connect(&worker.base, &huge).await,
        Err(ClientError::Refused(_))
    ));

    // Thousands of joins from one socket: each answered `already_joined`, none broadcast. A
    // member that joined before hears, up to the joiner's next message, its one first join.
    let mut listener = member(&worker, "hostile", "listener").await;
    let mut joiner = raw_socket(&worker, "hostile", None).await;
    raw_send(&mut joiner, "420[\"join\",{\"username\":\"joiner\"}]").await;
    assert!(
        raw_answer(&mut joiner, "430")
            .await
            .is_some_and(|answer| answer.starts_with("430[{\"ok\":true"))
    );
    // In batches of 50 (a client that pipelines more than its send queue without reading
    // loses answers, by design).
    const JOINS: u32 = 3000;
    for batch in (1..=JOINS).step_by(50) {
        for id in batch..batch + 50 {
            raw_send(
                &mut joiner,
                &format!("42{id}[\"join\",{{\"username\":\"again\"}}]"),
            )
            .await;
        }
        for id in batch..batch + 50 {
            let answer = raw_answer(&mut joiner, &format!("43{id}[")).await;
            let answer = answer.unwrap_or_else(|| panic!("join {id} unanswered: closed"));
            assert!(answer.contains("already_joined"), "join {id}: {answer}");
        }
    }
    raw_send(&mut joiner, "42[\"say\",{\"text\":\"after the flood\"}]").await;
    let mut joins = Vec::new();
    loop {
        let event = listener
            .next_event(WAIT)
            .await
            .expect("the listener's events");
        if is_message(&event, "broadcast_say", Some("after the flood")) {
            break;
        }
        if is_message(&event, "join", None) && event.data["data"]["username"] != "listener" {
            joins.push(event.data["data"]["username"].clone());
        }
    }
    assert_eq!(joins.first(), Some(&json!("joiner")), "its first join is");
    assert_eq!(joins.len(), 1, "refused joins are never broadcast");

    let mut fresh = member(&worker, "hostile", "fresh").await;
    assert_eq!(say(&mut fresh, "still serving").await["ok"], true);
}

#[tokio::test]
async fn unknown_events_are_paid_for_from_the_rate_budget() {
    let broker = MemoryBroker::default();
    let settings = WorkerSettings {
        rate_per_sec: 1.0,
        rate_burst: 3.0,
        ..WorkerSettings::default()
    };
    let worker = start_worker(&broker, settings).await;
    // The join spends one event of the burst, two unknown events the rest.
    let mut client = member(&worker, "paid", "client").await;
    for _ in 0..2 {
        let ack = client
            .emit_with_ack("nope", &json!({}), WAIT)
            .await
            .expect("ack");
        assert_eq!(ack["error"]["code"], "unknown_event", "{ack}");
    }
    let ack = client
        .emit_with_ack("nope", &json!({}), WAIT)
        .await
        .expect("ack");
    assert_eq!(ack["error"]["code"], "rate_limited", "{ack}");
    assert_eq!(
        say(&mut client, "spent").await["error"]["code"],
        "rate_limited"
    );
}

async fn raw_send(ws: &mut RawSocket, packet: &str) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(packet))
        .await
        .expect("raw send");
}

/// The next text frame of a raw socket that starts with `prefix` (others, pings and room
/// messages, are skipped), or None once the server closed the connection.
async fn raw_answer(ws: &mut RawSocket, prefix: &str) -> Option<String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.as_str().starts_with(prefix) => {
                    return Some(text.to_string());
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("neither {prefix}... nor a close within {WAIT:?}"))
}
