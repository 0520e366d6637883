//! The redb store. See the crate docs for the table layout and the write protocol.

use std::path::Path;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::accuracy::AccuracyAgg;
use crate::codec;
use crate::error::{ModelError, StoreError};
use crate::model::{Capsule, CapsuleId, Vantage};
use crate::rollup::Checkpoint;

pub(crate) const CAPSULES: TableDefinition<u64, &[u8]> = TableDefinition::new("capsules");
/// (the id's first 8 bytes, big-endian; seq) → (): lookups by id read the few rows under one
/// prefix and compare the whole id of each capsule, so a prefix collision costs a read,
/// never a wrong answer. 16-byte keys fill a B-tree page with 2.5× the entries of
/// `[u8; 32] → u64`, and the random inserts of a batch dirty fewer pages.
pub(crate) const BY_ID: TableDefinition<(u64, u64), ()> = TableDefinition::new("by_id_prefix");
pub(crate) type ScopeKey<'a> = (&'a str, u32, &'a str, i64);
pub(crate) const BY_SCOPE: TableDefinition<ScopeKey<'static>, u64> = TableDefinition::new("by_scope");
/// (expires_at_ms, first seq) → last seq: one row per run of consecutive sequence numbers
/// written together with the same expiry (a batch's capsules of one window and resolution),
/// so retention's index costs a row per window, not per capsule.
pub(crate) const BY_EXPIRY: TableDefinition<(i64, u64), u64> = TableDefinition::new("expiry_runs");
/// Format 2's id index and expiry rows, migrated on open (see [`migrate_v2`]).
const V2_BY_ID: TableDefinition<&[u8; 32], u64> = TableDefinition::new("by_id");
const V2_BY_EXPIRY: TableDefinition<(i64, u64), ()> = TableDefinition::new("by_expiry");
/// The decision log's index: (shard, first chain seq of a run) → (log position of the
/// run's first record, last chain seq, records in the run).
const DECISION_INDEX: TableDefinition<(u16, u64), (u64, u64, u32)> = TableDefinition::new("decision_index");
/// Accuracy per node: scope → the node's aggregates (see [`codec::encode_accuracy_row`]).
const ACCURACY: TableDefinition<&str, &[u8]> = TableDefinition::new("accuracy");
/// Per journal stream: (replay_from, committed_to).
const WATERMARKS: TableDefinition<u32, (u64, u64)> = TableDefinition::new("watermarks");
/// The roll-up checkpoint that goes with the watermarks: chunk → rows, and
/// [`CHECKPOINT_HEADER`] → the header.
const CHECKPOINT: TableDefinition<u32, &[u8]> = TableDefinition::new("rollup_checkpoint");
/// Key of the checkpoint's header row.
const CHECKPOINT_HEADER: u32 = u32::MAX;

/// A stored roll-up checkpoint: its header and its chunks (number, bytes) in order.
pub type StoredCheckpoint = (Vec<u8>, Vec<(u32, Vec<u8>)>);
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const META_FORMAT_VERSION: &str = "format_version";
pub(crate) const META_NEXT_SEQ: &str = "next_seq";
/// Version of the table layout and value encodings written by this build (2: decisions
/// live in the decision log and are indexed here; accuracy per node; chunked checkpoint;
/// 3: the id index keyed by the id's prefix, expiry indexed per run of sequence numbers).
/// A format-2 store is migrated when opened.
pub const FORMAT_VERSION: u64 = 3;

/// Rows one [`Store::retain`] call deletes at most (bounded work per call).
pub const RETAIN_ROWS_MAX: usize = 10_000;
/// Rows one [`Store::history`] call returns at most, whatever the query's limit.
pub const HISTORY_ROWS_MAX: usize = 10_000;

const DAY_MS: u64 = 86_400_000;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Retention by resolution (seconds → ms) for OBSERVED and PREDICTED capsules. Other
    /// resolutions, and every API-created (named vantage) capsule, keep
    /// [`StoreConfig::DEFAULT_RETENTION_MS`]. A capsule's expiry is fixed when it is written.
    pub retention_ms_by_resolution: Vec<(u32, u64)>,
    /// Bytes of redb's page cache (redb's own default is 1 GiB, which the daemon's RSS
    /// would show).
    pub cache_bytes: usize,
}

impl StoreConfig {
    pub const DEFAULT_RETENTION_MS: u64 = 30 * DAY_MS;

    pub fn retention_ms(&self, resolution: u32, vantage: &Vantage) -> u64 {
        if matches!(vantage, Vantage::Named(_)) {
            return Self::DEFAULT_RETENTION_MS;
        }
        self.retention_ms_by_resolution
            .iter()
            .find(|(r, _)| *r == resolution)
            .map_or(Self::DEFAULT_RETENTION_MS, |(_, ms)| *ms)
    }

    /// Window start + retention: when `retain` may delete the capsule.
    pub fn expires_at_ms(&self, c: &Capsule) -> i64 {
        let ms = i64::try_from(self.retention_ms(c.key.resolution, &c.key.vantage)).unwrap_or(i64::MAX);
        c.key.timestamp.saturating_add(ms)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_ms_by_resolution: vec![(1, DAY_MS), (60, 30 * DAY_MS)],
            cache_bytes: 64 << 20,
        }
    }
}

/// How far a journal stream is safely persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watermark {
    /// The journal stream.
    pub stream: u32,
    /// Recovery re-reads the stream from here (state that is not checkpointed).
    pub replay_from: u64,
    /// Everything before this position is reflected in committed capsules and the
    /// checkpoint committed with this watermark.
    pub committed_to: u64,
}

/// A run of one shard's decisions in the decision log, indexed per commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionRun {
    /// The reflex shard.
    pub shard: u16,
    /// Chain seq of the run's first decision.
    pub first_seq: u64,
    /// Chain seq of its last.
    pub last_seq: u64,
    /// Log position of its first record.
    pub pos: u64,
    /// Records in the run.
    pub count: u32,
}

/// One hand-off's worth of writes, committed in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub capsules: Vec<Capsule>,
    /// Index entries of decisions made durable in the decision log.
    pub decision_runs: Vec<DecisionRun>,
    pub watermarks: Vec<Watermark>,
    /// The roll-up's state as of the watermarks (written with them, so the two always match).
    pub checkpoint: Option<Checkpoint>,
}

impl Batch {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.capsules.clear();
        self.decision_runs.clear();
        self.watermarks.clear();
        self.checkpoint = None;
    }

    pub fn is_empty(&self) -> bool {
        self.capsules.is_empty()
            && self.decision_runs.is_empty()
            && self.watermarks.is_empty()
            && self.checkpoint.is_none()
    }

    /// Moves `more` into this batch: capsules, runs, checkpoint chunks and accuracy rows
    /// appended (the store writes them in order, so a later chunk or row of the same key
    /// replaces an earlier one); later watermarks and checkpoint header supersede.
    pub fn merge(&mut self, mut more: Batch) {
        self.capsules.append(&mut more.capsules);
        self.decision_runs.append(&mut more.decision_runs);
        if !more.watermarks.is_empty() {
            self.watermarks = more.watermarks;
        }
        match (&mut self.checkpoint, more.checkpoint) {
            (Some(cp), Some(mut newer)) => {
                cp.header = newer.header;
                cp.chunk_count = newer.chunk_count;
                cp.chunks.append(&mut newer.chunks);
                cp.accuracy.append(&mut newer.accuracy);
            }
            (slot @ None, Some(newer)) => *slot = Some(newer),
            (_, None) => {}
        }
    }
}

/// What [`Store::write`] did with the batch's capsules. Everything not listed here committed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchOutcome {
    pub inserted: usize,
    /// Already stored with the same content (idempotent success).
    pub existing: usize,
    /// Stored with different content: not written.
    pub conflicts: Vec<CapsuleId>,
    /// Broke the model's rules (validated before the transaction): not written.
    pub invalid: Vec<(CapsuleId, ModelError)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Inserted,
    /// Already stored with the same content.
    Existing,
}

/// A history range: one node, resolution and vantage, window starts in `[from_ms, to_ms)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    pub scope_id: String,
    pub resolution: u32,
    pub vantage: Vantage,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Capped at [`HISTORY_ROWS_MAX`].
    pub limit: usize,
    /// Newest first.
    pub descending: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetainReport {
    pub deleted: u64,
    /// More expired rows remain: call again.
    pub more: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub capsules: u64,
    /// Runs in the decision index.
    pub decision_runs: u64,
    pub accuracy_rows: u64,
}

/// Capsules between two calls of [`Store::write_paced`]'s `breathe`.
pub const BREATHE_EVERY: usize = 64;

/// Calls `breathe` after every [`BREATHE_EVERY`] items of a pass (`k` counts them).
fn breathe_at(k: usize, breathe: &mut dyn FnMut()) {
    if k % BREATHE_EVERY == BREATHE_EVERY - 1 {
        breathe();
    }
}

/// The capsule store. `Send + Sync`: one writer thread calls [`Store::write`] while others
/// query; redb gives readers a consistent snapshot without blocking the writer.
#[derive(Debug)]
pub struct Store {
    db: Database,
    cfg: StoreConfig,
}

/// The capsule tables of one write transaction.
pub(crate) struct CapsuleTables<'t> {
    pub capsules: redb::Table<'t, u64, &'static [u8]>,
    pub by_id: redb::Table<'t, (u64, u64), ()>,
    pub by_scope: redb::Table<'t, ScopeKey<'static>, u64>,
    pub by_expiry: redb::Table<'t, (i64, u64), u64>,
    pub meta: redb::Table<'t, &'static str, u64>,
}

impl<'t> CapsuleTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(CapsuleTables {
            capsules: txn.open_table(CAPSULES)?,
            by_id: txn.open_table(BY_ID)?,
            by_scope: txn.open_table(BY_SCOPE)?,
            by_expiry: txn.open_table(BY_EXPIRY)?,
            meta: txn.open_table(META)?,
        })
    }

    pub(crate) fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get(META_NEXT_SEQ)?.map_or(0, |g| g.value()))
    }

    pub(crate) fn set_next_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        self.meta.insert(META_NEXT_SEQ, seq)?;
        Ok(())
    }
}

fn scope_key(c: &Capsule) -> ScopeKey<'_> {
    (
        c.key.scope_id.as_str(),
        c.key.resolution,
        c.key.vantage.as_str(),
        c.key.timestamp,
    )
}

/// The unit tests keep only the id's first byte, so that prefix collisions, which 64 bits
/// make vanishingly rare, happen within a few hundred capsules and their handling is tested.
const ID_PREFIX_SHIFT: u32 = if cfg!(test) { 56 } else { 0 };

/// The `by_id` key prefix of an id.
pub(crate) fn id_prefix(id: &CapsuleId) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_be_bytes(head) >> ID_PREFIX_SHIFT
}

/// Every `by_id` key range that may hold `id`.
fn id_range(id: &CapsuleId) -> std::ops::RangeInclusive<(u64, u64)> {
    let p = id_prefix(id);
    (p, 0)..=(p, u64::MAX)
}

fn stored_capsule(t: &CapsuleTables<'_>, seq: u64) -> Result<Capsule, StoreError> {
    let stored = t
        .capsules
        .get(seq)?
        .ok_or_else(|| missing_row("by_scope", format!("a scope key points to missing capsule row {seq}")))?;
    codec::decode_capsule(stored.value())
}

/// The sequence number of the stored capsule `id` in a write transaction, if any.
fn find_seq(t: &CapsuleTables<'_>, id: &CapsuleId) -> Result<Option<u64>, StoreError> {
    let mut candidates = Vec::new();
    for entry in t.by_id.range(id_range(id))? {
        candidates.push(entry?.0.value().1);
    }
    for seq in candidates {
        if is_the_one(&stored_capsule(t, seq)?, id, seq)? {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}

/// Whether the capsule a `by_id` row for `id` led to is `id`'s: another id under the same
/// prefix is a collision (false); another prefix is a corrupt index.
fn is_the_one(found: &Capsule, id: &CapsuleId, seq: u64) -> Result<bool, StoreError> {
    let found_id = found.id();
    if id_prefix(&found_id) != id_prefix(id) {
        return Err(missing_row(
            "by_id",
            format!("{id} points to row {seq}, which holds {found_id}"),
        ));
    }
    Ok(found_id == *id)
}

/// Folds one new row into the batch's current expiry run, writing the run it ends.
pub(crate) fn extend_expiry_run(
    t: &mut CapsuleTables<'_>,
    run: &mut Option<(i64, u64, u64)>,
    expires_at: i64,
    seq: u64,
) -> Result<(), StoreError> {
    match run {
        Some((e, _, last)) if *e == expires_at && last.checked_add(1) == Some(seq) => *last = seq,
        _ => {
            if let Some((e, first, last)) = run.replace((expires_at, seq, seq)) {
                t.by_expiry.insert((e, first), last)?;
            }
        }
    }
    Ok(())
}

/// Moves a format-2 store's id index and expiry rows to format 3's tables, in the opening
/// transaction (all or nothing).
fn migrate_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    {
        let old = txn.open_table(V2_BY_ID)?;
        let mut by_id = txn.open_table(BY_ID)?;
        for entry in old.iter()? {
            let (id, seq) = entry?;
            by_id.insert((id_prefix(&CapsuleId(*id.value())), seq.value()), ())?;
        }
        let old = txn.open_table(V2_BY_EXPIRY)?;
        let mut by_expiry = txn.open_table(BY_EXPIRY)?;
        for entry in old.iter()? {
            let (k, _) = entry?;
            let (expires_at, seq) = k.value();
            by_expiry.insert((expires_at, seq), seq)?;
        }
    }
    txn.delete_table(V2_BY_ID)?;
    txn.delete_table(V2_BY_EXPIRY)?;
    Ok(())
}

fn immediate_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    // Every batch is acknowledged as durable; redb 4 offers only None and Immediate.
    txn.set_durability(Durability::Immediate)?;
    durable_quick_repair(&mut txn);
    Ok(txn)
}

/// Every durable commit records redb's allocator state and commits in two phases, so that
/// opening the file after a crash loads that state instead of repairing: a repair checks
/// every page's checksum and walks every tree, a cost that grows with the file (in the
/// soak, 0.5 s at 160 MB, paid by every restart after a SIGKILL). Non-durable commits do
/// not need it: after a crash the file is as of its last durable commit.
fn durable_quick_repair(txn: &mut WriteTransaction) {
    txn.set_quick_repair(true);
}

fn missing_row(table: &'static str, what: String) -> StoreError {
    StoreError::Corrupt { table, reason: what }
}

impl Store {
    /// Opens the file, creating it (and the tables) when absent.
    pub fn open(path: &Path, cfg: StoreConfig) -> Result<Self, StoreError> {
        let db = Database::builder().set_cache_size(cfg.cache_bytes).create(path)?;
        Self::init(db, cfg)
    }

    /// Opens a store over any redb backend (crash tests use [`crate::faulty::FaultyBackend`]).
    pub fn open_with_backend(backend: impl redb::StorageBackend, cfg: StoreConfig) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(cfg.cache_bytes)
            .create_with_backend(backend)?;
        Self::init(db, cfg)
    }

    fn init(db: Database, cfg: StoreConfig) -> Result<Self, StoreError> {
        let txn = immediate_write(&db)?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(META_FORMAT_VERSION)?.map(|g| g.value());
            match found {
                None => {
                    meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(2) => {
                    migrate_v2(&txn)?;
                    meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)?;
                }
                Some(found) => {
                    return Err(StoreError::FormatVersion {
                        found,
                        expected: FORMAT_VERSION,
                    })
                }
            }
            // Opening creates: readers can then assume every table exists.
            txn.open_table(CAPSULES)?;
            txn.open_table(BY_ID)?;
            txn.open_table(BY_SCOPE)?;
            txn.open_table(BY_EXPIRY)?;
            txn.open_table(DECISION_INDEX)?;
            txn.open_table(ACCURACY)?;
            txn.open_table(WATERMARKS)?;
            txn.open_table(CHECKPOINT)?;
        }
        txn.commit()?;
        Ok(Store { db, cfg })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Commits the whole batch in one `Durability::Immediate` transaction: capsules put
    /// idempotently (conflicts and invalid capsules listed, not written; the rest commits),
    /// decision runs indexed, the checkpoint (and the accuracy it carries) and the
    /// watermarks set.
    pub fn write(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        self.write_with(batch, true)
    }

    /// [`Store::write`], durable when it returns only if `durable`: otherwise the batch is
    /// visible to readers at once but reaches the disk with the next durable commit (any
    /// later `write_with(_, true)`, [`Store::put`], cursor write, or retention pass). After
    /// a crash the store is as of its last durable commit, whole: a caller that can rebuild
    /// what followed (from a journal) saves a sync per batch.
    pub fn write_with(&self, batch: &Batch, durable: bool) -> Result<BatchOutcome, StoreError> {
        self.write_paced(batch, durable, &mut || {})
    }

    /// [`Store::write_with`], calling `breathe` between every [`BREATHE_EVERY`] capsules
    /// of the batch: a caller sharing its core with latency-critical work gives the core
    /// away there (the transaction stays open meanwhile; nothing else may write).
    pub fn write_paced(
        &self,
        batch: &Batch,
        durable: bool,
        breathe: &mut dyn FnMut(),
    ) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let mut txn = self.db.begin_write()?;
        if durable {
            txn.set_durability(Durability::Immediate)?;
            durable_quick_repair(&mut txn);
        } else {
            txn.set_durability(Durability::None)?;
        }
        {
            let mut tables = CapsuleTables::open(&txn)?;
            self.put_all(&mut tables, &batch.capsules, &mut outcome, breathe)?;
        }
        write_decision_runs(&txn, &batch.decision_runs)?;
        if let Some(cp) = &batch.checkpoint {
            write_checkpoint(&txn, cp)?;
        }
        write_watermarks(&txn, &batch.watermarks)?;
        txn.commit()?;
        Ok(outcome)
    }

    /// Puts one capsule (API-created) in its own transaction.
    pub fn put(&self, c: &Capsule) -> Result<PutOutcome, StoreError> {
        c.validate()?;
        let txn = immediate_write(&self.db)?;
        let mut outcome = BatchOutcome::default();
        {
            let mut tables = CapsuleTables::open(&txn)?;
            self.put_all(&mut tables, std::slice::from_ref(c), &mut outcome, &mut || {})?;
        }
        if outcome.inserted == 1 {
            txn.commit()?;
            Ok(PutOutcome::Inserted)
        } else if outcome.existing == 1 {
            Ok(PutOutcome::Existing)
        } else {
            Err(StoreError::Conflict { id: c.id() })
        }
    }

    /// The idempotent put of many capsules. Capsule `i` of the batch gets sequence number
    /// `next_seq + i` (arrival order: the outbox reads capsules in the order they were made,
    /// and a window's capsules form one expiry run); invalid, existing and conflicting ones
    /// leave gaps, which readers skip. One `by_scope` insert per capsule is also the
    /// idempotency check (the scope key and the id are one-to-one): it returns the sequence
    /// number already there, and then the mapping is put back and the stored capsule compared.
    /// Each index is written in its own key order, because B-tree inserts in key order touch
    /// each page once instead of hopping around the tree.
    fn put_all(
        &self,
        t: &mut CapsuleTables<'_>,
        caps: &[Capsule],
        outcome: &mut BatchOutcome,
        breathe: &mut dyn FnMut(),
    ) -> Result<(), StoreError> {
        let first_seq = t.next_seq()?;
        let end_seq = u64::try_from(caps.len())
            .ok()
            .and_then(|n| first_seq.checked_add(n))
            .ok_or(StoreError::SequenceExhausted)?;
        let mut pending: Vec<usize> = Vec::with_capacity(caps.len());
        for (i, c) in caps.iter().enumerate() {
            match c.validate() {
                Ok(()) => pending.push(i),
                Err(e) => outcome.invalid.push((c.id(), e)),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        pending.sort_unstable_by(|a, b| scope_key(&caps[*a]).cmp(&scope_key(&caps[*b])));
        let mut new = vec![false; caps.len()];
        for (k, &i) in pending.iter().enumerate() {
            breathe_at(k, breathe);
            let c = &caps[i];
            let key = scope_key(c);
            let Some(existing) = t.by_scope.insert(key, first_seq + i as u64)?.map(|g| g.value()) else {
                new[i] = true;
                continue;
            };
            t.by_scope.insert(key, existing)?;
            let same = if existing >= first_seq {
                // Inserted earlier in this batch (a duplicate inside the batch).
                let earlier = usize::try_from(existing - first_seq)
                    .ok()
                    .and_then(|k| caps.get(k))
                    .ok_or_else(|| missing_row("by_scope", format!("row {existing} is past the batch")))?;
                earlier.same_content(c)
            } else {
                stored_capsule(t, existing)?.same_content(c)
            };
            if same {
                outcome.existing += 1;
            } else {
                outcome.conflicts.push(c.id());
            }
        }
        let mut ids: Vec<(u64, u64)> = Vec::with_capacity(pending.len());
        let mut run = None;
        let mut buf = Vec::with_capacity(512);
        for (k, (i, c)) in caps.iter().enumerate().filter(|(i, _)| new[*i]).enumerate() {
            breathe_at(k, breathe);
            let seq = first_seq + i as u64;
            codec::encode_capsule_into(c, &mut buf)?;
            t.capsules.insert(seq, buf.as_slice())?;
            ids.push((id_prefix(&c.id()), seq));
            extend_expiry_run(t, &mut run, self.cfg.expires_at_ms(c), seq)?;
        }
        if let Some((e, first, last)) = run {
            t.by_expiry.insert((e, first), last)?;
        }
        if ids.is_empty() {
            return Ok(());
        }
        outcome.inserted += ids.len();
        ids.sort_unstable();
        for (k, key) in ids.into_iter().enumerate() {
            breathe_at(k, breathe);
            t.by_id.insert(key, ())?;
        }
        t.set_next_seq(end_seq)?;
        Ok(())
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    pub fn get(&self, id: &CapsuleId) -> Result<Option<Capsule>, StoreError> {
        let txn = self.read()?;
        let by_id = txn.open_table(BY_ID)?;
        let capsules = txn.open_table(CAPSULES)?;
        for entry in by_id.range(id_range(id))? {
            let seq = entry?.0.value().1;
            let capsule = load(&capsules, seq)?;
            if is_the_one(&capsule, id, seq)? {
                return Ok(Some(capsule));
            }
        }
        Ok(None)
    }

    /// Deletes one capsule (`DELETE /capsules/{id}`); false when absent. Its expiry run is
    /// left for [`Store::retain`], which skips sequence numbers whose capsule is gone.
    pub fn delete(&self, id: &CapsuleId) -> Result<bool, StoreError> {
        let txn = immediate_write(&self.db)?;
        {
            let mut t = CapsuleTables::open(&txn)?;
            let Some(seq) = find_seq(&t, id)? else {
                return Ok(false);
            };
            t.by_id.remove((id_prefix(id), seq))?;
            let removed = t.capsules.remove(seq)?.map(|g| g.value().to_vec());
            if let Some(bytes) = removed {
                let c = codec::decode_capsule(&bytes)?;
                t.by_scope.remove(scope_key(&c))?;
            }
        }
        txn.commit()?;
        Ok(true)
    }

    /// Capsules of one (scope, resolution, vantage) with window start in `[from_ms, to_ms)`,
    /// in time order (or reversed), at most `limit` (capped at [`HISTORY_ROWS_MAX`]).
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<Capsule>, StoreError> {
        let limit = q.limit.min(HISTORY_ROWS_MAX);
        if q.from_ms >= q.to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        let txn = self.read()?;
        let by_scope = txn.open_table(BY_SCOPE)?;
        let capsules = txn.open_table(CAPSULES)?;
        let v = q.vantage.as_str();
        let lo = (q.scope_id.as_str(), q.resolution, v, q.from_ms);
        let hi = (q.scope_id.as_str(), q.resolution, v, q.to_ms);
        let range = by_scope.range(lo..hi)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut push = |entry: Result<
            (redb::AccessGuard<'_, ScopeKey<'static>>, redb::AccessGuard<'_, u64>),
            redb::StorageError,
        >|
         -> Result<bool, StoreError> {
            let (_, seq) = entry?;
            out.push(load(&capsules, seq.value())?);
            Ok(out.len() < limit)
        };
        if q.descending {
            for entry in range.rev() {
                if !push(entry)? {
                    break;
                }
            }
        } else {
            for entry in range {
                if !push(entry)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The roll-up checkpoint stored with the watermarks, if any: its header and every
    /// chunk (number, bytes), in chunk order.
    pub fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(CHECKPOINT)?;
        let Some(header) = table.get(CHECKPOINT_HEADER)?.map(|v| v.value().to_vec()) else {
            return Ok(None);
        };
        let mut chunks = Vec::new();
        for entry in table.range(..CHECKPOINT_HEADER)? {
            let (k, v) = entry?;
            chunks.push((k.value(), v.value().to_vec()));
        }
        Ok(Some((header, chunks)))
    }

    pub fn watermarks(&self) -> Result<Vec<Watermark>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(WATERMARKS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let (replay_from, committed_to) = v.value();
            out.push(Watermark {
                stream: k.value(),
                replay_from,
                committed_to,
            });
        }
        Ok(out)
    }

    /// Runs of `shard`'s decisions in the decision log, from the run that holds `from_seq`
    /// (or the first after it) on, in sequence order, at most `limit`.
    pub fn decision_runs(&self, shard: u16, from_seq: u64, limit: usize) -> Result<Vec<DecisionRun>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(DECISION_INDEX)?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // The run that holds `from_seq` starts at or before it.
        let first = table
            .range((shard, 0)..=(shard, from_seq))?
            .next_back()
            .transpose()?
            .map(|(k, v)| run_of(k.value(), v.value()))
            .filter(|r| r.last_seq >= from_seq);
        let after = from_seq.saturating_add(1);
        out.extend(first);
        if after == 0 || from_seq == u64::MAX {
            return Ok(out);
        }
        for entry in table.range((shard, after)..=(shard, u64::MAX))? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            out.push(run_of(k.value(), v.value()));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The newest indexed run of `shard`.
    pub fn last_decision_run(&self, shard: u16) -> Result<Option<DecisionRun>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(DECISION_INDEX)?;
        let last = table.range((shard, 0)..=(shard, u64::MAX))?.next_back().transpose()?;
        Ok(last.map(|(k, v)| run_of(k.value(), v.value())))
    }

    /// Accuracy aggregates of one scope as of the last checkpoint: (predictor, series,
    /// aggregate), sorted.
    pub fn accuracy(&self, scope_id: &str) -> Result<Vec<(String, String, AccuracyAgg)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ACCURACY)?;
        let Some(row) = table.get(scope_id)? else {
            return Ok(Vec::new());
        };
        let mut out = codec::decode_accuracy_row(row.value())?;
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    /// Deletes up to [`RETAIN_ROWS_MAX`] capsules whose expiry (window start + retention)
    /// is at or before `now_ms`, oldest expiry first, in one transaction.
    pub fn retain(&self, now_ms: i64) -> Result<RetainReport, StoreError> {
        self.retain_bounded(now_ms, RETAIN_ROWS_MAX)
    }

    /// [`Store::retain`] with an explicit bound on rows per call (sequence numbers visited,
    /// deleted or already gone): a run longer than what is left of the bound is cut, its
    /// rest kept under its next sequence number.
    pub fn retain_bounded(&self, now_ms: i64, rows_max: usize) -> Result<RetainReport, StoreError> {
        let txn = immediate_write(&self.db)?;
        let mut report = RetainReport::default();
        {
            let mut t = CapsuleTables::open(&txn)?;
            let mut runs = Vec::new();
            let mut planned = 0u64;
            for entry in t.by_expiry.range(..=(now_ms, u64::MAX))? {
                if planned >= rows_max as u64 {
                    report.more = true;
                    break;
                }
                let (k, last) = entry?;
                let (expires_at, first) = k.value();
                let last = last.value();
                planned = planned.saturating_add(last.saturating_sub(first).saturating_add(1));
                runs.push((expires_at, first, last));
            }
            let mut budget = rows_max as u64;
            for (expires_at, first, last) in runs {
                t.by_expiry.remove((expires_at, first))?;
                let mut seq = first;
                while seq <= last {
                    if budget == 0 {
                        t.by_expiry.insert((expires_at, seq), last)?;
                        report.more = true;
                        break;
                    }
                    budget -= 1;
                    report.deleted += u64::from(remove_row(&mut t, seq)?);
                    let Some(next) = seq.checked_add(1) else { break };
                    seq = next;
                }
            }
        }
        txn.commit()?;
        Ok(report)
    }

    /// redb's own integrity check (page checksums and allocator state); repairs when it can.
    pub fn check_integrity(&mut self) -> Result<bool, StoreError> {
        Ok(self.db.check_integrity()?)
    }

    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let txn = self.read()?;
        Ok(StoreCounts {
            capsules: txn.open_table(CAPSULES)?.len()?,
            decision_runs: txn.open_table(DECISION_INDEX)?.len()?,
            accuracy_rows: txn.open_table(ACCURACY)?.len()?,
        })
    }
}

/// Removes capsule `seq` and its index rows; false when it was already gone (deleted through
/// the API).
fn remove_row(t: &mut CapsuleTables<'_>, seq: u64) -> Result<bool, StoreError> {
    let Some(bytes) = t.capsules.remove(seq)?.map(|g| g.value().to_vec()) else {
        return Ok(false);
    };
    let c = codec::decode_capsule(&bytes)?;
    t.by_id.remove((id_prefix(&c.id()), seq))?;
    t.by_scope.remove(scope_key(&c))?;
    Ok(true)
}

fn load(capsules: &redb::ReadOnlyTable<u64, &[u8]>, seq: u64) -> Result<Capsule, StoreError> {
    let row = capsules
        .get(seq)?
        .ok_or_else(|| missing_row("capsules", format!("index points to missing row {seq}")))?;
    codec::decode_capsule(row.value())
}

fn run_of(k: (u16, u64), v: (u64, u64, u32)) -> DecisionRun {
    DecisionRun {
        shard: k.0,
        first_seq: k.1,
        pos: v.0,
        last_seq: v.1,
        count: v.2,
    }
}

/// Writes each run's row, unless the row already holds a longer version of the run: a run
/// only grows (its decisions are appended; it is keyed by its first seq), and versions of
/// one run may reach the store out of order (the writer takes runs both from the journal
/// thread's mailbox and with hand-offs), so the row keeps the newest decision it has seen.
fn write_decision_runs(txn: &WriteTransaction, runs: &[DecisionRun]) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(DECISION_INDEX)?;
    for r in runs {
        let key = (r.shard, r.first_seq);
        let longer = table.get(key)?.is_some_and(|row| row.value().1 > r.last_seq);
        if !longer {
            table.insert(key, (r.pos, r.last_seq, r.count))?;
        }
    }
    Ok(())
}

/// The checkpoint's header and changed chunks, the rows of chunks past its end removed,
/// and the accuracy rows it carries.
fn write_checkpoint(txn: &WriteTransaction, cp: &Checkpoint) -> Result<(), StoreError> {
    let mut table = txn.open_table(CHECKPOINT)?;
    table.insert(CHECKPOINT_HEADER, cp.header.as_slice())?;
    // Merged batches hold a chunk (and a node's accuracy) once per step that wrote it:
    // only the newest is written.
    let mut written = std::collections::HashSet::new();
    for (c, bytes) in cp.chunks.iter().rev() {
        if written.insert(*c) {
            table.insert(*c, bytes.as_slice())?;
        }
    }
    let stale: Vec<u32> = table
        .range(cp.chunk_count..CHECKPOINT_HEADER)?
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    for c in stale {
        table.remove(c)?;
    }
    let mut acc = txn.open_table(ACCURACY)?;
    let mut buf = Vec::new();
    let mut scopes = std::collections::HashSet::new();
    for (scope, rows) in cp.accuracy.iter().rev() {
        if scopes.insert(scope.as_str()) {
            codec::encode_accuracy_row(crate::rollup::PREDICTOR, rows, &mut buf);
            acc.insert(scope.as_str(), buf.as_slice())?;
        }
    }
    Ok(())
}

fn write_watermarks(txn: &WriteTransaction, marks: &[Watermark]) -> Result<(), StoreError> {
    if marks.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(WATERMARKS)?;
    for w in marks {
        table.insert(w.stream, (w.replay_from, w.committed_to))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The Kafka bridge's outbox: what it reads from the store and where it stands.
//
// The store is the outbox: capsules under their rising sequence and the decisions' audit
// log are read in order from a cursor, and the cursors (the next sequence not yet delivered,
// per stream) live in their own small table, written with `Durability::Immediate` so that a
// restarted bridge resumes exactly where the delivery reports left it.

/// Outbox cursors: stream name → the next sequence to deliver.
const OUTBOX_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("outbox_cursors");

/// Rows one [`Store::capsules_since`] call returns at most, whatever the limit asked.
pub const OUTBOX_ROWS_MAX: usize = 10_000;

impl Store {
    /// Capsules with a sequence number at or after `seq`, in sequence order, at most `limit`
    /// (capped at [`OUTBOX_ROWS_MAX`]). Sequences of deleted capsules are skipped.
    pub fn capsules_since(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Capsule)>, StoreError> {
        let limit = limit.min(OUTBOX_ROWS_MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let txn = self.read()?;
        let capsules = txn.open_table(CAPSULES)?;
        for entry in capsules.range(seq..)? {
            let (k, v) = entry?;
            out.push((k.value(), codec::decode_capsule(v.value())?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The shards that have decisions in the audit log, ascending.
    pub fn decision_shards(&self) -> Result<Vec<u16>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(DECISION_INDEX)?;
        let mut out = Vec::new();
        let mut next: u32 = 0;
        // One range lookup per shard present: skip straight to the next shard's first key.
        while let Ok(shard) = u16::try_from(next) {
            let Some(entry) = table.range((shard, 0)..)?.next() else {
                break;
            };
            let found = entry?.0.value().0;
            out.push(found);
            next = u32::from(found) + 1;
        }
        Ok(out)
    }

    /// The outbox cursor of `stream`, if one was ever set.
    pub fn outbox_cursor(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.read()?;
        let table = match txn.open_table(OUTBOX_CURSORS) {
            Ok(t) => t,
            // Created by the first `set_outbox_cursors`; a store that never had one has none.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(stream)?.map(|g| g.value()))
    }

    /// Sets several outbox cursors in one durable transaction.
    pub fn set_outbox_cursors(&self, cursors: &[(&str, u64)]) -> Result<(), StoreError> {
        if cursors.is_empty() {
            return Ok(());
        }
        let txn = immediate_write(&self.db)?;
        {
            let mut table = txn.open_table(OUTBOX_CURSORS)?;
            for (stream, value) in cursors {
                table.insert(*stream, *value)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod outbox_tests {
    use super::*;
    use crate::model::{CapsuleBody, CapsuleKey};

    fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("rim-capsule-outbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir.join("store.redb"), StoreConfig::default()).expect("open");
        (store, dir)
    }

    /// A paced write breathes between pieces of the batch (about one call per
    /// BREATHE_EVERY capsules in each of its passes) and writes what an unpaced one does.
    #[test]
    fn a_paced_write_breathes_and_writes_the_same() {
        let (paced, dir_a) = temp_store("paced");
        let (plain, dir_b) = temp_store("plain");
        let batch = Batch {
            capsules: (0..1000).map(|i| named(&format!("rim:a:b:{i}"), 60_000)).collect(),
            ..Batch::default()
        };
        let mut breaths = 0;
        let a = paced.write_paced(&batch, false, &mut || breaths += 1).expect("paced");
        let b = plain.write_with(&batch, false).expect("plain");
        assert_eq!((a.inserted, a.existing), (b.inserted, b.existing));
        assert_eq!(a.inserted, 1000);
        assert!(breaths >= 1000 / BREATHE_EVERY, "{breaths} breaths");
        for i in [0, 499, 999] {
            let id = batch.capsules[i].id();
            assert_eq!(paced.get(&id).expect("get"), plain.get(&id).expect("get"));
            assert!(paced.get(&id).expect("get").is_some());
        }
        // Written again: every capsule is already there, and it still breathes.
        let mut again = 0;
        let c = paced.write_paced(&batch, true, &mut || again += 1).expect("again");
        assert_eq!((c.inserted, c.existing), (0, 1000));
        assert!(again >= 1000 / BREATHE_EVERY);
        let _ = std::fs::remove_dir_all(dir_a);
        let _ = std::fs::remove_dir_all(dir_b);
    }

    fn named(scope: &str, ts: i64) -> Capsule {
        Capsule {
            key: CapsuleKey {
                scope_id: scope.into(),
                timestamp: ts,
                resolution: 60,
                vantage: Vantage::Named("API".into()),
            },
            body: CapsuleBody::Payload("{}".into()),
            created_ms: 1,
        }
    }

    #[test]
    fn capsules_since_reads_in_sequence_order_from_the_cursor_and_skips_deleted_rows() {
        let (store, dir) = temp_store("since");
        for ts in 0..5 {
            store.put(&named("rim:a:b:c", ts * 60_000)).expect("put");
        }
        let all = store.capsules_since(0, 100).expect("since 0");
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(all[3].1.key.timestamp, 180_000);
        let tail = store.capsules_since(3, 1).expect("since 3");
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].0, 3);
        assert!(store.delete(&all[3].1.id()).expect("delete"));
        let after = store.capsules_since(3, 100).expect("since 3 after delete");
        assert_eq!(after.iter().map(|r| r.0).collect::<Vec<_>>(), vec![4]);
        assert!(store.capsules_since(5, 100).expect("past the end").is_empty());
        assert!(store.capsules_since(0, 0).expect("limit 0").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn cursors_are_absent_until_set_and_survive_a_reopen() {
        let (store, dir) = temp_store("cursor");
        assert_eq!(store.outbox_cursor("capsules").expect("get"), None);
        store
            .set_outbox_cursors(&[("capsules", 7), ("decisions:0", 3)])
            .expect("set");
        drop(store);
        let store = Store::open(&dir.join("store.redb"), StoreConfig::default()).expect("reopen");
        assert_eq!(store.outbox_cursor("capsules").expect("get"), Some(7));
        assert_eq!(store.outbox_cursor("decisions:0").expect("get"), Some(3));
        assert_eq!(store.outbox_cursor("decisions:1").expect("get"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn decision_shards_lists_each_shard_once() {
        let (store, dir) = temp_store("shards");
        assert!(store.decision_shards().expect("empty").is_empty());
        let mut batch = Batch::default();
        for (shard, seq) in [(0u16, 1u64), (0, 2), (3, 1), (u16::MAX, 9)] {
            batch.decision_runs.push(DecisionRun {
                shard,
                first_seq: seq,
                last_seq: seq,
                pos: seq * 100,
                count: 1,
            });
        }
        store.write(&batch).expect("write");
        assert_eq!(store.decision_shards().expect("shards"), vec![0, 3, u16::MAX]);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::model::{CapsuleBody, CapsuleKey};

    fn temp_path(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("rim-capsule-layout-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        (dir.join("store.redb"), dir)
    }

    fn named(scope: &str, ts: i64) -> Capsule {
        Capsule {
            key: CapsuleKey {
                scope_id: scope.into(),
                timestamp: ts,
                resolution: 60,
                vantage: Vantage::Named("API".into()),
            },
            body: CapsuleBody::Payload(format!("{{\"ts\":{ts}}}")),
            created_ms: 1,
        }
    }

    /// Writes capsules in format 2's layout, as a build before format 3 left them.
    fn write_format_2(path: &Path, caps: &[Capsule], cfg: &StoreConfig) {
        let db = Database::create(path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(META_FORMAT_VERSION, 2).expect("version");
            meta.insert(META_NEXT_SEQ, caps.len() as u64).expect("next seq");
            let mut capsules = txn.open_table(CAPSULES).expect("capsules");
            let mut by_id = txn.open_table(V2_BY_ID).expect("by_id");
            let mut by_scope = txn.open_table(BY_SCOPE).expect("by_scope");
            let mut by_expiry = txn.open_table(V2_BY_EXPIRY).expect("by_expiry");
            for (seq, c) in caps.iter().enumerate() {
                let seq = seq as u64;
                let bytes = codec::encode_capsule(c).expect("encode");
                capsules.insert(seq, bytes.as_slice()).expect("row");
                by_id.insert(c.id().as_bytes(), seq).expect("id");
                by_scope.insert(scope_key(c), seq).expect("scope");
                by_expiry.insert((cfg.expires_at_ms(c), seq), ()).expect("expiry");
            }
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn a_format_2_store_is_migrated_on_open_and_every_capsule_stays_findable_and_expirable() {
        let (path, dir) = temp_path("migrate");
        let cfg = StoreConfig::default();
        let caps: Vec<Capsule> = (0..5).map(|ts| named("rim:a:b:c", ts * 60_000)).collect();
        write_format_2(&path, &caps, &cfg);

        let store = Store::open(&path, cfg.clone()).expect("open migrates");
        for c in &caps {
            assert_eq!(store.get(&c.id()).expect("get").as_ref(), Some(c));
        }
        {
            let txn = store.db().begin_read().expect("read");
            assert!(matches!(
                txn.open_table(V2_BY_ID),
                Err(redb::TableError::TableDoesNotExist(_))
            ));
            let meta = txn.open_table(META).expect("meta");
            assert_eq!(meta.get(META_FORMAT_VERSION).expect("get").map(|g| g.value()), Some(3));
        }
        // New capsules continue the sequence; the migrated expiry rows still expire theirs.
        let more = named("rim:a:b:d", 10 * 60_000);
        assert_eq!(store.put(&more).expect("put"), PutOutcome::Inserted);
        assert_eq!(store.capsules_since(5, 10).expect("since")[0].1, more);
        let last_expiry = cfg.expires_at_ms(&caps[4]);
        assert_eq!(store.retain(last_expiry).expect("retain").deleted, 5);
        assert!(store.get(&caps[0].id()).expect("get").is_none());
        assert_eq!(store.get(&more.id()).expect("get"), Some(more.clone()));
        drop(store);
        let store = Store::open(&path, cfg).expect("reopen a format-3 store");
        assert_eq!(store.counts().expect("counts").capsules, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ids_sharing_a_prefix_are_told_apart_by_get_delete_and_put() {
        let (path, dir) = temp_path("prefix");
        let store = Store::open(&path, StoreConfig::default()).expect("open");
        // With the tests' one-byte prefix, two of 257 capsules must share one.
        let caps: Vec<Capsule> = (0..257).map(|m| named("rim:a:b:c", m * 60_000)).collect();
        let mut seen = std::collections::HashMap::new();
        let (a, b) = caps
            .iter()
            .find_map(|c| {
                seen.insert(id_prefix(&c.id()), c)
                    .map(|earlier| (earlier.clone(), c.clone()))
            })
            .expect("a shared prefix");
        assert_ne!(a.id(), b.id());
        store.put(&b).expect("b");
        assert_eq!(store.get(&a.id()).expect("a absent"), None);
        assert!(!store.delete(&a.id()).expect("delete absent a"));
        store.put(&a).expect("a");
        assert_eq!(store.put(&a).expect("a again"), PutOutcome::Existing);
        assert_eq!(store.get(&a.id()).expect("get a"), Some(a.clone()));
        assert_eq!(store.get(&b.id()).expect("get b"), Some(b.clone()));
        assert!(store.delete(&b.id()).expect("delete b"));
        assert_eq!(store.get(&b.id()).expect("b gone"), None);
        assert_eq!(store.get(&a.id()).expect("a stays"), Some(a));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn one_expiry_run_covers_a_batch_window_and_a_bounded_pass_cuts_it() {
        let (path, dir) = temp_path("runs");
        let cfg = StoreConfig::default();
        let store = Store::open(&path, cfg.clone()).expect("open");
        let batch = Batch {
            capsules: (0..10).map(|n| named(&format!("rim:a:b:n{n}"), 0)).collect(),
            ..Batch::default()
        };
        assert_eq!(store.write(&batch).expect("write").inserted, 10);
        {
            let txn = store.db().begin_read().expect("read");
            let runs = txn.open_table(BY_EXPIRY).expect("runs");
            assert_eq!(runs.len().expect("len"), 1, "one run for one window");
        }
        let now = cfg.expires_at_ms(&batch.capsules[0]);
        let passes: Vec<RetainReport> = (0..3).map(|_| store.retain_bounded(now, 4).expect("retain")).collect();
        assert_eq!(
            passes.iter().map(|r| (r.deleted, r.more)).collect::<Vec<_>>(),
            vec![(4, true), (4, true), (2, false)]
        );
        assert_eq!(store.counts().expect("counts").capsules, 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
