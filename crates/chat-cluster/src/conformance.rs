//! `chat-cluster conformance`: the server the socket.io and engine.io protocol test suites
//! expect (socket.io-protocol and engine.io-protocol, folder `test-suite`): socket.io at
//! `/socket.io/` with the `/` and `/custom` namespaces echoing `message` and acking
//! `message-with-ack`, and a bare engine.io echo at `/engine.io/`; 300/200 ms ping interval and
//! timeout, 1 s connect timeout, 1,000,000-byte payloads.
//!
//! The socket.io side is built by the workers' own `chat_worker::server::socket_io_builder`, from
//! `WorkerSettings`, so the suites test the engine configuration the product runs with (all but
//! its refusal of binary attachments, which the suites send).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use chat_worker::WorkerSettings;
use engineioxide::{
    DisconnectReason, Socket, Str, config::EngineIoConfig, handler::EngineIoHandler,
    layer::EngineIoLayer,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};

/// The payload limit the suites check in the handshake (`maxPayload`).
const MAX_PAYLOAD: usize = 1_000_000;

/// The settings of the fixture: the product's defaults with the suites' timings and limits.
pub fn settings() -> WorkerSettings {
    WorkerSettings {
        ping_interval_ms: 300,
        ping_timeout_ms: 200,
        connect_timeout_ms: 1000,
        max_message_bytes: MAX_PAYLOAD,
        ..WorkerSettings::default()
    }
}

/// Serves the fixture on `addr` until SIGTERM or SIGINT.
pub async fn serve(
    addr: SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = settings();
    let (socket_io_layer, io) = chat_worker::server::socket_io_builder(&settings).build_layer();
    for namespace in ["/", "/custom"] {
        io.ns(namespace, on_connect);
    }
    let engine_io_config = EngineIoConfig::builder()
        .req_path("/engine.io")
        .ping_interval(settings.ping_interval())
        .ping_timeout(settings.ping_timeout())
        .max_payload(MAX_PAYLOAD as u64)
        .build();
    let app = axum::Router::new()
        .layer(socket_io_layer)
        .layer(EngineIoLayer::from_config(Arc::new(Echo), engine_io_config));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "conformance fixture serving /socket.io/ and /engine.io/");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .context("the conformance server failed")
}

/// Sends the handshake's auth payload back as `auth`, then echoes.
async fn on_connect(socket: SocketRef, TryData(auth): TryData<Value>) {
    let auth = auth.unwrap_or_else(|_| Value::Object(Default::default()));
    let _ = socket.emit("auth", &auth);
    socket.on("message", async |socket: SocketRef, Data::<Args>(args)| {
        let _ = socket.emit("message-back", &args);
    });
    socket.on(
        "message-with-ack",
        async |Data::<Args>(args), ack: AckSender| {
            let _ = ack.send(&args);
        },
    );
}

/// All the arguments of an event, whatever their number, each JSON or binary. socketioxide
/// spreads a tuple over the arguments (and collects them into one), so this (de)serializes as
/// a tuple of any length.
#[derive(Debug)]
struct Args(Vec<Arg>);

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Arg {
    Json(Value),
    Binary(Bytes),
}

impl Serialize for Args {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Collect;
        impl<'de> serde::de::Visitor<'de> for Collect {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, Collect)
    }
}

/// The engine.io fixture: every message goes back as it came.
#[derive(Debug, Clone)]
struct Echo;

impl EngineIoHandler for Echo {
    type Data = ();

    fn on_connect(self: Arc<Self>, _socket: Arc<Socket<()>>) {}

    fn on_disconnect(&self, _socket: Arc<Socket<()>>, _reason: DisconnectReason) {}

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<()>>) {
        let _ = socket.emit(msg);
    }

    fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<()>>) {
        let _ = socket.emit_binary(data);
    }
}
