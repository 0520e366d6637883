//! rimctl against a real daemon: `rules check`, `produce --script`, `tail --verify`,
//! `stats --json`, `replay` (JSON lines and back into the daemon), each as its own
//! process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn rimctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rimctl"))
}

/// `rimd` is built beside `rimctl` by `cargo test --workspace`.
fn rimd_path() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_rimctl")).with_file_name("rimd");
    assert!(
        p.exists(),
        "{} is missing: run the workspace's tests (./scripts/test.sh) or `cargo build -p rimd` first",
        p.display()
    );
    p
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rimctl-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn rules_check_reports_rules_or_positions() {
    let dir = Dir::new("rules");
    let good = dir.0.join("good.toml");
    std::fs::write(
        &good,
        "[[rule]]\nid = \"hot\"\nwhen = \"metric.temp > 90\"\nseverity = \"high\"\ncooldown = \"5s\"\n",
    )
    .expect("write");
    let o = rimctl()
        .args(["rules", "check"])
        .arg(&good)
        .output()
        .expect("run rimctl");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1 rules ok") && out.contains("hot") && out.contains("5000 ms"),
        "{out}"
    );

    let bad = dir.0.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nid = \"hot\"\nwhen = \"metric.temp >> 90\"\nseverity = \"high\"\n",
    )
    .expect("write");
    let o = rimctl()
        .args(["rules", "check"])
        .arg(&bad)
        .output()
        .expect("run rimctl");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 3, column"), "{err}");

    let o = rimctl()
        .args(["rules", "check"])
        .arg(dir.0.join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn produce_tail_and_stats_against_a_daemon() {
    let dir = Dir::new("e2e");
    let run = dir.0.join("run");
    let log = std::fs::File::create(dir.0.join("rimd.log")).expect("log");
    let _daemon = Daemon(
        Command::new(rimd_path())
            .arg("--run-dir")
            .arg(&run)
            .args(["--set", "topology.idle=backoff", "--set", "topology.pin=false"])
            .args(["--set", "api.listen=127.0.0.1:0"])
            .args(["--set", "reflex.nodes_max=1000", "--set", "stats.interval_ms=20"])
            // The script's event times are fixed instants in the past.
            .args(["--set", "ingest.event_age_ms_max=0"])
            .arg("--set")
            .arg(format!("persist.data_dir={}", dir.0.join("data").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rimd"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(run.join("rimd.sock").exists() && run.join("stats").exists()) {
        assert!(Instant::now() < deadline, "rimd did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let tail = rimctl()
        .arg("--run-dir")
        .arg(&run)
        .args(["tail", "--count", "3", "--verify", "--timeout", "30", "--ready"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    // Attached once "ready" is printed; give it a moment rather than parse stderr here.
    std::thread::sleep(Duration::from_millis(300));

    // Three overheating sensors (the embedded rule temp-high: metric.temp > 90), and
    // one event of a pump that no default rule watches with these values.
    let script = dir.0.join("events.jsonl");
    let mut lines = String::new();
    for i in 0..3 {
        lines.push_str(&format!(
            "{{\"rim_node_id\":\"rim:sensor:t:s{i}\",\"timestamp\":{},\"critical_metrics\":{{\"temp\":95.5}},\"status\":\"OK\"}}\n",
            1_700_000_000_000i64 + i
        ));
    }
    lines.push_str("{\"rim_node_id\":\"rim:pump:t:p1\",\"timestamp\":1700000000100,\"critical_metrics\":{\"flow\":1.0},\"status\":\"OK\"}\n");
    lines.push_str("{\"garbage\": 5}\n");
    std::fs::write(&script, lines).expect("script");
    let o = rimctl()
        .arg("--run-dir")
        .arg(&run)
        .args(["produce", "--script"])
        .arg(&script)
        .output()
        .expect("run produce");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("produce prints JSON");
    assert_eq!(summary["published"], 4, "{summary}");
    assert_eq!(summary["garbage"], 5, "{summary}");
    assert_eq!(summary["consumed"], true, "{summary}");
    assert_eq!(summary["rejected_by_daemon"], 5, "{summary}");

    let o = tail.wait_with_output().expect("tail");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let decisions: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON decision per line"))
        .collect();
    assert_eq!(decisions.len(), 3, "{}", text(&o));
    for (i, d) in decisions.iter().enumerate() {
        assert_eq!(d["rule_id"], "temp-high");
        assert_eq!(d["rim_node_id"], format!("rim:sensor:t:s{i}"));
        assert_eq!(d["severity"], "high");
        assert_eq!(d["chain_seq"], i as u64 + 1);
        assert_eq!(d["evidence"][0][0], "metric.temp");
        assert_eq!(d["evidence"][0][1], 95.5);
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = rimctl()
            .arg("--run-dir")
            .arg(&run)
            .args(["stats", "--json"])
            .output()
            .expect("stats");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stats JSON");
        let c = &s["counters"];
        if c["ingest.events_accepted"] == 4 && c["decisions.rule.temp-high"] == 3 {
            assert_eq!(c["ingest.rejected"], 5, "{s}");
            assert_eq!(s["running"], true);
            break;
        }
        assert!(Instant::now() < deadline, "stats never showed the events: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = rimctl()
        .arg("--run-dir")
        .arg(&run)
        .arg("stats")
        .output()
        .expect("stats");
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(
        human.contains("publish_to_decision") && human.contains("rimd-hot"),
        "{human}"
    );

    // The journal as JSON lines: the four events, every field as published.
    let data = dir.0.join("data");
    let replay = |extra: &[&str]| {
        rimctl()
            .arg("--run-dir")
            .arg(&run)
            .arg("replay")
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .output()
            .expect("replay")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let events: Vec<serde_json::Value> = loop {
        let o = replay(&[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect();
        if lines.len() == 4 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "journal holds {} events: {}",
            lines.len(),
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["rim_node_id"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["rim:pump:t:p1", "rim:sensor:t:s0", "rim:sensor:t:s1", "rim:sensor:t:s2"]
    );
    let s1 = events
        .iter()
        .find(|e| e["rim_node_id"] == "rim:sensor:t:s1")
        .expect("s1");
    assert_eq!(s1["timestamp"], 1_700_000_000_001i64);
    assert_eq!(s1["critical_metrics"]["temp"], 95.5);
    assert_eq!(s1["status"], "OK");
    // From an event time on.
    let o = replay(&["--from-ms", "1700000000002"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2, "{}", text(&o));
    // Back into the daemon: published, made durable, and (no event ids here) decided
    // again; the journal then holds eight.
    let o = replay(&["--into-daemon"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("4 events published"),
        "{}",
        text(&o)
    );
    let o = replay(&[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 8, "{}", text(&o));
    // A journal that is not there is a clear error, not a panic.
    let o = rimctl()
        .args(["replay", "--data-dir", "/nonexistent/rimd"])
        .output()
        .expect("replay");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/rimd"),
        "{}",
        text(&o)
    );
}

#[test]
fn commands_without_a_daemon_say_so() {
    let dir = Dir::new("none");
    for args in [
        &["stats"][..],
        &["tail", "--timeout", "1"],
        &["produce", "--count", "1"],
    ] {
        let o = rimctl().arg("--run-dir").arg(&dir.0).args(args).output().expect("run");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("is rimd running?"),
            "{args:?}: {}",
            text(&o)
        );
    }
}

/// `rules check --against-daemon` asks the running daemon what a file would change;
/// `rules backtest` replays the daemon's journal through a candidate in rimctl's own
/// process: the live generation gives back exactly the live decisions, a higher threshold
/// takes them away, and bad input is a clear error.
#[test]
fn rules_dry_run_and_backtest_against_a_daemon() {
    let dir = Dir::new("lifecycle");
    let run = dir.0.join("run");
    let data = dir.0.join("data");
    let sets = [
        "topology.idle=backoff".to_owned(),
        "topology.pin=false".to_owned(),
        "api.listen=127.0.0.1:0".to_owned(),
        "reflex.nodes_max=1000".to_owned(),
        "stats.interval_ms=20".to_owned(),
        "ingest.event_age_ms_max=0".to_owned(),
        format!("persist.data_dir={}", data.display()),
    ];
    let log = std::fs::File::create(dir.0.join("rimd.log")).expect("log");
    let mut cmd = Command::new(rimd_path());
    cmd.arg("--run-dir").arg(&run);
    for s in &sets {
        cmd.arg("--set").arg(s);
    }
    let _daemon = Daemon(cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn rimd"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(run.join("http.addr")) {
            if !a.trim().is_empty() && run.join("rimd.sock").exists() {
                break a.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "rimd did not start");
        std::thread::sleep(Duration::from_millis(10));
    };

    // Three overheating sensors (the embedded rule temp-high: metric.temp > 90).
    let script = dir.0.join("events.jsonl");
    let lines: String = (0..3)
        .map(|i| {
            format!(
                "{{\"rim_node_id\":\"rim:sensor:t:s{i}\",\"timestamp\":{},\"critical_metrics\":{{\"temp\":95.5}},\"status\":\"OK\"}}\n",
                1_700_000_000_000i64 + i
            )
        })
        .collect();
    std::fs::write(&script, lines).expect("script");
    let o = rimctl()
        .arg("--run-dir")
        .arg(&run)
        .args(["produce", "--script"])
        .arg(&script)
        .output()
        .expect("produce");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = rimctl()
            .arg("--run-dir")
            .arg(&run)
            .args(["stats", "--json"])
            .output()
            .expect("stats");
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if s["counters"]["persist.decisions_logged"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "decisions never durable: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let hotter = dir.0.join("hotter.toml");
    std::fs::write(
        &hotter,
        "[[rule]]\nid = \"temp-high\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > 96\"\nseverity = \"high\"\n",
    )
    .expect("write");
    let o = rimctl()
        .args(["rules", "check"])
        .arg(&hotter)
        .args(["--against-daemon", "--api-url"])
        .arg(format!("http://{addr}"))
        .output()
        .expect("check");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("generation 2 would be installed"), "{out}");
    assert!(out.contains("changed:   temp-high (v1 → v2)"), "{out}");

    let backtest = |extra: &[&str]| {
        let mut c = rimctl();
        c.args(["rules", "backtest"]).args(extra);
        c.args(["--from-ms", "1700000000000", "--to-ms", "1700000001000", "--json"]);
        for s in &sets {
            c.arg("--set").arg(s);
        }
        c.output().expect("backtest")
    };
    let json = |o: &Output| -> serde_json::Value {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        serde_json::from_slice(&o.stdout).expect("report JSON")
    };
    let live = json(&backtest(&["--generation", "1"]));
    assert_eq!(
        (live["same"].as_u64(), live["new"].as_u64(), live["gone"].as_u64()),
        (Some(3), Some(0), Some(0)),
        "{live}"
    );
    assert_eq!(live["different"], 0);
    let r = json(&backtest(&[hotter.to_str().expect("utf-8 path")]));
    assert_eq!((r["gone"].as_u64(), r["same"].as_u64()), (Some(3), Some(0)), "{r}");
    assert_eq!(r["examples"]["gone"][0]["ruleId"], "temp-high");
    assert_eq!(r["rules"][0]["gone"], 3);
    let o = backtest(&["--fail-on-change", hotter.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Bad input: a clear error, never a panic.
    let garbage = dir.0.join("garbage.toml");
    std::fs::write(&garbage, b"\xff\xfe[[rule\n").expect("write");
    for (args, says) in [
        (vec![garbage.to_str().expect("utf-8 path")], "cannot read"),
        (vec!["--generation", "99"], "no generation 99"),
        (vec![], "give a candidate"),
    ] {
        let o = backtest(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{}", text(&o));
    }
}
