//! Rate limits for log lines that a peer can cause (a bad attach request, a refused
//! producer, a dead-lettered Kafka message): without them, any local process or Kafka
//! producer could fill the disk with WARN lines.
//!
//! At most `burst` lines per window are written; the rest are counted, and when a window
//! that suppressed lines is over, one line says how many (and the total is kept for the
//! stats). The caller owns the limiter (one thread, no locks) and calls
//! [`PeerLog::admit`] before each line and [`PeerLog::tick`] now and then, so that the
//! count of a quiet spell is reported too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::clock::Clock;

/// Lines per window by default.
pub const BURST: u32 = 10;
/// The default window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A rate limit on one kind of peer-caused log line.
pub struct PeerLog {
    what: &'static str,
    burst: u32,
    window: Duration,
    clock: Clock,
    /// Monotonic ns the window started at.
    started_ns: u64,
    written: u32,
    suppressed: u64,
    total: Arc<AtomicU64>,
}

impl PeerLog {
    /// A limit of `burst` lines per `window` for lines about `what` (named in the summary
    /// line); `total` counts every suppressed line (for the stats). Windows are timed on
    /// `clock`'s monotonic reading.
    pub fn new(what: &'static str, burst: u32, window: Duration, total: Arc<AtomicU64>, clock: Clock) -> Self {
        Self {
            what,
            burst,
            window,
            started_ns: clock.monotonic_ns(),
            clock,
            written: 0,
            suppressed: 0,
            total,
        }
    }

    /// Whether the caller may write its line now; if not, the line is counted.
    pub fn admit(&mut self) -> bool {
        self.tick();
        if self.written < self.burst {
            self.written += 1;
            return true;
        }
        self.suppressed += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Ends the window if it is over, reporting what it suppressed.
    pub fn tick(&mut self) {
        let now = self.clock.monotonic_ns();
        if u128::from(now.saturating_sub(self.started_ns)) < self.window.as_nanos() {
            return;
        }
        if self.suppressed > 0 {
            warn!(
                suppressed = self.suppressed,
                window_s = self.window.as_secs(),
                "{} lines suppressed (at most {} per window)",
                self.what,
                self.burst
            );
        }
        self.started_ns = now;
        self.written = 0;
        self.suppressed = 0;
    }

    /// Lines suppressed in the current window.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_until_the_window_ends() {
        let total = Arc::new(AtomicU64::new(0));
        let clock = crate::clock::ManualClock::at(1_700_000_000_000);
        let mut log = PeerLog::new("test", 3, Duration::from_secs(10), total.clone(), clock.clock());
        let admitted = (0..10).filter(|_| log.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(log.suppressed(), 7);
        assert_eq!(total.load(Ordering::Relaxed), 7);
        clock.advance(Duration::from_millis(9_999));
        log.tick();
        assert!(!log.admit(), "the window is not over 1 ms early");
        assert_eq!(log.suppressed(), 8);
        clock.advance(Duration::from_millis(1));
        log.tick();
        assert_eq!(log.suppressed(), 0, "reported and reset");
        assert!(log.admit(), "a new window admits again");
        assert_eq!(total.load(Ordering::Relaxed), 8, "the total stays");
    }
}
