//! Property tests of the Redis names (`chat_protocol::keys`): distinct ids give distinct names,
//! a channel names its topic back, and everything of one owner is in one hash slot. Ids are
//! drawn from the alphabets validation accepts, separators (`:`, `.`, `@`) included, at lengths
//! up to the limits. Run longer with `PROPTEST_CASES=100000 cargo test -p chat-protocol --test keys`.

use chat_protocol::{
    ClientMsgId, Limits, RoomId, UserId,
    keys::{
        ChannelTopic, UserKeys, hash_slot, room_channel, token_users, topic_of_channel,
        user_channel,
    },
};
use proptest::prelude::*;

const PREFIXES: [&str; 3] = ["chat:", "", "a:b:"];

/// User ids and clientMsgIds as validation accepts them: `A-Za-z0-9_-.:@`, rich in separators.
fn user_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c:@._-]{1,12}|[A-Za-z0-9_.:@-]{1,64}").expect("valid regex")
}

fn room_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c:._-]{1,12}|[A-Za-z0-9_.:-]{1,64}").expect("valid regex")
}

fn user(text: &str) -> UserId {
    UserId::parse(text, &Limits::default()).expect("the strategy draws valid user ids")
}

fn msg_id(text: &str) -> String {
    ClientMsgId::parse(text, &Limits::default())
        .expect("the strategy draws valid clientMsgIds")
        .as_str()
        .to_owned()
}

proptest! {
    /// Two retry markers are the same key only for the same recipient, sender and clientMsgId.
    #[test]
    fn retry_markers_are_injective(
        a in (user_text(), user_text(), user_text()),
        b in (user_text(), user_text(), user_text()),
        prefix in 0..PREFIXES.len(),
    ) {
        let prefix = PREFIXES[prefix];
        let marker = |(to, from, id): &(String, String, String)| {
            UserKeys::new(prefix, &user(to)).sent_marker(user(from).as_str(), &msg_id(id))
        };
        prop_assert_eq!(marker(&a) == marker(&b), a == b);
    }

    /// The pairs a flat `<from>:<clientMsgId>` would confuse: moving a `:`-separated part from
    /// the clientMsgId to the sender id gives the same text, never the same marker.
    #[test]
    fn separators_cannot_shift_between_parts(
        to in user_text(),
        (x, y, z) in ("[a-z0-9]{1,10}", "[a-z0-9:]{1,10}", "[a-z0-9]{1,10}"),
    ) {
        let keys = UserKeys::new("chat:", &user(&to));
        let one = keys.sent_marker(user(&x).as_str(), &msg_id(&format!("{y}:{z}")));
        let other = keys.sent_marker(user(&format!("{x}:{y}")).as_str(), &msg_id(&z));
        prop_assert_ne!(one, other);
    }

    /// Idempotency markers likewise, per user and key.
    #[test]
    fn idempotency_markers_are_injective(
        a in (user_text(), user_text()),
        b in (user_text(), user_text()),
    ) {
        let marker = |(to, key): &(String, String)| {
            UserKeys::new("chat:", &user(to)).idempotency_marker(&msg_id(key))
        };
        prop_assert_eq!(marker(&a) == marker(&b), a == b);
    }

    /// Tagged idempotency markers are distinct from untagged ones and from each other, per
    /// user, key and tag.
    #[test]
    fn tagged_idempotency_markers_are_injective(
        a in (user_text(), user_text(), proptest::option::of(user_text())),
        b in (user_text(), user_text(), proptest::option::of(user_text())),
    ) {
        let marker = |(to, key, tag): &(String, String, Option<String>)| {
            let keys = UserKeys::new("chat:", &user(to));
            match tag {
                Some(tag) => keys.tagged_idempotency_marker(&msg_id(key), &user(tag)),
                None => keys.idempotency_marker(&msg_id(key)),
            }
        };
        prop_assert_eq!(marker(&a) == marker(&b), a == b);
    }

    /// A token's key is its own and in its own slot: distinct tokens, distinct keys, and never
    /// a key of a user.
    #[test]
    fn token_keys_are_injective(a in user_text(), b in user_text()) {
        prop_assert_eq!(token_users("chat:", &user(&a)) == token_users("chat:", &user(&b)), a == b);
        let keys = UserKeys::new("chat:", &user(&b));
        let key = token_users("chat:", &user(&a));
        prop_assert!(![&keys.inbox, &keys.senders, &keys.login, &keys.channel, &keys.unread, &keys.rate].contains(&&key));
        prop_assert_eq!(hash_slot(&key), hash_slot(&format!("{{token:{a}}}")));
    }

    /// Every key of two users differs unless the users are the same, and no key of one user is
    /// a key of another kind of another user.
    #[test]
    fn user_keys_are_injective(a in user_text(), b in user_text()) {
        let (ka, kb) = (UserKeys::new("chat:", &user(&a)), UserKeys::new("chat:", &user(&b)));
        let names = |k: &UserKeys| {
            vec![k.inbox.clone(), k.senders.clone(), k.login.clone(), k.channel.clone(), k.unread.clone(), k.rate.clone()]
        };
        for (i, x) in names(&ka).iter().enumerate() {
            for (j, y) in names(&kb).iter().enumerate() {
                prop_assert_eq!(x == y, i == j && a == b, "{} vs {}", x, y);
            }
        }
    }

    /// A channel names its room or user back, and room and user channels never meet.
    #[test]
    fn channels_round_trip(room in room_text(), id in user_text(), prefix in 0..PREFIXES.len()) {
        let prefix = PREFIXES[prefix];
        let room = RoomId::parse(&room, &Limits::default()).expect("valid room");
        let user = user(&id);
        let rc = room_channel(prefix, &room);
        let uc = user_channel(prefix, &user);
        prop_assert_eq!(topic_of_channel(prefix, &rc), Some(ChannelTopic::Room(room.as_str())));
        prop_assert_eq!(topic_of_channel(prefix, &uc), Some(ChannelTopic::User(user.as_str())));
        prop_assert_ne!(rc, uc);
    }

    /// Everything of one user is in one hash slot, the channel included (scripts SPUBLISH to it).
    #[test]
    fn a_users_names_share_a_slot(id in user_text(), from in user_text(), token in user_text()) {
        let keys = UserKeys::new("chat:", &user(&id));
        let slot = hash_slot(&keys.channel);
        for name in [&keys.inbox, &keys.senders, &keys.login, &keys.unread, &keys.rate, &keys.sent_marker(&from, &token), &keys.idempotency_marker(&token)] {
            prop_assert_eq!(hash_slot(name), slot, "{}", name);
        }
    }
}

proptest! {
    /// The node design's room channel (`--bus-format legacy`) names its room back, and is never
    /// read as a native room or user channel, under every prefix, the empty one included.
    #[test]
    fn legacy_channels_round_trip(room in room_text(), prefix in 0..PREFIXES.len()) {
        use chat_protocol::keys::{legacy_room_channel, room_of_legacy_channel};
        let prefix = PREFIXES[prefix];
        let room = RoomId::parse(&room, &Limits::default()).expect("valid room");
        let channel = legacy_room_channel(prefix, &room);
        prop_assert_eq!(room_of_legacy_channel(prefix, &channel), Some(room.as_str()));
        prop_assert_eq!(topic_of_channel(prefix, &channel), None);
        prop_assert_ne!(&channel, &room_channel(prefix, &room));
    }
}
