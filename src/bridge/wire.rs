//! The Confluent wire format (`0x00`, 4-byte big-endian schema id, Avro body) and the
//! RimFastEvent it carries: the platform's reader schema, and the conversion of a resolved
//! record into a [`RimFastEvent`].

use rim_ring::RimFastEvent;
use thiserror::Error;

use super::avro::{self, Schema, Value};

/// The platform's schema `com.z254.butterfly.hft.RimFastEvent`: the reader schema every
/// writer schema is resolved to.
pub const RIM_FAST_EVENT_AVSC: &str = r#"{
  "namespace": "com.z254.butterfly.hft",
  "type": "record",
  "name": "RimFastEvent",
  "fields": [
    {"name": "rim_node_id", "type": "string"},
    {"name": "event_id", "type": ["null", "string"], "default": null},
    {"name": "timestamp", "type": "long"},
    {"name": "critical_metrics", "type": {"type": "map", "values": "double"}},
    {"name": "price", "type": ["null", "double"], "default": null},
    {"name": "volume", "type": ["null", "double"], "default": null},
    {"name": "stress", "type": ["null", "double"], "default": null},
    {"name": "status", "type": "string"},
    {"name": "source_topic", "type": ["null", "string"], "default": null}
  ]
}"#;

/// The Confluent magic byte.
pub const MAGIC: u8 = 0;
/// Bytes before the Avro body.
pub const HEADER_BYTES: usize = 5;

/// Why a message's frame or record is not a RimFastEvent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the 5-byte header (an empty value included).
    #[error("message of {0} bytes is shorter than the 5-byte Confluent header")]
    Truncated(usize),
    /// The first byte is not 0.
    #[error("magic byte is {0}, expected 0 (Confluent wire format)")]
    BadMagic(u8),
    /// The body does not decode under the writer schema resolved to the reader's.
    #[error("Avro body: {0}")]
    Avro(#[from] avro::DecodeError),
    /// A field does not have the reader schema's shape (cannot happen after resolution;
    /// kept so that it is an error, not a panic, if it ever does).
    #[error("field {0} has an unexpected shape")]
    Shape(&'static str),
}

/// The schema id and the body of a framed message.
pub fn split(message: &[u8]) -> Result<(u32, &[u8]), WireError> {
    let header = message.get(..HEADER_BYTES).ok_or(WireError::Truncated(message.len()))?;
    if header[0] != MAGIC {
        return Err(WireError::BadMagic(header[0]));
    }
    let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Ok((id, &message[HEADER_BYTES..]))
}

/// Frames `body` with schema id `id`.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The reader schema, parsed.
pub fn reader_schema() -> Schema {
    // The constant is tested to parse; failing here would be a build defect.
    Schema::parse(RIM_FAST_EVENT_AVSC).unwrap_or(Schema::Null)
}

/// Decodes an Avro body written with `writer` into a RimFastEvent (not yet validated
/// against the data model: the ring does that on publish).
pub fn decode_event(body: &[u8], writer: &Schema, reader: &Schema) -> Result<RimFastEvent, WireError> {
    let value = avro::decode(body, writer, reader)?;
    to_event(value)
}

fn to_event(value: Value) -> Result<RimFastEvent, WireError> {
    let Value::Record(fields) = value else {
        return Err(WireError::Shape("(record)"));
    };
    let mut ev = RimFastEvent {
        rim_node_id: String::new(),
        event_id: None,
        timestamp: 0,
        critical_metrics: Vec::new(),
        price: None,
        volume: None,
        stress: None,
        status: String::new(),
        source_topic: None,
        publish_ns: 0,
    };
    for (name, v) in fields {
        match name.as_str() {
            "rim_node_id" => ev.rim_node_id = string(v, "rim_node_id")?,
            "event_id" => ev.event_id = opt_string(v, "event_id")?,
            "timestamp" => ev.timestamp = long(v, "timestamp")?,
            "critical_metrics" => ev.critical_metrics = metrics(v)?,
            "price" => ev.price = opt_double(v, "price")?,
            "volume" => ev.volume = opt_double(v, "volume")?,
            "stress" => ev.stress = opt_double(v, "stress")?,
            "status" => ev.status = string(v, "status")?,
            "source_topic" => ev.source_topic = opt_string(v, "source_topic")?,
            _ => {}
        }
    }
    Ok(ev)
}

fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn string(v: Value, field: &'static str) -> Result<String, WireError> {
    match unwrap_union(v) {
        Value::String(s) => Ok(s),
        _ => Err(WireError::Shape(field)),
    }
}

fn opt_string(v: Value, field: &'static str) -> Result<Option<String>, WireError> {
    match unwrap_union(v) {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(WireError::Shape(field)),
    }
}

fn long(v: Value, field: &'static str) -> Result<i64, WireError> {
    match unwrap_union(v) {
        Value::Long(x) => Ok(x),
        _ => Err(WireError::Shape(field)),
    }
}

fn opt_double(v: Value, field: &'static str) -> Result<Option<f64>, WireError> {
    match unwrap_union(v) {
        Value::Null => Ok(None),
        Value::Double(x) => Ok(Some(x)),
        _ => Err(WireError::Shape(field)),
    }
}

fn metrics(v: Value) -> Result<Vec<(String, f64)>, WireError> {
    let Value::Map(entries) = unwrap_union(v) else {
        return Err(WireError::Shape("critical_metrics"));
    };
    entries
        .into_iter()
        .map(|(k, v)| match unwrap_union(v) {
            Value::Double(x) => Ok((k, x)),
            _ => Err(WireError::Shape("critical_metrics")),
        })
        .collect()
}

/// Encodes `ev` with the platform schema and frames it with `id` (tests, benchmarks).
pub fn encode_event(id: u32, ev: &RimFastEvent) -> Vec<u8> {
    let opt_s = |s: &Option<String>| match s {
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    let opt_d = |d: Option<f64>| match d {
        Some(d) => Value::Union(1, Box::new(Value::Double(d))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    let value = Value::Record(vec![
        ("rim_node_id".into(), Value::String(ev.rim_node_id.clone())),
        ("event_id".into(), opt_s(&ev.event_id)),
        ("timestamp".into(), Value::Long(ev.timestamp)),
        (
            "critical_metrics".into(),
            Value::Map(
                ev.critical_metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::Double(*v)))
                    .collect(),
            ),
        ),
        ("price".into(), opt_d(ev.price)),
        ("volume".into(), opt_d(ev.volume)),
        ("stress".into(), opt_d(ev.stress)),
        ("status".into(), Value::String(ev.status.clone())),
        ("source_topic".into(), opt_s(&ev.source_topic)),
    ]);
    let mut body = Vec::new();
    // The value is built to the schema above: encoding cannot fail.
    let _ = avro::encode(&value, &reader_schema(), &mut body);
    frame(id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RimFastEvent {
        RimFastEvent {
            rim_node_id: "rim:sensor:plant:n1".into(),
            event_id: Some("e-1".into()),
            timestamp: 1_760_000_000_000,
            critical_metrics: vec![("temp".into(), 21.5), ("load".into(), 0.25)],
            price: Some(10.0),
            volume: None,
            stress: Some(0.5),
            status: "OK".into(),
            source_topic: None,
            publish_ns: 0,
        }
    }

    #[test]
    fn the_platform_schema_parses() {
        Schema::parse(RIM_FAST_EVENT_AVSC).expect("platform schema");
        assert_ne!(reader_schema(), Schema::Null);
    }

    #[test]
    fn events_round_trip_through_the_frame() {
        let msg = encode_event(42, &sample());
        let (id, body) = split(&msg).expect("frame");
        assert_eq!(id, 42);
        let r = reader_schema();
        assert_eq!(decode_event(body, &r, &r).expect("decode"), sample());
    }

    #[test]
    fn frames_that_are_short_or_not_confluent_are_refused() {
        assert_eq!(split(&[]), Err(WireError::Truncated(0)));
        assert_eq!(split(&[0, 0, 0, 1]), Err(WireError::Truncated(4)));
        assert_eq!(split(b"{\"json\": true}"), Err(WireError::BadMagic(b'{')));
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((7, &[][..])));
    }

    #[test]
    fn every_truncation_of_a_good_message_is_an_error_not_a_panic() {
        let msg = encode_event(1, &sample());
        let r = reader_schema();
        for cut in HEADER_BYTES..msg.len() {
            let body = &msg[HEADER_BYTES..cut];
            assert!(decode_event(body, &r, &r).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn bad_utf8_in_the_node_id_is_a_typed_error() {
        let mut msg = encode_event(1, &sample());
        // Body starts with the node id's length (1 byte), then its bytes.
        msg[HEADER_BYTES + 1] = 0xff;
        let r = reader_schema();
        assert!(matches!(
            decode_event(&msg[HEADER_BYTES..], &r, &r),
            Err(WireError::Avro(avro::DecodeError::BadUtf8(0)))
        ));
    }

    #[test]
    fn bad_union_index_in_event_id_is_a_typed_error() {
        let msg = encode_event(1, &sample());
        let node_len = sample().rim_node_id.len();
        let mut bad = msg.clone();
        // After the node id comes event_id's union index (2 = branch 1); make it 3 (= -2).
        bad[HEADER_BYTES + 1 + node_len] = 3;
        let r = reader_schema();
        assert!(matches!(
            decode_event(&bad[HEADER_BYTES..], &r, &r),
            Err(WireError::Avro(avro::DecodeError::BadUnionIndex { index: -2, .. }))
        ));
    }
}
