//! The stats segment: a shared-memory file that the daemon rewrites about every 100 ms
//! with its latest [`Snapshot`] and that `rimctl stats` reads while the daemon runs.
//!
//! # Layout
//!
//! ```text
//! off  size  field
//!   0     8  magic "RIMSTAT1"
//!   8     4  layout version (u32, little-endian), currently 1
//!  12     4  writer pid (u32, little-endian)
//!  16     8  sequence (u64): even = stable, odd = being written, 0 = nothing published yet
//!  24     8  payload length in bytes (u64)
//!  32    32  reserved, zero
//!  64     …  the snapshot as JSON, zero-padded to a whole 8-byte word
//! ```
//!
//! # Protocol (a seqlock, one writer)
//!
//! Writer: `seq += 1` (odd), release fence, payload and length stored word by word,
//! `seq += 1` (even, release). A snapshot whose JSON does not fit is refused with
//! [`StatsError::TooLarge`] before the sequence moves, so the previous one stays readable.
//!
//! Reader: load `seq` and acquire-fence; odd means retry; read the length and bounds-check
//! it against the mapping; copy the payload out with relaxed atomic word loads (the writer
//! may be racing, so no `&[u8]` over the shared bytes is ever formed); acquire fence;
//! re-load `seq`; equal means the copy is one whole snapshot and is parsed. After
//! [`READ_RETRIES`] failed attempts the reader gives up with [`StatsError::Torn`].
//! All reader loads are relaxed plus explicit fences because the reader's mapping is
//! read-only, and relaxed word-sized atomic loads are the form Rust allows on read-only
//! memory.
//!
//! # Ownership and lifetime
//!
//! The daemon owns the file. [`StatsWriter::create`] builds and initialises a fresh file
//! beside `path` and renames it over `path`: a stale segment from a dead daemon is
//! replaced, and a reader still mapping the old file keeps a valid (if stale) mapping
//! instead of having it truncated under it (which would be SIGBUS). The writer never
//! shrinks its file; a reader survives any content but, like any mapping, not someone
//! else truncating the file while it is mapped. Dropping the writer leaves the file in
//! place so that `rimctl stats` can still read the final snapshot (the daemon publishes
//! one with `running: false` on shutdown); [`StatsWriter::remove`] deletes it instead.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::StatsError;
pub use crate::seqlock::HEADER_BYTES;
use crate::seqlock::{self, Attempt};
use crate::seqlock::{LEN_OFF, SEQ_OFF};
use crate::snapshot::Snapshot;

/// The first 8 bytes of every stats segment.
pub const MAGIC: [u8; 8] = *b"RIMSTAT1";
/// The layout this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// Default file mode: the daemon's user only.
pub const DEFAULT_MODE: u32 = 0o600;
/// Smallest segment [`StatsWriter::create`] accepts: the header and one cache line.
pub const MIN_SEGMENT_BYTES: usize = HEADER_BYTES + 64;
/// Largest segment created or mapped (1 GiB): bounds what a reader will copy.
pub const MAX_SEGMENT_BYTES: usize = 1 << 30;
/// How many times a reader tries before reporting [`StatsError::Torn`].
pub const READ_RETRIES: u32 = 1000;

const MAGIC_OFF: usize = 0;
const VERSION_PID_OFF: usize = 8;

/// A mapping viewed as 8-byte words, every access atomic. Both ends go through this and
/// nothing else, so no Rust reference to the shared bytes themselves ever exists.
#[derive(Debug)]
struct Words {
    map: MmapRaw,
}

impl Words {
    /// Number of bytes mapped.
    fn len(&self) -> usize {
        self.map.len()
    }

    /// The word at byte offset `off`. Offsets are header constants or payload offsets
    /// already checked against [`Words::payload_cap`]; the assert catches a bug in that
    /// arithmetic, never file content.
    #[inline]
    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.len(),
            "stats segment offset {off} out of bounds"
        );
        // SAFETY: the mapping is page-aligned and `off` is a multiple of 8 with
        // `off + 8 <= len`, so this is an aligned, in-bounds u64 that lives as long as
        // `self.map` (the borrow of `self` ties it to that). AtomicU64 has u64's size and
        // alignment, and every access to the segment from either side is atomic, so the
        // writer racing with readers (even in another process) is not a data race.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Payload bytes the mapping holds, in whole words.
    fn payload_cap(&self) -> usize {
        (self.len() - HEADER_BYTES) / 8 * 8
    }

    fn load(&self, off: usize) -> u64 {
        u64::from_le(self.word(off).load(Ordering::Relaxed))
    }

    fn store(&self, off: usize, v: u64) {
        self.word(off).store(v.to_le(), Ordering::Relaxed);
    }

    fn magic_ok(&self) -> bool {
        self.word(MAGIC_OFF).load(Ordering::Relaxed) == u64::from_ne_bytes(MAGIC)
    }

    /// (layout version, writer pid).
    fn version_pid(&self) -> (u32, u32) {
        let v = self.load(VERSION_PID_OFF);
        // Low half is bytes 8..12 (version), high half bytes 12..16 (pid): little-endian.
        ((v & 0xffff_ffff) as u32, (v >> 32) as u32)
    }
}

impl seqlock::Words for Words {
    fn word(&self, off: usize) -> &AtomicU64 {
        Words::word(self, off)
    }
    fn payload_cap(&self) -> usize {
        Words::payload_cap(self)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StatsError + 'a {
    move |source| StatsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The daemon's end of the stats segment. See the module docs for the layout and for why
/// dropping it leaves the file behind.
#[derive(Debug)]
pub struct StatsWriter {
    words: Words,
    path: PathBuf,
    /// The last sequence stored (even between publishes); only this writer changes it.
    seq: u64,
    /// Reused serialisation buffer.
    json: Vec<u8>,
}

impl StatsWriter {
    /// Creates the segment at `path`: a fresh file of `bytes` with permissions `mode`
    /// (exactly, whatever the umask; [`DEFAULT_MODE`] is 0600), header initialised, then
    /// atomically renamed over `path`, replacing any stale segment.
    pub fn create(path: &Path, bytes: usize, mode: u32) -> Result<Self, StatsError> {
        check_size(bytes)?;
        let tmp = temp_path(path)?;
        let built = build_segment(&tmp, bytes, mode).and_then(|words| {
            std::fs::rename(&tmp, path).map_err(io_err("rename", path))?;
            Ok(words)
        });
        let words = match built {
            Ok(words) => words,
            Err(e) => {
                // Best effort: the error being reported matters more than a leftover file.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        Ok(Self {
            words,
            path: path.to_owned(),
            seq: 0,
            json: Vec::new(),
        })
    }

    /// Publishes `snap` as JSON under the seqlock. A snapshot too large for the segment is
    /// refused with [`StatsError::TooLarge`] and the previous one stays readable.
    pub fn publish(&mut self, snap: &Snapshot) -> Result<(), StatsError> {
        self.json.clear();
        serde_json::to_writer(&mut self.json, snap)?;
        let cap = self.words.payload_cap();
        if self.json.len() > cap {
            return Err(StatsError::TooLarge {
                need: self.json.len() as u64,
                cap: cap as u64,
            });
        }
        self.write_locked();
        Ok(())
    }

    /// The seqlock write of `self.json`, which fits.
    fn write_locked(&mut self) {
        self.seq = seqlock::write(&self.words, self.seq, &self.json);
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Largest snapshot JSON the segment holds, in bytes.
    pub fn capacity(&self) -> usize {
        self.words.payload_cap()
    }

    /// Unmaps and deletes the segment (for a daemon that wants no trace left; the default,
    /// dropping, keeps the final snapshot readable).
    pub fn remove(self) -> Result<(), StatsError> {
        let path = self.path.clone();
        drop(self);
        std::fs::remove_file(&path).map_err(io_err("remove", &path))
    }
}

/// Dropping the writer unmaps the segment but deliberately leaves the file: `rimctl stats`
/// can still read the last snapshot published (the daemon's shutdown publishes one with
/// `running: false`), and the next daemon's [`StatsWriter::create`] replaces it.
impl Drop for StatsWriter {
    fn drop(&mut self) {}
}

fn check_size(bytes: usize) -> Result<(), StatsError> {
    if bytes < MIN_SEGMENT_BYTES {
        return Err(StatsError::TooSmall {
            len: bytes as u64,
            min: MIN_SEGMENT_BYTES as u64,
        });
    }
    if bytes > MAX_SEGMENT_BYTES {
        return Err(StatsError::TooLarge {
            need: bytes as u64,
            cap: MAX_SEGMENT_BYTES as u64,
        });
    }
    Ok(())
}

/// `<path>.tmp.<pid>`, in the same directory so the rename is atomic.
fn temp_path(path: &Path) -> Result<PathBuf, StatsError> {
    let Some(name) = path.file_name() else {
        return Err(StatsError::Io {
            op: "create",
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "stats segment path has no file name"),
        });
    };
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Creates `tmp` (exclusively, not following symlinks: the directory may be shared),
/// sizes it, maps it and writes the header.
fn build_segment(tmp: &Path, bytes: usize, mode: u32) -> Result<Words, StatsError> {
    let file = create_exclusive(tmp, mode)?;
    // The mode given at open is filtered by the umask; set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("chmod", tmp))?;
    file.set_len(bytes as u64).map_err(io_err("ftruncate", tmp))?;
    let map = MmapOptions::new()
        .len(bytes)
        .map_raw(&file)
        .map_err(io_err("mmap", tmp))?;
    let words = Words { map };
    init_header(&words);
    Ok(words)
}

/// Opens a new file at `path`; a leftover from an earlier process with our pid is
/// removed and the open retried once.
fn create_exclusive(path: &Path, mode: u32) -> Result<File, StatsError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path).map_err(io_err("remove stale", path))?;
            open().map_err(io_err("create", path))
        }
        other => other.map_err(io_err("create", path)),
    }
}

/// Writes the header of a fresh (zeroed) segment; the file is not visible at `path` yet.
fn init_header(words: &Words) {
    let version_pid = u64::from(LAYOUT_VERSION) | (u64::from(std::process::id()) << 32);
    words.store(VERSION_PID_OFF, version_pid);
    words.store(SEQ_OFF, 0);
    words.store(LEN_OFF, 0);
    // Magic last and released, so that anyone who sees it sees an initialised header.
    words
        .word(MAGIC_OFF)
        .store(u64::from_ne_bytes(MAGIC), Ordering::Release);
}

/// A read-only view of a stats segment, for `rimctl stats` (or anyone). Trusts nothing
/// in the file.
#[derive(Debug)]
pub struct StatsReader {
    words: Words,
    path: PathBuf,
}

impl StatsReader {
    /// Opens and maps `path` read-only and checks its header (size, magic, version).
    pub fn open(path: &Path) -> Result<Self, StatsError> {
        // Non-blocking so that a FIFO at the path cannot hang the reader; it is refused
        // just below like anything else that is not a regular file.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err("open", path))?;
        let meta = file.metadata().map_err(io_err("stat", path))?;
        if !meta.is_file() {
            return Err(StatsError::Io {
                op: "open",
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let file_len = meta.len();
        if file_len < HEADER_BYTES as u64 {
            return Err(StatsError::TooSmall {
                len: file_len,
                min: HEADER_BYTES as u64,
            });
        }
        // A larger file is a foreign one; mapping its first part is enough to refuse it
        // or to read a payload bounded by what a writer could have written.
        let map_len = usize::try_from(file_len).unwrap_or(usize::MAX).min(MAX_SEGMENT_BYTES);
        let map = MmapOptions::new()
            .len(map_len)
            .map_raw_read_only(&file)
            .map_err(io_err("mmap", path))?;
        let reader = Self {
            words: Words { map },
            path: path.to_owned(),
        };
        reader.check_header()?;
        Ok(reader)
    }

    fn check_header(&self) -> Result<(), StatsError> {
        if !self.words.magic_ok() {
            return Err(StatsError::BadMagic);
        }
        let (found, _) = self.words.version_pid();
        if found != LAYOUT_VERSION {
            return Err(StatsError::BadVersion {
                found,
                expected: LAYOUT_VERSION,
            });
        }
        Ok(())
    }

    /// Reads the latest snapshot: a seqlock read with up to [`READ_RETRIES`] attempts,
    /// the payload copied out before it is parsed.
    pub fn read(&self) -> Result<Snapshot, StatsError> {
        self.check_header()?;
        for attempt in 0..READ_RETRIES {
            match self.try_read()? {
                Some(bytes) => return Ok(serde_json::from_slice(&bytes)?),
                None => back_off(attempt),
            }
        }
        Err(StatsError::Torn { retries: READ_RETRIES })
    }

    /// One seqlock attempt: `Ok(Some(payload))` when the copy is consistent, `Ok(None)`
    /// when the writer was busy, an error when the stable header itself is wrong.
    fn try_read(&self) -> Result<Option<Vec<u8>>, StatsError> {
        match seqlock::try_read(&self.words) {
            Attempt::Busy => Ok(None),
            Attempt::Empty => Err(StatsError::Empty),
            Attempt::Payload(p) => Ok(Some(p)),
            Attempt::OutOfBounds { len, cap } => Err(StatsError::LengthOutOfBounds { len, cap: cap as u64 }),
        }
    }

    /// The pid recorded by the segment's writer.
    pub fn writer_pid(&self) -> u32 {
        self.words.version_pid().1
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Waits a little before the next attempt: spin briefly (the writer takes microseconds),
/// then yield, then sleep, in case the writer was descheduled mid-write.
fn back_off(attempt: u32) {
    if attempt < 16 {
        std::hint::spin_loop();
    } else if attempt < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}
