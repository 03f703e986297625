//! One worker's keeper: starts the worker, reads its reports, waits for it to exit, and starts it
//! again on the same port while the supervisor runs, backing off when it keeps crashing.

use std::{
    net::TcpListener,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use chat_protocol::{
    report::WorkerReport,
    status::{ConsoleEvent, WorkerState},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::unix::pipe,
    sync::watch,
};

use crate::{spawn::WorkerCommand, state::ClusterState};

/// A worker that ran at least this long before exiting is respawned at once; one that died
/// sooner is in a crash loop and waits, longer each time.
const STABLE_RUN: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

pub struct Keeper {
    pub id: u32,
    pub port: u16,
    pub listener: TcpListener,
    pub command: Arc<WorkerCommand>,
    pub state: Arc<ClusterState>,
    pub backoff_max: Duration,
}

impl Keeper {
    /// Runs until `stopping` turns true and the current worker has exited.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        let mut backoff = Duration::ZERO;
        let mut first = true;
        while !*stopping.borrow() {
            if !first {
                self.state.update(self.id, |slot| slot.restarts += 1);
            }
            first = false;
            let started = Instant::now();
            self.run_once().await;
            if *stopping.borrow() {
                break;
            }
            backoff = next_backoff(backoff, started.elapsed(), self.backoff_max);
            if !backoff.is_zero() {
                tracing::warn!(
                    worker = self.id,
                    backoff_ms = backoff.as_millis() as u64,
                    "worker exits soon after start; waiting before the next start"
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopping.wait_for(|stop| *stop) => break,
                }
            }
        }
    }

    /// Starts the worker once and returns when it has exited.
    async fn run_once(&self) {
        let spawned = match self.command.spawn(self.id, self.port, &self.listener) {
            Ok(spawned) => spawned,
            Err(err) => {
                tracing::error!(worker = self.id, cause = %err, "could not start worker");
                return;
            }
        };
        let mut child = spawned.child;
        let pid = child.id().unwrap_or(0);
        self.state.update(self.id, |slot| {
            slot.pid = pid;
            slot.state = WorkerState::Starting;
            slot.connects = 0;
            slot.disconnects = 0;
            slot.rooms = 0;
            slot.up_since = SystemTime::now();
        });
        self.state.announce(ConsoleEvent::WorkerStarted {
            id: self.id,
            pid,
            port: self.port,
        });
        tracing::info!(worker = self.id, pid, port = self.port, "worker started");

        let reports = self.read_reports(spawned.reports, pid);
        let (status, ()) = tokio::join!(child.wait(), reports);
        let status_text = match &status {
            Ok(status) => describe_exit(*status),
            Err(err) => format!("wait failed: {err}"),
        };
        // A dead worker has no connections, whatever its last report said.
        self.state.update(self.id, |slot| {
            slot.pid = 0;
            slot.state = WorkerState::Down;
            slot.connects = 0;
            slot.disconnects = 0;
            slot.rooms = 0;
            slot.retire_metrics();
        });
        self.state.announce(ConsoleEvent::WorkerExited {
            id: self.id,
            pid,
            port: self.port,
            status: status_text.clone(),
        });
        tracing::info!(worker = self.id, pid, status = %status_text, "worker exited");
    }

    /// Applies the worker's report lines to its slot until the pipe closes (the worker exited).
    async fn read_reports(&self, fd: std::os::fd::OwnedFd, pid: u32) {
        let receiver = match pipe::Receiver::from_owned_fd(fd) {
            Ok(receiver) => receiver,
            Err(err) => {
                tracing::error!(worker = self.id, cause = %err, "cannot read worker reports");
                return;
            }
        };
        let mut lines = BufReader::new(receiver).lines();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(worker = self.id, cause = %err, "report pipe failed");
                    return;
                }
            };
            match WorkerReport::from_line(&line) {
                Ok(report) => self.apply(report, pid),
                Err(err) => tracing::warn!(worker = self.id, cause = %err, "bad report line"),
            }
        }
    }

    fn apply(&self, report: WorkerReport, pid: u32) {
        match report {
            WorkerReport::Ready => {
                self.state
                    .update(self.id, |slot| slot.state = WorkerState::Ready);
                self.state.announce(ConsoleEvent::WorkerReady {
                    id: self.id,
                    pid,
                    port: self.port,
                });
            }
            WorkerReport::Draining => {
                self.state
                    .update(self.id, |slot| slot.state = WorkerState::Draining);
            }
            WorkerReport::Counts {
                connects,
                disconnects,
                rooms,
            } => self.state.update(self.id, |slot| {
                slot.connects = connects;
                slot.disconnects = disconnects;
                slot.rooms = rooms;
            }),
            WorkerReport::Metrics(snapshot) => self
                .state
                .update(self.id, |slot| slot.metrics = Some(*snapshot)),
            WorkerReport::Rooms { rooms } => self
                .state
                .update(self.id, |slot| slot.busiest_rooms = rooms),
        }
    }
}

/// The wait before the next start: none after a stable run, else double the last wait, from
/// [`FIRST_BACKOFF`] up to `max`.
fn next_backoff(previous: Duration, ran_for: Duration, max: Duration) -> Duration {
    if ran_for >= STABLE_RUN {
        Duration::ZERO
    } else {
        (previous * 2).clamp(FIRST_BACKOFF, max.max(FIRST_BACKOFF))
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(signal) = status.signal() {
        match nix::sys::signal::Signal::try_from(signal) {
            Ok(signal) => format!("killed by {signal}"),
            Err(_) => format!("killed by signal {signal}"),
        }
    } else {
        "unknown".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stable_worker_restarts_at_once_and_a_crash_loop_backs_off_to_the_cap() {
        let max = Duration::from_secs(2);
        let crash = Duration::from_millis(10);
        assert_eq!(
            next_backoff(Duration::from_secs(1), STABLE_RUN, max),
            Duration::ZERO
        );
        let mut waits = Vec::new();
        let mut backoff = Duration::ZERO;
        for _ in 0..6 {
            backoff = next_backoff(backoff, crash, max);
            waits.push(backoff.as_millis());
        }
        assert_eq!(waits, vec![250, 500, 1000, 2000, 2000, 2000]);
        // Recovery resets the wait.
        assert_eq!(next_backoff(backoff, STABLE_RUN * 2, max), Duration::ZERO);
    }
}
