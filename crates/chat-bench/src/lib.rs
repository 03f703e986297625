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
/// so that nginx's `ip_hash`, which keys on the first three octets, spreads them.
pub fn loopback_sources(count: usize) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::from([127, ((i + 1) / 256) as u8, ((i + 1) % 256) as u8, 1]))
        .collect()
}

/// Prints a report as one JSON line, then as an aligned table of its fields.
pub fn print_report(report: &impl serde::Serialize) {
    let value = serde_json::to_value(report).unwrap_or_default();
    println!("{value}");
    if let Some(fields) = value.as_object() {
        for (key, field) in fields {
            let shown = match field.as_f64() {
                Some(number) if field.is_f64() => format!("{number:.3}"),
                _ => field.to_string(),
            };
            eprintln!("{key:>34}  {shown}");
        }
    }
}
