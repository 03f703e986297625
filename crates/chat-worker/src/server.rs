//! Runs one worker: builds the socket.io service from the settings, wires hub, bus and node,
//! serves HTTP on the given listener, and drains on the given shutdown signal.

use std::{future::Future, sync::Arc, time::Instant};

use chat_protocol::{bus::NodeId, report::WorkerReport};
use socketioxide::{SocketIo, layer::SocketIoLayer};

use tokio::sync::mpsc;

use crate::{
    auth::{self, Authenticator},
    bus::{Bus, Inbound, redis::RedisBus},
    config::WorkerSettings,
    fanout::LocalFanout,
    http,
    hub::Hub,
    node::Node,
    origin::{self, Origins},
    people::{People, inbox::Inbox, sessions::Sessions},
    push::{
        Pusher,
        api::{self, ApiState},
        unread::Unread,
    },
    report::Reporter,
    stall::GuardedListener,
    store::{self, Store},
};

/// Longest a draining worker waits for its farewell frames to reach Redis.
const FAREWELL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Builds the engine and socket.io configuration from the settings: the one place limits and
/// intervals reach socketioxide.
pub fn socket_io(settings: &WorkerSettings) -> (SocketIoLayer, SocketIo) {
    SocketIo::builder()
        .ping_interval(settings.ping_interval())
        .ping_timeout(settings.ping_timeout())
        .connect_timeout(settings.connect_timeout())
        .max_buffer_size(settings.send_queue)
        .max_payload(settings.max_message_bytes as u64)
        .ws_max_message_size(settings.max_message_bytes)
        .ws_max_frame_size(settings.max_message_bytes)
        .ws_read_buffer_size(settings.ws_read_buffer_bytes)
        .build_layer()
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

    // Outermost first: the detaching layer runs before socketioxide keeps the request parts,
    // and the origin guard before anything is served.
    let origins = Arc::new(Origins::new(&settings.auth.allowed_origins));
    let app = routes
        .layer(layer)
        .layer(axum::middleware::from_fn_with_state(origins, origin::guard))
        .layer(axum::middleware::map_request(http::detach_from_read_buffer));
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = GuardedListener::new(listener, settings.write_stall_timeout());
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = accepting_stopped.await;
    });
    let mut server = tokio::spawn(async move { server.await });

    let reporter = Arc::new(reporter);
    reporter.send(&WorkerReport::Ready);
    reporter.spawn_counts(Arc::clone(&node));
    tracing::info!(origin = %origin, "worker serving");

    tokio::select! {
        () = shutdown => {}
        finished = &mut server => {
            // The server stops on its own only on an accept error it cannot recover from.
            return match finished {
                Ok(Ok(())) => Err(anyhow::anyhow!("server stopped unexpectedly")),
                Ok(Err(err)) => Err(anyhow::Error::new(err).context("server failed")),
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
    let fanout = LocalFanout::new(io, origin);
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
        rooms: fanout.clone(),
        users: Arc::clone(&sessions),
        backend,
    };

    // Three connections to Redis: the bus publishes on one and listens on another; the store
    // runs the scripts behind acknowledgements (and their WAITs) on a third, so neither
    // delays the other.
    let (bus, store): (Arc<dyn Bus>, Option<Store>) = match bus_kind {
        BusKind::Redis => {
            let config = store::redis_config(&settings.redis_url, &settings.redis)?;
            let bus = RedisBus::start(settings, &config, Arc::clone(&hub), inbound)?;
            const STORE_CHANNEL_CAPACITY: usize = 64;
            let client = store::build_client(&config, &settings.redis, STORE_CHANNEL_CAPACITY)?;
            fred::prelude::ClientLike::connect(&client);
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
        let fanout = fanout.clone();
        move |frame| {
            let fanout = fanout.clone();
            async move { fanout.announce(&frame).await }
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

    let node = Arc::new(Node::new(
        hub,
        bus,
        fanout,
        people,
        authenticator,
        settings.limits(),
        settings.rate_limit(),
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
