//! Decisions: what a rule fired, as a self-describing binary record on the broadcast ring,
//! and the SHA-256 hash chain that links each shard's decisions.
//!
//! Record layout (little-endian; offsets in bytes):
//! ```text
//!   0  magic "RDEC" (u32)      4  version u16        6  severity u8     7  flags u8 (bit 0: staleness sweep,
//!                                                                                   bit 1: chain resumed after a restart)
//!   8  chain seq u64 (1, 2, … per shard and epoch)   16 epoch u64 (unix ns the chain began)
//!  24  shard u32              28  rule version u32
//!  32  rule-set generation u64                        40 event seq u64 (ingest's)
//!  48  event time i64 (epoch ms)                      56 node index u32   60 evidence count u16   62 reserved u16
//!  64  publish ns u64 (producer's CLOCK_MONOTONIC; 0 when unknown)
//!  72  decided ns u64 (CLOCK_MONOTONIC)               80 latency ns u64 (publish or ingest → decided)
//!  88  previous hash [32]
//! 120  rule id: u16 length + bytes;  node id: u16 length + bytes
//!      evidence × count: u16 label length + label bytes + value f64 (NaN = unknown)
//!  end hash [32] = SHA-256 of every byte before it
//! ```
//! The first decision of a chain has an all-zero previous hash. Verification recomputes
//! each hash and checks each link, so a flipped byte anywhere, a dropped record or a
//! reordered one is found, and says where.
//!
//! **Restarts.** A shard's decisions reach subscribers (the broadcast ring) before they are
//! durable in the decision log, and at most [`IN_FLIGHT_MAX`] of them are ever published
//! and not yet durable (the shard waits otherwise). After a crash the chain resumes from
//! the last durable decision: linked to its hash, with the sequence moved on by
//! [`IN_FLIGHT_MAX`] and the first record flagged [`FLAG_RESUMED`], so no subscriber ever
//! sees a sequence number again for another decision. The verifier accepts that one jump
//! on a flagged record, and nothing else.
//!
//! This crate is the one definition of the record: the daemon writes it, and every reader
//! (rimctl, the bench, a C subscriber following [`layout`]) decodes it from here.

#![forbid(unsafe_code)]

use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

const MAGIC: u32 = u32::from_le_bytes(layout::MAGIC);
const VERSION: u16 = 1;
const FIXED_BYTES: usize = layout::RULE_ID;

/// Byte offsets of the fixed fields, for readers that pick single fields out of a record
/// without decoding it (a subscriber's hot loop, the bench): the encoder writes them in
/// this order, and a test checks each offset against an encoded record.
pub mod layout {
    /// The magic bytes at offset 0.
    pub const MAGIC: [u8; 4] = *b"RDEC";
    /// The chain sequence number (u64).
    pub const CHAIN_SEQ: usize = 8;
    /// The shard (u32).
    pub const SHARD: usize = 24;
    /// Ingest's sequence number of the event that fired (u64).
    pub const EVENT_SEQ: usize = 40;
    /// The event's time, epoch ms (i64).
    pub const EVENT_TIME: usize = 48;
    /// The node index (u32).
    pub const NODE_INDEX: usize = 56;
    /// The number of evidence entries (u16).
    pub const EVIDENCE_COUNT: usize = 60;
    /// The producer's publish time, CLOCK_MONOTONIC ns (u64; 0 when unknown).
    pub const PUBLISH_NS: usize = 64;
    /// The rule id's u16 length, then its bytes; the variable part starts here.
    pub const RULE_ID: usize = 120;
}
/// Bytes of a rule id at most (the rule language's limit).
pub const RULE_ID_BYTES_MAX: usize = 64;
/// Bytes of a node id at most (the data model's limit).
pub const NODE_ID_BYTES_MAX: usize = 256;
/// Bytes of an evidence label kept (longer labels are cut at a char boundary).
pub const LABEL_BYTES_MAX: usize = 80;
/// Evidence entries at most (the rule language's limit, `rim_rules::EVIDENCE_MAX`; the
/// daemon checks at compile time that the two agree).
pub const EVIDENCE_MAX: usize = 16;
/// Bytes of the largest record.
pub const RECORD_BYTES_MAX: usize =
    FIXED_BYTES + 2 + RULE_ID_BYTES_MAX + 2 + NODE_ID_BYTES_MAX + EVIDENCE_MAX * (2 + LABEL_BYTES_MAX + 8) + 32;
/// Flag: fired by the staleness sweep, not by an event.
pub const FLAG_SWEEP: u8 = 1;
/// Flag: the first decision after the chain resumed from the decision log at a restart;
/// its sequence may jump (by at most [`IN_FLIGHT_MAX`]) past the previous one.
pub const FLAG_RESUMED: u8 = 2;
/// Most decisions of one shard that are published but not yet durable, and therefore the
/// sequence numbers a restart skips.
pub const IN_FLIGHT_MAX: u64 = 1 << 16;

/// Why a record could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its fields say.
    #[error("decision record truncated at byte {0}")]
    Truncated(usize),
    /// Not a decision record.
    #[error("not a decision record (bad magic)")]
    BadMagic,
    /// A version this build does not know.
    #[error("decision record version {0} is not supported")]
    BadVersion(u16),
    /// A string is not UTF-8 or too long.
    #[error("decision record field {0} is malformed")]
    BadField(&'static str),
    /// Bytes after the hash.
    #[error("decision record has {0} bytes after its hash")]
    Trailing(usize),
}

/// A decision, owned (for subscribers, tests and the audit log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Position in its chain.
    pub chain_seq: u64,
    /// When the chain began, unix ns.
    pub epoch: u64,
    /// Reflex shard (one chain per shard).
    pub shard: u32,
    /// The rule's id.
    pub rule_id: String,
    /// The rule's version.
    pub rule_version: u32,
    /// Rule-set generation.
    pub rule_generation: u64,
    /// `info` … `critical`.
    pub severity: String,
    /// The node.
    pub rim_node_id: String,
    /// Ingest's sequence number of the triggering event (the node's last, for a sweep).
    pub event_seq: u64,
    /// Its event time, epoch ms.
    pub event_timestamp: i64,
    /// Fired by the staleness sweep.
    pub sweep: bool,
    /// What the rule read: (label, value; `None` when unknown).
    pub evidence: Vec<(String, Option<f64>)>,
    /// Producer publish → decision, ns (from ingest when the publish time is unknown).
    pub latency_ns: u64,
    /// Producer's publish time, CLOCK_MONOTONIC ns.
    pub publish_ns: u64,
    /// Decision time, CLOCK_MONOTONIC ns.
    pub decided_ns: u64,
    /// Hex SHA-256 of the previous decision in the chain.
    pub prev_hash: String,
    /// Hex SHA-256 of this record.
    pub hash: String,
    /// Node index (dense, for this run).
    pub node_index: u32,
}

/// The fields a reflex shard fills in for one decision.
pub struct Draft<'a> {
    /// Shard.
    pub shard: u32,
    /// Rule id.
    pub rule_id: &'a str,
    /// Rule version.
    pub rule_version: u32,
    /// Rule-set generation.
    pub rule_generation: u64,
    /// Severity code.
    pub severity: u8,
    /// Flags.
    pub flags: u8,
    /// Node index.
    pub node: u32,
    /// Node id.
    pub node_id: &'a str,
    /// Triggering event's sequence.
    pub event_seq: u64,
    /// Its event time.
    pub event_timestamp: i64,
    /// Producer's publish time (0 when unknown).
    pub publish_ns: u64,
    /// Decision time.
    pub decided_ns: u64,
    /// Latency.
    pub latency_ns: u64,
}

/// One shard's hash chain: the last hash and sequence.
pub struct Chain {
    epoch: u64,
    seq: u64,
    prev: [u8; 32],
    /// The next record is the first after a resume.
    resumed: bool,
}

impl Chain {
    /// A new chain beginning now.
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            seq: 0,
            prev: [0; 32],
            resumed: false,
        }
    }

    /// The chain that continues after `last`, a record read back from the audit log: the
    /// same epoch, the next sequence, linked to its hash. A restarted daemon resumes its
    /// shards' chains this way, so the audit log verifies across restarts.
    pub fn resume_after(last: &[u8]) -> Result<Self, DecodeError> {
        let d = decode(last)?;
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&last[last.len() - 32..]);
        Ok(Self {
            epoch: d.epoch,
            seq: d.chain_seq,
            prev,
            resumed: false,
        })
    }

    /// The chain that continues after `last`, the newest *durable* decision of a shard
    /// whose undurable ones may have been seen by subscribers and then lost: linked to
    /// `last`, its next sequence [`IN_FLIGHT_MAX`] further on, flagged [`FLAG_RESUMED`].
    pub fn resume_after_gap(last: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Self::resume_after(last)?;
        c.seq = c.seq.saturating_add(IN_FLIGHT_MAX);
        c.resumed = true;
        Ok(c)
    }

    /// Sequence number of the last decision appended (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Decisions in the chain so far.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// Encodes the next decision into `buf` (at least [`RECORD_BYTES_MAX`]), links it to
    /// the chain and returns its length. No allocation.
    /// `evidence` yields `count` entries.
    pub fn append<'e>(
        &mut self,
        d: &Draft<'_>,
        count: usize,
        evidence: impl Iterator<Item = (&'e str, f64)>,
        buf: &mut [u8],
    ) -> usize {
        let count = count.min(EVIDENCE_MAX);
        let flags = if self.resumed { d.flags | FLAG_RESUMED } else { d.flags };
        let mut w = Writer { buf, at: 0 };
        w.put(&self.fixed(d, flags, count as u16));
        w.text(d.rule_id, RULE_ID_BYTES_MAX);
        w.text(d.node_id, NODE_ID_BYTES_MAX);
        for (label, value) in evidence.take(count) {
            w.text(label, LABEL_BYTES_MAX);
            w.put(&value.to_le_bytes());
        }
        let end = w.at;
        let hash: [u8; 32] = Sha256::digest(&w.buf[..end]).into();
        w.put(&hash);
        self.seq += 1;
        self.prev = hash;
        self.resumed = false;
        w.at
    }

    /// The fixed part of the next record (offsets as in the module doc), built in one
    /// array: constant offsets compile to plain stores, where a `put` per field was a
    /// `memcpy` call per field (a few percent of the hot shard's time under decisions).
    fn fixed(&self, d: &Draft<'_>, flags: u8, count: u16) -> [u8; FIXED_BYTES] {
        fn at<const N: usize>(h: &mut [u8; FIXED_BYTES], off: usize, v: [u8; N]) {
            h[off..off + N].copy_from_slice(&v);
        }
        let mut h = [0u8; FIXED_BYTES];
        at(&mut h, 0, MAGIC.to_le_bytes());
        at(&mut h, 4, VERSION.to_le_bytes());
        at(&mut h, 6, [d.severity, flags]);
        at(&mut h, layout::CHAIN_SEQ, (self.seq + 1).to_le_bytes());
        at(&mut h, 16, self.epoch.to_le_bytes());
        at(&mut h, layout::SHARD, d.shard.to_le_bytes());
        at(&mut h, 28, d.rule_version.to_le_bytes());
        at(&mut h, 32, d.rule_generation.to_le_bytes());
        at(&mut h, layout::EVENT_SEQ, d.event_seq.to_le_bytes());
        at(&mut h, layout::EVENT_TIME, d.event_timestamp.to_le_bytes());
        at(&mut h, layout::NODE_INDEX, d.node.to_le_bytes());
        at(&mut h, layout::EVIDENCE_COUNT, count.to_le_bytes());
        // 62..64 reserved, zero.
        at(&mut h, layout::PUBLISH_NS, d.publish_ns.to_le_bytes());
        at(&mut h, 72, d.decided_ns.to_le_bytes());
        at(&mut h, 80, d.latency_ns.to_le_bytes());
        at(&mut h, 88, self.prev);
        h
    }
}

struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = (self.at + bytes.len()).min(self.buf.len());
        let n = end - self.at;
        self.buf[self.at..end].copy_from_slice(&bytes[..n]);
        self.at = end;
    }

    fn text(&mut self, s: &str, max: usize) {
        let s = cut(s, max);
        self.put(&(s.len() as u16).to_le_bytes());
        self.put(s.as_bytes());
    }
}

/// `s` cut to at most `max` bytes at a char boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'b> {
    buf: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], DecodeError> {
        let s = self
            .buf
            .get(self.at..self.at + n)
            .ok_or(DecodeError::Truncated(self.buf.len()))?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn hash(&mut self) -> Result<[u8; 32], DecodeError> {
        let mut a = [0; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn text(&mut self, field: &'static str, max: usize) -> Result<&'b str, DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(DecodeError::BadField(field));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::BadField(field))
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads a record, bounds-checking every field (the bytes may come from anywhere).
/// The hash is returned as stored; [`Verifier`] checks it.
pub fn decode(bytes: &[u8]) -> Result<Decision, DecodeError> {
    let mut r = Reader { buf: bytes, at: 0 };
    if r.u32()? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u16()?;
    if version != VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    let severity = r.u8()?;
    let flags = r.u8()?;
    let chain_seq = r.u64()?;
    let epoch = r.u64()?;
    let shard = r.u32()?;
    let rule_version = r.u32()?;
    let rule_generation = r.u64()?;
    let event_seq = r.u64()?;
    let event_timestamp = r.u64()? as i64;
    let node_index = r.u32()?;
    let count = r.u16()? as usize;
    r.u16()?;
    let publish_ns = r.u64()?;
    let decided_ns = r.u64()?;
    let latency_ns = r.u64()?;
    let prev = r.hash()?;
    let rule_id = r.text("rule_id", RULE_ID_BYTES_MAX)?.to_owned();
    let rim_node_id = r.text("rim_node_id", NODE_ID_BYTES_MAX)?.to_owned();
    if count > EVIDENCE_MAX {
        return Err(DecodeError::BadField("evidence count"));
    }
    let mut evidence = Vec::with_capacity(count);
    for _ in 0..count {
        let label = r.text("evidence label", LABEL_BYTES_MAX)?.to_owned();
        let v = f64::from_bits(r.u64()?);
        evidence.push((label, (!v.is_nan()).then_some(v)));
    }
    let hash = r.hash()?;
    if r.at != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - r.at));
    }
    Ok(Decision {
        chain_seq,
        epoch,
        shard,
        rule_id,
        rule_version,
        rule_generation,
        severity: severity_name(severity).to_owned(),
        rim_node_id,
        event_seq,
        event_timestamp,
        sweep: flags & FLAG_SWEEP != 0,
        evidence,
        latency_ns,
        publish_ns,
        decided_ns,
        prev_hash: hex(&prev),
        hash: hex(&hash),
        node_index,
    })
}

/// The severity's name.
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

/// Where a chain failed verification.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    /// The record does not parse.
    #[error("record {index}: {source}")]
    Decode {
        /// Position in the input.
        index: usize,
        /// Why.
        source: DecodeError,
    },
    /// Its stored hash is not the hash of its bytes.
    #[error("record {index} (chain seq {seq}): hash does not match its contents")]
    Hash {
        /// Position in the input.
        index: usize,
        /// Its chain sequence.
        seq: u64,
    },
    /// Its previous-hash field is not the previous record's hash.
    #[error("record {index} (chain seq {seq}): previous-hash link broken")]
    Link {
        /// Position in the input.
        index: usize,
        /// Its chain sequence.
        seq: u64,
    },
    /// A sequence number is missing or repeated.
    #[error("record {index}: chain seq {got}, expected {want}")]
    Sequence {
        /// Position in the input.
        index: usize,
        /// Found.
        got: u64,
        /// Expected.
        want: u64,
    },
}

/// Checks records of one chain in order. Starts either at the chain's first record or,
/// to verify a tail, trusting the first record's previous hash.
#[derive(Default)]
pub struct Verifier {
    prev: Option<([u8; 32], u64)>,
    index: usize,
}

impl Verifier {
    /// A verifier expecting any first record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next record.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Decision, ChainError> {
        let index = self.index;
        self.index += 1;
        let d = decode(bytes).map_err(|source| ChainError::Decode { index, source })?;
        let body = &bytes[..bytes.len() - 32];
        let computed: [u8; 32] = Sha256::digest(body).into();
        if hex(&computed) != d.hash {
            return Err(ChainError::Hash {
                index,
                seq: d.chain_seq,
            });
        }
        if let Some((prev, seq)) = self.prev {
            let resumed = bytes.get(7).is_some_and(|f| f & FLAG_RESUMED != 0);
            let jump_ok = resumed && d.chain_seq > seq && d.chain_seq - seq <= IN_FLIGHT_MAX + 1;
            if d.chain_seq != seq + 1 && !jump_ok {
                return Err(ChainError::Sequence {
                    index,
                    got: d.chain_seq,
                    want: seq + 1,
                });
            }
            if d.prev_hash != hex(&prev) {
                return Err(ChainError::Link {
                    index,
                    seq: d.chain_seq,
                });
            }
        } else if d.chain_seq == 1 && d.prev_hash != hex(&[0; 32]) {
            return Err(ChainError::Link {
                index,
                seq: d.chain_seq,
            });
        }
        self.prev = Some((computed, d.chain_seq));
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets_are_where_the_encoder_writes() {
        let mut chain = Chain::new(7);
        let mut buf = vec![0u8; RECORD_BYTES_MAX];
        let d = draft(41);
        let n = chain.append(&d, 1, [("temp", 95.5)].into_iter(), &mut buf);
        let rec = &buf[..n];
        let u64_at = |o: usize| u64::from_le_bytes(rec[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_le_bytes(rec[o..o + 2].try_into().expect("2 bytes"));
        let got = decode(rec).expect("decodes");
        assert_eq!(rec[..4], layout::MAGIC);
        assert_eq!(u64_at(layout::CHAIN_SEQ), got.chain_seq);
        assert_eq!(u32_at(layout::SHARD), got.shard);
        assert_eq!(u64_at(layout::EVENT_SEQ), got.event_seq);
        assert_eq!(u64_at(layout::EVENT_TIME) as i64, got.event_timestamp);
        assert_eq!(u32_at(layout::NODE_INDEX), got.node_index);
        assert_eq!(usize::from(u16_at(layout::EVIDENCE_COUNT)), got.evidence.len());
        assert_eq!(u64_at(layout::PUBLISH_NS), got.publish_ns);
        let len = usize::from(u16_at(layout::RULE_ID));
        assert_eq!(
            &rec[layout::RULE_ID + 2..layout::RULE_ID + 2 + len],
            got.rule_id.as_bytes()
        );
    }

    fn draft(i: u64) -> Draft<'static> {
        Draft {
            shard: 0,
            rule_id: "temp-high",
            rule_version: 2,
            rule_generation: 3,
            severity: 3,
            flags: 0,
            node: 9,
            node_id: "rim:sensor:plant-a:t1",
            event_seq: 100 + i,
            event_timestamp: 1_700_000_000_000 + i as i64,
            publish_ns: 5,
            decided_ns: 9,
            latency_ns: 4,
        }
    }

    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut c = Chain::new(42);
        let mut buf = [0u8; RECORD_BYTES_MAX];
        (0..n)
            .map(|i| {
                let ev = [("metric.temp", 81.5 + i as f64), ("change(metric.temp, 5s)", f64::NAN)];
                let len = c.append(&draft(i), ev.len(), ev.into_iter(), &mut buf);
                buf[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn records_round_trip_and_the_chain_verifies() {
        let recs = chain(5);
        let mut v = Verifier::new();
        for (i, r) in recs.iter().enumerate() {
            let d = v.push(r).expect("verifies");
            assert_eq!(d.chain_seq, i as u64 + 1);
            assert_eq!(d.rule_id, "temp-high");
            assert_eq!(d.severity, "high");
            assert_eq!(d.rim_node_id, "rim:sensor:plant-a:t1");
            assert_eq!(d.event_seq, 100 + i as u64);
            assert_eq!(d.evidence[0], ("metric.temp".to_owned(), Some(81.5 + i as f64)));
            assert_eq!(d.evidence[1], ("change(metric.temp, 5s)".to_owned(), None));
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let recs = chain(3);
        for byte in 0..recs[1].len() {
            for bit in 0..8 {
                let mut v = Verifier::new();
                v.push(&recs[0]).expect("first");
                let mut bad = recs[1].clone();
                bad[byte] ^= 1 << bit;
                let second = v.push(&bad);
                let third = second.is_ok().then(|| v.push(&recs[2]));
                assert!(
                    second.is_err() || matches!(third, Some(Err(_))),
                    "flip of byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    /// Subscribers outside the daemon (the C ABI, the Python client) read records with
    /// `rim_ring::decision`, which cannot depend on this crate: it must read exactly what
    /// this encoder writes, and check the chain the way [`Verifier`] does.
    #[test]
    fn the_ring_crates_reader_reads_what_this_encoder_writes() {
        use rim_ring::decision as ring;
        assert_eq!(
            (ring::RECORD_BYTES_MAX, ring::EVIDENCE_MAX, ring::FLAG_SWEEP),
            (RECORD_BYTES_MAX, EVIDENCE_MAX, FLAG_SWEEP)
        );
        assert_eq!((ring::FLAG_RESUMED, ring::IN_FLIGHT_MAX), (FLAG_RESUMED, IN_FLIGHT_MAX));
        assert_eq!(
            (ring::RULE_ID_BYTES_MAX, ring::NODE_ID_BYTES_MAX, ring::LABEL_BYTES_MAX),
            (RULE_ID_BYTES_MAX, NODE_ID_BYTES_MAX, LABEL_BYTES_MAX)
        );
        let mut check = ring::ChainCheck::new();
        for rec in chain(4) {
            let view = ring::DecisionView::parse(&rec).expect("the ring crate parses it");
            check.push(&view).expect("the ring crate verifies the chain");
            let read = Decision {
                chain_seq: view.chain_seq,
                epoch: view.epoch_ns,
                shard: view.shard,
                rule_id: view.rule_id.to_owned(),
                rule_version: view.rule_version,
                rule_generation: view.rule_generation,
                severity: ring::severity_name(view.severity).to_owned(),
                rim_node_id: view.node_id.to_owned(),
                event_seq: view.event_seq,
                event_timestamp: view.event_timestamp_ms,
                sweep: view.is_sweep(),
                evidence: view
                    .evidence()
                    .map(|(l, v)| (l.to_owned(), (!v.is_nan()).then_some(v)))
                    .collect(),
                latency_ns: view.latency_ns,
                publish_ns: view.publish_ns,
                decided_ns: view.decided_ns,
                prev_hash: hex(&view.prev_hash),
                hash: hex(&view.hash),
                node_index: view.node_index,
            };
            assert_eq!(read, decode(&rec).expect("decodes"));
        }
    }

    #[test]
    fn dropped_and_reordered_records_are_detected() {
        let recs = chain(3);
        let mut v = Verifier::new();
        v.push(&recs[0]).expect("first");
        assert!(matches!(v.push(&recs[2]), Err(ChainError::Sequence { .. })));
        let mut v = Verifier::new();
        v.push(&recs[1]).expect("a tail may start anywhere");
        assert!(v.push(&recs[0]).is_err());
    }

    #[test]
    fn garbage_and_truncations_are_errors_not_panics() {
        let rec = &chain(1)[0];
        for n in 0..rec.len() {
            assert!(decode(&rec[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = rec.clone();
            let at = (x as usize) % bytes.len();
            bytes[at] = (x >> 40) as u8;
            if x.is_multiple_of(3) {
                bytes.truncate((x >> 20) as usize % (bytes.len() + 1));
            }
            let _ = decode(&bytes);
            let _ = Verifier::new().push(&bytes);
        }
        const {
            assert!(
                RECORD_BYTES_MAX <= 2048,
                "default decisions.slot_bytes must hold a record"
            )
        };
    }

    #[test]
    fn long_labels_are_cut_at_char_boundaries() {
        let mut c = Chain::new(1);
        let mut buf = [0u8; RECORD_BYTES_MAX];
        let long = "é".repeat(100);
        let len = c.append(&draft(0), 1, [(long.as_str(), 1.0)].into_iter(), &mut buf);
        let d = decode(&buf[..len]).expect("decodes");
        assert!(d.evidence[0].0.len() <= LABEL_BYTES_MAX);
        assert!(d.evidence[0].0.chars().all(|ch| ch == 'é'));
    }
}
