//! The bytes every row moves. All transports send exactly [`sample_payload`], with an
//! 8-byte stamp (a send time or a sequence number) written at [`STAMP_OFFSET`], so the rows
//! of a suite compare like with like.
//!
//! For now the payload is 176 opaque bytes. The lead will replace it with an encoded
//! `RimFastEvent` of 4 metrics; when that happens, point [`STAMP_OFFSET`] at the event's
//! `publish_ns` field (a little-endian u64) so stamping keeps the record valid.

/// Length of one message, in bytes.
pub const PAYLOAD_LEN: usize = 176;

/// Where the 8-byte little-endian stamp sits in the payload.
pub const STAMP_OFFSET: usize = 0;

/// Bytes a sink's report needs (four u64 words); the payload must hold them.
pub const REPORT_LEN: usize = 32;

const _: () = assert!(STAMP_OFFSET + 8 <= PAYLOAD_LEN, "the stamp must fit in the payload");
const _: () = assert!(REPORT_LEN <= PAYLOAD_LEN, "a sink report must fit in one message");

/// The message body every row sends (before stamping).
pub fn sample_payload() -> Vec<u8> {
    // A recognisable, non-zero pattern: compressing or zero-page tricks cannot flatter a row.
    (0..PAYLOAD_LEN)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect()
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
    fn the_payload_has_the_advertised_length() {
        assert_eq!(sample_payload().len(), PAYLOAD_LEN);
    }

    #[test]
    fn a_stamp_reads_back() {
        let mut msg = sample_message();
        write_stamp(&mut msg, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&msg), Some(0x0102_0304_0506_0708));
        assert_eq!(read_stamp(&msg[..4]), None);
    }
}
