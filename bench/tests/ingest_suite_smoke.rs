//! `rim-bench ingest --smoke` on the real binary: every row streams through a real daemon
//! (or, for `rimd-shm`, the bare ring) and reports its rate; the daemon's rows lose
//! nothing and count nothing extra, and report the daemon's memory (never a speed: the
//! benchmarks are run by hand, in release builds).

mod common;

const ROWS: [&str; 4] = ["rimd-ingest", "rimd-ingest-volatile", "backtest", "rimd-shm"];
const DAEMON_ROWS: [&str; 3] = ["rimd-ingest", "rimd-ingest-volatile", "backtest"];

#[test]
fn every_ingest_row_measures_and_loses_nothing() {
    let report = common::smoke_report("ingest");
    for row in common::rows_named(&report, &ROWS) {
        let value = |name| common::figure(row, name);
        assert!(value("events_per_s") > 0.0, "{row}");
        if DAEMON_ROWS.contains(&row["name"].as_str().unwrap_or("")) {
            assert_eq!(value("lost"), 0.0, "{row}");
            assert_eq!(value("extra"), 0.0, "{row}");
            assert!(value("daemon_rss_bytes") > 0.0, "{row}");
        }
    }
}
