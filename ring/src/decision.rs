//! The decision record as a subscriber reads it: a bounds-checked, allocation-free view of
//! the bytes the daemon publishes on its decision rings, and the check of their hash chain.
//!
//! The daemon writes the record (the `rim-decision` crate, `decision/`, is the writer
//! and defines the layout); this crate depends on no other of the workspace, so the reading
//! side lives here, for the C ABI ([`crate::ffi`]) and everything built on it. A test in
//! the daemon crate decodes the daemon's own encoder's output with this module, and
//! `tests/c_subscriber.rs` reads records a running daemon produced, so the two cannot
//! drift apart unnoticed.
//!
//! Layout (little-endian; offsets in bytes):
//! ```text
//!   0  magic "RDEC" (u32)      4  version u16        6  severity u8     7  flags u8 (bit 0: staleness sweep,
//!                                                                                   bit 1: chain resumed after a restart)
//!   8  chain seq u64          16  epoch u64 (unix ns the chain began)
//!  24  shard u32              28  rule version u32
//!  32  rule-set generation u64                        40 event seq u64
//!  48  event time i64 (epoch ms)                      56 node index u32   60 evidence count u16   62 reserved u16
//!  64  publish ns u64         72  decided ns u64      80 latency ns u64
//!  88  previous hash [32]
//! 120  rule id: u16 length + bytes;  node id: u16 length + bytes
//!      evidence × count: u16 label length + label bytes + value f64 (NaN = unknown)
//!  end hash [32] = SHA-256 of every byte before it
//! ```
//!
//! After a crash the daemon resumes each chain from its last *durable* decision: the next
//! record links to that one's hash, is flagged [`FLAG_RESUMED`], and its sequence number
//! may jump by up to [`IN_FLIGHT_MAX`] (decisions subscribers may have seen and the daemon
//! lost). [`ChainCheck`] accepts that one jump on a flagged record, as the daemon's own
//! verifier does.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// `"RDEC"`, little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RDEC");
/// The record version this build reads.
pub const VERSION: u16 = 1;
/// Bytes before the first string.
pub const FIXED_BYTES: usize = 120;
/// Bytes of a rule id at most.
pub const RULE_ID_BYTES_MAX: usize = 64;
/// Bytes of a node id at most.
pub const NODE_ID_BYTES_MAX: usize = 256;
/// Bytes of an evidence label at most.
pub const LABEL_BYTES_MAX: usize = 80;
/// Evidence entries at most.
pub const EVIDENCE_MAX: usize = 16;
/// Bytes of the SHA-256 hashes.
pub const HASH_BYTES: usize = 32;
/// Bytes of the largest record.
pub const RECORD_BYTES_MAX: usize =
    FIXED_BYTES + 2 + RULE_ID_BYTES_MAX + 2 + NODE_ID_BYTES_MAX + EVIDENCE_MAX * (2 + LABEL_BYTES_MAX + 8) + HASH_BYTES;
/// `flags` bit: fired by the staleness sweep, not by an event.
pub const FLAG_SWEEP: u8 = 1;
/// `flags` bit: the first decision after the chain resumed at a restart; its sequence may
/// jump past the previous one by up to [`IN_FLIGHT_MAX`].
pub const FLAG_RESUMED: u8 = 2;
/// Most decisions of a shard published but not yet durable: the sequence numbers a
/// restart may skip.
pub const IN_FLIGHT_MAX: u64 = 1 << 16;

/// Why bytes are not a decision record.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than its fields say.
    #[error("decision record of {len} bytes is truncated")]
    Truncated {
        /// The record's length.
        len: usize,
    },
    /// Not a decision record.
    #[error("not a decision record (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("decision record version {0} is not supported")]
    BadVersion(u16),
    /// A string is not UTF-8 or longer than its limit, or too many evidence entries.
    #[error("decision record field {0} is malformed")]
    BadField(&'static str),
    /// Bytes after the hash.
    #[error("decision record has {0} bytes after its hash")]
    Trailing(usize),
}

/// Where a chain of decisions failed its check.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// The stored hash is not the SHA-256 of the record's bytes.
    #[error("chain seq {seq}: hash does not match the record's contents")]
    Hash {
        /// The record's chain sequence.
        seq: u64,
    },
    /// The previous-hash field is not the hash of the record read before it.
    #[error("chain seq {seq}: previous-hash link broken")]
    Link {
        /// The record's chain sequence.
        seq: u64,
    },
    /// A chain sequence number is missing or repeated.
    #[error("chain seq {got}, expected {want}")]
    Sequence {
        /// Found.
        got: u64,
        /// Expected.
        want: u64,
    },
}

/// A decision record, read in place. Every field was bounds-checked by [`DecisionView::parse`].
#[derive(Debug, Clone, Copy)]
pub struct DecisionView<'a> {
    bytes: &'a [u8],
    /// Severity code: 0 info, 1 low, 2 medium, 3 high, 4 critical ([`severity_name`]).
    pub severity: u8,
    /// [`FLAG_SWEEP`] and future bits.
    pub flags: u8,
    /// Position in its chain (1, 2, … per shard and epoch).
    pub chain_seq: u64,
    /// When the chain began, unix ns.
    pub epoch_ns: u64,
    /// Reflex shard (one chain per shard).
    pub shard: u32,
    /// The rule's version.
    pub rule_version: u32,
    /// Rule-set generation.
    pub rule_generation: u64,
    /// Ingest's sequence number of the triggering event.
    pub event_seq: u64,
    /// Its event time, epoch ms.
    pub event_timestamp_ms: i64,
    /// Dense node index (for this run of the daemon).
    pub node_index: u32,
    /// Producer's publish time, CLOCK_MONOTONIC ns (0 when unknown).
    pub publish_ns: u64,
    /// Decision time, CLOCK_MONOTONIC ns.
    pub decided_ns: u64,
    /// Publish (or ingest) → decision, ns.
    pub latency_ns: u64,
    /// SHA-256 of the previous decision of the chain (zero for the first).
    pub prev_hash: [u8; HASH_BYTES],
    /// SHA-256 of this record's bytes before the hash, as stored.
    pub hash: [u8; HASH_BYTES],
    /// The rule's id.
    pub rule_id: &'a str,
    /// The node's RimNodeId.
    pub node_id: &'a str,
    evidence_count: usize,
    evidence_at: usize,
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(DecodeError::Truncated { len: self.buf.len() })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(DecodeError::BadField(field));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::BadField(field))
    }
}

impl<'a> DecisionView<'a> {
    /// Reads a record, bounds-checking every field (the bytes may come from anywhere).
    /// The stored hash is not checked here: [`DecisionView::hash_matches`] and
    /// [`ChainCheck`] do that.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor { buf: bytes, at: 0 };
        if c.u32()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = c.u16()?;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let severity = c.u8()?;
        let flags = c.u8()?;
        let chain_seq = c.u64()?;
        let epoch_ns = c.u64()?;
        let shard = c.u32()?;
        let rule_version = c.u32()?;
        let rule_generation = c.u64()?;
        let event_seq = c.u64()?;
        let event_timestamp_ms = i64::from_le_bytes(c.array()?);
        let node_index = c.u32()?;
        let evidence_count = usize::from(c.u16()?);
        c.u16()?;
        let publish_ns = c.u64()?;
        let decided_ns = c.u64()?;
        let latency_ns = c.u64()?;
        let prev_hash = c.array()?;
        let rule_id = c.text("rule_id", RULE_ID_BYTES_MAX)?;
        let node_id = c.text("rim_node_id", NODE_ID_BYTES_MAX)?;
        if evidence_count > EVIDENCE_MAX {
            return Err(DecodeError::BadField("evidence count"));
        }
        let evidence_at = c.at;
        for _ in 0..evidence_count {
            c.text("evidence label", LABEL_BYTES_MAX)?;
            c.u64()?;
        }
        let hash = c.array()?;
        if c.at != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - c.at));
        }
        Ok(Self {
            bytes,
            severity,
            flags,
            chain_seq,
            epoch_ns,
            shard,
            rule_version,
            rule_generation,
            event_seq,
            event_timestamp_ms,
            node_index,
            publish_ns,
            decided_ns,
            latency_ns,
            prev_hash,
            hash,
            rule_id,
            node_id,
            evidence_count,
            evidence_at,
        })
    }

    /// The record's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Fired by the staleness sweep rather than by an event.
    pub fn is_sweep(&self) -> bool {
        self.flags & FLAG_SWEEP != 0
    }

    /// The first decision after its chain resumed at a daemon restart.
    pub fn is_resumed(&self) -> bool {
        self.flags & FLAG_RESUMED != 0
    }

    /// Entries of evidence.
    pub fn evidence_len(&self) -> usize {
        self.evidence_count
    }

    /// What the rule read: (label, value), the value NaN when it was unknown.
    pub fn evidence(&self) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        let mut c = Cursor {
            buf: self.bytes,
            at: self.evidence_at,
        };
        // Already validated by `parse`; a failure here cannot happen, and ends the walk.
        (0..self.evidence_count).map_while(move |_| {
            let label = c.text("evidence label", LABEL_BYTES_MAX).ok()?;
            let value = f64::from_bits(c.u64().ok()?);
            Some((label, value))
        })
    }

    /// SHA-256 of the bytes before the stored hash.
    pub fn computed_hash(&self) -> [u8; HASH_BYTES] {
        Sha256::digest(&self.bytes[..self.bytes.len() - HASH_BYTES]).into()
    }

    /// Whether the stored hash is the SHA-256 of the record's bytes.
    pub fn hash_matches(&self) -> bool {
        self.computed_hash() == self.hash
    }
}

/// The name of a severity code.
pub fn severity_name(code: u8) -> &'static str {
    match code {
        0 => "info",
        1 => "low",
        2 => "medium",
        3 => "high",
        4 => "critical",
        _ => "unknown",
    }
}

/// The name under which the daemon hands out shard `shard`'s decision ring at attach:
/// `decisions` for shard 0, `decisions:K` for the others.
pub fn ring_name(shard: u32) -> String {
    if shard == 0 {
        "decisions".to_owned()
    } else {
        format!("decisions:{shard}")
    }
}

/// Checks decisions of one chain as a subscriber reads them: each record's hash, its
/// sequence number and its link to the record before. The first record checked (and the
/// first after [`ChainCheck::restart`], e.g. after a lap) is trusted as the start of a
/// tail, unless it is a chain's first record, whose previous hash must be zero.
#[derive(Debug, Default, Clone)]
pub struct ChainCheck {
    prev: Option<([u8; HASH_BYTES], u64)>,
}

impl ChainCheck {
    /// A check expecting any first record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the previous record: the next one starts a tail (after a lap, a record that
    /// did not decode, or a new epoch).
    pub fn restart(&mut self) {
        self.prev = None;
    }

    /// Checks the next record. Whatever the outcome, the check goes on from this record,
    /// so one break is reported once.
    pub fn push(&mut self, d: &DecisionView<'_>) -> Result<(), ChainError> {
        let computed = d.computed_hash();
        let prev = self.prev.replace((computed, d.chain_seq));
        if computed != d.hash {
            return Err(ChainError::Hash { seq: d.chain_seq });
        }
        let jump_ok =
            |seq: u64| d.is_resumed() && d.chain_seq > seq && d.chain_seq - seq <= IN_FLIGHT_MAX.saturating_add(1);
        match prev {
            Some((_, seq)) if d.chain_seq != seq.wrapping_add(1) && !jump_ok(seq) => Err(ChainError::Sequence {
                got: d.chain_seq,
                want: seq.wrapping_add(1),
            }),
            Some((hash, _)) if d.prev_hash != hash => Err(ChainError::Link { seq: d.chain_seq }),
            None if d.chain_seq == 1 && d.prev_hash != [0; HASH_BYTES] => Err(ChainError::Link { seq: d.chain_seq }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record laid out by hand, byte by byte from the layout above (the daemon's encoder
    /// is checked against this module in the daemon crate).
    fn record(seq: u64, prev: [u8; 32], evidence: &[(&str, f64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&[3, 0]);
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&77u64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(&(100 + seq).to_le_bytes());
        b.extend_from_slice(&1_764_000_000_000i64.to_le_bytes());
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&(evidence.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        for v in [10u64, 20, 30] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&prev);
        for s in ["temp-high", "rim:sensor:lab:t1"] {
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        for (label, value) in evidence {
            b.extend_from_slice(&(label.len() as u16).to_le_bytes());
            b.extend_from_slice(label.as_bytes());
            b.extend_from_slice(&value.to_le_bytes());
        }
        let hash: [u8; 32] = Sha256::digest(&b).into();
        b.extend_from_slice(&hash);
        b
    }

    #[test]
    fn a_record_reads_back_field_by_field() {
        let bytes = record(1, [0; 32], &[("metric.temp", 96.5), ("zscore(price)", f64::NAN)]);
        let d = DecisionView::parse(&bytes).expect("valid record");
        assert_eq!((d.chain_seq, d.epoch_ns, d.shard, d.rule_version), (1, 77, 1, 2));
        assert_eq!(
            (d.rule_generation, d.event_seq, d.event_timestamp_ms),
            (5, 101, 1_764_000_000_000)
        );
        assert_eq!(
            (d.node_index, d.publish_ns, d.decided_ns, d.latency_ns),
            (9, 10, 20, 30)
        );
        assert_eq!(
            (d.rule_id, d.node_id, severity_name(d.severity)),
            ("temp-high", "rim:sensor:lab:t1", "high")
        );
        let ev: Vec<_> = d.evidence().collect();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0], ("metric.temp", 96.5));
        assert!(ev[1].0 == "zscore(price)" && ev[1].1.is_nan());
        assert!(d.hash_matches() && !d.is_sweep());
    }

    #[test]
    fn every_truncation_and_a_bad_length_are_refused() {
        let bytes = record(1, [0; 32], &[("metric.temp", 96.5)]);
        for len in 0..bytes.len() {
            assert!(
                DecisionView::parse(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(DecisionView::parse(&long).err(), Some(DecodeError::Trailing(1)));
        let mut bad = bytes;
        bad[FIXED_BYTES] = 0xff; // rule id length low byte: beyond the limit
        assert_eq!(DecisionView::parse(&bad).err(), Some(DecodeError::BadField("rule_id")));
    }

    #[test]
    fn a_resumed_chain_may_jump_once_by_the_in_flight_bound() {
        let first = record(1, [0; 32], &[]);
        let h1 = DecisionView::parse(&first).expect("first").hash;
        let resumed = |seq: u64, prev: [u8; 32]| {
            let mut r = record(seq, prev, &[]);
            r[7] |= FLAG_RESUMED;
            let n = r.len() - HASH_BYTES;
            let hash: [u8; 32] = Sha256::digest(&r[..n]).into();
            r[n..].copy_from_slice(&hash);
            r
        };
        let mut check = ChainCheck::new();
        check.push(&DecisionView::parse(&first).expect("valid")).expect("first");
        let jumped = resumed(2 + IN_FLIGHT_MAX, h1);
        let view = DecisionView::parse(&jumped).expect("valid");
        assert!(view.is_resumed());
        assert_eq!(check.push(&view), Ok(()));
        let mut check = ChainCheck::new();
        check.push(&DecisionView::parse(&first).expect("valid")).expect("first");
        let too_far = resumed(3 + IN_FLIGHT_MAX, h1);
        assert!(matches!(
            check.push(&DecisionView::parse(&too_far).expect("valid")),
            Err(ChainError::Sequence { .. })
        ));
    }

    #[test]
    fn the_chain_check_finds_a_flipped_byte_a_gap_and_a_broken_link() {
        let first = record(1, [0; 32], &[]);
        let h1 = DecisionView::parse(&first).expect("first").hash;
        let second = record(2, h1, &[("x", 1.0)]);
        let mut check = ChainCheck::new();
        for r in [&first, &second] {
            check.push(&DecisionView::parse(r).expect("valid")).expect("linked");
        }
        let gap = record(4, [1; 32], &[]);
        assert_eq!(
            check.push(&DecisionView::parse(&gap).expect("valid")),
            Err(ChainError::Sequence { got: 4, want: 3 })
        );
        let unlinked = record(5, [2; 32], &[]);
        assert_eq!(
            check.push(&DecisionView::parse(&unlinked).expect("valid")),
            Err(ChainError::Link { seq: 5 })
        );
        let mut flipped = record(6, [0; 32], &[]);
        flipped[40] ^= 1;
        assert_eq!(
            check.push(&DecisionView::parse(&flipped).expect("valid")),
            Err(ChainError::Hash { seq: 6 })
        );
        check.restart();
        let tail = record(9, [3; 32], &[]);
        assert_eq!(check.push(&DecisionView::parse(&tail).expect("valid")), Ok(()));
    }
}
