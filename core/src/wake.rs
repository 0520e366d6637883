//! Waking a parked cold-side thread from the hot shard without a syscall per event.
//!
//! The sleeper announces that it parks (`sleeping`), re-checks its input, and parks; the
//! producer of work, after publishing it, looks at the flag (one load) and unparks only a
//! thread that said it sleeps. The two `SeqCst` fences make the pair a Dekker handshake:
//! either the sleeper's re-check sees the new work, or the producer sees the flag. A
//! thread woken for nothing (or by its timeout) just looks again. FLOORS.md: a wake-up
//! costs tens of microseconds, so sleepers spin and nap first and park only after a
//! stretch of idleness; the hot shard pays the syscall once per idle period at most.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// One sleeper, many possible wakers.
#[derive(Debug, Default)]
pub struct Wake {
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Wake {
    /// A wake for a thread that registers itself later ([`Wake::register`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the calling thread the one woken.
    pub fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Called after publishing work: unparks the sleeper if it parks or is about to.
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Parks the registered (calling) thread for at most `timeout`, unless `has_work`
    /// (checked after announcing the sleep) says there is something to do.
    pub fn park(&self, timeout: Duration, has_work: impl Fn() -> bool) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !has_work() {
            std::thread::park_timeout(timeout);
        }
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Instant;

    /// Every notify after published work is seen by the sleeper: it never sleeps through
    /// work for its whole timeout (10 minutes here, so a lost wake-up shows as a hang,
    /// which the watchdog turns into a failure).
    #[test]
    fn no_work_is_slept_through() {
        let wake = Arc::new(Wake::new());
        let work = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let (w2, k2, d2) = (wake.clone(), work.clone(), done.clone());
        let sleeper = std::thread::spawn(move || {
            w2.register();
            let mut seen = 0;
            while seen < 2_000 {
                let now = k2.load(Ordering::Acquire);
                if now > seen {
                    seen = now;
                    d2.store(seen, Ordering::Release);
                    continue;
                }
                w2.park(Duration::from_secs(600), || k2.load(Ordering::Acquire) > seen);
            }
        });
        let started = Instant::now();
        for i in 1..=2_000u64 {
            work.store(i, Ordering::Release);
            wake.notify();
            while done.load(Ordering::Acquire) < i {
                std::thread::yield_now();
                // Watchdog: a lost wake-up would otherwise hang for ten minutes.
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "a wake-up was lost at {i}"
                );
            }
        }
        sleeper.join().expect("sleeper");
    }
}
