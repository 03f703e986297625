//! Rooms in Redis: each room's history (a capped stream), members (a hash) and recoverable
//! sessions, and the scripts that change them together with the room's channel, so that a
//! message is in the history exactly when it was published, in the same order (`lua/*.lua`).
//!
//! Writes that must keep their order with the room's messages (says, joins, quits, recoveries)
//! run on the bus's publishing connection, in its queue order ([`crate::bus`]); reads that need
//! no order (members, history pages) may run on any connection.

use std::time::Duration;

use chat_protocol::{
    RoomId,
    bus::NodeId,
    keys::{RoomKeys, legacy_room_channel, node_rooms_key},
    memory::{MemberRecord, SessionRecord},
    people::StreamId,
};
use fred::{
    prelude::{
        Client, HashesInterface, KeysInterface, LuaInterface, SetsInterface, StreamsInterface,
    },
    types::Value,
};

use crate::config::RoomSettings;

const SAY_LUA: &str = include_str!("lua/say.lua");
const JOIN_LUA: &str = include_str!("lua/join.lua");
const QUIT_LUA: &str = include_str!("lua/quit.lua");
const RESUME_LUA: &str = include_str!("lua/resume.lua");
const REAP_LUA: &str = include_str!("lua/reap.lua");

/// How long a worker's room set outlives its last heartbeat (longer than any presence grace).
pub const NODE_ROOMS_TTL: Duration = Duration::from_secs(120);

/// One entry of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its place in the stream.
    pub stream: StreamId,
    /// The message, exactly as a `message` event carried it.
    pub json: String,
    /// For a message said on a worker: its id (`<origin>-<counter>`); `None` for joins and
    /// quits, which reach every worker through the bus.
    pub said: Option<String>,
    /// Written by a worker in `--bus-format legacy` (field `l`): the node workers' messages of
    /// that time are not in the history.
    pub legacy: bool,
}

/// Keeps, of `newest_first` entries, those newer than the newest one a worker wrote in
/// `--bus-format legacy`: the history a native worker hands out after a migration never shows
/// the node cluster's time, when the node workers' messages were not written (it would be a
/// conversation with holes); it starts after the last legacy message instead. Recoveries replay
/// every entry: their offsets come from native workers, which run only once no node worker is
/// left, and from then on legacy workers write every message.
pub fn cut_at_legacy(newest_first: &mut Vec<HistoryEntry>) {
    if let Some(first_legacy) = newest_first.iter().position(|entry| entry.legacy) {
        newest_first.truncate(first_legacy);
    }
}

/// A member joining (see `lua/join.lua`).
#[derive(Debug, Clone)]
pub struct JoinOp {
    pub token: String,
    pub pid: String,
    pub member: MemberRecord,
    /// The join message JSON without its closing `}` (the script appends the count).
    pub message_prefix: String,
    pub session: SessionRecord,
    /// Newest history entries to read back for the joiner.
    pub read_back: usize,
}

/// What a join got.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub count: u64,
    /// The join message's place in the history (none when history is off).
    pub stream: Option<StreamId>,
    /// The room's newest messages before the join, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// A member leaving (see `lua/quit.lua`).
#[derive(Debug, Clone)]
pub struct QuitOp {
    pub pid: String,
    /// Quit only if the member is still this connection (it may have recovered, here or on
    /// another worker, with another one).
    pub conn: String,
    /// The quit message JSON without its closing `}`.
    pub message_prefix: String,
    /// Whether the member's session is deleted with it (it cannot be recovered) or left to
    /// its lifetime (the client may still come back within the recovery window).
    pub delete_session: bool,
}

/// A recovery (see `lua/resume.lua`).
#[derive(Debug, Clone)]
pub struct ResumeOp {
    pub token: String,
    pub pid: String,
    /// The last history entry the client saw.
    pub after: Option<StreamId>,
    /// The user the handshake proved, if any: the session must be that user's.
    pub user_id: Option<String>,
    /// The join message (sent only if the member was removed meanwhile) without its `data`,
    /// `count` and closing `}`.
    pub join_prefix: String,
    /// The recovering socket's connection (engine.io session id), for its member record.
    pub conn: String,
}

/// What a recovery got, if the session could be recovered.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The session as it was (its node is the worker the client's offsets count).
    pub session: SessionRecord,
    pub count: u64,
    /// The stream id of a join message sent because the member had been removed meanwhile.
    pub rejoined: Option<StreamId>,
    /// What the client missed, oldest first.
    pub missed: Vec<HistoryEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoomStoreError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected answer from a room script: {0}")]
    Answer(String),
}

/// The room scripts on one connection.
#[derive(Clone)]
pub struct RoomStore {
    client: Client,
    prefix: String,
    origin: NodeId,
    history_size: u64,
    history_ttl: Duration,
    session_ttl: Duration,
    /// `--bus-format legacy`: the scripts also publish each room message on the room's
    /// classic channel in the node design's format, and flag its history entry.
    legacy: bool,
}

impl RoomStore {
    pub fn new(client: Client, prefix: &str, origin: NodeId, settings: &RoomSettings) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            origin,
            history_size: settings.history_size as u64,
            history_ttl: settings.history_ttl(),
            session_ttl: settings.session_ttl(),
            legacy: settings.legacy(),
        }
    }

    fn keys(&self, room: &RoomId) -> RoomKeys {
        RoomKeys::new(&self.prefix, room)
    }

    /// The scripts' argument naming the room's legacy channel: the channel, or empty (native).
    fn legacy_channel(&self, room: &RoomId) -> String {
        if self.legacy {
            legacy_room_channel(&self.prefix, room)
        } else {
            String::new()
        }
    }

    /// Notes, before this worker registers a member in `room`, that it has members there, for
    /// whoever reaps it if it dies (`<prefix>node:<origin>:rooms`, a set; its lifetime is
    /// renewed by the heartbeat, see [`crate::rooms::presence`]).
    pub async fn note_room(&self, room: &RoomId) -> Result<(), RoomStoreError> {
        let key = node_rooms_key(&self.prefix, &self.origin.to_string());
        let pipeline = self.client.pipeline();
        let _: () = pipeline.sadd(key.as_str(), room.as_str()).await?;
        let _: () = pipeline
            .pexpire(key.as_str(), NODE_ROOMS_TTL.as_millis() as i64, None)
            .await?;
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Keeps `says` (message id, JSON) in the room's history and publishes them, in order.
    pub async fn publish_says(
        &self,
        room: &RoomId,
        says: Vec<(String, String)>,
    ) -> Result<(), RoomStoreError> {
        let keys = self.keys(room);
        let mut args = Vec::with_capacity(5 + 2 * says.len());
        args.extend([
            keys.channel,
            self.origin.to_string(),
            self.history_size.to_string(),
            self.history_ttl.as_millis().to_string(),
            self.legacy_channel(room),
        ]);
        for (id, json) in says {
            args.push(id);
            args.push(json);
        }
        let _: Value = self.client.eval(SAY_LUA, vec![keys.history], args).await?;
        Ok(())
    }

    pub async fn join(&self, room: &RoomId, op: JoinOp) -> Result<Joined, RoomStoreError> {
        let keys = self.keys(room);
        let session = serde_json::to_string(&op.session).unwrap_or_default();
        let member = serde_json::to_string(&op.member).unwrap_or_default();
        let mut script_keys = vec![keys.history.clone(), keys.members.clone()];
        // Without recovery there is no session to keep.
        if !self.session_ttl.is_zero() {
            script_keys.push(keys.session(&op.pid));
        }
        let answer: Vec<Value> = self
            .client
            .eval(
                JOIN_LUA,
                script_keys,
                vec![
                    keys.channel,
                    self.origin.to_string(),
                    op.token,
                    op.pid,
                    member,
                    op.message_prefix,
                    self.history_size.to_string(),
                    self.history_ttl.as_millis().to_string(),
                    op.read_back.to_string(),
                    session,
                    self.session_ttl.as_millis().to_string(),
                    self.legacy_channel(room),
                ],
            )
            .await?;
        let mut answer = answer.into_iter();
        let count = answer.next().and_then(|v| v.as_u64()).unwrap_or(0);
        let stream = answer.next().and_then(|v| stream_id(&v));
        let mut history = entries(answer.next())?;
        cut_at_legacy(&mut history);
        history.reverse();
        Ok(Joined {
            count,
            stream,
            history,
        })
    }

    /// Returns whether the member was removed (it was there, on `op.node`), and the count.
    pub async fn quit(&self, room: &RoomId, op: QuitOp) -> Result<(bool, u64), RoomStoreError> {
        let keys = self.keys(room);
        let mut script_keys = vec![keys.members.clone(), keys.history.clone()];
        if !self.session_ttl.is_zero() {
            script_keys.push(keys.session(&op.pid));
        }
        let (removed, count): (u64, u64) = self
            .client
            .eval(
                QUIT_LUA,
                script_keys,
                vec![
                    keys.channel,
                    self.origin.to_string(),
                    op.pid,
                    op.conn,
                    op.message_prefix,
                    self.history_size.to_string(),
                    self.history_ttl.as_millis().to_string(),
                    if op.delete_session { "delete" } else { "keep" }.to_owned(),
                    self.legacy_channel(room),
                ],
            )
            .await?;
        Ok((removed == 1, count))
    }

    /// `None` when the session cannot be recovered (unknown, another user's, or part of what
    /// the client missed is no longer in the history).
    pub async fn resume(
        &self,
        room: &RoomId,
        op: ResumeOp,
    ) -> Result<Option<Resumed>, RoomStoreError> {
        let keys = self.keys(room);
        let answer: Vec<Value> = self
            .client
            .eval(
                RESUME_LUA,
                vec![
                    keys.history.clone(),
                    keys.members.clone(),
                    keys.session(&op.pid),
                ],
                vec![
                    keys.channel,
                    self.origin.to_string(),
                    op.token,
                    op.pid,
                    op.after.map(|id| id.to_string()).unwrap_or_default(),
                    self.history_size.to_string(),
                    self.session_ttl.as_millis().to_string(),
                    op.user_id.unwrap_or_default(),
                    op.join_prefix,
                    self.history_size.to_string(),
                    self.history_ttl.as_millis().to_string(),
                    op.conn,
                ],
            )
            .await?;
        let mut answer = answer.into_iter();
        match answer.next().and_then(|v| v.as_string()).as_deref() {
            Some("gone") => return Ok(None),
            Some("ok") => {}
            other => return Err(RoomStoreError::Answer(format!("resume answered {other:?}"))),
        }
        let session = answer
            .next()
            .and_then(|v| v.as_string())
            .and_then(|raw| serde_json::from_str::<SessionRecord>(&raw).ok())
            .ok_or_else(|| RoomStoreError::Answer("a session record that is not one".into()))?;
        let count = answer.next().and_then(|v| v.as_u64()).unwrap_or(0);
        let rejoined = answer.next().and_then(|v| stream_id(&v));
        let missed = entries(answer.next())?;
        Ok(Some(Resumed {
            session,
            count,
            rejoined,
            missed,
        }))
    }

    /// Sets the lifetime of the sessions `pids` of `room` (renewed while their sockets are
    /// connected; the recovery window once they ended).
    pub async fn expire_sessions(
        &self,
        room: &RoomId,
        pids: &[String],
        ttl: Duration,
    ) -> Result<(), RoomStoreError> {
        let keys = self.keys(room);
        let pipeline = self.client.pipeline();
        for pid in pids {
            // Queuing into a pipeline only buffers the command.
            let _: Result<(), _> = fred::prelude::KeysInterface::pexpire::<(), _>(
                &pipeline,
                keys.session(pid),
                ttl.as_millis() as i64,
                None,
            )
            .await;
        }
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Removes the members of the dead worker `dead` from `room`, each with a quit whose id
    /// uses this worker's counters from `first_counter` (at most `most`). Returns how many.
    pub async fn reap(
        &self,
        room: &RoomId,
        dead: &str,
        now_ms: u64,
        first_counter: u64,
        most: u64,
    ) -> Result<u64, RoomStoreError> {
        let keys = self.keys(room);
        Ok(self
            .client
            .eval(
                REAP_LUA,
                vec![keys.members, keys.history],
                vec![
                    keys.channel,
                    self.origin.to_string(),
                    dead.to_owned(),
                    room.as_str().to_owned(),
                    now_ms.to_string(),
                    first_counter.to_string(),
                    most.to_string(),
                    self.history_size.to_string(),
                    self.history_ttl.as_millis().to_string(),
                    self.legacy_channel(room),
                ],
            )
            .await?)
    }

    /// The room's members, cluster-wide (a record that does not parse is skipped).
    pub async fn members(&self, room: &RoomId) -> Result<Vec<MemberRecord>, RoomStoreError> {
        let values: Vec<String> = self.client.hvals(self.keys(room).members).await?;
        Ok(values
            .iter()
            .filter_map(|raw| serde_json::from_str(raw).ok())
            .collect())
    }

    /// The whole history (it is capped at `--history-size`), newest first.
    pub async fn history(&self, room: &RoomId) -> Result<Vec<HistoryEntry>, RoomStoreError> {
        let raw: Value = self
            .client
            .xrevrange(
                self.keys(room).history,
                "+",
                "-",
                Some(self.history_size.max(1)),
            )
            .await?;
        let mut newest_first = entries(Some(raw))?;
        cut_at_legacy(&mut newest_first);
        Ok(newest_first)
    }
}

fn stream_id(value: &Value) -> Option<StreamId> {
    value.as_str().and_then(|id| id.parse().ok())
}

/// Stream entries as XRANGE answers them: `[[id, [field, value, ...]], ...]`.
fn entries(value: Option<Value>) -> Result<Vec<HistoryEntry>, RoomStoreError> {
    let Some(Value::Array(items)) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(RoomStoreError::Answer(
                "a stream entry that is not a list".into(),
            ));
        };
        let mut parts = parts.into_iter();
        let Some(stream) = parts.next().as_ref().and_then(stream_id) else {
            return Err(RoomStoreError::Answer(
                "a stream entry without an id".into(),
            ));
        };
        let fields = match parts.next() {
            Some(Value::Array(fields)) => fields,
            _ => Vec::new(),
        };
        let (mut json, mut said, mut legacy) = (None, None, false);
        for pair in fields.chunks(2) {
            if let [name, value] = pair {
                match name.as_str().as_deref() {
                    Some("m") => json = value.as_string(),
                    Some("s") => said = value.as_string(),
                    Some("l") => legacy = true,
                    _ => {}
                }
            }
        }
        match json {
            Some(json) => out.push(HistoryEntry {
                stream,
                json,
                said,
                legacy,
            }),
            None => tracing::warn!(%stream, "skipping a history entry without a message"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, legacy: bool) -> HistoryEntry {
        HistoryEntry {
            stream: StreamId { ms: 1, seq },
            json: format!("{{\"n\":{seq}}}"),
            said: None,
            legacy,
        }
    }

    fn check(newest_first: &[(u64, bool)], kept: &[u64]) {
        let mut entries: Vec<HistoryEntry> = newest_first
            .iter()
            .map(|&(seq, legacy)| entry(seq, legacy))
            .collect();
        cut_at_legacy(&mut entries);
        let got: Vec<u64> = entries.iter().map(|entry| entry.stream.seq).collect();
        assert_eq!(got, kept, "{newest_first:?}");
    }

    #[test]
    fn history_starts_after_the_newest_legacy_entry() {
        check(&[], &[]);
        check(&[(3, false), (2, false), (1, false)], &[3, 2, 1]);
        check(&[(3, false), (2, true), (1, false)], &[3]);
        check(&[(3, true), (2, false), (1, true)], &[]);
        check(&[(4, false), (3, false), (2, true), (1, true)], &[4, 3]);
    }

    #[test]
    fn entries_read_the_legacy_flag() {
        let raw = Value::Array(vec![
            Value::Array(vec![
                Value::from("5-0"),
                Value::Array(vec![
                    Value::from("m"),
                    Value::from("{}"),
                    Value::from("l"),
                    Value::from("1"),
                ]),
            ]),
            Value::Array(vec![
                Value::from("4-0"),
                Value::Array(vec![Value::from("m"), Value::from("{}")]),
            ]),
        ]);
        let parsed = entries(Some(raw)).expect("entries");
        let flags: Vec<bool> = parsed.iter().map(|entry| entry.legacy).collect();
        assert_eq!(flags, [true, false]);
    }
}
