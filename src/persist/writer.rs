//! The store writer: commits the journal thread's hand-offs to redb (decision runs first,
//! capsules in bounded pieces, the checkpoint and watermarks last; see [`run`]), on a
//! thread of its own because a commit blocks for milliseconds (FLOORS.md). While it
//! commits, the journal thread keeps the next hand-off and lets it grow, so a slow disk
//! means bigger rounds, not a growing queue (and past a bound, back-pressure on the
//! journal thread).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rim_capsule::{Batch, DecisionRun, Names, Store};
use tracing::{error, warn};

use super::thread::Handoff;
use super::PersistStats;
use crate::agent::AgentFigures;
use crate::clock::Clock;

/// How long a batch is retried before the process gives up: dropping it would let later
/// watermarks pass capsules (and decision runs) that were never written.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// Store retention runs this often.
const RETAIN_EVERY: Duration = Duration::from_secs(60);

/// Commits hand-offs until the journal thread hangs up: makes their capsules (with a
/// replica of the roll-up's names, kept up to date by the hand-offs), then writes them.
///
/// When more than a piece of capsules (or a checkpoint) waits, the round's decision runs
/// go first, in a small transaction of their own, and capsules follow in pieces of at most
/// [`PIECE_CAPSULES`], each its own transaction, with the runs of hand-offs that arrived
/// meanwhile indexed between two pieces (while the round is small and young enough:
/// [`ROUND_JOIN_BELOW`], [`ROUND_PIECES_MAX`]); the last transaction carries the rest with
/// the checkpoint and the watermarks. Why: the writer
/// runs on the time the journal thread leaves on the cold core, and one transaction per
/// burst of window closes (every node's window closing at once) held a flood's decisions
/// unindexed until the flood was over (the `persist`/`decisions` row: 0 store commits
/// during a 3 s flood, the last decision indexed 0.6–1.0 s after it was durable).
///
/// Transactions are synced at most once per `durable_every` (and at the end), and only the
/// last of a round, which carries the watermarks: the journal is the source of truth, and
/// after a crash redb comes back as of its last synced commit and recovery replays the
/// rest from the journal. Runs and pieces committed before that (unsynced) are a prefix of
/// what the replay writes again: a run is keyed by its first sequence number and a capsule
/// put is idempotent, so rewriting them changes nothing. A sync per hand-off would cost the
/// disk (and the journal's own syncs) tens of milliseconds a second.
pub(super) fn run(store: &Store, rx: Receiver<Vec<Handoff>>, mut names: Names, env: &WriterEnv) {
    let WriterEnv {
        stats,
        durable_every,
        priority,
        clock,
        figures,
        mailbox,
    } = env;
    let mut retained_at = Instant::now();
    let mut synced_at = Instant::now();
    let mut unsynced = false;
    let mut indexed = Indexed::default();
    loop {
        // A commit left unsynced is synced `durable_every` after the last sync even when
        // no hand-off comes by then: until then a crash takes redb back to its last
        // synced commit, and a burst followed by silence left its last checkpoints and
        // watermarks unsynced for as long as the silence lasted (recovery after a crash
        // in it replayed a third of a 10M-event journal the store had long caught up with).
        let wait = unsynced.then(|| durable_every.saturating_sub(synced_at.elapsed()));
        let first = match next_handoff(&rx, mailbox, figures, wait) {
            Ok(Some(first)) => first,
            Ok(None) => {
                synced_at = Instant::now();
                unsynced = false;
                let mut sync = Batch::default();
                mailbox.take_into(&mut sync.decision_runs);
                commit_indexed(store, &mut sync, stats, true, &mut indexed, &mut || {});
                stats.store_unsynced.store(0, Ordering::Release);
                continue;
            }
            Err(_) => break,
        };
        let started = Instant::now();
        // The capsules' `created_ms`: one reading per round.
        let now_ms = clock.now_ms();
        let mut round = Round::default();
        // Anything else queued joins the round, in order.
        round.take(first.into_iter().chain(rx.try_iter().flatten()), &mut names, now_ms);
        let mut breather = Breather::start();
        // The round's pieces are committed unsynced; its last commit says what stays so.
        stats.store_unsynced.store(1, Ordering::Release);
        loop {
            round.take_posted(mailbox);
            if round.runs_go_first() {
                round.index_runs(store, stats, &mut indexed, &mut || breather.breathe());
            }
            let Some(mut piece) = round.next_piece() else {
                break;
            };
            commit_with(store, &mut piece, stats, false, &mut || breather.breathe());
            round.pieces += 1;
            round.join(&rx, &mut names, now_ms);
        }
        round.take_posted(mailbox);
        let mut last = round.finish();
        let durable = synced_at.elapsed() >= *durable_every;
        // Empty and not due for a sync: a wake-up for runs an earlier transaction of the
        // round indexed.
        if durable || !last.is_empty() {
            if durable {
                synced_at = Instant::now();
            }
            unsynced = !durable;
            commit_indexed(store, &mut last, stats, durable, &mut indexed, &mut || {
                breather.breathe()
            });
        }
        stats.store_unsynced.store(u64::from(unsynced), Ordering::Release);
        // A writer the journal thread raised stays raised for the whole round: lowered
        // after its first piece, it would be starved again with the round half done.
        priority.commit_done();
        if retained_at.elapsed() >= RETAIN_EVERY {
            retained_at = Instant::now();
            retain(store, now_ms);
        }
        figures.turn(started.elapsed().as_nanos() as u64, round.handoffs);
    }
    // Whatever was committed without a sync reaches the disk now, with runs still posted.
    let mut last = Batch::default();
    mailbox.take_into(&mut last.decision_runs);
    commit_indexed(store, &mut last, stats, true, &mut indexed, &mut || {});
}

/// [`commit_with`], counting the batch's runs as indexed (`persist.decisions_indexed`).
fn commit_indexed(
    store: &Store,
    batch: &mut Batch,
    stats: &PersistStats,
    durable: bool,
    indexed: &mut Indexed,
    breathe: &mut dyn FnMut(),
) {
    indexed.note(&batch.decision_runs);
    commit_with(store, batch, stats, durable, breathe);
    indexed.publish(stats);
}

/// The next hand-off (waiting at most `wait`, `None`: for ever), or an empty one at once
/// when runs wait in the mailbox. While it blocks the mailbox says so, for the journal
/// thread to wake it when it posts runs.
fn next_handoff(
    rx: &Receiver<Vec<Handoff>>,
    mailbox: &Mailbox,
    figures: &AgentFigures,
    wait: Option<Duration>,
) -> Result<Option<Vec<Handoff>>, std::sync::mpsc::RecvError> {
    use std::sync::mpsc::{RecvError, TryRecvError};
    mailbox.set_waiting(true);
    let got = if mailbox.has_runs() {
        match rx.try_recv() {
            Ok(h) => Ok(Some(h)),
            Err(TryRecvError::Empty) => Ok(Some(Vec::new())),
            Err(TryRecvError::Disconnected) => Err(RecvError),
        }
    } else {
        recv_counted(rx, figures, wait)
    };
    mailbox.set_waiting(false);
    got
}

/// Capsules per transaction before the last of a round: about 10–20 ms of the writer's
/// time at the 5–8 µs a capsule costs it.
const PIECE_CAPSULES: usize = 2048;
/// Hand-offs join a round between pieces only while fewer capsules than this wait in it
/// and it has committed fewer pieces than [`ROUND_PIECES_MAX`]: a round must end (its last
/// transaction carries the watermarks and checkpoint, and is the only one synced), and a
/// writer slower than what arrives must refuse hand-offs, so that the journal thread's
/// bounded queue and back-pressure (and the writer's raise) take over instead of the
/// round growing.
const ROUND_JOIN_BELOW: usize = 8 * PIECE_CAPSULES;
const ROUND_PIECES_MAX: usize = 32;

/// The newest decision indexed per shard (what `persist.decisions_indexed` sums).
#[derive(Default)]
struct Indexed(Vec<u64>);

impl Indexed {
    fn note(&mut self, runs: &[rim_capsule::DecisionRun]) {
        for r in runs {
            let k = usize::from(r.shard);
            if self.0.len() <= k {
                self.0.resize(k + 1, 0);
            }
            self.0[k] = self.0[k].max(r.last_seq);
        }
    }

    fn publish(&self, stats: &PersistStats) {
        stats.decisions_indexed.store(self.0.iter().sum(), Ordering::Relaxed);
    }
}

/// Durable decision runs on their way to the writer, beside its hand-offs: the journal
/// thread posts a commit's runs the moment it lands, and the writer takes them before each
/// transaction of a round, not only with the hand-off they rode in.
///
/// Why beside: a hand-off goes at most every `store_interval_ms`, and one that arrives
/// while the writer is in a round full of capsules waits for the whole round; after a
/// flood the last decisions were found through the API 150 ms to 1 s after they were
/// durable (the `decisions` row), while the writer inserted the flood's window closes.
///
/// Bounded ([`MAILBOX_RUNS_MAX`]): past it runs ride with the hand-offs as before. The
/// watermarks still travel only in hand-offs, and the writer empties the mailbox into
/// every round's last transaction, so a watermark never passes a run posted before it.
#[derive(Default)]
pub(super) struct Mailbox {
    runs: Mutex<Vec<DecisionRun>>,
    /// The writer is (about to be) blocked waiting for a hand-off.
    waiting: AtomicBool,
}

/// Runs the mailbox holds at most (a few per commit; this is seconds of a stalled writer).
const MAILBOX_RUNS_MAX: usize = 1 << 16;

impl Mailbox {
    /// Moves `runs` into the mailbox unless it is full (then they stay in `runs`).
    pub(super) fn post(&self, runs: &mut Vec<DecisionRun>) {
        if let Ok(mut m) = self.runs.lock() {
            if m.len() + runs.len() <= MAILBOX_RUNS_MAX {
                m.append(runs);
            }
        }
    }

    /// Appends what the mailbox holds to `into`; true when it held anything.
    fn take_into(&self, into: &mut Vec<DecisionRun>) -> bool {
        // Swapped out under the lock and copied after it: the journal thread, which posts
        // under the same lock, never waits on this (low-priority) thread's copy.
        let taken = match self.runs.lock() {
            Ok(mut m) if !m.is_empty() => std::mem::take(&mut *m),
            _ => return false,
        };
        into.extend(taken);
        true
    }

    fn has_runs(&self) -> bool {
        self.runs.lock().is_ok_and(|m| !m.is_empty())
    }

    /// The writer waits for a hand-off while runs wait here: it needs a wake-up.
    pub(super) fn writer_waits_with_runs(&self) -> bool {
        // The writer sets `waiting` before it locks the mailbox to look; the journal thread
        // posts under the lock before it loads `waiting`. The lock orders the two looks:
        // either the writer finds the runs just posted, or this finds it waiting.
        self.waiting.load(Ordering::SeqCst) && self.has_runs()
    }

    fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }
}

/// The hand-offs one round of the writer commits: their capsules queued in order, their
/// runs not yet indexed, and the newest checkpoint and watermarks.
#[derive(Default)]
struct Round {
    capsules: std::collections::VecDeque<rim_capsule::Capsule>,
    /// Runs, checkpoint and watermarks (no capsules).
    rest: Batch,
    handoffs: usize,
    /// Pieces committed so far.
    pieces: usize,
}

impl Round {
    /// Makes the hand-offs' capsules and queues everything they carry.
    fn take(&mut self, handoffs: impl Iterator<Item = Handoff>, names: &mut Names, now_ms: i64) {
        for h in handoffs {
            let mut b = h.into_batch(names, now_ms);
            self.capsules.extend(b.capsules.drain(..));
            self.rest.merge(b);
            self.handoffs += 1;
        }
    }

    /// Takes hand-offs that arrived while a piece was committed, one at a time, while the
    /// round may still grow ([`ROUND_JOIN_BELOW`], [`ROUND_PIECES_MAX`]).
    fn join(&mut self, rx: &Receiver<Vec<Handoff>>, names: &mut Names, now_ms: i64) {
        while self.may_join() {
            let Ok(more) = rx.try_recv() else {
                break;
            };
            self.take(more.into_iter(), names, now_ms);
        }
    }

    /// Takes the runs posted to the mailbox; true when there were any.
    fn take_posted(&mut self, mailbox: &Mailbox) -> bool {
        mailbox.take_into(&mut self.rest.decision_runs)
    }

    fn may_join(&self) -> bool {
        self.capsules.len() < ROUND_JOIN_BELOW && self.pieces < ROUND_PIECES_MAX
    }

    /// Whether runs wait with more than a piece of capsules, or a checkpoint (chunks of
    /// 256 nodes' state, megabytes at a time), behind them: then they are indexed first, in
    /// a transaction of their own; otherwise they go with the last transaction, which is
    /// about as soon, and one commit is saved.
    fn runs_go_first(&self) -> bool {
        !self.rest.decision_runs.is_empty() && (self.capsules.len() > PIECE_CAPSULES || self.rest.checkpoint.is_some())
    }

    /// Indexes the runs waiting, in a transaction of their own.
    fn index_runs(&mut self, store: &Store, stats: &PersistStats, indexed: &mut Indexed, breathe: &mut dyn FnMut()) {
        let mut runs = Batch {
            decision_runs: std::mem::take(&mut self.rest.decision_runs),
            ..Batch::default()
        };
        commit_indexed(store, &mut runs, stats, false, indexed, breathe);
    }

    /// The next piece of capsules, while more than a piece's worth waits (the last piece
    /// goes with the checkpoint and watermarks).
    fn next_piece(&mut self) -> Option<Batch> {
        if self.capsules.len() <= PIECE_CAPSULES {
            return None;
        }
        Some(Batch {
            capsules: self.capsules.drain(..PIECE_CAPSULES).collect(),
            ..Batch::default()
        })
    }

    /// What is left: the last capsules, any runs, the checkpoint and the watermarks.
    fn finish(&mut self) -> Batch {
        let mut last = std::mem::take(&mut self.rest);
        last.capsules = self.capsules.drain(..).collect();
        last
    }
}

/// How long the store writer works before it gives the cold core away ([`Breather`]), and
/// for how long.
const WORK: Duration = Duration::from_micros(500);
const REST: Duration = Duration::from_micros(100);

/// Gives the cold core away for [`REST`] after each [`WORK`] of the writer's transaction,
/// between pieces of its inserts ([`Store::write_paced`]), where it holds none of redb's
/// locks (not in its commit's writes, under which redb holds a lock its readers take).
///
/// Why: the writer's `SCHED_IDLE` is only a small weight to the kernel's EEVDF scheduler,
/// not a strict priority. The journal's syncs each need the block layer's kworker on this
/// core (a cache flush goes through it), and while the writer was busy that kworker, though
/// nice -20, was kept waiting 5-7 ms at every wake-up (`perf sched timehist`), for the
/// ~130 ms of each second that the writer committed the second's capsules: the journal's
/// durable lag was ~10 ms for all of them. Asleep, the writer leaves the kworker the core.
struct Breather {
    since: Instant,
}

impl Breather {
    /// The writer starts a piece of work (a transaction): its time counts from now.
    fn start() -> Self {
        Self { since: Instant::now() }
    }

    /// Sleeps for [`REST`] if the writer has worked [`WORK`] since it last did.
    fn breathe(&mut self) {
        if self.since.elapsed() >= WORK {
            std::thread::sleep(REST);
            self.since = Instant::now();
        }
    }
}

/// What the store writer runs with besides the store and its input.
pub(super) struct WriterEnv {
    pub stats: Arc<PersistStats>,
    /// Transactions are synced at most this often.
    pub durable_every: Duration,
    pub priority: Arc<super::thread::WriterPriority>,
    pub clock: Clock,
    /// Its agent figures: a turn per round, a wait per blocking receive.
    pub figures: Arc<AgentFigures>,
    /// Decision runs posted beside the hand-offs.
    pub mailbox: Arc<Mailbox>,
}

/// The next hand-off; a receive that has to block counts as the agent's wait.
fn recv_counted<T>(
    rx: &Receiver<T>,
    figures: &AgentFigures,
    wait: Option<Duration>,
) -> Result<Option<T>, std::sync::mpsc::RecvError> {
    use std::sync::mpsc::{RecvError, RecvTimeoutError, TryRecvError};
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {
            figures.waited();
            match wait {
                None => rx.recv().map(Some),
                Some(d) => match rx.recv_timeout(d) {
                    Ok(got) => Ok(Some(got)),
                    Err(RecvTimeoutError::Timeout) => Ok(None),
                    Err(RecvTimeoutError::Disconnected) => Err(RecvError),
                },
            }
        }
        got => got.map(Some).map_err(|_| RecvError),
    }
}

/// Writes one batch durably (retrying), counts the outcome and clears it.
pub(super) fn commit(store: &Store, batch: &mut Batch, stats: &PersistStats) {
    commit_with(store, batch, stats, true, &mut || {});
}

/// Writes one batch (retrying; synced if `durable`), counts the outcome and clears it.
/// `breathe` is called between pieces of the transaction ([`Store::write_paced`]).
pub(super) fn commit_with(
    store: &Store,
    batch: &mut Batch,
    stats: &PersistStats,
    durable: bool,
    breathe: &mut dyn FnMut(),
) {
    let capsules = batch.capsules.len() as u64;
    let started = std::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match store.write_paced(batch, durable, breathe) {
            Ok(out) => {
                stats.store_commits.fetch_add(1, Ordering::Relaxed);
                if !batch.capsules.is_empty() || batch.checkpoint.is_some() {
                    // What the API's slices read changed (runs alone do not count).
                    stats.store_data_version.fetch_add(1, Ordering::Release);
                }
                stats
                    .capsules_inserted
                    .fetch_add(out.inserted as u64, Ordering::Relaxed);
                stats
                    .capsules_existing
                    .fetch_add(out.existing as u64, Ordering::Relaxed);
                stats
                    .capsules_kept
                    .fetch_add(out.conflicts.len() as u64, Ordering::Relaxed);
                stats
                    .decision_runs
                    .fetch_add(batch.decision_runs.len() as u64, Ordering::Relaxed);
                if !out.conflicts.is_empty() {
                    warn!(
                        conflicts = out.conflicts.len(),
                        first = %out.conflicts[0],
                        "capsules already committed with other content were kept"
                    );
                }
                break;
            }
            Err(e) => {
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, attempt, "store write failed; retrying");
                if started.elapsed() >= RETRY_FOR {
                    super::thread::fatal("the store refuses writes", &e);
                }
                std::thread::sleep(Duration::from_millis((50u64 << attempt.min(4)).min(1_000)));
            }
        }
    }
    // An update, not a load and a store: the journal thread adds to it meanwhile.
    let _ = stats
        .store_pending
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
            Some(p.saturating_sub(capsules))
        });
    batch.clear();
}

/// Deletes what retention no longer keeps as of `now` (epoch ms), in bounded steps.
fn retain(store: &Store, now: i64) {
    for _ in 0..100 {
        match store.retain(now) {
            Ok(r) if r.more => continue,
            Ok(_) => break,
            Err(e) => {
                warn!(error = %e, "store retention failed");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rim_capsule::{Capsule, DecisionRun};

    use super::*;

    fn capsule(ts: i64) -> Capsule {
        crate::test_support::observed("rim:test:n", ts)
    }

    fn run(seq: u64) -> DecisionRun {
        DecisionRun {
            shard: 0,
            first_seq: seq,
            last_seq: seq,
            pos: seq * 100,
            count: 1,
        }
    }

    fn first_ts(b: &Batch) -> i64 {
        b.capsules.first().map_or(-1, |c| c.key.timestamp)
    }

    #[test]
    fn capsules_go_in_pieces_in_order_and_the_last_carries_the_rest() {
        let total = 2 * PIECE_CAPSULES + 904;
        let mut round = Round::default();
        round.capsules.extend((0..total as i64).map(capsule));
        round.rest.decision_runs.push(run(1));
        assert!(
            round.runs_go_first(),
            "runs with pieces of capsules behind them are indexed first"
        );
        let a = round.next_piece().expect("a first piece");
        let b = round.next_piece().expect("a second piece");
        assert!(
            round.next_piece().is_none(),
            "a piece's worth or less is left for the last"
        );
        assert_eq!((a.capsules.len(), first_ts(&a)), (PIECE_CAPSULES, 0));
        assert_eq!(
            (b.capsules.len(), first_ts(&b)),
            (PIECE_CAPSULES, PIECE_CAPSULES as i64)
        );
        assert!(a.decision_runs.is_empty() && a.checkpoint.is_none() && a.watermarks.is_empty());
        let last = round.finish();
        assert_eq!((last.capsules.len(), first_ts(&last)), (904, 2 * PIECE_CAPSULES as i64));
        assert_eq!(
            last.decision_runs,
            vec![run(1)],
            "runs not indexed on their own go with the last"
        );
        assert!(round.capsules.is_empty() && round.rest.is_empty());
    }

    #[test]
    fn a_round_stops_taking_hand_offs_when_full_or_long() {
        let mut round = Round::default();
        assert!(round.may_join());
        round.capsules.extend((0..ROUND_JOIN_BELOW as i64).map(capsule));
        assert!(!round.may_join(), "a full round refuses hand-offs");
        round.capsules.clear();
        round.pieces = ROUND_PIECES_MAX;
        assert!(!round.may_join(), "a round that ran its pieces ends");
    }

    #[test]
    fn runs_posted_during_a_round_are_indexed_before_its_next_piece() {
        let mailbox = Mailbox::default();
        let mut round = Round::default();
        round.capsules.extend((0..3 * PIECE_CAPSULES as i64).map(capsule));
        assert!(!round.take_posted(&mailbox), "an empty mailbox adds nothing");
        assert!(!round.runs_go_first());
        let mut posted = vec![run(3), run(4)];
        mailbox.post(&mut posted);
        assert!(posted.is_empty(), "posted runs leave the caller's batch");
        assert!(round.take_posted(&mailbox));
        assert!(
            round.runs_go_first(),
            "runs posted while pieces of capsules wait go ahead of them"
        );
        assert_eq!(round.rest.decision_runs, vec![run(3), run(4)]);
        assert!(!mailbox.has_runs(), "taken runs leave the mailbox");
    }

    #[test]
    fn a_full_mailbox_leaves_runs_with_their_hand_off() {
        let mailbox = Mailbox::default();
        let mut many: Vec<DecisionRun> = (0..MAILBOX_RUNS_MAX as u64).map(run).collect();
        mailbox.post(&mut many);
        assert!(many.is_empty());
        let mut one_more = vec![run(MAILBOX_RUNS_MAX as u64 + 1)];
        mailbox.post(&mut one_more);
        assert_eq!(
            one_more,
            vec![run(MAILBOX_RUNS_MAX as u64 + 1)],
            "refused runs stay where they were"
        );
        let mut taken = Vec::new();
        assert!(mailbox.take_into(&mut taken));
        assert_eq!(taken.len(), MAILBOX_RUNS_MAX);
    }

    #[test]
    fn a_waiting_writer_is_woken_only_for_runs() {
        let mailbox = Mailbox::default();
        mailbox.set_waiting(true);
        assert!(!mailbox.writer_waits_with_runs(), "nothing posted: no wake-up");
        mailbox.post(&mut vec![run(1)]);
        assert!(mailbox.writer_waits_with_runs());
        mailbox.set_waiting(false);
        assert!(!mailbox.writer_waits_with_runs(), "a busy writer takes them itself");
    }

    #[test]
    fn a_waiting_writer_with_runs_posted_does_not_block() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Handoff>>(1);
        let mailbox = Mailbox::default();
        let figures = AgentFigures::default();
        mailbox.post(&mut vec![run(1)]);
        // A wait that would block (a broken look at the mailbox) times out instead of
        // hanging the test.
        let wait = Some(Duration::from_secs(5));
        let got = next_handoff(&rx, &mailbox, &figures, wait).expect("connected");
        assert!(got.is_some_and(|h| h.is_empty()), "an empty hand-off at once");
        drop(tx);
        assert!(
            next_handoff(&rx, &mailbox, &figures, wait).is_err(),
            "a hung-up journal thread ends the writer even with runs posted"
        );
    }

    /// The writer itself over a store file: runs posted while it waits are indexed (woken
    /// by an empty hand-off), runs posted beside a hand-off with watermarks are in the
    /// store when those are, and runs still posted when the journal thread hangs up are
    /// indexed by the writer's last commit.
    #[test]
    fn the_writer_indexes_posted_runs_before_watermarks_and_at_exit() {
        use rim_capsule::{StoreConfig, Watermark};
        let dir = std::env::temp_dir().join(format!("rimd-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Arc::new(Store::open(&dir.join("capsules.redb"), StoreConfig::default()).expect("store"));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Handoff>>(1);
        let env = WriterEnv {
            stats: Arc::new(PersistStats::default()),
            durable_every: Duration::from_secs(3600),
            priority: Arc::new(super::super::thread::WriterPriority::default()),
            clock: Clock::system(),
            figures: Arc::new(AgentFigures::default()),
            mailbox: Arc::new(Mailbox::default()),
        };
        let (mailbox, stats) = (env.mailbox.clone(), env.stats.clone());
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || super::run(&store, rx, Names::default(), &env))
        };
        let indexed = |seq: u64| {
            store
                .decision_runs(0, seq, 1)
                .expect("read")
                .first()
                .map(|r| r.last_seq)
        };
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };

        // Posted while the writer waits, then the wake-up.
        wait_for("the writer to wait", &|| mailbox.waiting.load(Ordering::SeqCst));
        mailbox.post(&mut vec![run(1)]);
        assert!(mailbox.writer_waits_with_runs());
        tx.send(Vec::new()).expect("wake");
        wait_for("run 1 indexed", &|| indexed(1) == Some(1));

        // Posted, then a hand-off whose watermarks cover it: both in the store.
        mailbox.post(&mut vec![run(2)]);
        let mark = Watermark {
            stream: 0,
            replay_from: 7,
            committed_to: 7,
        };
        let mut h = Handoff::default();
        h.batch.watermarks.push(mark);
        tx.send(vec![h]).expect("hand-off");
        wait_for("the watermark", &|| !store.watermarks().expect("read").is_empty());
        assert_eq!(
            indexed(2),
            Some(2),
            "a run posted before a watermark is indexed with it"
        );

        // Posted, then the journal thread hangs up.
        mailbox.post(&mut vec![run(3)]);
        drop(tx);
        writer.join().expect("writer");
        assert_eq!(indexed(3), Some(3), "runs still posted at exit are indexed");
        assert_eq!(stats.decisions_indexed.load(Ordering::Relaxed), 3);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn runs_with_little_behind_them_are_not_split_from_the_last_transaction() {
        let mut round = Round::default();
        round.rest.decision_runs.push(run(7));
        round.capsules.extend((0..PIECE_CAPSULES as i64).map(capsule));
        assert!(
            !round.runs_go_first(),
            "a piece's worth or less goes in one transaction with the runs"
        );
        assert!(round.next_piece().is_none());
        assert_eq!(round.finish().decision_runs, vec![run(7)]);
        let mut round = Round::default();
        round.capsules.extend((0..3 * PIECE_CAPSULES as i64).map(capsule));
        assert!(!round.runs_go_first(), "no runs: nothing to index first");
    }
}
