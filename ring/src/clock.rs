//! CLOCK_MONOTONIC in nanoseconds: one clock for every process on the host, so latencies
//! measured across a ring (publish in one process, receive in another) are comparable.

/// Nanoseconds of CLOCK_MONOTONIC (a vDSO call, ~20 ns, no syscall).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}
