//! A small socket.io client: engine.io v4 over a websocket, the default namespace, events and
//! acks with JSON payloads. Enough to test the workers from Rust and to generate load; not a
//! general client (no polling, no binary attachments, no reconnection).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket connection failed")]
    Connect(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("the server refused the socket.io connection: {0}")]
    Refused(String),
    #[error("unexpected packet during the handshake: {0:?}")]
    Handshake(String),
    #[error("the connection closed")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// One event received from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

type PendingAcks = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A connected socket.io client on the default namespace.
pub struct Client {
    outgoing: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<Event>,
    acks: PendingAcks,
    next_ack: u64,
    sid: String,
    /// Engine.io pings answered since the handshake.
    pings: Arc<AtomicU64>,
}

impl Client {
    /// Connects to `http_base` (e.g. `http://127.0.0.1:6001`) with extra query parameters
    /// already encoded (e.g. `roomid=lobby`), and completes the socket.io handshake.
    pub async fn connect(http_base: &str, query: &str) -> Result<Self, ClientError> {
        let ws_base = http_base.replacen("http", "ws", 1);
        let separator = if query.is_empty() { "" } else { "&" };
        let url = format!("{ws_base}/socket.io/?EIO=4&transport=websocket{separator}{query}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|err| ClientError::Connect(Box::new(err)))?;

        // engine.io OPEN, then our socket.io CONNECT, then the server's answer.
        let open = next_text(&mut ws).await?;
        if !open.starts_with('0') {
            return Err(ClientError::Handshake(open));
        }
        ws.send(Message::text("40"))
            .await
            .map_err(|_| ClientError::Closed)?;
        let answer = loop {
            let packet = next_text(&mut ws).await?;
            // A ping may come first on a slow start.
            if packet == "2" {
                ws.send(Message::text("3"))
                    .await
                    .map_err(|_| ClientError::Closed)?;
                continue;
            }
            break packet;
        };
        let sid = if let Some(body) = answer.strip_prefix("40") {
            serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v.get("sid").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default()
        } else if let Some(body) = answer.strip_prefix("44") {
            let message = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| body.to_owned());
            return Err(ClientError::Refused(message));
        } else {
            return Err(ClientError::Handshake(answer));
        };

        let (outgoing, mut outgoing_rx) = mpsc::unbounded_channel::<Message>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let acks: PendingAcks = Arc::default();
        let (mut sink, mut stream) = ws.split();
        tokio::spawn(async move {
            while let Some(message) = outgoing_rx.recv().await {
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let reader_acks = Arc::clone(&acks);
        let pong = outgoing.clone();
        let pings = Arc::new(AtomicU64::new(0));
        let reader_pings = Arc::clone(&pings);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if !dispatch(
                    text.as_str(),
                    &pong,
                    &reader_pings,
                    &events_tx,
                    &reader_acks,
                ) {
                    return;
                }
            }
        });
        Ok(Self {
            outgoing,
            events,
            acks,
            next_ack: 0,
            sid,
            pings,
        })
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// How many engine.io pings this client has answered since its handshake.
    pub fn pings_answered(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }

    /// Sends an event without an ack.
    pub fn emit(&self, event: &str, data: &Value) -> Result<(), ClientError> {
        let packet = format!("42{}", Value::Array(vec![event.into(), data.clone()]));
        self.send_raw(packet)
    }

    /// Sends a pre-encoded socket.io packet (e.g. `42["say",{"text":"hi"}]`), or anything else
    /// a misbehaving client might send.
    pub fn send_raw(&self, packet: String) -> Result<(), ClientError> {
        self.outgoing
            .send(Message::text(packet))
            .map_err(|_| ClientError::Closed)
    }

    /// Sends an event and waits for its ack's first argument.
    pub async fn emit_with_ack(
        &mut self,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let id = self.next_ack;
        self.next_ack += 1;
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let packet = format!("42{id}{}", Value::Array(vec![event.into(), data.clone()]));
        self.send_raw(packet)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout("an ack")),
        }
    }

    /// The next event from the server.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Event, ClientError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout("an event")),
        }
    }

    /// The next event that satisfies `wanted`, skipping others.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<Event, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await?;
            if wanted(&event) {
                return Ok(event);
            }
        }
    }

    /// Events already received and not yet taken, without waiting.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut drained = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            drained.push(event);
        }
        drained
    }

    /// Waits until the server closes the connection (or `timeout`).
    pub async fn closed(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(_) => return Err(ClientError::Timeout("the connection to close")),
            }
        }
    }

    /// Disconnects politely (socket.io DISCONNECT, then websocket close).
    pub fn disconnect(self) {
        let _ = self.outgoing.send(Message::text("41"));
        let _ = self.outgoing.send(Message::Close(None));
    }
}

/// Handles one engine.io text packet; false when the connection is over.
fn dispatch(
    text: &str,
    pong: &mpsc::UnboundedSender<Message>,
    pings: &AtomicU64,
    events: &mpsc::UnboundedSender<Event>,
    acks: &PendingAcks,
) -> bool {
    match text.as_bytes().first() {
        Some(b'2') => {
            pings.fetch_add(1, Ordering::Relaxed);
            pong.send(Message::text("3")).is_ok()
        }
        Some(b'1') => false,
        Some(b'4') => {
            let packet = &text[1..];
            if let Some(body) = packet.strip_prefix('2') {
                if let Some(event) = parse_event(body) {
                    return events.send(event).is_ok();
                }
                true
            } else if let Some(body) = packet.strip_prefix('3') {
                let digits = body.bytes().take_while(u8::is_ascii_digit).count();
                let id = body[..digits].parse::<u64>().ok();
                let args = serde_json::from_str::<Value>(&body[digits..]).ok();
                if let (Some(id), Some(Value::Array(mut args))) = (id, args) {
                    let pending = acks.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Some(waiter) = pending {
                        let first = if args.is_empty() {
                            Value::Null
                        } else {
                            args.swap_remove(0)
                        };
                        let _ = waiter.send(first);
                    }
                }
                true
            } else {
                // 41: the server disconnected this socket.
                !packet.starts_with('1')
            }
        }
        _ => true,
    }
}

fn parse_event(body: &str) -> Option<Event> {
    // An event from the server may carry an ack id before the array; skip it.
    let body = body.trim_start_matches(|c: char| c.is_ascii_digit());
    let Value::Array(mut items) = serde_json::from_str::<Value>(body).ok()? else {
        return None;
    };
    if items.is_empty() {
        return None;
    }
    let name = items.remove(0).as_str()?.to_owned();
    let data = if items.is_empty() {
        Value::Null
    } else {
        items.swap_remove(0)
    };
    Some(Event { name, data })
}

async fn next_text<S>(ws: &mut S) -> Result<String, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                return Err(ClientError::Closed);
            }
            Ok(Some(Ok(_))) => continue,
            Err(_) => return Err(ClientError::Timeout("the handshake")),
        }
    }
}
