//! The node: socket.io handlers for rooms, gluing the hub (local membership), the local fan-out
//! and the bus (other workers).
//!
//! Architecture invariant (per-sender order): a worker runs on a current-thread runtime, where
//! socketioxide's per-event tasks start in arrival order, and no handler awaits anything that can
//! be pending before it has fanned out locally and queued its bus frame. So the messages of one
//! sender reach every member, local or remote, in the order sent.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use chat_protocol::{
    ErrorCode, Limits, ProtocolError, RoomId, Username,
    bus::encode_frame,
    client::{JoinPayload, SayPayload, invalid_payload},
    report::WorkerReport,
    server::{Ack, RoomEventData, RoomEventKind, RoomMessage},
};
use socketioxide::{
    SocketIo,
    extract::{AckSender, SocketRef, TryData},
    handler::ConnectHandler,
};

use crate::{
    bus::Bus,
    fanout::LocalFanout,
    hub::{Hub, Occupancy},
    rate::{RateLimit, TokenBucket},
};

/// Longest a first member's connection waits for its room's subscription.
const PREPARE_WAIT: Duration = Duration::from_secs(1);

/// What this worker knows of one socket, kept in the socket's extensions.
#[derive(Debug)]
struct Membership {
    /// The room of the handshake's `?roomid=`, if any. Fixed for the socket's life.
    room: Option<RoomId>,
    /// Set by the first successful `join`.
    username: OnceLock<Username>,
    /// The socket's event budget. Uncontended: a worker runs on one thread.
    bucket: Mutex<TokenBucket>,
}

pub struct Node {
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    fanout: LocalFanout,
    limits: Limits,
    rate: RateLimit,
    next_message: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
}

impl Node {
    pub fn new(
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        fanout: LocalFanout,
        limits: Limits,
        rate: RateLimit,
    ) -> Self {
        Self {
            hub,
            bus,
            fanout,
            limits,
            rate,
            next_message: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
        }
    }

    /// Registers the room handlers on the default namespace.
    pub fn attach(self: &Arc<Self>, io: &SocketIo) {
        let node = Arc::clone(self);
        let check_room = {
            let node = Arc::clone(self);
            move |socket: SocketRef| {
                let node = Arc::clone(&node);
                async move { node.admit(&socket).await }
            }
        };
        let on_connect = move |socket: SocketRef| {
            let node = Arc::clone(&node);
            async move { node.on_connect(socket) }
        };
        io.ns("/", on_connect.with(check_room));
    }

    /// Handshake check: a `roomid` that is present must be valid. The answer to a bad one is a
    /// `connect_error` carrying the message, and no socket.
    ///
    /// For a room with no local member yet, the connection completes only once the bus has
    /// subscribed to the room (bounded by [`PREPARE_WAIT`]), so a client that is connected receives
    /// everything published to its room afterwards, from any worker.
    async fn admit(&self, socket: &SocketRef) -> Result<(), ProtocolError> {
        let raw_room = socket
            .req_parts()
            .uri
            .query()
            .and_then(|query| query_param(query, "roomid"));
        let room = raw_room
            .map(|raw| RoomId::parse(&raw, &self.limits))
            .transpose()?;
        if let Some(room) = &room
            && !self.hub.is_occupied(room)
            && let Some(subscribed) = self.bus.prepare(room)
        {
            // Timing out or a dropped sender both mean: proceed without the guarantee.
            let _ = tokio::time::timeout(PREPARE_WAIT, subscribed).await;
        }
        socket.extensions.insert(Arc::new(Membership {
            room,
            username: OnceLock::new(),
            bucket: Mutex::new(TokenBucket::new(self.rate, Instant::now())),
        }));
        Ok(())
    }

    fn on_connect(self: Arc<Self>, socket: SocketRef) {
        let Ok(membership) = membership(&socket) else {
            let _ = socket.disconnect();
            return;
        };
        self.connects.fetch_add(1, Ordering::Relaxed);
        if let Some(room) = &membership.room {
            socket.join(room.as_str().to_owned());
            if self.hub.enter(room) == Occupancy::Changed {
                self.bus.occupancy_changed(room);
            }
        }
        tracing::debug!(sid = %socket.id, room = ?membership.room, "connected");

        let node = Arc::clone(&self);
        socket.on(
            "join",
            move |socket: SocketRef, TryData(payload): TryData<JoinPayload>, ack: AckSender| {
                let node = Arc::clone(&node);
                async move {
                    let answer = node.join(&socket, payload.ok()).await;
                    send_ack(ack, answer.as_ref().map(|()| None));
                }
            },
        );
        let node = Arc::clone(&self);
        socket.on(
            "say",
            move |socket: SocketRef, TryData(payload): TryData<SayPayload>, ack: AckSender| {
                let node = Arc::clone(&node);
                async move {
                    let answer = node.say(&socket, payload.ok()).await;
                    send_ack(ack, answer.as_ref().map(|id| Some(id.as_str())));
                }
            },
        );
        socket.on_disconnect(
            move |socket: SocketRef| async move { self.on_disconnect(socket).await },
        );
    }

    async fn join(
        &self,
        socket: &SocketRef,
        payload: Option<JoinPayload>,
    ) -> Result<(), ProtocolError> {
        let membership = membership(socket)?;
        self.spend(&membership)?;
        let room = membership.room.as_ref().ok_or_else(no_room)?;
        let username = payload
            .ok_or_else(|| invalid_payload(JoinPayload::EXPECTED))?
            .validate(&self.limits)?;
        let username = match membership.username.set(username) {
            Ok(()) => membership.username.get().ok_or_else(already_joined)?,
            Err(_) => return Err(already_joined()),
        };
        self.broadcast(room, RoomEventKind::Join, username, None)
            .await;
        Ok(())
    }

    async fn say(
        &self,
        socket: &SocketRef,
        payload: Option<SayPayload>,
    ) -> Result<String, ProtocolError> {
        let membership = membership(socket)?;
        self.spend(&membership)?;
        let room = membership.room.as_ref().ok_or_else(no_room)?;
        let username = membership.username.get().ok_or_else(|| {
            ProtocolError::new(ErrorCode::NotJoined, "send join {username} before say")
        })?;
        let text = payload
            .ok_or_else(|| invalid_payload(SayPayload::EXPECTED))?
            .validate(&self.limits)?;
        Ok(self
            .broadcast(room, RoomEventKind::Say, username, Some(text.as_str()))
            .await)
    }

    /// Takes one event from the socket's budget, or refuses the event.
    fn spend(&self, membership: &Membership) -> Result<(), ProtocolError> {
        let mut bucket = membership
            .bucket
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if bucket.try_take(self.rate, Instant::now()) {
            return Ok(());
        }
        Err(ProtocolError::new(
            ErrorCode::RateLimited,
            format!(
                "too many events: at most {} per second; retry in {} ms",
                self.rate.per_second,
                bucket.wait_for_next(self.rate).as_millis().max(1)
            ),
        ))
    }

    async fn on_disconnect(&self, socket: SocketRef) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
        // A socket refused at the handshake never had a membership, nor a room to leave.
        let Ok(membership) = membership(&socket) else {
            return;
        };
        tracing::debug!(sid = %socket.id, room = ?membership.room, "disconnected");
        let Some(room) = &membership.room else {
            return;
        };
        if self.hub.leave(room) == Occupancy::Changed {
            self.bus.occupancy_changed(room);
        }
        // Out of the room first, so its own farewell is not sent to the closed socket.
        socket.leave(room.as_str().to_owned());
        if let Some(username) = membership.username.get() {
            self.broadcast(room, RoomEventKind::Quit, username, None)
                .await;
        }
    }

    /// Sends one room event to every member in the cluster: encoded once, fanned out to local
    /// members at once, and queued once for the bus. Returns the message id.
    async fn broadcast(
        &self,
        room: &RoomId,
        event: RoomEventKind,
        username: &Username,
        text: Option<&str>,
    ) -> String {
        let id = format!(
            "{}-{}",
            self.fanout.origin(),
            self.next_message.fetch_add(1, Ordering::Relaxed)
        );
        let message = RoomMessage {
            event,
            data: RoomEventData {
                username: username.as_str(),
                text,
            },
            id: &id,
            ts: unix_millis(),
            room: room.as_str(),
        };
        match serde_json::value::to_raw_value(&message) {
            Ok(encoded) => {
                self.fanout.emit(room.as_str(), &encoded).await;
                self.bus
                    .publish(room, encode_frame(self.fanout.origin(), encoded.get()));
            }
            // Strings and integers always serialize; this arm exists to avoid a panic path.
            Err(err) => tracing::error!(cause = %err, "room message did not encode"),
        }
        id
    }

    pub fn counts(&self) -> WorkerReport {
        WorkerReport::Counts {
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            rooms: self.hub.room_count() as u64,
        }
    }

    pub fn bus_connected(&self) -> bool {
        self.bus.is_connected()
    }
}

/// The socket's membership, which `admit` inserts before any handler can run.
fn membership(socket: &SocketRef) -> Result<Arc<Membership>, ProtocolError> {
    socket.extensions.get::<Arc<Membership>>().ok_or_else(|| {
        tracing::error!(sid = %socket.id, "socket without membership: admit did not run");
        ProtocolError::new(
            ErrorCode::InvalidPayload,
            "internal error: socket not admitted",
        )
    })
}

fn no_room() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NoRoom,
        "this socket joined no room: connect with ?roomid=<room>",
    )
}

fn already_joined() -> ProtocolError {
    ProtocolError::new(ErrorCode::AlreadyJoined, "this socket has joined already")
}

fn send_ack(ack: AckSender, answer: Result<Option<&str>, &ProtocolError>) {
    let reply = match answer {
        Ok(Some(id)) => Ack::ok_with_id(id),
        Ok(None) => Ack::ok(),
        Err(err) => {
            tracing::debug!(code = err.code.as_str(), reason = %err.message, "event refused");
            Ack::error(err)
        }
    };
    // Fails only when the client is gone or its queue is full; either way there is no one to tell.
    let _ = ack.send(&reply);
}

/// The first value of `name` in a URL query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
