//! `GET /metrics`: the host's metrics in the Prometheus text exposition format (0.0.4), encoded
//! by `prometheus-client` from the supervisor's slots at each scrape. Every series carries
//! `worker="<id>"`; counters are the sum over every process that ran in the slot (see
//! [`crate::state`]), so a respawn does not reset them.
//!
//! The family names are fixed: dashboards (`deploy/grafana-dashboard.json`) and alerts depend
//! on them. README "Metrics" lists them with their labels.

use std::sync::Arc;

use chat_protocol::{
    report::{
        DELIVERY_LATENCY_BOUNDS, DROP_REASONS, EVENT_LABELS, HistogramSnapshot,
        REDIS_COMMAND_BOUNDS,
    },
    status::WorkerState,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use crate::state::{ClusterState, SlotMetrics};

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A registry whose one collector reads `state` at each scrape.
pub fn registry(state: Arc<ClusterState>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SlotsCollector { state }));
    registry
}

/// Encodes `registry` as the answer to a scrape.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

struct SlotsCollector {
    state: Arc<ClusterState>,
}

impl std::fmt::Debug for SlotsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotsCollector").finish_non_exhaustive()
    }
}

/// One family: its name (counters without `_total`, which the encoder adds), help and type.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
}

const fn family(name: &'static str, help: &'static str, kind: MetricType) -> Family {
    Family { name, help, kind }
}

impl Collector for SlotsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge, Histogram};
        // A copy, so that no lock is held while the text is written.
        let slots = self.state.metrics_view();
        let worker = |slot: &SlotMetrics| [("worker", slot.id.to_string())];

        let mut gauge = |family: Family,
                         value: &dyn Fn(&SlotMetrics) -> Option<u64>|
         -> Result<(), std::fmt::Error> {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for slot in &slots {
                if let Some(value) = value(slot) {
                    let labels = worker(slot);
                    metric.encode_family(&labels)?.encode_gauge(&value)?;
                }
            }
            Ok(())
        };
        let up = |slot: &SlotMetrics| slot.reporting;
        gauge(
            family("chat_connections", "Open socket.io connections.", Gauge),
            &|slot| Some(slot.connections),
        )?;
        gauge(
            family(
                "chat_rooms",
                "Rooms with at least one member on the worker.",
                Gauge,
            ),
            &|slot| Some(slot.rooms),
        )?;
        gauge(
            family(
                "chat_logged_in_users",
                "Users with at least one logged-in socket on the worker.",
                Gauge,
            ),
            &|slot| up(slot).then_some(slot.totals.logged_in_users),
        )?;
        gauge(
            family(
                "chat_worker_up",
                "1 while the worker process serves, 0 while it starts, drains or is down.",
                Gauge,
            ),
            &|slot| Some(u64::from(slot.state == WorkerState::Ready)),
        )?;
        gauge(
            family(
                "chat_redis_up",
                "1 while the worker's Redis bus is connected, else 0 (absent while the worker is down).",
                Gauge,
            ),
            &|slot| up(slot).then_some(u64::from(slot.totals.redis_up)),
        )?;
        gauge(
            family(
                "process_resident_memory_bytes",
                "Resident memory of the worker process, in bytes.",
                Gauge,
            ),
            &|slot| up(slot).then_some(slot.totals.rss_bytes),
        )?;

        let mut counter =
            |family: Family, value: &dyn Fn(&SlotMetrics) -> u64| -> Result<(), std::fmt::Error> {
                let mut metric =
                    encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
                for slot in &slots {
                    let labels = worker(slot);
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&value(slot), None)?;
                }
                Ok(())
            };
        counter(
            family(
                "chat_deliveries",
                "socket.io events written to clients (handed to a websocket or a long-polling response).",
                Counter,
            ),
            &|slot| slot.totals.deliveries,
        )?;
        counter(
            family(
                "chat_bus_published",
                "Room frames Redis accepted for publishing.",
                Counter,
            ),
            &|slot| slot.totals.bus_published,
        )?;
        counter(
            family(
                "chat_bus_received",
                "Frames received from Redis (rooms, users, backend channels).",
                Counter,
            ),
            &|slot| slot.totals.bus_received,
        )?;
        counter(
            family(
                "chat_worker_restarts",
                "Times the supervisor started the worker again after it exited.",
                Counter,
            ),
            &|slot| u64::from(slot.restarts),
        )?;

        {
            let mut metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time of the worker process (user + system), in seconds.",
                None,
                Counter,
            )?;
            for slot in &slots {
                let totals = &slot.totals;
                let labels = worker(slot);
                metric
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(
                        &(totals.cpu_micros as f64 / 1e6),
                        None,
                    )?;
            }
        }

        let mut labelled = |family: Family,
                            label: &'static str,
                            values: &[&str],
                            map: &dyn Fn(
            &chat_protocol::report::MetricsSnapshot,
        ) -> &std::collections::BTreeMap<String, u64>|
         -> Result<(), std::fmt::Error> {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for slot in &slots {
                let totals = &slot.totals;
                for value in values {
                    let count = map(totals).get(*value).copied().unwrap_or(0);
                    let labels = [
                        ("worker", slot.id.to_string()),
                        (label, (*value).to_owned()),
                    ];
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
            Ok(())
        };
        labelled(
            family(
                "chat_events_received",
                "socket.io events received from clients, by event name (`other`: names the server does not know).",
                Counter,
            ),
            "event",
            &EVENT_LABELS,
            &|totals| &totals.events,
        )?;
        labelled(
            family(
                "chat_dropped",
                "Things not delivered or not accepted, by reason (README \"Metrics\").",
                Counter,
            ),
            "reason",
            &DROP_REASONS,
            &|totals| &totals.dropped,
        )?;

        let mut histogram =
            |family: Family,
             bounds: &[f64],
             value: &dyn Fn(&chat_protocol::report::MetricsSnapshot) -> &HistogramSnapshot|
             -> Result<(), std::fmt::Error> {
                let mut metric =
                    encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
                for slot in &slots {
                    let totals = &slot.totals;
                    let snapshot = value(totals);
                    let buckets: Vec<(f64, u64)> = bounds
                        .iter()
                        .copied()
                        .chain([f64::INFINITY])
                        .zip(snapshot.buckets.iter().copied().chain(std::iter::repeat(0)))
                        .collect();
                    let labels = worker(slot);
                    metric
                        .encode_family(&labels)?
                        .encode_histogram::<NoLabelSet>(
                            snapshot.sum_nanos as f64 / 1e9,
                            snapshot.count(),
                            &buckets,
                            None,
                        )?;
                }
                Ok(())
            };
        histogram(
            family(
                "chat_delivery_latency_seconds",
                "Time from the start of a room message's local fan-out to each write of it to a local client, sampled (one message in 16).",
                Histogram,
            ),
            &DELIVERY_LATENCY_BOUNDS,
            &|totals| &totals.delivery_latency,
        )?;
        histogram(
            family(
                "chat_redis_command_duration_seconds",
                "Duration of Redis commands and pipelines (publishing, inbox and unread-store scripts and reads).",
                Histogram,
            ),
            &REDIS_COMMAND_BOUNDS,
            &|totals| &totals.redis_command,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::report::MetricsSnapshot;

    #[test]
    fn every_family_is_exposed_per_worker_and_counters_survive_a_respawn() {
        let state = Arc::new(ClusterState::new(6001, 2));
        let mut first = MetricsSnapshot {
            deliveries: 40,
            redis_up: true,
            rss_bytes: 1_000,
            cpu_micros: 1_500_000,
            ..MetricsSnapshot::default()
        };
        first.events.insert("say".into(), 3);
        first.dropped.insert("rate_limited".into(), 2);
        first.delivery_latency.buckets = vec![0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        first.delivery_latency.sum_nanos = 2_000_000_000;
        state.update(1, |slot| {
            slot.metrics = Some(first.clone());
            slot.retire_metrics();
            slot.restarts = 1;
            slot.metrics = Some(MetricsSnapshot {
                deliveries: 2,
                ..first.clone()
            });
        });
        let text = encode(&registry(Arc::clone(&state))).unwrap();
        for line in [
            "# TYPE chat_deliveries_total counter",
            "chat_deliveries_total{worker=\"1\"} 42",
            "chat_deliveries_total{worker=\"0\"} 0",
            "chat_events_received_total{worker=\"1\",event=\"say\"} 6",
            "chat_events_received_total{worker=\"0\",event=\"other\"} 0",
            "chat_dropped_total{worker=\"1\",reason=\"rate_limited\"} 4",
            "chat_worker_restarts_total{worker=\"1\"} 1",
            "chat_redis_up{worker=\"1\"} 1",
            "process_resident_memory_bytes{worker=\"1\"} 1000",
            "process_cpu_seconds_total{worker=\"1\"} 3.0",
            "chat_delivery_latency_seconds_bucket{worker=\"1\",le=\"0.0001\"} 0",
            "chat_delivery_latency_seconds_bucket{worker=\"1\",le=\"0.00025\"} 4",
            "chat_delivery_latency_seconds_bucket{worker=\"1\",le=\"+Inf\"} 6",
            "chat_delivery_latency_seconds_count{worker=\"1\"} 6",
            "chat_delivery_latency_seconds_sum{worker=\"1\"} 4.0",
            "chat_connections{worker=\"0\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // A worker that never reported has no Redis state to show.
        assert!(!text.contains("chat_redis_up{worker=\"0\"}"), "{text}");
    }
}
