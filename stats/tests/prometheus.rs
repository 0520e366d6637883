//! Prometheus text: a golden rendering, sanitised names, escaped labels, collisions.

use std::collections::BTreeMap;

use rim_stats::{render_prometheus, Quantiles, RingSnapshot, ShardSnapshot, Snapshot};

fn small_snapshot() -> Snapshot {
    Snapshot {
        pid: 4242,
        version: "0.1.0".into(),
        running: true,
        started_unix_ms: 1_700_000_000_250,
        taken_unix_ms: 1_700_000_001_000,
        counters: BTreeMap::from([("events_in".into(), 1000), ("rejected.bad_symbol".into(), 2)]),
        gauges: BTreeMap::from([("nodes".into(), 3), ("skew".into(), -7)]),
        stages: BTreeMap::from([
            (
                "ring_hop".into(),
                Quantiles {
                    count: 1000,
                    min: 1,
                    mean: 500.5,
                    p50: 500,
                    p90: 900,
                    p99: 990,
                    p999: 999,
                    p9999: 1000,
                    max: 1000,
                },
            ),
            ("rule_eval".into(), Quantiles::default()),
        ]),
        rings: vec![RingSnapshot {
            name: "feed-a".into(),
            kind: "spsc".into(),
            pid: 77,
            state: "live".into(),
            depth: 5,
            capacity: 1024,
            delivered: 100,
            rejected: 3,
            refused_full: 4,
            invalid: 1,
            refused: BTreeMap::from([("event_time_ahead".into(), 2)]),
        }],
        shards: vec![ShardSnapshot {
            name: "hot-0".into(),
            core: Some(1),
            idle: "spin".into(),
            loops: 1_000_000,
            work: 10_000,
            stalls: 3,
            max_stall_ns: 250_000,
        }],
    }
}

const GOLDEN: &str = r#"# TYPE rimd_up gauge
rimd_up 1
# TYPE rimd_info gauge
rimd_info{version="0.1.0",pid="4242"} 1
# TYPE rimd_start_time_seconds gauge
rimd_start_time_seconds 1700000000.25
# TYPE rimd_events_in_total counter
rimd_events_in_total 1000
# TYPE rimd_rejected_bad_symbol_total counter
rimd_rejected_bad_symbol_total 2
# TYPE rimd_nodes gauge
rimd_nodes 3
# TYPE rimd_skew gauge
rimd_skew -7
# TYPE rimd_stage_latency_seconds summary
rimd_stage_latency_seconds{stage="ring_hop",quantile="0.5"} 0.0000005
rimd_stage_latency_seconds{stage="ring_hop",quantile="0.9"} 0.0000009
rimd_stage_latency_seconds{stage="ring_hop",quantile="0.99"} 0.00000099
rimd_stage_latency_seconds{stage="ring_hop",quantile="0.999"} 0.000000999
rimd_stage_latency_seconds{stage="ring_hop",quantile="0.9999"} 0.000001
rimd_stage_latency_seconds_sum{stage="ring_hop"} 0.0005005
rimd_stage_latency_seconds_count{stage="ring_hop"} 1000
rimd_stage_latency_seconds{stage="rule_eval",quantile="0.5"} NaN
rimd_stage_latency_seconds{stage="rule_eval",quantile="0.9"} NaN
rimd_stage_latency_seconds{stage="rule_eval",quantile="0.99"} NaN
rimd_stage_latency_seconds{stage="rule_eval",quantile="0.999"} NaN
rimd_stage_latency_seconds{stage="rule_eval",quantile="0.9999"} NaN
rimd_stage_latency_seconds_sum{stage="rule_eval"} 0
rimd_stage_latency_seconds_count{stage="rule_eval"} 0
# TYPE rimd_stage_latency_min_seconds gauge
rimd_stage_latency_min_seconds{stage="ring_hop"} 0.000000001
rimd_stage_latency_min_seconds{stage="rule_eval"} NaN
# TYPE rimd_stage_latency_max_seconds gauge
rimd_stage_latency_max_seconds{stage="ring_hop"} 0.000001
rimd_stage_latency_max_seconds{stage="rule_eval"} NaN
# TYPE rimd_ring_depth gauge
rimd_ring_depth{ring="feed-a",kind="spsc"} 5
# TYPE rimd_ring_capacity gauge
rimd_ring_capacity{ring="feed-a",kind="spsc"} 1024
# TYPE rimd_ring_delivered_total counter
rimd_ring_delivered_total{ring="feed-a",kind="spsc"} 100
# TYPE rimd_ring_rejected_total counter
rimd_ring_rejected_total{ring="feed-a",kind="spsc"} 3
# TYPE rimd_ring_refused_full_total counter
rimd_ring_refused_full_total{ring="feed-a",kind="spsc"} 4
# TYPE rimd_ring_refused_total counter
rimd_ring_refused_total{ring="feed-a",kind="spsc",reason="event_time_ahead"} 2
# TYPE rimd_ring_info gauge
rimd_ring_info{ring="feed-a",kind="spsc",pid="77",state="live"} 1
# TYPE rimd_shard_loops_total counter
rimd_shard_loops_total{shard="hot-0"} 1000000
# TYPE rimd_shard_work_total counter
rimd_shard_work_total{shard="hot-0"} 10000
# TYPE rimd_shard_stalls_total counter
rimd_shard_stalls_total{shard="hot-0"} 3
# TYPE rimd_shard_max_stall_seconds gauge
rimd_shard_max_stall_seconds{shard="hot-0"} 0.00025
"#;

fn render(snap: &Snapshot, prefix: &str) -> String {
    let mut out = String::new();
    render_prometheus(snap, prefix, &mut out);
    out
}

#[test]
fn golden_small_snapshot() {
    let text = render(&small_snapshot(), "rimd");
    // Line by line first, so a failure names the line.
    for (i, (got, want)) in text.lines().zip(GOLDEN.lines()).enumerate() {
        assert_eq!(got, want, "line {}", i + 1);
    }
    assert_eq!(text, GOLDEN);
}

#[test]
fn appends_rather_than_overwrites() {
    let mut out = String::from("# existing\n");
    render_prometheus(&Snapshot::default(), "rimd", &mut out);
    assert!(
        out.starts_with("# existing\n# TYPE rimd_up gauge\nrimd_up 0\n"),
        "{out}"
    );
}

#[test]
fn odd_names_are_sanitized_and_label_values_escaped() {
    let mut snap = Snapshot::default();
    snap.counters.insert("decisions.rule.temp-high".into(), 5);
    snap.counters.insert("weird name/with%chars é".into(), 6);
    snap.gauges.insert("9lives".into(), 1);
    snap.stages
        .insert("a \"quoted\"\\stage\nx".into(), Quantiles::default());
    snap.rings.push(RingSnapshot {
        name: "prod\"1\"".into(),
        ..RingSnapshot::default()
    });
    let text = render(&snap, "rim-d");

    assert!(text.contains("\nrim_d_decisions_rule_temp_high_total 5\n"), "{text}");
    assert!(text.contains("\nrim_d_weird_name_with_chars___total 6\n"), "{text}");
    assert!(text.contains("\nrim_d__9lives 1\n"), "{text}");
    assert!(
        text.contains(r#"rim_d_stage_latency_seconds_count{stage="a \"quoted\"\\stage\nx"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rim_d_ring_depth{ring="prod\"1\"",kind=""} 0"#),
        "{text}"
    );
    every_line_is_well_formed(&text);
}

#[test]
fn colliding_names_are_reported_not_duplicated() {
    let mut snap = Snapshot::default();
    snap.counters.insert("a.b".into(), 1);
    snap.counters.insert("a_b".into(), 2);
    snap.gauges.insert("up".into(), 9);
    let text = render(&snap, "rimd");
    assert_eq!(text.matches("# TYPE rimd_a_b_total counter").count(), 1, "{text}");
    assert!(text.contains("rimd_a_b_total 1\n"), "first one wins: {text}");
    assert!(
        text.contains("# skipped \"a_b\": its name rimd_a_b_total is already in use\n"),
        "{text}"
    );
    assert!(
        text.contains("# skipped \"up\": its name rimd_up is already in use\n"),
        "{text}"
    );
    assert!(!text.contains("rimd_up 9"), "{text}");
    every_line_is_well_formed(&text);
}

#[test]
fn empty_prefix_gives_bare_names() {
    let mut snap = Snapshot::default();
    snap.counters.insert("events_in".into(), 1);
    let text = render(&snap, "");
    assert!(text.contains("\nevents_in_total 1\n"), "{text}");
    assert!(text.starts_with("# TYPE up gauge\nup 0\n"), "{text}");
}

/// Every line is a comment or `name{labels} value` with a valid metric name.
fn every_line_is_well_formed(text: &str) {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("name then labels or value");
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let value = line.rsplit(' ').next().expect("value");
        assert!(value == "NaN" || value.parse::<f64>().is_ok(), "bad value in {line:?}");
    }
}
