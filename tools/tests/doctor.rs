//! Guards `rimctl doctor`'s contract for scripts on the real binary and this host: `--json`
//! prints one object per check with the promised fields; the exit status is 0 exactly when
//! no required check failed; a data directory nobody can write fails a required check
//! (exit 1); a configuration that cannot be read is the required check `config` failing
//! (exit 1, still one object per check).

use std::process::{Command, Output};

use serde_json::Value;

const CHECKS: [&str; 14] = [
    "config",
    "cores",
    "isolcpus",
    "nohz_full",
    "governor",
    "smt",
    "irqs",
    "damon",
    "thp",
    "clocksource",
    "memlock",
    "io_uring",
    "shm",
    "data_dir",
];

fn doctor(args: &[&str]) -> Output {
    let run_dir = std::env::temp_dir().join(format!("rimctl-doctor-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rimctl"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("RIMD_")) {
        cmd.env_remove(k);
    }
    cmd.arg("doctor")
        .arg("--set")
        .arg(format!("daemon.run_dir={}", run_dir.display()))
        .args(args)
        .output()
        .expect("run rimctl doctor")
}

fn checks_of(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object: {l}: {e}")))
        .collect()
}

fn failed_required(checks: &[Value]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| c["required"] == true && c["status"] == "fail")
        .filter_map(|c| c["check"].as_str())
        .collect()
}

#[test]
fn json_has_one_object_per_check_and_the_exit_status_follows_the_required_ones() {
    let data = std::env::temp_dir().join(format!("rimctl-doctor-data-{}", std::process::id()));
    let out = doctor(&["--json", "--set", &format!("persist.data_dir={}", data.display())]);
    let checks = checks_of(&out);
    let names: Vec<&str> = checks.iter().filter_map(|c| c["check"].as_str()).collect();
    assert_eq!(names, CHECKS);
    for c in &checks {
        assert!(
            ["ok", "warn", "fail", "skip"].contains(&c["status"].as_str().unwrap_or("")),
            "{c}"
        );
        assert!(
            c["required"].is_boolean() && c["found"].is_string() && c["wanted"].is_string(),
            "{c}"
        );
        let action = c["action"].as_str().unwrap_or("");
        assert_eq!(
            action.is_empty(),
            matches!(c["status"].as_str(), Some("ok" | "skip")),
            "{c}"
        );
        if c["status"] == "fail" {
            assert_eq!(c["required"], true, "only required checks fail: {c}");
        }
    }
    let failed = failed_required(&checks);
    let want = if failed.is_empty() { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(want), "failed required checks: {failed:?}");
}

#[test]
fn a_data_directory_nobody_can_write_fails_a_required_check() {
    let out = doctor(&["--json", "--set", "persist.data_dir=/proc/rimd-doctor"]);
    let checks = checks_of(&out);
    assert!(failed_required(&checks).contains(&"data_dir"), "{checks:#?}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn an_unreadable_configuration_fails_the_config_check_and_the_table_marks_required_checks() {
    let out = doctor(&["--json", "--set", "no_such.key=1"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let checks = checks_of(&out);
    let names: Vec<&str> = checks.iter().filter_map(|c| c["check"].as_str()).collect();
    assert_eq!(names, CHECKS);
    assert_eq!(failed_required(&checks), ["config"], "{checks:#?}");
    assert!(
        checks[0]["found"].as_str().unwrap_or("").contains("no_such.key"),
        "{checks:#?}"
    );
    let garbage = std::env::temp_dir().join(format!("rimctl-doctor-garbage-{}.toml", std::process::id()));
    std::fs::write(&garbage, [0xff, 0xfe, b'[', b'=', 0x00]).expect("write a garbage config");
    let out = doctor(&["--json", "--config", &garbage.to_string_lossy()]);
    let _ = std::fs::remove_file(&garbage);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(failed_required(&checks_of(&out)), ["config"]);
    let table = doctor(&[]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("check") && text.contains("data_dir *"), "{text}");
}
