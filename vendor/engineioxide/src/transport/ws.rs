//! The ws transport module is responsible for handling websocket connections
//! The only public function is [`new_req`] which is used to upgrade a http request to a websocket connection
//!
//! Other functions are used internally to handle the websocket connection through tasks and channels
//! and to handle upgrade from polling to ws

use std::{
    ops::ControlFlow,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use futures_util::{FutureExt as _, SinkExt, StreamExt, future::Either, task::AtomicWaker};
use http::{HeaderValue, Request, Response, StatusCode, request::Parts};
use smallvec::smallvec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use tokio_util::{future::FutureExt as _, sync::WaitForCancellationFuture};

use engineioxide_core::{Packet, ProtocolVersion, Sid, Str, TransportType};

use crate::{
    DisconnectReason, Socket, body::ResponseBody, config::EngineIoConfig, engine::EngineIo,
    errors::Error, handler::EngineIoHandler, socket::QueuedPackets, transport::make_open_packet,
};

/// Create a response for websocket upgrade
fn ws_response<B>(ws_key: &HeaderValue) -> Response<ResponseBody<B>> {
    let derived = derive_accept_key(ws_key.as_bytes());
    let sec = derived.parse::<HeaderValue>().unwrap();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        )
        .header(http::header::SEC_WEBSOCKET_ACCEPT, sec)
        .body(ResponseBody::empty_response())
        .unwrap() // we are only using constants
}

/// Upgrade a websocket request to create a websocket connection.
///
/// If a sid is provided in the query it means that is is upgraded from an existing HTTP polling request.
/// In this case the http polling request is closed and the SID is kept for the websocket
pub fn new_req<R: Send + 'static, B, H: EngineIoHandler>(
    engine: Arc<EngineIo<H>>,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req: Request<R>,
) -> Result<Response<ResponseBody<B>>, Error> {
    // PATCHED (chat cluster, vendor/README.md change 12): the upgrade gets only hyper's upgrade
    // handle, taken out of the parts, instead of a copy of the parts. The parts, kept for the
    // session's life, no longer hold a second handle on the finished upgrade, and nothing is
    // copied per connection.
    let (mut parts, body) = req.into_parts();
    let mut req = Request::new(body);
    if let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        req.extensions_mut().insert(on_upgrade);
    }

    let ws_key = parts
        .headers
        .get("Sec-WebSocket-Key")
        .ok_or(Error::InvalidWebSocketKey)?
        .clone();

    // PATCHED (chat cluster, vendor/README.md): the upgrade and the handshake run in a future of
    // their own on the heap, freed once the session is open, and the spawned task holds only a
    // pointer to it. A task's allocation is as large as its largest state, and the handshake
    // (the request parts, the upgrade, the websocket setup) is far larger than the reading loop
    // that lives as long as the connection: 3.6 KB per connection otherwise.
    let opening = Box::pin(async move {
        let conn = match hyper::upgrade::on(req).await {
            Ok(conn) => hyper_util::rt::TokioIo::new(conn),
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("ws upgrade error: {}", _e);
                return None;
            }
        };
        let opened = open_websocket(&engine, conn, protocol, sid, parts).await;
        Some((engine, opened))
    });
    // PATCHED (chat cluster, vendor/README.md change 11): a combinator rather than an `async`
    // block, whose state kept the opened websocket's storage (moved out, but still a local of
    // the block: about 380 bytes) beside the serving future for the connection's life.
    tokio::spawn(opening.then(move |opening| match opening {
        Some((engine, Ok((socket, ws, writer_heartbeat)))) => {
            Either::Left(serve_websocket(engine, socket, ws, writer_heartbeat))
        }
        Some((_, Err(Error::MultipleWebsocketRequests))) | None => {
            Either::Right(std::future::ready(()))
        }
        Some((engine, Err(_e))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(?sid, "ws closed with error: {_e}");
            if let Some(sid) = sid {
                engine.close_session(sid, DisconnectReason::TransportError);
            }
            Either::Right(std::future::ready(()))
        }
    }));

    Ok(ws_response(&ws_key))
}

/// Handle a websocket connection upgrade
///
/// Sends an open packet if it is not an upgrade from a polling request
///
/// Read packets from the websocket and handle them, it will block until the connection is closed
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", name = "init_websocket", skip(engine, conn, req_data))
)]
pub async fn on_init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (socket, ws, writer_heartbeat) =
        open_websocket(&engine, conn, protocol, sid, req_data).await?;
    serve_websocket(engine, socket, ws, writer_heartbeat).await;
    Ok(())
}

/// Opens the websocket session: a new one with its handshake, or the upgrade of a polling one.
/// PATCHED (chat cluster, vendor/README.md): also says whether the session's heartbeat is left
/// to the writer (a new v4 session), rather than running in a task of its own.
async fn open_websocket<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<(Arc<Socket<H::Data>>, WebSocketStream<S>, bool), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(engine.config.ws_read_buffer_size)
        .max_message_size(Some(engine.config.ws_max_message_size))
        .max_frame_size(Some(engine.config.ws_max_frame_size));

    let ws_init = move || WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config));
    let opened = if let Some(sid) = sid {
        match engine.get_socket(sid) {
            None => return Err(Error::UnknownSessionID(sid)),
            Some(socket) if socket.is_ws() => return Err(Error::MultipleWebsocketRequests),
            Some(socket) => {
                let mut ws = ws_init().await;

                let upgrade_fut = upgrade_handshake::<H, S>(&socket, &mut ws);
                match tokio::time::timeout(engine.config.upgrade_timeout, upgrade_fut)
                    .with_cancellation_token(&socket.cancellation_token)
                    .await
                {
                    Some(Ok(res)) => res?,
                    Some(Err(_)) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "ws upgrade timed out, closing session");
                        engine.close_session(socket.id, DisconnectReason::TransportError);
                        return Err(Error::Upgrade);
                    }
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "socket is being closed");
                        return Err(Error::Upgrade);
                    }
                }
                (socket, ws, false)
            }
        }
    } else {
        let socket = engine.create_session(protocol, TransportType::Websocket, req_data, false);

        #[cfg(feature = "tracing")]
        tracing::debug!("new websocket connection");

        let mut ws = ws_init().await;
        init_handshake(socket.id, &mut ws, &engine.config).await?;
        // PATCHED (chat cluster, vendor/README.md): a v4 session opened on a websocket runs its
        // heartbeat in its writer task (`forward_to_socket`, since change 10 `serve_session`)
        // instead of a task of its own.
        let writer_heartbeat = socket.protocol == ProtocolVersion::V4;
        if !writer_heartbeat {
            socket
                .clone()
                .spawn_heartbeat(engine.config.ping_interval, engine.config.ping_timeout);
        }
        (socket, ws, writer_heartbeat)
    };
    Ok(opened)
}

/// Serves an open websocket session until it closes.
/// PATCHED (chat cluster, vendor/README.md): in one future, which reads and writes the
/// unsplit websocket ([`serve_session`]), instead of this future reading and a spawned task
/// writing over the two halves of a split one. Not an `async fn`: an `async fn` keeps its
/// arguments and the locals they are moved into side by side in its state, which would hold
/// the websocket (about 300 bytes) twice for the connection's life.
fn serve_websocket<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    socket: Arc<Socket<H::Data>>,
    ws: WebSocketStream<S>,
    writer_heartbeat: bool,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // This future runs the heartbeat of a v4 session opened on this websocket; an upgraded
    // session keeps the heartbeat task its polling transport started.
    let heartbeat =
        writer_heartbeat.then_some((engine.config.ping_interval, engine.config.ping_timeout));
    serve_session(engine, socket, ws, heartbeat)
}

/// PATCHED (chat cluster, vendor/README.md): how many messages are read in a row, at most,
/// while packets wait to be written: reading comes first in [`serve_session`], and this bounds
/// how long a client that keeps sending holds back what it is sent.
const READ_STREAK: u8 = 32;

/// PATCHED (chat cluster, vendor/README.md): whether the side branch of [`serve_session`]
/// (the session's end and the websocket's next message, [`session_event`]) may have progressed
/// since its futures were last polled. Those futures are polled with a waker of their own, which
/// records the wake-up before it wakes the task, and only when it was woken. [`serve_session`]'s
/// task wakes once per packet written and polls every branch then and before it sleeps again;
/// polling these futures each time cost (`bash scripts/delivery-cost.sh product --callgrind`)
/// about 1,400 instructions per packet for the websocket's read side (tungstenite's read,
/// hyper's upgraded connection, tokio's readiness check under its lock) and about 300 for the
/// session's end (tokio-util's `cancelled()` takes a lock at each poll). The wake-ups of the
/// queue and the timer poll none of them. (The volatile packet, a branch of its own until
/// change 11, now comes from the send queue.)
struct SideWake {
    pending: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.pending.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl SideWake {
    /// Whether the side futures are to be polled, now that the task polls the branch; the task
    /// is woken when they may progress.
    fn take(&self, cx: &Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// The side futures are to be polled again without a wake-up: one was ready (the next one
    /// may be too), or one was left unpolled.
    fn keep(&self) {
        self.pending.store(true, Ordering::Release);
    }
}

/// PATCHED (chat cluster, vendor/README.md): what the side branch of
/// [`serve_session`] found.
enum SessionEvent {
    /// The session is closed (its cancellation token).
    Closed,
    /// The websocket's next message, as `ws.next()` gives it.
    Read(Option<Result<Message, tungstenite::Error>>),
}

/// PATCHED (chat cluster, vendor/README.md): the session's end, else the websocket's next
/// message if `read`, polled with `waker` and only when [`SideWake`] says so. Cancel-safe: both
/// futures keep their state where they are (`cancelled` pinned by the caller, the websocket's
/// partial frames in the websocket). The end comes first: nothing is read once the session is
/// closed, as the reading future stopped at it.
fn session_event<'a, S>(
    mut cancelled: std::pin::Pin<&'a mut WaitForCancellationFuture<'_>>,
    ws: &'a mut WebSocketStream<S>,
    read: bool,
    wake: &'a SideWake,
    waker: &'a Waker,
) -> impl Future<Output = SessionEvent> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(move |cx| {
        if !wake.take(cx) {
            return Poll::Pending;
        }
        let mut side = Context::from_waker(waker);
        if cancelled.as_mut().poll(&mut side).is_ready() {
            return Poll::Ready(SessionEvent::Closed);
        }
        if !read {
            // The websocket is read again when its turn comes back.
            wake.keep();
            return Poll::Pending;
        }
        match ws.poll_next_unpin(&mut side) {
            Poll::Ready(msg) => {
                // More may be buffered already, with no wake-up to come for it.
                wake.keep();
                Poll::Ready(SessionEvent::Read(msg))
            }
            // The websocket holds `waker`, which marks the branch when there is more to read.
            Poll::Pending => Poll::Pending,
        }
    })
}

/// PATCHED (chat cluster, vendor/README.md): serves a websocket session in one task. It reads
/// the websocket's messages and hands them to the session (as the reading future did), and
/// writes the packets waiting in the session's send queue and its volatile packet (as the
/// writer task did: all that is queued, then one flush), and runs the heartbeat of a v4 session
/// opened on a websocket (change 4). Until the session closes; then what is queued is written,
/// and the websocket flushed and closed.
///
/// One task instead of two per connection: no second task's allocation, no lock between the
/// halves of a split websocket at every write and read, no second task woken at every read.
/// Every branch of its `select!` is cancel-safe; the writes are awaited in the arms, never
/// raced, so a write is never dropped half done. While a write waits for the client to read,
/// this task reads nothing either: the client's messages wait in the connection's buffers (a
/// client that stopped reading is cut off below engine.io, see `vendor/README.md` change 4).
/// tungstenite sends its answers to a client's ping or close frame itself while reading, and
/// does not need a read to write.
///
/// Not an `async fn`, so that the websocket is stored once in its state (see
/// [`serve_websocket`]): the `async move` block uses what it captures in place.
#[allow(clippy::manual_async_fn)]
fn serve_session<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    socket: Arc<Socket<H::Data>>,
    mut ws: WebSocketStream<S>,
    heartbeat: Option<(Duration, Duration)>,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let engine = &engine;
        let socket = &socket;
        // Whether the websocket is still read: until it ends, fails or carries a close, or the
        // session closes.
        let mut reading = true;

        // The future that waits for the session's end lives as long as the session, instead of
        // one per wake-up (change 9). A `cancelled()` future registers in its notifier's waiter
        // list when first polled and leaves it when dropped, two lock round trips per wake-up of
        // a task woken once per packet.
        let cancelled = socket.cancellation_token.cancelled();
        tokio::pin!(cancelled);

        // A polling request that was in progress during the upgrade may still hold the send
        // queue's lock. Meanwhile the client's messages are read and handled, as the reading
        // future did while its writer task waited: nothing is written before the lock is held, and
        // what the handler queues meanwhile waits in the queue, in order.
        let _reading = {
            let lock = socket.internal_rx.lock();
            tokio::pin!(lock);
            loop {
                tokio::select! {
                    biased;
                    () = &mut cancelled => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(
                            sid = %socket.id,
                            "session closed before starting the ws writer"
                        );
                        return;
                    }
                    internal_rx = &mut lock => break internal_rx,
                    msg = ws.next(), if reading => reading = on_read(engine, socket, msg),
                }
            }
        };
        // PATCHED (chat cluster, vendor/README.md change 11): the send queue is the socket's
        // own, read by the holder of the lock.
        let queue = &socket.queue;

        // Writes a list of queued packets to the websocket, without flushing it.
        // It is declared as a macro rather than a closure to avoid ownership issues
        // PATCHED (chat cluster, vendor/README.md): each packet becomes its websocket message
        // without awaiting (`ws_message`) once the websocket is ready to take it, and the list is
        // read in place (its packets cloned, a reference count each; a list shared by a broadcast
        // was cloned whole before). Across the await the task's state holds the list's pointer and
        // an index, instead of the list's iterator, a packet and its message (about 400 bytes,
        // which made the largest state of the task).
        macro_rules! write_packets {
            ($packets:expr) => {
                let packets: QueuedPackets = $packets;
                for index in 0..packets.len() {
                    let ready = std::future::poll_fn(|cx| ws.poll_ready_unpin(cx)).await;
                    if let Some(message) = ws_message(packets[index].clone(), socket.protocol) {
                        if let Err(_e) = ready.and_then(|()| ws.start_send_unpin(message)) {
                            #[cfg(feature = "tracing")]
                            tracing::debug!("[sid={}] error sending packet: {}", socket.id, _e);
                        }
                    }
                }
            };
        }
        // The websocket is flushed only when what was queued is written.
        macro_rules! flush {
            () => {
                #[cfg(feature = "tracing")]
                tracing::trace!(sid = %socket.id, "ws flush");
                ws.flush().await.ok();
            };
        }

        // PATCHED (chat cluster, vendor/README.md): the heartbeat of a v4 session, as
        // `Socket::heartbeat_job_v4` runs it, on this task: a ping one interval after the start and
        // one interval after the previous one, queued behind the packets before it (a full queue
        // closes the session), and the session closed if no pong comes within the timeout. One
        // task per connection instead of two saves about 1.3 KB per connection.
        // The pongs are not awaited: they are taken (`take_heartbeat`) when the timer fires (the
        // timeout, or the next ping's time if that comes first), so the pong receiver is not polled
        // at every wake-up of the task, which is once per packet. The pings' schedule and the
        // timeout are the same as if each pong were taken when it arrives.
        let (ping_interval, ping_timeout) = heartbeat.unwrap_or_default();
        let mut beating = heartbeat.is_some();
        let mut ping_due = tokio::time::Instant::now() + ping_interval;
        // While a pong is awaited: when the session times out without one.
        let mut pong_deadline: Option<tokio::time::Instant> = None;
        let heartbeat_timer = tokio::time::sleep_until(ping_due);
        tokio::pin!(heartbeat_timer);

        // Messages read since something else had its turn (`READ_STREAK`).
        let mut read_streak: u8 = 0;
        // The side branch marked, so that its futures are polled (and hold `side_waker`) from
        // the start.
        let side_wake = Arc::new(SideWake {
            pending: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let side_waker = Waker::from(side_wake.clone());

        // Until the session is cancelled (a closed queue, which cannot happen while this task
        // holds its receiver, ends it too).
        loop {
            tokio::select! {
                biased;
                // The session's end and reading first: a pong that came is counted before the
                // heartbeat below judges its timeout, also after a long write, and a busy queue
                // does not hold reading back.
                event = session_event(
                    cancelled.as_mut(),
                    &mut ws,
                    reading && read_streak < READ_STREAK,
                    &side_wake,
                    &side_waker,
                ) => match event {
                    // What was queued before the end (such as the close packet of
                    // `Socket::close`) is still written, as when the queue came before the end.
                    SessionEvent::Closed => {
                        while let Some(packets) = queue.try_recv() {
                            write_packets!(packets);
                        }
                        break;
                    }
                    SessionEvent::Read(msg) => {
                        read_streak += 1;
                        reading = on_read(engine, socket, msg);
                    }
                },
                // The heartbeat before the queue (PATCHED, see above), so that a busy task still
                // pings.
                () = &mut heartbeat_timer, if beating => {
                    read_streak = 0;
                    let now = tokio::time::Instant::now();
                    let pong = socket.take_heartbeat();
                    match pong_deadline {
                        Some(_) if pong => {
                            #[cfg(feature = "tracing")]
                            tracing::trace!(sid = ?socket.id, "pong received");
                            pong_deadline = None;
                            ping_due += ping_interval;
                            heartbeat_timer.as_mut().reset(ping_due);
                        }
                        // The next ping's time came before the timeout: wait on for the pong.
                        Some(deadline) if now < deadline => {
                            heartbeat_timer.as_mut().reset(deadline);
                        }
                        Some(_) => {
                            #[cfg(feature = "tracing")]
                            tracing::debug!(sid = ?socket.id, "heartbeat timeout");
                            beating = false;
                            // Queues a close packet and cancels the session, which ends this loop.
                            socket.close(DisconnectReason::HeartbeatTimeout);
                        }
                        // Time to ping; a pong before it (some clients send one first) was
                        // taken above and is ignored.
                        None => {
                            let queued = queue
                                .try_send(Arc::new(smallvec![Packet::Ping]))
                                .is_ok();
                            if queued {
                                #[cfg(feature = "tracing")]
                                tracing::trace!(sid = ?socket.id, "emitting ping");
                                let deadline = now + ping_timeout;
                                pong_deadline = Some(deadline);
                                heartbeat_timer
                                    .as_mut()
                                    .reset(deadline.min(ping_due + ping_interval));
                            } else {
                                #[cfg(feature = "tracing")]
                                tracing::debug!(sid = ?socket.id, "heartbeat timeout");
                                beating = false;
                                socket.close(DisconnectReason::HeartbeatTimeout);
                            }
                        }
                    }
                },
                // The queued packets, then the volatile one (change 11: both from the queue).
                items = queue.recv() => {
                    read_streak = 0;
                    match items {
                        Some(packets) => {
                            write_packets!(packets);
                            while let Some(packets) = queue.try_recv() {
                                write_packets!(packets);
                            }
                            flush!();
                        }
                        None => break
                    }
                }
                // After a streak of reads, when nothing else was ready: reading goes on.
                () = std::future::ready(()), if read_streak >= READ_STREAK => read_streak = 0,
            }
        }

        #[cfg(feature = "tracing")]
        tracing::trace!(sid = %socket.id, "ws closing flush");

        ws.flush().await.ok();
        // The sink's close (a close frame unless one was sent, then a flush), as the split
        // half did.
        SinkExt::close(&mut ws).await.ok();

        #[cfg(feature = "tracing")]
        tracing::debug!(sid = %socket.id, "ws closed");
    }
}

/// PATCHED (chat cluster, vendor/README.md): hands what was read from the websocket to the
/// session, as the reading future did, and says whether to read on. When reading is over (the
/// websocket ended, failed, or carried a close or a bad packet), the session is closed for
/// that reason.
fn on_read<H: EngineIoHandler>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    msg: Option<Result<Message, tungstenite::Error>>,
) -> bool {
    let read = match msg {
        Some(Ok(msg)) => match on_message(engine, socket, msg) {
            Ok(ControlFlow::Continue(())) => return true,
            Ok(ControlFlow::Break(())) => Ok(()),
            Err(e) => Err(e),
        },
        Some(Err(e)) => Err(Error::from(e)),
        None => Ok(()),
    };
    match read {
        Err(ref e) => {
            crate::probe::on_read_error(e); // PATCHED (chat cluster, vendor/README.md): metrics.
            let reason =
                Option::<DisconnectReason>::from(e).unwrap_or(DisconnectReason::TransportError);

            #[cfg(feature = "tracing")]
            tracing::debug!("error when handling packet: {:?}", e);
            engine.close_session(socket.id, reason);
        }
        Ok(()) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws transport was closed");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
        }
    }
    false
}

/// Forwards a message received from a websocket to a EngineIo [`Socket`]
/// PATCHED (chat cluster, vendor/README.md): one message, from [`on_read`]; the loop of
/// `forward_to_handler` became [`serve_session`]'s reading branch.
fn on_message<H: EngineIoHandler>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    msg: Message,
) -> Result<ControlFlow<()>, Error> {
    match msg {
        Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
            Packet::Close => {
                #[cfg(feature = "tracing")]
                tracing::debug!("[sid={}] closing session", socket.id);
                engine.close_session(socket.id, DisconnectReason::TransportClose);
                return Ok(ControlFlow::Break(()));
            }
            Packet::Pong | Packet::Ping => {
                socket.on_heartbeat(); // PATCHED (chat cluster, vendor/README.md)
            }
            Packet::Message(msg) => {
                // PATCHED (chat cluster, vendor/README.md): the first-message guard.
                if crate::guard::pass(socket, crate::guard::FirstMessage::Text(&msg)) {
                    engine.handler.on_message(msg, socket.clone());
                }
            }
            p => return Err(Error::BadPacket(p)),
        },
        Message::Binary(mut data) => {
            if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                // The first byte is the message type, which we don't need.
                data = data.split_off(1);
            }
            // PATCHED (chat cluster, vendor/README.md): the first-message guard.
            if crate::guard::pass(socket, crate::guard::FirstMessage::Binary(&data)) {
                engine.handler.on_binary(data, socket.clone());
            }
        }
        Message::Close(_) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("websocket closed, closing session");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
            return Ok(ControlFlow::Break(()));
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = ?socket.id, "unexpected ws message");
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// PATCHED (chat cluster, vendor/README.md): the websocket message that carries `packet`, or
/// nothing for a Noop (a server may queue one to end a polling request during an upgrade; if no
/// poll took it, it is dropped here).
fn ws_message(packet: Packet, protocol: ProtocolVersion) -> Option<Message> {
    // PATCHED (chat cluster, vendor/README.md): counted and timed for metrics.
    crate::probe::on_write(&packet);
    match packet {
        Packet::Binary(bin) | Packet::BinaryV3(bin) => {
            if protocol == ProtocolVersion::V3 {
                // v3 protocol requires packet type as the first byte.
                // This requires a new buffer. This is OK as it is only for the V3 protocol.
                let mut buff = Vec::with_capacity(bin.len() + 1);
                buff.push(0x04);
                buff.extend(bin);
                Some(Message::Binary(buff.into()))
            } else {
                Some(Message::Binary(bin))
            }
        }
        Packet::Noop => None,
        Packet::Message(msg) => Some(Message::Text(text_message(msg))),
        packet => Some(Message::Text(String::from(packet).into())),
    }
}

thread_local! {
    /// PATCHED (chat cluster, vendor/README.md): the last message packet encoded for a
    /// websocket on this thread, and its encoding.
    static LAST_TEXT: std::cell::RefCell<Option<(Str, tungstenite::Utf8Bytes)>> =
        const { std::cell::RefCell::new(None) };
}

/// PATCHED (chat cluster, vendor/README.md): the engine.io encoding (`4` and the payload) of a
/// message packet, made once for all the sockets a broadcast reaches. A broadcast hands every
/// socket the same `Str` (one allocation shared by reference count), and their writers run one
/// after the other on a thread, so the previous encoding is kept and handed out again while
/// the packet is the same: same address and length of the same bytes, which cannot have been
/// freed and reused since the kept `Str` holds them. Otherwise one allocation and one copy of
/// the payload per socket.
fn text_message(msg: Str) -> tungstenite::Utf8Bytes {
    LAST_TEXT.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((packet, text)) = &*last
            && packet.as_ptr() == msg.as_ptr()
            && packet.len() == msg.len()
        {
            return text.clone();
        }
        let mut encoded = String::with_capacity(msg.len() + 1);
        encoded.push('4');
        encoded.push_str(&msg);
        let text = tungstenite::Utf8Bytes::from(encoded);
        *last = Some((msg, text.clone()));
        text
    })
}

/// Send a Engine.IO [`OpenPacket`] to initiate a websocket connection
async fn init_handshake<S>(
    sid: Sid,
    ws: &mut WebSocketStream<S>,
    config: &EngineIoConfig,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = Packet::Open(make_open_packet(TransportType::Websocket, sid, config));
    let packet: String = packet.into();
    ws.send(Message::Text(packet.into())).await?;
    Ok(())
}

/// Upgrade a session from a polling request to a websocket request.
///
/// Before upgrading the session the server should send a NOOP packet to any pending polling request.
///
/// ## Handshake :
/// ```text
/// CLIENT                                                 SERVER
///│                                                      │
///│   GET /engine.io/?EIO=4&transport=websocket&sid=...  │
///│ ───────────────────────────────────────────────────► │
///│  ◄─────────────────────────────────────────────────┘ │
///│            HTTP 101 (WebSocket handshake)            │
///│                                                      │
///│            -----  WebSocket frames -----             │
///│  ─────────────────────────────────────────────────►  │
///│                         2probe                       │ (ping packet)
///│  ◄─────────────────────────────────────────────────  │
///│                         3probe                       │ (pong packet)
///│  ─────────────────────────────────────────────────►  │
///│                         5                            │ (upgrade packet)
///│                                                      │
///│            -----  WebSocket frames -----             │
/// ```
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", skip(socket, ws))
)]
async fn upgrade_handshake<H: EngineIoHandler, S>(
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "tracing")]
    tracing::debug!("starting websocket connection upgrade");

    // The socket is upgrading, from now on all polling
    // request will return a `Packet::Noop`
    socket.start_upgrade();

    // We send a last Noop request to close a potential waiting polling request.
    socket
        .queue
        .send(Arc::new(smallvec![Packet::Noop]))
        .await
        .map_err(|_| Error::Upgrade)?;

    // wait for any current polling connection to finish by waiting for the socket to be unlocked
    // All other polling connection will be immediately closed with a NOOP packet.
    let _lock = socket.internal_rx.lock().await;

    // Fetch the next packet from the ws stream, it should be a PingUpgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        _ => Err(Error::Upgrade)?,
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::PingUpgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("received first ping upgrade");
            // Respond with a PongUpgrade packet
            ws.send(Message::Text(String::from(Packet::PongUpgrade).into()))
                .await?;
        }
        p => Err(Error::BadPacket(p))?,
    };

    // Fetch the next packet from the ws stream, it should be an Upgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        Some(Ok(Message::Close(_))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws stream closed before upgrade");
            Err(Error::Upgrade)?
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!("unexpected ws message before upgrade");
            Err(Error::Upgrade)?
        }
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::Upgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgraded successfully")
        }
        p => Err(Error::BadPacket(p))?,
    };

    socket.upgrade_to_websocket();
    Ok(())
}

fn ws_bytes_to_str(bytes: tungstenite::Utf8Bytes) -> Str {
    // SAFETY: the bytes are guaranteed to be valid UTF-8 by the tungstenite parser
    unsafe { Str::from_bytes_unchecked(bytes.into()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http::Request;
    use tokio::io::DuplexStream;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[derive(Debug, Default)]
    struct StubHandler;
    impl EngineIoHandler for StubHandler {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
        fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    fn socket() -> Arc<Socket<()>> {
        Arc::new(Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &EngineIoConfig::default(),
            Request::<()>::default().into_parts().0,
            Box::new(|_, _| ()),
            false,
        ))
    }

    /// A socket whose close reasons are recorded.
    fn recording_socket() -> (
        Arc<Socket<()>>,
        Arc<std::sync::Mutex<Vec<DisconnectReason>>>,
    ) {
        let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = closed.clone();
        let socket = Arc::new(Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &EngineIoConfig::default(),
            Request::<()>::default().into_parts().0,
            Box::new(move |_, reason| record.lock().unwrap().push(reason)),
            false,
        ));
        (socket, closed)
    }

    async fn next_text(client: &mut WebSocketStream<DuplexStream>) -> Message {
        tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("the writer should send a packet")
            .unwrap()
            .unwrap()
    }

    /// PATCHED (chat cluster, vendor/README.md change 9): the writer takes pongs when its timer
    /// fires instead of waiting on them. A client that answers every ping stays (here with an
    /// interval shorter than the timeout, so the next ping's time comes first); a pong before
    /// the first ping counts for nothing; a ping left unanswered closes the session once the
    /// timeout has passed, not before.
    #[tokio::test]
    async fn writer_heartbeat_takes_pongs_and_times_out_without_them() {
        let (socket, closed) = recording_socket();
        let (server, mut client) = ws_pair().await;
        let interval = Duration::from_millis(40);
        let timeout = Duration::from_millis(120);
        // A pong before any ping.
        socket.on_heartbeat();
        let started = tokio::time::Instant::now();
        serve::<StubHandler>(&socket, server, Some((interval, timeout)));
        for _ in 0..4 {
            assert_eq!(next_text(&mut client).await, Message::text("2"));
            socket.on_heartbeat(); // the client's pong, as the reader hands it over
        }
        assert!(
            started.elapsed() >= interval * 4,
            "pings come one interval apart"
        );
        assert!(
            closed.lock().unwrap().is_empty(),
            "answered pings keep the session"
        );

        // This ping goes unanswered.
        assert_eq!(next_text(&mut client).await, Message::text("2"));
        let pinged = tokio::time::Instant::now();
        assert_eq!(next_text(&mut client).await, Message::text("1"));
        assert!(pinged.elapsed() >= timeout - Duration::from_millis(5));
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );
    }

    /// PATCHED (chat cluster, vendor/README.md change 9): the same packet is encoded once and
    /// shared; another packet, even of the same length, gets its own encoding.
    #[test]
    fn a_message_is_encoded_once_per_packet() {
        let first = Str::from("2[\"message\",\"a\"]".to_string());
        let same_len = Str::from("2[\"message\",\"b\"]".to_string());
        let a = text_message(first.clone());
        let again = text_message(first.clone());
        assert_eq!(a.as_str(), "42[\"message\",\"a\"]");
        assert_eq!(
            a.as_str().as_ptr(),
            again.as_str().as_ptr(),
            "shared, not copied"
        );
        let b = text_message(same_len);
        assert_eq!(b.as_str(), "42[\"message\",\"b\"]");
        // An equal payload in another allocation is encoded on its own, and still right.
        let copy = Str::from("2[\"message\",\"a\"]".to_string());
        assert_eq!(text_message(copy).as_str(), "42[\"message\",\"a\"]");
        assert_eq!(text_message(first).as_str(), "42[\"message\",\"a\"]");
    }

    /// Serves `socket` on `ws` as a session of an engine that does not hold it.
    fn serve<H: EngineIoHandler<Data = ()> + Default>(
        socket: &Arc<Socket<()>>,
        ws: WebSocketStream<DuplexStream>,
        heartbeat: Option<(Duration, Duration)>,
    ) -> tokio::task::JoinHandle<()> {
        let engine = Arc::new(EngineIo::new(
            Arc::new(H::default()),
            EngineIoConfig::default(),
        ));
        let socket = socket.clone();
        tokio::spawn(serve_session(engine, socket, ws, heartbeat))
    }

    async fn ws_pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (server, client) = tokio::io::duplex(1024);
        (
            WebSocketStream::from_raw_socket(server, Role::Server, None).await,
            WebSocketStream::from_raw_socket(client, Role::Client, None).await,
        )
    }

    /// Records, for each message it is handed, how many packets its socket had queued.
    #[derive(Debug, Default)]
    struct QueueHandler(std::sync::Mutex<Vec<usize>>);
    impl EngineIoHandler for QueueHandler {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
        fn on_message(self: &Arc<Self>, _: Str, socket: Arc<Socket<()>>) {
            let queued = socket.queue.len();
            self.0.lock().unwrap().push(queued);
        }
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    /// PATCHED (chat cluster, vendor/README.md change 10): reading comes first, but a client
    /// that keeps sending does not hold back what it is sent: after `READ_STREAK` messages the
    /// queue has its turn.
    #[tokio::test]
    async fn a_client_that_keeps_sending_does_not_hold_back_what_it_is_sent() {
        let socket = socket();
        let (server, client) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        for i in 0..100 {
            client.feed(Message::text(format!("4m{i}"))).await.unwrap();
        }
        client.flush().await.unwrap();
        socket.emit(Str::from("hello")).unwrap();

        let engine = Arc::new(EngineIo::new(
            Arc::new(QueueHandler::default()),
            EngineIoConfig::default(),
        ));
        let serving = engine.clone();
        let served = socket.clone();
        tokio::spawn(serve_session(serving, served, server, None));
        assert_eq!(next_text(&mut client).await, Message::text("4hello"));
        tokio::time::sleep(Duration::from_millis(20)).await;

        let queued = engine.handler.0.lock().unwrap().clone();
        assert_eq!(queued.len(), 100, "every message is handled");
        let streak = usize::from(READ_STREAK);
        assert!(queued[..streak].iter().all(|&n| n == 1), "{queued:?}");
        assert!(queued[streak..].iter().all(|&n| n == 0), "{queued:?}");
    }

    /// PATCHED (chat cluster, vendor/README.md change 10): a client's close frame closes the
    /// session, and the task ends after answering it.
    #[tokio::test]
    async fn a_close_frame_closes_the_session_and_ends_the_task() {
        let engine = Arc::new(EngineIo::new(
            Arc::new(StubHandler),
            EngineIoConfig::default(),
        ));
        let socket = engine.create_session(
            ProtocolVersion::V4,
            TransportType::Websocket,
            Request::<()>::default().into_parts().0,
            false,
        );
        let (server, mut client) = ws_pair().await;
        let (serving, served) = (engine.clone(), socket.clone());
        let task = tokio::spawn(serve_session(serving, served, server, None));

        client.close(None).await.unwrap();
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the task should end")
            .unwrap();
        assert!(
            engine.get_socket(socket.id).is_none(),
            "the session is closed"
        );
        assert!(socket.cancellation_token.is_cancelled());
        assert!(matches!(
            client.next().await,
            Some(Ok(Message::Close(_))) | None
        ));
    }

    /// PATCHED (chat cluster, vendor/README.md change 10): a session closed by the server
    /// writes what was queued before the close, its close packet last, then the close frame.
    #[tokio::test]
    async fn a_closed_session_writes_what_was_queued_then_closes() {
        let engine = Arc::new(EngineIo::new(
            Arc::new(StubHandler),
            EngineIoConfig::default(),
        ));
        let socket = engine.create_session(
            ProtocolVersion::V4,
            TransportType::Websocket,
            Request::<()>::default().into_parts().0,
            false,
        );
        let (server, mut client) = ws_pair().await;
        let (serving, served) = (engine.clone(), socket.clone());
        let task = tokio::spawn(serve_session(serving, served, server, None));

        // The task holds the queue (a session closed before does not start writing).
        tokio::time::sleep(Duration::from_millis(20)).await;
        socket.emit(Str::from("a")).unwrap();
        socket.emit(Str::from("b")).unwrap();
        socket.close(DisconnectReason::TransportError);
        assert_eq!(next_text(&mut client).await, Message::text("4a"));
        assert_eq!(next_text(&mut client).await, Message::text("4b"));
        assert_eq!(next_text(&mut client).await, Message::text("1"));
        assert!(matches!(next_text(&mut client).await, Message::Close(_)));
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the task should end")
            .unwrap();
    }

    /// PATCHED (chat cluster, vendor/README.md change 10): the side branch's futures are
    /// polled only when their own waker fired; it must fire. An idle session's end, with
    /// nothing queued, ends the task; a volatile packet (change 11: from the queue) is written.
    #[tokio::test]
    async fn the_side_branches_wake_the_task() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;
        let task = serve::<StubHandler>(&socket, server, None);
        tokio::time::sleep(Duration::from_millis(20)).await;

        assert!(socket.emit_volatile("fleeting"));
        assert_eq!(next_text(&mut client).await, Message::text("4fleeting"));
        socket.emit(Str::from("kept")).unwrap();
        assert_eq!(next_text(&mut client).await, Message::text("4kept"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished());

        socket.cancellation_token.cancel();
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the task should end with the session")
            .unwrap();
        assert!(matches!(next_text(&mut client).await, Message::Close(_)));
    }

    /// A polling request can still hold the lock at the end of an upgrade.
    #[tokio::test]
    async fn writer_waits_for_the_lock_of_a_polling_request() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;

        let polling = socket.internal_rx.lock().await;
        let writer = serve::<StubHandler>(&socket, server, None);
        // Meanwhile the client's messages are read: its pong is counted.
        client.send(Message::text("3")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "the writer should wait for the lock");
        assert!(socket.take_heartbeat(), "reading goes on while waiting");

        drop(polling);
        socket.emit(Str::from("hello")).unwrap();
        let msg = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("the writer should send the packet")
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text("4hello"));
    }

    #[tokio::test]
    async fn writer_waiting_for_the_lock_stops_with_the_session() {
        let socket = socket();
        let (server, _client) = ws_pair().await;

        let _polling = socket.internal_rx.lock().await;
        let writer = serve::<StubHandler>(&socket, server, None);
        tokio::time::sleep(Duration::from_millis(20)).await;

        socket.cancellation_token.cancel();
        tokio::time::timeout(TIMEOUT, writer)
            .await
            .expect("the writer should stop")
            .unwrap();
    }
}
