//! The Redis bus: SPUBLISH on one connection, SSUBSCRIBE on another, one sharded channel per
//! topic (room or logged-in user); the backend channels of the old designs (notification,
//! moderation return, broadcast) stay classic SUBSCRIBE channels.
//!
//! Topic channels are sharded pub/sub (Redis >= 7) because fred resolves an `SSUBSCRIBE` only
//! when Redis confirms it, whereas a classic `SUBSCRIBE` resolves once written: a socket that
//! waits for its topic's subscription ([`Bus::prepare`]) then really misses nothing published
//! after it connected. Sharded channels are also what a Redis Cluster needs (a classic PUBLISH
//! is broadcast to every cluster node). fred can only match one confirmation to one
//! `SSUBSCRIBE`, so each names one channel.
//!
//! Three tasks, each owning its connection's side:
//! - the publisher drains the publish queue and sends what it finds as one pipeline per batch,
//!   so frames leave in queue order and a burst costs one round trip;
//! - the subscription keeper reconciles SSUBSCRIBE state with the hub: after occupancy notices
//!   (batched), after every (re)connection (fred does not re-subscribe by itself), and on a
//!   periodic sweep that repairs anything a failed command left behind;
//! - the receiver hands each incoming frame to the local fan-out (rooms) or the sessions (users).
//!
//! The publishing connection also serves the inbox's commands ([`RedisBus::commands`]).
//!
//! Under `--bus-format legacy` a room's topic is also the classic channel the old node design
//! uses for it (`<prefix><room id>`): the keeper SUBSCRIBEs it with the room's shard channel,
//! and the receiver hands what arrives there to [`crate::rooms::Rooms::on_legacy_message`].

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chat_protocol::{
    RoomId,
    bus::Topic,
    keys::{
        ChannelTopic, hash_slot, legacy_room_channel, room_of_legacy_channel, topic_of_channel,
    },
    memory::MemberRecord,
};
use fred::prelude::{ClientLike, ClusterInterface, Config, EventInterface, PubsubInterface};
use tokio::sync::{mpsc, oneshot};

use super::{Bus, Inbound};
use super::{BusError, RoomOp, RoomReply, RoomReplyReceiver, Said};
use crate::{
    config::WorkerSettings,
    rooms::hub::Hub,
    store::{
        self, StoreError,
        rooms::{HistoryEntry, RoomStore},
    },
};

/// Frames sent in one pipeline at most.
const PUBLISH_BATCH: usize = 256;
/// How long a topic subscribed ahead of its first socket ([`Bus::prepare`]) stays subscribed
/// while the hub does not show it occupied yet: the socket enters the hub only after its
/// handshake completes, and a sweep in between must not unsubscribe it.
const PREPARED_GRACE: Duration = Duration::from_secs(10);
/// How often the keeper re-checks every room, whatever happened.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What the publishing connection does, in queue order.
enum Outbound {
    Say(RoomId, Said),
    /// Boxed: operations are rare, and a say is the hot path's queue item.
    Op(Box<QueuedOp>),
}

/// A room operation waiting in the publish queue, and where its reply goes.
type QueuedOp = (RoomId, RoomOp, oneshot::Sender<Result<RoomReply, BusError>>);

pub struct RedisBus {
    publish_queue: mpsc::Sender<Outbound>,
    publisher: fred::prelude::Client,
    /// Set once both connections have been up.
    started: AtomicBool,
    /// When the bus was made: [`Bus::started`] waits at most [`super::STARTUP_WAIT`] from it.
    made: tokio::time::Instant,
    /// The room scripts on the publishing connection, for reads.
    rooms: RoomStore,
    occupancy: mpsc::UnboundedSender<Topic>,
    prepares: mpsc::UnboundedSender<(Topic, oneshot::Sender<()>)>,
    subscriber: fred::prelude::Client,
    dropped_publishes: AtomicU64,
    publish_queue_full: AtomicBool,
    /// Frames taken off the queue whose pipeline has not answered yet.
    in_flight: Arc<AtomicUsize>,
}

impl RedisBus {
    /// Creates the bus's two connections (publishing, subscribed) to the Redis of `config` and
    /// starts the bus tasks. Does not wait for Redis: the worker serves local rooms while the
    /// bus connects, and keeps retrying if Redis is away.
    pub fn start(
        settings: &WorkerSettings,
        config: &Config,
        origin: chat_protocol::bus::NodeId,
        hub: Arc<Hub>,
        inbound: Inbound,
    ) -> Result<Arc<Self>, StoreError> {
        // fred preallocates every broadcast channel of a client (messages, errors, reconnects,
        // ...) at this capacity: only the subscriber receives frames, so only it gets the large
        // one. Measured: an idle worker fell from 28 MB to 11 MB RSS with this and the
        // subscriber at 4096 instead of both at 16384.
        const PUBLISHER_CHANNEL_CAPACITY: usize = 64;
        let publisher = store::build_client(config, &settings.redis, PUBLISHER_CHANNEL_CAPACITY)?;
        let subscriber = store::build_client(config, &settings.redis, settings.bus_receive_buffer)?;

        let rooms = RoomStore::new(
            publisher.clone(),
            &settings.channel_prefix,
            origin,
            &settings.rooms,
        );
        let (publish_queue, publish_rx) = mpsc::channel(settings.bus_queue);
        let (occupancy, occupancy_rx) = mpsc::unbounded_channel();
        let (prepares, prepares_rx) = mpsc::unbounded_channel();
        let bus = Arc::new(Self {
            publish_queue,
            publisher: publisher.clone(),
            started: AtomicBool::new(false),
            made: tokio::time::Instant::now(),
            rooms: rooms.clone(),
            occupancy,
            prepares,
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

        tokio::spawn(publish_loop(rooms, publish_rx, Arc::clone(&bus.in_flight)));
        let keeper = SubscriptionKeeper {
            client: subscriber.clone(),
            hub,
            prefix: settings.channel_prefix.clone(),
            fixed: inbound
                .backend
                .iter()
                .map(|(channel, _)| channel.clone())
                .collect(),
            subscribed: HashMap::new(),
            prepared: HashMap::new(),
            legacy: settings.rooms.legacy(),
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
            settings.rooms.legacy(),
            inbound,
        ));
        tokio::spawn(log_connection_errors(errors, reconnects_for_log));
        Ok(bus)
    }

    /// The bus's two connections (publishing, subscribed), for whoever must steer them
    /// ([`store::sentinel::follow_switches`]).
    pub fn clients(&self) -> [fred::prelude::Client; 2] {
        [self.publisher.clone(), self.subscriber.clone()]
    }
}

impl RedisBus {
    fn queue(&self, item: Outbound) -> Result<(), Outbound> {
        match self.publish_queue.try_send(item) {
            Ok(()) => {
                if self.publish_queue_full.swap(false, Ordering::Relaxed) {
                    let dropped = self.dropped_publishes.load(Ordering::Relaxed);
                    tracing::warn!(dropped, "redis publish queue drains again");
                }
                Ok(())
            }
            Err(err) => {
                crate::metrics::dropped(crate::metrics::Dropped::BusQueueFull, 1);
                self.dropped_publishes.fetch_add(1, Ordering::Relaxed);
                if !self.publish_queue_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis publish queue full: room messages to other workers are dropped"
                    );
                }
                Err(err.into_inner())
            }
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, room: &RoomId, said: Said) {
        let _ = self.queue(Outbound::Say(room.clone(), said));
    }

    fn room_op(&self, room: &RoomId, op: RoomOp) -> RoomReplyReceiver {
        let (reply, wait) = oneshot::channel();
        if let Err(Outbound::Op(refused)) =
            self.queue(Outbound::Op(Box::new((room.clone(), op, reply))))
        {
            let (_, _, reply) = *refused;
            let _ = reply.send(Err(BusError::QueueFull));
        }
        wait
    }

    fn note_room(
        &self,
        room: &RoomId,
    ) -> futures_util::future::BoxFuture<'_, Result<(), BusError>> {
        let room = room.clone();
        Box::pin(async move {
            self.rooms
                .note_room(&room)
                .await
                .map_err(|err| BusError::Store(err.to_string()))
        })
    }

    fn members(
        &self,
        room: &RoomId,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<MemberRecord>, BusError>> {
        let room = room.clone();
        Box::pin(async move {
            self.rooms
                .members(&room)
                .await
                .map_err(|err| BusError::Store(err.to_string()))
        })
    }

    fn history(
        &self,
        room: &RoomId,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<HistoryEntry>, BusError>> {
        let room = room.clone();
        Box::pin(async move {
            self.rooms
                .history(&room)
                .await
                .map_err(|err| BusError::Store(err.to_string()))
        })
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

    fn started(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async {
            if self.started.load(Ordering::Acquire) {
                return;
            }
            // Both the bus's connections: joins and recoveries need the publishing one.
            let _ = tokio::time::timeout_at(self.made + super::STARTUP_WAIT, async {
                let _ = self.subscriber.wait_for_connect().await;
                let _ = self.publisher.wait_for_connect().await;
            })
            .await;
            self.started.store(true, Ordering::Release);
        })
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

/// Runs the publishing connection's queue in order: consecutive messages of one room go to
/// Redis in one script call (`say.lua`), room operations one by one.
async fn publish_loop(
    rooms: RoomStore,
    mut queue: mpsc::Receiver<Outbound>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut failing = false;
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        in_flight.store(batch.len(), Ordering::Release);
        let mut items = batch.drain(..).peekable();
        while let Some(item) = items.next() {
            match item {
                Outbound::Say(room, said) => {
                    let mut says = vec![(said.id, String::from(Box::<str>::from(said.json)))];
                    while let Some(Outbound::Say(next_room, _)) = items.peek() {
                        if *next_room != room {
                            break;
                        }
                        if let Some(Outbound::Say(_, said)) = items.next() {
                            says.push((said.id, String::from(Box::<str>::from(said.json))));
                        }
                    }
                    let frames = says.len() as u64;
                    let timer = crate::metrics::redis_command_timer();
                    let published = rooms.publish_says(&room, says).await;
                    drop(timer);
                    match published {
                        Ok(()) => {
                            crate::metrics::BUS_PUBLISHED.add(frames);
                            if failing {
                                failing = false;
                                tracing::info!("redis publishing recovered");
                            }
                        }
                        Err(err) if !failing => {
                            failing = true;
                            tracing::warn!(cause = %err, "redis publish failed: other workers miss room messages until it recovers");
                        }
                        Err(err) => tracing::debug!(cause = %err, "redis publish failed again"),
                    }
                }
                Outbound::Op(item) => {
                    let (room, op, reply) = *item;
                    let timer = crate::metrics::redis_command_timer();
                    let answer = match op {
                        RoomOp::Join(op) => rooms.join(&room, op).await.map(RoomReply::Joined),
                        RoomOp::Quit(op) => rooms
                            .quit(&room, op)
                            .await
                            .map(|(removed, count)| RoomReply::Quit(removed, count)),
                        RoomOp::Resume(op) => rooms.resume(&room, op).await.map(RoomReply::Resumed),
                        RoomOp::ExpireSessions { pids, ttl } => rooms
                            .expire_sessions(&room, &pids, ttl)
                            .await
                            .map(|()| RoomReply::Done),
                    };
                    drop(timer);
                    let _ = reply.send(answer.map_err(|err| BusError::Store(err.to_string())));
                }
            }
        }
        drop(items);
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
    /// Topics whose SSUBSCRIBE Redis confirmed on the current connection, with the node that
    /// confirmed it on a Redis Cluster (`None` elsewhere).
    subscribed: HashMap<Topic, Option<fred::types::config::Server>>,
    /// Topics subscribed ahead of a first socket that has not entered the hub yet, with when:
    /// kept subscribed for [`PREPARED_GRACE`] even though the hub does not show them.
    prepared: HashMap<Topic, Instant>,
    /// `--bus-format legacy`: rooms are also subscribed on their classic channel in the node
    /// design's format.
    legacy: bool,
}

impl SubscriptionKeeper {
    /// Subscribes `topic` ahead of its first local socket and says when Redis confirmed it. A
    /// failed SSUBSCRIBE drops `done`, which lets the connection proceed without waiting further.
    async fn prepare(&mut self, topic: Topic, done: oneshot::Sender<()>) {
        if !self.subscribed.contains_key(&topic) {
            if !self.client.is_connected() || !self.subscribe(&topic).await {
                return;
            }
            tracing::debug!(%topic, "subscribed ahead of a first socket");
        }
        self.prepared.insert(topic, Instant::now());
        let _ = done.send(());
    }

    /// The classic channel of a room in the node design's format, under `--bus-format legacy`.
    fn legacy_channel(&self, topic: &Topic) -> Option<String> {
        match topic {
            Topic::Room(room) if self.legacy => Some(legacy_room_channel(&self.prefix, room)),
            _ => None,
        }
    }

    /// SSUBSCRIBEs `topic`'s channel; true once Redis confirmed it. On a Cluster fred sends it
    /// to the node owning the channel's slot (following a MOVED redirection). A room's legacy
    /// channel is SUBSCRIBEd first, on the same connection: fred resolves a SUBSCRIBE once it
    /// is written, but Redis answers commands in order, so once it confirmed the SSUBSCRIBE it
    /// has subscribed the legacy channel too (on a standalone or Sentinel Redis).
    async fn subscribe(&mut self, topic: &Topic) -> bool {
        if let Some(legacy) = self.legacy_channel(topic)
            && let Err(err) = self.client.subscribe(legacy).await
        {
            tracing::warn!(cause = %err, %topic, "redis subscribe of a legacy room channel failed; retrying on the next sweep");
            return false;
        }
        let channel = topic.channel(&self.prefix);
        match self.client.ssubscribe(channel.as_str()).await {
            Ok(()) => {
                let owner = self.owner(&channel);
                self.subscribed.insert(topic.clone(), owner);
                true
            }
            Err(err) => {
                tracing::warn!(cause = %err, %topic, "redis subscribe failed; retrying on the next sweep");
                false
            }
        }
    }

    async fn subscribe_fixed(&self) {
        if self.fixed.is_empty() {
            return;
        }
        if let Err(err) = self.client.subscribe(self.fixed.clone()).await {
            tracing::warn!(cause = %err, channels = ?self.fixed, "could not subscribe the fixed channels; retrying after the next reconnection");
        }
    }

    /// The Cluster node that owns `channel`'s hash slot, as fred last learnt it; `None` when
    /// Redis is not a Cluster.
    fn owner(&self, channel: &str) -> Option<fred::types::config::Server> {
        let routing = self.client.cached_cluster_state()?;
        routing.get_server(hash_slot(channel)).cloned()
    }

    async fn reconcile_all(&mut self) {
        self.follow_slot_moves().await;
        let mut topics: HashSet<Topic> = self.hub.occupied_topics().into_iter().collect();
        topics.extend(self.subscribed.keys().cloned());
        topics.extend(self.prepared.keys().cloned());
        self.reconcile(topics).await;
    }

    /// On a Redis Cluster, a shard channel's subscription lives on the node owning its slot,
    /// and Redis drops it when the slot moves (resharding) or its master is replaced (which
    /// fred says nothing about when the old connection survives). Refreshes the slot map and
    /// forgets every subscription whose slot changed hands, so the reconcile that follows
    /// subscribes it again on the new owner.
    async fn follow_slot_moves(&mut self) {
        if !self.client.is_clustered() || !self.client.is_connected() {
            return;
        }
        if let Err(err) = self.client.sync_cluster().await {
            tracing::debug!(cause = %err, "could not refresh the cluster's slot map");
            return;
        }
        let moved: Vec<Topic> = self
            .subscribed
            .iter()
            .filter(|(topic, owner)| **owner != self.owner(&topic.channel(&self.prefix)))
            .map(|(topic, _)| topic.clone())
            .collect();
        if !moved.is_empty() {
            tracing::info!(
                topics = moved.len(),
                "cluster slots changed hands; subscribing those topics on their new nodes"
            );
        }
        for topic in moved {
            self.subscribed.remove(&topic);
        }
    }

    /// Whether `topic` should be subscribed: the hub has it, or a first socket is on its way.
    fn wanted(&self, topic: &Topic) -> bool {
        self.hub.is_occupied(topic)
            || self
                .prepared
                .get(topic)
                .is_some_and(|since| since.elapsed() < PREPARED_GRACE)
    }

    /// Brings the subscription of each of `topics` in line with the hub.
    async fn reconcile(&mut self, topics: HashSet<Topic>) {
        if !self.client.is_connected() {
            // The next (re)connection reconciles everything.
            return;
        }
        // A prepared topic that the hub shows has no more need of the grace: its socket is in,
        // and the hub decides from now on (the last one out unsubscribes at once).
        self.prepared.retain(|topic, since| {
            since.elapsed() < PREPARED_GRACE && !self.hub.is_occupied(topic)
        });
        let (to_subscribe, to_unsubscribe): (Vec<Topic>, Vec<Topic>) = topics
            .into_iter()
            .filter(|topic| self.wanted(topic) != self.subscribed.contains_key(topic))
            .partition(|topic| self.wanted(topic));
        let mut subscribed = 0;
        for topic in &to_subscribe {
            subscribed += usize::from(self.subscribe(topic).await);
        }
        if subscribed > 0 {
            tracing::debug!(topics = subscribed, "subscribed");
        }
        // SUNSUBSCRIBE is answered out of band (fred resolves it once written); one channel
        // per command keeps every command within one hash slot on a Redis Cluster.
        for topic in to_unsubscribe {
            if let Some(legacy) = self.legacy_channel(&topic)
                && let Err(err) = self.client.unsubscribe(legacy).await
            {
                tracing::warn!(cause = %err, %topic, "redis unsubscribe of a legacy room channel failed; retrying on the next sweep");
                continue;
            }
            match self.client.sunsubscribe(topic.channel(&self.prefix)).await {
                Ok(()) => {
                    tracing::debug!(%topic, "unsubscribed");
                    self.subscribed.remove(&topic);
                }
                Err(err) => {
                    tracing::warn!(cause = %err, %topic, "redis unsubscribe failed; retrying on the next sweep")
                }
            }
        }
    }
}

async fn receive_loop(
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    prefix: String,
    legacy: bool,
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
            Some(ChannelTopic::Room(room)) => inbound.rooms.on_frame(room, &frame),
            Some(ChannelTopic::User(user)) => inbound.users.on_frame(user, &frame),
            None => {
                let handler = inbound
                    .backend
                    .iter()
                    .find(|(channel, _)| *channel == *message.channel);
                if let Some((channel, queue)) = handler {
                    if queue.try_send(frame.into_owned()).is_err() {
                        crate::metrics::dropped(crate::metrics::Dropped::BackendQueueFull, 1);
                        tracing::warn!(channel, "backend channel queue full: a message is dropped");
                    }
                } else if legacy
                    && message.kind == fred::types::MessageKind::Message
                    && let Some(room) = room_of_legacy_channel(&prefix, &message.channel)
                {
                    // A backend channel is never a room's: such rooms are refused at connect.
                    inbound.rooms.on_legacy_message(room, &frame);
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
