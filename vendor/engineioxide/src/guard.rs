//! PATCHED (chat cluster, vendor/README.md): a guard on the first message of each session. Not
//! in the published crate.
//!
//! The socket.io packet parser is a server-wide choice that the protocol does not negotiate: a
//! client built with the other parser (JSON text packets against msgpack binary ones, or the
//! reverse) sends a first packet the server's parser cannot read, and the server closes the
//! session; the client reconnects, forever. The embedding server sets a guard
//! ([`set_first_message_guard`]) that looks at the first message of every session (a text or a
//! binary message, before the handler sees it, with the request that opened the session, so
//! that it can tell which engine the session is of) and may answer it instead: the reply is
//! queued to the client and the message is not handed on. Later messages go to the handler as
//! usual.
//!
//! Cost: one relaxed atomic swap per message (on a one-byte flag of the socket), and a call of
//! the guard once per session.

use std::sync::{OnceLock, atomic::Ordering};

use bytes::Bytes;
use http::request::Parts;

use crate::socket::Socket;

/// The first message of a session, as the transport received it.
#[derive(Debug, Clone, Copy)]
pub enum FirstMessage<'a> {
    /// A text message's payload (an engine.io message packet, without its type).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// What the guard answers instead of handing the message on.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A text message to queue for the client.
    Text(String),
    /// A binary message to queue for the client.
    Binary(Bytes),
}

/// A guard: the request that opened the session, and its first message.
pub type Guard = fn(&Parts, FirstMessage<'_>) -> Option<Reply>;

static GUARD: OnceLock<Guard> = OnceLock::new();

/// Sets the guard. Set once per process; later calls are ignored.
pub fn set_first_message_guard(guard: Guard) {
    let _ = GUARD.set(guard);
}

/// Whether `message`, received by `socket`, is to be handed to the handler: `false` when it is
/// the session's first message and the guard answered it (the reply is queued).
pub(crate) fn pass<D>(socket: &Socket<D>, message: FirstMessage<'_>) -> bool
where
    D: Default + Send + Sync + 'static,
{
    if socket.first_message_seen.swap(true, Ordering::Relaxed) {
        return true;
    }
    let Some(guard) = GUARD.get() else {
        return true;
    };
    match guard(&socket.req_parts, message) {
        None => true,
        Some(Reply::Text(text)) => {
            let _ = socket.emit(text);
            false
        }
        Some(Reply::Binary(data)) => {
            let _ = socket.emit_binary(data);
            false
        }
    }
}
