//! Persist: the journal thread and the store writer, and recovery at start.
//!
//! ```text
//! ingest ──(events, markers)──────────┐
//! reflex k ──(decisions, predictions)─┴─► journal thread (cold core, may block)
//!      append to the events / decision-log buffers · pipelined group commit (direct
//!      writes + fdatasync on the journal's commit threads) · durable marker back to ingest, durable chain seq back to
//!      reflex · roll-up by node index · predictions filed and scored · accuracy
//!                          │ durable work, at most every store_interval_ms
//!                          ▼
//!      store writer thread: one redb transaction per hand-off (it grows while one commits)
//! ```
//! The journal thread never hands the writer anything that is not durable. Every
//! `persist.checkpoint_ms` (and at shutdown) the hand-off also carries a **checkpoint**
//! of the roll-up (the chunks of nodes that changed: open windows, pending predictions,
//! accuracy, each node's dedup window of event-id hashes) and the streams' watermarks
//! (events: `committed_to`, the end the checkpoint is complete to, and `replay_from`,
//! where recovery starts reading, written equal to it; decision log: its end then), in
//! the same transaction as the capsules.
//!
//! Recovery restores the checkpoint (placing its nodes in ingest's node table first, in
//! their old order, with their dedup windows), reads the decision log from its watermark
//! (decision runs for the index, the chains' last durable decisions, predictions to
//! score), then reads the events from `replay_from`: into ingest (node table, dedup
//! windows, so that an event synced just before a crash but never seen acknowledged is
//! recognised when its producer resends it) and the reflex state, and from `committed_to`
//! on also into the roll-up (a store written before checkpoint format 4 has no dedup
//! windows in it and an earlier `replay_from`, which recovery honours); a
//! window it closes again that was already committed comes back identical (counted as
//! `persist.capsules_existing`), or, if it differs, the committed one stays
//! (`persist.capsules_kept`).

pub mod audit;

mod paced;
mod thread;

mod writer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rim_capsule::{Batch, Names, Rollup, RollupConfig, Store, StoreConfig};
use rim_journal::{Fs, Journal, JournalConfig, Reader};
use thiserror::Error;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::entry;
use crate::ingest::{Ingest, ReplayOutcome};
use crate::reflex::decision::Chain;
use crate::reflex::predict;
use crate::reflex::Reflex;
use audit::{RunBuilder, LOG_DECISION, LOG_PREDICTION, LOG_SHUTDOWN, STREAMS, STREAM_DECISIONS, STREAM_EVENTS};

pub use thread::{spawn, JournalInputs};

/// Why persistence could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The data directory could not be made.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The journal refused to open or to be read.
    #[error("journal: {0}")]
    Journal(#[from] rim_journal::JournalError),
    /// The store refused to open or to be written.
    #[error("capsule store: {0}")]
    Store(#[from] rim_capsule::StoreError),
    /// The store's file could not be opened.
    #[error("cannot open the capsule store {0}: {1}")]
    StoreFile(PathBuf, std::io::Error),
    /// A journal record that passed its CRC does not decode (a bug or a foreign file).
    #[error("journal stream {stream} position {pos}: {message}")]
    Record {
        /// Stream.
        stream: u32,
        /// Position.
        pos: u64,
        /// What is wrong.
        message: String,
    },
    /// The decision log could not be read back.
    #[error("decision log: {0}")]
    Log(String),
    /// Another daemon uses this data directory.
    #[error("another rimd (pid {pid}) uses the data directory {path}; stop it or choose another persist.data_dir")]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The pid in its lock file ("?" if unreadable).
        pid: String,
    },
    /// A thread could not start.
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

/// Counters of the persist path, read by the stats aggregator (relaxed: cold path).
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Events appended to the journal.
    pub journal_events: AtomicU64,
    /// Bytes appended (payloads).
    pub journal_bytes: AtomicU64,
    /// Group commits completed.
    pub syncs: AtomicU64,
    /// Time from the start of a commit to its completion, summed, ns.
    pub sync_ns: AtomicU64,
    /// Longest commit, ns.
    pub sync_ns_max: AtomicU64,
    /// Journal errors (append or sync); the journal thread retries.
    pub journal_errors: AtomicU64,
    /// Capsules inserted into the store.
    pub capsules_inserted: AtomicU64,
    /// Capsules already present with the same content.
    pub capsules_existing: AtomicU64,
    /// Capsules refused because a different one with the same key was committed (after
    /// a restart: the committed one stays).
    pub capsules_kept: AtomicU64,
    /// Decisions appended to the decision log.
    pub decisions_logged: AtomicU64,
    /// Decision runs written to the index.
    pub decision_runs: AtomicU64,
    /// Decisions the index covers: per shard the newest indexed chain seq, summed (a
    /// level; equals the decisions made when no restart skipped sequence numbers).
    pub decisions_indexed: AtomicU64,
    /// Predictions appended to the decision log (and stored as PREDICTED capsules).
    pub predictions: AtomicU64,
    /// Windows scored against their prediction (a level).
    pub scored: AtomicU64,
    /// Predictions that could not be scored (their window closed first) (a level).
    pub unscored: AtomicU64,
    /// Bytes written by group commits (both streams).
    pub commit_bytes: AtomicU64,
    /// Checkpoints staged.
    pub checkpoints: AtomicU64,
    /// Bytes of checkpoint chunks staged.
    pub checkpoint_bytes: AtomicU64,
    /// Journal-thread turns that took nothing because the store was behind.
    pub store_backpressure_turns: AtomicU64,
    /// Capsules made but not yet handed to the store writer (a level).
    pub store_waiting: AtomicU64,
    /// 1 while the store writer has committed something it has not synced yet (a level):
    /// a crash then takes redb back to its last synced commit, and recovery replays the
    /// journal from that commit's watermarks.
    pub store_unsynced: AtomicU64,
    /// Journal-thread turns that took over 1 ms (a stall of the commit pipeline).
    pub turns_slow: AtomicU64,
    /// Longest turn, and its phases' longest, since the last report window (levels, ns).
    pub turn_ns_max: AtomicU64,
    /// See `turn_ns_max`.
    pub drain_ns_max: AtomicU64,
    /// See `turn_ns_max`: the part of the turn that collected a landed commit.
    pub land_ns_max: AtomicU64,
    /// Entries the longest drain of the last second took.
    pub drain_entries_at_max: AtomicU64,
    /// See `turn_ns_max`.
    pub commit_start_ns_max: AtomicU64,
    /// See `turn_ns_max`.
    pub upkeep_ns_max: AtomicU64,
    /// Group commit latency (start to completion) over the last report window: p50, p99,
    /// max (levels, ns; 0 when the window had no commit).
    pub commit_p50_ns: AtomicU64,
    /// See `commit_p50_ns`.
    pub commit_p99_ns: AtomicU64,
    /// See `commit_p50_ns`.
    pub commit_max_ns: AtomicU64,
    /// Store transactions.
    pub store_commits: AtomicU64,
    /// Store commits that wrote capsules or a checkpoint (what the API's slices read): not
    /// a metric, the version the slices' caches go by.
    pub store_data_version: AtomicU64,
    /// Times the journal thread raised a starved store writer to a normal thread.
    pub store_writer_raised: AtomicU64,
    /// Store write failures (the batch is retried for 30 s, then rimd exits and a restart
    /// rebuilds from the last checkpoint: a batch is never dropped).
    pub store_errors: AtomicU64,
    /// Late events (before their node's open window) not rolled up.
    pub late_events: AtomicU64,
    /// Journal records the recovery replayed at start.
    pub recovered_events: AtomicU64,
    /// How long recovery took, ms.
    pub recovery_ms: AtomicU64,
    /// Bytes of torn journal tails cut at start.
    pub torn_bytes_cut: AtomicU64,
    /// Segment rotations that took a spare prepared ahead (written zero), and rotations
    /// that found none ready and created their segment allocated only (`posix_fallocate`),
    /// so that the segment's syncs commit file-system metadata too.
    pub spares_used: AtomicU64,
    pub spares_missed: AtomicU64,
    /// Events appended but not yet synced (a level).
    pub journal_lag_bytes: AtomicU64,
    /// Capsules waiting for the store (a level).
    pub store_pending: AtomicU64,
    /// 1 once recovery finished and the daemon serves.
    pub ready: AtomicU64,
}

impl PersistStats {
    /// Every counter with its name (for the stats segment).
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("journal_events", r(&self.journal_events)),
            ("journal_bytes", r(&self.journal_bytes)),
            ("syncs", r(&self.syncs)),
            ("sync_ns", r(&self.sync_ns)),
            ("sync_ns_max", r(&self.sync_ns_max)),
            ("journal_errors", r(&self.journal_errors)),
            ("capsules_inserted", r(&self.capsules_inserted)),
            ("capsules_existing", r(&self.capsules_existing)),
            ("capsules_kept", r(&self.capsules_kept)),
            ("decisions_logged", r(&self.decisions_logged)),
            ("decision_runs", r(&self.decision_runs)),
            ("decisions_indexed", r(&self.decisions_indexed)),
            ("predictions", r(&self.predictions)),
            ("scored", r(&self.scored)),
            ("unscored", r(&self.unscored)),
            ("commit_bytes", r(&self.commit_bytes)),
            ("checkpoints", r(&self.checkpoints)),
            ("checkpoint_bytes", r(&self.checkpoint_bytes)),
            ("store_backpressure_turns", r(&self.store_backpressure_turns)),
            ("store_waiting", r(&self.store_waiting)),
            ("store_unsynced", r(&self.store_unsynced)),
            ("turns_slow", r(&self.turns_slow)),
            ("turn_ns_max", r(&self.turn_ns_max)),
            ("drain_ns_max", r(&self.drain_ns_max)),
            ("land_ns_max", r(&self.land_ns_max)),
            ("drain_entries_at_max", r(&self.drain_entries_at_max)),
            ("commit_start_ns_max", r(&self.commit_start_ns_max)),
            ("upkeep_ns_max", r(&self.upkeep_ns_max)),
            ("commit_p50_ns", r(&self.commit_p50_ns)),
            ("commit_p99_ns", r(&self.commit_p99_ns)),
            ("commit_max_ns", r(&self.commit_max_ns)),
            ("store_commits", r(&self.store_commits)),
            ("store_writer_raised", r(&self.store_writer_raised)),
            ("store_errors", r(&self.store_errors)),
            ("late_events", r(&self.late_events)),
            ("recovered_events", r(&self.recovered_events)),
            ("recovery_ms", r(&self.recovery_ms)),
            ("torn_bytes_cut", r(&self.torn_bytes_cut)),
            ("spares_used", r(&self.spares_used)),
            ("spares_missed", r(&self.spares_missed)),
            ("journal_lag_bytes", r(&self.journal_lag_bytes)),
            ("store_pending", r(&self.store_pending)),
            ("ready", r(&self.ready)),
        ]
    }
}

/// Journal and store opened at start, before recovery.
pub struct Opened {
    /// The data directory's lock, held for the daemon's life.
    pub _lock: std::fs::File,
    /// The journal, tails cut.
    pub journal: Journal<Fs>,
    /// The store.
    pub store: Arc<Store>,
    /// Roll-up state (restored and brought up to date by [`recover`]).
    pub rollup: Rollup,
    /// The events' watermark: recovery feeds events from `replay_from` to ingest and
    /// reflex, and from `committed_to` on also to the roll-up.
    pub replay_from: u64,
    /// See `replay_from`.
    pub committed_to: u64,
    /// The decision log's watermark: recovery reads it from here.
    pub log_from: u64,
    /// The checkpoint to restore (header and chunks), when one was stored with valid
    /// watermarks.
    checkpoint: Option<rim_capsule::StoredCheckpoint>,
    /// Per reflex shard: the chain to continue (found by [`recover`]).
    pub chains: Vec<Option<Chain>>,
    /// The decision index's open runs, for the journal thread to continue.
    pub runs: RunBuilder,
    /// Counters.
    pub stats: Arc<PersistStats>,
    /// The configuration.
    pub config: Config,
    /// The wall clock of record times, idle windows, checkpoints and retention.
    pub clock: Clock,
    /// Set when the threads start: the store's syncs then go to the disk in slices.
    pub(crate) store_live: Arc<std::sync::atomic::AtomicBool>,
}

/// Opens (creating) the journal and the store, cuts torn journal tails and reads the
/// watermarks and the checkpoint.
pub fn open(config: &Config, clock: &Clock) -> Result<Opened, PersistError> {
    let p = &config.persist;
    std::fs::create_dir_all(&p.data_dir).map_err(|source| PersistError::DataDir {
        path: p.data_dir.clone(),
        source,
    })?;
    let lock = lock_data_dir(&p.data_dir)?;
    let stats = Arc::new(PersistStats::default());
    let mut jcfg = JournalConfig::new(p.journal_dir(), STREAMS);
    jcfg.segment_bytes = p.segment_bytes;
    jcfg.retention_ms = p.retention_hours.saturating_mul(3_600_000);
    jcfg.retention_bytes = p.retention_bytes;
    jcfg.buffer_bytes = p.commit_bytes as usize;
    let (journal, recovery) = Journal::open(jcfg, Fs::new())?;
    let cut: u64 = recovery.streams.iter().map(|r| r.torn_bytes).sum();
    stats.torn_bytes_cut.store(cut, Ordering::Relaxed);
    if cut > 0 {
        warn!(bytes = cut, "journal: torn tails cut");
    }
    let scfg = StoreConfig {
        retention_ms_by_resolution: p
            .resolutions
            .iter()
            .zip(&p.resolution_retention_hours)
            .map(|(&r, &h)| (r, h.saturating_mul(3_600_000)))
            .collect(),
        cache_bytes: p.store_cache_bytes,
    };
    let store_live = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let file = paced::PacedFile::open(&p.store_path(), store_live.clone())
        .map_err(|e| PersistError::StoreFile(p.store_path(), e))?;
    let store = Arc::new(Store::open_with_backend(file, scfg)?);
    let (replay_from, committed_to, log_from, checkpoint) = where_to_resume(&journal, &store)?;
    let mut rollup = Rollup::new(rollup_config(config));
    rollup.set_predicting(p.predict);
    Ok(Opened {
        _lock: lock,
        journal,
        store,
        rollup,
        replay_from,
        committed_to,
        log_from,
        checkpoint,
        chains: Vec::new(),
        runs: RunBuilder::default(),
        stats,
        config: config.clone(),
        clock: clock.clone(),
        store_live,
    })
}

/// The events stream's `replay_from` and `committed_to`, the decision log's position, and
/// the checkpoint they belong with.
type Resume = (u64, u64, u64, Option<rim_capsule::StoredCheckpoint>);

/// Where recovery resumes, from the store's watermarks. A watermark past the journal's end,
/// or watermarks without a checkpoint, mean the whole journal is replayed into an empty
/// roll-up.
fn where_to_resume(journal: &Journal, store: &Store) -> Result<Resume, PersistError> {
    let start = journal.start(STREAM_EVENTS);
    let (mut replay_from, mut committed_to, mut log_from) = (start, start, journal.start(STREAM_DECISIONS));
    let mut valid = true;
    let mut seen = false;
    for w in store.watermarks()? {
        let end = journal.end(w.stream);
        // A watermark past the journal's end (a journal lost or replaced under a store)
        // cannot be trusted; replay what there is.
        if w.replay_from > end || w.committed_to > end {
            warn!(
                stream = w.stream,
                committed_to = w.committed_to,
                end,
                "watermark past the journal's end; replaying the whole journal"
            );
            valid = false;
            continue;
        }
        match w.stream {
            STREAM_EVENTS => {
                seen = true;
                replay_from = w.replay_from.max(start);
                committed_to = w.committed_to.max(start);
            }
            STREAM_DECISIONS => log_from = w.committed_to.max(journal.start(STREAM_DECISIONS)),
            _ => {}
        }
    }
    let checkpoint = if valid && seen { store.checkpoint()? } else { None };
    if checkpoint.is_none() {
        // Without the checkpoint, the watermarks say too little: the roll-up starts empty
        // and takes every replayed event (closed windows come back as "existing").
        replay_from = start;
        committed_to = start;
        log_from = journal.start(STREAM_DECISIONS);
    }
    Ok((replay_from, committed_to, log_from, checkpoint))
}

fn rollup_config(config: &Config) -> RollupConfig {
    RollupConfig {
        resolutions: config.persist.resolutions.clone(),
        grace_ms: config.persist.grace_ms,
        nodes_max: config.reflex.nodes_max,
        recent_ids: config.ingest.dedup_window,
    }
}

/// Takes `{data_dir}/rimd.lock` (flock) before the journal is touched: a second daemon
/// on the same data would otherwise "repair" the first one's live segment at open.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, PersistError> {
    let path = dir.join("rimd.lock");
    match crate::lockfile::try_lock(&path) {
        Ok(crate::lockfile::Lock::Held(file)) => Ok(file),
        Ok(crate::lockfile::Lock::Busy(pid)) => Err(PersistError::Locked {
            path: dir.to_owned(),
            pid,
        }),
        Err(source) => Err(PersistError::DataDir { path, source }),
    }
}

/// What recovery did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovered {
    /// Journal records read (events and decision-log records).
    pub events: u64,
    /// Capsules closed or predicted again while replaying (committed ones are kept).
    pub capsules: u64,
    /// Time it took, ms.
    pub ms: u64,
}

/// Predictions kept per node and resolution while recovery files the decision log's
/// before replaying the events they predict.
const RECOVERY_EXPECT_CAPACITY: usize = 64;

/// Brings the daemon's state back: the roll-up from its checkpoint, the decision log's
/// tail (index runs, chain heads, predictions), then the events since the watermark into
/// ingest (node table, dedup windows), the reflex shards' state (nothing is decided or
/// predicted twice) and the roll-up.
pub fn recover(o: &mut Opened, ingest: &mut Ingest, reflexes: &mut [&mut Reflex]) -> Result<Recovered, PersistError> {
    let started = Instant::now();
    let mut done = Recovered::default();
    info!(
        replay_from = o.replay_from,
        committed_to = o.committed_to,
        log_from = o.log_from,
        events_end = o.journal.end(STREAM_EVENTS),
        "recovery: replaying the journal from the store's watermarks"
    );
    restore_rollup(o, ingest);
    restore_dedup(o, ingest);
    seed_predictors(o, reflexes);
    let mut batch = Batch::default();
    o.rollup.set_expect_capacity(RECOVERY_EXPECT_CAPACITY);
    let mut predicted = Predicted {
        now_ms: o.clock.now_ms(),
        ..Predicted::default()
    };
    let (heads, clean) = read_log_tail(o, ingest, &mut batch, &mut predicted, &mut done)?;
    o.chains = chain_heads(o, heads, clean, reflexes.len())?;
    replay_events(o, ingest, reflexes, &mut batch, predicted, &mut done)?;
    o.rollup.set_expect_capacity(rim_capsule::rollup::PREDICTIONS_PER_SLOT);
    batch.decision_runs.extend(o.runs.take_changed());
    done.capsules += batch.capsules.len() as u64;
    checkpoint_recovered(o, &mut batch);
    writer::commit(&o.store, &mut batch, &o.stats);
    done.ms = started.elapsed().as_millis() as u64;
    o.stats.recovered_events.store(done.events, Ordering::Relaxed);
    o.stats.recovery_ms.store(done.ms, Ordering::Relaxed);
    info!(
        events = done.events,
        capsules = done.capsules,
        ms = done.ms,
        "recovery done"
    );
    Ok(done)
}

/// The reflex shards' predictors told, per node and resolution, the window of the node's
/// last event as the restored roll-up holds it (the tail replay moves them on from there),
/// so no window predicted before the crash is predicted again.
fn seed_predictors(o: &Opened, reflexes: &mut [&mut Reflex]) {
    for n in 0..o.rollup.node_span() {
        for &res in &o.config.persist.resolutions {
            if let Some(w) = o.rollup.last_window(n, res) {
                reflexes.iter_mut().for_each(|r| r.seed_prediction_window(n, res, w));
            }
        }
    }
}

/// The recovered roll-up, checkpointed with its watermarks in recovery's last commit, so
/// that a crash soon after this start replays from this start's end rather than from where
/// this recovery began: without it, in a crash loop (or lives shorter than a checkpoint
/// round, as in the soak), every restart would replay all the ones before it.
fn checkpoint_recovered(o: &mut Opened, batch: &mut Batch) {
    let (end, log_end) = (o.journal.end(STREAM_EVENTS), o.journal.end(STREAM_DECISIONS));
    batch.checkpoint = Some(o.rollup.checkpoint_all(end, log_end, o.clock.unix_ms()));
    let (committed_to, log_from) = o.rollup.watermarks(end, log_end);
    batch.watermarks = watermarks(committed_to, log_from);
    (o.replay_from, o.committed_to, o.log_from) = (committed_to, committed_to, log_from);
    o.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
}

/// The streams' watermarks as stored: the events' `committed_to` (recovery's start: the
/// checkpoint carries the dedup windows, so `replay_from` is the same position) and the
/// decision log's.
fn watermarks(committed_to: u64, log_from: u64) -> Vec<rim_capsule::Watermark> {
    vec![
        rim_capsule::Watermark {
            stream: STREAM_EVENTS,
            replay_from: committed_to,
            committed_to,
        },
        rim_capsule::Watermark {
            stream: STREAM_DECISIONS,
            replay_from: log_from,
            committed_to: log_from,
        },
    ]
}

/// The roll-up from the stored checkpoint, its nodes placed in ingest's table in their old
/// order; on any failure the roll-up starts empty and recovery reads everything.
fn restore_rollup(o: &mut Opened, ingest: &mut Ingest) {
    let Some((header, chunks)) = o.checkpoint.take() else {
        return;
    };
    let mut place = |name: &str| ingest.node_index(name);
    match Rollup::restore(
        rollup_config(&o.config),
        &header,
        chunks.iter().map(|(c, b)| (*c, b.as_slice())),
        &mut place,
    ) {
        Ok(mut r) => {
            info!(
                open_windows = r.open_windows(),
                nodes = r.nodes(),
                "roll-up restored from its checkpoint"
            );
            r.set_predicting(o.config.persist.predict);
            o.rollup = r;
        }
        Err(e) => {
            warn!(error = %e, "roll-up checkpoint not restored; replaying the whole journal");
            o.replay_from = o.journal.start(STREAM_EVENTS);
            o.committed_to = o.replay_from;
            o.log_from = o.journal.start(STREAM_DECISIONS);
        }
    }
}

/// Ingest's dedup windows as the restored roll-up's checkpoint kept them: an event its
/// producer never saw acknowledged is a duplicate when resent however many checkpoints
/// later, as long as its node's window holds it. The tail replayed next adds the rest.
fn restore_dedup(o: &Opened, ingest: &mut Ingest) {
    for n in 0..o.rollup.node_span() {
        ingest.restore_dedup(n, o.rollup.recent_ids(n));
    }
}

/// Per reflex shard, its last decision record found in the decision log's tail.
type ChainHeads = Vec<Option<Vec<u8>>>;

/// Bytes of prediction records recovery keeps from the decision log's tail until the
/// roll-up can name their series (see [`Predicted`]); past them, the rest are made into
/// capsules at once, naming series the restored roll-up does not know by their keys.
const PREDICTED_DEFERRED_BYTES: usize = 32 << 20;

/// The decision log's prediction records, in log order, waiting to become PREDICTED
/// capsules. They are read before the events they follow are replayed, so the roll-up may
/// not know their series' names yet (after a crash with nothing checkpointed, none);
/// the roll-up thread makes and commits them once it does, in the time it waits for the
/// feeding thread (committed at once, they took a second of start-up per ~100k before
/// the replay could begin), and the rest at the end.
#[derive(Default)]
struct Predicted {
    records: VecDeque<Box<[u8]>>,
    bytes: usize,
    /// When recovery made the capsules (their `created_ms`), epoch ms.
    now_ms: i64,
}

impl Predicted {
    /// Keeps `record` if there is room; gives it back otherwise.
    fn keep<'r>(&mut self, record: &'r [u8]) -> Option<&'r [u8]> {
        if self.bytes + record.len() > PREDICTED_DEFERRED_BYTES {
            return Some(record);
        }
        self.bytes += record.len();
        self.records.push_back(record.into());
        None
    }

    /// Up to `max` capsules from the oldest records whose series `names` all knows (all
    /// of them, stand-ins for the unknown, if `all`).
    fn take(&mut self, names: &Names, max: usize, all: bool) -> Vec<rim_capsule::Capsule> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(r) = self.records.front() else { break };
            let named = predict::decode(r).map_or(true, |g| g.series.iter().all(|s| names.key(s.key).is_some()));
            if !(named || all) {
                break;
            }
            out.extend(thread::predicted_capsule(names, r, self.now_ms));
            self.bytes -= r.len();
            self.records.pop_front();
        }
        out
    }
}

/// Reads the decision log from its watermark: runs for the index, each shard's last
/// decision there, and the predictions (filed for scoring; kept in `predicted` to be made
/// into PREDICTED capsules again, past its bound into `batch` at once). Also whether the
/// log ends with a clean shutdown.
fn read_log_tail(
    o: &mut Opened,
    ingest: &mut Ingest,
    batch: &mut Batch,
    predicted: &mut Predicted,
    done: &mut Recovered,
) -> Result<(ChainHeads, bool), PersistError> {
    let shards = o.config.topology.reflex_shards;
    let mut heads: Vec<Option<Vec<u8>>> = vec![None; shards];
    let indexed = (0..shards)
        .filter_map(|k| o.store.last_decision_run(k as u16).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    // The index is committed with every store hand-off, the log's watermark only with a
    // checkpoint: the tail starts with decisions the index already holds. Adding them
    // again would open a second run over the same seqs (a chain that seems to go back).
    let mut indexed_to = vec![None; shards];
    for run in &indexed {
        if let Some(t) = indexed_to.get_mut(usize::from(run.shard)) {
            *t = Some(run.last_seq);
        }
    }
    o.runs.resume(indexed);
    let dir = o.config.persist.journal_dir();
    let mut reader = Reader::open_sequential(&dir, STREAM_DECISIONS, o.log_from, Fs::new())?;
    let mut clean = false;
    while let Some((pos, bytes)) = reader.next()? {
        done.events += 1;
        clean = bytes == [LOG_SHUTDOWN];
        match bytes.split_first() {
            Some((&LOG_DECISION, record)) => {
                if let Some((shard, seq)) = audit::shard_and_seq(record) {
                    let known = indexed_to.get(usize::from(shard)).copied().flatten();
                    if known.is_none_or(|last| seq > last) {
                        o.runs.add(shard, seq, pos);
                    }
                    if let Some(h) = heads.get_mut(usize::from(shard)) {
                        *h = Some(record.to_vec());
                    }
                }
            }
            Some((&LOG_PREDICTION, record)) => {
                let node = predict::decode(record).ok().and_then(|g| ingest.node_index(g.node_id));
                // A node restored from a chunk stored after this record already has it.
                if let Some(n) = node.filter(|&n| !o.rollup.holds_log(n, pos)) {
                    thread::expect(&mut o.rollup, Some(n), record, pos);
                }
                if let Some(c) = predicted
                    .keep(record)
                    .and_then(|r| thread::predicted_capsule(o.rollup.names(), r, predicted.now_ms))
                {
                    batch.capsules.push(c);
                }
            }
            Some((&LOG_SHUTDOWN, [])) => {}
            _ => {
                return Err(PersistError::Record {
                    stream: STREAM_DECISIONS,
                    pos,
                    message: "not a decision-log record".into(),
                })
            }
        }
        flush_if_full(o, batch, done);
    }
    Ok((heads, clean))
}

/// Each shard's chain, continued after its last durable decision (from the log's tail, or
/// else the index), skipping the sequence numbers subscribers may have seen and lost
/// unless the log ended cleanly (`clean`).
fn chain_heads(o: &Opened, heads: ChainHeads, clean: bool, shards: usize) -> Result<Vec<Option<Chain>>, PersistError> {
    let log = audit::DecisionLog::new(&o.config.persist.journal_dir(), o.store.clone());
    let mut chains = Vec::with_capacity(shards);
    for (k, head) in heads.into_iter().enumerate().take(shards) {
        let last = match head {
            Some(h) => Some(h),
            None => log
                .last_decision(k as u16)
                .map_err(|e| PersistError::Log(e.to_string()))?
                .map(|(_, b)| b),
        };
        let resumed = if clean {
            last.map(|b| Chain::resume_after(&b))
        } else {
            last.map(|b| Chain::resume_after_gap(&b))
        };
        chains.push(resumed.and_then(|r| match r {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(shard = k, error = %e, "decision log's last decision does not decode; shard starts a new chain");
                None
            }
        }));
    }
    Ok(chains)
}

/// The events from `replay_from`: into ingest and reflex, and from `committed_to` on
/// also into the roll-up. Two threads share the work, one core each (the shards do not
/// run yet): this one reads the journal and feeds ingest and the reflex shards, and sends
/// each event ingest placed (from `committed_to` on) to a roll-up thread as an event entry
/// on a byte ring (see [`feed_tail`]); the roll-up thread does not read the journal.
fn replay_events(
    o: &mut Opened,
    ingest: &mut Ingest,
    reflexes: &mut [&mut Reflex],
    batch: &mut Batch,
    predicted: Predicted,
    done: &mut Recovered,
) -> Result<(), PersistError> {
    let dir = o.config.persist.journal_dir();
    let (replay_from, committed_to) = (o.replay_from, o.committed_to);
    let held = o.rollup.held_events();
    let tail = o.journal.end(STREAM_EVENTS).saturating_sub(committed_to);
    let (tx, rx) = rtrb::RingBuffer::new(handoff_bytes(tail));
    let mut roller = Roller {
        rollup: &mut o.rollup,
        runs: &mut o.runs,
        store: &o.store,
        stats: &o.stats,
        batch_max: recovery_batch_max(&o.config),
        batch,
        predicted,
        capsules: 0,
    };
    let (fed, rolled) = std::thread::scope(|s| {
        let rolling = std::thread::Builder::new()
            .name("rimd-recover".into())
            .spawn_scoped(s, || roller.roll_tail(rx));
        let fed = feed_tail(ingest, reflexes, &dir, (replay_from, committed_to), &held, tx, done);
        let rolled = match rolling {
            Ok(t) => t
                .join()
                .unwrap_or_else(|_| Err(PersistError::Log("the roll-up replay panicked".into()))),
            Err(e) => Err(PersistError::Log(format!("cannot start the roll-up replay: {e}"))),
        };
        (fed, rolled)
    });
    done.capsules += roller.capsules;
    fed.and(rolled)
}

/// Capsules per store transaction during recovery at most, whatever
/// `persist.store_batch_max` says: the roll-up thread commits them while the feeding
/// thread replays, so a smaller bound overlaps more of the store's work with the replay.
/// With `store_batch_max` = 1M (a store held back on purpose) recovery kept every capsule
/// of the tail for one commit after the replay, 0.6-0.7 s of a 10 s tail's start-up.
const RECOVERY_BATCH_MAX: usize = 10_000;

/// Capsules per store transaction during recovery: `persist.store_batch_max`, bounded by
/// [`RECOVERY_BATCH_MAX`].
fn recovery_batch_max(config: &Config) -> usize {
    config.persist.store_batch_max.min(RECOVERY_BATCH_MAX)
}
/// Bytes of the ring from the feeding thread to the roll-up thread at most: about 800,000
/// of the bench's events (166 bytes an entry), 0.3 s of the feeding thread's work, so that
/// it does not wait while the roll-up thread commits a batch of capsules. At 32 MiB it
/// did: 12% of its samples in `sched_yield`, on a 10M-event tail.
const HANDOFF_BYTES_MAX: usize = 128 << 20;
/// Bytes of that ring at least.
const HANDOFF_BYTES_MIN: usize = 256 << 10;

/// The hand-off ring's size for a tail of `tail` journal bytes: a quarter of it, within
/// [`HANDOFF_BYTES_MIN`, `HANDOFF_BYTES_MAX`]. A short tail (most restarts, every test)
/// allocates little, and still laps the ring; the allocation lives as long as the replay
/// (above glibc's `mmap` threshold, it is unmapped after).
fn handoff_bytes(tail: u64) -> usize {
    usize::try_from(tail / 4)
        .unwrap_or(usize::MAX)
        .clamp(HANDOFF_BYTES_MIN, HANDOFF_BYTES_MAX)
}

// Every entry the feeding thread can send fits the ring, and `entry::take` takes it.
const _: () = assert!(entry::EXTRAS_BYTES + rim_journal::event::EVENT_BYTES_MAX <= entry::BODY_BYTES_MAX);
const _: () = assert!(entry::HEAD_BYTES + entry::BODY_BYTES_MAX <= HANDOFF_BYTES_MIN);

/// Ingest and the reflex shards' side of [`replay_events`]: every event from `from.0`,
/// and each that ingest placed from `from.1` on to `tx` as an event entry (see
/// [`entry`]): its node index, its journal position in the head's `aux`, and its record.
/// The roll-up thread takes the records from there rather than reading the journal a
/// second time: its own reader, with its own checks of every frame's CRC, was a quarter of
/// that thread, which bounds recovery once this one's node lookups stopped missing.
fn feed_tail(
    ingest: &mut Ingest,
    reflexes: &mut [&mut Reflex],
    dir: &std::path::Path,
    (replay_from, committed_to): (u64, u64),
    held: &[u64],
    mut tx: rtrb::Producer<u8>,
    done: &mut Recovered,
) -> Result<(), PersistError> {
    let mut reader = Reader::open_sequential(dir, STREAM_EVENTS, replay_from, Fs::new())?;
    let holds = |n: u32, pos: u64| held.get(n as usize).is_some_and(|&to| pos < to);
    let mut batch = ReplayBatch::default();
    let mut handoff = Handoff {
        tx: &mut tx,
        from: committed_to,
        entry: Vec::new(),
    };
    while batch.read(&mut reader)? {
        let recs = batch.decode()?;
        // Each record's node-table slot is a cache miss (the table is sized for
        // `nodes_max`); touched together, the misses overlap. Then, from the node each
        // slot names, the same for the node's reflex state, which the replay updates next.
        let mut ids = [""; REPLAY_BATCH];
        for (id, (_, rec)) in ids.iter_mut().zip(&recs) {
            *id = rec.rim_node_id;
        }
        let mut guesses = [None; REPLAY_BATCH];
        ingest.touch_nodes(&ids[..recs.len()], &mut guesses);
        for n in guesses.iter().take(recs.len()).flatten() {
            if let Some(r) = reflexes.get(ingest.shard_of_node(*n)) {
                r.prefetch_node(*n);
            }
        }
        for (i, (pos, rec)) in recs.iter().enumerate() {
            let node = feed_one(ingest, reflexes, (*pos, rec), &holds);
            if let Some(node) = node {
                handoff.send(node, *pos, batch.record(i))?;
            }
            done.events += 1;
            if handoff.tx.is_abandoned() {
                // The roll-up side stopped; its error is the one reported.
                return Ok(());
            }
        }
        // The shards step this batch's events now, while the node state prefetched above
        // is in cache (left until their rings filled, thousands of events later, it was
        // not, and their bursts evicted the next batches' warmed node-table slots).
        for r in reflexes.iter_mut() {
            r.poll(usize::MAX);
        }
    }
    Ok(())
}

/// Records replayed per turn of [`feed_tail`]: copied out of the reader's window so that
/// their node lookups can be started together.
const REPLAY_BATCH: usize = 64;

/// A turn's worth of journal records, copied from the reader.
#[derive(Default)]
struct ReplayBatch {
    bytes: Vec<u8>,
    /// Position, start and length in `bytes` of each record.
    records: Vec<(u64, usize, usize)>,
}

impl ReplayBatch {
    /// Reads up to [`REPLAY_BATCH`] records; false when there were none.
    fn read(&mut self, reader: &mut Reader) -> Result<bool, PersistError> {
        self.bytes.clear();
        self.records.clear();
        while self.records.len() < REPLAY_BATCH {
            let Some((pos, bytes)) = reader.next()? else { break };
            self.records.push((pos, self.bytes.len(), bytes.len()));
            self.bytes.extend_from_slice(bytes);
        }
        Ok(!self.records.is_empty())
    }

    /// Record `i`'s bytes.
    fn record(&self, i: usize) -> &[u8] {
        self.records
            .get(i)
            .and_then(|&(_, start, len)| self.bytes.get(start..start + len))
            .unwrap_or_default()
    }

    /// The records decoded, with their positions.
    fn decode(&self) -> Result<Vec<(u64, rim_journal::event::EventRecord<'_>)>, PersistError> {
        self.records
            .iter()
            .map(|&(pos, start, len)| {
                let bytes = self.bytes.get(start..start + len).unwrap_or_default();
                rim_journal::event::decode_journaled(bytes)
                    .map(|rec| (pos, rec))
                    .map_err(|e| PersistError::Record {
                        stream: STREAM_EVENTS,
                        pos,
                        message: e.to_string(),
                    })
            })
            .collect()
    }
}

/// One replayed event into ingest (polling the reflex shards while its ring is full); the
/// node ingest placed it at, None if ingest refused it (it is not rolled up either).
fn feed_one(
    ingest: &mut Ingest,
    reflexes: &mut [&mut Reflex],
    (pos, rec): (u64, &rim_journal::event::EventRecord<'_>),
    holds: &dyn Fn(u32, u64) -> bool,
) -> Option<u32> {
    loop {
        match ingest.replay(rec, &|n| holds(n, pos)) {
            ReplayOutcome::Full => reflexes.iter_mut().for_each(|r| {
                r.poll(usize::MAX);
            }),
            ReplayOutcome::Applied(n) => return Some(n),
            ReplayOutcome::Refused => return None,
        }
    }
}

/// The feeding thread's end of the ring to the roll-up thread.
struct Handoff<'a> {
    tx: &'a mut rtrb::Producer<u8>,
    /// The first position the roll-up takes (the store's `committed_to`).
    from: u64,
    /// The entry being sent.
    entry: Vec<u8>,
}

impl Handoff<'_> {
    /// Sends the event at `pos`, placed at `node`, if the roll-up takes it, waiting for
    /// room; returns at once if the roll-up side has stopped (its error is reported).
    fn send(&mut self, node: u32, pos: u64, record: &[u8]) -> Result<(), PersistError> {
        if pos < self.from {
            return Ok(());
        }
        let extras = entry::Extras {
            node,
            status: 0,
            id_hash: 0,
            keys: &[],
        };
        self.entry.resize(entry::HEAD_BYTES + entry::EXTRAS_BYTES, 0);
        let at = entry::put_event_head(&mut self.entry, 0, pos, &extras, record.len());
        self.entry.truncate(at);
        self.entry.extend_from_slice(record);
        if self.entry.len() > entry::HEAD_BYTES + entry::BODY_BYTES_MAX {
            return Err(PersistError::Record {
                stream: STREAM_EVENTS,
                pos,
                message: format!("a record of {} bytes is too long for recovery's hand-off", record.len()),
            });
        }
        while !entry::push(self.tx, &self.entry) && !self.tx.is_abandoned() {
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// The roll-up's side of [`replay_events`], on a thread of its own.
struct Roller<'a> {
    rollup: &'a mut Rollup,
    runs: &'a mut RunBuilder,
    store: &'a Store,
    stats: &'a PersistStats,
    batch_max: usize,
    batch: &'a mut Batch,
    /// The decision log's predictions, committed a batch at a time while the feeding
    /// thread is behind; what is left joins `batch` at the end.
    predicted: Predicted,
    /// Capsules committed on the way.
    capsules: u64,
}

impl Roller<'_> {
    /// Every event from `committed_to` that ingest placed (as the feeding thread sends it
    /// on `rx`, in journal order) and the restored state does not hold yet, into the
    /// roll-up.
    fn roll_tail(&mut self, mut rx: rtrb::Consumer<u8>) -> Result<(), PersistError> {
        let mut scratch = Vec::new();
        let mut keys = [0u64; entry::KEYS_MAX];
        let mut metrics: Box<thread::RollMetrics> = Box::new([(0, 0.0); entry::KEYS_MAX]);
        let mut closed = Vec::new();
        loop {
            let taken = entry::take(&mut rx, &mut scratch, |head, body| {
                let ev = entry::event_body(&head, body)
                    .filter(|_| head.kind == entry::KIND_EVENT)
                    .ok_or_else(|| PersistError::Record {
                        stream: STREAM_EVENTS,
                        pos: head.aux,
                        message: format!(
                            "recovery's hand-off took an entry of kind {} that is no event (a bug)",
                            head.kind
                        ),
                    })?;
                self.roll_one(ev.node, head.aux, ev.record, &mut keys, &mut metrics, &mut closed)
            });
            match taken {
                Ok(Some(rolled)) => rolled?,
                // Abandoned first: once the feeding side is gone, nothing more arrives, and
                // an empty ring is the end (its error, if any, is the one reported).
                Ok(None) if rx.is_abandoned() && rx.is_empty() => break,
                Ok(None) => {
                    if !self.commit_predicted() {
                        std::thread::yield_now();
                    }
                }
                Err(e) => return Err(PersistError::Log(format!("recovery's hand-off ring: {e} (a bug)"))),
            }
        }
        self.keep_predicted();
        Ok(())
    }

    /// The event at `pos` (its record `bytes`, placed at `node`) into the roll-up, unless
    /// the restored roll-up already holds it.
    fn roll_one(
        &mut self,
        node: u32,
        pos: u64,
        bytes: &[u8],
        keys: &mut [u64; entry::KEYS_MAX],
        metrics: &mut thread::RollMetrics,
        closed: &mut Vec<rim_capsule::Closed>,
    ) -> Result<(), PersistError> {
        // Before its node's stored entry was complete, the roll-up already has it.
        if self.rollup.holds_event(node, pos) {
            return Ok(());
        }
        // Scanned, not decoded: the feeding thread read this record through the journal's
        // CRC check and decoded and validated it before sending it, and the roll-up reads
        // a record as the journal thread does live (a full decode here too was a third of
        // this thread).
        let scan = rim_journal::event::scan(bytes).ok_or_else(|| PersistError::Record {
            stream: STREAM_EVENTS,
            pos,
            message: "the record does not scan".into(),
        })?;
        for (k, (name, _)) in keys.iter_mut().zip(scan.metrics()) {
            *k = rim_rules::name_hash_bytes(name).max(1);
        }
        let status = rim_rules::name_hash_bytes(scan.status).max(1);
        self.rollup
            .note_id(node, scan.event_id.map_or(0, crate::ingest::dedup::Dedup::hash_bytes));
        thread::roll_scanned(
            self.rollup,
            node,
            status,
            |i| keys.get(i).copied(),
            pos,
            &scan,
            metrics,
            closed,
        );
        let names = self.rollup.names();
        self.batch
            .capsules
            .extend(closed.drain(..).filter_map(|c| names.capsule(&c)));
        // Synced here, where the sync overlaps the replay (this thread waits for the
        // feeding one anyway), rather than all at once by recovery's last commit, which
        // start-up waits for (0.5-0.7 s of a 10 s tail's recovery before).
        self.capsules += commit_if_full(self.batch, self.runs, self.store, self.stats, self.batch_max, true);
        Ok(())
    }

    /// A batch of the deferred predictions whose series the roll-up can name, committed
    /// (synced, as this thread's capsule batches are) while there is nothing to roll up.
    /// False when there was none.
    fn commit_predicted(&mut self) -> bool {
        let capsules = self.predicted.take(self.rollup.names(), self.batch_max.max(1), false);
        if capsules.is_empty() {
            return false;
        }
        self.capsules += capsules.len() as u64;
        let mut chunk = Batch {
            capsules,
            ..Batch::default()
        };
        writer::commit_with(self.store, &mut chunk, self.stats, true, &mut || {});
        true
    }

    /// The deferred predictions not committed yet go with the rest of recovery's batch,
    /// named as the whole replay taught the roll-up.
    fn keep_predicted(&mut self) {
        let rest = self.predicted.take(self.rollup.names(), usize::MAX, true);
        self.batch.capsules.extend(rest);
    }
}

/// Commits what recovery rebuilt so far once it is a batch's worth.
fn flush_if_full(o: &mut Opened, batch: &mut Batch, done: &mut Recovered) {
    let batch_max = recovery_batch_max(&o.config);
    done.capsules += commit_if_full(batch, &mut o.runs, &o.store, &o.stats, batch_max, false);
}

/// Commits `batch` (with the index runs changed since) once it holds `batch_max`
/// capsules, synced if `durable`. Either way the watermarks move only with recovery's last
/// commit (durable, with the checkpoint): a crash before it lands leaves them where they
/// were and the next start rebuilds the same capsules from the journal. Returns the
/// capsules committed.
fn commit_if_full(
    batch: &mut Batch,
    runs: &mut RunBuilder,
    store: &Store,
    stats: &PersistStats,
    batch_max: usize,
    durable: bool,
) -> u64 {
    if batch.capsules.len() < batch_max {
        return 0;
    }
    let n = batch.capsules.len() as u64;
    batch.decision_runs.extend(runs.take_changed());
    writer::commit_with(store, batch, stats, durable, &mut || {});
    n
}
