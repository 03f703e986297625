//! Validated newtypes for client-provided strings: a value of these types has passed the checks,
//! so code past the socket edge never re-validates.

use std::fmt;

use crate::{ErrorCode, Limits, ProtocolError};

/// A room id: 1 to `max_room_id_len` ASCII characters from `A-Z a-z 0-9 _ - . :`.
/// The set is narrow on purpose: room ids end up in Redis channel names, URLs and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    pub fn parse(raw: &str, limits: &Limits) -> Result<Self, ProtocolError> {
        let invalid = |why: &str| {
            ProtocolError::new(ErrorCode::InvalidRoom, format!("invalid room id: {why}"))
        };
        if raw.is_empty() {
            return Err(invalid("it is empty"));
        }
        if raw.len() > limits.max_room_id_len {
            return Err(invalid(&format!(
                "it is longer than {} characters",
                limits.max_room_id_len
            )));
        }
        if let Some(bad) = raw.chars().find(|c| !is_room_id_char(*c)) {
            return Err(invalid(&format!(
                "{} is not allowed (use letters, digits, '_', '-', '.', ':')",
                shown(bad)
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A refused character as a client developer reads it: `'é' (U+00E9)`, or only the code point
/// for what cannot be shown (white space, control and bidirectional characters).
fn shown(c: char) -> String {
    if c.is_whitespace() || is_forbidden_char(c) {
        format!("the character U+{:04X}", u32::from(c))
    } else {
        format!("'{c}' (U+{:04X})", u32::from(c))
    }
}

fn is_room_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id: 1 to `max_user_id_len` ASCII characters from `A-Z a-z 0-9 _ - . : @`. User ids
/// name Redis keys and channels (`<prefix>inbox:<user>`), so the set is as narrow as room ids'.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

/// A device id, chosen by the client per installation: same characters and length as a user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(String);

/// A sender's own id for one direct message, for retries without duplicates: same characters
/// and length as a user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMsgId(String);

macro_rules! identifier {
    ($name:ident, $code:expr, $what:literal) => {
        impl $name {
            pub fn parse(raw: &str, limits: &Limits) -> Result<Self, ProtocolError> {
                parse_identifier(raw, limits.max_user_id_len, $code, $what).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(UserId, ErrorCode::InvalidUser, "user id");

/// Lets maps keyed by user id be searched with the id as named in a channel.
impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}
identifier!(DeviceId, ErrorCode::InvalidDevice, "device id");
identifier!(ClientMsgId, ErrorCode::InvalidPayload, "clientMsgId");

fn parse_identifier(
    raw: &str,
    max_len: usize,
    code: ErrorCode,
    what: &str,
) -> Result<String, ProtocolError> {
    let invalid = |why: String| ProtocolError::new(code, format!("invalid {what}: {why}"));
    if raw.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if raw.len() > max_len {
        return Err(invalid(format!("it is longer than {max_len} characters")));
    }
    if let Some(bad) = raw.chars().find(|c| !is_room_id_char(*c) && *c != '@') {
        return Err(invalid(format!(
            "{} is not allowed (use letters, digits, '_', '-', '.', ':', '@')",
            shown(bad)
        )));
    }
    Ok(raw.to_owned())
}

/// A display name: trimmed, 1 to `max_username_chars` characters, no control or
/// bidirectional-override characters (which would let one name impersonate another).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str, limits: &Limits) -> Result<Self, ProtocolError> {
        let invalid = |why: String| {
            ProtocolError::new(
                ErrorCode::InvalidUsername,
                format!("invalid username: {why}"),
            )
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let chars = trimmed.chars().count();
        if chars > limits.max_username_chars {
            return Err(invalid(format!(
                "it has {chars} characters, at most {} are allowed",
                limits.max_username_chars
            )));
        }
        if let Some(bad) = trimmed.chars().find(|c| is_forbidden_char(*c)) {
            return Err(invalid(format!(
                "character U+{:04X} is not allowed",
                bad as u32
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat text: 1 to `max_text_chars` characters, not only white space, no control characters
/// other than newline and tab. Kept as sent (not trimmed): the sender chose its white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatText(String);

impl ChatText {
    pub fn parse(raw: String, limits: &Limits) -> Result<Self, ProtocolError> {
        let invalid = |why: String| {
            ProtocolError::new(ErrorCode::InvalidText, format!("invalid text: {why}"))
        };
        if raw.trim().is_empty() {
            return Err(invalid("it is empty".into()));
        }
        // Counting stops one past the cap so a huge text costs no more than a long one.
        let chars = raw.chars().take(limits.max_text_chars + 1).count();
        if chars > limits.max_text_chars {
            return Err(invalid(format!(
                "it is longer than {} characters",
                limits.max_text_chars
            )));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| *c != '\n' && *c != '\t' && is_forbidden_char(*c))
        {
            return Err(invalid(format!(
                "character U+{:04X} is not allowed",
                bad as u32
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Control characters, and the Unicode bidirectional overrides and isolates that can make a
/// rendered string read differently from its bytes.
pub(crate) fn is_forbidden_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_room(raw: &str, expected: Result<&str, &str>) {
        let got = RoomId::parse(raw, &Limits::default());
        match (got, expected) {
            (Ok(room), Ok(want)) => assert_eq!(room.as_str(), want),
            (Err(err), Err(fragment)) => {
                assert_eq!(err.code, ErrorCode::InvalidRoom);
                assert!(
                    err.message.contains(fragment),
                    "{:?} lacks {fragment:?}",
                    err.message
                );
            }
            (got, want) => panic!("room {raw:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn room_ids() {
        check_room("lobby", Ok("lobby"));
        check_room("Room_1-a.b:c", Ok("Room_1-a.b:c"));
        check_room(&"r".repeat(64), Ok(&"r".repeat(64)));
        check_room("", Err("empty"));
        check_room(&"r".repeat(65), Err("longer than 64"));
        check_room("a b", Err("the character U+0020 is not allowed"));
        check_room("a/b", Err("'/' (U+002F) is not allowed"));
        check_room("café", Err("'é' (U+00E9) is not allowed"));
        check_room("a\0b", Err("not allowed"));
    }

    fn check_username(raw: &str, expected: Result<&str, &str>) {
        let got = Username::parse(raw, &Limits::default());
        match (got, expected) {
            (Ok(name), Ok(want)) => assert_eq!(name.as_str(), want),
            (Err(err), Err(fragment)) => {
                assert_eq!(err.code, ErrorCode::InvalidUsername);
                assert!(
                    err.message.contains(fragment),
                    "{:?} lacks {fragment:?}",
                    err.message
                );
            }
            (got, want) => panic!("username {raw:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn usernames() {
        check_username("alice", Ok("alice"));
        check_username("  bob  ", Ok("bob"));
        check_username("Zoë 李", Ok("Zoë 李"));
        check_username(&"é".repeat(32), Ok(&"é".repeat(32)));
        check_username("", Err("empty"));
        check_username("   ", Err("empty"));
        check_username(&"é".repeat(33), Err("33 characters"));
        check_username("a\nb", Err("U+000A"));
        check_username("evil\u{202E}txt", Err("U+202E"));
        // Every bidirectional embedding, override (U+202A-202E) and isolate (U+2066-2069);
        // their neighbours are ordinary characters.
        for c in BIDI {
            let name = format!("ann{c}bob");
            check_username(&name, Err(&format!("U+{:04X}", c as u32)));
        }
        for c in ['\u{2029}', '\u{202F}', '\u{2065}', '\u{206A}'] {
            let name = format!("ann{c}bob");
            check_username(&name, Ok(&name));
        }
    }

    const BIDI: [char; 9] = [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}',
    ];

    fn check_text(raw: &str, expected: Result<(), &str>) {
        let got = ChatText::parse(raw.to_owned(), &Limits::default());
        match (got, expected) {
            (Ok(text), Ok(())) => assert_eq!(text.as_str(), raw),
            (Err(err), Err(fragment)) => {
                assert_eq!(err.code, ErrorCode::InvalidText);
                assert!(
                    err.message.contains(fragment),
                    "{:?} lacks {fragment:?}",
                    err.message
                );
            }
            (got, want) => panic!("text {raw:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn identifiers() {
        let limits = Limits::default();
        assert_eq!(
            UserId::parse("u-1@x.y", &limits).unwrap().as_str(),
            "u-1@x.y"
        );
        assert_eq!(
            DeviceId::parse("ios:42", &limits).unwrap().as_str(),
            "ios:42"
        );
        let long = "u".repeat(limits.max_user_id_len + 1);
        for (raw, fragment) in [
            ("", "empty"),
            ("a b", "U+0020"),
            (long.as_str(), "longer than"),
            ("é", "'é'"),
        ] {
            let err = UserId::parse(raw, &limits).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidUser);
            assert!(
                err.message.contains(fragment),
                "{:?} lacks {fragment:?}",
                err.message
            );
        }
        assert_eq!(
            DeviceId::parse("", &limits).unwrap_err().code,
            ErrorCode::InvalidDevice
        );
        assert_eq!(
            ClientMsgId::parse("a/b", &limits).unwrap_err().code,
            ErrorCode::InvalidPayload
        );
    }

    /// Maps keyed by user id are searched with the id as named in a channel.
    #[test]
    fn user_ids_are_found_by_their_text() {
        let mut map = std::collections::HashMap::new();
        map.insert(UserId::parse("ann", &Limits::default()).unwrap(), 1);
        assert_eq!(map.get("ann"), Some(&1));
        assert_eq!(map.get("bob"), None);
    }

    #[test]
    fn texts() {
        check_text("hello", Ok(()));
        check_text("  two\nlines\tand tab ", Ok(()));
        check_text("<img src=x onerror=alert(1)>", Ok(()));
        check_text(&"字".repeat(2000), Ok(()));
        check_text("", Err("empty"));
        check_text(" \n\t ", Err("empty"));
        check_text(&"a".repeat(2001), Err("longer than 2000"));
        check_text("bell\u{7}", Err("U+0007"));
        check_text("esc\u{1b}[31m", Err("U+001B"));
        for c in BIDI {
            check_text(&format!("pay {c}321$"), Err(&format!("U+{:04X}", c as u32)));
        }
        for c in ['\u{2029}', '\u{202F}', '\u{2065}', '\u{206A}'] {
            check_text(&format!("pay {c}321$"), Ok(()));
        }
    }
}
