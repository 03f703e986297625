//! Reports a worker sends its supervisor over the report pipe: one JSON object per line.
//!
//! Each line is far below PIPE_BUF (4096 bytes), so a write is atomic and lines never interleave.
//! Counters are cumulative, so a supervisor that misses nothing but the latest line is never
//! wrong for long, and connection counts are `connects - disconnects`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl WorkerReport {
    /// The line written to the pipe, newline included.
    pub fn to_line(&self) -> String {
        // Serializing a fieldless or integer-only enum cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
