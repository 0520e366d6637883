//! A producer process stopped (SIGSTOP) at random moments of its publishing loop, so that
//! stops land in the middle of writing a record, and held stopped for longer than the
//! daemon's liveness checks and the shard stall bound: the other rings do not stall (a
//! bystander's events are all read and readiness stays 200 while it is stopped), its half
//! written record blocks nothing (a record is invisible until its header word, written
//! last, commits it, so there is nothing to skip or pad), and when it is resumed its ring
//! is neither quarantined nor corrupt: every record it publishes arrives whole, in order,
//! exactly once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rim_ring::{attach, PublishError};

/// The stopped producer's role (this test binary re-executed).
const ROLE: &str = "stopped-producer";
/// Events the stopped producer publishes in all.
const EVENTS: u64 = 400_000;
/// How many times it is stopped, and for how long each time: longer than the liveness
/// interval and than `topology.shard_stall_ms_max` (2 s).
const STOPS: usize = 4;
const STOPPED_FOR: Duration = Duration::from_millis(2_500);
/// Symbols the stopped producer defines in its ring before using them (16 node ids, the
/// metric name, the status): records too.
const DEFINITIONS: u64 = 16 + 1 + 1;
/// Bystander events published and read while the producer is stopped.
const BYSTANDER_EVENTS: u64 = 20_000;

fn node(i: u64) -> String {
    format!("rim:sensor:stopped:n{}", i % 16)
}

/// The child: publishes `EVENTS` numbered events as fast as the ring takes them, then
/// reports how many and waits until the daemon has read them.
#[test]
fn child_publishes_numbered_events() {
    let Some(socket) = child_socket(ROLE) else { return };
    let mut p = attach::attach_producer(&socket, "stopped", 64 * 1024).expect("attach");
    println!("ATTACHED=1");
    for i in 0..EVENTS {
        let mut ev = event(&node(i), T0 + i as i64, &[("seq", i as f64)]);
        ev.event_id = Some(format!("s{i}"));
        loop {
            match p.try_publish_event(&ev.as_ref()) {
                Ok(_) => break,
                Err(PublishError::Full { .. }) => std::hint::spin_loop(),
                Err(e) => {
                    // What a resumed producer must see instead of corrupting anything.
                    println!("ERROR={e}");
                    return;
                }
            }
        }
    }
    println!("PUBLISHED={EVENTS}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.consumed_position() < p.position() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("CONSUMED={}", u8::from(p.consumed_position() >= p.position()));
    // Alive until the test has read the ring's figures (a dead producer's ring is
    // reclaimed and leaves the stats); the test kills it.
    std::thread::sleep(Duration::from_secs(120));
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill takes a pid and a signal; the child is ours and not yet reaped.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

#[test]
fn stopped_producer_stalls_no_other_ring_and_resumes_intact() {
    let mut d = Daemon::start(HTTP_SETS, None);
    let addr = d.http_addr();
    let dir = TempDir::new("stopped");
    let mut child = ChildProc::spawn("child_publishes_numbered_events", ROLE, dir.path(), &d.socket());
    child.wait_reported("ATTACHED", SOON);
    let mut bystander = d.producer("bystander", 1 << 20);
    let mut seq = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for stop in 0..STOPS {
        // A random moment of the child's publishing loop.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(20 + rng % 80));
        if child.try_exited().is_some() {
            break;
        }
        signal(child.id(), libc::SIGSTOP);
        let stopped_at = Instant::now();
        for _ in 0..BYSTANDER_EVENTS {
            seq += 1;
            let mut ev = event("rim:sensor:bystander:n1", T0 + seq as i64, &[("seq", seq as f64)]);
            ev.event_id = Some(format!("b{seq}"));
            bystander.publish(&ev);
        }
        assert!(
            bystander.wait_consumed(Duration::from_secs(2)),
            "stop {stop}: the bystander's ring stalled while another producer is stopped"
        );
        let ready = get(&addr, "/api/v1/health/ready");
        assert_eq!(ready.status, 200, "stop {stop}: not ready: {}", ready.text());
        std::thread::sleep(STOPPED_FOR.saturating_sub(stopped_at.elapsed()));
        let ready = get(&addr, "/api/v1/health/ready");
        assert_eq!(
            ready.status,
            200,
            "stop {stop}: not ready after {STOPPED_FOR:?}: {}",
            ready.text()
        );
        signal(child.id(), libc::SIGCONT);
    }
    let consumed = child.wait_reported("CONSUMED", Duration::from_secs(120));
    assert!(
        child.reported("ERROR").is_none(),
        "the producer saw an error:\n{}",
        child.log()
    );
    assert_eq!(
        consumed, "1",
        "the daemon did not read all of the resumed producer's events"
    );
    // Every record arrived whole, exactly once: the ring was never quarantined or
    // invalid, and the daemon read exactly the events published.
    let s = d.wait_for(SOON, "the stopped producer's ring drained", |s| {
        ring(s, "stopped").is_some_and(|r| r.delivered >= EVENTS + DEFINITIONS)
    });
    let r = ring(&s, "stopped").expect("the stopped producer's ring");
    assert_eq!(
        r.delivered,
        EVENTS + DEFINITIONS,
        "records of the stopped producer: {r:?}"
    );
    assert_eq!(r.invalid, 0, "records of the stopped producer were invalid: {r:?}");
    assert_ne!(r.state, "quarantined", "{r:?}");
    let b = ring(&s, "bystander").expect("the bystander's ring");
    // Its three definitions (node id, metric name, status) are records too.
    assert_eq!(b.delivered, seq + 3, "the bystander's events");
    assert!(d.try_exited().is_none(), "rimd died:\n{}", d.log_text());
}
