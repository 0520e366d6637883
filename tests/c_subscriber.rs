//! Guards the C ABI's subscriber side against a real daemon: a C program linked only with
//! `librim_ring.so` (`ring/tests/c/subscribe.c`) publishes events that fire a rule, reads
//! the decisions back with `rim_subscriber_next` (hash chain checked), and every field it
//! prints equals what the daemon's own decoder reads from the same records; then the ring
//! laps it, and each decision is either read or counted in `rim_subscriber_missed`.
//! Needs `target/<profile>/librim_ring.so` (`scripts/test.sh` builds it first).

mod common;

use common::{Daemon, TempDir, SOON};
use rimd::reflex::decision::{Decision, Verifier};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RULES: &str = r#"
[[rule]]
id = "c-hot"
nodes = "rim:sensor:c-sub:*"
when = "metric.temp > 80 and metric.load < 5"
severity = "high"
"#;

/// Decisions read as they come (phase 1).
const EVENTS: usize = 40;
/// Decisions published while the C subscriber does not read: more than the ring holds.
const LAP_EVENTS: u64 = 200;
const SLOTS: u64 = 64;

/// `target/<profile>`, where cargo put `librim_ring.so` (the test binary is in `deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

fn compile(dir: &Path) -> PathBuf {
    let ring = Path::new(env!("CARGO_MANIFEST_DIR")).join("ring");
    let lib_dir = target_dir();
    assert!(
        lib_dir.join("librim_ring.so").exists(),
        "{} has no librim_ring.so: run `cargo build -p rim-ring` first (scripts/test.sh does)",
        lib_dir.display()
    );
    let exe = dir.join("subscribe");
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(ring.join("tests/c/subscribe.c"))
        .arg(format!("-I{}", ring.join("include").display()))
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lrim_ring")
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling the C subscriber failed");
    exe
}

/// The line `subscribe.c` prints for a decision, built from the daemon's decoder.
fn expected_line(d: &Decision) -> String {
    let mut line = format!(
        "decision\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        d.chain_seq,
        d.rule_id,
        d.rim_node_id,
        d.severity,
        d.event_seq,
        d.event_timestamp,
        d.publish_ns,
        d.decided_ns,
        d.latency_ns,
        d.prev_hash,
        d.hash,
        d.evidence.len()
    );
    for (label, value) in &d.evidence {
        let v = value.expect("the rule's inputs are known");
        // C's %.17g of these small integers prints them without a fraction.
        line.push_str(&format!("\t{label}={v}"));
    }
    line
}

#[test]
fn a_c_subscriber_reads_the_daemons_decisions_through_the_shared_library() {
    let build = TempDir::new("c-sub-build");
    let exe = compile(build.path());
    let slots = format!("decisions.slots={SLOTS}");
    let d = Daemon::start(&[slots.as_str()], Some(RULES));
    let mut ours = d.subscriber();
    let mut child = Command::new(&exe)
        .arg(d.socket())
        .arg(EVENTS.to_string())
        .arg(LAP_EVENTS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the C subscriber");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut c_lines = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read the C program's output");
        if line == "phase1 done" {
            break;
        }
        c_lines.push(line);
    }
    assert_eq!(c_lines.len(), EVENTS, "C program output: {c_lines:#?}");

    // The same records, read by the daemon's decoder and verifier.
    let mut verifier = Verifier::new();
    for (i, raw) in ours.take_raw(EVENTS, SOON).iter().enumerate() {
        let want = verifier.push(raw).expect("the daemon's chain verifies");
        assert_eq!(c_lines[i], expected_line(&want), "decision {i}");
    }

    // Phase 2: the C subscriber does not read while 200 decisions go through 64 slots.
    writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("tell the C program to go on");
    let last = lines
        .next()
        .expect("the C program's lap line")
        .expect("read the C program's output");
    let status = child.wait().expect("wait for the C program");
    assert!(status.success(), "C subscriber failed ({status}); last line: {last}");
    let counts: Vec<u64> = last
        .strip_prefix("lapped missed=")
        .and_then(|rest| rest.split_once(" read="))
        .map(|(m, r)| [m, r].iter().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(counts.len(), 2, "{last}");
    let (missed, read) = (counts[0], counts[1]);
    assert_eq!(
        missed + read,
        LAP_EVENTS,
        "every decision read or counted missed: {last}"
    );
    assert_eq!(
        read,
        SLOTS - 1,
        "a lapped reader keeps all but the slot being written: {last}"
    );
}
