//! Large tables allocated once: zeroed (so untouched pages cost nothing) and advised to
//! the kernel as huge-page candidates (`MADV_HUGEPAGE`), because per-node state is read at
//! random across tens of megabytes and 4 KiB pages would make most lookups a TLB miss.
//!
//! With `reflex.prefault` the tables are instead written through at start: every page is
//! resident before the first event (RSS is then the full capacity), so a node's first
//! event pays no page faults, which cost tens of µs each in a VM.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static PREFAULT: AtomicBool = AtomicBool::new(false);

/// Bytes reserved by [`table`] so far: the part of the memory budget that the
/// configuration sizes (nodes, dedup window, series, rules), reported in the stats as
/// `tables_bytes` so that a budget can be checked against what was actually reserved.
static TABLE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes of every [`table`] allocated so far (resident or not).
pub fn table_bytes() -> u64 {
    TABLE_BYTES.load(Ordering::Relaxed)
}

/// Makes later [`table`] calls write their pages through (set once, at start-up, before
/// the shards allocate).
pub fn set_prefault(on: bool) {
    PREFAULT.store(on, Ordering::Relaxed);
}

/// Advises the kernel to back `v`'s memory with transparent huge pages where it can.
/// Harmless where THP is off or the range is small: the advice is then ignored.
pub fn advise_huge<T>(v: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE {
        return;
    }
    let start = v.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end <= aligned {
        return;
    }
    crate::sys::advise_huge_pages(v, aligned - start, end - aligned);
}

/// A vector of `n` copies of `zero` (all-zero bits, so the allocation stays lazy), advised
/// for huge pages; written through when prefaulting is on.
pub fn table<T: Clone>(zero: T, n: usize) -> Vec<T> {
    TABLE_BYTES.fetch_add(std::mem::size_of::<T>().saturating_mul(n) as u64, Ordering::Relaxed);
    if PREFAULT.load(Ordering::Relaxed) {
        let mut v: Vec<T> = Vec::with_capacity(n);
        advise_spare(&mut v);
        // `resize` writes element by element (not a lazily zeroed allocation).
        v.resize(n, zero);
        return v;
    }
    let mut v = vec![zero; n];
    advise_huge(&mut v);
    v
}

/// [`advise_huge`] for a vector's reserved (not yet initialised) capacity.
fn advise_spare<T>(v: &mut Vec<T>) {
    let spare = v.spare_capacity_mut();
    advise_huge(spare);
}
