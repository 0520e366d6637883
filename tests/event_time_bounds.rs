//! No producer can move a node's state or cooldowns out of the present: an event time too
//! far ahead of the daemon's clock, or too old, is refused with a reason of its own (the
//! daemon's per-reason counter and the producer's own counters on the shared-memory path,
//! `VALIDATION_ERROR` on `timestamp` over HTTP), and the node's real events are still
//! decided. (The Kafka bridge's dead-letter of such an event is in `tests/kafka.rs`.)

mod common;

use common::{counter, event, send_json, Daemon, SOON};
use serde_json::json;

const AHEAD_MS: i64 = 5_000;
const AGE_MS: i64 = 60_000;
/// A hundred years, in ms.
const CENTURY_MS: i64 = 100 * 365 * 24 * 3_600_000;

fn now_ms() -> i64 {
    rimd::clock::Clock::system().now_ms()
}

fn bounded_daemon() -> Daemon {
    Daemon::start(
        &[
            "ingest.event_ahead_ms_max=5000",
            "ingest.event_age_ms_max=60000",
            "api.enabled=true",
        ],
        // Fires on every event, then keeps quiet for that node for a minute of event time.
        Some("[[rule]]\nid = \"hot\"\nwhen = \"metric.temp > 0\"\nseverity = \"high\"\ncooldown = \"60s\"\n"),
    )
}

/// The case: one event a century ahead must not silence the node's rule.
#[test]
fn a_century_ahead_is_refused_and_the_node_keeps_deciding() {
    let mut d = bounded_daemon();
    let mut sub = d.subscriber();
    let mut p = d.producer("clock-skew", 1 << 16);
    let node = "rim:sensor:time:n1";
    let now = now_ms();
    p.publish(&event(node, now + CENTURY_MS, &[("temp", 1.0)]));
    p.publish(&event(node, now - 10 * AGE_MS, &[("temp", 1.0)]));
    // Just inside the bounds on both sides: taken (checked against the clock at ingest,
    // a moment later than `now`, so the "ahead" one keeps a margin).
    p.publish(&event("rim:sensor:time:edge-a", now + AHEAD_MS / 2, &[("temp", 1.0)]));
    p.publish(&event("rim:sensor:time:edge-o", now - AGE_MS / 2, &[("temp", 1.0)]));
    let real = now_ms();
    p.publish(&event(node, real, &[("temp", 2.0)]));
    assert!(p.wait_consumed(SOON), "the daemon read the ring");

    // What the producer sees, per reason, once its records are consumed.
    assert_eq!(p.p.rejected(), 2, "both out-of-bounds events count as rejected");
    let v = p.p.verdicts();
    assert_eq!((v.time_ahead, v.time_too_old, v.invalid), (1, 1, 0), "{v:?}");

    // The real event is decided: the century-ahead one set no cooldown.
    let mut decided = Vec::new();
    for _ in 0..3 {
        let dec = sub.next(SOON).expect("a decision for each taken event");
        decided.push((dec.rim_node_id, dec.event_timestamp));
    }
    assert!(decided.contains(&(node.to_owned(), real)), "{decided:?}");
    assert!(decided.iter().all(|(_, ts)| (ts - real).abs() < AGE_MS), "{decided:?}");
    sub.expect_none(std::time::Duration::from_millis(300), "after the real events");

    let s = d.wait_for(SOON, "the refusals counted", |s| {
        counter(s, "ingest.refused.event_time_ahead") == 1 && counter(s, "ingest.refused.event_time_too_old") == 1
    });
    assert_eq!(counter(&s, "ingest.events_accepted"), 3);
    assert_eq!(
        counter(&s, "ingest.rejected"),
        0,
        "a time refusal is not a malformed record"
    );
    assert_eq!(counter(&s, "ingest.events_in"), 5);
    let ring = common::ring(&s, "clock-skew").expect("ring in stats");
    assert_eq!(ring.refused.get("event_time_ahead"), Some(&1), "{ring:?}");
    assert_eq!(ring.refused.get("event_time_too_old"), Some(&1), "{ring:?}");
    assert_eq!(common::gauge(&s, "nodes"), 3, "a refused event takes no node slot");
}

/// Over HTTP the same bounds answer 400 `VALIDATION_ERROR` naming `timestamp`, and
/// nothing of the batch is taken.
#[test]
fn http_refuses_an_event_time_out_of_bounds_naming_the_field() {
    let mut d = bounded_daemon();
    let a = d.http_addr();
    let ev = |ts: i64| json!({"rim_node_id": "rim:sensor:time:h1", "timestamp": ts, "critical_metrics": {"temp": 1.0}, "status": "OK"});
    for (what, ts) in [("ahead", now_ms() + CENTURY_MS), ("too old", now_ms() - 10 * AGE_MS)] {
        let r = send_json(&a, "POST", "/api/v1/events", &json!([ev(now_ms()), ev(ts)]));
        let v = common::assert_error(&r, 400, "VALIDATION_ERROR", what);
        let detail = &v["error"]["details"][0];
        assert_eq!(detail["field"], "timestamp", "{what}: {v}");
        assert_eq!(detail["index"], 1, "{what}: {v}");
    }
    let r = send_json(&a, "POST", "/api/v1/events", &ev(now_ms()));
    assert_eq!(r.status, 202, "{}", r.text());
    let s = d.wait_for(SOON, "the one good event taken", |s| {
        counter(s, "ingest.events_accepted") == 1
    });
    assert_eq!(counter(&s, "ingest.refused.event_time_ahead"), 0, "refused at the door");
}
