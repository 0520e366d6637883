//! Suite `ingest`: sustained throughput through the daemon with the 100 rules of
//! [`crate::workload`] on, and nothing lost.
//!
//! Rows: `rimd-ingest` (one producer publishes as fast as its ring takes events, round
//! robin over 10,000 nodes; the clock stops when the daemon has consumed the last one;
//! `lost` = published − applied by reflex, checked after it settles, and `extra` = applied −
//! published when the daemon counted more than was published (the net shortfall and the
//! net surplus: an over-count shows instead of vanishing in a saturating subtraction);
//! `daemon_rss_bytes` from
//! the daemon's own stats), `rimd-ingest-volatile` (the same with persistence off), and
//! beside them in the same run `rimd-shm`, the bare ring streaming the same 144-byte events
//! to a sink process (the ceiling one producer ring allows).
//!
//! `backtest`: a journal of 10M events (`--quick`: 1M; one in 1,000 more fires the `probe`
//! rule, so there are decisions to compare) written by a daemon with the same workload, then (the daemon stopped, this process pinned to the core the hot shard had)
//! `rimd::backtest::run` replays it through the workload's own rule set and compares with
//! the decision log; `events_per_s` = events replayed / time of the whole backtest (replay,
//! decision log, comparison); `lost` = journaled events not replayed (`extra`: replayed
//! beyond them); `daemon_rss_bytes` =
//! this process's peak RSS (the backtest's tables). Target: at least half of
//! `rimd-ingest-volatile`'s rate.

use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::report::{Figure, Row};
use crate::ring::rimd_shm::CLOCK_READ_EVERY;
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload::{self, applied};

/// The `ingest` suite.
pub const SUITE: Suite = Suite {
    name: "ingest",
    about: "sustained events/s through the daemon with 100 rules on, nothing lost",
    columns: &["events_per_s", "lost", "extra", "daemon_rss_bytes"],
    rows: &[
        RowSpec {
            name: "rimd-ingest",
            run: |opts| ingest_row(opts, "rimd-ingest", &[]),
        },
        RowSpec {
            name: "rimd-ingest-volatile",
            run: |opts| ingest_row(opts, "rimd-ingest-volatile", &["persist.enabled=false"]),
        },
        RowSpec {
            name: "backtest",
            run: run_backtest,
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

fn ingest_row(opts: &RunOpts, row: &'static str, extra: &[&str]) -> Result<Row, BenchError> {
    let n = events(opts.size);
    let (daemon, mut p, warm) = workload::start_with(opts, "bench-ingest", 1 << 24, 1, extra)?;
    let nodes = workload::nodes();

    let before = daemon.stats()?;
    let started = Instant::now();
    let mut ts = workload::unix_ms();
    let mut publish_ns = 0;
    for i in 0..n {
        if i.is_multiple_of(4096) {
            ts = workload::unix_ms();
        }
        // Stamped as the bare-ring row stamps its events (one clock read per
        // CLOCK_READ_EVERY sends), so both producers do the same work per event.
        if i.is_multiple_of(u64::from(CLOCK_READ_EVERY)) {
            publish_ns = rim_ring::clock::monotonic_ns();
        }
        p.publish(i as usize % nodes, false, ts, publish_ns)?;
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
    let at_end = daemon.stats()?;
    let settled = daemon.wait_stats(Duration::from_secs(10), |s| applied(s) >= warm + n);
    let stats = match settled {
        Ok(s) => s,
        Err(_) => daemon.stats()?,
    };
    let (lost, over) = lost_and_extra(warm + n, applied(&stats));
    let rss = stats.gauges.get("rss_bytes").copied().unwrap_or(0).max(0) as u64;
    eprint!(
        "(producer saw the ring full {} times{}) ",
        p.full_retries,
        row_notes(&before, &at_end, secs)
    );
    daemon.stop()?;
    Ok(Row::new(
        row,
        vec![
            Figure::real("events_per_s", n as f64 / secs),
            Figure::int("lost", lost),
            Figure::int("extra", over),
            Figure::int("daemon_rss_bytes", rss),
        ],
    ))
}

/// What the daemon's counters say about the row, from its start to the instant the clock
/// stopped: turns ingest held back for room downstream, events it counted lost, and with
/// persistence on the journal's committed bytes (events and decision log) per second, the
/// segments begun from a zero-filled spare or without one (the disk takes both the
/// journal's bytes and the spares' zeros), the capsules the store inserted, and the roll-up
/// checkpoint chunks the journal thread staged for it, with their bytes.
fn row_notes(before: &rim_stats::Snapshot, after: &rim_stats::Snapshot, secs: f64) -> String {
    let d = |name: &str| {
        let at = |s: &rim_stats::Snapshot| s.counters.get(name).copied();
        at(after).map(|a| a.saturating_sub(at(before).unwrap_or(0)))
    };
    let mut notes = format!(
        "; ingest held back {} turns for room downstream ({} of them the journal ring's) and counted {} \
         events lost{}",
        d("ingest.backpressure_turns").unwrap_or(0),
        d("ingest.backpressure_journal_turns").unwrap_or(0),
        d("ingest.events_lost").unwrap_or(0),
        crate::daemon::holds_note(before, after)
    );
    if let (Some(bytes), Some(used), Some(missed)) = (
        d("persist.commit_bytes"),
        d("persist.spares_used"),
        d("persist.spares_missed"),
    ) {
        notes.push_str(&format!(
            "; journal committed {:.0} MB/s, {used} segments begun from a zero-filled spare, {missed} without",
            bytes as f64 / secs.max(1e-9) / 1e6
        ));
    }
    if let (Some(caps), Some(cps), Some(cp_bytes)) = (
        d("persist.capsules_inserted"),
        d("persist.checkpoints"),
        d("persist.checkpoint_bytes"),
    ) {
        notes.push_str(&format!(
            "; the store inserted {caps} capsules, and the journal thread staged {cps} roll-up checkpoint chunks ({:.1} MB)",
            cp_bytes as f64 / 1e6
        ));
    }
    notes
}

/// (`expected` − `got`, `got` − `expected`): the net shortfall and the net surplus of what
/// was counted against what was sent; at most one is not zero (a loss and as many double
/// counts would cancel: the daemon's own `ingest.events_lost` counts losses apart).
fn lost_and_extra(expected: u64, got: u64) -> (u64, u64) {
    (expected.saturating_sub(got), got.saturating_sub(expected))
}

/// Events the `backtest` row journals and replays.
fn backtest_events(size: RunSize) -> u64 {
    match size {
        RunSize::Full => 10_000_000,
        RunSize::Quick => 1_000_000,
        RunSize::Smoke => 50_000,
    }
}

fn run_backtest(opts: &RunOpts) -> Result<Row, BenchError> {
    let n = backtest_events(opts.size);
    let (data, daemon, mut p) = crate::persist::start(opts, "bench-backtest", &[])?;
    let (sent, _) = crate::persist::flood(&mut p, f64::MAX, n, false, opts.peer_timeout * 4)?;
    // One event in 1,000 more carries `probe`, so the decision log has decisions to compare.
    let probes = n / 1_000;
    let nodes = workload::nodes();
    let ts = workload::unix_ms();
    for i in 0..probes {
        p.publish_probe(i as usize % nodes, i as f64 + 1.0, ts, 0)?;
    }
    crate::persist::wait_durable(&p, p.producer.position(), opts.peer_timeout)?;
    let expected = nodes as u64 + sent + probes;
    let counter = crate::persist::counter;
    let stats = daemon.wait_stats(Duration::from_secs(10), |s| {
        counter(s, "persist.journal_events") >= expected && counter(s, "persist.decisions_logged") >= probes
    })?;
    let journaled = counter(&stats, "persist.journal_events");
    drop(p);
    // A clean stop: the decision log is complete.
    daemon.stop()?;
    let result = replay_journal(opts, &data);
    crate::persist::remove_data(&data);
    let r = result?;
    let (lost, over) = lost_and_extra(journaled, r.events_replayed);
    eprint!(
        "(journal {journaled} events, {} replayed; vs the decision log: same {} new {} gone {} different {}) ",
        r.events_replayed, r.same, r.new, r.gone, r.different
    );
    Ok(Row::new(
        "backtest",
        vec![
            Figure::real("events_per_s", r.events_per_s),
            Figure::int("lost", lost),
            Figure::int("extra", over),
            Figure::int("daemon_rss_bytes", peak_rss_bytes()),
        ],
    ))
}

/// The backtest of the whole journal in `data` with the workload's rules, on the peer core.
fn replay_journal(opts: &RunOpts, data: &std::path::Path) -> Result<rimd::backtest::Report, BenchError> {
    // Unchecked: the daemon checked these settings; this thread's affinity (one core) would
    // fail the check of the daemon's cores.
    let config = rimd::config::Config::load_unchecked(None, std::iter::empty(), &crate::persist::sets(opts, data))
        .map_err(|e| BenchError::transport("rimd", "config", e))?;
    crate::affinity::pin_current_thread(opts.peer_core)?;
    let candidate = rimd::plane::compile_as(&workload::rules(), "toml", &config, None)
        .map_err(|e| BenchError::transport("rimd", "rules", e))?;
    let spec = rimd::backtest::Spec::new(data.join("journal"), i64::MIN, i64::MAX, candidate);
    let report = rimd::backtest::run(&config, &spec).map_err(|e| BenchError::transport("rimd", "backtest", e));
    crate::affinity::pin_current_thread(opts.client_core)?;
    report
}

/// This process's peak resident set (`VmHWM`), bytes; 0 if unreadable.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_and_extra_are_each_exact() {
        assert_eq!(lost_and_extra(100, 100), (0, 0));
        assert_eq!(lost_and_extra(100, 97), (3, 0));
        assert_eq!(lost_and_extra(100, 104), (0, 4));
    }
}
