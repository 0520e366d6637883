//! What the suite tests share: running a suite's `--smoke` on the real binary.

use std::process::Command;

use serde_json::Value;

/// The harness binary.
pub fn rim_bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rim-bench"))
}

/// Runs `rim-bench SUITE --smoke --json` and returns the parsed report, after checking
/// that it exited 0 and reports that suite.
#[allow(dead_code)] // each test binary uses a part of this module
pub fn smoke_report(suite: &str) -> Value {
    smoke_report_with(suite, &[])
}

/// As [`smoke_report`], with more arguments (`--plot DIR`).
pub fn smoke_report_with(suite: &str, args: &[&std::ffi::OsStr]) -> Value {
    let path = std::env::temp_dir().join(format!("rim-bench-{suite}-smoke-{}.json", std::process::id()));
    let output = rim_bench()
        .args([suite, "--smoke", "--json"])
        .arg(&path)
        .args(args)
        .output()
        .expect("run rim-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "rim-bench {suite} failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&path).expect("read the JSON report");
    let _ = std::fs::remove_file(&path);
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(report["suite"], suite);
    report
}

/// `report`'s rows, after checking that they are `names`, in order, and that none failed.
#[allow(dead_code)] // each test binary uses a part of this module
pub fn rows_named<'r>(report: &'r Value, names: &[&str]) -> &'r [Value] {
    let rows = report["results"].as_array().expect("results is an array");
    let got: Vec<&str> = rows.iter().filter_map(|row| row["name"].as_str()).collect();
    assert_eq!(got, names);
    for row in rows {
        assert!(row.get("error").is_none(), "{row}");
    }
    rows
}

/// Figure `name` of `row`; a row without it fails the test, naming the row.
#[allow(dead_code)] // each test binary uses a part of this module
pub fn figure(row: &Value, name: &str) -> f64 {
    row.get(name)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{name}: {row}"))
}
