//! `rim-bench http --smoke` on the real binary: a seeded daemon serves every row, every
//! row measures (no error, no non-2xx answer), the latencies are ordered, and no event
//! posted over HTTP is lost on its way to reflex.

use serde_json::Value;

mod common;

const ROWS: [&str; 9] = [
    "bare",
    "bare-pad",
    "bare-10k",
    "slice",
    "slice-10k",
    "slice-50k",
    "post-bare",
    "events-post",
    "shm-floor",
];

#[test]
fn every_http_row_measures_without_errors() {
    let report = common::smoke_report("http");
    let rows = report["results"].as_array().expect("results is an array");
    let names: Vec<&str> = rows.iter().filter_map(|row| row["name"].as_str()).collect();
    assert_eq!(names, ROWS);
    let row_named = |name: &str| rows.iter().find(|r| r["name"] == name).expect(name);
    let (shm, http_rows): (Vec<&Value>, Vec<&Value>) = rows.iter().partition(|r| r["name"] == "shm-floor");
    for row in http_rows {
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
    // The padded ping answers as much as a slice, and the slice is compared with it.
    let (bare, pad, slice) = (row_named("bare"), row_named("bare-pad"), row_named("slice"));
    let bytes = |r: &Value| r["resp_bytes"].as_f64().unwrap_or(0.0);
    assert!(bytes(pad) > bytes(bare), "{pad} vs {bare}");
    // Node 0's slice sets the size; slices of other nodes differ by a few windows.
    let ratio = bytes(pad) / bytes(slice).max(1.0);
    assert!((0.5..2.0).contains(&ratio), "{pad} vs {slice}");
    assert!(slice["vs_pad"].as_f64().is_some_and(|v| v > 0.0), "{slice}");
    let floor = row_named("post-bare");
    assert!(floor["events_per_s"].as_f64().is_some_and(|v| v > 0.0), "{floor}");
    let shm = shm.first().expect("shm-floor");
    assert!(shm.get("error").is_none(), "{shm}");
    assert!(shm["events_per_s"].as_f64().is_some_and(|v| v > 0.0), "{shm}");
    assert!(shm["vs_floor"].as_f64().is_some_and(|v| v > 0.0), "{shm}");
    assert_eq!(shm["lost"], 0, "{shm}");
    let events = row_named("events-post");
    assert!(events["events_per_s"].as_f64().is_some_and(|v| v > 0.0), "{events}");
    assert!(events["vs_floor"].as_f64().is_some_and(|v| v > 0.0), "{events}");
    assert_eq!(events["lost"], 0, "{events}");
}
