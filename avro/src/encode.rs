//! The Avro binary encoding of the platform schema, for tests and benchmarks (the bridge
//! only reads). The Kafka tests encode with an independent implementation (fastavro); this
//! one is for the unit tests, the fuzz seeds and tools.

use crate::wire::frame_header;
use crate::Event;

/// Appends a zigzag varint.
pub fn put_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends a string (or bytes): length, then the bytes.
pub fn put_str(s: &[u8], out: &mut Vec<u8>) {
    put_long(s.len() as i64, out);
    out.extend_from_slice(s);
}

/// Appends a double (8 bytes, little-endian).
pub fn put_double(v: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a `["null", "string"]` union.
pub fn put_opt_str(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        None => put_long(0, out),
        Some(s) => {
            put_long(1, out);
            put_str(s.as_bytes(), out);
        }
    }
}

/// Appends a `["null", "double"]` union.
pub fn put_opt_double(v: Option<f64>, out: &mut Vec<u8>) {
    match v {
        None => put_long(0, out),
        Some(v) => {
            put_long(1, out);
            put_double(v, out);
        }
    }
}

/// Appends the body of `ev` under the platform schema
/// ([`crate::wire::RIM_FAST_EVENT_AVSC`]).
pub fn put_event(ev: &Event<'_>, out: &mut Vec<u8>) {
    put_str(ev.rim_node_id.as_bytes(), out);
    put_opt_str(ev.event_id, out);
    put_long(ev.timestamp, out);
    let metrics = ev.critical_metrics.as_slice();
    if !metrics.is_empty() {
        put_long(metrics.len() as i64, out);
        for (name, value) in metrics {
            put_str(name.as_bytes(), out);
            put_double(*value, out);
        }
    }
    put_long(0, out);
    put_opt_double(ev.price, out);
    put_opt_double(ev.volume, out);
    put_opt_double(ev.stress, out);
    put_str(ev.status.as_bytes(), out);
    put_opt_str(ev.source_topic, out);
}

/// Writes `ev` framed with schema id `id` into `out` (cleared first).
pub fn encode_event(id: u32, ev: &Event<'_>, out: &mut Vec<u8>) {
    frame_header(id, out);
    put_event(ev, out);
}
