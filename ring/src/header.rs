//! The segment header shared by both ring kinds: identity, sizes, liveness, positions and
//! counters, each side's fields on its own cache line so that neither side's writes
//! invalidate the line the other side polls.
//!
//! ```text
//! off  line        field                       written by
//!   0  identity    magic "RIMDRING"            creator
//!   8              version << 32 | kind        creator
//!  16              capacity (data bytes / slots) creator
//!  24              slot_bytes (broadcast)      creator
//!  32              created_ns                  creator
//!  40              flags (quarantined, closed) either side
//!  48              quarantine reason code      reader
//!  56              quarantine position         reader
//!  64  writer      writer pid                  writer
//!  72              writer heartbeat ns         writer
//!  80              writer position (diagnostic)writer
//!  88..120         refusal counters, published writer
//! 128  reader      reader pid                  reader
//! 136              reader heartbeat ns         reader
//! 144              consumed position (head)    reader
//! 152              durable position            reader (the daemon)
//! 160              rejected records (total)    reader
//! 168              delivered records           reader
//! 176              duplicates dropped          reader
//! 184              refused: node table full    reader
//! 192  wake        reader sleeping (futex)     reader / writer
//! 200              reader may park (set once, before its first park) reader
//! 208              refused: event time ahead   reader
//! 216              refused: event time too old reader
//! 224              refused: node not allowed   reader
//! 232              invalid records             reader
//! 256  data
//! ```
//!
//! The reader's counters (160..=184, 208..=232) are copies of figures the reader keeps
//! in its own memory: it stores them (never adds to what the header holds) before it
//! releases the consumed position, so a producer that sees its record consumed sees the
//! record's verdict counted, and a producer that overwrites them changes only its own
//! view. The refusal counters share the wake line because the reader line is full; they
//! change only when a record is refused, so a producer's hot path never misses on them.

use crate::segment::{Segment, SegmentError};
use crate::sync::{AtomicU64, Ordering};

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"RIMDRING");
pub(crate) const VERSION: u64 = 1;
pub(crate) const KIND_SPSC: u64 = 1;
pub(crate) const KIND_BROADCAST: u64 = 2;

pub(crate) const MAGIC_OFF: usize = 0;
pub(crate) const VERSION_KIND_OFF: usize = 8;
pub(crate) const CAPACITY_OFF: usize = 16;
pub(crate) const SLOT_BYTES_OFF: usize = 24;
pub(crate) const CREATED_NS_OFF: usize = 32;
pub(crate) const FLAGS_OFF: usize = 40;
pub(crate) const QUARANTINE_REASON_OFF: usize = 48;
pub(crate) const QUARANTINE_POS_OFF: usize = 56;

pub(crate) const WRITER_PID_OFF: usize = 64;
pub(crate) const WRITER_HEARTBEAT_OFF: usize = 72;
pub(crate) const WRITER_POSITION_OFF: usize = 80;
pub(crate) const REFUSED_FULL_OFF: usize = 88;
pub(crate) const REFUSED_TOO_LARGE_OFF: usize = 96;
pub(crate) const REFUSED_INVALID_OFF: usize = 104;
pub(crate) const PUBLISHED_OFF: usize = 112;

pub(crate) const READER_PID_OFF: usize = 128;
pub(crate) const READER_HEARTBEAT_OFF: usize = 136;
pub(crate) const HEAD_OFF: usize = 144;
pub(crate) const DURABLE_OFF: usize = 152;
pub(crate) const REJECTED_OFF: usize = 160;
pub(crate) const DELIVERED_OFF: usize = 168;
pub(crate) const DUPLICATES_OFF: usize = 176;
pub(crate) const REFUSED_NODE_TABLE_FULL_OFF: usize = 184;

pub(crate) const READER_SLEEPING_OFF: usize = 192;
pub(crate) const READER_MAY_PARK_OFF: usize = 200;
pub(crate) const REFUSED_TIME_AHEAD_OFF: usize = 208;
pub(crate) const REFUSED_TIME_TOO_OLD_OFF: usize = 216;
pub(crate) const REFUSED_NODE_NOT_ALLOWED_OFF: usize = 224;
pub(crate) const INVALID_RECORDS_OFF: usize = 232;

/// Bytes before the data area.
pub const HEADER_BYTES: usize = 256;

/// Flag: the reader found the segment corrupt and stopped reading it.
pub(crate) const FLAG_QUARANTINED: u64 = 1;
/// Flag: the writer closed the ring cleanly; nothing more will come.
pub(crate) const FLAG_WRITER_CLOSED: u64 = 1 << 1;
/// Flag: the reader closed the ring; publishing is pointless.
pub(crate) const FLAG_READER_CLOSED: u64 = 1 << 2;

/// What the creator writes once, before the segment is shared.
pub(crate) struct Identity {
    pub kind: u64,
    pub capacity: u64,
    pub slot_bytes: u64,
}

/// Writes a fresh header. Only the creator calls this, before handing the segment out.
pub(crate) fn init(seg: &Segment, id: &Identity) {
    let w = |off, v| seg.word(off).store(v, Ordering::Relaxed);
    w(VERSION_KIND_OFF, (VERSION << 32) | id.kind);
    w(CAPACITY_OFF, id.capacity);
    w(SLOT_BYTES_OFF, id.slot_bytes);
    w(CREATED_NS_OFF, crate::clock::monotonic_ns());
    // The magic goes last, released, so that a reader that sees it sees the rest.
    seg.word(MAGIC_OFF).store(MAGIC, Ordering::Release);
}

/// Reads and checks the identity of a segment that may come from anyone.
pub(crate) fn read_identity(seg: &Segment, kind: u64) -> Result<Identity, SegmentError> {
    if seg.len() < HEADER_BYTES {
        return Err(SegmentError::Truncated {
            len: seg.len(),
            needed: HEADER_BYTES,
        });
    }
    if seg.word(MAGIC_OFF).load(Ordering::Acquire) != MAGIC {
        return Err(SegmentError::BadHeader("magic is not RIMDRING"));
    }
    let vk = seg.word(VERSION_KIND_OFF).load(Ordering::Relaxed);
    if vk >> 32 != VERSION {
        return Err(SegmentError::BadHeader("unsupported version"));
    }
    if vk & 0xffff_ffff != kind {
        return Err(SegmentError::BadHeader("wrong ring kind"));
    }
    Ok(Identity {
        kind,
        capacity: seg.word(CAPACITY_OFF).load(Ordering::Relaxed),
        slot_bytes: seg.word(SLOT_BYTES_OFF).load(Ordering::Relaxed),
    })
}

/// Stamps this process as the segment's one writer for its whole life (a second writer
/// would reuse positions); refuses if another already did.
pub(crate) fn claim_writer(seg: &Segment, taken: &'static str) -> Result<(), SegmentError> {
    if seg.word(WRITER_PID_OFF).swap(own_pid(), Ordering::AcqRel) != 0 {
        return Err(SegmentError::BadHeader(taken));
    }
    Ok(())
}

/// A relaxed counter increment by the only side that writes it: a load and a store, no
/// locked instruction.
#[inline]
pub(crate) fn bump(word: &AtomicU64, by: u64) {
    word.store(word.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

/// Sets flag bits (either side may, so this one is a locked or).
#[inline]
pub(crate) fn set_flags(seg: &Segment, bits: u64) {
    seg.word(FLAGS_OFF).fetch_or(bits, Ordering::AcqRel);
}

/// Current flag bits.
#[inline]
pub(crate) fn flags(seg: &Segment) -> u64 {
    seg.word(FLAGS_OFF).load(Ordering::Acquire)
}

/// This process's pid, for the header.
pub(crate) fn own_pid() -> u64 {
    u64::from(std::process::id())
}
