//! The daemon end to end, as real processes: `rimd` started by the test in its own run
//! directory, producers and subscribers attached over its control socket, its stats read
//! from the shared-memory segment, its decisions decoded and their hash chain verified.
//!
//! Event times are the test's own (rules' windows and cooldowns run on event time), so the
//! expected decisions are exact; only `stale()` uses the daemon's wall clock.

mod common;

use std::time::{Duration, Instant};

use common::{counter, event, gauge, rimd_command, ring, write_atomic, Daemon, Feed, TempDir, SOON, T0};
use rimd::reflex::decision::{decode, Decision, Verifier};

/// The evidence of a decision as (label, value).
fn evidence(d: &Decision) -> Vec<(&str, Option<f64>)> {
    d.evidence.iter().map(|(l, v)| (l.as_str(), *v)).collect()
}

/// What a test expects of one decision.
#[derive(Debug)]
struct Want {
    rule: &'static str,
    node: &'static str,
    seq: u64,
    ts: i64,
    severity: &'static str,
    evidence: Vec<(&'static str, Option<f64>)>,
}

#[track_caller]
fn check(d: &Decision, w: &Want) {
    let got = (
        d.rule_id.as_str(),
        d.rim_node_id.as_str(),
        d.event_seq,
        d.event_timestamp,
        d.severity.as_str(),
        d.sweep,
    );
    assert_eq!(
        got,
        (w.rule, w.node, w.seq, w.ts, w.severity, false),
        "decision {} does not match {w:?}",
        common::short(d)
    );
    assert_eq!(evidence(d), w.evidence, "evidence of {}", common::short(d));
}

// ---------------------------------------------------------------------------------------
// 1. Every kind of rule fires exactly when it should

const RULES_ALL_KINDS: &str = r#"
[[rule]]
id = "hot"
nodes = "rim:sensor:plant:*"
when = "metric.temp > 90"
severity = "high"
cooldown = "10s"

[[rule]]
id = "cheap"
when = "price < 10"
severity = "low"

[[rule]]
id = "combo"
when = "(metric.load > 5 or volume > 1000) and not stress < 0.5"
severity = "medium"

[[rule]]
id = "degraded"
when = 'status == "DEGRADED"'
severity = "critical"

[[rule]]
id = "jump"
when = "change(metric.x, 2s) > 10"
severity = "medium"

[[rule]]
id = "spike"
when = "zscore(metric.z) > 3"
severity = "info"

[[rule]]
id = "silent"
nodes = ["rim:sensor:quiet:*"]
when = "stale(1s)"
severity = "critical"
"#;

const A: &str = "rim:sensor:plant:a";
const PUMP: &str = "rim:pump:plant:p";
const B: &str = "rim:sensor:plant:b";
const C: &str = "rim:sensor:plant:c";
const D: &str = "rim:valve:plant:d";
const Q: &str = "rim:sensor:quiet:q";

/// The daemon's EWMA z-score of the last of `xs` (West's weighted mean and variance, the
/// same operations in the same order as `reflex/state.rs`).
fn zscore_of(xs: &[f64], alpha: f64) -> f64 {
    let (mut ewma, mut var) = (0.0f64, 0.0f64);
    let (mut ewma_prev, mut var_prev) = (0.0, 0.0);
    for (i, &x) in xs.iter().enumerate() {
        ewma_prev = ewma;
        var_prev = var;
        if i == 0 {
            ewma = x;
            var = 0.0;
        } else {
            let diff = x - ewma;
            let incr = alpha * diff;
            ewma += incr;
            var = (1.0 - alpha) * (var + diff * incr);
        }
    }
    (xs[xs.len() - 1] - ewma_prev) / var_prev.sqrt()
}

#[test]
fn rules_fire_exactly() {
    let mut d = Daemon::start(
        &[
            "reflex.window_step_ms=100",
            "reflex.zscore_min_samples=5",
            "reflex.ewma_alpha=0.5",
            "reflex.stale_sweep_ms=20",
        ],
        Some(RULES_ALL_KINDS),
    );
    let mut sub = d.subscriber();
    let mut p = d.producer("script", 1 << 16);

    // The script: (event, what it must fire). Event k (1-based) gets ingest seq k.
    let mut script: Vec<(rim_ring::RimFastEvent, Option<Want>)> = Vec::new();
    let want = |rule, node, severity, ts, evidence: Vec<(&'static str, Option<f64>)>| {
        Some(Want {
            rule,
            node,
            seq: 0,
            ts,
            severity,
            evidence,
        })
    };
    // Plain comparison, node pattern, cooldown.
    script.push((
        event(A, T0, &[("temp", 95.0)]),
        want("hot", A, "high", T0, vec![("metric.temp", Some(95.0))]),
    ));
    script.push((event(PUMP, T0, &[("temp", 99.0)]), None)); // pattern excludes pumps
    script.push((event(A, T0 + 1_000, &[("temp", 96.0)]), None)); // cooling down
    script.push((event(A, T0 + 2_000, &[("temp", 50.0)]), None));
    // A field.
    let mut e = event(D, T0, &[]);
    e.price = Some(5.0);
    script.push((e, want("cheap", D, "low", T0, vec![("price", Some(5.0))])));
    // and / or / not, with short-circuit evidence.
    let mut e = event(D, T0 + 1, &[("load", 7.0)]);
    e.price = Some(50.0);
    e.stress = Some(0.9);
    script.push((
        e,
        want(
            "combo",
            D,
            "medium",
            T0 + 1,
            vec![("metric.load", Some(7.0)), ("stress", Some(0.9))],
        ),
    ));
    let mut e = event(D, T0 + 2, &[("load", 7.0)]);
    e.stress = Some(0.1);
    script.push((e, None)); // not (stress < 0.5) is false
    let mut e = event(D, T0 + 3, &[]);
    e.volume = Some(2_000.0);
    e.stress = Some(0.9);
    script.push((
        e,
        want(
            "combo",
            D,
            "medium",
            T0 + 3,
            vec![("metric.load", None), ("volume", Some(2_000.0)), ("stress", Some(0.9))],
        ),
    ));
    script.push((event(D, T0 + 4, &[("load", 7.0)]), None)); // stress unknown → unknown
                                                             // Status.
    let mut e = event(D, T0 + 5, &[]);
    e.status = "DEGRADED".into();
    script.push((
        e,
        want(
            "degraded",
            D,
            "critical",
            T0 + 5,
            vec![("status == \"DEGRADED\"", Some(1.0))],
        ),
    ));
    // change(metric.x, 2s): look-back between 2 s and 2 s + one step (100 ms).
    script.push((event(B, T0, &[("x", 1.0)]), None));
    script.push((event(B, T0 + 1_000, &[("x", 2.0)]), None)); // no history 2 s back
    script.push((event(B, T0 + 2_000, &[("x", 5.0)]), None)); // change 4
    script.push((
        event(B, T0 + 2_050, &[("x", 20.0)]),
        want(
            "jump",
            B,
            "medium",
            T0 + 2_050,
            vec![("change(metric.x, 2s)", Some(19.0))],
        ),
    ));
    // zscore(metric.z) > 3 once 5 samples are in.
    let zs = [10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 30.0];
    for (i, &z) in zs.iter().enumerate() {
        let ts = T0 + 100 * i as i64;
        let w = (i == zs.len() - 1).then(|| Want {
            rule: "spike",
            node: C,
            seq: 0,
            ts,
            severity: "info",
            evidence: vec![("zscore(metric.z)", Some(zscore_of(&zs, 0.5)))],
        });
        script.push((event(C, ts, &[("z", z)]), w));
    }
    // The cooldown ends on event time.
    script.push((
        event(A, T0 + 11_000, &[("temp", 97.0)]),
        want("hot", A, "high", T0 + 11_000, vec![("metric.temp", Some(97.0))]),
    ));
    script.push((event(A, T0 + 12_000, &[("temp", 98.0)]), None)); // cooling down again

    // The script's own sanity: the spike is the first z-score over 3 once it is known.
    for i in 5..zs.len() - 1 {
        assert!(zscore_of(&zs[..=i], 0.5) <= 3.0, "sample {i}");
    }
    assert!(zscore_of(&zs, 0.5) > 3.0);

    let mut wants = Vec::new();
    for (k, (ev, w)) in script.iter_mut().enumerate() {
        p.publish(ev);
        if let Some(mut w) = w.take() {
            w.seq = k as u64 + 1;
            wants.push(w);
        }
    }
    let events = script.len() as u64;
    let raw = sub.take_raw(wants.len(), SOON);
    for (r, w) in raw.iter().zip(&wants) {
        check(&decode(r).expect("decode"), w);
    }
    // Nothing else fired: every event was applied, and the decision count is exact.
    let s = d.wait_for(SOON, "script applied", |s| {
        counter(s, "reflex.events_applied") == events
    });
    sub.expect_none(Duration::from_millis(300), "after the scripted events");
    let s2 = d.stats();
    assert_eq!(counter(&s2, "reflex.decisions"), wants.len() as u64);
    assert_eq!(counter(&s, "ingest.events_accepted"), events);
    assert_eq!(
        counter(&s2, "reflex.cooldown_quiet"),
        2,
        "two firings of `hot` held back"
    );

    // stale(1s): the sweep fires once per silence, for matching nodes only.
    p.publish(&event(Q, T0, &[("temp", 1.0)]));
    let q_seq = events + 1;
    let sweep1 = sub.next_raw(SOON).expect("stale decision");
    sub.expect_none(
        Duration::from_millis(1_500),
        "a second stale decision for the same silence",
    );
    p.publish(&event(Q, T0 + 5_000, &[("temp", 1.0)]));
    let sweep2 = sub.next_raw(SOON).expect("stale decision after a new silence");
    for (raw, seq, ts) in [(&sweep1, q_seq, T0), (&sweep2, q_seq + 1, T0 + 5_000)] {
        let d = decode(raw).expect("decode");
        assert_eq!(
            (
                d.rule_id.as_str(),
                d.rim_node_id.as_str(),
                d.event_seq,
                d.event_timestamp,
                d.severity.as_str(),
                d.sweep
            ),
            ("silent", Q, seq, ts, "critical", true),
            "{}",
            common::short(&d)
        );
        assert_eq!(d.evidence.len(), 1, "{}", common::short(&d));
        assert_eq!(d.evidence[0].0, "stale(1s)");
        assert!(
            d.evidence[0].1.is_some_and(|ms| ms >= 1_000.0),
            "silence {:?}",
            d.evidence[0].1
        );
    }
    sub.expect_none(Duration::from_millis(300), "after the stale decisions");
    let s = d.stats();
    assert_eq!(counter(&s, "reflex.sweep_decisions"), 2);
    assert_eq!(counter(&s, "reflex.decisions"), wants.len() as u64 + 2);
    for (rule, n) in [
        ("hot", 2),
        ("cheap", 1),
        ("combo", 2),
        ("degraded", 1),
        ("jump", 1),
        ("spike", 1),
        ("silent", 2),
    ] {
        assert_eq!(counter(&s, &format!("decisions.rule.{rule}")), n, "decisions of {rule}");
    }

    // The chain: every record links to the one before, from the first of the epoch.
    let mut all = raw;
    all.push(sweep1);
    all.push(sweep2);
    let mut v = Verifier::new();
    for (i, r) in all.iter().enumerate() {
        let d = v.push(r).unwrap_or_else(|e| panic!("chain broken at {i}: {e}"));
        assert_eq!(d.chain_seq, i as u64 + 1);
    }
    // A flipped byte anywhere in any record is found.
    for k in 0..all.len() {
        for at in 0..all[k].len() {
            let mut v = Verifier::new();
            for r in &all[..k] {
                v.push(r).expect("prefix verifies");
            }
            let mut bad = all[k].clone();
            bad[at] ^= 0x01;
            assert!(v.push(&bad).is_err(), "flipping byte {at} of record {k} went unnoticed");
        }
    }
    // A dropped record is found.
    let mut v = Verifier::new();
    v.push(&all[0]).expect("first");
    assert!(v.push(&all[2]).is_err(), "a dropped record went unnoticed");
}

// ---------------------------------------------------------------------------------------
// 2. Rule reloads: a good file takes effect, a bad one leaves the running set

const RULES_V1: &str = r#"[[rule]]
id = "a-high"
when = "metric.a > 1"
severity = "low"
"#;

const RULES_V2: &str = r#"[[rule]]
id = "a-high"
when = "metric.a > 1"
severity = "low"

[[rule]]
id = "b-high"
when = "metric.b > 1"
severity = "high"
"#;

/// Line 8, column 20: the second `>`.
const RULES_BAD_CONDITION: &str = r#"[[rule]]
id = "a-high"
when = "metric.a > 1"
severity = "low"

[[rule]]
id = "c-high"
when = "metric.c > > 1"
severity = "high"
"#;

/// Line 3: an unterminated string.
const RULES_BAD_TOML: &str = r#"[[rule]]
id = "a-high"
when = "metric.a > 1
severity = "low"
"#;

/// Publishes an event with metrics a, b and c all firing, and returns the decisions it
/// made as (rule, generation, version).
fn fire_abc(p: &mut Feed, sub: &mut common::Subscriber, ts: i64, expect: usize) -> Vec<(String, u64, u32)> {
    p.publish(&event(
        "rim:sensor:reload:n1",
        ts,
        &[("a", 5.0), ("b", 5.0), ("c", 5.0)],
    ));
    let got: Vec<(String, u64, u32)> = sub
        .take_raw(expect, SOON)
        .iter()
        .map(|r| decode(r).expect("decode"))
        .map(|d| (d.rule_id, d.rule_generation, d.rule_version))
        .collect();
    sub.expect_none(Duration::from_millis(200), "after the reload probe");
    got
}

#[test]
fn rule_reload_good_and_bad() {
    let mut d = Daemon::start(&["reflex.rules_poll_ms=50"], Some(RULES_V1));
    let mut sub = d.subscriber();
    let mut p = d.producer("reload", 1 << 16);
    let s = d.stats();
    assert_eq!((gauge(&s, "rules.generation"), gauge(&s, "rules")), (1, 1));
    assert_eq!(counter(&s, "rules.reloads"), 0);
    assert_eq!(fire_abc(&mut p, &mut sub, T0, 1), vec![("a-high".into(), 1, 1)]);

    // A good new file is picked up from its modification time.
    write_atomic(d.rules_path(), RULES_V2);
    let s = d.wait_for(SOON, "generation 2 in force", |s| {
        gauge(s, "rules.generation") == 2 && counter(s, "reflex.rule_swaps") == 1
    });
    assert_eq!((counter(&s, "rules.reloads"), gauge(&s, "rules")), (1, 2));
    assert_eq!(
        fire_abc(&mut p, &mut sub, T0 + 1, 2),
        vec![("a-high".into(), 2, 1), ("b-high".into(), 2, 1)],
        "the new rule fires; the unchanged one keeps its version"
    );

    // SIGHUP reloads the (unchanged) file.
    d.signal(libc::SIGHUP);
    let s = d.wait_for(SOON, "generation 3 after SIGHUP", |s| {
        gauge(s, "rules.generation") == 3 && counter(s, "reflex.rule_swaps") == 2
    });
    assert_eq!(counter(&s, "rules.reloads"), 2);
    assert_eq!(counter(&s, "rules.reload_failures"), 0);
    assert_eq!(
        fire_abc(&mut p, &mut sub, T0 + 2, 2),
        vec![("a-high".into(), 3, 1), ("b-high".into(), 3, 1)]
    );

    // A file whose condition does not compile: refused with its position; the set stays.
    write_atomic(d.rules_path(), RULES_BAD_CONDITION);
    let s = d.wait_for(SOON, "reload failure counted", |s| {
        counter(s, "rules.reload_failures") == 1
    });
    assert_eq!((gauge(&s, "rules.generation"), counter(&s, "rules.reloads")), (3, 2));
    let log = d.log_text();
    assert!(
        log.contains("line 8, column 20"),
        "the log must name the position:\n{log}"
    );
    assert_eq!(
        fire_abc(&mut p, &mut sub, T0 + 3, 2),
        vec![("a-high".into(), 3, 1), ("b-high".into(), 3, 1)],
        "the running set stays"
    );

    // A TOML syntax error, the same.
    write_atomic(d.rules_path(), RULES_BAD_TOML);
    let s = d.wait_for(SOON, "second reload failure counted", |s| {
        counter(s, "rules.reload_failures") == 2
    });
    assert_eq!(gauge(&s, "rules.generation"), 3);
    let log = d.log_text();
    assert!(log.contains("line 3, column"), "the log must name the line:\n{log}");
    assert_eq!(
        fire_abc(&mut p, &mut sub, T0 + 4, 2),
        vec![("a-high".into(), 3, 1), ("b-high".into(), 3, 1)]
    );

    // And a good file after bad ones is taken again.
    write_atomic(d.rules_path(), RULES_V1);
    d.wait_for(SOON, "generation 4", |s| {
        gauge(s, "rules.generation") == 4 && counter(s, "reflex.rule_swaps") == 3
    });
    assert_eq!(fire_abc(&mut p, &mut sub, T0 + 5, 1), vec![("a-high".into(), 4, 1)]);
    let s = d.stats();
    assert_eq!(
        (
            counter(&s, "decisions.rule.a-high"),
            counter(&s, "decisions.rule.b-high")
        ),
        (6, 4),
        "per-rule counts survive the swaps"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Bad records are refused and counted while good ones flow

/// Hand-made records for a ring fed through `try_publish` only: the encoder's numbering
/// is then exactly the daemon's.
struct Crafter {
    enc: rim_ring::wire::Encoder,
}

impl Crafter {
    /// Defines `text`; returns its symbol and its `Define` record.
    fn define(&mut self, kind: rim_ring::SymbolKind, text: &str) -> (rim_ring::Sym, Vec<u8>) {
        let mut rec = Vec::new();
        let sym = self
            .enc
            .intern(kind, text, &mut |r: &[u8]| {
                rec = r.to_vec();
                Ok::<(), ()>(())
            })
            .expect("define");
        (sym, rec)
    }
}

#[test]
fn bad_records_refused_while_good_flow() {
    use rim_ring::{SymEvent, SymbolKind};
    let mut d = Daemon::start(
        &[],
        Some("[[rule]]\nid = \"any\"\nwhen = \"metric.v >= 0\"\nseverity = \"info\"\n"),
    );
    let mut sub = d.subscriber();
    let mut mixed = d.producer("mixed", 1 << 16);
    let mut crafted = d.producer("crafted", 1 << 16);

    // Ring 1: good events through the client library, random garbage between them.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (good, mut garbage) = (300u64, 0u64);
    for i in 0..good {
        mixed.publish(&event(
            &format!("rim:sensor:ok:n{}", i % 5),
            T0 + i as i64,
            &[("v", i as f64)],
        ));
        if i % 3 == 0 {
            let len = 1 + (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            mixed.publish_raw(&bytes);
            garbage += 1;
        }
    }

    // Ring 2: well-formed records that break the data model, between good ones.
    let mut c = Crafter {
        enc: rim_ring::wire::Encoder::new(),
    };
    let (node, r1) = c.define(SymbolKind::NodeId, "rim:sensor:ok:crafted");
    let (status, r2) = c.define(SymbolKind::Status, "OK");
    let (v, r3) = c.define(SymbolKind::MetricName, "v");
    for r in [r1, r2, r3] {
        crafted.publish_raw(&r);
    }
    let metrics = [(v, 1.0)];
    let ev = |node, price: f64| SymEvent {
        node,
        event_id: None,
        timestamp: T0,
        metrics: &metrics,
        price: Some(price),
        volume: None,
        stress: None,
        status,
        source_topic: None,
        publish_ns: 0,
    };
    let good_event = |c: &mut Crafter| c.enc.encode_event(&ev(node, 10.0)).expect("encode").to_vec();
    let g = good_event(&mut c);
    crafted.publish_raw(&g);
    // A non-finite price, written over a finite one in the archived record.
    let mut nan = c.enc.encode_event(&ev(node, 12_345.5)).expect("encode").to_vec();
    let at = nan
        .windows(8)
        .position(|w| w == 12_345.5f64.to_le_bytes())
        .expect("price bytes in the record");
    nan[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
    crafted.publish_raw(&nan);
    // An event naming a symbol the ring never defined.
    let mut other = Crafter {
        enc: rim_ring::wire::Encoder::new(),
    };
    for (k, t) in [
        (SymbolKind::NodeId, "rim:sensor:ok:crafted"),
        (SymbolKind::Status, "OK"),
        (SymbolKind::MetricName, "v"),
        (SymbolKind::NodeId, "rim:sensor:ok:undefined"),
    ] {
        other.define(k, t);
    }
    let undefined = other
        .enc
        .lookup(SymbolKind::NodeId, "rim:sensor:ok:undefined")
        .expect("sym");
    let mut other_metrics = [(other.enc.lookup(SymbolKind::MetricName, "v").expect("v"), 1.0)];
    other_metrics[0].1 = 2.0;
    let bad_sym = SymEvent {
        node: undefined,
        metrics: &other_metrics,
        ..ev(node, 1.0)
    };
    crafted.publish_raw(other.enc.encode_event(&bad_sym).expect("encode"));
    // A node id that breaks the RimNodeId pattern (upper-case type), and an event using it.
    let (bad_node, mut def) = c.define(SymbolKind::NodeId, "rim:sensor:ok:shadow");
    let at = def.windows(3).position(|w| w == b"rim").expect("text in the record");
    def[at..at + 3].copy_from_slice(b"RIM");
    crafted.publish_raw(&def);
    crafted.publish_raw(&g);
    let bad_node_event = c.enc.encode_event(&ev(bad_node, 1.0)).expect("encode").to_vec();
    crafted.publish_raw(&bad_node_event);
    crafted.publish_raw(&g);

    let accepted = good + 3;
    let s = d.wait_for(SOON, "every record read", |s| {
        counter(s, "ingest.events_accepted") == accepted && counter(s, "ingest.rejected") == garbage + 4
    });
    assert!(mixed.wait_consumed(SOON) && crafted.wait_consumed(SOON));
    let reasons: Vec<(&str, u64)> = ["malformed", "not_finite", "bad_symbol", "node_id"]
        .into_iter()
        .map(|r| (r, counter(&s, &format!("ingest.rejected.{r}"))))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("malformed", garbage),
            ("not_finite", 1),
            ("bad_symbol", 1),
            ("node_id", 2)
        ]
    );
    assert_eq!(counter(&s, "ingest.events_in"), accepted + garbage + 4);
    assert_eq!(
        (mixed.p.rejected(), crafted.p.rejected()),
        (garbage, 4),
        "each producer sees its own refusals"
    );
    assert_eq!(
        counter(&s, "ingest.producers_quarantined"),
        0,
        "bad records never quarantine a ring"
    );
    assert_eq!(ring(&s, "mixed").map(|r| r.rejected), Some(garbage));
    assert_eq!(ring(&s, "crafted").map(|r| r.rejected), Some(4));

    // Every good event made its decision, in order, and nothing else did.
    let decisions: Vec<Decision> = sub
        .take_raw(accepted as usize, SOON)
        .iter()
        .map(|r| decode(r).expect("decode"))
        .collect();
    let seqs: Vec<u64> = decisions.iter().map(|d| d.event_seq).collect();
    assert_eq!(seqs, (1..=accepted).collect::<Vec<_>>());
    let crafted_nodes = decisions
        .iter()
        .filter(|d| d.rim_node_id == "rim:sensor:ok:crafted")
        .count();
    assert_eq!(crafted_nodes, 3);
    sub.expect_none(Duration::from_millis(300), "after the good events");
    assert_eq!(counter(&d.stats(), "reflex.events_applied"), accepted);
}

// ---------------------------------------------------------------------------------------
// 4. A flooding producer does not starve a modest one

/// The flood gets a big backlog while the daemon is stopped (SIGSTOP), the modest producer
/// a small one; then the daemon resumes with the flood still publishing. Taking turns, the
/// daemon must finish the modest backlog long before the flood's: the modest ring is read
/// to its end while the flood's ring is still short of where it stood at the resume.
#[test]
fn fair_between_producers() {
    let mut d = Daemon::start(&["ingest.reflex_ring_slots=65536"], Some(""));
    let mut flood = d.producer("flood", 16 << 20);
    let mut modest = d.producer("modest", 1 << 20);
    let flood_evs: Vec<_> = (0..8)
        .map(|k| event(&format!("rim:sensor:flood:n{k}"), T0, &[("v", 1.0)]))
        .collect();

    d.pause();
    let mut backlog_events = 0u64;
    while flood
        .p
        .try_publish_event(&flood_evs[(backlog_events % 8) as usize].as_ref())
        .is_ok()
    {
        backlog_events += 1;
    }
    let backlog_end = flood.p.position();
    let total = 3_000u64;
    for i in 0..total {
        let ev = event(&format!("rim:sensor:modest:n{}", i % 8), T0 + i as i64, &[("v", 2.0)]);
        modest
            .p
            .try_publish_event(&ev.as_ref())
            .expect("the modest backlog fits its ring");
    }

    // One thread floods and watches: publish as fast as the ring takes, and after each
    // attempt look whether the modest ring has been read to its end.
    d.signal(libc::SIGCONT);
    let resumed = Instant::now();
    let mut flood_n = backlog_events;
    let flood_read_when_modest_done = loop {
        if modest.p.consumed_position() == modest.p.position() {
            break flood.p.consumed_position();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(60),
            "modest backlog not read in 60 s"
        );
        match flood.p.try_publish_event(&flood_evs[(flood_n % 8) as usize].as_ref()) {
            Ok(_) => flood_n += 1,
            Err(rim_ring::PublishError::Full { .. }) => std::thread::yield_now(),
            Err(e) => panic!("flood publish: {e}"),
        }
    };
    let modest_secs = resumed.elapsed();
    let snap = d.wait_for(SOON, "the modest ring's records in the stats", |s| {
        ring(s, "modest").is_some_and(|r| r.delivered == total + 10)
    });
    eprintln!(
        "fairness: flood backlog {backlog_events} events ({backlog_end} bytes), {} bytes of it read when the \
         modest {total} were read ({modest_secs:?}); flood published {flood_n} in all",
        flood_read_when_modest_done
    );
    assert!(
        flood_read_when_modest_done < backlog_end,
        "the modest producer waited for the whole flood backlog ({flood_read_when_modest_done} of {backlog_end} \
         bytes read first)"
    );
    assert!(
        ring(&snap, "flood").is_some_and(|r| r.delivered > 0),
        "both rings flowed: {:?}",
        snap.rings
    );
    assert!(flood.wait_consumed(SOON));
    let s = d.wait_for(SOON, "everything accepted", |s| {
        counter(s, "ingest.events_accepted") == flood_n + total
    });
    assert_eq!(counter(&s, "ingest.events_lost"), 0);
}

// ---------------------------------------------------------------------------------------
// 5. SIGTERM drains every ring: nothing published is lost

#[test]
fn sigterm_drains_nothing_lost() {
    let n = 200_000u64;
    let mut d = Daemon::start(&["ingest.reflex_ring_slots=65536"], Some(""));
    let mut p = d.producer("burst", 4 << 20);
    let evs: Vec<_> = (0..16)
        .map(|k| event(&format!("rim:sensor:burst:n{k}"), T0 + k, &[("v", k as f64)]))
        .collect();
    for i in 0..n {
        let ev = evs[(i % 16) as usize].as_ref();
        let pp = &mut p.p;
        common::retry_full(|| pp.try_publish_event(&ev));
    }
    let status = d.sigterm();
    assert_eq!(status.code(), Some(0), "rimd exit status");
    let s = d.stats();
    assert!(!s.running, "the final snapshot says the daemon stopped");
    assert_eq!(counter(&s, "ingest.events_accepted"), n);
    assert_eq!(counter(&s, "reflex.events_applied"), n);
    assert_eq!(counter(&s, "ingest.events_lost"), 0);
    assert_eq!(p.p.consumed_position(), p.p.position(), "the ring was read to its end");
    assert!(d.log_text().contains("rimd stopped"));
}

// ---------------------------------------------------------------------------------------
// 6. A producer killed mid-life: its events are kept, its ring reclaimed

const DOOMED_EVENTS: u64 = 5_000;

/// Child role: attaches, publishes, reports, then waits to be killed.
#[test]
fn killed_producer_child() {
    let Some(socket) = common::child_socket("doomed") else {
        return;
    };
    let p = rim_ring::attach::attach_producer(&socket, "doomed", 1 << 20).expect("attach");
    let mut feed = Feed::new(p);
    for i in 0..DOOMED_EVENTS {
        let mut ev = event(&format!("rim:sensor:doomed:n{}", i % 4), T0 + i as i64, &[("v", 1.0)]);
        ev.event_id = Some(format!("doomed-{i}"));
        feed.publish(&ev);
    }
    println!("PUBLISHED={DOOMED_EVENTS}");
    loop {
        feed.p.heartbeat();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_producer_is_reclaimed() {
    if common::child_socket("doomed").is_some() {
        return;
    }
    let mut d = Daemon::start(&[], Some(""));
    let mut child = common::ChildProc::spawn("killed_producer_child", "doomed", d.dir(), &d.socket());
    assert_eq!(child.wait_reported("PUBLISHED", SOON), DOOMED_EVENTS.to_string());
    d.wait_for(SOON, "the child attached", |s| gauge(s, "producers") == 1);
    child.kill();

    let s = d.wait_for(SOON, "the dead producer's ring reclaimed and drained", |s| {
        counter(s, "ingest.producers_reclaimed") == 1 && gauge(s, "producers") == 0
    });
    assert_eq!(
        counter(&s, "ingest.events_accepted"),
        DOOMED_EVENTS,
        "everything it published is kept"
    );
    assert_eq!(counter(&s, "ingest.events_lost"), 0);
    assert!(ring(&s, "doomed").is_none(), "the ring left the stats: {:?}", s.rings);

    // A new producer attaches and flows.
    let mut p = d.producer("after", 1 << 16);
    for i in 0..10 {
        p.publish(&event("rim:sensor:after:n1", T0 + i, &[("v", 1.0)]));
    }
    let s = d.wait_for(SOON, "the new producer's events", |s| {
        counter(s, "ingest.events_accepted") == DOOMED_EVENTS + 10
    });
    assert_eq!(gauge(&s, "producers"), 1);
    assert_eq!(counter(&s, "ingest.producers_attached"), 2);
    assert_eq!(counter(&s, "ingest.producers_reclaimed"), 1);
}

// ---------------------------------------------------------------------------------------
// 7. Duplicates and the node limit

#[test]
fn dedup_and_node_limit() {
    let mut d = Daemon::start(
        &["reflex.nodes_max=10", "ingest.dedup_window=4"],
        Some("[[rule]]\nid = \"seen\"\nwhen = \"metric.v > 0\"\nseverity = \"info\"\n"),
    );
    let mut sub = d.subscriber();
    let mut p = d.producer("dedup", 1 << 16);
    let node = |k: u32| format!("rim:sensor:limit:n{k}");
    // (node, event id, accepted?)
    let mut script: Vec<(u32, &str, bool)> = vec![
        (0, "e1", true),
        (0, "e2", true),
        (0, "e1", false), // repeated within the window
        (0, "e3", true),
        (0, "e2", false),
    ];
    for k in 1..10 {
        script.push((k, "e1", true)); // windows are per node
    }
    script.push((10, "e1", false)); // the 11th node: refused
    script.push((10, "e9", false));
    script.extend([
        (0, "e4", true), // window now e1 e2 e3 e4 (full)
        (0, "e1", false),
        (0, "e5", true), // evicts e1
        (0, "e1", true), // left the window: passes
        (1, "e1", false),
        (11, "e1", false), // a 12th node: refused too
    ]);
    let mut expected = Vec::new();
    let mut seq = 0u64;
    for (i, &(k, id, ok)) in script.iter().enumerate() {
        let mut ev = event(&node(k), T0 + i as i64, &[("v", 1.0)]);
        ev.event_id = Some(id.to_owned());
        p.publish(&ev);
        if ok {
            seq += 1;
            expected.push((node(k), seq, T0 + i as i64));
        }
    }
    let got: Vec<(String, u64, i64)> = sub
        .take_raw(expected.len(), SOON)
        .iter()
        .map(|r| decode(r).expect("decode"))
        .map(|d| (d.rim_node_id, d.event_seq, d.event_timestamp))
        .collect();
    assert_eq!(
        got, expected,
        "one decision per accepted event, none for duplicates or refused nodes"
    );
    let s = d.wait_for(SOON, "every event read", |s| {
        counter(s, "ingest.events_accepted") == seq
            && counter(s, "ingest.duplicates") == 4
            && counter(s, "ingest.nodes_refused") == 3
    });
    sub.expect_none(Duration::from_millis(300), "after the script");
    assert_eq!(gauge(&s, "nodes"), 10);
    assert_eq!(
        counter(&s, "ingest.rejected"),
        0,
        "refused nodes are not malformed records"
    );
    assert_eq!(counter(&s, "reflex.events_applied"), seq);

    // Still running and accepting known nodes.
    assert!(d.try_exited().is_none());
    let mut ev = event(&node(3), T0 + 1_000, &[("v", 1.0)]);
    ev.event_id = Some("later".into());
    p.publish(&ev);
    let dd = sub.next(SOON).expect("decision after the refusals");
    assert_eq!((dd.rim_node_id.as_str(), dd.event_seq), (node(3).as_str(), seq + 1));
}

// ---------------------------------------------------------------------------------------
// 8. Configuration errors are refused clearly, with exit status 2

fn run_rimd(args: &[&str]) -> (Option<i32>, String) {
    let dir = TempDir::new("cfg");
    let out = rimd_command()
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(args)
        .output()
        .expect("run rimd");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const RULES_BAD_AT_3_22: &str = "[[rule]]\nid = \"x\"\nwhen = \"metric.a > 1 an metric.b < 2\"\nseverity = \"low\"\n";

#[test]
fn config_errors_are_clear() {
    let (code, err) = run_rimd(&["--set", "topology.partitions=0", "--check"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("topology.partitions = 0"), "{err}");

    let (code, err) = run_rimd(&["--set", "reflex.no_such_key=1", "--check"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("reflex.no_such_key"), "{err}");

    let (code, err) = run_rimd(&["--set", "nosection=1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nosection"), "{err}");

    let dir = TempDir::new("rules");
    let rules = dir.path().join("bad.toml");
    std::fs::write(&rules, RULES_BAD_AT_3_22).expect("write rules");
    let (code, err) = run_rimd(&["--rules", rules.to_str().expect("utf-8 path"), "--check"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 3, column 22"), "{err}");

    // And a good configuration checks out.
    std::fs::write(&rules, RULES_V2).expect("write rules");
    let (code, err) = run_rimd(&["--rules", rules.to_str().expect("utf-8 path"), "--check"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn bad_rule_file_at_start_exits_2() {
    let dir = TempDir::new("rules-start");
    let rules = dir.path().join("bad.toml");
    std::fs::write(&rules, RULES_BAD_AT_3_22).expect("write rules");
    let mut args = Vec::new();
    for s in common::BASE_SETS {
        args.extend(["--set", s]);
    }
    args.extend(["--rules", rules.to_str().expect("utf-8 path")]);
    let (code, err) = run_rimd(&args);
    assert!(err.contains("line 3, column 22"), "{err}");
    assert_eq!(
        code,
        Some(2),
        "a rule file that does not compile is a configuration error: {err}"
    );
}

// ---------------------------------------------------------------------------------------
// 9. More than one reflex shard: each node's events reach exactly one shard, in order,
//    and each shard publishes on its own decision ring with its own verified chain.

#[test]
fn two_reflex_shards_split_the_nodes() {
    let rules = "[[rule]]\nid = \"all\"\nwhen = \"metric.v >= 0\"\nseverity = \"info\"\n";
    let mut d = Daemon::start(&["topology.reflex_shards=2", "topology.reflex_cores=[0]"], Some(rules));
    let socket = d.socket();
    let mut subs: Vec<common::Subscriber> = (0..2)
        .map(|k| {
            let name = if k == 0 {
                "decisions".to_owned()
            } else {
                format!("decisions:{k}")
            };
            common::Subscriber::new(rim_ring::attach::attach_subscriber(&socket, &name).expect("subscribe"))
        })
        .collect();
    assert!(
        rim_ring::attach::attach_subscriber(&socket, "decisions:2").is_err(),
        "there is no third shard"
    );
    let mut p = d.producer("split", 1 << 20);
    let nodes = 64;
    let per_node = 20;
    for round in 0..per_node {
        for n in 0..nodes {
            p.publish(&event(
                &format!("rim:sensor:split:n{n}"),
                T0 + round,
                &[("v", round as f64)],
            ));
        }
    }
    let total = (nodes * per_node) as usize;
    let mut seen: std::collections::HashMap<String, (usize, i64)> = std::collections::HashMap::new();
    let mut per_shard = [0usize; 2];
    let mut chains = [Verifier::new(), Verifier::new()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while per_shard.iter().sum::<usize>() < total && Instant::now() < deadline {
        for (k, sub) in subs.iter_mut().enumerate() {
            while let Some(raw) = sub.next_raw(Duration::from_millis(1)) {
                let dec = chains[k].push(&raw).expect("each shard's chain verifies");
                assert_eq!(
                    dec.shard as usize, k,
                    "a decision on shard {k}'s ring names shard {}",
                    dec.shard
                );
                let entry = seen.entry(dec.rim_node_id.clone()).or_insert((k, i64::MIN));
                assert_eq!(entry.0, k, "node {} reached two shards", dec.rim_node_id);
                assert!(dec.event_timestamp > entry.1, "node {} out of order", dec.rim_node_id);
                entry.1 = dec.event_timestamp;
                per_shard[k] += 1;
            }
        }
    }
    assert_eq!(
        per_shard.iter().sum::<usize>(),
        total,
        "every event decided once: {per_shard:?}"
    );
    assert!(
        per_shard[0] > 0 && per_shard[1] > 0,
        "both shards own nodes: {per_shard:?}"
    );
    assert_eq!(seen.len(), nodes as usize);
    let s = d.wait_for(Duration::from_secs(10), "both shards' counts", |s| {
        counter(s, "reflex.decisions") == total as u64
    });
    assert_eq!(counter(&s, "decisions.rule.all"), total as u64);
    let names: Vec<&str> = s.shards.iter().map(|x| x.name.as_str()).collect();
    let hot: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("rimd-hot") || n.starts_with("rimd-reflex-"))
        .collect();
    assert_eq!(
        hot,
        ["rimd-hot", "rimd-reflex-1"],
        "the snapshot lists both shard loops: {names:?}"
    );
    assert_eq!(
        s.gauges.get("decision_rings"),
        Some(&2),
        "one decision ring per shard, for subscribers"
    );
    // The cold-side agents follow them, with their own loop figures.
    let journal = s
        .shards
        .iter()
        .find(|x| x.name == "rimd-journal")
        .expect("the journal thread's figures");
    assert!(
        journal.loops > 0 && journal.work > 0,
        "the journal thread turned and did work: {journal:?}"
    );
    assert_eq!(journal.idle, "park");
    assert!(names.contains(&"rimd-store"), "{names:?}");
    assert_eq!(d.sigterm().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// 10. A corrupt ring is quarantined while the others flow. The test rewrites a committed
//     record's frame in the shared memory (as a buggy or hostile producer could), while
//     the daemon is stopped, so the daemon reads exactly that frame.

#[test]
fn corrupt_ring_is_quarantined_while_others_flow() {
    let rules = "[[rule]]\nid = \"all\"\nwhen = \"metric.v >= 0\"\nseverity = \"info\"\n";
    let mut d = Daemon::start(&[], Some(rules));
    let mut sub = d.subscriber();
    let victim = format!("victim-{}", std::process::id());
    let mut bad = d.producer(&victim, 1 << 16);
    let mut good = d.producer("bystander", 1 << 16);
    bad.publish(&event("rim:sensor:q:bad", T0, &[("v", 1.0)]));
    good.publish(&event("rim:sensor:q:good", T0, &[("v", 1.0)]));
    assert!(bad.wait_consumed(SOON) && good.wait_consumed(SOON));
    assert_eq!(sub.take_raw(2, SOON).len(), 2);

    // Stop the daemon, publish one more record on the victim ring, and give its frame a
    // length no record may have (keeping the commit tag and kind, so it reads as committed).
    d.pause();
    let at = bad.p.position();
    bad.publish_raw(&[7u8; 16]);
    let (base, len) = common::map_own_memfd(&format!("rimd-{victim}"));
    let capacity = 1u64 << 16;
    let off = rim_ring::HEADER_BYTES + (at % capacity) as usize;
    assert!(off + 8 <= len);
    // SAFETY: `off` is 8-aligned (records are) and inside the mapping; the word is shared
    // with the (stopped) daemon, so it is written atomically.
    let word = unsafe { &*(base.add(off) as *const std::sync::atomic::AtomicU64) };
    let committed = word.load(std::sync::atomic::Ordering::Acquire);
    assert_ne!(committed >> 32, 0, "the record is committed");
    word.store(
        (committed & !0x00ff_ffff) | 0x00ff_fff0,
        std::sync::atomic::Ordering::Release,
    );
    d.signal(libc::SIGCONT);

    // The victim is quarantined and told so; the bystander keeps flowing.
    let s = d.wait_for(Duration::from_secs(10), "the victim quarantined", |s| {
        counter(s, "ingest.producers_quarantined") == 1
    });
    assert!(ring(&s, &victim).is_none(), "the quarantined ring left the registry");
    let r = bad.p.try_publish(&[1u8; 8]);
    assert!(matches!(r, Err(rim_ring::PublishError::Quarantined)), "{r:?}");
    for i in 1..=100 {
        good.publish(&event("rim:sensor:q:good", T0 + i, &[("v", i as f64)]));
    }
    assert_eq!(
        sub.take_raw(100, Duration::from_secs(10)).len(),
        100,
        "the bystander's decisions"
    );
    let s = d.wait_for(Duration::from_secs(10), "the bystander's events", |s| {
        counter(s, "ingest.events_accepted") == 102
    });
    assert_eq!(counter(&s, "ingest.producers_quarantined"), 1);
    assert!(d.log_text().contains("Quarantined"), "the log names the quarantine");
    // SAFETY: unmapping the mapping made above, no longer used.
    unsafe { libc::munmap(base.cast(), len) };
    assert_eq!(d.sigterm().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// 11. One daemon per run directory: a second is refused (the first keeps its socket and
//     stats); after the first dies by SIGKILL, its stale socket and lock do not stop a new one.

#[test]
fn one_daemon_per_run_directory() {
    let mut d = Daemon::start(&[], Some(""));
    let out = rimd_command()
        .arg("--run-dir")
        .arg(d.run_dir())
        .args(["--set", "topology.idle=backoff", "--set", "topology.pin=false"])
        .output()
        .expect("run a second rimd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("another rimd (pid {})", d.pid())), "{err}");
    // The first is untouched: it still takes producers and publishes stats.
    let mut p = d.producer("still-here", 1 << 16);
    p.publish(&event("rim:sensor:lock:n1", T0, &[("v", 1.0)]));
    d.wait_for(SOON, "the first daemon's stats", |s| {
        counter(s, "ingest.events_accepted") == 1
    });

    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(SOON);
    // Its own data directory and a free port: the defaults (/var/tmp/rimd, :7070) are
    // shared with every other daemon on the machine, including other test runs.
    let mut again = rimd_command()
        .arg("--run-dir")
        .arg(d.run_dir())
        .args(["--set", "topology.idle=backoff", "--set", "topology.pin=false"])
        .args(["--set", "api.listen=127.0.0.1:0"])
        .arg("--set")
        .arg(format!("persist.data_dir={}", d.data_dir().display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a new rimd");
    let deadline = Instant::now() + SOON;
    let attached = loop {
        if let Ok(p) = rim_ring::attach::attach_producer(&d.socket(), "after-crash", 1 << 16) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "a new daemon did not take over the directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(attached);
    let _ = again.kill();
    let _ = again.wait();
}

// ---------------------------------------------------------------------------------------
// Only the hot shards run on the hot core

/// With `topology.pin`, every thread the daemon starts (its own, the journal's spares
/// and commit threads, a library's) runs on the cold core; only the hot shard runs on the hot core. The
/// journal's spares thread and librdkafka's threads were started from the main thread
/// before it was pinned, and ran on the hot core too. (The kernel's io_uring workers are
/// left out: the pool of recovery's readers, made on the main thread, keeps that time's
/// CPUs and is idle after.)
#[test]
fn only_the_hot_shard_runs_on_the_hot_core() {
    let cpus = common::allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("only_the_hot_shard_runs_on_the_hot_core: skipped, this process has one CPU");
        return;
    }
    let (cold, hot) = (cpus[0], cpus[1]);
    let sets = [
        "topology.pin=true".to_owned(),
        format!("topology.cold_core={cold}"),
        format!("topology.hot_core={hot}"),
        // The cores as configured, whatever the disk's interrupts (the test below).
        "topology.avoid_disk_irqs=false".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let d = Daemon::start(&sets, None);
    let mut feed = d.producer("pin", 1 << 16);
    feed.publish(&event("rim:sensor:plant:pin", T0, &[("temp", 20.0)]));
    assert!(feed.wait_consumed(SOON), "the event was not taken");
    // The spares thread, started at open on the main thread's CPUs, is given the journal
    // thread's at its first commit.
    let (cold, hot) = (cold.to_string(), hot.to_string());
    // The commit threads start at the first commit too, just after.
    let threads = common::eventually("the journal's spares and commit threads on the cold core", || {
        let t = common::threads_of(d.pid());
        let on_cold = |prefix: &str| t.iter().any(|(n, c)| n.starts_with(prefix) && *c == cold);
        (on_cold("rim-journal-spa") && on_cold("rim-journal-io")).then_some(t)
    });
    let mut checked = 0;
    for (name, cpus) in &threads {
        if name.starts_with("iou-wrk") {
            continue;
        }
        let want = if name == "rimd-hot" { &hot } else { &cold };
        assert_eq!(
            &cpus, &want,
            "thread {name} runs on CPUs {cpus}, not {want}; all: {threads:?}"
        );
        checked += 1;
    }
    assert!(
        threads.iter().any(|(n, c)| n == "rimd-hot" && *c == hot),
        "no hot shard on the hot core: {threads:?}"
    );
    assert!(checked >= 6, "too few threads checked: {threads:?}");
}

/// `topology.avoid_disk_irqs` (on by default): when the disk under the data directory
/// takes its interrupts on the configured hot core and not on the cold one, the daemon
/// swaps the two, and its hot shard runs where the disk's completions do not; otherwise it
/// keeps them. Which of the two this machine shows depends on its disk; the test expects
/// what [`rimd::irqs`] reads and checks the threads' CPUs against it.
#[test]
fn the_hot_shard_keeps_off_the_core_that_takes_the_disks_interrupts() {
    let cpus = common::allowed_cpus();
    if cpus.len() < 2 {
        eprintln!(
            "the_hot_shard_keeps_off_the_core_that_takes_the_disks_interrupts: skipped, this process has one CPU"
        );
        return;
    }
    let (cold, hot) = (cpus[0], cpus[1]);
    let dir = common::TempDir::new("irq-place");
    let mut want = rimd::config::TopologyConfig {
        hot_core: hot,
        cold_core: cold,
        ..Default::default()
    };
    let disk = rimd::irqs::of_path(dir.path());
    let swapped = disk.as_ref().is_some_and(|d| want.avoid_cores(&d.cpus));
    eprintln!("disk: {disk:?}; swapped: {swapped}");
    let sets = [
        "topology.pin=true".to_owned(),
        format!("topology.cold_core={cold}"),
        format!("topology.hot_core={hot}"),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let d = Daemon::start_in(dir, &sets, None);
    let (want_hot, want_cold) = (want.hot_core.to_string(), want.cold_core.to_string());
    let threads = common::eventually("the hot shard and the journal thread pinned", || {
        let t = common::threads_of(d.pid());
        let on = |name: &str, core: &str| t.iter().any(|(n, c)| n == name && c == core);
        (on("rimd-hot", &want_hot) && on("rimd-journal", &want_cold)).then_some(t)
    });
    assert!(
        !threads.iter().any(|(n, c)| n == "rimd-hot" && *c != want_hot),
        "a hot shard thread off core {want_hot}: {threads:?}"
    );
    if swapped {
        assert!(
            d.log_text().contains("takes its interrupts on core"),
            "the swap is not logged:\n{}",
            d.log_text()
        );
    }
}
