//! StageHistograms: quantiles of known distributions, saturation, merge and reset.

use rim_stats::{Quantiles, StageHistograms, HIGHEST_NS};

const STAGES: &[&str] = &["ring_hop", "rule_eval"];

/// HDR keeps 3 significant digits: a reported value is within 0.1 % of the true one.
fn assert_within_hdr(got: u64, want: u64) {
    let tolerance = (want / 1000).max(1);
    assert!(got.abs_diff(want) <= tolerance, "got {got}, want {want} ± {tolerance}");
}

#[test]
fn uniform_one_to_a_thousand() {
    let mut h = StageHistograms::new(STAGES);
    for ns in 1..=1000 {
        h.record(0, ns);
    }
    let q = h.quantiles(0);
    assert_eq!(q.count, 1000);
    assert_eq!(q.min, 1);
    assert_eq!(q.max, 1000);
    assert!((q.mean - 500.5).abs() < 0.5, "mean {}", q.mean);
    assert_within_hdr(q.p50, 500);
    assert_within_hdr(q.p90, 900);
    assert_within_hdr(q.p99, 990);
    assert_within_hdr(q.p999, 999);
    assert_eq!(q.p9999, 1000);
    assert_eq!(h.quantiles(1), Quantiles::default(), "other stage untouched");
}

#[test]
fn microsecond_range_within_precision_and_exact_extremes() {
    let mut h = StageHistograms::new(STAGES);
    // 1.000_001 µs .. 10 ms in 1 µs steps, offset by 1 ns so no value sits on a bucket edge.
    for i in 1..=10_000u64 {
        h.record(1, i * 1_000 + 1);
    }
    let q = h.quantiles(1);
    assert_eq!(q.count, 10_000);
    assert_eq!(q.min, 1_001, "min is exact, not a bucket edge");
    assert_eq!(q.max, 10_000_001, "max is exact, not a bucket edge");
    assert_within_hdr(q.p50, 5_000_001);
    assert_within_hdr(q.p99, 9_900_001);
    assert!(q.p50 <= q.p90 && q.p90 <= q.p99 && q.p99 <= q.p999 && q.p999 <= q.p9999 && q.p9999 <= q.max);
}

#[test]
fn single_odd_value_reports_itself() {
    let mut h = StageHistograms::new(STAGES);
    h.record(0, 123_456_789);
    let q = h.quantiles(0);
    assert_eq!(
        (q.min, q.p50, q.p9999, q.max),
        (123_456_789, 123_456_789, 123_456_789, 123_456_789)
    );
}

#[test]
fn values_above_sixty_seconds_saturate() {
    let mut h = StageHistograms::new(STAGES);
    h.record(0, u64::MAX);
    h.record(0, HIGHEST_NS + 1);
    h.record(0, HIGHEST_NS);
    let q = h.quantiles(0);
    assert_eq!(q.count, 3);
    assert_eq!(q.max, HIGHEST_NS);
    assert_eq!(q.min, HIGHEST_NS);
    assert_eq!(q.p50, HIGHEST_NS);
}

#[test]
fn add_merges_and_reset_empties() {
    let mut a = StageHistograms::new(STAGES);
    let mut b = StageHistograms::new(STAGES);
    for ns in 1..=500 {
        a.record(0, ns);
    }
    for ns in 501..=1000 {
        b.record(0, ns);
    }
    b.record(1, 42);
    a.add(&b);
    let q = a.quantiles(0);
    assert_eq!((q.count, q.min, q.max), (1000, 1, 1000));
    assert_within_hdr(q.p50, 500);
    assert_eq!(a.quantiles(1).count, 1);
    assert_eq!(a.quantiles(1).max, 42);

    a.reset();
    assert_eq!(a.quantiles(0), Quantiles::default());
    assert_eq!(a.quantiles(1), Quantiles::default());
    assert_eq!(a.names(), STAGES);
    // Usable after reset, with fresh extremes.
    a.record(0, 7);
    assert_eq!((a.quantiles(0).min, a.quantiles(0).max), (7, 7));
}

#[test]
fn quantiles_by_name_covers_every_stage() {
    let mut h = StageHistograms::new(STAGES);
    h.record(1, 10);
    let by_name = h.quantiles_by_name();
    assert_eq!(by_name.keys().map(String::as_str).collect::<Vec<_>>(), STAGES);
    assert_eq!(by_name["rule_eval"].count, 1);
    assert_eq!(by_name["ring_hop"].count, 0);
}
