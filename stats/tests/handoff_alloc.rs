//! The hand-off under load, with an allocator that counts what the hot thread allocates
//! or frees. In its own test binary because it installs a `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rim_stats::{handoff, StageHistograms};

struct CountingAlloc;

thread_local! {
    /// Set only on the hot thread, only after its setup.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// This thread's allocations (and reallocations) and frees while counting. Per
    /// thread, so tests running in parallel do not see each other's.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

/// Adds one to `counter` if this thread is counting. `try_with`: the allocator also runs
/// during thread teardown, after the slots are gone.
fn count(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

fn counted() -> (u64, u64) {
    (ALLOCS.with(Cell::get), FREES.with(Cell::get))
}

// SAFETY: forwards every call to `System` unchanged; the counting touches only a
// const-initialised thread-local Cells, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCS);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(&FREES);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&ALLOCS);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const STAGES: &[&str] = &["ring_hop", "rule_eval"];
const SWAPS: u64 = 10_000;

#[test]
fn hot_side_records_and_swaps_without_allocating_and_nothing_is_lost() {
    let spares = (0..4).map(|_| Box::new(StageHistograms::new(STAGES))).collect();
    let (mut hot, mut cold) = handoff(spares);
    let done = Arc::new(AtomicBool::new(false));

    let hot_done = Arc::clone(&done);
    let hot_thread = std::thread::spawn(move || {
        let mut current = Box::new(StageHistograms::new(STAGES));
        let mut recorded = [0u64; 2];
        let mut failed_swaps = 0u64;
        COUNTING.with(|c| c.set(true));
        let mut value = 1u64;
        for swap in 0..SWAPS {
            // A varying number of records per box over a wide range, alternating stages
            // between boxes.
            let stage = (swap % 2) as usize;
            for _ in 0..(value % 7) + 1 {
                current.record(stage, value.wrapping_mul(2_654_435_761) % 10_000_000_000);
                recorded[stage] += 1;
                value += 1;
            }
            while !hot.swap(&mut current) {
                // No spare back yet: keep recording into the box we have, as a shard would.
                current.record(stage, value);
                recorded[stage] += 1;
                value += 1;
                failed_swaps += 1;
                std::thread::yield_now();
            }
        }
        COUNTING.with(|c| c.set(false));
        let allocs_frees = counted();
        hot_done.store(true, Ordering::Release);
        // `current` is a fresh spare, empty: everything recorded went cold-ward.
        assert_eq!(current.count(0) + current.count(1), 0);
        (recorded, failed_swaps, allocs_frees)
    });

    let mut total = StageHistograms::new(STAGES);
    let mut boxes = 0u64;
    loop {
        let finished = done.load(Ordering::Acquire);
        boxes += cold.drain(|h| {
            total.add(h);
            h.reset();
        }) as u64;
        if finished {
            break;
        }
        std::thread::yield_now();
    }
    let (recorded, failed_swaps, (allocs, frees)) = hot_thread.join().expect("hot thread");

    assert_eq!(boxes, SWAPS, "every successful swap delivered one box");
    assert_eq!(total.count(0), recorded[0]);
    assert_eq!(total.count(1), recorded[1]);
    assert_eq!(allocs, 0, "hot thread allocated");
    assert_eq!(frees, 0, "hot thread freed");
    eprintln!("swaps {SWAPS}, retried {failed_swaps}, recorded {recorded:?}");
}

#[test]
fn the_counter_sees_allocations_on_a_counting_thread() {
    // Guards the test above against an allocator that counts nothing.
    let (allocs, frees) = std::thread::spawn(|| {
        COUNTING.with(|c| c.set(true));
        drop(std::hint::black_box(vec![1u8; 64]));
        COUNTING.with(|c| c.set(false));
        counted()
    })
    .join()
    .expect("thread");
    assert_eq!((allocs, frees), (1, 1));
}
