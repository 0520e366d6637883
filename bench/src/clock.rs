//! The one clock every figure is read from: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! Both ends of a two-process measurement read this clock, so a time taken in the peer
//! (the receiver's last receive) can be subtracted from one taken in the client.

/// Nanoseconds on `CLOCK_MONOTONIC` (the same clock `publish_ns` uses in rimd's records).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec` owned by this frame, and
    // CLOCK_MONOTONIC is always available on Linux, so the call only writes `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    // Both fields are non-negative for CLOCK_MONOTONIC.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

#[cfg(test)]
mod tests {
    use super::monotonic_ns;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
    }
}
