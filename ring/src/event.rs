//! The RimFastEvent: its owned JSON form, its borrowed producer form, and its archived
//! (rkyv) form as it crosses shared memory.
//!
//! This module owns every rule about what a valid event is (RimNodeId pattern, field
//! limits), so the ring, the daemon, the HTTP and Kafka paths all refuse the same things
//! with the same errors.
//!
//! # Archived layout
//! FLOORS.md measured that the archived layout decides most of the hot path's cost: a
//! `HashMap<String, f64>` costs ~47 ns to validate, a fixed layout ~3 ns. The wire form
//! therefore keeps the schema's numbers in fixed fields and packs every string (node id,
//! event id, status, source topic, then the metric names) into ONE text blob, with their
//! lengths beside it. Validation is then: rkyv bytecheck of three relative pointers plus
//! one UTF-8 check over the blob, and a handful of length sums, with no per-string pointer
//! chasing. The map `critical_metrics` travels as parallel `name_lens` / `values` arrays in
//! insertion order; names are unique (checked on both sides).

use std::collections::BTreeSet;
use std::fmt;
use std::mem::MaybeUninit;

use rkyv::api::low::{access, to_bytes_in_with_alloc};
use rkyv::rancor::Failure;
use rkyv::ser::allocator::SubAllocator;
use rkyv::ser::writer::Buffer;
use rkyv::with::InlineAsBox;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest accepted `rim_node_id`, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 256;
/// Most entries in `critical_metrics`.
pub const METRICS_MAX: usize = 64;
/// Longest metric name, in bytes.
pub const METRIC_NAME_BYTES_MAX: usize = 64;
/// Longest `status`, in bytes.
pub const STATUS_BYTES_MAX: usize = 64;
/// Longest `event_id`, in bytes.
pub const EVENT_ID_BYTES_MAX: usize = 128;
/// Longest `source_topic`, in bytes (Kafka's own topic-name limit).
pub const SOURCE_TOPIC_BYTES_MAX: usize = 249;
/// Largest archived record, in bytes.
pub const RECORD_BYTES_MAX: usize = 4096;

const NODE_TYPE_BYTES_MAX: usize = 64;
const NAMESPACE_BYTES_MAX: usize = 64;
const LOCAL_ID_BYTES_MAX: usize = 128;

/// Pattern of a RimNodeId's `nodeType` and `namespace` parts.
pub const NODE_PART_PATTERN: &str = "[a-z0-9_-]{1,64}";
/// Pattern of a RimNodeId's `localId` part.
pub const LOCAL_ID_PATTERN: &str = "[A-Za-z0-9_.:-]{1,128}";
/// Pattern of a whole RimNodeId.
pub const NODE_ID_PATTERN: &str = "rim:{nodeType}:{namespace}:{localId}";

/// Why a `rim_node_id` was refused. Every variant names the part and the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The id does not start with `rim:` or lacks one of the three parts.
    #[error("rim_node_id must look like {NODE_ID_PATTERN}")]
    Shape,
    /// A part is empty, too long, or holds a character outside its pattern.
    #[error("rim_node_id part {part} must match {pattern}")]
    Part {
        /// `nodeType`, `namespace` or `localId`.
        part: &'static str,
        /// The regular expression the part must match.
        pattern: &'static str,
    },
}

/// The three parts of a valid RimNodeId, borrowed from the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RimNodeId<'a> {
    /// `nodeType`, `[a-z0-9_-]{1,64}`.
    pub node_type: &'a str,
    /// `namespace`, `[a-z0-9_-]{1,64}`.
    pub namespace: &'a str,
    /// `localId`, `[A-Za-z0-9_.:-]{1,128}`.
    pub local_id: &'a str,
}

impl<'a> RimNodeId<'a> {
    /// Parses `rim:{nodeType}:{namespace}:{localId}`; `localId` may itself contain `:`.
    pub fn parse(id: &'a str) -> Result<Self, NodeIdError> {
        let rest = id.strip_prefix("rim:").ok_or(NodeIdError::Shape)?;
        let (node_type, rest) = rest.split_once(':').ok_or(NodeIdError::Shape)?;
        let (namespace, local_id) = rest.split_once(':').ok_or(NodeIdError::Shape)?;
        check_part(node_type, "nodeType", NODE_PART_PATTERN, NODE_TYPE_BYTES_MAX, is_part_byte)?;
        check_part(namespace, "namespace", NODE_PART_PATTERN, NAMESPACE_BYTES_MAX, is_part_byte)?;
        check_part(local_id, "localId", LOCAL_ID_PATTERN, LOCAL_ID_BYTES_MAX, is_local_id_byte)?;
        Ok(Self { node_type, namespace, local_id })
    }
}

fn is_part_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

fn is_local_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn check_part(
    part: &str,
    name: &'static str,
    pattern: &'static str,
    max: usize,
    allowed: fn(u8) -> bool,
) -> Result<(), NodeIdError> {
    let ok = !part.is_empty() && part.len() <= max && part.bytes().all(allowed);
    if ok {
        Ok(())
    } else {
        Err(NodeIdError::Part { part: name, pattern })
    }
}

/// Why an event was refused, by the producer before publishing or by the consumer after
/// reading it from an untrusted segment. Carries only static data: building one never
/// allocates, so refusing is as cheap as accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EventError {
    /// `rim_node_id` is not a RimNodeId.
    #[error("field rim_node_id: {0}")]
    NodeId(#[from] NodeIdError),
    /// A string field is longer than its limit.
    #[error("field {field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// The field's schema name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// `critical_metrics` has more entries than [`METRICS_MAX`].
    #[error("field critical_metrics has {count} entries, more than the limit of {max}")]
    TooManyMetrics {
        /// Entries given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A metric name is empty.
    #[error("field critical_metrics: metric {index} has an empty name")]
    EmptyMetricName {
        /// Position of the metric.
        index: usize,
    },
    /// Two metrics share a name.
    #[error("field critical_metrics: metric {index} repeats an earlier name")]
    DuplicateMetric {
        /// Position of the second occurrence.
        index: usize,
    },
    /// A number is NaN or infinite.
    #[error("field {field} must be a finite number")]
    NotFinite {
        /// The field's schema name.
        field: &'static str,
    },
    /// The archived record would exceed [`RECORD_BYTES_MAX`].
    #[error("record is larger than {max} bytes")]
    RecordTooLarge {
        /// The limit.
        max: usize,
    },
    /// The bytes are not a well-formed archived RimFastEvent.
    #[error("archived record is malformed: {0}")]
    Malformed(&'static str),
}

/// One `critical_metrics` entry, whatever the caller stores it as.
pub trait Metric {
    /// The metric's name.
    fn name(&self) -> &str;
    /// The metric's value.
    fn value(&self) -> f64;
}

impl Metric for (&str, f64) {
    fn name(&self) -> &str {
        self.0
    }
    fn value(&self) -> f64 {
        self.1
    }
}

impl Metric for (String, f64) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> f64 {
        self.1
    }
}

/// A RimFastEvent borrowed from the producer's own memory: what a feed handler publishes
/// without allocating.
#[derive(Debug)]
pub struct EventRef<'a, M: Metric = (&'a str, f64)> {
    /// `rim_node_id`.
    pub rim_node_id: &'a str,
    /// `event_id`.
    pub event_id: Option<&'a str>,
    /// `timestamp`: event time, epoch milliseconds.
    pub timestamp: i64,
    /// `critical_metrics`, names unique.
    pub critical_metrics: &'a [M],
    /// `price`.
    pub price: Option<f64>,
    /// `volume`.
    pub volume: Option<f64>,
    /// `stress`.
    pub stress: Option<f64>,
    /// `status`.
    pub status: &'a str,
    /// `source_topic`.
    pub source_topic: Option<&'a str>,
    /// Producer's CLOCK_MONOTONIC at publish, ns; set by the ring when 0.
    pub publish_ns: u64,
}

// Manual impls: every field is a reference or Copy, whatever `M` is.
impl<M: Metric> Clone for EventRef<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: Metric> Copy for EventRef<'_, M> {}

impl<M: Metric> EventRef<'_, M> {
    /// Checks every rule of the data model; the same rules the consumer applies.
    pub fn validate(&self) -> Result<(), EventError> {
        check_len("rim_node_id", self.rim_node_id.len(), NODE_ID_BYTES_MAX)?;
        RimNodeId::parse(self.rim_node_id)?;
        if let Some(id) = self.event_id {
            check_len("event_id", id.len(), EVENT_ID_BYTES_MAX)?;
        }
        check_len("status", self.status.len(), STATUS_BYTES_MAX)?;
        if let Some(topic) = self.source_topic {
            check_len("source_topic", topic.len(), SOURCE_TOPIC_BYTES_MAX)?;
        }
        check_optional_finite("price", self.price)?;
        check_optional_finite("volume", self.volume)?;
        check_optional_finite("stress", self.stress)?;
        check_metrics(self.critical_metrics.iter().map(|m| (m.name(), m.value())), self.critical_metrics.len())
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), EventError> {
    if len > max {
        Err(EventError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

fn check_optional_finite(field: &'static str, v: Option<f64>) -> Result<(), EventError> {
    match v {
        Some(x) if !x.is_finite() => Err(EventError::NotFinite { field }),
        _ => Ok(()),
    }
}

/// Checks count, name lengths, finiteness and uniqueness. Uniqueness is quadratic over at
/// most [`METRICS_MAX`] short names: cheaper than hashing for the usual handful, bounded
/// (~2k comparisons) at the limit.
fn check_metrics<'m>(
    metrics: impl Iterator<Item = (&'m str, f64)> + Clone,
    count: usize,
) -> Result<(), EventError> {
    if count > METRICS_MAX {
        return Err(EventError::TooManyMetrics { count, max: METRICS_MAX });
    }
    for (index, (name, value)) in metrics.clone().enumerate() {
        if name.is_empty() {
            return Err(EventError::EmptyMetricName { index });
        }
        check_len("critical_metrics name", name.len(), METRIC_NAME_BYTES_MAX)?;
        if !value.is_finite() {
            return Err(EventError::NotFinite { field: "critical_metrics value" });
        }
        if metrics.clone().take(index).any(|(earlier, _)| earlier == name) {
            return Err(EventError::DuplicateMetric { index });
        }
    }
    Ok(())
}

const HAS_EVENT_ID: u16 = 1;
const HAS_PRICE: u16 = 1 << 1;
const HAS_VOLUME: u16 = 1 << 2;
const HAS_STRESS: u16 = 1 << 3;
const HAS_SOURCE_TOPIC: u16 = 1 << 4;
const KNOWN_FLAGS: u16 = HAS_EVENT_ID | HAS_PRICE | HAS_VOLUME | HAS_STRESS | HAS_SOURCE_TOPIC;

/// The serialized shape of an event (see the module docs for why it looks like this).
#[derive(rkyv::Archive, rkyv::Serialize)]
struct WireEvent<'a> {
    publish_ns: u64,
    timestamp: i64,
    price: f64,
    volume: f64,
    stress: f64,
    node_id_len: u16,
    event_id_len: u16,
    status_len: u16,
    source_topic_len: u16,
    flags: u16,
    #[rkyv(with = InlineAsBox)]
    name_lens: &'a [u8],
    #[rkyv(with = InlineAsBox)]
    values: &'a [f64],
    #[rkyv(with = InlineAsBox)]
    text: &'a str,
}

/// Reusable buffers for encoding, sized once so that encoding never allocates.
pub struct Encoder {
    text: String,
    name_lens: Vec<u8>,
    values: Vec<f64>,
    out: Box<AlignedRecord>,
    scratch: Box<[MaybeUninit<u8>; 256]>,
}

/// A record-sized buffer aligned for rkyv (16 covers every archived field here).
#[repr(C, align(16))]
pub struct AlignedRecord(pub [u8; RECORD_BYTES_MAX]);

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

const TEXT_BYTES_MAX: usize = NODE_ID_BYTES_MAX
    + EVENT_ID_BYTES_MAX
    + STATUS_BYTES_MAX
    + SOURCE_TOPIC_BYTES_MAX
    + METRICS_MAX * METRIC_NAME_BYTES_MAX;

impl Encoder {
    /// Allocates every buffer encoding will need, once.
    pub fn new() -> Self {
        Self {
            text: String::with_capacity(TEXT_BYTES_MAX),
            name_lens: Vec::with_capacity(METRICS_MAX),
            values: Vec::with_capacity(METRICS_MAX),
            out: Box::new(AlignedRecord([0; RECORD_BYTES_MAX])),
            scratch: Box::new([MaybeUninit::uninit(); 256]),
        }
    }

    /// Validates `ev` and archives it; returns the archived bytes (8-byte aligned).
    pub fn encode<M: Metric>(&mut self, ev: &EventRef<'_, M>) -> Result<&[u8], EventError> {
        ev.validate()?;
        self.encode_validated(ev)
    }

    /// Archives an event that [`EventRef::validate`] accepted.
    fn encode_validated<M: Metric>(&mut self, ev: &EventRef<'_, M>) -> Result<&[u8], EventError> {
        self.fill_columns(ev);
        let wire = WireEvent {
            publish_ns: ev.publish_ns,
            timestamp: ev.timestamp,
            price: ev.price.unwrap_or(0.0),
            volume: ev.volume.unwrap_or(0.0),
            stress: ev.stress.unwrap_or(0.0),
            node_id_len: len_u16(ev.rim_node_id),
            event_id_len: ev.event_id.map_or(0, len_u16),
            status_len: len_u16(ev.status),
            source_topic_len: ev.source_topic.map_or(0, len_u16),
            flags: presence_flags(ev),
            name_lens: &self.name_lens,
            values: &self.values,
            text: &self.text,
        };
        let written = to_bytes_in_with_alloc::<_, _, Failure>(
            &wire,
            Buffer::from(&mut self.out.0[..]),
            SubAllocator::new(&mut self.scratch[..]),
        )
        .map_err(|_| EventError::RecordTooLarge { max: RECORD_BYTES_MAX })?
        .len();
        Ok(&self.out.0[..written])
    }

    fn fill_columns<M: Metric>(&mut self, ev: &EventRef<'_, M>) {
        self.text.clear();
        self.name_lens.clear();
        self.values.clear();
        self.text.push_str(ev.rim_node_id);
        self.text.push_str(ev.event_id.unwrap_or(""));
        self.text.push_str(ev.status);
        self.text.push_str(ev.source_topic.unwrap_or(""));
        for m in ev.critical_metrics {
            self.text.push_str(m.name());
            // Validation bounded names to METRIC_NAME_BYTES_MAX (64), so this fits a u8.
            self.name_lens.push(m.name().len() as u8);
            self.values.push(m.value());
        }
    }
}

/// Length of a string that validation already bounded to far below `u16::MAX`.
fn len_u16(s: &str) -> u16 {
    u16::try_from(s.len()).unwrap_or(u16::MAX)
}

fn presence_flags<M: Metric>(ev: &EventRef<'_, M>) -> u16 {
    let mut flags = 0;
    if ev.event_id.is_some() {
        flags |= HAS_EVENT_ID;
    }
    if ev.price.is_some() {
        flags |= HAS_PRICE;
    }
    if ev.volume.is_some() {
        flags |= HAS_VOLUME;
    }
    if ev.stress.is_some() {
        flags |= HAS_STRESS;
    }
    if ev.source_topic.is_some() {
        flags |= HAS_SOURCE_TOPIC;
    }
    flags
}

/// A validated archived event: every accessor is safe to call and cannot fail.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    wire: &'a ArchivedWireEvent<'a>,
    node_id: &'a str,
    event_id: &'a str,
    status: &'a str,
    source_topic: &'a str,
    names: &'a str,
}

impl<'a> EventView<'a> {
    /// Validates archived bytes from an untrusted source: rkyv bytecheck (bounds,
    /// alignment, UTF-8), then every rule of the data model. `bytes` must start 8-byte
    /// aligned, as every ring record does.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, EventError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(EventError::RecordTooLarge { max: RECORD_BYTES_MAX });
        }
        let wire = access::<ArchivedWireEvent<'_>, Failure>(bytes)
            .map_err(|_| EventError::Malformed("rkyv validation failed"))?;
        let view = Self::split_text(wire)?;
        view.check_rules()?;
        Ok(view)
    }

    fn split_text(wire: &'a ArchivedWireEvent<'a>) -> Result<Self, EventError> {
        if wire.flags.to_native() & !KNOWN_FLAGS != 0 {
            return Err(EventError::Malformed("unknown presence flags"));
        }
        if wire.name_lens.len() != wire.values.len() {
            return Err(EventError::Malformed("metric names and values differ in count"));
        }
        let text: &str = wire.text.get();
        let mut rest = text;
        let node_id = take_str(&mut rest, wire.node_id_len.to_native())?;
        let event_id = take_str(&mut rest, wire.event_id_len.to_native())?;
        let status = take_str(&mut rest, wire.status_len.to_native())?;
        let source_topic = take_str(&mut rest, wire.source_topic_len.to_native())?;
        let names_len: usize = wire.name_lens.iter().map(|&l| usize::from(l)).sum();
        if names_len != rest.len() {
            return Err(EventError::Malformed("text length does not match the field lengths"));
        }
        Ok(Self { wire, node_id, event_id, status, source_topic, names: rest })
    }

    fn check_rules(&self) -> Result<(), EventError> {
        check_len("rim_node_id", self.node_id.len(), NODE_ID_BYTES_MAX)?;
        RimNodeId::parse(self.node_id)?;
        check_len("event_id", self.event_id.len(), EVENT_ID_BYTES_MAX)?;
        check_len("status", self.status.len(), STATUS_BYTES_MAX)?;
        check_len("source_topic", self.source_topic.len(), SOURCE_TOPIC_BYTES_MAX)?;
        self.check_names_on_boundaries()?;
        check_optional_finite("price", self.price())?;
        check_optional_finite("volume", self.volume())?;
        check_optional_finite("stress", self.stress())?;
        check_metrics(self.metrics(), self.metric_count())
    }

    fn check_names_on_boundaries(&self) -> Result<(), EventError> {
        let mut at = 0usize;
        for &l in self.wire.name_lens.iter() {
            at += usize::from(l);
            if !self.names.is_char_boundary(at) {
                return Err(EventError::Malformed("metric name splits a UTF-8 character"));
            }
        }
        Ok(())
    }

    fn has(&self, flag: u16) -> bool {
        self.wire.flags.to_native() & flag != 0
    }

    /// `rim_node_id`.
    pub fn rim_node_id(&self) -> &'a str {
        self.node_id
    }
    /// `event_id`.
    pub fn event_id(&self) -> Option<&'a str> {
        self.has(HAS_EVENT_ID).then_some(self.event_id)
    }
    /// `timestamp`, epoch ms.
    pub fn timestamp(&self) -> i64 {
        self.wire.timestamp.to_native()
    }
    /// `price`.
    pub fn price(&self) -> Option<f64> {
        self.has(HAS_PRICE).then(|| self.wire.price.to_native())
    }
    /// `volume`.
    pub fn volume(&self) -> Option<f64> {
        self.has(HAS_VOLUME).then(|| self.wire.volume.to_native())
    }
    /// `stress`.
    pub fn stress(&self) -> Option<f64> {
        self.has(HAS_STRESS).then(|| self.wire.stress.to_native())
    }
    /// `status`.
    pub fn status(&self) -> &'a str {
        self.status
    }
    /// `source_topic`.
    pub fn source_topic(&self) -> Option<&'a str> {
        self.has(HAS_SOURCE_TOPIC).then_some(self.source_topic)
    }
    /// Producer's CLOCK_MONOTONIC at publish, ns.
    pub fn publish_ns(&self) -> u64 {
        self.wire.publish_ns.to_native()
    }
    /// Number of `critical_metrics` entries.
    pub fn metric_count(&self) -> usize {
        self.wire.values.len()
    }
    /// `critical_metrics` in the producer's order.
    pub fn metrics(&self) -> Metrics<'a> {
        Metrics { names: self.names, lens: &self.wire.name_lens, values: &self.wire.values, at: 0 }
    }
    /// Copies the event into its owned form.
    pub fn to_owned_event(&self) -> RimFastEvent {
        RimFastEvent {
            rim_node_id: self.node_id.to_owned(),
            event_id: self.event_id().map(str::to_owned),
            timestamp: self.timestamp(),
            critical_metrics: self.metrics().map(|(n, v)| (n.to_owned(), v)).collect(),
            price: self.price(),
            volume: self.volume(),
            stress: self.stress(),
            status: self.status.to_owned(),
            source_topic: self.source_topic().map(str::to_owned),
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

/// Takes `len` bytes off the front of `rest` as a string, refusing to split a character.
fn take_str<'a>(rest: &mut &'a str, len: u16) -> Result<&'a str, EventError> {
    let len = usize::from(len);
    if len > rest.len() || !rest.is_char_boundary(len) {
        return Err(EventError::Malformed("field length runs past the text or splits a character"));
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

/// Iterator over an archived event's metrics, in order.
#[derive(Clone)]
pub struct Metrics<'a> {
    names: &'a str,
    lens: &'a [u8],
    values: &'a [rkyv::rend::f64_le],
    at: usize,
}

impl<'a> Iterator for Metrics<'a> {
    type Item = (&'a str, f64);

    fn next(&mut self) -> Option<Self::Item> {
        let (&len, lens) = self.lens.split_first()?;
        let (&value, values) = self.values.split_first()?;
        let end = self.at + usize::from(len);
        // Boundaries were checked in `decode`; `get` keeps this total anyway.
        let name = self.names.get(self.at..end)?;
        self.lens = lens;
        self.values = values;
        self.at = end;
        Some((name, value.to_native()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.lens.len(), Some(self.lens.len()))
    }
}

/// A RimFastEvent that owns its data: the JSON form (field names exactly as the Avro
/// schema `com.z254.butterfly.hft.RimFastEvent`) and what tests and tools hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RimFastEvent {
    /// `rim_node_id`.
    pub rim_node_id: String,
    /// `event_id`.
    #[serde(default)]
    pub event_id: Option<String>,
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// `critical_metrics`, a JSON object of name → number; order kept.
    #[serde(serialize_with = "ser_metrics", deserialize_with = "de_metrics")]
    pub critical_metrics: Vec<(String, f64)>,
    /// `price`.
    #[serde(default)]
    pub price: Option<f64>,
    /// `volume`.
    #[serde(default)]
    pub volume: Option<f64>,
    /// `stress`.
    #[serde(default)]
    pub stress: Option<f64>,
    /// `status`.
    pub status: String,
    /// `source_topic`.
    #[serde(default)]
    pub source_topic: Option<String>,
    /// Producer's CLOCK_MONOTONIC at publish, ns (shared-memory path only; 0 when unset).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub publish_ns: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl RimFastEvent {
    /// Borrows the event for validation or publishing.
    pub fn as_ref(&self) -> EventRef<'_, (String, f64)> {
        EventRef {
            rim_node_id: &self.rim_node_id,
            event_id: self.event_id.as_deref(),
            timestamp: self.timestamp,
            critical_metrics: &self.critical_metrics,
            price: self.price,
            volume: self.volume,
            stress: self.stress,
            status: &self.status,
            source_topic: self.source_topic.as_deref(),
            publish_ns: self.publish_ns,
        }
    }

    /// Checks every rule of the data model.
    pub fn validate(&self) -> Result<(), EventError> {
        self.as_ref().validate()
    }
}

fn ser_metrics<S: Serializer>(metrics: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(metrics.len()))?;
    for (k, v) in metrics {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn de_metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    struct MetricsVisitor;
    impl<'de> Visitor<'de> for MetricsVisitor {
        type Value = Vec<(String, f64)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an object of at most {METRICS_MAX} metric name -> number entries")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(METRICS_MAX));
            let mut seen = BTreeSet::new();
            while let Some((k, v)) = map.next_entry::<String, f64>()? {
                if out.len() == METRICS_MAX {
                    return Err(serde::de::Error::custom(format_args!(
                        "critical_metrics has more than {METRICS_MAX} entries"
                    )));
                }
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format_args!(
                        "critical_metrics repeats the name {k:?}"
                    )));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(MetricsVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RimFastEvent {
        RimFastEvent {
            rim_node_id: "rim:equity:nyse:AAPL.O".into(),
            event_id: Some("e-1".into()),
            timestamp: 1_764_000_000_000,
            critical_metrics: vec![("bid".into(), 1.5), ("ask".into(), 1.6), ("λ".into(), -3.0)],
            price: Some(101.25),
            volume: None,
            stress: Some(0.5),
            status: "OK".into(),
            source_topic: None,
            publish_ns: 42,
        }
    }

    #[test]
    fn archived_round_trip_keeps_every_field() {
        let ev = sample();
        let mut enc = Encoder::new();
        let bytes = enc.encode(&ev.as_ref()).expect("encode").to_vec();
        let mut aligned = AlignedRecord([0; RECORD_BYTES_MAX]);
        aligned.0[..bytes.len()].copy_from_slice(&bytes);
        let view = EventView::decode(&aligned.0[..bytes.len()]).expect("decode");
        assert_eq!(view.to_owned_event(), ev);
    }

    #[test]
    fn json_uses_the_avro_field_names() {
        let json = serde_json::to_value(sample()).expect("json");
        for key in ["rim_node_id", "event_id", "timestamp", "critical_metrics", "price", "status"] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        // Through text (a Value would sort the map's keys): order is kept.
        let text = serde_json::to_string(&sample()).expect("text");
        let back: RimFastEvent = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, sample());
    }

    #[test]
    fn json_refuses_duplicate_metric_names() {
        let text = r#"{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{"x":1,"x":2},"status":"s"}"#;
        let err = serde_json::from_str::<RimFastEvent>(text).expect_err("duplicate");
        assert!(err.to_string().contains("repeats"), "{err}");
    }

    #[test]
    fn node_id_errors_name_the_part_and_pattern() {
        assert_eq!(RimNodeId::parse("rom:a:b:c"), Err(NodeIdError::Shape));
        assert_eq!(RimNodeId::parse("rim:a:b"), Err(NodeIdError::Shape));
        assert_eq!(
            RimNodeId::parse("rim:A:b:c"),
            Err(NodeIdError::Part { part: "nodeType", pattern: NODE_PART_PATTERN })
        );
        assert_eq!(
            RimNodeId::parse("rim:a::c"),
            Err(NodeIdError::Part { part: "namespace", pattern: NODE_PART_PATTERN })
        );
        assert_eq!(
            RimNodeId::parse("rim:a:b:c d"),
            Err(NodeIdError::Part { part: "localId", pattern: LOCAL_ID_PATTERN })
        );
        let ok = RimNodeId::parse("rim:a-1:b_2:X.y:z").expect("valid");
        assert_eq!(ok.local_id, "X.y:z");
        let msg = EventError::from(RimNodeId::parse("rim:a:B:c").unwrap_err()).to_string();
        assert!(msg.contains("namespace") && msg.contains(NODE_PART_PATTERN), "{msg}");
    }

    #[test]
    fn limits_are_enforced() {
        let mut ev = sample();
        ev.status = "s".repeat(STATUS_BYTES_MAX + 1);
        assert!(matches!(ev.validate(), Err(EventError::TooLong { field: "status", .. })));
        let mut ev = sample();
        ev.critical_metrics = (0..=METRICS_MAX).map(|i| (format!("m{i}"), 1.0)).collect();
        assert!(matches!(ev.validate(), Err(EventError::TooManyMetrics { .. })));
        let mut ev = sample();
        ev.critical_metrics = vec![("a".into(), 1.0), ("a".into(), 2.0)];
        assert_eq!(ev.validate(), Err(EventError::DuplicateMetric { index: 1 }));
        let mut ev = sample();
        ev.price = Some(f64::NAN);
        assert_eq!(ev.validate(), Err(EventError::NotFinite { field: "price" }));
        let mut ev = sample();
        ev.critical_metrics = (0..METRICS_MAX).map(|i| (format!("{i:0>64}"), 1.0)).collect();
        ev.validate().expect("64 metrics of 64 bytes are within limits");
        assert_eq!(
            Encoder::new().encode(&ev.as_ref()).err(),
            Some(EventError::RecordTooLarge { max: RECORD_BYTES_MAX })
        );
    }
}
