//! The soak's checks, made from what is on disk (after a kill, with no daemon running)
//! and from the daemon's own audit verification (after a restart):
//! - the ledger: every acknowledged event is in the journal (0 lost), and no event id is
//!   there twice (0 duplicated after de-duplication);
//! - the chains: every shard's decision hash chain, as the store's index and the decision
//!   log hold it, verifies from its first record, checked from where the last check
//!   stopped with one verifier per shard that lives across kills;
//! - the capsules: every committed observed 1 s capsule counts at most the journal's
//!   events of its window (nothing rolled up twice); `exact` counts those equal to it
//!   (a resent event whose window had closed before is *late*: journaled, not rolled up);
//! - the daemon's own word: `GET /decisions/verify` says every shard's chain verifies.
//!
//! Every check after a kill reads only what the daemon wrote since the previous one, so a
//! kill costs the same at the thousandth as at the first.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rim_capsule::{CapsuleBody, HistoryQuery, Store, StoreConfig, Vantage};

use rim_decision::Verifier;
use rimd::persist::audit::DecisionLog;

use super::load::{node_of, parse_id, Source};
use crate::error::BenchError;
use crate::http::{loadgen, wire};

/// Journal records read so far: the count per event id and per (node, 1 s window).
/// Read incrementally: SIGKILL leaves whole records in the page cache, and recovery only
/// cuts a torn frame after them, so a position once read stays valid.
#[derive(Debug, Default)]
pub struct JournalTally {
    /// How often each id was journaled.
    pub ids: HashMap<u64, u32>,
    /// Events per (node, window start ms).
    pub windows: HashMap<(String, i64), u64>,
    /// Records that are not the soak's (no parsable id).
    pub foreign: u64,
    /// Ids journaled more than once, in the order the second copy was read.
    pub dups: Vec<u64>,
    pos: u64,
}

impl JournalTally {
    /// Reads what the journal gained since the last call; returns, per node, the earliest
    /// window that gained events.
    pub fn update(&mut self, data_dir: &Path) -> Result<HashMap<String, i64>, BenchError> {
        let dir = data_dir.join("journal");
        let stream = rimd::persist::audit::STREAM_EVENTS;
        let mut touched: HashMap<String, i64> = HashMap::new();
        if !dir.exists() {
            return Ok(touched);
        }
        let journal = |e: rim_journal::JournalError| BenchError::transport("journal", "read", e);
        let mut r = rim_journal::Reader::open(&dir, stream, self.pos, rim_journal::Fs::new()).map_err(journal)?;
        while let Some((_, bytes)) = r.next().map_err(journal)? {
            let rec = rim_journal::event::decode(bytes).map_err(|e| BenchError::transport("journal", "decode", e))?;
            let Some(id) = parse_id(rec.event_id) else {
                self.foreign += 1;
                continue;
            };
            let copies = self.ids.entry(id).or_insert(0);
            *copies += 1;
            if *copies == 2 {
                self.dups.push(id);
            }
            let window = rec.timestamp.div_euclid(1000) * 1000;
            let node = rec.rim_node_id.to_owned();
            let first = touched.entry(node.clone()).or_insert(window);
            *first = (*first).min(window);
            *self.windows.entry((node, window)).or_insert(0) += 1;
        }
        self.pos = r.position();
        Ok(touched)
    }
}

/// Acknowledged ids looked up in the journal's tally once each, as they are acknowledged:
/// an id found stays found (the journal only grows), one missing is lost for good.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Acknowledged ids the journal did not hold when they were checked.
    pub lost: Vec<u64>,
}

impl Ledger {
    /// Checks the ids the sources acknowledged since the last call.
    pub fn check(&mut self, tally: &JournalTally, sources: &mut [Source]) {
        for src in sources {
            let missing = src.fresh.drain(..).filter(|id| !tally.ids.contains_key(id));
            self.lost.extend(missing);
        }
    }
}

/// Decision records read per index call.
const CHAIN_CHUNK: usize = 1_000;

/// Every shard's decision hash chain, verified from where the previous check stopped.
/// The index only grows upward (recovery indexes the log's tail above the newest indexed
/// seq), so one [`Verifier`] per shard, kept across kills, checks each record once and
/// still catches a link broken across a restart or a sequence number used twice.
#[derive(Default)]
pub struct ChainTally {
    shards: Vec<(Verifier, u64)>,
    /// Records verified so far, all shards.
    pub records: u64,
}

impl std::fmt::Debug for ChainTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let next: Vec<u64> = self.shards.iter().map(|(_, next)| *next).collect();
        f.debug_struct("ChainTally")
            .field("next_seq", &next)
            .field("records", &self.records)
            .finish()
    }
}

impl ChainTally {
    /// Verifies what `shards` chains gained; `Some(why)` names the first record that does
    /// not verify (and stays named by every later call).
    pub fn update(&mut self, log: &DecisionLog, shards: u16) -> Result<Option<String>, BenchError> {
        let read = |e: rimd::persist::audit::LogError| BenchError::transport("decision log", "read", e);
        if self.shards.len() < usize::from(shards) {
            self.shards.resize_with(usize::from(shards), || (Verifier::new(), 0));
        }
        for (k, (verifier, next)) in (0u16..).zip(self.shards.iter_mut()) {
            loop {
                let rows = log.decisions(k, *next, CHAIN_CHUNK).map_err(read)?;
                for (seq, bytes) in &rows {
                    if let Err(e) = verifier.push(bytes) {
                        return Ok(Some(format!("shard {k}, stored seq {seq}: {e}")));
                    }
                    self.records += 1;
                    *next = seq.saturating_add(1);
                }
                if rows.len() < CHAIN_CHUNK {
                    break;
                }
            }
        }
        Ok(None)
    }
}

/// The daemon's store as it left it (it must not be running), `None` before it made one.
pub fn open_store(data_dir: &Path) -> Result<Option<Arc<Store>>, BenchError> {
    let path = data_dir.join("capsules.redb");
    if !path.exists() {
        return Ok(None);
    }
    let store = Store::open(&path, StoreConfig::default()).map_err(|e| BenchError::transport("store", "open", e))?;
    Ok(Some(Arc::new(store)))
}

/// The decision log of the daemon's data directory, indexed in `store`.
pub fn decision_log(data_dir: &Path, store: Arc<Store>) -> DecisionLog {
    DecisionLog::new(&data_dir.join("journal"), store)
}

/// Observed capsules checked against the journal.
#[derive(Debug, Default, Clone, Copy)]
pub struct CapsuleTally {
    /// Checked.
    pub checked: u64,
    /// Equal to the journal's count of their window.
    pub exact: u64,
    /// Counting more events than the journal holds for their window: a failure.
    pub over: u64,
}

/// Replay of a restart reaches back one checkpoint interval: windows that far before the
/// new events may be closed again, so they are checked again too.
const RECHECK_MS: i64 = 5_000;

/// Checks the observed 1 s capsules of each node from `from` (per node; all windows with
/// `i64::MIN`) against the tally.
pub fn capsules(store: &Store, tally: &JournalTally, from: &HashMap<String, i64>) -> Result<CapsuleTally, BenchError> {
    let mut t = CapsuleTally::default();
    let store_err = |e: rim_capsule::StoreError| BenchError::transport("store", "read", e);
    for (node, &first) in from {
        let mut from_ms = first.saturating_sub(RECHECK_MS);
        loop {
            let q = HistoryQuery {
                scope_id: node.clone(),
                resolution: 1,
                vantage: Vantage::Observed,
                from_ms,
                to_ms: i64::MAX,
                limit: rim_capsule::store::HISTORY_ROWS_MAX,
                descending: false,
            };
            let page = store.history(&q).map_err(store_err)?;
            let Some(last) = page.last() else { break };
            from_ms = last.key.timestamp + 1;
            for c in &page {
                let CapsuleBody::Observed(o) = &c.body else { continue };
                let journaled = tally
                    .windows
                    .get(&(node.clone(), c.key.timestamp))
                    .copied()
                    .unwrap_or(0);
                t.checked += 1;
                t.exact += u64::from(o.count == journaled);
                t.over += u64::from(o.count > journaled);
            }
        }
    }
    Ok(t)
}

/// Every node the tally has seen, from its first window: for the final, complete check.
pub fn all_nodes(tally: &JournalTally) -> HashMap<String, i64> {
    let mut first: BTreeMap<String, i64> = BTreeMap::new();
    for (node, w) in tally.windows.keys() {
        let e = first.entry(node.clone()).or_insert(*w);
        *e = (*e).min(*w);
    }
    first
        .into_iter()
        .map(|(n, w)| (n, w.saturating_add(RECHECK_MS)))
        .collect()
}

/// Where the journal holds `id`: (position, received_ms) of each copy, for a report.
pub fn occurrences(data_dir: &Path, id: u64) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    let stream = rimd::persist::audit::STREAM_EVENTS;
    let Ok(mut r) = rim_journal::Reader::open(&data_dir.join("journal"), stream, 0, rim_journal::Fs::new()) else {
        return found;
    };
    while let Ok(Some((pos, bytes))) = r.next() {
        if let Ok(rec) = rim_journal::event::decode(bytes) {
            if parse_id(rec.event_id) == Some(id) {
                found.push((pos, rec.received_ms));
            }
        }
    }
    found
}

/// What `GET /decisions/verify` said: every chain valid, the records it checked, its
/// shards, and the body when not valid.
pub fn chains(http: SocketAddr) -> Result<(bool, u64, u16, String), BenchError> {
    let path = format!("{}/decisions/verify", wire::API);
    let (status, body) = loadgen::fetch(http, &wire::get(&path), Duration::from_secs(120))?;
    if status != 200 {
        return Err(BenchError::Integrity {
            what: format!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body)),
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let valid = v["data"]["valid"].as_bool().unwrap_or(false);
    let shards = v["data"]["shards"].as_array().map_or(&[][..], Vec::as_slice);
    let records = shards.iter().filter_map(|x| x["records"].as_u64()).sum();
    let count = u16::try_from(shards.len()).unwrap_or(u16::MAX);
    // The verdicts alone (not the envelope's request id and time), so a break that
    // stays is reported once.
    let body = if valid {
        String::new()
    } else {
        v["data"].to_string().chars().take(600).collect()
    };
    Ok((valid, records, count, body))
}

/// The node of an id, for reports.
pub fn describe(id: u64) -> String {
    format!("e{id} ({})", node_of(id))
}
