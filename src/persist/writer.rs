//! The store writer: one redb transaction per hand-off, on a thread of its own because a
//! commit blocks for milliseconds (FLOORS.md). While it commits, the journal thread keeps
//! the next hand-off and lets it grow, so a slow disk means bigger transactions, not a
//! growing queue (and past a bound, back-pressure on the journal thread).

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rim_capsule::{Batch, Names, Store};
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
/// replica of the roll-up's names, kept up to date by the hand-offs), then one transaction.
/// Transactions are synced at most once per `durable_every` (and at the end): the journal
/// is the source of truth, and after a crash redb comes back as of its last synced commit,
/// whose capsules, decision runs, checkpoint and watermarks agree, and recovery replays
/// the rest from the journal. A sync per hand-off would cost the disk (and the journal's
/// own syncs) tens of milliseconds a second.
pub(super) fn run(store: &Store, rx: Receiver<Vec<Handoff>>, mut names: Names, env: &WriterEnv) {
    let WriterEnv {
        stats,
        durable_every,
        priority,
        clock,
        figures,
    } = env;
    let mut retained_at = Instant::now();
    let mut synced_at = Instant::now();
    let mut unsynced = false;
    let mut indexed: Vec<u64> = Vec::new();
    loop {
        // A commit left unsynced is synced `durable_every` after the last sync even when
        // no hand-off comes by then: until then a crash takes redb back to its last
        // synced commit, and a burst followed by silence left its last checkpoints and
        // watermarks unsynced for as long as the silence lasted (recovery after a crash
        // in it replayed a third of a 10M-event journal the store had long caught up with).
        let wait = unsynced.then(|| durable_every.saturating_sub(synced_at.elapsed()));
        let first = match recv_counted(&rx, figures, wait) {
            Ok(Some(first)) => first,
            Ok(None) => {
                synced_at = Instant::now();
                unsynced = false;
                commit_with(store, &mut Batch::default(), stats, true, &mut || {});
                continue;
            }
            Err(_) => break,
        };
        let started = Instant::now();
        // The capsules' `created_ms`: one reading per transaction.
        let now_ms = clock.now_ms();
        let mut handoffs = 0;
        let mut batch = Batch::default();
        // Anything else queued goes into the same transaction, in order.
        for h in first.into_iter().chain(rx.try_iter().flatten()) {
            batch.merge(h.into_batch(&mut names, now_ms));
            handoffs += 1;
        }
        for r in &batch.decision_runs {
            let k = usize::from(r.shard);
            if indexed.len() <= k {
                indexed.resize(k + 1, 0);
            }
            indexed[k] = indexed[k].max(r.last_seq);
        }
        let durable = synced_at.elapsed() >= *durable_every;
        if durable {
            synced_at = Instant::now();
        }
        unsynced = !durable;
        let mut breather = Breather::start();
        commit_with(store, &mut batch, stats, durable, &mut || breather.breathe());
        priority.commit_done();
        stats.decisions_indexed.store(indexed.iter().sum(), Ordering::Relaxed);
        if retained_at.elapsed() >= RETAIN_EVERY {
            retained_at = Instant::now();
            retain(store, now_ms);
        }
        figures.turn(started.elapsed().as_nanos() as u64, handoffs);
    }
    // Whatever was committed without a sync reaches the disk now.
    commit_with(store, &mut Batch::default(), stats, true, &mut || {});
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
    /// Its agent figures: a turn per transaction, a wait per blocking receive.
    pub figures: Arc<AgentFigures>,
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
    let pending = stats.store_pending.load(Ordering::Relaxed);
    stats
        .store_pending
        .store(pending.saturating_sub(capsules), Ordering::Relaxed);
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
