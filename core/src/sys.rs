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

/// Advises the kernel to back `len` bytes of `v`'s memory from byte `offset` with
/// transparent huge pages (`madvise(MADV_HUGEPAGE)`); the range must be page-aligned for
/// the advice to take. A range outside `v` is not advised. Best effort: the advice changes
/// how pages are backed, never their contents, and a refusal changes nothing.
#[allow(unsafe_code)]
pub fn advise_huge_pages<T>(v: &mut [T], offset: usize, len: usize) {
    let bytes = std::mem::size_of_val(v);
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > bytes) {
        return;
    }
    let start = v.as_mut_ptr().cast::<u8>().wrapping_add(offset);
    // SAFETY: [start, start + len) lies inside `v`'s allocation (checked above), which the
    // caller lends mutably for the call; MADV_HUGEPAGE does not touch the contents.
    unsafe {
        libc::madvise(start.cast::<libc::c_void>(), len, libc::MADV_HUGEPAGE);
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
