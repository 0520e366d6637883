//! The single-producer single-consumer record ring: one per producer, producer in one
//! process, consumer (the daemon) in another, or both in one process over a heap segment.
//!
//! # Protocol
//! Positions are byte counts since the ring was created; `pos & (capacity - 1)` is the
//! offset in the data area. Every record starts 8-byte aligned with an 8-byte header word:
//!
//! ```text
//! bits 63..32  tag  = (lap mod (2^32 - 1)) + 1, lap = pos / capacity: 1..=2^32 - 1, never 0
//! bits 31..24  kind = DATA (1) or PAD (2)
//! bits 23..0   len  = payload bytes (DATA) or bytes to the end of the area minus 8 (PAD)
//! ```
//!
//! * **claim → write → commit**: the producer checks space against its cached copy of the
//!   consumer's position (re-reading the real one only when the ring looks full), copies the
//!   payload after the header slot, then stores the header with `Release`. The header store
//!   *is* the commit: the consumer loads it with `Acquire`, and a header whose tag is not the
//!   current lap's is "nothing yet" (a stale record from an earlier lap or untouched
//!   memory). A record is therefore visible only whole; a producer that dies mid-write leaves
//!   a record that never becomes visible, and nothing has to be skipped.
//! * **clear ahead**: before each commit the producer zeroes the header slot right after the
//!   record, so the consumer never mistakes bytes an earlier lap left there for a header.
//! * **wrap**: a record never straddles the end; the producer writes a PAD header covering
//!   the rest of the area and starts the record at offset 0 of the next lap. A payload may
//!   be at most half the capacity less 16 bytes, so a record always fits once the consumer
//!   catches up.
//! * **release**: the consumer copies each record into private memory before anything reads
//!   it (a faulty producer cannot change it between validation and use), then stores its
//!   position with `Release` when it has read all there was, once it moved 8 KiB, and
//!   before it parks or closes ([`Consumer`]'s `release`); the producer's `Acquire` load of
//!   it orders the consumer's reads before the producer's reuse of the space.
//! * **untrusted**: every header the consumer reads is checked (kind, length against the
//!   space to the end of the area). A bad one quarantines the segment with a reason: the
//!   consumer stops reading it and the flag tells the producer; nothing faults.

use std::sync::Arc;

use thiserror::Error;

use crate::event::{EventError, EventRef, Metric, RECORD_BYTES_MAX};
use crate::header::{self, Identity, HEADER_BYTES};
use crate::segment::{Segment, SegmentError};
use crate::sync::{fence, Ordering};
use crate::wire::{Decoded, Decoder, EncodeRefError, Encoder, EventView, Sym, SymEvent, SymbolKind};

const KIND_DATA: u64 = 1;
const KIND_PAD: u64 = 2;
const RECORD_HEADER_BYTES: usize = 8;
const LEN_MASK: u64 = 0x00ff_ffff;

/// Smallest data area: room for the header word and a few small records.
pub const CAPACITY_BYTES_MIN: usize = 64;
/// Largest payload any ring accepts, whatever its capacity.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// How often an event-publishing producer refreshes its heartbeat.
pub const HEARTBEAT_INTERVAL_NS: u64 = 1_000_000;

/// Why `try_publish` refused. The producer never blocks: it gets one of these and decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No room until the consumer catches up. Counted in the header (`refused_full`).
    #[error("ring full: {free_bytes} bytes free, {needed_bytes} needed")]
    Full {
        /// Bytes free right now.
        free_bytes: usize,
        /// Bytes the record needs (with header and any wrap padding).
        needed_bytes: usize,
    },
    /// The payload is empty or larger than this ring takes.
    #[error("record of {len} bytes does not fit this ring (1..={max} bytes)")]
    TooLarge {
        /// Payload bytes.
        len: usize,
        /// The largest payload this ring takes.
        max: usize,
    },
    /// The event breaks a rule of the data model.
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
    /// The consumer quarantined this segment; nothing more will be read from it.
    #[error("the consumer quarantined this ring")]
    Quarantined,
    /// The consumer closed the ring.
    #[error("the consumer closed this ring")]
    Closed,
}

/// Why the consumer stopped reading a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A header with the current lap's tag has an unknown kind.
    #[error("record header has unknown kind {kind}")]
    UnknownKind {
        /// The kind found.
        kind: u8,
    },
    /// A record runs past the end of the data area or exceeds the payload limit.
    #[error("record length {len} does not fit ({room} bytes to the end of the area)")]
    BadLength {
        /// Length found.
        len: u32,
        /// Room left before the end.
        room: usize,
    },
    /// A PAD record does not reach exactly the end of the area.
    #[error("padding record of {len} bytes does not end at the end of the area")]
    BadPadding {
        /// Length found.
        len: u32,
    },
}

impl Corruption {
    fn code(self) -> u64 {
        match self {
            Corruption::UnknownKind { kind } => 1 | (u64::from(kind) << 8),
            Corruption::BadLength { len, .. } => 2 | (u64::from(len) << 8),
            Corruption::BadPadding { len } => 3 | (u64::from(len) << 8),
        }
    }
}

/// Why polling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PollError {
    /// The segment is corrupt and quarantined; it will not be read again.
    #[error("segment quarantined at position {position}: {reason}")]
    Quarantined {
        /// Ring position of the bad header.
        position: u64,
        /// What was wrong.
        reason: Corruption,
    },
}

/// Why the consumer's owner did not take a valid event. Each is counted per reason in the
/// owner's memory ([`Consumer::verdicts`]) and copied into the segment header, where the
/// producer reads it ([`Producer::verdicts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The event repeats an `event_id` the owner already took for its node: dropped as a
    /// duplicate (an idempotent outcome, so not counted in `rejected`).
    Duplicate,
    /// The event names a node the owner does not know, and its node table is full.
    NodeTableFull,
    /// The event's `timestamp` is further ahead of the owner's clock than it allows.
    TimeAhead,
    /// The event's `timestamp` is older than the owner allows.
    TimeTooOld,
    /// This ring may not publish for the event's node.
    NodeNotAllowed,
}

/// What the consumer's owner made of one valid event (see [`Consumer::poll_events_judged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Taken.
    Taken,
    /// Not taken, for this reason.
    Refused(Refusal),
}

/// A ring's records that were not taken, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// Records that failed validation (malformed, bad symbol, not finite, …).
    pub invalid: u64,
    /// Events dropped as duplicates ([`Refusal::Duplicate`]).
    pub duplicates: u64,
    /// [`Refusal::NodeTableFull`].
    pub node_table_full: u64,
    /// [`Refusal::TimeAhead`].
    pub time_ahead: u64,
    /// [`Refusal::TimeTooOld`].
    pub time_too_old: u64,
    /// [`Refusal::NodeNotAllowed`].
    pub node_not_allowed: u64,
}

impl Verdicts {
    /// Records refused for any reason but duplication: the header's `rejected` word.
    pub fn rejected(&self) -> u64 {
        self.invalid
            .saturating_add(self.node_table_full)
            .saturating_add(self.time_ahead)
            .saturating_add(self.time_too_old)
            .saturating_add(self.node_not_allowed)
    }

    fn count(&mut self, r: Refusal) {
        let c = match r {
            Refusal::Duplicate => &mut self.duplicates,
            Refusal::NodeTableFull => &mut self.node_table_full,
            Refusal::TimeAhead => &mut self.time_ahead,
            Refusal::TimeTooOld => &mut self.time_too_old,
            Refusal::NodeNotAllowed => &mut self.node_not_allowed,
        };
        *c = c.saturating_add(1);
    }

    /// (header offset, value) of each counter, `rejected` included.
    fn words(&self) -> [(usize, u64); 7] {
        [
            (header::REJECTED_OFF, self.rejected()),
            (header::DUPLICATES_OFF, self.duplicates),
            (header::REFUSED_NODE_TABLE_FULL_OFF, self.node_table_full),
            (header::REFUSED_TIME_AHEAD_OFF, self.time_ahead),
            (header::REFUSED_TIME_TOO_OLD_OFF, self.time_too_old),
            (header::REFUSED_NODE_NOT_ALLOWED_OFF, self.node_not_allowed),
            (header::INVALID_RECORDS_OFF, self.invalid),
        ]
    }

    /// The counters as a segment header holds them (what the producer sees).
    fn read(seg: &Segment) -> Self {
        let r = |off| seg.word(off).load(Ordering::Relaxed);
        Self {
            invalid: r(header::INVALID_RECORDS_OFF),
            duplicates: r(header::DUPLICATES_OFF),
            node_table_full: r(header::REFUSED_NODE_TABLE_FULL_OFF),
            time_ahead: r(header::REFUSED_TIME_AHEAD_OFF),
            time_too_old: r(header::REFUSED_TIME_TOO_OLD_OFF),
            node_not_allowed: r(header::REFUSED_NODE_NOT_ALLOWED_OFF),
        }
    }
}

/// Positions beyond this are refused when a consumer opens a ring: no ring gets there
/// (2^62 bytes is 14 years at 10 GB/s), so position arithmetic never overflows.
pub const POSITION_MAX: u64 = 1 << 62;

/// Capacity and derived limits, fixed at creation. The consumer keeps its own copy and
/// never re-reads the header's capacity, which a faulty producer could overwrite.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    capacity: usize,
    mask: u64,
    lap_shift: u32,
    payload_max: usize,
}

impl Geometry {
    fn new(capacity: usize) -> Result<Self, SegmentError> {
        if !capacity.is_power_of_two() || capacity < CAPACITY_BYTES_MIN {
            return Err(SegmentError::BadSize {
                bytes: capacity,
                why: "ring capacity must be a power of two of at least 64 bytes",
            });
        }
        // A record plus the next header slot fits in half the area, so once the consumer
        // catches up it always fits on one side of the wrap.
        let payload_max = (capacity / 2 - 2 * RECORD_HEADER_BYTES).min(PAYLOAD_BYTES_MAX);
        Ok(Self {
            capacity,
            mask: capacity as u64 - 1,
            lap_shift: capacity.trailing_zeros(),
            payload_max,
        })
    }

    fn offset(&self, pos: u64) -> usize {
        // Masked by a capacity that fits in usize: the cast cannot truncate.
        (pos & self.mask) as usize
    }

    /// Lap number plus one, never 0 (a cleared slot reads 0). A shift, not a division:
    /// this runs for every record on both sides.
    #[inline]
    fn tag(&self, pos: u64) -> u64 {
        (pos >> self.lap_shift) % u64::from(u32::MAX) + 1
    }
}

fn record_bytes(len: usize) -> usize {
    RECORD_HEADER_BYTES + len.next_multiple_of(8)
}

fn header_word(tag: u64, kind: u64, len: usize) -> u64 {
    (tag << 32) | (kind << 24) | (len as u64 & LEN_MASK)
}

/// Total segment bytes for a ring of `capacity` data bytes.
pub fn segment_bytes(capacity: usize) -> usize {
    HEADER_BYTES + capacity
}

/// Writes a fresh SPSC header into `seg`, with a data area filling the rest. Done once by
/// whoever creates the segment (the daemon), before it is shared.
pub fn init(seg: &Segment) -> Result<(), SegmentError> {
    let capacity = seg.len().saturating_sub(HEADER_BYTES);
    Geometry::new(capacity)?;
    header::init(
        seg,
        &Identity {
            kind: header::KIND_SPSC,
            capacity: capacity as u64,
            slot_bytes: 0,
        },
    );
    Ok(())
}

/// Creates a heap-backed ring and returns both ends: for in-process use and tests.
pub fn heap_pair(capacity: usize) -> Result<(Producer, Consumer), SegmentError> {
    let seg = Arc::new(Segment::heap(segment_bytes(capacity))?);
    init(&seg)?;
    Ok((Producer::open(seg.clone())?, Consumer::open(seg)?))
}

fn open_geometry(seg: &Segment) -> Result<Geometry, SegmentError> {
    let id = header::read_identity(seg, header::KIND_SPSC)?;
    let capacity = usize::try_from(id.capacity).map_err(|_| SegmentError::BadHeader("capacity"))?;
    let geo = Geometry::new(capacity)?;
    if segment_bytes(capacity) > seg.len() {
        return Err(SegmentError::Truncated {
            len: seg.len(),
            needed: segment_bytes(capacity),
        });
    }
    Ok(geo)
}

/// The producing end. Never blocks; allocates only when a string is defined in the ring
/// for the first time. `publish_ns` values passed in must be CLOCK_MONOTONIC
/// nanoseconds (they also refresh the heartbeat).
pub struct Producer {
    seg: Arc<Segment>,
    consumer: Option<crate::liveness::PidWatch>,
    geo: Geometry,
    tail: u64,
    head_cache: u64,
    encoder: Encoder,
    heartbeat_ns: u64,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .field("capacity", &self.geo.capacity)
            .finish()
    }
}

impl Producer {
    /// Opens the producing end of an initialised segment and stamps this process's pid.
    pub fn open(seg: Arc<Segment>) -> Result<Self, SegmentError> {
        let geo = open_geometry(&seg)?;
        header::claim_writer(&seg, "segment already has a producer")?;
        let mut p = Self {
            seg,
            consumer: None,
            geo,
            tail: 0,
            head_cache: 0,
            encoder: Encoder::new(),
            heartbeat_ns: 0,
        };
        p.heartbeat();
        Ok(p)
    }

    /// Largest payload this ring accepts.
    pub fn payload_max(&self) -> usize {
        self.geo.payload_max
    }

    /// Validates `ev`, defines any string this ring has not carried yet (one `Define`
    /// record each, the first time only), stamps `publish_ns` (if 0) and publishes it.
    /// Returns the ring position just past the record (compare with
    /// [`Producer::consumed_position`] and [`Producer::durable_position`]).
    ///
    /// On `Full`, the symbols defined so far stay defined; retrying publishes only the rest.
    pub fn try_publish_event<M: Metric>(&mut self, ev: &EventRef<'_, M>) -> Result<u64, PublishError> {
        let publish_ns = self.stamp(ev.publish_ns);
        let (seg, geo, tail, head_cache) = (&self.seg, &self.geo, &mut self.tail, &mut self.head_cache);
        let result = self.encoder.encode_ref_at(ev, publish_ns, |define| {
            publish_into(seg, geo, tail, head_cache, define).map(|_| ())
        });
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(EncodeRefError::Publish(e)) => return Err(e),
            Err(EncodeRefError::Invalid(e)) => {
                header::bump(self.seg.word(header::REFUSED_INVALID_OFF), 1);
                return Err(PublishError::Invalid(e));
            }
        };
        publish_into(&self.seg, &self.geo, &mut self.tail, &mut self.head_cache, bytes)
    }

    /// The symbol for `text` in this ring, publishing its definition if it is new. Hot
    /// producers intern their node ids, statuses and metric names once, then publish with
    /// [`Producer::try_publish_sym`], which touches no string.
    pub fn intern(&mut self, kind: SymbolKind, text: &str) -> Result<Sym, PublishError> {
        let (seg, geo, tail, head_cache) = (&self.seg, &self.geo, &mut self.tail, &mut self.head_cache);
        let mut publish = |define: &[u8]| publish_into(seg, geo, tail, head_cache, define).map(|_| ());
        match self.encoder.intern(kind, text, &mut publish) {
            Ok(sym) => Ok(sym),
            Err(EncodeRefError::Publish(e)) => Err(e),
            Err(EncodeRefError::Invalid(e)) => {
                header::bump(self.seg.word(header::REFUSED_INVALID_OFF), 1);
                Err(PublishError::Invalid(e))
            }
        }
    }

    /// Asks the CPU to bring in what [`Producer::intern`] of `text` reads first (a hint:
    /// nothing changes). A producer holding a batch of events with strings calls it a
    /// few events ahead, so that the symbol lookups' cache misses overlap.
    #[inline]
    pub fn prefetch_symbol(&self, kind: SymbolKind, text: &str) {
        self.encoder.prefetch(kind, text);
    }

    /// Publishes an event whose strings are symbols from [`Producer::intern`]: the
    /// fastest path (no string is hashed, compared or copied).
    pub fn try_publish_sym(&mut self, ev: &SymEvent<'_>) -> Result<u64, PublishError> {
        let publish_ns = self.stamp(ev.publish_ns);
        let (len, write) = match self.encoder.event_writer(ev, publish_ns) {
            Ok(writer) => writer,
            Err(e) => {
                header::bump(self.seg.word(header::REFUSED_INVALID_OFF), 1);
                return Err(PublishError::Invalid(e));
            }
        };
        // Written in place: archived into a buffer and copied, the copy's wide loads of
        // the archive's narrow stores could not be forwarded and waited for them.
        publish_with(&self.seg, &self.geo, &mut self.tail, &mut self.head_cache, len, write)
    }

    /// Publishes raw bytes (any payload of 1..=[`Producer::payload_max`] bytes): for rings
    /// that carry something other than events, and for measuring the ring alone.
    pub fn try_publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        publish_into(&self.seg, &self.geo, &mut self.tail, &mut self.head_cache, payload)
    }

    /// Returns `publish_ns`, or now when it is 0, refreshing the heartbeat at most once per
    /// [`HEARTBEAT_INTERVAL_NS`]. A caller that publishes a burst can read the clock once
    /// and pass it in every event, saving the ~30 ns clock read per event.
    #[inline]
    fn stamp(&mut self, publish_ns: u64) -> u64 {
        let now = if publish_ns == 0 {
            crate::clock::monotonic_ns()
        } else {
            publish_ns
        };
        if now.wrapping_sub(self.heartbeat_ns) >= HEARTBEAT_INTERVAL_NS {
            self.store_heartbeat(now);
        }
        now
    }

    /// Refreshes the heartbeat; call it when idle so the daemon can tell silent from dead.
    pub fn heartbeat(&mut self) {
        self.store_heartbeat(crate::clock::monotonic_ns());
    }

    fn store_heartbeat(&mut self, now: u64) {
        self.heartbeat_ns = now;
        self.seg
            .word(header::WRITER_HEARTBEAT_OFF)
            .store(now, Ordering::Relaxed);
    }

    /// Position just past the last record published.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// How far the consumer has read.
    pub fn consumed_position(&self) -> u64 {
        self.seg.word(header::HEAD_OFF).load(Ordering::Acquire)
    }

    /// How far the daemon has made this producer's records durable.
    pub fn durable_position(&self) -> u64 {
        self.seg.word(header::DURABLE_OFF).load(Ordering::Acquire)
    }

    /// Waits until the daemon reports every record before `pos` durable (in its journal,
    /// synced to disk; refused and duplicate records count as settled), spinning `spin_ns`
    /// and then sleeping in slices of at most [`crate::wait::READ_ONLY_PARK_NS`]: the daemon
    /// never pays a wake-up for a waiting producer. `pos` is what a publish returned.
    /// Returns whether it is durable; false after `timeout_ns`.
    pub fn wait_durable(&self, pos: u64, spin_ns: u64, timeout_ns: u64) -> bool {
        let word = self.seg.word(header::DURABLE_OFF);
        crate::wait::wait_read_only(|| word.load(Ordering::Acquire) >= pos, word, spin_ns, timeout_ns)
    }

    /// Records the consumer refused, for any reason but duplication (invalid records,
    /// and valid events its owner refused: node table full, event time out of bounds,
    /// node not allowed). [`Producer::verdicts`] has them per reason.
    pub fn rejected(&self) -> u64 {
        self.seg.word(header::REJECTED_OFF).load(Ordering::Relaxed)
    }

    /// What the consumer did not take, per reason. Counted before the consumed position
    /// moves past the record: once [`Producer::consumed_position`] passes a record, its
    /// refusal (if any) is in here.
    pub fn verdicts(&self) -> Verdicts {
        Verdicts::read(&self.seg)
    }

    /// The consumer's pid as it wrote it (0 until a consumer opened the ring).
    pub fn consumer_pid(&self) -> u32 {
        u32::try_from(self.seg.word(header::READER_PID_OFF).load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Watches the consumer process `pid` (from `SO_PEERCRED`: [`crate::attach`] does
    /// this), so that [`Producer::consumer_state`] follows that very process.
    pub fn watch_consumer(&mut self, pid: u32) {
        self.consumer = Some(crate::liveness::PidWatch::new(pid));
    }

    /// Is the consumer process still there? Uses the watched pid, else (a ring set up
    /// without attach) starts watching the pid the consumer wrote into the header.
    pub fn consumer_state(&mut self) -> crate::liveness::PeerState {
        if self.consumer.is_none() {
            match self.consumer_pid() {
                0 => return crate::liveness::PeerState::Unknown,
                pid => self.watch_consumer(pid),
            }
        }
        self.consumer
            .as_ref()
            .map_or(crate::liveness::PeerState::Unknown, |w| w.state())
    }

    /// Says that no more records will come, so the consumer can drain and reclaim at once.
    pub fn close(self) {
        header::set_flags(&self.seg, header::FLAG_WRITER_CLOSED);
    }
}

/// The producer's publish, apart from its struct so the encoder's borrow of the payload
/// and the position updates do not conflict.
fn publish_into(
    seg: &Segment,
    geo: &Geometry,
    tail: &mut u64,
    head_cache: &mut u64,
    payload: &[u8],
) -> Result<u64, PublishError> {
    publish_with(seg, geo, tail, head_cache, payload.len(), |dst| {
        dst.copy_from_slice(payload)
    })
}

/// Publishes a record of `len` payload bytes that `write` writes in place, into exactly
/// those bytes of the ring.
#[inline]
fn publish_with(
    seg: &Segment,
    geo: &Geometry,
    tail: &mut u64,
    head_cache: &mut u64,
    len: usize,
    write: impl FnOnce(&mut [u8]),
) -> Result<u64, PublishError> {
    if len == 0 || len > geo.payload_max {
        header::bump(seg.word(header::REFUSED_TOO_LARGE_OFF), 1);
        return Err(PublishError::TooLarge {
            len,
            max: geo.payload_max,
        });
    }
    let rec = record_bytes(len);
    let off = geo.offset(*tail);
    let to_end = geo.capacity - off;
    let needed = if rec > to_end { to_end + rec } else { rec };
    // Plus the next record's header slot, which is cleared before this commit.
    reserve(seg, geo, *tail, head_cache, needed + RECORD_HEADER_BYTES)?;
    let mut pos = *tail;
    let mut off = off;
    if rec > to_end {
        clear_header_slot(seg, geo, pos + to_end as u64);
        let pad = header_word(geo.tag(pos), KIND_PAD, to_end - RECORD_HEADER_BYTES);
        seg.word(HEADER_BYTES + off).store(pad, Ordering::Release);
        pos += to_end as u64;
        off = 0;
    }
    seg.write_in(HEADER_BYTES + off + RECORD_HEADER_BYTES, len, write);
    clear_header_slot(seg, geo, pos + rec as u64);
    seg.word(HEADER_BYTES + off)
        .store(header_word(geo.tag(pos), KIND_DATA, len), Ordering::Release);
    *tail = pos + rec as u64;
    // Producer-owned line: plain stores, read by the consumer only for stats. (Polling
    // this word instead of the next header was measured: it adds a dependent cache miss
    // per record and cost 25% of throughput.)
    seg.word(header::WRITER_POSITION_OFF).store(*tail, Ordering::Relaxed);
    header::bump(seg.word(header::PUBLISHED_OFF), 1);
    wake_consumer_if_sleeping(seg);
    take_next_lines(seg, geo, *tail, *head_cache);
    Ok(*tail)
}

/// Bytes from the next record's start that a publish takes for writing ahead: a record
/// of the common size (an event with four metrics is 152 bytes) and its header.
const WRITE_AHEAD_BYTES: usize = 256;

/// Free bytes ahead of the producer below which it takes nothing ahead: the ring is nearly
/// full, the producer waits for the consumer anyway, and the lines the consumer has just
/// released are still in its core's cache. Taking them there cost the stream (with 256
/// bytes of slack, `rim-bench ring`'s 128 KiB rings streamed 9.5-10.2M events/s and 11-16M
/// raw records/s; with 16 KiB, 13.1-13.5M and 19-20M, the raw rate of no take-ahead at all).
const WRITE_AHEAD_SLACK_BYTES: usize = 16 << 10;

/// Takes the lines the next record will be written into for writing now, while the
/// caller goes on, so that the next publish finds them exclusive in this core's cache.
/// Without it each of its stores waited for the consumer's core to give a line up, and a
/// store that waits holds every later store, and every load forwarded from one (the next
/// event's encoding), behind it (`rimd-shm`'s stream in `rim-bench ring`: 6.4-7.6M events/s
/// before, 13.1-13.5M with this and the stamp passed apart). Only bytes the consumer has
/// released (below its position as last seen plus the capacity), and only with
/// [`WRITE_AHEAD_SLACK_BYTES`] of them: a line it may still be reading is never taken,
/// which would slow both sides. From the byte after the next
/// record's header word, whose line the clear-ahead store already took (and where the
/// consumer waits), to the ring's end at most.
#[inline]
fn take_next_lines(seg: &Segment, geo: &Geometry, tail: u64, head_cache: u64) {
    let released = head_cache + geo.capacity as u64;
    if tail + WRITE_AHEAD_SLACK_BYTES as u64 > released {
        return;
    }
    let start = geo.offset(tail) + RECORD_HEADER_BYTES;
    let end = (geo.offset(tail) + WRITE_AHEAD_BYTES).min(geo.capacity);
    seg.prefetch_for_write(HEADER_BYTES + start, end.saturating_sub(start));
}

/// Zeroes the header word at `pos`, where the consumer looks right after the record being
/// committed. Without this, the word there is whatever an earlier lap left, and payload
/// bytes of an earlier lap can carry this lap's tag. The zero is ordered before the
/// commit's release store, so a consumer that sees the commit sees the zero (or a later
/// commit). `reserve` made sure the slot is free.
#[inline]
fn clear_header_slot(seg: &Segment, geo: &Geometry, pos: u64) {
    seg.word(HEADER_BYTES + geo.offset(pos)).store(0, Ordering::Relaxed);
}

/// Makes sure `needed` bytes are free, re-reading the consumer's position only when the
/// cached one says the ring is full (the common case touches no shared line).
fn reserve(seg: &Segment, geo: &Geometry, tail: u64, head_cache: &mut u64, needed: usize) -> Result<(), PublishError> {
    // Checked on every publish, so nothing is accepted into a ring no one will read. The
    // flags line is written only on quarantine or close: this load hits the local cache.
    let flags = header::flags(seg);
    if flags & header::FLAG_QUARANTINED != 0 {
        return Err(PublishError::Quarantined);
    }
    if flags & header::FLAG_READER_CLOSED != 0 {
        return Err(PublishError::Closed);
    }
    let cap = geo.capacity as u64;
    if tail + needed as u64 - *head_cache <= cap {
        return Ok(());
    }
    let head = seg.word(header::HEAD_OFF).load(Ordering::Acquire);
    // A head outside [tail - cap, tail] would be a broken consumer; treat as full.
    if head <= tail && tail - head <= cap {
        *head_cache = head;
    }
    let used = tail - *head_cache;
    if used + needed as u64 <= cap {
        return Ok(());
    }
    header::bump(seg.word(header::REFUSED_FULL_OFF), 1);
    Err(PublishError::Full {
        free_bytes: (cap - used) as usize,
        needed_bytes: needed,
    })
}

/// Dekker-style hand-off with a consumer that may park: the consumer stores "sleeping",
/// fences, then re-checks for data; the producer stores the record, fences, then checks
/// "sleeping", so one of the two always sees the other. The wake itself (a syscall)
/// happens only when the consumer said it sleeps.
///
/// A consumer that never parks (a busy-polling shard) never set "may park", and the
/// producer skips the fence: measured at 15–20% of event throughput, since the fence waits
/// for the record's stores to reach the other core. The one window this opens is the
/// consumer's very first park, which may then sleep one bounded slice (1 ms) past a record
/// published at that instant; "may park" stays set afterwards.
#[inline]
fn wake_consumer_if_sleeping(seg: &Segment) {
    if seg.word(header::READER_MAY_PARK_OFF).load(Ordering::Relaxed) == 0 {
        return;
    }
    fence(Ordering::SeqCst);
    let word = seg.word(header::READER_SLEEPING_OFF);
    if word.load(Ordering::Relaxed) != 0 {
        word.store(0, Ordering::SeqCst);
        crate::wait::wake_all(word);
    }
}

/// Counters and positions of a ring as the consumer sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Records the producer published.
    pub published: u64,
    /// Records the consumer delivered.
    pub delivered: u64,
    /// Records the consumer refused, any reason but duplication (the header's copy).
    pub rejected: u64,
    /// Publishes refused because the ring was full.
    pub refused_full: u64,
    /// Publishes refused as too large.
    pub refused_too_large: u64,
    /// Publishes refused as invalid by the producer.
    pub refused_invalid: u64,
    /// Bytes published but not consumed.
    pub depth_bytes: u64,
}

/// The producer's write position as it last stored it in the header (a producer's claim:
/// clamp before use).
pub fn writer_position(seg: &Segment) -> u64 {
    seg.word(header::WRITER_POSITION_OFF).load(Ordering::Relaxed)
}

/// Counters and positions read from a segment's header alone (the depth from the consumed
/// position it published), so a thread other than the consumer's can report them. Every
/// word here can be overwritten by the producer: this is the producer's view, not figures
/// to report as the consumer's (use [`Consumer::delivered`] and [`Consumer::verdicts`]).
pub fn stats_of(seg: &Segment) -> RingStats {
    let r = |off| seg.word(off).load(Ordering::Relaxed);
    RingStats {
        published: r(header::PUBLISHED_OFF),
        delivered: r(header::DELIVERED_OFF),
        rejected: r(header::REJECTED_OFF),
        refused_full: r(header::REFUSED_FULL_OFF),
        refused_too_large: r(header::REFUSED_TOO_LARGE_OFF),
        refused_invalid: r(header::REFUSED_INVALID_OFF),
        depth_bytes: r(header::WRITER_POSITION_OFF).saturating_sub(r(header::HEAD_OFF)),
    }
}

/// The consuming end: reads records into private memory, validates them, hands them on.
pub struct Consumer {
    seg: Arc<Segment>,
    geo: Geometry,
    head: u64,
    scratch: Box<[u64]>,
    quarantine: Option<(u64, Corruption)>,
    producer: Option<crate::liveness::PidWatch>,
    decoder: Decoder,
    /// Records delivered, kept here: the header's copy is the producer's to read (and
    /// could be overwritten by it).
    delivered: u64,
    /// What was not taken, kept here for the same reason.
    verdicts: Verdicts,
    /// `verdicts` changed since it was last copied into the header.
    verdicts_dirty: bool,
    /// The consumed position as last stored in the header (a cell: [`Consumer::wait`]
    /// publishes through `&self`).
    published_head: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .field("capacity", &self.geo.capacity)
            .field("quarantine", &self.quarantine)
            .finish()
    }
}

/// A record the consumer delivers from an event ring.
pub type EventResult<'a> = Result<EventView<'a>, EventError>;

impl Consumer {
    /// Opens the consuming end of a segment, checking its header, and stamps this pid.
    pub fn open(seg: Arc<Segment>) -> Result<Self, SegmentError> {
        let geo = open_geometry(&seg)?;
        let head = seg.word(header::HEAD_OFF).load(Ordering::Acquire);
        // Records start 8-byte aligned: any other consumed position is not one we wrote.
        if !head.is_multiple_of(RECORD_HEADER_BYTES as u64) {
            return Err(SegmentError::BadHeader("consumed position is not record-aligned"));
        }
        if head > POSITION_MAX {
            return Err(SegmentError::BadHeader("consumed position is out of range"));
        }
        seg.word(header::READER_PID_OFF)
            .store(header::own_pid(), Ordering::Relaxed);
        seg.word(header::READER_HEARTBEAT_OFF)
            .store(crate::clock::monotonic_ns(), Ordering::Relaxed);
        let scratch_words = geo.payload_max.max(RECORD_BYTES_MAX).div_ceil(8);
        Ok(Self {
            seg,
            geo,
            head,
            scratch: vec![0u64; scratch_words].into_boxed_slice(),
            quarantine: None,
            producer: None,
            decoder: Decoder::new(),
            delivered: 0,
            verdicts: Verdicts::default(),
            verdicts_dirty: false,
            published_head: std::cell::Cell::new(head),
        })
    }

    /// Watches the producer process `pid` (take it from `SO_PEERCRED`, not the header).
    pub fn watch_producer(&mut self, pid: u32) {
        self.producer = Some(crate::liveness::PidWatch::new(pid));
    }

    /// Is the producer still there? `Unknown` until [`Consumer::watch_producer`].
    pub fn producer_state(&self) -> crate::liveness::PeerState {
        self.producer
            .as_ref()
            .map_or(crate::liveness::PeerState::Unknown, |w| w.state())
    }

    /// Producer's last heartbeat (CLOCK_MONOTONIC ns), as it wrote it.
    pub fn producer_heartbeat_ns(&self) -> u64 {
        self.seg.word(header::WRITER_HEARTBEAT_OFF).load(Ordering::Relaxed)
    }

    /// Did the producer close the ring cleanly?
    pub fn producer_closed(&self) -> bool {
        header::flags(&self.seg) & header::FLAG_WRITER_CLOSED != 0
    }

    /// The quarantine, if the segment was found corrupt.
    pub fn quarantined(&self) -> Option<PollError> {
        self.quarantine
            .map(|(position, reason)| PollError::Quarantined { position, reason })
    }

    /// Position just past the last record consumed.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// Publishes how far this producer's records are durable (the daemon's journal), after
    /// the consumed position, so that a producer never sees records durable but not read.
    pub fn set_durable_position(&self, pos: u64) {
        self.publish_head();
        self.seg.word(header::DURABLE_OFF).store(pos, Ordering::Release);
    }

    /// Is a committed record waiting? (One acquire load; what a spinning waiter polls.)
    /// A PAD is committed before the record it makes room for, which goes at the ring's
    /// start: behind a PAD, the answer is that record's (a waiter woken by the PAD alone
    /// found nothing, and it came back before the producer's commit could wake it). A
    /// malformed PAD counts as waiting, so that the poll finds it and quarantines.
    #[inline]
    pub fn has_data(&self) -> bool {
        if self.quarantine.is_some() {
            return false;
        }
        let Some(word) = committed_word(&self.seg, &self.geo, self.head) else {
            return false;
        };
        let room = self.geo.capacity - self.geo.offset(self.head) - RECORD_HEADER_BYTES;
        if (word >> 24) & 0xff != KIND_PAD || (word & LEN_MASK) as usize != room {
            return true;
        }
        let next = self.head + (room + RECORD_HEADER_BYTES) as u64;
        committed_word(&self.seg, &self.geo, next).is_some()
    }

    /// Delivers up to `limit` raw records to `f`, in order, each as private 8-byte
    /// aligned bytes. Returns how many were delivered.
    pub fn poll(&mut self, limit: usize, mut f: impl FnMut(&[u8])) -> Result<usize, PollError> {
        let (delivered, result) = Self::read_batch(
            &self.seg,
            &self.geo,
            &mut self.head,
            &mut self.scratch,
            &mut self.quarantine,
            &mut self.decoder,
            limit,
            |bytes, _| f(bytes),
        );
        self.release(delivered, &result);
        result.map(|_| delivered)
    }

    /// Reads up to `limit` records of an event ring: symbol definitions go into this
    /// ring's table, events are validated against it and handed to `f`. An invalid record
    /// is handed on as its error (so the caller can count it by reason) and counted as
    /// invalid; the records after it still flow. Every event counts as taken (see
    /// [`Consumer::poll_events_judged`]). Returns how many records were read (definitions
    /// included).
    pub fn poll_events(&mut self, limit: usize, mut f: impl FnMut(EventResult<'_>)) -> Result<usize, PollError> {
        self.poll_events_judged(limit, |r| {
            f(r);
            Verdict::Taken
        })
    }

    /// As [`Consumer::poll_events`], with `f` saying what became of each valid event: a
    /// refusal is counted per reason, here and in the header, where the producer reads it
    /// before the consumed position passes the record. (What `f` returns for an invalid
    /// record is ignored: it is counted as invalid.)
    pub fn poll_events_judged(
        &mut self,
        limit: usize,
        mut f: impl FnMut(EventResult<'_>) -> Verdict,
    ) -> Result<usize, PollError> {
        let verdicts = &mut self.verdicts;
        let mut judged = false;
        let (delivered, result) = Self::read_batch(
            &self.seg,
            &self.geo,
            &mut self.head,
            &mut self.scratch,
            &mut self.quarantine,
            &mut self.decoder,
            limit,
            |bytes, decoder| match decoder.decode(bytes) {
                Ok(Decoded::Event(ev)) => {
                    if let Verdict::Refused(r) = f(Ok(ev)) {
                        verdicts.count(r);
                        judged = true;
                    }
                }
                Ok(Decoded::Defined { .. }) => {}
                Err(e) => {
                    verdicts.invalid = verdicts.invalid.saturating_add(1);
                    judged = true;
                    let _ = f(Err(e));
                }
            },
        );
        // Counted even when the batch ended in a quarantine: those refusals happened.
        self.verdicts_dirty |= judged;
        self.release(delivered, &result);
        result.map(|_| delivered)
    }

    /// Reads up to `limit` records into scratch, handing each to `f`; stops at the first
    /// uncommitted record or corruption. Returns (records read, how it ended: `Ok(true)`
    /// when it found no committed record left).
    #[allow(clippy::too_many_arguments)]
    fn read_batch(
        seg: &Segment,
        geo: &Geometry,
        head: &mut u64,
        scratch: &mut [u64],
        quarantine: &mut Option<(u64, Corruption)>,
        decoder: &mut Decoder,
        limit: usize,
        mut f: impl FnMut(&[u8], &mut Decoder),
    ) -> (usize, Result<bool, PollError>) {
        if let Some((position, reason)) = *quarantine {
            return (0, Err(PollError::Quarantined { position, reason }));
        }
        let mut delivered = 0;
        while delivered < limit {
            match next_record(seg, geo, head, scratch, quarantine) {
                Ok(Some(len)) => {
                    delivered += 1;
                    f(&bytemuck_bytes(scratch)[..len], decoder);
                }
                Ok(None) => return (delivered, Ok(true)),
                Err(e) => return (delivered, Err(e)),
            }
        }
        // At the limit: whether it also read all there was decides whether the position is
        // published now (one load of the header word it would read next, most often in the
        // line of the record just read).
        (delivered, Ok(committed_word(seg, geo, *head).is_none()))
    }

    /// After a batch: the verdict counters (if they changed), then the delivered count,
    /// then the consumed position with `Release`, so a producer that sees the position
    /// sees the counts. Stores, never read-modify-writes of the header: the figures are
    /// this consumer's own.
    ///
    /// The position is published when the batch read all there was (so a producer
    /// waiting for its records to be read sees them read), or once it has moved
    /// [`Consumer::release_bytes`] since it was last published (and by `wait`, `close` and
    /// `set_durable_position`). Published after every batch, it moved the header's line to
    /// this core once per batch even while this consumer was behind, and a producer that
    /// found the ring full re-read it on every attempt: each read took the line away and
    /// the next store took it back (`rim-bench ring`, 128 KiB rings: the raw stream at
    /// 15-20M records/s before, 21-24M after; and with events written in place, which made
    /// the producer the faster side, the event stream fell to 7.3-7.7M events/s without
    /// this, against 10.4-11.7M with it).
    fn release(&mut self, delivered: usize, ended: &Result<bool, PollError>) {
        if self.verdicts_dirty {
            self.verdicts_dirty = false;
            for (off, v) in self.verdicts.words() {
                self.seg.word(off).store(v, Ordering::Relaxed);
            }
        }
        self.delivered = self.delivered.saturating_add(delivered as u64);
        let moved = self.head - self.published_head.get();
        let drained = !matches!(ended, Ok(false));
        if moved >= self.release_bytes() || (drained && moved > 0) {
            self.publish_head();
        }
    }

    /// Bytes the consumed position may move before it is published (see
    /// [`Consumer::release`]): a sixteenth of the ring, at most 8 KiB, so that a producer
    /// never waits on more than that of records already read.
    fn release_bytes(&self) -> u64 {
        (self.geo.capacity as u64 / 16).min(8 << 10)
    }

    /// Stores the delivered count, then the consumed position (`Release`), if the position
    /// moved since it was last stored.
    fn publish_head(&self) {
        if self.published_head.get() == self.head {
            return;
        }
        self.seg
            .word(header::DELIVERED_OFF)
            .store(self.delivered, Ordering::Relaxed);
        self.seg.word(header::HEAD_OFF).store(self.head, Ordering::Release);
        self.published_head.set(self.head);
    }

    /// Records delivered so far (this consumer's own count, not the header's copy).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// What was not taken so far, per reason (this consumer's own counts).
    pub fn verdicts(&self) -> Verdicts {
        self.verdicts
    }

    /// This ring's symbol table (node ids, statuses, metric names defined so far).
    pub fn symbols(&self) -> &Decoder {
        &self.decoder
    }

    /// Data bytes the ring holds.
    pub fn capacity(&self) -> usize {
        self.geo.capacity
    }

    /// The segment, for readers of its counters on another thread ([`stats_of`]).
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Counters and positions, for stats (the depth from this consumer's own position,
    /// which may be ahead of the one it last published).
    pub fn stats(&self) -> RingStats {
        let writer = self.seg.word(header::WRITER_POSITION_OFF).load(Ordering::Relaxed);
        RingStats {
            depth_bytes: writer.saturating_sub(self.head),
            delivered: self.delivered,
            ..stats_of(&self.seg)
        }
    }

    /// Blocks until a record is committed or `timeout_ns` passes: spin for `spin_ns`, then
    /// park on a futex the producer wakes only because this consumer said it sleeps.
    /// Returns whether data is waiting.
    pub fn wait(&self, spin_ns: u64, timeout_ns: u64) -> bool {
        self.enable_parking();
        // A producer must not wait on records this consumer read before it sleeps.
        self.publish_head();
        crate::wait::wait_until(
            || self.has_data() || self.quarantine.is_some(),
            self.seg.word(header::READER_SLEEPING_OFF),
            spin_ns,
            timeout_ns,
        )
    }

    /// Tells the producer this consumer may park, so that its commits check for a sleeper
    /// from now on ([`Consumer::wait`] calls this; a consumer that only spins never does,
    /// and its producer saves a fence per record).
    pub fn enable_parking(&self) {
        let word = self.seg.word(header::READER_MAY_PARK_OFF);
        if word.load(Ordering::Relaxed) == 0 {
            word.store(1, Ordering::SeqCst);
        }
    }

    /// Says this consumer will read no more; the producer's next publish that needs the
    /// consumer's position gets [`PublishError::Closed`].
    pub fn close(self) {
        self.publish_head();
        header::set_flags(&self.seg, header::FLAG_READER_CLOSED);
    }
}

/// The header word at `pos` (acquire), if it is committed in this lap (a record or PAD).
#[inline]
fn committed_word(seg: &Segment, geo: &Geometry, pos: u64) -> Option<u64> {
    let word = seg.word(HEADER_BYTES + geo.offset(pos)).load(Ordering::Acquire);
    (word >> 32 == geo.tag(pos)).then_some(word)
}

/// Reads the record at `head` into `scratch` and advances past it (and past a PAD).
/// `Ok(None)`: nothing committed yet. Positions stay below [`POSITION_MAX`] plus what the
/// ring's records add, so the additions cannot overflow.
fn next_record(
    seg: &Segment,
    geo: &Geometry,
    head: &mut u64,
    scratch: &mut [u64],
    quarantine: &mut Option<(u64, Corruption)>,
) -> Result<Option<usize>, PollError> {
    // An honest producer writes at most one PAD before a record; bounding the loop
    // keeps a producer that races PAD words from holding the consumer here.
    for _ in 0..2 {
        let Some(word) = committed_word(seg, geo, *head) else {
            return Ok(None);
        };
        let off = geo.offset(*head);
        let room = geo.capacity - off - RECORD_HEADER_BYTES;
        let len = (word & LEN_MASK) as usize;
        match (word >> 24) & 0xff {
            KIND_PAD if len == room => {
                *head += (room + RECORD_HEADER_BYTES) as u64;
            }
            KIND_PAD => {
                return Err(quarantine_at(
                    seg,
                    *head,
                    quarantine,
                    Corruption::BadPadding { len: len as u32 },
                ))
            }
            KIND_DATA if len > 0 && len <= geo.payload_max && record_bytes(len) <= room + RECORD_HEADER_BYTES => {
                let dst = &mut scratch[..len.div_ceil(8)];
                seg.copy_out(HEADER_BYTES + off + RECORD_HEADER_BYTES, dst);
                *head += record_bytes(len) as u64;
                return Ok(Some(len));
            }
            KIND_DATA => {
                let reason = Corruption::BadLength { len: len as u32, room };
                return Err(quarantine_at(seg, *head, quarantine, reason));
            }
            kind => {
                let reason = Corruption::UnknownKind { kind: kind as u8 };
                return Err(quarantine_at(seg, *head, quarantine, reason));
            }
        }
    }
    Ok(None)
}

/// Marks the segment corrupt at `head`: in the consumer (it reads no more) and in the
/// header (the producer's next publish gets `Quarantined`).
fn quarantine_at(
    seg: &Segment,
    head: u64,
    quarantine: &mut Option<(u64, Corruption)>,
    reason: Corruption,
) -> PollError {
    *quarantine = Some((head, reason));
    seg.word(header::QUARANTINE_REASON_OFF)
        .store(reason.code(), Ordering::Relaxed);
    seg.word(header::QUARANTINE_POS_OFF).store(head, Ordering::Relaxed);
    header::set_flags(seg, header::FLAG_QUARANTINED);
    PollError::Quarantined { position: head, reason }
}

/// Views the consumer's private scratch as bytes.
fn bytemuck_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and every byte pattern is a valid u8; the byte slice covers
    // exactly the words' memory and borrows them immutably for its lifetime.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_order_across_many_wraps() {
        let (mut p, mut c) = heap_pair(256).expect("ring");
        let mut next_expected = 0u32;
        for i in 0u32..10_000 {
            let len = 1 + (i as usize * 7) % 60;
            let payload: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            loop {
                match p.try_publish(&payload) {
                    Ok(_) => break,
                    Err(PublishError::Full { .. }) => {
                        c.poll(usize::MAX, |b| {
                            let want = 1 + (next_expected as usize * 7) % 60;
                            assert_eq!(b.len(), want);
                            assert_eq!(b[0], next_expected as u8);
                            next_expected += 1;
                        })
                        .expect("poll");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        c.poll(usize::MAX, |_| next_expected += 1).expect("drain");
        assert_eq!(next_expected, 10_000);
        assert_eq!(c.stats().published, 10_000);
        assert_eq!(c.stats().delivered, 10_000);
    }

    #[test]
    fn full_and_too_large_are_refused_and_counted() {
        let (mut p, c) = heap_pair(128).expect("ring");
        assert_eq!(p.payload_max(), 48);
        assert!(matches!(
            p.try_publish(&[0; 49]),
            Err(PublishError::TooLarge { len: 49, max: 48 })
        ));
        assert!(matches!(p.try_publish(&[]), Err(PublishError::TooLarge { .. })));
        p.try_publish(&[1; 48]).expect("first");
        p.try_publish(&[1; 48]).expect("second");
        assert!(matches!(p.try_publish(&[1; 8]), Err(PublishError::Full { .. })));
        let s = c.stats();
        assert_eq!((s.refused_full, s.refused_too_large, s.published), (1, 2, 2));
    }

    #[test]
    fn verdicts_reach_the_producer_with_the_position_and_stay_the_consumers_own() {
        let (mut p, mut c) = heap_pair(1 << 14).expect("ring");
        let ev = crate::event::sample_event();
        for _ in 0..4 {
            p.try_publish_event(&ev.as_ref()).expect("publish");
        }
        p.try_publish(&[0xAB; 24]).expect("garbage");
        let end = p.position();
        let mut verdicts = [
            Verdict::Refused(Refusal::TimeAhead),
            Verdict::Refused(Refusal::Duplicate),
            Verdict::Refused(Refusal::NodeTableFull),
            Verdict::Taken,
        ]
        .into_iter();
        let mut invalid = 0;
        c.poll_events_judged(usize::MAX, |r| match r {
            Ok(_) => verdicts.next().expect("four events"),
            Err(_) => {
                invalid += 1;
                Verdict::Taken
            }
        })
        .expect("poll");
        assert_eq!((p.consumed_position(), invalid), (end, 1));
        let want = Verdicts {
            invalid: 1,
            duplicates: 1,
            node_table_full: 1,
            time_ahead: 1,
            ..Verdicts::default()
        };
        assert_eq!((p.verdicts(), p.rejected()), (want, 3), "duplicates are not rejections");
        assert_eq!(c.verdicts(), want);

        // A producer that overwrites its header changes only its own view; the
        // consumer's next verdict puts the real figures back.
        for off in [header::REJECTED_OFF, header::DELIVERED_OFF, header::DUPLICATES_OFF] {
            c.seg.word(off).store(u64::MAX, Ordering::Relaxed);
        }
        let delivered = c.delivered();
        assert_eq!((c.verdicts(), c.delivered()), (want, delivered));
        p.try_publish_event(&ev.as_ref()).expect("publish");
        c.poll_events_judged(usize::MAX, |_| Verdict::Refused(Refusal::TimeTooOld))
            .expect("poll");
        assert_eq!(p.rejected(), 4);
        assert_eq!(p.verdicts().duplicates, 1);
        assert_eq!(stats_of(&c.seg).delivered, delivered + 1);
    }

    #[test]
    fn lap_tags_follow_the_documented_formula() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/vectors/wire-v1.json")).expect("vectors");
        for t in v["lap_tags"].as_array().expect("lap tags") {
            let field = |k: &str| t[k].as_u64().expect("number");
            let geo = Geometry::new(field("capacity") as usize).expect("geometry");
            assert_eq!(geo.tag(field("pos")), field("tag"), "{t}");
        }
    }

    #[test]
    fn a_consumed_position_out_of_range_is_refused_at_open() {
        let seg = Arc::new(Segment::heap(segment_bytes(256)).expect("heap"));
        init(&seg).expect("init");
        seg.word(header::HEAD_OFF).store(POSITION_MAX + 8, Ordering::Relaxed);
        assert!(matches!(Consumer::open(seg), Err(SegmentError::BadHeader(_))));
    }

    #[test]
    fn a_corrupt_header_quarantines_with_a_reason() {
        let (mut p, mut c) = heap_pair(256).expect("ring");
        p.try_publish(&[7; 16]).expect("publish");
        // Overwrite the committed header with a current-lap tag and an absurd length.
        let seg = &c.seg;
        seg.word(HEADER_BYTES)
            .store(header_word(1, KIND_DATA, 4000), Ordering::Release);
        let err = c.poll(10, |_| panic!("nothing valid to deliver")).expect_err("corrupt");
        assert!(matches!(
            err,
            PollError::Quarantined {
                position: 0,
                reason: Corruption::BadLength { len: 4000, .. }
            }
        ));
        assert_eq!(c.poll(10, |_| {}), Err(err), "stays quarantined");
        assert_eq!(
            p.try_publish(&[0; 200]),
            Err(PublishError::TooLarge { len: 200, max: 112 })
        );
        for _ in 0..20 {
            if let Err(e) = p.try_publish(&[0; 64]) {
                assert_eq!(e, PublishError::Quarantined);
                return;
            }
        }
        panic!("producer never learned of the quarantine");
    }
}
