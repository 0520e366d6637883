//! The crate's error type: everything that can go wrong creating, publishing or reading
//! the stats segment. Histograms, the hand-off and rendering cannot fail.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why the stats segment could not be created, written or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A file-system or mapping call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"mmap"`, ...).
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file (reader) or requested size (writer) cannot even hold the header and a
    /// minimal payload.
    #[error("stats segment is {len} bytes, at least {min} are needed")]
    TooSmall {
        /// Its size.
        len: u64,
        /// The smallest size accepted.
        min: u64,
    },
    /// The file does not start with `RIMSTAT1`: not a stats segment.
    #[error("not a stats segment (bad magic)")]
    BadMagic,
    /// A stats segment of a layout version this build does not understand.
    #[error("stats segment layout version {found}, this build understands {expected}")]
    BadVersion {
        /// The version in the file.
        found: u32,
        /// The version this build writes and reads.
        expected: u32,
    },
    /// The segment exists but its writer has not published a snapshot yet.
    #[error("stats segment has no snapshot yet (the daemon has not published one)")]
    Empty,
    /// The writer kept changing the segment through every retry.
    #[error("stats segment kept changing under the reader ({retries} retries)")]
    Torn {
        /// How many times the reader tried.
        retries: u32,
    },
    /// The header's payload length does not fit in the mapping.
    #[error("stats payload length {len} exceeds the segment's capacity {cap}")]
    LengthOutOfBounds {
        /// The length in the header.
        len: u64,
        /// The payload capacity of the mapping.
        cap: u64,
    },
    /// The payload is not a valid snapshot (reader), or the snapshot could not be
    /// serialised (writer).
    #[error("stats payload JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The snapshot's JSON does not fit the segment; the previous snapshot stays readable.
    #[error("snapshot needs {need} bytes, the stats segment holds {cap}")]
    TooLarge {
        /// Bytes of JSON.
        need: u64,
        /// Payload capacity of the segment.
        cap: u64,
    },
}
