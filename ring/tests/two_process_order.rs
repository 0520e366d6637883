//! Guards that records published by a producer PROCESS reach the consumer process whole, in
//! order and unchanged (raw records and full RimFastEvents, every field), over a sealed
//! memfd handed over the attach socket, and that the ring's counters agree with what crossed.
//!
//! The child side is a test of this same binary, re-executed with `RIM_RING_TEST_CHILD_ROLE`
//! set; in a normal run the child-role tests return at once.
//!
//! Counts: `RIM_TEST_EVENTS` raw records (default 10,000,000) and `RIM_TEST_FULL_EVENTS`
//! full events (default 100,000).

mod common;

use std::time::Instant;

use common::{
    accept_from, backoff, check_raw, check_view, child_socket, env_u64, event_ref, raw_record, symbols_defined,
    templates, ChildProc, TempDir, METRICS_BUF, RAW_BYTES_MAX, STALL_WATCHDOG, TEMPLATES,
};
use rim_ring::attach::{self, Role};
use rim_ring::liveness::PeerState;
use rim_ring::spsc::RingStats;
use rim_ring::{Consumer, Producer, PublishError};

const CAPACITY: usize = 64 * 1024;
const RAW_DEFAULT: u64 = 10_000_000;
const FULL_EVENTS_DEFAULT: u64 = 100_000;

const RAW_CHILD: &str = "child_publishes_raw_records";
const EVENTS_CHILD: &str = "child_publishes_events";

fn raw_count() -> u64 {
    env_u64("RIM_TEST_EVENTS", RAW_DEFAULT)
}

fn events_count() -> u64 {
    env_u64("RIM_TEST_FULL_EVENTS", FULL_EVENTS_DEFAULT)
}

/// Starts the child in `role`, takes its attach request and grants it a ring.
fn attach_child(tag: &str, role: &str, child_test: &str, count: u64) -> (TempDir, ChildProc, Consumer) {
    let dir = TempDir::new(tag);
    let sock = dir.path().join("rimd.sock");
    let listener = attach::listen(&sock).expect("listen");
    let mut child = ChildProc::spawn(
        child_test,
        role,
        dir.path(),
        &sock,
        &[("RIM_TEST_COUNT", count.to_string())],
    );
    let req = accept_from(&listener, &mut child, STALL_WATCHDOG);
    assert_eq!(req.role, Role::Producer);
    assert_eq!(req.peer_pid, child.id(), "peer pid comes from SO_PEERCRED");
    assert_eq!(req.capacity, CAPACITY);
    assert_eq!(req.name, role);
    let consumer = req.grant_producer(1 << 20).expect("grant producer");
    assert_eq!(consumer.producer_state(), PeerState::Alive);
    (dir, child, consumer)
}

/// Waits for data when the ring is empty; fails if the child died or nothing came for the
/// watchdog's duration.
fn idle(c: &Consumer, child: &mut ChildProc, last_progress: Instant, received: u64, total: u64) {
    if !c.wait(50_000, 10_000_000) {
        child.assert_not_failed("while streaming");
        assert!(
            last_progress.elapsed() < STALL_WATCHDOG,
            "watchdog: no record for {STALL_WATCHDOG:?} after {received} of {total}\n{}",
            child.log()
        );
    }
}

/// After the stream: the child exited cleanly and closed, nothing is left, and the ring's
/// counters say exactly what crossed.
fn finish(c: &mut Consumer, child: &mut ChildProc, published: u64) {
    let status = child.wait(STALL_WATCHDOG);
    assert!(status.success(), "child exited with {status}\n{}", child.log());
    assert_eq!(
        c.poll(usize::MAX, |b| panic!("record past the end of the stream: {b:02x?}")),
        Ok(0)
    );
    assert!(!c.has_data());
    assert!(c.producer_closed(), "the child closed its producer");
    assert_eq!(c.quarantined(), None);
    let full: u64 = child
        .reported("REFUSED_FULL")
        .unwrap_or_else(|| panic!("child did not report REFUSED_FULL\n{}", child.log()))
        .parse()
        .expect("REFUSED_FULL is a number");
    assert_eq!(
        c.stats(),
        RingStats {
            published,
            delivered: published,
            rejected: 0,
            refused_full: full,
            refused_too_large: 0,
            refused_invalid: 0,
            depth_bytes: 0,
        }
    );
    assert_eq!(
        c.producer_state(),
        PeerState::Dead,
        "the exited child is seen dead through its pidfd"
    );
}

#[test]
fn raw_records_cross_processes_in_order_and_intact() {
    let n = raw_count();
    let (_dir, mut child, mut c) = attach_child("order-raw", "raw", RAW_CHILD, n);
    let mut next = 0u64;
    let mut last_progress = Instant::now();
    while next < n {
        let got = c
            .poll(4096, |b| {
                if let Err(e) = check_raw(next, b) {
                    panic!("{e}");
                }
                next += 1;
            })
            .unwrap_or_else(|e| panic!("poll after {next} records: {e}"));
        if got > 0 {
            last_progress = Instant::now();
        } else {
            idle(&c, &mut child, last_progress, next, n);
        }
    }
    assert_eq!(next, n);
    finish(&mut c, &mut child, n);
}

#[test]
fn full_events_cross_processes_with_every_field_intact() {
    let n = events_count();
    let t = templates();
    let (_dir, mut child, mut c) = attach_child("order-events", "events", EVENTS_CHILD, n);
    let mut next = 0u64;
    let mut last_publish_ns = 0u64;
    let mut last_progress = Instant::now();
    while next < n {
        let before = next;
        let mut on_event = |r: rim_ring::spsc::EventResult<'_>| {
            let v = r.unwrap_or_else(|e| panic!("event {next} refused by the consumer: {e}"));
            if let Err(e) = check_view(&t[next as usize % TEMPLATES], next, &v) {
                panic!("{e}");
            }
            // The child left publish_ns 0: the ring stamped its CLOCK_MONOTONIC, which is
            // the same clock here, so it is set, in publish order, and in our past.
            let ns = v.publish_ns();
            assert!(
                ns > 0 && ns >= last_publish_ns,
                "event {next}: publish_ns {ns} after {last_publish_ns}"
            );
            assert!(
                ns <= rim_ring::clock::monotonic_ns(),
                "event {next}: publish_ns {ns} is in the future"
            );
            last_publish_ns = ns;
            next += 1;
        };
        let polled = c.poll_events(256, &mut on_event);
        polled.unwrap_or_else(|e| panic!("poll after {before} events: {e}"));
        if next > before {
            last_progress = Instant::now();
        } else {
            idle(&c, &mut child, last_progress, next, n);
        }
    }
    // Every distinct string crossed once, as a Define record, before the first event using it.
    let defines = symbols_defined(&t, n);
    assert_eq!(c.symbols().symbol_count() as u64, defines);
    finish(&mut c, &mut child, n + defines);
}

// ---------------------------------------------------------------------------------------
// Child roles

/// Publishes with retry on `Full`, counting refusals; checks the consumer is still there
/// now and then so that an orphaned child does not spin forever.
fn publish_retrying(
    p: &mut Producer,
    full: &mut u64,
    what: u64,
    mut publish: impl FnMut(&mut Producer) -> Result<u64, PublishError>,
) {
    let mut attempt = 0u64;
    loop {
        match publish(p) {
            Ok(pos) => {
                assert_eq!(pos, p.position());
                return;
            }
            Err(PublishError::Full { .. }) => {
                *full += 1;
                attempt += 1;
                if attempt.is_multiple_of(1 << 16) {
                    assert_eq!(
                        p.consumer_state(),
                        PeerState::Alive,
                        "consumer gone while publishing {what}"
                    );
                }
                backoff(attempt);
            }
            Err(e) => panic!("publish {what}: {e}"),
        }
    }
}

fn attach_as_child(sock: &std::path::Path, role: &str) -> Producer {
    let p = attach::attach_producer(sock, role, CAPACITY).expect("attach_producer");
    assert_eq!(
        p.consumer_pid(),
        std::os::unix::process::parent_id(),
        "the parent test consumes"
    );
    p
}

#[test]
fn child_publishes_raw_records() {
    let Some(sock) = child_socket("raw") else { return };
    let n = env_u64("RIM_TEST_COUNT", 0);
    let mut p = attach_as_child(&sock, "raw");
    let mut buf = [0u8; RAW_BYTES_MAX];
    let mut full = 0;
    for seq in 0..n {
        let len = raw_record(seq, &mut buf);
        publish_retrying(&mut p, &mut full, seq, |p| p.try_publish(&buf[..len]));
    }
    println!("REFUSED_FULL={full}");
    p.close();
}

#[test]
fn child_publishes_events() {
    let Some(sock) = child_socket("events") else { return };
    let n = env_u64("RIM_TEST_COUNT", 0);
    let t = templates();
    let mut p = attach_as_child(&sock, "events");
    let mut full = 0;
    for i in 0..n {
        let mut buf = [("", 0.0); METRICS_BUF];
        let ev = event_ref(&t[i as usize % TEMPLATES], i, &mut buf);
        publish_retrying(&mut p, &mut full, i, |p| p.try_publish_event(&ev));
    }
    println!("REFUSED_FULL={full}");
    p.close();
}
