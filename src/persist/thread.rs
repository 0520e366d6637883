//! The journal thread: drains ingest's and the reflex shards' rings into the journal's
//! buffers, group-commits them (pipelined: it appends the next batch while the previous
//! one is written and synced), acknowledges, rolls up, and hands what is durable to the
//! store writer.
//!
//! Per event it does a copy and a CRC (the append) and the roll-up by node index and key
//! (no decoding, no hashing, no string compare); everything else happens per commit, per
//! window or per checkpoint.
//!
//! ```text
//!  rings ─► append (buffer) ─► staged ──commit starts──► flying ──commit completes──► ready ─► store writer
//!           roll-up ─► closed capsules, checkpoints, decision runs ride along the same way
//! ```
//! Anything handed to the store is durable first: what the roll-up made from records
//! appended since the last commit started is *staged*; when a commit starts, the staged
//! work belongs to it (*flying*); when it completes, the work is *ready*, and is handed to
//! the writer at most every `store_interval_ms`. A checkpoint taken now is complete to the
//! journal's end now, which the next commit makes durable, so it travels the same way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rim_capsule::{
    Batch, Capsule, CapsuleBody, CapsuleKey, Closed, Names, NamesDelta, PredictedSeries, Prediction, Rollup, Texts,
    Vantage,
};
use rim_journal::event::Scan;
use rim_journal::{frame, Fs, Journal};
use tracing::{error, info, warn};

use super::audit::{RunBuilder, LOG_DECISION, LOG_PREDICTION, LOG_SHUTDOWN, STREAM_DECISIONS, STREAM_EVENTS};
use super::{writer, Opened, PersistError, PersistStats};
use crate::agent::{AgentFigures, ColdAgents};
use crate::clock::Clock;
use crate::entry::{self, Head, KIND_DECISION, KIND_EVENT, KIND_MARKER, KIND_PREDICTION};
use crate::reflex::predict;
use crate::wake::Wake;

/// Entries taken per ring per loop turn, so one busy ring cannot starve a commit.
const TURN_ENTRIES: usize = 8192;
/// ... and time spent taking them: after a stall the ring holds a backlog, and draining
/// all of it before the next commit starts made every entry of it wait for the whole
/// drain (turns of 12–15 ms at 100k events/s before this bound).
const TURN_BUDGET: Duration = Duration::from_micros(200);
/// Entries between two looks at the clock in a turn.
const TURN_CLOCK_EVERY: usize = 64;
/// Journal retention runs this often.
const RETAIN_EVERY: Duration = Duration::from_secs(60);
/// How often open windows of quiet nodes are looked for.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Longest wait for the commit in flight before other duties are looked at.
const COMMIT_WAIT: Duration = Duration::from_millis(1);
/// While commits are in flight, the next starts once the newest has run this long.
const COMMIT_AGAIN_AFTER: Duration = Duration::from_micros(250);
/// Timers and counters are looked at this often.
const UPKEEP_EVERY: Duration = Duration::from_micros(250);
/// A turn that took fewer entries than this while a commit runs waits for the commit (at
/// most `TRICKLE_WAIT`) before the next.
const TURN_SMALL: usize = 64;
const TRICKLE_WAIT: Duration = Duration::from_micros(100);
/// Longest single sleep while a commit is held (`persist.commit_interval_us` may be up to
/// 10 ms): nothing is drained meanwhile, and a burst that starts during the sleep is
/// looked at, and committed at once when it fills half the buffer, within this.
const HOLD_NAP_MAX: Duration = Duration::from_millis(1);
/// Window closes and prediction filings the roll-up settles per turn ([`Rollup::settle`]):
/// a few µs each, so a turn spends at most a couple of hundred µs on them, and the burst
/// of every node's window closing at once (each second) is spread over the turns after
/// it instead of holding the entries behind it (durable-lag p99 of the `journal` row
/// 10–26 ms with them settled at once).
const SETTLE_PER_TURN: usize = 64;
/// Idle turns spent yielding before napping.
const IDLE_YIELDS: u32 = 16;
/// Nap while idle, before parking.
const IDLE_NAP: Duration = Duration::from_micros(50);
/// Idle this long and the thread parks (woken by ingest, or by the timeout for its timers).
const PARK_AFTER: Duration = Duration::from_millis(5);
/// Longest park.
const PARK_FOR: Duration = Duration::from_millis(100);
/// The store writer is woken for posted decision runs at most this often (each wake-up is
/// a small transaction of its own); runs posted meanwhile wait at most this long.
const RUNS_WAKE_EVERY: Duration = Duration::from_millis(5);
/// Capsules waiting for the store past which the journal stops taking entries: the store
/// is behind, and producers should see `Full` rather than the daemon's heap growing.
const READY_CAPSULES_MAX: usize = 400_000;
/// How much longer `pending` bytes (of all streams together) are held before the next
/// commit starts: the rest of `interval` since the last commit started (`since_commit`
/// ago), while
/// - they fill less than `full` (half of one stream's buffer),
/// - the last two commits started less than 1.5 intervals apart (`gap`: a steady stream),
/// - and the last commit to complete, and any still in flight, took less than the interval
///   (`flight`: a fast sync);
///
/// None when they are to be committed now, or when nothing is pending. So a steady stream
/// over a fast disk is committed at most once per `interval`. Arrivals in bursts further
/// apart than that (a producer's batches every millisecond, a lone event after a quiet
/// spell) are committed as before, the burst's first records and the rest of it each as
/// soon as they can be: holding the rest of a burst behind its first commit delayed most
/// of it by a whole interval (`journal-100k` durable-lag p99 1.1-1.3 ms to 1.3-7.6 ms).
/// And a slow sync spaces commits out by itself: holding the backlog behind it only added
/// to the lag (p99 up to 9.6 ms in a minute when this VM's syncs took milliseconds).
fn hold_for(
    pending: usize,
    full: usize,
    since_commit: Option<Duration>,
    (gap, flight): (Option<Duration>, Option<Duration>),
    interval: Duration,
) -> Option<Duration> {
    if pending == 0 || pending >= full || gap? >= interval * 3 / 2 || flight? >= interval {
        return None;
    }
    interval.checked_sub(since_commit?).filter(|left| !left.is_zero())
}

/// Exit code when the persist path cannot go on (as `EX_IOERR`).
pub(super) const EXIT_PERSIST: i32 = 74;

/// Ends the process: after a failed sync the kernel may have dropped the dirty pages
/// (the journal refuses all further writes), and the roll-up holds events that are not
/// synced, so going on in this process is not safe. What was acknowledged is on disk; a
/// restart recovers from it, exactly as after a crash.
pub(super) fn fatal(what: &str, e: &dyn std::fmt::Display) -> ! {
    error!(error = %e, "{what}; rimd exits so that a restart recovers from the journal");
    eprintln!("rimd: {what}: {e}; exiting (code {EXIT_PERSIST}) so that a restart recovers from the journal");
    std::process::exit(EXIT_PERSIST);
}

/// The store writer's niceness where `SCHED_IDLE` is refused.
const WRITER_NICE: i32 = 19;
/// Hand-offs refused this long mean the writer is starved, not busy: raise it. A busy
/// writer takes a hand-off with every commit (well under a second even far behind);
/// raising it at 250 ms put it beside the journal thread under load and the `journal`
/// row's durable-lag p99 went from 22-27 ms to 243-297 ms.
const WRITER_STARVED_AFTER: Duration = Duration::from_secs(2);

/// The store writer's scheduling class, shared by the writer and the journal thread.
/// `SCHED_IDLE` runs only when nothing else on the core can: when other threads saturate
/// the cold core (an HTTP flood, a busy neighbour) the writer would get nothing, its
/// hand-offs would be refused for as long, and the journal would stop taking entries. So
/// when hand-offs have been refused for [`WRITER_STARVED_AFTER`], the journal thread
/// raises the writer to a normal thread; the writer lowers itself again after a commit.
#[derive(Debug, Default)]
pub(super) struct WriterPriority {
    /// The writer's thread id (0 until it starts).
    tid: std::sync::atomic::AtomicI32,
    raised: AtomicBool,
    /// The kernel refused to raise it once: not asked again.
    denied: AtomicBool,
}

impl WriterPriority {
    /// The writer, on itself: notes its id and goes below the journal thread.
    fn start_low(&self) {
        let tid = crate::sys::gettid();
        self.tid.store(tid, Ordering::Relaxed);
        lower_priority();
    }

    /// The writer, after a commit: back below the journal thread if it was raised.
    pub(super) fn commit_done(&self) {
        if self.raised.swap(false, Ordering::Relaxed) {
            lower_priority();
        }
    }

    /// The journal thread: raises a starved writer to a normal thread (once until it
    /// lowers itself). True when it did.
    fn raise(&self) -> bool {
        let tid = self.tid.load(Ordering::Relaxed);
        if tid == 0 || self.denied.load(Ordering::Relaxed) || self.raised.swap(true, Ordering::Relaxed) {
            return false;
        }
        // `tid` is the writer's, which runs as long as the journal thread holds its channel.
        let Err(e) = crate::sys::set_policy(tid, crate::sys::Policy::Normal) else {
            return true;
        };
        // Leaving SCHED_IDLE needs RLIMIT_NICE ≥ 20 or CAP_SYS_NICE (the systemd unit sets
        // LimitNICE): said once; the writer stays low and is not asked again.
        self.denied.store(true, Ordering::Relaxed);
        warn!(
            error = %e,
            "the store writer is starved on the cold core and cannot be raised (needs RLIMIT_NICE of 20, \
             LimitNICE=20 under systemd, or CAP_SYS_NICE)"
        );
        false
    }
}

/// Puts the calling thread (the store writer) below the journal thread on their shared
/// core: `SCHED_IDLE`, which a waking normal thread preempts at once, so the journal never
/// waits out a slice of the writer's B-tree work (with nice 10 under EEVDF it waited up to
/// a slice, and turns of 7–15 ms showed in the stall counters), its I/O in the idle class
/// (its redb writes and syncs wait for the journal's at the disk). The writer still gets
/// every cycle the journal leaves, and when it falls behind the bounded ready queue stops
/// the journal taking entries until it catches up. Falls back to nice 19; failure only
/// costs latency and is logged.
fn lower_priority() {
    // Its redb commits' writes and syncs likewise wait for the journal's at the disk.
    rim_journal::storage::set_idle_io_priority();
    if crate::sys::set_policy(0, crate::sys::Policy::Idle).is_ok() {
        return;
    }
    if let Err(e) = crate::sys::set_nice(WRITER_NICE) {
        warn!(error = %e, "cannot lower the store writer's priority");
    }
}

/// The rings the journal thread reads, and what it reports back.
pub struct JournalInputs {
    /// From ingest: events and markers.
    pub ingest: rtrb::Consumer<u8>,
    /// From each reflex shard: decisions and predictions.
    pub reflex: Vec<rtrb::Consumer<u8>>,
    /// Where the last durable marker is published for ingest.
    pub durable_marker: Arc<AtomicU64>,
    /// Per reflex shard, the chain seq of its newest durable decision.
    pub durable_seqs: Vec<Arc<AtomicU64>>,
    /// How ingest wakes this thread when it parks.
    pub wake: Arc<Wake>,
}

/// The rings alone (the rest of [`JournalInputs`] lives in the thread's state).
struct Rings {
    ingest: rtrb::Consumer<u8>,
    reflex: Vec<rtrb::Consumer<u8>>,
    wake: Arc<Wake>,
}

/// Work that rides with one commit: what the roll-up and the logs produced from the
/// records the commit writes.
#[derive(Default)]
struct Stage {
    work: Handoff,
    /// Per shard, the newest chain seq among its decisions here (0: none).
    seqs: Vec<u64>,
    /// The last marker read before the commit started.
    marker: Option<u64>,
}

/// What the store writer gets: the batch, and what it makes capsules of (off the journal
/// thread, so a second's worth of windows closing at once does not hold up a commit).
#[derive(Default)]
pub(super) struct Handoff {
    /// Decision runs, checkpoint, watermarks (and capsules, once made).
    pub(super) batch: Batch,
    /// Windows that closed.
    pub(super) closed: Vec<Closed>,
    /// Prediction records, back to back; `prediction_ends[i]` is where record `i` ends.
    pub(super) predictions: Vec<u8>,
    pub(super) prediction_ends: Vec<usize>,
    /// Names the roll-up learned, in order, before the windows above closed.
    pub(super) names: NamesDelta,
}

/// The landed work not yet taken by the writer.
#[derive(Default)]
struct Ready {
    items: Vec<Handoff>,
    /// Capsules to be made of it.
    waiting: usize,
}

impl Ready {
    fn push(&mut self, h: Handoff) {
        if !h.is_empty() {
            self.waiting += h.waiting();
            self.items.push(h);
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn waiting(&self) -> usize {
        self.waiting
    }
}

impl Handoff {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.closed.is_empty() && self.prediction_ends.is_empty() && self.names.is_empty()
    }

    fn waiting(&self) -> usize {
        self.closed.len() + self.prediction_ends.len()
    }

    /// Makes the capsules of the closed windows and predictions, with `names` (a replica of
    /// the roll-up's, brought up to date first), into the batch.
    /// `now_ms` is the capsules' `created_ms`.
    pub(super) fn into_batch(self, names: &mut Names, now_ms: i64) -> Batch {
        names.apply(&self.names);
        let mut batch = self.batch;
        batch
            .capsules
            .extend(self.closed.iter().filter_map(|c| names.capsule(c)));
        let mut start = 0;
        for &end in &self.prediction_ends {
            if let Some(c) = self
                .predictions
                .get(start..end)
                .and_then(|b| predicted_capsule(names, b, now_ms))
            {
                batch.capsules.push(c);
            }
            start = end;
        }
        batch
    }
}

/// Counters kept locally and published once per turn (an atomic add per event would put
/// a locked instruction on the per-event path).
#[derive(Default)]
struct Tally {
    events: u64,
    event_bytes: u64,
    decisions: u64,
    predictions: u64,
}

struct JournalThread {
    /// The data directory's lock: held while the journal is written.
    _lock: std::fs::File,
    journal: Journal<Fs>,
    rollup: Rollup,
    stats: Arc<PersistStats>,
    closed: Vec<Closed>,
    staged: Stage,
    /// One stage per commit in flight, oldest first, with when its commit started.
    flying: std::collections::VecDeque<(Stage, Instant)>,
    /// Durable work waiting for the store writer, one item per landed commit (landing
    /// never copies a growing buffer).
    ready: Ready,
    runs: RunBuilder,
    predicting: bool,
    to_writer: Option<SyncSender<Vec<Handoff>>>,
    /// Where durable decision runs go at once ([`writer::Mailbox`]).
    mailbox: Arc<writer::Mailbox>,
    /// When the writer was last woken for runs.
    woke_writer_at: Instant,
    /// The store writer's scheduling class (raised when it starves).
    writer_priority: Arc<WriterPriority>,
    /// Since when hand-offs have been refused (the writer busy or starved).
    refused_since: Option<Instant>,
    last_marker: Option<u64>,
    store_interval: Duration,
    store_batch_max: usize,
    /// Commits in flight at most (`persist.commit_flights`).
    flights_max: usize,
    /// Least time from one commit's start to the next's (`persist.commit_interval_us`).
    interval: Duration,
    /// Pending bytes that start a commit before `interval` is out: half the buffer.
    interval_bytes: usize,
    /// When the last commit started.
    committed_at: Option<Instant>,
    /// Between the starts of the last two commits.
    commit_gap: Option<Duration>,
    /// How long the last commit to complete took.
    last_flight: Option<Duration>,
    handed_at: Instant,
    flushed_at: Instant,
    checkpoint_every: Duration,
    /// When the last checkpoint chunk was encoded.
    chunk_at: Instant,
    /// The watermarks last staged.
    staged_marks: (u64, u64, u64),
    retained_at: Instant,
    idle_since: Option<Instant>,
    idle_turns: u32,
    tally: Tally,
    shards: usize,
    durable_marker: Arc<AtomicU64>,
    durable_seqs: Vec<Arc<AtomicU64>>,
    /// Where an entry straddling a ring's end is put together.
    scratch: Vec<u8>,
    /// An event's (series key, value) pairs on their way into the roll-up.
    metrics: Box<RollMetrics>,
    turns: TurnStats,
    clock: Clock,
    /// Its agent figures: a turn per loop that did work, a wait per idle one.
    figures: Arc<AgentFigures>,
}

/// Where the journal thread's time goes: the longest turn and phases over a window, slow
/// turns, commit latency. Published into the stats once a window (the agent pattern's
/// stall counters).
struct TurnStats {
    window_started: Instant,
    turn_max: Duration,
    land_max: Duration,
    drain_max: Duration,
    /// Entries taken by the drain that took `drain_max`.
    drain_entries: usize,
    commit_max: Duration,
    upkeep_max: Duration,
    /// None only if the histogram could not be made (the bounds are constants).
    commits: Option<hdrhistogram::Histogram<u64>>,
}

/// How often the turn stats are published (and their maxima reset).
const TURN_WINDOW: Duration = Duration::from_secs(1);

impl TurnStats {
    fn new() -> Self {
        Self {
            window_started: Instant::now(),
            turn_max: Duration::ZERO,
            land_max: Duration::ZERO,
            drain_max: Duration::ZERO,
            drain_entries: 0,
            commit_max: Duration::ZERO,
            upkeep_max: Duration::ZERO,
            // Three significant digits up to a minute: a fixed allocation made once.
            commits: hdrhistogram::Histogram::new_with_bounds(1_000, 60_000_000_000, 3).ok(),
        }
    }

    /// Phases: landing a commit, draining the rings (`entries` taken), starting a commit,
    /// upkeep.
    fn turn(&mut self, phases: [Duration; 4], entries: usize, stats: &PersistStats) {
        let total: Duration = phases.iter().sum();
        if total > Duration::from_millis(1) {
            stats.turns_slow.fetch_add(1, Ordering::Relaxed);
        }
        self.turn_max = self.turn_max.max(total);
        self.land_max = self.land_max.max(phases[0]);
        if phases[1] > self.drain_max {
            self.drain_max = phases[1];
            self.drain_entries = entries;
        }
        self.commit_max = self.commit_max.max(phases[2]);
        self.upkeep_max = self.upkeep_max.max(phases[3]);
        if self.window_started.elapsed() >= TURN_WINDOW {
            self.publish(stats);
        }
    }

    fn publish(&mut self, stats: &PersistStats) {
        let ns = |d: Duration| d.as_nanos() as u64;
        stats.turn_ns_max.store(ns(self.turn_max), Ordering::Relaxed);
        stats.drain_ns_max.store(ns(self.drain_max), Ordering::Relaxed);
        stats.land_ns_max.store(ns(self.land_max), Ordering::Relaxed);
        stats
            .drain_entries_at_max
            .store(self.drain_entries as u64, Ordering::Relaxed);
        stats.commit_start_ns_max.store(ns(self.commit_max), Ordering::Relaxed);
        stats.upkeep_ns_max.store(ns(self.upkeep_max), Ordering::Relaxed);
        // A window without a commit reports none (0), not the last window that had one: a
        // reader of the figures would take an old stall for a new one.
        let (p50, p99, max) = match self.commits.as_mut().filter(|h| !h.is_empty()) {
            Some(h) => {
                let figures = (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max());
                h.reset();
                figures
            }
            None => (0, 0, 0),
        };
        stats.commit_p50_ns.store(p50, Ordering::Relaxed);
        stats.commit_p99_ns.store(p99, Ordering::Relaxed);
        stats.commit_max_ns.store(max, Ordering::Relaxed);
        self.window_started = Instant::now();
        self.turn_max = Duration::ZERO;
        self.land_max = Duration::ZERO;
        self.drain_max = Duration::ZERO;
        self.drain_entries = 0;
        self.commit_max = Duration::ZERO;
        self.upkeep_max = Duration::ZERO;
    }
}

/// Starts the journal thread and the store writer. They run until `stop` is set and
/// every ring is drained, committed and handed to the store.
pub fn spawn(
    o: Opened,
    inputs: JournalInputs,
    stop: Arc<AtomicBool>,
    core: Option<usize>,
    agents: &ColdAgents,
) -> Result<Vec<std::thread::JoinHandle<()>>, PersistError> {
    let p = &o.config.persist;
    o.store_live.store(true, Ordering::Relaxed);
    let (tx, rx) = sync_channel::<Vec<Handoff>>(1);
    let priority = Arc::new(WriterPriority::default());
    let mailbox = Arc::new(writer::Mailbox::default());
    let writer = spawn_writer(
        &o,
        (rx, mailbox.clone()),
        priority.clone(),
        core,
        agents.add("rimd-store", "block"),
    )?;
    let shards = inputs.reflex.len();
    let mut t = JournalThread {
        _lock: o._lock,
        journal: o.journal,
        rollup: o.rollup,
        stats: o.stats,
        closed: Vec::new(),
        staged: Stage::default(),
        flying: std::collections::VecDeque::new(),
        ready: Ready::default(),
        runs: o.runs,
        predicting: p.predict,
        to_writer: Some(tx),
        mailbox,
        woke_writer_at: Instant::now(),
        writer_priority: priority,
        refused_since: None,
        last_marker: None,
        store_interval: Duration::from_millis(p.store_interval_ms),
        store_batch_max: p.store_batch_max,
        flights_max: p.commit_flights,
        interval: Duration::from_micros(p.commit_interval_us),
        interval_bytes: (p.commit_bytes / 2) as usize,
        committed_at: None,
        commit_gap: None,
        last_flight: None,
        handed_at: Instant::now(),
        flushed_at: Instant::now(),
        checkpoint_every: Duration::from_millis(p.checkpoint_ms),
        chunk_at: Instant::now(),
        staged_marks: (o.replay_from, o.committed_to, o.log_from),
        retained_at: Instant::now(),
        idle_since: None,
        idle_turns: 0,
        tally: Tally::default(),
        shards,
        durable_marker: inputs.durable_marker.clone(),
        durable_seqs: inputs.durable_seqs.clone(),
        scratch: Vec::with_capacity(entry::BODY_BYTES_MAX),
        metrics: Box::new([(0, 0.0); entry::KEYS_MAX]),
        turns: TurnStats::new(),
        clock: o.clock,
        figures: agents.add("rimd-journal", "park"),
    };
    t.staged.seqs = vec![0; shards];
    // Live, window closes and filings wait for the turns' settling (recovery, before this,
    // settled each at once).
    t.rollup.set_deferred(true);
    let journal = std::thread::Builder::new()
        .name("rimd-journal".into())
        .spawn(move || {
            if let Some(c) = core {
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: c });
                if let Err(e) = t.journal.confine_io_workers(&[c]) {
                    warn!(error = %e, "cannot confine the journal's commit threads to the cold core");
                }
            }
            let mut rings = Rings {
                ingest: inputs.ingest,
                reflex: inputs.reflex,
                wake: inputs.wake,
            };
            rings.wake.register();
            t.run(&mut rings, &stop);
        })
        .map_err(|e| PersistError::Thread("journal", e))?;
    Ok(vec![journal, writer])
}

/// Starts `rimd-store` on `core`: it takes the journal thread's hand-offs from `rx` and
/// commits them, syncing once per checkpoint interval.
fn spawn_writer(
    o: &Opened,
    (rx, mailbox): (std::sync::mpsc::Receiver<Vec<Handoff>>, Arc<writer::Mailbox>),
    priority: Arc<WriterPriority>,
    core: Option<usize>,
    figures: Arc<AgentFigures>,
) -> Result<std::thread::JoinHandle<()>, PersistError> {
    let store = o.store.clone();
    let stats = o.stats.clone();
    let names = o.rollup.names().clone();
    let durable_every = Duration::from_millis(o.config.persist.checkpoint_ms);
    let clock = o.clock.clone();
    std::thread::Builder::new()
        .name("rimd-store".into())
        .spawn(move || {
            if let Some(c) = core {
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: c });
            }
            // The writer shares the cold core with the journal thread: when both can run,
            // the journal (what producers wait on) goes first.
            priority.start_low();
            let env = writer::WriterEnv {
                stats,
                durable_every,
                priority,
                clock,
                figures,
                mailbox,
            };
            writer::run(&store, rx, names, &env);
        })
        .map_err(|e| PersistError::Thread("store writer", e))
}

/// The texts of a journaled event, read from its record only when the roll-up asks.
struct ScanTexts<'a>(&'a Scan<'a>);

impl Texts for ScanTexts<'_> {
    fn node_id(&self) -> &str {
        std::str::from_utf8(self.0.node_id).unwrap_or("?")
    }

    fn status(&self) -> &str {
        std::str::from_utf8(self.0.status).unwrap_or("?")
    }

    fn metric_name(&self, i: usize) -> &str {
        self.0
            .metrics()
            .nth(i)
            .and_then(|(n, _)| std::str::from_utf8(n).ok())
            .unwrap_or("?")
    }
}

/// An event's (series key, value) pairs on their way into the roll-up: kept by the caller
/// and reused, where a fresh array was a 1 KiB memset per event.
pub(super) type RollMetrics = [(u64, f64); entry::KEYS_MAX];

/// Rolls one journaled event (its journal position and record) up, live and in recovery:
/// `keys` are the metrics' name hashes in the record's order. `metrics` is the caller's
/// scratch; closed windows go to `out`.
pub(super) fn roll(
    rollup: &mut Rollup,
    node: u32,
    status: u64,
    keys: impl Fn(usize) -> Option<u64>,
    (pos, record): (u64, &[u8]),
    metrics: &mut RollMetrics,
    out: &mut Vec<Closed>,
) -> bool {
    // Borrowed where it lies: moved out of the Option, the 136-byte scan was a libc
    // `memcpy` call per event, 5% of this thread at 2.5M events/s.
    let Some(scan) = &rim_journal::event::scan(record) else {
        return false;
    };
    roll_scanned(rollup, node, status, keys, pos, scan, metrics, out);
    true
}

/// [`roll`] of a record already scanned.
#[allow(clippy::too_many_arguments)]
pub(super) fn roll_scanned(
    rollup: &mut Rollup,
    node: u32,
    status: u64,
    keys: impl Fn(usize) -> Option<u64>,
    pos: u64,
    scan: &Scan<'_>,
    metrics: &mut RollMetrics,
    out: &mut Vec<Closed>,
) {
    let mut n = 0;
    for (i, (_, v)) in scan.metrics().enumerate().take(metrics.len()) {
        let Some(h) = keys(i) else { break };
        metrics[i] = (crate::reflex::state::metric_key(h), v);
        n = i + 1;
    }
    let obs = rim_capsule::Observation {
        timestamp: scan.timestamp,
        price: scan.price,
        volume: scan.volume,
        stress: scan.stress,
        status: crate::reflex::state::metric_key(status),
        metrics: &metrics[..n],
    };
    rollup.push(node, pos, scan.received_ms, &obs, &ScanTexts(scan), out);
}

/// Files a prediction record (read from decision-log position `pos`) with the roll-up,
/// for scoring when its window closes; `node` overrides the record's node index (after a
/// restart indices are by name). False when the record does not decode.
pub(super) fn expect(rollup: &mut Rollup, node: Option<u32>, bytes: &[u8], pos: u64) -> bool {
    let guess = match predict::decode(bytes) {
        Ok(g) => g,
        Err(e) => {
            error!(error = %e, "prediction does not decode (a bug)");
            return false;
        }
    };
    let filed: Vec<(u64, f64, f64)> = guess.series.iter().map(|s| (s.key, s.value, s.base)).collect();
    rollup.expect(
        node.unwrap_or(guess.node),
        guess.resolution,
        guess.window_ms,
        filed,
        pos,
    );
    true
}

/// The PREDICTED capsule of a prediction record, its series named with `names`.
pub(super) fn predicted_capsule(names: &Names, bytes: &[u8], now_ms: i64) -> Option<Capsule> {
    let guess = predict::decode(bytes).ok()?;
    let series = guess
        .series
        .iter()
        .map(|s| PredictedSeries {
            name: names.series_name(s.key),
            value: s.value,
            base: s.base,
        })
        .collect();
    let window_end = guess.window_ms.saturating_add(i64::from(guess.resolution) * 1000);
    let prediction = Prediction {
        predictor: predict::PREDICTOR.to_owned(),
        made_at_ms: guess.made_at_ms,
        horizon_ms: window_end.saturating_sub(guess.made_at_ms).max(0) as u64,
        confidence: guess.confidence,
        series,
    };
    Some(Capsule {
        key: CapsuleKey {
            scope_id: guess.node_id.to_owned(),
            timestamp: guess.window_ms,
            resolution: guess.resolution,
            vantage: Vantage::Predicted,
        },
        body: CapsuleBody::Predicted(prediction),
        created_ms: now_ms,
    })
}

/// How deep the journal thread's lookahead is, the front entry included ([`entry::Lookahead`]):
/// an event's roll-up state is prefetched ([`Rollup::touch`]) when it is 15 entries behind
/// the one being rolled up, so the misses of the events ahead overlap each other and the
/// work on the entries before them, instead of adding up. The cursor starts afresh each
/// turn (a burst of up to 16 at a turn's start, most of them lines still in cache).
const TOUCH_AHEAD: usize = 16;

/// Bytes of ingest's ring prefetched past the last entry looked at: a few entries (an
/// event entry is about 250 bytes with four metrics).
const RING_AHEAD_BYTES: usize = 1024;

impl JournalThread {
    fn run(&mut self, inputs: &mut Rings, stop: &AtomicBool) {
        info!(sync = ?self.journal.sync_method(), "journal thread started");
        let mut upkeep_at = Instant::now();
        loop {
            let t0 = Instant::now();
            let mut work = self.complete(None);
            let tl = Instant::now();
            let drained = self.drain(inputs);
            work += drained;
            let t1 = Instant::now();
            work += self.start_commit();
            let t2 = Instant::now();
            work += self.settle();
            let stopping = stop.load(Ordering::Relaxed);
            // Timers and counters at most every UPKEEP_EVERY: a busy turn is a few entries.
            if stopping || t2.duration_since(upkeep_at) >= UPKEEP_EVERY {
                upkeep_at = t2;
                self.publish_tally();
                work += self.upkeep(stopping);
            }
            let t3 = Instant::now();
            self.turns
                .turn([tl - t0, t1 - tl, t2 - t1, t3 - t2], drained, &self.stats);
            if stopping && self.quiescent(inputs) {
                self.finish();
                break;
            }
            if work == 0 {
                self.figures.waited();
                self.idle(inputs);
            } else {
                self.figures.turn((t3 - t0).as_nanos() as u64, work);
                self.idle_since = None;
                self.idle_turns = 0;
                if drained < TURN_SMALL {
                    // A trickle: let it gather, while a commit runs (it goes to the next
                    // commit anyway) or while it is held, rather than spin a turn per entry.
                    if self.journal.in_flight() {
                        self.complete(Some(self.commit_wait().min(TRICKLE_WAIT)));
                    } else if self.rollup.unsettled() == 0 {
                        // Window closes waiting to be settled are settled a share per
                        // turn: those turns do not sleep.
                        self.nap_while_held();
                    }
                }
            }
        }
        info!("journal thread stopped");
    }

    /// Settles waiting window closes and filings: [`SETTLE_PER_TURN`], or a sixteenth of
    /// what waits when more do, so a queue that keeps growing (faster arrivals than a
    /// turn's share) still empties, and checkpoints, which wait for it, still come.
    fn settle(&mut self) -> usize {
        let budget = SETTLE_PER_TURN.max(self.rollup.unsettled() / 16);
        self.rollup.settle(budget, &mut self.staged.work.closed)
    }

    /// Nothing left to take, append, commit or hand over.
    fn quiescent(&self, inputs: &Rings) -> bool {
        inputs.ingest.is_empty() && inputs.reflex.iter().all(|r| r.is_empty()) && !self.journal.is_dirty()
    }

    /// Takes entries while the journal's buffers have room and the store keeps up.
    fn drain(&mut self, inputs: &mut Rings) -> usize {
        if self.ready.waiting() >= READY_CAPSULES_MAX {
            // The store is behind: let the rings fill (producers see Full) rather than
            // the heap. Counted; visible in /metrics.
            self.stats.store_backpressure_turns.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        // How much each reflex ring holds before ingest's ring is drained: a prediction
        // counted here was made after its event's entry was pushed, so the metric names it
        // uses are known once ingest's ring is drained.
        let reflex_ready: Vec<usize> = inputs.reflex.iter().map(|r| r.slots()).collect();
        let (n, ingest_dry) = self.drain_ingest(&mut inputs.ingest);
        let mut m = 0;
        if ingest_dry {
            for (k, ready) in reflex_ready.into_iter().enumerate() {
                m += self.drain_reflex(&mut inputs.reflex[k], ready);
            }
        }
        n + m
    }

    /// Room for one more event entry's frame in the events buffer.
    fn events_room(&self) -> bool {
        self.journal.room(STREAM_EVENTS) >= frame::encoded_len(rim_journal::event::EVENT_BYTES_MAX)
    }

    fn drain_ingest(&mut self, ring: &mut rtrb::Consumer<u8>) -> (usize, bool) {
        let mut n = 0;
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut ahead = entry::Lookahead::new();
        let started = Instant::now();
        while n < TURN_ENTRIES && self.events_room() {
            let rollup = &self.rollup;
            ahead.fill(ring, TOUCH_AHEAD, RING_AHEAD_BYTES, |node, series| {
                rollup.touch(node, series, rim_ring::prefetch_line)
            });
            let taken = entry::take(ring, &mut scratch, |head, body| {
                self.on_ingest(head, body);
                entry::HEAD_BYTES + body.len()
            });
            match taken {
                Ok(Some(bytes)) => {
                    ahead.taken(bytes);
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => fatal("ingest's journal ring is corrupt (a bug)", &e),
            }
            if n % TURN_CLOCK_EVERY == 0 && started.elapsed() >= TURN_BUDGET {
                break;
            }
        }
        self.scratch = scratch;
        (n, ring.is_empty())
    }

    fn on_ingest(&mut self, head: Head, body: &[u8]) {
        match head.kind {
            KIND_EVENT => self.on_event(head, body),
            KIND_MARKER => self.last_marker = Some(head.aux),
            other => warn!(kind = other, "unexpected entry on ingest's journal ring"),
        }
    }

    fn on_event(&mut self, head: Head, body: &[u8]) {
        let Some(ev) = entry::event_body(&head, body) else {
            fatal("an event entry is shorter than its keys (a bug)", &head.len);
        };
        let pos = match self.journal.append(STREAM_EVENTS, ev.record, head.aux) {
            Ok(pos) => pos,
            Err(e) => {
                self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                fatal("journal append failed", &e);
            }
        };
        self.tally.events += 1;
        self.tally.event_bytes += ev.record.len() as u64;
        self.rollup.note_id(ev.node, ev.id_hash);
        if !roll(
            &mut self.rollup,
            ev.node,
            ev.status,
            |i| ev.key(i),
            (pos, ev.record),
            &mut self.metrics,
            &mut self.staged.work.closed,
        ) {
            error!(pos, "journaled event does not scan (a bug)");
        }
    }

    fn drain_reflex(&mut self, ring: &mut rtrb::Consumer<u8>, ready: usize) -> usize {
        let mut n = 0;
        let mut consumed = 0;
        let room = frame::encoded_len(1 + crate::reflex::decision::RECORD_BYTES_MAX.max(predict::RECORD_BYTES_MAX));
        let mut scratch = std::mem::take(&mut self.scratch);
        // The log's record time (what retention goes by) is read once per drain, not per
        // record: a drain is bounded by TURN_ENTRIES, and a clock read per decision was
        // 7% of this thread when every event fires a rule.
        let now_ms = self.clock.unix_ms();
        // Bounded in time like ingest's drain: every node's prediction of its next window
        // comes at once each second, and taking 8,192 of them in one turn (about 1 µs each)
        // held the commit that was due, and every event behind it, for 9 ms.
        let started = Instant::now();
        while consumed < ready && n < TURN_ENTRIES && self.journal.room(STREAM_DECISIONS) >= room {
            match entry::take(ring, &mut scratch, |head, body| self.on_reflex(head, body, now_ms)) {
                Ok(Some(bytes)) => {
                    consumed += bytes;
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => fatal("a reflex ring to the journal is corrupt (a bug)", &e),
            }
            if n % TURN_CLOCK_EVERY == 0 && started.elapsed() >= TURN_BUDGET {
                break;
            }
        }
        self.scratch = scratch;
        n
    }

    /// One decision or prediction into the log; returns the entry's bytes on the ring.
    fn on_reflex(&mut self, head: Head, body: &[u8], now_ms: u64) -> usize {
        let kind = match head.kind {
            KIND_DECISION => LOG_DECISION,
            KIND_PREDICTION => LOG_PREDICTION,
            other => {
                warn!(kind = other, "unexpected entry on a reflex ring");
                return entry::HEAD_BYTES + body.len();
            }
        };
        let pos = match self.journal.append_parts(STREAM_DECISIONS, &[&[kind], body], now_ms) {
            Ok(pos) => pos,
            Err(e) => {
                self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                fatal("decision log append failed", &e);
            }
        };
        if kind == LOG_DECISION {
            self.tally.decisions += 1;
            if let Some((shard, seq)) = super::audit::shard_and_seq(body) {
                self.runs.add(shard, seq, pos);
                if let Some(s) = self.staged.seqs.get_mut(usize::from(shard)) {
                    *s = (*s).max(seq);
                }
            }
        } else if self.predicting {
            self.tally.predictions += 1;
            if expect(&mut self.rollup, None, body, pos) {
                let w = &mut self.staged.work;
                w.predictions.extend_from_slice(body);
                w.prediction_ends.push(w.predictions.len());
            }
        }
        entry::HEAD_BYTES + body.len()
    }

    /// Starts a commit of everything appended when none is in flight. The staged work
    /// goes with it.
    fn start_commit(&mut self) -> usize {
        // Beside commits in flight, another starts once the newest has run for a while:
        // what arrives meanwhile need not wait for the slowest sync ahead of it, and the
        // syncs per second stay bounded.
        let newest = self.flying.back().map(|(_, at)| *at);
        if !self.journal.can_commit()
            || self.flying.len() >= self.flights_max
            || newest.is_some_and(|at| at.elapsed() < COMMIT_AGAIN_AFTER)
            || self.hold_left().is_some()
        {
            return 0;
        }
        self.staged.work.batch.decision_runs.extend(self.runs.take_changed());
        // Names learned so far travel with the windows that closed after they were learned.
        self.staged.work.names.append(self.rollup.take_names());
        self.staged.marker = self.last_marker;
        match self.journal.commit() {
            Ok(true) => {
                let now = Instant::now();
                self.commit_gap = self.committed_at.map(|at| now.duration_since(at));
                self.committed_at = Some(now);
                let fresh = self.fresh_stage();
                let stage = std::mem::replace(&mut self.staged, fresh);
                self.flying.push_back((stage, now));
                1
            }
            // Nothing to write, commits in flight: what is staged may depend on records
            // they carry, so it waits for the next commit (which lands after them).
            Ok(false) if self.journal.in_flight() => 0,
            // Nothing to write, nothing in flight: what is staged depends on nothing that
            // is not durable.
            Ok(false) => {
                let fresh = self.fresh_stage();
                let stage = std::mem::replace(&mut self.staged, fresh);
                self.land(stage);
                0
            }
            Err(e) => {
                self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                fatal("journal commit failed", &e);
            }
        }
    }

    /// How much longer pending records are held before the next commit starts
    /// ([`hold_for`]).
    fn hold_left(&self) -> Option<Duration> {
        hold_for(
            self.journal.pending_bytes(),
            self.interval_bytes,
            self.committed_at.map(|at| at.elapsed()),
            (self.commit_gap, self.slowest_flight()),
            self.interval,
        )
    }

    /// The last completed commit's time, or longer when the oldest still in flight (with
    /// `commit_flights` > 1) has already run longer: a slow sync is seen while it runs.
    fn slowest_flight(&self) -> Option<Duration> {
        let running = self.flying.front().map(|(_, at)| at.elapsed());
        match (self.last_flight, running) {
            (Some(done), Some(now)) => Some(done.max(now)),
            (done, now) => done.or(now),
        }
    }

    /// Sleeps while the next commit is held (at most [`HOLD_NAP_MAX`]); false when it is
    /// not held.
    fn nap_while_held(&self) -> bool {
        let Some(left) = self.hold_left() else {
            return false;
        };
        std::thread::sleep(left.min(HOLD_NAP_MAX));
        true
    }

    /// How long to wait for a commit in flight: until the next may start if records are
    /// waiting for one (beside those in flight, and not held), else [`COMMIT_WAIT`].
    fn commit_wait(&self) -> Duration {
        match self.flying.back() {
            Some((_, at)) if self.journal.pending_bytes() > 0 && self.flying.len() < self.flights_max => {
                COMMIT_AGAIN_AFTER
                    .saturating_sub(at.elapsed())
                    .max(self.hold_left().unwrap_or_default().min(HOLD_NAP_MAX))
                    .max(Duration::from_micros(10))
            }
            _ => COMMIT_WAIT,
        }
    }

    fn fresh_stage(&self) -> Stage {
        Stage {
            seqs: vec![0; self.shards],
            ..Stage::default()
        }
    }

    /// Collects the oldest commit in flight if it is done (waiting at most `wait`); its
    /// work lands. Returns 1 when one completed.
    fn complete(&mut self, wait: Option<Duration>) -> usize {
        match self.journal.complete(wait) {
            Ok(Some(report)) => {
                let Some((stage, started)) = self.flying.pop_front() else {
                    fatal("a commit landed that the journal thread did not start (a bug)", &"");
                };
                let flight = started.elapsed();
                self.last_flight = Some(flight);
                let ns = flight.as_nanos() as u64;
                if let Some(h) = self.turns.commits.as_mut() {
                    let _ = h.record(ns.clamp(1_000, 60_000_000_000));
                }
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                self.stats.sync_ns.fetch_add(ns, Ordering::Relaxed);
                self.stats.sync_ns_max.fetch_max(ns, Ordering::Relaxed);
                self.stats.commit_bytes.fetch_add(report.bytes, Ordering::Relaxed);
                self.land(stage);
                1
            }
            Ok(None) => 0,
            Err(e) => {
                self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                fatal("journal sync failed", &e);
            }
        }
    }

    /// A stage whose records are durable: producers and reflex shards hear it, and its
    /// work waits for the store writer.
    fn land(&mut self, mut stage: Stage) {
        if let Some(marker) = stage.marker {
            self.publish_marker(marker);
        }
        for (k, &seq) in stage.seqs.iter().enumerate() {
            if seq > 0 {
                if let Some(d) = self.durable_seqs.get(k) {
                    d.fetch_max(seq, Ordering::Release);
                }
            }
        }
        if self.to_writer.is_some() {
            self.mailbox.post(&mut stage.work.batch.decision_runs);
            self.wake_writer_for_runs();
        }
        self.ready.push(stage.work);
    }

    /// Wakes a waiting store writer for runs in its mailbox, at most every
    /// [`RUNS_WAKE_EVERY`], with an empty hand-off (the channel is empty while the writer
    /// waits). Not with the ready capsules: handed off every 5 ms instead of every
    /// `store_interval_ms`, they would make the writer's commits (and their writes, which
    /// the journal's syncs queue behind) up to twenty times as frequent.
    fn wake_writer_for_runs(&mut self) {
        // The writer's flag first: while it works, one load and no clock read.
        if !self.mailbox.writer_waits_with_runs() || self.woke_writer_at.elapsed() < RUNS_WAKE_EVERY {
            return;
        }
        if let Some(tx) = self.to_writer.as_ref() {
            if tx.try_send(Vec::new()).is_ok() {
                self.woke_writer_at = Instant::now();
            }
        }
    }

    /// An empty wake-up may hold the channel's one slot until the writer takes it: a
    /// hand-off refused meanwhile is not the writer starving.
    fn wake_may_hold_the_slot(&self) -> bool {
        self.woke_writer_at.elapsed() < 2 * RUNS_WAKE_EVERY
    }

    fn publish_tally(&mut self) {
        let t = std::mem::take(&mut self.tally);
        if t.events > 0 {
            self.stats.journal_events.fetch_add(t.events, Ordering::Relaxed);
            self.stats.journal_bytes.fetch_add(t.event_bytes, Ordering::Relaxed);
        }
        if t.decisions > 0 {
            self.stats.decisions_logged.fetch_add(t.decisions, Ordering::Relaxed);
        }
        if t.predictions > 0 {
            self.stats.predictions.fetch_add(t.predictions, Ordering::Relaxed);
        }
    }

    /// Timers: idle windows, checkpoints, hand-off to the store, retention. Returns work.
    fn upkeep(&mut self, stopping: bool) -> usize {
        let mut work = 0;
        if self.flushed_at.elapsed() >= FLUSH_EVERY {
            self.flushed_at = Instant::now();
            self.rollup.flush_idle(self.clock.unix_ms(), &mut self.closed);
            self.staged.work.closed.append(&mut self.closed);
        }
        if !stopping {
            self.checkpoint_step();
        }
        if !stopping && self.handoff_due() {
            work += self.hand_off(false);
        }
        self.wake_writer_for_runs();
        if self.retained_at.elapsed() >= RETAIN_EVERY {
            self.retained_at = Instant::now();
            if let Err(e) = self.journal.retain(self.clock.unix_ms()) {
                warn!(error = %e, "journal retention failed");
            }
        }
        self.publish_levels();
        work
    }

    fn publish_levels(&self) {
        let lag = self.journal.end(STREAM_EVENTS) - self.journal.durable(STREAM_EVENTS);
        self.stats.journal_lag_bytes.store(lag, Ordering::Relaxed);
        let (used, missed) = self.journal.spares();
        self.stats.spares_used.store(used, Ordering::Relaxed);
        self.stats.spares_missed.store(missed, Ordering::Relaxed);
        self.stats.late_events.store(self.rollup.late(), Ordering::Relaxed);
        self.stats.scored.store(self.rollup.scored(), Ordering::Relaxed);
        self.stats.unscored.store(self.rollup.unscored(), Ordering::Relaxed);
        let flying: usize = self.flying.iter().map(|(s, _)| s.work.waiting()).sum();
        let waiting = self.ready.waiting() + flying + self.staged.work.waiting();
        self.stats.store_waiting.store(waiting as u64, Ordering::Relaxed);
    }

    /// One step of the rolling checkpoint: the next chunk of the roll-up that changed and
    /// was not encoded for `checkpoint_ms`, as complete to the journal's ends now, staged
    /// with the watermarks it allows (only what no stored chunk holds is replayed).
    /// Steps are paced, at most one per `checkpoint_ms / (2 × chunks)`: every node changes
    /// within an interval under load, so unpaced, all chunks fell due together and were
    /// encoded back to back (bursts of ~25 ms at 10k nodes) while entries waited; paced,
    /// a round still ends within half an interval.
    fn checkpoint_step(&mut self) {
        if self.chunk_at.elapsed() >= self.checkpoint_pace() {
            self.encode_due_chunk();
        }
        self.stage_watermarks();
    }

    /// Encodes and stages the next chunk of the roll-up that is due, now; true if one was.
    fn encode_due_chunk(&mut self) -> bool {
        let (end, log_end) = (self.journal.end(STREAM_EVENTS), self.journal.end(STREAM_DECISIONS));
        let age_ms = self.checkpoint_every.as_millis() as u64;
        let Some(cp) = self.rollup.checkpoint_step(end, log_end, self.clock.unix_ms(), age_ms) else {
            return false;
        };
        self.chunk_at = Instant::now();
        self.stage_checkpoint(cp);
        true
    }

    fn stage_checkpoint(&mut self, cp: rim_capsule::Checkpoint) {
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.stats.checkpoint_bytes.fetch_add(
            cp.chunks.iter().map(|c| c.1.len() as u64).sum::<u64>(),
            Ordering::Relaxed,
        );
        self.staged.work.batch.merge(Batch {
            checkpoint: Some(cp),
            ..Batch::default()
        });
    }

    /// Stages the watermarks when they moved: the events' `committed_to` and the log's,
    /// where the chunks not stored since they changed need a replay from (a store written
    /// before checkpoint format 4 keeps the earlier `replay_from` it was given, and
    /// recovery honours it once).
    fn stage_watermarks(&mut self) {
        let (end, log_end) = (self.journal.end(STREAM_EVENTS), self.journal.end(STREAM_DECISIONS));
        let (committed_to, log_from) = self.rollup.watermarks(end, log_end);
        let marks = (committed_to, committed_to, log_from);
        if marks == self.staged_marks {
            return;
        }
        self.staged_marks = marks;
        self.staged.work.batch.watermarks = super::watermarks(committed_to, log_from);
    }

    /// Tells ingest that everything before `marker` is durable.
    fn publish_marker(&self, marker: u64) {
        // Only this thread writes it; ingest checks the pair (forward, and issued).
        let published = self.durable_marker.load(Ordering::Relaxed);
        assert!(
            marker >= published,
            "durable marker going back from {published} to {marker}"
        );
        self.durable_marker.store(marker, Ordering::Release);
    }

    fn handoff_due(&self) -> bool {
        !self.ready.is_empty()
            && (self.ready.waiting() >= self.store_batch_max || self.handed_at.elapsed() >= self.store_interval)
    }

    /// Offers the ready work to the store writer; when it is busy the work stays and grows
    /// (it commits the next hand-off as one transaction). `block`: wait for it (shutdown).
    fn hand_off(&mut self, block: bool) -> usize {
        let Some(tx) = self.to_writer.as_ref() else {
            return 0;
        };
        let last_handed_at = std::mem::replace(&mut self.handed_at, Instant::now());
        let ready = std::mem::take(&mut self.ready);
        let n = ready.waiting as u64;
        self.stats.store_pending.fetch_add(n, Ordering::Relaxed);
        let sent = if block {
            tx.send(ready.items).map_err(|e| TrySendError::Disconnected(e.0))
        } else {
            tx.try_send(ready.items)
        };
        match sent {
            Ok(()) => {
                self.refused_since = None;
                1
            }
            Err(TrySendError::Full(items)) => {
                self.stats.store_pending.fetch_sub(n, Ordering::Relaxed);
                if self.wake_may_hold_the_slot() {
                    // Tried again at the next upkeep, not a whole interval later.
                    self.handed_at = last_handed_at;
                } else {
                    let since = *self.refused_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= WRITER_STARVED_AFTER && self.writer_priority.raise() {
                        self.stats.store_writer_raised.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.ready = Ready {
                    items,
                    waiting: ready.waiting,
                };
                0
            }
            Err(TrySendError::Disconnected(_)) => {
                error!("store writer is gone; capsules are not being stored");
                0
            }
        }
    }

    /// Nothing to do: wait for the commit in flight, or nap, or park until ingest wakes
    /// this thread (timers still run every [`PARK_FOR`]).
    fn idle(&mut self, inputs: &mut Rings) {
        if self.journal.in_flight() {
            self.complete(Some(self.commit_wait()));
            return;
        }
        if self.nap_while_held() {
            return;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        self.idle_turns += 1;
        if self.idle_turns <= IDLE_YIELDS {
            std::thread::yield_now();
        } else if since.elapsed() < PARK_AFTER {
            std::thread::sleep(IDLE_NAP);
        } else if self.encode_due_chunk() {
            // Quiet for a while (not a gap between entries under load, when the pace
            // keeps chunk encodings from bunching up): a chunk that is due is encoded
            // now, not one per wake-up.
            self.stage_watermarks();
        } else {
            let park_for = self.park_for();
            let (ingest, reflex) = (&inputs.ingest, &inputs.reflex);
            inputs
                .wake
                .park(park_for, || !ingest.is_empty() || reflex.iter().any(|r| !r.is_empty()));
        }
    }

    /// How long an idle park may last: [`PARK_FOR`], or less when a chunk of the rolling
    /// checkpoint falls due sooner, or [`RUNS_WAKE_EVERY`] while posted runs wait for the
    /// writer's wake-up. Parks of [`PARK_FOR`] alone encoded one chunk per
    /// wake-up: after a burst over 10,000 nodes (40 chunks) the round took 4 s instead of
    /// one interval, and a crash in between replayed a third of a 10M-event journal.
    fn park_for(&self) -> Duration {
        if self.mailbox.writer_waits_with_runs() {
            // The writer's wake-up for posted runs is due within RUNS_WAKE_EVERY.
            return RUNS_WAKE_EVERY;
        }
        let age_ms = self.checkpoint_every.as_millis() as u64;
        match self.rollup.checkpoint_due_in(self.clock.unix_ms(), age_ms) {
            Some(due_ms) => Duration::from_millis(due_ms).clamp(Duration::from_millis(1), PARK_FOR),
            None => PARK_FOR,
        }
    }

    /// The least time between two checkpoint steps: `checkpoint_ms / (2 × chunks)`.
    fn checkpoint_pace(&self) -> Duration {
        let chunks = u32::try_from(self.rollup.chunk_count().max(1)).unwrap_or(u32::MAX);
        self.checkpoint_every / chunks.saturating_mul(2)
    }

    /// At shutdown, with every ring drained and committed: the last checkpoint, committed,
    /// and everything handed to the writer, which commits it before it ends.
    fn finish(&mut self) {
        self.rollup.settle(usize::MAX, &mut self.staged.work.closed);
        let (end, log_end) = (self.journal.end(STREAM_EVENTS), self.journal.end(STREAM_DECISIONS));
        let cp = self.rollup.checkpoint_all(end, log_end, self.clock.unix_ms());
        self.stage_checkpoint(cp);
        self.stage_watermarks();
        // After the checkpoint's watermark, so recovery reads it: everything before it is
        // durable once it is, and the chains may resume without a gap.
        if let Err(e) = self
            .journal
            .append(STREAM_DECISIONS, &[LOG_SHUTDOWN], self.clock.unix_ms())
        {
            fatal("decision log append failed", &e);
        }
        // The checkpoint depends on nothing new (everything is durable): it lands as is,
        // committed now, not held for `commit_interval_us`.
        self.committed_at = None;
        self.start_commit();
        while self.journal.in_flight() {
            self.complete(Some(COMMIT_WAIT));
        }
        if let Err(e) = self.journal.sync() {
            fatal("journal sync failed", &e);
        }
        self.hand_off(true);
        // Dropping the sender ends the writer after it committed what it has.
        self.to_writer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::{hold_for, PersistStats, TurnStats};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    /// A window with commits reports their latencies; the next, without one, reports 0, not
    /// the last window's figures (a reader would take an old stall for a new one).
    #[test]
    fn a_window_without_a_commit_reports_none() {
        let (mut turns, stats) = (TurnStats::new(), PersistStats::default());
        if let Some(h) = turns.commits.as_mut() {
            h.record(40_000_000).expect("in range");
        }
        turns.publish(&stats);
        assert!(stats.commit_max_ns.load(Ordering::Relaxed) >= 40_000_000);
        turns.publish(&stats);
        let figures = [&stats.commit_p50_ns, &stats.commit_p99_ns, &stats.commit_max_ns];
        assert_eq!(figures.map(|f| f.load(Ordering::Relaxed)), [0, 0, 0]);
    }

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn only_a_steady_stream_over_fast_syncs_waits_out_the_interval_for_a_partial_buffer() {
        let interval = 500 * US;
        // The last two commits 200 µs apart, the last sync 150 µs.
        let steady = (Some(200 * US), Some(150 * US));
        // Records pending, the last commit started 200 µs ago: 300 µs more.
        assert_eq!(hold_for(100, 1 << 20, Some(200 * US), steady, interval), Some(300 * US));
        // Holding keeps the gaps at about one interval: still steady.
        let held = (Some(520 * US), Some(150 * US));
        assert_eq!(hold_for(100, 1 << 20, Some(100 * US), held, interval), Some(400 * US));
        // Nothing pending: nothing to hold.
        assert_eq!(hold_for(0, 1 << 20, Some(200 * US), steady, interval), None);
        // Half the buffer full: commit now.
        assert_eq!(hold_for(1 << 20, 1 << 20, Some(200 * US), steady, interval), None);
        // The interval is out (exactly, or long ago: a burst after a quiet spell).
        assert_eq!(hold_for(100, 1 << 20, Some(interval), steady, interval), None);
        assert_eq!(
            hold_for(100, 1 << 20, Some(Duration::from_secs(3)), steady, interval),
            None
        );
        // The last two commits 1.5 intervals apart or more (the rest of a burst that came
        // after a quiet spell): commit now.
        for gap in [750 * US, 1000 * US] {
            assert_eq!(
                hold_for(100, 1 << 20, Some(200 * US), (Some(gap), Some(150 * US)), interval),
                None
            );
        }
        // The last sync took the interval or longer (a slow disk spaces commits itself).
        for flight in [500 * US, 3000 * US] {
            assert_eq!(
                hold_for(100, 1 << 20, Some(200 * US), (Some(200 * US), Some(flight)), interval),
                None
            );
        }
        // No commit yet, only one, or none completed (the first records after start).
        assert_eq!(hold_for(100, 1 << 20, None, (None, None), interval), None);
        assert_eq!(
            hold_for(100, 1 << 20, Some(200 * US), (None, Some(150 * US)), interval),
            None
        );
        assert_eq!(
            hold_for(100, 1 << 20, Some(200 * US), (Some(200 * US), None), interval),
            None
        );
        // Interval 0: never held.
        assert_eq!(
            hold_for(100, 1 << 20, Some(Duration::ZERO), steady, Duration::ZERO),
            None
        );
    }
}
