//! Large tables allocated once, each in an anonymous mapping of its own that is advised
//! to the kernel as huge pages (`MADV_HUGEPAGE`) before any page of it is touched,
//! because per-node state is read at random across tens of megabytes and 4 KiB pages
//! would make most lookups a TLB miss (see [`crate::sys::HugeTable`] for why not the heap).
//! Zero-filled tables stay lazy: an untouched huge page costs nothing.
//!
//! With `reflex.prefault` the tables are instead written through at start: every page is
//! resident before the first event (RSS is then the full capacity), so a node's first
//! event pays no page faults, which cost tens of µs each in a VM.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use crate::sys::{HugeTable, ZeroValid};

static PREFAULT: AtomicBool = AtomicBool::new(false);

/// Bytes reserved by [`zeroed`] and [`filled`] so far: the part of the memory budget that the
/// configuration sizes (nodes, dedup window, series, rules), reported in the stats as
/// `tables_bytes` so that a budget can be checked against what was actually reserved.
static TABLE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes of every table allocated so far (resident or not).
pub fn table_bytes() -> u64 {
    TABLE_BYTES.load(Ordering::Relaxed)
}

/// Makes later [`zeroed`] tables write their pages through (set once, at start-up, before
/// the shards allocate).
pub fn set_prefault(on: bool) {
    PREFAULT.store(on, Ordering::Relaxed);
}

/// A table of `n` zeros (lazily resident, unless prefaulting is on) in huge pages.
pub fn zeroed<T: ZeroValid>(n: usize) -> HugeTable<T> {
    count::<T>(n);
    HugeTable::zeroed(n, PREFAULT.load(Ordering::Relaxed))
}

/// A table of `n` copies of `fill`, written (so resident) at once, in huge pages.
pub fn filled<T: Copy>(fill: T, n: usize) -> HugeTable<T> {
    count::<T>(n);
    HugeTable::filled(fill, n)
}

fn count<T>(n: usize) {
    TABLE_BYTES.fetch_add(std::mem::size_of::<T>().saturating_mul(n) as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_their_fill_at_a_huge_page_boundary() {
        let mut z: HugeTable<u64> = zeroed(3 << 18);
        assert_eq!(z.len(), 3 << 18);
        assert!(z.iter().all(|&v| v == 0));
        assert_eq!(z.as_ptr() as usize % crate::sys::HUGE_PAGE, 0);
        z[12345] = 7;
        assert_eq!(z.iter().sum::<u64>(), 7);
        let f = filled((1u32, u8::MAX), 1000);
        assert!(f.iter().all(|&v| v == (1, u8::MAX)));
        let empty: HugeTable<i64> = filled(i64::MIN, 0);
        assert!(empty.is_empty());
        let prefaulted = HugeTable::<u32>::zeroed(5000, true);
        assert!(prefaulted.iter().all(|&v| v == 0));
        // Under a huge page: plain pages, page-aligned.
        let small: HugeTable<u64> = zeroed(10);
        assert_eq!(small.as_ptr() as usize % 4096, 0);
        assert_eq!(small.len(), 10);
    }

    #[test]
    fn tables_move_between_threads() {
        let mut t: HugeTable<u64> = zeroed(64);
        t[63] = 9;
        let back = std::thread::spawn(move || {
            t[0] = 1;
            t
        })
        .join()
        .expect("thread");
        assert_eq!((back[0], back[63]), (1, 9));
    }
}
