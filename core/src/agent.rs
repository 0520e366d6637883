//! The shard work loop: duties polled in turn, an idle strategy when there was no work,
//! and stall accounting (a turn longer than [`STALL_NS`] is a stall: something on the
//! shard took the core away from the rings).
//!
//! Each hot shard also shows that it is alive: its loop stores the time into its
//! [`ShardBeat`] at every upkeep (about every millisecond; one relaxed store), and the
//! beat is marked ended when its thread ends, however it ends. Readiness reads the beats:
//! a shard whose loop stopped turning, or whose thread is gone, is named.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Empty turns of [`backoff`] before its long sleeps: the spins, the yields, the doubling
/// sleeps and about a second of 1 ms sleeps; then about nine seconds of 4 ms sleeps.
const IDLE_1S_TURNS: u32 = 300 + 10 + 1_000;
const IDLE_10S_TURNS: u32 = IDLE_1S_TURNS + 2_250;

/// Spin a little, then yield, then sleep in doubling steps up to 1 ms; after about a
/// second without work 4 ms, after about ten seconds 10 ms.
///
/// Why the long steps: each wake-up of an idle shard costs 35–65 µs of CPU on this VM
/// (the timer, the context switch, one turn of the loop), so 1 ms sleeps alone kept an
/// idle daemon at 2.7% of a core, 2.0% of it this loop. The first event after a silence
/// waits up to the sleep then in force (1 ms after a short gap, 10 ms after ten seconds);
/// the turn that finds it resets the backoff, so the events after it do not.
fn backoff(turns: u32) -> bool {
    match wait_after(turns) {
        Wait::Spin => {
            std::hint::spin_loop();
            false
        }
        Wait::Yield => {
            std::thread::yield_now();
            true
        }
        Wait::SleepUs(us) => {
            std::thread::sleep(std::time::Duration::from_micros(us));
            true
        }
    }
}

/// How [`backoff`] waits after `turns` empty turns.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    Spin,
    Yield,
    SleepUs(u64),
}

fn wait_after(turns: u32) -> Wait {
    match turns {
        0..=200 => Wait::Spin,
        201..=300 => Wait::Yield,
        n if n > IDLE_10S_TURNS => Wait::SleepUs(10_000),
        n if n > IDLE_1S_TURNS => Wait::SleepUs(4_000),
        n => Wait::SleepUs((1u64 << (n - 300).min(10)).min(1_000)),
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

/// A turn of a cold-side agent longer than this is a stall. The cold side batches (a
/// group commit, a store transaction, a Kafka batch), so its turns are longer than the hot
/// shards'; a millisecond is what a hand-off to it may wait behind one.
pub const COLD_STALL_NS: u64 = 1_000_000;

/// The loop figures of one cold-side agent (the journal thread, the store writer, the
/// Kafka bridge's loops, the HTTP thread's decision hub), shared with the stats: the
/// agent adds to them once per turn (relaxed atomics; the cold side, never per event), the
/// stats report them beside the hot shards' (`rimd_shard_*{shard="rimd-journal"}`).
#[derive(Debug, Default)]
pub struct AgentFigures {
    turns: AtomicU64,
    work: AtomicU64,
    stalls: AtomicU64,
    max_turn_ns: AtomicU64,
    waits: AtomicU64,
}

impl AgentFigures {
    /// A turn that did `work` items and took `took_ns` of the agent's own time (not its
    /// waits).
    pub fn turn(&self, took_ns: u64, work: usize) {
        self.turns.fetch_add(1, Ordering::Relaxed);
        self.work.fetch_add(work as u64, Ordering::Relaxed);
        if took_ns > COLD_STALL_NS {
            self.stalls.fetch_add(1, Ordering::Relaxed);
        }
        self.max_turn_ns.fetch_max(took_ns, Ordering::Relaxed);
    }

    /// The agent found nothing to do and waited (parked, slept or blocked on its input).
    pub fn waited(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    /// As a shard's figures: `loops` are turns and waits, `max_stall_ns` the longest turn.
    pub fn figures(&self) -> ShardFigures {
        let turns = self.turns.load(Ordering::Relaxed);
        ShardFigures {
            loops: turns + self.waits.load(Ordering::Relaxed),
            work: self.work.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
            max_stall_ns: self.max_turn_ns.load(Ordering::Relaxed),
        }
    }
}

/// The cold-side agents of a run, by thread name: each agent's figures are added when it
/// is built, and the stats read them all.
#[derive(Debug, Default, Clone)]
pub struct ColdAgents {
    list: Arc<Mutex<Vec<ColdAgent>>>,
}

/// One registered cold-side agent.
#[derive(Debug)]
pub struct ColdAgent {
    /// Its thread's name.
    pub name: String,
    /// How it waits when idle (`park`, `block`, `poll`), for the stats.
    pub idle: &'static str,
    /// Its figures.
    pub figures: Arc<AgentFigures>,
}

impl ColdAgents {
    /// Registers the agent `name`, which waits as `idle` says; returns the figures it adds to.
    pub fn add(&self, name: &str, idle: &'static str) -> Arc<AgentFigures> {
        let figures = Arc::new(AgentFigures::default());
        self.lock().push(ColdAgent {
            name: name.to_owned(),
            idle,
            figures: figures.clone(),
        });
        figures
    }

    /// Visits every agent registered so far (under the list's lock: nothing is copied).
    pub fn each(&self, mut f: impl FnMut(&ColdAgent)) {
        self.lock().iter().for_each(&mut f);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ColdAgent>> {
        // A panic while holding the lock leaves a whole list (a push or a clone).
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One hot shard's sign of life.
#[derive(Debug)]
pub struct ShardBeat {
    name: String,
    /// CLOCK_MONOTONIC ns of the loop's last upkeep (0: not started).
    beat_ns: AtomicU64,
    ended: AtomicBool,
}

/// What a beat says about its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatState {
    /// The loop has not started yet (recovery, start-up).
    NotStarted,
    /// The loop turned within the bound.
    Running,
    /// The loop has not turned for this long, ms.
    Stalled(u64),
    /// The shard's thread has ended.
    Ended,
}

impl std::fmt::Display for BeatState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BeatState::NotStarted => write!(f, "not started"),
            BeatState::Running => write!(f, "running"),
            BeatState::Stalled(ms) => write!(f, "stalled: its loop has not turned for {ms} ms"),
            BeatState::Ended => write!(f, "its thread has ended"),
        }
    }
}

impl ShardBeat {
    /// The beat of the shard called `name`, not started.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            beat_ns: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    /// The shard's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loop turned at `now_ns` (CLOCK_MONOTONIC).
    #[inline]
    pub fn beat(&self, now_ns: u64) {
        self.beat_ns.store(now_ns.max(1), Ordering::Relaxed);
    }

    /// The shard's thread ended.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }

    /// The shard's state at `now_ns`, stalled past `stall_ns`.
    pub fn state(&self, now_ns: u64, stall_ns: u64) -> BeatState {
        if self.ended.load(Ordering::Acquire) {
            return BeatState::Ended;
        }
        match self.beat_ns.load(Ordering::Relaxed) {
            0 => BeatState::NotStarted,
            t if now_ns.saturating_sub(t) > stall_ns => BeatState::Stalled(now_ns.saturating_sub(t) / 1_000_000),
            _ => BeatState::Running,
        }
    }
}

/// Runs `f` when dropped: at the end of a thread, whether it returned or unwound.
pub struct OnDrop<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
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
    fn cold_agent_figures_count_turns_work_waits_and_stalls() {
        let agents = ColdAgents::default();
        let f = agents.add("rimd-journal", "park");
        f.turn(10_000, 3);
        f.turn(COLD_STALL_NS + 1, 5);
        f.turn(COLD_STALL_NS, 0);
        f.waited();
        let mut list = Vec::new();
        agents.each(|a| list.push((a.name.clone(), a.idle, a.figures.figures())));
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].0.as_str(), list[0].1), ("rimd-journal", "park"));
        let got = list[0].2;
        assert_eq!(
            (got.loops, got.work, got.stalls),
            (4, 8, 1),
            "a turn of exactly the bound is no stall"
        );
        assert_eq!(got.max_stall_ns, COLD_STALL_NS + 1);
    }

    #[test]
    fn a_beat_tells_running_from_stalled_and_ended() {
        let b = ShardBeat::new("rimd-hot");
        assert_eq!(b.state(10, 5), BeatState::NotStarted);
        b.beat(2_000_000);
        assert_eq!(b.state(2_000_004, 5), BeatState::Running);
        assert_eq!(b.state(9_000_000, 5), BeatState::Stalled(7));
        assert_eq!(b.state(0, 5), BeatState::Running, "a clock read before the beat");
        {
            let _g = OnDrop(|| b.end());
        }
        assert_eq!(b.state(2_000_004, 5), BeatState::Ended);
    }

    #[test]
    fn backoff_spins_yields_then_sleeps_longer_the_longer_it_is_idle() {
        assert_eq!(wait_after(1), Wait::Spin);
        assert_eq!(wait_after(200), Wait::Spin);
        assert_eq!(wait_after(201), Wait::Yield);
        assert_eq!(wait_after(300), Wait::Yield);
        assert_eq!(wait_after(301), Wait::SleepUs(2));
        assert_eq!(wait_after(309), Wait::SleepUs(512));
        assert_eq!(wait_after(310), Wait::SleepUs(1_000));
        assert_eq!(wait_after(IDLE_1S_TURNS), Wait::SleepUs(1_000));
        assert_eq!(wait_after(IDLE_1S_TURNS + 1), Wait::SleepUs(4_000));
        assert_eq!(wait_after(IDLE_10S_TURNS), Wait::SleepUs(4_000));
        assert_eq!(wait_after(IDLE_10S_TURNS + 1), Wait::SleepUs(10_000));
        assert_eq!(wait_after(u32::MAX), Wait::SleepUs(10_000));
        // The sleeps add up to about a second, then about ten.
        let slept = |to: u32| -> u64 {
            (0..=to)
                .map(|n| match wait_after(n) {
                    Wait::SleepUs(us) => us,
                    _ => 0,
                })
                .sum()
        };
        assert!((1_000_000..1_100_000).contains(&slept(IDLE_1S_TURNS)));
        assert!((10_000_000..10_100_000).contains(&slept(IDLE_10S_TURNS)));
        let mut idle = Idle::new(IdleStrategy::Backoff);
        assert!(!idle.after(0), "spinning keeps the core");
        assert!(!idle.after(5));
        assert_eq!(idle.empty_turns, 0, "work resets the backoff");
    }

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
