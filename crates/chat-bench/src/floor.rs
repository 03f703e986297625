//! The bare-websocket floor: the least a room broadcaster can do, to show how far above the
//! machine's limit the product is. Plain websockets (no engine.io or socket.io framing, no
//! Redis, no validation); `?roomid=` picks the room and every text frame a client sends is
//! forwarded as it is to every member of its room, the sender included.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
};

type Members = Vec<(u64, mpsc::UnboundedSender<Message>)>;

#[derive(Default)]
struct Rooms {
    members: Mutex<HashMap<String, Members>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Members>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves until the process is stopped.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let rooms = Arc::new(Rooms::default());
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next_id += 1;
        tokio::spawn(connection(stream, next_id, Arc::clone(&rooms)));
    }
}

async fn connection(stream: tokio::net::TcpStream, id: u64, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let mut room = String::new();
    // The error type is tungstenite's (an HTTP response); this callback never fails.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        room = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("roomid=")))
            .unwrap_or("")
            .to_owned();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut write, mut read) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    rooms.lock().entry(room.clone()).or_default().push((id, tx));
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if write.send(message).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = read.next().await {
        if let Message::Text(_) = message {
            // Message clones share the frame's bytes: one encoding, many sends.
            if let Some(members) = rooms.lock().get(&room) {
                for (_, member) in members {
                    let _ = member.send(message.clone());
                }
            }
        }
    }
    if let Some(members) = rooms.lock().get_mut(&room) {
        members.retain(|(member, _)| *member != id);
    }
    writer.abort();
}
