//! Runs one worker: builds the socket.io service from the settings, wires hub, bus and node,
//! serves HTTP on the given listener, and drains on the given shutdown signal.

use std::{future::Future, sync::Arc, time::Instant};

use chat_protocol::{bus::NodeId, report::WorkerReport};
use socketioxide::{ParserConfig, SocketIo, SocketIoBuilder, layer::SocketIoLayer};

use tokio::sync::mpsc;

use crate::{
    auth::{self, Authenticator},
    bus::{Bus, Inbound, redis::RedisBus},
    config::{AuthMode, PacketParser, WorkerSettings},
    dialects::Dialects,
    edge::{
        self,
        clients::{Clients, TrustedProxies},
        handshake::{self, Handshakes},
        serve::ServeOptions,
    },
    http,
    node::Node,
    origin::{self, Origins},
    people::{People, inbox::Inbox, sessions::Sessions},
    protocols,
    push::{
        Pusher,
        api::{self, ApiState},
        unread::Unread,
    },
    report::Reporter,
    rooms::{Rooms, hub::Hub, legacy::Legacy, presence},
    store::{self, Store, rooms::RoomStore},
};

/// Longest a draining worker waits for its farewell frames to reach Redis.
const FAREWELL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a worker sums up, at info, what it refused at the edge (only if it refused any).
const REFUSAL_SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Builds the engine and socket.io configuration of the workers from the settings: the one
/// place limits and intervals reach socketioxide. Packets with binary attachments are refused
/// (the connection is closed, as for any packet the parser refuses): the product never needs
/// binary from clients, and socketioxide would otherwise buffer up to 10 MB of attachments per
/// socket, 10,000 of them, with a completion timeout checked only when the next one arrives.
/// The packet parser is `--parser`'s, with the guard that answers clients of the other one
/// ([`protocols`]).
pub fn socket_io(settings: &WorkerSettings) -> (SocketIoLayer, SocketIo) {
    let builder = socket_io_builder(settings);
    protocols::install_parser_guard(settings.protocol.parser);
    match settings.protocol.parser {
        PacketParser::Json => builder
            .with_parser(
                ParserConfig::common()
                    .max_incoming_binaries(0)
                    .max_incoming_binary_buf_size(0),
            )
            .build_layer(),
        // msgpack carries binary inline, within the packet: no attachments to refuse.
        PacketParser::Msgpack => builder.with_parser(ParserConfig::msgpack()).build_layer(),
    }
}

/// The engine limits and intervals from the settings, with socketioxide's parser defaults
/// (binary attachments accepted): for the protocol conformance fixture, whose suites send them.
pub fn socket_io_builder(settings: &WorkerSettings) -> SocketIoBuilder {
    SocketIo::builder()
        .ping_interval(settings.ping_interval())
        .ping_timeout(settings.ping_timeout())
        .connect_timeout(settings.connect_timeout())
        .max_buffer_size(settings.send_queue)
        .max_payload(settings.max_message_bytes as u64)
        .ws_max_message_size(settings.max_message_bytes)
        .ws_max_frame_size(settings.max_message_bytes)
        .ws_read_buffer_size(settings.ws_read_buffer_bytes)
}

/// A random id for this process, without a random-number crate: std's hasher keys are random
/// per process.
pub fn random_node_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    NodeId(hasher.finish())
}

/// Which bus the worker uses. Production uses Redis; tests may share an in-memory broker.
pub enum BusKind {
    Redis,
    Memory(crate::bus::memory::MemoryBroker),
}

/// Serves until `shutdown` resolves, then drains: stops accepting, closes every client (they
/// reconnect elsewhere), and returns once connections are gone or the grace period is over.
pub async fn run(
    listener: tokio::net::TcpListener,
    settings: WorkerSettings,
    bus_kind: BusKind,
    reporter: Reporter,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (layer, io) = socket_io(&settings);
    let origin = random_node_id();
    let (node, routes) = assemble(&settings, io.clone(), origin, bus_kind)?;
    node.attach(&io);

    // Outermost last: the host and origin guard runs first, then the engine.io 3 gate
    // (`--allow-eio3`), then the handshake guard (limits, and the trimmed, owned request parts
    // socketioxide keeps), then socketioxide.
    let origins = Arc::new(Origins::with_hosts(
        &settings.auth.allowed_origins,
        &settings.auth.allowed_hosts,
    ));
    let trusted = TrustedProxies::parse(&settings.edge.trusted_proxies)
        .map_err(|msg| anyhow::anyhow!(msg))?;
    let clients = Arc::new(Clients::new(
        trusted,
        settings.edge.max_connections_per_ip,
        settings.edge.max_sessions_per_connection,
    ));
    let handshakes = Arc::new(Handshakes {
        clients: Arc::clone(&clients),
        auth_cookie: (settings.auth.auth == AuthMode::Jwt)
            .then(|| settings.auth.auth_cookie.clone()),
    });
    let app = routes
        .layer(layer)
        .layer(axum::middleware::from_fn_with_state(
            handshakes,
            handshake::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            settings.protocol.allow_eio3,
            protocols::eio3_gate,
        ))
        .layer(axum::middleware::from_fn_with_state(origins, origin::guard));
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        header_read_timeout: settings.edge.header_read_timeout(),
        body_read_timeout: settings.edge.body_read_timeout(),
        max_header_bytes: settings.edge.max_header_bytes,
        write_stall_timeout: settings.write_stall_timeout(),
        max_connections: None,
        clients: Some(clients),
    };
    let server = edge::serve::serve(listener, app, options, async move {
        let _ = accepting_stopped.await;
    });
    let mut server = tokio::spawn(server);
    let summary = edge::counters::spawn_summary(REFUSAL_SUMMARY_EVERY);

    let reporter = Arc::new(reporter);
    reporter.send(&WorkerReport::Ready);
    reporter.spawn_counts(Arc::clone(&node));
    tracing::info!(origin = %origin, "worker serving");

    tokio::select! {
        () = shutdown => {}
        finished = &mut server => {
            // The server stops on its own only if its task panicked.
            return match finished {
                Ok(()) => Err(anyhow::anyhow!("server stopped unexpectedly")),
                Err(join) => Err(anyhow::Error::new(join).context("server task failed")),
            };
        }
    }

    let deadline = Instant::now() + settings.shutdown_grace();
    tracing::info!(grace_ms = settings.shutdown_grace_ms, "draining");
    reporter.send(&WorkerReport::Draining);
    let _ = stop_accepting.send(());
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let quits = node.farewell(&io);
    // The quits must leave before the process does; a second at most.
    let flushed = tokio::time::timeout(remaining().min(FAREWELL_FLUSH), node.flush_bus()).await;
    tracing::debug!(quits, flushed = flushed.is_ok(), "farewell sent");
    if tokio::time::timeout(remaining(), io.close()).await.is_err() {
        tracing::warn!("clients did not all close within the grace period");
    }
    match tokio::time::timeout(remaining(), server).await {
        Ok(_) => tracing::info!("drained"),
        Err(_) => tracing::warn!("connections still open at the end of the grace period"),
    }
    summary.abort();
    reporter.send(&node.counts());
    reporter.send_metrics(&node);
    Ok(())
}

/// Builds the worker's parts from the settings: hub, sessions, bus, stores, node, and the HTTP
/// routes (page, health, push API), with a task per backend channel.
fn assemble(
    settings: &WorkerSettings,
    io: SocketIo,
    origin: NodeId,
    bus_kind: BusKind,
) -> anyhow::Result<(Arc<Node>, axum::Router)> {
    let authenticator = Authenticator::from_settings(&settings.auth)?;
    let api_key = auth::api_key(&settings.auth)?;
    let prefix = &settings.channel_prefix;
    let hub = Arc::new(Hub::default());
    let rooms = Rooms::new(
        io,
        origin,
        settings.rooms.clone(),
        Arc::clone(&hub),
        Legacy::from_settings(settings),
    );
    let sessions = Arc::new(Sessions::new(
        settings.people.device_policy,
        settings.people.session_queue,
    ));

    let mut backend = Vec::new();
    let mut listen = |channel: &str| {
        let (queue, received) = mpsc::channel(settings.bus_queue);
        backend.push((channel.to_owned(), queue));
        received
    };
    let announcements = listen(&Pusher::broadcast_channel(prefix));
    let moderated = settings
        .people
        .moderation
        .then(|| listen(&settings.people.filter_return_channel));
    let notifications = (!settings.push.notification_channel.is_empty())
        .then(|| listen(&settings.push.notification_channel));
    let inbound = Inbound {
        rooms: Arc::clone(&rooms),
        users: Arc::clone(&sessions),
        backend,
    };

    // Three connections to Redis: the bus publishes on one and listens on another; the store
    // runs the scripts behind acknowledgements (and their WAITs) on a third, so neither
    // delays the other.
    let (bus, store): (Arc<dyn Bus>, Option<Store>) = match bus_kind {
        BusKind::Redis => {
            let config = store::redis_config(&settings.redis_url, &settings.redis)?;
            let bus = RedisBus::start(settings, &config, origin, Arc::clone(&hub), inbound)?;
            const STORE_CHANNEL_CAPACITY: usize = 64;
            let client = store::build_client(&config, &settings.redis, STORE_CHANNEL_CAPACITY)?;
            fred::prelude::ClientLike::connect(&client);
            let rooms_settings = &settings.rooms;
            if rooms_settings.history_size > 0
                || rooms_settings.recovery()
                || rooms_settings.legacy()
            {
                // Presence runs on the store connection: heartbeats, and reaping dead workers
                // (in legacy mode too: node's members hear the quits of a dead worker's).
                let room_store = RoomStore::new(client.clone(), prefix, origin, &settings.rooms);
                presence::spawn(
                    client.clone(),
                    prefix.clone(),
                    Arc::clone(&rooms),
                    room_store,
                );
            }
            let [publisher, subscriber] = bus.clients();
            store::sentinel::follow_switches(
                &config,
                &settings.redis,
                vec![publisher, subscriber, client.clone()],
            )?;
            let store = Store::new(
                client,
                prefix,
                settings.durability(),
                settings.redis.replica_ack_timeout(),
            );
            (bus, Some(store))
        }
        BusKind::Memory(broker) => (broker.bus(Arc::clone(&hub), inbound), None),
    };
    rooms.set_bus(Arc::clone(&bus));
    let store_client = store.as_ref().map(|store| store.client().clone());
    let unread = store
        .as_ref()
        .map(|store| Unread::new(store.clone(), &settings.push));
    let stores = store
        .as_ref()
        .zip(unread.clone())
        .map(|(store, unread)| (Inbox::new(store.clone(), &settings.people), unread));
    let pusher = store
        .zip(unread)
        .map(|(store, unread)| Pusher::new(store, unread, settings.limits(), &settings.push));
    let people = Arc::new(People::new(
        Arc::clone(&hub),
        Arc::clone(&bus),
        sessions,
        stores,
        settings.people.clone(),
        settings.limits(),
        origin,
    ));

    serve_channel(announcements, {
        let rooms = Arc::clone(&rooms);
        move |frame| {
            let rooms = Arc::clone(&rooms);
            async move { rooms.announce(&frame).await }
        }
    });
    if let Some(queue) = moderated {
        let people = Arc::clone(&people);
        serve_channel(queue, move |item| {
            let people = Arc::clone(&people);
            async move { people.deliver_moderated(&item).await }
        });
    }
    if let (Some(queue), Some(pusher)) = (notifications, pusher.clone()) {
        serve_channel(queue, move |message| {
            let pusher = pusher.clone();
            async move { pusher.on_channel_notification(&message).await }
        });
    }

    let dialects = Dialects::new(Arc::clone(&people), pusher.clone(), settings.limits());
    let node = Arc::new(Node::new(
        hub,
        bus,
        rooms,
        people,
        dialects,
        authenticator,
        settings.limits(),
        settings.rate_limit(),
        store_client,
    ));
    let api = Arc::new(ApiState {
        key: api_key,
        pusher,
        limits: settings.limits(),
        max_body: settings.push.max_api_body_bytes,
    });
    let routes = http::routes(Arc::clone(&node)).merge(api::routes(api));
    Ok((node, routes))
}

/// Hands each message of a backend channel to `handle`, one at a time, in arrival order.
fn serve_channel<F, Fut>(mut queue: mpsc::Receiver<String>, handle: F)
where
    F: Fn(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        while let Some(message) = queue.recv().await {
            handle(message).await;
        }
    });
}
