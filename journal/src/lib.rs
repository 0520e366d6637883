//! # rim-journal: rimd's event journal
//!
//! Per-partition logs of CRC-framed records in preallocated, memory-mapped segment files,
//! with group commit, torn-tail recovery and retention. One thread (the journal thread on
//! the cold core) owns a [`Journal`]; [`Reader`]s read a partition back from a position, in
//! the same process or another (`rimctl replay`). Only [`event::encode`] runs on the hot
//! path; it never allocates.
//!
//! ## Files
//! `{dir}/p{partition:03}/{base:020}.seg`. A [`Pos`] is a byte offset in a partition's
//! logical log: the first record is at 0, and positions keep rising across segments. A
//! segment whose first record is at `base` is named after it, and a record at file offset
//! `off` has position `base + off - 128`.
//!
//! ```text
//! segment = header (128 bytes) | frames | zeros to segment_bytes
//! header  = "RIMJSEG1" | u32 version=1 | u32 partition | u64 base | u64 segment_bytes
//!           | u64 created_ms | u32 crc32c(bytes 0..40) | zeros
//!           | at 64: seal = u64 end | u32 crc32c("SEAL" ‖ end)  (zero until sealed)
//! frame   = u32 len | u32 crc32c(len bytes ‖ payload) | payload | zeros to 8 bytes
//! ```
//! (little endian; see [`frame`], [`segment`]). A zero length word ends the data: files
//! are preallocated zeroed, and the journal keeps everything after the last record zero.
//! `created_ms` is the caller's time of the record that opened the segment; it is also
//! the newest record time of the *previous* segment, which is what retention by age uses
//! (so times are assumed non-decreasing per partition, as arrival times are).
//!
//! ## Commit protocol
//! 1. `append` copies the payload, then the frame header, into the mapped active segment
//!    (a reader sees no length or a failing CRC until both are in). A record that does not
//!    fit rotates: a new segment is created complete under a temporary name and renamed in
//!    (so no one sees a short file), and the old one's tail stays zero.
//! 2. `sync` (group commit): writes the seals owed (below), submits the data sync of every
//!    dirty segment file in one io_uring batch (plain `fdatasync` if io_uring is missing),
//!    then fsyncs partition directories that gained or lost segments, and only then
//!    advances `durable()`. A failed sync poisons the journal: after an fdatasync error
//!    the kernel may have dropped the dirty pages, so the only safe continuation is to
//!    reopen and recover.
//! 3. A rotated-away segment is *sealed* (its end written into its header) at the first
//!    sync after the one that made its data durable, and the seal becomes durable at the
//!    sync after that. A seal on disk therefore always vouches for records already on disk.
//!
//! ## Recovery (`Journal::open`), crash case by crash case
//! * **Crash between syncs** — the active segment ends in records that are partly on disk
//!   (any subset of sectors). The active segment is scanned; the first frame that fails a
//!   check ends the log; every non-zero byte after it is zeroed and reported
//!   ([`PartitionRecovery::cut_at`], `torn_bytes`). Everything below `durable()` was synced
//!   before, so it is intact.
//! * **Crash after a rotation, before its sync** — the old segment is unsealed: it is
//!   scanned too. If its records reach the next segment's base it is kept (and sealed
//!   later); if not, the log ends inside it and later segments (whose records were never
//!   durable) are removed.
//! * **Crash while creating a segment** — a `.tmp` file is removed; a newest segment with
//!   an all-zero header (the rename reached the disk, its data did not) is removed.
//! * **Crash after a sync** — sealed segments are trusted without a scan; only the newest
//!   segment (and unsealed ones) is read, so recovery time does not grow with retention.
//! * **Crash during retention** — a removal that did not reach the disk brings back an
//!   old sealed segment before a gap; segments before a gap are removed again.
//! * **Process crash without power loss** — the page cache still holds everything; open
//!   syncs what it scanned or cut before reporting `durable() == end()`.
//! * A bad header anywhere else, or a seal that contradicts the next segment, is
//!   [`JournalError::Corrupt`]: recovery never guesses about sealed data, and a [`Reader`]
//!   reports a bad record in a sealed segment as corrupt instead of skipping it.
//!
//! ## Guarantees
//! Every record below `durable()` survives power loss byte-identical; no partial record is
//! ever returned (CRC over length and payload); records are returned in append order.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

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
    list_partitions, list_partitions_in, Journal, JournalConfig, PartitionRecovery, Recovery, RetainReport, SyncReport,
    PARTITIONS_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use reader::Reader;
pub use storage::{Fs, Storage, StorageFile, SyncMethod};
