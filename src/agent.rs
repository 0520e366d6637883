//! The shard work loop: duties polled in turn, an idle strategy when there was no work,
//! and stall accounting (a turn longer than [`STALL_NS`] is a stall: something on the
//! shard took the core away from the rings).

use crate::config::IdleStrategy;
use crate::report::ShardFigures;

/// A turn longer than this counts as a stall.
pub const STALL_NS: u64 = 100_000;

/// Waiting when a turn found no work.
pub struct Idle {
    strategy: IdleStrategy,
    empty_turns: u32,
}

impl Idle {
    /// An idle strategy.
    pub fn new(strategy: IdleStrategy) -> Self {
        Self {
            strategy,
            empty_turns: 0,
        }
    }

    /// Called after every turn with the work it did. True when it gave the core away
    /// (yield or sleep), so the next turn's length is not the shard's own doing.
    pub fn after(&mut self, work: usize) -> bool {
        if work > 0 {
            self.empty_turns = 0;
            return false;
        }
        self.empty_turns = self.empty_turns.saturating_add(1);
        match self.strategy {
            IdleStrategy::Spin => {
                std::hint::spin_loop();
                false
            }
            IdleStrategy::Backoff => backoff(self.empty_turns),
        }
    }
}

/// Spin a little, then yield, then sleep in doubling steps up to 1 ms.
fn backoff(turns: u32) -> bool {
    match turns {
        0..=200 => {
            std::hint::spin_loop();
            false
        }
        201..=300 => {
            std::thread::yield_now();
            true
        }
        n => {
            let us = 1u64 << (n - 300).min(10);
            std::thread::sleep(std::time::Duration::from_micros(us.min(1_000)));
            true
        }
    }
}

/// Loop figures of one shard.
#[derive(Default)]
pub struct Turns {
    /// The figures so far.
    pub figures: ShardFigures,
    last_ns: u64,
}

impl Turns {
    /// Accounts one turn that ended at `now_ns` having done `work` items.
    pub fn turn(&mut self, now_ns: u64, work: usize) {
        let f = &mut self.figures;
        f.loops += 1;
        f.work += work as u64;
        if self.last_ns != 0 {
            let took = now_ns.saturating_sub(self.last_ns);
            if took > STALL_NS {
                f.stalls += 1;
            }
            f.max_stall_ns = f.max_stall_ns.max(took);
        }
        self.last_ns = now_ns;
    }

    /// Forgets the last turn's end (after deliberate pauses such as upkeep), so that the
    /// next turn is not counted as a stall.
    pub fn rebase(&mut self, now_ns: u64) {
        self.last_ns = now_ns;
    }
}

/// Pins the calling thread to `core` when asked; says whether it worked.
pub fn pin(core: usize, enabled: bool) -> bool {
    enabled && core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_turns_are_stalls() {
        let mut t = Turns::default();
        t.turn(1_000, 1);
        t.turn(2_000, 0);
        t.turn(2_000 + STALL_NS + 1, 3);
        assert_eq!(t.figures.loops, 3);
        assert_eq!(t.figures.work, 4);
        assert_eq!(t.figures.stalls, 1);
        assert_eq!(t.figures.max_stall_ns, STALL_NS + 1);
        t.rebase(10_000_000);
        t.turn(10_000_010, 0);
        assert_eq!(t.figures.stalls, 1);
    }
}
