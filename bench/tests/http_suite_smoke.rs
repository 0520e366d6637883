//! `rim-bench http --smoke` on the real binary: a seeded daemon serves every row, every
//! row measures (no error, no non-2xx answer), the latencies are ordered, and no event
//! posted over HTTP is lost on its way to reflex.

use std::process::Command;

use serde_json::Value;

const ROWS: [&str; 4] = ["bare", "slice", "slice-50k", "events-post"];

#[test]
fn every_http_row_measures_without_errors() {
    let path = std::env::temp_dir().join(format!("rim-bench-http-smoke-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_rim-bench"))
        .args(["http", "--smoke", "--json"])
        .arg(&path)
        .output()
        .expect("run rim-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "rim-bench http failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&path).expect("read the JSON report");
    let _ = std::fs::remove_file(&path);
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(report["suite"], "http");
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
    let events = &rows[3];
    assert!(events["events_per_s"].as_f64().is_some_and(|v| v > 0.0), "{events}");
    assert_eq!(events["lost"], 0, "{events}");
}
