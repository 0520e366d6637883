//! Guards the C ABI (`ring/include/rim_ring.h`): a C program compiled with the system C
//! compiler and linked against `librim_ring.so` attaches, interns, publishes events with
//! every field, sees each refusal with the right status, waits for durability
//! (`rim_producer_wait_durable`) and reads back what the consumer refused
//! (`rim_producer_verdicts`); the Rust consumer receives exactly those events. Needs
//! `target/<profile>/librim_ring.so` (`scripts/test.sh` builds it first with
//! `cargo build -p rim-ring`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rim_ring::{attach, Refusal, Verdict};

const EVENTS: u64 = 5_000;

fn target_dir() -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

fn compile_c_producer(out: &std::path::Path) -> PathBuf {
    let ring = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = target_dir();
    assert!(
        lib_dir.join("librim_ring.so").exists(),
        "{} has no librim_ring.so: run `cargo build -p rim-ring` first (scripts/test.sh does)",
        lib_dir.display()
    );
    let exe = out.join("publish");
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(ring.join("tests/c/publish.c"))
        .arg(format!("-I{}", ring.join("include").display()))
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lrim_ring")
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling the C producer failed");
    exe
}

#[test]
fn a_c_feed_handler_publishes_through_the_c_abi() {
    let dir = std::env::temp_dir().join(format!("rim-c-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = compile_c_producer(&dir);
    let sock = dir.join("rimd.sock");
    let listener = attach::listen(&sock).expect("listen");
    let child = Command::new(&exe)
        .arg(&sock)
        .arg(EVENTS.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn C producer");
    let request = attach::accept(&listener).expect("request");
    assert_eq!(request.name, "c-feed");
    let mut consumer = request.grant_producer(1 << 16).expect("grant");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0u64;
    // The consumer refuses some events, as the daemon would: the C producer reads them back.
    let verdict = |i: u64| match i % 10 {
        3 => Verdict::Refused(Refusal::TimeAhead),
        7 => Verdict::Refused(Refusal::Duplicate),
        _ => Verdict::Taken,
    };
    while seen < EVENTS {
        assert!(Instant::now() < deadline, "watchdog: {seen} of {EVENTS} events");
        consumer
            .poll_events_judged(256, |r| {
                let ev = r.expect("the C producer sends only valid events");
                let i = seen;
                assert_eq!(ev.rim_node_id(), "rim:equity:nyse:IBM.N");
                assert_eq!(ev.status(), "OK");
                assert_eq!(ev.source_topic(), Some("feed.c"));
                assert_eq!(ev.event_id(), Some(format!("c-{i}").as_str()));
                assert_eq!(ev.timestamp(), 1_764_000_000_000 + i as i64);
                assert_eq!(ev.price(), Some(i as f64 / 4.0));
                assert_eq!(ev.volume(), None);
                assert_eq!(ev.stress(), if i % 2 == 1 { Some(0.5) } else { None });
                let metrics: Vec<_> = ev.metrics().collect();
                assert_eq!(metrics, vec![("bid", 100.0 + i as f64), ("ask", 100.5 + i as f64)]);
                assert!(ev.publish_ns() > 0, "stamped by the library");
                seen += 1;
                verdict(i)
            })
            .expect("poll");
    }
    // Everything read: tell the producer it is durable (what the daemon's journal does
    // after its sync); the C program waits for exactly this with rim_producer_wait_durable.
    consumer.set_durable_position(consumer.position());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "C producer failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ahead = (0..EVENTS).filter(|&i| i % 10 == 3).count();
    let dups = (0..EVENTS).filter(|&i| i % 10 == 7).count();
    let want = format!("rejected={ahead} duplicates={dups} event_time_ahead={ahead}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&want),
        "the C producer read its verdicts: {stdout} (want {want})"
    );
    consumer
        .poll_events(usize::MAX, |r| panic!("nothing after the refusals: {r:?}"))
        .expect("poll");
    assert!(consumer.producer_closed(), "rim_producer_close closed the ring");
    let stats = consumer.stats();
    assert_eq!(
        stats.refused_invalid, 4,
        "one invalid node id and three invalid events, refused by the producer"
    );
    let _ = std::fs::remove_dir_all(dir);
}
