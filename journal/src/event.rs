//! The journal payload: one RimFastEvent plus the daemon's facts (`publish_ns`,
//! `received_ms`), in a compact self-contained little-endian encoding.
//!
//! ```text
//! u8  version (= 1)
//! u8  flags: bit0 event_id, bit1 price, bit2 volume, bit3 stress, bit4 source_topic
//! i64 timestamp, u64 publish_ns, u64 received_ms
//! f64 price, f64 volume, f64 stress          (each only if its flag is set)
//! u16 len + rim_node_id                       (UTF-8)
//! u8  len + event_id                          (if flagged)
//! u8  len + status
//! u8  len + source_topic                      (if flagged)
//! u8  metric count, then per metric: u8 len + name, f64 value
//! ```
//!
//! Every length fits its prefix because the limits of [`rim_ring::event`] are below 256
//! (the node id, up to 256 bytes, has a u16). [`encode`] is plain byte copies into the
//! caller's buffer and never allocates: it runs on the hot shard. [`decode`] trusts nothing:
//! it bounds-checks every read, validates UTF-8, the data model's limits, the node-id
//! pattern and finiteness, and refuses trailing bytes. Metric-name uniqueness is the
//! ingest path's rule and is not re-checked here (it would make encoding quadratic).

use rim_ring::event::{
    EventError, RimNodeId, EVENT_ID_BYTES_MAX, METRICS_MAX, METRIC_NAME_BYTES_MAX, NODE_ID_BYTES_MAX,
    SOURCE_TOPIC_BYTES_MAX, STATUS_BYTES_MAX,
};
use rim_ring::RimFastEvent;
use thiserror::Error;

/// The encoding's version byte.
pub const EVENT_VERSION: u8 = 1;

const F_EVENT_ID: u8 = 1;
const F_PRICE: u8 = 1 << 1;
const F_VOLUME: u8 = 1 << 2;
const F_STRESS: u8 = 1 << 3;
const F_SOURCE_TOPIC: u8 = 1 << 4;
const F_ALL: u8 = F_EVENT_ID | F_PRICE | F_VOLUME | F_STRESS | F_SOURCE_TOPIC;

/// Version, flags, timestamp, publish_ns, received_ms.
const FIXED_BYTES: usize = 2 + 3 * 8;

/// The largest encoding of a valid event under [`rim_ring::event`]'s limits.
pub const EVENT_BYTES_MAX: usize = FIXED_BYTES
    + 3 * 8
    + (2 + NODE_ID_BYTES_MAX)
    + (1 + EVENT_ID_BYTES_MAX)
    + (1 + STATUS_BYTES_MAX)
    + (1 + SOURCE_TOPIC_BYTES_MAX)
    + 1
    + METRICS_MAX * (1 + METRIC_NAME_BYTES_MAX + 8);

/// Everything of an event but its metrics, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventHead<'a> {
    /// `rim_node_id`.
    pub rim_node_id: &'a str,
    /// `event_id`.
    pub event_id: Option<&'a str>,
    /// `timestamp`: event time, epoch ms.
    pub timestamp: i64,
    /// Producer's CLOCK_MONOTONIC at publish, ns (0 when unknown).
    pub publish_ns: u64,
    /// When the daemon accepted the event, epoch ms.
    pub received_ms: u64,
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
}

/// Why [`encode`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small ([`EVENT_BYTES_MAX`] always suffices).
    #[error("output buffer of {have} bytes is too small (need at least {need})")]
    BufferTooSmall {
        /// Bytes needed so far.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The event breaks a data-model rule.
    #[error("invalid event: {0}")]
    Event(#[from] EventError),
}

/// Why [`decode`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before the field at `at` (needing `need` bytes).
    #[error("event truncated at byte {at}: {need} more bytes needed, {len} total")]
    Truncated {
        /// Offset of the field.
        at: usize,
        /// Bytes the field needs.
        need: usize,
        /// Length of the input.
        len: usize,
    },
    /// Unknown version byte.
    #[error("unknown event encoding version {0} (expected {EVENT_VERSION})")]
    Version(u8),
    /// Unknown flag bits.
    #[error("unknown event flags {0:#04x}")]
    Flags(u8),
    /// A string is not UTF-8.
    #[error("field {field} is not valid UTF-8")]
    Utf8 {
        /// The field.
        field: &'static str,
    },
    /// The event breaks a data-model rule.
    #[error("invalid event: {0}")]
    Event(#[from] EventError),
    /// Bytes follow the last metric.
    #[error("{extra} trailing bytes after the event")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

/// Output cursor: every put is bounds-checked, nothing allocates.
struct Out<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Out<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.at + bytes.len();
        let Some(dst) = self.buf.get_mut(self.at..end) else {
            return Err(EncodeError::BufferTooSmall {
                need: end,
                have: self.buf.len(),
            });
        };
        dst.copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    #[inline]
    fn put_f64(&mut self, v: Option<f64>, field: &'static str) -> Result<(), EncodeError> {
        match v {
            Some(x) if !x.is_finite() => Err(EventError::NotFinite { field }.into()),
            Some(x) => self.put(&x.to_le_bytes()),
            None => Ok(()),
        }
    }

    /// A string with a one-byte length prefix, at most `max` (< 256) bytes.
    #[inline]
    fn put_str8(&mut self, s: &str, field: &'static str, max: usize) -> Result<(), EncodeError> {
        if s.len() > max {
            return Err(EventError::TooLong {
                field,
                len: s.len(),
                max,
            }
            .into());
        }
        self.put(&[s.len() as u8])?;
        self.put(s.as_bytes())
    }
}

fn flags_of(head: &EventHead<'_>) -> u8 {
    let mut f = 0;
    f |= if head.event_id.is_some() { F_EVENT_ID } else { 0 };
    f |= if head.price.is_some() { F_PRICE } else { 0 };
    f |= if head.volume.is_some() { F_VOLUME } else { 0 };
    f |= if head.stress.is_some() { F_STRESS } else { 0 };
    f |= if head.source_topic.is_some() { F_SOURCE_TOPIC } else { 0 };
    f
}

/// Encodes one event into `out` and returns the bytes written. Never allocates.
///
/// Checks what decoding will check except metric-name uniqueness: string limits, the
/// node-id pattern, metric count and name lengths, finiteness.
pub fn encode<'m>(
    head: &EventHead<'_>,
    metrics: impl Iterator<Item = (&'m str, f64)>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    RimNodeId::parse(head.rim_node_id).map_err(EventError::from)?;
    encode_parsed(head, metrics, out)
}

/// [`encode`] for a head whose `rim_node_id` the caller has already parsed as a
/// RimNodeId: ingest's come from ring symbols the wire decoder checked on arrival, and
/// parsing each again was 4% of the hot shard. An id that is not one is written as is
/// (within its byte limit) and makes the record one [`decode`] refuses.
pub fn encode_parsed<'m>(
    head: &EventHead<'_>,
    metrics: impl Iterator<Item = (&'m str, f64)>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if head.rim_node_id.len() > NODE_ID_BYTES_MAX {
        return Err(EventError::TooLong {
            field: "rim_node_id",
            len: head.rim_node_id.len(),
            max: NODE_ID_BYTES_MAX,
        }
        .into());
    }
    let mut o = Out { buf: out, at: 0 };
    o.put(&[EVENT_VERSION, flags_of(head)])?;
    o.put(&head.timestamp.to_le_bytes())?;
    o.put(&head.publish_ns.to_le_bytes())?;
    o.put(&head.received_ms.to_le_bytes())?;
    o.put_f64(head.price, "price")?;
    o.put_f64(head.volume, "volume")?;
    o.put_f64(head.stress, "stress")?;
    o.put(&(head.rim_node_id.len() as u16).to_le_bytes())?;
    o.put(head.rim_node_id.as_bytes())?;
    if let Some(id) = head.event_id {
        o.put_str8(id, "event_id", EVENT_ID_BYTES_MAX)?;
    }
    o.put_str8(head.status, "status", STATUS_BYTES_MAX)?;
    if let Some(topic) = head.source_topic {
        o.put_str8(topic, "source_topic", SOURCE_TOPIC_BYTES_MAX)?;
    }
    let count_at = o.at;
    o.put(&[0])?;
    let mut count = 0usize;
    for (index, (name, value)) in metrics.enumerate() {
        if index == METRICS_MAX {
            return Err(EventError::TooManyMetrics {
                count: index + 1,
                max: METRICS_MAX,
            }
            .into());
        }
        if name.is_empty() {
            return Err(EventError::EmptyMetricName { index }.into());
        }
        o.put_str8(name, "critical_metrics name", METRIC_NAME_BYTES_MAX)?;
        if !value.is_finite() {
            return Err(EventError::NotFinite {
                field: "critical_metrics value",
            }
            .into());
        }
        o.put(&value.to_le_bytes())?;
        count = index + 1;
    }
    o.buf[count_at] = count as u8;
    Ok(o.at)
}

/// A decoded event borrowing the record's bytes; metrics stay encoded until iterated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRecord<'a> {
    /// `rim_node_id` (a valid RimNodeId).
    pub rim_node_id: &'a str,
    /// `event_id`.
    pub event_id: Option<&'a str>,
    /// `timestamp`: event time, epoch ms.
    pub timestamp: i64,
    /// Producer's CLOCK_MONOTONIC at publish, ns (0 when unknown).
    pub publish_ns: u64,
    /// When the daemon accepted the event, epoch ms.
    pub received_ms: u64,
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
    /// The metrics, still encoded (validated by [`decode`]).
    pub metrics_raw: &'a [u8],
    count: u8,
}

impl<'a> EventRecord<'a> {
    /// The metrics, in the order they were encoded.
    pub fn metrics(&self) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.metric_bytes()
            .map_while(|(name, value)| Some((std::str::from_utf8(name).ok()?, value)))
    }

    /// The metrics with their names as bytes, not checked as UTF-8 again (decoding
    /// checked them): for callers that only hash the names.
    pub fn metric_bytes(&self) -> impl Iterator<Item = (&'a [u8], f64)> + 'a {
        metric_bytes(self.metrics_raw, self.count)
    }

    /// How many metrics the event carries.
    pub fn metric_count(&self) -> usize {
        usize::from(self.count)
    }

    /// The head, borrowed (for re-encoding).
    pub fn head(&self) -> EventHead<'a> {
        EventHead {
            rim_node_id: self.rim_node_id,
            event_id: self.event_id,
            timestamp: self.timestamp,
            publish_ns: self.publish_ns,
            received_ms: self.received_ms,
            price: self.price,
            volume: self.volume,
            stress: self.stress,
            status: self.status,
            source_topic: self.source_topic,
        }
    }

    /// The owned event (allocates; for tools and tests). `received_ms` has no field there.
    pub fn to_event(&self) -> RimFastEvent {
        RimFastEvent {
            rim_node_id: self.rim_node_id.to_owned(),
            event_id: self.event_id.map(str::to_owned),
            timestamp: self.timestamp,
            critical_metrics: self.metrics().map(|(n, v)| (n.to_owned(), v)).collect(),
            price: self.price,
            volume: self.volume,
            stress: self.stress,
            status: self.status.to_owned(),
            source_topic: self.source_topic.map(str::to_owned),
            publish_ns: self.publish_ns,
        }
    }
}

/// The first `count` metrics of encoded `raw`: names as bytes (not checked as UTF-8) and
/// values; stops early at a malformed one (which [`decode`] has ruled out for a record's
/// own bytes).
fn metric_bytes(raw: &[u8], count: u8) -> impl Iterator<Item = (&[u8], f64)> {
    let mut rest = raw;
    (0..count).map_while(move |_| {
        let (&len, tail) = rest.split_first()?;
        let len = usize::from(len);
        let name = tail.get(..len)?;
        let value = f64::from_le_bytes(tail.get(len..len + 8)?.try_into().ok()?);
        rest = tail.get(len + 8..)?;
        Some((name, value))
    })
}

/// Input cursor: every take is bounds-checked.
struct In<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let bytes = self.buf.get(self.at..self.at + n).ok_or(DecodeError::Truncated {
            at: self.at,
            need: n,
            len: self.buf.len(),
        })?;
        self.at += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array8(&mut self) -> Result<[u8; 8], DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(a)
    }

    fn f64_if(&mut self, present: bool, field: &'static str) -> Result<Option<f64>, DecodeError> {
        if !present {
            return Ok(None);
        }
        let v = f64::from_le_bytes(self.array8()?);
        if !v.is_finite() {
            return Err(EventError::NotFinite { field }.into());
        }
        Ok(Some(v))
    }

    fn str_of(&mut self, len: usize, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        if len > max {
            return Err(EventError::TooLong { field, len, max }.into());
        }
        let bytes = self.take(len)?;
        // Texts are short and almost always ASCII: a word-wise ASCII check is about half
        // of `from_utf8`'s byte-wise walk on 5-20 bytes, and recovery's replay validates
        // five or more texts per event.
        if bytes.is_ascii() {
            // SAFETY: every byte is below 0x80, and a sequence of ASCII bytes is valid UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8 { field })
    }

    fn str8(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u8()?);
        self.str_of(len, field, max)
    }
}

/// Decodes and validates one event. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<EventRecord<'_>, DecodeError> {
    decode_checking(bytes, true)
}

/// [`decode`] for a record read back from the journal, its CRC verified: everything is
/// checked as by [`decode`] (bounds, UTF-8, limits, finiteness) except the node id's
/// RimNodeId pattern, which [`encode`] (or ingest's ring decoder, before
/// [`encode_parsed`]) checked before the record was written; recovery's replay spent 3% of
/// its feeding thread parsing it again. A record that breaks the pattern anyway decodes,
/// with its id as written.
pub fn decode_journaled(bytes: &[u8]) -> Result<EventRecord<'_>, DecodeError> {
    decode_checking(bytes, false)
}

fn decode_checking(bytes: &[u8], check_id: bool) -> Result<EventRecord<'_>, DecodeError> {
    let mut i = In { buf: bytes, at: 0 };
    let version = i.u8()?;
    if version != EVENT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let flags = i.u8()?;
    if flags & !F_ALL != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let timestamp = i64::from_le_bytes(i.array8()?);
    let publish_ns = u64::from_le_bytes(i.array8()?);
    let received_ms = u64::from_le_bytes(i.array8()?);
    let price = i.f64_if(flags & F_PRICE != 0, "price")?;
    let volume = i.f64_if(flags & F_VOLUME != 0, "volume")?;
    let stress = i.f64_if(flags & F_STRESS != 0, "stress")?;
    let mut len16 = [0u8; 2];
    len16.copy_from_slice(i.take(2)?);
    let rim_node_id = i.str_of(usize::from(u16::from_le_bytes(len16)), "rim_node_id", NODE_ID_BYTES_MAX)?;
    if check_id {
        RimNodeId::parse(rim_node_id).map_err(EventError::from)?;
    }
    let event_id = if flags & F_EVENT_ID != 0 {
        Some(i.str8("event_id", EVENT_ID_BYTES_MAX)?)
    } else {
        None
    };
    let status = i.str8("status", STATUS_BYTES_MAX)?;
    let source_topic = if flags & F_SOURCE_TOPIC != 0 {
        Some(i.str8("source_topic", SOURCE_TOPIC_BYTES_MAX)?)
    } else {
        None
    };
    let count = i.u8()?;
    if usize::from(count) > METRICS_MAX {
        return Err(EventError::TooManyMetrics {
            count: usize::from(count),
            max: METRICS_MAX,
        }
        .into());
    }
    let metrics_at = i.at;
    for index in 0..usize::from(count) {
        let name = i.str8("critical_metrics name", METRIC_NAME_BYTES_MAX)?;
        if name.is_empty() {
            return Err(EventError::EmptyMetricName { index }.into());
        }
        i.f64_if(true, "critical_metrics value")?;
    }
    if i.at != bytes.len() {
        return Err(DecodeError::Trailing {
            extra: bytes.len() - i.at,
        });
    }
    Ok(EventRecord {
        rim_node_id,
        event_id,
        timestamp,
        publish_ns,
        received_ms,
        price,
        volume,
        stress,
        status,
        source_topic,
        metrics_raw: &bytes[metrics_at..],
        count,
    })
}

/// The fields of an event record the roll-up reads per event, found without validating
/// texts: for records this process encoded itself (the daemon's in-process path), where
/// [`decode`]'s UTF-8 and node-id checks would repeat what [`encode`] just did. Every read
/// is still bounds-checked, so no input can make it panic; texts are returned as bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scan<'a> {
    /// `timestamp`: event time, epoch ms.
    pub timestamp: i64,
    /// When the daemon accepted the event, epoch ms.
    pub received_ms: u64,
    /// `price`.
    pub price: Option<f64>,
    /// `volume`.
    pub volume: Option<f64>,
    /// `stress`.
    pub stress: Option<f64>,
    /// `rim_node_id`, unvalidated.
    pub node_id: &'a [u8],
    /// `event_id`, unvalidated.
    pub event_id: Option<&'a [u8]>,
    /// `status`, unvalidated.
    pub status: &'a [u8],
    metrics_raw: &'a [u8],
    count: u8,
}

impl<'a> Scan<'a> {
    /// Metric names (unvalidated bytes) and values, in encoded order; stops early at a
    /// malformed metric.
    pub fn metrics(&self) -> impl Iterator<Item = (&'a [u8], f64)> + 'a {
        metric_bytes(self.metrics_raw, self.count)
    }

    /// How many metrics the record says it has.
    pub fn metric_count(&self) -> usize {
        usize::from(self.count)
    }
}

/// Scans a record this process encoded (see [`Scan`]); `None` if it is malformed.
pub fn scan(bytes: &[u8]) -> Option<Scan<'_>> {
    let mut i = In { buf: bytes, at: 0 };
    fn raw<'b>(i: &mut In<'b>) -> Option<&'b [u8]> {
        let n = usize::from(i.u8().ok()?);
        i.take(n).ok()
    }
    let f64_if = |i: &mut In<'_>, on: bool| -> Option<Option<f64>> {
        if on {
            Some(Some(f64::from_le_bytes(i.array8().ok()?)))
        } else {
            Some(None)
        }
    };
    if i.u8().ok()? != EVENT_VERSION {
        return None;
    }
    let flags = i.u8().ok()?;
    let timestamp = i64::from_le_bytes(i.array8().ok()?);
    let _publish_ns = i.array8().ok()?;
    let received_ms = u64::from_le_bytes(i.array8().ok()?);
    let price = f64_if(&mut i, flags & F_PRICE != 0)?;
    let volume = f64_if(&mut i, flags & F_VOLUME != 0)?;
    let stress = f64_if(&mut i, flags & F_STRESS != 0)?;
    let mut len16 = [0u8; 2];
    len16.copy_from_slice(i.take(2).ok()?);
    let node_id = i.take(usize::from(u16::from_le_bytes(len16))).ok()?;
    let event_id = if flags & F_EVENT_ID != 0 {
        Some(raw(&mut i)?)
    } else {
        None
    };
    let status = raw(&mut i)?;
    if flags & F_SOURCE_TOPIC != 0 {
        raw(&mut i)?;
    }
    let count = i.u8().ok()?;
    Some(Scan {
        timestamp,
        received_ms,
        price,
        volume,
        stress,
        node_id,
        event_id,
        status,
        metrics_raw: bytes.get(i.at..)?,
        count,
    })
}
