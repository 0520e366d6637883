//! Guards the packaging: `scripts/install.sh` installs the binaries, the header, the
//! library, the pkg-config file, the systemd unit, the configuration and the Grafana
//! dashboard into a temporary prefix; what it installed works from there (the unit's
//! `ExecStartPre` check passes, a C program builds with `pkg-config --cflags --libs
//! rim_ring` and loads the installed library, `systemd-analyze verify` accepts the unit
//! where it exists); and the dashboard asks only for metrics a running rimd exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{get, Daemon, TempDir, HTTP_SETS};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of this test build (the test binary is in `deps/`).
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `text` still holds a template placeholder such as `@PREFIX@`.
fn has_placeholder(text: &str) -> bool {
    let parts: Vec<&str> = text.split('@').collect();
    parts.len() > 2
        && parts[1..parts.len() - 1]
            .iter()
            .any(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
}

/// Installs this build into `prefix` with `scripts/install.sh --no-build`.
fn install(prefix: &Path) {
    let target = target_profile_dir();
    let profile = match target.file_name().and_then(|n| n.to_str()) {
        Some("release") => "release",
        _ => "debug",
    };
    assert!(
        target.join("librim_ring.so").exists(),
        "{} has no librim_ring.so: run `cargo build -p rim-ring` first (scripts/test.sh does)",
        target.display()
    );
    let target_root = target.parent().expect("target dir");
    run(Command::new(repo().join("scripts/install.sh"))
        .args(["--no-build", "--profile", profile, "--prefix"])
        .arg(prefix)
        .env("CARGO_TARGET_DIR", target_root));
}

#[test]
fn the_install_script_installs_a_working_tree_into_a_prefix() {
    let dir = TempDir::new("install");
    let prefix = dir.path().join("prefix");
    install(&prefix);
    for f in [
        "bin/rimd",
        "bin/rimctl",
        "include/rim_ring.h",
        "lib/librim_ring.so",
        "lib/librim_ring.a",
        "lib/pkgconfig/rim_ring.pc",
        "lib/systemd/system/rimd.service",
        "share/rimd/grafana/rimd-dashboard.json",
        "share/doc/rimd/README.md",
        "etc/rimd/rimd.toml",
        "etc/rimd/rules.toml",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/rimd.service")).expect("unit");
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/rim_ring.pc")).expect("pc");
    assert!(
        !has_placeholder(&unit) && !has_placeholder(&pc),
        "unfilled template:\n{unit}\n{pc}"
    );
    let bin = prefix.join("bin/rimd");
    for needed in [
        format!("ExecStartPre={} --config", bin.display()),
        "--check".into(),
        "Restart=on-failure".into(),
        "LimitMEMLOCK=".into(),
        "CPUAffinity=".into(),
    ] {
        assert!(unit.contains(&needed), "unit lacks {needed}:\n{unit}");
    }

    // The unit's ExecStartPre, as systemd would run it, against what was installed.
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("ExecStartPre");
    let mut words = pre.split_whitespace();
    let mut check = Command::new(words.next().expect("program"));
    check
        .args(words)
        .env("RIMD_DAEMON_RUN_DIR", dir.path().join("run"))
        .env("RIMD_PERSIST_DATA_DIR", dir.path().join("data"));
    let out = run(&mut check);
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));

    // Installing again keeps the operator's configuration.
    let conf = prefix.join("etc/rimd/rimd.toml");
    std::fs::write(&conf, "# mine\n").expect("edit config");
    install(&prefix);
    assert_eq!(std::fs::read_to_string(&conf).expect("config"), "# mine\n");

    if have("pkg-config") && have("cc") {
        compile_with_pkg_config(&prefix, dir.path());
    } else {
        eprintln!("skipped: pkg-config or cc missing");
    }
    if have("systemd-analyze") {
        run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(prefix.join("lib/systemd/system/rimd.service")));
    } else {
        eprintln!("skipped: systemd-analyze missing");
    }
}

/// A C client built only from what `pkg-config rim_ring` says, loading the installed
/// library (it prints its usage and exits 2 without arguments).
fn compile_with_pkg_config(prefix: &Path, dir: &Path) {
    let pkg = |args: &[&str]| {
        let out = run(Command::new("pkg-config")
            .args(args)
            .arg("rim_ring")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let flags = pkg(&["--cflags", "--libs"]);
    let libdir = pkg(&["--variable=libdir"]);
    assert_eq!(Path::new(&libdir), prefix.join("lib"));
    let exe = dir.join("subscribe");
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(repo().join("ring/tests/c/subscribe.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{libdir}")));
    let out = Command::new(&exe).output().expect("run the C client");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// The metric names a PromQL expression reads (`rimd_…`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("rimd_") {
        let start = i + at;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
        names.push(expr[start..end].to_owned());
        i = end;
    }
    names
}

#[test]
fn the_grafana_dashboard_reads_only_metrics_rimd_exports() {
    let text = std::fs::read_to_string(repo().join("packaging/grafana/rimd-dashboard.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();

    let mut d = Daemon::start(HTTP_SETS, None);
    let metrics = get(&d.http_addr(), "/api/v1/metrics").text();
    let mut exported: BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    // The bridge's metrics appear only while it is enabled; its names come from one list.
    exported.extend(
        rimd::bridge::health::BridgeHealth::new()
            .metrics()
            .iter()
            .map(|(name, _, _)| format!("rimd_bridge_{name}")),
    );
    let missing: Vec<&String> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard reads metrics rimd does not export: {missing:?}"
    );
    for theme in [
        "rimd_stage_latency_seconds",
        "rimd_ring_depth",
        "rimd_ring_refused_full_total",
        "rimd_persist_journal_lag_bytes_total",
        "rimd_bridge_state",
    ] {
        assert!(wanted.contains(theme), "the dashboard has no panel on {theme}");
    }
}
