//! Evaluation: expressions × inputs → outcome and evidence; Kleene logic.

mod common;

use common::{metric, run, tri, TestInputs};
use rim_rules::Series;

fn base() -> TestInputs {
    TestInputs {
        price: Some(100.0),
        volume: Some(10.0),
        stress: None,
        gap: Some(250.0),
        status: "DEGRADED".into(),
        metrics: vec![("temp", 85.0), ("load", 0.5), ("cpu load", 3.0), ("inf", f64::INFINITY)],
        changes: vec![
            (metric("temp"), 5_000, 70.0, 85.0),
            (Series::Price, 60_000, 0.0, 100.0),
            (Series::Volume, 500, 20.0, 10.0),
        ],
        zscores: vec![(Series::Price, 2.5)],
        ewmas: vec![(metric("temp"), 80.0)],
        silent: None,
    }
}

const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);
const U: Option<bool> = None;

#[test]
fn outcome_table() {
    let cases: &[(&str, Option<bool>)] = &[
        ("metric.temp > 80", T),
        ("metric.temp > 90", F),
        ("metric.temp > 80 and change(metric.temp, 5s) > 10", T),
        ("metric.temp > 80 and change(metric.temp, 5000ms) > 15", F),
        ("metric.missing > 0", U),
        ("stress > 1", U),
        ("stress > 1 or price > 50", T),
        ("stress > 1 and price > 500", F),
        ("stress > 1 and price > 50", U),
        ("status == \"DEGRADED\"", T),
        ("status != \"DEGRADED\"", F),
        ("\"DEGRADED\" == status", T),
        ("status == \"OK\"", F),
        ("pct_change(metric.temp, 5s) > 21", T),
        ("pct_change(metric.temp, 5s) > 22", F),
        ("pct_change(price, 1m) > 0", U),
        ("change(price, 1m) == 100", T),
        ("change(volume, 1s) > 0", U),
        ("pct_change(volume, 500ms) == -50", T),
        ("zscore(price) >= 2.5", T),
        ("zscore(volume) >= 0", U),
        ("ewma(metric.temp) < metric.temp", T),
        ("abs(0 - metric.temp) == 85", T),
        ("abs(change(volume, 500ms)) == 10", T),
        ("price / 0 > 1", U),
        ("price / (volume - 10) > 1", U),
        ("metric.inf > 0", U),
        ("price * 1e300 * 1e300 > 0", U),
        ("-price < 0", T),
        ("- -price == 100", T),
        ("price * 2 + volume / 2 == 205", T),
        ("price - 50 * 2 == 0", T),
        ("(price - 50) * 2 == 100", T),
        ("price - volume - 10 == 80", T),
        ("not price > 1000 and volume == 10", T),
        ("not (price > 1000 or volume == 10)", F),
        ("gap >= 250", T),
        ("gap > 250", F),
        ("metric[\"cpu load\"] == 3", T),
        ("metric[\"load\"] < 1", T),
        ("price > 1e2", F),
        ("price >= 1e2", T),
        ("price <= 100.0", T),
        ("price < 100", F),
        ("price != 100", F),
        ("metric.load == 0.5", T),
        ("not stale(5s)", T),
    ];
    let inp = base();
    let mut bad = Vec::new();
    for &(expr, want) in cases {
        let got = tri(expr, &inp);
        if got != want {
            bad.push(format!("{expr}: got {got:?}, want {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

fn check_evidence(expr: &str, inp: &TestInputs, fired: bool, want: &[(&str, f64)]) {
    let (got_fired, got) = run(expr, inp);
    assert_eq!(got_fired, fired, "{expr}");
    let ok = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.0 == w.0 && same(g.1, w.1));
    assert!(ok, "{expr}: evidence {got:?}, want {want:?}");
}

#[test]
fn evidence_records_leaves_read() {
    let inp = base();
    check_evidence(
        "metric.temp > 80 and change(metric.temp, 5s) > 10",
        &inp,
        true,
        &[("metric.temp", 85.0), ("change(metric.temp, 5s)", 15.0)],
    );
    // Short-circuit: the right side is never read.
    check_evidence(
        "metric.temp > 90 and change(metric.temp, 5s) > 10",
        &inp,
        false,
        &[("metric.temp", 85.0)],
    );
    check_evidence("stress > 1", &inp, false, &[("stress", f64::NAN)]);
    check_evidence("status == \"DEGRADED\"", &inp, true, &[("status == \"DEGRADED\"", 1.0)]);
    check_evidence(
        "status != \"DEGRADED\"",
        &inp,
        false,
        &[("status != \"DEGRADED\"", 0.0)],
    );
    check_evidence("\"DEGRADED\" == status", &inp, true, &[("status == \"DEGRADED\"", 1.0)]);
    check_evidence(
        "ewma(metric.temp) < metric.temp",
        &inp,
        true,
        &[("ewma(metric.temp)", 80.0), ("metric.temp", 85.0)],
    );
    check_evidence(
        "zscore(price) > 2 and gap > 0",
        &inp,
        true,
        &[("zscore(price)", 2.5), ("gap", 250.0)],
    );
    check_evidence("metric[\"cpu load\"] > 1", &inp, true, &[("metric[\"cpu load\"]", 3.0)]);
    check_evidence(
        "pct_change(metric.temp, 5s) > 21",
        &inp,
        true,
        &[("pct_change(metric.temp, 5s)", 15.0 / 70.0 * 100.0)],
    );
    check_evidence(
        "pct_change(price, 60s) > 0",
        &inp,
        false,
        &[("pct_change(price, 1m)", f64::NAN)],
    );
    // A leaf read twice is recorded once.
    check_evidence(
        "metric.temp < 0 or metric.temp > 80",
        &inp,
        true,
        &[("metric.temp", 85.0)],
    );
    // Constants are not inputs.
    check_evidence("price * 2 > 3", &inp, true, &[("price", 100.0)]);
}

#[test]
fn stale_is_false_outside_a_sweep() {
    let mut inp = base();
    check_evidence("stale(5s)", &inp, false, &[("stale(5s)", f64::NAN)]);
    assert_eq!(tri("stale(5s)", &inp), F);
    inp.silent = Some(6_000);
    check_evidence("stale(5s)", &inp, true, &[("stale(5s)", 6_000.0)]);
    inp.silent = Some(5_000);
    assert_eq!(tri("stale(5000ms)", &inp), T);
    inp.silent = Some(4_999);
    assert_eq!(tri("stale(5s)", &inp), F);
    inp.silent = Some(120_000);
    assert_eq!(tri("stale(2m) and metric.temp > 80", &inp), T);
}

/// Truth tables: T, F and U atoms combined by and / or / not.
#[test]
fn kleene_truth_tables() {
    let inp = base();
    let atoms = [("price > 0", T), ("price < 0", F), ("metric.nope > 0", U)];
    for &(a, va) in &atoms {
        assert_eq!(tri(&format!("not ({a})"), &inp), va.map(|v| !v), "not {a}");
        for &(b, vb) in &atoms {
            let and = match (va, vb) {
                (F, _) | (_, F) => F,
                (T, T) => T,
                _ => U,
            };
            let or = match (va, vb) {
                (T, _) | (_, T) => T,
                (F, F) => F,
                _ => U,
            };
            assert_eq!(tri(&format!("({a}) and ({b})"), &inp), and, "{a} and {b}");
            assert_eq!(tri(&format!("({a}) or ({b})"), &inp), or, "{a} or {b}");
        }
    }
}

#[test]
fn eval_out_of_range_is_false() {
    let set = common::one_rule("price > 0");
    let mut ev = rim_rules::Evidence::new();
    assert!(set.eval(0, &base(), &mut ev));
    assert_eq!(ev.len(), 1);
    assert!(!set.eval(5, &base(), &mut ev));
    assert!(ev.is_empty());
}
