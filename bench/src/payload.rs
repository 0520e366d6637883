//! The bytes every row moves. All transports send exactly [`sample_payload`], with an
//! 8-byte stamp (a send time or a sequence number) written at [`STAMP_OFFSET`], so the rows
//! of a suite compare like with like.
//!
//! The payload is the archived form of a RimFastEvent with 4 metrics, exactly as rim-ring
//! puts it in a ring (its strings as symbols). The baseline rows move these bytes opaquely;
//! the `rimd-shm` row publishes and validates a real event of the same shape.

/// Length of one message, in bytes: the archived 4-metric event.
pub const PAYLOAD_LEN: usize = 144;

/// Where the 8-byte little-endian stamp sits in the payload.
pub const STAMP_OFFSET: usize = 0;

/// Bytes a sink's report needs (four u64 words); the payload must hold them.
pub const REPORT_LEN: usize = 32;

const _: () = assert!(STAMP_OFFSET + 8 <= PAYLOAD_LEN, "the stamp must fit in the payload");
const _: () = assert!(REPORT_LEN <= PAYLOAD_LEN, "a sink report must fit in one message");

/// The message body every row sends (before stamping): an archived RimFastEvent.
pub fn sample_payload() -> Vec<u8> {
    use rim_ring::wire::Encoder;
    use rim_ring::{SymEvent, SymbolKind};
    let mut enc = Encoder::new();
    let mut discard = |_: &[u8]| Ok::<(), ()>(());
    let mut sym = |enc: &mut Encoder, kind, text| enc.intern(kind, text, &mut discard).ok().unwrap_or_default();
    let node = sym(&mut enc, SymbolKind::NodeId, "rim:equity:nyse:AAPL.O");
    let status = sym(&mut enc, SymbolKind::Status, "OK");
    let names = ["bid", "ask", "spread", "depth"];
    let values = [101.25, 101.5, 0.25, 1200.0];
    let metrics: Vec<_> = names
        .iter()
        .zip(values)
        .map(|(n, v)| (sym(&mut enc, SymbolKind::MetricName, n), v))
        .collect();
    let ev = SymEvent {
        node,
        event_id: None,
        timestamp: 1_764_000_000_000,
        metrics: &metrics,
        price: Some(101.25),
        volume: Some(300.0),
        stress: Some(0.1),
        status,
        source_topic: None,
        publish_ns: 1,
    };
    let mut bytes = enc.encode_event(&ev).map(<[u8]>::to_vec).unwrap_or_default();
    // Keep the advertised length whatever the encoder did (a test checks they agree).
    bytes.resize(PAYLOAD_LEN, 0);
    bytes
}

/// [`sample_payload`] as a fixed-size array, the form the measurement loops work on.
pub fn sample_message() -> [u8; PAYLOAD_LEN] {
    let mut msg = [0u8; PAYLOAD_LEN];
    msg.copy_from_slice(&sample_payload());
    msg
}

/// Writes `value` as the message's stamp.
#[inline]
pub fn write_stamp(msg: &mut [u8], value: u64) {
    msg[STAMP_OFFSET..STAMP_OFFSET + 8].copy_from_slice(&value.to_le_bytes());
}

/// Reads the message's stamp; `None` when the message is too short to hold one.
#[inline]
pub fn read_stamp(msg: &[u8]) -> Option<u64> {
    let bytes = msg.get(STAMP_OFFSET..STAMP_OFFSET + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Some(u64::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_an_archived_event_of_the_advertised_length() {
        use rim_ring::wire::Encoder;
        use rim_ring::{SymEvent, SymbolKind};
        let mut enc = Encoder::new();
        let mut discard = |_: &[u8]| Ok::<(), ()>(());
        let node = enc.intern(SymbolKind::NodeId, "rim:a:b:c", &mut discard).expect("node");
        let status = enc.intern(SymbolKind::Status, "OK", &mut discard).expect("status");
        let mut metrics = Vec::new();
        for name in ["w", "x", "y", "z"] {
            metrics.push((
                enc.intern(SymbolKind::MetricName, name, &mut discard).expect("metric"),
                1.0,
            ));
        }
        let ev = SymEvent {
            node,
            event_id: None,
            timestamp: 1,
            metrics: &metrics,
            price: Some(1.0),
            volume: Some(1.0),
            stress: Some(1.0),
            status,
            source_topic: None,
            publish_ns: 1,
        };
        assert_eq!(enc.encode_event(&ev).expect("encode").len(), PAYLOAD_LEN);
        assert_eq!(sample_payload().len(), PAYLOAD_LEN);
        assert!(sample_payload().iter().any(|&b| b != 0));
    }

    #[test]
    fn a_stamp_reads_back() {
        let mut msg = sample_message();
        write_stamp(&mut msg, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&msg), Some(0x0102_0304_0506_0708));
        assert_eq!(read_stamp(&msg[..4]), None);
    }
}
