//! Suite `idle`: what a daemon with nothing to do costs. A real daemon (the workload's
//! rules, persistence and the HTTP API on, no producer) is started and left idle for
//! 12 s, past the backoff's ramp (its shard sleeps 1 ms, then 4 ms after a second idle,
//! 10 ms after ten: `core/src/agent.rs`), then its threads' CPU time is read from
//! `/proc/PID/task/*/schedstat` at the start and the end of a 20 s window (a smoke run:
//! 0.5 s and 2 s).
//!
//! Rows:
//! - `idle-backoff`: `topology.idle = "backoff"`, the setting for a shared core. The
//!   target is under 2% of one core for the whole daemon.
//! - `idle-spin`: the default `spin`, the same run's reference: the hot shard keeps its
//!   core (about 100%) for the lowest latency.
//!
//! Figures: `cpu_pct` (all threads, % of one core), `hot_pct` (the hot shard's thread),
//! `others_pct` (every other thread), `hot_wakeups_per_s` (the hot thread's voluntary
//! context switches: each is one sleep ended), `window_s`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::daemon::DaemonProc;
use crate::error::BenchError;
use crate::procfs::{Task, HOT_THREAD};
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload;

/// The suite.
pub const SUITE: Suite = Suite {
    name: "idle",
    about: "CPU of a daemon with nothing to do, backoff against spin",
    columns: &["cpu_pct", "hot_pct", "others_pct", "hot_wakeups_per_s", "window_s"],
    rows: &[
        RowSpec {
            name: "idle-backoff",
            run: run_backoff,
        },
        RowSpec {
            name: "idle-spin",
            run: run_spin,
        },
    ],
    peers: &[],
    finish: None,
};

fn run_backoff(opts: &RunOpts) -> Result<Row, BenchError> {
    measure(opts, "idle-backoff", "backoff")
}

fn run_spin(opts: &RunOpts) -> Result<Row, BenchError> {
    measure(opts, "idle-spin", "spin")
}

fn window(opts: &RunOpts) -> (Duration, Duration) {
    match opts.size {
        RunSize::Full | RunSize::Quick => (Duration::from_secs(12), Duration::from_secs(20)),
        RunSize::Smoke => (Duration::from_millis(500), Duration::from_secs(2)),
    }
}

fn measure(opts: &RunOpts, name: &str, idle: &str) -> Result<Row, BenchError> {
    let mut sets = workload::daemon_sets(opts.client_core, opts.peer_core);
    // The daemon's own stats cadence, not the other suites' 50 ms.
    sets.retain(|s| !s.starts_with("stats.interval_ms"));
    sets.push(format!("topology.idle={idle}"));
    let daemon = DaemonProc::start(&workload::rules(), &sets, Duration::from_secs(20))?;
    let (settle, length) = window(opts);
    std::thread::sleep(settle);
    let pid = daemon.pid();
    let before = threads(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(length);
    let after = threads(pid)?;
    let secs = t0.elapsed().as_secs_f64();
    daemon.stop()?;
    let mut hot = 0.0;
    let mut others = 0.0;
    let mut wakeups = 0;
    let mut hot_seen = false;
    for (tid, now) in &after {
        // A thread that started or ended within the window is left out (none should).
        let Some(then) = before.get(tid) else { continue };
        hot_seen |= now.name == HOT_THREAD;
        let pct = now.run_ns.saturating_sub(then.run_ns) as f64 / 1e9 / secs * 100.0;
        if now.name == HOT_THREAD {
            hot += pct;
            wakeups += now.voluntary.saturating_sub(then.voluntary);
        } else {
            others += pct;
        }
    }
    if !hot_seen {
        // No schedstat (a kernel without it) or no hot shard: zeros would read as "met".
        return Err(BenchError::Setup(format!(
            "no {HOT_THREAD} thread with readable /proc/{pid}/task/*/schedstat and status"
        )));
    }
    Ok(Row::new(
        name,
        vec![
            Figure::real("cpu_pct", hot + others),
            Figure::real("hot_pct", hot),
            Figure::real("others_pct", others),
            Figure::int("hot_wakeups_per_s", (wakeups as f64 / secs).round() as u64),
            Figure::real("window_s", secs),
        ],
    ))
}

/// Every thread of `pid`, by thread id (threads that end while being read are skipped).
fn threads(pid: u32) -> Result<HashMap<u32, Task>, BenchError> {
    let tasks = crate::procfs::tasks(pid);
    if tasks.is_empty() {
        return Err(BenchError::Setup(format!("no readable thread in /proc/{pid}/task")));
    }
    Ok(tasks)
}
