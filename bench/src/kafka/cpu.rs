//! Where a row's CPU went: per event, the time the daemon, the broker and this bench
//! process (its producer, its decision reader, librdkafka's threads) spent on a CPU, and how
//! busy the machine's CPUs were over the row.
//!
//! The broker, the clients and the daemon share the machine's two cores, so a saturating
//! row's throughput is what the cores give divided by the CPU one event costs them all:
//! these figures say which part of `kafka-in`'s cost the daemon adds to `broker-floor`'s.
//!
//! A process's time is the sum over its threads of `/proc/<pid>/task/*/schedstat`'s first
//! field (ns on a CPU, kept by the scheduler, exact); a thread that exits during the row
//! takes its share with it (none of the three starts or stops threads while a row runs).
//! The machine's busy share is from `/proc/stat` (clock ticks, everything not idle or
//! iowait).

/// CPU readings at one instant.
pub struct Snapshot {
    daemon_ns: u64,
    broker_ns: u64,
    bench_ns: u64,
    /// (busy, total) clock ticks of all CPUs.
    ticks: (u64, u64),
}

/// Per event over a row.
pub struct PerEvent {
    pub daemon_ns: f64,
    pub broker_ns: f64,
    pub bench_ns: f64,
    /// Busy share of all CPUs over the row, percent.
    pub busy_pct: f64,
}

/// Reads the three processes' CPU time and the machine's ticks.
pub fn snapshot(daemon: u32, broker: u32) -> Snapshot {
    Snapshot {
        daemon_ns: process_cpu_ns(daemon),
        broker_ns: process_cpu_ns(broker),
        bench_ns: process_cpu_ns(std::process::id()),
        ticks: machine_ticks(),
    }
}

impl Snapshot {
    /// What `events` cost from `self` to `end`.
    pub fn per_event(&self, end: &Snapshot, events: u64) -> PerEvent {
        let n = events.max(1) as f64;
        let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n;
        let busy = end.ticks.0.saturating_sub(self.ticks.0) as f64;
        let total = end.ticks.1.saturating_sub(self.ticks.1) as f64;
        PerEvent {
            daemon_ns: per(self.daemon_ns, end.daemon_ns),
            broker_ns: per(self.broker_ns, end.broker_ns),
            bench_ns: per(self.bench_ns, end.bench_ns),
            busy_pct: if total > 0.0 { 100.0 * busy / total } else { 0.0 },
        }
    }
}

/// Sum of `pid`'s threads' time on a CPU, ns (0 for a process that is gone).
pub fn process_cpu_ns(pid: u32) -> u64 {
    threads_cpu_ns(pid).iter().map(|(_, ns)| ns).sum()
}

/// Each of `pid`'s threads as (name, time on a CPU in ns); threads of one name summed.
pub fn threads_cpu_ns(pid: u32) -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut by_name: Vec<(String, u64)> = Vec::new();
    for task in tasks.flatten() {
        let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()))
        else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = thread_group(name.trim());
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += ns,
            None => by_name.push((name, ns)),
        }
    }
    by_name
}

/// A thread's name without the numbers the kernel and libraries append (`iou-wrk-123`,
/// `rdk:broker1`), so that a group's time is one figure.
fn thread_group(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
        .to_string()
}

/// The daemon's threads' time between two readings of [`threads_cpu_ns`], per event,
/// largest first, as `name=ns` (for the row's notes).
pub fn threads_note(before: &[(String, u64)], after: &[(String, u64)], events: u64) -> String {
    let mut per: Vec<(&str, f64)> = after
        .iter()
        .map(|(name, ns)| {
            let was = before.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
            (name.as_str(), ns.saturating_sub(was) as f64 / events.max(1) as f64)
        })
        .filter(|(_, ns)| *ns >= 1.0)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    per.iter()
        .map(|(name, ns)| format!("{name}={ns:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// (busy, total) ticks of the `cpu` line of `/proc/stat`; busy is all but idle and iowait.
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    parse_cpu_line(stat.lines().next().unwrap_or(""))
}

fn parse_cpu_line(line: &str) -> (u64, u64) {
    let mut fields = line.split_whitespace();
    if fields.next() != Some("cpu") {
        return (0, 0);
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let v: Vec<u64> = fields.take(8).map(|f| f.parse().unwrap_or(0)).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_splits_into_busy_and_total() {
        assert_eq!(parse_cpu_line("cpu  10 2 3 80 5 0 0 0 0 0"), (15, 100));
        assert_eq!(parse_cpu_line("cpu0 10 2 3 80 5 0 0 0"), (0, 0));
        assert_eq!(parse_cpu_line(""), (0, 0));
    }

    #[test]
    fn thread_names_group_without_their_numbers() {
        assert_eq!(thread_group("iou-wrk-4242"), "iou-wrk");
        assert_eq!(thread_group("rdk:broker111"), "rdk:broker");
        assert_eq!(thread_group("rimd-hot"), "rimd-hot");
    }

    #[test]
    fn the_threads_note_lists_per_event_time_largest_first() {
        let before = vec![("a".to_string(), 100), ("b".to_string(), 0)];
        let after = vec![("a".to_string(), 300), ("b".to_string(), 1_000), ("c".to_string(), 0)];
        assert_eq!(threads_note(&before, &after, 10), "b=100 a=20");
    }

    #[test]
    fn this_process_is_charged_for_the_cpu_it_spins() {
        let before = process_cpu_ns(std::process::id());
        let until = std::time::Instant::now() + std::time::Duration::from_millis(30);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spent = process_cpu_ns(std::process::id()) - before;
        assert!(spent >= 20_000_000, "spun 30 ms, charged {spent} ns");
    }
}
