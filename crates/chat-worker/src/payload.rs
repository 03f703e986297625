//! Payloads encoded once as JSON (room messages, history, direct messages, notifications),
//! emitted through whichever socket.io parser the worker runs (`--parser`).
//!
//! socketioxide's JSON parser writes a [`RawValue`]'s bytes as they are: the encode-once path.
//! A binary format (the msgpack parser) would write a `RawValue` as serde_json's private marker
//! struct, not as the value: for those, [`Encoded`] transcodes what it wraps (a `RawValue`, or
//! a struct holding some) into the value it holds, once per emit, not per receiving socket.
//! Serde's `is_human_readable` tells the two apart.
//!
//! socket.io spreads a tuple into the event's arguments: wrap each argument, not the tuple
//! (`(Encoded(json), offset)`), since the msgpack parser looks for the tuple itself.

use serde::{Serialize, Serializer, ser::Error};

/// A payload to emit (see the module's documentation): `Encoded(&raw_value)`,
/// `Encoded(&struct_with_raw_values)`.
#[derive(Debug, Clone, Copy)]
pub struct Encoded<T>(pub T);

impl<T: Serialize> Serialize for Encoded<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return self.0.serialize(serializer);
        }
        // serde_json's own value serializer reads a RawValue's JSON back into the value.
        serde_json::to_value(&self.0)
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    /// serde_json's name for a `RawValue` in a serializer that is not its own. Decoding msgpack
    /// into a `serde_json::Value` hides it (serde_json reads the marker back as the value), so
    /// the tests look at the bytes a client would get.
    const MARKER: &[u8] = b"$serde_json::private::RawValue";

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    #[test]
    fn json_keeps_the_bytes_and_msgpack_gets_the_value() {
        let raw = RawValue::from_string(r#"{"a": [1, "x"]}"#.to_owned()).unwrap();
        assert_eq!(
            serde_json::to_string(&Encoded(&*raw)).unwrap(),
            r#"{"a": [1, "x"]}"#
        );
        let packed = rmp_serde::to_vec_named(&Encoded(&*raw)).unwrap();
        assert_eq!(
            packed,
            rmp_serde::to_vec_named(&serde_json::json!({"a": [1, "x"]})).unwrap()
        );
        // Without the wrapper, msgpack gets serde_json's marker, not the value.
        assert!(contains(&rmp_serde::to_vec_named(&*raw).unwrap(), MARKER));
    }

    #[test]
    fn raw_values_inside_a_struct_reach_msgpack_as_values() {
        #[derive(Serialize)]
        struct History<'a> {
            room: &'a str,
            messages: Vec<&'a RawValue>,
        }
        let message = RawValue::from_string(r#"{"id":"n-1","text":"hi"}"#.to_owned()).unwrap();
        let history = History {
            room: "lobby",
            messages: vec![&message],
        };
        let expected =
            serde_json::json!({"room": "lobby", "messages": [{"id": "n-1", "text": "hi"}]});
        assert_eq!(
            serde_json::to_value(Encoded(&history)).unwrap(),
            expected,
            "JSON"
        );
        let packed = rmp_serde::to_vec_named(&Encoded(&history)).unwrap();
        assert_eq!(packed, rmp_serde::to_vec_named(&expected).unwrap());
        assert!(!contains(&packed, MARKER));
        // Without the wrapper, msgpack gets serde_json's marker, not the message.
        assert!(contains(
            &rmp_serde::to_vec_named(&history).unwrap(),
            MARKER
        ));
    }
}
