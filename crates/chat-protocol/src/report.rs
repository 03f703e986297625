//! Reports a worker sends its supervisor over the report pipe: one JSON object per line.
//!
//! Each line stays below PIPE_BUF (4096 bytes), so a write is atomic and lines never interleave:
//! [`MAX_LINE`] is checked by the tests for the largest line each kind can make. Counters are
//! cumulative since the worker process started, so a supervisor that misses nothing but the latest
//! line is never wrong for long; connection counts are `connects - disconnects`.
//!
//! The metric families the supervisor serves on `/metrics` are built from these lines; their label
//! values are the constants of this module ([`EVENT_LABELS`], [`DROP_REASONS`]), so both sides
//! agree on a bounded set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest report line a worker may write, newline included: below PIPE_BUF (4096 on Linux),
/// the size up to which a pipe write is atomic.
pub const MAX_LINE: usize = 4000;

/// Values of the `event` label of `chat_events_received_total`: the events the server knows, and
/// `other` for every name it does not (a client chooses event names, so they are never labels).
pub const EVENT_LABELS: [&str; 12] = [
    "join",
    "say",
    crate::people::LOGIN_EVENT,
    crate::people::CHAT_EVENT,
    crate::people::HEARTBEAT_EVENT,
    crate::people::GEO_EVENT,
    crate::push::MARK_READ_EVENT,
    crate::push::UNREAD_COUNT_EVENT,
    crate::people::CHAT_ACK_EVENT,
    crate::dialects::USER_LOGIN_EVENT,
    crate::dialects::TODO_EVENT,
    "other",
];

/// Values of the `reason` label of `chat_dropped_total`: why something was not delivered or not
/// accepted.
///
/// - `rate_limited`: an event refused with `rate_limited` (beyond `--rate-per-sec`/`--rate-burst`).
/// - `queue_full`: a message not queued for one client because its send queue (`--send-queue`)
///   was full; counted once per client that missed it.
/// - `slow_consumer`: a connection cut because its writes stayed blocked for
///   `--write-stall-timeout-ms`.
/// - `too_large`: a connection closed for sending a websocket message above
///   `--max-message-bytes`.
/// - `bus_queue_full`: a room frame not published to Redis because the publish queue
///   (`--bus-queue`) was full.
/// - `bus_lagged`: frames from Redis lost because the receive buffer (`--bus-receive-buffer`)
///   overflowed.
/// - `backend_queue_full`: a message of a backend channel (notification, moderation return,
///   broadcast) dropped because its handler's queue was full.
/// - `refusals`: a connection closed for sending too many refused events (reserved: counted by
///   whoever adds that disconnect).
pub const DROP_REASONS: [&str; 8] = [
    "rate_limited",
    "queue_full",
    "slow_consumer",
    "too_large",
    "bus_queue_full",
    "bus_lagged",
    "backend_queue_full",
    "refusals",
];

/// Upper bounds of the buckets of `chat_delivery_latency_seconds`, in seconds (the `+Inf`
/// bucket follows).
pub const DELIVERY_LATENCY_BOUNDS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Upper bounds of the buckets of `chat_redis_command_duration_seconds`, in seconds (the `+Inf`
/// bucket follows).
pub const REDIS_COMMAND_BOUNDS: [f64; 11] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Rooms a worker reports in its [`WorkerReport::Rooms`] line at most.
pub const TOP_ROOMS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerReport {
    /// The worker listens and serves.
    Ready,
    /// Cumulative counts since the worker started.
    Counts {
        connects: u64,
        disconnects: u64,
        /// Rooms with at least one local member now.
        rooms: u64,
    },
    /// The worker stopped accepting and is closing its clients.
    Draining,
    /// The worker's metrics: counters cumulative since the process started, gauges as of now.
    Metrics(Box<MetricsSnapshot>),
    /// The worker's busiest rooms now, most local members first.
    Rooms { rooms: Vec<RoomMembers> },
}

/// A room and its members on one worker (or, summed by the supervisor, on the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMembers {
    pub room: String,
    pub members: u64,
}

/// One report of a worker's metrics. Counters only grow during a process's life; the supervisor
/// adds a dead process's last values to the next one's, so the host's series keep growing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Users with at least one logged-in socket on this worker.
    pub logged_in_users: u64,
    /// Whether the worker's Redis bus is connected now.
    pub redis_up: bool,
    /// socket.io events received, by [`EVENT_LABELS`] name.
    pub events: BTreeMap<String, u64>,
    /// Things dropped, by [`DROP_REASONS`] name.
    pub dropped: BTreeMap<String, u64>,
    /// socket.io event packets handed to a client's transport (websocket or long-polling).
    pub deliveries: u64,
    /// Room frames Redis accepted for publishing.
    pub bus_published: u64,
    /// Frames received from Redis (rooms, users, backend channels).
    pub bus_received: u64,
    /// Sampled delivery latencies, over [`DELIVERY_LATENCY_BOUNDS`].
    pub delivery_latency: HistogramSnapshot,
    /// Redis command and pipeline durations, over [`REDIS_COMMAND_BOUNDS`].
    pub redis_command: HistogramSnapshot,
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
    /// CPU time used so far (user + system), in microseconds.
    pub cpu_micros: u64,
}

impl MetricsSnapshot {
    /// Adds `other`'s counters and histograms to these (gauges are left alone): how a supervisor
    /// carries a dead worker's counts over to the next incarnation.
    pub fn add_counters(&mut self, other: &MetricsSnapshot) {
        let add_labelled = |mine: &mut BTreeMap<String, u64>, theirs: &BTreeMap<String, u64>| {
            for (label, value) in theirs {
                let entry = mine.entry(label.clone()).or_default();
                *entry = entry.saturating_add(*value);
            }
        };
        add_labelled(&mut self.events, &other.events);
        add_labelled(&mut self.dropped, &other.dropped);
        self.deliveries = self.deliveries.saturating_add(other.deliveries);
        self.bus_published = self.bus_published.saturating_add(other.bus_published);
        self.bus_received = self.bus_received.saturating_add(other.bus_received);
        self.delivery_latency.add(&other.delivery_latency);
        self.redis_command.add(&other.redis_command);
        self.cpu_micros = self.cpu_micros.saturating_add(other.cpu_micros);
    }
}

/// A histogram's state: the count of observations in each bucket (not cumulative; one more than
/// the bounds, the last being `+Inf`) and their sum in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    pub buckets: Vec<u64>,
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s observations to these (bucket by bucket; a shorter list is padded).
    pub fn add(&mut self, other: &HistogramSnapshot) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }
}

impl WorkerReport {
    /// The line written to the pipe, newline included.
    pub fn to_line(&self) -> String {
        // Strings, integers and maps with string keys: serialization cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }

    /// A `rooms` report of the first of `rooms` (busiest first) whose line fits in [`MAX_LINE`]:
    /// room ids are bounded by a setting, not by the protocol, so the line is cut to size.
    pub fn rooms_within_line(rooms: impl IntoIterator<Item = RoomMembers>) -> Self {
        // `{"kind":"rooms","rooms":[` + `]}` + newline, and per room `{"room":"","members":},`.
        const FRAME: usize = 32;
        const PER_ROOM: usize = 24 + 20;
        let mut used = FRAME;
        let mut kept = Vec::new();
        for room in rooms.into_iter().take(TOP_ROOMS) {
            // Room ids are ASCII without quotes or backslashes: no JSON escaping grows them.
            let cost = PER_ROOM + room.room.len();
            if used + cost > MAX_LINE {
                break;
            }
            used += cost;
            kept.push(room);
        }
        WorkerReport::Rooms { rooms: kept }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_snapshot() -> MetricsSnapshot {
        let labels = |names: &[&str]| names.iter().map(|n| (n.to_string(), u64::MAX)).collect();
        let histogram = |bounds: usize| HistogramSnapshot {
            buckets: vec![u64::MAX; bounds + 1],
            sum_nanos: u64::MAX,
        };
        MetricsSnapshot {
            logged_in_users: u64::MAX,
            redis_up: false,
            events: labels(&EVENT_LABELS),
            dropped: labels(&DROP_REASONS),
            deliveries: u64::MAX,
            bus_published: u64::MAX,
            bus_received: u64::MAX,
            delivery_latency: histogram(DELIVERY_LATENCY_BOUNDS.len()),
            redis_command: histogram(REDIS_COMMAND_BOUNDS.len()),
            rss_bytes: u64::MAX,
            cpu_micros: u64::MAX,
        }
    }

    #[test]
    fn lines_round_trip() {
        for report in [
            WorkerReport::Ready,
            WorkerReport::Draining,
            WorkerReport::Counts {
                connects: 7,
                disconnects: 2,
                rooms: 3,
            },
            WorkerReport::Metrics(Box::new(full_snapshot())),
            WorkerReport::Rooms {
                rooms: vec![RoomMembers {
                    room: "lobby".into(),
                    members: 3,
                }],
            },
        ] {
            let line = report.to_line();
            assert!(line.ends_with('\n') && line.len() < 4096);
            assert_eq!(WorkerReport::from_line(&line).unwrap(), report);
        }
        assert_eq!(
            WorkerReport::Counts {
                connects: 1,
                disconnects: 0,
                rooms: 1
            }
            .to_line(),
            "{\"kind\":\"counts\",\"connects\":1,\"disconnects\":0,\"rooms\":1}\n"
        );
        assert!(WorkerReport::from_line("{\"kind\":\"boom\"}").is_err());
    }

    #[test]
    fn the_largest_lines_stay_atomic() {
        // Every counter at its maximum: the metrics line is as long as it can be.
        let metrics = WorkerReport::Metrics(Box::new(full_snapshot())).to_line();
        assert!(
            metrics.len() <= MAX_LINE,
            "metrics line of {} bytes",
            metrics.len()
        );
        // Rooms with ids far beyond any sane setting are cut to the line budget, busiest first.
        let huge = (0..TOP_ROOMS).map(|i| RoomMembers {
            room: format!("{i}{}", "r".repeat(1000)),
            members: u64::MAX,
        });
        let report = WorkerReport::rooms_within_line(huge);
        let line = report.to_line();
        assert!(line.len() <= MAX_LINE, "rooms line of {} bytes", line.len());
        let WorkerReport::Rooms { rooms } = report else {
            unreachable!()
        };
        assert_eq!(rooms.len(), 3);
        assert!(rooms[0].room.starts_with('0'));
        // Ordinary ids all fit.
        let small = (0..20).map(|i| RoomMembers {
            room: format!("room-{i}"),
            members: 20 - i,
        });
        let WorkerReport::Rooms { rooms } = WorkerReport::rooms_within_line(small) else {
            unreachable!()
        };
        assert_eq!(rooms.len(), TOP_ROOMS);
    }

    #[test]
    fn counters_carry_over_and_gauges_do_not() {
        let mut base = MetricsSnapshot::default();
        let mut dead = full_snapshot();
        dead.events = [("say".to_owned(), 5)].into();
        dead.deliveries = 7;
        dead.cpu_micros = 100;
        dead.delivery_latency = HistogramSnapshot {
            buckets: vec![1; 13],
            sum_nanos: 3,
        };
        base.add_counters(&dead);
        base.add_counters(&dead);
        assert_eq!(base.events["say"], 10);
        assert_eq!((base.deliveries, base.cpu_micros), (14, 200));
        assert_eq!(base.delivery_latency.count(), 26);
        assert_eq!((base.rss_bytes, base.logged_in_users), (0, 0));
    }

    #[test]
    fn histograms_add_bucket_by_bucket() {
        let mut base = HistogramSnapshot::default();
        base.add(&HistogramSnapshot {
            buckets: vec![1, 2, 3],
            sum_nanos: 10,
        });
        base.add(&HistogramSnapshot {
            buckets: vec![1, 0, 1],
            sum_nanos: 5,
        });
        assert_eq!(base.buckets, vec![2, 2, 4]);
        assert_eq!((base.count(), base.sum_nanos), (8, 15));
    }
}
