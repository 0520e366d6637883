//! The `Event` record, written and checked by hand in the layout rkyv archives it in.
//!
//! Events are the per-record hot path of every ring: the producer archives one per
//! publish and the consumer checks one per read. Through rkyv (`to_bytes_in_with_alloc`,
//! then `access` with bytecheck) that cost ~23 ns to write and ~23 ns to check an event
//! with four metrics (`cargo run --release -p rim-ring --example costs`), about half of
//! what a validated event adds to the bare ring's round trip. The layout is fixed but for
//! two slices, so both directions are a few bounds checks and little-endian loads and
//! stores at constant offsets here.
//!
//! The bytes are exactly rkyv 0.8's archive of `WireRecord::Event` (docs/design.md, "A
//! record's payload, byte by byte"): the constants below are checked against rkyv's own
//! archived types at compile time, and the tests hold both directions to rkyv's: the same
//! bytes written for any event, and the same records accepted under random corruption.
//! `Define` records, which cross once per string, stay on rkyv both ways.

use crate::event::METRICS_MAX;

use super::{ArchivedWireEvent, ArchivedWireMetric, ArchivedWireRecord, SymEvent, HAS_EVENT_ID, HAS_PRICE};
use super::{HAS_SOURCE_TOPIC, HAS_STRESS, HAS_VOLUME};

/// Bytes of the fixed part that ends every record payload (the archived `WireRecord`).
pub(crate) const FIXED_BYTES: usize = 80;
/// Bytes of one archived metric: `value` f64, `name` u32, `reserved` u32.
pub(crate) const METRIC_BYTES: usize = 16;

/// The enum tag of an event (a definition's is 0).
const TAG_EVENT: u8 = 1;

// Offsets in the fixed part. The variant's fields start after the one-byte tag, aligned
// to 8.
const VARIANT: usize = 8;
pub(crate) const PUBLISH_NS: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, publish_ns);
pub(crate) const TIMESTAMP: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, timestamp);
pub(crate) const PRICE: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, price);
pub(crate) const VOLUME: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, volume);
pub(crate) const STRESS: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, stress);
pub(crate) const NODE: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, node);
pub(crate) const STATUS: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, status);
pub(crate) const SOURCE_TOPIC: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, source_topic);
pub(crate) const FLAGS: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, flags);
/// A slice field: an `i32` offset from the field's own address, then a `u32` count.
const METRICS: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, metrics);
const EVENT_ID: usize = VARIANT + std::mem::offset_of!(ArchivedWireEvent<'static>, event_id);

/// Alignment rkyv requires of the fixed part and of the metrics' data.
const ALIGN: usize = 8;

// The layout docs/design.md gives, and rkyv's.
const _: () = {
    assert!(std::mem::size_of::<ArchivedWireRecord<'static>>() == FIXED_BYTES);
    assert!(std::mem::align_of::<ArchivedWireRecord<'static>>() == ALIGN);
    assert!(std::mem::size_of::<ArchivedWireEvent<'static>>() + VARIANT == FIXED_BYTES);
    assert!(std::mem::size_of::<ArchivedWireMetric>() == METRIC_BYTES);
    assert!(std::mem::align_of::<ArchivedWireMetric>() == ALIGN);
    assert!(std::mem::offset_of!(ArchivedWireMetric, value) == 0);
    assert!(std::mem::offset_of!(ArchivedWireMetric, name) == 8);
    assert!(PUBLISH_NS == 8 && TIMESTAMP == 16 && PRICE == 24 && VOLUME == 32 && STRESS == 40);
    assert!(NODE == 48 && STATUS == 52 && SOURCE_TOPIC == 56 && FLAGS == 60);
    assert!(METRICS == 64 && EVENT_ID == 72);
};

/// Most bytes an event record takes: all metrics and the longest `event_id`.
pub(crate) const EVENT_BYTES_MAX: usize =
    METRICS_MAX * METRIC_BYTES + crate::event::EVENT_ID_BYTES_MAX.next_multiple_of(ALIGN) + FIXED_BYTES;

const _: () = assert!(EVENT_BYTES_MAX <= crate::event::RECORD_BYTES_MAX);

/// The payload length of `ev`'s record: its metrics, its `event_id` padded to 8, the
/// fixed part. (`ev` is checked against the data model: at most [`METRICS_MAX`] metrics,
/// an `event_id` of at most 128 bytes, so this is at most [`EVENT_BYTES_MAX`].)
#[inline]
pub(crate) fn len_of(ev: &SymEvent<'_>) -> usize {
    layout(ev).1 + FIXED_BYTES
}

/// Where `event_id`'s data and the fixed part start: one computation for [`len_of`] and
/// [`write`], which must agree to the byte (a record committed longer than what was
/// written would carry an earlier lap's bytes).
#[inline]
fn layout(ev: &SymEvent<'_>) -> (usize, usize) {
    let event_id_at = ev.metrics.len() * METRIC_BYTES;
    let fixed_at = (event_id_at + ev.event_id.map_or(0, str::len)).next_multiple_of(ALIGN);
    (event_id_at, fixed_at)
}

/// Writes `ev`, already checked against the data model, into `out` (at least
/// [`len_of`]`(ev)` bytes; nothing is written into a shorter one) with `publish_ns` as its
/// stamp: the metrics, then `event_id` padded with zeros to 8, then the fixed part.
///
/// Stores only, one 8-byte store per word: `out` is a claimed stretch of a ring, written
/// in place, and each store waits in the store buffer until its line is this core's. Two
/// 4-byte fields share one store, so an event with four metrics is 18 stores, where field
/// by field it was 30.
pub(crate) fn write(out: &mut [u8], ev: &SymEvent<'_>, publish_ns: u64) {
    debug_assert_eq!(out.len(), len_of(ev));
    let count = ev.metrics.len();
    let event_id = ev.event_id.map_or(&[][..], str::as_bytes);
    let (event_id_at, fixed_at) = layout(ev);
    let Some((data, rest)) = out.split_at_mut_checked(fixed_at) else {
        return;
    };
    let Some(fixed) = rest.first_chunk_mut::<FIXED_BYTES>() else {
        return;
    };
    let (metrics, event_id_words) = data.split_at_mut(event_id_at);
    for (slot, &(name, value)) in metrics.chunks_exact_mut(METRIC_BYTES).zip(ev.metrics) {
        put_word(slot, 0, value.to_bits());
        // `name`, then the reserved word, zero.
        put_word(slot, 8, u64::from(name.0));
    }
    for (slot, chunk) in event_id_words.chunks_exact_mut(8).zip(event_id.chunks(8)) {
        let mut word = [0; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        slot.copy_from_slice(&word);
    }

    put_word(fixed, 0, u64::from(TAG_EVENT));
    put_word(fixed, PUBLISH_NS, publish_ns);
    put_word(fixed, TIMESTAMP, ev.timestamp as u64);
    put_word(fixed, PRICE, ev.price.unwrap_or(0.0).to_bits());
    put_word(fixed, VOLUME, ev.volume.unwrap_or(0.0).to_bits());
    put_word(fixed, STRESS, ev.stress.unwrap_or(0.0).to_bits());
    put_word(fixed, NODE, pair(ev.node.0, ev.status.0));
    put_word(
        fixed,
        SOURCE_TOPIC,
        pair(ev.source_topic.map_or(0, |s| s.0), presence_flags(ev)),
    );
    put_word(fixed, METRICS, slice_word(fixed_at, METRICS, 0, count));
    put_word(
        fixed,
        EVENT_ID,
        slice_word(fixed_at, EVENT_ID, event_id_at, event_id.len()),
    );
}

// Fields written in pairs, one word each.
const _: () = assert!(
    STATUS == NODE + 4 && FLAGS == SOURCE_TOPIC + 4 && NODE.is_multiple_of(8) && SOURCE_TOPIC.is_multiple_of(8)
);

fn presence_flags(ev: &SymEvent<'_>) -> u32 {
    let mut flags = 0;
    for (present, flag) in [
        (ev.event_id.is_some(), HAS_EVENT_ID),
        (ev.price.is_some(), HAS_PRICE),
        (ev.volume.is_some(), HAS_VOLUME),
        (ev.stress.is_some(), HAS_STRESS),
        (ev.source_topic.is_some(), HAS_SOURCE_TOPIC),
    ] {
        if present {
            flags |= flag;
        }
    }
    flags
}

/// One little-endian word at `at` (an 8-aligned offset) of `out`.
#[inline]
fn put_word(out: &mut [u8], at: usize, word: u64) {
    out[at..at + 8].copy_from_slice(&word.to_le_bytes());
}

/// Two 4-byte fields, `low` first in memory.
#[inline]
fn pair(low: u32, high: u32) -> u64 {
    u64::from(low) | u64::from(high) << 32
}

/// A slice field at `field` pointing at payload byte `data_at`: the `i32` offset from the
/// field's own address, then the count (both fit: a record is at most 4 KiB).
fn slice_word(fixed_at: usize, field: usize, data_at: usize, count: usize) -> u64 {
    let rel = data_at as i32 - (fixed_at + field) as i32;
    pair(rel as u32, count as u32)
}

/// An event record whose structure passed the checks rkyv's `access` makes: its fields
/// can be read, nothing about them is checked yet.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    /// The fixed part.
    pub fixed: &'a [u8; FIXED_BYTES],
    /// The metrics' data, [`METRIC_BYTES`] each.
    pub metrics: &'a [u8],
    /// `event_id`'s bytes.
    pub event_id: &'a [u8],
}

/// A payload's fixed part, if the payload can hold one where rkyv requires it (at its
/// end, aligned to 8 in memory); `None` otherwise.
fn fixed_part(bytes: &[u8]) -> Option<&[u8; FIXED_BYTES]> {
    let fixed_at = bytes.len().checked_sub(FIXED_BYTES)?;
    if (bytes.as_ptr() as usize).wrapping_add(fixed_at) % ALIGN != 0 {
        return None;
    }
    bytes[fixed_at..].first_chunk::<FIXED_BYTES>()
}

/// What a record payload is, as far as the hand check goes.
pub(crate) enum Shape<'a> {
    /// An event whose structure passed.
    Event(Parts<'a>),
    /// An event (its tag says so) whose structure breaks the rules.
    BadEvent,
    /// Not an event: rkyv's `access` decides (a definition, or something it refuses).
    Other,
}

/// Sorts a payload: an event (its fixed part's tag is [`TAG_EVENT`]) gets the structural
/// check, the rules rkyv's `access` applies to it: the metrics' data lies in the payload
/// before the fixed part, aligned to 8; `event_id`'s data lies after the metrics' data and
/// before the fixed part; an empty slice's position obeys the same bounds.
pub(crate) fn shape(bytes: &[u8]) -> Shape<'_> {
    match fixed_part(bytes) {
        Some(fixed) if fixed[0] == TAG_EVENT => parts(bytes, fixed).map_or(Shape::BadEvent, Shape::Event),
        _ => Shape::Other,
    }
}

/// [`shape`]'s check of an event whose fixed part (at the end of `bytes`) is `fixed`.
fn parts<'a>(bytes: &'a [u8], fixed: &'a [u8; FIXED_BYTES]) -> Option<Parts<'a>> {
    let fixed_at = bytes.len() - FIXED_BYTES;
    let base = bytes.as_ptr() as usize;
    let (m_start, m_end) = slice_range(fixed, fixed_at, METRICS, METRIC_BYTES, 0)?;
    if base.wrapping_add(m_start) % ALIGN != 0 {
        return None;
    }
    let (e_start, e_end) = slice_range(fixed, fixed_at, EVENT_ID, 1, m_end)?;
    Some(Parts {
        fixed,
        metrics: bytes.get(m_start..m_end)?,
        event_id: bytes.get(e_start..e_end)?,
    })
}

/// The byte range a slice field points at, if it lies within `[from, fixed_at)`.
fn slice_range(
    fixed: &[u8; FIXED_BYTES],
    fixed_at: usize,
    field: usize,
    elem_bytes: usize,
    from: usize,
) -> Option<(usize, usize)> {
    let rel = u32_at(fixed, field) as i32;
    let count = u32_at(fixed, field + 4);
    // Positions fit easily in i64: a payload is at most 4 KiB, `rel` and `count` 32-bit.
    let start = (fixed_at + field) as i64 + i64::from(rel);
    let end = start + i64::from(count) * elem_bytes as i64;
    if start < from as i64 || end > fixed_at as i64 {
        return None;
    }
    Some((start as usize, end as usize))
}

/// Reads the `u64` at `at` of a fixed part.
#[inline]
pub(crate) fn u64_at(fixed: &[u8; FIXED_BYTES], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&fixed[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Reads the `u32` at `at` of a fixed part.
#[inline]
pub(crate) fn u32_at(fixed: &[u8; FIXED_BYTES], at: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&fixed[at..at + 4]);
    u32::from_le_bytes(w)
}

/// One metric's (name symbol number, value) from its [`METRIC_BYTES`].
#[inline]
pub(crate) fn metric(entry: &[u8]) -> (u32, f64) {
    let mut value = [0; 8];
    let mut name = [0; 4];
    value.copy_from_slice(&entry[..8]);
    name.copy_from_slice(&entry[8..12]);
    (u32::from_le_bytes(name), f64::from_le_bytes(value))
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use rkyv::api::low::access;
    use rkyv::rancor::Failure;

    use super::super::{archive, AlignedRecord, Sym, WireEvent, WireMetric, WireRecord};
    use super::*;
    use crate::event::{EVENT_ID_BYTES_MAX, RECORD_BYTES_MAX};

    /// xorshift64*: reproducible cases without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn maybe_f64(&mut self) -> Option<f64> {
            (self.below(2) == 0).then(|| f64::from_bits(self.next() >> 2))
        }
    }

    /// What rkyv writes for `ev`: the oracle the hand-written layout must match.
    fn rkyv_bytes(ev: &SymEvent<'_>, publish_ns: u64) -> Vec<u8> {
        let metrics: Vec<WireMetric> = ev
            .metrics
            .iter()
            .map(|&(name, value)| WireMetric {
                value,
                name: name.0,
                reserved: 0,
            })
            .collect();
        let rec = WireRecord::Event(WireEvent {
            publish_ns,
            timestamp: ev.timestamp,
            price: ev.price.unwrap_or(0.0),
            volume: ev.volume.unwrap_or(0.0),
            stress: ev.stress.unwrap_or(0.0),
            node: ev.node.0,
            status: ev.status.0,
            source_topic: ev.source_topic.map_or(0, |s| s.0),
            flags: presence_flags(ev),
            metrics: &metrics,
            event_id: ev.event_id.unwrap_or("").as_bytes(),
        });
        let mut out = Box::new(AlignedRecord([0; RECORD_BYTES_MAX]));
        let mut scratch = Box::new([MaybeUninit::uninit(); 256]);
        let len = archive(&rec, &mut out, &mut scratch).expect("rkyv archives the event");
        out.0[..len].to_vec()
    }

    fn hand_bytes(ev: &SymEvent<'_>, publish_ns: u64) -> Vec<u8> {
        let mut out = vec![0xa5; len_of(ev)];
        write(&mut out, ev, publish_ns);
        out
    }

    /// A random event within the data model's limits (`id` holds its event id).
    fn random_event<'a>(rng: &mut Rng, metrics: &'a mut Vec<(Sym, f64)>, id: &'a mut String) -> SymEvent<'a> {
        metrics.clear();
        for i in 0..rng.below(METRICS_MAX as u64 + 1) {
            metrics.push((
                Sym(i as u32 + 1 + rng.below(1000) as u32 * 64),
                f64::from_bits(rng.next() >> 2),
            ));
        }
        id.clear();
        let id_len = rng.below(EVENT_ID_BYTES_MAX as u64 + 1);
        id.extend((0..id_len).map(|i| char::from(b'a' + (i % 26) as u8)));
        SymEvent {
            node: Sym(rng.next() as u32),
            event_id: (rng.below(2) == 0).then_some(id.as_str()),
            timestamp: rng.next() as i64,
            metrics,
            price: rng.maybe_f64(),
            volume: rng.maybe_f64(),
            stress: rng.maybe_f64(),
            status: Sym(rng.next() as u32),
            source_topic: (rng.below(2) == 0).then(|| Sym(rng.next() as u32)),
            publish_ns: 0,
        }
    }

    #[test]
    fn events_are_written_byte_for_byte_as_rkyv_archives_them() {
        let mut rng = Rng(0x5eed_0001);
        let (mut metrics, mut id) = (Vec::new(), String::new());
        for case in 0..5_000 {
            let ev = random_event(&mut rng, &mut metrics, &mut id);
            let stamp = rng.next();
            let hand = hand_bytes(&ev, stamp);
            assert_eq!(hand, rkyv_bytes(&ev, stamp), "case {case}: {ev:?}");
            assert!(hand.len() <= EVENT_BYTES_MAX);
        }
    }

    /// Copies `bytes` to `misalign` bytes past an 8-aligned address.
    fn placed(buf: &mut AlignedRecord, bytes: &[u8], misalign: usize) -> std::ops::Range<usize> {
        buf.0[misalign..misalign + bytes.len()].copy_from_slice(bytes);
        misalign..misalign + bytes.len()
    }

    /// The hand-written structural check accepts exactly what rkyv's `access` accepts,
    /// over valid events with their slice fields, tag, length and alignment corrupted.
    #[test]
    fn the_structure_check_accepts_exactly_what_rkyv_accepts() {
        let mut rng = Rng(0x5eed_0002);
        let (mut metrics, mut id) = (Vec::new(), String::new());
        let mut buf = Box::new(AlignedRecord([0; RECORD_BYTES_MAX]));
        let (mut accepted, mut refused) = (0, 0);
        for case in 0..200_000 {
            let ev = random_event(&mut rng, &mut metrics, &mut id);
            let mut bytes = hand_bytes(&ev, 1);
            let corruptions = rng.below(4);
            for _ in 0..corruptions {
                corrupt(&mut rng, &mut bytes);
            }
            let misalign = if rng.below(4) == 0 { rng.below(8) as usize } else { 0 };
            let range = placed(&mut buf, &bytes, misalign);
            let view = &buf.0[range];
            let rkyv_ok = access::<ArchivedWireRecord<'_>, Failure>(view).is_ok();
            let shape = shape(view);
            if matches!(shape, Shape::Other) {
                // Routed to rkyv itself; all that matters is that no event is missed.
                assert!(
                    !(rkyv_ok && view.len() >= FIXED_BYTES && view[view.len() - FIXED_BYTES] == TAG_EVENT),
                    "case {case}: rkyv accepts an event the check never sees"
                );
                continue;
            }
            let hand_ok = matches!(shape, Shape::Event(_));
            assert_eq!(hand_ok, rkyv_ok, "case {case}: misalign {misalign}, bytes {view:02x?}");
            if hand_ok {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both outcomes were exercised, often.
        assert!(
            accepted > 10_000 && refused > 10_000,
            "{accepted} accepted, {refused} refused"
        );
    }

    /// One corruption: a slice field's offset or count nudged or replaced, the tag
    /// changed, or the payload cut or grown at the front (which moves every slice).
    fn corrupt(rng: &mut Rng, bytes: &mut Vec<u8>) {
        let fixed_at = bytes.len().saturating_sub(FIXED_BYTES);
        let field = fixed_at + [METRICS, METRICS + 4, EVENT_ID, EVENT_ID + 4][rng.below(4) as usize];
        match rng.below(6) {
            0 | 1 => {
                let Some(word) = bytes.get_mut(field..field + 4) else {
                    return;
                };
                let v = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                let delta = rng.below(33) as i32 - 16;
                word.copy_from_slice(&v.wrapping_add(delta).to_le_bytes());
            }
            2 => {
                let Some(word) = bytes.get_mut(field..field + 4) else {
                    return;
                };
                word.copy_from_slice(&(rng.next() as u32).to_le_bytes());
            }
            3 => {
                if let Some(tag) = bytes.get_mut(fixed_at) {
                    *tag = rng.below(3) as u8;
                }
            }
            4 => {
                let cut = (rng.below(17) as usize).min(bytes.len());
                bytes.drain(..cut);
            }
            _ => {
                let grow = rng.below(17) as usize;
                bytes.splice(0..0, std::iter::repeat_n(0, grow));
            }
        }
    }
}
