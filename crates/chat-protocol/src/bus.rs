//! What crosses Redis between workers: one pub/sub channel per room, carrying [`RoomFrame`]s
//! (`<origin>|<history stream id>|<kind>|<the room message JSON>`), and one per logged-in user
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

/// What a room frame asks of the workers that receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind<'a> {
    /// A message said on its origin worker, which delivered it locally already: every other
    /// worker delivers it.
    Say,
    /// A message made by a Redis script (a member's quit, a dead worker's members reaped):
    /// every worker delivers it, its origin too.
    Presence,
    /// A join or a recovery: delivered like `Presence`; on its origin it also completes the
    /// pending operation with this token (everything published before it is in the history
    /// read the script made, everything after it comes live).
    Marker(&'a str),
}

/// A frame of a room's channel: `<origin>|<stream id>|<kind>|<message JSON>`, where the origin
/// is 16 hex digits, the stream id the message's entry in the room's history (empty when
/// history is off), and the kind empty (`Say`), `p` (`Presence`) or `j:<token>` (`Marker`).
/// Frames are built by the room scripts in Redis (`say.lua`, `join.lua`, ...); this is their
/// one reader, and the writer of tests and of the in-memory bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomFrame<'a> {
    pub origin: NodeId,
    pub stream: Option<crate::people::StreamId>,
    pub kind: FrameKind<'a>,
    pub json: &'a str,
}

/// Builds a room frame (see [`RoomFrame`]).
pub fn encode_frame(
    origin: NodeId,
    stream: Option<crate::people::StreamId>,
    kind: FrameKind<'_>,
    message_json: &str,
) -> String {
    use fmt::Write;
    let mut frame = String::with_capacity(ORIGIN_HEX_LEN + 48 + message_json.len());
    // Writing into a String cannot fail.
    let _ = write!(frame, "{origin}|");
    if let Some(stream) = stream {
        let _ = write!(frame, "{stream}");
    }
    frame.push('|');
    match kind {
        FrameKind::Say => {}
        FrameKind::Presence => frame.push('p'),
        FrameKind::Marker(token) => {
            frame.push_str("j:");
            frame.push_str(token);
        }
    }
    frame.push('|');
    frame.push_str(message_json);
    frame
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bus frame is shorter than its header")]
    TooShort,
    #[error("bus frame origin is not 16 hex digits")]
    BadOrigin,
    #[error("bus frame stream id is malformed")]
    BadStream,
    #[error("bus frame kind is unknown")]
    BadKind,
}

/// Splits a frame into its parts (the message JSON is not parsed here).
pub fn decode_frame(frame: &str) -> Result<RoomFrame<'_>, FrameError> {
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
    let rest = &frame[ORIGIN_HEX_LEN + 1..];
    let (stream, rest) = rest.split_once('|').ok_or(FrameError::TooShort)?;
    let (kind, json) = rest.split_once('|').ok_or(FrameError::TooShort)?;
    let stream = if stream.is_empty() {
        None
    } else {
        Some(stream.parse().map_err(|()| FrameError::BadStream)?)
    };
    let kind = match kind {
        "" => FrameKind::Say,
        "p" => FrameKind::Presence,
        marker => FrameKind::Marker(marker.strip_prefix("j:").ok_or(FrameError::BadKind)?),
    };
    Ok(RoomFrame {
        origin: NodeId(origin),
        stream,
        kind,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let stream = Some(crate::people::StreamId { ms: 17, seq: 2 });
        for (stream, kind, text) in [
            (
                None,
                FrameKind::Say,
                r#"0000000000000abc|||{"event":"join"}"#,
            ),
            (
                stream,
                FrameKind::Presence,
                r#"0000000000000abc|17-2|p|{"event":"join"}"#,
            ),
            (
                stream,
                FrameKind::Marker("t7"),
                r#"0000000000000abc|17-2|j:t7|{"event":"join"}"#,
            ),
        ] {
            let frame = encode_frame(NodeId(0xabc), stream, kind, r#"{"event":"join"}"#);
            assert_eq!(frame, text);
            let decoded = decode_frame(&frame).unwrap();
            assert_eq!(
                (decoded.origin, decoded.stream, decoded.kind, decoded.json),
                (NodeId(0xabc), stream, kind, r#"{"event":"join"}"#)
            );
        }
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
            decode_frame("0000000000000abc|x-1||{}"),
            Err(FrameError::BadStream)
        );
        assert_eq!(
            decode_frame("0000000000000abc||q|{}"),
            Err(FrameError::BadKind)
        );
        assert_eq!(
            decode_frame("0000000000000abc|{}"),
            Err(FrameError::TooShort)
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
