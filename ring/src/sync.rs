//! The atomics the ring protocols use, in one place, so that `--cfg loom` can swap in
//! loom's model-checked versions without touching the protocol code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

/// A hint to the CPU that we are busy-waiting; under loom, a yield to the model checker.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
