//! The Redis bus: PUBLISH on one connection, SUBSCRIBE on another, one channel per topic.
//!
//! Three tasks, each owning its connection's side:
//! - the publisher drains the publish queue and sends what it finds as one pipeline per batch,
//!   so frames leave in queue order and a burst costs one round trip;
//! - the subscription keeper reconciles SUBSCRIBE state with the hub: after occupancy notices
//!   (batched), after every (re)connection (fred does not re-subscribe by itself), and on a
//!   periodic sweep that repairs anything a failed command left behind;
//! - the receiver hands each incoming frame to the local fan-out (rooms) or the sessions (users).
//!
//! The publishing connection also serves the inbox's commands ([`RedisBus::commands`]).

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chat_protocol::{
    RoomId,
    bus::{ChannelTopic, Topic, room_channel, topic_of_channel},
};
use fred::{
    prelude::{ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy},
    types::Builder,
};
use tokio::sync::{mpsc, oneshot};

use super::{Bus, Inbound};
use crate::{config::WorkerSettings, hub::Hub};

/// Frames sent in one pipeline at most.
const PUBLISH_BATCH: usize = 256;
/// Channels named in one SUBSCRIBE or UNSUBSCRIBE at most.
const SUBSCRIBE_BATCH: usize = 512;
/// How often the keeper re-checks every room, whatever happened.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Reconnection backoff: from 100 ms, doubling, to 2 s, forever.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum RedisBusError {
    #[error("invalid redis url {url:?}")]
    Url {
        url: String,
        #[source]
        source: fred::error::Error,
    },
    #[error("could not create the redis client")]
    Client(#[source] fred::error::Error),
}

pub struct RedisBus {
    prefix: String,
    publish_queue: mpsc::Sender<(String, String)>,
    occupancy: mpsc::UnboundedSender<Topic>,
    prepares: mpsc::UnboundedSender<(Topic, oneshot::Sender<()>)>,
    publisher: fred::prelude::Client,
    subscriber: fred::prelude::Client,
    dropped_publishes: AtomicU64,
    publish_queue_full: AtomicBool,
    /// Frames taken off the queue whose pipeline has not answered yet.
    in_flight: Arc<AtomicUsize>,
}

impl RedisBus {
    /// Creates the connections and starts the bus tasks. Does not wait for Redis: the worker
    /// serves local rooms while the bus connects, and keeps retrying if Redis is away.
    pub fn start(
        settings: &WorkerSettings,
        hub: Arc<Hub>,
        inbound: Inbound,
    ) -> Result<Arc<Self>, RedisBusError> {
        let mut config =
            Config::from_url(&settings.redis_url).map_err(|source| RedisBusError::Url {
                url: crate::redact::redact_url(&settings.redis_url),
                source,
            })?;
        // Keep trying when Redis is away at start too, not only after a first success.
        config.fail_fast = false;
        // fred preallocates every broadcast channel of a client (messages, errors, reconnects,
        // ...) at this capacity: only the subscriber receives frames, so only it gets the large
        // one. Measured: an idle worker fell from 28 MB to 11 MB RSS with this and the
        // subscriber at 4096 instead of both at 16384.
        const PUBLISHER_CHANNEL_CAPACITY: usize = 64;
        let build = |receive_capacity: usize| {
            Builder::from_config(config.clone())
                .with_performance_config(|perf| {
                    perf.broadcast_channel_capacity = receive_capacity;
                    perf.default_command_timeout = Duration::from_secs(2);
                })
                .with_connection_config(|conn| {
                    conn.connection_timeout = Duration::from_secs(2);
                    conn.internal_command_timeout = Duration::from_secs(2);
                    // Commands issued while Redis is away wait here, up to this many; older
                    // room traffic is worth less than a bounded memory.
                    conn.max_command_buffer_len = 10_000;
                })
                .set_policy(ReconnectPolicy::new_exponential(
                    0,
                    RECONNECT_MIN_MS,
                    RECONNECT_MAX_MS,
                    2,
                ))
                .build()
                .map_err(RedisBusError::Client)
        };
        let publisher = build(PUBLISHER_CHANNEL_CAPACITY)?;
        let subscriber = build(settings.bus_receive_buffer)?;

        let (publish_queue, publish_rx) = mpsc::channel(settings.bus_queue);
        let (occupancy, occupancy_rx) = mpsc::unbounded_channel();
        let (prepares, prepares_rx) = mpsc::unbounded_channel();
        let bus = Arc::new(Self {
            prefix: settings.channel_prefix.clone(),
            publish_queue,
            occupancy,
            prepares,
            publisher: publisher.clone(),
            subscriber: subscriber.clone(),
            dropped_publishes: AtomicU64::new(0),
            publish_queue_full: AtomicBool::new(false),
            in_flight: Arc::default(),
        });

        // Subscribe to notifications before connecting so the first connection is seen.
        let reconnects = subscriber.reconnect_rx();
        let messages = subscriber.message_rx();
        let errors = subscriber.error_rx();
        let reconnects_for_log = subscriber.reconnect_rx();
        publisher.connect();
        subscriber.connect();

        tokio::spawn(publish_loop(
            publisher,
            publish_rx,
            Arc::clone(&bus.in_flight),
        ));
        let keeper = SubscriptionKeeper {
            client: subscriber.clone(),
            hub,
            prefix: settings.channel_prefix.clone(),
            fixed: inbound
                .backend
                .iter()
                .map(|(channel, _)| channel.clone())
                .collect(),
            subscribed: HashSet::new(),
        };
        tokio::spawn(keep_subscriptions(
            keeper,
            Arc::clone(&inbound.users),
            occupancy_rx,
            prepares_rx,
            reconnects,
        ));
        tokio::spawn(receive_loop(
            messages,
            settings.channel_prefix.clone(),
            inbound,
        ));
        tokio::spawn(log_connection_errors(errors, reconnects_for_log));
        Ok(bus)
    }

    /// A client on the publishing connection (not in subscriber mode), for commands.
    pub fn commands(&self) -> fred::prelude::Client {
        self.publisher.clone()
    }
}

impl Bus for RedisBus {
    fn publish(&self, room: &RoomId, frame: String) {
        let channel = room_channel(&self.prefix, room);
        match self.publish_queue.try_send((channel, frame)) {
            Ok(()) => {
                if self.publish_queue_full.swap(false, Ordering::Relaxed) {
                    let dropped = self.dropped_publishes.load(Ordering::Relaxed);
                    tracing::warn!(dropped, "redis publish queue drains again");
                }
            }
            Err(_) => {
                crate::metrics::dropped(crate::metrics::Dropped::BusQueueFull, 1);
                self.dropped_publishes.fetch_add(1, Ordering::Relaxed);
                if !self.publish_queue_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis publish queue full: room messages to other workers are dropped"
                    );
                }
            }
        }
    }

    fn occupancy_changed(&self, topic: &Topic) {
        // The keeper lives as long as the runtime; a send can fail only during shutdown.
        let _ = self.occupancy.send(topic.clone());
    }

    fn prepare(&self, topic: &Topic) -> Option<oneshot::Receiver<()>> {
        if !self.subscriber.is_connected() {
            return None;
        }
        let (done, wait) = oneshot::channel();
        self.prepares.send((topic.clone(), done)).ok()?;
        Some(wait)
    }

    fn is_connected(&self) -> bool {
        self.subscriber.is_connected()
    }

    fn flush(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async {
            while self.publish_queue.capacity() < self.publish_queue.max_capacity()
                || self.in_flight.load(Ordering::Acquire) > 0
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }
}

async fn publish_loop(
    client: fred::prelude::Client,
    mut queue: mpsc::Receiver<(String, String)>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut failing = false;
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        in_flight.store(batch.len(), Ordering::Release);
        let frames = batch.len() as u64;
        let pipeline = client.pipeline();
        for (channel, frame) in batch.drain(..) {
            // Queuing into a pipeline only buffers the command; it cannot fail here.
            let _: Result<(), _> = pipeline.publish(channel, frame).await;
        }
        let timer = crate::metrics::redis_command_timer();
        let published = pipeline.all::<fred::types::Value>().await;
        drop(timer);
        if published.is_ok() {
            crate::metrics::BUS_PUBLISHED.add(frames);
        }
        match published {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("redis publishing recovered");
            }
            Ok(_) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(cause = %err, "redis publish failed: other workers miss room messages until it recovers");
            }
            Err(err) => tracing::debug!(cause = %err, "redis publish failed again"),
        }
        in_flight.store(0, Ordering::Release);
    }
}

async fn keep_subscriptions(
    mut keeper: SubscriptionKeeper,
    sessions: Arc<crate::people::sessions::Sessions>,
    mut occupancy: mpsc::UnboundedReceiver<Topic>,
    mut prepares: mpsc::UnboundedReceiver<(Topic, oneshot::Sender<()>)>,
    mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut noticed = Vec::new();
    loop {
        tokio::select! {
            received = occupancy.recv_many(&mut noticed, 4096) => {
                if received == 0 {
                    return;
                }
                let topics: HashSet<Topic> = noticed.drain(..).collect();
                keeper.reconcile(topics).await;
            }
            Some((topic, done)) = prepares.recv() => keeper.prepare(topic, done).await,
            reconnect = reconnects.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = reconnect {
                    return;
                }
                // A new connection has no subscriptions, whatever the old one had.
                tracing::info!("redis bus connected; subscribing to every occupied topic");
                keeper.subscribed.clear();
                keeper.subscribe_fixed().await;
                keeper.reconcile_all().await;
                // User frames published while the bus was away are lost; inboxes are not.
                sessions.catch_up_all();
            }
            _ = sweep.tick() => keeper.reconcile_all().await,
        }
    }
}

struct SubscriptionKeeper {
    client: fred::prelude::Client,
    hub: Arc<Hub>,
    prefix: String,
    /// Channels subscribed for the worker's whole life (backend channels).
    fixed: Vec<String>,
    /// Topics whose SUBSCRIBE succeeded on the current connection.
    subscribed: HashSet<Topic>,
}

impl SubscriptionKeeper {
    /// Subscribes `topic` ahead of its first local socket and says when it is done. A failed
    /// SUBSCRIBE drops `done`, which lets the connection proceed without waiting further.
    async fn prepare(&mut self, topic: Topic, done: oneshot::Sender<()>) {
        if !self.subscribed.contains(&topic) {
            if !self.client.is_connected() {
                return;
            }
            let channel = topic.channel(&self.prefix);
            if let Err(err) = self.client.subscribe(channel).await {
                tracing::debug!(cause = %err, %topic, "early subscribe failed");
                return;
            }
            tracing::debug!(%topic, "subscribed ahead of a first socket");
            self.subscribed.insert(topic);
        }
        let _ = done.send(());
    }

    async fn subscribe_fixed(&self) {
        if self.fixed.is_empty() {
            return;
        }
        if let Err(err) = self.client.subscribe(self.fixed.clone()).await {
            tracing::warn!(cause = %err, channels = ?self.fixed, "could not subscribe the fixed channels; retrying after the next reconnection");
        }
    }

    async fn reconcile_all(&mut self) {
        let mut topics: HashSet<Topic> = self.hub.occupied_topics().into_iter().collect();
        topics.extend(self.subscribed.iter().cloned());
        self.reconcile(topics).await;
    }

    /// Brings the subscription of each of `topics` in line with the hub.
    async fn reconcile(&mut self, topics: HashSet<Topic>) {
        if !self.client.is_connected() {
            // The next (re)connection reconciles everything.
            return;
        }
        let (to_subscribe, to_unsubscribe): (Vec<Topic>, Vec<Topic>) = topics
            .into_iter()
            .filter(|topic| self.hub.is_occupied(topic) != self.subscribed.contains(topic))
            .partition(|topic| self.hub.is_occupied(topic));
        for chunk in to_subscribe.chunks(SUBSCRIBE_BATCH) {
            let channels = self.channels(chunk);
            match self.client.subscribe(channels).await {
                Ok(()) => {
                    tracing::debug!(topics = chunk.len(), "subscribed");
                    self.subscribed.extend(chunk.iter().cloned());
                }
                Err(err) => {
                    tracing::warn!(cause = %err, topics = chunk.len(), "redis subscribe failed; retrying on the next sweep")
                }
            }
        }
        for chunk in to_unsubscribe.chunks(SUBSCRIBE_BATCH) {
            let channels = self.channels(chunk);
            match self.client.unsubscribe(channels).await {
                Ok(()) => {
                    tracing::debug!(topics = chunk.len(), "unsubscribed");
                    for topic in chunk {
                        self.subscribed.remove(topic);
                    }
                }
                Err(err) => {
                    tracing::warn!(cause = %err, topics = chunk.len(), "redis unsubscribe failed; retrying on the next sweep")
                }
            }
        }
    }

    fn channels(&self, topics: &[Topic]) -> Vec<String> {
        topics
            .iter()
            .map(|topic| topic.channel(&self.prefix))
            .collect()
    }
}

async fn receive_loop(
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    prefix: String,
    inbound: Inbound,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            Err(RecvError::Lagged(missed)) => {
                crate::metrics::dropped(crate::metrics::Dropped::BusLagged, missed);
                tracing::warn!(
                    missed,
                    "redis bus receiver lagged: room messages from other workers were lost (raise --bus-receive-buffer)"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        crate::metrics::BUS_RECEIVED.inc();
        let Some(frame) = message.value.as_str() else {
            tracing::warn!(channel = %message.channel, "dropping non-text bus frame");
            continue;
        };
        match topic_of_channel(&prefix, &message.channel) {
            Some(ChannelTopic::Room(room)) => inbound.rooms.deliver_frame(room, &frame).await,
            Some(ChannelTopic::User(user)) => inbound.users.on_frame(user, &frame),
            None => {
                let handler = inbound
                    .backend
                    .iter()
                    .find(|(channel, _)| *channel == *message.channel);
                if let Some((channel, queue)) = handler
                    && queue.try_send(frame.into_owned()).is_err()
                {
                    crate::metrics::dropped(crate::metrics::Dropped::BackendQueueFull, 1);
                    tracing::warn!(channel, "backend channel queue full: a message is dropped");
                }
            }
        }
    }
}

/// Warns once per outage, not once per reconnection attempt: the first error after a
/// successful connection is a warning, the retries that follow are debug lines.
async fn log_connection_errors(
    mut errors: tokio::sync::broadcast::Receiver<(
        fred::error::Error,
        Option<fred::types::config::Server>,
    )>,
    mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
) {
    let mut in_outage = false;
    loop {
        tokio::select! {
            error = errors.recv() => {
                let Ok((err, _server)) = error else { return };
                if in_outage {
                    tracing::debug!(cause = %err, "redis still unreachable");
                } else {
                    in_outage = true;
                    tracing::warn!(cause = %err, "redis connection lost; reconnecting (rooms spanning workers are cut meanwhile)");
                }
            }
            reconnect = reconnects.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = reconnect {
                    return;
                }
                in_outage = false;
            }
        }
    }
}
