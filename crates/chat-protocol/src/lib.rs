//! Wire types of the chat cluster and their validation: what clients send, what the server
//! emits, what crosses Redis and the supervisor pipe. No IO and no async here.
//!
//! Every serializable type of the project lives in this crate, because every serializable type
//! is part of some boundary (socket.io clients, Redis, the worker → supervisor pipe, HTTP).

pub mod bus;
pub mod client;
pub mod dialects;
pub mod error;
pub mod freeform;
pub mod keys;
pub mod legacy;
pub mod limits;
pub mod memory;
pub mod people;
pub mod push;
pub mod report;
pub mod server;
pub mod status;
pub mod validate;

pub use error::{ErrorCode, ProtocolError};
pub use freeform::FreeForm;
pub use limits::Limits;
pub use validate::{ChatText, ClientMsgId, DeviceId, RoomId, UserId, Username};
