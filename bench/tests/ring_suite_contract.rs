//! Guards the harness contract on the real binary: `rim-bench ring` runs every row (a
//! failing row is reported, not fatal), the JSON report has the promised shape, the
//! baseline rows measure, and an unknown suite is refused with the list of suites.

use serde_json::Value;

mod common;

const FIGURES: [&str; 5] = ["rtt_p50_ns", "rtt_p99_ns", "rtt_p999_ns", "rtt_max_ns", "events_per_s"];
const ROWS: [&str; 4] = ["rimd-shm", "rtrb-threads", "uds", "iceoryx2"];
const BASELINES: [&str; 3] = ["rtrb-threads", "uds", "iceoryx2"];

fn figure(row: &Value, name: &str) -> Option<f64> {
    row.get(name).and_then(Value::as_f64)
}

#[test]
fn every_ring_row_reports_its_figures_or_its_error() {
    let report = common::smoke_report("ring");
    assert_eq!(report["suite"], "ring");
    assert_eq!(report["quick"], false);
    let rows = report["results"].as_array().expect("results is an array");
    let names: Vec<&str> = rows.iter().filter_map(|row| row["name"].as_str()).collect();
    assert_eq!(names, ROWS);
    for row in rows {
        let present = FIGURES.iter().filter(|name| figure(row, name).is_some()).count();
        let error = row.get("error").and_then(Value::as_str);
        match error {
            Some(message) => assert!(present == 0 && !message.is_empty(), "{row}"),
            None => assert_eq!(present, FIGURES.len(), "{row}"),
        }
    }
    for name in BASELINES {
        let row = rows.iter().find(|row| row["name"] == name).expect("baseline row");
        let value = |figure_name| figure(row, figure_name).unwrap_or_else(|| panic!("{name}: {row}"));
        assert!(value("rtt_p50_ns") > 0.0, "{row}");
        assert!(value("rtt_p50_ns") <= value("rtt_p99_ns"), "{row}");
        assert!(value("rtt_p99_ns") <= value("rtt_p999_ns"), "{row}");
        assert!(value("rtt_p999_ns") <= value("rtt_max_ns"), "{row}");
        assert!(value("events_per_s") > 0.0, "{row}");
    }
}

#[test]
fn an_unknown_suite_is_refused_with_the_list_of_suites() {
    let output = common::rim_bench()
        .arg("no-such-suite")
        .output()
        .expect("run rim-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-suite") && stderr.contains("ring"), "{stderr}");
}
