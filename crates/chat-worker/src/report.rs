//! The worker's side of the report pipe: lines to the supervisor saying ready, draining, the
//! connection counts whenever they change (at most every [`REPORT_INTERVAL`]), and the metrics
//! and busiest rooms every [`METRICS_INTERVAL`].

use std::{fs::File, io::Write, os::fd::OwnedFd, sync::Arc, time::Duration};

use chat_protocol::report::{TOP_ROOMS, WorkerReport};
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::{metrics, node::Node};

pub const REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// How often the metrics line goes out: the console's refresh, and well within a scrape interval.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Writes report lines without ever blocking the worker: a line the pipe cannot take now is
/// dropped, which is harmless because counts are cumulative and re-sent on the next change.
///
/// Writes are plain non-blocking `write(2)` calls rather than tokio pipe writes: they need no
/// reactor readiness, so the first line (ready) goes out the moment it is written.
pub struct Reporter {
    pipe: Option<File>,
}

impl Reporter {
    /// A reporter that reports nothing (a worker run on its own).
    pub fn disabled() -> Self {
        Self { pipe: None }
    }

    /// A reporter writing into the pipe the supervisor gave this process.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Self {
            pipe: Some(File::from(fd)),
        })
    }

    pub fn send(&self, report: &WorkerReport) {
        let Some(pipe) = &self.pipe else { return };
        let pipe: &File = pipe;
        let line = report.to_line();
        match (&*pipe).write(line.as_bytes()) {
            Ok(written) if written == line.len() => {}
            // Lines are far below PIPE_BUF, so the kernel writes all of one or none of it.
            Ok(_) => tracing::warn!("report line cut short"),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::debug!("report pipe full; line dropped");
            }
            Err(err) => tracing::debug!(cause = %err, "report pipe closed"),
        }
    }

    /// Sends the counts whenever they changed, and the metrics and busiest rooms every
    /// [`METRICS_INTERVAL`], until the runtime stops.
    pub fn spawn_counts(self: &Arc<Self>, node: Arc<Node>) {
        metrics::install();
        let reporter = Arc::clone(self);
        let for_metrics = Arc::clone(&node);
        tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(REPORT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let counts = node.counts();
                if last.as_ref() != Some(&counts) {
                    reporter.send(&counts);
                    last = Some(counts);
                }
            }
        });
        if self.pipe.is_none() {
            // Nobody reads metrics: a worker run on its own.
            return;
        }
        let reporter = Arc::clone(self);
        tokio::spawn(async move {
            let mut last_rooms = None;
            let mut tick = tokio::time::interval(METRICS_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                reporter.send_metrics(&for_metrics);
                let rooms =
                    WorkerReport::rooms_within_line(for_metrics.hub().busiest_rooms(TOP_ROOMS));
                if last_rooms.as_ref() != Some(&rooms) {
                    reporter.send(&rooms);
                    last_rooms = Some(rooms);
                }
            }
        });
    }

    /// Sends the worker's metrics now (also the last thing a draining worker says).
    pub fn send_metrics(&self, node: &Node) {
        if self.pipe.is_none() {
            return;
        }
        let snapshot = metrics::snapshot(metrics::Gauges {
            logged_in_users: node.hub().user_count() as u64,
            redis_up: node.bus_connected(),
        });
        self.send(&WorkerReport::Metrics(Box::new(snapshot)));
    }
}
