//! Runs one worker: builds the socket.io service from the settings, wires hub, bus and node,
//! serves HTTP on the given listener, and drains on the given shutdown signal.

use std::{future::Future, sync::Arc, time::Instant};

use chat_protocol::{bus::NodeId, report::WorkerReport};
use socketioxide::{SocketIo, layer::SocketIoLayer};

use crate::{
    bus::{Bus, Inbound, redis::RedisBus},
    config::WorkerSettings,
    fanout::LocalFanout,
    http,
    hub::Hub,
    node::Node,
    people::{People, inbox::Inbox, sessions::Sessions},
    report::Reporter,
};

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
    let hub = Arc::new(Hub::default());
    let fanout = LocalFanout::new(io.clone(), origin);
    let sessions = Arc::new(Sessions::new(
        settings.people.device_policy,
        settings.people.session_queue,
    ));
    let (moderated, moderated_queue) = if settings.people.moderation {
        let (queue, received) = tokio::sync::mpsc::channel(settings.bus_queue);
        (
            Some((settings.people.filter_return_channel.clone(), queue)),
            Some(received),
        )
    } else {
        (None, None)
    };
    let inbound = Inbound {
        rooms: fanout.clone(),
        users: Arc::clone(&sessions),
        moderated,
    };
    let (bus, inbox): (Arc<dyn Bus>, Option<Inbox>) = match bus_kind {
        BusKind::Redis => {
            let bus = RedisBus::start(&settings, Arc::clone(&hub), inbound)?;
            let inbox = Inbox::new(bus.commands(), &settings.channel_prefix, &settings.people);
            (bus, Some(inbox))
        }
        BusKind::Memory(broker) => (broker.bus(Arc::clone(&hub), inbound), None),
    };
    let people = Arc::new(People::new(
        Arc::clone(&hub),
        Arc::clone(&bus),
        sessions,
        inbox,
        settings.people.clone(),
        settings.limits(),
        origin,
    ));
    if let Some(mut queue) = moderated_queue {
        let people = Arc::clone(&people);
        tokio::spawn(async move {
            while let Some(item) = queue.recv().await {
                people.deliver_moderated(&item).await;
            }
        });
    }
    let node = Arc::new(Node::new(
        hub,
        bus,
        fanout,
        people,
        settings.limits(),
        settings.rate_limit(),
    ));
    node.attach(&io);

    // The detaching layer runs first (outermost), before socketioxide keeps the request parts.
    let app = http::routes(Arc::clone(&node))
        .layer(layer)
        .layer(axum::middleware::map_request(http::detach_from_read_buffer));
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
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
    if tokio::time::timeout(remaining(), io.close()).await.is_err() {
        tracing::warn!("clients did not all close within the grace period");
    }
    match tokio::time::timeout(remaining(), server).await {
        Ok(_) => tracing::info!("drained"),
        Err(_) => tracing::warn!("connections still open at the end of the grace period"),
    }
    reporter.send(&node.counts());
    Ok(())
}
