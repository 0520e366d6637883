//! `rim-bench persist --smoke` on the real binary: every row of the suite runs against a
//! real daemon, disk and store and reports its figures (never a speed: CI checks that the
//! rows measure, the benchmarks are run by hand).

use serde_json::Value;

mod common;

/// Each row and the figures it must report (positive numbers).
const ROWS: [(&str, &[&str]); 14] = [
    ("journal-max", &["events_per_s", "bytes_per_sync"]),
    ("disk-floor", &["events_per_s", "sync_p99_ns", "bytes_per_sync"]),
    ("journal", &["events_per_s"]),
    ("journal-100k", &["events_per_s"]),
    ("journal-100k-store-quiet", &["events_per_s"]),
    ("sync-floor", &["sync_p99_ns", "bytes_per_sync"]),
    ("sync-floor-100k", &["sync_p99_ns", "bytes_per_sync"]),
    ("journal-bare", &["events_per_s"]),
    ("journal-bare-100k", &["events_per_s"]),
    ("decisions", &["decisions_per_s", "events_per_s"]),
    ("capsules", &["records_per_s"]),
    ("redb-raw", &["records_per_s"]),
    (
        "recovery",
        &["events", "ready_ms", "full_replay_ms", "recovery_ms", "recovery_cpu_ms"],
    ),
    (
        "recovery-lagging",
        &["events", "ready_ms", "recovery_ms", "recovery_cpu_ms"],
    ),
];

const LAG_ROWS: [&str; 7] = [
    "journal",
    "journal-100k",
    "journal-100k-store-quiet",
    "sync-floor",
    "sync-floor-100k",
    "journal-bare",
    "journal-bare-100k",
];

/// Rows with latency percentiles, each of which `--plot` draws and logs.
const PLOTTED: [&str; 8] = [
    "disk-floor",
    "journal",
    "journal-100k",
    "journal-100k-store-quiet",
    "sync-floor",
    "sync-floor-100k",
    "journal-bare",
    "journal-bare-100k",
];

/// A temporary directory for `--plot`, removed on drop.
struct PlotDir(std::path::PathBuf);

impl Drop for PlotDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_persist_row_measures() {
    let plots = PlotDir(std::env::temp_dir().join(format!("rim-bench-persist-plots-{}", std::process::id())));
    let report = common::smoke_report_with("persist", &["--plot".as_ref(), plots.0.as_os_str()]);
    let rows = report["results"].as_array().expect("results is an array");
    let names: Vec<&str> = rows.iter().filter_map(|row| row["name"].as_str()).collect();
    let expected: Vec<&str> = ROWS.iter().map(|r| r.0).collect();
    assert_eq!(names, expected);
    for (row, (_, figures)) in rows.iter().zip(ROWS) {
        assert!(row.get("error").is_none(), "{row}");
        let value = |name: &str| {
            row.get(name)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("{name}: {row}"))
        };
        for figure in figures {
            assert!(value(figure) > 0.0, "{figure}: {row}");
        }
        if LAG_ROWS.contains(&row["name"].as_str().unwrap_or("")) {
            assert!(value("durable_lag_p50_ns") > 0.0, "{row}");
            assert!(value("durable_lag_p50_ns") <= value("durable_lag_p99_ns"), "{row}");
            assert!(value("durable_lag_p99_ns") <= value("durable_lag_p999_ns"), "{row}");
            assert!(value("durable_lag_p999_ns") <= value("durable_lag_max_ns"), "{row}");
        }
    }
    // `--plot`: a percentile plot and an HdrHistogram interval log per latency row.
    for name in PLOTTED {
        let svg = std::fs::read_to_string(plots.0.join(format!("persist-{name}.svg")))
            .unwrap_or_else(|e| panic!("{name}: no plot ({e})"));
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{name}: {svg}");
        let hlog = std::fs::read_to_string(plots.0.join(format!("persist-{name}.hlog")))
            .unwrap_or_else(|e| panic!("{name}: no interval log ({e})"));
        assert!(hlog.lines().any(|l| l.contains(",HISTF")), "{name}: {hlog}");
    }
}
