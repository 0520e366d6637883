//! The archived (rkyv) form of ring records, and the per-ring symbol table that keeps
//! strings out of the hot path.
//!
//! # Why symbols
//! FLOORS.md measured that the archived layout decides most of the cost: a record of
//! strings and a metric map costs ~40–50 ns to validate, a fixed layout with interned ids
//! ~3 ns. A feed handler publishes the same node ids, statuses and metric names over and
//! over, so each string crosses the ring **once**, in a `Define` record that gives it a
//! number, and is validated once, on arrival (a RimNodeId against its pattern, a metric
//! name against its limit). An `Event` record then carries only numbers: symbol ids,
//! the schema's numeric fields, and the metrics as `(name symbol, value)` pairs. The only
//! per-event string left is the optional `event_id`, which is unique by nature.
//!
//! Symbols belong to one ring (one producer) and are numbered 1, 2, 3… in publish order,
//! so a consumer that reads the ring in order always knows a symbol before it is used.
//! Every field of the RimFastEvent schema survives: [`EventView`] resolves symbols back to
//! the strings, and `to_owned_event` rebuilds the whole event.
//!
//! # Trust
//! The [`Decoder`] (consumer side) trusts nothing: the record's structure is checked first
//! (rkyv `access` with bytecheck for a definition; for an event, the same rules checked by
//! hand, `event_record.rs`), then every symbol reference is checked against the table (defined,
//! of the right kind, valid), every number for finiteness, metric names for uniqueness,
//! and `event_id` for UTF-8 and length. The table is bounded ([`SYMBOLS_MAX`],
//! [`SYMBOL_TEXT_BYTES_MAX`]); a producer cannot make it grow without limit.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher;
use std::mem::MaybeUninit;

use rkyv::api::low::{access, to_bytes_in_with_alloc};
use rkyv::rancor::Failure;
use rkyv::ser::allocator::SubAllocator;
use rkyv::ser::writer::Buffer;
use rkyv::with::InlineAsBox;

use crate::event::{
    check_len, check_node_id, check_optional_finite, EventError, EventRef, Metric, RimFastEvent, EVENT_ID_BYTES_MAX,
    METRICS_MAX, METRIC_NAME_BYTES_MAX, RECORD_BYTES_MAX, SOURCE_TOPIC_BYTES_MAX, STATUS_BYTES_MAX,
};
use crate::symtab::SymTable;

mod event_record;
use event_record::{u32_at, u64_at, Parts, Shape, FIXED_BYTES, METRIC_BYTES};

/// Most symbols one ring may define.
pub const SYMBOLS_MAX: usize = 1 << 18;
/// Most bytes of symbol text one ring may define (16 MiB). With [`SYMBOLS_MAX`], a
/// consumer's table for one ring stays under ~40 MiB whatever the producer sends.
pub const SYMBOL_TEXT_BYTES_MAX: usize = 16 << 20;

/// What a symbol names; it decides how the text is validated and where it may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SymbolKind {
    /// A `rim_node_id`.
    NodeId = 1,
    /// A `critical_metrics` name.
    MetricName = 2,
    /// A `status`.
    Status = 3,
    /// A `source_topic`.
    SourceTopic = 4,
}

impl SymbolKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::NodeId),
            2 => Some(Self::MetricName),
            3 => Some(Self::Status),
            4 => Some(Self::SourceTopic),
            _ => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize - 1
    }

    /// Checks `text` against this kind's rules.
    pub fn validate(self, text: &str) -> Result<(), EventError> {
        match self {
            Self::NodeId => check_node_id(text)?,
            Self::MetricName => {
                if text.is_empty() {
                    return Err(EventError::EmptyMetricName { index: 0 });
                }
                check_len("critical_metrics name", text.len(), METRIC_NAME_BYTES_MAX)?;
            }
            Self::Status => check_len("status", text.len(), STATUS_BYTES_MAX)?,
            Self::SourceTopic => check_len("source_topic", text.len(), SOURCE_TOPIC_BYTES_MAX)?,
        }
        Ok(())
    }
}

/// A string defined in a ring, by number (1-based; the default, 0, names nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

impl Sym {
    /// A symbol from its number (the C ABI passes numbers; publishing checks them).
    pub(crate) fn from_raw(n: u32) -> Self {
        Self(n)
    }

    /// The symbol's number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// An event whose strings are already symbols: what a hot producer publishes.
#[derive(Debug, Clone, Copy)]
pub struct SymEvent<'a> {
    /// `rim_node_id` (a [`SymbolKind::NodeId`] symbol).
    pub node: Sym,
    /// `event_id`.
    pub event_id: Option<&'a str>,
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// `critical_metrics` as (name symbol, value), names unique.
    pub metrics: &'a [(Sym, f64)],
    /// `price`.
    pub price: Option<f64>,
    /// `volume`.
    pub volume: Option<f64>,
    /// `stress`.
    pub stress: Option<f64>,
    /// `status` (a [`SymbolKind::Status`] symbol).
    pub status: Sym,
    /// `source_topic` (a [`SymbolKind::SourceTopic`] symbol).
    pub source_topic: Option<Sym>,
    /// Producer's CLOCK_MONOTONIC at publish, ns; the producer stamps it when 0.
    pub publish_ns: u64,
}

const HAS_EVENT_ID: u32 = 1;
const HAS_PRICE: u32 = 1 << 1;
const HAS_VOLUME: u32 = 1 << 2;
const HAS_STRESS: u32 = 1 << 3;
const HAS_SOURCE_TOPIC: u32 = 1 << 4;
const KNOWN_FLAGS: u32 = HAS_EVENT_ID | HAS_PRICE | HAS_VOLUME | HAS_STRESS | HAS_SOURCE_TOPIC;

/// A record's layout: what rkyv archives. A `Define` is archived by rkyv; an `Event` is
/// written and checked by hand in the same bytes (`event_record.rs`), and the tests hold the
/// two to each other.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[cfg_attr(not(test), allow(dead_code))]
enum WireRecord<'a> {
    Define(WireDefine<'a>),
    Event(WireEvent<'a>),
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct WireDefine<'a> {
    sym: u32,
    kind: u8,
    #[rkyv(with = InlineAsBox)]
    text: &'a [u8],
}

#[derive(rkyv::Archive, rkyv::Serialize)]
#[cfg_attr(not(test), allow(dead_code))]
struct WireEvent<'a> {
    publish_ns: u64,
    timestamp: i64,
    price: f64,
    volume: f64,
    stress: f64,
    node: u32,
    status: u32,
    source_topic: u32,
    flags: u32,
    #[rkyv(with = InlineAsBox)]
    metrics: &'a [WireMetric],
    #[rkyv(with = InlineAsBox)]
    event_id: &'a [u8],
}

/// One metric on the wire. The explicit `reserved` word leaves no implicit padding.
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy)]
#[cfg_attr(not(test), allow(dead_code))]
struct WireMetric {
    value: f64,
    name: u32,
    reserved: u32,
}

/// A record-sized buffer aligned for rkyv.
#[repr(C, align(16))]
pub struct AlignedRecord(pub [u8; RECORD_BYTES_MAX]);

/// FxHash: the producer's own strings are the keys, so speed matters and flooding does not.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Producer-side encoder: its symbol table and buffers, allocated once; only a new symbol
/// allocates (its table entry).
pub struct Encoder {
    symbols: SymTable,
    kinds: Vec<SymbolKind>,
    text_bytes: usize,
    syms: Box<[(Sym, f64); METRICS_MAX]>,
    out: Box<AlignedRecord>,
    scratch: Box<[MaybeUninit<u8>; 256]>,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("symbols", &self.kinds.len())
            .finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

/// A symbol the encoder would define, once its record is published.
#[derive(Debug, Clone, Copy)]
struct PendingDefine {
    /// The number it will have.
    pub sym: Sym,
    /// Its kind.
    pub kind: SymbolKind,
}

impl Encoder {
    /// Allocates the buffers encoding needs, once.
    pub fn new() -> Self {
        Self {
            symbols: Default::default(),
            kinds: Vec::with_capacity(1024),
            text_bytes: 0,
            syms: Box::new([(Sym(0), 0.0); METRICS_MAX]),
            out: Box::new(AlignedRecord([0; RECORD_BYTES_MAX])),
            scratch: Box::new([MaybeUninit::uninit(); 256]),
        }
    }

    /// The symbol already defined for `text`, if any.
    #[inline]
    pub fn lookup(&self, kind: SymbolKind, text: &str) -> Option<Sym> {
        self.symbols.get(kind, text)
    }

    /// Asks the CPU to bring in what [`Encoder::lookup`] of `text` will read first: a
    /// producer with a batch in hand calls it a few events ahead, so that the lookups'
    /// cache misses overlap instead of coming one per event.
    #[inline]
    pub fn prefetch(&self, kind: SymbolKind, text: &str) {
        self.symbols.prefetch(kind, text);
    }

    /// Symbols defined so far.
    pub fn symbol_count(&self) -> usize {
        self.kinds.len()
    }

    /// Validates `text` and archives the `Define` record that would give it the next
    /// number. Nothing is recorded until `commit_define`: if publishing the
    /// record fails, the symbol simply does not exist yet.
    fn encode_define(&mut self, kind: SymbolKind, text: &str) -> Result<(PendingDefine, &[u8]), EventError> {
        kind.validate(text)?;
        if self.kinds.len() >= SYMBOLS_MAX || self.text_bytes + text.len() > SYMBOL_TEXT_BYTES_MAX {
            return Err(EventError::TooManySymbols { max: SYMBOLS_MAX });
        }
        let sym = Sym(self.kinds.len() as u32 + 1);
        let rec = WireRecord::Define(WireDefine {
            sym: sym.0,
            kind: kind as u8,
            text: text.as_bytes(),
        });
        let len = archive(&rec, &mut self.out, &mut self.scratch)?;
        Ok((PendingDefine { sym, kind }, &self.out.0[..len]))
    }

    /// Records a symbol whose `Define` record was published.
    fn commit_define(&mut self, pending: PendingDefine, text: &str) {
        self.kinds.push(pending.kind);
        self.text_bytes += text.len();
        self.symbols.insert(pending.kind, text, pending.sym);
    }

    /// Validates and archives an event whose strings are symbols of this encoder.
    pub fn encode_event(&mut self, ev: &SymEvent<'_>) -> Result<&[u8], EventError> {
        self.encode_event_at(ev, ev.publish_ns)
    }

    /// [`Encoder::encode_event`] with `publish_ns` in place of the event's: a producer
    /// that stamps the time need not copy the caller's event to change one field (the
    /// copy's wide loads of the caller's just-written fields cannot be forwarded from the
    /// store buffer, and waited for every store ahead of them, the ring's included).
    pub fn encode_event_at(&mut self, ev: &SymEvent<'_>, publish_ns: u64) -> Result<&[u8], EventError> {
        let (len, write) = self.event_writer(ev, publish_ns)?;
        write(&mut self.out.0[..len]);
        Ok(&self.out.0[..len])
    }

    /// Checks `ev` as [`Encoder::encode_event`] does, and returns a writer of its record
    /// (payload length, and a function that writes it into that many bytes): for a
    /// producer that writes the record in place, into the ring.
    pub(crate) fn event_writer<'e>(
        &self,
        ev: &'e SymEvent<'e>,
        publish_ns: u64,
    ) -> Result<(usize, impl FnOnce(&mut [u8]) + 'e), EventError> {
        check_event(&self.kinds, ev)?;
        Ok((event_record::len_of(ev), move |out: &mut [u8]| {
            event_record::write(out, ev, publish_ns)
        }))
    }

    /// The symbol for `text`, defining it through `publish` if it is new (`publish` gets
    /// the `Define` record; if it fails, the symbol stays undefined).
    pub fn intern<E>(
        &mut self,
        kind: SymbolKind,
        text: &str,
        publish: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Sym, EncodeRefError<E>> {
        if let Some(sym) = self.lookup(kind, text) {
            return Ok(sym);
        }
        let (pending, bytes) = self.encode_define(kind, text).map_err(EncodeRefError::Invalid)?;
        publish(bytes).map_err(EncodeRefError::Publish)?;
        self.commit_define(pending, text);
        Ok(pending.sym)
    }

    /// Resolves an event's strings to symbols, defining the missing ones through
    /// `publish`, then archives the event. Steady state (no new strings): a few hash
    /// lookups and no allocation. Every rule of [`EventRef::validate`] still holds: new
    /// strings are validated when they are defined, the rest by the symbol event's checks.
    pub fn encode_ref<M: Metric, E>(
        &mut self,
        ev: &EventRef<'_, M>,
        publish: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<&[u8], EncodeRefError<E>> {
        self.encode_ref_at(ev, ev.publish_ns, publish)
    }

    /// [`Encoder::encode_ref`] with `publish_ns` in place of the event's (see
    /// [`Encoder::encode_event_at`] for why a stamping producer passes it apart).
    pub fn encode_ref_at<M: Metric, E>(
        &mut self,
        ev: &EventRef<'_, M>,
        publish_ns: u64,
        mut publish: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<&[u8], EncodeRefError<E>> {
        if ev.critical_metrics.len() > METRICS_MAX {
            let count = ev.critical_metrics.len();
            return Err(EncodeRefError::Invalid(EventError::TooManyMetrics {
                count,
                max: METRICS_MAX,
            }));
        }
        let node = self.intern(SymbolKind::NodeId, ev.rim_node_id, &mut publish)?;
        let status = self.intern(SymbolKind::Status, ev.status, &mut publish)?;
        let source_topic = match ev.source_topic {
            Some(t) => Some(self.intern(SymbolKind::SourceTopic, t, &mut publish)?),
            None => None,
        };
        let count = ev.critical_metrics.len().min(METRICS_MAX);
        for (i, m) in ev.critical_metrics.iter().enumerate().take(METRICS_MAX) {
            self.syms[i] = (self.intern(SymbolKind::MetricName, m.name(), &mut publish)?, m.value());
        }
        let sym_ev = SymEvent {
            node,
            event_id: ev.event_id,
            timestamp: ev.timestamp,
            metrics: &self.syms[..count],
            price: ev.price,
            volume: ev.volume,
            stress: ev.stress,
            status,
            source_topic,
            publish_ns,
        };
        let (len, write) = self
            .event_writer(&sym_ev, publish_ns)
            .map_err(EncodeRefError::Invalid)?;
        write(&mut self.out.0[..len]);
        Ok(&self.out.0[..len])
    }
}

fn check_sym(kinds: &[SymbolKind], sym: Sym, kind: SymbolKind, field: &'static str) -> Result<(), EventError> {
    match sym.0.checked_sub(1).and_then(|i| kinds.get(i as usize)) {
        Some(&k) if k == kind => Ok(()),
        _ => Err(EventError::BadSymbol { field }),
    }
}

fn check_event(kinds: &[SymbolKind], ev: &SymEvent<'_>) -> Result<(), EventError> {
    check_sym(kinds, ev.node, SymbolKind::NodeId, "rim_node_id")?;
    check_sym(kinds, ev.status, SymbolKind::Status, "status")?;
    if let Some(topic) = ev.source_topic {
        check_sym(kinds, topic, SymbolKind::SourceTopic, "source_topic")?;
    }
    if let Some(id) = ev.event_id {
        check_len("event_id", id.len(), EVENT_ID_BYTES_MAX)?;
    }
    check_optional_finite("price", ev.price)?;
    check_optional_finite("volume", ev.volume)?;
    check_optional_finite("stress", ev.stress)?;
    if ev.metrics.len() > METRICS_MAX {
        return Err(EventError::TooManyMetrics {
            count: ev.metrics.len(),
            max: METRICS_MAX,
        });
    }
    for (index, &(name, value)) in ev.metrics.iter().enumerate() {
        check_sym(kinds, name, SymbolKind::MetricName, "critical_metrics name")?;
        if !value.is_finite() {
            return Err(EventError::NotFinite {
                field: "critical_metrics value",
            });
        }
        if ev.metrics[..index].iter().any(|&(earlier, _)| earlier == name) {
            return Err(EventError::DuplicateMetric { index });
        }
    }
    Ok(())
}

/// Why [`Encoder::encode_ref`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeRefError<E> {
    /// The event breaks a rule of the data model.
    Invalid(EventError),
    /// Publishing a `Define` record failed.
    Publish(E),
}

fn archive(
    rec: &WireRecord<'_>,
    out: &mut AlignedRecord,
    scratch: &mut [MaybeUninit<u8>; 256],
) -> Result<usize, EventError> {
    to_bytes_in_with_alloc::<_, _, Failure>(rec, Buffer::from(&mut out.0[..]), SubAllocator::new(&mut scratch[..]))
        .map(|buf| buf.len())
        .map_err(|_| EventError::RecordTooLarge { max: RECORD_BYTES_MAX })
}

/// One symbol as the consumer knows it: where its text is, its kind, and whether its
/// text passed validation (an invalid definition still takes its number, so that the
/// events using it are refused with the definition's own error).
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    len: u32,
    kind: SymbolKind,
    error: Option<EventError>,
    /// The previous valid symbol whose (kind, text) hashes alike (0: none).
    next_same_hash: u32,
}

/// Consumer-side decoder of one ring's records: holds that ring's symbol table.
#[derive(Debug)]
pub struct Decoder {
    entries: Vec<Entry>,
    text: String,
    /// Valid symbols by the hash of (kind, text), chained through `next_same_hash`: a
    /// second definition of a text would let two metric symbols name one metric. The text
    /// itself is kept once, in `text`. Keys come from the producer, so the hasher is std's
    /// keyed (flood-resistant) one; this is touched only by definitions.
    defined: HashMap<u64, u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a record whose structure breaks the layout's rules is refused.
const STRUCTURE: &str = "record structure invalid (rkyv layout)";

/// What one record was.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A symbol definition, now in the table.
    Defined {
        /// Its number.
        sym: Sym,
        /// Its kind.
        kind: SymbolKind,
    },
    /// An event.
    Event(EventView<'a>),
}

impl Decoder {
    /// An empty table with room for typical use; it grows only on new definitions, up to
    /// [`SYMBOLS_MAX`] and [`SYMBOL_TEXT_BYTES_MAX`].
    pub fn new() -> Self {
        Self {
            entries: Vec::with_capacity(1024),
            text: String::with_capacity(64 * 1024),
            defined: HashMap::with_capacity(1024),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Symbols defined so far.
    pub fn symbol_count(&self) -> usize {
        self.entries.len()
    }

    /// The text of a valid symbol of `kind`.
    pub fn resolve(&self, sym: Sym, kind: SymbolKind) -> Option<&str> {
        self.entry(sym, kind, "").ok().map(|e| self.text_of(e))
    }

    fn entry(&self, sym: Sym, kind: SymbolKind, field: &'static str) -> Result<Entry, EventError> {
        let e = sym
            .0
            .checked_sub(1)
            .and_then(|i| self.entries.get(i as usize))
            .ok_or(EventError::BadSymbol { field })?;
        if e.kind != kind {
            return Err(EventError::BadSymbol { field });
        }
        match e.error {
            Some(err) => Err(err),
            None => Ok(*e),
        }
    }

    /// Whether the hash chain starting at symbol `sym` holds `text` of `kind`.
    fn chain_has(&self, mut sym: u32, kind: SymbolKind, text: &str) -> bool {
        while let Some(e) = sym.checked_sub(1).and_then(|i| self.entries.get(i as usize)) {
            if e.kind == kind && self.text_of(*e) == text {
                return true;
            }
            sym = e.next_same_hash;
        }
        false
    }

    fn text_of(&self, e: Entry) -> &str {
        // Entries are only created for ranges just appended to `text` at char boundaries;
        // `get` keeps this total anyway.
        self.text
            .get(e.start as usize..(e.start + e.len) as usize)
            .unwrap_or("")
    }

    /// Validates one record from an untrusted producer (it must start 8-byte aligned, as
    /// ring records do) and applies it: a definition enters the table, an event is
    /// checked against the table and returned as a view.
    pub fn decode<'a>(&'a mut self, bytes: &'a [u8]) -> Result<Decoded<'a>, EventError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(EventError::RecordTooLarge { max: RECORD_BYTES_MAX });
        }
        match event_record::shape(bytes) {
            Shape::Event(parts) => return Ok(Decoded::Event(EventView::check(parts, self)?)),
            Shape::BadEvent => return Err(EventError::Malformed(STRUCTURE)),
            Shape::Other => {}
        }
        let rec = access::<ArchivedWireRecord<'_>, Failure>(bytes).map_err(|_| EventError::Malformed(STRUCTURE))?;
        match rec {
            ArchivedWireRecord::Define(d) => self.define(d),
            // An event's tag was seen above; rkyv accepts no other layout for it.
            ArchivedWireRecord::Event(_) => Err(EventError::Malformed(STRUCTURE)),
        }
    }

    fn define(&mut self, d: &ArchivedWireDefine<'_>) -> Result<Decoded<'_>, EventError> {
        let kind = SymbolKind::from_u8(d.kind).ok_or(EventError::Malformed("unknown symbol kind"))?;
        let expected = self.entries.len() as u32 + 1;
        if d.sym.to_native() != expected {
            return Err(EventError::Malformed("symbol defined out of order"));
        }
        let bytes = d.text.get();
        if self.entries.len() >= SYMBOLS_MAX || self.text.len() + bytes.len() > SYMBOL_TEXT_BYTES_MAX {
            return Err(EventError::TooManySymbols { max: SYMBOLS_MAX });
        }
        let (text, mut error) = match std::str::from_utf8(bytes) {
            Ok(t) => (t, kind.validate(t).err()),
            Err(_) => ("", Some(EventError::Malformed("symbol text is not UTF-8"))),
        };
        let mut next_same_hash = 0;
        if error.is_none() {
            let hash = std::hash::BuildHasher::hash_one(&self.hasher, (kind as u8, text));
            next_same_hash = self.defined.get(&hash).copied().unwrap_or(0);
            if self.chain_has(next_same_hash, kind, text) {
                error = Some(EventError::Malformed("symbol text defined twice"));
                next_same_hash = 0;
            } else {
                self.defined.insert(hash, expected);
            }
        }
        let start = self.text.len() as u32;
        self.text.push_str(text);
        self.entries.push(Entry {
            start,
            len: text.len() as u32,
            kind,
            error,
            next_same_hash,
        });
        let sym = Sym(expected);
        match error {
            Some(e) => Err(e),
            None => Ok(Decoded::Defined { sym, kind }),
        }
    }
}

/// A validated event: every accessor is infallible.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    fixed: &'a [u8; FIXED_BYTES],
    /// The metrics' data, [`METRIC_BYTES`] per metric.
    metric_bytes: &'a [u8],
    dict: &'a Decoder,
    node_id: &'a str,
    status: &'a str,
    source_topic: Option<&'a str>,
    event_id: Option<&'a str>,
}

impl<'a> EventView<'a> {
    fn check(parts: Parts<'a>, dict: &'a Decoder) -> Result<Self, EventError> {
        let fixed = parts.fixed;
        let flags = u32_at(fixed, event_record::FLAGS);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(EventError::Malformed("unknown presence flags"));
        }
        let node = dict.entry(
            Sym(u32_at(fixed, event_record::NODE)),
            SymbolKind::NodeId,
            "rim_node_id",
        )?;
        let status = dict.entry(Sym(u32_at(fixed, event_record::STATUS)), SymbolKind::Status, "status")?;
        let source_topic = if flags & HAS_SOURCE_TOPIC != 0 {
            Some(dict.text_of(dict.entry(
                Sym(u32_at(fixed, event_record::SOURCE_TOPIC)),
                SymbolKind::SourceTopic,
                "source_topic",
            )?))
        } else {
            None
        };
        let event_id = Self::check_event_id(parts.event_id, flags)?;
        let view = Self {
            fixed,
            metric_bytes: parts.metrics,
            dict,
            node_id: dict.text_of(node),
            status: dict.text_of(status),
            source_topic,
            event_id,
        };
        view.check_numbers()?;
        view.check_metrics()?;
        Ok(view)
    }

    fn check_event_id(raw: &'a [u8], flags: u32) -> Result<Option<&'a str>, EventError> {
        if flags & HAS_EVENT_ID == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(EventError::Malformed("event_id bytes without its flag"))
            };
        }
        check_len("event_id", raw.len(), EVENT_ID_BYTES_MAX)?;
        std::str::from_utf8(raw)
            .map(Some)
            .map_err(|_| EventError::Malformed("event_id is not UTF-8"))
    }

    fn check_numbers(&self) -> Result<(), EventError> {
        check_optional_finite("price", self.price())?;
        check_optional_finite("volume", self.volume())?;
        check_optional_finite("stress", self.stress())
    }

    fn check_metrics(&self) -> Result<(), EventError> {
        let count = self.metric_count();
        if count > METRICS_MAX {
            return Err(EventError::TooManyMetrics {
                count,
                max: METRICS_MAX,
            });
        }
        for (index, (name, value)) in self.metric_syms().enumerate() {
            self.dict.entry(name, SymbolKind::MetricName, "critical_metrics name")?;
            if !value.is_finite() {
                return Err(EventError::NotFinite {
                    field: "critical_metrics value",
                });
            }
            if self.metric_syms().take(index).any(|(earlier, _)| earlier == name) {
                return Err(EventError::DuplicateMetric { index });
            }
        }
        Ok(())
    }

    fn has(&self, flag: u32) -> bool {
        u32_at(self.fixed, event_record::FLAGS) & flag != 0
    }

    /// `rim_node_id`.
    pub fn rim_node_id(&self) -> &'a str {
        self.node_id
    }
    /// The ring-local symbol of `rim_node_id`: a dense number for indexing per-node state
    /// without hashing the string.
    pub fn node_sym(&self) -> Sym {
        Sym(u32_at(self.fixed, event_record::NODE))
    }
    /// The ring-local symbol of `status`.
    pub fn status_sym(&self) -> Sym {
        Sym(u32_at(self.fixed, event_record::STATUS))
    }
    /// `critical_metrics` as (ring-local name symbol, value), in the producer's order:
    /// for consumers that cache per-symbol facts instead of hashing names per event.
    pub fn metric_syms(&self) -> impl ExactSizeIterator<Item = (Sym, f64)> + 'a {
        self.metric_bytes.chunks_exact(METRIC_BYTES).map(|m| {
            let (name, value) = event_record::metric(m);
            (Sym(name), value)
        })
    }
    /// `event_id`.
    pub fn event_id(&self) -> Option<&'a str> {
        self.event_id
    }
    /// `timestamp`, epoch ms.
    pub fn timestamp(&self) -> i64 {
        u64_at(self.fixed, event_record::TIMESTAMP) as i64
    }
    /// `price`.
    pub fn price(&self) -> Option<f64> {
        self.has(HAS_PRICE)
            .then(|| f64::from_bits(u64_at(self.fixed, event_record::PRICE)))
    }
    /// `volume`.
    pub fn volume(&self) -> Option<f64> {
        self.has(HAS_VOLUME)
            .then(|| f64::from_bits(u64_at(self.fixed, event_record::VOLUME)))
    }
    /// `stress`.
    pub fn stress(&self) -> Option<f64> {
        self.has(HAS_STRESS)
            .then(|| f64::from_bits(u64_at(self.fixed, event_record::STRESS)))
    }
    /// `status`.
    pub fn status(&self) -> &'a str {
        self.status
    }
    /// `source_topic`.
    pub fn source_topic(&self) -> Option<&'a str> {
        self.source_topic
    }
    /// Producer's CLOCK_MONOTONIC at publish, ns.
    pub fn publish_ns(&self) -> u64 {
        u64_at(self.fixed, event_record::PUBLISH_NS)
    }
    /// Number of `critical_metrics` entries.
    pub fn metric_count(&self) -> usize {
        self.metric_bytes.len() / METRIC_BYTES
    }
    /// `critical_metrics` in the producer's order.
    pub fn metrics(&self) -> Metrics<'a> {
        Metrics {
            dict: self.dict,
            inner: self.metric_bytes.chunks_exact(METRIC_BYTES),
        }
    }
    /// Copies the event into its owned form.
    pub fn to_owned_event(&self) -> RimFastEvent {
        RimFastEvent {
            rim_node_id: self.node_id.to_owned(),
            event_id: self.event_id.map(str::to_owned),
            timestamp: self.timestamp(),
            critical_metrics: self.metrics().map(|(n, v)| (n.to_owned(), v)).collect(),
            price: self.price(),
            volume: self.volume(),
            stress: self.stress(),
            status: self.status.to_owned(),
            source_topic: self.source_topic.map(str::to_owned),
            publish_ns: self.publish_ns(),
        }
    }
}

impl fmt::Debug for EventView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventView")
            .field("rim_node_id", &self.node_id)
            .field("timestamp", &self.timestamp())
            .field("metrics", &self.metric_count())
            .finish_non_exhaustive()
    }
}

/// Iterator over a validated event's metrics, in order, names resolved.
#[derive(Clone)]
pub struct Metrics<'a> {
    dict: &'a Decoder,
    inner: std::slice::ChunksExact<'a, u8>,
}

impl<'a> Iterator for Metrics<'a> {
    type Item = (&'a str, f64);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = event_record::metric(self.inner.next()?);
        let name = self
            .dict
            .entry(Sym(name), SymbolKind::MetricName, "")
            .map(|e| self.dict.text_of(e))
            .unwrap_or("");
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Metrics<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RimFastEvent {
        RimFastEvent {
            source_topic: Some("rim.fast-path".into()),
            ..crate::event::sample_event()
        }
    }

    /// Encodes `ev`, feeding every record (definitions, then the event) to a decoder.
    fn round_trip(enc: &mut Encoder, dec: &mut Decoder, ev: &RimFastEvent) -> (usize, RimFastEvent) {
        let mut records: Vec<Vec<u8>> = Vec::new();
        let bytes = enc
            .encode_ref(&ev.as_ref(), |r: &[u8]| {
                records.push(r.to_vec());
                Ok::<(), ()>(())
            })
            .expect("encode")
            .to_vec();
        let defines = records.len();
        records.push(bytes);
        let mut last = None;
        for r in &records {
            last = decode_event(dec, r).or(last);
        }
        (defines, last.expect("an event"))
    }

    /// Decodes one record from an aligned copy: the event it carries, None for a definition.
    fn decode_event(dec: &mut Decoder, bytes: &[u8]) -> Option<RimFastEvent> {
        let mut aligned = Box::new(AlignedRecord([0; RECORD_BYTES_MAX]));
        aligned.0[..bytes.len()].copy_from_slice(bytes);
        match dec.decode(&aligned.0[..bytes.len()]).expect("decode") {
            Decoded::Event(v) => Some(v.to_owned_event()),
            _ => None,
        }
    }

    /// An event of `node` and `status` with no metrics and no optional field.
    fn bare_event(node: Sym, status: Sym) -> SymEvent<'static> {
        SymEvent {
            node,
            event_id: None,
            timestamp: 1,
            metrics: &[],
            price: None,
            volume: None,
            stress: None,
            status,
            source_topic: None,
            publish_ns: 1,
        }
    }

    #[test]
    fn every_field_survives_and_strings_cross_once() {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new());
        let ev = sample();
        let (defines, back) = round_trip(&mut enc, &mut dec, &ev);
        assert_eq!(back, ev);
        assert_eq!(defines, 6, "node, status, topic and three metric names");
        let (defines, back) = round_trip(&mut enc, &mut dec, &ev);
        assert_eq!((defines, back), (0, ev), "the second time, only the event crosses");
    }

    #[test]
    fn a_stamp_passed_apart_replaces_the_events_own() {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new());
        let ev = sample();
        round_trip(&mut enc, &mut dec, &ev);
        let decode = |dec: &mut Decoder, bytes: &[u8]| decode_event(dec, bytes).expect("an event");
        let never = |_: &[u8]| Err::<(), ()>(());
        let bytes = enc.encode_ref_at(&ev.as_ref(), 777, never).expect("encode").to_vec();
        let back = decode(&mut dec, &bytes);
        assert_eq!(back.publish_ns, 777);
        assert_eq!(
            RimFastEvent {
                publish_ns: ev.publish_ns,
                ..back
            },
            ev,
            "nothing else changed"
        );
        let node = enc.lookup(SymbolKind::NodeId, &ev.rim_node_id).expect("interned");
        let status = enc.lookup(SymbolKind::Status, &ev.status).expect("interned");
        let sym = bare_event(node, status);
        let bytes = enc.encode_event_at(&sym, 888).expect("encode").to_vec();
        assert_eq!(decode(&mut dec, &bytes).publish_ns, 888);
    }

    #[test]
    fn events_with_unknown_or_wrong_kind_symbols_are_refused() {
        let mut enc = Encoder::new();
        let mut sink = |_: &[u8]| Ok::<(), ()>(());
        let node = enc.intern(SymbolKind::NodeId, "rim:a:b:c", &mut sink).expect("node");
        let ev = bare_event(node, node);
        assert_eq!(
            enc.encode_event(&ev).err(),
            Some(EventError::BadSymbol { field: "status" })
        );
        let bad = SymEvent { status: Sym(99), ..ev };
        assert_eq!(
            enc.encode_event(&bad).err(),
            Some(EventError::BadSymbol { field: "status" })
        );
    }

    #[test]
    fn an_invalid_definition_poisons_only_its_symbol() {
        let mut dec = Decoder::new();
        let rec = WireRecord::Define(WireDefine {
            sym: 1,
            kind: SymbolKind::NodeId as u8,
            text: b"rim:BAD:x:y",
        });
        let mut out = Box::new(AlignedRecord([0; RECORD_BYTES_MAX]));
        let mut scratch = Box::new([MaybeUninit::uninit(); 256]);
        let len = archive(&rec, &mut out, &mut scratch).expect("archive");
        let err = dec.decode(&out.0[..len]).expect_err("invalid node id");
        assert!(matches!(err, EventError::NodeId(_)), "{err}");
        assert_eq!(dec.symbol_count(), 1, "the number is taken");
        assert!(dec.resolve(Sym(1), SymbolKind::NodeId).is_none());
    }
}
