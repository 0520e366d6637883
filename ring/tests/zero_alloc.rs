//! Guards the crate's first promise: once a ring is open and its strings are known,
//! publishing and consuming allocate nothing — full RimFastEvents through
//! `try_publish_event` / `poll_events` with every field read back, and records through the
//! broadcast writer and reader.
//!
//! Its own test binary: it installs a counting global allocator. Counts are per thread, so
//! the harness's own threads and the other tests of this binary do not disturb them.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use common::{check_raw, check_view, event_ref, raw_record, templates, METRICS_BUF, RAW_BYTES_MAX, TEMPLATES};
use rim_ring::broadcast::{self, Reader};
use rim_ring::{spsc, Consumer, Producer};

struct CountingAllocator;

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) and frees made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    // `try_with`: never panic inside the allocator, even while a thread is torn down.
    let _ = counter.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; the counting touches only a const-initialized thread-local Cell, which
// neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCATIONS);
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCATIONS);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(&ALLOCATIONS);
        // SAFETY: forwarded as received; `ptr` came from this allocator, i.e. from System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump(&FREES);
        // SAFETY: forwarded as received; `ptr` came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns what it returned with the allocations and frees this thread made.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    let (a0, f0) = (ALLOCATIONS.with(Cell::get), FREES.with(Cell::get));
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - a0, FREES.with(Cell::get) - f0)
}

const EVENTS: u64 = 100_000;
const BATCH: u64 = 64;

#[test]
fn the_counter_sees_allocations() {
    let (_, allocs, frees) = counted(|| drop(black_box(Vec::<u64>::with_capacity(16))));
    assert_eq!(
        (allocs, frees),
        (1, 1),
        "the counting allocator must see this thread's allocations"
    );
    let (_, allocs, _) = counted(|| black_box(String::from("x")).push_str(&"y".repeat(100)));
    assert!(allocs >= 2, "{allocs}");
}

/// Publishes events `from..to` (each retried until the ring takes it).
fn publish(p: &mut Producer, t: &[common::Template], from: u64, to: u64) {
    for i in from..to {
        let mut buf = [("", 0.0); METRICS_BUF];
        let ev = event_ref(&t[i as usize % TEMPLATES], i, &mut buf);
        p.try_publish_event(&ev).unwrap_or_else(|e| panic!("publish {i}: {e}"));
    }
}

/// Reads everything published, checking every field of every event; returns the next index.
fn consume(c: &mut Consumer, t: &[common::Template], mut next: u64) -> u64 {
    let mut last_ns = 0;
    c.poll_events(usize::MAX, |r| {
        let v = r.unwrap_or_else(|e| panic!("event {next} refused: {e}"));
        if let Err(e) = check_view(&t[next as usize % TEMPLATES], next, &v) {
            panic!("{e}");
        }
        assert!(
            v.publish_ns() >= last_ns && v.publish_ns() > 0,
            "publish_ns of event {next}"
        );
        last_ns = v.publish_ns();
        next += 1;
    })
    .unwrap_or_else(|e| panic!("poll at event {next}: {e}"));
    next
}

#[test]
fn publishing_and_consuming_full_events_allocates_nothing() {
    let t = templates();
    let (mut p, mut c) = spsc::heap_pair(64 * 1024).expect("ring");
    // Warm-up: every string of the stream crosses once (defining a symbol may allocate).
    publish(&mut p, &t, 0, TEMPLATES as u64);
    let mut next = consume(&mut c, &t, 0);
    assert_eq!(next, TEMPLATES as u64);
    let (mut producer_allocs, mut consumer_allocs, mut frees) = (0, 0, 0);
    while next < TEMPLATES as u64 + EVENTS {
        let to = (next + BATCH).min(TEMPLATES as u64 + EVENTS);
        let ((), a, f) = counted(|| publish(&mut p, &t, next, to));
        producer_allocs += a;
        frees += f;
        let (n, a, f) = counted(|| consume(&mut c, &t, next));
        consumer_allocs += a;
        frees += f;
        assert_eq!((n, c.position()), (to, p.position()), "everything published was read");
        next = n;
    }
    assert_eq!(
        (producer_allocs, consumer_allocs, frees),
        (0, 0, 0),
        "allocations: producer, consumer, frees"
    );
    assert_eq!(next, TEMPLATES as u64 + EVENTS);
    assert_eq!(c.stats().rejected, 0);
}

#[test]
fn the_broadcast_writer_and_reader_allocate_nothing() {
    let mut w = broadcast::heap(64, RAW_BYTES_MAX).expect("ring");
    let mut r = Reader::open(w.segment().clone()).expect("reader");
    let mut rec = [0u8; RAW_BYTES_MAX];
    let mut buf = [0u8; RAW_BYTES_MAX];
    let mut round = |seq: u64| -> (u64, u64) {
        let len = raw_record(seq, &mut rec);
        let (_, writer, _) = counted(|| assert_eq!(w.publish(&rec[..len]), Ok(seq)));
        let (_, reader, _) = counted(|| {
            assert_eq!(r.read(&mut buf), Ok(Some(len)));
            if let Err(e) = check_raw(seq, &buf[..len]) {
                panic!("{e}");
            }
        });
        (writer, reader)
    };
    round(0);
    let (mut writer_allocs, mut reader_allocs) = (0, 0);
    for seq in 1..=EVENTS {
        let (w, r) = round(seq);
        writer_allocs += w;
        reader_allocs += r;
    }
    assert_eq!((writer_allocs, reader_allocs), (0, 0), "allocations: writer, reader");
}
