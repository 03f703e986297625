//! What crosses Redis between workers: one pub/sub channel per room, carrying frames of
//! `<origin node id, 16 hex digits>|<the room message JSON>`, and one per logged-in user
//! (carrying [`crate::people::UserFrame`]s); [`crate::keys`] names them.
//!
//! The JSON part is the exact `message` payload clients receive, so a receiving worker hands it
//! to its local sockets without decoding and re-encoding it. The origin lets a worker skip its
//! own frames: it has already delivered them locally, without waiting for Redis.

use std::fmt;

use crate::{RoomId, UserId};

/// Identifies one worker process for the lifetime of the process (random at start, so a
/// respawned worker is a new node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

const ORIGIN_HEX_LEN: usize = 16;

/// Something a worker subscribes to while it has local sockets for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Room(RoomId),
    User(UserId),
}

impl Topic {
    /// The topic's Redis channel.
    pub fn channel(&self, prefix: &str) -> String {
        match self {
            Self::Room(room) => crate::keys::room_channel(prefix, room),
            Self::User(user) => crate::keys::user_channel(prefix, user),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Room(room) => write!(f, "room:{room}"),
            Self::User(user) => write!(f, "user:{user}"),
        }
    }
}

/// Builds the frame published for a room message.
pub fn encode_frame(origin: NodeId, message_json: &str) -> String {
    let mut frame = String::with_capacity(ORIGIN_HEX_LEN + 1 + message_json.len());
    use fmt::Write;
    // Writing into a String cannot fail.
    let _ = write!(frame, "{origin}|");
    frame.push_str(message_json);
    frame
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bus frame is shorter than its header")]
    TooShort,
    #[error("bus frame origin is not 16 hex digits")]
    BadOrigin,
}

/// Splits a frame into its origin and its message JSON (not parsed here).
pub fn decode_frame(frame: &str) -> Result<(NodeId, &str), FrameError> {
    let bytes = frame.as_bytes();
    if bytes.len() <= ORIGIN_HEX_LEN {
        return Err(FrameError::TooShort);
    }
    // Checked as bytes: the header is ASCII once these hold, so the slices below fall on
    // character boundaries (a frame's header is never trusted to be).
    let (hex, rest) = bytes.split_at(ORIGIN_HEX_LEN);
    if rest[0] != b'|' || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(FrameError::BadOrigin);
    }
    let origin =
        u64::from_str_radix(&frame[..ORIGIN_HEX_LEN], 16).map_err(|_| FrameError::BadOrigin)?;
    Ok((NodeId(origin), &frame[ORIGIN_HEX_LEN + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame = encode_frame(NodeId(0xabc), r#"{"event":"join"}"#);
        assert_eq!(frame, r#"0000000000000abc|{"event":"join"}"#);
        assert_eq!(
            decode_frame(&frame),
            Ok((NodeId(0xabc), r#"{"event":"join"}"#))
        );
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(decode_frame(""), Err(FrameError::TooShort));
        assert_eq!(decode_frame("0123"), Err(FrameError::TooShort));
        assert_eq!(
            decode_frame("0000000000000abcX{}"),
            Err(FrameError::BadOrigin)
        );
        assert_eq!(
            decode_frame("zz00000000000abc|{}"),
            Err(FrameError::BadOrigin)
        );
        assert_eq!(decode_frame("ééééééééé|{}"), Err(FrameError::BadOrigin));
        // Found by the property test: a multi-byte character straddling the header's end.
        assert_eq!(
            decode_frame("000000000000000é|{}"),
            Err(FrameError::BadOrigin)
        );
    }
}
