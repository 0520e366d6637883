//! Guards the harness contract on the real binary: `rim-bench ring` runs every row, the
//! JSON report has the promised shape, every row measures (rimd's own and the
//! baselines), `--plot DIR` leaves an `.svg` and an `.hlog` per latency row that `rim-bench report DIR` puts on one page, and an unknown suite is refused with the
//! list of suites.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;

const FIGURES: [&str; 5] = ["rtt_p50_ns", "rtt_p99_ns", "rtt_p999_ns", "rtt_max_ns", "events_per_s"];
const ROWS: [&str; 5] = ["rimd-shm", "rimd-shm-bytes", "rtrb-threads", "uds", "iceoryx2"];

/// A temporary directory for `--plot`, removed on drop.
struct PlotDir(PathBuf);

impl Drop for PlotDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The plot and interval log of each row that measured, and the page that shows them.
fn check_plots(dir: &Path, rows: &[Value]) {
    let mut page_wanted = Vec::new();
    for row in rows.iter().filter(|r| r.get("error").is_none()) {
        let name = row["name"].as_str().expect("row name");
        let svg = std::fs::read_to_string(dir.join(format!("ring-{name}.svg"))).expect("the row's plot");
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{name}: {svg}");
        let hlog = std::fs::read_to_string(dir.join(format!("ring-{name}.hlog"))).expect("the row's interval log");
        assert!(hlog.contains("#[Histogram log format version 1.3]"), "{name}: {hlog}");
        assert!(
            hlog.lines().any(|l| l.starts_with("Tag=rtt,") && l.contains(",HISTF")),
            "{name}: {hlog}"
        );
        page_wanted.push(format!("(ring-{name}.svg)"));
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ring.json")).expect("ring.json"))
        .expect("ring.json is JSON");
    assert_eq!(saved["results"].as_array().map(Vec::len), Some(rows.len()));
    let out = common::rim_bench()
        .arg("report")
        .arg(dir)
        .output()
        .expect("run rim-bench report");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    assert!(page.contains("## ring") && page.contains("| rtrb-threads |"), "{page}");
    for link in page_wanted {
        assert!(page.contains(&link), "{link} missing from\n{page}");
    }
}

#[test]
fn every_ring_row_measures_and_is_plotted() {
    let plots = PlotDir(std::env::temp_dir().join(format!("rim-bench-plots-{}", std::process::id())));
    let report = common::smoke_report_with("ring", &["--plot".as_ref(), plots.0.as_os_str()]);
    assert_eq!(report["suite"], "ring");
    assert_eq!(report["quick"], false);
    // Every row measures, rimd's own as much as the baselines: a failed row fails here.
    let rows = common::rows_named(&report, &ROWS);
    for row in rows {
        let value = |name| common::figure(row, name);
        for name in FIGURES {
            value(name);
        }
        assert!(value("rtt_p50_ns") > 0.0, "{row}");
        assert!(value("rtt_p50_ns") <= value("rtt_p99_ns"), "{row}");
        assert!(value("rtt_p99_ns") <= value("rtt_p999_ns"), "{row}");
        assert!(value("rtt_p999_ns") <= value("rtt_max_ns"), "{row}");
        assert!(value("events_per_s") > 0.0, "{row}");
    }
    check_plots(&plots.0, rows);
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
