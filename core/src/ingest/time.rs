//! Event time against the daemon's clock.
//!
//! Windows, `gap` and cooldowns run on event time (the producer's `timestamp`), so an
//! event far in the future would move its node's state and cooldowns there: one event a
//! century ahead would silence a rule for that node for a century. Every front door
//! (shared-memory rings in ingest, `POST /events`, the Kafka bridge) therefore checks the
//! timestamp against the daemon's wall clock with the same bounds
//! (`ingest.event_ahead_ms_max`, `ingest.event_age_ms_max`) and refuses what falls
//! outside, with a reason of its own. A bound of 0 turns that side off.
//!
//! All arithmetic saturates: any `i64` timestamp and any clock reading give an answer.

use thiserror::Error;

/// Why an event time was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TimeRefusal {
    /// Further ahead of the daemon's clock than allowed.
    #[error("timestamp {timestamp} is {ahead_ms} ms ahead of the daemon's clock ({now_ms}); at most {max_ms} ms ahead is allowed (ingest.event_ahead_ms_max)")]
    Ahead {
        /// The event time, epoch ms.
        timestamp: i64,
        /// The daemon's clock, epoch ms.
        now_ms: i64,
        /// How far ahead.
        ahead_ms: u64,
        /// The bound.
        max_ms: u64,
    },
    /// Older than allowed.
    #[error("timestamp {timestamp} is {age_ms} ms older than the daemon's clock ({now_ms}); at most {max_ms} ms old is allowed (ingest.event_age_ms_max)")]
    TooOld {
        /// The event time, epoch ms.
        timestamp: i64,
        /// The daemon's clock, epoch ms.
        now_ms: i64,
        /// How old.
        age_ms: u64,
        /// The bound.
        max_ms: u64,
    },
}

pub use crate::config::TimeBounds;

impl TimeBounds {
    /// No bounds: every timestamp passes (recovery, tools).
    pub const NONE: TimeBounds = TimeBounds {
        ahead_ms_max: 0,
        age_ms_max: 0,
    };

    /// Checks `timestamp` (epoch ms) against the clock reading `now_ms` (epoch ms).
    #[inline]
    pub fn check(&self, timestamp: i64, now_ms: i64) -> Result<(), TimeRefusal> {
        // i128: the difference of any two i64 fits, so no sign or overflow case is missed.
        let diff = i128::from(timestamp) - i128::from(now_ms);
        let clamp = |d: i128| u64::try_from(d).unwrap_or(u64::MAX);
        if diff > 0 && self.ahead_ms_max != 0 && clamp(diff) > self.ahead_ms_max {
            return Err(TimeRefusal::Ahead {
                timestamp,
                now_ms,
                ahead_ms: clamp(diff),
                max_ms: self.ahead_ms_max,
            });
        }
        if diff < 0 && self.age_ms_max != 0 && clamp(-diff) > self.age_ms_max {
            return Err(TimeRefusal::TooOld {
                timestamp,
                now_ms,
                age_ms: clamp(-diff),
                max_ms: self.age_ms_max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_the_bounds_passes_outside_is_refused_with_its_side() {
        let b = TimeBounds {
            ahead_ms_max: 5_000,
            age_ms_max: 60_000,
        };
        let now = 1_800_000_000_000;
        assert_eq!(b.check(now, now), Ok(()));
        assert_eq!(b.check(now + 5_000, now), Ok(()));
        assert_eq!(b.check(now - 60_000, now), Ok(()));
        assert!(matches!(
            b.check(now + 5_001, now),
            Err(TimeRefusal::Ahead { ahead_ms: 5_001, .. })
        ));
        assert!(matches!(
            b.check(now - 60_001, now),
            Err(TimeRefusal::TooOld { age_ms: 60_001, .. })
        ));
    }

    #[test]
    fn the_extremes_of_i64_never_overflow() {
        let b = TimeBounds {
            ahead_ms_max: 1,
            age_ms_max: 1,
        };
        for now in [i64::MIN, -1, 0, 1, i64::MAX] {
            for ts in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
                let r = b.check(ts, now);
                assert_eq!(
                    r.is_ok(),
                    (i128::from(ts) - i128::from(now)).abs() <= 1,
                    "{ts} at {now}"
                );
                assert_eq!(TimeBounds::NONE.check(ts, now), Ok(()));
            }
        }
        assert!(matches!(
            b.check(i64::MAX, i64::MIN),
            Err(TimeRefusal::Ahead { ahead_ms: u64::MAX, .. })
        ));
    }

    #[test]
    fn zero_turns_a_side_off() {
        let ahead_only = TimeBounds {
            ahead_ms_max: 10,
            age_ms_max: 0,
        };
        assert_eq!(ahead_only.check(i64::MIN, 0), Ok(()));
        assert!(ahead_only.check(11, 0).is_err());
    }
}
