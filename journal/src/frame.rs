//! Record framing: `[u32 len LE][u32 crc32c LE][payload][zero padding to 8 bytes]`.
//!
//! The CRC covers the four length bytes and the payload, so a torn length word is caught
//! as surely as a torn payload. A zero length word means "end of data": segments are
//! preallocated zeroed and cut tails are zeroed, so the first unwritten frame reads as zero.
//! Any failed check (length 0 or over [`RECORD_BYTES_MAX`], frame past the buffer, CRC
//! mismatch) ends the valid data there; [`read`] never panics on any input.

use thiserror::Error;

/// Bytes of the frame header (length and CRC).
pub const FRAME_HEADER_BYTES: usize = 8;
/// Frames start and end on this alignment.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// Largest payload of one record, in bytes (64 KiB).
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// Why the bytes at a position are not a whole valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer than [`FRAME_HEADER_BYTES`] remain.
    #[error("frame header needs {FRAME_HEADER_BYTES} bytes, {have} remain")]
    ShortHeader {
        /// Bytes remaining.
        have: usize,
    },
    /// The length word exceeds [`RECORD_BYTES_MAX`].
    #[error("record length {len} exceeds the maximum of {RECORD_BYTES_MAX}")]
    TooLong {
        /// The length word.
        len: usize,
    },
    /// The frame runs past the end of the buffer (segment).
    #[error("frame of {frame} bytes runs past the end ({have} bytes remain)")]
    PastEnd {
        /// Bytes the frame needs.
        frame: usize,
        /// Bytes remaining.
        have: usize,
    },
    /// The CRC does not match.
    #[error("crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// The CRC in the frame.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
}

/// Bytes a frame of `payload_len` payload bytes takes, padding included.
#[inline]
pub const fn encoded_len(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len + FRAME_ALIGN_BYTES - 1) & !(FRAME_ALIGN_BYTES - 1)
}

/// CRC of a frame: over the little-endian length word, then the payload.
#[inline]
pub fn checksum(payload: &[u8]) -> u32 {
    checksum_parts(payload.len(), &[payload])
}

/// [`checksum`] of the concatenation of `parts`, `len` bytes in all.
#[inline]
fn checksum_parts(len: usize, parts: &[&[u8]]) -> u32 {
    let len_le = (len as u32).to_le_bytes();
    parts.iter().fold(crc_append(0, &len_le), |c, p| crc_append(c, p))
}

/// CRC-32C of `data` continuing from `crc` (as `crc32c::crc32c_append`): with the CPU's
/// CRC32 instruction where it has one, eight bytes at a time from any alignment.
///
/// Why not the `crc32c` crate's own: it steps byte by byte to an 8-byte boundary first and
/// over the last bytes after it, each step the instruction's full latency, which for the
/// journal's records (150–250 bytes, anywhere in the ring) was up to a third of their
/// checksum, and the checksums 13–15% of the journal thread. x86 loads unaligned words at
/// no cost. The crate stays for other CPUs (and for the tests' reference).
///
/// From [`INTERLEAVED_FROM`] bytes up the crate's loop is the faster one: it runs three
/// streams at once, where this is one chain of dependent instructions.
#[inline]
pub(crate) fn crc_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() < INTERLEAVED_FROM && std::arch::is_x86_feature_detected!("sse4.2") {
        return sse42::crc_append(crc, data);
    }
    crc32c::crc32c_append(crc, data)
}

/// Bytes from which `crc32c` interleaves three streams (three of its 256-byte blocks).
const INTERLEAVED_FROM: usize = 768;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};

    /// [`super::crc_append`] on a CPU with SSE4.2: the caller checked that it has it.
    #[inline]
    pub(super) fn crc_append(crc: u32, data: &[u8]) -> u32 {
        // SAFETY: `super::crc_append` calls this only after `is_x86_feature_detected!`
        // found SSE4.2, the one feature `words` is compiled for.
        unsafe { words(crc, data) }
    }

    #[target_feature(enable = "sse4.2")]
    fn words(crc: u32, data: &[u8]) -> u32 {
        let mut c = u64::from(!crc);
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            c = _mm_crc32_u64(c, u64::from_le_bytes(b));
        }
        // The instruction on 8 bytes leaves the high half zero: the CRC is the low half.
        let mut c = c as u32;
        let mut rest = words.remainder();
        if let Some((w, r)) = rest.split_first_chunk::<4>() {
            c = _mm_crc32_u32(c, u32::from_le_bytes(*w));
            rest = r;
        }
        if let Some((w, r)) = rest.split_first_chunk::<2>() {
            c = _mm_crc32_u16(c, u16::from_le_bytes(*w));
            rest = r;
        }
        if let Some(&b) = rest.first() {
            c = _mm_crc32_u8(c, b);
        }
        !c
    }
}

/// The 8 header bytes of a frame for `payload`.
#[inline]
pub fn header(payload: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[4..].copy_from_slice(&checksum(payload).to_le_bytes());
    h
}

/// Writes the frame of `payload` (header, payload, zero padding) at the start of `buf`
/// and returns its length, [`encoded_len`]`(payload.len())`.
///
/// # Panics
/// If `buf` is shorter than the frame or the payload is empty or longer than
/// [`RECORD_BYTES_MAX`]: both are the caller's bugs, checked by the journal before it gets here.
pub fn write(buf: &mut [u8], payload: &[u8]) -> usize {
    assert!(
        !payload.is_empty() && payload.len() <= RECORD_BYTES_MAX,
        "payload of {} bytes is outside 1..={RECORD_BYTES_MAX}",
        payload.len()
    );
    let n = encoded_len(payload.len());
    let frame = &mut buf[..n];
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&header(payload));
    let body_end = FRAME_HEADER_BYTES + payload.len();
    frame[FRAME_HEADER_BYTES..body_end].copy_from_slice(payload);
    frame[body_end..].fill(0);
    n
}

/// Appends the frame of `payload` (header, payload, zero padding) to `out`, in one pass
/// over the payload besides its checksum; returns the frame's length.
///
/// # Panics
/// If the payload is empty or longer than [`RECORD_BYTES_MAX`] (the caller's bug, checked
/// by the journal before it gets here).
pub fn append(out: &mut Vec<u8>, payload: &[u8]) -> usize {
    append_parts(out, &[payload])
}

/// [`append`] of the concatenation of `parts`, without concatenating them first.
///
/// # Panics
/// As [`append`], for the total length.
pub fn append_parts(out: &mut Vec<u8>, parts: &[&[u8]]) -> usize {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    assert!(
        len > 0 && len <= RECORD_BYTES_MAX,
        "payload of {len} bytes is outside 1..={RECORD_BYTES_MAX}"
    );
    let n = encoded_len(len);
    let crc = checksum_parts(len, parts);
    out.reserve(n);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    // At most 7 bytes: pushed one by one (a `resize` was a memset call per frame).
    for _ in 0..n - FRAME_HEADER_BYTES - len {
        out.push(0);
    }
    n
}

/// Reads the length word at the start of `buf`: `Ok(None)` for the zero end marker,
/// `Ok(Some(len))` for a plausible length (1..=[`RECORD_BYTES_MAX`]).
#[inline]
pub fn read_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(word) = buf.get(..4) else {
        return Err(FrameError::ShortHeader { have: buf.len() });
    };
    let mut le = [0u8; 4];
    le.copy_from_slice(word);
    let len = u32::from_le_bytes(le) as usize;
    match len {
        0 => Ok(None),
        l if l > RECORD_BYTES_MAX => Err(FrameError::TooLong { len: l }),
        l => Ok(Some(l)),
    }
}

/// Reads the frame at the start of `buf`: `Ok(None)` at the end marker, otherwise the
/// payload and the frame's length in bytes (padding included). The padding itself is not
/// checked: it is outside the CRC and carries nothing.
pub fn read(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        // A zero word in a short tail is still the end marker.
        return match read_len(buf) {
            Ok(None) => Ok(None),
            _ => Err(FrameError::ShortHeader { have: buf.len() }),
        };
    }
    let Some(len) = read_len(buf)? else {
        return Ok(None);
    };
    let frame = encoded_len(len);
    if frame > buf.len() {
        return Err(FrameError::PastEnd { frame, have: buf.len() });
    }
    let payload = &buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&buf[4..8]);
    let stored = u32::from_le_bytes(crc);
    let computed = checksum(payload);
    if stored != computed {
        return Err(FrameError::Crc { stored, computed });
    }
    Ok(Some((payload, frame)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32c_at_every_length_and_alignment() {
        // Bytes of no pattern a word-wise bug could hide in (multiplicative hashing).
        let data: Vec<u8> = (0..1100u32)
            .map(|i| (i.wrapping_mul(0x9E37_79B9) >> 19) as u8)
            .collect();
        for start in 0..8 {
            for len in (0..300).chain([767, 768, 769, 1000]) {
                let bytes = &data[start..start + len];
                for seed in [0u32, 0xFFFF_FFFF, 0x1234_5678] {
                    assert_eq!(
                        crc_append(seed, bytes),
                        crc32c::crc32c_append(seed, bytes),
                        "from {start}, {len} bytes, seed {seed:#x}"
                    );
                }
                // Continued over a split, as a frame's parts are.
                let (a, b) = bytes.split_at(len / 3);
                assert_eq!(crc_append(crc_append(0, a), b), crc32c::crc32c(bytes));
            }
        }
        // The standard check value of CRC-32C.
        assert_eq!(crc_append(0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn round_trip_and_padding() {
        for len in [1usize, 7, 8, 9, 100, RECORD_BYTES_MAX] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut buf = vec![0xAAu8; encoded_len(len) + 8];
            let n = write(&mut buf, &payload);
            assert_eq!(n % FRAME_ALIGN_BYTES, 0);
            assert_eq!(n, encoded_len(len));
            let (p, m) = read(&buf).expect("valid").expect("record");
            assert_eq!((p, m), (&payload[..], n));
        }
    }

    #[test]
    fn parts_frame_like_their_concatenation() {
        let (a, b, c) = (&b"\x01"[..], &b"decision record"[..], &b""[..]);
        let mut joined = Vec::new();
        append(&mut joined, b"\x01decision record");
        let mut parts = Vec::new();
        assert_eq!(append_parts(&mut parts, &[a, b, c]), joined.len());
        assert_eq!(parts, joined);
        let mut buf = vec![0u8; joined.len()];
        write(&mut buf, b"\x01decision record");
        assert_eq!(buf, joined);
    }

    #[test]
    fn zero_word_is_end_and_short_input_does_not_panic() {
        assert_eq!(read(&[0u8; 16]), Ok(None));
        assert_eq!(read(&[]), Err(FrameError::ShortHeader { have: 0 }));
        assert_eq!(read(&[0, 0, 0, 0]), Ok(None));
        assert!(read(&[1, 0, 0, 0, 9]).is_err());
        assert!(matches!(
            read(&[255, 255, 255, 255, 0, 0, 0, 0]),
            Err(FrameError::TooLong { .. })
        ));
        assert!(matches!(
            read(&[9, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(FrameError::PastEnd { .. })
        ));
    }
}
