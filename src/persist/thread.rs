//! The journal thread: drains ingest's and the reflex shards' rings, appends, syncs,
//! acknowledges, rolls up, and hands synced batches to the store writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rim_capsule::{
    Batch, Capsule, CapsuleBody, CapsuleKey, Observation, PredictedSeries, Prediction, PushOutcome, Rollup, Vantage,
    Watermark,
};
use rim_journal::event::EventRecord;
use rim_journal::{Fs, Journal};
use tracing::{error, info, warn};

use super::entry::{self, KIND_DECISION, KIND_EVENT, KIND_MARKER, KIND_PREDICTION};
use super::predict;
use super::{writer, Opened, PersistError, PersistStats};
use crate::ingest::unix_ms;

/// Entries handled per ring per loop turn, so one busy ring cannot starve a sync.
const TURN_ENTRIES: usize = 4096;
/// Sleep when there was nothing to do.
const IDLE_SLEEP: Duration = Duration::from_micros(50);
/// Journal retention runs this often.
const RETAIN_EVERY: Duration = Duration::from_secs(60);
/// How often open windows of quiet nodes are looked for.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
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

/// Nice value of the store writer thread (the journal thread keeps 0).
const WRITER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority (Linux: `setpriority` on a thread id
/// affects that thread only). Failure only costs latency; it is logged.
fn lower_priority(nice: i32) {
    #[allow(unsafe_code)]
    // SAFETY: gettid takes nothing; setpriority takes plain integers and touches no memory.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot lower the store writer's priority");
    }
}

/// Durable markers remembered for `replay_from` (thinned beyond this).
const MARKER_ENDS_MAX: usize = 4096;
/// Metrics per event at most (the data model's limit).
const METRICS_MAX: usize = 64;

/// What the journal thread hands the writer: a batch of synced records and, when a
/// checkpoint is due, a copy of the roll-up for the writer to serialise into it.
pub(super) struct Handoff {
    pub(super) batch: Batch,
    pub(super) rollup: Option<Box<Rollup>>,
}

/// The rings the journal thread reads.
pub struct JournalInputs {
    /// From ingest: events and markers.
    pub ingest: rtrb::Consumer<u8>,
    /// From each reflex shard: decisions and predictions.
    pub reflex: Vec<rtrb::Consumer<u8>>,
    /// Where the last synced marker is published for ingest.
    pub durable_marker: Arc<AtomicU64>,
    /// The last marker ingest has acknowledged to producers.
    pub settled_marker: Arc<AtomicU64>,
}

struct JournalThread {
    /// The data directory's lock: held while the journal is written.
    _lock: std::fs::File,
    journal: Journal<Fs>,
    rollup: Rollup,
    names: HashMap<u64, String>,
    inputs: JournalInputs,
    stats: Arc<PersistStats>,
    batch: Batch,
    closed: Vec<Capsule>,
    /// Predictions waiting for their observed window: (node, window start, resolution).
    waiting: HashMap<(String, i64, u32), Prediction>,
    /// Observed windows closed before their prediction was read.
    unscored: HashMap<(String, i64, u32), rim_capsule::ObservedStats>,
    waiting_max: usize,
    predicting: bool,
    to_writer: SyncSender<Handoff>,
    payload: Vec<u8>,
    last_marker: u64,
    unsynced_bytes: u64,
    commit_bytes: u64,
    store_interval: Duration,
    store_batch_max: usize,
    handed_at: Instant,
    flushed_at: Instant,
    checkpointed_at: Instant,
    checkpoint_every: Duration,
    /// Journal ends of the last checkpoint (the next one's `replay_from`).
    checkpoint_ends: Vec<u64>,
    /// Markers published durable, with the journal's ends when they were.
    marker_ends: std::collections::VecDeque<(u64, Vec<u64>)>,
    published_marker: u64,
    /// The journal's ends when the last marker was read.
    last_marker_ends: Vec<u64>,
    /// The ends as of the last marker known acknowledged (replay never starts later).
    replay_floor: Vec<u64>,
    retained_at: Instant,
    partitions: u32,
}

/// Starts the journal thread and the store writer. They run until `stop` is set and
/// every ring is drained, synced and committed.
pub fn spawn(
    o: Opened,
    inputs: JournalInputs,
    stop: Arc<AtomicBool>,
    core: Option<usize>,
) -> Result<Vec<std::thread::JoinHandle<()>>, PersistError> {
    let p = &o.config.persist;
    let (tx, rx) = sync_channel::<Handoff>(64);
    let store = o.store.clone();
    let stats = o.stats.clone();
    let writer = std::thread::Builder::new()
        .name("rimd-store".into())
        .spawn(move || {
            if let Some(c) = core {
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: c });
            }
            // The writer shares the cold core with the journal thread: when both can run,
            // the journal (what producers wait on) goes first. A redb commit of thousands
            // of capsules is CPU-bound for milliseconds.
            lower_priority(WRITER_NICE);
            writer::run(&store, rx, &stats);
        })
        .map_err(|e| PersistError::Thread("store writer", e))?;
    let partitions = o.journal.partitions();
    let mut t = JournalThread {
        _lock: o._lock,
        journal: o.journal,
        rollup: o.rollup,
        names: o.names,
        inputs,
        stats: o.stats,
        batch: Batch::default(),
        closed: Vec::new(),
        waiting: HashMap::new(),
        unscored: HashMap::new(),
        predicting: p.predict,
        waiting_max: o
            .config
            .reflex
            .nodes_max
            .saturating_mul(p.resolutions.len())
            .saturating_mul(2),
        to_writer: tx,
        payload: Vec::with_capacity(entry::PAYLOAD_BYTES_MAX),
        last_marker: 0,
        unsynced_bytes: 0,
        commit_bytes: p.commit_bytes,
        store_interval: Duration::from_millis(p.store_interval_ms),
        store_batch_max: p.store_batch_max,
        handed_at: Instant::now(),
        flushed_at: Instant::now(),
        checkpointed_at: Instant::now(),
        checkpoint_every: Duration::from_millis(p.checkpoint_ms),
        checkpoint_ends: o.marks.iter().map(|m| m.1).collect(),
        marker_ends: std::collections::VecDeque::new(),
        published_marker: 0,
        last_marker_ends: vec![0; partitions as usize],
        replay_floor: o.marks.iter().map(|m| m.0).collect(),
        retained_at: Instant::now(),
        partitions,
    };
    let journal = std::thread::Builder::new()
        .name("rimd-journal".into())
        .spawn(move || {
            if let Some(c) = core {
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: c });
            }
            t.run(&stop);
        })
        .map_err(|e| PersistError::Thread("journal", e))?;
    Ok(vec![journal, writer])
}

impl JournalThread {
    fn run(&mut self, stop: &AtomicBool) {
        info!("journal thread started");
        loop {
            // How much each reflex ring holds *before* ingest's ring is drained: every
            // prediction counted here was made after its event's journal entry was
            // pushed, so the metric names it uses are known by the time it is read.
            let reflex_ready: Vec<usize> = self.inputs.reflex.iter().map(|r| r.slots()).collect();
            let mut work = self.drain_ingest();
            for (k, ready) in reflex_ready.into_iter().enumerate() {
                work += self.drain_reflex(k, ready);
            }
            let ingest_dry = self.inputs.ingest.is_empty();
            if self.unsynced_bytes > 0 {
                self.sync();
            } else {
                // Markers after turns that journaled nothing (duplicates, refusals): all
                // before them is already synced.
                self.publish_marker();
            }
            let stopping = stop.load(Ordering::Relaxed);
            if self.unsynced_bytes == 0 && !stopping && self.handoff_due() {
                self.hand_off(false);
            }
            if self.retained_at.elapsed() >= RETAIN_EVERY {
                self.retained_at = Instant::now();
                if let Err(e) = self.journal.retain(unix_ms()) {
                    warn!(error = %e, "journal retention failed");
                }
            }
            if stopping && work == 0 && ingest_dry && self.unsynced_bytes == 0 && self.reflex_dry() {
                self.hand_off(true);
                break;
            }
            if work == 0 {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
        // Dropping the sender ends the writer after it committed what it has.
        info!("journal thread stopped");
    }

    fn reflex_dry(&self) -> bool {
        self.inputs.reflex.iter().all(|r| r.is_empty())
    }

    fn handoff_due(&self) -> bool {
        let pending = self.batch.capsules.len() + self.batch.decisions.len() + self.batch.scores.len();
        let checkpoint_due = self.checkpointed_at.elapsed() >= self.checkpoint_every;
        // An empty batch is not worth an fsync, unless a checkpoint is due.
        pending >= self.store_batch_max
            || (self.handed_at.elapsed() >= self.store_interval && (pending > 0 || checkpoint_due))
    }

    /// Drains ingest's ring until it is dry or `commit_bytes` are waiting for a sync:
    /// everything that arrived while the last sync ran goes into the next one (group
    /// commit), however long that sync took.
    fn drain_ingest(&mut self) -> usize {
        let mut n = 0;
        while self.unsynced_bytes < self.commit_bytes {
            let head = match entry::pop(&mut self.inputs.ingest, &mut self.payload) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => fatal("ingest's journal ring is corrupt (a bug)", &e),
            };
            n += 1;
            match head.kind {
                KIND_EVENT => self.append(u32::from(head.partition), head.aux),
                KIND_MARKER => {
                    self.last_marker = head.aux;
                    // What this marker stands for: the journal as it is now, not as it
                    // will be at the sync (more events may be appended before it).
                    for (p, end) in self.last_marker_ends.iter_mut().enumerate() {
                        *end = self.journal.end(p as u32);
                    }
                }
                other => warn!(kind = other, "unexpected entry on ingest's journal ring"),
            }
        }
        n
    }

    fn append(&mut self, partition: u32, time_ms: u64) {
        let payload = std::mem::take(&mut self.payload);
        let pos = match self.journal.append(partition, &payload, time_ms) {
            Ok(pos) => pos,
            Err(e) => {
                self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                fatal("journal append failed", &e);
            }
        };
        self.stats.journal_events.fetch_add(1, Ordering::Relaxed);
        self.stats
            .journal_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.unsynced_bytes += payload.len() as u64;
        match rim_journal::event::decode(&payload) {
            Ok(rec) => {
                learn_names(&mut self.names, &rec);
                roll(&mut self.rollup, partition, pos, &rec, &mut self.closed, &self.stats);
            }
            Err(e) => error!(error = %e, partition, pos, "journaled event does not decode (a bug)"),
        }
        self.payload = payload;
        self.score_closed();
    }

    /// Moves closed observed capsules into the batch, scoring the predictions of their
    /// windows.
    fn score_closed(&mut self) {
        for c in self.closed.drain(..) {
            if let CapsuleBody::Observed(obs) = &c.body {
                let key = (c.key.scope_id.clone(), c.key.timestamp, c.key.resolution);
                if let Some(pred) = self.waiting.remove(&key) {
                    let scores = rim_capsule::score(&pred, obs);
                    self.batch
                        .scores
                        .push((c.key.scope_id.clone(), pred.predictor.clone(), scores));
                    self.stats.scored.fetch_add(1, Ordering::Relaxed);
                } else if self.predicting {
                    // Its prediction may still be on the reflex ring (ingest's ring is
                    // drained first): keep the observation until it comes.
                    bound(&mut self.unscored, self.waiting_max);
                    self.unscored.insert(key, obs.clone());
                }
            }
            self.batch.capsules.push(c);
        }
    }

    fn drain_reflex(&mut self, k: usize, ready: usize) -> usize {
        let mut n = 0;
        let mut consumed = 0;
        while consumed < ready && n < TURN_ENTRIES {
            let head = match entry::pop(&mut self.inputs.reflex[k], &mut self.payload) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => fatal("a reflex ring to the journal is corrupt (a bug)", &e),
            };
            consumed += entry::HEAD_BYTES + head.len as usize;
            n += 1;
            match head.kind {
                KIND_DECISION => {
                    self.batch
                        .decisions
                        .push((head.aux as u16, decision_seq(&self.payload), self.payload.clone()))
                }
                KIND_PREDICTION => self.take_prediction(),
                other => warn!(kind = other, "unexpected entry on a reflex ring"),
            }
        }
        n
    }

    fn take_prediction(&mut self) {
        let guess = match predict::decode(&self.payload) {
            Ok(g) => g,
            Err(e) => {
                error!(error = %e, "prediction does not decode (a bug)");
                return;
            }
        };
        let series = guess
            .series
            .iter()
            .map(|s| PredictedSeries {
                name: series_name(&self.names, s.key),
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
        let wkey = (guess.node_id.to_owned(), guess.window_ms, guess.resolution);
        if let Some(obs) = self.unscored.remove(&wkey) {
            // The window closed before its prediction was read: score it now.
            let scores = rim_capsule::score(&prediction, &obs);
            self.batch
                .scores
                .push((wkey.0.clone(), prediction.predictor.clone(), scores));
            self.stats.scored.fetch_add(1, Ordering::Relaxed);
        } else {
            bound(&mut self.waiting, self.waiting_max);
            self.waiting.insert(wkey, prediction.clone());
        }
        let key = CapsuleKey {
            scope_id: guess.node_id.to_owned(),
            timestamp: guess.window_ms,
            resolution: guess.resolution,
            vantage: Vantage::Predicted,
        };
        self.batch.capsules.push(Capsule {
            key,
            body: CapsuleBody::Predicted(prediction),
            created_ms: unix_ms() as i64,
        });
        self.stats.predictions.fetch_add(1, Ordering::Relaxed);
    }

    fn sync(&mut self) {
        let t0 = Instant::now();
        if let Err(e) = self.journal.sync() {
            self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
            fatal("journal sync failed", &e);
        }
        let ns = t0.elapsed().as_nanos() as u64;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats.sync_ns.fetch_add(ns, Ordering::Relaxed);
        self.stats.sync_ns_max.fetch_max(ns, Ordering::Relaxed);
        self.unsynced_bytes = 0;
        self.publish_marker();
    }

    /// The watermarks of a checkpoint taken now (everything appended is synced):
    /// `committed_to` = the journal's ends, which the roll-up copy is complete to;
    /// `replay_from` = the previous checkpoint's ends, so that recovery feeds the events
    /// from there to ingest's dedup windows and the reflex state, and never later than
    /// the ends as of the last marker producers were told is durable: an event synced just
    /// before a crash but not yet acknowledged is recognised when its producer resends it.
    fn checkpoint_watermarks(&mut self) -> Vec<Watermark> {
        let ends: Vec<u64> = (0..self.partitions).map(|p| self.journal.durable(p)).collect();
        let previous = std::mem::replace(&mut self.checkpoint_ends, ends);
        let settled = self.settled_ends().unwrap_or_else(|| self.replay_floor.clone());
        self.replay_floor.clone_from(&settled);
        (0..self.partitions)
            .map(|p| {
                let i = p as usize;
                let end = self.checkpoint_ends[i];
                let from = previous.get(i).copied().unwrap_or(end).min(end);
                Watermark {
                    partition: p,
                    replay_from: from.min(settled.get(i).copied().unwrap_or(0)),
                    committed_to: end,
                }
            })
            .collect()
    }

    /// Tells ingest the last marker read is durable (everything before it is synced), and
    /// remembers the journal's ends under it.
    fn publish_marker(&mut self) {
        if self.last_marker == self.published_marker {
            return;
        }
        self.published_marker = self.last_marker;
        if self.marker_ends.len() >= MARKER_ENDS_MAX {
            // Keep the oldest and thin the rest: replay_from only needs a position at or
            // before the settled marker's.
            self.marker_ends.remove(1);
        }
        self.marker_ends
            .push_back((self.last_marker, self.last_marker_ends.clone()));
        self.inputs.durable_marker.store(self.last_marker, Ordering::Release);
    }

    /// The journal ends as of the newest marker ingest has acknowledged to producers: an
    /// event after them may be synced but not yet acknowledged, so its producer may send
    /// it again after a crash, and recovery must replay it into the dedup windows.
    fn settled_ends(&mut self) -> Option<Vec<u64>> {
        let settled = self.inputs.settled_marker.load(Ordering::Acquire);
        let mut found = None;
        while let Some((m, _)) = self.marker_ends.front() {
            if *m > settled {
                break;
            }
            found = self.marker_ends.pop_front().map(|(_, ends)| ends);
        }
        if let Some(ends) = &found {
            // Keep it as the floor for the next checkpoint too.
            self.marker_ends.push_front((settled, ends.clone()));
        }
        found
    }

    /// Sends the batch (everything in it is synced), with a roll-up checkpoint and the
    /// watermarks when one is due (and always at the end: `final_`).
    fn hand_off(&mut self, final_: bool) {
        self.handed_at = Instant::now();
        let mut rollup_copy = None;
        // A scan of every node: idle windows need closing within the grace, not at every
        // hand-off.
        // A scan of every node: idle windows need closing within the grace, not at every
        // hand-off.
        if self.flushed_at.elapsed() >= FLUSH_EVERY {
            self.flushed_at = Instant::now();
            self.rollup.flush_idle(unix_ms(), &mut self.closed);
            self.score_closed();
        }
        // The roll-up's open windows with the positions they are complete to (everything
        // appended is synced here): recovery restores them and reads the journal only
        // from there.
        if final_ || self.checkpointed_at.elapsed() >= self.checkpoint_every {
            self.checkpointed_at = Instant::now();
            // A copy (milliseconds) goes to the writer, which serialises it (tens of
            // milliseconds for 10k nodes) off this thread.
            rollup_copy = Some(Box::new(self.rollup.clone()));
            self.batch.watermarks = self.checkpoint_watermarks();
        }
        self.stats.late_events.store(self.rollup.late(), Ordering::Relaxed);
        let batch = std::mem::take(&mut self.batch);
        self.stats
            .store_pending
            .fetch_add(batch.capsules.len() as u64, Ordering::Relaxed);
        let handoff = Handoff {
            batch,
            rollup: rollup_copy,
        };
        match self.to_writer.try_send(handoff) {
            Ok(()) => {}
            Err(TrySendError::Full(handoff)) => {
                // The writer lags: wait for it (the rings back up behind us, producers
                // see Full; nothing is dropped).
                if self.to_writer.send(handoff).is_err() {
                    error!("store writer is gone; capsules are not being stored");
                }
            }
            Err(TrySendError::Disconnected(_)) => error!("store writer is gone; capsules are not being stored"),
        }
    }
}

/// Keeps a map of windows under `max` entries: when full, the older half (by window
/// start) goes — predictions or observations whose other half never came.
fn bound<V>(map: &mut HashMap<(String, i64, u32), V>, max: usize) {
    if map.len() < max.max(2) {
        return;
    }
    let mut starts: Vec<i64> = map.keys().map(|k| k.1).collect();
    starts.sort_unstable();
    let cut = starts[starts.len() / 2];
    map.retain(|k, _| k.1 > cut);
}

/// Remembers the names of an event's metrics by hash (predictions name series by hash).
pub(super) fn learn_names(names: &mut HashMap<u64, String>, rec: &EventRecord<'_>) {
    for (name, _) in rec.metrics() {
        // The key the reflex state stores the series under, as predictions carry it.
        let h = crate::reflex::state::metric_key(rim_rules::name_hash(name).max(1));
        names.entry(h).or_insert_with(|| name.to_owned());
    }
}

/// Rolls one journaled event up.
pub(super) fn roll(
    rollup: &mut Rollup,
    partition: u32,
    pos: u64,
    rec: &EventRecord<'_>,
    out: &mut Vec<Capsule>,
    stats: &PersistStats,
) {
    let mut metrics: [(&str, f64); METRICS_MAX] = [("", 0.0); METRICS_MAX];
    let mut n = 0;
    for m in rec.metrics().take(METRICS_MAX) {
        metrics[n] = m;
        n += 1;
    }
    let obs = Observation {
        timestamp: rec.timestamp,
        price: rec.price,
        volume: rec.volume,
        stress: rec.stress,
        status: rec.status,
        metrics: &metrics[..n],
    };
    // Late events are counted by the roll-up itself (`Rollup::late`).
    let _: PushOutcome = rollup.push(partition, rec.rim_node_id, pos, rec.received_ms, &obs, out);
    let _ = stats;
}

fn series_name(names: &HashMap<u64, String>, key: u64) -> String {
    match key {
        1 => "price".into(),
        2 => "volume".into(),
        3 => "stress".into(),
        k => names.get(&k).cloned().unwrap_or_else(|| format!("metric#{k:016x}")),
    }
}

/// The chain sequence of a decision record (bytes 8..16), 0 if it is too short.
fn decision_seq(b: &[u8]) -> u64 {
    b.get(8..16).map_or(0, |s| {
        let mut w = [0u8; 8];
        w.copy_from_slice(s);
        u64::from_le_bytes(w)
    })
}
