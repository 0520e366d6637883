//! Per-ring figures as the daemon counted them, for stats.
//!
//! A producer can write anything into its own segment header, counters included, so the
//! stats never report the header's copies as the daemon's: ingest (the ring's only
//! consumer) copies its own counts here at each report, and the cold shard reads them.
//! One writer, relaxed stores, no allocation.
//!
//! The one figure only the producer can know, how many of its publishes found the ring
//! full, is taken from its header through [`RingFigures::full_claim`], which never lets
//! it fall and lets it rise no faster than publishes can be attempted.

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
    /// The producer's full-refusal count as last reported (see [`RingFigures::full_claim`]).
    full_shown: AtomicU64,
    /// When it was last reported, CLOCK_MONOTONIC ns (0: never).
    full_shown_ns: AtomicU64,
}

/// Least time one publish attempt takes, for bounding a producer's claim of refusals (an
/// attempt on a full ring re-reads the consumer's position from another core's cache line,
/// which alone takes longer).
pub const FULL_CLAIM_NS_PER_ATTEMPT: u64 = 10;

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

    /// The producer's own count of publishes refused as full (its header's word, which it
    /// may overwrite with anything) as the stats show it at `now_ns`: never below what was
    /// shown before, and above it by at most one per [`FULL_CLAIM_NS_PER_ATTEMPT`] since
    /// then (nothing at the first report, which only starts the clock). So a lying
    /// producer cannot make the figure jump to 18446744073709551615 or run backwards; an
    /// honest one's count is followed from the second report on. Called by the stats
    /// reporter alone.
    pub fn full_claim(&self, claimed: u64, now_ns: u64) -> u64 {
        let r = Ordering::Relaxed;
        let shown = self.full_shown.load(r);
        let since = self.full_shown_ns.swap(now_ns.max(1), r);
        let room = match since {
            0 => 0,
            t => now_ns.saturating_sub(t) / FULL_CLAIM_NS_PER_ATTEMPT,
        };
        let next = claimed.clamp(shown, shown.saturating_add(room));
        self.full_shown.store(next, r);
        next
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_claim_never_falls_nor_rises_faster_than_publishes_can_be_tried() {
        let f = RingFigures::default();
        let second = 1_000_000_000;
        assert_eq!(f.full_claim(500, second), 0, "the first report starts the clock");
        assert_eq!(f.full_claim(500, 2 * second), 500, "an honest count is followed");
        assert_eq!(f.full_claim(700, 3 * second), 700);
        assert_eq!(f.full_claim(3, 4 * second), 700, "never backwards");
        let bound = 700 + second / FULL_CLAIM_NS_PER_ATTEMPT;
        assert_eq!(f.full_claim(u64::MAX, 5 * second), bound, "no jump to u64::MAX");
        assert_eq!(f.full_claim(u64::MAX, 5 * second), bound, "no time, no room");
        assert_eq!(f.full_claim(0, 0), bound, "a clock that went back gives no room");
    }
}
