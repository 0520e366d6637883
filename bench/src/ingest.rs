//! Suite `ingest`: sustained throughput through the daemon with the 100 rules of
//! [`crate::workload`] on, and nothing lost.
//!
//! Rows: `rimd-ingest` (one producer publishes as fast as its ring takes events, round
//! robin over 10,000 nodes; the clock stops when the daemon has consumed the last one;
//! `lost` = published − applied by reflex, checked after it settles; `daemon_rss_bytes` from
//! the daemon's own stats), and beside it in the same run `rimd-shm`, the bare ring
//! streaming the same 144-byte events to a sink process (the ceiling one producer ring
//! allows).

use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload::{self, applied};

/// The `ingest` suite.
pub const SUITE: Suite = Suite {
    name: "ingest",
    about: "sustained events/s through the daemon with 100 rules on, nothing lost",
    columns: &["events_per_s", "lost", "daemon_rss_bytes"],
    rows: &[
        RowSpec {
            name: "rimd-ingest",
            run: run_ingest,
        },
        RowSpec {
            name: "rimd-shm",
            run: |opts| crate::ring::rimd_shm::run(&crate::ring::RingCfg::new(opts)),
        },
    ],
    peers: &[],
    finish: None,
};

fn events(size: RunSize) -> u64 {
    match size {
        RunSize::Full => 20_000_000,
        RunSize::Quick => 4_000_000,
        RunSize::Smoke => 50_000,
    }
}

fn run_ingest(opts: &RunOpts) -> Result<Row, BenchError> {
    let n = events(opts.size);
    let (daemon, mut p, warm) = workload::start(opts, "bench-ingest", 1 << 24, 1)?;
    let nodes = workload::nodes();

    let started = Instant::now();
    let mut ts = workload::unix_ms();
    for i in 0..n {
        if i.is_multiple_of(4096) {
            ts = workload::unix_ms();
        }
        p.publish(i as usize % nodes, false, ts, 0)?;
    }
    let end = p.producer.position();
    while p.producer.consumed_position() < end {
        if started.elapsed() > opts.peer_timeout * 4 {
            return Err(BenchError::Timeout {
                waiting_for: "the daemon to consume the stream",
                timeout: opts.peer_timeout * 4,
            });
        }
        std::hint::spin_loop();
    }
    let secs = started.elapsed().as_secs_f64();
    let settled = daemon.wait_stats(Duration::from_secs(10), |s| applied(s) >= warm + n);
    let stats = match settled {
        Ok(s) => s,
        Err(_) => daemon.stats()?,
    };
    let lost = (warm + n).saturating_sub(applied(&stats));
    let rss = stats.gauges.get("rss_bytes").copied().unwrap_or(0).max(0) as u64;
    eprint!("(producer saw the ring full {} times) ", p.full_retries);
    daemon.stop()?;
    Ok(Row::new(
        "rimd-ingest",
        vec![
            Figure::real("events_per_s", n as f64 / secs),
            Figure::int("lost", lost),
            Figure::int("daemon_rss_bytes", rss),
        ],
    ))
}
