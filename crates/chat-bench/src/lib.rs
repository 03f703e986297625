//! chat-bench: a load generator for chat-cluster. Scenarios print one JSON summary line and a
//! readable table; the harness's own CPU time is part of every report, so a saturated load
//! generator is visible instead of being mistaken for a slow server.

pub mod conn;
pub mod dm;
pub mod fanout;
pub mod floor;
pub mod idle;
pub mod storm;

use std::net::IpAddr;

/// CPU time (user + system) this process has used so far, in seconds.
pub fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    usage.map_or(0.0, |u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}

/// CPU time of a set of processes, split into user space and the kernel (system calls, and the
/// network stack work they do: on loopback, a send also runs the receiver's side), in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
}

impl CpuTimes {
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    /// The time used since `earlier`, a reading of the same processes.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// CPU time the given processes have used so far, from /proc/<pid>/stat (all threads of each);
/// a process that is gone counts as zero.
pub fn processes_cpu(pids: &[u32]) -> CpuTimes {
    // SAFETY: sysconf has no preconditions; _SC_CLK_TCK is always defined on Linux.
    let ticks_per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesized command name: utime is the 12th, stime the 13th.
            let after_name = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some(CpuTimes {
                user: utime / ticks_per_second,
                system: stime / ticks_per_second,
            })
        })
        .fold(CpuTimes::default(), |sum, one| CpuTimes {
            user: sum.user + one.user,
            system: sum.system + one.system,
        })
}

/// `count` loopback source addresses that differ in the third octet (127.0.1.1, 127.0.2.1, ...),
/// so that nginx's `ip_hash`, which keys on the first three octets, spreads them. At most
/// 65,535 (127.0.1.1 to 127.255.255.1).
pub fn loopback_sources(count: usize) -> Vec<IpAddr> {
    (0..count.min(65_535))
        .map(|i| IpAddr::from([127, ((i + 1) / 256) as u8, ((i + 1) % 256) as u8, 1]))
        .collect()
}

/// Prints a report as one JSON line on stdout, then its plain fields as an aligned table on
/// stderr (lists, such as a ramp's steps, go to `print_rows`).
pub fn print_report(report: &impl serde::Serialize) {
    let value = serde_json::to_value(report).unwrap_or_default();
    println!("{value}");
    if let Some(fields) = value.as_object() {
        for (key, field) in fields {
            if field.is_array() || field.is_object() {
                continue;
            }
            eprintln!("{key:>34}  {}", shown(field));
        }
    }
}

/// Prints rows (e.g. a ramp's steps) as a table on stderr: one line per row, the given
/// columns, each as wide as its widest cell.
pub fn print_rows<T: serde::Serialize>(rows: &[T], columns: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let value = serde_json::to_value(row).unwrap_or_default();
            columns
                .iter()
                .map(|c| value.get(*c).map_or_else(|| "-".to_owned(), shown))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).fold(c.len(), usize::max))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:>width$}"))
            .collect();
        padded.join("  ")
    };
    let header: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    eprintln!("{}", line(&header));
    for row in &cells {
        eprintln!("{}", line(row));
    }
}

/// A JSON value as a table cell: floats with three decimals, strings without quotes.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds from a command line as a duration, clamped to `[0, max]` (NaN counts as 0), so that
/// no input can panic or run unbounded.
pub fn bounded_seconds(seconds: f64, max: f64) -> std::time::Duration {
    let seconds = if seconds.is_nan() { 0.0 } else { seconds };
    std::time::Duration::from_secs_f64(seconds.clamp(0.0, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_is_split_into_user_and_system_time() {
        let me = [std::process::id()];
        let start = processes_cpu(&me);
        // Spins in user space until the kernel has charged at least two clock ticks to it
        // (bounded at 10 s of wall time).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spin = 0u64;
        while processes_cpu(&me).since(start).user < 0.02 && std::time::Instant::now() < deadline {
            for i in 0..100_000u64 {
                spin = std::hint::black_box(spin.wrapping_add(i));
            }
        }
        let used = processes_cpu(&me).since(start);
        assert!(used.user >= 0.02, "user time not seen: {used:?}");
        assert!(used.system >= 0.0 && used.total() >= used.user, "{used:?}");
    }

    #[test]
    fn a_process_that_is_gone_counts_as_zero() {
        // Beyond the kernel's pid limit (at most 2^22), so never a live process.
        assert_eq!(processes_cpu(&[u32::MAX]), CpuTimes::default());
    }
}
