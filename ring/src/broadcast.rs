//! The broadcast ring: one writer (the daemon's decisions), any number of readers, each at
//! its own pace. The writer never waits for a reader; a reader that falls a whole ring
//! behind is told exactly how many records it missed, never handed a torn one.
//!
//! # Protocol (a seqlock per slot)
//! `capacity` slots of `16 + slot_bytes` bytes: a sequence word, a length word, the data.
//! Record number `s` goes to slot `s % capacity`. The writer stores the slot's sequence
//! as `2s + 1` (writing), fences, writes length and data with relaxed atomic stores, then
//! stores `2s + 2` with `Release` and advances `tail` to `s + 1` (`Release`). A reader
//! expecting `s` first checks it against the `tail` it last loaded, and loads `tail` again
//! (`Acquire`) only when `s` is not below it: nothing new while `s` is still not below, so
//! a caught-up reader polls `tail`, never the slot being written. Then it loads the
//! sequence (`Acquire`): `2s + 2` means ready, anything older means not yet, anything newer
//! means lapped. It copies the record out, fences (`Acquire`), and re-reads
//! the sequence; if it moved, the copy may be torn and the reader was lapped. Every word is
//! accessed atomically, so a racing copy is garbage that is detected, never undefined.
//!
//! Subscribers in other processes map the segment read-only (it is created with
//! [`Segment::create_memfd_for_readers`], sealed with `F_SEAL_FUTURE_WRITE`), so no
//! subscriber can forge a record for the others. They therefore cannot announce that
//! they sleep either: a parked reader sleeps in slices of
//! [`crate::wait::READ_ONLY_PARK_NS`] and the writer never makes a wake-up syscall.

use std::sync::Arc;

use thiserror::Error;

use crate::header::{self, Identity, HEADER_BYTES};
use crate::segment::{Segment, SegmentError};
use crate::sync::{fence, Ordering};

const SLOT_HEADER_BYTES: usize = 16;
/// Largest slot payload.
pub const SLOT_BYTES_MAX: usize = 64 * 1024;

/// What a reader gets instead of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The writer overwrote records this reader had not read; it skipped ahead.
    #[error("reader fell behind and missed {missed} records")]
    Lapped {
        /// How many records were lost to this reader.
        missed: u64,
    },
    /// The caller's buffer is smaller than the ring's slots.
    #[error("read buffer of {len} bytes is smaller than the slot size {slot_bytes}")]
    BufferTooSmall {
        /// Buffer length.
        len: usize,
        /// Slot size of the ring.
        slot_bytes: usize,
    },
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The record is larger than a slot.
    #[error("record of {len} bytes is larger than the slot size {slot_bytes}")]
    TooLarge {
        /// Record length.
        len: usize,
        /// Slot size.
        slot_bytes: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    slots: u64,
    slot_bytes: usize,
}

impl Geometry {
    fn new(slots: u64, slot_bytes: usize) -> Result<Self, SegmentError> {
        if !slots.is_power_of_two() || slots < 2 {
            return Err(SegmentError::BadSize {
                bytes: slots as usize,
                why: "slot count must be a power of two >= 2",
            });
        }
        if slot_bytes == 0 || !slot_bytes.is_multiple_of(8) || slot_bytes > SLOT_BYTES_MAX {
            return Err(SegmentError::BadSize {
                bytes: slot_bytes,
                why: "slot size must be a multiple of 8 up to 64 KiB",
            });
        }
        // Bounds the size arithmetic below: no header can make it overflow.
        let slots_max = (crate::segment::SEGMENT_BYTES_MAX - HEADER_BYTES) / (SLOT_HEADER_BYTES + slot_bytes);
        if slots > slots_max as u64 {
            return Err(SegmentError::BadSize {
                bytes: slots as usize,
                why: "too many slots for the largest segment",
            });
        }
        Ok(Self { slots, slot_bytes })
    }

    fn stride(&self) -> usize {
        SLOT_HEADER_BYTES + self.slot_bytes
    }

    fn slot_off(&self, seq: u64) -> usize {
        HEADER_BYTES + (seq & (self.slots - 1)) as usize * self.stride()
    }

    fn segment_bytes(&self) -> usize {
        (HEADER_BYTES + self.slots as usize * self.stride()).next_multiple_of(64)
    }
}

/// Segment bytes for a broadcast ring of `slots` slots of `slot_bytes`.
pub fn segment_bytes(slots: u64, slot_bytes: usize) -> Result<usize, SegmentError> {
    Ok(Geometry::new(slots, slot_bytes)?.segment_bytes())
}

/// Writes a fresh broadcast header. Done once by the creator, before sharing.
pub fn init(seg: &Segment, slots: u64, slot_bytes: usize) -> Result<(), SegmentError> {
    let geo = Geometry::new(slots, slot_bytes)?;
    if geo.segment_bytes() > seg.len() {
        return Err(SegmentError::Truncated {
            len: seg.len(),
            needed: geo.segment_bytes(),
        });
    }
    header::init(
        seg,
        &Identity {
            kind: header::KIND_BROADCAST,
            capacity: slots,
            slot_bytes: slot_bytes as u64,
        },
    );
    Ok(())
}

fn open_geometry(seg: &Segment) -> Result<Geometry, SegmentError> {
    let id = header::read_identity(seg, header::KIND_BROADCAST)?;
    let slot_bytes = usize::try_from(id.slot_bytes).map_err(|_| SegmentError::BadHeader("slot size"))?;
    let geo = Geometry::new(id.capacity, slot_bytes)?;
    if geo.segment_bytes() > seg.len() {
        return Err(SegmentError::Truncated {
            len: seg.len(),
            needed: geo.segment_bytes(),
        });
    }
    Ok(geo)
}

/// A heap-backed broadcast ring: the writer and a way to open readers, in one process.
pub fn heap(slots: u64, slot_bytes: usize) -> Result<Writer, SegmentError> {
    let seg = Arc::new(Segment::heap(segment_bytes(slots, slot_bytes)?)?);
    init(&seg, slots, slot_bytes)?;
    Writer::open(seg)
}

/// The one writer.
#[derive(Debug)]
pub struct Writer {
    seg: Arc<Segment>,
    geo: Geometry,
    next: u64,
}

/// Cache lines of the next slot fetched ahead by [`Writer::publish`]: its header and a
/// typical decision record (~300 bytes).
const PREFETCH_LINES: usize = 6;

impl Writer {
    /// Opens the writing end of an initialised segment.
    pub fn open(seg: Arc<Segment>) -> Result<Self, SegmentError> {
        let geo = open_geometry(&seg)?;
        header::claim_writer(&seg, "broadcast segment already has a writer")?;
        Ok(Self { seg, geo, next: 0 })
    }

    /// The segment, to open readers on (in-process) or to share its fd.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Publishes one record; never waits. Returns its sequence number.
    pub fn publish(&mut self, bytes: &[u8]) -> Result<u64, WriteError> {
        if bytes.len() > self.geo.slot_bytes {
            return Err(WriteError::TooLarge {
                len: bytes.len(),
                slot_bytes: self.geo.slot_bytes,
            });
        }
        let s = self.next;
        let off = self.geo.slot_off(s);
        let seq = self.seg.word(off);
        seq.store(2 * s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.seg.word(off + 8).store(bytes.len() as u64, Ordering::Relaxed);
        // Whole words as fixed-size reads, the short tail once: a copy of run-time length
        // per word was a `memcpy` call per 8 bytes, ~11% of the hot shard when every
        // event fires a rule.
        let body = off + SLOT_HEADER_BYTES;
        let store = |i: usize, w: [u8; 8]| {
            self.seg
                .word(body + i * 8)
                .store(u64::from_le_bytes(w), Ordering::Relaxed)
        };
        let (words, tail) = bytes.as_chunks::<8>();
        for (i, &w) in words.iter().enumerate() {
            store(i, w);
        }
        if !tail.is_empty() {
            let mut w = [0u8; 8];
            for (d, &b) in w.iter_mut().zip(tail) {
                *d = b;
            }
            store(words.len(), w);
        }
        seq.store(2 * s + 2, Ordering::Release);
        self.next = s + 1;
        self.seg
            .word(header::WRITER_POSITION_OFF)
            .store(self.next, Ordering::Release);
        // The next slot was last written a lap ago and is out of this core's caches: its
        // first lines are fetched now, while the shard does other work, not when the next
        // record is written.
        let next = self.geo.slot_off(self.next);
        for line in 0..PREFETCH_LINES {
            self.seg.prefetch(next + line * 64);
        }
        Ok(s)
    }

    /// Records published so far.
    pub fn position(&self) -> u64 {
        self.next
    }
}

/// One reader. Readers do not affect the writer or each other.
#[derive(Debug)]
pub struct Reader {
    seg: Arc<Segment>,
    geo: Geometry,
    next: u64,
    missed: u64,
    /// The writer's position as last loaded: records before it are published. A reader
    /// that has caught up polls the position, not the slot the next record goes into (see
    /// [`Reader::read`]).
    known_tail: u64,
}

impl Reader {
    /// Opens a reader that starts with the next record published.
    pub fn open(seg: Arc<Segment>) -> Result<Self, SegmentError> {
        let geo = open_geometry(&seg)?;
        let next = seg.word(header::WRITER_POSITION_OFF).load(Ordering::Acquire);
        Ok(Self {
            seg,
            geo,
            next,
            missed: 0,
            known_tail: next,
        })
    }

    /// Opens a reader that starts with the oldest record still in the ring.
    pub fn open_oldest(seg: Arc<Segment>) -> Result<Self, SegmentError> {
        let mut r = Self::open(seg)?;
        r.seek_oldest();
        Ok(r)
    }

    /// Moves back to the oldest record still in the ring (a subscriber that attached
    /// after the records it wants were published). A record overwritten meanwhile shows
    /// up as a lap on the next read, as usual.
    pub fn seek_oldest(&mut self) {
        let tail = self.seg.word(header::WRITER_POSITION_OFF).load(Ordering::Acquire);
        self.next = tail.saturating_sub(self.geo.slots);
        self.known_tail = tail;
    }

    /// Slot size: the buffer given to [`Reader::read`] must be at least this long.
    pub fn slot_bytes(&self) -> usize {
        self.geo.slot_bytes
    }

    /// Sequence number of the next record this reader expects.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Records this reader has missed by being lapped, in total.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Records published but not yet read by this reader.
    pub fn lag(&self) -> u64 {
        self.seg
            .word(header::WRITER_POSITION_OFF)
            .load(Ordering::Acquire)
            .saturating_sub(self.next)
    }

    /// Copies the next record into `buf`. `Ok(None)`: nothing new. `Err(Lapped)`: records
    /// were lost to this reader; it has skipped to the oldest one still intact, and the
    /// next call goes on from there.
    ///
    /// A reader that has read everything the writer's position showed loads the position
    /// again before it looks at the next slot: one that has caught up and polls
    /// (`Ok(None)` in a loop) then reads only the position's line, which the writer stores
    /// once per record, and never the slot the writer is about to fill. Polling that slot
    /// took its first line from the writer's core between the writer's prefetch and its
    /// stores, and again between its two sequence stores: a publish waited for that core
    /// up to twice per record. Behind the position, records are read straight from their
    /// slots and the position is not loaded again until they run out.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        if buf.len() < self.geo.slot_bytes {
            return Err(ReadError::BufferTooSmall {
                len: buf.len(),
                slot_bytes: self.geo.slot_bytes,
            });
        }
        if self.next >= self.known_tail {
            // The writer's word: compared, never used for arithmetic that could panic.
            self.known_tail = self.seg.word(header::WRITER_POSITION_OFF).load(Ordering::Acquire);
            if self.next >= self.known_tail {
                return Ok(None);
            }
        }
        let s = self.next;
        let off = self.geo.slot_off(s);
        let seq = self.seg.word(off);
        let v1 = seq.load(Ordering::Acquire);
        // Sequence words come from the writer's memory: wrapping arithmetic, so that no
        // value found there can make a reader panic.
        let ready = s.wrapping_mul(2).wrapping_add(2);
        if v1 < ready {
            return Ok(None);
        }
        if v1 > ready {
            return Err(self.skip_after_lap());
        }
        let len = self.seg.word(off + 8).load(Ordering::Relaxed) as usize;
        let len = len.min(self.geo.slot_bytes);
        // As the writer: whole words by fixed-size writes, the tail byte by byte.
        let body = off + SLOT_HEADER_BYTES;
        let word = |i: usize| self.seg.word(body + i * 8).load(Ordering::Relaxed).to_le_bytes();
        let (words, tail) = buf[..len].as_chunks_mut::<8>();
        let whole = words.len();
        for (i, w) in words.iter_mut().enumerate() {
            *w = word(i);
        }
        if !tail.is_empty() {
            let w = word(whole);
            for (d, &b) in tail.iter_mut().zip(&w) {
                *d = b;
            }
        }
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) != v1 {
            return Err(self.skip_after_lap());
        }
        self.next = s.wrapping_add(1);
        Ok(Some(len))
    }

    /// Moves to the oldest record the writer cannot yet be overwriting and says how many
    /// were skipped.
    fn skip_after_lap(&mut self) -> ReadError {
        let tail = self.seg.word(header::WRITER_POSITION_OFF).load(Ordering::Acquire);
        self.known_tail = tail;
        // Leave one slot of margin: the writer may already be writing slot `tail`.
        let oldest = tail.saturating_sub(self.geo.slots - 1);
        let target = oldest.max(self.next.saturating_add(1));
        let missed = target - self.next;
        self.next = target;
        self.missed = self.missed.saturating_add(missed);
        ReadError::Lapped { missed }
    }

    /// Waits up to `timeout_ns` for a record newer than this reader's position.
    pub fn wait(&self, spin_ns: u64, timeout_ns: u64) -> bool {
        let tail = self.seg.word(header::WRITER_POSITION_OFF);
        crate::wait::wait_read_only(|| tail.load(Ordering::Acquire) > self.next, tail, spin_ns, timeout_ns)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn readers_see_every_record_in_order() {
        let mut w = heap(8, 16).expect("ring");
        let mut a = Reader::open(w.segment().clone()).expect("reader");
        let mut buf = [0u8; 16];
        for i in 0u8..100 {
            w.publish(&[i; 3]).expect("publish");
            assert_eq!(a.read(&mut buf), Ok(Some(3)));
            assert_eq!(&buf[..3], &[i; 3]);
        }
        assert_eq!(a.read(&mut buf), Ok(None));
    }

    #[test]
    fn records_of_every_length_come_back_exactly() {
        // Whole words and every tail length, after a longer record left bytes in the slot.
        let mut w = heap(4, 64).expect("ring");
        let mut r = Reader::open(w.segment().clone()).expect("reader");
        for len in (0..=64usize).rev() {
            let rec: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            w.publish(&rec).expect("publish");
            let mut buf = [0xEEu8; 80];
            assert_eq!(r.read(&mut buf), Ok(Some(len)), "len {len}");
            assert_eq!(&buf[..len], rec.as_slice(), "len {len}");
            assert!(buf[len..].iter().all(|&b| b == 0xEE), "bytes past {len} untouched");
        }
    }

    #[test]
    fn a_lapped_reader_learns_how_many_it_missed() {
        let mut w = heap(8, 16).expect("ring");
        let mut slow = Reader::open(w.segment().clone()).expect("reader");
        let mut fast = Reader::open(w.segment().clone()).expect("reader");
        let mut buf = [0u8; 16];
        for i in 0u64..20 {
            w.publish(&i.to_le_bytes()).expect("publish");
            assert_eq!(fast.read(&mut buf), Ok(Some(8)));
        }
        // 20 published into 8 slots: records 0..=12 are gone for the slow reader.
        assert_eq!(slow.read(&mut buf), Err(ReadError::Lapped { missed: 13 }));
        let mut seen = Vec::new();
        while let Ok(Some(_)) = slow.read(&mut buf) {
            seen.push(u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")));
        }
        assert_eq!(seen, (13..20).collect::<Vec<_>>());
        assert_eq!(slow.missed() + seen.len() as u64, 20);
    }

    #[test]
    fn a_caught_up_reader_waits_for_the_writers_position_not_the_slot() {
        let mut w = heap(8, 16).expect("ring");
        let seg = w.segment().clone();
        let mut r = Reader::open(seg.clone()).expect("reader");
        let mut buf = [0u8; 16];
        w.publish(&[7; 3]).expect("publish");
        // The position taken back: the slot says its record is whole, the position that
        // it is not published yet. The reader believes the position.
        let position = seg.word(header::WRITER_POSITION_OFF);
        position.store(0, Ordering::Release);
        assert_eq!(r.read(&mut buf), Ok(None));
        position.store(1, Ordering::Release);
        assert_eq!(r.read(&mut buf), Ok(Some(3)));
        assert_eq!(&buf[..3], &[7; 3]);
        // Behind a position that shows several records, they are read one after another.
        for i in 0u8..3 {
            w.publish(&[i; 2]).expect("publish");
        }
        for i in 0u8..3 {
            assert_eq!(r.read(&mut buf), Ok(Some(2)));
            assert_eq!(&buf[..2], &[i; 2]);
        }
        assert_eq!(r.read(&mut buf), Ok(None));
    }

    #[test]
    fn oversized_records_and_small_buffers_are_refused() {
        let mut w = heap(4, 8).expect("ring");
        assert_eq!(w.publish(&[0; 9]), Err(WriteError::TooLarge { len: 9, slot_bytes: 8 }));
        let mut r = Reader::open(w.segment().clone()).expect("reader");
        assert_eq!(
            r.read(&mut [0; 4]),
            Err(ReadError::BufferTooSmall { len: 4, slot_bytes: 8 })
        );
    }
}
