//! Guards that a producer process SIGKILLed in the middle of its stream (at whatever
//! instruction it was) leaves the consumer only whole, correct records in an unbroken
//! sequence, is seen dead through the pidfd taken at attach, and that its ring then
//! drains cleanly with no error.
//!
//! The child is a test of this same binary, re-executed with `RIM_RING_TEST_CHILD_ROLE`
//! set; it publishes a known sequence of raw records until it is killed.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{
    accept_from, backoff, check_raw, child_socket, raw_record, ChildProc, TempDir, RAW_BYTES_MAX, STALL_WATCHDOG,
};
use rim_ring::attach::{self, Role};
use rim_ring::liveness::PeerState;
use rim_ring::{Consumer, PublishError};

const CAPACITY: usize = 64 * 1024;
const CHILD: &str = "child_publishes_until_killed";
const SIGKILL: i32 = 9;
/// Bytes the largest raw record takes in the ring, with its header.
const RECORD_BYTES_MAX: u64 = 8 + RAW_BYTES_MAX as u64;

struct Stream {
    _dir: TempDir,
    child: ChildProc,
    c: Consumer,
    next: u64,
}

impl Stream {
    fn start(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let sock = dir.path().join("rimd.sock");
        let listener = attach::listen(&sock).expect("listen");
        let mut child = ChildProc::spawn(CHILD, "forever", dir.path(), &sock, &[]);
        let req = accept_from(&listener, &mut child, STALL_WATCHDOG);
        assert_eq!((req.role, req.peer_pid), (Role::Producer, child.id()));
        let c = req.grant_producer(CAPACITY).expect("grant");
        assert_eq!(c.producer_state(), PeerState::Alive);
        Self {
            _dir: dir,
            child,
            c,
            next: 0,
        }
    }

    /// Polls once, checking every record against the sequence. Never an error.
    fn poll(&mut self) -> usize {
        let next = &mut self.next;
        self.c
            .poll(4096, |b| {
                if let Err(e) = check_raw(*next, b) {
                    panic!("{e}");
                }
                *next += 1;
            })
            .unwrap_or_else(|e| panic!("poll after {} records: {e}", self.next))
    }

    /// Reads until `count` records have arrived; the child must keep running.
    fn read_until(&mut self, count: u64) {
        let mut last_progress = Instant::now();
        while self.next < count {
            if self.poll() > 0 {
                last_progress = Instant::now();
                continue;
            }
            self.child.assert_not_failed("while streaming");
            assert!(
                self.child.try_exited().is_none(),
                "the child stopped on its own\n{}",
                self.child.log()
            );
            assert!(
                last_progress.elapsed() < STALL_WATCHDOG,
                "watchdog: stuck at {} records",
                self.next
            );
            self.c.wait(50_000, 1_000_000);
        }
    }

    /// Kills the child, which must still be publishing, then drains what it committed.
    /// Returns the ring bytes read after the kill.
    fn kill_and_drain(&mut self) -> u64 {
        assert_eq!(
            self.child.try_exited(),
            None,
            "the child must still be running when killed"
        );
        assert_eq!(self.c.producer_state(), PeerState::Alive);
        self.child.kill();
        let position_at_kill = self.c.position();
        let deadline = Instant::now() + STALL_WATCHDOG;
        let mut dead_seen = false;
        loop {
            if self.poll() > 0 {
                continue;
            }
            // One more empty poll after death is seen: then nothing can come any more.
            if dead_seen {
                break;
            }
            if self.c.producer_state() == PeerState::Dead {
                dead_seen = true;
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: producer not seen dead {STALL_WATCHDOG:?} after SIGKILL"
            );
            self.c.wait(10_000, 1_000_000);
        }
        let status = self.child.wait(STALL_WATCHDOG);
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "the child ended by SIGKILL, not on its own: {status}"
        );
        self.c.position() - position_at_kill
    }

    /// After the drain: nothing left, no quarantine, counters consistent with a kill that
    /// may have fallen between a record's commit and the producer's counter update.
    fn assert_drained(&mut self) {
        assert!(!self.c.has_data());
        assert_eq!(
            self.c.poll(usize::MAX, |b| panic!("record after the drain: {b:02x?}")),
            Ok(0)
        );
        assert_eq!(self.c.quarantined(), None);
        assert!(!self.c.producer_closed(), "a killed producer never closed its ring");
        assert_eq!(self.c.producer_state(), PeerState::Dead);
        let s = self.c.stats();
        assert_eq!(s.delivered, self.next);
        assert!(
            s.published == self.next || s.published + 1 == self.next,
            "published {} vs received {}: at most the last commit can miss its count",
            s.published,
            self.next
        );
        assert_eq!(
            (s.rejected, s.refused_too_large, s.refused_invalid, s.depth_bytes),
            (0, 0, 0, 0)
        );
    }
}

#[test]
fn a_producer_killed_while_streaming_leaves_only_whole_records() {
    // Killed after its first record, a few laps in, and ~100 laps in (64 KiB ring).
    for read_before_kill in [1, 10_000, 77_777, 200_000] {
        let mut s = Stream::start("killed-streaming");
        s.read_until(read_before_kill);
        s.kill_and_drain();
        s.assert_drained();
    }
}

#[test]
fn a_producer_killed_while_its_ring_is_full_leaves_a_full_ring_to_drain() {
    let mut s = Stream::start("killed-full");
    s.read_until(50_000);
    // Stop reading until the producer is refused for lack of room: the ring is full.
    let refused = s.c.stats().refused_full;
    let deadline = Instant::now() + STALL_WATCHDOG;
    while s.c.stats().refused_full == refused {
        s.child.assert_not_failed("filling the ring");
        assert!(
            Instant::now() < deadline,
            "watchdog: the producer never filled the ring"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let drained_bytes = s.kill_and_drain();
    // Refused means used + needed > capacity, and a record needs at most two of the
    // largest records' room (one of padding): all of that was committed and is read now.
    assert!(
        drained_bytes > CAPACITY as u64 - 2 * RECORD_BYTES_MAX,
        "only {drained_bytes} bytes were waiting in a full ring of {CAPACITY}"
    );
    s.assert_drained();
}

// ---------------------------------------------------------------------------------------
// Child role

#[test]
fn child_publishes_until_killed() {
    let Some(sock) = child_socket("forever") else { return };
    let mut p = attach::attach_producer(&sock, "forever", CAPACITY).expect("attach_producer");
    let mut buf = [0u8; RAW_BYTES_MAX];
    // Runs until killed; gives up only if the parent is gone or after ten minutes, so that
    // an orphan cannot spin forever.
    let give_up = Instant::now() + Duration::from_secs(600);
    for seq in 0.. {
        let len = raw_record(seq, &mut buf);
        let mut attempt = 0u64;
        loop {
            match p.try_publish(&buf[..len]) {
                Ok(_) => break,
                Err(PublishError::Full { .. }) => {
                    attempt += 1;
                    if attempt.is_multiple_of(4096) {
                        assert_eq!(p.consumer_state(), PeerState::Alive, "consumer gone");
                        assert!(Instant::now() < give_up, "never killed");
                    }
                    backoff(attempt);
                }
                Err(e) => panic!("publish {seq}: {e}"),
            }
        }
    }
}
