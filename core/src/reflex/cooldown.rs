//! Cooldowns: after a rule fires for a node, it stays quiet for that node until the
//! event time passes `cooldown`.
//!
//! A fixed table of (rule, node) → quiet-until entries, allocated up front
//! (`reflex.cooldown_slots`), 16-way set-associative: an entry lives in the 16 slots of
//! its set, expired entries are reused, so the table never grows and a lookup touches two
//! cache lines. Keys use a hash of the rule's id, so a cooldown survives a rule reload.
//! When all 16 slots of a set are live, the decision still fires and the overflow is
//! counted: losing a decision is worse than an extra one.
//!
//! Quiet-until times saturate: a cooldown from an event at `i64::MAX` ends at `i64::MAX`,
//! never wraps into the past. (Ingest's event-time bounds keep such events out; this
//! keeps the table sound without them.)

const WAYS: usize = 16;

/// The cooldown table.
pub struct Cooldowns {
    keys: Vec<u64>,
    until: Vec<i64>,
    sets: usize,
    /// Decisions that fired without a cooldown entry because their set was full.
    pub overflow: u64,
}

/// The outcome of asking to fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Fire; the cooldown is recorded.
    Fire,
    /// Fire; no slot was free to record the cooldown.
    FireUntracked,
    /// Quiet: still cooling down.
    Quiet,
}

impl Cooldowns {
    /// A table of `slots` entries (a power of two ≥ 16), written through once so that
    /// every page is resident: firings land on random sets, and a first-touch page fault
    /// (tens of µs in a VM) on a decision's path would be paid by that decision.
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(WAYS).next_power_of_two();
        Self {
            keys: resident(slots, 0),
            until: resident(slots, 0),
            sets: slots / WAYS,
            overflow: 0,
        }
    }

    fn key(rule: u64, node: u32) -> u64 {
        (rule.rotate_left(17) ^ u64::from(node).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
    }

    /// May `rule` (its id hash) fire for `node` at event time `now`, with `cooldown_ms`?
    pub fn check(&mut self, rule: u64, node: u32, now: i64, cooldown_ms: u64) -> Gate {
        if cooldown_ms == 0 {
            return Gate::Fire;
        }
        let key = Self::key(rule, node);
        let until = now.saturating_add(i64::try_from(cooldown_ms).unwrap_or(i64::MAX));
        let set = (key.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 32) as usize % self.sets;
        let base = set * WAYS;
        let mut free = None;
        for i in base..base + WAYS {
            if self.keys[i] == key {
                if now < self.until[i] {
                    return Gate::Quiet;
                }
                self.until[i] = until;
                return Gate::Fire;
            }
            if free.is_none() && (self.keys[i] == 0 || now >= self.until[i]) {
                free = Some(i);
            }
        }
        match free {
            Some(i) => {
                self.keys[i] = key;
                self.until[i] = until;
                Gate::Fire
            }
            None => {
                self.overflow += 1;
                Gate::FireUntracked
            }
        }
    }
}

/// A vector of `n` copies of `zero` whose pages are all written now (`Vec::resize` fills
/// element by element, where `vec![0; n]` would hand back untouched zero pages).
fn resident<T: Copy>(n: usize, zero: T) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, zero);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_until_the_cooldown_passes_per_rule_and_node() {
        let mut c = Cooldowns::new(64);
        assert_eq!(c.check(7, 1, 1_000, 500), Gate::Fire);
        assert_eq!(c.check(7, 1, 1_499, 500), Gate::Quiet);
        assert_eq!(c.check(7, 2, 1_499, 500), Gate::Fire, "other node");
        assert_eq!(c.check(8, 1, 1_499, 500), Gate::Fire, "other rule");
        assert_eq!(c.check(7, 1, 1_500, 500), Gate::Fire);
        assert_eq!(c.check(7, 1, 1_600, 0), Gate::Fire, "no cooldown");
    }

    #[test]
    fn extreme_times_and_cooldowns_saturate() {
        let mut c = Cooldowns::new(64);
        assert_eq!(c.check(1, 1, i64::MAX, u64::MAX), Gate::Fire);
        assert_eq!(c.check(1, 1, i64::MAX - 1, 1), Gate::Quiet);
        assert_eq!(c.check(2, 1, i64::MIN, u64::MAX), Gate::Fire);
        // i64::MIN + (u64::MAX clamped to i64::MAX) = -1.
        assert_eq!(c.check(2, 1, -2, 1), Gate::Quiet);
        assert_eq!(c.check(2, 1, -1, 1), Gate::Fire);
    }

    #[test]
    fn a_full_set_fires_and_counts() {
        let mut c = Cooldowns::new(16);
        for node in 0..16 {
            assert_eq!(c.check(1, node, 0, 1_000), Gate::Fire);
        }
        assert_eq!(c.check(1, 99, 0, 1_000), Gate::FireUntracked);
        assert_eq!(c.overflow, 1);
        assert_eq!(c.check(1, 99, 1_000, 1_000), Gate::Fire, "expired entries are reused");
    }
}
