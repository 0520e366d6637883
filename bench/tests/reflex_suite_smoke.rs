//! `rim-bench reflex --smoke` on the real binary: the daemon's row (every event's decision
//! read back and matched by its event's sequence), the bare ring's beside it and the
//! decision chain's floor each report their percentiles, in order, and the bare ring beside
//! the disk's syncs how many syncs a second ran beside it; the daemon's rows
//! (persistence on and off) how much of the client's core other work took (never a speed: the
//! benchmarks are run by hand, in release builds).

mod common;

const ROWS: [&str; 5] = [
    "rimd-reflex",
    "rimd-reflex-volatile",
    "rimd-shm",
    "rimd-shm-beside-syncs",
    "decision-chain",
];
/// The rows through the daemon, which also say where the client's core went.
const DAEMON_ROWS: [&str; 2] = ["rimd-reflex", "rimd-reflex-volatile"];

#[test]
fn every_reflex_row_measures() {
    let report = common::smoke_report("reflex");
    let rows = common::rows_named(&report, &ROWS);
    for row in rows {
        let value = |name| common::figure(row, name);
        assert!(value("rtt_p50_ns") > 0.0, "{row}");
        assert!(value("rtt_p50_ns") <= value("rtt_p99_ns"), "{row}");
        assert!(value("rtt_p99_ns") <= value("rtt_p999_ns"), "{row}");
        assert!(value("rtt_p999_ns") <= value("rtt_max_ns"), "{row}");
    }
    let beside = rows
        .iter()
        .find(|r| r["name"] == "rimd-shm-beside-syncs")
        .expect("the row beside the syncs");
    assert!(common::figure(beside, "syncs_per_s") > 0.0, "{beside}");
    let daemon_rows: Vec<_> = rows
        .iter()
        .filter(|r| DAEMON_ROWS.iter().any(|&n| r["name"] == n))
        .collect();
    assert_eq!(daemon_rows.len(), DAEMON_ROWS.len());
    for row in daemon_rows {
        let value = |name| common::figure(row, name);
        // Present and finite (a smoke run's window is too short to judge their size).
        assert!(value("preempted_per_1k").is_finite(), "{row}");
        assert!(value("daemon_cpu_pct").is_finite(), "{row}");
    }
}
