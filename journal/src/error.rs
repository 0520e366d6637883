//! The crate's typed errors: one enum for journal and reader operations, one for the
//! frame check. Every message carries the numbers and paths needed to act on it.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::frame::FrameError;
use crate::Pos;

/// Why a journal or reader operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// What the OS (or the storage seam) said.
        #[source]
        source: io::Error,
    },
    /// The configuration was refused.
    #[error("journal configuration: {0}")]
    Config(String),
    /// No such stream.
    #[error("stream {stream} does not exist (the journal has {streams})")]
    NoStream {
        /// The stream asked for.
        stream: u32,
        /// How many the journal has.
        streams: u32,
    },
    /// The stream's commit buffer cannot take the frame until the next commit starts
    /// (see `Journal::room`).
    #[error("stream {stream}'s commit buffer has {room} bytes free, the frame needs {need}")]
    BufferFull {
        /// The stream.
        stream: u32,
        /// Bytes the frame takes.
        need: usize,
        /// Bytes free.
        room: usize,
    },
    /// A payload larger than a record may be (or empty).
    #[error("record payload of {len} bytes is outside 1..={max}")]
    RecordTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload this journal accepts.
        max: usize,
    },
    /// Data that was sealed (or a segment header) is not what the journal wrote.
    #[error("stream {stream} is corrupt at position {pos} ({path}): {reason}")]
    Corrupt {
        /// The stream.
        stream: u32,
        /// The logical position of the bad data.
        pos: Pos,
        /// The segment file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A reader was asked to start at a position that is not a record boundary.
    #[error("position {pos} of stream {stream} is inside a record (records start at {before} and {after})")]
    NotRecordStart {
        /// The stream.
        stream: u32,
        /// The position asked for.
        pos: Pos,
        /// The start of the record that covers `pos`.
        before: Pos,
        /// The start of the record after it.
        after: Pos,
    },
    /// A reader was asked to start after the end of valid data.
    #[error("position {pos} of stream {stream} is past the end of valid data at {end}")]
    PastEnd {
        /// The stream.
        stream: u32,
        /// The position asked for.
        pos: Pos,
        /// The end of valid data.
        end: Pos,
    },
    /// A reader fell behind retention: the segment holding its position was deleted.
    #[error("position {pos} of stream {stream} was deleted by retention (oldest retained is {start})")]
    Retained {
        /// The stream.
        stream: u32,
        /// The reader's position.
        pos: Pos,
        /// The oldest retained position.
        start: Pos,
    },
    /// An earlier sync failed; after a failed fdatasync the kernel may have dropped the
    /// dirty pages, so nothing appended since the last good sync can be trusted. Reopen
    /// the journal (recovery keeps what is really on disk).
    #[error("journal is poisoned by an earlier sync failure; reopen it to recover")]
    Poisoned,
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(stream: u32, pos: Pos, path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            stream,
            pos,
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<(u32, Pos, PathBuf, FrameError)> for JournalError {
    fn from((stream, pos, path, e): (u32, Pos, PathBuf, FrameError)) -> Self {
        Self::corrupt(stream, pos, path, e.to_string())
    }
}
