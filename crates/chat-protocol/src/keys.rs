//! Redis names: every key and pub/sub channel the cluster keeps, built in one place.
//!
//! Layout, under the configured prefix `P` (default `chat:`):
//!
//! | name | kind | what |
//! |---|---|---|
//! | `P{room:<room>}` | sharded channel | the room's messages between workers |
//! | `P{user:<user>}` | sharded channel | the user's live frames (mail, logins, pushes) |
//! | `P{user:<user>}:inbox` | stream | direct messages waiting for the user's ack |
//! | `P{user:<user>}:senders` | hash | waiting messages per sender (`--inbox-max-per-sender`) |
//! | `P{user:<user>}:sent:<from>\|<clientMsgId>` | string | a sender's `clientMsgId` already stored for this user |
//! | `P{user:<user>}:login` | hash | `{generation, device}` of the user's latest login |
//! | `P{user:<user>}:unread` | stream | notifications kept until read |
//! | `P{user:<user>}:rate` | string | the user's send rate across workers (GCRA) |
//! | `P{user:<user>}:idem:<key>` | string | a push API idempotency key already applied for this user |
//! | `P{user:<user>}:idem:<key>\|<tag>` | string | the same, for a push to the user's sessions of one tag |
//! | `P{token:<token>}:users` | sorted set | users whose sockets gave this `tokenId` at `user_login` (old push service), by last login (ms) |
//! | `P{room:<room>}:history` | stream | the room's last `--history-size` messages (m = JSON) |
//! | `P{room:<room>}:members` | hash | the room's members, cluster-wide: pid -> `MemberRecord` |
//! | `P{room:<room>}:session:<pid>` | string | a recoverable session (`SessionRecord`) |
//! | `Pnodes` | sorted set | live workers: node id -> last heartbeat (unix ms) |
//! | `Pnode:<node>:rooms` | set | rooms a worker has members in (noted before each join, pruned every 30 s), for reaping them |
//! | `Pclaim:<sha1>` | string | a worker's claim on a `notification` channel message |
//! | `Pbroadcast` | channel | announcements to every worker |
//! | `P<room>` | channel | `--bus-format legacy` only: the room's messages as the old node design published them (plain `{event, data, ...}` JSON) |
//!
//! Everything about one user shares the hash tag `{user:<id>}` (a room's `{room:<id>}`, a push
//! token's `{token:<token>}`), so every script touches one hash slot and works on a Redis
//! Cluster; the user's channel is in the same slot, so the scripts may `SPUBLISH` to it.
//!
//! Names are unambiguous: room and user ids are validated to `A-Za-z0-9_-.:` (`@` too for users),
//! so an id cannot contain the `}` that ends its tag, nor the `|` between the two client-chosen
//! parts of a retry marker; the prefix may not contain `{` or `}` ([`check_prefix`]). Distinct
//! inputs give distinct names (property-tested in `tests/fuzz.rs`).

use crate::{RoomId, UserId};

/// Why a channel prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the channel prefix {0:?} may not contain '{{' or '}}' (they delimit Redis Cluster hash tags)"
)]
pub struct PrefixError(pub String);

/// Checks that `prefix` leaves the hash tags of the names intact.
pub fn check_prefix(prefix: &str) -> Result<(), PrefixError> {
    if prefix.contains(['{', '}']) {
        return Err(PrefixError(prefix.to_owned()));
    }
    Ok(())
}

/// The sharded channel of a room: `<prefix>{room:<room id>}`.
pub fn room_channel(prefix: &str, room: &RoomId) -> String {
    format!("{prefix}{{room:{room}}}")
}

/// The sharded channel of a user: `<prefix>{user:<user id>}`.
pub fn user_channel(prefix: &str, user: &UserId) -> String {
    format!("{prefix}{{user:{user}}}")
}

/// The classic channel of a room in the old node design's format (`--bus-format legacy`):
/// `<prefix><room id>`, so the bare room id under an empty prefix, as the node design named it.
/// A room id has no braces, so this is never a name of the native layout.
pub fn legacy_room_channel(prefix: &str, room: &RoomId) -> String {
    format!("{prefix}{room}")
}

/// Which room `channel` is the legacy channel of ([`legacy_room_channel`]), if it can be one:
/// the rest after the prefix, not empty and without braces (not validated again: the worker
/// subscribed to it from a validated id).
pub fn room_of_legacy_channel<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel
        .strip_prefix(prefix)
        .filter(|room| !room.is_empty() && !room.contains(['{', '}']))
}

/// What a channel of ours carries, as named in the channel (not validated again: the worker
/// subscribed to it from a validated id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelTopic<'a> {
    Room(&'a str),
    User(&'a str),
}

/// Which room or user `channel` is the channel of, if it is one of ours.
pub fn topic_of_channel<'a>(prefix: &str, channel: &'a str) -> Option<ChannelTopic<'a>> {
    let tag = channel
        .strip_prefix(prefix)?
        .strip_prefix('{')?
        .strip_suffix('}')?;
    if let Some(room) = tag.strip_prefix("room:") {
        Some(ChannelTopic::Room(room))
    } else {
        tag.strip_prefix("user:").map(ChannelTopic::User)
    }
}

/// Redis names of one user's data, all in the user's hash slot.
#[derive(Debug, Clone)]
pub struct UserKeys {
    /// Stream of waiting direct messages.
    pub inbox: String,
    /// Hash: sender id -> messages of that sender waiting in the inbox.
    pub senders: String,
    /// Hash `{generation, device}` of the latest login.
    pub login: String,
    /// Sharded pub/sub channel of the user's live frames.
    pub channel: String,
    /// Stream of unread notifications.
    pub unread: String,
    /// The user's own send rate, shared by every worker (see the `rate.lua` script).
    pub rate: String,
    /// `<prefix>{user:<id>}`, to which per-message suffixes are appended.
    base: String,
}

impl UserKeys {
    pub fn new(prefix: &str, user: &UserId) -> Self {
        let base = user_channel(prefix, user);
        Self {
            inbox: format!("{base}:inbox"),
            senders: format!("{base}:senders"),
            login: format!("{base}:login"),
            unread: format!("{base}:unread"),
            rate: format!("{base}:rate"),
            channel: base.clone(),
            base,
        }
    }

    /// Marks that `from` has stored the message `client_msg_id` for this user, so that a retry
    /// is answered with the first send's id instead of storing it again. Both parts are the
    /// client's; `|` is in neither's alphabet.
    pub fn sent_marker(&self, from: &str, client_msg_id: &str) -> String {
        format!("{}:sent:{from}|{client_msg_id}", self.base)
    }

    /// Marks that the push API request with this idempotency key reached this user.
    pub fn idempotency_marker(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.base)
    }

    /// Marks that the push API request with this idempotency key reached the user's sessions
    /// of `tag` (`|` is in neither's alphabet).
    pub fn tagged_idempotency_marker(&self, key: &str, tag: &UserId) -> String {
        format!("{}:idem:{key}|{tag}", self.base)
    }
}

/// The users whose sockets registered the push token `token` (the old push service's `tokenId`),
/// a sorted set by last registration time: `<prefix>{token:<token>}:users`. Tokens have a user
/// id's alphabet.
pub fn token_users(prefix: &str, token: &UserId) -> String {
    format!("{prefix}{{token:{token}}}:users")
}

/// Redis names of one room's data, all in the room's hash slot.
#[derive(Debug, Clone)]
pub struct RoomKeys {
    /// Sharded pub/sub channel of the room's messages between workers.
    pub channel: String,
    /// Stream of the room's last messages.
    pub history: String,
    /// Hash: pid -> member record.
    pub members: String,
}

impl RoomKeys {
    pub fn new(prefix: &str, room: &RoomId) -> Self {
        let channel = room_channel(prefix, room);
        Self {
            history: format!("{channel}:history"),
            members: format!("{channel}:members"),
            channel,
        }
    }

    /// The session record of the socket whose private session id is `pid` (validated by the
    /// caller: `A-Za-z0-9_-`, at most 64).
    pub fn session(&self, pid: &str) -> String {
        format!("{}:session:{pid}", self.channel)
    }
}

/// The sorted set of live workers (node id -> last heartbeat, unix ms).
pub fn nodes_key(prefix: &str) -> String {
    format!("{prefix}nodes")
}

/// The set of rooms a worker has had members in (for reaping them if it dies).
pub fn node_rooms_key(prefix: &str, node: &str) -> String {
    format!("{prefix}node:{node}:rooms")
}

/// The key of a worker's claim on a `notification` channel message, by the message's hash.
pub fn claim_key(prefix: &str, message_sha1: &str) -> String {
    format!("{prefix}claim:{message_sha1}")
}

/// The channel every worker hears announcements on.
pub fn broadcast_channel(prefix: &str) -> String {
    format!("{prefix}broadcast")
}

/// The hash slot of a key or channel in a Redis Cluster (CRC16 of its hash tag, modulo 16384),
/// so that a command with no key (WAIT) can be routed to the node holding a key.
pub fn hash_slot(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16_xmodem(tagged) % 16384
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster hashes keys with.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id, &Limits::default()).unwrap()
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id, &Limits::default()).unwrap()
    }

    #[test]
    fn names_share_their_owner_tag() {
        let keys = UserKeys::new("chat:", &user("ann"));
        assert_eq!(keys.inbox, "chat:{user:ann}:inbox");
        assert_eq!(keys.channel, "chat:{user:ann}");
        assert_eq!(
            keys.sent_marker("bob", "c-1"),
            "chat:{user:ann}:sent:bob|c-1"
        );
        let slot = hash_slot(&keys.channel);
        for name in [
            &keys.inbox,
            &keys.senders,
            &keys.login,
            &keys.unread,
            &keys.rate,
        ] {
            assert_eq!(hash_slot(name), slot, "{name}");
        }
        assert_eq!(room_channel("chat:", &room("lobby")), "chat:{room:lobby}");
        assert_eq!(
            keys.tagged_idempotency_marker("k", &user("t")),
            "chat:{user:ann}:idem:k|t"
        );
        assert_eq!(token_users("chat:", &user("t-1")), "chat:{token:t-1}:users");
        assert_ne!(
            hash_slot(&token_users("chat:", &user("ann"))),
            hash_slot(&keys.inbox),
            "a token's own slot, not its namesake user's"
        );
    }

    #[test]
    fn channels_name_their_topic() {
        assert_eq!(
            topic_of_channel("chat:", "chat:{room:lobby}"),
            Some(ChannelTopic::Room("lobby"))
        );
        assert_eq!(
            topic_of_channel("chat:", "chat:{user:a:b}"),
            Some(ChannelTopic::User("a:b"))
        );
        assert_eq!(topic_of_channel("chat:", "chat:broadcast"), None);
        assert_eq!(topic_of_channel("chat:", "other:{room:x}"), None);
        assert_eq!(
            topic_of_channel("", "{room:x}"),
            Some(ChannelTopic::Room("x"))
        );
    }

    #[test]
    fn legacy_channels_are_the_bare_room_id_after_the_prefix() {
        assert_eq!(legacy_room_channel("", &room("lobby")), "lobby");
        assert_eq!(
            legacy_room_channel("node:room:", &room("k12_1")),
            "node:room:k12_1"
        );
        assert_eq!(room_of_legacy_channel("", "lobby"), Some("lobby"));
        assert_eq!(
            room_of_legacy_channel("node:room:", "node:room:k12_1"),
            Some("k12_1")
        );
        assert_eq!(room_of_legacy_channel("node:room:", "node:room:"), None);
        assert_eq!(room_of_legacy_channel("node:room:", "other"), None);
        // The native names are never taken for legacy ones.
        assert_eq!(room_of_legacy_channel("", "{room:lobby}"), None);
        assert_eq!(room_of_legacy_channel("chat:", "chat:{user:ann}"), None);
    }

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));
        assert_ne!(hash_slot("foo{}{bar}"), hash_slot("bar"));
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(check_prefix("chat:").is_ok());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("chat{1}:").is_err());
    }
}
