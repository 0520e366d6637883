//! Per-stage latency histograms for the hot path.
//!
//! [`StageHistograms`] owns one HDR histogram per pipeline stage (named by a `'static`
//! list the daemon defines), sized once in [`StageHistograms::new`] for 1 ns .. 60 s at
//! 3 significant digits with auto-resize off, so that [`StageHistograms::record`] is an
//! index computation and a couple of additions: no allocation, no lock, no branch that
//! can fail. Hot shards record into one, hand it to the cold shard through
//! [`crate::handoff`](mod@crate::handoff), and the cold shard [`add`](StageHistograms::add)s it into its
//! aggregate and [`reset`](StageHistograms::reset)s it for reuse.
//!
//! Besides the HDR buckets each stage keeps its exact minimum and maximum: HDR reports a
//! bucket's upper edge as the maximum, and the worst latency is the one figure people
//! quote verbatim.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::snapshot::Quantiles;

/// Smallest latency the histograms distinguish, in ns.
pub const LOWEST_NS: u64 = 1;
/// Largest latency the histograms hold (60 s), in ns; larger values are recorded as this.
pub const HIGHEST_NS: u64 = 60_000_000_000;
/// HDR precision: values are kept to 3 significant decimal digits (0.1 % relative error).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// One stage: its HDR buckets plus the exact extremes.
#[derive(Clone, Debug)]
struct Stage {
    hist: Histogram<u64>,
    /// Exact smallest recorded value; `u64::MAX` when empty.
    min: u64,
    /// Exact largest recorded value (after saturation); 0 when empty.
    max: u64,
}

impl Stage {
    fn new() -> Self {
        Self {
            hist: new_histogram(),
            min: u64::MAX,
            max: 0,
        }
    }

    #[inline]
    fn record(&mut self, ns: u64) {
        let ns = ns.min(HIGHEST_NS);
        // `ns` is within the histogram's range, so this is a plain bucket increment; the
        // saturating form is used only because it cannot fail.
        self.hist.saturating_record(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    fn add(&mut self, other: &Stage) {
        // Merging walks every bucket; a stage the other side never recorded into is common
        // (boxes are swapped often) and costs nothing this way.
        if other.hist.is_empty() {
            return;
        }
        let merged = self.hist.add(&other.hist);
        // Both histograms come from `new_histogram`, so their ranges match and adding
        // cannot fail.
        debug_assert!(merged.is_ok(), "stage histograms with different ranges");
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    fn reset(&mut self) {
        // Clearing walks every bucket too; an empty stage is already clear.
        if !self.hist.is_empty() {
            self.hist.reset();
        }
        self.min = u64::MAX;
        self.max = 0;
    }

    fn quantiles(&self) -> Quantiles {
        let count = self.hist.len();
        if count == 0 {
            return Quantiles::default();
        }
        // HDR answers with a bucket's upper edge; clamping to the exact extremes keeps
        // p50 <= ... <= max true of the figures we report.
        let q = |quantile: f64| self.hist.value_at_quantile(quantile).clamp(self.min, self.max);
        Quantiles {
            count,
            min: self.min,
            mean: self.hist.mean(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: self.max,
        }
    }
}

/// The histogram every stage uses. The bounds are constants that satisfy HDR's rules
/// (low >= 1, high >= 2 * low, sigfig <= 5), so construction cannot fail.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS).expect("constant HDR bounds are valid")
}

/// One latency histogram per pipeline stage; see the module docs.
#[derive(Clone, Debug)]
pub struct StageHistograms {
    names: &'static [&'static str],
    stages: Vec<Stage>,
}

impl StageHistograms {
    /// Allocates one histogram per name in `stages` (about 200 KiB each at these bounds);
    /// nothing allocates after this.
    pub fn new(stages: &'static [&'static str]) -> Self {
        Self {
            names: stages,
            stages: stages.iter().map(|_| Stage::new()).collect(),
        }
    }

    /// Records a latency of `ns` for stage index `stage` (an index into
    /// [`names`](Self::names)). Values above 60 s are recorded as 60 s; an out-of-range
    /// stage is ignored rather than panicking on the hot path. Never allocates.
    #[inline]
    pub fn record(&mut self, stage: usize, ns: u64) {
        if let Some(s) = self.stages.get_mut(stage) {
            s.record(ns);
        }
    }

    /// Merges `other` into `self`, stage by stage. Both should have been built from the
    /// same stage list; if not, stages are matched by index and extra ones are ignored.
    pub fn add(&mut self, other: &StageHistograms) {
        debug_assert_eq!(self.names, other.names, "merging histograms of different stage lists");
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            mine.add(theirs);
        }
    }

    /// Empties every stage, keeping the allocations.
    pub fn reset(&mut self) {
        self.stages.iter_mut().for_each(Stage::reset);
    }

    /// The summary of stage `stage` (all zero when empty or out of range).
    pub fn quantiles(&self, stage: usize) -> Quantiles {
        self.stages.get(stage).map(Stage::quantiles).unwrap_or_default()
    }

    /// The stage names, in index order.
    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    /// How many values stage `stage` holds (0 when out of range).
    pub fn count(&self, stage: usize) -> u64 {
        self.stages.get(stage).map_or(0, |s| s.hist.len())
    }

    /// Every stage's summary keyed by name, ready for [`crate::Snapshot::stages`].
    pub fn quantiles_by_name(&self) -> BTreeMap<String, Quantiles> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, name)| ((*name).to_owned(), self.quantiles(i)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGES: &[&str] = &["a", "b"];

    #[test]
    fn out_of_range_stage_is_ignored() {
        let mut h = StageHistograms::new(STAGES);
        h.record(2, 5);
        h.record(usize::MAX, 5);
        assert_eq!(h.count(0) + h.count(1), 0);
        assert_eq!(h.quantiles(7), Quantiles::default());
    }

    #[test]
    fn empty_stage_reports_zeroes() {
        let h = StageHistograms::new(STAGES);
        assert_eq!(h.quantiles(0), Quantiles::default());
    }

    #[test]
    fn zero_is_recordable() {
        let mut h = StageHistograms::new(STAGES);
        h.record(0, 0);
        let q = h.quantiles(0);
        assert_eq!((q.count, q.min, q.max, q.p50), (1, 0, 0, 0));
    }
}
