//! The storage seam: every file operation of the journal and its readers goes through
//! [`Storage`], so crash and I/O-fault tests swap the real file system ([`Fs`]) for an
//! in-memory one that forgets un-synced data ([`crate::faulty::FaultyFs`]).
//!
//! [`Fs`] maps writable segment files with a shared `MmapMut` and appends are memory
//! copies. Durability: on Linux `fdatasync(2)` on the file descriptor writes back every
//! dirty page of the file's page cache, including pages dirtied through a shared mapping
//! (they are the same pages), so no `msync` is needed. The fdatasync of all files of one
//! group commit is submitted to io_uring as one batch of `IORING_OP_FSYNC` entries with
//! `IORING_FSYNC_DATASYNC`; if io_uring cannot be set up (probed once, `EPERM` under
//! seccomp, `ENOSYS` on old kernels) each file gets a plain `fdatasync`.
//!
//! Readers open files read-only and use `pread`, never a mapping: the journal never
//! truncates a segment (it zeroes torn tails in place), and a reader that only preads
//! cannot be hit by `SIGBUS` whatever another process does to the file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use io_uring::{opcode, types, IoUring};
use memmap2::{MmapMut, MmapOptions};

/// How a storage makes data durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMethod {
    /// One io_uring submission of `IORING_OP_FSYNC` (datasync) entries per group commit.
    IoUring,
    /// One `fdatasync(2)` per file.
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

/// An open file of a [`Storage`]. Fixed size from creation on.
pub trait StorageFile: Send + 'static {
    /// The file's size in bytes.
    fn len(&self) -> u64;
    /// True if the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes `bytes` at `offset`, inside the file (files never grow). Needs a writable open.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Sets `len` bytes at `offset` to zero (inside the file). Needs a writable open.
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

/// Every file operation of the journal.
pub trait Storage: Clone + Send + 'static {
    /// An open file.
    type File: StorageFile;
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
    /// Makes the data of every file in `files` durable, as one batch where possible.
    fn sync_files(&self, files: &[&Self::File]) -> io::Result<()>;
    /// Makes `dir`'s entries (creations, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Decides once how syncs are done (probing io_uring); called by `Journal::open`.
    fn probe_sync(&self) -> SyncMethod;
}

/// The real file system: mmap-backed writable files, io_uring group fdatasync.
#[derive(Clone, Default)]
pub struct Fs {
    uring: Arc<Mutex<UringSlot>>,
}

#[derive(Default)]
enum UringSlot {
    #[default]
    Unprobed,
    Ready(Box<IoUring>),
    Unavailable,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs").finish_non_exhaustive()
    }
}

/// io_uring queue depth: one group commit syncs at most this many files per submission.
const URING_ENTRIES: u32 = 64;

impl Fs {
    /// A real file system handle; io_uring is probed by the first `Journal::open`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forces plain fdatasync (tests of the fallback).
    pub fn without_io_uring() -> Self {
        Self {
            uring: Arc::new(Mutex::new(UringSlot::Unavailable)),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, UringSlot> {
        // A panic while holding the lock leaves only a ring handle behind: still usable.
        self.uring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A file of [`Fs`]: a descriptor and, when writable, a shared mapping of the whole file.
pub struct FsFile {
    file: File,
    map: Option<MmapMut>,
    len: u64,
}

impl std::fmt::Debug for FsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsFile").field("len", &self.len).finish_non_exhaustive()
    }
}

fn out_of_range(offset: u64, len: usize, file_len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("range {offset}+{len} is outside the file of {file_len} bytes"),
    )
}

fn map_range(map: &mut MmapMut, offset: u64, len: usize) -> io::Result<&mut [u8]> {
    let file_len = map.len() as u64;
    let start = usize::try_from(offset).map_err(|_| out_of_range(offset, len, file_len))?;
    map.get_mut(start..start.saturating_add(len))
        .ok_or_else(|| out_of_range(offset, len, file_len))
}

fn not_writable() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only")
}

impl FsFile {
    fn open(file: File, writable: bool) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let map = if writable && len > 0 {
            let map_len = usize::try_from(len).map_err(|_| out_of_range(0, 0, len))?;
            // SAFETY: the mapping aliases the file. Segment files belong to the journal,
            // which never truncates or shrinks them (torn tails are zeroed in place) and
            // writes them only through this mapping, so the mapped range stays backed and
            // no other Rust reference observes the bytes change underneath it. Readers
            // (possibly other processes) only pread.
            Some(unsafe { MmapOptions::new().len(map_len).map_mut(&file)? })
        } else {
            None
        };
        Ok(Self { file, map, len })
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.len.saturating_sub(offset) as usize);
        if let Some(map) = &self.map {
            // offset < len here unless want == 0.
            if want > 0 {
                buf[..want].copy_from_slice(&map[offset as usize..offset as usize + want]);
            }
            return Ok(want);
        }
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

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let map = self.map.as_mut().ok_or_else(not_writable)?;
        map_range(map, offset, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let map = self.map.as_mut().ok_or_else(not_writable)?;
        let range = map_range(
            map,
            offset,
            usize::try_from(len).map_err(|_| out_of_range(offset, 0, len))?,
        )?;
        // Only write pages that hold something: zeroing clean zero pages would dirty (and
        // later write back) the whole preallocated rest of a segment.
        for chunk in range.chunks_mut(4096) {
            if chunk.iter().any(|&b| b != 0) {
                chunk.fill(0);
            }
        }
        Ok(())
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

/// Submits one `IORING_OP_FSYNC` (datasync) per descriptor, per chunk of the queue depth,
/// and waits for every completion; the first failure is returned after all are reaped.
fn uring_fdatasync(ring: &mut IoUring, fds: &[RawFd]) -> io::Result<()> {
    let mut first_err = None;
    for chunk in fds.chunks(URING_ENTRIES as usize) {
        {
            let mut sq = ring.submission();
            for (i, &fd) in chunk.iter().enumerate() {
                let entry = opcode::Fsync::new(types::Fd(fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the entry refers to no buffer, only to `fd`, which the caller
                // keeps open until this function returns, after every completion of this
                // chunk has been reaped below.
                unsafe { sq.push(&entry) }.map_err(|_| io::Error::other("io_uring submission queue is full"))?;
            }
        }
        let mut reaped = 0;
        while reaped < chunk.len() {
            match ring.submit_and_wait(chunk.len() - reaped) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for cqe in ring.completion() {
                reaped += 1;
                if cqe.result() < 0 && first_err.is_none() {
                    first_err = Some(io::Error::from_raw_os_error(-cqe.result()));
                }
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

impl Storage for Fs {
    type File = FsFile;

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
        FsFile::open(file, true)
    }

    fn open_file(&self, path: &Path, writable: bool) -> io::Result<FsFile> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        FsFile::open(file, writable)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_files(&self, files: &[&FsFile]) -> io::Result<()> {
        let fds: Vec<RawFd> = files.iter().map(|f| f.file.as_raw_fd()).collect();
        if fds.is_empty() {
            return Ok(());
        }
        let mut slot = self.slot();
        if matches!(*slot, UringSlot::Unprobed) {
            *slot = probe_uring();
        }
        if let UringSlot::Ready(ring) = &mut *slot {
            return uring_fdatasync(ring, &fds);
        }
        drop(slot);
        fds.iter().try_for_each(|&fd| fdatasync(fd))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn probe_sync(&self) -> SyncMethod {
        let mut slot = self.slot();
        if matches!(*slot, UringSlot::Unprobed) {
            *slot = probe_uring();
        }
        match *slot {
            UringSlot::Ready(_) => SyncMethod::IoUring,
            _ => SyncMethod::Fdatasync,
        }
    }
}

fn probe_uring() -> UringSlot {
    // EPERM (seccomp, io_uring_disabled), ENOSYS (old kernel), ENOMEM (memlock): all mean
    // "use plain fdatasync".
    match IoUring::new(URING_ENTRIES) {
        Ok(ring) => UringSlot::Ready(Box::new(ring)),
        Err(_) => UringSlot::Unavailable,
    }
}
