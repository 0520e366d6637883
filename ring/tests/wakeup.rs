//! Guards the wake-up protocol: a consumer (or broadcast reader) that parks is woken by the
//! next publish, because it announced that it sleeps; no wake-up is lost, whatever the
//! timing of the publish against the park.
//!
//! `Consumer::wait` parks in slices of at most 1 ms, which would hide a lost wake-up behind
//! a 1 ms delay; so one test also parks on the sleep word itself, with no slice, the way
//! the consumer does, and fails if only its 10 s timeout brings it back. Timeouts here are
//! watchdogs: nothing asserts how fast a wake-up is.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_raw, raw_record, XorShift, RAW_BYTES_MAX, STALL_WATCHDOG};
use memmap2::MmapMut;
use rim_ring::broadcast::{self, Reader};
use rim_ring::{spsc, Consumer, Producer, Segment};

/// The header word a parked reader announces itself in (`header.rs`: 192, "reader sleeping").
const SLEEP_WORD_OFF: usize = 192;
/// A wait's timeout: only a lost wake-up (or a hang) gets anywhere near it.
const WAIT_TIMEOUT_NS: u64 = 30_000_000_000;
const SPIN_NS: u64 = 1_000;
const ROUNDS: u64 = 1_000;

/// A mapping of a segment's memfd through which the test watches (and may use) the sleep
/// word, as another process would.
struct SleepWord {
    map: MmapMut,
}

impl SleepWord {
    fn of(seg: &Segment) -> Self {
        let file = std::fs::File::from(seg.fd().expect("memfd").try_clone_to_owned().expect("dup"));
        // SAFETY: the memfd is sealed against shrinking, so the mapping stays backed; the
        // test only touches the sleep word through `word`, atomically.
        let map = unsafe { MmapMut::map_mut(&file) }.expect("map");
        Self { map }
    }

    fn word(&self) -> &AtomicU64 {
        let p = self.map.as_ptr().wrapping_add(SLEEP_WORD_OFF).cast_mut().cast::<u64>();
        // SAFETY: the mapping is page-aligned and at least a header long, so `p` is 8-byte
        // aligned and in bounds; it lives as long as `self`; the ring accesses this word
        // only atomically, from any mapping of the same memory.
        unsafe { AtomicU64::from_ptr(p) }
    }

    /// Waits until a reader says it sleeps (its park is imminent or under way).
    fn until_announced(&self, round: u64) {
        let deadline = Instant::now() + STALL_WATCHDOG;
        while self.word().load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "watchdog: round {round}: the reader never announced sleep"
            );
            std::hint::spin_loop();
        }
    }
}

fn memfd_ring(capacity: usize) -> (Producer, Consumer, SleepWord) {
    let seg = Segment::create_memfd("rim-wakeup", spsc::segment_bytes(capacity)).expect("memfd");
    spsc::init(&seg).expect("init");
    let word = SleepWord::of(&seg);
    let seg = Arc::new(seg);
    (
        Producer::open(seg.clone()).expect("producer"),
        Consumer::open(seg).expect("consumer"),
        word,
    )
}

/// How the publisher times its publish against the reader's wait.
fn delay_before_publish(rng: &mut XorShift, round: u64, word: &SleepWord) -> bool {
    match round % 3 {
        // After the reader announced sleep: the wake path is taken for sure.
        0 => {
            word.until_announced(round);
            true
        }
        // A random delay: the publish lands anywhere in spin, announce, re-check or park.
        1 => {
            let until = Instant::now() + Duration::from_nanos(rng.below(300_000));
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            false
        }
        _ => false,
    }
}

/// Waits until the reader has finished round `round - 1`.
fn until_done(done: &AtomicU64, round: u64, reader: &std::thread::ScopedJoinHandle<'_, ()>) {
    let deadline = Instant::now() + STALL_WATCHDOG;
    while done.load(Ordering::Acquire) < round {
        assert!(!reader.is_finished(), "the reader stopped at round {round}");
        assert!(Instant::now() < deadline, "watchdog: round {round} never finished");
        std::thread::yield_now();
    }
}

#[test]
fn a_parked_consumer_is_woken_by_each_publish() {
    let (mut p, mut c, word) = memfd_ring(4096);
    let done = AtomicU64::new(0);
    let mut rng = XorShift::new(42);
    let announced = std::thread::scope(|s| {
        let done = &done;
        let reader = s.spawn(move || {
            for round in 0..ROUNDS {
                assert!(
                    c.wait(SPIN_NS, WAIT_TIMEOUT_NS),
                    "round {round}: wait timed out: the wake-up was lost"
                );
                let mut got = 0;
                c.poll(usize::MAX, |b| {
                    if let Err(e) = check_raw(round, b) {
                        panic!("{e}");
                    }
                    got += 1;
                })
                .expect("poll");
                assert_eq!(got, 1, "round {round}: exactly the one record published");
                done.store(round + 1, Ordering::Release);
            }
        });
        let mut buf = [0u8; RAW_BYTES_MAX];
        let mut announced = 0;
        for round in 0..ROUNDS {
            until_done(done, round, &reader);
            announced += u64::from(delay_before_publish(&mut rng, round, &word));
            let len = raw_record(round, &mut buf);
            p.try_publish(&buf[..len]).expect("publish");
        }
        until_done(done, ROUNDS, &reader);
        reader.join().expect("reader");
        announced
    });
    assert_eq!(
        announced,
        ROUNDS.div_ceil(3),
        "publishes made to a consumer known to be parked"
    );
    assert_eq!(word.word().load(Ordering::SeqCst), 0, "no one sleeps at the end");
}

/// The producer's half of the hand-off, without the consumer's 1 ms slices: a waiter
/// announces sleep in the header word, re-checks for data and parks on the word with a
/// 10 s timeout. The producer's commit must clear the word and wake it; a timeout is a
/// lost wake-up.
#[test]
fn the_commit_wakes_a_waiter_parked_on_the_sleep_word() {
    let (mut p, mut c, word) = memfd_ring(4096);
    c.enable_parking();
    let done = AtomicU64::new(0);
    let mut rng = XorShift::new(7);
    std::thread::scope(|s| {
        let (done, word) = (&done, &word);
        let reader = s.spawn(move || {
            for round in 0..200 {
                word.word().store(1, Ordering::SeqCst);
                // The Dekker re-check: data that came before the announcement is seen here.
                if !c.has_data() {
                    park_until_cleared(word.word(), round);
                }
                assert_eq!(
                    word.word().load(Ordering::SeqCst),
                    0,
                    "round {round}: the producer clears the word"
                );
                assert!(c.has_data(), "round {round}: woken, so the record is there");
                assert_eq!(c.poll(usize::MAX, |b| assert!(check_raw(round, b).is_ok())), Ok(1));
                done.store(round + 1, Ordering::Release);
            }
        });
        let mut buf = [0u8; RAW_BYTES_MAX];
        for round in 0..200 {
            until_done(done, round, &reader);
            word.until_announced(round);
            if rng.chance(2) {
                std::thread::sleep(Duration::from_micros(rng.below(200)));
            }
            let len = raw_record(round, &mut buf);
            p.try_publish(&buf[..len]).expect("publish");
        }
        until_done(done, 200, &reader);
        reader.join().expect("reader");
    });
}

/// FUTEX_WAIT on the low half of `word` while it holds 1, for at most 10 s per wait.
fn park_until_cleared(word: &AtomicU64, round: u64) {
    let ts = libc::timespec { tv_sec: 10, tv_nsec: 0 };
    while word.load(Ordering::SeqCst) == 1 {
        // SAFETY: the futex word is the low 4 bytes (little-endian) of a live, 8-aligned
        // AtomicU64 in a shared mapping; FUTEX_WAIT only reads it; `ts` outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr().cast::<u32>(),
                libc::FUTEX_WAIT,
                1u32,
                &ts as *const libc::timespec,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            assert_ne!(
                err.raw_os_error(),
                Some(libc::ETIMEDOUT),
                "round {round}: parked 10 s: the wake-up was lost"
            );
        }
    }
}

/// Broadcast readers map the segment read-only and cannot announce sleep, so they park
/// in bounded slices instead: a parked reader must still see every record.
#[test]
fn a_parked_broadcast_reader_sees_each_publish() {
    let seg =
        Segment::create_memfd_for_readers("rim-wakeup", broadcast::segment_bytes(16, RAW_BYTES_MAX).expect("size"))
            .expect("memfd");
    broadcast::init(&seg, 16, RAW_BYTES_MAX).expect("init");
    let mut w = broadcast::Writer::open(Arc::new(seg)).expect("writer");
    let mut r = Reader::open(w.segment().clone()).expect("reader");
    let done = AtomicU64::new(0);
    let mut rng = XorShift::new(9);
    std::thread::scope(|s| {
        let done = &done;
        let reader = s.spawn(move || {
            let mut buf = [0u8; RAW_BYTES_MAX];
            for round in 0..ROUNDS {
                assert!(r.wait(SPIN_NS, WAIT_TIMEOUT_NS), "round {round}: wait timed out");
                let len = r.read(&mut buf).expect("not lapped").expect("a record");
                if let Err(e) = check_raw(round, &buf[..len]) {
                    panic!("{e}");
                }
                done.store(round + 1, Ordering::Release);
            }
        });
        let mut buf = [0u8; RAW_BYTES_MAX];
        for round in 0..ROUNDS {
            until_done(done, round, &reader);
            // Sometimes long enough for the reader to have parked.
            std::thread::sleep(Duration::from_micros(rng.below(300)));
            let len = raw_record(round, &mut buf);
            assert_eq!(w.publish(&buf[..len]), Ok(round));
        }
        until_done(done, ROUNDS, &reader);
        reader.join().expect("reader");
    });
}
