//! Guards the broadcast ring's promise to readers at different paces: a reader that keeps
//! up sees every record in order; a reader that falls behind gets only whole records, in
//! order, and is told exactly how many it missed (received + missed = published), in one
//! process and across processes (the segment handed over the attach socket).
//!
//! Every record carries its sequence number and a checksum over its bytes, so a torn or
//! misplaced record cannot pass for a good one. `RIM_TEST_BROADCAST` sets the number of
//! records of the in-process test (default 200,000).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    accept_from, check_raw, child_socket, env_u64, raw_record, verify_raw, ChildProc, TempDir, RAW_BYTES_MAX,
    STALL_WATCHDOG,
};
use rim_ring::attach::{self, Role};
use rim_ring::broadcast::{self, ReadError, Reader};
use rim_ring::Segment;

const SLOTS: u64 = 64;
const SLOT_BYTES: usize = RAW_BYTES_MAX;

/// What a reader that may be lapped saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    received: u64,
    missed: u64,
    laps: u64,
}

/// Reads until the reader's position reaches `end`, checking that every record is whole
/// and is exactly the one the reader expected, and that skips only ever move forward.
/// `pause` is called after every record received (the reader's pace).
fn read_to(r: &mut Reader, end: u64, mut pause: impl FnMut(u64)) -> Tally {
    let mut buf = [0u8; SLOT_BYTES];
    let mut tally = Tally::default();
    let mut last_progress = Instant::now();
    while r.position() < end {
        let expected = r.position();
        match r.read(&mut buf) {
            Ok(Some(len)) => {
                let seq = verify_raw(&buf[..len]).unwrap_or_else(|e| panic!("torn record at {expected}: {e}"));
                assert_eq!(
                    seq, expected,
                    "a reader gets the record it expects, or is told it was lapped"
                );
                tally.received += 1;
                last_progress = Instant::now();
                pause(tally.received);
            }
            Ok(None) => {
                assert!(
                    last_progress.elapsed() < STALL_WATCHDOG,
                    "watchdog: reader stuck at {expected} of {end}"
                );
                r.wait(10_000, 1_000_000);
            }
            Err(ReadError::Lapped { missed }) => {
                assert!(missed > 0, "a lap skips at least one record");
                assert_eq!(r.position(), expected + missed, "the skip is exactly what it reports");
                tally.missed += missed;
                tally.laps += 1;
                last_progress = Instant::now();
            }
            Err(e) => panic!("read at {expected}: {e}"),
        }
    }
    assert_eq!(r.missed(), tally.missed, "the reader's own count of missed records");
    tally
}

#[test]
fn a_fast_reader_sees_everything_and_a_lapped_one_counts_exactly_what_it_missed() {
    let n = env_u64("RIM_TEST_BROADCAST", 200_000);
    let mut w = broadcast::heap(SLOTS, SLOT_BYTES).expect("broadcast ring");
    let open = || Reader::open(w.segment().clone()).expect("reader");
    let (mut fast, mut medium, mut slow) = (open(), open(), open());
    assert_eq!((fast.position(), medium.position(), slow.position()), (0, 0, 0));
    // The writer never waits for readers; the test holds it back for the fast reader only,
    // which is what "a reader that keeps up" means on a shared 2-core machine.
    let fast_seen = AtomicU64::new(0);
    let (fast_tally, medium_tally, slow_tally) = std::thread::scope(|s| {
        let fast_seen = &fast_seen;
        let fast = s.spawn(move || {
            let mut buf = [0u8; SLOT_BYTES];
            let mut last_progress = Instant::now();
            while fast.position() < n {
                let expected = fast.position();
                match fast.read(&mut buf) {
                    Ok(Some(len)) => {
                        if let Err(e) = check_raw(expected, &buf[..len]) {
                            panic!("fast reader: {e}");
                        }
                        fast_seen.store(expected + 1, Ordering::Release);
                        last_progress = Instant::now();
                    }
                    Ok(None) => {
                        assert!(
                            last_progress.elapsed() < STALL_WATCHDOG,
                            "watchdog: fast reader stuck at {expected}"
                        );
                        fast.wait(10_000, 1_000_000);
                    }
                    Err(e) => panic!("the fast reader must never be lapped: {e} at {expected}"),
                }
            }
            Tally {
                received: fast.position(),
                missed: fast.missed(),
                laps: 0,
            }
        });
        let medium = s.spawn(move || {
            read_to(&mut medium, n, |i| {
                if i % 8 == 0 {
                    std::thread::yield_now();
                }
            })
        });
        let slow = s.spawn(move || {
            read_to(&mut slow, n, |i| {
                if i % 64 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        });
        let mut buf = [0u8; RAW_BYTES_MAX];
        let mut last_progress = Instant::now();
        for seq in 0..n {
            while seq - fast_seen.load(Ordering::Acquire) >= SLOTS / 2 {
                assert!(!fast.is_finished(), "the fast reader died");
                assert!(
                    last_progress.elapsed() < STALL_WATCHDOG,
                    "watchdog: fast reader stuck at {seq}"
                );
                std::thread::yield_now();
            }
            last_progress = Instant::now();
            let len = raw_record(seq, &mut buf);
            assert_eq!(w.publish(&buf[..len]), Ok(seq));
        }
        assert_eq!(w.position(), n);
        (
            fast.join().expect("fast reader"),
            medium.join().expect("medium reader"),
            slow.join().expect("slow reader"),
        )
    });
    println!("fast {fast_tally:?}, medium {medium_tally:?}, slow {slow_tally:?}");
    assert_eq!(
        fast_tally,
        Tally {
            received: n,
            missed: 0,
            laps: 0
        }
    );
    for (name, t) in [("medium", medium_tally), ("slow", slow_tally)] {
        assert_eq!(
            t.received + t.missed,
            n,
            "{name} reader: received + missed = published ({t:?})"
        );
    }
    assert!(
        slow_tally.laps > 0 && slow_tally.received > 0,
        "the slow reader was lapped and still read: {slow_tally:?}"
    );
}

#[test]
fn a_reader_opened_late_starts_at_the_next_record_or_the_oldest_intact_one() {
    let mut w = broadcast::heap(SLOTS, SLOT_BYTES).expect("broadcast ring");
    let mut buf = [0u8; RAW_BYTES_MAX];
    for seq in 0..1000 {
        let len = raw_record(seq, &mut buf);
        w.publish(&buf[..len]).expect("publish");
    }
    let mut next = Reader::open(w.segment().clone()).expect("reader");
    assert_eq!((next.position(), next.lag()), (1000, 0));
    assert_eq!(next.read(&mut buf), Ok(None));
    let mut oldest = Reader::open_oldest(w.segment().clone()).expect("reader");
    assert_eq!((oldest.position(), oldest.lag()), (1000 - SLOTS, SLOTS));
    let t = read_to(&mut oldest, 1000, |_| {});
    assert_eq!(
        t,
        Tally {
            received: SLOTS,
            missed: 0,
            laps: 0
        }
    );
    let len = raw_record(1000, &mut buf);
    w.publish(&buf[..len]).expect("publish");
    assert_eq!(
        read_to(&mut next, 1001, |_| {}),
        Tally {
            received: 1,
            missed: 0,
            laps: 0
        }
    );
    let mut small = [0u8; SLOT_BYTES - 8];
    assert_eq!(
        next.read(&mut small),
        Err(ReadError::BufferTooSmall {
            len: SLOT_BYTES - 8,
            slot_bytes: SLOT_BYTES
        })
    );
}

// ---------------------------------------------------------------------------------------
// Across processes

const SUBSCRIBER_CHILD: &str = "child_subscribes_and_falls_behind";
/// Positions the child subscriber covers (received or missed).
const SUBSCRIBER_SPAN: u64 = 50_000;

#[test]
fn a_subscriber_process_reads_at_its_own_pace_and_counts_what_it_missed() {
    let seg = Segment::create_memfd_for_readers(
        "rim-broadcast",
        broadcast::segment_bytes(SLOTS, SLOT_BYTES).expect("size"),
    )
    .expect("memfd");
    broadcast::init(&seg, SLOTS, SLOT_BYTES).expect("init");
    let mut w = broadcast::Writer::open(Arc::new(seg)).expect("writer");
    let dir = TempDir::new("broadcast");
    let sock = dir.path().join("rimd.sock");
    let listener = attach::listen(&sock).expect("listen");
    let mut child = ChildProc::spawn(SUBSCRIBER_CHILD, "subscriber", dir.path(), &sock, &[]);
    let req = accept_from(&listener, &mut child, STALL_WATCHDOG);
    assert_eq!(
        (req.role, req.peer_pid, req.name.as_str()),
        (Role::Subscriber, child.id(), "subscriber")
    );
    req.grant_subscriber(w.segment()).expect("grant subscriber");
    // Publish until the subscriber has covered its span and exits.
    let mut buf = [0u8; RAW_BYTES_MAX];
    let deadline = Instant::now() + STALL_WATCHDOG;
    let mut seq = 0;
    while child.try_exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "watchdog: subscriber still reading after {seq} records\n{}",
            child.log()
        );
        for _ in 0..64 {
            let len = raw_record(seq, &mut buf);
            assert_eq!(w.publish(&buf[..len]), Ok(seq));
            seq += 1;
        }
        std::thread::yield_now();
    }
    let status = child.wait(STALL_WATCHDOG);
    assert!(status.success(), "subscriber exited with {status}\n{}", child.log());
    let get = |k: &str| -> u64 {
        child
            .reported(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k}\n{}", child.log()))
    };
    let (start, end, received, missed) = (get("START"), get("END"), get("RECEIVED"), get("MISSED"));
    assert!(
        end >= start + SUBSCRIBER_SPAN && end <= seq,
        "span {start}..{end} of {seq} published"
    );
    assert_eq!(
        received + missed,
        end - start,
        "received + missed = what was published over the span"
    );
    assert!(
        missed > 0 && received > 0,
        "the subscriber fell behind and still read: {received} / {missed}"
    );
}

#[test]
fn child_subscribes_and_falls_behind() {
    let Some(sock) = child_socket("subscriber") else { return };
    let mut r = attach::attach_subscriber(&sock, "subscriber").expect("attach_subscriber");
    assert_eq!(r.slot_bytes(), SLOT_BYTES);
    let start = r.position();
    let t = read_to(&mut r, start + SUBSCRIBER_SPAN, |i| {
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    println!(
        "\nSTART={start} END={} RECEIVED={} MISSED={}",
        r.position(),
        t.received,
        t.missed
    );
}
