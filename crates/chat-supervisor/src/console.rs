//! The supervisor's console on stdout: on a terminal, a table of live counts redrawn every
//! second; otherwise JSON lines, one per lifecycle event and one `counts` line per second at
//! most, only when the counts changed.

use std::{
    io::{IsTerminal, Write},
    sync::Arc,
    time::Duration,
};

use chat_protocol::status::{ConsoleEvent, StatusResponse};
use tokio::sync::broadcast::error::RecvError;

use crate::state::ClusterState;

const REFRESH: Duration = Duration::from_secs(1);

pub fn spawn(state: Arc<ClusterState>, note: String) -> tokio::task::JoinHandle<()> {
    let terminal = stdout_is_terminal();
    // Subscribed before the task starts, so no event announced after `spawn` returns is missed.
    let events = state.subscribe();
    tokio::spawn(async move {
        if terminal {
            redraw_loop(state, note).await;
        } else {
            json_lines_loop(state, events).await;
        }
    })
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints one JSON line. Used for the lines the keepers and the run loop emit directly too.
pub fn print_json(event: &ConsoleEvent) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the supervisor.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

async fn json_lines_loop(
    state: Arc<ClusterState>,
    mut events: tokio::sync::broadcast::Receiver<ConsoleEvent>,
) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_counts = None;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => print_json(&event),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let counts = state.counts();
                if last_counts.as_ref() != Some(&counts) {
                    print_json(&counts);
                    last_counts = Some(counts);
                }
            }
        }
    }
}

async fn redraw_loop(state: Arc<ClusterState>, note: String) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut table = render_table(&state.status());
        if !note.is_empty() {
            table = format!("{note}\n\n{table}");
        }
        let mut out = std::io::stdout().lock();
        // Home the cursor and clear the screen, then draw.
        let _ = write!(out, "\x1b[H\x1b[2J{table}");
        let _ = out.flush();
    }
}

pub fn render_table(status: &StatusResponse) -> String {
    let mut table = format!(
        "chat-cluster supervisor: {} connections, {} deliveries/s on {} workers\n\n",
        status.total_connections,
        status.total_deliveries_per_sec,
        status.workers.len()
    );
    table.push_str(&format!(
        "{:>3}  {:>5}  {:>8}  {:>9}  {:>12}  {:>6}  {:>12}  {:>8}  {}\n",
        "id",
        "port",
        "pid",
        "state",
        "connections",
        "rooms",
        "deliveries/s",
        "restarts",
        "up since"
    ));
    for worker in &status.workers {
        table.push_str(&format!(
            "{:>3}  {:>5}  {:>8}  {:>9}  {:>12}  {:>6}  {:>12}  {:>8}  {}\n",
            worker.id,
            worker.port,
            worker.pid,
            format!("{:?}", worker.state).to_lowercase(),
            worker.connections,
            worker.rooms,
            worker.deliveries_per_sec,
            worker.restarts,
            worker.up_since
        ));
    }
    table.push_str("\nCtrl-C: stop (workers drain, clients reconnect elsewhere)\n");
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ClusterState;

    #[test]
    fn the_table_shows_deliveries_per_second() {
        let state = ClusterState::new(6001, 2);
        let table = render_table(&state.status());
        assert!(table.contains("0 deliveries/s on 2 workers"), "{table}");
        assert!(
            table.lines().nth(2).unwrap().contains("deliveries/s"),
            "{table}"
        );
    }
}
