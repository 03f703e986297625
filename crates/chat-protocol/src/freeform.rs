//! Free-form objects: what old clients send where today's protocol has fixed fields. The old chat
//! app's `chat` is `{to, ...whatever the app uses}` (`content`, `type`, `time`, ...), a notices
//! client's `todo` is `{receiver_id, ...}`; both are stored and delivered with every field kept.
//!
//! A [`FreeForm`] is a JSON object that passed the same kind of checks as a chat text: every
//! string in it (keys and values, at any depth) is at most `max_text_chars` characters with no
//! control or bidirectional-override characters (newline and tab allowed), it nests at most
//! [`MAX_DEPTH`] levels, and the whole object is at most `max_object_bytes` of JSON. The fields
//! the server owns (`from`, `id`, `ts`, ...) are taken out at parsing, so a client can never set
//! them.

use serde_json::{Map, Value};

use crate::{ErrorCode, Limits, ProtocolError, validate::is_forbidden_char};

/// Deepest nesting of arrays and objects inside a free-form object (the object itself is 1).
pub const MAX_DEPTH: usize = 8;

/// A validated JSON object from an old client, without the fields the server owns.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeForm(Map<String, Value>);

impl FreeForm {
    /// Checks `value` as the payload of `event` and takes out the `server_owned` keys (their
    /// values are dropped: the server sets them). `value` must be a JSON object.
    pub fn parse(
        value: Value,
        event: &str,
        server_owned: &[&str],
        limits: &Limits,
    ) -> Result<Self, ProtocolError> {
        let Value::Object(mut fields) = value else {
            return Err(ProtocolError::new(
                ErrorCode::InvalidPayload,
                format!("{event} expects a JSON object"),
            ));
        };
        for key in server_owned {
            fields.remove(*key);
        }
        for (key, value) in &fields {
            check_string(key, limits)?;
            check_value(value, 2, limits)?;
        }
        // Measured once, as it will be stored.
        let size = serde_json::to_string(&fields).map_or(usize::MAX, |json| json.len());
        if size > limits.max_object_bytes {
            return Err(ProtocolError::new(
                ErrorCode::InvalidPayload,
                format!(
                    "{event} is {size} bytes of JSON; at most {} are allowed",
                    limits.max_object_bytes
                ),
            ));
        }
        Ok(Self(fields))
    }

    /// Takes a field out (a field with a meaning of its own, like the recipient).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Sets a field (the server's own, after parsing took the client's out).
    pub fn insert(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_owned(), value);
    }

    /// The object as JSON.
    pub fn to_json(&self) -> String {
        // A map of JSON values always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The fields as the tail of a JSON object, after fields written before them: `,"a":1}`, or
    /// `}` when there are none.
    pub fn tail(&self) -> String {
        let json = self.to_json();
        if self.0.is_empty() {
            "}".to_owned()
        } else {
            format!(",{}", &json[1..])
        }
    }
}

fn check_value(value: &Value, depth: usize, limits: &Limits) -> Result<(), ProtocolError> {
    match value {
        Value::String(text) => check_string(text, limits),
        Value::Array(items) => {
            check_depth(depth)?;
            items
                .iter()
                .try_for_each(|item| check_value(item, depth + 1, limits))
        }
        Value::Object(fields) => {
            check_depth(depth)?;
            fields.iter().try_for_each(|(key, value)| {
                check_string(key, limits)?;
                check_value(value, depth + 1, limits)
            })
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn check_depth(depth: usize) -> Result<(), ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError::new(
            ErrorCode::InvalidPayload,
            format!("the object nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// The rules of a chat text, except that a string may be empty.
fn check_string(text: &str, limits: &Limits) -> Result<(), ProtocolError> {
    let chars = text.chars().take(limits.max_text_chars + 1).count();
    if chars > limits.max_text_chars {
        return Err(ProtocolError::new(
            ErrorCode::InvalidText,
            format!(
                "invalid text: a string is longer than {} characters",
                limits.max_text_chars
            ),
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| *c != '\n' && *c != '\t' && is_forbidden_char(*c))
    {
        return Err(ProtocolError::new(
            ErrorCode::InvalidText,
            format!(
                "invalid text: character U+{:04X} is not allowed",
                bad as u32
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<FreeForm, ProtocolError> {
        FreeForm::parse(value, "chat", &["from", "id", "ts"], &Limits::default())
    }

    #[test]
    fn keeps_every_field_but_the_servers() {
        let form = parse(json!({"to": "bob", "content": "hi\nthere", "type": 1,
            "time": 1700000000, "from": "mallory", "id": "x", "ts": 1, "extra": {"a": [1, null]}}))
        .unwrap();
        assert_eq!(form.get("from"), None);
        assert_eq!(form.get("id"), None);
        assert_eq!(form.get("content"), Some(&json!("hi\nthere")));
        assert_eq!(form.get("extra"), Some(&json!({"a": [1, null]})));
        assert_eq!(
            FreeForm::parse(json!({}), "x", &[], &Limits::default())
                .unwrap()
                .tail(),
            "}"
        );
        assert_eq!(
            FreeForm::parse(json!({"a": 1}), "x", &[], &Limits::default())
                .unwrap()
                .tail(),
            ",\"a\":1}"
        );
    }

    #[test]
    fn refuses_what_a_chat_text_may_not_hold() {
        let code = |value: Value| parse(value).unwrap_err().code;
        assert_eq!(code(json!("a string")), ErrorCode::InvalidPayload);
        assert_eq!(code(json!([1])), ErrorCode::InvalidPayload);
        assert_eq!(
            code(json!({"content": "bell\u{7}"})),
            ErrorCode::InvalidText
        );
        assert_eq!(code(json!({"k\u{202e}": 1})), ErrorCode::InvalidText);
        assert_eq!(
            code(json!({"deep": {"x": ["a\u{1b}"]}})),
            ErrorCode::InvalidText
        );
        assert_eq!(
            code(json!({"content": "a".repeat(2001)})),
            ErrorCode::InvalidText
        );
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        assert_eq!(code(json!({ "d": deep })), ErrorCode::InvalidPayload);
        let many: Map<String, Value> = (0..10)
            .map(|i| (format!("k{i}"), json!("x".repeat(1000))))
            .collect();
        let err = parse(Value::Object(many)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        assert!(err.message.contains("at most 8192"), "{}", err.message);
    }
}
