//! `POST /events`: one RimFastEvent (a JSON object) or a batch (a JSON array of at most
//! `api.batch_events_max`), field names exactly as the Avro schema.
//!
//! All or nothing at validation: every item is parsed and checked against the data model
//! and its `timestamp` against the daemon's clock (`ingest.event_ahead_ms_max`,
//! `ingest.event_age_ms_max`: the same bounds as the shared-memory path) first, and if
//! any fails the answer is 400 with one detail per failing item (its
//! `index`, the `field` and what is wrong; at most [`ITEM_ERRORS_MAX`]) and nothing is
//! published. Valid batches go into the daemon's intake ring in order, the same path as
//! shared-memory producers (ingest → journal → reflex → capsules). A full ring is waited
//! out asynchronously (100 µs steps, other requests keep being served) up to
//! `api.publish_wait_ms`, then 503 says how many of the batch were taken.
//!
//! `?wait=durable` answers only once the journal holds the last event (bounded by
//! `api.durable_wait_ms`, then 504).
//!
//! The fast path: a batch whose strings carry no escapes (what producers send) is read
//! once by [`scan`] into events whose strings point into the body (no `String`, no
//! `serde_json::Value`, one metric list for the whole batch), checked, and published in
//! order straight from the body. Anything else (escapes, an invalid item, a single
//! object) takes the owned path below, which accepts exactly the same events and names
//! each failing item.

use std::time::{Duration, Instant};

use hyper::{Response, StatusCode};
use rim_ring::event::{EventError, EventRef, RimFastEvent, METRICS_MAX};
use rim_ring::PublishError;
use serde::Serialize;
use serde_json::value::RawValue;

use super::envelope::{self, Body, Code, Detail, Meta, Problem};
use super::query::Query;
use super::scan;
use super::server::App;
use crate::ingest::time::TimeBounds;

/// Per-item errors reported at most.
pub const ITEM_ERRORS_MAX: usize = 100;
/// Wait between publish retries on a full ring.
const FULL_RETRY: Duration = Duration::from_micros(100);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    accepted: usize,
    /// Intake ring position just past the last event.
    position: u64,
    /// The journal holds them (only with `?wait=durable`).
    durable: bool,
}

/// Handles `POST /events`.
pub async fn post(app: &App, meta: &Meta, q: &Query<'_>, body: &[u8]) -> Result<Response<Body>, Problem> {
    let durable = match q.get("wait") {
        None => false,
        Some("durable") => true,
        Some(_) => return Err(Problem::invalid("wait", "the only value is durable")),
    };
    let bounds = app.ctx.time_bounds();
    let now_ms = app.ctx.clock().now_ms();
    let batch = scan::read(body, app.cfg.batch_events_max, METRICS_MAX);
    let (accepted, position) = match batch.as_ref().and_then(|b| checked_refs(b, &bounds, now_ms)) {
        Some(refs) => (refs.len(), publish_interned(app, &refs).await?),
        None => {
            let events = parse(body, app.cfg.batch_events_max, &bounds, now_ms)?;
            let refs: Vec<EventRef<'_, (String, f64)>> = events.iter().map(RimFastEvent::as_ref).collect();
            (refs.len(), publish_all(app, &refs).await?)
        }
    };
    if durable {
        wait_durable(app, position).await?;
    }
    let a = Accepted {
        accepted,
        position,
        durable,
    };
    Ok(envelope::data(meta, StatusCode::ACCEPTED, &a, None))
}

/// The fast path: a batch [`scan`] read (non-empty, within `batch_max`) whose every
/// event is valid and within the time bounds. `None` sends the body to the owned path
/// (which accepts the same events, and says what is wrong with the others).
fn checked_refs<'b>(batch: &'b scan::Batch<'_>, bounds: &TimeBounds, now_ms: i64) -> Option<Vec<EventRef<'b>>> {
    let refs: Vec<EventRef<'b>> = batch.events.iter().map(|e| batch.event_ref(e)).collect();
    let valid = |e: &EventRef<'_>| e.validate().is_ok() && bounds.check(e.timestamp, now_ms).is_ok();
    refs.iter().all(valid).then_some(refs)
}

/// Parses and validates the body (event times against `now_ms`); every failing item
/// becomes a detail.
fn parse(body: &[u8], batch_max: usize, bounds: &TimeBounds, now_ms: i64) -> Result<Vec<RimFastEvent>, Problem> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    // Fast path: a well-formed batch is parsed once, straight into events. Only a body
    // that fails goes through the per-item path below, which says which items failed.
    if first == Some(b'[') {
        if let Ok(events) = serde_json::from_slice::<Vec<RimFastEvent>>(body) {
            let valid = |e: &RimFastEvent| e.validate().is_ok() && bounds.check(e.timestamp, now_ms).is_ok();
            if !events.is_empty() && events.len() <= batch_max && events.iter().all(valid) {
                return Ok(events);
            }
        }
    }
    let items: Vec<&RawValue> = match first {
        Some(b'[') => serde_json::from_slice(body).map_err(|e| bad_json(&e))?,
        Some(b'{') => vec![serde_json::from_slice(body).map_err(|e| bad_json(&e))?],
        _ => {
            return Err(Problem::invalid(
                "body",
                "expected a RimFastEvent object or an array of them",
            ))
        }
    };
    if items.is_empty() {
        return Err(Problem::invalid("body", "the batch is empty"));
    }
    if items.len() > batch_max {
        return Err(Problem::invalid(
            "body",
            format!("batch of {} events exceeds the maximum of {batch_max}", items.len()),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut failed = 0usize;
    for (index, raw) in items.iter().enumerate() {
        match item(raw.get(), bounds, now_ms) {
            Ok(ev) => events.push(ev),
            Err((field, message)) => {
                failed += 1;
                if errors.len() < ITEM_ERRORS_MAX {
                    errors.push(Detail {
                        field,
                        index: Some(index),
                        message,
                    });
                }
            }
        }
    }
    if failed == 0 {
        return Ok(events);
    }
    let mut p = Problem::new(
        Code::Validation,
        format!("{failed} of {} events are invalid; none was accepted", items.len()),
    );
    p.details = errors;
    Err(p)
}

/// Entry point of the fuzz target `http_bodies` (`fuzz/`, feature `fuzzing` only): a
/// `POST /events` body through [`parse`] with the default batch and time bounds.
#[cfg(feature = "fuzzing")]
pub fn fuzz_parse(body: &[u8], now_ms: i64) -> Result<Vec<RimFastEvent>, Problem> {
    let bounds = TimeBounds {
        ahead_ms_max: 5_000,
        age_ms_max: 7 * 24 * 3_600_000,
    };
    parse(body, 10_000, &bounds, now_ms)
}

/// Entry point of the fuzz target `http_bodies` for the fast path: the events [`scan`]
/// and the checks take from `body` (as owned events, to compare with [`fuzz_parse`]'s),
/// or `None` where the body is left to the owned path.
#[cfg(feature = "fuzzing")]
pub fn fuzz_fast(body: &[u8], now_ms: i64) -> Option<Vec<RimFastEvent>> {
    let bounds = TimeBounds {
        ahead_ms_max: 5_000,
        age_ms_max: 7 * 24 * 3_600_000,
    };
    let batch = scan::read(body, 10_000, METRICS_MAX)?;
    let refs = checked_refs(&batch, &bounds, now_ms)?;
    Some(refs.iter().map(EventRef::to_event).collect())
}

fn bad_json(e: &serde_json::Error) -> Problem {
    Problem::new(Code::Validation, format!("malformed JSON: {e}")).with(Detail::field("body", e.to_string()))
}

/// One event: JSON shape, then the data model, then its time.
fn item(text: &str, bounds: &TimeBounds, now_ms: i64) -> Result<RimFastEvent, (Option<String>, String)> {
    let ev: RimFastEvent = serde_json::from_str(text).map_err(|e| (json_field(&e), e.to_string()))?;
    ev.validate()
        .map_err(|e| (Some(event_field(&e).to_owned()), e.to_string()))?;
    bounds
        .check(ev.timestamp, now_ms)
        .map_err(|e| (Some("timestamp".to_owned()), e.to_string()))?;
    Ok(ev)
}

/// The field a serde error names (`missing field `x``, `unknown field `x``), if any.
fn json_field(e: &serde_json::Error) -> Option<String> {
    let msg = e.to_string();
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

/// The schema field an event error is about.
fn event_field(e: &EventError) -> &'static str {
    match e {
        EventError::NodeId(_) => "rim_node_id",
        EventError::TooLong { field, .. } | EventError::NotFinite { field } | EventError::BadSymbol { field } => field,
        EventError::TooManyMetrics { .. } | EventError::EmptyMetricName { .. } | EventError::DuplicateMetric { .. } => {
            "critical_metrics"
        }
        _ => "event",
    }
}

/// Publishes every event in order with names interned once per batch, waiting out a
/// full ring; returns the position past the last one.
async fn publish_interned(app: &App, events: &[EventRef<'_>]) -> Result<u64, Problem> {
    let deadline = Instant::now() + Duration::from_millis(app.cfg.publish_wait_ms);
    let mut syms = crate::api::context::BatchSymbols::default();
    let mut next = 0;
    loop {
        match app.ctx.publish_batch(events, &mut next, &mut syms) {
            Ok(position) => return Ok(position),
            Err(PublishError::Full { .. }) if Instant::now() < deadline => {
                glommio::timer::sleep(FULL_RETRY).await;
            }
            Err(e) => return Err(publish_problem(&e, next)),
        }
    }
}

/// Publishes every event in order, waiting out a full ring; returns the position past
/// the last one.
async fn publish_all<M: rim_ring::event::Metric>(app: &App, events: &[EventRef<'_, M>]) -> Result<u64, Problem> {
    let deadline = Instant::now() + Duration::from_millis(app.cfg.publish_wait_ms);
    let mut position = 0;
    for (index, ev) in events.iter().enumerate() {
        loop {
            match app.ctx.publish(ev) {
                Ok(p) => {
                    position = p;
                    break;
                }
                Err(PublishError::Full { .. }) if Instant::now() < deadline => {
                    glommio::timer::sleep(FULL_RETRY).await;
                }
                Err(e) => return Err(publish_problem(&e, index)),
            }
        }
    }
    Ok(position)
}

fn publish_problem(e: &PublishError, index: usize) -> Problem {
    let taken = Detail {
        field: None,
        index: Some(index),
        message: format!("the first {index} events were accepted; this one and the rest were not"),
    };
    match e {
        PublishError::Invalid(err) => Problem::new(Code::Validation, format!("event {index} refused: {err}"))
            .with(Detail {
                field: Some(event_field(err).to_owned()),
                index: Some(index),
                message: err.to_string(),
            })
            .with(taken),
        PublishError::TooLarge { .. } => {
            Problem::new(Code::Validation, format!("event {index} refused: {e}")).with(taken)
        }
        PublishError::Full { .. } => Problem::new(
            Code::Unavailable,
            "the intake ring stayed full; retry later (ingest is behind)",
        )
        .with(taken),
        _ => Problem::new(Code::Unavailable, format!("ingest is not available: {e}")).with(taken),
    }
}

/// Waits until the journal holds everything up to `position`.
async fn wait_durable(app: &App, position: u64) -> Result<(), Problem> {
    let deadline = Instant::now() + Duration::from_millis(app.cfg.durable_wait_ms);
    let mut step = Duration::from_micros(100);
    while app.ctx.durable_position() < position {
        if Instant::now() >= deadline {
            return Err(Problem::new(
                Code::Timeout,
                format!(
                    "the events were accepted but not durable within {} ms (durable position {} < {position})",
                    app.cfg.durable_wait_ms,
                    app.ctx.durable_position()
                ),
            ));
        }
        glommio::timer::sleep(step).await;
        step = (step * 2).min(Duration::from_millis(2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"rim_node_id":"rim:sensor:a:n1","timestamp":1,"critical_metrics":{"t":1.5},"status":"OK"}"#;

    #[test]
    fn the_borrowed_path_takes_what_the_owned_path_takes_and_nothing_else() {
        let escaped =
            r#"{"rim_node_id":"rim:sensor:a:n1","timestamp":1,"critical_metrics":{"t\u0041":1.5},"status":"OK"}"#;
        let nulls = r#"{"rim_node_id":"rim:sensor:a:n2","event_id":null,"timestamp":1,"critical_metrics":{},"price":null,"status":"OK","source_topic":"x"}"#;
        let dup = r#"{"rim_node_id":"rim:sensor:a:n1","timestamp":1,"critical_metrics":{"t":1,"t":2},"status":"OK"}"#;
        let bad_node = r#"{"rim_node_id":"nope","timestamp":1,"critical_metrics":{},"status":"OK"}"#;
        let unknown = r#"{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{},"status":"OK","x":1}"#;
        let metrics = (0..65).map(|i| format!("\"m{i}\":1")).collect::<Vec<_>>().join(",");
        let too_many =
            format!(r#"{{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{{{metrics}}},"status":"OK"}}"#);
        let garbage = [
            "",
            "[",
            "[]",
            "[1]",
            "[{}]",
            "[null]",
            "[{\"rim_node_id\":7}]",
            "{\"a\":1}",
            "\u{0}",
        ];
        let mut bodies: Vec<String> = [OK, nulls, escaped, dup, bad_node, unknown, too_many.as_str()]
            .iter()
            .map(|e| format!("[{e}]"))
            .collect();
        bodies.extend(garbage.iter().map(|g| (*g).to_owned()));
        bodies.push(format!("[{OK},{nulls}]"));
        for body in &bodies {
            let batch = scan::read(body.as_bytes(), 10, METRICS_MAX);
            let fast = batch.as_ref().and_then(|b| checked_refs(b, &TimeBounds::NONE, 1));
            let owned = parse(body.as_bytes(), 10, &TimeBounds::NONE, 1);
            if let Some(fast) = &fast {
                let owned = owned
                    .as_ref()
                    .unwrap_or_else(|p| panic!("fast took what owned refuses: {body}: {p:?}"));
                let fast: Vec<RimFastEvent> = fast.iter().map(EventRef::to_event).collect();
                assert_eq!(&fast, owned, "{body}");
            }
        }
        // What producers send takes the fast path.
        let fast = |body: &str| {
            let batch = scan::read(body.as_bytes(), 10, METRICS_MAX);
            batch
                .as_ref()
                .and_then(|b| checked_refs(b, &TimeBounds::NONE, 1))
                .is_some()
        };
        assert!(fast(&format!("[{OK},{nulls}]")));
        // An escape goes the owned way, and is accepted there.
        assert!(!fast(&format!("[{escaped}]")));
        let owned = parse(format!("[{escaped}]").as_bytes(), 10, &TimeBounds::NONE, 1).expect("owned");
        assert_eq!(owned[0].critical_metrics[0].0, "tA");
    }

    #[test]
    fn one_event_or_a_batch_parses() {
        assert_eq!(parse(OK.as_bytes(), 10, &TimeBounds::NONE, 1).expect("one").len(), 1);
        let batch = format!("[{OK},{OK}]");
        assert_eq!(parse(batch.as_bytes(), 10, &TimeBounds::NONE, 1).expect("two").len(), 2);
    }

    #[test]
    fn every_bad_item_is_named_and_nothing_is_accepted() {
        let bad_node = r#"{"rim_node_id":"nope","timestamp":1,"critical_metrics":{},"status":"OK"}"#;
        let unknown = r#"{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{},"status":"OK","x":1}"#;
        let batch = format!("[{OK},{bad_node},{unknown}]");
        let p = parse(batch.as_bytes(), 10, &TimeBounds::NONE, 1).expect_err("refused");
        assert_eq!(p.code, Code::Validation);
        assert_eq!(p.details.len(), 2);
        assert_eq!(p.details[0].index, Some(1));
        assert_eq!(p.details[0].field.as_deref(), Some("rim_node_id"));
        assert_eq!(p.details[1].index, Some(2));
        assert_eq!(p.details[1].field.as_deref(), Some("x"));
    }

    #[test]
    fn oversized_empty_and_malformed_batches_are_refused() {
        let batch = format!("[{OK},{OK},{OK}]");
        assert!(parse(batch.as_bytes(), 2, &TimeBounds::NONE, 1).is_err());
        assert!(parse(b"[]", 2, &TimeBounds::NONE, 1).is_err());
        assert!(parse(b"[{", 2, &TimeBounds::NONE, 1).is_err());
        assert!(parse(b"42", 2, &TimeBounds::NONE, 1).is_err());
    }

    #[test]
    fn an_event_time_out_of_bounds_names_the_timestamp() {
        let bounds = TimeBounds {
            ahead_ms_max: 5,
            age_ms_max: 10,
        };
        // OK's timestamp is 1: at now = 1 it passes, at now = 100 it is 99 ms old.
        assert!(parse(OK.as_bytes(), 10, &bounds, 1).is_ok());
        for body in [OK.to_owned(), format!("[{OK}]")] {
            let p = parse(body.as_bytes(), 10, &bounds, 100).expect_err("too old");
            assert_eq!(p.code, Code::Validation);
            assert_eq!(p.details[0].field.as_deref(), Some("timestamp"), "{:?}", p.details);
            assert!(p.details[0].message.contains("event_age_ms_max"), "{:?}", p.details);
        }
        let p = parse(OK.as_bytes(), 10, &bounds, -100).expect_err("ahead");
        assert!(p.details[0].message.contains("event_ahead_ms_max"), "{:?}", p.details);
    }
}
