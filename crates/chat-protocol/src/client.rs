//! Events clients send, as they arrive off the wire, and their conversion into validated
//! requests. The shapes are those of the old node client (`join {username}`, `say {text}`);
//! a bare string is accepted too, as some old clients sent one.

use serde::Deserialize;

use crate::{ChatText, ErrorCode, Limits, ProtocolError, Username};

/// Payload of `join`: `{"username": "..."}` or a bare string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum JoinPayload {
    Object { username: String },
    Bare(String),
}

/// Payload of `say`: `{"text": "..."}` or a bare string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SayPayload {
    Object { text: String },
    Bare(String),
}

impl JoinPayload {
    pub const EXPECTED: &'static str = "join expects {\"username\": string}";

    pub fn validate(self, limits: &Limits) -> Result<Username, ProtocolError> {
        let (Self::Object { username } | Self::Bare(username)) = self;
        Username::parse(&username, limits)
    }
}

impl SayPayload {
    pub const EXPECTED: &'static str = "say expects {\"text\": string}";

    pub fn validate(self, limits: &Limits) -> Result<ChatText, ProtocolError> {
        let (Self::Object { text } | Self::Bare(text)) = self;
        ChatText::parse(text, limits)
    }
}

/// The error for a payload that did not even have the right shape.
pub fn invalid_payload(expected: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidPayload, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(json: &str) -> Result<String, ErrorCode> {
        serde_json::from_str::<JoinPayload>(json)
            .map_err(|_| ErrorCode::InvalidPayload)
            .and_then(|p| p.validate(&Limits::default()).map_err(|e| e.code))
            .map(|name| name.as_str().to_owned())
    }

    fn say(json: &str) -> Result<String, ErrorCode> {
        serde_json::from_str::<SayPayload>(json)
            .map_err(|_| ErrorCode::InvalidPayload)
            .and_then(|p| p.validate(&Limits::default()).map_err(|e| e.code))
            .map(|text| text.as_str().to_owned())
    }

    #[test]
    fn join_payloads() {
        assert_eq!(join(r#"{"username":"ann"}"#), Ok("ann".into()));
        assert_eq!(join(r#"{"username":"ann","extra":1}"#), Ok("ann".into()));
        assert_eq!(join(r#""ann""#), Ok("ann".into()));
        assert_eq!(join(r#"{"username":""}"#), Err(ErrorCode::InvalidUsername));
        assert_eq!(join(r#"{"name":"ann"}"#), Err(ErrorCode::InvalidPayload));
        assert_eq!(join(r#"{"username":5}"#), Err(ErrorCode::InvalidPayload));
        assert_eq!(join("null"), Err(ErrorCode::InvalidPayload));
        assert_eq!(join("[1,2]"), Err(ErrorCode::InvalidPayload));
        assert_eq!(join("42"), Err(ErrorCode::InvalidPayload));
    }

    #[test]
    fn say_payloads() {
        assert_eq!(say(r#"{"text":"hi"}"#), Ok("hi".into()));
        assert_eq!(say(r#""hi""#), Ok("hi".into()));
        assert_eq!(say(r#"{"text":"  "}"#), Err(ErrorCode::InvalidText));
        assert_eq!(say(r#"{"text":null}"#), Err(ErrorCode::InvalidPayload));
        assert_eq!(say(r#"{}"#), Err(ErrorCode::InvalidPayload));
        assert_eq!(say("true"), Err(ErrorCode::InvalidPayload));
    }
}
