//! Bounded busy-waiting. Every spin loop in the harness waits through a [`Spin`], so a peer
//! that stops answering fails the row with [`BenchError::Timeout`] instead of hanging the
//! run, and a peer that died fails it with [`BenchError::PeerGone`] at once.
//!
//! The clock (and the peer's liveness) is looked at only every [`SPINS_PER_CHECK`] spins, so
//! the watchdog costs the measured loop next to nothing.

use std::time::Duration;

use crate::clock::monotonic_ns;
use crate::error::BenchError;

/// How many spins pass between two looks at the clock and the peer.
const SPINS_PER_CHECK: u32 = 4096;

/// What a wait watches: how long it may last, and how to tell the peer has gone.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    timeout: Duration,
    peer_gone: Option<&'a dyn Fn() -> bool>,
}

impl<'a> Watch<'a> {
    /// Waits of at most `timeout` each, with no peer to watch.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            peer_gone: None,
        }
    }

    /// The same waits, failing early once `peer_gone` says the other side has ended.
    pub fn with_peer(timeout: Duration, peer_gone: &'a dyn Fn() -> bool) -> Self {
        Self {
            timeout,
            peer_gone: Some(peer_gone),
        }
    }

    /// A new wait for `waiting_for` (named in the error if it fails).
    #[inline]
    pub fn spin(&self, waiting_for: &'static str) -> Spin<'a> {
        Spin {
            watch: *self,
            waiting_for,
            spins: 0,
            deadline_ns: None,
            peer_seen_gone: false,
        }
    }
}

/// One busy-wait on one condition. The deadline starts at the first check.
pub struct Spin<'a> {
    watch: Watch<'a>,
    waiting_for: &'static str,
    spins: u32,
    deadline_ns: Option<u64>,
    peer_seen_gone: bool,
}

impl Spin<'_> {
    /// One more spin of a loop that polls without waiting.
    #[inline]
    pub fn tick(&mut self) -> Result<(), BenchError> {
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if !self.spins.is_multiple_of(SPINS_PER_CHECK) {
            return Ok(());
        }
        self.check()
    }

    /// Checks the deadline and the peer now: for transports that already waited (a blocking
    /// read that hit its socket timeout).
    #[cold]
    pub fn check(&mut self) -> Result<(), BenchError> {
        self.check_peer()?;
        let now_ns = monotonic_ns();
        let timeout_ns = u64::try_from(self.watch.timeout.as_nanos()).unwrap_or(u64::MAX);
        let deadline_ns = *self.deadline_ns.get_or_insert(now_ns.saturating_add(timeout_ns));
        if now_ns > deadline_ns {
            return Err(BenchError::Timeout {
                waiting_for: self.waiting_for,
                timeout: self.watch.timeout,
            });
        }
        Ok(())
    }

    /// A peer that has ended fails the wait on the second check that sees it gone, so a
    /// message it sent just before ending still has a whole check interval to arrive.
    fn check_peer(&mut self) -> Result<(), BenchError> {
        let Some(peer_gone) = self.watch.peer_gone else {
            return Ok(());
        };
        if !peer_gone() {
            return Ok(());
        }
        if self.peer_seen_gone {
            return Err(BenchError::PeerGone {
                waiting_for: self.waiting_for,
            });
        }
        self.peer_seen_gone = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Watch;
    use std::time::Duration;

    #[test]
    fn a_wait_that_never_ends_times_out() {
        let watch = Watch::new(Duration::from_millis(5));
        let mut spin = watch.spin("nothing");
        let outcome = (0..u64::MAX).try_for_each(|_| spin.tick());
        assert!(outcome.is_err());
    }

    #[test]
    fn a_gone_peer_ends_the_wait_early() {
        let gone = || true;
        let watch = Watch::with_peer(Duration::from_secs(3600), &gone);
        let mut spin = watch.spin("a dead peer");
        let outcome = (0..u64::MAX).try_for_each(|_| spin.tick());
        assert!(matches!(outcome, Err(crate::error::BenchError::PeerGone { .. })));
    }
}
