//! One lean connection: a TCP socket (optionally bound to a chosen loopback source address,
//! without using up a port per address), a websocket on it, and for socket.io servers the
//! engine.io and socket.io handshakes.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

pub type Ws = WebSocketStream<TcpStream>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The generator's websocket settings: a 4 KiB read buffer instead of tungstenite's eagerly
/// allocated 128 KiB, so that thousands of client connections cost the generator little memory
/// (chat frames are far smaller; a larger frame grows the buffer as needed).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Opens a websocket to `target` and completes the socket.io CONNECT of namespace `/`.
pub async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    query: &str,
) -> anyhow::Result<Ws> {
    let mut ws = open(
        target,
        source,
        &format!("/socket.io/?EIO=4&transport=websocket&{query}"),
    )
    .await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        bail!("expected engine.io OPEN, got {open:?}");
    }
    ws.send(Message::text("40")).await?;
    loop {
        let packet = next_text(&mut ws).await?;
        if packet == "2" {
            ws.send(Message::text("3")).await?;
        } else if packet.starts_with("40") {
            return Ok(ws);
        } else {
            bail!("socket.io CONNECT refused: {packet}");
        }
    }
}

/// Opens a plain websocket to `target` at `path_and_query` (the floor server speaks no socket.io).
pub async fn open(
    target: SocketAddr,
    source: Option<IpAddr>,
    path_and_query: &str,
) -> anyhow::Result<Ws> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        // Lets the kernel pick the port at connect time, per (source, destination) pair, so
        // each source address has its own ~28k ephemeral ports.
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .context("IP_BIND_ADDRESS_NO_PORT")?;
        socket
            .bind(SocketAddr::new(source, 0))
            .context("bind source address")?;
    }
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.connect(target))
        .await
        .context("tcp connect timed out")?
        .context("tcp connect")?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{target}{path_and_query}");
    let (ws, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())),
    )
    .await
    .context("websocket handshake timed out")?
    .context("websocket handshake")?;
    Ok(ws)
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.as_str().to_owned()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(err))) => return Err(err.into()),
            Ok(None) => bail!("connection closed during the handshake"),
            Err(_) => bail!("handshake timed out"),
        }
    }
}

/// `42["<event>",<json>]` without an ack.
pub fn event_packet(event: &str, data: &serde_json::Value) -> Message {
    Message::text(format!("42[\"{event}\",{data}]"))
}
