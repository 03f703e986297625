//! Presence without ghosts: every worker says it is alive once a second (a score in the sorted
//! set `<prefix>nodes`), and keeps the set of rooms it has members in. A worker silent for
//! longer than `--presence-grace-ms` is dead (SIGKILL, host lost): the first live worker to
//! claim it (ZREM answers 1 to exactly one) removes its members from every one of its rooms,
//! each with one `broadcast_quit` (`reap.lua`), unless the member recovered on another worker
//! meanwhile (its record then names that worker).
//!
//! A worker that was cut from Redis does not reap until it has been connected for twice the
//! grace: after an outage every worker's heartbeat is stale for a moment, and none of them is
//! dead. The same task renews the session records of this worker's joined sockets (their
//! recovery window starts when they end).

use std::{sync::Arc, time::Duration};

use chat_protocol::keys::{node_rooms_key, nodes_key};
use fred::{
    prelude::{Client, KeysInterface, SetsInterface, SortedSetsInterface},
    types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind},
};
use tokio::time::Instant;

use super::Rooms;
use crate::{
    store::rooms::{NODE_ROOMS_TTL, RoomStore},
    unix_millis,
};

const HEARTBEAT: Duration = Duration::from_secs(1);
/// Quits reaped per script call.
const REAP_BATCH: u64 = 64;
/// Dead workers handled per heartbeat.
const DEAD_PER_ROUND: i64 = 8;

/// Starts the heartbeat and the reaper of this worker.
pub fn spawn(client: Client, prefix: String, rooms: Arc<Rooms>, store: RoomStore) {
    tokio::spawn(async move {
        let grace = rooms.settings().presence_grace();
        let origin = rooms.origin().to_string();
        let nodes = nodes_key(&prefix);
        let own_rooms = node_rooms_key(&prefix, &origin);
        let mut healthy_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewal = tokio::time::interval(crate::config::SESSION_RENEWAL);
        renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = renewal.tick() => {
                    rooms.renew_sessions();
                    prune_rooms(&client, &own_rooms, &rooms).await;
                    continue;
                }
            }
            let now = unix_millis();
            let beat: Result<(), fred::error::Error> = async {
                let _: () = client
                    .zadd(
                        nodes.as_str(),
                        None,
                        None,
                        false,
                        false,
                        (now as f64, origin.as_str()),
                    )
                    .await?;
                let _: () = client
                    .pexpire(own_rooms.as_str(), NODE_ROOMS_TTL.as_millis() as i64, None)
                    .await?;
                Ok(())
            }
            .await;
            if let Err(err) = beat {
                tracing::debug!(cause = %err, "presence heartbeat failed");
                healthy_since = None;
                continue;
            }
            let since = *healthy_since.get_or_insert_with(Instant::now);
            if since.elapsed() < grace * 2 {
                continue;
            }
            // Dead once silent for the grace less a heartbeat: reaped within the grace.
            let dead_before =
                now.saturating_sub((grace.saturating_sub(HEARTBEAT)).as_millis() as u64);
            let dead: Vec<String> = match client
                .zrangebyscore(
                    nodes.as_str(),
                    ZRange {
                        kind: ZRangeKind::Inclusive,
                        range: ZRangeBound::NegInfiniteScore,
                    },
                    ZRange {
                        kind: ZRangeKind::Exclusive,
                        range: ZRangeBound::Score(dead_before as f64),
                    },
                    false,
                    Some((0, DEAD_PER_ROUND)),
                )
                .await
            {
                Ok(dead) => dead,
                Err(err) => {
                    tracing::debug!(cause = %err, "could not read the dead workers");
                    continue;
                }
            };
            for node in dead {
                // Exactly one live worker gets 1 for a given dead one.
                let claimed: i64 = client
                    .zrem(nodes.as_str(), node.as_str())
                    .await
                    .unwrap_or(0);
                if claimed == 1 {
                    reap(&client, &prefix, &rooms, &store, &node).await;
                }
            }
        }
    });
}

/// Removes the members of the dead worker `node` from every room it had members in.
async fn reap(client: &Client, prefix: &str, rooms: &Rooms, store: &RoomStore, node: &str) {
    let key = node_rooms_key(prefix, node);
    let names: Vec<String> = match client.smembers(key.as_str()).await {
        Ok(names) => names,
        Err(err) => {
            tracing::warn!(node, cause = %err, "could not read a dead worker's rooms");
            return;
        }
    };
    let mut reaped = 0;
    for name in names {
        // Written by a worker from a validated id; checked again, it names keys.
        let Some(room) = super::known_room(&name) else {
            continue;
        };
        loop {
            let first = rooms.reserve_counters(REAP_BATCH);
            match store
                .reap(&room, node, unix_millis(), first, REAP_BATCH)
                .await
            {
                Ok(removed) => {
                    reaped += removed;
                    if removed < REAP_BATCH {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(node, room = %room, cause = %err, "could not reap a dead worker's members");
                    break;
                }
            }
        }
    }
    let _: Result<(), _> = client.del(key.as_str()).await;
    tracing::info!(
        node,
        members = reaped,
        "removed the members of a worker that stopped answering"
    );
}

/// Removes from this worker's room set the rooms where it no longer has members, so the set
/// stays as small as the rooms in use. A join in flight is registered locally before it notes
/// its room (see [`Rooms::join`]), so a room removed here while one starts is put back.
async fn prune_rooms(client: &Client, own_rooms: &str, rooms: &Rooms) {
    let in_use = rooms.rooms_with_members();
    let noted: Vec<String> = match client.smembers(own_rooms).await {
        Ok(noted) => noted,
        Err(err) => {
            tracing::debug!(cause = %err, "could not read this worker's rooms");
            return;
        }
    };
    let stale: Vec<String> = noted
        .into_iter()
        .filter(|room| !in_use.contains(room.as_str()))
        .collect();
    if stale.is_empty() {
        return;
    }
    if let Err(err) = client.srem::<(), _, _>(own_rooms, stale.clone()).await {
        tracing::debug!(cause = %err, "could not prune this worker's rooms");
        return;
    }
    let in_use = rooms.rooms_with_members();
    let back: Vec<String> = stale
        .into_iter()
        .filter(|room| in_use.contains(room.as_str()))
        .collect();
    if !back.is_empty() {
        let _: Result<(), _> = client.sadd(own_rooms, back).await;
    }
}
