//! `eval` and `matches` never allocate: a counting global allocator watches them. Its own
//! test binary, so no other test's allocations interfere; one test function, so no other
//! thread of this binary allocates while it counts.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{metric, one_rule, TestInputs};
use rim_rules::{Evidence, Series};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees carry over unchanged; the counter is a relaxed atomic with no other effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as-is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` through this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as-is; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn eval_does_not_allocate() {
    let exprs = [
        "metric.temp > 80 and change(metric.temp, 5s) > 10",
        "status == \"DEGRADED\" or stale(30s) or zscore(price) > 3",
        "abs(pct_change(price, 1m)) / 2 + ewma(metric[\"cpu load\"]) >= -gap * 3 and not stress < 0",
    ];
    let inp = TestInputs {
        price: Some(100.0),
        volume: Some(1.0),
        gap: Some(3.0),
        status: "OK".into(),
        metrics: vec![("temp", 85.0), ("cpu load", 2.0)],
        changes: vec![
            (metric("temp"), 5_000, 70.0, 85.0),
            (Series::Price, 60_000, 90.0, 100.0),
        ],
        zscores: vec![(Series::Price, 1.0)],
        ewmas: vec![(metric("cpu load"), 1.0)],
        ..TestInputs::default()
    };
    for expr in exprs {
        let set = one_rule(expr);
        let rule = set.rule(0);
        let mut ev = Evidence::new();
        let before = ALLOCS.load(Ordering::Relaxed);
        let mut fired = 0;
        for _ in 0..1_000 {
            fired += usize::from(set.eval(0, &inp, &mut ev));
            fired += usize::from(rule.matches("rim:sensor:plant:t1"));
        }
        let after = ALLOCS.load(Ordering::Relaxed);
        assert_eq!(after - before, 0, "{expr} allocated");
        assert!(fired > 0);
    }
}
