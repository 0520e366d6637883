//! The daemon's own process settings that need a system call.

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
