//! `rim-bench idle --smoke` on the real binary: both rows measure a daemon with nothing to
//! do, and the backoff shard gives its core away where the spinning one keeps it.

mod common;

#[test]
fn an_idle_backoff_daemon_gives_its_core_away() {
    let report = common::smoke_report("idle");
    let rows = report["results"].as_array().expect("results is an array");
    let names: Vec<&str> = rows.iter().filter_map(|row| row["name"].as_str()).collect();
    assert_eq!(names, ["idle-backoff", "idle-spin"]);
    let figure = |row: &str, name: &str| {
        let r = rows.iter().find(|r| r["name"] == row).expect(row);
        assert!(r.get("error").is_none(), "{r}");
        r[name].as_f64().unwrap_or_else(|| panic!("{name}: {r}"))
    };
    for row in ["idle-backoff", "idle-spin"] {
        assert!(figure(row, "window_s") >= 1.9, "{row}");
        let sum = figure(row, "hot_pct") + figure(row, "others_pct");
        assert!((sum - figure(row, "cpu_pct")).abs() < 1e-6, "{row}");
    }
    // A spinning shard holds its core; a backing-off one sleeps (it wakes at most ~1,000
    // times a second, and in a smoke run's first seconds it is still in its 1 ms steps).
    assert!(figure("idle-spin", "hot_pct") > 50.0);
    assert!(figure("idle-backoff", "hot_pct") < figure("idle-spin", "hot_pct") / 4.0);
    assert!(figure("idle-backoff", "hot_wakeups_per_s") > 0.0);
    assert!(figure("idle-backoff", "hot_wakeups_per_s") < 1_500.0);
}
