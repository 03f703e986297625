//! The node: the socket.io handlers. Room events (`join`, `say`, `members`, `history`) go to
//! [`crate::rooms`] (local membership, fan-out with offsets, history, presence, recovery);
//! people events (`login`, `chat`, `hb`, `geo`) go to [`crate::people`]. Every event spends
//! from the socket's rate budget.
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
    time::Instant,
};

use chat_protocol::{
    ErrorCode, Limits, ProtocolError, RoomId, UserId, Username,
    bus::Topic,
    client::{JoinPayload, SayPayload, invalid_payload},
    memory::{HISTORY_EVENT, HistoryAck, HistoryRequest, MEMBERS_EVENT, MembersAck, Offset},
    people::{
        CHAT_ACK_EVENT, CHAT_EVENT, GEO_EVENT, HEARTBEAT_EVENT, HeartbeatAck, LOGIN_EVENT,
        LoginPayload,
    },
    push::{MARK_READ_EVENT, UNREAD_COUNT_EVENT},
    report::WorkerReport,
    server::Ack,
};
use serde::Serialize;
use socketioxide::{
    ConnectAnswer, ParserError, SocketIo,
    extract::{AckSender, Event, SocketRef, TryData},
    handler::ConnectHandler,
    socket::DisconnectReason,
};

use crate::{
    auth::{AuthError, Authenticator, ExpiryWatch, HandshakeAuth},
    bus::{self, Bus},
    dialects::{self, Dialects},
    edge::{
        clients::SocketSlots,
        counters::{self, Refusal},
    },
    people::{Identity, LoginSlot, People},
    rate::{RateLimit, TokenBucket},
    rooms::{
        Person, Rooms,
        hub::{Hub, Occupancy},
    },
    unix_millis,
};

/// What this worker knows of one socket, kept in the socket's extensions.
#[derive(Debug)]
struct Membership {
    /// The room of the handshake's `?roomid=`, if any. Fixed for the socket's life.
    room: Option<RoomId>,
    /// Set by the first successful `join` (or a recovery), once the socket is in the room.
    username: OnceLock<Username>,
    /// A `join` is in flight (a second one is refused).
    joining: std::sync::atomic::AtomicBool,
    /// The private session id socket.io's connection state recovery knows the socket by.
    pid: Box<str>,
    /// The socket id the client knows (its old one, for a recovered session).
    sid: Box<str>,
    /// Whether the client takes offsets as the last argument of room events.
    offsets: bool,
    /// The socket's event budget. Uncontended: a worker runs on one thread.
    bucket: Mutex<TokenBucket>,
    /// Who the socket is, once it logged in.
    login: LoginSlot,
    /// Who the handshake proved the socket to be (`--auth jwt`).
    authenticated: Option<UserId>,
    /// When the handshake's token stops being accepted (unix seconds), and the watch that
    /// disconnects the socket then.
    expires_at: Option<u64>,
    expiry: OnceLock<ExpiryWatch>,
}

impl Membership {
    /// The authenticated user id, as room messages carry it.
    fn user_id(&self) -> Option<&str> {
        self.authenticated.as_ref().map(UserId::as_str)
    }
}

/// Why a handshake was refused.
#[derive(Debug, thiserror::Error)]
enum HandshakeRefusal {
    #[error(transparent)]
    Room(#[from] ProtocolError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this connection was cut for breaking the rate limit; open a new one")]
    Banned,
}

pub struct Node {
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    rooms: Arc<Rooms>,
    people: Arc<People>,
    /// The old clients' events, served before the core's (see [`Dialects::claims`]).
    dialects: Dialects,
    authenticator: Authenticator,
    limits: Limits,
    rate: RateLimit,
    /// The store's connection (`None` without Redis), for readiness: logins, direct messages
    /// and room joins run their scripts on it.
    store_client: Option<fred::prelude::Client>,
    connects: AtomicU64,
    disconnects: AtomicU64,
}

impl Node {
    // The worker's parts, each built once in `server::assemble`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        rooms: Arc<Rooms>,
        people: Arc<People>,
        dialects: Dialects,
        authenticator: Authenticator,
        limits: Limits,
        rate: RateLimit,
        store_client: Option<fred::prelude::Client>,
    ) -> Self {
        Self {
            hub,
            bus,
            rooms,
            people,
            dialects,
            authenticator,
            limits,
            rate,
            store_client,
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
        }
    }

    /// Registers the room handlers on the default namespace.
    pub fn attach(self: &Arc<Self>, io: &SocketIo) {
        let node = Arc::clone(self);
        let check_room = {
            let node = Arc::clone(self);
            move |socket: SocketRef, TryData(auth): TryData<HandshakeAuth>| {
                let node = Arc::clone(&node);
                async move { node.admit(&socket, auth.ok()).await }
            }
        };
        let io_of_sockets = io.clone();
        let on_connect = move |socket: SocketRef| {
            let node = Arc::clone(&node);
            let io = io_of_sockets.clone();
            async move { node.on_connect(socket, io) }
        };
        io.ns("/", on_connect.with(check_room));
    }

    /// Handshake check: the socket must authenticate (`--auth jwt`), and a `roomid` that is
    /// present must be valid. The answer to a refusal is a `connect_error` carrying the reason,
    /// and no socket.
    ///
    /// For a room with no local member yet, the connection completes only once Redis confirmed
    /// the room's subscription (bounded by [`bus::SUBSCRIBE_WAIT`]), so a client that is
    /// connected receives everything published to its room afterwards, from any worker.
    async fn admit(
        &self,
        socket: &SocketRef,
        auth: Option<HandshakeAuth>,
    ) -> Result<(), HandshakeRefusal> {
        let parts = socket.req_parts();
        if parts
            .extensions
            .get::<SocketSlots>()
            .is_some_and(SocketSlots::is_banned)
        {
            return Err(HandshakeRefusal::Banned);
        }
        let cookies = parts
            .headers
            .get(axum::http::header::COOKIE)
            .and_then(|value| value.to_str().ok());
        let proof = self
            .authenticator
            .authenticate(auth.as_ref(), cookies, &self.limits)
            .inspect_err(
                |err| tracing::debug!(sid = %socket.id, reason = %err, "handshake refused"),
            )?;
        let raw_room = parts
            .uri
            .query()
            .and_then(|query| query_param(query, "roomid"));
        let room = raw_room
            .map(|raw| RoomId::parse(&raw, &self.limits))
            .transpose()?;
        if let Some(room) = &room {
            self.rooms.admit(room)?;
            // A worker that just started: its first room sockets wait for Redis (bounded), so
            // their joins and recoveries reach the cluster.
            self.bus.started().await;
            bus::subscribe_before_first_socket(&self.hub, &*self.bus, &Topic::Room(room.clone()))
                .await;
        }
        let offsets = !parts.uri.query().is_some_and(|query| {
            query_param(query, crate::edge::handshake::NO_OFFSETS.0).as_deref()
                == Some(crate::edge::handshake::NO_OFFSETS.1)
        });
        let user_id = proof.as_ref().map(|proof| proof.user.as_str().to_owned());
        // socket.io connection state recovery: a client back with its pid and offset gets its
        // session (socket id, name, room) back and, once connected, what it missed.
        let recovered = match (&room, &auth) {
            (
                Some(room),
                Some(HandshakeAuth {
                    pid: Some(pid),
                    offset: Some(offset),
                    ..
                }),
            ) if valid_pid(pid) => match offset.parse::<Offset>() {
                Ok(offset) => {
                    self.rooms
                        .resume(socket, room, pid, offset, user_id.as_deref(), offsets)
                        .await
                }
                Err(()) => None,
            },
            _ => None,
        };
        let (pid, sid, username) = match (recovered, &auth) {
            (Some(recovered), Some(HandshakeAuth { pid: Some(pid), .. })) => {
                let username = Username::parse(&recovered.username, &self.limits).ok();
                (pid.clone(), recovered.sid, username)
            }
            _ => (new_pid(), socket.id.to_string(), None),
        };
        if self.rooms.recovery() {
            socket.extensions.insert(ConnectAnswer {
                sid: sid.clone(),
                pid: pid.clone(),
            });
        }
        let username_slot = OnceLock::new();
        if let Some(username) = username {
            let _ = username_slot.set(username);
        }
        socket.extensions.insert(Arc::new(Membership {
            room,
            username: username_slot,
            joining: std::sync::atomic::AtomicBool::new(false),
            pid: pid.into(),
            sid: sid.into(),
            offsets,
            bucket: Mutex::new(TokenBucket::new(self.rate, Instant::now())),
            login: LoginSlot::default(),
            expires_at: proof.as_ref().map(|proof| proof.expires_at),
            authenticated: proof.map(|proof| proof.user),
            expiry: OnceLock::new(),
        }));
        Ok(())
    }

    fn on_connect(self: Arc<Self>, socket: SocketRef, io: SocketIo) {
        let Ok(membership) = membership(&socket) else {
            let _ = socket.disconnect();
            return;
        };
        if let Some(expires_at) = membership.expires_at {
            let _ = membership
                .expiry
                .set(ExpiryWatch::start(io, socket.id, expires_at));
        }
        self.connects.fetch_add(1, Ordering::Relaxed);
        if let Some(room) = &membership.room {
            // Subscribed while the socket is connected; in the room once it joined.
            let topic = Topic::Room(room.clone());
            if self.hub.enter(&topic) == Occupancy::Changed {
                self.bus.occupancy_changed(&topic);
            }
            if membership.username.get().is_some() {
                // A recovered session: its replay waited for the CONNECT answer, sent now.
                self.rooms.connected(&socket, room);
            }
        }
        tracing::debug!(sid = %socket.id, room = ?membership.room, "connected");

        // One fallback handler serves every event: socketioxide keeps a socket's handlers in a
        // map of boxed closures per socket (about 1 KB for our eight events, measured with
        // massif), the fallback is one box.
        let node = Arc::clone(&self);
        socket.on_fallback(
            move |socket: SocketRef,
                  Event(event): Event,
                  TryData(data): TryData<serde_json::Value>,
                  ack: AckSender| {
                let node = Arc::clone(&node);
                async move { node.receive(socket, &event, data, ack).await }
            },
        );
        socket.on_disconnect(
            move |socket: SocketRef, reason: DisconnectReason| async move {
                if reason == DisconnectReason::PacketParsingError {
                    // Binary attachments, or a packet the parser refuses: counted, not logged.
                    counters::count(Refusal::BadPacket);
                }
                self.on_disconnect(socket, reason).await
            },
        );
    }

    /// Answers one client event whose payload may not have been readable JSON, then cuts the
    /// socket if it has been refused too often.
    async fn receive(
        self: Arc<Self>,
        socket: SocketRef,
        event: &str,
        data: Result<serde_json::Value, ParserError>,
        ack: AckSender,
    ) {
        let data = match data {
            Ok(data) => Some(data),
            Err(err) => match unreadable(&err) {
                Some(refusal) => {
                    let answer = membership(&socket)
                        .and_then(|membership| self.spend(&membership))
                        .and(Err(refusal));
                    send_answer::<()>(ack, answer);
                    self.cut_if_exhausted(&socket);
                    return;
                }
                // No argument at all (`hb`, `unread_count`): no payload.
                None => None,
            },
        };
        Arc::clone(&self)
            .dispatch(socket.clone(), event, data, ack)
            .await;
        self.cut_if_exhausted(&socket);
    }

    /// Disconnects a socket refused `--max-refusals` times within `--refusal-window-ms`.
    fn cut_if_exhausted(&self, socket: &SocketRef) {
        let Some(membership) = socket.extensions.get::<Arc<Membership>>() else {
            return;
        };
        let exhausted = membership
            .bucket
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .is_exhausted(self.rate);
        if exhausted {
            counters::count(Refusal::TooManyRefusals);
            tracing::debug!(sid = %socket.id, "disconnecting a socket that keeps breaking the rate limit");
            // The namespace disconnect alone would leave the engine session, on which the
            // client could connect again with a fresh budget, and fails if the client does not
            // read: the session is banned and a websocket's connection cut.
            if let Some(slots) = socket.req_parts().extensions.get::<SocketSlots>() {
                slots.ban();
            }
            let _ = socket.clone().disconnect();
        }
    }

    /// Answers one client event. `data` is the event's first argument, if it had one that is
    /// JSON; each event parses it into its own payload type, and a shape it does not expect
    /// counts as no payload (`invalid_payload`).
    async fn dispatch(
        self: Arc<Self>,
        socket: SocketRef,
        event: &str,
        data: Option<serde_json::Value>,
        ack: AckSender,
    ) {
        crate::metrics::event_received(event);
        // A socket's events run in a task each, spawned with this future, whose size is its
        // largest branch's: `say`, the hot path, stays inline; every other event is boxed, so
        // that a `say` does not allocate and copy the state of a login (8.5 KB before).
        if event == "say" {
            let answer = self.say(&socket, payload(data)).await;
            return send_ack(ack, answer.as_ref().map(|id| Some(id.as_str())));
        }
        Box::pin(self.dispatch_other(socket, event, data, ack)).await;
    }

    /// Answers every client event but `say` (see [`Self::dispatch`]).
    async fn dispatch_other(
        self: Arc<Self>,
        socket: SocketRef,
        event: &str,
        data: Option<serde_json::Value>,
        ack: AckSender,
    ) {
        if self.dialects.claims(&socket, event, data.as_ref()) {
            return self.dialect(&socket, event, data, ack).await;
        }
        match event {
            "join" => {
                let answer = self.join(&socket, payload(data)).await;
                send_answer(ack, answer);
            }
            MEMBERS_EVENT => {
                let answer = self.members(&socket).await;
                send_answer(ack, answer);
            }
            HISTORY_EVENT => {
                let answer = self.history(&socket, data).await;
                send_answer(ack, answer);
            }
            LOGIN_EVENT => self.login(&socket, payload(data), ack).await,
            CHAT_EVENT => {
                let answer = async {
                    let sender = self.logged_in_sender(&socket)?;
                    self.people.chat(&sender, payload(data)).await
                };
                match answer.await {
                    Ok(sent) => send_answer(ack, Ok(sent.ack())),
                    Err(err) => send_answer::<()>(ack, Err(err)),
                }
            }
            GEO_EVENT => {
                let answer = async {
                    let sender = self.logged_in_sender(&socket)?;
                    self.people.geo(&sender, data).await
                };
                send_answer(ack, answer.await.map(|()| Ack::ok()));
            }
            MARK_READ_EVENT => {
                let answer = async {
                    let reader = self.logged_in_sender(&socket)?;
                    self.people.mark_read(&reader, payload(data)).await
                };
                send_answer(ack, answer.await);
            }
            CHAT_ACK_EVENT => {
                let answer = async {
                    let reader = self.logged_in_sender(&socket)?;
                    self.people.chat_ack(&reader, payload(data)).await
                };
                send_answer(ack, answer.await);
            }
            UNREAD_COUNT_EVENT => {
                let answer = async {
                    let reader = self.logged_in_sender(&socket)?;
                    self.people.unread_count(&reader).await
                };
                send_answer(ack, answer.await);
            }
            HEARTBEAT_EVENT => {
                let answer = membership(&socket)
                    .and_then(|membership| self.spend(&membership))
                    .map(|()| HeartbeatAck {
                        ok: true,
                        ts: unix_millis(),
                    });
                send_answer(ack, answer);
            }
            _ => {
                // Paid for like any event, so that unknown events cannot flood for free.
                let answer = membership(&socket)
                    .and_then(|membership| self.spend(&membership))
                    .and_then(|()| Err(unknown_event(event)));
                send_answer::<()>(ack, answer);
            }
        }
    }

    /// Hands an old client's event to its dialect, with the socket's login and rate budget.
    async fn dialect(
        &self,
        socket: &SocketRef,
        event: &str,
        data: Option<serde_json::Value>,
        ack: AckSender,
    ) {
        let membership = match membership(socket) {
            Ok(membership) => membership,
            Err(err) => return send_answer::<()>(ack, Err(err)),
        };
        let spend = || self.spend(&membership);
        let client = dialects::Client {
            socket,
            login: &membership.login,
            authenticated: membership.authenticated.as_ref(),
            spend: &spend,
        };
        self.dialects.handle(client, event, data, ack).await;
    }

    async fn login(&self, socket: &SocketRef, payload: Option<LoginPayload>, ack: AckSender) {
        let membership = match membership(socket) {
            Ok(membership) => membership,
            Err(err) => return send_answer::<()>(ack, Err(err)),
        };
        if let Err(err) = self.spend(&membership) {
            return send_answer::<()>(ack, Err(err));
        }
        match self
            .people
            .login(
                socket,
                &membership.login,
                membership.authenticated.as_ref(),
                payload,
            )
            .await
        {
            Ok(logged_in) => {
                // The ack goes out before the first waiting message.
                send_answer(ack, Ok(logged_in.ack()));
                (logged_in.start_delivery)();
            }
            Err(err) => send_answer::<()>(ack, Err(err)),
        }
    }

    /// The identity of a logged-in socket sending an event, once the event is paid for.
    fn logged_in_sender(&self, socket: &SocketRef) -> Result<Arc<Identity>, ProtocolError> {
        let membership = membership(socket)?;
        self.spend(&membership)?;
        membership.login.identity()
    }

    /// `join {username}`: the socket enters its room (cluster-wide members, the room's history
    /// sent to it first) and everyone in the room hears it. Answers `{ok, count}`.
    async fn join(
        &self,
        socket: &SocketRef,
        payload: Option<JoinPayload>,
    ) -> Result<JoinAck, ProtocolError> {
        let membership = membership(socket)?;
        self.spend(&membership)?;
        let room = membership.room.as_ref().ok_or_else(no_room)?;
        let username = payload
            .ok_or_else(|| invalid_payload(JoinPayload::EXPECTED))?
            .validate(&self.limits)?;
        if membership.username.get().is_some() || membership.joining.swap(true, Ordering::Relaxed) {
            return Err(already_joined());
        }
        let person = Person {
            username: username.clone(),
            user_id: membership.user_id().map(str::to_owned),
            pid: membership.pid.to_string(),
            sid: membership.sid.to_string(),
            offsets: membership.offsets,
        };
        let count = self.rooms.join(socket, room, &person).await;
        let _ = membership.username.set(username);
        Ok(JoinAck { ok: true, count })
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
            .rooms
            .say(room, username, membership.user_id(), text.as_str()))
    }

    /// `members`: the names of the room's members, cluster-wide, and how many.
    async fn members(&self, socket: &SocketRef) -> Result<MembersAck, ProtocolError> {
        let membership = membership(socket)?;
        self.spend(&membership)?;
        let room = membership.room.clone().ok_or_else(no_room)?;
        if membership.username.get().is_none() {
            return Err(not_joined());
        }
        self.rooms.refuse_in_legacy(MEMBERS_EVENT)?;
        let members = self
            .rooms
            .members(&room)
            .await
            .map_err(|err| crate::rooms::unavailable(&err))?;
        Ok(MembersAck {
            ok: true,
            room: room.as_str().to_owned(),
            count: members.len(),
            members,
        })
    }

    /// `history {before?, limit?}`: a page of the room's history, oldest first.
    async fn history(
        &self,
        socket: &SocketRef,
        data: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ProtocolError> {
        let membership = membership(socket)?;
        self.spend(&membership)?;
        let room = membership.room.as_ref().ok_or_else(no_room)?;
        if membership.username.get().is_none() {
            return Err(not_joined());
        }
        self.rooms.refuse_in_legacy(HISTORY_EVENT)?;
        let request: HistoryRequest = match data {
            None | Some(serde_json::Value::Null) => HistoryRequest::default(),
            Some(data) => serde_json::from_value(data)
                .map_err(|_| invalid_payload(HistoryRequest::EXPECTED))?,
        };
        let query = request.validate(self.rooms.settings().history_page_max)?;
        let page = self
            .rooms
            .history_page(room, &query)
            .await
            .map_err(|err| crate::rooms::unavailable(&err))?;
        let messages: Vec<Box<serde_json::value::RawValue>> = page
            .into_iter()
            .filter_map(|entry| serde_json::value::RawValue::from_string(entry.json).ok())
            .collect();
        serde_json::to_value(HistoryAck {
            ok: true,
            room: room.as_str(),
            messages: messages.iter().map(AsRef::as_ref).collect(),
        })
        .map_err(|_| invalid_payload(HistoryRequest::EXPECTED))
    }

    /// Takes one event from the socket's budget, or refuses the event.
    fn spend(&self, membership: &Membership) -> Result<(), ProtocolError> {
        let mut bucket = membership
            .bucket
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        if bucket.try_take(self.rate, now) {
            return Ok(());
        }
        crate::metrics::dropped(crate::metrics::Dropped::RateLimited, 1);
        counters::count(Refusal::RateLimited);
        bucket.refused(self.rate, now);
        Err(ProtocolError::new(
            ErrorCode::RateLimited,
            format!(
                "too many events: at most {} per second; retry in {} ms",
                self.rate.per_second,
                bucket.wait_for_next(self.rate).as_millis().max(1)
            ),
        ))
    }

    async fn on_disconnect(&self, socket: SocketRef, reason: DisconnectReason) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
        // A socket refused at the handshake never had a membership, nor a room to leave.
        let Ok(membership) = membership(&socket) else {
            return;
        };
        tracing::debug!(sid = %socket.id, room = ?membership.room, "disconnected");
        self.people.end(&socket, &membership.login).await;
        let Some(room) = &membership.room else {
            return;
        };
        let topic = Topic::Room(room.clone());
        if self.hub.leave(&topic) == Occupancy::Changed {
            self.bus.occupancy_changed(&topic);
            self.rooms.forget(room.as_str());
        }
        if membership.username.get().is_some() {
            // As in socket.io, a socket that said goodbye (`socket.disconnect()`) or that the
            // server cut off does not come back: only a lost connection may recover.
            let may_recover = membership.offsets && recoverable(reason);
            self.rooms
                .leave(room, &membership.pid, &socket.id.to_string(), may_recover);
        }
    }

    /// The worker is draining: with recovery its room members stay (they recover on other
    /// workers; the others are reaped once this worker is silent); without, each one quits.
    pub fn farewell(&self, io: &SocketIo) -> usize {
        let members = io.sockets().into_iter().filter_map(|socket| {
            let membership = membership(&socket).ok()?;
            membership.username.get()?;
            Some((
                membership.room.clone()?,
                membership.pid.to_string(),
                socket.id.to_string(),
                membership.offsets,
            ))
        });
        self.rooms.farewell(members.collect::<Vec<_>>())
    }

    /// Waits until every bus frame queued so far has been handed to the bus.
    pub async fn flush_bus(&self) {
        self.bus.flush().await;
    }

    pub fn counts(&self) -> WorkerReport {
        WorkerReport::Counts {
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            rooms: self.hub.room_count() as u64,
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn bus_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// Whether the store's connection is up (on a Redis Cluster: with the cluster's slots
    /// known); true without Redis.
    pub fn store_connected(&self) -> bool {
        self.store_client
            .as_ref()
            .is_none_or(fred::prelude::ClientLike::is_connected)
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

/// The answer to `join`: `{ok:true, count}` (`count`: the room's members, cluster-wide; absent
/// when Redis could not be reached and the socket joined this worker's members only).
#[derive(Debug, Serialize)]
struct JoinAck {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

/// A new private session id: 128 random bits, hex (secret: it gives the session back).
fn new_pid() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness source: a pid that cannot be guessed cannot be made either; this one
        // never matches a session (recovery needs a known pid).
        return String::new();
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether a pid a client sent can be one of ours (it names a Redis key).
/// Whether a socket that ended for `reason` may still recover its session: socket.io's
/// recoverable reasons (a lost or closed transport, a missed heartbeat, the server closing).
fn recoverable(reason: DisconnectReason) -> bool {
    use DisconnectReason::*;
    match reason {
        TransportClose | TransportError | HeartbeatTimeout | ClosingServer => true,
        ClientNSDisconnect | ServerNSDisconnect | PacketParsingError | MultipleHttpPollingError => {
            false
        }
    }
}

fn valid_pid(pid: &str) -> bool {
    pid.len() == 32 && pid.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn not_joined() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotJoined, "send join {username} first")
}

fn no_room() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NoRoom,
        "this socket joined no room: connect with ?roomid=<room>",
    )
}

fn unknown_event(event: &str) -> ProtocolError {
    // The name is the client's: bounded before it goes back to it.
    let shown: String = event.chars().take(64).collect();
    ProtocolError::new(ErrorCode::UnknownEvent, format!("unknown event {shown:?}"))
}

/// The refusal for a payload that is JSON but not readable as text or values (the parser's
/// message picks the sentence; it is never shown), or `None` if the event simply had no
/// argument. serde_json refuses what JSON's grammar allows but Unicode and numbers do not.
/// serde_json's messages are pinned by `unreadable_payloads_get_sentences` below.
fn unreadable(err: &ParserError) -> Option<ProtocolError> {
    let cause = err.to_string();
    let why = if cause.contains("surrogate")
        || cause.contains("hex escape")
        || cause.contains("unicode code point")
    {
        "the payload is not valid text: it has a lone UTF-16 surrogate (a \\uD800-\\uDFFF \
         escape without its pair) or a broken \\u escape; send valid Unicode"
    } else if cause.contains("recursion limit") {
        "the payload is nested too deeply (more than 128 levels)"
    } else if cause.contains("number out of range") {
        "the payload has a number too large to read"
    } else if cause.contains("control character") || cause.contains("invalid escape") {
        "the payload is not valid JSON text (a string has a raw control character or a bad \
         escape)"
    } else {
        return None;
    };
    Some(ProtocolError::new(ErrorCode::InvalidPayload, why))
}

/// An event's payload in the shape the event expects, if it has that shape.
fn payload<T: serde::de::DeserializeOwned>(data: Option<serde_json::Value>) -> Option<T> {
    data.and_then(|data| serde_json::from_value(data).ok())
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

/// Answers an event with its result, or with `{ok:false, error}`.
fn send_answer<T: Serialize>(ack: AckSender, answer: Result<T, ProtocolError>) {
    let sent = match &answer {
        Ok(reply) => ack.send(reply),
        Err(err) => {
            tracing::debug!(code = err.code.as_str(), reason = %err.message, "event refused");
            ack.send(&Ack::error(err))
        }
    };
    // Fails only when the client is gone or its queue is full; either way there is no one to tell.
    let _ = sent;
}

/// The first value of `name` in a URL query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json says, through socketioxide's parser error, for each payload.
    fn parse_error(json: &str) -> ParserError {
        let err = serde_json::from_str::<serde_json::Value>(json).expect_err("unreadable");
        ParserError::new(err)
    }

    #[test]
    fn unreadable_payloads_get_sentences() {
        for lone in [
            r#"["say",{"text":"\ud83d"}]"#,
            r#"["say","\ude00 x"]"#,
            r#"["say","\ud83dx"]"#,
        ] {
            let refusal = unreadable(&parse_error(lone)).expect("a lone surrogate is refused");
            assert_eq!(refusal.code, ErrorCode::InvalidPayload);
            assert!(
                refusal.message.contains("surrogate"),
                "{lone}: {}",
                refusal.message
            );
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(unreadable(&parse_error(&deep)).is_some_and(|r| r.message.contains("nested")));
        assert!(unreadable(&parse_error("[1e999]")).is_some_and(|r| r.message.contains("number")));
        // Not a payload problem: the event had no argument.
        let none = ParserError::new(std::io::Error::other("first element not found"));
        assert!(unreadable(&none).is_none());
    }
}
