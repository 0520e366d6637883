use super::*;
use crate::encode::{put_double, put_event, put_long, put_opt_double, put_opt_str, put_str};
use crate::wire::RIM_FAST_EVENT_AVSC;
use crate::Metrics;

fn schema(text: &str) -> Schema {
    Schema::parse(text).expect("schema")
}

fn platform() -> Plan {
    Plan::compile(&schema(RIM_FAST_EVENT_AVSC)).expect("the platform schema resolves to itself")
}

/// A writer schema: the platform's fields with `extra` JSON fields spliced in at `at`.
fn writer_with(at: usize, extra: &[&str]) -> Schema {
    let mut v: serde_json::Value = serde_json::from_str(RIM_FAST_EVENT_AVSC).expect("json");
    let fields = v["fields"].as_array_mut().expect("fields");
    for (k, e) in extra.iter().enumerate() {
        fields.insert(at + k, serde_json::from_str(e).expect("field json"));
    }
    schema(&v.to_string())
}

fn sample<'a>(metrics: &[(&'a str, f64)]) -> Event<'a> {
    let mut m = Metrics::new();
    for (k, v) in metrics {
        assert!(m.push(k, *v));
    }
    Event {
        rim_node_id: "rim:sensor:plant:n1",
        event_id: Some("e-1"),
        timestamp: 1_760_000_000_000,
        critical_metrics: m,
        price: Some(10.0),
        volume: None,
        stress: Some(0.5),
        status: "OK",
        source_topic: None,
    }
}

fn body(ev: &Event<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    put_event(ev, &mut out);
    out
}

#[test]
fn the_platform_schema_round_trips() {
    let ev = sample(&[("temp", 21.5), ("load", 0.25)]);
    assert_eq!(platform().decode(&body(&ev)), Ok(ev));
    let empty = Event {
        critical_metrics: Metrics::new(),
        ..sample(&[])
    };
    assert_eq!(platform().decode(&body(&empty)), Ok(empty));
}

#[test]
fn decoding_into_a_reused_event_leaves_nothing_of_the_one_before() {
    let plan = platform();
    let full = sample(&[("temp", 21.5), ("load", 0.25), ("rpm", 900.0)]);
    let fewer = Event {
        event_id: None,
        price: None,
        stress: None,
        status: "",
        ..sample(&[("temp", 3.0)])
    };
    let (a, b) = (body(&full), body(&fewer));
    let mut ev = Event::empty();
    plan.decode_into(&a, &mut ev).expect("full");
    assert_eq!(ev, full);
    plan.decode_into(&b, &mut ev).expect("fewer");
    assert_eq!(ev, fewer);
    assert_eq!(ev.critical_metrics.as_slice(), &[("temp", 3.0)]);
    // A failed decode is an error, and the next one still starts clean.
    assert!(plan.decode_into(&a[..a.len() - 1], &mut ev).is_err());
    plan.decode_into(&b, &mut ev).expect("fewer again");
    assert_eq!(ev, fewer);
}

#[test]
fn varints_round_trip_at_the_edges_and_overlong_ones_are_refused() {
    let plan = platform();
    for ts in [
        0i64,
        -1,
        1,
        63,
        -64,
        64,
        i32::MAX as i64,
        i32::MIN as i64,
        i64::MAX,
        i64::MIN,
    ] {
        let ev = Event {
            timestamp: ts,
            ..sample(&[])
        };
        assert_eq!(plan.decode(&body(&ev)).map(|e| e.timestamp), Ok(ts));
    }
    let node = b"rim:a:b:c";
    let mut eleven = Vec::new();
    put_str(node, &mut eleven);
    put_long(0, &mut eleven);
    let ts_at = eleven.len();
    eleven.extend_from_slice(&[0xff; 11]);
    assert_eq!(plan.decode(&eleven), Err(DecodeError::BadVarint(ts_at)));
    let mut tenth = eleven[..ts_at].to_vec();
    tenth.extend_from_slice(&[0xff; 9]);
    tenth.push(0x02);
    assert_eq!(plan.decode(&tenth), Err(DecodeError::BadVarint(ts_at)));
}

#[test]
fn every_truncation_of_a_good_body_is_an_error_not_a_panic() {
    let plan = platform();
    let b = body(&sample(&[("temp", 1.0)]));
    for cut in 0..b.len() {
        assert!(plan.decode(&b[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = b.clone();
    long.push(0);
    assert_eq!(plan.decode(&long), Err(DecodeError::Trailing(1)));
}

#[test]
fn lengths_utf8_and_union_indexes_are_checked() {
    let plan = platform();
    let mut huge = Vec::new();
    put_long(1 << 40, &mut huge);
    assert!(matches!(plan.decode(&huge), Err(DecodeError::BadLength { .. })));
    let mut neg = Vec::new();
    put_long(-5, &mut neg);
    assert!(matches!(plan.decode(&neg), Err(DecodeError::BadLength { len: -5, .. })));
    let mut b = body(&sample(&[]));
    b[1] = 0xff; // inside the node id
    assert_eq!(plan.decode(&b), Err(DecodeError::BadUtf8(0)));
    let mut b = body(&sample(&[]));
    let after_node = 1 + "rim:sensor:plant:n1".len();
    b[after_node] = 3; // event_id's union index: zigzag 3 = -2
    assert!(matches!(
        plan.decode(&b),
        Err(DecodeError::BadUnionIndex {
            index: -2,
            branches: 2,
            ..
        })
    ));
    b[after_node] = 4; // = 2
    assert!(matches!(
        plan.decode(&b),
        Err(DecodeError::BadUnionIndex { index: 2, .. })
    ));
}

#[test]
fn metrics_beyond_the_limit_and_huge_block_counts_are_refused() {
    let plan = platform();
    let mut b = Vec::new();
    put_str(b"rim:a:b:c", &mut b);
    put_long(0, &mut b);
    put_long(1, &mut b);
    put_long(METRICS_MAX as i64 + 1, &mut b);
    for k in 0..=METRICS_MAX {
        put_str(format!("m{k}").as_bytes(), &mut b);
        put_double(1.0, &mut b);
    }
    assert_eq!(plan.decode(&b), Err(DecodeError::TooManyMetrics(METRICS_MAX)));
    let mut claim = Vec::new();
    put_str(b"rim:a:b:c", &mut claim);
    put_long(0, &mut claim);
    put_long(1, &mut claim);
    put_long(1 << 50, &mut claim);
    assert!(matches!(plan.decode(&claim), Err(DecodeError::BadLength { .. })));
}

#[test]
fn a_newer_writer_with_added_fields_is_read_and_they_are_skipped() {
    // An array of strings after the node id, a nested record and a map of arrays at the end.
    let writer = writer_with(
        1,
        &[
            r#"{"name":"region","type":{"type":"array","items":"string"},"default":[]}"#,
            r#"{"name":"origin","type":{"type":"record","name":"O","fields":[{"name":"a","type":"int"},{"name":"e","type":{"type":"enum","name":"C","symbols":["R","G"]}},{"name":"f","type":{"type":"fixed","name":"F","size":3}},{"name":"ok","type":"boolean"},{"name":"x","type":"float"}]}}"#,
            r#"{"name":"tags","type":{"type":"map","values":{"type":"array","items":["null","long"]}}}"#,
        ],
    );
    let plan = Plan::compile(&writer).expect("a newer writer resolves");
    let ev = sample(&[("temp", 3.5)]);
    let mut b = Vec::new();
    put_str(ev.rim_node_id.as_bytes(), &mut b);
    // region: one block of two strings, then a block with its byte size (negative count).
    put_long(2, &mut b);
    put_str(b"eu", &mut b);
    put_str(b"west", &mut b);
    put_long(-1, &mut b);
    put_long(3, &mut b);
    put_str(b"ab", &mut b);
    put_long(0, &mut b);
    // origin
    put_long(-7, &mut b);
    put_long(1, &mut b);
    b.extend_from_slice(b"xyz");
    b.push(1);
    b.extend_from_slice(&1.5f32.to_le_bytes());
    // tags: {"k": [null, 7]}
    put_long(1, &mut b);
    put_str(b"k", &mut b);
    put_long(2, &mut b);
    put_long(0, &mut b);
    put_long(1, &mut b);
    put_long(7, &mut b);
    put_long(0, &mut b);
    put_long(0, &mut b);
    // The platform's fields after rim_node_id.
    let rest = body(&ev);
    b.extend_from_slice(&rest[1 + ev.rim_node_id.len()..]);
    assert_eq!(plan.decode(&b), Ok(ev));
}

#[test]
fn an_older_writer_gets_the_readers_defaults_and_required_fields_are_required() {
    let writer = schema(
        r#"{"type":"record","name":"RimFastEvent","fields":[
            {"name":"status","type":"string"},
            {"name":"timestamp","type":"int"},
            {"name":"rim_node_id","type":"bytes"},
            {"name":"critical_metrics","type":{"type":"map","values":"int"}}]}"#,
    );
    let plan = Plan::compile(&writer).expect("an older writer resolves");
    let mut b = Vec::new();
    put_str(b"DEGRADED", &mut b);
    put_long(42, &mut b);
    put_str(b"rim:a:b:c", &mut b);
    put_long(1, &mut b);
    put_str(b"t", &mut b);
    put_long(-3, &mut b);
    put_long(0, &mut b);
    let ev = plan.decode(&b).expect("decode");
    assert_eq!((ev.rim_node_id, ev.status, ev.timestamp), ("rim:a:b:c", "DEGRADED", 42));
    assert_eq!(ev.critical_metrics.as_slice(), &[("t", -3.0)]);
    assert_eq!((ev.event_id, ev.price, ev.source_topic), (None, None, None));

    let no_status = schema(
        r#"{"type":"record","name":"RimFastEvent","fields":[{"name":"rim_node_id","type":"string"},{"name":"timestamp","type":"long"},{"name":"critical_metrics","type":{"type":"map","values":"double"}}]}"#,
    );
    assert!(matches!(Plan::compile(&no_status), Err(PlanError::Mismatch { path, .. }) if path == "$.status"));
    let other = schema(r#"{"type":"record","name":"Other","fields":[]}"#);
    assert!(Plan::compile(&other).is_err());
    assert!(Plan::compile(&Schema::Long).is_err());
    let wrong_type = writer_with(0, &[]);
    let Schema::Record { mut fields, name } = wrong_type else {
        panic!("record")
    };
    fields[2].schema = Schema::String; // timestamp as a string
    assert!(Plan::compile(&Schema::Record { name, fields }).is_err());
}

#[test]
fn writer_unions_resolve_branch_by_branch() {
    // The node id may be null in the writer's union; price an int or a double; the metric
    // map's values nullable.
    let writer = schema(
        r#"{"type":"record","name":"RimFastEvent","fields":[
            {"name":"rim_node_id","type":["null","string"]},
            {"name":"timestamp","type":["int","long"]},
            {"name":"critical_metrics","type":{"type":"map","values":["null","float"]}},
            {"name":"price","type":["int","double","null"]},
            {"name":"status","type":"string"}]}"#,
    );
    let plan = Plan::compile(&writer).expect("resolves");
    let good = |node_branch: i64, metric_branch: i64| {
        let mut b = Vec::new();
        put_long(node_branch, &mut b);
        if node_branch == 1 {
            put_str(b"rim:a:b:c", &mut b);
        }
        put_long(0, &mut b);
        put_long(9, &mut b);
        put_long(1, &mut b);
        put_str(b"m", &mut b);
        put_long(metric_branch, &mut b);
        if metric_branch == 1 {
            b.extend_from_slice(&2.5f32.to_le_bytes());
        }
        put_long(0, &mut b);
        put_long(0, &mut b);
        put_long(-4, &mut b);
        put_str(b"OK", &mut b);
        b
    };
    let bytes = good(1, 1);
    let ev = plan.decode(&bytes).expect("decode");
    assert_eq!((ev.rim_node_id, ev.timestamp, ev.price), ("rim:a:b:c", 9, Some(-4.0)));
    assert_eq!(ev.critical_metrics.as_slice(), &[("m", 2.5)]);
    assert_eq!(
        plan.decode(&good(0, 1)),
        Err(DecodeError::Unreadable {
            field: "rim_node_id",
            branch: "null"
        })
    );
    assert_eq!(
        plan.decode(&good(1, 0)),
        Err(DecodeError::Unreadable {
            field: "critical_metrics",
            branch: "null"
        })
    );
    let all_null = schema(
        r#"{"type":"record","name":"RimFastEvent","fields":[{"name":"rim_node_id","type":["null"]},{"name":"timestamp","type":"long"},{"name":"critical_metrics","type":{"type":"map","values":"double"}},{"name":"status","type":"string"}]}"#,
    );
    assert!(Plan::compile(&all_null).is_err());
}

#[test]
fn the_value_budget_stops_arrays_of_nulls() {
    let writer = writer_with(1, &[r#"{"name":"n","type":{"type":"array","items":"null"}}"#]);
    let plan = Plan::compile(&writer).expect("resolves");
    let mut b = Vec::new();
    put_str(b"rim:a:b:c", &mut b);
    for _ in 0..3 {
        put_long(VALUES_MAX as i64, &mut b);
    }
    put_long(0, &mut b);
    assert_eq!(plan.decode(&b), Err(DecodeError::TooManyValues(VALUES_MAX)));
}

#[test]
fn skipped_fields_check_booleans_and_enums() {
    let writer = writer_with(
        1,
        &[
            r#"{"name":"b","type":"boolean"}"#,
            r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}}"#,
        ],
    );
    let plan = Plan::compile(&writer).expect("resolves");
    let with = |flag: u8, e: i64| {
        let mut b = Vec::new();
        put_str(b"rim:a:b:c", &mut b);
        b.push(flag);
        put_long(e, &mut b);
        put_opt_str(None, &mut b);
        put_long(1, &mut b);
        put_long(0, &mut b);
        for _ in 0..3 {
            put_opt_double(None, &mut b);
        }
        put_str(b"OK", &mut b);
        put_opt_str(None, &mut b);
        b
    };
    assert!(plan.decode(&with(1, 0)).is_ok());
    assert!(matches!(
        plan.decode(&with(2, 0)),
        Err(DecodeError::BadBoolean { value: 2, .. })
    ));
    assert!(matches!(
        plan.decode(&with(0, 1)),
        Err(DecodeError::BadEnumIndex { index: 1, .. })
    ));
}

#[test]
fn random_garbage_never_panics() {
    let writer = writer_with(
        3,
        &[r#"{"name":"x","type":["null","string",{"type":"map","values":["null","double"]}]}"#],
    );
    let plans = [platform(), Plan::compile(&writer).expect("resolves")];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..5000usize {
        let bytes: Vec<u8> = (0..len % 96)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for p in &plans {
            let _ = p.decode(&bytes);
        }
    }
}
