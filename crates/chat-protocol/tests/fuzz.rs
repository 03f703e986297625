//! Property tests over everything that parses client or backend input: event payloads, ids,
//! texts, user-channel frames, push API bodies and bus frames.
//!
//! Random text almost never has the shape of a payload, so the structured properties build
//! values the way clients and backends send them (ids drawn from the allowed set at lengths
//! around the limits, texts and names with control, bidirectional and neighbouring
//! characters), mutate some, and compare each answer with an independent model of the rules:
//! an input the model accepts must be accepted as it was sent, any other refused with its code.
//! Each structured property also fails if too few of its cases were accepted or refused, so a
//! generator that stops reaching the validators is noticed.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test --release -p chat-protocol --test fuzz`.

use std::cell::Cell;

use chat_protocol::{
    ChatText, ErrorCode, FreeForm, Limits, RoomId, UserId, Username,
    bus::{FrameKind, NodeId, decode_frame, encode_frame},
    client::{JoinPayload, SayPayload},
    dialects::{ChatAppLogin, ChatAppMessage, Todo, UserLogin, chat_app_geo},
    people::{ChatAckPayload, ChatPayload, LoginPayload, UserFrame},
    push::{
        BroadcastRequest, ChannelNotification, LegacyPushRequest, PushRequest, parse_event_name,
        parse_users,
    },
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Value, json};

fn limits() -> Limits {
    Limits::default()
}

// ---- The rules, written again independently of the code under test ----

const ID_EXTRA: &str = "_-.:";
const BIDI: [char; 9] = [
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}',
];

fn model_room(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= Limits::DEFAULT_MAX_ROOM_ID_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ID_EXTRA.contains(c))
}

fn model_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= Limits::DEFAULT_MAX_USER_ID_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ID_EXTRA.contains(c) || c == '@')
}

fn forbidden(c: char) -> bool {
    c.is_control() || BIDI.contains(&c)
}

/// The name a username is accepted as, if it is.
fn model_username(raw: &str) -> Option<&str> {
    let name = raw.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= Limits::DEFAULT_MAX_USERNAME_CHARS
        && !name.chars().any(forbidden);
    ok.then_some(name)
}

fn model_text(raw: &str) -> bool {
    !raw.trim().is_empty()
        && raw.chars().count() <= Limits::DEFAULT_MAX_TEXT_CHARS
        && raw.chars().all(|c| c == '\n' || c == '\t' || !forbidden(c))
}

fn model_event(raw: &str) -> bool {
    model_room(raw)
        && ![
            "connect",
            "connect_error",
            "disconnect",
            "disconnecting",
            "newListener",
            "removeListener",
            "message",
        ]
        .contains(&raw)
}

// ---- Generators ----

/// Characters that break an id, a name or a text, and their harmless neighbours.
fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            ' ', '/', '%', '"', '\\', '\0', '\n', '\t', '\u{7f}', '\u{1b}', '\u{85}', 'é', '李',
            '@', '\u{2029}', '\u{202F}', '\u{2065}', '\u{206A}', '\u{a0}', '\u{3000}',
        ]),
        prop::sample::select(BIDI.to_vec()),
        any::<char>(),
    ]
}

/// A string of `len` characters from `alphabet`, with, 30 % of the time, one character
/// replaced by an odd one.
fn spoiled(alphabet: &'static str, lens: Vec<usize>) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::sample::select(lens)
        .prop_flat_map(move |len| prop::collection::vec(prop::sample::select(chars.clone()), len))
        .prop_flat_map(|chars| {
            let len = chars.len();
            (
                Just(chars),
                prop::option::weighted(0.3, (0..len.max(1), odd_char())),
            )
        })
        .prop_map(|(mut chars, spoil)| {
            if let Some((at, c)) = spoil
                && at < chars.len()
            {
                chars[at] = c;
            }
            chars.into_iter().collect()
        })
}

const ID_CHARS: &str = "abcXYZ019_-.:@";
const ROOM_CHARS: &str = "abcXYZ019_-.:";

/// Ids at lengths around the limit (64), some spoiled.
fn id() -> impl Strategy<Value = String> {
    spoiled(ID_CHARS, vec![0, 1, 2, 7, 30, 62, 63, 64, 65, 66, 90])
}

fn room() -> impl Strategy<Value = String> {
    spoiled(ROOM_CHARS, vec![0, 1, 2, 7, 30, 62, 63, 64, 65, 66, 90])
}

/// An id as a client sends it: text, or a number (old clients).
fn id_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => id().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
    ]
}

/// Display names around 32 characters, with spaces around, and spoiled ones.
fn username() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", " ", "  "]),
        spoiled("ab é李Z9-", vec![0, 1, 2, 16, 31, 32, 33, 34]),
        prop::sample::select(vec!["", " ", "\t"]),
    )
        .prop_map(|(before, name, after)| format!("{before}{name}{after}"))
}

/// Texts around 2000 characters, and short ones, some spoiled.
fn text() -> impl Strategy<Value = String> {
    spoiled(
        "hi 字\n\tok<>\"é",
        vec![0, 1, 3, 40, 1998, 1999, 2000, 2001, 2002],
    )
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

/// Runs a structured property: `check` says whether the case was accepted (`Ok(true)`) or
/// refused as it should be (`Ok(false)`). Fails if either kind is under a tenth of the cases.
fn structured<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let cases = runner.config().cases as usize;
    let (accepted, refused) = (Cell::new(0usize), Cell::new(0usize));
    let result = runner.run(&strategy, |value| {
        let counter = if check(value)? { &accepted } else { &refused };
        counter.set(counter.get() + 1);
        Ok(())
    });
    if let Err(err) = result {
        panic!("{name}: {err}");
    }
    let (accepted, refused) = (accepted.get(), refused.get());
    eprintln!("{name}: {accepted} accepted, {refused} refused");
    assert!(
        accepted * 10 >= cases && refused * 10 >= cases,
        "{name}: of {cases} cases {accepted} were accepted and {refused} refused; the generator \
         no longer reaches both sides of the validator"
    );
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[test]
fn room_ids_follow_the_rules() {
    structured("room ids", room(), |raw| {
        match RoomId::parse(&raw, &limits()) {
            Ok(room) => {
                prop_assert!(model_room(&raw), "accepted {raw:?}");
                prop_assert_eq!(room.as_str(), raw.as_str());
                Ok(true)
            }
            Err(err) => {
                prop_assert!(!model_room(&raw), "refused {raw:?}: {}", err.message);
                prop_assert_eq!(err.code, ErrorCode::InvalidRoom);
                Ok(false)
            }
        }
    });
}

#[test]
fn usernames_follow_the_rules() {
    structured(
        "join payloads",
        (username(), any::<bool>()),
        |(raw, bare)| {
            let payload = if bare {
                json!(raw)
            } else {
                json!({ "username": raw })
            };
            let parsed: JoinPayload = serde_json::from_value(payload).expect("join payload shape");
            match parsed.validate(&limits()) {
                Ok(name) => {
                    prop_assert_eq!(
                        Some(name.as_str()),
                        model_username(&raw),
                        "accepted {:?}",
                        raw
                    );
                    Ok(true)
                }
                Err(err) => {
                    prop_assert_eq!(model_username(&raw), None, "refused {:?}", raw);
                    prop_assert_eq!(err.code, ErrorCode::InvalidUsername);
                    // The same rule when the name comes without a payload around it.
                    prop_assert!(Username::parse(&raw, &limits()).is_err());
                    Ok(false)
                }
            }
        },
    );
}

#[test]
fn say_texts_follow_the_rules() {
    structured("say payloads", (text(), any::<bool>()), |(raw, bare)| {
        let payload = if bare {
            json!(raw)
        } else {
            json!({ "text": raw })
        };
        let parsed: SayPayload = serde_json::from_value(payload).expect("say payload shape");
        match parsed.validate(&limits()) {
            Ok(text) => {
                prop_assert!(model_text(&raw), "accepted {raw:?}");
                prop_assert_eq!(text.as_str(), raw.as_str(), "kept verbatim");
                Ok(true)
            }
            Err(err) => {
                prop_assert!(!model_text(&raw), "refused {raw:?}: {}", err.message);
                prop_assert_eq!(err.code, ErrorCode::InvalidText);
                prop_assert!(ChatText::parse(raw, &limits()).is_err());
                Ok(false)
            }
        }
    });
}

#[test]
fn login_payloads_follow_the_rules() {
    // The proved users are among the claimed ones now and then, so that a login naming its own
    // proved user is tried too.
    let user = prop::option::weighted(
        0.9,
        prop_oneof![
            4 => id_value(),
            1 => prop::sample::select(vec!["ann", "u@x"]).prop_map(Value::from),
        ],
    );
    let proved = prop::option::weighted(0.3, prop::sample::select(vec!["ann", "0", "u@x"]));
    structured(
        "login payloads",
        (user, id_value(), proved),
        |(user, device, proved)| {
            let mut payload = json!({ "deviceId": device });
            if let Some(user) = &user {
                payload["userId"] = user.clone();
            }
            let parsed: LoginPayload =
                serde_json::from_value(payload).expect("login payload shape");
            let proved = proved.map(|p| chat_protocol::UserId::parse(p, &limits()).unwrap());
            let claimed = user.as_ref().and_then(id_text);
            let device = id_text(&device).expect("text or number");
            let result = parsed.validate(&limits(), proved.as_ref());
            // The expected outcome, checked in the order the fields are validated.
            let expected = match (&claimed, &proved) {
                (Some(claimed), _) if !model_id(claimed) => Err(ErrorCode::InvalidUser),
                (Some(claimed), Some(proved)) if claimed != proved.as_str() => {
                    Err(ErrorCode::Forbidden)
                }
                (None, None) => Err(ErrorCode::InvalidPayload),
                _ if !model_id(&device) => Err(ErrorCode::InvalidDevice),
                (Some(claimed), _) => Ok(claimed.clone()),
                (None, Some(proved)) => Ok(proved.as_str().to_owned()),
            };
            match (result, expected) {
                (Ok(login), Ok(user)) => {
                    prop_assert_eq!(login.user.as_str(), user.as_str());
                    prop_assert_eq!(login.device.as_str(), device.as_str());
                    Ok(true)
                }
                (Err(err), Err(code)) => {
                    prop_assert_eq!(err.code, code);
                    Ok(false)
                }
                (got, want) => Err(TestCaseError::fail(format!("got {got:?}, want {want:?}"))),
            }
        },
    );
}

#[test]
fn chat_payloads_follow_the_rules() {
    let msg_id = prop::option::weighted(0.5, id_value());
    structured(
        "chat payloads",
        (id_value(), text(), msg_id),
        |(to, text, msg_id)| {
            let mut payload = json!({ "to": to, "text": text, "from": "forged" });
            if let Some(id) = &msg_id {
                payload["clientMsgId"] = id.clone();
            }
            let parsed: ChatPayload = serde_json::from_value(payload).expect("chat payload shape");
            let to = id_text(&to).expect("text or number");
            let msg_id = msg_id.as_ref().and_then(id_text);
            let expected = if !model_id(&to) {
                Err(ErrorCode::InvalidUser)
            } else if !model_text(&text) {
                Err(ErrorCode::InvalidText)
            } else if msg_id.as_deref().is_some_and(|id| !model_id(id)) {
                Err(ErrorCode::InvalidPayload)
            } else {
                Ok(())
            };
            match (parsed.validate(&limits()), expected) {
                (Ok(request), Ok(())) => {
                    prop_assert_eq!(request.to.as_str(), to.as_str());
                    prop_assert_eq!(request.text.as_str(), text.as_str());
                    prop_assert_eq!(
                        request.client_msg_id.as_ref().map(|id| id.as_str()),
                        msg_id.as_deref()
                    );
                    Ok(true)
                }
                (Err(err), Err(code)) => {
                    prop_assert_eq!(err.code, code);
                    Ok(false)
                }
                (got, want) => Err(TestCaseError::fail(format!("got {got:?}, want {want:?}"))),
            }
        },
    );
}

/// What the Redis scripts publish on a user's channel, with fields left out or spoiled.
#[test]
fn user_frames_parse_as_published() {
    let stream_id = prop_oneof![
        (any::<u32>(), 0u32..5).prop_map(|(ms, seq)| format!("{ms}-{seq}")),
        prop::sample::select(vec!["", "12", "-1", "a-b", "1-", "1-2-3"]).prop_map(String::from),
    ];
    let frame = (
        prop::sample::select(vec!["chat", "login", "push", "other"]),
        prop::option::weighted(0.8, stream_id),
        prop::option::weighted(0.8, Just(json!({"id": "x", "text": "hi"}))),
        prop::option::weighted(0.8, any::<u64>()),
        // Devices and event names were validated before they were published: no escapes.
        prop::option::weighted(
            0.8,
            prop::sample::select(vec!["ios:1", "web", "new_message"]),
        ),
        any::<bool>(),
        // A push's tag (a validated push token) when it is for the sessions of one tag.
        prop::option::weighted(0.3, prop::sample::select(vec!["tok-1", "a:b@c"])),
    );
    structured(
        "user frames",
        frame,
        |(kind, id, body, generation, name, remove_on_ack, tag)| {
            let mut frame = json!({ "kind": kind, "removeOnAck": remove_on_ack });
            if let Some(tag) = tag {
                frame["tag"] = json!(tag);
            }
            let valid_id = id.as_deref().map(|id| {
                id.split_once('-').is_some_and(|(ms, seq)| {
                    ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()
                })
            });
            if let Some(id) = &id {
                frame["id"] = json!(id);
            }
            if let Some(body) = &body {
                frame["message"] = body.clone();
                frame["payload"] = body.clone();
            }
            if let Some(generation) = generation {
                frame["generation"] = json!(generation);
            }
            if let Some(name) = name {
                frame["device"] = json!(name);
                frame["event"] = json!(name);
            }
            let text = frame.to_string();
            let parsed = UserFrame::parse(&text);
            match (kind, parsed) {
                ("chat", Ok(UserFrame::Chat { id: got, message })) => {
                    prop_assert_eq!(valid_id, Some(true));
                    prop_assert_eq!(Some(got.to_string()), id);
                    prop_assert_eq!(
                        Some(serde_json::from_str::<Value>(message.get()).unwrap()),
                        body
                    );
                }
                ("chat", Err(_)) => prop_assert!(valid_id != Some(true) || body.is_none()),
                (
                    "login",
                    Ok(UserFrame::Login {
                        generation: g,
                        device,
                    }),
                ) => {
                    prop_assert_eq!(Some(g), generation);
                    prop_assert_eq!(Some(device), name);
                }
                ("login", Err(_)) => prop_assert!(generation.is_none() || name.is_none()),
                (
                    "push",
                    Ok(UserFrame::Push {
                        event,
                        id: got,
                        remove_on_ack: r,
                        tag: got_tag,
                        payload,
                    }),
                ) => {
                    prop_assert_eq!(got_tag, tag);
                    prop_assert_eq!(Some(event), name);
                    prop_assert_eq!(got.map(|id| id.to_string()), id);
                    prop_assert_eq!(r, remove_on_ack);
                    prop_assert_eq!(serde_json::from_str::<Value>(payload.get()).ok(), body);
                }
                ("push", Err(_)) => {
                    prop_assert!(name.is_none() || body.is_none() || valid_id == Some(false))
                }
                ("other", Err(_)) => {}
                (kind, got) => {
                    return Err(TestCaseError::fail(format!(
                        "{kind} frame {text} parsed as {got:?}"
                    )));
                }
            }
            Ok(UserFrame::parse(&text).is_ok())
        },
    );
}

/// `POST /api/push`, `/api/broadcast`, the old `/api` and the `notification` channel.
#[test]
fn api_bodies_follow_the_rules() {
    let users = prop_oneof![
        1 => Just(vec![]),
        6 => prop::collection::vec(id_value(), 1..3),
    ];
    let category = prop::sample::select(vec!["system", "mailbox", "remind", "publish", "spam"]);
    let event = prop::option::weighted(
        0.6,
        prop_oneof![
            room(),
            prop::sample::select(vec!["message", "connect", "disconnect", "newListener"])
                .prop_map(String::from),
        ],
    );
    let broadcast_room = prop::option::weighted(0.7, room());
    structured(
        "api bodies",
        (
            users,
            category,
            event,
            broadcast_room,
            prop::bool::weighted(0.1),
        ),
        |(users, category, event, broadcast_room, unknown_field)| {
            let names: Vec<String> = users.iter().filter_map(id_text).collect();
            let users_ok = !names.is_empty() && names.iter().all(|u| model_id(u));
            let mut unique = names.clone();
            let mut seen = std::collections::HashSet::new();
            unique.retain(|u| seen.insert(u.clone()));
            let category_ok = category != "spam";

            let mut push = json!({ "users": users, "category": category, "data": {"k": 1} });
            if let Some(event) = &event {
                push["event"] = json!(event);
            }
            if unknown_field {
                push["extra"] = json!(1);
            }
            let parsed = serde_json::from_str::<PushRequest>(&push.to_string());
            prop_assert_eq!(parsed.is_ok(), category_ok && !unknown_field, "{}", push);
            if let Ok(request) = parsed {
                match parse_users(request.users, "users", &limits()) {
                    Ok(got) => {
                        prop_assert!(users_ok);
                        let got: Vec<&str> = got.iter().map(|u| u.as_str()).collect();
                        prop_assert_eq!(got, unique.iter().map(String::as_str).collect::<Vec<_>>());
                    }
                    Err(err) => {
                        prop_assert!(!users_ok);
                        let code = if names.is_empty() {
                            ErrorCode::InvalidPayload
                        } else {
                            ErrorCode::InvalidUser
                        };
                        prop_assert_eq!(err.code, code);
                    }
                }
                match parse_event_name(request.event.as_deref()) {
                    Ok(name) => {
                        prop_assert!(event.as_deref().is_none_or(model_event));
                        prop_assert_eq!(name, event.as_deref().unwrap_or("notification"));
                    }
                    Err(err) => {
                        prop_assert!(!event.as_deref().is_none_or(model_event));
                        prop_assert_eq!(err.code, ErrorCode::InvalidPayload);
                    }
                }
            }

            let mut broadcast = json!({ "category": category, "data": [1] });
            if let Some(room) = &broadcast_room {
                broadcast["room"] = json!(room);
            }
            if let Ok(request) = serde_json::from_str::<BroadcastRequest>(&broadcast.to_string()) {
                prop_assert!(category_ok);
                match request.room(&limits()) {
                    Ok(room) => {
                        prop_assert!(broadcast_room.as_deref().is_none_or(model_room));
                        prop_assert_eq!(
                            room.as_ref().map(|r| r.as_str()),
                            broadcast_room.as_deref()
                        );
                    }
                    Err(err) => {
                        prop_assert!(!broadcast_room.as_deref().is_none_or(model_room));
                        prop_assert_eq!(err.code, ErrorCode::InvalidRoom);
                    }
                }
            } else {
                prop_assert!(!category_ok);
            }

            let legacy = json!({ "tokens": users, "data": "x" }).to_string();
            let request = serde_json::from_str::<LegacyPushRequest>(&legacy).expect("legacy body");
            prop_assert_eq!(
                parse_users(request.tokens, "tokens", &limits()).is_ok(),
                users_ok
            );
            let channel = json!({ "toWho": users, "needStore": true, "title": "t" }).to_string();
            let message = serde_json::from_str::<ChannelNotification>(&channel).expect("channel");
            prop_assert!(message.need_store);
            prop_assert_eq!(
                parse_users(message.to_who, "toWho", &limits()).is_ok(),
                users_ok
            );
            // The users' list is what most bodies are refused for.
            Ok(users_ok)
        },
    );
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
                prop_assert!(text.chars().all(|c| c == '\n' || c == '\t' || !forbidden(c)));
            }
        }
    }

    /// Whatever text arrives as an event payload, decoding and validating it returns a value or
    /// a coded error, and never panics.
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
        if let Ok(request) = serde_json::from_str::<PushRequest>(&raw) {
            let _ = parse_users(request.users, "users", &limits());
        }
    }

    /// Frames from Redis: any bytes decode to an error or to a frame, never a panic, and
    /// every encoded frame decodes back.
    #[test]
    fn bus_frames(
        origin in any::<u64>(),
        stream in proptest::option::of((any::<u64>(), any::<u64>())),
        kind in 0..3u8,
        token in "[A-Za-z0-9]{1,16}",
        json in ".{0,200}",
        garbage in ".{0,64}",
    ) {
        let stream = stream.map(|(ms, seq)| chat_protocol::people::StreamId { ms, seq });
        let kind = match kind {
            0 => FrameKind::Say,
            1 => FrameKind::Presence,
            _ => FrameKind::Marker(&token),
        };
        let frame = encode_frame(NodeId(origin), stream, kind, &json);
        let decoded = decode_frame(&frame).expect("an encoded frame decodes");
        prop_assert_eq!(
            (decoded.origin, decoded.stream, decoded.kind, decoded.json),
            (NodeId(origin), stream, kind, json.as_str())
        );
        let _ = decode_frame(&garbage);
    }
}
