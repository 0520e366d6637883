//! `rim-bench reflex --smoke` on the real binary: the daemon's row (every event's decision
//! read back and matched by its event's sequence), the bare ring's beside it and the
//! decision chain's floor each report their percentiles, in order (never a speed: the
//! benchmarks are run by hand, in release builds).

use serde_json::Value;

mod common;

const ROWS: [&str; 3] = ["rimd-reflex", "rimd-shm", "decision-chain"];

#[test]
fn every_reflex_row_measures() {
    let report = common::smoke_report("reflex");
    let rows = report["results"].as_array().expect("results is an array");
    let names: Vec<&str> = rows.iter().filter_map(|row| row["name"].as_str()).collect();
    assert_eq!(names, ROWS);
    for row in rows {
        assert!(row.get("error").is_none(), "{row}");
        let value = |name: &str| {
            row.get(name)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("{name}: {row}"))
        };
        assert!(value("rtt_p50_ns") > 0.0, "{row}");
        assert!(value("rtt_p50_ns") <= value("rtt_p99_ns"), "{row}");
        assert!(value("rtt_p99_ns") <= value("rtt_p999_ns"), "{row}");
        assert!(value("rtt_p999_ns") <= value("rtt_max_ns"), "{row}");
    }
}
