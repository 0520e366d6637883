//! The temporal slice's recent windows, resident on the HTTP thread, already rendered.
//!
//! For each node asked for, [`Resident`] keeps the OBSERVED capsules of the slice's
//! default resolution (`api.slice_resolution_s`) whose window starts within the default
//! lookback (`api.slice_lookback_s`), the PREDICTED ones from one window back on, each as
//! the exact JSON the store path renders ([`CapsuleView`]), and the node's accuracy
//! aggregate. A slice at the defaults (or a shorter lookback) is then answered without
//! reading redb or formatting a number: the lists are the stored fragments, copied.
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

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use rim_capsule::{AccuracyAgg, Capsule, HistoryQuery, Store, StoreError, Vantage};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::routes::CapsuleView;

/// Capsules read per tail call (the store caps it too).
const TAIL_ROWS: usize = 10_000;
/// Predicted windows kept per node at most (the slice shows 64).
const FUTURES_KEPT_MAX: usize = 64;
/// Bookkeeping bytes counted per fragment beyond its text.
const FRAGMENT_OVERHEAD_BYTES: usize = 64;

/// One capsule's JSON, shared by the cache and the answers being written.
pub type Fragment = Rc<Box<RawValue>>;

/// Fragments serialized as a JSON array, byte for byte as stored.
pub struct FragmentList(pub Vec<Fragment>);

impl Serialize for FragmentList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|f| &***f))
    }
}

/// What the slice needs of a node, from memory.
pub struct Windows {
    /// Observed windows in `[now - lookback, now)`, in time order.
    pub past: FragmentList,
    /// Predicted windows from `now - resolution` on, in time order (at most 64).
    pub futures: FragmentList,
    /// The newest observed capsule (its metric names name the live series).
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
    past: BTreeMap<i64, Fragment>,
    futures: BTreeMap<i64, Fragment>,
    newest: Option<Rc<Capsule>>,
    accuracy: AccuracyAgg,
    accuracy_version: Option<Version>,
    bytes: usize,
    used: bool,
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

fn fragment_bytes(f: &RawValue) -> usize {
    f.get().len() + FRAGMENT_OVERHEAD_BYTES
}

fn render(c: &Capsule) -> Result<Fragment, StoreError> {
    // Only a payload (API capsules, never cached) can fail to render.
    let text = serde_json::to_string(&CapsuleView(c)).map_err(|e| StoreError::Encode(e.to_string()))?;
    RawValue::from_string(text)
        .map(Rc::new)
        .map_err(|e| StoreError::Encode(e.to_string()))
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
                past: FragmentList(Vec::new()),
                futures: FragmentList(Vec::new()),
                newest: None,
                accuracy: AccuracyAgg::default(),
            });
        };
        e.used = true;
        if e.accuracy_version != Some(version) {
            e.accuracy = merged_accuracy(store, node)?;
            e.accuracy_version = Some(version);
        }
        let freed = prune(
            e,
            now_ms.saturating_sub(self.lookback_ms),
            now_ms.saturating_sub(res_ms),
        );
        self.bytes = self.bytes.saturating_sub(freed);
        self.counters.hits += 1;
        let past = e
            .past
            .range(now_ms.saturating_sub(lookback_ms)..now_ms)
            .take(rim_capsule::store::HISTORY_ROWS_MAX)
            .map(|(_, f)| f.clone())
            .collect();
        let futures = e
            .futures
            .range(now_ms.saturating_sub(res_ms)..)
            .take(FUTURES_KEPT_MAX)
            .map(|(_, f)| f.clone())
            .collect();
        Ok(Windows {
            past: FragmentList(past),
            futures: FragmentList(futures),
            newest: e.newest.clone(),
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
        let added = match c.key.vantage {
            Vantage::Observed if ts >= now_ms.saturating_sub(self.lookback_ms) => {
                let f = render(&c)?;
                let bytes = fragment_bytes(&f);
                if e.newest.as_ref().is_none_or(|n| n.key.timestamp <= ts) {
                    e.newest = Some(Rc::new(c));
                }
                replace(&mut e.past, ts, f, bytes)
            }
            Vantage::Predicted if ts >= now_ms.saturating_sub(res_ms) => {
                let f = render(&c)?;
                let bytes = fragment_bytes(&f);
                replace(&mut e.futures, ts, f, bytes)
            }
            _ => 0,
        };
        e.bytes += added;
        self.bytes += added;
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
        let mut e = Entry::default();
        for c in &futures {
            let f = render(c)?;
            e.bytes += replace(&mut e.futures, c.key.timestamp, f.clone(), fragment_bytes(&f));
        }
        for c in &past {
            let f = render(c)?;
            e.bytes += replace(&mut e.past, c.key.timestamp, f.clone(), fragment_bytes(&f));
        }
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

/// Inserts `f` at `ts`; the bytes added (0 if the window was there: capsules never
/// change, so it is the same one).
fn replace(map: &mut BTreeMap<i64, Fragment>, ts: i64, f: Fragment, bytes: usize) -> usize {
    match map.entry(ts) {
        std::collections::btree_map::Entry::Occupied(_) => 0,
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(f);
            bytes
        }
    }
}

/// Drops windows no slice can ask for any more; the bytes freed.
fn prune(e: &mut Entry, past_from_ms: i64, futures_from_ms: i64) -> usize {
    let mut freed = 0;
    for (map, from) in [(&mut e.past, past_from_ms), (&mut e.futures, futures_from_ms)] {
        // Most calls find nothing to drop: no split (it would build a new tree each time).
        if map.first_key_value().is_none_or(|(ts, _)| *ts >= from) {
            continue;
        }
        let kept = map.split_off(&from);
        freed += map.values().map(|f| fragment_bytes(f)).sum::<usize>();
        *map = kept;
    }
    e.bytes = e.bytes.saturating_sub(freed);
    freed
}

/// The node's accuracy rows merged (as the slice shows them).
pub fn merged_accuracy(store: &Store, node: &str) -> Result<AccuracyAgg, StoreError> {
    let mut agg = AccuracyAgg::default();
    for (_, _, a) in &store.accuracy(node)? {
        agg.merge(a);
    }
    Ok(agg)
}
