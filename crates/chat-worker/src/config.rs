//! The worker's settings: every limit and interval, each a flag with a `CHAT_*` environment
//! variable and a default. Precedence: flag > environment > default.
//!
//! The supervisor hands its resolved settings to the workers it spawns as JSON in
//! `CHAT_WORKER_SETTINGS`, so a worker runs with exactly what the operator gave the supervisor.

use std::{net::IpAddr, time::Duration};

use chat_protocol::Limits;
use serde::{Deserialize, Serialize};

/// The environment variable through which a supervisor passes [`WorkerSettings`] to workers.
pub const SETTINGS_ENV: &str = "CHAT_WORKER_SETTINGS";

#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// Address workers listen on (0.0.0.0 to serve other hosts).
    #[arg(long, env = "CHAT_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Connections the kernel queues for a worker before it accepts them (at most 4096, and
    /// `net.core.somaxconn`). Large, so that clients reconnecting at once to a restarted worker
    /// wait in the queue instead of having their SYN dropped and retried a second later.
    #[arg(long, env = "CHAT_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Redis: `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS),
    /// `redis-sentinel://host:port[/db]?sentinelServiceName=NAME&node=host2:port2...`, or
    /// `redis-cluster://host:port?node=host2:port2...` (the URL forms of the fred crate).
    #[arg(long, env = "CHAT_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Prefix of every Redis key and channel name (rooms are `<prefix>{room:<id>}`); may not
    /// contain `{` or `}`.
    #[arg(long, env = "CHAT_CHANNEL_PREFIX", default_value = "chat:")]
    pub channel_prefix: String,

    /// Longest room id, in characters (ASCII letters, digits, `_-.:`).
    #[arg(long, env = "CHAT_MAX_ROOM_ID_LEN", default_value_t = Limits::DEFAULT_MAX_ROOM_ID_LEN)]
    pub max_room_id_len: usize,

    /// Longest user name, in characters.
    #[arg(long, env = "CHAT_MAX_USERNAME_CHARS", default_value_t = Limits::DEFAULT_MAX_USERNAME_CHARS)]
    pub max_username_chars: usize,

    /// Longest chat text, in characters.
    #[arg(long, env = "CHAT_MAX_TEXT_CHARS", default_value_t = Limits::DEFAULT_MAX_TEXT_CHARS)]
    pub max_text_chars: usize,

    /// Largest websocket message and long-polling request body a client may send, in bytes.
    /// A larger one closes the connection. Must hold the largest event the content limits
    /// accept, however a JSON encoder escapes it (checked at start).
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = 32 * 1024)]
    pub max_message_bytes: usize,

    /// Initial read buffer of each websocket connection, in bytes, and the most read per system
    /// call (a larger message gets room for all of it, then takes several reads).
    #[arg(long, env = "CHAT_WS_READ_BUFFER_BYTES", default_value_t = 256)]
    pub ws_read_buffer_bytes: usize,

    /// Packets queued for one client before further ones to it are dropped (slow consumer).
    #[arg(long, env = "CHAT_SEND_QUEUE", default_value_t = 128)]
    pub send_queue: usize,

    /// Time a write to a client may stay blocked (the client stopped reading) before the
    /// connection is cut, in milliseconds.
    #[arg(long, env = "CHAT_WRITE_STALL_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_stall_timeout_ms: u64,

    /// engine.io ping interval, in milliseconds.
    #[arg(long, env = "CHAT_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// engine.io ping timeout, in milliseconds: a client silent this long after a ping is gone.
    #[arg(long, env = "CHAT_PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,

    /// Time a new connection has to send its socket.io CONNECT, in milliseconds.
    #[arg(long, env = "CHAT_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,

    /// Events (join, say) one client may send per second, sustained; more get `rate_limited`.
    #[arg(long, env = "CHAT_RATE_PER_SEC", default_value_t = 10.0)]
    pub rate_per_sec: f64,

    /// Events one client may send at once before the per-second rate applies.
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = 20.0)]
    pub rate_burst: f64,

    /// Room frames waiting to be published to Redis before new ones are dropped.
    #[arg(long, env = "CHAT_BUS_QUEUE", default_value_t = 16_384)]
    pub bus_queue: usize,

    /// Frames received from Redis buffered before the worker reads them (more are lost).
    /// Preallocated (fred sizes all of its channels by it): about 600 bytes a slot, used or not.
    #[arg(long, env = "CHAT_BUS_RECEIVE_BUFFER", default_value_t = 4096)]
    pub bus_receive_buffer: usize,

    /// Time a stopping worker gives its clients to close before it exits, in milliseconds.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,

    /// Longest user id, device id or clientMsgId, in characters (ASCII letters, digits, `_-.:@`).
    #[arg(long, env = "CHAT_MAX_USER_ID_LEN", default_value_t = Limits::DEFAULT_MAX_USER_ID_LEN)]
    pub max_user_id_len: usize,

    /// Largest free-form object an old client may send (the old chat app's `chat`, a `todo`),
    /// as JSON, in bytes; every string in it obeys `--max-text-chars`.
    #[arg(long, env = "CHAT_MAX_OBJECT_BYTES", default_value_t = Limits::DEFAULT_MAX_OBJECT_BYTES)]
    pub max_object_bytes: usize,

    #[command(flatten)]
    pub protocol: ProtocolSettings,

    #[command(flatten)]
    pub people: PeopleSettings,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub push: PushSettings,

    #[command(flatten)]
    pub redis: RedisSettings,

    #[command(flatten)]
    pub rooms: RoomSettings,

    #[command(flatten)]
    pub edge: EdgeSettings,
}

/// Which socket.io clients the worker serves: protocol versions and the packet parser.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct ProtocolSettings {
    /// Also serve socket.io 2.x clients (engine.io protocol 3), websocket and long-polling, as
    /// node's `allowEIO3` does; off: they are refused with engine.io's "Unsupported protocol
    /// version".
    #[arg(long, env = "CHAT_ALLOW_EIO3", default_value_t = false)]
    pub allow_eio3: bool,

    /// The socket.io packet parser: `json` (socket.io's default) or `msgpack` (clients built
    /// with socket.io-msgpack-parser). The protocol does not negotiate it: a client with the
    /// other parser is told so in a `connect_error` and not served.
    #[arg(long, env = "CHAT_PARSER", value_enum, default_value = "json")]
    pub parser: PacketParser,
}

/// The socket.io packet parser every client of a worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PacketParser {
    /// JSON text packets, binary attachments apart (socket.io's default parser).
    Json,
    /// MessagePack binary packets (socket.io-msgpack-parser).
    Msgpack,
}

/// How the worker talks to Redis beyond its URL: TLS trust, timeouts, and what an
/// acknowledgement promises.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct RedisSettings {
    /// PEM file of the certificate authority that signed the Redis servers' TLS certificates
    /// (`rediss://` URLs; without it the system's trusted roots are used).
    #[arg(long, env = "CHAT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// What an acknowledged write (a stored direct message, a stored notification) survives:
    /// `local`: it is on the Redis master; `replicated`: at least one replica confirmed it
    /// (Redis WAIT) before the answer, so it survives a failover. Default: `replicated` for
    /// Sentinel and Cluster URLs, `local` for a standalone URL.
    #[arg(long, env = "CHAT_DURABILITY", value_enum)]
    pub durability: Option<Durability>,

    /// Longest wait for a replica's confirmation under `--durability replicated`, in
    /// milliseconds; past it the sender gets `unavailable` (the write may stay: retries with
    /// the same `clientMsgId` are not stored twice).
    #[arg(long, env = "CHAT_REPLICA_ACK_TIMEOUT_MS", default_value_t = 500)]
    pub replica_ack_timeout_ms: u64,

    /// Longest wait for any Redis command, in milliseconds; also the connection timeout.
    #[arg(long, env = "CHAT_REDIS_TIMEOUT_MS", default_value_t = 2_000)]
    pub redis_timeout_ms: u64,
}

/// Rooms that remember: history, connection state recovery, presence.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct RoomSettings {
    /// Messages each room keeps in Redis for newcomers (the `history` event after `join`, and
    /// `history` requests) and for recovery; 0 turns history and recovery off.
    #[arg(long, env = "CHAT_HISTORY_SIZE", default_value_t = 50)]
    pub history_size: usize,

    /// How long a room's history is kept after its last message, in seconds.
    #[arg(long, env = "CHAT_HISTORY_TTL_SECS", default_value_t = 3600)]
    pub history_ttl_secs: u64,

    /// How long a disconnected client may come back and recover its session (socket.io
    /// connection state recovery: same socket id, its room and name, every message it missed),
    /// in seconds; 0 turns recovery off.
    #[arg(long, env = "CHAT_RECOVERY_WINDOW_SECS", default_value_t = 120)]
    pub recovery_window_secs: u64,

    /// How long a member whose connection dropped stays in its room (no `broadcast_quit`) in
    /// case it recovers, and how long a silent worker is given before its members are removed,
    /// in milliseconds.
    #[arg(long, env = "CHAT_PRESENCE_GRACE_MS", default_value_t = 5_000)]
    pub presence_grace_ms: u64,

    /// Most messages one `history` request answers.
    #[arg(long, env = "CHAT_HISTORY_PAGE_MAX", default_value_t = 100)]
    pub history_page_max: usize,

    /// The Redis format of room traffic: `native`, or `legacy` to run beside the old node
    /// cluster during a migration: every room message is also published as the node design's
    /// plain `{event, data, ...}` JSON on the classic channel `<channel-prefix><room id>`, and
    /// the node workers' messages there reach this worker's members. In legacy mode the history
    /// is written (its entries flagged) but not served: no history after a join, no connection
    /// state recovery, and `members` and `history` are refused.
    #[arg(long, env = "CHAT_BUS_FORMAT", value_enum, default_value = "native")]
    #[serde(default)]
    pub bus_format: BusFormat,
}

/// The Redis format of room traffic (see [`RoomSettings::bus_format`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusFormat {
    /// Frames on each room's sharded channel, written by the room scripts together with the
    /// room's history and members.
    #[default]
    Native,
    /// The native format, plus a copy of every room message on the classic channel
    /// `<prefix><room id>` in the node design's format, whose node messages are delivered too.
    Legacy,
}

impl RoomSettings {
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl_secs)
    }

    pub fn presence_grace(&self) -> Duration {
        Duration::from_millis(self.presence_grace_ms)
    }

    /// Whether sessions can be recovered: a window and a history to replay from.
    pub fn recovery(&self) -> bool {
        self.recovery_window_secs > 0 && self.history_served() > 0
    }

    /// Whether the rooms also speak the node design's Redis format (`--bus-format legacy`).
    pub fn legacy(&self) -> bool {
        self.bus_format == BusFormat::Legacy
    }

    /// Messages of a room's history this worker hands out (after a join, in pages, in a
    /// recovery): `--history-size`, or none in legacy mode, where the node workers' messages
    /// never reach the history, which would show a conversation with holes (and a recovery
    /// would replay one). The history is written all the same, for the workers that run
    /// native after the switch (see `store::rooms::cut_at_legacy`).
    pub fn history_served(&self) -> usize {
        if self.legacy() { 0 } else { self.history_size }
    }

    /// How long a session record lives without being renewed: the recovery window after the
    /// socket's end, plus the renewal period while it lives (zero: recovery is off).
    pub fn session_ttl(&self) -> Duration {
        if !self.recovery() {
            return Duration::ZERO;
        }
        Duration::from_secs(self.recovery_window_secs) + SESSION_RENEWAL * 2
    }
}

/// How often a worker renews the session records of its connected sockets.
pub const SESSION_RENEWAL: Duration = Duration::from_secs(30);

/// What an acknowledged write survives (see [`RedisSettings::durability`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledged once the Redis master has it.
    Local,
    /// Acknowledged once the master and at least one replica have it.
    Replicated,
}

impl RedisSettings {
    pub fn replica_ack_timeout(&self) -> Duration {
        Duration::from_millis(self.replica_ack_timeout_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

/// Handshake authentication and the push API's key. Secrets themselves are never settings (they
/// would show in `check-config` and in the settings handed to workers): they come from the
/// environment (`CHAT_JWT_SECRET`, `CHAT_API_KEY`) or from the files named here.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct AuthSettings {
    /// Where a socket's identity comes from: `none` trusts the `login` payload; `jwt` requires
    /// an HS256 token in the handshake (`auth: {token}` or the auth cookie) and uses its `sub`.
    #[arg(long, env = "CHAT_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,

    /// File holding the JWT secret (else `CHAT_JWT_SECRET`).
    #[arg(long, env = "CHAT_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<std::path::PathBuf>,

    /// Cookie that may carry the token when the handshake's auth payload has none.
    #[arg(long, env = "CHAT_AUTH_COOKIE", default_value = "chat_token")]
    pub auth_cookie: String,

    /// Clock skew tolerated on a token's `exp` and `nbf`, in seconds.
    #[arg(long, env = "CHAT_JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,

    /// File holding the push API key (else `CHAT_API_KEY`; with neither, the API answers 503).
    #[arg(long, env = "CHAT_API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,

    /// Browser origins allowed to open sockets and call the API (comma-separated, `*` for any).
    /// The page's own origin (the request's Host) is always allowed.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Host names clients may reach the workers by (the request's `Host`), comma-separated, `*`
    /// for any. Always allowed: IP addresses, `localhost`, and the hosts of
    /// `--allowed-origins`. Others get 403, so a DNS-rebinding page cannot reach the workers.
    #[arg(long, env = "CHAT_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// The `aud` a token must carry (`--auth jwt`); without it, tokens carrying an `aud` are
    /// accepted whatever it is.
    #[arg(long, env = "CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The `iss` a token must carry (`--auth jwt`); without it, `iss` is not checked.
    #[arg(long, env = "CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
}

/// Push notifications: the HTTP API, the `notification` channel and the unread store.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct PushSettings {
    /// Largest push API request body, in bytes; larger ones get 413.
    #[arg(long, env = "CHAT_MAX_API_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_api_body_bytes: usize,

    /// Notifications one user's unread store keeps; older ones are dropped first.
    #[arg(long, env = "CHAT_UNREAD_MAX", default_value_t = 200)]
    pub unread_max: u64,

    /// Time an unread store is kept after its last notification, in seconds.
    #[arg(long, env = "CHAT_UNREAD_MAX_AGE_SECS", default_value_t = 30 * 24 * 3600)]
    pub unread_max_age_secs: u64,

    /// How long the push API remembers an `Idempotency-Key` per user, in seconds: a retry of a
    /// request within this window stores and delivers nothing twice.
    #[arg(long, env = "CHAT_IDEMPOTENCY_WINDOW_SECS", default_value_t = 24 * 3600)]
    pub idempotency_window_secs: u64,

    /// The old `notification` Redis channel: `{toWho:[...], needStore, ...}` (empty: off).
    #[arg(
        long,
        env = "CHAT_NOTIFICATION_CHANNEL",
        default_value = "notification"
    )]
    pub notification_channel: String,
}

/// Where a logged-in identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Trust the `userId` of the `login` payload (demos and trusted networks only).
    None,
    /// Require an HS256 JWT in the handshake; the identity is its `sub`.
    Jwt,
}

/// What a login from a second device does to the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePolicy {
    /// One device per user: a login from another device logs the previous one out.
    Single,
    /// Every device stays logged in and receives the user's messages.
    Multi,
}

/// Login, direct messages and their backend hooks.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct PeopleSettings {
    /// `single`: a login from a new device logs the old one out; `multi`: all stay.
    #[arg(long, env = "CHAT_DEVICE_POLICY", value_enum, default_value = "single")]
    pub device_policy: DevicePolicy,

    /// Direct messages one user's inbox holds while waiting for delivery; a send beyond gets
    /// `inbox_full`.
    #[arg(long, env = "CHAT_INBOX_MAX_MESSAGES", default_value_t = 1_000)]
    pub inbox_max_messages: u64,

    /// Messages of one sender that may wait in one recipient's inbox; a send beyond gets
    /// `inbox_full`, so no single sender can fill someone's inbox against everyone else.
    #[arg(long, env = "CHAT_INBOX_MAX_PER_SENDER", default_value_t = 100)]
    pub inbox_max_per_sender: u64,

    /// Direct messages one user may send per second, sustained, counted across all of the
    /// user's sockets on every worker (in Redis); more get `rate_limited`.
    #[arg(long, env = "CHAT_SENDER_RATE_PER_SEC", default_value_t = 5.0)]
    pub sender_rate_per_sec: f64,

    /// Direct messages one user may send at once before `--sender-rate-per-sec` applies.
    #[arg(long, env = "CHAT_SENDER_RATE_BURST", default_value_t = 20)]
    pub sender_rate_burst: u64,

    /// Age after which a waiting direct message is dropped from the inbox, in seconds.
    #[arg(long, env = "CHAT_INBOX_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub inbox_max_age_secs: u64,

    /// How long a sender's `clientMsgId` is remembered, in seconds: a retry within this window
    /// is answered with the first send's id instead of sending again.
    #[arg(long, env = "CHAT_RETRY_WINDOW_SECS", default_value_t = 600)]
    pub retry_window_secs: u64,

    /// Waiting messages sent in one `chat` event at login.
    #[arg(long, env = "CHAT_DELIVERY_BATCH", default_value_t = 50)]
    pub delivery_batch: usize,

    /// Time a client has to ack a `chat` event, in milliseconds; unacked messages stay in the
    /// inbox and come again at the next login.
    #[arg(long, env = "CHAT_DELIVERY_ACK_TIMEOUT_MS", default_value_t = 10_000)]
    pub delivery_ack_timeout_ms: u64,

    /// Most direct messages in flight to one socket (sent, neither acknowledged nor past
    /// `--delivery-ack-timeout-ms`): below it, messages go out as they come without waiting for
    /// acks; at it, the next ones wait in the inbox. At least `--delivery-batch`.
    #[arg(long, env = "CHAT_DELIVERY_WINDOW", default_value_t = 1_000)]
    pub delivery_window: usize,

    /// Live direct messages queued for one logged-in socket; beyond, the socket catches up
    /// from the inbox instead.
    #[arg(long, env = "CHAT_SESSION_QUEUE", default_value_t = 256)]
    pub session_queue: usize,

    /// Redis channel for login and logout events (empty: none).
    #[arg(
        long,
        env = "CHAT_LOGIN_CHANNEL",
        default_value = "login_message_channel"
    )]
    pub login_channel: String,

    /// Redis channel receiving every stored direct message, for archiving (empty: none).
    #[arg(
        long,
        env = "CHAT_HISTORY_CHANNEL",
        default_value = "chat_message_history_channel"
    )]
    pub history_channel: String,

    /// Redis channel receiving direct messages to users online nowhere, for an offline push
    /// gateway (empty: none).
    #[arg(
        long,
        env = "CHAT_OFFLINE_CHANNEL",
        default_value = "chat_message_channel"
    )]
    pub offline_channel: String,

    /// Redis channel receiving `geo` events (empty: `geo` is refused); `geo` is the old chat
    /// app's server's name for it.
    #[arg(long, env = "CHAT_GEO_CHANNEL", default_value = "geo")]
    pub geo_channel: String,

    /// Moderate direct messages: send them to the filter channel and deliver only what the
    /// filter hands back on the return channel.
    #[arg(long, env = "CHAT_MODERATION", default_value_t = false)]
    pub moderation: bool,

    /// Redis channel where direct messages wait for the moderation filter.
    #[arg(
        long,
        env = "CHAT_FILTER_CHANNEL",
        default_value = "chat_filter_channel"
    )]
    pub filter_channel: String,

    /// Redis channel on which the filter hands approved messages back.
    #[arg(long, env = "CHAT_FILTER_RETURN_CHANNEL", default_value = "snschat")]
    pub filter_return_channel: String,
}

impl PeopleSettings {
    pub fn inbox_max_age(&self) -> Duration {
        Duration::from_secs(self.inbox_max_age_secs)
    }

    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.retry_window_secs)
    }

    pub fn delivery_ack_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_ack_timeout_ms)
    }
}

impl WorkerSettings {
    pub fn limits(&self) -> Limits {
        Limits {
            max_room_id_len: self.max_room_id_len,
            max_username_chars: self.max_username_chars,
            max_text_chars: self.max_text_chars,
            max_user_id_len: self.max_user_id_len,
            max_object_bytes: self.max_object_bytes,
        }
    }

    pub fn rate_limit(&self) -> crate::rate::RateLimit {
        crate::rate::RateLimit {
            per_second: self.rate_per_sec,
            burst: self.rate_burst,
            max_refusals: self.edge.max_refusals,
            refusal_window: self.edge.refusal_window(),
        }
    }

    pub fn write_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.write_stall_timeout_ms)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The durability in force: the flag, else what the Redis URL's topology calls for.
    pub fn durability(&self) -> Durability {
        self.redis.durability.unwrap_or_else(|| {
            match crate::store::RedisTarget::parse(&self.redis_url).map(|t| t.topology) {
                Ok(crate::store::Topology::Standalone) | Err(_) => Durability::Local,
                Ok(_) => Durability::Replicated,
            }
        })
    }

    /// The largest event packet a client may need to send within the content limits, in bytes:
    /// a `chat` of `--max-text-chars` characters, each written as a JSON escape of up to 12
    /// bytes (an astral character is two `\uXXXX` escapes of its UTF-16 halves), its `to` and
    /// `clientMsgId` (ASCII, `--max-user-id-len` each), and 512 bytes for the packet around them
    /// (type, ack id, event name, keys, an encoder's spaces).
    pub fn largest_event_bytes(&self) -> usize {
        const ESCAPED_CHAR_BYTES: usize = 12;
        const ENVELOPE_BYTES: usize = 512;
        ESCAPED_CHAR_BYTES * self.max_text_chars.max(self.max_username_chars)
            + 2 * self.max_user_id_len
            + ENVELOPE_BYTES
    }

    /// The largest free-form event (an old client's `chat` or `todo`) a client may need to send
    /// within `--max-object-bytes`, in bytes. The object is measured as compact JSON in UTF-8;
    /// written as ASCII-only JSON with a space after each separator (Python's `json.dumps`),
    /// each of its bytes takes at most 3 (a 2-byte character is a 6-byte `\uXXXX`, a 4-byte one
    /// two of them, `,` and `:` gain a space); plus its recipient and `clientMsgId`
    /// (`--max-user-id-len` each) and the same 512 bytes of packet as [`Self::largest_event_bytes`].
    pub fn largest_object_event_bytes(&self) -> usize {
        const BYTES_PER_BYTE: usize = 3;
        const ENVELOPE_BYTES: usize = 512;
        BYTES_PER_BYTE * self.max_object_bytes + 2 * self.max_user_id_len + ENVELOPE_BYTES
    }

    /// Checks what the types alone cannot: zero sizes, and limits that contradict each other.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max-room-id-len", self.max_room_id_len),
            ("max-username-chars", self.max_username_chars),
            ("max-text-chars", self.max_text_chars),
            ("max-message-bytes", self.max_message_bytes),
            ("send-queue", self.send_queue),
            ("ws-read-buffer-bytes", self.ws_read_buffer_bytes),
            ("listen-backlog", self.listen_backlog as usize),
            ("bus-queue", self.bus_queue),
            ("bus-receive-buffer", self.bus_receive_buffer),
            ("max-user-id-len", self.max_user_id_len),
            ("max-object-bytes", self.max_object_bytes),
            ("delivery-batch", self.people.delivery_batch),
            ("delivery-window", self.people.delivery_window),
            ("session-queue", self.people.session_queue),
            (
                "inbox-max-messages",
                self.people.inbox_max_messages as usize,
            ),
            (
                "inbox-max-age-secs",
                self.people.inbox_max_age_secs as usize,
            ),
            (
                "delivery-ack-timeout-ms",
                self.people.delivery_ack_timeout_ms as usize,
            ),
            ("retry-window-secs", self.people.retry_window_secs as usize),
            (
                "inbox-max-per-sender",
                self.people.inbox_max_per_sender as usize,
            ),
            ("sender-rate-burst", self.people.sender_rate_burst as usize),
            (
                "replica-ack-timeout-ms",
                self.redis.replica_ack_timeout_ms as usize,
            ),
            ("redis-timeout-ms", self.redis.redis_timeout_ms as usize),
            ("history-ttl-secs", self.rooms.history_ttl_secs as usize),
            ("presence-grace-ms", self.rooms.presence_grace_ms as usize),
            ("history-page-max", self.rooms.history_page_max),
            ("max-api-body-bytes", self.push.max_api_body_bytes),
            (
                "idempotency-window-secs",
                self.push.idempotency_window_secs as usize,
            ),
            ("unread-max", self.push.unread_max as usize),
            (
                "unread-max-age-secs",
                self.push.unread_max_age_secs as usize,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("--{name} must be greater than 0"));
        }
        // Every text the content limits accept must fit the transport's cap however a standard
        // JSON encoder writes it, or a valid message would close the connection.
        let needed = self.largest_event_bytes();
        if self.max_message_bytes < needed {
            return Err(format!(
                "--max-message-bytes {} is too small for --max-text-chars {}: written as \
                 ASCII-only JSON (\\uXXXX escapes, as Python's json.dumps does by default), a \
                 text that long takes up to {needed} bytes; raise --max-message-bytes to at \
                 least {needed} or lower --max-text-chars",
                self.max_message_bytes, self.max_text_chars
            ));
        }
        // So must every free-form object, and the packet around it.
        let needed = self.largest_object_event_bytes();
        if self.max_message_bytes < needed {
            let fits = self
                .max_message_bytes
                .saturating_sub(needed - 3 * self.max_object_bytes)
                / 3;
            return Err(format!(
                "--max-message-bytes {} is too small for --max-object-bytes {}: written as \
                 ASCII-only JSON, an old client's event with an object that large takes up to \
                 {needed} bytes; raise --max-message-bytes to at least {needed} or lower \
                 --max-object-bytes to at most {fits}",
                self.max_message_bytes, self.max_object_bytes
            ));
        }
        if self.people.delivery_window < self.people.delivery_batch {
            return Err(format!(
                "--delivery-window {} must be at least --delivery-batch {}",
                self.people.delivery_window, self.people.delivery_batch
            ));
        }
        if !(self.rate_per_sec > 0.0 && self.rate_burst >= 1.0) {
            return Err("--rate-per-sec must be above 0 and --rate-burst at least 1".into());
        }
        if !(self.people.sender_rate_per_sec > 0.0 && self.people.sender_rate_per_sec.is_finite()) {
            return Err("--sender-rate-per-sec must be above 0".into());
        }
        chat_protocol::keys::check_prefix(&self.channel_prefix)
            .map_err(|err| format!("--channel-prefix: {err}"))?;
        let target =
            crate::store::RedisTarget::parse(&self.redis_url).map_err(|err| err.to_string())?;
        if self.rooms.legacy() && target.topology == crate::store::Topology::Cluster {
            return Err(
                "--bus-format legacy speaks the node design's classic pub/sub on one Redis \
                 server, as the node cluster used it (standalone or Sentinel); it cannot be \
                 used with a redis-cluster:// URL"
                    .into(),
            );
        }
        if self.redis.replica_ack_timeout_ms >= self.redis.redis_timeout_ms {
            return Err(format!(
                "--replica-ack-timeout-ms {} must be shorter than --redis-timeout-ms {}",
                self.redis.replica_ack_timeout_ms, self.redis.redis_timeout_ms
            ));
        }
        if self.people.moderation
            && (self.people.filter_channel.is_empty()
                || self.people.filter_return_channel.is_empty())
        {
            return Err("--moderation needs --filter-channel and --filter-return-channel".into());
        }
        if self.auth.auth == AuthMode::Jwt {
            crate::auth::jwt_secret(&self.auth).map_err(|err| err.to_string())?;
        }
        self.edge.validate()?;
        crate::origin::validate(&self.auth)?;
        if self.ping_interval_ms == 0
            || self.ping_timeout_ms == 0
            || self.write_stall_timeout_ms == 0
        {
            return Err(
                "ping interval, ping timeout and write stall timeout must be greater than 0".into(),
            );
        }
        Ok(())
    }

    /// Every classic pub/sub channel the worker publishes to or listens on for something other
    /// than rooms (backend hooks, the notification and moderation channels, announcements),
    /// the disabled (empty) ones left out: under `--bus-format legacy` a room whose channel
    /// would be one of them is refused.
    pub fn classic_channels(&self) -> Vec<String> {
        let people = &self.people;
        let mut channels = vec![
            chat_protocol::keys::broadcast_channel(&self.channel_prefix),
            self.push.notification_channel.clone(),
            people.login_channel.clone(),
            people.history_channel.clone(),
            people.offline_channel.clone(),
            people.geo_channel.clone(),
        ];
        if people.moderation {
            channels.push(people.filter_channel.clone());
            channels.push(people.filter_return_channel.clone());
        }
        channels.retain(|channel| !channel.is_empty());
        channels
    }

    /// The settings a supervisor passed in [`SETTINGS_ENV`], if any.
    pub fn from_env_json() -> Result<Option<Self>, String> {
        match std::env::var(SETTINGS_ENV) {
            Ok(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|err| format!("{SETTINGS_ENV} is not valid worker settings: {err}")),
            Err(_) => Ok(None),
        }
    }

    pub fn to_env_json(&self) -> String {
        // Plain strings and integers: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The HTTP edge: what one connection and one client address may hold, how long each phase of
/// a request may take, and when a client that keeps breaking the limits is cut.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct EdgeSettings {
    /// Largest request head (request line and headers), in bytes; larger gets 431.
    #[arg(long, env = "CHAT_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Time a client has to send a complete request head, in milliseconds, counted from the
    /// connection's start or, on a kept-alive connection, from the end of the previous
    /// response (so it is also how long a connection may sit idle between requests).
    #[arg(long, env = "CHAT_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Time a client has to send a whole request body once its head is in, in milliseconds
    /// (long-polling POSTs, push API requests).
    #[arg(long, env = "CHAT_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,

    /// Connections one client address may hold on one worker: TCP connections of clients that
    /// connect directly, and sockets (also through trusted proxies). IPv6 addresses count per
    /// /64.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Sockets (engine.io sessions) one TCP connection of a direct client may open and hold.
    /// Connections from trusted proxies carry many clients and are not bounded by it.
    #[arg(long, env = "CHAT_MAX_SESSIONS_PER_CONNECTION", default_value_t = 16)]
    pub max_sessions_per_connection: usize,

    /// Proxies whose `X-Forwarded-For` names the client (comma-separated addresses or CIDR
    /// blocks); from any other peer the header is ignored.
    #[arg(
        long,
        env = "CHAT_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    pub trusted_proxies: Vec<String>,

    /// Refused events (over the rate limit) one socket may collect within
    /// `--refusal-window-ms` before it is disconnected.
    #[arg(long, env = "CHAT_MAX_REFUSALS", default_value_t = 100)]
    pub max_refusals: u32,

    /// The window in which `--max-refusals` is counted, in milliseconds.
    #[arg(long, env = "CHAT_REFUSAL_WINDOW_MS", default_value_t = 10_000)]
    pub refusal_window_ms: u64,
}

impl EdgeSettings {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    pub fn refusal_window(&self) -> Duration {
        Duration::from_millis(self.refusal_window_ms)
    }

    /// Checks the edge limits: positive values, and proxies that parse.
    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max-header-bytes", self.max_header_bytes as u64),
            ("header-read-timeout-ms", self.header_read_timeout_ms),
            ("body-read-timeout-ms", self.body_read_timeout_ms),
            ("max-connections-per-ip", self.max_connections_per_ip as u64),
            (
                "max-sessions-per-connection",
                self.max_sessions_per_connection as u64,
            ),
            ("max-refusals", u64::from(self.max_refusals)),
            ("refusal-window-ms", self.refusal_window_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("--{name} must be greater than 0"));
        }
        if self.max_header_bytes < 1024 {
            return Err(format!(
                "--max-header-bytes {} is too small for a browser's request; use at least 1024",
                self.max_header_bytes
            ));
        }
        crate::edge::clients::TrustedProxies::parse(&self.trusted_proxies).map(|_| ())
    }
}

impl Default for WorkerSettings {
    /// The flags' defaults. `CHAT_*` variables do not apply: code and tests that start from the
    /// defaults must not depend on the caller's environment (the command line reads them).
    fn default() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: WorkerSettings,
        }
        let command = Only::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["worker"]);
        Only::from_arg_matches(&matches)
            .unwrap_or_else(|err| err.exit())
            .settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `WorkerSettings::default()` must not read the caller's `CHAT_*` variables. Checked in a
    /// child process (this test binary, filtered to this test), so that no test here changes
    /// its own environment under the others' feet.
    #[test]
    fn defaults_ignore_the_environment() {
        const MARK: &str = "CHAT_TEST_DEFAULTS_CHILD";
        if std::env::var_os(MARK).is_some() {
            let settings = WorkerSettings::default();
            assert_eq!(settings.rate_burst, 20.0);
            assert_eq!(settings.send_queue, 128);
            return;
        }
        let exe = std::env::current_exe().expect("the test binary");
        let status = std::process::Command::new(exe)
            .args(["--exact", "config::tests::defaults_ignore_the_environment"])
            .env(MARK, "1")
            .env("CHAT_RATE_BURST", "999")
            .env("CHAT_SEND_QUEUE", "7")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run the child");
        assert!(
            status.success(),
            "the defaults read CHAT_* from the environment"
        );
    }

    /// An old client's largest accepted object fits in one message however it is written: the
    /// defaults agree, and a smaller `--max-message-bytes` names the largest object that fits,
    /// which then passes.
    #[test]
    fn free_form_objects_fit_the_message_limit() {
        let defaults = WorkerSettings::default();
        assert_eq!(defaults.validate(), Ok(()));
        // 8192 bytes of 2-byte characters are 4096 of them, each a 6-byte escape.
        assert!(defaults.largest_object_event_bytes() >= 3 * 8192);
        let small = WorkerSettings {
            max_message_bytes: 4096,
            max_text_chars: 250,
            ..WorkerSettings::default()
        };
        let err = small
            .validate()
            .expect_err("the default object is too large");
        assert!(err.contains("--max-object-bytes 8192"), "{err}");
        let fits: usize = err
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("the largest that fits");
        let fitting = WorkerSettings {
            max_object_bytes: fits,
            ..small
        };
        assert_eq!(fitting.validate(), Ok(()));
        assert!(fitting.largest_object_event_bytes() <= 4096);
        let one_more = WorkerSettings {
            max_object_bytes: fits + 1,
            ..fitting
        };
        assert!(one_more.validate().is_err());
    }
}
