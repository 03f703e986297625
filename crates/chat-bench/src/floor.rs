//! The bare-websocket floor: the least a room broadcaster can do, to show how far above the
//! machine's limit the product is. Plain websockets (no engine.io or socket.io framing, no
//! Redis, no validation); `?roomid=` picks the room and every text frame a client sends is
//! forwarded as it is to every member of its room, the sender included.
//!
//! What makes it a floor: one thread (like a product worker); one task per connection, which
//! both reads and writes; a forwarded frame is one shared buffer (`Utf8Bytes` clones) put in each
//! member's outbox, and a member is woken only when its outbox goes from empty to non-empty;
//! a woken member feeds everything waiting in its outbox into its websocket and flushes once,
//! so a burst costs one `write` per member; and 1 KiB read buffers instead of tungstenite's
//! eagerly allocated 128 KiB.

use std::{cell::RefCell, collections::HashMap, rc::Rc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, sync::Notify};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message, Utf8Bytes,
        handshake::server::{Request, Response},
        protocol::WebSocketConfig,
    },
};

/// Bytes of each connection's websocket read buffer (the product's workers default to 256,
/// `--ws-read-buffer-bytes`; chat-sized messages fit in either).
pub const READ_BUFFER_BYTES: usize = 1024;
/// Frames are gathered in the write buffer up to this size before a write; a flush writes
/// whatever is gathered.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Largest frame a client may send (chat-sized, like the product's cap).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The websocket settings of every floor connection: small buffers, chat-sized frames.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// One member of a room: frames waiting to be written, and the wake-up of its task.
#[derive(Default)]
struct Member {
    outbox: RefCell<Vec<Utf8Bytes>>,
    wake: Notify,
}

impl Member {
    /// Queues a shared frame; wakes the member's task only if nothing was waiting already.
    fn push(&self, frame: &Utf8Bytes) {
        let mut outbox = self.outbox.borrow_mut();
        outbox.push(frame.clone());
        if outbox.len() == 1 {
            self.wake.notify_one();
        }
    }
}

/// Rooms by name; single-threaded, so plain `RefCell`s.
#[derive(Default)]
struct Rooms {
    by_name: RefCell<HashMap<Box<str>, Vec<Rc<Member>>>>,
}

impl Rooms {
    fn enter(&self, room: &str, member: &Rc<Member>) {
        self.by_name
            .borrow_mut()
            .entry(room.into())
            .or_default()
            .push(Rc::clone(member));
    }

    fn leave(&self, room: &str, member: &Rc<Member>) {
        let mut rooms = self.by_name.borrow_mut();
        if let Some(members) = rooms.get_mut(room) {
            members.retain(|m| !Rc::ptr_eq(m, member));
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Puts the frame in the outbox of every member of `room`.
    fn broadcast(&self, room: &str, frame: &Utf8Bytes) {
        if let Some(members) = self.by_name.borrow().get(room) {
            for member in members {
                member.push(frame);
            }
        }
    }
}

/// Serves on `listener` until the process is stopped, on a single-threaded runtime of its own
/// (call from a plain thread, not from inside a runtime).
pub fn run(listener: std::net::TcpListener) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(listener))
}

/// Accepts connections and spawns one local task each. A failed accept (out of file
/// descriptors, say) is reported and retried, not fatal.
async fn serve(listener: std::net::TcpListener) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let rooms = Rc::new(Rooms::default());
    let mut accept_errors = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(connection(stream, Rc::clone(&rooms)));
            }
            Err(err) => {
                accept_errors += 1;
                if accept_errors <= 3 {
                    eprintln!("chat-bench floor: accept failed: {err}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The room named by `roomid=` in a request's query ("" when there is none).
fn room_of(request: &Request) -> String {
    request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("roomid=")))
        .unwrap_or("")
        .to_owned()
}

/// Completes the websocket handshake and returns the socket with its room.
async fn accept(stream: TcpStream) -> Option<(WebSocketStream<TcpStream>, String)> {
    let _ = stream.set_nodelay(true);
    let mut room = String::new();
    // The error type is tungstenite's (an HTTP response); this callback never fails.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        room = room_of(request);
        Ok(response)
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(websocket_config()));
    let ws = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .ok()?
        .ok()?;
    Some((ws, room))
}

/// One connection: forwards what it reads to its room, writes what its room sends it.
async fn connection(stream: TcpStream, rooms: Rc<Rooms>) {
    let Some((mut ws, room)) = accept(stream).await else {
        return;
    };
    let member = Rc::new(Member::default());
    rooms.enter(&room, &member);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => rooms.broadcast(&room, &text),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            () = member.wake.notified() => {
                if write_out(&mut ws, &member, &mut batch).await.is_err() {
                    break;
                }
            }
        }
    }
    rooms.leave(&room, &member);
}

/// Feeds every frame waiting in the member's outbox into the websocket, then flushes once.
/// `batch` is a spare vector swapped with the outbox, so neither allocates in steady state.
async fn write_out(
    ws: &mut WebSocketStream<TcpStream>,
    member: &Member,
    batch: &mut Vec<Utf8Bytes>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    std::mem::swap(&mut *member.outbox.borrow_mut(), batch);
    for frame in batch.drain(..) {
        ws.feed(Message::Text(frame)).await?;
    }
    ws.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_woken_once_per_batch_and_frames_are_shared() {
        let rooms = Rooms::default();
        let (a, b) = (Rc::new(Member::default()), Rc::new(Member::default()));
        rooms.enter("r", &a);
        rooms.enter("r", &b);
        let frame = Utf8Bytes::from("hello");
        rooms.broadcast("r", &frame);
        rooms.broadcast("r", &frame);
        rooms.broadcast("other", &frame);
        assert_eq!(a.outbox.borrow().len(), 2);
        assert_eq!(b.outbox.borrow().len(), 2);
        assert_eq!(
            a.outbox.borrow()[0].as_str().as_ptr(),
            b.outbox.borrow()[1].as_str().as_ptr(),
            "one buffer for every member"
        );
        rooms.leave("r", &a);
        rooms.leave("r", &b);
        assert!(rooms.by_name.borrow().is_empty());
    }
}
