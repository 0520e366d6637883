//! The temporal slice's recent windows, resident on the HTTP thread, already rendered.
//!
//! For each node asked for, [`Resident`] keeps the OBSERVED capsules of the slice's
//! default resolution (`api.slice_resolution_s`) whose window starts within the default
//! lookback (`api.slice_lookback_s`), the PREDICTED ones from one window back on, each as
//! the exact JSON the store path renders ([`CapsuleView`]), and the node's accuracy
//! aggregate. A slice at the defaults (or a shorter lookback) is then answered without
//! reading redb or formatting a number: each list is held as the JSON array the answer
//! carries ([`Lane`]), rebuilt when a window comes or goes, so an answer at the default
//! lookback copies one contiguous text per list.
//!
//! Guarantees:
//! - **the same answer as the store**: a node's entry is filled from `Store::history`
//!   on first use and kept current by tailing the store's capsules in sequence order
//!   (`Store::capsules_since`) before any answer, whenever the store committed since the
//!   last look (`persist.store_commits`, or a write through the API); capsules are
//!   written once and never changed, so a fragment never goes stale. The accuracy aggregate
//!   is read again whenever the store committed. A capsule deleted through the API clears
//!   every entry; retention never deletes a window the cache serves (it is used only when
//!   the retention of the resolution is longer than the lookback);
//! - **bounded**: at most `api.slice_cache_bytes` of fragments (0 turns the cache off);
//!   past it, entries not used since the last sweep go first (second chance);
//! - everything runs on the HTTP thread (no lock), and a fill or tail is one synchronous
//!   store read per call, like the store path's own reads.

use std::collections::HashMap;
use std::rc::Rc;

use rim_capsule::{AccuracyAgg, Capsule, HistoryQuery, Store, StoreError, Vantage};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::routes::CapsuleView;

/// Capsules read per tail call (the store caps it too).
const TAIL_ROWS: usize = 10_000;
/// Predicted windows kept per node at most (the slice shows 64).
const FUTURES_KEPT_MAX: usize = 64;
/// Bookkeeping bytes counted per window beyond its text.
const WINDOW_OVERHEAD_BYTES: usize = 24;

/// A list of windows as the JSON array the answer carries, byte for byte as the store
/// path renders it; shared with the cache when it is a node's whole list.
pub struct FragmentList {
    json: Option<Rc<Box<RawValue>>>,
    count: usize,
}

impl FragmentList {
    fn empty() -> Self {
        Self { json: None, count: 0 }
    }

    /// Windows in the list.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No window.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of its JSON.
    pub fn json_bytes(&self) -> usize {
        self.json.as_ref().map_or(2, |j| j.get().len())
    }
}

impl Serialize for FragmentList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.json {
            Some(j) => j.serialize(s),
            None => s.collect_seq(std::iter::empty::<()>()),
        }
    }
}

/// A node's windows of one vantage in time order, held as the one JSON array a slice
/// answers with (so an answer is one copy of contiguous text, not one per window), and
/// where each window's object sits in it. Rebuilt whole when a window comes or goes: at
/// most once per window per node, against one per answer.
#[derive(Default)]
struct Lane {
    /// `[w1,w2,...]`; `None` when empty.
    json: Option<Rc<Box<RawValue>>>,
    /// (window start, start and end of its object in `json`), by window start.
    windows: Vec<(i64, usize, usize)>,
}

impl Lane {
    /// A lane of `(window start, object)` pairs in time order.
    fn of(pieces: &[(i64, &str)]) -> Result<Self, StoreError> {
        if pieces.is_empty() {
            return Ok(Self::default());
        }
        let mut text = String::with_capacity(pieces.iter().map(|(_, t)| t.len() + 1).sum::<usize>() + 2);
        let mut windows = Vec::with_capacity(pieces.len());
        text.push('[');
        for (i, (ts, piece)) in pieces.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            windows.push((*ts, text.len(), text.len() + piece.len()));
            text.push_str(piece);
        }
        text.push(']');
        let json = RawValue::from_string(text).map_err(|e| StoreError::Encode(e.to_string()))?;
        Ok(Self {
            json: Some(Rc::new(json)),
            windows,
        })
    }

    fn pieces(&self) -> Vec<(i64, &str)> {
        let text = self.json.as_ref().map_or("", |j| j.get());
        self.windows
            .iter()
            .map(|&(ts, from, to)| (ts, text.get(from..to).unwrap_or_default()))
            .collect()
    }

    fn bytes(&self) -> usize {
        self.json.as_ref().map_or(0, |j| j.get().len()) + self.windows.len() * WINDOW_OVERHEAD_BYTES
    }

    /// Adds the window starting at `ts` unless it is there (capsules never change, so
    /// it is the same one).
    fn insert(&mut self, ts: i64, object: &str) -> Result<(), StoreError> {
        let Err(at) = self.windows.binary_search_by_key(&ts, |w| w.0) else {
            return Ok(());
        };
        let mut pieces = self.pieces();
        pieces.insert(at, (ts, object));
        let lane = Lane::of(&pieces)?;
        *self = lane;
        Ok(())
    }

    /// Drops the windows starting before `from`.
    fn prune(&mut self, from: i64) -> Result<(), StoreError> {
        let gone = self.windows.partition_point(|w| w.0 < from);
        if gone == 0 {
            return Ok(());
        }
        let pieces = self.pieces();
        let lane = Lane::of(pieces.get(gone..).unwrap_or_default())?;
        *self = lane;
        Ok(())
    }

    /// The windows starting in `[from, to)`, at most `limit`: the lane's own array when
    /// that is all of them, else a new one.
    fn range(&self, from: i64, to: i64, limit: usize) -> Result<FragmentList, StoreError> {
        let first = self.windows.partition_point(|w| w.0 < from);
        let end = self
            .windows
            .partition_point(|w| w.0 < to)
            .min(first.saturating_add(limit));
        if first >= end {
            return Ok(FragmentList::empty());
        }
        if first == 0 && end == self.windows.len() {
            return Ok(FragmentList {
                json: self.json.clone(),
                count: end,
            });
        }
        let pieces = self.pieces();
        let lane = Lane::of(pieces.get(first..end).unwrap_or_default())?;
        Ok(FragmentList {
            json: lane.json,
            count: end - first,
        })
    }
}

/// What the slice needs of a node, from memory.
pub struct Windows {
    /// Observed windows in `[now - lookback, now)`, in time order.
    pub past: FragmentList,
    /// Predicted windows from `now - resolution` on, in time order (at most 64).
    pub futures: FragmentList,
    /// The newest observed capsule (its metric names name the live series), the first
    /// time it is answered only.
    pub newest: Option<Rc<Capsule>>,
    /// The node's accuracy, merged over predictors and series.
    pub accuracy: AccuracyAgg,
}

/// The store's version as the cache sees it: commits by the store writer plus writes
/// through the API.
pub type Version = u64;

/// Counters shown in `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResidentCounters {
    /// Slices answered from memory.
    pub hits: u64,
    /// Entries filled from the store.
    pub fills: u64,
    /// Entries dropped to stay within the budget.
    pub evictions: u64,
    /// Capsules taken from the store's tail.
    pub tailed: u64,
}

impl ResidentCounters {
    /// Appends the counters as Prometheus text (`rimd_http_slice_resident_…`).
    pub fn render_prometheus(&self, bytes: usize, out: &mut String) {
        use std::fmt::Write as _;
        let name = "rimd_http_slice_resident_bytes";
        let _ = write!(
            out,
            "# HELP {name} Bytes of rendered slice windows held (api.slice_cache_bytes at most)\n\
             # TYPE {name} gauge\n{name} {bytes}\n"
        );
        for (what, help, v) in [
            ("hits", "Slices answered from resident windows", self.hits),
            (
                "fills",
                "Nodes whose recent windows were read from the store",
                self.fills,
            ),
            (
                "evictions",
                "Nodes dropped to stay within api.slice_cache_bytes",
                self.evictions,
            ),
            ("tailed", "Capsules read from the store's tail", self.tailed),
        ] {
            let name = format!("rimd_http_slice_resident_{what}_total");
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        }
    }
}

#[derive(Default)]
struct Entry {
    past: Lane,
    futures: Lane,
    newest: Option<Rc<Capsule>>,
    /// `newest` was handed out since it last changed.
    newest_given: bool,
    accuracy: AccuracyAgg,
    accuracy_version: Option<Version>,
    bytes: usize,
    used: bool,
}

impl Entry {
    fn lane_bytes(&self) -> usize {
        self.past.bytes() + self.futures.bytes()
    }
}

/// The resident windows of the nodes asked for.
pub struct Resident {
    resolution: u32,
    lookback_ms: i64,
    bytes_max: usize,
    bytes: usize,
    nodes: HashMap<String, Entry>,
    /// The next store sequence to tail (None until first used).
    cursor: Option<u64>,
    version: Option<Version>,
    counters: ResidentCounters,
}

/// A capsule as the JSON object the store path answers with.
fn render(c: &Capsule) -> Result<String, StoreError> {
    // Only a payload (API capsules, never cached) can fail to render.
    serde_json::to_string(&CapsuleView(c)).map_err(|e| StoreError::Encode(e.to_string()))
}

/// The first store sequence not yet used: the smallest `s` with no capsule at or after
/// it (rows are found by a binary search over `capsules_since`, ~64 range seeks).
fn store_end(store: &Store) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if store.capsules_since(mid, 1)?.is_empty() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

impl Resident {
    /// A cache for `resolution` (s) and `lookback_s`, holding at most `bytes_max`.
    pub fn new(resolution: u32, lookback_s: u64, bytes_max: usize) -> Self {
        Self {
            resolution,
            lookback_ms: i64::try_from(lookback_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            bytes_max,
            bytes: 0,
            nodes: HashMap::new(),
            cursor: None,
            version: None,
            counters: ResidentCounters::default(),
        }
    }

    /// Whether a slice of `resolution` over `lookback_ms` can come from here with this
    /// store's retention (never a window `retain` may already have deleted).
    pub fn serves(&self, store: &Store, resolution: u32, lookback_ms: i64) -> bool {
        let kept = |v: &Vantage| i64::try_from(store.config().retention_ms(self.resolution, v)).unwrap_or(i64::MAX);
        self.bytes_max > 0
            && resolution == self.resolution
            && lookback_ms <= self.lookback_ms
            && kept(&Vantage::Observed) > self.lookback_ms
            && kept(&Vantage::Predicted) > i64::from(self.resolution) * 1000
    }

    /// Counters so far.
    pub fn counters(&self) -> ResidentCounters {
        self.counters
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets everything (a capsule was deleted).
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.bytes = 0;
    }

    /// The node's windows at `now_ms` over `lookback_ms` (≤ the resident lookback), the
    /// store brought up to `version` first. `None`: nothing known of the node.
    pub fn windows(
        &mut self,
        store: &Store,
        version: Version,
        node: &str,
        now_ms: i64,
        lookback_ms: i64,
    ) -> Result<Windows, StoreError> {
        self.catch_up(store, version, now_ms)?;
        if !self.nodes.contains_key(node) {
            self.fill(store, node, now_ms)?;
        }
        let res_ms = i64::from(self.resolution) * 1000;
        let Some(e) = self.nodes.get_mut(node) else {
            return Ok(Windows {
                past: FragmentList::empty(),
                futures: FragmentList::empty(),
                newest: None,
                accuracy: AccuracyAgg::default(),
            });
        };
        e.used = true;
        if e.accuracy_version != Some(version) {
            e.accuracy = merged_accuracy(store, node)?;
            e.accuracy_version = Some(version);
        }
        let before = e.bytes;
        prune(
            e,
            now_ms.saturating_sub(self.lookback_ms),
            now_ms.saturating_sub(res_ms),
        )?;
        self.bytes = self.bytes.saturating_sub(before.saturating_sub(e.bytes));
        self.counters.hits += 1;
        let newest = if e.newest_given {
            None
        } else {
            e.newest_given = true;
            e.newest.clone()
        };
        Ok(Windows {
            past: e.past.range(
                now_ms.saturating_sub(lookback_ms),
                now_ms,
                rim_capsule::store::HISTORY_ROWS_MAX,
            )?,
            futures: e
                .futures
                .range(now_ms.saturating_sub(res_ms), i64::MAX, FUTURES_KEPT_MAX)?,
            newest,
            accuracy: e.accuracy,
        })
    }

    /// Tails the store if it moved since the last look.
    fn catch_up(&mut self, store: &Store, version: Version, now_ms: i64) -> Result<(), StoreError> {
        let cursor = match self.cursor {
            Some(c) => c,
            None => {
                // First use: nothing is resident, so only what comes after matters.
                let end = store_end(store)?;
                self.cursor = Some(end);
                self.version = Some(version);
                return Ok(());
            }
        };
        if self.version == Some(version) {
            return Ok(());
        }
        let mut cursor = cursor;
        loop {
            let rows = store.capsules_since(cursor, TAIL_ROWS)?;
            let n = rows.len();
            for (seq, c) in rows {
                cursor = seq + 1;
                self.counters.tailed += 1;
                self.apply(c, now_ms)?;
            }
            if n < TAIL_ROWS {
                break;
            }
        }
        self.cursor = Some(cursor);
        self.version = Some(version);
        self.evict_over_budget();
        Ok(())
    }

    /// Takes one tailed capsule into its node's entry, if the node is resident.
    fn apply(&mut self, c: Capsule, now_ms: i64) -> Result<(), StoreError> {
        if c.key.resolution != self.resolution {
            return Ok(());
        }
        let res_ms = i64::from(self.resolution) * 1000;
        let Some(e) = self.nodes.get_mut(&c.key.scope_id) else {
            return Ok(());
        };
        let ts = c.key.timestamp;
        let before = e.bytes;
        match c.key.vantage {
            Vantage::Observed if ts >= now_ms.saturating_sub(self.lookback_ms) => {
                e.past.insert(ts, &render(&c)?)?;
                if e.newest.as_ref().is_none_or(|n| n.key.timestamp <= ts) {
                    e.newest = Some(Rc::new(c));
                    e.newest_given = false;
                }
            }
            Vantage::Predicted if ts >= now_ms.saturating_sub(res_ms) => {
                e.futures.insert(ts, &render(&c)?)?;
            }
            _ => return Ok(()),
        }
        e.bytes = e.lane_bytes();
        self.bytes = (self.bytes + e.bytes).saturating_sub(before);
        Ok(())
    }

    /// Reads a node's recent windows from the store into a new entry (none if the store
    /// has nothing of it: an unknown node costs no memory).
    fn fill(&mut self, store: &Store, node: &str, now_ms: i64) -> Result<(), StoreError> {
        let res_ms = i64::from(self.resolution) * 1000;
        let q = HistoryQuery {
            scope_id: node.to_owned(),
            resolution: self.resolution,
            vantage: Vantage::Observed,
            from_ms: now_ms.saturating_sub(self.lookback_ms),
            to_ms: i64::MAX,
            limit: rim_capsule::store::HISTORY_ROWS_MAX,
            descending: false,
        };
        let past = store.history(&q)?;
        let futures = store.history(&HistoryQuery {
            vantage: Vantage::Predicted,
            from_ms: now_ms.saturating_sub(res_ms),
            limit: FUTURES_KEPT_MAX,
            ..q
        })?;
        if past.is_empty() && futures.is_empty() {
            return Ok(());
        }
        let lane = |capsules: &[Capsule]| -> Result<Lane, StoreError> {
            let objects = capsules.iter().map(render).collect::<Result<Vec<_>, _>>()?;
            let pieces: Vec<(i64, &str)> = capsules
                .iter()
                .zip(&objects)
                .map(|(c, o)| (c.key.timestamp, o.as_str()))
                .collect();
            Lane::of(&pieces)
        };
        let mut e = Entry {
            past: lane(&past)?,
            futures: lane(&futures)?,
            ..Entry::default()
        };
        e.bytes = e.lane_bytes();
        e.newest = past.into_iter().last().map(Rc::new);
        self.bytes += e.bytes;
        self.counters.fills += 1;
        self.nodes.insert(node.to_owned(), e);
        self.evict_over_budget();
        Ok(())
    }

    /// Drops entries not used since the last sweep (and clears the marks of the others)
    /// until within three quarters of the budget, so sweeps stay rare.
    fn evict_over_budget(&mut self) {
        if self.bytes <= self.bytes_max {
            return;
        }
        let target = self.bytes_max / 4 * 3;
        while self.bytes > target && !self.nodes.is_empty() {
            let mut bytes = self.bytes;
            let mut evicted = 0u64;
            self.nodes.retain(|_, e| {
                if bytes <= target || e.used {
                    e.used = false;
                    return true;
                }
                bytes -= e.bytes;
                evicted += 1;
                false
            });
            self.bytes = bytes;
            self.counters.evictions += evicted;
        }
    }
}

/// Drops windows no slice can ask for any more (`Entry::bytes` follows).
fn prune(e: &mut Entry, past_from_ms: i64, futures_from_ms: i64) -> Result<(), StoreError> {
    e.past.prune(past_from_ms)?;
    e.futures.prune(futures_from_ms)?;
    e.bytes = e.lane_bytes();
    Ok(())
}

/// The node's accuracy rows merged (as the slice shows them).
pub fn merged_accuracy(store: &Store, node: &str) -> Result<AccuracyAgg, StoreError> {
    let mut agg = AccuracyAgg::default();
    for (_, _, a) in &store.accuracy(node)? {
        agg.merge(a);
    }
    Ok(agg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(ts: i64) -> String {
        format!("{{\"timestamp\":{ts},\"v\":\"w{ts}\"}}")
    }

    /// The array of the objects of `starts`, joined the plain way.
    fn joined(starts: &[i64]) -> String {
        let parts: Vec<String> = starts.iter().map(|t| object(*t)).collect();
        format!("[{}]", parts.join(","))
    }

    fn text(l: &FragmentList) -> String {
        serde_json::to_string(l).expect("serializes")
    }

    #[test]
    fn a_lane_is_the_array_of_its_windows_through_inserts_and_prunes() {
        let mut lane = Lane::default();
        assert_eq!(text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")), "[]");
        // Out of order, and one twice: kept in time order, once.
        for ts in [30, 10, 20, 50, 40, 20] {
            lane.insert(ts, &object(ts)).expect("insert");
        }
        let all = lane.range(i64::MIN, i64::MAX, 100).expect("range");
        assert_eq!(text(&all), joined(&[10, 20, 30, 40, 50]));
        assert_eq!(all.len(), 5);
        assert_eq!(all.json_bytes(), joined(&[10, 20, 30, 40, 50]).len());
        // The whole lane is shared, a part is a new array.
        assert!(Rc::ptr_eq(
            all.json.as_ref().expect("json"),
            lane.json.as_ref().expect("json")
        ));
        let part = lane.range(20, 40, 100).expect("range");
        assert_eq!(text(&part), joined(&[20, 30]));
        assert_eq!(text(&lane.range(20, i64::MAX, 2).expect("range")), joined(&[20, 30]));
        assert_eq!(text(&lane.range(60, i64::MAX, 2).expect("range")), "[]");
        lane.prune(25).expect("prune");
        assert_eq!(
            text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")),
            joined(&[30, 40, 50])
        );
        lane.prune(100).expect("prune");
        assert_eq!(text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")), "[]");
        assert_eq!(lane.bytes(), 0);
    }

    #[test]
    fn a_lane_refuses_an_object_that_would_break_its_array() {
        let mut lane = Lane::default();
        lane.insert(1, &object(1)).expect("insert");
        assert!(lane.insert(2, "{\"open\":").is_err());
        // Unchanged by the refusal.
        assert_eq!(text(&lane.range(i64::MIN, i64::MAX, 10).expect("range")), joined(&[1]));
    }
}
