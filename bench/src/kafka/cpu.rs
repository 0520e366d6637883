//! Where a row's CPU went: per event, the time the daemon, the broker and this bench
//! process (its producer, its decision reader, librdkafka's threads) spent on a CPU, and how
//! busy the machine's CPUs were over the row.
//!
//! The broker, the clients and the daemon share the machine's two cores, so a saturating
//! row's throughput is what the cores give divided by the CPU one event costs them all:
//! these figures say which part of `kafka-in`'s cost the daemon adds to `broker-floor`'s.
//!
//! A process's time is its CPU-time clock (every thread it has had, [`crate::procfs`]).
//! With `RIM_BENCH_THREADS=1` it is read per thread instead, for the daemon's breakdown by
//! thread in each row's note: the first field of `/proc/<pid>/task/<tid>/schedstat` (ns on
//! a CPU). A row's share is then, over the threads alive at its end, what each gained
//! since the row began (a thread started during the row counts whole): keyed by thread
//! id, so a thread that exits during the row takes only its own time with it, and never
//! what it had used before. The machine's busy share is from `/proc/stat` (clock
//! ticks, everything not idle or iowait).

use std::collections::HashMap;

use crate::procfs::{gained, Task};

/// One process's threads at one instant, by thread id (one entry named `process` when read
/// from the process's CPU clock).
pub type Threads = HashMap<u32, Task>;

/// CPU readings at one instant.
pub struct Snapshot {
    daemon: Threads,
    broker: Threads,
    bench: Threads,
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
    /// The daemon's threads by name (numbers stripped), ns per event, largest first.
    pub daemon_threads: Vec<(String, f64)>,
}

/// Reads the three processes' threads and the machine's ticks.
pub fn snapshot(daemon: u32, broker: u32) -> Snapshot {
    Snapshot {
        daemon: threads(daemon),
        broker: threads(broker),
        bench: threads(std::process::id()),
        ticks: machine_ticks(),
    }
}

impl Snapshot {
    /// What `events` cost from `self` to `end`.
    pub fn per_event(&self, end: &Snapshot, events: u64) -> PerEvent {
        let n = events.max(1) as f64;
        let per = |a: &Threads, b: &Threads| gained(a, b).iter().map(|(_, ns)| ns).sum::<u64>() as f64 / n;
        let busy = end.ticks.0.saturating_sub(self.ticks.0) as f64;
        let total = end.ticks.1.saturating_sub(self.ticks.1) as f64;
        PerEvent {
            daemon_ns: per(&self.daemon, &end.daemon),
            broker_ns: per(&self.broker, &end.broker),
            bench_ns: per(&self.bench, &end.bench),
            busy_pct: if total > 0.0 { 100.0 * busy / total } else { 0.0 },
            daemon_threads: by_group(gained(&self.daemon, &end.daemon), n),
        }
    }
}

/// Times summed by thread group, per event, largest first (groups under 1 ns left out).
pub(crate) fn by_group(times: Vec<(String, u64)>, events: f64) -> Vec<(String, f64)> {
    let mut groups: Vec<(String, f64)> = Vec::new();
    for (name, ns) in times {
        let group = thread_group(&name);
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, total)) => *total += ns as f64 / events,
            None => groups.push((group, ns as f64 / events)),
        }
    }
    groups.retain(|(_, ns)| *ns >= 1.0);
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups
}

/// `name=ns` pairs for a row's notes.
pub fn threads_note(groups: &[(String, f64)]) -> String {
    groups
        .iter()
        .map(|(name, ns)| format!("{name}={ns:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `pid`'s threads now (empty for a process that is gone; a thread that ends while it is
/// read is left out).
pub fn threads(pid: u32) -> Threads {
    if !crate::procfs::per_thread() {
        // The process's CPU clock: every thread it has had, no /proc lookup.
        return crate::procfs::process_cpu_ns(pid)
            .map(|run_ns| {
                let t = Task {
                    name: "process".to_string(),
                    run_ns,
                    ..Task::default()
                };
                (pid, t)
            })
            .into_iter()
            .collect();
    }
    crate::procfs::tasks(pid)
}

/// A thread's name without the numbers the kernel and libraries append (`iou-wrk-123`,
/// `rdk:broker1`), so that a group's time is one figure.
fn thread_group(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
        .to_string()
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

    fn threads_of(list: &[(u32, &str, u64)]) -> Threads {
        list.iter()
            .map(|&(tid, name, run_ns)| {
                let t = Task {
                    name: name.to_string(),
                    run_ns,
                    ..Task::default()
                };
                (tid, t)
            })
            .collect()
    }

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
    fn a_thread_that_exits_takes_only_its_own_time_and_a_new_one_counts_whole() {
        let before = threads_of(&[(1, "a", 100), (2, "gone", 5_000), (3, "b-7", 0)]);
        let after = threads_of(&[(1, "a", 300), (3, "b-7", 1_000), (4, "b-8", 50)]);
        let mut got = gained(&before, &after);
        got.sort();
        assert_eq!(got, [("a".into(), 200), ("b-7".into(), 1_000), ("b-8".into(), 50)]);
        let groups = by_group(got, 10.0);
        assert_eq!(groups, [("b".to_string(), 105.0), ("a".to_string(), 20.0)]);
        assert_eq!(threads_note(&groups), "b=105 a=20");
    }

    #[test]
    fn this_thread_is_charged_for_the_cpu_it_spins() {
        let own = || crate::procfs::this_thread().expect("this thread's schedstat").run_ns;
        let before = threads(std::process::id());
        let (start, cap) = (own(), std::time::Instant::now() + std::time::Duration::from_secs(10));
        // Until this thread has had 30 ms on a CPU, however long a loaded machine takes.
        while own() - start < 30_000_000 && std::time::Instant::now() < cap {
            std::hint::black_box(start.wrapping_mul(3));
        }
        let spun = own() - start;
        let charged: u64 = gained(&before, &threads(std::process::id()))
            .iter()
            .map(|(_, ns)| ns)
            .sum();
        assert!(spun >= 30_000_000, "the spin got {spun} ns of CPU in 10 s");
        assert!(charged >= spun, "spun {spun} ns, the process was charged {charged}");
    }
}
