//! `rim-bench http --smoke` on the real binary: a seeded daemon serves every row, every
//! row measures (no error, no non-2xx answer), the latencies are ordered, and no event
//! posted over HTTP is lost on its way to reflex.

use serde_json::Value;

mod common;

const ROWS: [&str; 7] = [
    "bare",
    "bare-10k",
    "slice",
    "slice-10k",
    "slice-50k",
    "post-bare",
    "events-post",
];

#[test]
fn every_http_row_measures_without_errors() {
    let report = common::smoke_report("http");
    let rows = report["results"].as_array().expect("results is an array");
    let names: Vec<&str> = rows.iter().filter_map(|row| row["name"].as_str()).collect();
    assert_eq!(names, ROWS);
    for row in rows {
        let value = |name: &str| {
            row.get(name)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("{name}: {row}"))
        };
        assert!(row.get("error").is_none(), "{row}");
        assert_eq!(value("errors"), 0.0, "{row}");
        assert!(value("req_per_s") > 0.0, "{row}");
        assert!(value("p50_ns") > 0.0, "{row}");
        assert!(value("p50_ns") <= value("p99_ns"), "{row}");
        assert!(value("p99_ns") <= value("p999_ns"), "{row}");
        assert!(value("p999_ns") <= value("max_ns"), "{row}");
    }
    let floor = &rows[5];
    assert!(floor["events_per_s"].as_f64().is_some_and(|v| v > 0.0), "{floor}");
    let events = &rows[6];
    assert!(events["events_per_s"].as_f64().is_some_and(|v| v > 0.0), "{events}");
    assert!(events["vs_floor"].as_f64().is_some_and(|v| v > 0.0), "{events}");
    assert_eq!(events["lost"], 0, "{events}");
}
