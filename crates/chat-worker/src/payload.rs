//! Payloads encoded once as JSON (room messages, direct messages, notifications), emitted through
//! whichever socket.io parser the worker runs (`--parser`).
//!
//! socketioxide's JSON parser writes a [`RawValue`]'s bytes as they are: the encode-once path.
//! A binary format (the msgpack parser) would write a `RawValue` as serde_json's private marker
//! struct, not as the value: for those, [`Encoded`] transcodes the JSON into the value it holds
//! (parsed once per emit, not per receiving socket). Serde's `is_human_readable` tells them apart.

use serde::{Serialize, Serializer, ser::Error};
use serde_json::value::RawValue;

/// A JSON payload to emit (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct Encoded<'a>(pub &'a RawValue);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return self.0.serialize(serializer);
        }
        serde_json::from_str::<serde_json::Value>(self.0.get())
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_the_bytes_and_msgpack_gets_the_value() {
        let raw = RawValue::from_string(r#"{"a": [1, "x"]}"#.to_owned()).unwrap();
        assert_eq!(
            serde_json::to_string(&Encoded(&raw)).unwrap(),
            r#"{"a": [1, "x"]}"#
        );
        let packed = rmp_serde::to_vec_named(&Encoded(&raw)).unwrap();
        let back: serde_json::Value = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(back, serde_json::json!({"a": [1, "x"]}));
    }
}
