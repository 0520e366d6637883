//! The daemon's system calls that the standard library does not wrap: every `unsafe`
//! block of `rim-core` is here (and of `rimd`, only the HTTP server's one I/O adapter,
//! `src/api/io.rs`), each behind a safe function whose arguments cannot make it unsound.

/// Clears the process's dumpable flag (`prctl(PR_SET_DUMPABLE, 0)`), so that no other
/// process of the same user can reach the daemon's memory or file descriptors.
///
/// Why: every producer's ring is a memfd the daemon holds open. With the flag set (the
/// default), any process of the daemon's user may open `/proc/<rimd>/fd/N` read-write,
/// which yields a writable mapping of *another* producer's ring (and the same goes for
/// `/proc/<rimd>/mem`, `map_files` and `ptrace`). A non-dumpable process's `/proc/<pid>`
/// entries belong to root and pass the kernel's ptrace access check only with
/// `CAP_SYS_PTRACE`, so an ordinary producer can reach no ring but its own, which it was
/// handed over the socket. (Sealed memfds already keep a producer from resizing a ring.)
///
/// Costs: no core dumps of rimd (a crash recovers from the journal instead, and
/// `prctl` can be undone by an operator with a debugger's privileges), and tools that
/// read `/proc/<rimd>/…` as the same user (`ps` still works; `lsof`, `gdb -p` need root).
/// The flag is reset by `execve` of a set-user-id binary and by changes of credentials,
/// neither of which the daemon does.
#[allow(unsafe_code)]
pub fn make_undumpable() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes plain integers, touches no memory of ours,
    // and only changes this process's dumpable flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps freed heap memory in the process instead of returning it to the kernel
/// (`mallopt`: no trimming of the heap's top, no `mmap` for blocks under 32 MiB).
///
/// Why: the cold core's threads allocate in waves (a second's closed windows, a checkpoint
/// chunk of 256 nodes, a store batch) that another thread frees. With glibc's defaults the
/// freed memory goes back to the kernel and the next wave faults every page in again, zeroed:
/// profiles of the journal thread showed a third of its longest turns (10–20 ms at each
/// second's boundary) in page faults under `memmove`. Kept, the memory is reused warm; the
/// cost is that the resident size stays at its high-water mark, which the bounded queues
/// bound. A failing `mallopt` (another allocator) changes nothing and is not an error.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    const BLOCK_BYTES_MAX: libc::c_int = 32 << 20;
    // SAFETY: mallopt takes plain integers and only changes glibc malloc's tunables; it is
    // called at start-up, before the daemon's threads allocate concurrently.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, BLOCK_BYTES_MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Other C libraries keep their own policy.
#[cfg(not(target_env = "gnu"))]
pub fn keep_freed_memory() {}

/// Lowers the calling thread's scheduling priority to the lowest (nice 19), so that a
/// long background job (a backtest) on a shared core yields to everything else there.
/// Best effort: a failure leaves the priority as it was.
pub fn lower_thread_priority() {
    let _ = set_nice(19);
}

pub use huge::{HugeTable, ZeroValid, HUGE_PAGE};

/// Tables in mappings of their own, backed by huge pages.
#[allow(unsafe_code)]
mod huge {
    /// Bytes of a transparent huge page on x86_64: the alignment and granule of a
    /// [`HugeTable`]'s mapping.
    pub const HUGE_PAGE: usize = 2 << 20;
    /// Bytes of a base page: the granule of a [`HugeTable`] smaller than a huge page.
    const PAGE: usize = 4096;

    /// Types whose all-zero bytes are a valid value, so that a fresh (zero-filled) anonymous
    /// mapping already holds a table of them and [`HugeTable::zeroed`] need not write it.
    ///
    /// # Safety
    /// An implementor must be valid for every bit pattern of all zeros: no references, no
    /// `NonZero` niches, no enums whose zero is not a variant.
    pub unsafe trait ZeroValid: Copy {}
    // SAFETY: integers, floats and arrays or pairs of them are valid as all zeros.
    unsafe impl ZeroValid for u32 {}
    // SAFETY: as above.
    unsafe impl ZeroValid for u64 {}
    // SAFETY: as above.
    unsafe impl ZeroValid for i64 {}
    // SAFETY: as above.
    unsafe impl ZeroValid for [f64; 2] {}
    // SAFETY: as above.
    unsafe impl ZeroValid for (u32, u32) {}

    /// A fixed-length table of `T` in an anonymous mapping of its own: one of a huge page or
    /// more is aligned to and sized in huge pages and advised `MADV_HUGEPAGE` before any of
    /// its pages is touched; a smaller one is in plain pages.
    ///
    /// Why not a `Vec`: the allocator hands out heap memory that it may already have touched
    /// (calloc clears reused memory, `vec![x; n]` writes every element before the advice can be
    /// given), and a 2 MiB range with a single 4 KiB page present is never backed by a huge
    /// page at fault time. Measured in a recovering daemon: every per-node table in the heap
    /// had no huge page, so a node's lookup took a TLB miss per table.
    pub struct HugeTable<T: Copy> {
        ptr: std::ptr::NonNull<T>,
        len: usize,
        /// Bytes mapped at `ptr` (a multiple of [`HUGE_PAGE`], or of a page when smaller).
        mapped: usize,
    }

    // SAFETY: the table owns its mapping exclusively (no other handle to it exists), so moving
    // it to another thread moves sole access, as with a `Vec<T>`.
    unsafe impl<T: Copy + Send> Send for HugeTable<T> {}
    // SAFETY: shared access only lends `&[T]`, which is `Sync` when `T` is.
    unsafe impl<T: Copy + Sync> Sync for HugeTable<T> {}

    impl<T: ZeroValid> HugeTable<T> {
        /// `len` zeros, left to fault in on first use (written through if `prefault`).
        pub fn zeroed(len: usize, prefault: bool) -> Self {
            let t = Self::map(len);
            if prefault {
                t.touch_pages();
            }
            t
        }
    }

    impl<T: Copy> HugeTable<T> {
        /// `len` copies of `fill`, written (so resident) at once.
        pub fn filled(fill: T, len: usize) -> Self {
            let t = Self::map(len);
            for i in 0..len {
                // SAFETY: i < len, and `map` reserved `len` aligned values of T at `ptr`, so
                // the write is in bounds; T is Copy (no drop of the zero bytes overwritten).
                unsafe { t.ptr.as_ptr().add(i).write(fill) };
            }
            t
        }

        /// Maps room for `len` values, aligned to a huge page and advised for huge pages;
        /// aborts as an allocation failure would if the kernel refuses the mapping.
        fn map(len: usize) -> Self {
            assert!(std::mem::align_of::<T>() <= PAGE);
            let bytes = std::mem::size_of::<T>().saturating_mul(len).max(1);
            // A table under a huge page gets plain pages: advice could not take on it, and
            // a huge page faulted in for it would make a small table cost 2 MiB.
            let huge = bytes >= HUGE_PAGE;
            let unit = if huge { HUGE_PAGE } else { PAGE };
            let mapped = bytes.next_multiple_of(unit);
            let layout =
                std::alloc::Layout::from_size_align(mapped, unit).unwrap_or_else(|_| std::alloc::Layout::new::<u8>());
            // Over-mapped by a huge page so that an aligned start lies inside, then trimmed
            // (mmap's own alignment, a page, is enough for plain pages).
            let over = if huge { mapped + HUGE_PAGE } else { mapped };
            // SAFETY: an anonymous private mapping at an address of the kernel's choosing
            // touches no existing memory of ours.
            let raw = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    over,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if raw == libc::MAP_FAILED {
                std::alloc::handle_alloc_error(layout);
            }
            let start = raw as usize;
            let aligned = start.next_multiple_of(unit);
            let head = aligned - start;
            let tail = over - head - mapped;
            // SAFETY: [start, aligned) and [aligned + mapped, start + over) are parts of the
            // mapping just made, page-aligned (mmap returns page-aligned memory and HUGE_PAGE
            // is a multiple of the page), and nothing refers to them: unmapping them frees
            // them. MADV_HUGEPAGE then changes only how the kept range is backed.
            unsafe {
                if head > 0 {
                    libc::munmap(raw, head);
                }
                if tail > 0 {
                    libc::munmap((aligned + mapped) as *mut libc::c_void, tail);
                }
                if huge {
                    libc::madvise(aligned as *mut libc::c_void, mapped, libc::MADV_HUGEPAGE);
                }
            }
            let ptr = std::ptr::NonNull::new(aligned as *mut T).unwrap_or(std::ptr::NonNull::dangling());
            Self { ptr, len, mapped }
        }

        /// Writes one byte of every page (a zero over a zero), so that each is resident.
        fn touch_pages(&self) {
            let base = self.ptr.as_ptr().cast::<u8>();
            for off in (0..self.mapped).step_by(PAGE) {
                // SAFETY: off < mapped, the mapping's length, which is writable and ours; a
                // volatile write keeps the compiler from dropping a store of the zero it reads.
                unsafe { base.add(off).write_volatile(0) };
            }
        }
    }

    impl<T: Copy> std::ops::Deref for HugeTable<T> {
        type Target = [T];
        fn deref(&self) -> &[T] {
            // SAFETY: `ptr` is the start of a live mapping of at least `len` values of T,
            // aligned for T (a huge page is), every one initialised (zero bytes that are a
            // valid T for `zeroed`, written by `filled`); the borrow of `self` bounds the
            // slice's life, and `&mut` access goes only through `deref_mut`.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }
    }

    impl<T: Copy> std::ops::DerefMut for HugeTable<T> {
        fn deref_mut(&mut self) -> &mut [T] {
            // SAFETY: as in `deref`, and `&mut self` makes this the only borrow.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl<T: Copy> Drop for HugeTable<T> {
        fn drop(&mut self) {
            // SAFETY: the table's own mapping, of `mapped` bytes, which nothing borrows any
            // more (drop has `&mut self`); T is Copy, so no value needs dropping first.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast::<libc::c_void>(), self.mapped);
            }
        }
    }
}

/// Waits in `poll(2)` for the descriptors in `fds` (up to `timeout_ms`; negative: no
/// limit) and returns how many have events (their `revents` are set).
#[allow(unsafe_code)]
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> std::io::Result<usize> {
    // SAFETY: `fds` is a valid, initialised slice of pollfd structs, borrowed mutably for
    // the call (the kernel writes only their `revents`); poll touches nothing else of ours.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// The calling thread's kernel id.
#[allow(unsafe_code)]
pub fn gettid() -> i32 {
    // SAFETY: gettid takes nothing and touches no memory.
    unsafe { libc::gettid() }
}

/// A thread's scheduling policy, as `sched_setscheduler` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER`: a normal thread.
    Normal,
    /// `SCHED_IDLE`: runs only when nothing else on its core can.
    Idle,
}

/// Sets the scheduling policy of thread `tid` of this process (0: the calling thread).
#[allow(unsafe_code)]
pub fn set_policy(tid: i32, policy: Policy) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let p = match policy {
        Policy::Normal => libc::SCHED_OTHER,
        Policy::Idle => libc::SCHED_IDLE,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call; the call reads it
    // and changes only the policy of thread `tid`.
    let rc = unsafe { libc::sched_setscheduler(tid, p, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's nice value.
#[allow(unsafe_code)]
pub fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours;
    // PRIO_PROCESS with a thread id changes only that thread's nice value on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `len` bytes of `file` from `offset` to the disk and waits for them
/// (`sync_file_range` with `WAIT_BEFORE | WRITE | WAIT_AFTER`): the range's dirty pages are
/// on the device when it returns, with no metadata and no device cache flush (an `fsync`
/// still does those).
#[allow(unsafe_code)]
pub fn write_range_and_wait(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let (Ok(off), Ok(n)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: the descriptor is `file`'s, open for the whole call (borrowed); the call
    // takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
