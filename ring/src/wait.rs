//! Waiting without burning a shared core: spin briefly, then park on a futex in the shared
//! segment, and have the other side wake it only when it said it sleeps.
//!
//! FLOORS.md: a wake-up costs 27–45 µs here and a spin ~200 ns, so a waiter spins first
//! (default ~50 µs) and the publisher pays a syscall only for a consumer that really
//! parked. The futex is process-shared (no `FUTEX_PRIVATE_FLAG`): the word lives in a
//! mapping both processes share.

use crate::sync::{AtomicU64, Ordering};

/// Default spin before parking, ns.
pub const SPIN_NS_DEFAULT: u64 = 50_000;

/// Spins on `ready` for `spin_ns`, then parks on `sleeping` until woken or `timeout_ns`
/// passes. Returns `ready()` at the end.
pub(crate) fn wait_until(ready: impl Fn() -> bool, sleeping: &AtomicU64, spin_ns: u64, timeout_ns: u64) -> bool {
    spin_then_park(&ready, spin_ns, timeout_ns, |remaining_ns| {
        // Announce sleep, then re-check: the Dekker half that pairs with the publisher's
        // fence-then-check, so a commit between our check and our sleep is never missed.
        sleeping.store(1, Ordering::SeqCst);
        // The store must be ordered before the re-check's loads (StoreLoad): SeqCst on the
        // store alone does not promise that for an Acquire load in the Rust model.
        crate::sync::fence(Ordering::SeqCst);
        if !ready() {
            futex_wait(sleeping, 1, remaining_ns);
        }
        sleeping.store(0, Ordering::Relaxed);
    })
}

/// For readers that may not write the segment (broadcast subscribers): spins on `ready`,
/// then sleeps on `word` in slices of at most [`READ_ONLY_PARK_NS`]. The writer never
/// pays a wake-up for them, so a parked reader notices a new record within one slice.
pub(crate) fn wait_read_only(ready: impl Fn() -> bool, word: &AtomicU64, spin_ns: u64, timeout_ns: u64) -> bool {
    spin_then_park(&ready, spin_ns, timeout_ns, |remaining_ns| {
        let seen = word.load(Ordering::Acquire);
        if !ready() {
            futex_wait(word, seen as u32, remaining_ns.min(READ_ONLY_PARK_NS));
        }
    })
}

/// Longest sleep of a parked read-only waiter before it looks again, ns.
pub const READ_ONLY_PARK_NS: u64 = 100_000;

fn spin_then_park(ready: &impl Fn() -> bool, spin_ns: u64, timeout_ns: u64, park: impl Fn(u64)) -> bool {
    let start = crate::clock::monotonic_ns();
    while !ready() {
        let waited = crate::clock::monotonic_ns().wrapping_sub(start);
        if waited >= timeout_ns {
            return false;
        }
        if waited < spin_ns {
            crate::sync::spin_hint();
        } else {
            // Park in bounded slices so a lost wake-up (a dead peer) costs at most 1 ms.
            park((timeout_ns - waited).min(1_000_000));
        }
    }
    true
}

#[cfg(not(loom))]
fn futex_word(word: &AtomicU64) -> *const u32 {
    // The futex is the low half of the word: on little-endian x86_64 that is its first 4
    // bytes, and a futex needs only 4-byte alignment.
    std::ptr::from_ref(word).cast::<u32>()
}

#[cfg(not(loom))]
fn futex_wait(word: &AtomicU64, expected: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: the futex word is 4-byte aligned inside a live AtomicU64 (in a mapping that
    // outlives this call); FUTEX_WAIT only reads it and compares it to `expected`; `ts` is a
    // valid relative timeout. Spurious returns are handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_word(word),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every waiter parked on `word`.
#[cfg(not(loom))]
pub(crate) fn wake_all(word: &AtomicU64) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; it is a live, aligned word.
    unsafe {
        libc::syscall(libc::SYS_futex, futex_word(word), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(loom)]
fn futex_wait(_word: &AtomicU64, _expected: u32, _timeout_ns: u64) {
    loom::thread::yield_now();
}

#[cfg(loom)]
pub(crate) fn wake_all(_word: &AtomicU64) {}
