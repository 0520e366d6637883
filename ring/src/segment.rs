//! Segments: the memory a ring lives in, and how it is created, sealed, mapped and shared.
//!
//! A segment is either a sealed memfd (shared between processes) or a heap buffer (tests,
//! in-process rings). Cross-process segments are memfds sealed against shrinking and
//! growing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) *before* anyone else sees them, so
//! no process holding the fd can truncate the mapping under the other side and make it
//! fault with SIGBUS. A plain file in `/dev/shm` cannot give that guarantee (its writer
//! can always `ftruncate` it), which is why segments travel as fds over a Unix socket
//! (see [`crate::attach`]) rather than as paths; [`Segment::from_fd`] refuses an fd that
//! lacks the seals.
//!
//! All access goes through [`Segment`]'s methods: atomics for the protocol words, copies
//! for record bodies into or out of memory that the protocol hands to one side at a time.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use thiserror::Error;

use crate::sync::AtomicU64;

/// Why a segment could not be created, received or opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Os {
        /// The call that failed.
        call: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The fd lacks the seals that make its size immutable.
    #[error("segment fd is not sealed against shrink and grow (seals {seals:#x}); refusing to map it")]
    NotSealed {
        /// The seals it has.
        seals: i32,
    },
    /// The segment is smaller than its header says or than any ring needs.
    #[error("segment is {len} bytes, but {needed} are needed")]
    Truncated {
        /// Its size.
        len: usize,
        /// The size needed.
        needed: usize,
    },
    /// The segment's header is not one this version understands.
    #[error("segment header is invalid: {0}")]
    BadHeader(&'static str),
    /// A requested size is out of range.
    #[error("invalid segment size {bytes}: {why}")]
    BadSize {
        /// The size asked for.
        bytes: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

pub(crate) fn os_err(call: &'static str) -> SegmentError {
    SegmentError::Os {
        call,
        source: io::Error::last_os_error(),
    }
}

/// Largest segment this crate creates or maps (1 GiB): a bound on what a peer can ask for.
pub const SEGMENT_BYTES_MAX: usize = 1 << 30;

/// One cache line of zeroed heap memory; heap segments are built from these so that they
/// are 64-byte aligned like a mapping.
#[cfg(not(loom))]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

#[cfg(not(loom))]
enum Backing {
    /// Owned through `Segment::ptr` (from `Box::into_raw`); freed in `Drop`. Keeping the
    /// box itself would invalidate the raw pointer when the box moves (Stacked Borrows).
    Heap { lines: usize },
    Shm {
        #[allow(dead_code)]
        map: memmap2::MmapRaw,
        fd: OwnedFd,
        writable: bool,
    },
}

/// Memory a ring lives in. Shared by both ends (`Arc<Segment>` in one process, a mapping
/// of the same memfd in two).
pub struct Segment {
    #[cfg(not(loom))]
    ptr: NonNull<u8>,
    #[cfg(not(loom))]
    len: usize,
    #[cfg(not(loom))]
    backing: Backing,
    #[cfg(loom)]
    words: Box<[AtomicU64]>,
}

// SAFETY: the region is only reached through `Segment`'s methods: atomic loads and stores
// for every word a reader touches (protocol words and record copies alike), and a plain
// copy only into space the ring protocol has handed to the writer alone (claimed, not yet
// committed). The backing (heap allocation or mapping) lives as long as the Segment, and
// neither is tied to a thread.
#[cfg(not(loom))]
unsafe impl Send for Segment {}
// SAFETY: as for Send: all shared access is atomic or to exclusively-owned ranges.
#[cfg(not(loom))]
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn check_size(bytes: usize) -> Result<(), SegmentError> {
    if bytes == 0 || !bytes.is_multiple_of(64) {
        return Err(SegmentError::BadSize {
            bytes,
            why: "must be a positive multiple of 64",
        });
    }
    if bytes > SEGMENT_BYTES_MAX {
        return Err(SegmentError::BadSize {
            bytes,
            why: "larger than SEGMENT_BYTES_MAX",
        });
    }
    Ok(())
}

/// Asks the CPU to bring the cache line at `p` closer: a hint that reads and writes
/// nothing, so it is safe for any address (callers pass one they own, for it to help).
#[inline]
pub fn prefetch_line(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `_mm_prefetch` dereferences nothing: it never faults, even on an
        // unmapped address, and changes no memory. SSE is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}

/// Asks the CPU to bring the cache line at `p` in for writing (`PREFETCHW`: exclusive, so
/// a store there later need not wait for another core to give the line up). Inline
/// assembly because `_mm_prefetch` with a write hint compiles to a plain read prefetch
/// unless the build targets the `prfchw` feature, which the baseline x86-64 does not.
#[inline]
pub fn prefetch_line_for_write(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        // SAFETY: PREFETCHW is a hint: it never faults, even on an unmapped address,
        // writes no memory and leaves the flags alone, so no invariant of ours is at stake.
        unsafe {
            std::arch::asm!("prefetchw byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}

/// [`prefetch_line_for_write`] for every cache line that lies wholly inside the `len`
/// bytes at `p`: a writer takes the lines of a region it owns for its next writes, and a
/// line that reaches past the region (where another core may still be reading) is left
/// alone.
#[inline]
pub fn prefetch_whole_lines_for_write(p: *const u8, len: usize) {
    let mut off = (64 - (p as usize & 63)) & 63;
    while off + 64 <= len {
        prefetch_line_for_write(p.wrapping_add(off));
        off += 64;
    }
}

impl Segment {
    /// A zeroed heap segment of `bytes` (a multiple of 64): for in-process rings and tests.
    pub fn heap(bytes: usize) -> Result<Self, SegmentError> {
        check_size(bytes)?;
        Ok(Self::heap_unchecked(bytes))
    }

    #[cfg(not(loom))]
    fn heap_unchecked(bytes: usize) -> Self {
        let lines = bytes / 64;
        let raw: *mut [Line] = Box::into_raw(vec![Line([0; 64]); lines].into_boxed_slice());
        // Box::into_raw never returns null.
        let ptr = NonNull::new(raw.cast::<u8>()).unwrap_or(NonNull::dangling());
        Self {
            ptr,
            len: bytes,
            backing: Backing::Heap { lines },
        }
    }

    #[cfg(loom)]
    fn heap_unchecked(bytes: usize) -> Self {
        let words = (0..bytes / 8).map(|_| AtomicU64::new(0)).collect();
        Self { words }
    }

    /// Creates a memfd of `bytes` (a multiple of 64), seals it against shrink, grow and
    /// further sealing, and maps it. `name` shows in `/proc/<pid>/fd` as `memfd:<name>`.
    #[cfg(not(loom))]
    pub fn create_memfd(name: &str, bytes: usize) -> Result<Self, SegmentError> {
        let fd = sized_memfd(name, bytes, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL)?;
        Self::map(fd, bytes, true)
    }

    /// Creates a segment that readers in other processes may map but never write: a
    /// memfd sealed against shrink and grow, mapped writable here, then sealed with
    /// `F_SEAL_FUTURE_WRITE`, so every later mapping (the subscribers') is read-only. For
    /// the decision broadcast ring.
    #[cfg(not(loom))]
    pub fn create_memfd_for_readers(name: &str, bytes: usize) -> Result<Self, SegmentError> {
        let fd = sized_memfd(name, bytes, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)?;
        let seg = Self::map(fd, bytes, true)?;
        if let Some(fd) = seg.fd() {
            add_seals(fd, libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SEAL)?;
        }
        Ok(seg)
    }

    /// Maps a segment fd received from another process. Refuses an fd whose size can still
    /// change (no `F_SEAL_SHRINK` and `F_SEAL_GROW`), or whose size is out of range.
    #[cfg(not(loom))]
    pub fn from_fd(fd: OwnedFd) -> Result<Self, SegmentError> {
        let len = sealed_len(&fd)?;
        Self::map(fd, len, true)
    }

    /// Maps a received segment read-only (subscribers of a broadcast ring), after the
    /// same checks as [`Segment::from_fd`]. Only readers can be opened on it.
    #[cfg(not(loom))]
    pub fn from_fd_read_only(fd: OwnedFd) -> Result<Self, SegmentError> {
        let len = sealed_len(&fd)?;
        Self::map(fd, len, false)
    }

    /// Whether this process may write the segment.
    pub fn writable(&self) -> bool {
        #[cfg(not(loom))]
        {
            !matches!(self.backing, Backing::Shm { writable: false, .. })
        }
        #[cfg(loom)]
        {
            true
        }
    }

    #[cfg(not(loom))]
    fn map(fd: OwnedFd, len: usize, writable: bool) -> Result<Self, SegmentError> {
        let mut options = memmap2::MmapOptions::new();
        // MAP_POPULATE: the data path never takes a first-touch page fault (a memfd's pages
        // are zeroed on first use, ~1 µs each, which would land on publishes and polls).
        options.len(len).populate();
        let map = if writable {
            options.map_raw(&fd)
        } else {
            options.map_raw_read_only(&fd)
        };
        let map = map.map_err(|source| SegmentError::Os { call: "mmap", source })?;
        let ptr = NonNull::new(map.as_mut_ptr()).ok_or(SegmentError::BadHeader("null mapping"))?;
        Ok(Self {
            ptr,
            len,
            backing: Backing::Shm { map, fd, writable },
        })
    }

    /// The memfd behind a shared segment, to hand to another process; `None` for heap.
    #[cfg(not(loom))]
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Shm { fd, .. } => Some(fd.as_fd()),
            Backing::Heap { .. } => None,
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        #[cfg(not(loom))]
        {
            self.len
        }
        #[cfg(loom)]
        {
            self.words.len() * 8
        }
    }

    /// Always false: a segment has at least one cache line.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 8-byte word at `off`. `off` comes from the ring's own masked arithmetic, never
    /// from the segment's contents; the assert guards against a bug in that arithmetic.
    #[inline]
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.len(),
            "ring offset {off} out of bounds"
        );
        #[cfg(not(loom))]
        {
            // SAFETY: `off + 8 <= len` and `off` is 8-aligned within a 64-aligned region that
            // lives as long as `self`; AtomicU64 has the size and alignment of u64, and every
            // access to protocol words on both sides is atomic.
            unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
        }
        #[cfg(loom)]
        {
            &self.words[off / 8]
        }
    }

    /// Lets `write` fill `[off, off + len)` of the segment in place. The caller must own
    /// that range under the ring protocol (claimed and not yet committed), and `write` must
    /// only store into it, never read it back: a peer process that breaks the protocol may
    /// be writing the same bytes.
    #[inline]
    pub(crate) fn write_in(&self, off: usize, len: usize, write: impl FnOnce(&mut [u8])) {
        assert!(
            off.is_multiple_of(8) && off.checked_add(len).is_some_and(|end| end <= self.len()),
            "write_in out of bounds"
        );
        #[cfg(not(loom))]
        {
            // SAFETY: bounds checked above, and the mapping lives as long as `self`. The
            // range is the writer's own under the ring protocol: there is one producer per
            // segment (`header::claim_writer`), the consumer reads the range only after the
            // release store that commits it, which comes after `write` returns, and the
            // range lies between a record's header word and the cleared slot after it, so
            // it overlaps no word anyone loads atomically. No other reference into it exists
            // in this process while `write` runs (the consumer reads private copies). A
            // consumer process that breaks the protocol can only race with bytes `write`
            // stores and never reads back.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) };
            write(dst);
        }
        #[cfg(loom)]
        {
            use crate::sync::Ordering;
            let mut buf = vec![0u8; len];
            write(&mut buf);
            for (i, chunk) in buf.chunks(8).enumerate() {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                self.words[off / 8 + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
            }
        }
    }

    /// [`prefetch_whole_lines_for_write`] over `[off, off + len)`, when that is inside the
    /// segment (a hint: nothing is written).
    #[inline]
    pub(crate) fn prefetch_for_write(&self, off: usize, len: usize) {
        #[cfg(not(loom))]
        if off.checked_add(len).is_some_and(|end| end <= self.len()) {
            prefetch_whole_lines_for_write(self.ptr.as_ptr().wrapping_add(off), len);
        }
        #[cfg(loom)]
        let _ = (off, len);
    }

    /// Asks the CPU to bring the cache line holding byte `off` closer (a prefetch hint:
    /// nothing is read or written, and an offset outside the segment is ignored).
    #[inline]
    pub(crate) fn prefetch(&self, off: usize) {
        // Under loom the segment is a model without a mapping: nothing to hint.
        #[cfg(not(loom))]
        if off < self.len() {
            prefetch_line(self.ptr.as_ptr().wrapping_add(off));
        }
        #[cfg(loom)]
        let _ = off;
    }

    /// Copies whole words at `off` into the reader's private `dst`, with relaxed atomic
    /// loads: a faulty peer may be writing the same bytes, and atomic loads make that a
    /// well-defined race (the copy is then garbage that validation refuses), where a
    /// `memcpy` would be a data race. On x86_64 they are plain moves.
    #[inline]
    pub(crate) fn copy_out(&self, off: usize, dst: &mut [u64]) {
        use crate::sync::Ordering;
        assert!(
            off.is_multiple_of(8) && off + dst.len() * 8 <= self.len(),
            "copy_out out of bounds"
        );
        #[cfg(not(loom))]
        let src: &[AtomicU64] = {
            // SAFETY: `off` is 8-aligned in a 64-aligned region and `off + 8 * dst.len()`
            // is within it (checked above), so these are `dst.len()` valid, aligned
            // AtomicU64s living as long as `self`; every access to them is atomic.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off).cast::<AtomicU64>(), dst.len()) }
        };
        #[cfg(loom)]
        let src = &self.words[off / 8..off / 8 + dst.len()];
        for (w, a) in dst.iter_mut().zip(src) {
            *w = a.load(Ordering::Relaxed);
        }
    }
}

#[cfg(not(loom))]
impl Drop for Segment {
    fn drop(&mut self) {
        if let Backing::Heap { lines } = self.backing {
            let raw = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr().cast::<Line>(), lines);
            // SAFETY: `raw` is exactly the pointer and length `Box::into_raw` gave in
            // `heap_unchecked`, and nothing else frees it: the segment is dropped once.
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}

#[cfg(not(loom))]
fn memfd_create(name: &str) -> Result<OwnedFd, SegmentError> {
    let mut cname = [0u8; 250];
    let name = name.as_bytes();
    let n = name.len().min(cname.len() - 1);
    cname[..n].copy_from_slice(&name[..n]);
    if cname[..n].contains(&0) {
        return Err(SegmentError::BadHeader("memfd name contains a NUL byte"));
    }
    // SAFETY: `cname` is NUL-terminated (zero-filled past `n`, n < len) and outlives the call.
    let raw = unsafe { libc::memfd_create(cname.as_ptr().cast(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(os_err("memfd_create"));
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A memfd of `bytes`, sealed with `seals`.
#[cfg(not(loom))]
fn sized_memfd(name: &str, bytes: usize, seals: i32) -> Result<OwnedFd, SegmentError> {
    check_size(bytes)?;
    let file = File::from(memfd_create(name)?);
    file.set_len(bytes as u64).map_err(|source| SegmentError::Os {
        call: "ftruncate",
        source,
    })?;
    let fd = OwnedFd::from(file);
    add_seals(fd.as_fd(), seals)?;
    Ok(fd)
}

/// The size of a received fd, after checking that no one can change it.
#[cfg(not(loom))]
fn sealed_len(fd: &OwnedFd) -> Result<usize, SegmentError> {
    let seals = get_seals(fd.as_fd())?;
    let needed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    if seals & needed != needed {
        return Err(SegmentError::NotSealed { seals });
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `stat` into the buffer on success, which we check
    // before reading it.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    if rc < 0 {
        return Err(os_err("fstat"));
    }
    // SAFETY: fstat succeeded, so the struct is initialised.
    let len = usize::try_from(unsafe { st.assume_init() }.st_size).unwrap_or(usize::MAX);
    check_size(len).map_err(|_| SegmentError::Truncated { len, needed: 64 })?;
    Ok(len)
}

#[cfg(not(loom))]
fn add_seals(fd: BorrowedFd<'_>, seals: i32) -> Result<(), SegmentError> {
    // SAFETY: fcntl on a valid borrowed fd with integer arguments.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    if rc < 0 {
        return Err(os_err("fcntl(F_ADD_SEALS)"));
    }
    Ok(())
}

#[cfg(not(loom))]
fn get_seals(fd: BorrowedFd<'_>) -> Result<i32, SegmentError> {
    // SAFETY: fcntl on a valid borrowed fd with no pointer arguments.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if rc < 0 {
        // EINVAL: not a sealable file (a regular file, a pipe...): no seals at all.
        return Ok(0);
    }
    Ok(rc)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn memfd_cannot_be_truncated_or_grown() {
        let seg = Segment::create_memfd("rim-test", 4096).expect("memfd");
        let fd = seg.fd().expect("shm").try_clone_to_owned().expect("dup");
        let file = File::from(fd);
        assert!(file.set_len(64).is_err(), "shrink must be refused");
        assert!(file.set_len(8192).is_err(), "grow must be refused");
        let again = Segment::from_fd(OwnedFd::from(file)).expect("sealed fd maps");
        assert_eq!(again.len(), 4096);
    }

    #[test]
    fn readers_of_a_reader_segment_cannot_map_it_writable() {
        let seg = Segment::create_memfd_for_readers("rim-test-ro", 4096).expect("memfd");
        seg.word(64).store(7, crate::sync::Ordering::Relaxed);
        let fd = seg.fd().expect("shm").try_clone_to_owned().expect("dup");
        let writable = memmap2::MmapOptions::new().len(4096).map_raw(&fd);
        assert!(
            writable.is_err(),
            "F_SEAL_FUTURE_WRITE must refuse a writable shared mapping"
        );
        let ro = Segment::from_fd_read_only(fd).expect("read-only mapping");
        assert!(!ro.writable());
        assert_eq!(
            ro.word(64).load(crate::sync::Ordering::Relaxed),
            7,
            "sees the owner's writes"
        );
        let fd = seg.fd().expect("shm").try_clone_to_owned().expect("dup");
        assert!(
            Segment::from_fd(fd).is_err(),
            "a writable open of a reader segment fails"
        );
    }

    #[test]
    fn unsealed_fd_is_refused() {
        let dir = std::env::temp_dir().join(format!("rim-seg-{}", std::process::id()));
        let file = File::create(&dir).expect("file");
        file.set_len(4096).expect("len");
        let err = Segment::from_fd(OwnedFd::from(file)).expect_err("plain file");
        assert!(matches!(err, SegmentError::NotSealed { .. }), "{err}");
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(Segment::heap(0).is_err());
        assert!(Segment::heap(100).is_err());
        assert!(Segment::heap(SEGMENT_BYTES_MAX + 64).is_err());
        assert_eq!(Segment::heap(128).expect("ok").len(), 128);
    }
}
