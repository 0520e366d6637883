//! The daemon's clock: the one seam through which every component reads time.
//!
//! A [`Clock`] is handed to each component that reads the wall clock (event-time bounds,
//! staleness, idle windows, checkpoints, retention, record and install times) and to the
//! peer log, whose rate windows run on its monotonic reading. The daemon runs on
//! [`Clock::system`]; tests run on a [`ManualClock`], which moves only when the test says
//! so, so staleness and rate windows are tested without sleeping (cooldowns need no clock:
//! they run on event time). Pacing timers and socket timeouts still read `Instant`.
//!
//! The system clock costs one predictable branch over the bare `clock_gettime` (vDSO, about
//! 20 ns); the hot shards read it once per loop turn, not per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where a component reads time: the system's clocks, or a test's manual one.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

/// A manual clock's readings, in ns.
#[derive(Debug)]
struct Manual {
    unix_ns: AtomicU64,
    monotonic_ns: AtomicU64,
}

impl Clock {
    /// The system's wall clock and `CLOCK_MONOTONIC`.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// Whether this is a test's manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Wall clock, epoch ns (0 if the clock is before 1970; saturates in 2554).
    pub fn unix_ns(&self) -> u64 {
        match &self.manual {
            None => system_unix_ns(),
            Some(m) => m.unix_ns.load(Ordering::Acquire),
        }
    }

    /// Wall clock, epoch ms (0 if the clock is before 1970).
    pub fn unix_ms(&self) -> u64 {
        self.unix_ns() / 1_000_000
    }

    /// The wall clock as epoch ms, as an `i64` like event times (saturating).
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.unix_ms()).unwrap_or(i64::MAX)
    }

    /// Monotonic ns (`CLOCK_MONOTONIC` on the system clock: the same base as the ring's
    /// `rim_ring::clock::monotonic_ns`, so readings compare with producers' stamps).
    pub fn monotonic_ns(&self) -> u64 {
        match &self.manual {
            None => rim_ring::clock::monotonic_ns(),
            Some(m) => m.monotonic_ns.load(Ordering::Acquire),
        }
    }
}

fn system_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A clock that moves only when told: [`ManualClock::clock`] hands components the
/// [`Clock`] that reads it, [`ManualClock::advance`] moves both its readings.
#[derive(Debug)]
pub struct ManualClock {
    inner: Arc<Manual>,
}

impl ManualClock {
    /// Starts at `unix_ms` on the wall clock and 1 s on the monotonic one (0 would read
    /// as "never" to code that keeps 0 for unset stamps).
    pub fn at(unix_ms: u64) -> Self {
        Self {
            inner: Arc::new(Manual {
                unix_ns: AtomicU64::new(unix_ms.saturating_mul(1_000_000)),
                monotonic_ns: AtomicU64::new(1_000_000_000),
            }),
        }
    }

    /// A [`Clock`] that reads this one.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.inner.clone()),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.unix_ns.fetch_add(ns, Ordering::AcqRel);
        self.inner.monotonic_ns.fetch_add(ns, Ordering::AcqRel);
    }

    /// Sets the wall clock alone (a step, as NTP may make), leaving the monotonic one.
    pub fn set_unix_ms(&self, unix_ms: u64) {
        self.inner
            .unix_ns
            .store(unix_ms.saturating_mul(1_000_000), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_handle_sees_it() {
        let m = ManualClock::at(1_700_000_000_000);
        let (a, b) = (m.clock(), m.clock());
        assert!(a.is_manual() && !Clock::system().is_manual());
        assert_eq!(a.unix_ms(), 1_700_000_000_000);
        assert_eq!(a.now_ms(), 1_700_000_000_000);
        let mono = a.monotonic_ns();
        m.advance(Duration::from_millis(1_500));
        assert_eq!(b.unix_ms(), 1_700_000_001_500);
        assert_eq!(b.monotonic_ns() - mono, 1_500_000_000);
        m.set_unix_ms(5);
        assert_eq!(a.unix_ms(), 5);
        assert_eq!(
            a.monotonic_ns() - mono,
            1_500_000_000,
            "a wall step leaves monotonic time"
        );
    }

    #[test]
    fn the_system_clock_reads_the_system() {
        let c = Clock::system();
        let before = system_unix_ns() / 1_000_000;
        let read = c.unix_ms();
        assert!(read >= before && read < before + 60_000);
        let m0 = c.monotonic_ns();
        assert!(c.monotonic_ns() >= m0);
    }
}
