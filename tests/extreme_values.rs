//! Any value of any numeric field is taken without a fault by a debug build (overflow
//! checks on): with the event-time bounds off, events carrying the extremes of every
//! numeric field, in every order, go through ingest, the journal, reflex state, rules,
//! cooldowns, predictions, roll-ups and decisions, and the daemon keeps deciding and
//! stops cleanly. (With the bounds on, the default, such times never get that far.)

mod common;

use rim_ring::{SymEvent, SymbolKind};

use common::{counter, event, Daemon, SOON, T0};

/// Rules that read every kind of input: fields, gap, change, z-score, EWMA, with
/// cooldowns (event-time arithmetic) and a staleness rule (wall-clock arithmetic).
const RULES: &str = r#"
[[rule]]
id = "fields"
nodes = "rim:sensor:extreme:*"
when = "price > 0 or volume > 0 or stress > 0 or gap > 0"
severity = "low"
cooldown = "1s"

[[rule]]
id = "series"
nodes = "rim:sensor:extreme:*"
when = "change(metric.m, 2s) > 0 or zscore(metric.m) > 1 or ewma(metric.m) > 0"
severity = "medium"
cooldown = "10s"

[[rule]]
id = "quiet"
nodes = "rim:sensor:extreme:*"
when = "stale(1s)"
severity = "info"

[[rule]]
id = "probe"
nodes = "rim:sensor:probe:*"
when = "metric.v > 0"
severity = "high"
"#;

const TIMES: [i64; 9] = [i64::MAX, i64::MIN, 0, -1, 1, i64::MAX - 1, i64::MIN + 1, i64::MAX, T0];
const NUMBERS: [f64; 8] = [
    f64::MAX,
    -f64::MAX,
    f64::MIN_POSITIVE,
    -f64::MIN_POSITIVE,
    0.0,
    -0.0,
    1e308,
    -1e-308,
];

#[test]
fn extremes_of_every_numeric_field_are_taken_without_a_fault() {
    let mut d = Daemon::start(
        &[
            "ingest.event_ahead_ms_max=0",
            "ingest.event_age_ms_max=0",
            "api.enabled=true",
        ],
        Some(RULES),
    );
    let mut sub = d.subscriber();
    let mut p = d.producer("extremes", 1 << 20);
    // The issue's case first: i64::MAX then i64::MIN for one node (the gap overflowed).
    let mut sent = 0u64;
    for (i, &ts) in TIMES.iter().enumerate() {
        for (j, &x) in NUMBERS.iter().enumerate() {
            let node = format!("rim:sensor:extreme:n{}", j % 3);
            let mut ev = event(&node, ts, &[("m", x), ("n", NUMBERS[(i + j) % NUMBERS.len()])]);
            ev.price = Some(x);
            ev.volume = Some(NUMBERS[(j + 1) % NUMBERS.len()]);
            ev.stress = Some(NUMBERS[(j + 2) % NUMBERS.len()]);
            ev.event_id = Some(format!("x{i}-{j}"));
            p.publish(&ev);
            sent += 1;
        }
    }
    // Extreme publish times too (the client stamps 0; any other value is taken as is).
    let node = p.p.intern(SymbolKind::NodeId, "rim:sensor:extreme:ns").expect("intern");
    let status = p.p.intern(SymbolKind::Status, "OK").expect("intern");
    for (k, publish_ns) in [u64::MAX, 1, u64::MAX / 2].into_iter().enumerate() {
        let ev = SymEvent {
            node,
            event_id: None,
            timestamp: TIMES[k],
            metrics: &[],
            price: Some(1.0),
            volume: None,
            stress: None,
            status,
            source_topic: None,
            publish_ns,
        };
        common::retry_full(|| p.p.try_publish_sym(&ev));
        sent += 1;
    }
    assert!(p.wait_consumed(SOON), "the daemon read every extreme");

    // Still deciding: a plain event after all that gets its decision.
    p.publish(&event("rim:sensor:probe:after", T0, &[("v", 1.0)]));
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let dec = sub
            .next(SOON)
            .unwrap_or_else(|| panic!("no decision after the extremes\n{}", d.log_text()));
        if dec.rule_id == "probe" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no probe decision");
    }
    let s = d.wait_for(SOON, "every event applied", |s| {
        counter(s, "reflex.events_applied") == sent + 1
    });
    assert_eq!(counter(&s, "ingest.events_lost"), 0);
    assert!(d.try_exited().is_none(), "still running\n{}", d.log_text());
    let ready = common::get(&d.http_addr(), "/api/v1/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    // The staleness sweep runs over these nodes too (wall-clock arithmetic).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        d.try_exited().is_none(),
        "still running after the sweep\n{}",
        d.log_text()
    );
    assert_eq!(d.sigterm().code(), Some(0), "{}", d.log_text());
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}
