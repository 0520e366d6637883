//! The temporal slice's recent windows, resident on the HTTP thread, already rendered.
//!
//! For each node asked for, [`Resident`] keeps the OBSERVED capsules of the slice's
//! default resolution (`api.slice_resolution_s`) whose window starts within the default
//! lookback (`api.slice_lookback_s`), the PREDICTED ones from one window back on, each as
//! the exact JSON the store path renders ([`CapsuleView`]), and the node's accuracy
//! aggregate. A slice at the defaults (or a shorter lookback) is then answered without
//! reading redb or formatting a number: each window is held as its rendered JSON object
//! ([`Lane`]), and an answer copies the objects of its range into its array. A window
//! coming or going is one vector insert or removal (an earlier design kept each list as
//! one prebuilt array, rebuilt and re-validated, ~13 KB, per window: a burst of 10,000
//! new capsules then cost the HTTP thread a few hundred milliseconds).
//!
//! Guarantees:
//! - **the same answer as the store**: a node's entry is filled from `Store::history`
//!   on first use and kept current by tailing the store's capsules in sequence order
//!   (`Store::capsules_since`) whenever the store committed since the last look
//!   (`persist.store_commits`, or a write through the API): up to [`TAIL_STEP`] capsules
//!   before an answer, so a commit of that many or fewer is in the answer that follows
//!   it. A larger burst (every node's window closing at once) is taken a step at a time
//!   between requests (`slice::follow_store`, a 200 µs pause between steps, on the
//!   streams queue: 10,000 capsules took 39 ms). Until then the windows are a mixed
//!   state: nodes the steps reached show the burst's windows, the others their windows
//!   before it (a step can stop inside one commit, so one node's observed window may come
//!   before its prediction), while the accuracy is read at the store's current version.
//!   Every window shown is one the store holds; none is missing once the steps end (a
//!   store error stops the follower until the next slice resumes it). Capsules are
//!   written once and never changed, so a window never goes stale. The accuracy aggregate
//!   is read again whenever the store committed. A capsule deleted through the API clears
//!   every entry; retention never deletes a window the cache serves (it is used only when
//!   the retention of the resolution is longer than the lookback);
//! - **bounded**: at most `api.slice_cache_bytes` of fragments, a list built whole for
//!   answers counted beside its windows (0 turns the cache off);
//!   past it, entries not used since the last sweep go first (second chance);
//! - everything runs on the HTTP thread (no lock), and a fill or tail is one synchronous
//!   store read per call, like the store path's own reads.

use std::collections::HashMap;
use std::rc::Rc;

use rim_capsule::{AccuracyAgg, Capsule, HistoryQuery, Store, StoreError, Vantage};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::routes::CapsuleView;

/// Capsules taken from the store's tail per step. A step runs inside a request (or
/// between requests, [`Resident::follow`]). Measured with 10,000 resident nodes of 48
/// windows each and one commit of a new window for every node (what a minute boundary
/// brings): taking all 10,000 before answering held the answer 292 ms; in steps of 64
/// the answer took 1.4 ms and the whole burst 39 ms, ~0.25 ms a step.
const TAIL_STEP: usize = 64;
/// Predicted windows kept per node at most (the slice shows 64).
const FUTURES_KEPT_MAX: usize = 64;
/// Bookkeeping bytes counted per window beyond its text.
const WINDOW_OVERHEAD_BYTES: usize = 24;

/// A list of windows, each the JSON object the store path renders, serialized as one
/// JSON array: a node's whole list as the array its lane keeps built (shared, one copy
/// per answer), a part of it by copying the objects in. Nothing is parsed or formatted
/// per answer.
pub struct FragmentList(Fragments);

enum Fragments {
    Whole(Rc<RawValue>, usize),
    Parts(Vec<Rc<RawValue>>),
}

impl FragmentList {
    fn empty() -> Self {
        Self(Fragments::Parts(Vec::new()))
    }

    /// Windows in the list.
    pub fn len(&self) -> usize {
        match &self.0 {
            Fragments::Whole(_, n) => *n,
            Fragments::Parts(p) => p.len(),
        }
    }

    /// No window.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of its JSON.
    pub fn json_bytes(&self) -> usize {
        match &self.0 {
            Fragments::Whole(j, _) => j.get().len(),
            Fragments::Parts(p) => 2 + p.iter().map(|o| o.get().len()).sum::<usize>() + p.len().saturating_sub(1),
        }
    }
}

impl Serialize for FragmentList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Fragments::Whole(j, _) => j.serialize(s),
            Fragments::Parts(p) => s.collect_seq(p.iter().map(|o| &**o)),
        }
    }
}

/// A node's windows of one vantage in time order, each held as the JSON object a slice
/// answers with, and the array of them all built when first asked for after a change.
/// A window coming or going is one vector insert or removal; a burst of new capsules
/// costs their rendering, and the array is built again once, by the next answer.
#[derive(Default)]
struct Lane {
    /// (window start, its object), by window start.
    windows: Vec<(i64, Rc<RawValue>)>,
    /// Bytes of the objects' text.
    text_bytes: usize,
    /// `[w1,w2,...]` of every window, when built since the last change.
    whole: Option<Rc<RawValue>>,
}

impl Lane {
    /// A lane of `(window start, object)` pairs in time order.
    fn of(pieces: Vec<(i64, Box<RawValue>)>) -> Self {
        let text_bytes = pieces.iter().map(|(_, o)| o.get().len()).sum();
        Self {
            windows: pieces.into_iter().map(|(ts, o)| (ts, Rc::from(o))).collect(),
            text_bytes,
            whole: None,
        }
    }

    fn bytes(&self) -> usize {
        let whole = self.whole.as_ref().map_or(0, |j| j.get().len());
        self.text_bytes + whole + self.windows.len() * WINDOW_OVERHEAD_BYTES
    }

    /// Adds the window starting at `ts` unless it is there (capsules never change, so
    /// it is the same one).
    fn insert(&mut self, ts: i64, object: Box<RawValue>) {
        if let Err(at) = self.windows.binary_search_by_key(&ts, |w| w.0) {
            self.text_bytes += object.get().len();
            self.windows.insert(at, (ts, Rc::from(object)));
            self.whole = None;
        }
    }

    /// Drops the windows starting before `from`.
    fn prune(&mut self, from: i64) {
        let gone = self.windows.partition_point(|w| w.0 < from);
        if gone == 0 {
            return;
        }
        for (_, o) in self.windows.drain(..gone) {
            self.text_bytes -= o.get().len();
        }
        self.whole = None;
    }

    /// The windows starting in `[from, to)`, at most `limit`.
    fn range(&mut self, from: i64, to: i64, limit: usize) -> Result<FragmentList, StoreError> {
        let first = self.windows.partition_point(|w| w.0 < from);
        let end = self
            .windows
            .partition_point(|w| w.0 < to)
            .min(first.saturating_add(limit));
        let Some(part) = self.windows.get(first..end).filter(|p| !p.is_empty()) else {
            return Ok(FragmentList::empty());
        };
        if part.len() < self.windows.len() {
            return Ok(FragmentList(Fragments::Parts(
                part.iter().map(|(_, o)| o.clone()).collect(),
            )));
        }
        let whole = match &self.whole {
            Some(j) => j.clone(),
            None => {
                // Objects joined: serde_json copies raw values as they are (no parse).
                let objects: Vec<&RawValue> = self.windows.iter().map(|(_, o)| &**o).collect();
                let j: Rc<RawValue> =
                    Rc::from(serde_json::value::to_raw_value(&objects).map_err(|e| StoreError::Encode(e.to_string()))?);
                self.whole = Some(j.clone());
                j
            }
        };
        Ok(FragmentList(Fragments::Whole(whole, self.windows.len())))
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
fn render(c: &Capsule) -> Result<Box<RawValue>, StoreError> {
    // Only a payload (API capsules, never cached) can fail to render.
    serde_json::value::to_raw_value(&CapsuleView(c)).map_err(|e| StoreError::Encode(e.to_string()))
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
        // Windows no slice can ask for any more go.
        e.past.prune(now_ms.saturating_sub(self.lookback_ms));
        e.futures.prune(now_ms.saturating_sub(res_ms));
        self.counters.hits += 1;
        let past = e.past.range(
            now_ms.saturating_sub(lookback_ms),
            now_ms,
            rim_capsule::store::HISTORY_ROWS_MAX,
        );
        let futures = e
            .futures
            .range(now_ms.saturating_sub(res_ms), i64::MAX, FUTURES_KEPT_MAX);
        // Pruned windows gone, a list built whole for this answer held until it changes:
        // counted (before any error returns), and the budget kept below (the lists just
        // handed out are shared, so evicting their node only drops the cache's hold).
        e.bytes = e.lane_bytes();
        self.bytes = (self.bytes + e.bytes).saturating_sub(before);
        let (past, futures) = (past?, futures?);
        let newest = if e.newest_given {
            None
        } else {
            e.newest_given = true;
            e.newest.clone()
        };
        let accuracy = e.accuracy;
        self.evict_over_budget();
        Ok(Windows {
            past,
            futures,
            newest,
            accuracy,
        })
    }

    /// Whether the store committed capsules the cache has not taken yet.
    pub fn behind(&self, version: Version) -> bool {
        self.cursor.is_some() && self.version != Some(version)
    }

    /// One step of following the store (between requests); whether it is still behind.
    pub fn follow(&mut self, store: &Store, version: Version, now_ms: i64) -> Result<bool, StoreError> {
        self.catch_up(store, version, now_ms)?;
        Ok(self.behind(version))
    }

    /// Tails the store if it moved since the last look: at most [`TAIL_STEP`] capsules,
    /// the rest by later calls ([`Resident::follow`]).
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
        let rows = store.capsules_since(cursor, TAIL_STEP)?;
        let n = rows.len();
        for (seq, c) in rows {
            cursor = seq + 1;
            self.counters.tailed += 1;
            self.apply(c, now_ms)?;
        }
        self.cursor = Some(cursor);
        if n < TAIL_STEP {
            self.version = Some(version);
        }
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
                e.past.insert(ts, render(&c)?);
                if e.newest.as_ref().is_none_or(|n| n.key.timestamp < ts) {
                    e.newest = Some(Rc::new(c));
                    e.newest_given = false;
                }
            }
            Vantage::Predicted if ts >= now_ms.saturating_sub(res_ms) => {
                e.futures.insert(ts, render(&c)?);
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
            let pieces = capsules
                .iter()
                .map(|c| Ok((c.key.timestamp, render(c)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Lane::of(pieces))
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
    use crate::test_support::observed;

    fn object(ts: i64) -> Box<RawValue> {
        RawValue::from_string(format!("{{\"timestamp\":{ts},\"v\":\"w{ts}\"}}")).expect("valid")
    }

    /// The array of the objects of `starts`, joined the plain way.
    fn joined(starts: &[i64]) -> String {
        let parts: Vec<String> = starts.iter().map(|t| object(*t).get().to_owned()).collect();
        format!("[{}]", parts.join(","))
    }

    fn text(l: &FragmentList) -> String {
        serde_json::to_string(l).expect("serializes")
    }

    #[test]
    fn a_lane_is_the_array_of_its_windows_through_inserts_and_prunes() {
        let mut lane = Lane::default();
        assert_eq!(text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")), "[]");
        assert_eq!(lane.range(i64::MIN, i64::MAX, 100).expect("range").json_bytes(), 2);
        // Out of order, and one twice: kept in time order, once.
        for ts in [30, 10, 20, 50, 40, 20] {
            lane.insert(ts, object(ts));
        }
        let all = lane.range(i64::MIN, i64::MAX, 100).expect("range");
        assert_eq!(text(&all), joined(&[10, 20, 30, 40, 50]));
        assert_eq!(all.len(), 5);
        assert_eq!(all.json_bytes(), joined(&[10, 20, 30, 40, 50]).len());
        let part = lane.range(20, 40, 100).expect("range");
        assert_eq!(text(&part), joined(&[20, 30]));
        assert_eq!(part.json_bytes(), joined(&[20, 30]).len());
        assert_eq!(text(&lane.range(20, i64::MAX, 2).expect("range")), joined(&[20, 30]));
        assert_eq!(text(&lane.range(60, i64::MAX, 2).expect("range")), "[]");
        // The whole array, once built, is shared by later answers and counted; a window
        // added or dropped after it is in the next answer.
        let again = lane.range(i64::MIN, i64::MAX, 100).expect("range");
        assert!(matches!((&all.0, &again.0), (Fragments::Whole(a, 5), Fragments::Whole(b, 5)) if Rc::ptr_eq(a, b)));
        lane.insert(60, object(60));
        assert_eq!(
            text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")),
            joined(&[10, 20, 30, 40, 50, 60])
        );
        lane.prune(60);
        assert_eq!(
            text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")),
            joined(&[60])
        );
        for ts in [10, 20, 30, 40, 50] {
            lane.insert(ts, object(ts));
        }
        let _ = lane.range(i64::MIN, i64::MAX, 100).expect("range");
        let six = lane.bytes();
        lane.prune(25);
        assert_eq!(
            text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")),
            joined(&[30, 40, 50, 60])
        );
        assert!(lane.bytes() < six);
        lane.prune(100);
        assert_eq!(text(&lane.range(i64::MIN, i64::MAX, 100).expect("range")), "[]");
        assert_eq!(lane.bytes(), 0);
    }

    #[test]
    fn a_burst_larger_than_a_step_is_taken_over_later_calls_and_then_is_the_stores() {
        let dir = std::env::temp_dir().join(format!("rimd-resident-burst-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir.join("capsules.redb"), rim_capsule::StoreConfig::default()).expect("store");
        let minute = 60_000;
        let now = 1_800_000_000_000 / minute * minute;
        let nodes: Vec<String> = (0..3 * TAIL_STEP).map(|i| format!("rim:a:b:n{i}")).collect();
        let write = |ts: &[i64]| {
            let batch = rim_capsule::Batch {
                capsules: nodes
                    .iter()
                    .flat_map(|n| ts.iter().map(move |t| observed(n, *t)))
                    .collect(),
                ..Default::default()
            };
            store.write(&batch).expect("write");
        };
        write(&[now - 10 * minute]);
        let mut r = Resident::new(60, 3600, usize::MAX);
        let lookback = 3_600_000;
        for n in &nodes {
            let w = r.windows(&store, 1, n, now, lookback).expect("fill");
            assert_eq!(w.past.len(), 1);
        }
        // One commit of six steps' worth: an answer takes one step, and is the store as
        // of before the burst for the nodes the step did not reach.
        write(&[now - 9 * minute, now - 8 * minute]);
        let last = nodes.last().expect("nodes");
        let w = r.windows(&store, 2, last, now, lookback).expect("windows");
        assert_eq!(w.past.len(), 1, "a node past the first step is not there yet");
        assert!(r.behind(2));
        assert_eq!(r.counters().tailed, TAIL_STEP as u64);
        let mut calls = 0;
        while r.follow(&store, 2, now).expect("follow") {
            calls += 1;
            assert!(calls < 10, "never caught up");
        }
        assert_eq!(r.counters().tailed, 6 * TAIL_STEP as u64);
        for n in &nodes {
            let w = r.windows(&store, 2, n, now, lookback).expect("windows");
            let q = HistoryQuery {
                scope_id: n.clone(),
                resolution: 60,
                vantage: Vantage::Observed,
                from_ms: now - lookback,
                to_ms: now,
                limit: rim_capsule::store::HISTORY_ROWS_MAX,
                descending: false,
            };
            let stored = store.history(&q).expect("history");
            assert_eq!(stored.len(), 3);
            let theirs = serde_json::to_string(&super::super::routes::CapsuleList(&stored)).expect("json");
            assert_eq!(text(&w.past), theirs, "{n}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
