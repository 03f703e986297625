//! Rooms: who is in a room on this worker ([`hub`]), how a message reaches them
//! ([`fanout`]), and the room's memory across the cluster: history on join, presence, and
//! socket.io connection state recovery ([`log`], [`presence`], the scripts of
//! [`crate::store::rooms`]); beside the old node cluster during a migration ([`legacy`]).
//!
//! Architecture invariants:
//! - **Local first.** A message said here reaches the local members at once; it is queued for
//!   Redis (history and other workers) after, and never waits for it. Joins, quits and
//!   recoveries change the room's membership in Redis and reach everyone, this worker
//!   included, through the room's channel.
//! - **History then live, exactly.** A joining (or recovering) socket enters the room when its
//!   operation's marker comes back on the room's channel: everything published before the
//!   marker is in the history the same script read, everything after it comes live; what this
//!   worker said meanwhile (before Redis had it) is handed over from the room's log. So a
//!   message said during the join is delivered once.
//! - **Offsets are exact.** Every room event a socket gets carries `<S>~<k>` (see
//!   [`chat_protocol::memory::Offset`]): this worker delivers other workers' messages in stream
//!   order and its own before they reach the stream, so "every entry up to S, and every own
//!   message up to k" is exactly what the socket has seen, and a recovery replays the rest.

pub mod fanout;
pub mod hub;
pub mod legacy;
pub mod log;
pub mod presence;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chat_protocol::{
    ProtocolError, RoomId, Username,
    bus::{FrameKind, NodeId, Topic, decode_frame},
    memory::{
        HISTORY_EVENT, HistoryEvent, HistoryQuery, MemberRecord, Offset, SessionRecord,
        split_message_id,
    },
    people::StreamId,
    server::{MESSAGE_EVENT, RoomEventData, RoomEventKind, RoomMessage},
};
use serde_json::value::RawValue;
use socketioxide::{SocketIo, extract::SocketRef};
use tokio::sync::oneshot;

use self::{
    hub::Hub,
    log::{Buffered, Pending, PendingKind, RoomLog},
};
use crate::{
    bus::{Bus, BusError, RoomOp, RoomReply, Said},
    config::RoomSettings,
    payload::Encoded,
    store::rooms::{HistoryEntry, JoinOp, QuitOp, ResumeOp},
    unix_millis,
};

/// Longest a join or a recovery waits for Redis to run its script.
const OP_WAIT: Duration = Duration::from_secs(3);
/// Longest a join or a recovery waits for its marker after the script answered.
const MARKER_WAIT: Duration = Duration::from_secs(2);

/// The joined sockets whose sessions are renewed: connection (engine.io session id) -> (room,
/// pid).
type SessionsByConnection = HashMap<Box<str>, (RoomId, Box<str>)>;

/// Who is joining or recovering, as the room's messages and records name them.
#[derive(Debug, Clone)]
pub struct Person {
    pub username: Username,
    /// The authenticated user id (`--auth jwt`).
    pub user_id: Option<String>,
    /// The socket's private session id (recovery).
    pub pid: String,
    /// The socket id the client knows.
    pub sid: String,
    /// Whether the client takes offsets as the last argument of room events.
    pub offsets: bool,
}

/// A session recovered at the handshake: what the socket gets back.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub sid: String,
    pub username: String,
    pub user_id: Option<String>,
}

/// The room service of a worker: local delivery with offsets, and the operations that change
/// a room's membership cluster-wide.
pub struct Rooms {
    io: SocketIo,
    origin: NodeId,
    settings: RoomSettings,
    bus: OnceLock<Arc<dyn Bus>>,
    /// This worker's message counter: message ids are `<origin>-<counter>`.
    next_message: AtomicU64,
    next_token: AtomicU64,
    /// Each room's log, locked on its own while a message is placed and handed to sockets.
    logs: Mutex<HashMap<Box<str>, Arc<Mutex<RoomLog>>>>,
    /// The joined sockets whose sessions are renewed: connection -> (room, pid).
    sessions: Mutex<SessionsByConnection>,
    /// Local occupancy: a room's log is dropped once no socket here has it.
    hub: Arc<Hub>,
    /// Quits queued or waiting for the presence grace, by room: until they are done, this
    /// worker still has members there.
    lingering: Arc<Mutex<HashMap<Box<str>, usize>>>,
    /// `--bus-format legacy`: the rooms run beside the old node cluster.
    legacy: Option<legacy::Legacy>,
}

impl Rooms {
    pub fn new(
        io: SocketIo,
        origin: NodeId,
        settings: RoomSettings,
        hub: Arc<Hub>,
        legacy: Option<legacy::Legacy>,
    ) -> Arc<Self> {
        Arc::new(Self {
            io,
            origin,
            settings,
            bus: OnceLock::new(),
            next_message: AtomicU64::new(0),
            next_token: AtomicU64::new(0),
            logs: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            hub,
            lingering: Arc::default(),
            legacy,
        })
    }

    /// Connects the service to its bus (made after it: the bus delivers frames to it).
    pub fn set_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.bus.set(bus);
    }

    pub fn origin(&self) -> NodeId {
        self.origin
    }

    pub fn io(&self) -> &SocketIo {
        &self.io
    }

    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    fn bus(&self) -> Option<&Arc<dyn Bus>> {
        self.bus.get()
    }

    /// Whether room events carry offsets and sessions can be recovered.
    pub fn recovery(&self) -> bool {
        self.settings.recovery()
    }

    /// The socket.io room a socket joins: offsets-taking sockets apart from the others, so a
    /// message is encoded once per kind.
    fn room_name(room: &str, offsets: bool) -> String {
        if offsets {
            format!("o:{room}")
        } else {
            format!("p:{room}")
        }
    }

    /// Reserves `n` message counters (for ids this worker makes: its messages, reaped quits).
    pub fn reserve_counters(&self, n: u64) -> u64 {
        self.next_message.fetch_add(n, Ordering::Relaxed) + 1
    }

    /// A new room message, encoded once: its id, its counter and its JSON.
    fn message(
        &self,
        room: &RoomId,
        event: RoomEventKind,
        username: &str,
        user_id: Option<&str>,
        text: Option<&str>,
    ) -> Option<(String, u64, Box<RawValue>)> {
        let counter = self.reserve_counters(1);
        let id = format!("{}-{counter}", self.origin);
        let message = RoomMessage {
            event,
            data: RoomEventData {
                username,
                user_id,
                text,
            },
            id: &id,
            ts: unix_millis(),
            room: room.as_str(),
        };
        // Strings and integers: encoding cannot fail; the arm avoids a panic path.
        let json = serde_json::value::to_raw_value(&message)
            .inspect_err(|err| tracing::error!(cause = %err, "room message did not encode"))
            .ok()?;
        Some((id, counter, json))
    }

    /// Says `text` in `room`: delivered to the local members at once, then queued for the
    /// room's history and the other workers. Returns the message id.
    pub fn say(
        &self,
        room: &RoomId,
        username: &Username,
        user_id: Option<&str>,
        text: &str,
    ) -> String {
        let log = self.log(room.as_str());
        // Held from the message's counter to its place in the publish queue: this worker's
        // messages reach its sockets, and Redis, in counter order.
        let mut log = lock(&log);
        let Some((id, counter, json)) = self.message(
            room,
            RoomEventKind::Say,
            username.as_str(),
            user_id,
            Some(text),
        ) else {
            return String::new();
        };
        self.deliver(&mut log, room.as_str(), &json, None, Some(counter));
        if let Some(bus) = self.bus() {
            bus.publish(
                room,
                Said {
                    id: id.clone(),
                    json,
                },
            );
        }
        id
    }

    /// Delivers one room message to the local members, with the room's offset after it, and to
    /// the room's pending joins that must see it; called with the room's log locked, so that
    /// every local socket has the message queued before the next one takes its place. `stream`
    /// is its history entry (a message from the bus), `own` its counter (said here).
    fn deliver(
        &self,
        log: &mut RoomLog,
        room: &str,
        json: &RawValue,
        stream: Option<StreamId>,
        own: Option<u64>,
    ) {
        let offset = log.delivered(json, stream, own);
        let _probe = crate::metrics::delivery_probe();
        if self.recovery()
            && let Err(err) = self
                .io
                .to(Self::room_name(room, true))
                .emit_local_now(MESSAGE_EVENT, &(Encoded(json), offset.to_string()))
        {
            crate::metrics::emit_failed(&err);
        }
        if let Err(err) = self
            .io
            .to(Self::room_name(room, false))
            .emit_local_now(MESSAGE_EVENT, &Encoded(json))
        {
            crate::metrics::emit_failed(&err);
        }
    }

    /// Handles a frame of a room's channel: this worker's own messages are skipped (delivered
    /// already); the rest are delivered; a marker of this worker's completes its operation
    /// first, so that its socket gets the marker's message live.
    pub fn on_frame(&self, room: &str, raw: &str) {
        let frame = match decode_frame(raw) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::warn!(room, cause = %err, "dropping malformed bus frame");
                return;
            }
        };
        let mine = frame.origin == self.origin;
        if mine && frame.kind == FrameKind::Say {
            return;
        }
        let json = if frame.json.is_empty() {
            // A recovery's marker without a message: nothing to deliver.
            None
        } else {
            match serde_json::from_str::<&RawValue>(frame.json) {
                Ok(json) => Some(json),
                Err(err) => {
                    tracing::warn!(room, cause = %err, "dropping bus frame with bad JSON");
                    return;
                }
            }
        };
        let log = self.log(room);
        let mut log = lock(&log);
        let mut retired = false;
        if let (FrameKind::Marker(token), true) = (frame.kind, mine)
            && let Some(pending) = log.marker(token)
        {
            retired = !self.complete(room, pending);
        }
        if let Some(json) = json {
            self.deliver(&mut log, room, json, frame.stream, None);
        }
        drop(log);
        if retired {
            self.forget(room);
        }
    }

    /// Joins `socket` to `room` as `person`: registers it in the room's members, sends it the
    /// room's history, then lets it take live messages, and publishes its join. Returns the
    /// room's member count (`None` when Redis could not be reached: the socket then joined
    /// this worker's part of the room only).
    pub async fn join(&self, socket: &SocketRef, room: &RoomId, person: &Person) -> Option<u64> {
        let prefix = self
            .message(
                room,
                RoomEventKind::Join,
                person.username.as_str(),
                person.user_id.as_deref(),
                None,
            )
            .map(|(_, _, json)| strip_closing_brace(json.get()));
        // Redis away (known): the room's part on this worker is joined at once, without
        // waiting for a command to time out.
        let (Some(bus), Some(message_prefix)) =
            (self.bus().filter(|bus| bus.is_connected()), prefix)
        else {
            self.join_locally(socket, room, person);
            return None;
        };
        let token = self.token();
        let done = self.begin(
            room,
            &token,
            socket,
            &person.pid,
            person.offsets,
            PendingKind::Join,
            true,
        );
        let op = RoomOp::Join(JoinOp {
            token: token.clone(),
            pid: person.pid.clone(),
            member: MemberRecord {
                node: self.origin.to_string(),
                username: person.username.as_str().to_owned(),
                user_id: person.user_id.clone(),
                conn: Some(socket.id.to_string()),
            },
            message_prefix,
            session: SessionRecord {
                sid: person.sid.clone(),
                username: person.username.as_str().to_owned(),
                user_id: person.user_id.clone(),
                node: self.origin.to_string(),
            },
            read_back: self.settings.history_served(),
        });
        let reply = tokio::time::timeout(OP_WAIT, async {
            note_room(&**bus, room).await;
            bus.room_op(room, op).await
        })
        .await;
        let count = match reply {
            Ok(Ok(Ok(RoomReply::Joined(joined)))) => {
                let count = joined.count;
                self.settle(room.as_str(), |log| {
                    log.reply(&token, log::Reply::Joined(joined))
                });
                count
            }
            other => {
                tracing::debug!(room = %room, outcome = ?other.map(|r| r.map(|r| r.map(|_| ()))), "join not recorded in redis; joining this worker's members only");
                self.abandon(room.as_str(), &token);
                self.join_locally(socket, room, person);
                return None;
            }
        };
        if tokio::time::timeout(MARKER_WAIT, done).await.is_err() {
            // The marker is lost (the bus reconnected meanwhile): enter without it.
            tracing::debug!(room = %room, "join marker late; entering without it");
            self.settle(room.as_str(), |log| log.take(&token));
        }
        // Beside the node cluster the count would leave out node's members.
        self.legacy.is_none().then_some(count)
    }

    /// Recovers the session `pid` of a client that reconnects with `offset` (at the
    /// handshake): moves it here, and once the socket is connected replays what it missed and
    /// lets it take live messages. `None`: a normal new session.
    pub async fn resume(
        &self,
        socket: &SocketRef,
        room: &RoomId,
        pid: &str,
        offset: Offset,
        user_id: Option<&str>,
        offsets: bool,
    ) -> Option<Recovered> {
        if !self.recovery() {
            return None;
        }
        let bus = self.bus().filter(|bus| bus.is_connected())?;
        let token = self.token();
        let join_prefix = format!(
            r#"{{"event":"join","id":"{}-{}","ts":{},"room":"{}""#,
            self.origin,
            self.reserve_counters(1),
            unix_millis(),
            room
        );
        // Not connected yet: the replay waits for the CONNECT answer.
        let _done = self.begin(
            room,
            &token,
            socket,
            pid,
            offsets,
            PendingKind::Resume {
                old_node: String::new(),
                seen: offset,
            },
            false,
        );
        let op = RoomOp::Resume(ResumeOp {
            token: token.clone(),
            pid: pid.to_owned(),
            after: offset.stream,
            user_id: user_id.map(str::to_owned),
            join_prefix,
            conn: socket.id.to_string(),
        });
        let reply = tokio::time::timeout(OP_WAIT, async {
            note_room(&**bus, room).await;
            bus.room_op(room, op).await
        })
        .await;
        match reply {
            Ok(Ok(Ok(RoomReply::Resumed(Some(resumed))))) => {
                let recovered = Recovered {
                    sid: resumed.session.sid.clone(),
                    username: resumed.session.username.clone(),
                    user_id: resumed.session.user_id.clone(),
                };
                self.settle(room.as_str(), |log| {
                    log.reply(&token, log::Reply::Resumed(resumed))
                });
                Some(recovered)
            }
            Ok(Ok(Ok(_))) => {
                self.abandon(room.as_str(), &token);
                None
            }
            other => {
                tracing::debug!(room = %room, outcome = ?other.map(|r| r.map(|r| r.map(|_| ()))), "recovery not answered; a new session");
                self.abandon(room.as_str(), &token);
                // The script may still run: the session would then point here without a
                // socket; its member is removed so that no ghost stays.
                self.quit(room, pid, &socket.id.to_string(), false);
                None
            }
        }
    }

    /// The socket's CONNECT answer is out: a recovery waiting for it may complete.
    pub fn connected(&self, socket: &SocketRef, room: &RoomId) {
        let conn = socket.id.to_string();
        self.settle(room.as_str(), |log| log.connected(&conn));
    }

    /// A joined socket ended. With recovery, the quit of a client that can recover waits for
    /// the presence grace (it may come back); it happens only if the member is still this
    /// socket; its session lives on for the recovery window. A client that cannot recover (it
    /// takes no offsets, or it left on purpose) quits at once, session and all.
    pub fn leave(&self, room: &RoomId, pid: &str, conn: &str, may_recover: bool) {
        self.forget_session(conn);
        if !self.recovery() || !may_recover {
            self.quit(room, pid, conn, true);
            return;
        }
        let Some(bus) = self.bus().cloned() else {
            return;
        };
        let window = Duration::from_secs(self.settings.recovery_window_secs);
        // Queued; nothing waits for the reply.
        drop(bus.room_op(
            room,
            RoomOp::ExpireSessions {
                pids: vec![pid.to_owned()],
                ttl: window,
            },
        ));
        // Past the window the client cannot come back as this member: no longer wait.
        let grace = self.settings.presence_grace().min(window);
        let later = self.quit_later(bus, room, pid, conn, false);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            later.run().await;
        });
    }

    /// Queues the quit of member `pid` if it is still connection `conn`.
    fn quit(&self, room: &RoomId, pid: &str, conn: &str, delete_session: bool) {
        if let Some(bus) = self.bus() {
            let quit = self.quit_later(Arc::clone(bus), room, pid, conn, delete_session);
            tokio::spawn(quit.run());
        }
    }

    fn quit_later(
        &self,
        bus: Arc<dyn Bus>,
        room: &RoomId,
        pid: &str,
        conn: &str,
        delete_session: bool,
    ) -> QuitLater {
        QuitLater {
            bus,
            room: room.clone(),
            op: self.quit_op(room, pid, conn, delete_session),
            _lingering: Lingering::new(&self.lingering, room.as_str()),
        }
    }

    fn quit_op(&self, room: &RoomId, pid: &str, conn: &str, delete_session: bool) -> QuitOp {
        // The member's name and user id are in its record: the script adds them (`data`).
        let counter = self.reserve_counters(1);
        QuitOp {
            pid: pid.to_owned(),
            conn: conn.to_owned(),
            message_prefix: format!(
                r#"{{"event":"broadcast_quit","id":"{}-{counter}","ts":{},"room":"{}""#,
                self.origin,
                unix_millis(),
                room
            ),
            delete_session,
        }
    }

    /// Notes a joined socket whose session is renewed while it is connected.
    fn note_session(&self, conn: &str, room: &RoomId, pid: &str) {
        if self.recovery() {
            self.lock_sessions()
                .insert(conn.into(), (room.clone(), pid.into()));
        }
    }

    fn forget_session(&self, conn: &str) {
        self.lock_sessions().remove(conn);
    }

    /// Renews the session of every joined socket of this worker (their lifetime covers the
    /// next renewal and the recovery window after it).
    pub fn renew_sessions(&self) {
        let Some(bus) = self.bus() else { return };
        let mut by_room: HashMap<RoomId, Vec<String>> = HashMap::new();
        for (room, pid) in self.lock_sessions().values() {
            by_room
                .entry(room.clone())
                .or_default()
                .push(pid.to_string());
        }
        let ttl = self.settings.session_ttl();
        for (room, pids) in by_room {
            drop(bus.room_op(&room, RoomOp::ExpireSessions { pids, ttl }));
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, SessionsByConnection> {
        lock(&self.sessions)
    }

    /// The room's members, cluster-wide: their names, and how many they are.
    pub async fn members(&self, room: &RoomId) -> Result<Vec<String>, BusError> {
        let bus = self.bus().ok_or(BusError::Stopped)?;
        let mut names: Vec<String> = bus
            .members(room)
            .await?
            .into_iter()
            .map(|member| member.username)
            .collect();
        names.sort();
        Ok(names)
    }

    /// A page of the room's history, oldest first: the `limit` messages before `before` (or
    /// the newest).
    pub async fn history_page(
        &self,
        room: &RoomId,
        query: &HistoryQuery,
    ) -> Result<Vec<HistoryEntry>, BusError> {
        let bus = self.bus().ok_or(BusError::Stopped)?;
        let newest_first = bus.history(room).await?;
        let start = match &query.before {
            None => 0,
            Some(before) => {
                match newest_first
                    .iter()
                    .position(|entry| message_id(&entry.json).as_deref() == Some(before.as_str()))
                {
                    Some(index) => index + 1,
                    None => newest_first.len(),
                }
            }
        };
        let mut page: Vec<HistoryEntry> = newest_first
            .into_iter()
            .skip(start)
            .take(query.limit)
            .collect();
        page.reverse();
        Ok(page)
    }

    /// Drops the room's local log once no socket here has the room and no operation is in
    /// flight (called when the room's last local socket left, and when an operation ends).
    pub fn forget(&self, room: &str) {
        let Some(id) = known_room(room) else { return };
        let mut logs = lock(&self.logs);
        if logs.get(room).is_some_and(|log| lock(log).idle())
            && !self.hub.is_occupied(&Topic::Room(id))
        {
            logs.remove(room);
        }
    }

    /// The room's log, made if missing.
    fn log(&self, room: &str) -> Arc<Mutex<RoomLog>> {
        let mut logs = lock(&self.logs);
        if let Some(log) = logs.get(room) {
            return Arc::clone(log);
        }
        let log = Arc::<Mutex<RoomLog>>::default();
        logs.insert(room.into(), Arc::clone(&log));
        log
    }

    /// The rooms where this worker may have members registered in Redis: those with a log
    /// (joined sockets, joins and recoveries in flight) and those with quits not done yet.
    pub fn rooms_with_members(&self) -> std::collections::HashSet<Box<str>> {
        let mut rooms: std::collections::HashSet<Box<str>> =
            lock(&self.logs).keys().cloned().collect();
        rooms.extend(lock(&self.lingering).keys().cloned());
        rooms
    }

    fn token(&self) -> String {
        format!("{:x}", self.next_token.fetch_add(1, Ordering::Relaxed))
    }

    #[allow(clippy::too_many_arguments)]
    fn begin(
        &self,
        room: &RoomId,
        token: &str,
        socket: &SocketRef,
        pid: &str,
        offsets: bool,
        kind: PendingKind,
        connected: bool,
    ) -> oneshot::Receiver<()> {
        let (done, wait) = oneshot::channel();
        let pending = Pending::new(
            token.to_owned(),
            socket.clone(),
            pid.to_owned(),
            offsets,
            kind,
            connected,
            done,
        );
        // Under the map's lock: the log cannot be dropped before it holds the operation.
        let mut logs = lock(&self.logs);
        let log = logs.entry(room.as_str().into()).or_default();
        lock(log).begin(pending);
        wait
    }

    /// Applies `change` to the room's log and completes the operation it makes ready, if any.
    fn settle(&self, room: &str, change: impl FnOnce(&mut RoomLog) -> Option<Pending>) {
        let Some(log) = lock(&self.logs).get(room).cloned() else {
            return;
        };
        let retired = {
            let mut log = lock(&log);
            change(&mut log).is_some_and(|pending| !self.complete(room, pending))
        };
        if retired {
            self.forget(room);
        }
    }

    /// Drops an operation that will not complete.
    fn abandon(&self, room: &str, token: &str) {
        if let Some(log) = lock(&self.logs).get(room).cloned() {
            lock(&log).take(token);
        }
        self.forget(room);
    }

    /// Hands a completed join or recovery its history (or what it missed), then what was
    /// buffered for it, then lets its socket into the room; called with the room's log locked,
    /// so that no delivery falls between the two. Returns whether the socket entered (false:
    /// it was gone, and the room's log may be unused now).
    fn complete(&self, room: &str, mut pending: Pending) -> bool {
        let socket = pending.socket.clone();
        let offsets = pending.offsets && self.recovery();
        if !socket.connected() {
            // Gone while joining: its disconnect handler saw no member to remove, so it is
            // removed here (it was registered if the script answered).
            if pending.recorded()
                && let Some(room) = known_room(room)
            {
                self.quit(&room, &pending.pid, pending.conn(), true);
            }
            pending.finish();
            return false;
        }
        let handover = pending.handover(&self.origin.to_string());
        if let Some(history) = handover.history {
            let messages: Vec<Box<RawValue>> = history
                .into_iter()
                .filter_map(|entry| RawValue::from_string(entry.json).ok())
                .collect();
            let event = HistoryEvent {
                room,
                messages: messages.iter().map(AsRef::as_ref).collect(),
            };
            let sent = if offsets {
                socket.emit(
                    HISTORY_EVENT,
                    &(Encoded(&event), handover.history_offset.to_string()),
                )
            } else {
                socket.emit(HISTORY_EVENT, &Encoded(&event))
            };
            if let Err(err) = sent {
                tracing::debug!(room, cause = %err, "history not sent");
            }
        }
        for Buffered { json, offset, .. } in handover.messages {
            let sent = if offsets {
                socket.emit(MESSAGE_EVENT, &(Encoded(&*json), offset.to_string()))
            } else {
                socket.emit(MESSAGE_EVENT, &Encoded(&*json))
            };
            if let Err(err) = sent {
                tracing::debug!(room, cause = %err, "a replayed message was not sent");
            }
        }
        socket.join(Self::room_name(room, offsets));
        if offsets && let Some(room) = known_room(room) {
            self.note_session(pending.conn(), &room, &pending.pid);
        }
        pending.finish();
        true
    }

    /// Joins without Redis (away): this worker's members hear the join at once, the others
    /// when the bus delivers it (it is queued like a message said here); the member is not in
    /// the room's cluster-wide members.
    fn join_locally(&self, socket: &SocketRef, room: &RoomId, person: &Person) {
        let log = self.log(room.as_str());
        let mut log = lock(&log);
        socket.join(Self::room_name(
            room.as_str(),
            person.offsets && self.recovery(),
        ));
        if let Some((id, counter, json)) = self.message(
            room,
            RoomEventKind::Join,
            person.username.as_str(),
            person.user_id.as_deref(),
            None,
        ) {
            self.deliver(&mut log, room.as_str(), &json, None, Some(counter));
            if let Some(bus) = self.bus() {
                bus.publish(room, Said { id, json });
            }
        }
    }

    /// The worker is draining. With recovery the members that can recover stay (they come back
    /// elsewhere; those that do not are reaped once this worker's heartbeat stops); the others
    /// quit. Each member is `(room, pid, connection, takes offsets)`. Returns how many quits
    /// were queued.
    pub fn farewell(
        &self,
        members: impl IntoIterator<Item = (RoomId, String, String, bool)>,
    ) -> usize {
        let mut quits = 0;
        for (room, pid, conn, offsets) in members {
            if self.recovery() && offsets {
                continue;
            }
            self.quit(&room, &pid, &conn, true);
            quits += 1;
        }
        quits
    }
}

/// A quit queued now or after the presence grace; the room counts as having members here
/// until Redis answered it.
struct QuitLater {
    bus: Arc<dyn Bus>,
    room: RoomId,
    op: QuitOp,
    _lingering: Lingering,
}

impl QuitLater {
    async fn run(self) {
        // The reply only says whether the member was still there.
        let _ = self.bus.room_op(&self.room, RoomOp::Quit(self.op)).await;
    }
}

/// One quit not done yet in a room, counted while it lives.
struct Lingering {
    rooms: Arc<Mutex<HashMap<Box<str>, usize>>>,
    room: Box<str>,
}

impl Lingering {
    fn new(rooms: &Arc<Mutex<HashMap<Box<str>, usize>>>, room: &str) -> Self {
        *lock(rooms).entry(room.into()).or_default() += 1;
        Self {
            rooms: Arc::clone(rooms),
            room: room.into(),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let mut rooms = lock(&self.rooms);
        if let Some(count) = rooms.get_mut(&self.room) {
            *count -= 1;
            if *count == 0 {
                rooms.remove(&self.room);
            }
        }
    }
}

/// Locks a map that no code panics while holding: a poisoned one is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Notes the room as one where this worker has members, before registering one there; a
/// failure only widens the window in which a crash of this worker could leave a ghost.
async fn note_room(bus: &dyn Bus, room: &RoomId) {
    if let Err(err) = bus.note_room(room).await {
        tracing::debug!(room = %room, cause = %err, "could not note the room for the reaper");
    }
}

/// A room id this worker validated before (a key of its logs, a name in Redis it wrote),
/// validated again whatever its length (`--max-room-id-len` may have changed since).
pub(crate) fn known_room(name: &str) -> Option<RoomId> {
    let any_length = chat_protocol::Limits {
        max_room_id_len: name.len().max(1),
        ..chat_protocol::Limits::default()
    };
    RoomId::parse(name, &any_length).ok()
}

/// `json` without its final `}`, for a script to append fields.
fn strip_closing_brace(json: &str) -> String {
    json.strip_suffix('}').unwrap_or(json).to_owned()
}

/// The `id` of a message JSON.
fn message_id(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_str::<Id>(json).ok().map(|m| m.id)
}

/// Whether a history entry is a message the worker `node` said itself with a counter at most
/// `own`: a client of that worker that has seen offset `own` has it already.
pub(crate) fn seen_own(entry: &HistoryEntry, node: &str, own: u64) -> bool {
    entry
        .said
        .as_deref()
        .and_then(split_message_id)
        .is_some_and(|(origin, counter)| origin == node && counter <= own)
}

/// Refusal of a room request that needs Redis.
pub fn unavailable(err: &BusError) -> ProtocolError {
    tracing::debug!(cause = %err, "room store unavailable");
    ProtocolError::new(
        chat_protocol::ErrorCode::Unavailable,
        "the room store did not answer; retry later",
    )
}
