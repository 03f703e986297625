//! The errors a client can be answered with, as stable machine-readable codes.

use serde::Serialize;

/// Stable error codes sent to clients in `{ok:false, error:{code, message}}` acks.
/// Clients branch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The event payload is not of the expected shape (wrong JSON type, missing field).
    InvalidPayload,
    /// The room id is empty, too long or has characters outside the allowed set.
    InvalidRoom,
    /// The user name is empty, too long or has control characters.
    InvalidUsername,
    /// The chat text is empty, too long or has control characters.
    InvalidText,
    /// The socket connected without `?roomid=`, so room events make no sense.
    NoRoom,
    /// `say` before `join`.
    NotJoined,
    /// A second `join` on the same socket.
    AlreadyJoined,
    /// The client sends faster than the configured rate.
    RateLimited,
    /// The user id is empty, too long or has characters outside the allowed set.
    InvalidUser,
    /// The device id is empty, too long or has characters outside the allowed set.
    InvalidDevice,
    /// A people event (`chat`, `geo`) before `login`.
    NotLoggedIn,
    /// A second `login` on the same socket.
    AlreadyLoggedIn,
    /// The recipient's inbox holds as many waiting messages as allowed (in all, or of this
    /// sender); the message was not stored. Retry later.
    InboxFull,
    /// The store (Redis) did not answer in time, or no replica confirmed a write under
    /// `--durability replicated`: a write may or may not have happened (the message says
    /// which). Retry, with the same `clientMsgId` for a direct message.
    Unavailable,
    /// The socket is authenticated as another user than the payload names.
    Forbidden,
    /// The event name is not one the server knows.
    UnknownEvent,
    /// The event is known but not served in this worker's configuration: `members` and
    /// `history` while the rooms run beside the old node cluster (`--bus-format legacy`).
    Unsupported,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPayload => "invalid_payload",
            Self::InvalidRoom => "invalid_room",
            Self::InvalidUsername => "invalid_username",
            Self::InvalidText => "invalid_text",
            Self::NoRoom => "no_room",
            Self::NotJoined => "not_joined",
            Self::AlreadyJoined => "already_joined",
            Self::RateLimited => "rate_limited",
            Self::InvalidUser => "invalid_user",
            Self::InvalidDevice => "invalid_device",
            Self::NotLoggedIn => "not_logged_in",
            Self::AlreadyLoggedIn => "already_logged_in",
            Self::InboxFull => "inbox_full",
            Self::Unavailable => "unavailable",
            Self::Forbidden => "forbidden",
            Self::UnknownEvent => "unknown_event",
            Self::Unsupported => "unsupported",
        }
    }
}

/// A refusal of client input: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code in an HTTP error body (`as_str`) is the one in a socket ack (serde).
    #[test]
    fn every_code_reads_the_same_on_every_path() {
        use ErrorCode::*;
        let all = [
            InvalidPayload,
            InvalidRoom,
            InvalidUsername,
            InvalidText,
            NoRoom,
            NotJoined,
            AlreadyJoined,
            RateLimited,
            InvalidUser,
            InvalidDevice,
            NotLoggedIn,
            AlreadyLoggedIn,
            InboxFull,
            Unavailable,
            Forbidden,
            UnknownEvent,
            Unsupported,
        ];
        for code in all {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
        assert_eq!(Unavailable.as_str(), "unavailable");
    }
}
