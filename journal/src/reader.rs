//! [`Reader`]: reads one stream from a position, independently of any live
//! [`crate::Journal`] (possibly in another process, while a daemon writes). It sees what
//! the writer's commits have written, synced or not (the page cache is shared), never
//! what still waits in the writer's buffer. It trusts nothing: every frame is checked; in
//! the newest segment, or an older one not yet sealed (its last records may still be on
//! their way), the first frame that is not (yet) whole and valid ends the data for now,
//! and a later call looks again; in a sealed segment a bad frame is reported as
//! [`JournalError::Corrupt`], never skipped.

use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::segment::{self, SegmentHeader, Step, Window, HEADER_BYTES};
use crate::storage::{Fs, Storage, StorageFile};
use crate::Pos;

struct Current<F> {
    base: Pos,
    path: PathBuf,
    file: F,
    file_len: u64,
}

/// Sequential reader of one stream; see the module docs.
pub struct Reader<S: Storage = Fs> {
    // Before `current`: fields drop in order, and a read the window has in flight must
    // land before the file's descriptors close.
    window: Window,
    storage: S,
    dir: PathBuf,
    stream: u32,
    current: Option<Current<S::File>>,
    pos: Pos,
}

impl<S: Storage> std::fmt::Debug for Reader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.dir)
            .field("stream", &self.stream)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Reader<S> {
    /// Opens stream `stream` of the journal under `dir` at `from`: a position before
    /// the oldest retained one starts there; a position inside a record, or past the end
    /// of valid data, is an error.
    pub fn open(dir: &Path, stream: u32, from: Pos, storage: S) -> Result<Self, JournalError> {
        Self::open_with(dir, stream, from, storage, Window::default())
    }

    /// [`Reader::open`] for reading through to the end once (recovery, backtests):
    /// segments are read in large direct chunks, the next one read ahead, and do not go
    /// through the page cache (see [`Window::read_ahead`]). A reader that follows a live
    /// journal's tail should use [`Reader::open`].
    pub fn open_sequential(dir: &Path, stream: u32, from: Pos, storage: S) -> Result<Self, JournalError> {
        Self::open_with(dir, stream, from, storage, Window::read_ahead())
    }

    fn open_with(dir: &Path, stream: u32, from: Pos, storage: S, window: Window) -> Result<Self, JournalError> {
        let pdir = segment::stream_dir(dir, stream);
        let (bases, _) = segment::list_segments(&storage, &pdir)?;
        let mut reader = Self {
            storage,
            dir: pdir,
            stream,
            current: None,
            pos: 0,
            window,
        };
        let Some(&start) = bases.first() else {
            if from > 0 {
                return Err(JournalError::PastEnd {
                    stream,
                    pos: from,
                    end: 0,
                });
            }
            return Ok(reader);
        };
        let from = from.max(start);
        let idx = bases.iter().rposition(|&b| b <= from).unwrap_or(0);
        reader.pos = bases[idx];
        if !reader.enter(bases[idx])? {
            return if from == bases[idx] {
                Ok(reader)
            } else {
                Err(JournalError::PastEnd {
                    stream,
                    pos: from,
                    end: bases[idx],
                })
            };
        }
        reader.skip_to(from, bases.get(idx + 1).copied())?;
        Ok(reader)
    }

    /// The position of the next record to be read.
    pub fn position(&self) -> Pos {
        self.pos
    }

    /// The stream read.
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// Whether the last record came from direct reads ([`Reader::open_sequential`] on a
    /// file system that takes them).
    pub fn reads_direct(&self) -> bool {
        self.window.reads_direct()
    }

    /// Opens the segment at `base` as the current one. False if its header is blank (it
    /// is being created, or was never finished and recovery has not run yet).
    fn enter(&mut self, base: Pos) -> Result<bool, JournalError> {
        let path = self.dir.join(segment::segment_name(base));
        let file = self
            .storage
            .open_file(&path, false)
            .map_err(|e| JournalError::io(&path, e))?;
        let raw = segment::read_header(&file).map_err(|e| JournalError::io(&path, e))?;
        let header = match SegmentHeader::decode(&raw, file.len()) {
            Ok(h) => h,
            Err(_) if raw.iter().all(|&b| b == 0) => return Ok(false),
            Err(reason) => return Err(JournalError::corrupt(self.stream, base, path, reason)),
        };
        if header.stream != self.stream || header.base != base {
            return Err(JournalError::corrupt(
                self.stream,
                base,
                path,
                format!(
                    "header says stream {} base {}, expected stream {} base {base}",
                    header.stream, header.base, self.stream
                ),
            ));
        }
        self.window.invalidate();
        self.current = Some(Current {
            base,
            path,
            file_len: file.len(),
            file,
        });
        Ok(true)
    }

    /// Walks records of the current segment up to `from`, which must be a record start.
    fn skip_to(&mut self, from: Pos, next_base: Option<Pos>) -> Result<(), JournalError> {
        while self.pos < from {
            let Some(cur) = &self.current else {
                break;
            };
            let off = HEADER_BYTES + (self.pos - cur.base);
            // Lengths only: `from` is checked to be a record start, and the record read
            // there is verified in full by `next`.
            let step = self
                .window
                .frame_len_at(&cur.file, off, cur.file_len)
                .map_err(|e| JournalError::io(&cur.path, e))?;
            match step {
                Step::Record { frame, .. } => {
                    let after = self.pos + frame as u64;
                    if after > from {
                        return Err(JournalError::NotRecordStart {
                            stream: self.stream,
                            pos: from,
                            before: self.pos,
                            after,
                        });
                    }
                    self.pos = after;
                }
                Step::End | Step::Invalid(_) => {
                    return Err(match next_base {
                        Some(next) => JournalError::corrupt(
                            self.stream,
                            self.pos,
                            cur.path.clone(),
                            format!("valid records end before the next segment at {next}"),
                        ),
                        None => JournalError::PastEnd {
                            stream: self.stream,
                            pos: from,
                            end: self.pos,
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// The next whole, CRC-valid record and its position; `None` at the end of valid data
    /// (a later call may find more).
    // Not an Iterator: the record is lent from the reader's buffer until the next call.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(Pos, &[u8])>, JournalError> {
        // Bounded: each round either returns or enters a later segment.
        loop {
            if self.current.is_none() && !self.enter_next_at_pos()? {
                return Ok(None);
            }
            let Some(cur) = &self.current else {
                return Ok(None);
            };
            let off = HEADER_BYTES + (self.pos - cur.base);
            let step = self
                .window
                .frame_at(&cur.file, off, cur.file_len)
                .map_err(|e| JournalError::io(&cur.path, e))?;
            match step {
                Step::Record { start, len, frame } => {
                    let pos = self.pos;
                    self.pos += frame as u64;
                    return Ok(Some((pos, &self.window.bytes()[start..start + len])));
                }
                Step::End | Step::Invalid(_) => {
                    if !self.after_segment_end(step)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// With no current segment, enters the one that starts at the position, if it exists.
    fn enter_next_at_pos(&mut self) -> Result<bool, JournalError> {
        let (bases, _) = segment::list_segments(&self.storage, &self.dir)?;
        if bases.contains(&self.pos) {
            return self.enter(self.pos);
        }
        Ok(false)
    }

    /// The current segment shows no valid record at the position. True if the reader moved
    /// on to the next segment; false if this is the end of the data for now.
    fn after_segment_end(&mut self, first: Step) -> Result<bool, JournalError> {
        self.window.invalidate();
        let (bases, _) = segment::list_segments(&self.storage, &self.dir)?;
        let Some(cur) = &self.current else {
            return Ok(false);
        };
        let Some(&next) = bases.iter().find(|&&b| b > cur.base) else {
            return Ok(false); // the newest segment: wait for more
        };
        if next == self.pos {
            return self.enter(next);
        }
        // Listed after the read: a record may have landed (and the writer rotated) in
        // between. Look once more before calling it corrupt.
        let off = HEADER_BYTES + (self.pos - cur.base);
        let again = self
            .window
            .frame_at(&cur.file, off, cur.file_len)
            .map_err(|e| JournalError::io(&cur.path, e))?;
        if matches!(again, Step::Record { .. }) {
            return Ok(true);
        }
        if bases.first().is_some_and(|&b| b > self.pos) {
            return Err(JournalError::Retained {
                stream: self.stream,
                pos: self.pos,
                start: bases[0],
            });
        }
        // The writer creates the next segment when a record does not fit, before the last
        // records of this one are written (they wait in its buffer for the next commit):
        // an unsealed segment that ends early is still being written. Only a sealed one,
        // whose seal vouches that its records reach `next`, is corrupt here.
        let raw = segment::read_header(&cur.file).map_err(|e| JournalError::io(&cur.path, e))?;
        if segment::sealed_end(&raw).is_none() {
            return Ok(false);
        }
        let reason = match first {
            Step::Invalid(e) => format!("{e}, before the next segment at {next}"),
            _ => format!("end marker before the next segment at {next}"),
        };
        Err(JournalError::corrupt(self.stream, self.pos, cur.path.clone(), reason))
    }
}
