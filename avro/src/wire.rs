//! The Confluent wire format (`0x00`, 4-byte big-endian schema id, Avro body) and the
//! platform's reader schema.

use thiserror::Error;

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

/// The reader schema's (unqualified) record name: a writer record must have it.
pub const READER_NAME: &str = "RimFastEvent";

/// The Confluent magic byte.
pub const MAGIC: u8 = 0;
/// Bytes before the Avro body.
pub const HEADER_BYTES: usize = 5;

/// Why a message is not a Confluent frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the 5-byte header (an empty value included).
    #[error("message of {0} bytes is shorter than the 5-byte Confluent header")]
    Truncated(usize),
    /// The first byte is not 0.
    #[error("magic byte is {0}, expected 0 (Confluent wire format)")]
    BadMagic(u8),
}

/// The schema id and the body of a framed message.
pub fn split(message: &[u8]) -> Result<(u32, &[u8]), WireError> {
    let Some((header, body)) = message.split_first_chunk::<HEADER_BYTES>() else {
        return Err(WireError::Truncated(message.len()));
    };
    if header[0] != MAGIC {
        return Err(WireError::BadMagic(header[0]));
    }
    let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Ok((id, body))
}

/// Writes the frame header of schema id `id` into `out` (cleared first); the body follows.
pub fn frame_header(id: u32, out: &mut Vec<u8>) {
    out.clear();
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Frames `body` with schema id `id`.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    frame_header(id, &mut out);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_are_short_or_not_confluent_are_refused() {
        assert_eq!(split(&[]), Err(WireError::Truncated(0)));
        assert_eq!(split(&[0, 0, 0, 1]), Err(WireError::Truncated(4)));
        assert_eq!(split(b"{\"json\": true}"), Err(WireError::BadMagic(b'{')));
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((7, &[][..])));
        assert_eq!(split(&frame(0x0102_0304, b"xy")), Ok((0x0102_0304, &b"xy"[..])));
    }
}
