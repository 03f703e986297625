//! chat-bench: a load generator for chat-cluster. Scenarios print one JSON summary line and a
//! readable table; the harness's own CPU time is part of every report, so a saturated load
//! generator is visible instead of being mistaken for a slow server.

pub mod conn;
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

/// CPU time (user + system) the given processes have used so far, in seconds, from
/// /proc/<pid>/stat; a process that is gone counts as zero.
pub fn processes_cpu_seconds(pids: &[u32]) -> f64 {
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
            Some((utime + stime) / ticks_per_second)
        })
        .sum()
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
