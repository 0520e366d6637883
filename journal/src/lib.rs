//! # rim-journal: rimd's journal
//!
//! Append-only streams of CRC-framed records in preallocated segment files, with
//! pipelined group commit, torn-tail recovery and retention. One thread (the journal thread
//! on the cold core) owns a [`Journal`]; [`Reader`]s read a stream back from a position, in
//! the same process or another (`rimctl replay`). Only [`event::encode`] runs on the hot
//! path; it never allocates. The daemon keeps two streams: its events (all partitions,
//! each record naming its own), and its decision log.
//!
//! ## Files
//! `{dir}/s{stream:03}/{base:020}.seg`. A [`Pos`] is a byte offset in a stream's logical
//! log: the first record is at 0, and positions keep rising across segments. A segment
//! whose first record is at `base` is named after it, and a record at file offset `off`
//! has position `base + off - 128`.
//!
//! ```text
//! segment = header (128 bytes) | frames | zeros to segment_bytes
//! header  = "RIMJSEG1" | u32 version=1 | u32 stream | u64 base | u64 segment_bytes
//!           | u64 created_ms | u32 crc32c(bytes 0..40) | zeros
//!           | at 64: seal = u64 end | u32 crc32c("SEAL" ‖ end)  (zero until sealed)
//! frame   = u32 len | u32 crc32c(len bytes ‖ payload) | payload | zeros to 8 bytes
//! ```
//! (little endian; see [`frame`], [`segment`]). A zero length word ends the data: files
//! are preallocated zeroed, and the journal keeps everything after the last record zero.
//! `created_ms` is the caller's time of the record that opened the segment; it is also
//! the newest record time of the *previous* segment, which is what retention by age uses
//! (so times are assumed non-decreasing per stream, as arrival times are).
//!
//! ## Commit protocol
//! 1. `append` copies the frame (header, payload, padding; one pass and a CRC) into the
//!    stream's own buffer, noting which file and offset each run of it goes to. Nothing
//!    is mapped: the journal never writes through a shared mapping (whose writeback would
//!    interrupt every core of the process with TLB shootdowns). A record that does not fit
//!    the active segment rotates: a new segment is created complete under a temporary
//!    name and renamed in (so no one sees a short file), and the old one's tail stays zero.
//! 2. `commit` (group commit) hands everything buffered to the storage's [`Committer`] as
//!    one [`storage::Commit`] and returns: per file its writes, then its data sync (on
//!    the committer's threads, files in parallel), plus the seals
//!    owed (below) and the directories that gained or lost segments. The journal keeps
//!    appending into another buffer meanwhile. Up to [`FLIGHTS_MAX`] commits may be in
//!    flight at once (the caller decides how many; the daemon's default is one): each
//!    writes only bytes no earlier flight writes, and its syncs are issued after its own
//!    writes, so whichever order the kernel finishes them in, a completed sync covers at
//!    least that flight's writes.
//! 3. `complete` collects flights strictly in the order they started: the oldest, once
//!    every write and sync of it finished, and only then advances `durable()` to the ends
//!    it covered. A younger flight that finished first waits for the older ones (its data
//!    may sit beyond a hole the older one is still filling, and `durable()` promises a
//!    prefix). A failed write or sync poisons the journal: after an fdatasync error the
//!    kernel may have dropped the dirty pages, so the only safe continuation is to reopen
//!    and recover.
//! 4. A rotated-away segment is *sealed* (its end written into its header) by the first
//!    commit started after the flight that made its data durable *completed*, and the seal
//!    becomes durable when that commit completes. A seal on disk therefore always vouches
//!    for records already on disk, whatever the flights' order on the device
//!    (`tests/crash_consistency.rs` freezes the disk at every sync, with syncs finishing in
//!    order and newest first).
//!
//! ## Recovery (`Journal::open`), crash case by crash case
//! * **Crash between commits, or during one** — the active segment ends in records that
//!   are partly on disk (any subset of sectors). The active segment is scanned; the first
//!   frame that fails a check ends the log; every non-zero byte after it is zeroed and
//!   reported ([`StreamRecovery::cut_at`], `torn_bytes`). Everything below `durable()`
//!   was in a completed commit, so it is intact.
//! * **Crash after a rotation, before the commit that syncs it** — the old segment is
//!   unsealed: it is scanned too. If its records reach the next segment's base it is kept
//!   (and sealed later); if not, the log ends inside it and later segments (whose records
//!   were never durable) are removed.
//! * **Crash while creating a segment** — a `.tmp` file is removed; a newest segment with
//!   an all-zero header (the rename reached the disk, its data did not) is removed.
//! * **Crash after a commit** — sealed segments are trusted without a scan; only the
//!   newest segment (and unsealed ones) is read, so recovery time does not grow with
//!   retention.
//! * **Crash during retention** — a removal that did not reach the disk brings back an
//!   old sealed segment before a gap; segments before a gap are removed again.
//! * **Process crash without power loss** — the page cache still holds everything that
//!   was written; open syncs what it scanned or cut before reporting `durable() == end()`.
//!   (Frames still in the journal's buffer were never written and were never durable.)
//! * A bad header anywhere else, or a seal that contradicts the next segment, is
//!   [`JournalError::Corrupt`]: recovery never guesses about sealed data, and a [`Reader`]
//!   reports a bad record in a sealed segment as corrupt instead of skipping it.
//!
//! ## Guarantees
//! Every record below `durable()` survives power loss byte-identical; no partial record is
//! ever returned (CRC over length and payload); records are returned in append order.
//! After [`Journal::open`] no memory is allocated per record: buffers are recycled from
//! commit to commit.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod ahead;
mod error;
pub mod event;
pub mod faulty;
pub mod frame;
mod journal;
mod reader;
pub mod segment;
pub mod storage;

/// A byte offset in a partition's logical log; the first record is at 0.
pub type Pos = u64;

pub use error::JournalError;
pub use frame::{FrameError, RECORD_BYTES_MAX};
pub use journal::{
    list_streams, list_streams_in, Journal, JournalConfig, Recovery, RetainReport, StreamRecovery, SyncReport,
    BUFFER_BYTES_MAX, BUFFER_BYTES_MIN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, STREAMS_MAX,
};
pub use reader::Reader;
pub use storage::{Commit, Committer, Done, Fs, FsFile, Storage, StorageFile, SyncMethod, WriteOp, FLIGHTS_MAX};
