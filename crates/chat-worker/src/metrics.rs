//! The worker's metrics: process-wide counters and histograms that call sites bump with one
//! line, and the snapshot the report pipe carries to the supervisor (which serves `/metrics`).
//!
//! Cost by design: a count is one relaxed atomic add on a static (no lock, no allocation, no
//! syscall; a worker runs on one thread, so the cache line stays put). Histograms are fixed
//! bucket arrays of atomics. The delivery latency is sampled: one room message in
//! [`LATENCY_SAMPLE_EVERY`] is timed, at every local write of it (engineioxide's probe, see
//! `vendor/README.md`); the others cost one relaxed add to decide so.
//!
//! Without the crate feature `metrics` (on by default) every count, histogram and probe above
//! is compiled out and every figure stays 0: a build for measuring what they cost
//! (`bash scripts/bench.sh --metrics-off`), not for running.
//!
//! The statics are per process. A worker process is one worker, so they are the worker's; tests
//! that run several workers in one process see their sum.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use chat_protocol::report::{
    DELIVERY_LATENCY_BOUNDS, DROP_REASONS, EVENT_LABELS, HistogramSnapshot, MetricsSnapshot,
    REDIS_COMMAND_BOUNDS,
};

/// One room message in this many has its local deliveries timed.
pub const LATENCY_SAMPLE_EVERY: u64 = 16;

/// A monotonic count.
#[derive(Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        if cfg!(feature = "metrics") {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// Room frames Redis accepted (`chat_bus_published_total`).
pub static BUS_PUBLISHED: Counter = Counter::new();
/// Frames received from Redis (`chat_bus_received_total`).
pub static BUS_RECEIVED: Counter = Counter::new();

static EVENTS: [Counter; EVENT_LABELS.len()] = [const { Counter::new() }; EVENT_LABELS.len()];
static DROPPED: [Counter; DROP_REASONS.len()] = [const { Counter::new() }; DROP_REASONS.len()];
static MESSAGES_FANNED_OUT: Counter = Counter::new();
static DELIVERY_LATENCY: Histogram<{ DELIVERY_LATENCY_BOUNDS.len() + 1 }> =
    Histogram::new(&DELIVERY_LATENCY_BOUNDS);
static REDIS_COMMAND: Histogram<{ REDIS_COMMAND_BOUNDS.len() + 1 }> =
    Histogram::new(&REDIS_COMMAND_BOUNDS);

/// Why something was dropped: the `reason` label of `chat_dropped_total`. The order is that of
/// [`DROP_REASONS`], which documents each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    RateLimited,
    QueueFull,
    SlowConsumer,
    TooLarge,
    BusQueueFull,
    BusLagged,
    BackendQueueFull,
    Refusals,
}

/// Counts `n` things dropped for `reason`.
#[inline]
pub fn dropped(reason: Dropped, n: u64) {
    DROPPED[reason as usize].add(n);
}

/// Counts the sockets a broadcast skipped because their send queue was full (`queue_full`);
/// sockets skipped because they were closing are not drops.
pub fn emit_failed(err: &socketioxide::BroadcastError) {
    if let socketioxide::BroadcastError::Socket(errors) = err {
        let full = errors
            .iter()
            .filter(|err| matches!(err, socketioxide::SocketError::InternalChannelFull))
            .count();
        dropped(Dropped::QueueFull, full as u64);
    }
}

/// Counts one socket.io event received, by name (names the server does not know count as
/// `other`, so clients cannot grow the label set).
#[inline]
pub fn event_received(event: &str) {
    if !cfg!(feature = "metrics") {
        return;
    }
    let index = EVENT_LABELS[..EVENT_LABELS.len() - 1]
        .iter()
        .position(|known| *known == event)
        .unwrap_or(EVENT_LABELS.len() - 1);
    EVENTS[index].inc();
}

/// Times one Redis command or pipeline: the duration is observed when the guard drops.
#[must_use = "the command is timed until the guard drops"]
pub fn redis_command_timer() -> RedisTimer {
    RedisTimer(Instant::now())
}

/// See [`redis_command_timer`].
#[derive(Debug)]
pub struct RedisTimer(Instant);

impl Drop for RedisTimer {
    fn drop(&mut self) {
        REDIS_COMMAND.observe(self.0.elapsed());
    }
}

/// Called as a room message starts its local fan-out: one in [`LATENCY_SAMPLE_EVERY`] becomes
/// the latency sample, timed from now to each write of it to a local client. Hold the guard
/// across the emit; it disarms the probe when dropped (if no socket took the message).
#[must_use = "the probe stays armed until the guard drops"]
#[inline]
pub fn delivery_probe() -> Option<DeliveryProbe> {
    if !cfg!(feature = "metrics") {
        return None;
    }
    let seq = MESSAGES_FANNED_OUT.0.fetch_add(1, Ordering::Relaxed);
    // A sampled fan-out that reached no socket passes its turn to the next one.
    if !seq.is_multiple_of(LATENCY_SAMPLE_EVERY) && !SAMPLE_OWED.swap(false, Ordering::Relaxed) {
        return None;
    }
    engineioxide::probe::arm(Instant::now());
    Some(DeliveryProbe(()))
}

/// See [`delivery_probe`].
#[derive(Debug)]
pub struct DeliveryProbe(());

impl Drop for DeliveryProbe {
    fn drop(&mut self) {
        if engineioxide::probe::disarm() {
            SAMPLE_OWED.store(true, Ordering::Relaxed);
        }
    }
}

/// Set when a sampled fan-out reached no socket: the next fan-out is sampled instead.
static SAMPLE_OWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Connects engineioxide's latency probe to the histogram. Idempotent.
pub fn install() {
    engineioxide::probe::set_latency_observer(|elapsed| DELIVERY_LATENCY.observe(elapsed));
}

/// What the worker's gauges say now; the rest of a snapshot comes from the statics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub logged_in_users: u64,
    pub redis_up: bool,
}

/// The worker's metrics now.
pub fn snapshot(gauges: Gauges) -> MetricsSnapshot {
    let labelled = |names: &[&str], counters: &[Counter]| {
        names
            .iter()
            .zip(counters)
            .map(|(name, counter)| ((*name).to_owned(), counter.get()))
            .collect()
    };
    let mut dropped: std::collections::BTreeMap<String, u64> = labelled(&DROP_REASONS, &DROPPED);
    // The engine closes oversized websocket messages' sessions itself, and counts them.
    if let Some(too_large) = dropped.get_mut(DROP_REASONS[Dropped::TooLarge as usize]) {
        *too_large += engineioxide::probe::too_large_closed();
    }
    let (rss_bytes, cpu_micros) = process_usage();
    MetricsSnapshot {
        logged_in_users: gauges.logged_in_users,
        redis_up: gauges.redis_up,
        events: labelled(&EVENT_LABELS, &EVENTS),
        dropped,
        deliveries: engineioxide::probe::events_written(),
        bus_published: BUS_PUBLISHED.get(),
        bus_received: BUS_RECEIVED.get(),
        delivery_latency: DELIVERY_LATENCY.snapshot(),
        redis_command: REDIS_COMMAND.snapshot(),
        rss_bytes,
        cpu_micros,
    }
}

/// Resident memory (`VmRSS` of `/proc/self/status`) and CPU time (`getrusage`), 0 where
/// unreadable.
fn process_usage() -> (u64, u64) {
    let rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    let cpu_micros = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|usage| {
            let micros =
                |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1_000_000 + t.tv_usec() as u64;
            micros(usage.user_time()) + micros(usage.system_time())
        })
        .unwrap_or(0);
    (rss_bytes, cpu_micros)
}

/// A histogram of durations over fixed bounds: `N - 1` bounds and the `+Inf` bucket.
#[derive(Debug)]
struct Histogram<const N: usize> {
    bounds_nanos: [u64; N],
    buckets: [Counter; N],
    sum_nanos: Counter,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds_seconds: &[f64]) -> Self {
        let mut bounds_nanos = [u64::MAX; N];
        let mut i = 0;
        while i < bounds_seconds.len() && i < N - 1 {
            bounds_nanos[i] = (bounds_seconds[i] * 1e9) as u64;
            i += 1;
        }
        Self {
            bounds_nanos,
            buckets: [const { Counter::new() }; N],
            sum_nanos: Counter::new(),
        }
    }

    fn observe(&self, elapsed: Duration) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The last bound is u64::MAX, so a bucket is always found.
        let index = self
            .bounds_nanos
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(N - 1);
        self.buckets[index].inc();
        self.sum_nanos.add(nanos);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(Counter::get).collect(),
            sum_nanos: self.sum_nanos.get(),
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_by_upper_bound() {
        let histogram: Histogram<3> = Histogram::new(&[0.001, 0.01]);
        histogram.observe(Duration::from_micros(1000)); // on the bound: first bucket
        histogram.observe(Duration::from_micros(1001));
        histogram.observe(Duration::from_secs(5));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets, vec![1, 1, 1]);
        assert_eq!(snapshot.sum_nanos, 5_002_001_000);
    }

    #[test]
    fn unknown_events_count_as_other_and_the_orders_agree() {
        let other = EVENTS[EVENT_LABELS.len() - 1].get();
        let say = EVENTS[1].get();
        event_received("say");
        event_received("no-such-event");
        assert_eq!(EVENTS[1].get(), say + 1);
        assert_eq!(EVENTS[EVENT_LABELS.len() - 1].get(), other + 1);
        assert_eq!(EVENT_LABELS[EVENT_LABELS.len() - 1], "other");
        // The enum's order is the label order.
        assert_eq!(DROP_REASONS[Dropped::RateLimited as usize], "rate_limited");
        assert_eq!(DROP_REASONS[Dropped::TooLarge as usize], "too_large");
        assert_eq!(DROP_REASONS[Dropped::Refusals as usize], "refusals");
        assert_eq!(Dropped::Refusals as usize, DROP_REASONS.len() - 1);
    }

    #[test]
    fn a_snapshot_reads_this_process() {
        let snapshot = snapshot(Gauges {
            logged_in_users: 2,
            redis_up: true,
        });
        assert!(snapshot.rss_bytes > 1024 * 1024, "{}", snapshot.rss_bytes);
        assert_eq!(snapshot.events.len(), EVENT_LABELS.len());
        assert_eq!(snapshot.dropped.len(), DROP_REASONS.len());
        assert_eq!(
            snapshot.delivery_latency.buckets.len(),
            DELIVERY_LATENCY_BOUNDS.len() + 1
        );
        assert!((snapshot.logged_in_users, snapshot.redis_up) == (2, true));
    }
}
