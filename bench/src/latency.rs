//! Latency recording: an HDR histogram of nanoseconds, read back as the percentiles every
//! suite reports (p50, p99, p99.9, max). The summary keeps the histogram itself, so a row
//! can carry it to `--plot` (percentile plot and HdrHistogram interval log).

use hdrhistogram::Histogram;

use crate::report::Figure;

/// Largest latency the histogram tells apart: one minute. Longer ones are clamped to it.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Significant decimal digits kept (0.1 % resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// The names under which a latency summary appears in a row.
#[derive(Debug, Clone, Copy)]
pub struct LatencyNames {
    /// Median.
    pub p50: &'static str,
    /// 99th percentile.
    pub p99: &'static str,
    /// 99.9th percentile.
    pub p999: &'static str,
    /// Largest value recorded.
    pub max: &'static str,
}

/// Round-trip figures: `rtt_p50_ns`, `rtt_p99_ns`, `rtt_p999_ns`, `rtt_max_ns`.
pub const RTT: LatencyNames = LatencyNames {
    p50: "rtt_p50_ns",
    p99: "rtt_p99_ns",
    p999: "rtt_p999_ns",
    max: "rtt_max_ns",
};

/// One-way figures without a prefix: `p50_ns`, `p99_ns`, `p999_ns`, `max_ns`.
pub const PLAIN: LatencyNames = LatencyNames {
    p50: "p50_ns",
    p99: "p99_ns",
    p999: "p999_ns",
    max: "max_ns",
};

/// Nanosecond latencies recorded one by one.
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

/// The percentiles of a recording, and the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
    /// Every value recorded.
    pub histogram: Histogram<u64>,
}

impl LatencyRecorder {
    /// An empty recorder covering 1 ns .. 60 s at 3 significant digits.
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid (1 ns < 60 s, 3 digits)");
        Self { histogram }
    }

    /// Records one latency; values beyond the histogram's range are clamped.
    #[inline]
    pub fn record(&mut self, latency_ns: u64) {
        self.histogram.saturating_record(latency_ns);
    }

    /// The percentiles of everything recorded so far.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        LatencySummary {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.50),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            histogram: h.clone(),
        }
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencySummary {
    /// The summary as four figures, named by `names`.
    pub fn figures(&self, names: &LatencyNames) -> [Figure; 4] {
        [
            Figure::int(names.p50, self.p50_ns),
            Figure::int(names.p99, self.p99_ns),
            Figure::int(names.p999, self.p999_ns),
            Figure::int(names.max, self.max_ns),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let mut recorder = LatencyRecorder::new();
        (1..=1000).for_each(|ns| recorder.record(ns));
        let summary = recorder.summary();
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.p50_ns, 500);
        assert_eq!(summary.p99_ns, 990);
        assert_eq!(summary.max_ns, 1000);
    }
}
