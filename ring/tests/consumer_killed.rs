//! Guards that a producer learns when its consumer dies, and that it still never blocks:
//! with the consumer (here a child process playing the daemon) SIGKILLed, the producer's
//! view of its consumer turns `Dead`, and publishing returns `Full` once the ring fills
//! instead of waiting for a reader that will never come.

mod common;

use std::time::{Duration, Instant};

use common::{child_socket, ChildProc, TempDir, STALL_WATCHDOG};
use rim_ring::attach;
use rim_ring::liveness::PeerState;
use rim_ring::spsc::PublishError;

const CAPACITY: usize = 4096;

/// Child role: the ring's owner. Grants one producer ring and reads it until killed.
#[test]
fn child_owns_and_consumes() {
    let Some(sock) = child_socket("owner") else { return };
    let listener = attach::listen(&sock).expect("listen");
    let request = attach::accept(&listener).expect("request");
    let mut consumer = request.grant_producer(CAPACITY).expect("grant");
    let mut seen = 0u64;
    loop {
        seen += consumer.poll(64, |_| {}).expect("poll") as u64;
        println!("seen={seen}");
        if seen >= 3 {
            // Stop reading, stay alive: the parent kills us.
            std::thread::sleep(Duration::from_secs(3600));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_killed_consumer_is_reported_dead_and_the_producer_never_blocks() {
    let dir = TempDir::new("consumer-killed");
    let sock = dir.path().join("rimd.sock");
    let mut child = ChildProc::spawn("child_owns_and_consumes", "owner", dir.path(), &sock, &[]);
    let deadline = Instant::now() + STALL_WATCHDOG;
    let mut producer = loop {
        match attach::attach_producer(&sock, "feed", CAPACITY) {
            Ok(p) => break p,
            Err(_) if Instant::now() < deadline => {
                child.assert_not_failed("owner");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("attach: {e}\n{}", child.log()),
        }
    };
    assert_eq!(producer.consumer_pid(), child.id(), "the owner stamped its pid");
    for i in 0u8..3 {
        producer.try_publish(&[i; 16]).expect("publish");
    }
    while producer.consumed_position() < producer.position() {
        assert!(
            Instant::now() < deadline,
            "watchdog: the owner never consumed\n{}",
            child.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(producer.consumer_state(), PeerState::Alive);

    child.kill();
    while producer.consumer_state() != PeerState::Dead {
        assert!(
            Instant::now() < deadline,
            "watchdog: the killed consumer still looks alive"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Nobody reads any more: publishing fills the ring, then says Full, and never waits.
    let mut published = 0;
    let refusal = loop {
        match producer.try_publish(&[9; 64]) {
            Ok(_) => published += 1,
            Err(e) => break e,
        }
        assert!(published <= CAPACITY / 64, "more published than the ring can hold");
    };
    assert!(matches!(refusal, PublishError::Full { .. }), "{refusal}");
    assert!(published > 0 && published < CAPACITY / 64 + 1);
    let _ = child.wait(STALL_WATCHDOG);
}
