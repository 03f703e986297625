//! A stock socketioxide chat server scaled out with socketioxide-redis's fred driver, for
//! side-by-side benchmarks (not part of the product): the server a Rust developer would write
//! from the crates' documentation and examples. Built against the crates.io releases, not the
//! repository's vendored copies (this crate is outside the workspace and its patches).
//!
//! What is stock: `#[tokio::main]` (tokio's multi-thread runtime, one thread per core), every
//! socketioxide, socketioxide-redis and fred setting at its default, the client built as
//! socketioxide-redis's fred example builds it (`Config::from_url`, RESP3 set by hand since
//! fred ignores `?protocol=resp3`, `build_subscriber_client`, `RedisAdapterCtr::new_with_fred`),
//! served by `axum::serve`, and every room event sent with the adapter's `io.to(room).emit`
//! (published to Redis, then delivered locally). Log lines go to stderr through tracing's fmt
//! subscriber at `info`, as in the example; the adapter's warnings ("fred driver pubsub channel
//! lagged by N", "fred driver dropped a message") are how it reports what it drops.
//!
//! The chat protocol is the product's (and bench/node-peer's): `?roomid=` at connect puts the
//! socket in that room; `join {username}` sends the room `message {event:"join",
//! data:{username}, ts, room}`; `say {text}` (after a join) sends `message {event:
//! "broadcast_say", data:{username, text}, ts, room}`; a joined socket's disconnect sends
//! `broadcast_quit`. Payloads of another shape are ignored, as bench/node-peer does.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 PORT=6001 socketioxide-peer
//! ```
//!
//! One knob that is not stock, unset by default and only for a clearly labelled "tuned" line:
//! `FRED_BROADCAST_CAPACITY` (fred's `broadcast_channel_capacity`, 32 by default).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{Data, SocketRef},
};
use socketioxide_redis::{FredAdapter, RedisAdapterCtr, drivers::fred::fred_client as fred};

/// The room a socket joined at connect (`?roomid=`).
#[derive(Clone)]
struct Room(String);

/// The name a socket chose with `join`.
#[derive(Clone)]
struct Username(String);

#[derive(Deserialize)]
struct JoinPayload {
    username: String,
}

#[derive(Deserialize)]
struct SayPayload {
    text: String,
}

/// The `message` every room member receives.
#[derive(Serialize)]
struct RoomMessage<'a> {
    event: &'a str,
    data: MessageData<'a>,
    /// Server time, unix milliseconds.
    ts: u64,
    room: &'a str,
}

#[derive(Serialize)]
struct MessageData<'a> {
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let port: u16 = std::env::var("PORT").map_or(Ok(6001), |p| p.parse())?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());

    let mut config = fred::prelude::Config::from_url(&redis_url)?;
    // fred does not read `?protocol=resp3`; the adapter needs RESP3.
    config.version = fred::types::RespVersion::RESP3;
    let mut builder = fred::prelude::Builder::from_config(config);
    if let Ok(capacity) = std::env::var("FRED_BROADCAST_CAPACITY") {
        let capacity: usize = capacity.parse()?;
        builder.with_performance_config(|perf| perf.broadcast_channel_capacity = capacity);
    }
    let client = builder.build_subscriber_client()?;
    let adapter = RedisAdapterCtr::new_with_fred(client).await?;

    let (layer, io) = SocketIo::builder()
        .with_adapter::<FredAdapter<_>>(adapter)
        .build_layer();
    io.ns("/", on_connect).await?;

    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!(port, "listening");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    let room = socket.req_parts().uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("roomid="))
            .filter(|room| !room.is_empty())
            .map(str::to_owned)
    });
    let Some(room) = room else { return };
    socket.join(room.clone());
    socket.extensions.insert(Room(room));
    socket.on("join", on_join);
    socket.on("say", on_say);
    socket.on_disconnect(on_disconnect);
}

async fn on_join<A: Adapter>(socket: SocketRef<A>, io: SocketIo<A>, Data(join): Data<JoinPayload>) {
    let Some(Room(room)) = socket.extensions.get::<Room>() else {
        return;
    };
    socket.extensions.insert(Username(join.username.clone()));
    send(&io, &room, "join", &join.username, None).await;
}

async fn on_say<A: Adapter>(socket: SocketRef<A>, io: SocketIo<A>, Data(say): Data<SayPayload>) {
    let (Some(Room(room)), Some(Username(username))) = (
        socket.extensions.get::<Room>(),
        socket.extensions.get::<Username>(),
    ) else {
        return;
    };
    send(&io, &room, "broadcast_say", &username, Some(&say.text)).await;
}

async fn on_disconnect<A: Adapter>(socket: SocketRef<A>, io: SocketIo<A>) {
    if let (Some(Room(room)), Some(Username(username))) = (
        socket.extensions.get::<Room>(),
        socket.extensions.get::<Username>(),
    ) {
        send(&io, &room, "broadcast_quit", &username, None).await;
    }
}

/// `io.to(room).emit("message", ...)`: the adapter publishes to Redis, then delivers locally.
async fn send<A: Adapter>(
    io: &SocketIo<A>,
    room: &str,
    event: &str,
    username: &str,
    text: Option<&str>,
) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64);
    let message = RoomMessage {
        event,
        data: MessageData { username, text },
        ts,
        room,
    };
    if let Err(err) = io.to(room.to_owned()).emit("message", &message).await {
        tracing::warn!(%err, "broadcast failed");
    }
}
