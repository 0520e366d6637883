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

/// Where a shard's per-node state is, so that ingest, on the same core, can start loading
/// a node's state when it learns the node of an event, before it hands the event over:
/// the loads then overlap ingest's own work on the event (its journal entry, its tick)
/// instead of stalling the rules. A hint only: an address is never read through, so a
/// stale or wrong one costs a wasted load, nothing else.
#[derive(Debug, Clone, Copy)]
pub struct NodePrefetch {
    /// (address of node 0's part, bytes per node) of each node-major table an event
    /// reads by its node; a node's whole part is loaded. Addresses are held as numbers:
    /// nothing is read through them.
    pub(crate) regions: [(usize, usize); NodePrefetch::REGIONS_MAX],
    pub(crate) count: usize,
    pub(crate) nodes: usize,
}

impl NodePrefetch {
    pub(crate) const REGIONS_MAX: usize = 4;

    /// A hint for `nodes` nodes that loads nothing yet (see [`NodePrefetch::with`]).
    pub(crate) fn new(nodes: usize) -> Self {
        Self {
            regions: [(0, 0); Self::REGIONS_MAX],
            count: 0,
            nodes,
        }
    }

    /// The same, also loading `per_node` elements of the table at `table` (node-major,
    /// `per_node` elements each); ignored once [`Self::REGIONS_MAX`] tables are held.
    pub fn with<T>(mut self, table: &[T], per_node: usize) -> Self {
        let bytes = per_node * std::mem::size_of::<T>();
        if let Some(r) = self.regions.get_mut(self.count) {
            *r = (table.as_ptr() as usize, bytes);
            self.count += 1;
        }
        self
    }

    /// Starts loading node `n`'s state (no-op past the last node).
    pub fn node(&self, n: u32) {
        let n = n as usize;
        if n >= self.nodes {
            return;
        }
        for &(base, bytes) in &self.regions[..self.count] {
            let start = base.wrapping_add(n.wrapping_mul(bytes));
            // Every line the node's part touches, its first byte's line included.
            let first = start & !63;
            for line in (first..start.wrapping_add(bytes)).step_by(64) {
                rim_ring::prefetch_line(std::ptr::without_provenance(line));
            }
        }
    }
}
