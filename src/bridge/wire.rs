//! The Confluent wire format and the Avro RimFastEvent ([`rim_avro`]), and the step from a
//! decoded message to the event the intake ring takes: borrowed, no copy, no allocation.

use rim_ring::event::EventRef;
use rim_ring::RimFastEvent;

pub use rim_avro::wire::{frame, split, WireError, HEADER_BYTES, MAGIC, RIM_FAST_EVENT_AVSC};

// The decoder's bound on metrics is the ring's: an event it accepts is never refused for
// the count alone.
const _: () = assert!(rim_avro::METRICS_MAX == rim_ring::event::METRICS_MAX);

/// The event the ring takes, borrowing the decoded message (`publish_ns` 0: the ring
/// stamps it).
pub fn event_ref<'a>(ev: &'a rim_avro::Event<'a>) -> EventRef<'a> {
    EventRef {
        rim_node_id: ev.rim_node_id,
        event_id: ev.event_id,
        timestamp: ev.timestamp,
        critical_metrics: ev.critical_metrics.as_slice(),
        price: ev.price,
        volume: ev.volume,
        stress: ev.stress,
        status: ev.status,
        source_topic: ev.source_topic,
        publish_ns: 0,
    }
}

/// Encodes `ev` with the platform schema and frames it with `id` (tests, tools). Metrics
/// beyond [`rim_avro::METRICS_MAX`] are left out.
pub fn encode_event(id: u32, ev: &RimFastEvent) -> Vec<u8> {
    let mut metrics = rim_avro::Metrics::new();
    for (k, v) in &ev.critical_metrics {
        metrics.push(k, *v);
    }
    let view = rim_avro::Event {
        rim_node_id: &ev.rim_node_id,
        event_id: ev.event_id.as_deref(),
        timestamp: ev.timestamp,
        critical_metrics: metrics,
        price: ev.price,
        volume: ev.volume,
        stress: ev.stress,
        status: &ev.status,
        source_topic: ev.source_topic.as_deref(),
    };
    let mut out = Vec::new();
    rim_avro::encode::encode_event(id, &view, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_event_decodes_into_the_same_ring_event() {
        let ev = RimFastEvent {
            rim_node_id: "rim:sensor:plant:n1".into(),
            event_id: Some("e-1".into()),
            timestamp: 1_760_000_000_000,
            critical_metrics: vec![("temp".into(), 21.5), ("load".into(), 0.25)],
            price: Some(10.0),
            volume: None,
            stress: Some(0.5),
            status: "OK".into(),
            source_topic: Some("upstream".into()),
            publish_ns: 0,
        };
        let msg = encode_event(42, &ev);
        let (id, body) = split(&msg).expect("frame");
        assert_eq!(id, 42);
        let schema = rim_avro::Schema::parse(RIM_FAST_EVENT_AVSC).expect("schema");
        let plan = rim_avro::Plan::compile(&schema).expect("plan");
        let decoded = plan.decode(body).expect("decode");
        let r = event_ref(&decoded);
        assert_eq!(r.rim_node_id, ev.rim_node_id);
        assert_eq!(r.event_id, ev.event_id.as_deref());
        assert_eq!(r.critical_metrics, &[("temp", 21.5), ("load", 0.25)]);
        assert_eq!((r.price, r.volume, r.stress), (ev.price, ev.volume, ev.stress));
        assert_eq!((r.status, r.source_topic), ("OK", Some("upstream")));
    }
}
