//! The old node design's room traffic on Redis, spoken beside it during a migration
//! (`--bus-format legacy`). A node worker publishes each room event as a JSON object
//! `{event, data}` (`pub.publish(roomid, JSON.stringify({event, data}))`) on the classic channel
//! `<prefix><room id>` ([`crate::keys::legacy_room_channel`]) and emits whatever arrives there,
//! parsed, to the room's sockets (`io.to(channel).emit('message', JSON.parse(message))`): a
//! message that is not JSON throws in its subscriber callback and kills the node worker.
//!
//! A product worker in legacy mode copies every room message there unchanged: the `message`
//! payload ([`crate::server::RoomMessage`]) is already `{event, data, id, ts, room}`, and node
//! forwards extra fields as they are. Product workers hear each other on the room's own
//! channel, so on the legacy channel they keep only node's messages, told apart by `id`: the
//! product's ids are `<16 hex digits>-<counter>` ([`crate::memory::is_message_id`]); node's
//! messages carry none.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// What arrived on a room's legacy channel, for a product worker.
#[derive(Debug)]
pub enum LegacyMessage<'a> {
    /// A copy a product worker published: the product's workers have it from the room's own
    /// channel already.
    Product,
    /// A node worker's message: delivered to the room's members exactly as it came.
    Node(&'a RawValue),
}

/// Why a message of a legacy channel cannot be delivered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    #[error("a legacy room message is not JSON")]
    NotJson,
    #[error("a legacy room message is not a JSON object")]
    NotObject,
}

/// The one field the product reads of a legacy message (any other is passed on untouched).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Sorts a message of a room's legacy channel: a product copy (skipped), a node message (to
/// deliver), or something no client should get (not a JSON object: node's own workers would
/// have crashed on it, or emitted a non-object that no room client reads).
pub fn classify(raw: &str) -> Result<LegacyMessage<'_>, LegacyError> {
    let json: &RawValue = serde_json::from_str(raw).map_err(|_| LegacyError::NotJson)?;
    if !json.get().starts_with('{') {
        return Err(LegacyError::NotObject);
    }
    // An object whose fields serde cannot sort (an `id` twice) is node's: delivered as it came.
    let id = serde_json::from_str::<Envelope<'_>>(json.get())
        .ok()
        .and_then(|envelope| envelope.id)
        .and_then(|id| serde_json::from_str::<Cow<'_, str>>(id.get()).ok());
    if id.is_some_and(|id| crate::memory::is_message_id(&id)) {
        return Ok(LegacyMessage::Product);
    }
    Ok(LegacyMessage::Node(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<Option<&str>, LegacyError>) {
        let got = classify(raw).map(|message| match message {
            LegacyMessage::Product => None,
            LegacyMessage::Node(json) => Some(json.get()),
        });
        assert_eq!(got, expected, "{raw}");
    }

    #[test]
    fn node_messages_pass_as_they_came() {
        // The seed's join (the client's whole payload as data) and say.
        let join = r#"{"event":"join","data":{"username":"ann","extra":[1,2]}}"#;
        check(join, Ok(Some(join)));
        let say =
            r#"{"event":"broadcast_say","data":{"username":"ann","text":"hi"},"ts":1,"room":"r"}"#;
        check(say, Ok(Some(say)));
        // Surrounding whitespace is not part of the value.
        check(" {\"event\":\"x\"} ", Ok(Some("{\"event\":\"x\"}")));
        // An id that is not the product's stays node's.
        for id in [
            r#""abc""#,
            "17",
            r#""0123456789abcdef""#,
            r#""zz23456789abcdef-1""#,
        ] {
            let raw = format!(r#"{{"event":"join","data":{{}},"id":{id}}}"#);
            check(&raw, Ok(Some(&raw)));
        }
        let twice = r#"{"id":"0123456789abcdef-1","id":"x"}"#;
        check(twice, Ok(Some(twice)));
    }

    #[test]
    fn product_copies_are_recognized_by_their_id() {
        check(
            r#"{"event":"broadcast_say","data":{"username":"ann","text":"hi"},"id":"0123456789abcdef-17","ts":5,"room":"r"}"#,
            Ok(None),
        );
        // Written by a Lua script's cjson (quit of a dead worker's member): same id shape.
        check(
            r#"{"data":{"username":"ann"},"room":"r","id":"00000000000000ff-3","event":"broadcast_quit","ts":5}"#,
            Ok(None),
        );
    }

    #[test]
    fn what_no_client_should_get_is_refused() {
        check("", Err(LegacyError::NotJson));
        check("0123456789abcdef||p|{}", Err(LegacyError::NotJson));
        check("{\"event\":", Err(LegacyError::NotJson));
        check("[1,2]", Err(LegacyError::NotObject));
        check("\"text\"", Err(LegacyError::NotObject));
        check("42", Err(LegacyError::NotObject));
    }
}
