//! The events the `kafka-in` row produces: RimFastEvents in the Confluent wire format
//! (magic 0, 4-byte big-endian schema id, Avro binary body under the platform schema),
//! written here rather than with the bridge's own encoder, so the bridge decodes bytes it
//! did not write (and this costs ~100 ns an event, not the allocations of a value tree).
//!
//! The body follows `rimd::bridge::wire::RIM_FAST_EVENT_AVSC` field by field: strings and
//! longs are zigzag varints (lengths included), doubles 8 bytes little-endian, a union its
//! branch index then the value, a map one block of entries then a 0 count.

/// Metric names, in the order of [`crate::workload::Publisher`]'s events.
pub const METRICS: [&str; 4] = ["temp", "load", "probe", "m3"];

/// One event's variable fields; the rest is the shared-memory workload's constants.
pub struct EventFields<'a> {
    /// `rim_node_id`.
    pub node_id: &'a str,
    /// `timestamp`, epoch ms.
    pub timestamp_ms: i64,
    /// The values of [`METRICS`], in order.
    pub metrics: [f64; 4],
}

/// Writes the framed event into `out` (cleared first).
pub fn encode(schema_id: u32, ev: &EventFields<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    put_str(ev.node_id, out);
    put_union_null(out); // event_id
    put_long(ev.timestamp_ms, out);
    put_long(METRICS.len() as i64, out);
    for (name, value) in METRICS.iter().zip(ev.metrics) {
        put_str(name, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
    put_long(0, out); // end of the map
    put_union_double(100.0, out); // price
    put_union_double(1.0, out); // volume
    put_union_double(0.1, out); // stress
    put_str("OK", out); // status
    put_union_null(out); // source_topic
}

fn put_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    put_long(s.len() as i64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Branch 0 (`null`) of a `["null", T]` union.
fn put_union_null(out: &mut Vec<u8>) {
    put_long(0, out);
}

/// Branch 1 (`double`) of a `["null", "double"]` union.
fn put_union_double(v: f64, out: &mut Vec<u8>) {
    put_long(1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rimd::bridge::wire;

    #[test]
    fn the_bridge_decodes_what_the_bench_writes() {
        let mut buf = Vec::new();
        let ev = EventFields {
            node_id: "rim:bench:g07:n1234",
            timestamp_ms: 1_760_000_000_123,
            metrics: [50.25, 0.5, 987_654_321.0, -0.125],
        };
        encode(7, &ev, &mut buf);
        let (id, body) = wire::split(&buf).expect("a Confluent frame");
        assert_eq!(id, 7);
        let schema = rim_avro::Schema::parse(wire::RIM_FAST_EVENT_AVSC).expect("schema");
        let plan = rim_avro::Plan::compile(&schema).expect("plan");
        let got = plan.decode(body).expect("an Avro RimFastEvent");
        assert_eq!(got.rim_node_id, ev.node_id);
        assert_eq!(got.event_id, None);
        assert_eq!(got.timestamp, ev.timestamp_ms);
        let want: Vec<(&str, f64)> = METRICS.iter().copied().zip(ev.metrics).collect();
        assert_eq!(got.critical_metrics.as_slice(), want.as_slice());
        assert_eq!((got.price, got.volume, got.stress), (Some(100.0), Some(1.0), Some(0.1)));
        assert_eq!(got.status, "OK");
        assert_eq!(got.source_topic, None);
    }

    #[test]
    fn longs_are_zigzag_varints() {
        let enc = |v| {
            let mut out = Vec::new();
            put_long(v, &mut out);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(64), [0x80, 1]);
        assert_eq!(enc(i64::MIN).len(), 10);
    }
}
