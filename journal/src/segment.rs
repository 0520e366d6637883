//! Segment files: naming, the header (and its seal), and scanning frames through a
//! read window. Shared by the journal (recovery) and readers.

use std::io;
use std::path::{Path, PathBuf};

use crate::ahead::Ahead;
use crate::error::JournalError;
use crate::frame::{self, FrameError, RECORD_BYTES_MAX};
use crate::storage::{Storage, StorageFile};
use crate::Pos;

/// Bytes before the first record of a segment.
pub const HEADER_BYTES: u64 = 128;
/// Magic at the start of every segment file.
pub const MAGIC: &[u8; 8] = b"RIMJSEG1";
const VERSION: u32 = 1;
/// The fixed part: magic, version, stream, base, segment_bytes, created_ms; CRC at 40.
const FIXED_CRC_AT: usize = 40;
/// The seal: sealed end at 64, its CRC at 72.
const SEAL_AT: usize = 64;
const SEAL_TAG: &[u8; 4] = b"SEAL";

/// Decoded fixed header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Stream the segment belongs to.
    pub stream: u32,
    /// Logical position of its first record.
    pub base: Pos,
    /// File size in bytes, header included.
    pub segment_bytes: u64,
    /// Caller time (epoch ms) of the record that opened the segment (0 for a first segment).
    pub created_ms: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl SegmentHeader {
    /// The header bytes (seal empty).
    pub fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut h = [0u8; HEADER_BYTES as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.stream.to_le_bytes());
        h[16..24].copy_from_slice(&self.base.to_le_bytes());
        h[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        h[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&h[..FIXED_CRC_AT]);
        h[FIXED_CRC_AT..FIXED_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Checks and decodes a header read from a file of `file_len` bytes.
    pub fn decode(h: &[u8], file_len: u64) -> Result<Self, String> {
        if h.len() < HEADER_BYTES as usize || file_len < HEADER_BYTES {
            return Err(format!(
                "file of {file_len} bytes is shorter than the {HEADER_BYTES}-byte header"
            ));
        }
        if &h[..8] != MAGIC {
            return Err(format!("bad magic {:02x?} (expected RIMJSEG1)", &h[..8]));
        }
        let stored = u32_at(h, FIXED_CRC_AT);
        let computed = crc32c::crc32c(&h[..FIXED_CRC_AT]);
        if stored != computed {
            return Err(format!(
                "header crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(format!("segment version {version}, this build reads {VERSION}"));
        }
        let hdr = Self {
            stream: u32_at(h, 12),
            base: u64_at(h, 16),
            segment_bytes: u64_at(h, 24),
            created_ms: u64_at(h, 32),
        };
        if hdr.segment_bytes != file_len {
            return Err(format!(
                "header says {} bytes, the file has {file_len}",
                hdr.segment_bytes
            ));
        }
        Ok(hdr)
    }
}

/// The seal (its file offset and bytes) saying the records end exactly at `end`.
pub fn seal_bytes(end: Pos) -> (u64, [u8; 12]) {
    let mut s = [0u8; 12];
    s[..8].copy_from_slice(&end.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(SEAL_TAG), &s[..8]);
    s[8..].copy_from_slice(&crc.to_le_bytes());
    (SEAL_AT as u64, s)
}

/// The sealed end recorded in a header, if its seal is intact.
pub fn sealed_end(h: &[u8]) -> Option<Pos> {
    let s = h.get(SEAL_AT..SEAL_AT + 12)?;
    let end = u64_at(s, 0);
    let ok = crc32c::crc32c_append(crc32c::crc32c(SEAL_TAG), &s[..8]) == u32_at(s, 8);
    (ok && end != 0).then_some(end)
}

/// `p007`.
pub fn stream_dir(root: &Path, stream: u32) -> PathBuf {
    root.join(format!("s{stream:03}"))
}

/// `00000000000000001234.seg`.
pub fn segment_name(base: Pos) -> String {
    format!("{base:020}.seg")
}

/// The base of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<Pos> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The stream of a stream directory name (`s` and at least three digits).
pub fn parse_stream_dir(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('s')?;
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment bases in a stream directory, ascending, and leftover temporary files.
pub fn list_segments<S: Storage>(storage: &S, dir: &Path) -> Result<(Vec<Pos>, Vec<String>), JournalError> {
    let entries = storage.list_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut bases = Vec::new();
    let mut temps = Vec::new();
    for e in entries.into_iter().filter(|e| !e.is_dir) {
        if let Some(base) = parse_segment_name(&e.name) {
            bases.push(base);
        } else if e.name.ends_with(".seg.tmp") {
            temps.push(e.name);
        }
    }
    bases.sort_unstable();
    Ok((bases, temps))
}

/// Reads the header region of a file (short if the file is).
pub fn read_header<F: StorageFile>(file: &F) -> io::Result<Vec<u8>> {
    let mut h = vec![0u8; HEADER_BYTES as usize];
    let n = file.read_at(0, &mut h)?;
    h.truncate(n);
    Ok(h)
}

/// Bytes of the read window: a few of the largest frames.
const WINDOW_BYTES: usize = 256 * 1024;
/// Bytes of the largest frame.
pub const FRAME_BYTES_MAX: usize = frame::encoded_len(RECORD_BYTES_MAX);

/// A cached range of one file, refilled by `read_at`, or for a sequential reader
/// ([`Window::read_ahead`]) by direct reads with the next chunk read ahead.
pub struct Window {
    buf: Vec<u8>,
    off: u64,
    len: usize,
    ahead: Option<Box<Ahead>>,
    /// The window's bytes are `ahead`'s (the file took direct reads).
    in_ahead: bool,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            buf: vec![0; WINDOW_BYTES],
            off: 0,
            len: 0,
            ahead: None,
            in_ahead: false,
        }
    }
}

/// What is at a file offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A whole valid record: its payload is `window.bytes()[start..start + len]`.
    Record {
        /// Index of the payload in the window.
        start: usize,
        /// Payload length.
        len: usize,
        /// Frame length (padding included).
        frame: usize,
    },
    /// The zero end marker (or the end of the file).
    End,
    /// Not a valid frame.
    Invalid(FrameError),
}

impl Window {
    /// A window for reading files front to back: where a file takes direct reads, whole
    /// chunks bypass the page cache and the next is read while this one is used (see
    /// `crate::ahead`); elsewhere (or without io_uring) it works as the default one.
    pub fn read_ahead() -> Self {
        Self {
            ahead: Ahead::new(),
            ..Self::default()
        }
    }

    /// Forgets the cached bytes (another process may have written since).
    pub fn invalidate(&mut self) {
        self.len = 0;
        if let Some(a) = self.ahead.as_mut() {
            a.invalidate();
        }
    }

    /// Whether the window's bytes came from direct reads (read ahead).
    pub fn reads_direct(&self) -> bool {
        self.in_ahead
    }

    /// The window's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.ahead {
            Some(a) if self.in_ahead => a.data(),
            _ => &self.buf[..self.len],
        }
    }

    /// Makes `[off, off + n)` (clipped to the file) cached; returns its index in the window
    /// and its length.
    fn fill<F: StorageFile>(&mut self, file: &F, off: u64, n: usize) -> io::Result<(usize, usize)> {
        if let Some(a) = self.ahead.as_mut() {
            if let Some(fd) = file.direct_read_fd() {
                match a.fill(fd, file.len(), off, n) {
                    Ok(r) => {
                        self.in_ahead = true;
                        return Ok(r);
                    }
                    // A file system that took the open but not the read's alignment, a
                    // ring that refused a submission, an I/O error: the plain reads take
                    // over (and report an error that is the file's). The read-ahead
                    // window is not used again: a read of it may still be queued.
                    Err(_) => self.ahead = None,
                }
            }
        }
        if self.in_ahead {
            self.in_ahead = false;
            self.len = 0;
        }
        let n = n.min(self.buf.len());
        let cached_end = self.off + self.len as u64;
        if off >= self.off && off + n as u64 <= cached_end {
            return Ok(((off - self.off) as usize, n));
        }
        let got = file.read_at(off, &mut self.buf)?;
        self.off = off;
        self.len = got;
        Ok((0, n.min(got)))
    }

    /// The frame at file offset `off` from its header alone, its checksum not verified:
    /// for walking to a position known to be a record start (a reader opened at a
    /// position), where verifying every payload on the way cost a checksum of up to a
    /// segment per open. `Step::Record` gives the frame's length; its `start` and `len`
    /// locate a payload that was not checked.
    pub fn frame_len_at<F: StorageFile>(&mut self, file: &F, off: u64, file_len: u64) -> io::Result<Step> {
        let remain = file_len.saturating_sub(off).min(FRAME_BYTES_MAX as u64) as usize;
        if remain == 0 {
            return Ok(Step::End);
        }
        let (at, n) = self.fill(file, off, remain.min(frame::FRAME_HEADER_BYTES))?;
        Ok(match frame::read_len(&self.bytes()[at..at + n]) {
            Ok(None) => Step::End,
            Ok(Some(len)) => {
                let frame = frame::encoded_len(len);
                if frame > remain {
                    Step::Invalid(FrameError::PastEnd { frame, have: remain })
                } else {
                    Step::Record {
                        start: at + frame::FRAME_HEADER_BYTES,
                        len,
                        frame,
                    }
                }
            }
            Err(e) => Step::Invalid(e),
        })
    }

    /// Reads the frame at file offset `off` of a segment file of `file_len` bytes.
    pub fn frame_at<F: StorageFile>(&mut self, file: &F, off: u64, file_len: u64) -> io::Result<Step> {
        let remain = file_len.saturating_sub(off).min(FRAME_BYTES_MAX as u64) as usize;
        if remain == 0 {
            return Ok(Step::End);
        }
        let (at, n) = self.fill(file, off, remain)?;
        Ok(match frame::read(&self.bytes()[at..at + n]) {
            Ok(None) => Step::End,
            Ok(Some((payload, frame))) => Step::Record {
                start: at + frame::FRAME_HEADER_BYTES,
                len: payload.len(),
                frame,
            },
            Err(e) => Step::Invalid(e),
        })
    }
}

/// Where a scan of a segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// File offset after the last valid record.
    pub end_off: u64,
    /// Valid records found.
    pub records: u64,
    /// Why it stopped, if not at the zero end marker or the end of the file.
    pub stop: Option<FrameError>,
}

/// Walks the valid records of a segment from `from_off` until the first end or invalid frame.
pub fn scan<F: StorageFile>(window: &mut Window, file: &F, from_off: u64) -> io::Result<ScanEnd> {
    let file_len = file.len();
    // The window may hold another file's bytes.
    window.invalidate();
    let mut end = ScanEnd {
        end_off: from_off,
        records: 0,
        stop: None,
    };
    loop {
        match window.frame_at(file, end.end_off, file_len)? {
            Step::Record { frame, .. } => {
                end.end_off += frame as u64;
                end.records += 1;
            }
            Step::End => return Ok(end),
            Step::Invalid(e) => {
                end.stop = Some(e);
                return Ok(end);
            }
        }
    }
}

/// Offset one past the last non-zero byte in `[from, file end)`, if any, read through
/// `window` (which may hold another file's bytes).
pub fn nonzero_end<F: StorageFile>(window: &mut Window, file: &F, from: u64) -> io::Result<Option<u64>> {
    window.invalidate();
    let mut off = from;
    let mut last = None;
    while off < file.len() {
        // Frame-sized steps: a direct window carries at most a frame over into the chunk
        // read ahead (a larger step would drop that chunk and read it again).
        let want = (file.len() - off).min(FRAME_BYTES_MAX as u64) as usize;
        let (at, n) = window.fill(file, off, want)?;
        if n == 0 {
            break;
        }
        if let Some(i) = window.bytes()[at..at + n].iter().rposition(|&b| b != 0) {
            last = Some(off + i as u64 + 1);
        }
        off += n as u64;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_seal() {
        let h = SegmentHeader {
            stream: 3,
            base: 4096,
            segment_bytes: 1 << 20,
            created_ms: 77,
        };
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes, 1 << 20), Ok(h));
        assert!(SegmentHeader::decode(&bytes, 1 << 19).is_err());
        assert_eq!(sealed_end(&bytes), None);
        let (at, seal) = seal_bytes(9999);
        bytes[at as usize..at as usize + 12].copy_from_slice(&seal);
        assert_eq!(sealed_end(&bytes), Some(9999));
        bytes[SEAL_AT] ^= 1;
        assert_eq!(sealed_end(&bytes), None);
    }

    #[test]
    fn names() {
        assert_eq!(parse_segment_name(&segment_name(12345)), Some(12345));
        assert_eq!(parse_segment_name("123.seg"), None);
        assert_eq!(parse_stream_dir("s007"), Some(7));
        assert_eq!(parse_stream_dir("s7"), None);
    }
}
