//! Persist: the journal thread and the store writer, and recovery at start.
//!
//! ```text
//! ingest ──(events, markers)──────────┐
//! reflex k ──(decisions, predictions)─┴─► journal thread (cold core, may block)
//!      append to the partition's segment · group commit (sync) · durable marker back to
//!      ingest, which moves producers' durable positions · roll-up of observed capsules ·
//!      predicted capsules · accuracy scores · audit records
//!                          │ one Batch per store_interval_ms (only synced data)
//!                          ▼
//!      store writer thread: one redb transaction per batch (coalesced when it lags)
//! ```
//! The journal thread never hands the writer anything that is not synced. Every
//! `persist.checkpoint_ms` (and at shutdown) a batch also carries a **checkpoint** of the
//! roll-up's open windows and the partitions' watermarks (`committed_to`: the synced
//! end, which the checkpoint is complete to; `replay_from`: the previous checkpoint's
//! end), written in the same transaction as the capsules. Recovery restores the
//! checkpoint and reads the journal from `replay_from`: into ingest (node table, dedup
//! windows, so that an event synced just before a crash but never seen acknowledged is
//! recognised when its producer resends it) and the reflex state, and from
//! `committed_to` on also into the roll-up; a window it closes again that was
//! already committed comes back identical (counted as `persist.capsules_existing`), or,
//! if it differs, the committed one stays (`persist.capsules_kept`).

pub mod entry;
pub mod predict;
mod thread;
mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rim_capsule::{Batch, Rollup, RollupConfig, Store, StoreConfig};
use rim_journal::{Fs, Journal, JournalConfig, Reader};
use thiserror::Error;
use tracing::{info, warn};

use crate::config::Config;
use crate::ingest::{Ingest, ReplayOutcome};
use crate::reflex::decision::Chain;
use crate::reflex::Reflex;

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
    /// A journal record that passed its CRC does not decode (a bug or a foreign file).
    #[error("journal partition {partition} position {pos}: {message}")]
    Record {
        /// Partition.
        partition: u32,
        /// Position.
        pos: u64,
        /// What is wrong.
        message: String,
    },
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
    /// Group commits.
    pub syncs: AtomicU64,
    /// Time spent in syncs, ns.
    pub sync_ns: AtomicU64,
    /// Longest sync, ns.
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
    /// Decisions written to the audit log.
    pub decisions_logged: AtomicU64,
    /// Predictions stored.
    pub predictions: AtomicU64,
    /// Predictions scored against their observed window.
    pub scored: AtomicU64,
    /// Store transactions.
    pub store_commits: AtomicU64,
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
            ("predictions", r(&self.predictions)),
            ("scored", r(&self.scored)),
            ("store_commits", r(&self.store_commits)),
            ("store_errors", r(&self.store_errors)),
            ("late_events", r(&self.late_events)),
            ("recovered_events", r(&self.recovered_events)),
            ("recovery_ms", r(&self.recovery_ms)),
            ("torn_bytes_cut", r(&self.torn_bytes_cut)),
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
    /// Roll-up state (rebuilt by [`recover`]).
    pub rollup: Rollup,
    /// Per partition: (replay from, roll up from): recovery feeds events from the first
    /// to ingest and reflex, and from the second also to the roll-up (restored from its
    /// checkpoint up to there).
    pub marks: Vec<(u64, u64)>,
    /// Per reflex shard: the chain to continue.
    pub chains: Vec<Option<Chain>>,
    /// Metric names by hash, for predictions.
    pub names: HashMap<u64, String>,
    /// Counters.
    pub stats: Arc<PersistStats>,
    /// The configuration.
    pub config: Config,
}

/// Opens (creating) the journal and the store, cuts torn journal tails and reads the
/// watermarks and the audit chains' heads.
pub fn open(config: &Config) -> Result<Opened, PersistError> {
    let p = &config.persist;
    std::fs::create_dir_all(&p.data_dir).map_err(|source| PersistError::DataDir {
        path: p.data_dir.clone(),
        source,
    })?;
    let lock = lock_data_dir(&p.data_dir)?;
    let stats = Arc::new(PersistStats::default());
    let mut jcfg = JournalConfig::new(p.journal_dir(), config.topology.partitions);
    jcfg.segment_bytes = p.segment_bytes;
    jcfg.retention_ms = p.retention_hours.saturating_mul(3_600_000);
    jcfg.retention_bytes = p.retention_bytes;
    let (journal, recovery) = Journal::open(jcfg, Fs::new())?;
    let cut: u64 = recovery.partitions.iter().map(|r| r.torn_bytes).sum();
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
    };
    let store = Arc::new(Store::open(&p.store_path(), scfg)?);
    let mut marks: Vec<(u64, u64)> = (0..config.topology.partitions)
        .map(|part| (journal.start(part), journal.start(part)))
        .collect();
    let mut rejected = false;
    for w in store.watermarks()? {
        if let Some(m) = marks.get_mut(w.partition as usize) {
            // A watermark past the journal's end (a journal lost or replaced under a
            // store) cannot be trusted; replay what there is.
            let end = journal.end(w.partition);
            if w.replay_from <= end && w.committed_to <= end {
                *m = (w.replay_from.max(journal.start(w.partition)), w.committed_to);
            } else {
                warn!(
                    partition = w.partition,
                    replay_from = w.replay_from,
                    end,
                    "watermark past the journal's end; replaying the whole partition"
                );
                rejected = true;
            }
        }
    }
    let mut chains = Vec::new();
    for shard in 0..config.topology.reflex_shards {
        let chain = match store.last_decision(shard as u16)? {
            Some((_, bytes)) => match Chain::resume_after(&bytes) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(shard, error = %e, "audit log's last decision does not decode; shard starts a new chain");
                    None
                }
            },
            None => None,
        };
        chains.push(chain);
    }
    let rcfg = RollupConfig {
        resolutions: p.resolutions.clone(),
        grace_ms: p.grace_ms,
        nodes_max: config.reflex.nodes_max,
    };
    // A checkpoint is only good with all of its watermarks: one rejected, and the roll-up
    // starts empty and takes every replayed event (replay from the start everywhere).
    let has_checkpoint = !rejected && store.checkpoint()?.is_some();
    if rejected {
        for (part, m) in marks.iter_mut().enumerate() {
            let start = journal.start(part as u32);
            *m = (start, start);
        }
    }
    if !has_checkpoint {
        // No checkpoint: the roll-up starts empty and takes every replayed event.
        for m in &mut marks {
            m.1 = m.0;
        }
    }
    let stored = if has_checkpoint { store.checkpoint()? } else { None };
    let rollup = match stored {
        Some(bytes) => match Rollup::restore(rcfg.clone(), &bytes) {
            Ok(r) => {
                info!(open_windows = r.open_windows(), "roll-up restored from its checkpoint");
                r
            }
            Err(e) => {
                // Without the open windows, the watermarks say too little: replay every
                // partition from its start (closed windows come back as "existing").
                warn!(error = %e, "roll-up checkpoint not restored; replaying the whole journal");
                for (part, m) in marks.iter_mut().enumerate() {
                    let start = journal.start(part as u32);
                    *m = (start, start);
                }
                Rollup::new(rcfg)
            }
        },
        None => Rollup::new(rcfg),
    };
    Ok(Opened {
        _lock: lock,
        journal,
        store,
        rollup,
        marks,
        chains,
        names: HashMap::new(),
        stats,
        config: config.clone(),
    })
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
    /// Journal records read.
    pub events: u64,
    /// Capsules closed again while replaying (already committed ones are kept).
    pub capsules: u64,
    /// Time it took, ms.
    pub ms: u64,
}

/// Replays every partition from its watermark: roll-up windows, the dedup windows and
/// node table in ingest, and the reflex shards' state (no decisions, no predictions).
pub fn recover(o: &mut Opened, ingest: &mut Ingest, reflexes: &mut [&mut Reflex]) -> Result<Recovered, PersistError> {
    let started = Instant::now();
    let mut done = Recovered::default();
    let mut out = Vec::new();
    let mut batch = Batch::default();
    let dir = o.config.persist.journal_dir();
    for part in 0..o.journal.partitions() {
        let (from, rolled_to) = o.marks[part as usize];
        let mut reader = Reader::open(&dir, part, from, Fs::new())?;
        while let Some((pos, bytes)) = reader.next()? {
            let rec = rim_journal::event::decode(bytes).map_err(|e| PersistError::Record {
                partition: part,
                pos,
                message: e.to_string(),
            })?;
            thread::learn_names(&mut o.names, &rec);
            // Before the checkpoint's position the roll-up already has the event.
            if pos >= rolled_to {
                thread::roll(&mut o.rollup, part, pos, &rec, &mut out, &o.stats);
            }
            while ingest.replay(&rec) == ReplayOutcome::Full {
                for r in reflexes.iter_mut() {
                    r.poll(usize::MAX);
                }
            }
            done.events += 1;
            if out.len() >= o.config.persist.store_batch_max {
                done.capsules += out.len() as u64;
                batch.capsules.append(&mut out);
                writer::commit(&o.store, &mut batch, &o.stats);
            }
        }
    }
    for r in reflexes.iter_mut() {
        r.poll(usize::MAX);
    }
    done.capsules += out.len() as u64;
    batch.capsules.append(&mut out);
    if !batch.capsules.is_empty() {
        writer::commit(&o.store, &mut batch, &o.stats);
    }
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
