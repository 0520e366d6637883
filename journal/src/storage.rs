//! The storage seam: every file operation of the journal and its readers goes through
//! [`Storage`], so crash and I/O-fault tests swap the real file system ([`Fs`]) for an
//! in-memory one that forgets un-synced data ([`crate::faulty::FaultyFs`]).
//!
//! Writes never go through a shared mapping. The journal copies frames into buffers of its
//! own and hands each group commit to a [`Committer`] as one [`Commit`]: the writes (file,
//! offset, bytes), then the data sync of every file written, then the directories to sync.
//! [`Fs`]'s committer hands the whole commit to threads of its own and returns at once:
//! per file a part that makes its writes (`pwrite`) and then its `fdatasync`, files in
//! parallel; the journal keeps appending into its next buffer while they write and sync
//! (pipelining), and collects the completion later with [`Committer::poll`]. The calls
//! block on purpose: a blocking direct write is completed by the thread waiting for it.
//! Submitted to io_uring (as until stop 54) the same write completed on a kernel worker
//! bound to the interrupt's CPU, which could wait seconds for that CPU (see
//! [`COMMIT_THREADS`]). Where no thread can be started the same commit runs as `pwrite`s
//! and `fdatasync`s inside `start`.
//!
//! Appends (writes marked [`WriteOp::zeros_after`]) go through a second descriptor of the
//! file opened `O_DIRECT`, as whole blocks (see [`Direct`]): no page cache page is
//! allocated, filled or written back for them.
//!
//! Why not a shared mapping: writeback of a shared mapping flushes the TLBs of every core
//! the process runs on (inter-processor interrupts into the busy-polling hot shard), and
//! first touches of fresh segment pages fault on the writer. `pwrite` has neither.
//!
//! Buffers are owned by the commit while it is in flight and handed back with its
//! completion ([`Done`]), so the journal recycles them and a buffer can never be reused or
//! freed while the kernel still reads it; a committer dropped with a commit in flight waits
//! for it first.
//!
//! Readers open files read-only and use `pread`: the journal never truncates a segment (it
//! zeroes torn tails in place), and a reader that only preads cannot be hit by `SIGBUS`
//! whatever another process does to the file.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use io_uring::IoUring;

/// How a storage makes data durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMethod {
    /// Per group commit, each file's writes (direct `pwrite(2)`s) and its `fdatasync(2)` on
    /// the committer's threads, files in parallel, while the journal goes on appending.
    Threads,
    /// `pwrite(2)` and one `fdatasync(2)` per file, inside the call that starts the commit.
    Fdatasync,
    /// An in-memory test file system.
    Memory,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    /// File name (not the path).
    pub name: String,
    /// True for a directory.
    pub is_dir: bool,
}

/// An open file of a [`Storage`]. Fixed size from creation on. A handle is cheap to clone
/// (clones refer to the same open file), so a commit can hold the files it writes.
pub trait StorageFile: Clone + Send + 'static {
    /// The file's size in bytes.
    fn len(&self) -> u64;
    /// True if the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes `bytes` at `offset`, inside the file (files never grow), now. Needs a
    /// writable open. (Recovery's repairs; appends go through a [`Commit`].)
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Sets `len` bytes at `offset` to zero (inside the file). Needs a writable open.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Whether two handles refer to the same open file.
    fn same_file(&self, other: &Self) -> bool;
    /// A descriptor of the same file opened `O_DIRECT` for reading, in [`DIRECT_BLOCK`]
    /// aligned offsets, lengths and addresses, if the file system takes it: sequential
    /// readers read ahead through it (`crate::ahead`) without filling the page cache.
    /// Valid while this handle (or a clone) lives.
    fn direct_read_fd(&self) -> Option<RawFd> {
        None
    }
}

/// One write of a [`Commit`]: `bufs[buf][start..end]` goes to `file` at `offset`.
#[derive(Debug)]
pub struct WriteOp<F> {
    /// The file.
    pub file: F,
    /// File offset of the first byte.
    pub offset: u64,
    /// Index of the buffer in [`Commit::bufs`].
    pub buf: usize,
    /// First byte in the buffer.
    pub start: usize,
    /// One past the last byte in the buffer.
    pub end: usize,
    /// The file holds only zero bytes after this write (an append at the end of its
    /// data): a direct write may fill the rest of its last block with zeros unread.
    pub zeros_after: bool,
}

/// One group commit: the writes, in order (writes to one file are applied in the order
/// given), then a data sync of every file in `syncs` (each after all writes to it), and a
/// sync of every directory in `dirs`. The commit is complete when all of them are.
#[derive(Debug)]
pub struct Commit<F> {
    /// Buffers the writes refer to; owned by the commit until it completes.
    pub bufs: Vec<Vec<u8>>,
    /// The writes.
    pub writes: Vec<WriteOp<F>>,
    /// Files whose data is synced (every file written must be here to be durable).
    pub syncs: Vec<F>,
    /// Directories whose entries are synced.
    pub dirs: Vec<PathBuf>,
}

impl<F> Default for Commit<F> {
    fn default() -> Self {
        Self {
            bufs: Vec::new(),
            writes: Vec::new(),
            syncs: Vec::new(),
            dirs: Vec::new(),
        }
    }
}

impl<F> Commit<F> {
    /// True if the commit would do nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.syncs.is_empty() && self.dirs.is_empty()
    }

    /// Bytes written.
    pub fn bytes(&self) -> u64 {
        self.writes.iter().map(|w| (w.end - w.start) as u64).sum()
    }
}

/// A finished commit: its buffers back (for reuse) and the first failure, if any.
#[derive(Debug)]
pub struct Done<F> {
    /// The commit as it was started.
    pub commit: Commit<F>,
    /// `Ok` when every write and sync succeeded.
    pub result: io::Result<()>,
}

/// Most group commits a committer keeps in flight at once.
pub const FLIGHTS_MAX: usize = 4;

/// Runs group commits, up to [`FLIGHTS_MAX`] at a time, and hands them back in the order
/// they were started.
pub trait Committer: Send + 'static {
    /// The storage's file handle.
    type File: StorageFile;
    /// Starts `commit` beside those in flight (at most [`FLIGHTS_MAX`]: call again only
    /// after [`Committer::poll`] returned the oldest). Commits in flight run independently:
    /// a later one may reach the disk first. A start that fails submitted nothing that
    /// will complete (the commit's buffers are dropped).
    fn start(&mut self, commit: Commit<Self::File>) -> io::Result<()>;
    /// The oldest commit in flight, once every operation of it finished; waits at most
    /// `wait` (`None`: does not block). `Ok(None)` while it runs or when none is in flight.
    /// A later commit that finished first waits for the ones before it.
    fn poll(&mut self, wait: Option<Duration>) -> io::Result<Option<Done<Self::File>>>;
    /// Confines the threads that run this committer's I/O to `cpus`, so they do not run on
    /// a busy-polling core. A no-op where not applicable.
    fn confine_workers(&mut self, cpus: &[usize]) -> io::Result<()>;
    /// Commits started and not yet returned by [`Committer::poll`].
    fn flights(&self) -> usize;
    /// True while a commit is in flight.
    fn in_flight(&self) -> bool {
        self.flights() > 0
    }
}

/// Every file operation of the journal.
pub trait Storage: Clone + Send + 'static {
    /// An open file.
    type File: StorageFile;
    /// Runs group commits over this storage's files.
    type Committer: Committer<File = Self::File>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Lists `dir` (any order).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Creates `path` (which must not exist) as `len` zero bytes whose first bytes are
    /// `head`, opened writable. The file appears under `path` only complete (size and head).
    fn create_file(&self, path: &Path, len: u64, head: &[u8]) -> io::Result<Self::File>;
    /// Opens an existing file, writable or read-only.
    fn open_file(&self, path: &Path, writable: bool) -> io::Result<Self::File>;
    /// Removes a file (open handles stay usable).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// A committer; how it syncs is its [`Storage::sync_method`].
    fn committer(&self) -> io::Result<Self::Committer>;
    /// Whether the journal should keep spare segment files, prepared ahead on a thread of
    /// its own ([`Storage::prepare_spare`]), for rotations to take.
    fn keeps_spares(&self) -> bool {
        false
    }
    /// Creates `path` (a temporary name) as `len` zero bytes written all the way (not just
    /// allocated: writes into unwritten extents make every later data sync a metadata
    /// commit), durable. Blocking. `background: Some(hurry)` is the spares thread's fill:
    /// the lowest I/O priority (and nice 10) for the rest of the calling thread's life, in
    /// small writes, and while `hurry` is set (the journal is past half of its segment and
    /// the spare is not ready; the journal owns the flag) best-effort priority in large
    /// writes. `None`: the thread's own priority, large writes.
    fn prepare_spare(&self, path: &Path, len: u64, background: Option<&AtomicBool>) -> io::Result<()>;
    /// Turns a prepared spare into the segment `path`: writes `head` at its start, renames
    /// it, and opens it writable. The rename becomes durable with the next sync of the
    /// directory.
    fn adopt_spare(&self, spare: &Path, path: &Path, head: &[u8]) -> io::Result<Self::File>;
    /// How commits reach the disk (decided when the first committer was made).
    fn sync_method(&self) -> SyncMethod;
}

/// The real file system: `pwrite`-backed files, group commits on commit threads.
#[derive(Clone, Debug, Default)]
pub struct Fs {
    no_commit_threads: bool,
}

impl Fs {
    /// A real file system handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits run inside the call that starts them (tests of the fallback).
    pub fn without_commit_threads() -> Self {
        Self {
            no_commit_threads: true,
        }
    }
}

/// A file of [`Fs`]: a shared descriptor and the file's (fixed) size.
#[derive(Clone)]
pub struct FsFile {
    file: Arc<File>,
    /// The same file opened `O_DIRECT`, for commits' appends (see [`Direct`]); `None`
    /// read-only or where the file system refuses `O_DIRECT` (tmpfs).
    direct: Option<Arc<Direct>>,
    /// The same file opened `O_DIRECT` for sequential reads (see
    /// [`StorageFile::direct_read_fd`]).
    reads: Arc<DirectFd>,
    len: u64,
    writable: bool,
}

/// A file opened a second time `O_DIRECT` (for writing or for reading), on first use:
/// a segment opened only to be sealed, or never read sequentially, never needs one.
struct DirectFd {
    /// Where the file was opened (the direct descriptor is opened by path).
    path: PathBuf,
    write: bool,
    /// `None` inside when the file system refuses direct I/O in 4 KiB blocks or the path
    /// no longer names this file.
    file: std::sync::OnceLock<Option<File>>,
}

impl DirectFd {
    fn new(path: &Path, write: bool) -> Self {
        Self {
            path: path.to_path_buf(),
            write,
            file: std::sync::OnceLock::new(),
        }
    }

    /// The direct descriptor, opened on first use, if `buffered`'s file takes direct I/O.
    fn get(&self, buffered: &File) -> Option<&File> {
        self.file
            .get_or_init(|| open_direct(&self.path, buffered, self.write))
            .as_ref()
    }
}

/// Block of direct writes: their file offsets, lengths and buffer addresses are multiples
/// of it (4096 covers every logical block size up to the page size).
pub(crate) const DIRECT_BLOCK: usize = 4096;

/// A file's `O_DIRECT` descriptor. Appends go straight from memory to the disk: through
/// the page cache, every byte a commit writes was first copied into a freshly allocated
/// page cache page, and on this project's VM a fresh page costs a host fault (2 GiB of
/// buffered appends: 11-14 s of system time against 0.2 s direct), which capped a
/// sustained journal at about 1M events/s. Direct writes are whole blocks: a commit's
/// first block starts with what the previous one left in it (kept in `tail`, so it is
/// never read back) and its last block is padded with the zeros the file holds there.
struct Direct {
    /// The `O_DIRECT` descriptor for writing, opened at the first append.
    fd: DirectFd,
    /// The last partial block a direct write left (file offset, contents as on disk once
    /// that write lands).
    tail: std::sync::Mutex<Option<(u64, Box<[u8]>)>>,
}

impl Direct {
    fn new(path: &Path) -> Arc<Self> {
        Arc::new(Self {
            fd: DirectFd::new(path, true),
            tail: std::sync::Mutex::new(None),
        })
    }

    fn forget_tail(&self) {
        if let Ok(mut t) = self.tail.lock() {
            *t = None;
        }
    }
}

/// `path` opened `O_DIRECT` for writing (or for reading), if it is still the file
/// `buffered` has open (the same device and inode: direct writes and the sync on
/// `buffered` must meet in one file, and a reader must read the file it opened) and its
/// file system takes direct I/O in [`DIRECT_BLOCK`]s.
fn open_direct(path: &Path, buffered: &File, write: bool) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let (a, b) = (buffered.metadata().ok()?, file.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino() && direct_takes_blocks(&file)).then_some(file)
}

/// Whether direct I/O on `file` takes [`DIRECT_BLOCK`]-aligned offsets, lengths and
/// addresses, by `statx(STATX_DIOALIGN)` (Linux 6.1). A kernel that does not answer it is
/// trusted: every Linux file system with `O_DIRECT` takes whole 4 KiB blocks.
#[allow(unsafe_code)]
fn direct_takes_blocks(file: &File) -> bool {
    // SAFETY: `statx` is a plain-data struct, for which all zero bytes are a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is an empty NUL-terminated string and AT_EMPTY_PATH makes statx
    // describe the open descriptor itself; `st` is a valid out-buffer the call fills.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut st,
        )
    };
    if rc != 0 || st.stx_mask & libc::STATX_DIOALIGN == 0 {
        return true;
    }
    let fits = |align: u32| align != 0 && align as usize <= DIRECT_BLOCK;
    fits(st.stx_dio_mem_align) && fits(st.stx_dio_offset_align)
}

impl std::fmt::Debug for FsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsFile").field("len", &self.len).finish_non_exhaustive()
    }
}

fn out_of_range(offset: u64, len: u64, file_len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("range {offset}+{len} is outside the file of {file_len} bytes"),
    )
}

fn not_writable() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only")
}

impl FsFile {
    fn new(file: File, writable: bool, path: &Path) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            direct: None,
            reads: Arc::new(DirectFd::new(path, false)),
            len,
            writable,
        })
    }

    /// A writable file at `path`, whose appends go direct where the file system lets them.
    fn writable(file: File, path: &Path) -> io::Result<Self> {
        let mut f = Self::new(file, true, path)?;
        f.direct = Some(Direct::new(path));
        Ok(f)
    }

    /// The direct descriptor for appends (opened on first use), if the file has one.
    fn direct_file(&self) -> Option<&File> {
        self.direct.as_ref().and_then(|d| d.fd.get(&self.file))
    }

    /// Whether commits' appends to this file bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct_file().is_some()
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(not_writable());
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(out_of_range(offset, len, self.len)),
        }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.len.saturating_sub(offset) as usize);
        let mut done = 0;
        while done < want {
            match self.file.read_at(&mut buf[done..want], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.check(offset, bytes.len() as u64)?;
        if let Some(d) = &self.direct {
            d.forget_tail();
        }
        self.file.write_all_at(bytes, offset)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        if let Some(d) = &self.direct {
            d.forget_tail();
        }
        // Only rewrite blocks that hold something: zeroing clean zero blocks would write
        // the whole preallocated rest of a segment.
        const CHUNK: usize = 64 * 1024;
        let zeros = vec![0u8; CHUNK];
        let mut buf = vec![0u8; CHUNK];
        let mut off = offset;
        let end = offset + len;
        while off < end {
            let n = (end - off).min(CHUNK as u64) as usize;
            let got = self.read_at(off, &mut buf[..n])?;
            if buf[..got].iter().any(|&b| b != 0) {
                self.file.write_all_at(&zeros[..n], off)?;
            }
            off += n as u64;
        }
        Ok(())
    }

    fn direct_read_fd(&self) -> Option<RawFd> {
        self.reads.get(&self.file).map(File::as_raw_fd)
    }

    fn same_file(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn fdatasync(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: fdatasync only reads the descriptor number; `fd` belongs to a file the
        // caller keeps open for the duration of the call.
        let rc = unsafe { libc::fdatasync(fd) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| out_of_range(0, 0, len))?;
    // SAFETY: posix_fallocate only reads the descriptor number of an open file.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Some file systems refuse preallocation: fall back to a sparse file of the size.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len as u64),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Bytes per write of a background zero fill with time to spare (a multiple of
/// [`DIRECT_BLOCK`], for `O_DIRECT`). The fill writes one chunk at a time, and a commit's
/// write and flush that reach the disk meanwhile wait behind the chunk in flight, whatever
/// the fill's I/O priority (the block layer orders what waits, not what the disk already
/// has): 1 MiB chunks (about 1.4 ms of this machine's 720 MB/s) put `journal-bare`'s
/// durable-lag p99 at 2.0-2.2 ms, 256 KiB at 0.6-1.2 ms (64 KiB no better).
const ZERO_CHUNK_BYTES: usize = 256 << 10;
/// Bytes per write of a zero fill in a hurry (and of a foreground one). At the idle I/O
/// priority a saturating journal leaves the fill few gaps, and 256 KiB per gap missed the
/// spare at every rotation of `journal-max` (a segment then is only allocated, and its
/// syncs commit metadata).
const ZERO_CHUNK_URGENT_BYTES: usize = 1 << 20;

/// Index of the first [`DIRECT_BLOCK`]-aligned byte of `buf` (which must hold a block
/// more than it is used for).
pub(crate) fn aligned_start(buf: &[u8]) -> usize {
    buf.as_ptr().align_offset(DIRECT_BLOCK).min(DIRECT_BLOCK)
}

/// Writes `len` zero bytes to a new file at `path` and syncs it. With `O_DIRECT` where the
/// file system takes it: the zeros bypass the page cache (no dirty pages for a later sync
/// to wait on, no cache pollution) and go at this thread's I/O priority.
fn zero_fill(path: &Path, len: u64, hurry: Option<&AtomicBool>) -> io::Result<()> {
    let direct = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let (file, aligned) = match direct {
        Ok(f) => (f, true),
        // tmpfs and some others refuse O_DIRECT: buffered zeros then.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(path)?;
            (f, false)
        }
        Err(e) => return Err(e),
    };
    preallocate(&file, len)?;
    let mut raw = vec![0u8; ZERO_CHUNK_URGENT_BYTES + DIRECT_BLOCK];
    let start = aligned_start(&raw);
    let zeros = &mut raw[start..start + ZERO_CHUNK_URGENT_BYTES];
    let mut off = 0u64;
    let mut hurried = false;
    while off < len {
        let urgent = hurry.is_none_or(|h| h.load(Ordering::Relaxed));
        if hurry.is_some() && urgent != hurried {
            if urgent {
                set_io_priority(IOPRIO_CLASS_BE, IOPRIO_BE_LOWEST);
            } else {
                set_idle_io_priority();
            }
            hurried = urgent;
        }
        let chunk = if urgent {
            ZERO_CHUNK_URGENT_BYTES
        } else {
            ZERO_CHUNK_BYTES
        };
        let n = (len - off).min(chunk as u64) as usize;
        // O_DIRECT needs whole blocks: a segment's size is a multiple of 8, not of 4096, so
        // a short last piece goes through the page cache.
        if aligned && n.is_multiple_of(DIRECT_BLOCK) {
            file.write_all_at(&zeros[..n], off)?;
        } else {
            let tail = OpenOptions::new().write(true).open(path)?;
            tail.write_all_at(&zeros[..n], off)?;
            tail.sync_data()?;
        }
        off += n as u64;
    }
    let synced = file.sync_all();
    if hurried {
        set_idle_io_priority();
    }
    synced
}

/// Nice value of the spares thread: it shares the cold core with the journal thread,
/// which preempts it when it wakes (a zero fill's few milliseconds of submissions showed
/// as runs of up to 3 ms while the journal waited), yet at about a tenth of a contended
/// core it still prepares a 64 MiB spare in tens of milliseconds when the journal is
/// saturated.
const SPARES_NICE: libc::c_int = 10;

/// The calling thread's id.
#[allow(unsafe_code)]
pub(crate) fn thread_id() -> i32 {
    // SAFETY: gettid takes nothing and touches no memory.
    unsafe { libc::gettid() }
}

/// Gives thread `tid` (of this process; 0 = none) the CPUs the calling thread may run on.
/// Failure only costs latency: the thread keeps the CPUs it has.
#[allow(unsafe_code)]
pub(crate) fn give_own_cpus_to(tid: i32) {
    if tid <= 0 {
        return;
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is a plain bit array (all-zero is the empty set);
    // sched_getaffinity writes at most `size` bytes into it and sched_setaffinity reads as
    // many; neither keeps the pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut set) == 0 {
            let _ = libc::sched_setaffinity(tid, size, &set);
        }
    }
}

/// Lowers the calling thread's CPU priority to [`SPARES_NICE`]. Failure only costs latency.
#[allow(unsafe_code)]
fn lower_cpu_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours;
    // PRIO_PROCESS with a thread id changes only that thread's nice value on Linux.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, SPARES_NICE) };
}

/// Puts the calling thread's I/O in the idle class: the block layer (mq-deadline, bfq)
/// serves it only when nothing else waits, so a spare's zeros (or another writer sharing
/// the disk, such as the daemon's store) never delay a commit. Failure only costs latency.
pub fn set_idle_io_priority() {
    set_io_priority(IOPRIO_CLASS_IDLE, 0);
}

const IOPRIO_CLASS_BE: libc::c_long = 2;
const IOPRIO_CLASS_IDLE: libc::c_long = 3;
/// The lowest level of the best-effort class.
const IOPRIO_BE_LOWEST: libc::c_long = 7;

/// Sets the calling thread's I/O priority class and level. Failure only costs latency.
fn set_io_priority(class: libc::c_long, level: libc::c_long) {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: ioprio_set takes three integers (who = this thread, its priority) and
    // touches no memory of ours.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            (class << IOPRIO_CLASS_SHIFT) | level,
        )
    };
}

impl Storage for Fs {
    type File = FsFile;
    type Committer = FsCommitter;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not one of ours
            };
            out.push(DirEntry {
                name,
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        Ok(out)
    }

    fn create_file(&self, path: &Path, len: u64, head: &[u8]) -> io::Result<FsFile> {
        // Built under a temporary name and renamed: a reader never sees a short file.
        let tmp = tmp_path(path);
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)?;
        preallocate(&file, len)?;
        file.write_all_at(head, 0)?;
        if path.exists() {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        fs::rename(&tmp, path)?;
        FsFile::writable(file, path)
    }

    fn open_file(&self, path: &Path, writable: bool) -> io::Result<FsFile> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        if writable {
            FsFile::writable(file, path)
        } else {
            FsFile::new(file, false, path)
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn committer(&self) -> io::Result<FsCommitter> {
        Ok(FsCommitter {
            pool: (!self.no_commit_threads).then(|| Arc::new(Pool::default())),
            threads: Vec::new(),
            flights: VecDeque::new(),
            finished: VecDeque::new(),
            bounces: Vec::new(),
        })
    }

    fn keeps_spares(&self) -> bool {
        true
    }

    fn prepare_spare(&self, path: &Path, len: u64, background: Option<&AtomicBool>) -> io::Result<()> {
        let _ = fs::remove_file(path);
        if background.is_some() {
            set_idle_io_priority();
            lower_cpu_priority();
        }
        let result = zero_fill(path, len, background);
        if result.is_err() {
            let _ = fs::remove_file(path);
        }
        result
    }

    fn adopt_spare(&self, spare: &Path, path: &Path, head: &[u8]) -> io::Result<FsFile> {
        let file = OpenOptions::new().read(true).write(true).open(spare)?;
        file.write_all_at(head, 0)?;
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        fs::rename(spare, path)?;
        FsFile::writable(file, path)
    }

    fn sync_method(&self) -> SyncMethod {
        if self.no_commit_threads {
            SyncMethod::Fdatasync
        } else {
            SyncMethod::Threads
        }
    }
}

/// Submits what `ring` has queued and waits for at least `want` completions (0: none),
/// again when a signal interrupted the wait.
pub(crate) fn submit_and_wait(ring: &IoUring, want: usize) -> io::Result<()> {
    loop {
        match ring.submit_and_wait(want) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Queue depth of the probe's ring.
const URING_ENTRIES: u32 = 8;

/// Whether this process can make an io_uring (the journal's sequential reads use one):
/// `EPERM` under seccomp or `kernel.io_uring_disabled`, `ENOSYS` on old kernels and
/// `ENOMEM` (memlock) all say no.
pub fn io_uring_works() -> bool {
    IoUring::new(URING_ENTRIES).is_ok()
}

/// A commit in the commit threads' hands: read by them while it runs, taken back whole by
/// [`FsCommitter::poll`] once every part of it finished.
struct FlightData {
    commit: Commit<FsFile>,
    /// Open directories being synced.
    dirs: Vec<File>,
    /// The block-aligned copies the direct writes are made from (see [`stage_direct`]).
    bounce: Vec<u8>,
    /// Per write: where its direct copy is, or `None` for a write through the page cache.
    direct: Vec<Option<DirectWrite>>,
    /// Per file: its writes, then its data sync.
    chains: Vec<Chain>,
}

/// How far a flight is. Apart from [`FlightData`]: a commit thread lets go of the data
/// before it counts its part done, so the committer takes the data back once none is left.
#[derive(Debug, Default)]
struct Progress {
    /// Parts (a file's chain, a directory's sync) not finished.
    outstanding: AtomicUsize,
    /// Chains whose writes have not all returned.
    writes_left: AtomicUsize,
    first_err: Mutex<Option<io::Error>>,
}

impl Progress {
    fn landed(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) == 0
    }

    fn fail(&self, e: io::Error) {
        lock(&self.first_err).get_or_insert(e);
    }
}

struct Flight {
    data: Arc<FlightData>,
    progress: Arc<Progress>,
}

/// A write made direct: `len` bytes of the bounce buffer from `at` to file `offset`, all
/// three multiples of [`DIRECT_BLOCK`] (`at` counted from the buffer's aligned start).
#[derive(Debug, Clone, Copy)]
struct DirectWrite {
    at: usize,
    offset: u64,
    len: usize,
}

pub(crate) fn align_down(x: u64) -> u64 {
    x & !(DIRECT_BLOCK as u64 - 1)
}

pub(crate) fn align_up(x: u64) -> Option<u64> {
    x.checked_add(DIRECT_BLOCK as u64 - 1).map(align_down)
}

/// The whole-block span `[first, end)` a direct write of `w` covers, if `w` can go
/// direct: an append (zeros after it) to a file with a direct descriptor, whose last block
/// lies inside the file (a direct write past the end would grow it).
fn direct_span(w: &WriteOp<FsFile>) -> Option<(u64, u64)> {
    if !w.zeros_after || w.end <= w.start || w.file.direct_file().is_none() {
        return None;
    }
    let end = w.offset.checked_add((w.end - w.start) as u64)?;
    let up = align_up(end)?;
    (up <= w.file.len).then(|| (align_down(w.offset), up))
}

/// The spans of `commit`'s writes that go direct. A file written through the page cache
/// earlier in the commit takes its later writes that way too: a direct write's first block
/// is staged now, from what the disk holds before the commit, and would put old bytes back
/// over what the buffered write puts there first.
fn direct_spans(commit: &Commit<FsFile>) -> Vec<Option<(u64, u64)>> {
    let mut buffered: Vec<*const Direct> = Vec::new();
    commit
        .writes
        .iter()
        .map(|w| {
            let d = w.file.direct.as_ref()?;
            let key = Arc::as_ptr(d);
            let span = if buffered.contains(&key) { None } else { direct_span(w) };
            if span.is_none() && !buffered.contains(&key) {
                buffered.push(key);
            }
            span
        })
        .collect()
}

/// Makes every file `commit` writes forget its remembered tail: after a commit that failed
/// to stage or submit, what the disk holds is not known.
fn forget_tails(commit: &Commit<FsFile>) {
    for w in &commit.writes {
        if let Some(d) = &w.file.direct {
            d.forget_tail();
        }
    }
}

/// Lays out `commit`'s direct writes in `bounce`, each as whole blocks: the bytes its
/// first block already holds (from the file's remembered tail, read only when that is not
/// the block), its own bytes, then zeros to the block's end (it is an append). Remembers
/// each file's new tail. Writes that cannot go direct get `None` (and make their file
/// forget its tail, which they may change).
fn stage_direct(commit: &Commit<FsFile>, bounce: &mut Vec<u8>) -> io::Result<Vec<Option<DirectWrite>>> {
    let spans = direct_spans(commit);
    let total: u64 = spans.iter().flatten().map(|(a, b)| b - a).sum();
    let total = usize::try_from(total).map_err(|_| io::Error::other("commit over the address space"))?;
    let mut out = Vec::with_capacity(spans.len());
    // Grown, never shrunk or cleared: every byte a direct write sends is written below.
    if total > 0 && bounce.len() < total + DIRECT_BLOCK {
        bounce.resize(total + DIRECT_BLOCK, 0);
    }
    let base = aligned_start(bounce);
    let mut at = 0usize;
    for (w, span) in commit.writes.iter().zip(spans) {
        let (Some((first, end)), Some(direct)) = (span, w.file.direct.as_ref()) else {
            if let Some(d) = &w.file.direct {
                d.forget_tail();
            }
            out.push(None);
            continue;
        };
        let len = (end - first) as usize;
        let bytes = commit
            .bufs
            .get(w.buf)
            .and_then(|b| b.get(w.start..w.end))
            .ok_or_else(|| io::Error::other("write refers outside its buffer"))?;
        let region = bounce
            .get_mut(base + at..base + at + len)
            .ok_or_else(|| io::Error::other("bounce buffer too short (a bug)"))?;
        let lead = (w.offset - first) as usize;
        let mut tail = direct
            .tail
            .lock()
            .map_err(|_| io::Error::other("a direct file's tail lock is poisoned"))?;
        if lead > 0 {
            match tail.as_ref() {
                Some((block, image)) if *block == first => region[..lead].copy_from_slice(&image[..lead]),
                _ => {
                    if w.file.read_at(first, &mut region[..lead])? != lead {
                        return Err(io::Error::other("short read of a block a direct write starts in"));
                    }
                }
            }
        }
        region[lead..lead + bytes.len()].copy_from_slice(bytes);
        region[lead + bytes.len()..].fill(0);
        let written_end = w.offset + bytes.len() as u64;
        if written_end.is_multiple_of(DIRECT_BLOCK as u64) {
            *tail = None;
        } else {
            let last = &region[len - DIRECT_BLOCK..];
            match tail.as_mut() {
                Some((block, image)) => {
                    *block = end - DIRECT_BLOCK as u64;
                    image.copy_from_slice(last);
                }
                None => *tail = Some((end - DIRECT_BLOCK as u64, last.into())),
            }
        }
        out.push(Some(DirectWrite {
            at: base + at,
            offset: first,
            len,
        }));
        at += len;
    }
    Ok(out)
}

/// Threads that run commits' parts. Each part runs with plain blocking calls: direct
/// `pwrite`s, then `fdatasync`. A blocking direct write is completed by the thread that
/// waits for it, woken from the disk's interrupt. Through io_uring the same write was
/// asynchronous, and the kernel (before 6.19) completes every asynchronous direct write
/// on a worker of its `dio` workqueue, bound to the CPU the interrupt came in on. On the
/// cold core beside a busy thread, that kernel worker once waited 2.1 s for the CPU in
/// about one `kafka` `shm-50k` run of five (traced with `sched_switch`: woken at the
/// write's interrupt, run 2.1 s later), and every commit behind it with it.
/// Four: a part runs a file's writes and then its sync, so a commit over more files than
/// threads runs in rounds (the daemon writes two streams; io_uring ran any number at once).
const COMMIT_THREADS: usize = 4;

/// The commit threads' shared state.
#[derive(Default)]
struct Pool {
    jobs: Mutex<Jobs>,
    /// Wakes a commit thread: a part to run, CPUs to move to, or stop.
    work: Condvar,
    /// Paired with `done`.
    done_lock: Mutex<()>,
    /// Notified whenever a part finished or a chain's writes returned.
    done: Condvar,
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    stop: bool,
    /// CPUs the threads are confined to, and how many times that was asked.
    cpus: Vec<usize>,
    cpus_asked: u64,
}

/// A part of a flight: the chain of one file, or the sync of one directory.
enum Part {
    Chain(usize),
    Dir(usize),
}

struct Job {
    data: Arc<FlightData>,
    progress: Arc<Progress>,
    part: Part,
}

/// The guard of `m`, also when a thread panicked holding it: every value these locks
/// guard stays whole (a queue, a list of CPUs, an error).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    fn notify_done(&self) {
        let _held = lock(&self.done_lock);
        self.done.notify_all();
    }

    /// Waits until `ready`, at most `wait` (`None`: as long as it takes).
    fn wait_until(&self, ready: impl Fn() -> bool, wait: Option<Duration>) {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut held = lock(&self.done_lock);
        while !ready() {
            held = match deadline {
                None => self.done.wait(held).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    let Some(left) = d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) else {
                        return;
                    };
                    self.done
                        .wait_timeout(held, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// The next part to run, after moving to the CPUs last asked for (`seen`: the asks
    /// this thread followed); `None` once stopped and drained.
    fn next(&self, seen: &mut u64) -> Option<Job> {
        let mut jobs = lock(&self.jobs);
        loop {
            if jobs.cpus_asked != *seen {
                *seen = jobs.cpus_asked;
                let cpus = jobs.cpus.clone();
                drop(jobs);
                confine_self(&cpus);
                jobs = lock(&self.jobs);
                continue;
            }
            if let Some(job) = jobs.queue.pop_front() {
                return Some(job);
            }
            if jobs.stop {
                return None;
            }
            jobs = self.work.wait(jobs).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// Counts a part done when dropped, also when the part panicked (the journal would wait
/// for it forever otherwise): its writes returned if they had not, then the part, after
/// letting go of the flight's data (so the committer can take it back whole).
struct PartDone<'a> {
    pool: &'a Pool,
    progress: Arc<Progress>,
    /// The thread's only handle on the flight's data (`None` once let go).
    data: Option<Arc<FlightData>>,
    /// The part is a chain whose writes have not been counted as returned.
    writes_pending: std::cell::Cell<bool>,
}

impl PartDone<'_> {
    fn writes_returned(&self) {
        if self.writes_pending.replace(false) {
            self.progress.writes_left.fetch_sub(1, Ordering::AcqRel);
            self.pool.notify_done();
        }
    }
}

impl Drop for PartDone<'_> {
    fn drop(&mut self) {
        self.writes_returned();
        drop(self.data.take());
        self.progress.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.pool.notify_done();
    }
}

fn commit_thread(pool: Arc<Pool>) {
    let mut seen = 0;
    while let Some(Job { data, progress, part }) = pool.next(&mut seen) {
        let writes = matches!(part, Part::Chain(k) if data.chains.get(k).is_some_and(|c| !c.writes.is_empty()));
        // Counted done when dropped at the end of the turn, also by a panic.
        let done = PartDone {
            pool: &pool,
            progress,
            data: Some(data),
            writes_pending: std::cell::Cell::new(writes),
        };
        let Some(data) = done.data.as_deref() else { continue };
        let result = match part {
            Part::Chain(k) => data
                .chains
                .get(k)
                .ok_or_else(|| io::Error::other("a chain outside its flight (a bug)"))
                .and_then(|chain| run_chain(data, chain, &done)),
            Part::Dir(k) => data.dirs.get(k).map_or(Ok(()), File::sync_all),
        };
        if let Err(e) = result {
            done.progress.fail(e);
        }
    }
}

/// One file's part of a flight: its writes, then its data sync (not after a failed write).
fn run_chain(data: &FlightData, chain: &Chain, done: &PartDone<'_>) -> io::Result<()> {
    if !chain.writes.is_empty() {
        let written = write_chain(data, chain);
        done.writes_returned();
        written?;
    }
    if chain.sync {
        fdatasync(chain.fd)?;
    }
    Ok(())
}

fn write_chain(data: &FlightData, chain: &Chain) -> io::Result<()> {
    for &i in &chain.writes {
        let w = data
            .commit
            .writes
            .get(i)
            .ok_or_else(|| io::Error::other("a write outside its commit (a bug)"))?;
        if let (Some(d), Some(direct)) = (data.direct.get(i).copied().flatten(), w.file.direct_file()) {
            let bytes = data
                .bounce
                .get(d.at..d.at + d.len)
                .ok_or_else(|| io::Error::other("direct write outside its bounce buffer"))?;
            w.file.check(d.offset, d.len as u64)?;
            direct.write_all_at(bytes, d.offset)?;
            continue;
        }
        write_buffered(&data.commit, w)?;
    }
    Ok(())
}

/// `w` through the page cache, from its commit's buffer.
fn write_buffered(commit: &Commit<FsFile>, w: &WriteOp<FsFile>) -> io::Result<()> {
    let bytes = commit
        .bufs
        .get(w.buf)
        .and_then(|b| b.get(w.start..w.end))
        .ok_or_else(|| io::Error::other("write refers outside its buffer"))?;
    w.file.check(w.offset, bytes.len() as u64)?;
    w.file.file.write_all_at(bytes, w.offset)
}

/// Moves the calling thread to `cpus` (none: left where it is). Failure only costs
/// placement.
#[allow(unsafe_code)]
fn confine_self(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `c` is below CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of `set`, which lives
    // for the call, and keeps no pointer.
    let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// [`Fs`]'s committer: commits run on [`COMMIT_THREADS`] threads of its own (started at
/// the first commit, from the thread that commits, whose CPUs they take), or, where
/// threads cannot be started or [`Fs::without_commit_threads`], synchronously inside
/// [`Committer::start`].
pub struct FsCommitter {
    /// `None`: commits run inside `start`.
    pool: Option<Arc<Pool>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// In the order they were started.
    flights: VecDeque<Flight>,
    /// Commits done synchronously, waiting to be polled.
    finished: VecDeque<Done<FsFile>>,
    /// Bounce buffers of landed flights, for reuse (a fresh one costs page faults).
    bounces: Vec<Vec<u8>>,
}

impl std::fmt::Debug for FsCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsCommitter")
            .field("threads", &self.threads.len())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// One file's operations: its writes (indices into `Commit::writes`), then maybe a sync.
struct Chain {
    fd: RawFd,
    writes: Vec<usize>,
    sync: bool,
}

fn chains(commit: &Commit<FsFile>) -> Vec<Chain> {
    let mut out: Vec<Chain> = Vec::new();
    for (i, w) in commit.writes.iter().enumerate() {
        match out.iter_mut().find(|c| c.fd == w.file.fd()) {
            Some(c) => c.writes.push(i),
            None => out.push(Chain {
                fd: w.file.fd(),
                writes: vec![i],
                sync: false,
            }),
        }
    }
    for f in &commit.syncs {
        match out.iter_mut().find(|c| c.fd == f.fd()) {
            Some(c) => c.sync = true,
            None => out.push(Chain {
                fd: f.fd(),
                writes: Vec::new(),
                sync: true,
            }),
        }
    }
    out
}

impl FsCommitter {
    fn run_sync(commit: &Commit<FsFile>) -> io::Result<()> {
        for w in &commit.writes {
            // Through the page cache: a remembered tail may no longer be the disk's.
            if let Some(d) = &w.file.direct {
                d.forget_tail();
            }
            write_buffered(commit, w)?;
        }
        for f in &commit.syncs {
            fdatasync(f.fd())?;
        }
        for d in &commit.dirs {
            File::open(d)?.sync_all()?;
        }
        Ok(())
    }

    /// The commit threads, started at the first commit (from the thread that commits,
    /// whose CPUs they take); `None` where they cannot be.
    fn pool(&mut self) -> Option<Arc<Pool>> {
        if let Some(pool) = &self.pool {
            if self.threads.is_empty() {
                for k in 0..COMMIT_THREADS {
                    let p = Arc::clone(pool);
                    match std::thread::Builder::new()
                        .name(format!("rim-journal-io{k}"))
                        .spawn(move || commit_thread(p))
                    {
                        Ok(t) => self.threads.push(t),
                        Err(_) => break,
                    }
                }
                if self.threads.is_empty() {
                    self.pool = None;
                }
            }
        }
        self.pool.clone()
    }
}

impl Committer for FsCommitter {
    type File = FsFile;

    fn start(&mut self, commit: Commit<FsFile>) -> io::Result<()> {
        if self.flights() >= FLIGHTS_MAX {
            return Err(io::Error::other(format!("{FLIGHTS_MAX} commits are in flight already")));
        }
        let Some(pool) = self.pool() else {
            let result = Self::run_sync(&commit);
            self.finished.push_back(Done { commit, result });
            return Ok(());
        };
        let dirs = commit.dirs.iter().map(File::open).collect::<io::Result<Vec<_>>>()?;
        // A direct write rewrites the block the previous commit's last write ended in, and
        // pads it with zeros: it must not race that write. With one commit in flight (the
        // daemon's default) there is nothing to wait for.
        let flights = &self.flights;
        pool.wait_until(
            || {
                flights
                    .iter()
                    .all(|f| f.progress.writes_left.load(Ordering::Acquire) == 0)
            },
            None,
        );
        let mut bounce = self.bounces.pop().unwrap_or_default();
        let direct = match stage_direct(&commit, &mut bounce) {
            Ok(d) => d,
            Err(e) => {
                forget_tails(&commit);
                return Err(e);
            }
        };
        let chains = chains(&commit);
        let progress = Arc::new(Progress::default());
        progress.outstanding.store(chains.len() + dirs.len(), Ordering::Relaxed);
        progress.writes_left.store(
            chains.iter().filter(|c| !c.writes.is_empty()).count(),
            Ordering::Relaxed,
        );
        let parts = (0..chains.len())
            .map(Part::Chain)
            .chain((0..dirs.len()).map(Part::Dir))
            .collect::<Vec<_>>();
        let data = Arc::new(FlightData {
            commit,
            dirs,
            bounce,
            direct,
            chains,
        });
        let n = parts.len();
        {
            let mut jobs = lock(&pool.jobs);
            for part in parts {
                jobs.queue.push_back(Job {
                    data: Arc::clone(&data),
                    progress: Arc::clone(&progress),
                    part,
                });
            }
        }
        // One thread per part: waking all four for a one-file commit costs the cold core
        // wake-ups for nothing.
        for _ in 0..n {
            pool.work.notify_one();
        }
        self.flights.push_back(Flight { data, progress });
        Ok(())
    }

    fn poll(&mut self, wait: Option<Duration>) -> io::Result<Option<Done<FsFile>>> {
        if let Some(done) = self.finished.pop_front() {
            return Ok(Some(done));
        }
        let (Some(pool), Some(oldest)) = (self.pool.as_ref(), self.flights.front()) else {
            return Ok(None);
        };
        if !oldest.progress.landed() && wait.is_some() {
            pool.wait_until(|| oldest.progress.landed(), wait);
        }
        if !oldest.progress.landed() {
            return Ok(None);
        }
        let Some(Flight { data, progress }) = self.flights.pop_front() else {
            return Ok(None);
        };
        // Every thread let go of the data before it counted its part done.
        let data = Arc::try_unwrap(data)
            .map_err(|_| io::Error::other("a commit thread still holds a landed commit (a bug)"))?;
        let result = lock(&progress.first_err).take().map_or(Ok(()), Err);
        if self.bounces.len() < FLIGHTS_MAX && !data.bounce.is_empty() {
            self.bounces.push(data.bounce);
        }
        Ok(Some(Done {
            commit: data.commit,
            result,
        }))
    }

    fn confine_workers(&mut self, cpus: &[usize]) -> io::Result<()> {
        let Some(pool) = self.pool.as_ref() else {
            return Ok(());
        };
        {
            let mut jobs = lock(&pool.jobs);
            jobs.cpus = cpus.to_vec();
            jobs.cpus_asked += 1;
        }
        pool.work.notify_all();
        Ok(())
    }

    fn flights(&self) -> usize {
        self.flights.len() + self.finished.len()
    }
}

impl Drop for FsCommitter {
    fn drop(&mut self) {
        // The threads finish what was queued (its buffers are shared with them), then stop.
        if let Some(pool) = self.pool.as_ref() {
            lock(&pool.jobs).stop = true;
            pool.work.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
