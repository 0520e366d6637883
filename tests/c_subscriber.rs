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

/// The C ABI's chain check (`RIM_SUB_VERIFY`) against records no daemon would write: this
/// test serves the attach itself and publishes, on a real broadcast ring, decisions
/// encoded by the daemon's own encoder, one of them altered after it was hashed, one left
/// out, and bytes that are no decision. `rim_subscriber_poll` reports each break as
/// `RIM_ERR_CHAIN` (the decision still filled in) and the garbage as `RIM_ERR_CORRUPT`, and
/// goes on. (The daemon's own rings only ever carry whole chains, so the test above cannot
/// show that a break is seen.)
#[test]
fn the_c_abi_reports_a_broken_chain_and_a_record_that_is_no_decision() {
    use rim_ring::ffi_subscriber::{
        rim_decision, rim_subscriber, rim_subscriber_attach, rim_subscriber_close, rim_subscriber_poll, RIM_ERR_CHAIN,
        RIM_ERR_CORRUPT, RIM_ERR_EMPTY, RIM_SUB_VERIFY,
    };
    use rim_ring::{attach, broadcast, Segment};
    use rimd::reflex::decision::{Chain, Draft, RECORD_BYTES_MAX};
    use std::sync::Arc;

    let dir = TempDir::new("c-sub-chain");
    let sock = dir.path().join("rimd.sock");
    let listener = attach::listen(&sock).expect("listen");
    let bytes = broadcast::segment_bytes(SLOTS, 2048).expect("geometry");
    let seg = Arc::new(Segment::create_memfd_for_readers("test-decisions", bytes).expect("segment"));
    broadcast::init(&seg, SLOTS, 2048).expect("init");
    let granting = {
        let seg = seg.clone();
        std::thread::spawn(move || {
            let request = attach::accept(&listener).expect("the subscriber's request");
            assert_eq!(request.name, "decisions");
            request.grant_subscriber(&seg).expect("grant");
        })
    };
    let path = std::ffi::CString::new(sock.to_string_lossy().as_bytes()).expect("path");
    let mut s: *mut rim_subscriber = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path and a valid place for the subscriber pointer.
    let rc = unsafe { rim_subscriber_attach(path.as_ptr(), 0, RIM_SUB_VERIFY, &mut s) };
    assert_eq!(rc, 0, "attach");
    granting.join().expect("the granting thread");

    // Ten decisions of one chain, as a reflex shard encodes them.
    let mut chain = Chain::new(7);
    let mut buf = vec![0u8; RECORD_BYTES_MAX];
    let records: Vec<Vec<u8>> = (0..10u64)
        .map(|i| {
            let d = Draft {
                shard: 0,
                rule_id: "c-chain",
                rule_version: 1,
                rule_generation: 1,
                severity: 3,
                flags: 0,
                node: 1,
                node_id: "rim:sensor:c-sub:chain",
                event_seq: i,
                event_timestamp: 1_750_000_000_000 + i as i64,
                publish_ns: 1,
                decided_ns: 2,
                latency_ns: 1,
            };
            let ev = [("metric.temp", 90.0 + i as f64)];
            let n = chain.append(&d, ev.len(), ev.into_iter(), &mut buf);
            buf[..n].to_vec()
        })
        .collect();
    let mut writer = broadcast::Writer::open(seg.clone()).expect("writer");
    // SAFETY: every field of rim_decision is an integer or an array of them: zero is valid.
    let mut d: rim_decision = unsafe { std::mem::zeroed() };
    let mut poll = |writer: &mut broadcast::Writer, bytes: &[u8]| {
        writer.publish(bytes).expect("publish");
        // SAFETY: `s` is the live subscriber attached above; `d` is a writable rim_decision.
        let rc = unsafe { rim_subscriber_poll(s, &mut d) };
        (rc, d.chain_seq)
    };
    let mut altered = records[2].clone();
    // The evidence value's last byte, just before the 32-byte hash: the record still
    // decodes, but its stored hash no longer matches it.
    let at = altered.len() - 33;
    altered[at] ^= 0x01;
    let outcomes = [
        poll(&mut writer, &records[0]),
        poll(&mut writer, &records[1]),
        poll(&mut writer, &altered),
        poll(&mut writer, &records[3]), // links to the original of 2, not to what was read
        poll(&mut writer, &records[4]),
        poll(&mut writer, &records[6]), // 5 left out
        poll(&mut writer, &records[7]),
        poll(&mut writer, &[0xA5; 96]),
        poll(&mut writer, &records[8]), // the check starts afresh after a skipped record
    ];
    assert_eq!(
        outcomes,
        [
            (0, 1),
            (0, 2),
            (RIM_ERR_CHAIN, 3),
            (RIM_ERR_CHAIN, 4),
            (0, 5),
            (RIM_ERR_CHAIN, 7),
            (0, 8),
            (RIM_ERR_CORRUPT, 8),
            (0, 9),
        ]
    );
    // SAFETY: as above.
    assert_eq!(unsafe { rim_subscriber_poll(s, &mut d) }, RIM_ERR_EMPTY);
    // SAFETY: `s` came from rim_subscriber_attach and is not used after this.
    unsafe { rim_subscriber_close(s) };
}
