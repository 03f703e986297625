//! Property tests over everything that parses client input: payload decoding, validation and
//! bus frames. Run longer with `PROPTEST_CASES=100000 cargo test -p chat-protocol --test fuzz`.

use chat_protocol::{
    ChatText, ErrorCode, FreeForm, Limits, RoomId, UserId, Username,
    bus::{NodeId, decode_frame, encode_frame},
    client::{JoinPayload, SayPayload},
    dialects::{ChatAppLogin, ChatAppMessage, Todo, UserLogin, chat_app_geo},
    people::{ChatAckPayload, ChatPayload, LoginPayload, UserFrame},
    push::{
        BroadcastRequest, ChannelNotification, LegacyPushRequest, PushRequest, parse_event_name,
        parse_users,
    },
};
use proptest::prelude::*;

fn is_bidi_override(c: char) -> bool {
    ('\u{202a}'..='\u{202e}').contains(&c)
}

fn limits() -> Limits {
    Limits::default()
}

/// Arbitrary JSON values, nested, with strings from the whole of Unicode (controls and bidi
/// overrides included) and keys the old clients' payloads look for.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("to".to_owned()),
        Just("from".to_owned()),
        Just("myAuraId".to_owned()),
        Just("deviceId".to_owned()),
        Just("userId".to_owned()),
        Just("tokenId".to_owned()),
        Just("receiver_id".to_owned()),
        Just("clientMsgId".to_owned()),
        Just("ids".to_owned()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        ".{0,40}".prop_map(serde_json::Value::String),
        "[a-z0-9:@-]{0,70}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(12, 96, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|fields| serde_json::Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Every string in a JSON value, keys included, at any depth.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => out.push(text.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        serde_json::Value::Object(fields) => fields.iter().for_each(|(key, value)| {
            out.push(key.clone());
            strings(value, out);
        }),
        _ => {}
    }
}

proptest! {
    /// The old clients' payloads, whatever JSON they are: parsed to a value or a coded error,
    /// never a panic; what is accepted obeys the limits (every string clean and bounded, the
    /// object bounded) and the server's fields are never the client's.
    #[test]
    fn old_client_payloads_never_panic_and_accepted_ones_are_clean(value in json_value(), max_object_bytes in 64usize..4096) {
        let limits = Limits { max_object_bytes, max_text_chars: 50, ..Limits::default() };
        let ann = UserId::parse("ann", &limits).expect("valid");
        let _ = ChatAppLogin::parse(Some(value.clone()), &limits, None);
        let _ = ChatAppLogin::parse(Some(value.clone()), &limits, Some(&ann));
        let _ = UserLogin::parse(Some(value.clone()), &limits, Some(&ann));
        let _ = Todo::parse(Some(value.clone()), &limits);
        let _ = chat_app_geo(Some(value.clone()), &ann, &limits);
        if let Ok(payload) = serde_json::from_value::<ChatAckPayload>(value.clone()) {
            let _ = payload.validate(100);
        }
        if let Ok(message) = ChatAppMessage::parse(Some(value.clone()), &limits) {
            for key in ChatAppMessage::SERVER_OWNED.iter().chain(["to", "clientMsgId"].iter()) {
                prop_assert!(message.fields.get(key).is_none(), "{} kept", key);
            }
            prop_assert!(!message.fields.is_empty());
        }
        if let Ok(form) = FreeForm::parse(value, "x", &["from"], &limits) {
            prop_assert!(form.to_json().len() <= max_object_bytes);
            prop_assert!(form.get("from").is_none());
            let mut all = Vec::new();
            strings(&serde_json::Value::Object(form.fields().clone()), &mut all);
            for text in all {
                prop_assert!(text.chars().count() <= 50);
                prop_assert!(text.chars().all(|c| c == '\n' || c == '\t' || !c.is_control()));
                prop_assert!(!text.chars().any(is_bidi_override));
            }
        }
    }

    /// Whatever JSON-ish text arrives as an event payload, decoding and validating it returns
    /// a value or a coded error, and never panics.
    #[test]
    fn payloads_never_panic(raw in ".{0,300}") {
        if let Ok(payload) = serde_json::from_str::<JoinPayload>(&raw) {
            let _ = payload.validate(&limits());
        }
        if let Ok(payload) = serde_json::from_str::<SayPayload>(&raw) {
            let _ = payload.validate(&limits());
        }
        if let Ok(payload) = serde_json::from_str::<LoginPayload>(&raw) {
            let _ = payload.validate(&limits(), None);
        }
        if let Ok(payload) = serde_json::from_str::<ChatPayload>(&raw) {
            let _ = payload.validate(&limits());
        }
        let _ = UserFrame::parse(&raw);
    }

    /// HTTP API bodies and notification channel messages: any text parses to a request or an
    /// error, and validating a parsed request never panics.
    #[test]
    fn api_bodies_never_panic(raw in ".{0,300}", users in proptest::collection::vec("[ -~]{0,20}", 0..5), event in "[ -~]{0,70}") {
        if let Ok(request) = serde_json::from_str::<PushRequest>(&raw) {
            let _ = parse_users(request.users, "users", &limits());
            let _ = parse_event_name(request.event.as_deref());
        }
        if let Ok(request) = serde_json::from_str::<BroadcastRequest>(&raw) {
            let _ = request.room(&limits());
        }
        if let Ok(request) = serde_json::from_str::<LegacyPushRequest>(&raw) {
            let _ = parse_users(request.tokens, "tokens", &limits());
        }
        if let Ok(message) = serde_json::from_str::<ChannelNotification>(&raw) {
            let _ = parse_users(message.to_who, "toWho", &limits());
        }
        let body = serde_json::json!({"users": users, "category": "system", "data": {"e": event}, "event": event});
        if let Ok(request) = serde_json::from_value::<PushRequest>(body) {
            if let Ok(accepted) = parse_users(request.users, "users", &limits()) {
                prop_assert!(!accepted.is_empty());
            }
            if let Ok(name) = parse_event_name(request.event.as_deref()) {
                prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)));
            }
        }
    }

    /// People payloads with arbitrary ids: an accepted id is always safe for Redis key and
    /// channel names and for splicing into JSON without escaping.
    #[test]
    fn accepted_people_ids_are_safe(user in ".{0,70}", device in "[ -~]{0,70}", text in "\\PC{0,40}") {
        let json = serde_json::json!({"userId": user, "deviceId": device}).to_string();
        if let Ok(login) = serde_json::from_str::<LoginPayload>(&json).unwrap().validate(&limits(), None) {
            for id in [login.user.as_str(), login.device.as_str()] {
                prop_assert!(!id.is_empty() && id.len() <= limits().max_user_id_len);
                prop_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:@".contains(c)));
            }
        }
        let chat = serde_json::json!({"to": user, "text": text, "clientMsgId": device}).to_string();
        if let Ok(request) = serde_json::from_str::<ChatPayload>(&chat).unwrap().validate(&limits()) {
            prop_assert_eq!(request.to.as_str(), user.as_str());
        }
    }

    /// Structured payloads with arbitrary strings, including control and bidi characters.
    #[test]
    fn accepted_usernames_are_clean(name in "\\PC{0,40}|[\\x00-\\x1f\\u{202a}-\\u{202e} a-z]{0,40}") {
        match Username::parse(&name, &limits()) {
            Ok(username) => {
                let accepted = username.as_str();
                prop_assert!(!accepted.is_empty());
                prop_assert_eq!(accepted, accepted.trim());
                prop_assert!(accepted.chars().count() <= limits().max_username_chars);
                prop_assert!(!accepted.chars().any(char::is_control));
                prop_assert!(!accepted.chars().any(is_bidi_override));
            }
            Err(err) => prop_assert_eq!(err.code, ErrorCode::InvalidUsername),
        }
    }

    #[test]
    fn accepted_room_ids_use_only_the_safe_set(raw in ".{0,80}") {
        match RoomId::parse(&raw, &limits()) {
            Ok(room) => {
                prop_assert!(!room.as_str().is_empty() && room.as_str().len() <= 64);
                prop_assert!(room
                    .as_str()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)));
            }
            Err(err) => prop_assert_eq!(err.code, ErrorCode::InvalidRoom),
        }
    }

    #[test]
    fn accepted_texts_are_kept_verbatim_and_bounded(text in "\\PC{0,50}|[\\x00-\\x7f]{0,50}", repeat in 1usize..60) {
        let raw = text.repeat(repeat);
        match ChatText::parse(raw.clone(), &limits()) {
            Ok(accepted) => {
                prop_assert_eq!(accepted.as_str(), raw.as_str());
                prop_assert!(raw.chars().count() <= limits().max_text_chars);
                prop_assert!(raw.chars().all(|c| c == '\n' || c == '\t' || !c.is_control()));
            }
            Err(err) => prop_assert_eq!(err.code, ErrorCode::InvalidText),
        }
    }

    /// Frames from Redis: any bytes decode to an error or to a frame, never a panic, and
    /// every encoded frame decodes back.
    #[test]
    fn bus_frames(origin in any::<u64>(), json in ".{0,200}", garbage in ".{0,64}") {
        let frame = encode_frame(NodeId(origin), &json);
        prop_assert_eq!(decode_frame(&frame), Ok((NodeId(origin), json.as_str())));
        let _ = decode_frame(&garbage);
    }
}
