//! `rim-bench reflex --smoke` on the real binary: the daemon's row (every event's decision
//! read back and matched by its event's sequence), the bare ring's beside it and the
//! decision chain's floor each report their percentiles, in order (never a speed: the
//! benchmarks are run by hand, in release builds).

mod common;

const ROWS: [&str; 3] = ["rimd-reflex", "rimd-shm", "decision-chain"];

#[test]
fn every_reflex_row_measures() {
    let report = common::smoke_report("reflex");
    for row in common::rows_named(&report, &ROWS) {
        let value = |name| common::figure(row, name);
        assert!(value("rtt_p50_ns") > 0.0, "{row}");
        assert!(value("rtt_p50_ns") <= value("rtt_p99_ns"), "{row}");
        assert!(value("rtt_p99_ns") <= value("rtt_p999_ns"), "{row}");
        assert!(value("rtt_p999_ns") <= value("rtt_max_ns"), "{row}");
    }
}
