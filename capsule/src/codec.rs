//! Storage encoding of capsules and accuracy aggregates.
//!
//! Capsules are stored as rkyv 0.8 archives of [`Capsule`]. Bytes read back are not trusted:
//! they are copied into an aligned buffer (redb hands out values at arbitrary offsets inside
//! a page, and rkyv validates alignment), checked with bytecheck (`from_bytes`, never the
//! unchecked access), and the decoded capsule is then checked against the model's invariants
//! ([`Capsule::validate`]) — the same check that ran before it was written. Any failure is a
//! [`StoreError::Corrupt`], never a panic.
//!
//! rkyv validation catches broken structure but not a flipped bit inside a number, so each
//! stored value ends with an 8-byte checksum of the archive ([`checksum64`], word-wise
//! FNV-style mixing: detects damage, not an attacker). Value layout:
//! `[rkyv archive][checksum u64 LE]`.
//!
//! Accuracy aggregates are a fixed 40-byte little-endian record (five 8-byte fields); rkyv
//! would add nothing there.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::accuracy::AccuracyAgg;
use crate::error::StoreError;
use crate::model::Capsule;

/// Encodes into `buf` (cleared first), reusing its allocation.
pub fn encode_capsule_into(c: &Capsule, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    buf.clear();
    let out = std::mem::take(buf);
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(c, out) {
        Ok(out) => {
            *buf = out;
            let sum = checksum64(buf);
            buf.extend_from_slice(&sum.to_le_bytes());
            Ok(())
        }
        Err(e) => Err(StoreError::Encode(e.to_string())),
    }
}

pub fn encode_capsule(c: &Capsule) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    encode_capsule_into(c, &mut buf)?;
    Ok(buf)
}

/// Decodes and validates bytes read from the `capsules` table.
pub fn decode_capsule(stored: &[u8]) -> Result<Capsule, StoreError> {
    let bytes = verify_checksum(stored)?;
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let capsule = rkyv::from_bytes::<Capsule, rancor::Error>(&aligned).map_err(|e| StoreError::Corrupt {
        table: "capsules",
        reason: format!("{} bytes failed validation: {e}", bytes.len()),
    })?;
    capsule.validate().map_err(|e| StoreError::Corrupt {
        table: "capsules",
        reason: format!("decoded capsule breaks the model: {e}"),
    })?;
    Ok(capsule)
}

fn verify_checksum(stored: &[u8]) -> Result<&[u8], StoreError> {
    let Some(split) = stored.len().checked_sub(8) else {
        return Err(StoreError::Corrupt {
            table: "capsules",
            reason: format!("{} bytes, shorter than the checksum", stored.len()),
        });
    };
    let (archive, trailer) = stored.split_at(split);
    let mut sum = [0u8; 8];
    sum.copy_from_slice(trailer);
    let expected = u64::from_le_bytes(sum);
    let actual = checksum64(archive);
    if expected != actual {
        return Err(StoreError::Corrupt {
            table: "capsules",
            reason: format!(
                "checksum {actual:016x} of {} bytes, stored {expected:016x}",
                archive.len()
            ),
        });
    }
    Ok(archive)
}

/// 64-bit checksum: FNV-1a's prime over 8-byte words with an xor-shift after each step so high
/// bits feed back down; the length is mixed in so trailing zeros count.
pub fn checksum64(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    h
}

pub const ACCURACY_BYTES: usize = 40;

pub fn encode_accuracy(a: &AccuracyAgg) -> [u8; ACCURACY_BYTES] {
    let mut out = [0u8; ACCURACY_BYTES];
    out[0..8].copy_from_slice(&a.count.to_le_bytes());
    out[8..16].copy_from_slice(&a.abs_err_sum.to_le_bytes());
    out[16..24].copy_from_slice(&a.rel_err_sum.to_le_bytes());
    out[24..32].copy_from_slice(&a.hits.to_le_bytes());
    out[32..40].copy_from_slice(&a.directional.to_le_bytes());
    out
}

pub fn decode_accuracy(bytes: &[u8]) -> Result<AccuracyAgg, StoreError> {
    let arr: &[u8; ACCURACY_BYTES] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        table: "accuracy",
        reason: format!("{} bytes, expected {ACCURACY_BYTES}", bytes.len()),
    })?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&arr[i * 8..i * 8 + 8]);
        w
    };
    let agg = AccuracyAgg {
        count: u64::from_le_bytes(word(0)),
        abs_err_sum: f64::from_le_bytes(word(1)),
        rel_err_sum: f64::from_le_bytes(word(2)),
        hits: u64::from_le_bytes(word(3)),
        directional: u64::from_le_bytes(word(4)),
    };
    // Pair check with the writer: hits ≤ directional ≤ count always holds for a sum of scores.
    if agg.hits > agg.directional || agg.directional > agg.count {
        return Err(StoreError::Corrupt {
            table: "accuracy",
            reason: format!(
                "hits {} directional {} count {} out of order",
                agg.hits, agg.directional, agg.count
            ),
        });
    }
    Ok(agg)
}

/// Encodes a node's accuracy row: `u32 count`, then per series `u16 len + predictor`,
/// `u16 len + series name`, and the 40-byte aggregate.
pub fn encode_accuracy_row(predictor: &str, rows: &[(String, AccuracyAgg)], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for (series, agg) in rows {
        for s in [predictor, series.as_str()] {
            let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        }
        out.extend_from_slice(&encode_accuracy(agg));
    }
}

/// Decodes [`encode_accuracy_row`]'s bytes: (predictor, series, aggregate) per entry.
pub fn decode_accuracy_row(bytes: &[u8]) -> Result<Vec<(String, String, AccuracyAgg)>, StoreError> {
    let bad = |at: usize, what: &str| StoreError::Corrupt {
        table: "accuracy",
        reason: format!("row of {} bytes: {what} at byte {at}", bytes.len()),
    };
    let take = |at: &mut usize, n: usize| -> Result<&[u8], StoreError> {
        let s = bytes
            .get(*at..at.saturating_add(n))
            .ok_or_else(|| bad(*at, "truncated"))?;
        *at += n;
        Ok(s)
    };
    let mut at = 0usize;
    let mut w4 = [0u8; 4];
    w4.copy_from_slice(take(&mut at, 4)?);
    let count = u32::from_le_bytes(w4) as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut texts = [String::new(), String::new()];
        for t in &mut texts {
            let mut w2 = [0u8; 2];
            w2.copy_from_slice(take(&mut at, 2)?);
            let n = u16::from_le_bytes(w2) as usize;
            let raw = take(&mut at, n)?;
            *t = std::str::from_utf8(raw)
                .map_err(|_| bad(at - n, "a name is not UTF-8"))?
                .to_owned();
        }
        let agg = decode_accuracy(take(&mut at, ACCURACY_BYTES)?)?;
        let [predictor, series] = texts;
        out.push((predictor, series, agg));
    }
    if at != bytes.len() {
        return Err(bad(at, "trailing bytes"));
    }
    Ok(out)
}
