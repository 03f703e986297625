//! The supervisor's picture of its workers, shared by the worker keepers (who write it), the
//! consoles, `/status`, `/history` and `/metrics` (who read it).
//!
//! Each slot keeps the latest metrics of its current worker process and, in `base`, the last
//! counters of every process that ran in the slot before: what the host exposes is base +
//! current, so a respawned worker's counters continue instead of starting again at zero.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use chat_protocol::{
    report::{MetricsSnapshot, RoomMembers, TOP_ROOMS},
    status::{
        ConsoleEvent, ConsoleHistory, StatusResponse, WorkerCounts, WorkerHistory, WorkerState,
        WorkerStatus,
    },
};
use tokio::sync::broadcast;

/// Time between two history samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per worker: ten minutes.
pub const HISTORY_SAMPLES: usize = 600;

#[derive(Debug, Clone)]
pub struct WorkerSlot {
    pub id: u32,
    pub port: u16,
    pub pid: u32,
    pub state: WorkerState,
    pub connects: u64,
    pub disconnects: u64,
    pub rooms: u64,
    pub restarts: u32,
    pub up_since: SystemTime,
    /// The current process's latest metrics report, if it sent one.
    pub metrics: Option<MetricsSnapshot>,
    /// The counters of the processes that ran in this slot before the current one.
    pub base: MetricsSnapshot,
    /// The current process's busiest rooms.
    pub busiest_rooms: Vec<RoomMembers>,
    /// One sample a second, oldest first, at most [`HISTORY_SAMPLES`].
    history: VecDeque<Sample>,
}

/// One slot as `/metrics` shows it: see [`ClusterState::metrics_view`].
#[derive(Debug, Clone)]
pub struct SlotMetrics {
    pub id: u32,
    pub state: WorkerState,
    pub connections: u64,
    pub rooms: u64,
    pub restarts: u32,
    /// Whether the current process has sent metrics (its gauges are known).
    pub reporting: bool,
    /// Counters of every process of the slot, gauges of the current one.
    pub totals: MetricsSnapshot,
}

/// One second of a worker's life, for the console's charts.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    connections: u64,
    /// Deliveries so far (base + current): the rate is the difference of two samples.
    deliveries: u64,
    deliveries_per_sec: u64,
    memory_bytes: u64,
}

impl WorkerSlot {
    pub fn connections(&self) -> u64 {
        self.connects.saturating_sub(self.disconnects)
    }

    /// Counters of every process of this slot so far, and the current process's gauges.
    pub fn totals(&self) -> MetricsSnapshot {
        let mut totals = self.base.clone();
        if let Some(current) = &self.metrics {
            totals.add_counters(current);
            totals.logged_in_users = current.logged_in_users;
            totals.redis_up = current.redis_up;
            totals.rss_bytes = current.rss_bytes;
        }
        totals
    }

    /// The worker process exited: its counters join the base, its gauges are gone.
    pub fn retire_metrics(&mut self) {
        if let Some(last) = self.metrics.take() {
            self.base.add_counters(&last);
        }
        self.busiest_rooms.clear();
    }

    fn deliveries_per_sec(&self) -> u64 {
        self.history.back().map_or(0, |s| s.deliveries_per_sec)
    }
}

/// Every slot, in port order, plus a channel of lifecycle events for the console and tests.
pub struct ClusterState {
    slots: Mutex<Vec<WorkerSlot>>,
    events: broadcast::Sender<ConsoleEvent>,
}

impl ClusterState {
    pub fn new(base_port: u16, workers: u32) -> Self {
        let slots = (0..workers)
            .map(|id| WorkerSlot {
                id,
                port: base_port + id as u16,
                pid: 0,
                state: WorkerState::Down,
                connects: 0,
                disconnects: 0,
                rooms: 0,
                restarts: 0,
                up_since: SystemTime::now(),
                metrics: None,
                base: MetricsSnapshot::default(),
                busiest_rooms: Vec::new(),
                history: VecDeque::with_capacity(HISTORY_SAMPLES),
            })
            .collect();
        Self {
            slots: Mutex::new(slots),
            events: broadcast::channel(1024).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ConsoleEvent> {
        self.events.subscribe()
    }

    pub fn announce(&self, event: ConsoleEvent) {
        // No receiver yet is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Applies `change` to worker `id`'s slot.
    pub fn update(&self, id: u32, change: impl FnOnce(&mut WorkerSlot)) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(id as usize) {
            change(slot);
        }
    }

    /// What `/metrics` shows of every slot, copied under the lock (without the history), for
    /// an encoder that must not hold the lock while it writes.
    pub fn metrics_view(&self) -> Vec<SlotMetrics> {
        self.lock()
            .iter()
            .map(|slot| SlotMetrics {
                id: slot.id,
                state: slot.state,
                connections: slot.connections(),
                rooms: slot.rooms,
                restarts: slot.restarts,
                reporting: slot.metrics.is_some(),
                totals: slot.totals(),
            })
            .collect()
    }

    /// Takes one history sample of every worker (call every [`SAMPLE_INTERVAL`]).
    pub fn sample(&self, elapsed: Duration) {
        let mut slots = self.lock();
        for slot in slots.iter_mut() {
            let totals = slot.totals();
            let previous = slot
                .history
                .back()
                .map_or(totals.deliveries, |s| s.deliveries);
            let seconds = elapsed.as_secs_f64().max(0.001);
            let sample = Sample {
                connections: slot.connections(),
                deliveries: totals.deliveries,
                deliveries_per_sec: (totals.deliveries.saturating_sub(previous) as f64 / seconds)
                    .round() as u64,
                memory_bytes: totals.rss_bytes,
            };
            if slot.history.len() == HISTORY_SAMPLES {
                slot.history.pop_front();
            }
            slot.history.push_back(sample);
        }
    }

    pub fn status(&self) -> StatusResponse {
        let slots = self.lock();
        let workers: Vec<WorkerStatus> = slots
            .iter()
            .map(|slot| {
                let totals = slot.totals();
                WorkerStatus {
                    id: slot.id,
                    pid: slot.pid,
                    port: slot.port,
                    connections: slot.connections(),
                    rooms: slot.rooms,
                    restarts: slot.restarts,
                    up_since: humantime::format_rfc3339_seconds(slot.up_since).to_string(),
                    state: slot.state,
                    logged_in_users: totals.logged_in_users,
                    memory_bytes: totals.rss_bytes,
                    redis_up: slot.metrics.as_ref().map(|m| m.redis_up),
                    deliveries: totals.deliveries,
                    deliveries_per_sec: slot.deliveries_per_sec(),
                }
            })
            .collect();
        StatusResponse {
            total_connections: workers.iter().map(|w| w.connections).sum(),
            total_deliveries_per_sec: workers.iter().map(|w| w.deliveries_per_sec).sum(),
            total_memory_bytes: workers.iter().map(|w| w.memory_bytes).sum(),
            busiest_rooms: busiest_rooms(&slots),
            workers,
        }
    }

    pub fn history(&self) -> ConsoleHistory {
        let slots = self.lock();
        let latest_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ConsoleHistory {
            interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
            latest_ms,
            workers: slots
                .iter()
                .map(|slot| WorkerHistory {
                    id: slot.id,
                    connections: slot.history.iter().map(|s| s.connections).collect(),
                    deliveries_per_sec: slot.history.iter().map(|s| s.deliveries_per_sec).collect(),
                    memory_bytes: slot.history.iter().map(|s| s.memory_bytes).collect(),
                })
                .collect(),
        }
    }

    pub fn counts(&self) -> ConsoleEvent {
        let slots = self.lock();
        ConsoleEvent::Counts {
            total_connections: slots.iter().map(WorkerSlot::connections).sum(),
            workers: slots
                .iter()
                .map(|slot| WorkerCounts {
                    id: slot.id,
                    port: slot.port,
                    connections: slot.connections(),
                    rooms: slot.rooms,
                })
                .collect(),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.lock()
            .iter()
            .filter(|slot| slot.pid != 0)
            .map(|slot| slot.pid)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WorkerSlot>> {
        // Updates are single assignments that cannot panic midway; a poisoned lock still
        // guards consistent slots.
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The host's busiest rooms: each worker's busiest, members summed by room, most first.
fn busiest_rooms(slots: &[WorkerSlot]) -> Vec<RoomMembers> {
    let mut members: HashMap<&str, u64> = HashMap::new();
    for room in slots.iter().flat_map(|slot| &slot.busiest_rooms) {
        *members.entry(room.room.as_str()).or_default() += room.members;
    }
    let mut rooms: Vec<RoomMembers> = members
        .into_iter()
        .map(|(room, members)| RoomMembers {
            room: room.to_owned(),
            members,
        })
        .collect();
    rooms.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
    rooms.truncate(TOP_ROOMS);
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(deliveries: u64, rss: u64) -> MetricsSnapshot {
        MetricsSnapshot {
            deliveries,
            rss_bytes: rss,
            redis_up: true,
            ..MetricsSnapshot::default()
        }
    }

    #[test]
    fn a_respawned_workers_counters_continue_and_its_gauges_restart() {
        let state = ClusterState::new(6001, 1);
        state.update(0, |slot| slot.metrics = Some(snapshot(100, 5_000)));
        assert_eq!(state.status().workers[0].deliveries, 100);
        // The process dies after reporting 120; the next one reports from zero.
        state.update(0, |slot| {
            slot.metrics = Some(snapshot(120, 6_000));
            slot.retire_metrics();
        });
        let down = &state.status().workers[0];
        assert_eq!(
            (down.deliveries, down.memory_bytes, down.redis_up),
            (120, 0, None)
        );
        state.update(0, |slot| slot.metrics = Some(snapshot(7, 4_000)));
        let up = &state.status().workers[0];
        assert_eq!((up.deliveries, up.memory_bytes), (127, 4_000));
    }

    #[test]
    fn history_keeps_ten_minutes_and_rates_are_differences() {
        let state = ClusterState::new(6001, 2);
        for second in 0..(HISTORY_SAMPLES as u64 + 5) {
            state.update(1, |slot| slot.metrics = Some(snapshot(second * 50, 1)));
            state.sample(SAMPLE_INTERVAL);
        }
        let history = state.history();
        assert_eq!(history.workers[1].deliveries_per_sec.len(), HISTORY_SAMPLES);
        assert_eq!(history.workers[0].connections.len(), HISTORY_SAMPLES);
        assert_eq!(*history.workers[1].deliveries_per_sec.last().unwrap(), 50);
        assert_eq!(state.status().total_deliveries_per_sec, 50);
    }

    #[test]
    fn busiest_rooms_add_up_over_workers() {
        let state = ClusterState::new(6001, 2);
        let rooms = |list: &[(&str, u64)]| {
            list.iter()
                .map(|(room, members)| RoomMembers {
                    room: (*room).to_owned(),
                    members: *members,
                })
                .collect::<Vec<_>>()
        };
        state.update(0, |slot| slot.busiest_rooms = rooms(&[("a", 5), ("b", 4)]));
        state.update(1, |slot| slot.busiest_rooms = rooms(&[("b", 3), ("c", 1)]));
        assert_eq!(
            state.status().busiest_rooms,
            rooms(&[("b", 7), ("a", 5), ("c", 1)])
        );
    }
}
