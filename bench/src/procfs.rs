//! CPU figures of processes and threads. By default only what needs no `/proc` lookup of
//! another process's threads: a process's CPU time ([`process_cpu_ns`], its CPU-time
//! clock) and the calling thread's involuntary context switches ([`involuntary_switches`],
//! `getrusage`).
//!
//! Per-thread figures from `/proc/<pid>/task/<tid>` ([`tasks`], [`this_thread`]: the time a
//! thread ran, waited on a run queue while runnable, and its context switches) are read
//! only when `RIM_BENCH_THREADS=1` ([`per_thread`]) or by the `idle` suite. On this
//! machine's kernel (6.18) a process whose thread directories were looked up could take
//! its reaper minutes to reap: `wait4` spun in `release_task` →
//! `proc_invalidate_siblings_dcache` → `shrink_dcache_parent` → `d_walk` (`kafka --smoke`
//! stuck in 2 of 64 runs reading the daemon's threads at every row, in 0 of 100 reading
//! process totals), which also starved the next daemons' threads on that core.

use std::collections::HashMap;
use std::path::Path;

/// The daemon's hot shard thread (glommio starts a second, idle one of the same name).
pub const HOT_THREAD: &str = "rimd-hot";

/// Whether per-thread figures from `/proc/<pid>/task` are wanted (`RIM_BENCH_THREADS=1`).
pub fn per_thread() -> bool {
    std::env::var("RIM_BENCH_THREADS").is_ok_and(|v| v == "1")
}

/// ns on a CPU of every thread `pid` has had (its CPU-time clock, no `/proc`); None when
/// there is no such process. The time of threads running on other cores since their last
/// tick is not in it, so a window should be long against the tick (4 ms here).
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t through a valid pointer.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// The calling thread's involuntary context switches (`getrusage(RUSAGE_THREAD)`).
pub fn involuntary_switches() -> Option<u64> {
    // SAFETY: rusage is plain data; all zeros is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage through a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return None;
    }
    u64::try_from(ru.ru_nivcsw).ok()
}

/// One thread's figures at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Task {
    /// Its name (`comm`), trimmed.
    pub name: String,
    /// ns on a CPU (`schedstat` field 1).
    pub run_ns: u64,
    /// ns runnable but waiting for a CPU (`schedstat` field 2).
    pub wait_ns: u64,
    /// Times it gave up its CPU itself (slept, blocked).
    pub voluntary: u64,
    /// Times it was taken off its CPU while still runnable (preempted).
    pub involuntary: u64,
}

/// The figures of the thread whose `/proc` directory is `dir`; None when it is gone or a
/// file does not read (a kernel without schedstats).
pub fn task(dir: &Path) -> Option<Task> {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let (run_ns, wait_ns) = schedstat(&read("schedstat")?)?;
    let status = read("status")?;
    Some(Task {
        name: read("comm").unwrap_or_default().trim().to_owned(),
        run_ns,
        wait_ns,
        voluntary: status_count(&status, "voluntary_ctxt_switches")?,
        involuntary: status_count(&status, "nonvoluntary_ctxt_switches")?,
    })
}

/// Every thread of `pid` by thread id (empty for a process that is gone; a thread that
/// ends while it is read is left out).
pub fn tasks(pid: u32) -> HashMap<u32, Task> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, task(&e.path())?)))
        .collect()
}

/// Each thread alive in `after`: its name and the CPU time it gained since `before` (all
/// of it for a thread `before` did not have), keyed by thread id so that a thread that
/// exits takes only its own time with it.
pub fn gained(before: &HashMap<u32, Task>, after: &HashMap<u32, Task>) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(tid, t)| {
            (
                t.name.clone(),
                t.run_ns.saturating_sub(before.get(tid).map_or(0, |b| b.run_ns)),
            )
        })
        .collect()
}

/// The calling thread's figures.
pub fn this_thread() -> Option<Task> {
    task(Path::new("/proc/thread-self"))
}

/// (ns on a CPU, ns waiting on a run queue) of a `schedstat` file's text.
pub fn schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// The count on a `status` line `key:\t<n>`.
fn status_count(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_and_status_lines_parse_and_garbage_does_not() {
        assert_eq!(schedstat("123 45 6\n"), Some((123, 45)));
        assert_eq!(schedstat("123"), None);
        assert_eq!(schedstat("garbage 1 2"), None);
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(status_count(status, "voluntary_ctxt_switches"), Some(7));
        assert_eq!(status_count(status, "nonvoluntary_ctxt_switches"), Some(3));
        assert_eq!(
            status_count("voluntary_ctxt_switches: x\n", "voluntary_ctxt_switches"),
            None
        );
    }

    #[test]
    fn a_process_clock_counts_the_cpu_this_thread_spins() {
        let me = std::process::id();
        let before = process_cpu_ns(me).expect("this process's CPU clock");
        let cap = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut now = before;
        while now - before < 20_000_000 && std::time::Instant::now() < cap {
            now = process_cpu_ns(me).expect("this process's CPU clock");
        }
        assert!(now - before >= 20_000_000, "{before} -> {now}");
        assert!(involuntary_switches().is_some());
        assert_eq!(process_cpu_ns(u32::MAX), None);
    }

    #[test]
    fn this_thread_reads_and_counts_the_cpu_it_spins() {
        let before = this_thread().expect("this thread's /proc figures");
        let cap = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut now = before.clone();
        // Until this thread has had 20 ms on a CPU, however long a loaded machine takes.
        while now.run_ns - before.run_ns < 20_000_000 && std::time::Instant::now() < cap {
            std::hint::black_box(now.run_ns.wrapping_mul(3));
            now = this_thread().expect("this thread's /proc figures");
        }
        assert!(now.run_ns - before.run_ns >= 20_000_000, "{before:?} -> {now:?}");
        assert!(now.wait_ns >= before.wait_ns && now.involuntary >= before.involuntary);
        let all = tasks(std::process::id());
        assert!(all.values().any(|t| t.run_ns >= now.run_ns), "{all:?}");
    }
}
