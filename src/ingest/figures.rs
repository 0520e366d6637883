//! Per-ring figures as the daemon counted them, for stats.
//!
//! A producer can write anything into its own segment header, counters included, so the
//! stats never report the header's copies as the daemon's: ingest (the ring's only
//! consumer) copies its own counts here at each report, and the cold shard reads them.
//! One writer, relaxed stores, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

use rim_ring::Verdicts;

/// One ring's figures.
#[derive(Debug, Default)]
pub struct RingFigures {
    delivered: AtomicU64,
    consumed: AtomicU64,
    invalid: AtomicU64,
    duplicates: AtomicU64,
    node_table_full: AtomicU64,
    time_ahead: AtomicU64,
    time_too_old: AtomicU64,
    node_not_allowed: AtomicU64,
}

/// A copy of [`RingFigures`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounts {
    /// Records read (definitions included).
    pub delivered: u64,
    /// The consumed position (bytes).
    pub consumed: u64,
    /// What was not taken, per reason.
    pub verdicts: Verdicts,
}

impl RingFigures {
    /// Stores the consumer's counts (ingest, at each report).
    pub fn store(&self, delivered: u64, consumed: u64, v: &Verdicts) {
        let r = Ordering::Relaxed;
        self.delivered.store(delivered, r);
        self.consumed.store(consumed, r);
        self.invalid.store(v.invalid, r);
        self.duplicates.store(v.duplicates, r);
        self.node_table_full.store(v.node_table_full, r);
        self.time_ahead.store(v.time_ahead, r);
        self.time_too_old.store(v.time_too_old, r);
        self.node_not_allowed.store(v.node_not_allowed, r);
    }

    /// The last counts stored.
    pub fn load(&self) -> RingCounts {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RingCounts {
            delivered: r(&self.delivered),
            consumed: r(&self.consumed),
            verdicts: Verdicts {
                invalid: r(&self.invalid),
                duplicates: r(&self.duplicates),
                node_table_full: r(&self.node_table_full),
                time_ahead: r(&self.time_ahead),
                time_too_old: r(&self.time_too_old),
                node_not_allowed: r(&self.node_not_allowed),
            },
        }
    }
}
