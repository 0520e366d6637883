//! A thread's scheduler figures from `/proc`: the time it ran, the time it waited on a run
//! queue while runnable (another task had its CPU), and its context switches. The suites
//! read them for the daemon's threads ([`tasks`]) and for the bench's own client thread
//! ([`this_thread`]), whose waits are the latency a co-located task adds to a round trip.

use std::collections::HashMap;
use std::path::Path;

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
