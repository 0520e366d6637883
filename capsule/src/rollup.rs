//! Observed roll-ups, prediction scoring and accuracy, per node, by the node's dense index.
//!
//! The roll-up runs once per journaled event on the cold core, so it is built around what
//! ingest already knows: the node's dense index (rows are array slots, no lookup), and
//! integer keys for series (`1` price, `2` volume, `3` stress, else the metric name's hash)
//! and for the status text. Nothing per event hashes, compares or allocates a string: a
//! node's name, a metric's name and a status text are asked for once, the first time the
//! roll-up meets them ([`Texts`]), and kept in [`Names`].
//!
//! A window that closes is emitted as a [`Closed`] record, a copy of its numbers and keys:
//! building the capsule (strings, metrics sorted by name, the idempotency key) is left to
//! whoever stores it ([`Names::capsule`]), off the path that must keep up with the events.
//! New names travel the same way, as [`NamesDelta`]s.
//!
//! ## Windows
//! A node's window at resolution `r` is `[floor(ts / (r·1000)) · r·1000, +r·1000)` in event
//! time. Per (node, resolution) at most one window is open:
//! - an event in the open window is folded in;
//! - an event in a later window closes the open one and opens its own;
//! - an event in an earlier window — or, when no window is open, in a window that already
//!   closed — is **late**: not folded in, counted. Resolutions are judged independently: an
//!   event can be late at 1 s and still belong to the open 60 s window.
//!
//! [`Rollup::flush_idle`] closes windows whose node went quiet (processing time), so an idle
//! node's last capsule lands. Nodes are never forgotten (bounded by `nodes_max`): a node's
//! lateness bound is what makes an event for a window already closed count as late instead
//! of opening it again.
//!
//! Within a window, values are taken in **arrival order**: `open`/`close` and every `last` are
//! the first/last arrived, while `first_ts`/`last_ts` are the smallest/largest event times.
//! Sums saturate, so every stored number stays finite.
//!
//! ## Predictions and accuracy
//! [`Rollup::expect`] files a prediction of a node's window; when that window closes, each
//! predicted series with an observed value is scored ([`crate::accuracy`]) and folded into
//! the node's accuracy per series. A window that closes before its prediction arrives keeps
//! what it observed until it does (bounded). A prediction displaced by newer ones
//! ([`PREDICTIONS_PER_SLOT`] per node and resolution), or whose window's observation is
//! gone, is counted unscored.
//!
//! ## Settling later
//! Every node's window closes at about the same moment (its first event of the next second,
//! for one-second windows), and each prediction of the next window arrives then too: at
//! 10,000 nodes that is 20,000 closes and filings within a few milliseconds, each a few
//! map lookups and allocations. A caller that must keep up with events (the journal
//! thread) turns on [`Rollup::set_deferred`]: a close then only copies the window out and
//! a filing only notes its prediction, both queued in order, and [`Rollup::settle`] scores
//! and files them, a bounded number per call, when the caller has time. The outcome is the
//! same as settling at once (the queue keeps their order, and each close carries its own
//! copy of what it observed); [`Rollup::checkpoint_step`] encodes nothing while work waits,
//! since a chunk encoded then would claim windows whose capsules were not yet handed out.
//!
//! ## Checkpoints, chunk by chunk
//! Nodes are grouped in chunks of [`CHUNK_NODES`] by index. [`Rollup::checkpoint_step`]
//! encodes one changed chunk at a time (so no turn of the caller pays for all nodes at
//! once): per node its name, the journal positions its state is complete to (events and
//! decision log, the ends when the chunk was encoded), its series keys, windows, accuracy
//! and pending predictions. [`Rollup::watermarks`] says from where a replay must start for
//! every chunk not stored since it changed; a node restored from its entry skips replayed
//! records its entry already holds ([`Rollup::holds_event`], [`Rollup::holds_log`]).
//! [`Rollup::restore`] places each node by name through the caller's index (so a restart
//! that numbers nodes differently still restores), and refuses anything malformed with a
//! typed error.
//!
//! Memory: one row per node index up to the highest seen (about 1 KiB for two resolutions),
//! grown on demand; series past [`INLINE_METRICS`] per node live in an overflow map.

use std::collections::{HashMap, VecDeque};

use crate::accuracy::{AccuracyAgg, SeriesScore, REL_ERR_FLOOR};
use crate::model::{Capsule, CapsuleBody, CapsuleKey, MetricStats, ObservedStats, Ohlc, Vantage};

mod checkpoint;

pub use checkpoint::{Checkpoint, CheckpointError};

/// Series key of `price`.
pub const KEY_PRICE: u64 = 1;
/// Series key of `volume`.
pub const KEY_VOLUME: u64 = 2;
/// Series key of `stress`.
pub const KEY_STRESS: u64 = 3;
/// Metric series kept in a node's row; more go to an overflow map (slower, still exact).
pub const INLINE_METRICS: usize = 8;
/// [`Rollup::push`]'s slot for a series kept in the overflow map, not inline.
const OVERFLOW_SLOT: u8 = u8::MAX;
/// Nodes per checkpoint chunk (one step of [`Rollup::checkpoint_step`] encodes one).
pub const CHUNK_NODES: usize = 256;

/// Nodes whose state is added at once when a node past the current end first shows up.
const GROW_NODES: usize = 4 * CHUNK_NODES;
/// Closes and filings a deferred roll-up queues at most ([`Rollup::set_deferred`]): past
/// it, each new one settles the oldest first (about 10 MB of closed windows).
const CHORES_MAX: usize = 1 << 14;
/// Event-id hashes a node keeps at most ([`RollupConfig::recent_ids`]).
pub const RECENT_IDS_MAX: usize = 4096;
/// Pending predictions kept per node and resolution.
pub const PREDICTIONS_PER_SLOT: usize = 2;
/// Series in one prediction at most.
pub const PREDICTED_SERIES_MAX: usize = 64;
/// Resolutions at most.
pub const RESOLUTIONS_MAX: usize = 8;
/// The predictor whose accuracy is kept (rimd has one).
pub const PREDICTOR: &str = "ewma";

/// The name of a fixed series key, if it is one.
pub fn fixed_series_name(key: u64) -> Option<&'static str> {
    match key {
        KEY_PRICE => Some("price"),
        KEY_VOLUME => Some("volume"),
        KEY_STRESS => Some("stress"),
        _ => None,
    }
}

/// One event as the roll-up sees it.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// Event time, epoch ms.
    pub timestamp: i64,
    /// `price`.
    pub price: Option<f64>,
    /// `volume`.
    pub volume: Option<f64>,
    /// `stress`.
    pub stress: Option<f64>,
    /// Key of the status text.
    pub status: u64,
    /// (series key, value) per metric, in the event's order; keys are never 1..=3.
    pub metrics: &'a [(u64, f64)],
}

/// The texts of the event being pushed, asked for only when the roll-up meets a node or a
/// key for the first time.
pub trait Texts {
    /// The node's id.
    fn node_id(&self) -> &str;
    /// The status text.
    fn status(&self) -> &str;
    /// The name of metric `i` of the observation.
    fn metric_name(&self, i: usize) -> &str;
}

/// Names learned since the last [`Rollup::take_names`]: what a replica of [`Names`] needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamesDelta {
    /// (node index, node id).
    pub nodes: Vec<(u32, String)>,
    /// (key, series name or status text).
    pub keys: Vec<(u64, String)>,
}

impl NamesDelta {
    /// True if nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.keys.is_empty()
    }

    /// Appends a later delta.
    pub fn append(&mut self, mut later: NamesDelta) {
        self.nodes.append(&mut later.nodes);
        self.keys.append(&mut later.keys);
    }
}

/// Names the roll-up learned: node ids by index, series names and status texts by key.
#[derive(Clone, Debug, Default)]
pub struct Names {
    nodes: Vec<Option<Box<str>>>,
    keys: HashMap<u64, Box<str>>,
}

impl Names {
    /// The id of node `node`.
    pub fn node(&self, node: u32) -> Option<&str> {
        self.nodes.get(node as usize).and_then(|n| n.as_deref())
    }

    /// The name of a series key (fixed ones included) or a status key.
    pub fn key(&self, key: u64) -> Option<&str> {
        fixed_series_name(key).or_else(|| self.keys.get(&key).map(|s| &**s))
    }

    /// A series' name, or a stand-in naming its key.
    pub fn series_name(&self, key: u64) -> String {
        self.key(key)
            .map_or_else(|| format!("metric#{key:016x}"), str::to_owned)
    }

    /// Learns what a [`Rollup`] learned (a replica on another thread).
    pub fn apply(&mut self, delta: &NamesDelta) {
        for (n, id) in &delta.nodes {
            self.learn_node(*n, id);
        }
        for (k, text) in &delta.keys {
            self.learn_key(*k, text);
        }
    }

    fn learn_key(&mut self, key: u64, text: &str) -> bool {
        if fixed_series_name(key).is_some() || self.keys.contains_key(&key) {
            return false;
        }
        self.keys.insert(key, text.into());
        true
    }

    fn learn_node(&mut self, node: u32, id: &str) -> bool {
        let i = node as usize;
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, None);
        }
        if self.nodes[i].as_deref() == Some(id) {
            return false;
        }
        self.nodes[i] = Some(id.into());
        true
    }

    /// The OBSERVED capsule of a closed window; None while its node's name is unknown.
    pub fn capsule(&self, c: &Closed) -> Option<Capsule> {
        let scope_id = self.node(c.node)?.to_owned();
        let win = &c.win;
        let mut metrics: Vec<MetricStats> = Vec::with_capacity(c.keys_len as usize + c.overflow.len());
        for (s, &key) in c.keys().iter().enumerate() {
            if win.m[s].count > 0 {
                metrics.push(win.m[s].stats(self.series_name(key)));
            }
        }
        for (key, acc) in &c.overflow {
            if acc.count > 0 {
                metrics.push(acc.stats(self.series_name(*key)));
            }
        }
        metrics.sort_by(|a, b| a.name.cmp(&b.name));
        let flag = |f: u8| win.flags & f != 0;
        Some(Capsule {
            key: CapsuleKey {
                scope_id,
                timestamp: win.start_ms,
                resolution: c.resolution,
                vantage: Vantage::Observed,
            },
            body: CapsuleBody::Observed(ObservedStats {
                count: win.count,
                first_ts: win.first_ts,
                last_ts: win.last_ts,
                metrics,
                price: flag(F_PRICE).then_some(Ohlc {
                    open: win.ohlc[0],
                    high: win.ohlc[1],
                    low: win.ohlc[2],
                    close: win.ohlc[3],
                }),
                volume_sum: flag(F_VOLUME).then_some(win.volume_sum),
                stress_max: flag(F_STRESS).then_some(win.stress_max),
                stress_last: flag(F_STRESS).then_some(win.stress_last),
                last_status: self.key(win.status).unwrap_or_default().to_owned(),
            }),
            created_ms: c.created_ms,
        })
    }
}

#[derive(Clone, Debug)]
pub struct RollupConfig {
    /// Window lengths in seconds; each must be ≥ 1.
    pub resolutions: Vec<u32>,
    /// How long after a node's last arrival (beyond the resolution) an open window is closed
    /// by [`Rollup::flush_idle`].
    pub grace_ms: u64,
    /// Most nodes tracked at once; events of node indices at or past it are refused (counted).
    pub nodes_max: usize,
    /// Event-id hashes kept per node ([`Rollup::note_id`]), so that the daemon's dedup
    /// windows travel with the checkpoint and survive a restart; 0 keeps none.
    pub recent_ids: usize,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            resolutions: vec![1, 60],
            grace_ms: 2000,
            nodes_max: 100_000,
            recent_ids: 0,
        }
    }
}

/// What [`Rollup::push`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Folded in at every resolution.
    Accepted,
    /// Late at some resolutions (counted there), folded in at the others.
    PartlyLate,
    /// Late at every resolution: not rolled up.
    Late,
    /// The node index is at or past `nodes_max`: not rolled up.
    NodesFull,
}

/// Running count/min/max/sum/last of one series in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Acc {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
}

impl Acc {
    #[inline]
    fn fold(&mut self, v: f64) {
        if self.count == 0 {
            *self = Acc {
                count: 1,
                min: v,
                max: v,
                sum: v,
                last: v,
            };
            return;
        }
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        // Sums of finite inputs can still overflow: saturate, so every stored number
        // (and the checkpoint, JSON) stays finite.
        self.sum = (self.sum + v).clamp(f64::MIN, f64::MAX);
        self.last = v;
    }

    fn stats(&self, name: String) -> MetricStats {
        MetricStats {
            name,
            count: self.count,
            min: self.min,
            max: self.max,
            mean: self.sum / self.count as f64,
            last: self.last,
        }
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

const F_PRICE: u8 = 1;
const F_VOLUME: u8 = 2;
const F_STRESS: u8 = 4;

/// One (node, resolution): the open window, and where closed windows end.
///
/// Laid out for [`Rollup::touch`]: aligned to a cache line, the header (everything an
/// event reads or writes whatever its metrics) in the first [`WIN_HEAD_BYTES`], then the
/// series in slot order, so an event with k inline series touches the header's lines and
/// the lines of the first k accumulators only.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Win {
    open: bool,
    flags: u8,
    start_ms: i64,
    /// End (exclusive) of the newest window that closed; events before it are late.
    closed_until_ms: i64,
    first_pos: u64,
    last_arrival_ms: u64,
    count: u64,
    first_ts: i64,
    last_ts: i64,
    /// open, high, low, close.
    ohlc: [f64; 4],
    volume_sum: f64,
    stress_max: f64,
    stress_last: f64,
    status: u64,
    m: [Acc; INLINE_METRICS],
}

/// Bytes of [`Win`]'s header, before its accumulators.
const WIN_HEAD_BYTES: usize = std::mem::offset_of!(Win, m);
const _: () = assert!(WIN_HEAD_BYTES == 128 && std::mem::size_of::<Win>() == 448);

impl Default for Win {
    fn default() -> Self {
        Win {
            open: false,
            start_ms: 0,
            closed_until_ms: i64::MIN,
            first_pos: 0,
            last_arrival_ms: 0,
            count: 0,
            first_ts: 0,
            last_ts: 0,
            flags: 0,
            ohlc: [0.0; 4],
            volume_sum: 0.0,
            stress_max: 0.0,
            stress_last: 0.0,
            status: 0,
            m: [Acc::default(); INLINE_METRICS],
        }
    }
}

impl Win {
    fn open_at(&mut self, start_ms: i64, pos: u64, arrival_ms: u64, ts: i64) {
        let closed_until_ms = self.closed_until_ms;
        *self = Win {
            open: true,
            start_ms,
            closed_until_ms,
            first_pos: pos,
            last_arrival_ms: arrival_ms,
            first_ts: ts,
            last_ts: ts,
            ..Win::default()
        };
    }

    #[inline]
    fn fold_head(&mut self, arrival_ms: u64, obs: &Observation<'_>) {
        self.count += 1;
        self.last_arrival_ms = self.last_arrival_ms.max(arrival_ms);
        self.first_ts = self.first_ts.min(obs.timestamp);
        self.last_ts = self.last_ts.max(obs.timestamp);
        if let Some(p) = obs.price {
            if self.flags & F_PRICE == 0 {
                self.ohlc = [p; 4];
                self.flags |= F_PRICE;
            } else {
                self.ohlc[1] = self.ohlc[1].max(p);
                self.ohlc[2] = self.ohlc[2].min(p);
                self.ohlc[3] = p;
            }
        }
        if let Some(v) = obs.volume {
            let sum = if self.flags & F_VOLUME == 0 {
                0.0
            } else {
                self.volume_sum
            };
            self.volume_sum = (sum + v).clamp(f64::MIN, f64::MAX);
            self.flags |= F_VOLUME;
        }
        if let Some(s) = obs.stress {
            self.stress_max = if self.flags & F_STRESS == 0 {
                s
            } else {
                self.stress_max.max(s)
            };
            self.stress_last = s;
            self.flags |= F_STRESS;
        }
        self.status = obs.status;
    }

    /// The observed value a fixed series is scored against (see [`crate::accuracy`]).
    fn observed_fixed(&self, key: u64) -> Option<f64> {
        match key {
            KEY_PRICE => (self.flags & F_PRICE != 0).then_some(self.ohlc[3]),
            KEY_VOLUME => (self.flags & F_VOLUME != 0).then_some(self.volume_sum),
            KEY_STRESS => (self.flags & F_STRESS != 0).then_some(self.stress_last),
            _ => None,
        }
    }
}

/// Hands `prefetch` an address in each cache line `v` spans (a hint: nothing is read).
fn lines_of<T>(v: &T, prefetch: &mut impl FnMut(*const u8)) {
    lines_in(std::ptr::from_ref(v).cast::<u8>(), std::mem::size_of::<T>(), prefetch);
}

/// The lines of the `len` bytes at `start` (which need not start on a line boundary).
fn lines_in(start: *const u8, len: usize, prefetch: &mut impl FnMut(*const u8)) {
    for off in (0..len).step_by(64) {
        prefetch(start.wrapping_add(off));
    }
    // The last line, when the bytes do not start on a line boundary.
    if !(start as usize).is_multiple_of(64) {
        prefetch(start.wrapping_add(len.saturating_sub(1)));
    }
}

/// One node's row: whether it was seen, the keys of its inline metric series, and (after
/// a restore) the journal positions its restored state is complete to.
#[derive(Clone, Copy, Debug, Default)]
struct Row {
    seen: bool,
    keys_len: u8,
    /// The last status key whose text is known (saves a lookup per event).
    status_known: u64,
    keys: [u64; INLINE_METRICS],
    /// Events before this position are in the restored state (0: none restored).
    applied_to: u64,
    /// Decision-log records before this position are in the restored state.
    applied_log: u64,
}

impl Row {
    #[inline]
    fn slot_of(&self, key: u64) -> Option<usize> {
        self.keys[..self.keys_len as usize].iter().position(|&k| k == key)
    }
}

/// A window that closed: its node, resolution and numbers, to be made a capsule with
/// [`Names::capsule`].
#[derive(Clone, Debug)]
pub struct Closed {
    /// The node's index.
    pub node: u32,
    /// The resolution, seconds.
    pub resolution: u32,
    /// When it closed (processing time), epoch ms: the capsule's `created_ms`.
    pub created_ms: i64,
    win: Win,
    keys_len: u8,
    keys: [u64; INLINE_METRICS],
    /// Series past the inline ones (empty for almost every node: no allocation).
    overflow: Vec<(u64, Acc)>,
}

impl Closed {
    /// The keys of its inline series, in slot order.
    fn keys(&self) -> &[u64] {
        &self.keys[..usize::from(self.keys_len)]
    }

    /// The window's start, epoch ms.
    pub fn start_ms(&self) -> i64 {
        self.win.start_ms
    }

    /// Events in the window.
    pub fn count(&self) -> u64 {
        self.win.count
    }
}

/// A prediction waiting for its window to close.
#[derive(Clone, Debug, PartialEq)]
pub struct Expected {
    /// The predicted window's start, epoch ms.
    pub window_ms: i64,
    /// (series key, predicted value, base).
    pub series: Vec<(u64, f64, f64)>,
}

/// Work a deferred roll-up left for [`Rollup::settle`], in the order it arose.
// Held by value in a queue that keeps its capacity, so queueing a close allocates nothing
// (boxing it would allocate per close); half the entries are closes anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Chore {
    /// A window closed (resolution index `r`): score it, then hand it out.
    Closed { r: u8, closed: Closed },
    /// A prediction read: file it, or score it at once when its window had closed by then
    /// (`closed`, judged when it was read).
    Expect {
        node: u32,
        r: u8,
        window_ms: i64,
        closed: bool,
        series: Vec<(u64, f64, f64)>,
    },
}

/// A node's accuracy, per series key.
type AccuracyRow = Vec<(u64, AccuracyAgg)>;

/// What a chunk's stored entry lacks.
#[derive(Clone, Copy, Debug, Default)]
struct ChunkState {
    /// Changed since it was last encoded.
    dirty: bool,
    /// The first event position folded into it since then.
    unstored_from: Option<u64>,
    /// The first decision-log position filed into it since then.
    unstored_log_from: Option<u64>,
    /// When it was last encoded (caller's clock, ms).
    encoded_ms: u64,
    /// Bytes of its last encoding (0: never encoded); the next is sized from it.
    encoded_bytes: usize,
}

impl ChunkState {
    /// Milliseconds until it is `min_age_ms` past its last encoding at `now_ms` (0: it
    /// is, and if dirty it is due to be encoded again).
    fn due_in(&self, now_ms: u64, min_age_ms: u64) -> u64 {
        min_age_ms.saturating_sub(now_ms.saturating_sub(self.encoded_ms))
    }
}

/// The roll-up state of every node. Single-threaded (owned by the journal thread).
#[derive(Clone, Debug)]
pub struct Rollup {
    cfg: RollupConfig,
    res_ms: Vec<i64>,
    rows: Vec<Row>,
    /// `rows.len() × resolutions` windows, node-major.
    wins: Vec<Win>,
    /// Accumulators of series past the inline ones: node → (key, one per resolution).
    overflow: HashMap<u32, Vec<(u64, Vec<Acc>)>>,
    names: Names,
    /// Names learned since the last `take_names`.
    delta: NamesDelta,
    /// Per node, its accuracy (empty until a window of it is scored).
    accuracy: Vec<AccuracyRow>,
    /// `rows.len() × resolutions` lists of pending predictions, node-major, oldest first
    /// (flat, not a map: every node's window closes and is scored each second, and the
    /// hashing, and each list freed when it emptied, were most of a close's cost).
    expected: Vec<Vec<Expected>>,
    /// What windows that closed before their prediction arrived observed, per series key.
    closed_unscored: HashMap<(u32, u8, i64), Vec<(u64, f64)>>,
    /// The keys of `closed_unscored` in the order they went in (the order windows close),
    /// so the oldest go first when it is full; may still name keys a late prediction took.
    unscored_order: VecDeque<(u32, u8, i64)>,
    keep_unscored: bool,
    /// Closes and filings wait in `chores` ([`Rollup::set_deferred`]).
    deferred: bool,
    chores: VecDeque<Chore>,
    /// Windows settled but not yet handed out (settled by a filing past [`CHORES_MAX`]).
    settled: Vec<Closed>,
    chunks: Vec<ChunkState>,
    /// Where the next checkpoint step looks for a changed chunk.
    cursor: usize,
    open_windows: usize,
    nodes_seen: usize,
    late_events: u64,
    late_by_resolution: Vec<u64>,
    refused_nodes_full: u64,
    scored: u64,
    unscored: u64,
    /// Pending predictions kept per node and resolution (raised during recovery).
    expect_capacity: usize,
    /// `rows.len() × recent_ids` event-id hashes, a ring per node (0 = empty slot).
    recent: Vec<u64>,
    /// Per node, the slot of its ring the next id goes to.
    recent_next: Vec<u16>,
}

/// Window start of `ts` at a resolution of `resolution` seconds (floor, also for negative
/// times).
pub fn window_start(ts: i64, resolution: u32) -> i64 {
    let res_ms = i64::from(resolution.max(1)) * 1000;
    ts.div_euclid(res_ms).saturating_mul(res_ms)
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Rollup {
    pub fn new(cfg: RollupConfig) -> Self {
        let mut cfg = cfg;
        // A zero resolution has no windows; one second is the finest the model allows.
        for r in &mut cfg.resolutions {
            *r = (*r).max(1);
        }
        cfg.resolutions.truncate(RESOLUTIONS_MAX);
        cfg.recent_ids = cfg.recent_ids.min(RECENT_IDS_MAX);
        let n = cfg.resolutions.len();
        Rollup {
            res_ms: cfg.resolutions.iter().map(|&r| i64::from(r) * 1000).collect(),
            cfg,
            rows: Vec::new(),
            wins: Vec::new(),
            overflow: HashMap::new(),
            names: Names::default(),
            delta: NamesDelta::default(),
            accuracy: Vec::new(),
            expected: Vec::new(),
            closed_unscored: HashMap::new(),
            unscored_order: VecDeque::new(),
            keep_unscored: true,
            deferred: false,
            chores: VecDeque::new(),
            settled: Vec::new(),
            chunks: Vec::new(),
            cursor: 0,
            open_windows: 0,
            nodes_seen: 0,
            late_events: 0,
            late_by_resolution: vec![0; n],
            refused_nodes_full: 0,
            scored: 0,
            unscored: 0,
            expect_capacity: PREDICTIONS_PER_SLOT,
            recent: Vec::new(),
            recent_next: Vec::new(),
        }
    }

    pub fn config(&self) -> &RollupConfig {
        &self.cfg
    }

    /// What the roll-up learned to call nodes and keys.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Names learned since the last call.
    pub fn take_names(&mut self) -> NamesDelta {
        std::mem::take(&mut self.delta)
    }

    fn resolutions(&self) -> usize {
        self.res_ms.len()
    }

    /// Makes room for node `node`; false past `nodes_max`.
    fn ensure(&mut self, node: u32) -> bool {
        let i = node as usize;
        if i >= self.cfg.nodes_max {
            return false;
        }
        if i >= self.rows.len() {
            // A step of nodes at a time, not to the next power of two: growing writes the
            // new nodes' empty state (about 1 KiB each at two resolutions), and doubling
            // from 8,192 nodes wrote ~8 MB in one go, with every event behind it waiting
            // (the journal thread's longest turn 6.6-7.5 ms, 4.1-4.6 ms in steps). The
            // vectors' capacity still doubles, and a doubling still moves what is there
            // (a copy, unless the allocator remaps it); only the empty state is written
            // a step at a time.
            let n = (i + 1).next_multiple_of(GROW_NODES).min(self.cfg.nodes_max).max(i + 1);
            self.rows.resize(n, Row::default());
            self.wins.resize(n * self.resolutions(), Win::default());
            self.accuracy.resize_with(n, Vec::new);
            self.expected.resize_with(n * self.resolutions(), Vec::new);
            if self.cfg.recent_ids > 0 {
                self.recent.resize(n * self.cfg.recent_ids, 0);
                self.recent_next.resize(n, 0);
            }
        }
        let chunk = i / CHUNK_NODES;
        if chunk >= self.chunks.len() {
            self.chunks.resize(chunk + 1, ChunkState::default());
        }
        true
    }

    /// Remembers the hash of an event's id (non-zero; 0 is no id) as the newest of `node`'s
    /// last [`RollupConfig::recent_ids`]: the caller notes the ids of the events it
    /// [`Rollup::push`]es, in the same order, and gets them back from a restored checkpoint
    /// with [`Rollup::recent_ids`]. The node's chunk is marked changed.
    pub fn note_id(&mut self, node: u32, id_hash: u64) {
        let w = self.cfg.recent_ids;
        if w == 0 || id_hash == 0 || !self.ensure(node) {
            return;
        }
        let n = node as usize;
        let next = usize::from(self.recent_next[n]) % w;
        self.recent[n * w + next] = id_hash;
        self.recent_next[n] = ((next + 1) % w) as u16;
        self.mark(node);
    }

    /// Hands `prefetch` the address of each cache line an event of `node` will touch (its
    /// row, the header and series of each resolution's window, the slot its next event id
    /// goes to), reading nothing of the node's state but its event-id cursor. The state of 10,000 nodes outgrows
    /// the core's caches, and one event's push waits on several misses in turn: a caller
    /// that prefetches the lines of the next few events first lets those misses overlap.
    /// (Loading them instead, as this did, held the core on up to 25 demand misses per
    /// node: 14% of the journal thread.) Nothing for a node at or past
    /// [`Rollup::node_span`].
    ///
    /// `series` is how many metrics the event carries: a node's metrics take its inline
    /// slots in the order they first came, so an event's k metrics are usually in the first
    /// k, and only those lines of each window are named. (Naming all seven lines of both
    /// windows of 16 events overran the core's outstanding-miss slots: the journal thread
    /// then waited on its own prefetch instructions.)
    pub fn touch(&self, node: u32, series: usize, mut prefetch: impl FnMut(*const u8)) {
        let n = node as usize;
        let Some(row) = self.rows.get(n) else {
            return;
        };
        lines_of(row, &mut prefetch);
        let r = self.resolutions();
        let used = WIN_HEAD_BYTES + series.min(INLINE_METRICS) * std::mem::size_of::<Acc>();
        for win in self.wins.get(n * r..(n + 1) * r).unwrap_or_default() {
            lines_in(std::ptr::from_ref(win).cast(), used, &mut prefetch);
        }
        let w = self.cfg.recent_ids;
        if w > 0 {
            let next = self.recent_next.get(n).map_or(0, |&x| usize::from(x) % w);
            if let Some(slot) = self.recent.get(n * w + next) {
                prefetch(std::ptr::from_ref(slot).cast());
            }
        }
    }

    /// Node indices below this may have state (rows are allocated up to it).
    pub fn node_span(&self) -> u32 {
        self.rows.len() as u32
    }

    /// The start of the newest window `node` had an event in at `resolution` (seconds):
    /// its open window, else the last one that closed; None when it has had none.
    pub fn last_window(&self, node: u32, resolution: u32) -> Option<i64> {
        let r = self.cfg.resolutions.iter().position(|&x| x == resolution)?;
        let win = self.wins.get(node as usize * self.resolutions() + r)?;
        if win.open {
            Some(win.start_ms)
        } else if win.closed_until_ms == i64::MIN {
            None
        } else {
            win.closed_until_ms.checked_sub(self.res_ms[r])
        }
    }

    /// `node`'s remembered event-id hashes, oldest first.
    pub fn recent_ids(&self, node: u32) -> impl Iterator<Item = u64> + '_ {
        let w = self.cfg.recent_ids;
        let n = node as usize;
        let ring = self.recent.get(n * w..(n + 1) * w).unwrap_or(&[]);
        let next = self.recent_next.get(n).map_or(0, |&c| usize::from(c));
        let (newer, older) = ring.split_at(next.min(ring.len()));
        older.iter().chain(newer).copied().filter(|&h| h != 0)
    }

    #[inline]
    fn mark(&mut self, node: u32) {
        if let Some(c) = self.chunks.get_mut(node as usize / CHUNK_NODES) {
            c.dirty = true;
        }
    }

    fn learn_node(&mut self, node: u32, id: &str) {
        if self.names.learn_node(node, id) {
            self.delta.nodes.push((node, id.to_owned()));
        }
    }

    fn learn_key(&mut self, key: u64, text: &str) {
        if self.names.learn_key(key, text) {
            self.delta.keys.push((key, text.to_owned()));
        }
    }

    /// Adds one event of node `node`, read from journal position `pos`, arriving at
    /// processing time `arrival_ms`. Closed windows are appended to `out`.
    pub fn push(
        &mut self,
        node: u32,
        pos: u64,
        arrival_ms: u64,
        obs: &Observation<'_>,
        texts: &dyn Texts,
        out: &mut Vec<Closed>,
    ) -> PushOutcome {
        if !self.ensure(node) {
            self.refused_nodes_full += 1;
            return PushOutcome::NodesFull;
        }
        let n = node as usize;
        let chunk = &mut self.chunks[n / CHUNK_NODES];
        chunk.dirty = true;
        chunk.unstored_from.get_or_insert(pos);
        if !self.rows[n].seen {
            self.rows[n].seen = true;
            self.nodes_seen += 1;
            self.learn_node(node, texts.node_id());
        }
        if self.rows[n].status_known != obs.status {
            if !self.names.keys.contains_key(&obs.status) {
                self.learn_key(obs.status, texts.status());
            }
            self.rows[n].status_known = obs.status;
        }
        // Series slots first (a new key is learned once per node). Bytes, not words: the
        // array is set up per event, and 64 words were a 512-byte memset call each time.
        let mut slots = [OVERFLOW_SLOT; 64];
        for (i, &(key, _)) in obs.metrics.iter().enumerate().take(slots.len()) {
            slots[i] = self.slot_for(node, key, || texts.metric_name(i));
        }
        let r_count = self.resolutions();
        let mut late_at = 0usize;
        for r in 0..r_count {
            if !self.push_at(node, r, pos, arrival_ms, obs, &slots, out) {
                late_at += 1;
                self.late_by_resolution[r] += 1;
            }
        }
        match late_at {
            0 => PushOutcome::Accepted,
            k if k == r_count => {
                self.late_events += 1;
                PushOutcome::Late
            }
            _ => {
                self.late_events += 1;
                PushOutcome::PartlyLate
            }
        }
    }

    /// Folds the event into resolution `r`'s window (closing the open one first when the
    /// event is in a later window); false when it is late there.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn push_at(
        &mut self,
        node: u32,
        r: usize,
        pos: u64,
        arrival_ms: u64,
        obs: &Observation<'_>,
        slots: &[u8; 64],
        out: &mut Vec<Closed>,
    ) -> bool {
        let res_ms = self.res_ms[r];
        let w = node as usize * self.resolutions() + r;
        let win = &self.wins[w];
        // Most events fall in the open window: no division on that path.
        let start = if win.open && obs.timestamp >= win.start_ms && obs.timestamp - win.start_ms < res_ms {
            win.start_ms
        } else {
            obs.timestamp.div_euclid(res_ms).saturating_mul(res_ms)
        };
        if win.open && start < win.start_ms || !win.open && start < win.closed_until_ms {
            return false;
        }
        if win.open && start > win.start_ms {
            self.close(node, r, ms_i64(arrival_ms), out);
        }
        let win = &mut self.wins[w];
        if !win.open {
            win.open_at(start, pos, arrival_ms, obs.timestamp);
            self.open_windows += 1;
        }
        win.fold_head(arrival_ms, obs);
        for (i, &(key, v)) in obs.metrics.iter().enumerate().take(slots.len()) {
            match usize::from(slots[i]) {
                s if s < INLINE_METRICS => win.m[s].fold(v),
                _ => {
                    if let Some(a) = overflow_acc(&mut self.overflow, node, key) {
                        a[r].fold(v);
                    }
                }
            }
        }
        true
    }

    /// The inline slot of `key` for `node`, taking a free one for a new key;
    /// [`OVERFLOW_SLOT`] for a series in the overflow map (created there if new).
    #[inline]
    fn slot_for<'t>(&mut self, node: u32, key: u64, name: impl FnOnce() -> &'t str) -> u8 {
        let row = &mut self.rows[node as usize];
        if let Some(s) = row.slot_of(key) {
            return s as u8;
        }
        if overflow_acc(&mut self.overflow, node, key).is_some() {
            return OVERFLOW_SLOT;
        }
        if !self.names.keys.contains_key(&key) {
            self.learn_key(key, name());
        }
        let row = &mut self.rows[node as usize];
        if (row.keys_len as usize) < INLINE_METRICS {
            row.keys[row.keys_len as usize] = key;
            row.keys_len += 1;
            return row.keys_len - 1;
        }
        let r = self.resolutions();
        self.overflow
            .entry(node)
            .or_default()
            .push((key, vec![Acc::default(); r]));
        OVERFLOW_SLOT
    }

    /// Closes the open window of (`node`, resolution `r`): emits it, scores the prediction
    /// of that window if one is pending (both queued instead when deferred).
    fn close(&mut self, node: u32, r: usize, created_ms: i64, out: &mut Vec<Closed>) {
        let w = node as usize * self.resolutions() + r;
        if !self.wins[w].open {
            return;
        }
        let res_ms = self.res_ms[r];
        let win = self.wins[w];
        let closed = self.closed_of(node, r, created_ms);
        // Clear the window's accumulators (the overflow ones too) for the next.
        let wm = &mut self.wins[w];
        wm.open = false;
        wm.closed_until_ms = win.start_ms.saturating_add(res_ms);
        wm.m = [Acc::default(); INLINE_METRICS];
        if let Some(list) = self.overflow.get_mut(&node) {
            for (_, accs) in list {
                accs[r] = Acc::default();
            }
        }
        self.open_windows = self.open_windows.saturating_sub(1);
        self.mark(node);
        if self.deferred {
            self.queue(Chore::Closed { r: r as u8, closed });
            if !self.settled.is_empty() {
                out.append(&mut self.settled);
            }
        } else {
            self.score(r, &closed);
            out.push(closed);
        }
    }

    /// A copy of (`node`, resolution `r`)'s window as it is now, with its keys and
    /// overflow series.
    fn closed_of(&self, node: u32, r: usize, created_ms: i64) -> Closed {
        let row = &self.rows[node as usize];
        let overflow = self
            .overflow
            .get(&node)
            .map(|list| list.iter().map(|(k, accs)| (*k, accs[r])).collect())
            .unwrap_or_default();
        Closed {
            node,
            resolution: self.cfg.resolutions[r],
            created_ms,
            win: self.wins[node as usize * self.resolutions() + r],
            keys_len: row.keys_len,
            keys: row.keys,
            overflow,
        }
    }

    /// Queues a chore, settling the oldest first when the queue is full.
    fn queue(&mut self, chore: Chore) {
        while self.chores.len() >= CHORES_MAX {
            let mut settled = std::mem::take(&mut self.settled);
            self.settle_one(&mut settled);
            self.settled = settled;
        }
        self.chores.push_back(chore);
    }

    /// Settles the oldest chore (a settled window goes to `out`); false when none waits.
    fn settle_one(&mut self, out: &mut Vec<Closed>) -> bool {
        match self.chores.pop_front() {
            Some(Chore::Closed { r, closed }) => {
                self.score(usize::from(r), &closed);
                out.push(closed);
                true
            }
            Some(Chore::Expect {
                node,
                r,
                window_ms,
                closed,
                series,
            }) => {
                self.file(node, usize::from(r), window_ms, closed, series);
                true
            }
            None => false,
        }
    }

    /// Whether closes and filings wait for [`Rollup::settle`] (off by default: each is
    /// settled at once). Turning it off settles nothing: call [`Rollup::settle`] first.
    pub fn set_deferred(&mut self, on: bool) {
        self.deferred = on;
    }

    /// Settles up to `budget` of the closes and filings that wait, oldest first, and hands
    /// out every window settled (into `out`). Returns how many it settled.
    pub fn settle(&mut self, budget: usize, out: &mut Vec<Closed>) -> usize {
        out.append(&mut self.settled);
        let mut n = 0;
        while n < budget && self.settle_one(out) {
            n += 1;
        }
        n
    }

    /// Closes and filings waiting to be settled (or windows settled and not yet handed out).
    pub fn unsettled(&self) -> usize {
        self.chores.len() + self.settled.len()
    }

    /// Files a prediction of `node`'s window starting at `window_ms` at `resolution`
    /// seconds, read from decision-log position `log_pos`. Returns whether it was filed:
    /// not when that window already closed (it is then scored at once against what the
    /// window observed, if that is still kept, else counted unscored), nor when the
    /// resolution is not rolled up (unscored).
    pub fn expect(
        &mut self,
        node: u32,
        resolution: u32,
        window_ms: i64,
        series: Vec<(u64, f64, f64)>,
        log_pos: u64,
    ) -> bool {
        let Some(r) = self.cfg.resolutions.iter().position(|&x| x == resolution) else {
            self.unscored += 1;
            return false;
        };
        if !self.ensure(node) {
            self.unscored += 1;
            return false;
        }
        let mut series = series;
        series.retain(|(_, v, b)| v.is_finite() && b.is_finite());
        series.truncate(PREDICTED_SERIES_MAX);
        let chunk = &mut self.chunks[node as usize / CHUNK_NODES];
        chunk.dirty = true;
        chunk.unstored_log_from.get_or_insert(log_pos);
        let win = &self.wins[node as usize * self.resolutions() + r];
        let closed = if win.open {
            window_ms < win.start_ms
        } else {
            window_ms < win.closed_until_ms
        };
        if self.deferred {
            self.queue(Chore::Expect {
                node,
                r: r as u8,
                window_ms,
                closed,
                series,
            });
            return !closed;
        }
        self.file(node, r, window_ms, closed, series)
    }

    /// Files a prediction of (`node`, resolution `r`)'s window at `window_ms`, or scores it
    /// at once when that window had `closed` when the prediction was read.
    fn file(&mut self, node: u32, r: usize, window_ms: i64, closed: bool, series: Vec<(u64, f64, f64)>) -> bool {
        if closed {
            // The window closed before its prediction was read: score it now, if what it
            // observed is still kept.
            match self.closed_unscored.remove(&(node, r as u8, window_ms)) {
                Some(observed) => self.fold_scores(node, &series, |key| {
                    observed.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
                }),
                None => self.unscored += 1,
            }
            return false;
        }
        let slot = node as usize * self.resolutions() + r;
        let pending = &mut self.expected[slot];
        pending.retain(|e| e.window_ms != window_ms);
        pending.push(Expected { window_ms, series });
        pending.sort_by_key(|e| e.window_ms);
        while pending.len() > self.expect_capacity {
            pending.remove(0);
            self.unscored += 1;
        }
        true
    }

    /// Scores the pending prediction of the window `c` closed (at resolution index `r`), if
    /// there is one; else keeps what the window observed for a prediction still on its way.
    fn score(&mut self, r: usize, c: &Closed) {
        let (node, start_ms) = (c.node, c.win.start_ms);
        let slot = node as usize * self.resolutions() + r;
        let mut found = None;
        if let Some(pending) = self.expected.get_mut(slot).filter(|p| !p.is_empty()) {
            // Predictions of windows before this one can no longer be scored.
            let before = pending.len();
            pending.retain(|e| e.window_ms >= start_ms);
            self.unscored += (before - pending.len()) as u64;
            found = pending
                .iter()
                .position(|e| e.window_ms == start_ms)
                .map(|i| pending.remove(i));
        }
        match found {
            Some(e) => self.fold_scores(node, &e.series, |key| observed_value(c, key)),
            None if self.keep_unscored => {
                self.bound_unscored();
                let observed = observed_of(c);
                let key = (node, r as u8, start_ms);
                self.closed_unscored.insert(key, observed);
                self.unscored_order.push_back(key);
            }
            None => {}
        }
    }

    /// Scores each predicted series against what `observed` says its window observed.
    fn fold_scores(&mut self, node: u32, series: &[(u64, f64, f64)], observed: impl Fn(u64) -> Option<f64>) {
        let Some(acc_row) = self.accuracy.get_mut(node as usize) else {
            return;
        };
        for &(key, predicted, base) in series {
            let Some(obs) = observed(key) else {
                continue;
            };
            let s = score_one(predicted, base, obs);
            match acc_row.iter_mut().find(|(k, _)| *k == key) {
                Some((_, agg)) => agg.add(&s),
                None => {
                    let mut agg = AccuracyAgg::default();
                    agg.add(&s);
                    acc_row.push((key, agg));
                }
            }
        }
        self.scored += 1;
        self.mark(node);
    }

    /// Keeps the closed-but-unscored windows under a bound: when full, about the oldest to
    /// close goes, one for each that comes. (Dropping the older half at once, found by
    /// sorting every key, held the journal thread for tens of milliseconds each time the
    /// bound was reached: every ~20 s at 10,000 nodes with the default bound.)
    fn bound_unscored(&mut self) {
        let max = self.unscored_max();
        while self.closed_unscored.len() >= max {
            let Some(oldest) = self.unscored_order.pop_front() else {
                break;
            };
            self.closed_unscored.remove(&oldest);
        }
        // Keys a late prediction took stay in the order until they reach its front. While
        // they outnumber the live keys, each close also looks at two keys at the front: one
        // taken is dropped, a live one goes to the back (kept, its age forgotten), so the
        // order stays within a small multiple of the windows kept, and no close pays for
        // more than two.
        if self.unscored_order.len() > 2 * self.closed_unscored.len() + 1024 {
            for _ in 0..2 {
                let Some(front) = self.unscored_order.pop_front() else {
                    break;
                };
                if self.closed_unscored.contains_key(&front) {
                    self.unscored_order.push_back(front);
                }
            }
        }
    }

    /// Closed-but-unscored windows kept at most.
    fn unscored_max(&self) -> usize {
        (self.cfg.nodes_max.saturating_mul(self.resolutions()) * 2).clamp(1024, 1 << 22)
    }

    /// Whether predictions come (then a window that closes before its prediction arrived
    /// keeps what it observed until it does). On by default.
    pub fn set_predicting(&mut self, on: bool) {
        self.keep_unscored = on;
        if !on {
            self.closed_unscored.clear();
            self.unscored_order.clear();
        }
    }

    /// Pending predictions kept per node and resolution: recovery files a whole stretch of
    /// the decision log's predictions before replaying the events they predict, so it
    /// raises this, and sets it back (to [`PREDICTIONS_PER_SLOT`]) afterwards, which drops
    /// the oldest beyond it (counted unscored).
    pub fn set_expect_capacity(&mut self, n: usize) {
        self.expect_capacity = n.max(1);
        let cap = self.expect_capacity;
        let mut dropped = 0u64;
        for list in &mut self.expected {
            while list.len() > cap {
                list.remove(0);
                dropped += 1;
            }
        }
        self.unscored += dropped;
    }

    /// Closes every open window whose last arrival is more than `resolution + grace` before
    /// `now_ms` (processing time).
    pub fn flush_idle(&mut self, now_ms: u64, out: &mut Vec<Closed>) {
        let r_count = self.resolutions();
        for n in 0..self.rows.len() {
            if !self.rows[n].seen {
                continue;
            }
            for r in 0..r_count {
                let win = &self.wins[n * r_count + r];
                let idle_ms = u64::from(self.cfg.resolutions[r]) * 1000 + self.cfg.grace_ms;
                if win.open && now_ms.saturating_sub(win.last_arrival_ms) > idle_ms {
                    self.close(n as u32, r, ms_i64(now_ms), out);
                }
            }
        }
    }

    /// Closes every open window now (shutdown).
    pub fn flush_all(&mut self, now_ms: u64, out: &mut Vec<Closed>) {
        let r_count = self.resolutions();
        for n in 0..self.rows.len() {
            for r in 0..r_count {
                self.close(n as u32, r, ms_i64(now_ms), out);
            }
        }
    }

    /// Capsules of the windows open now (not emitted; for "present" views and tests), sorted
    /// by (scope, resolution, window start).
    pub fn open_capsules(&self, created_ms: i64) -> Vec<Capsule> {
        let r_count = self.resolutions();
        let mut out: Vec<Capsule> = (0..self.rows.len())
            .flat_map(|n| (0..r_count).map(move |r| (n, r)))
            .filter_map(|(n, r)| {
                if !self.wins[n * r_count + r].open {
                    return None;
                }
                self.names.capsule(&self.closed_of(n as u32, r, created_ms))
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.key.scope_id, a.key.resolution, a.key.timestamp).cmp(&(
                &b.key.scope_id,
                b.key.resolution,
                b.key.timestamp,
            ))
        });
        out
    }

    /// The smallest journal position of the first event of any open window (where a replay
    /// into an empty roll-up must start to rebuild every open window), `None` when none is
    /// open.
    pub fn replay_from(&self) -> Option<u64> {
        self.wins.iter().filter(|w| w.open).map(|w| w.first_pos).min()
    }

    /// A node's accuracy per series name.
    pub fn accuracy_of(&self, node: u32) -> Vec<(String, AccuracyAgg)> {
        self.accuracy
            .get(node as usize)
            .map(|row| row.iter().map(|(k, a)| (self.names.series_name(*k), *a)).collect())
            .unwrap_or_default()
    }

    /// Checkpoint chunks ([`CHUNK_NODES`] nodes each) the roll-up has now.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub fn open_windows(&self) -> usize {
        self.open_windows
    }

    /// Events late at one resolution or more.
    pub fn late(&self) -> u64 {
        self.late_events
    }

    /// Late events per resolution, in the order of `RollupConfig::resolutions`.
    pub fn late_by_resolution(&self) -> &[u64] {
        &self.late_by_resolution
    }

    /// Events refused because their node index is at or past `nodes_max`.
    pub fn refused_nodes_full(&self) -> u64 {
        self.refused_nodes_full
    }

    /// Windows scored against a prediction.
    pub fn scored(&self) -> u64 {
        self.scored
    }

    /// Predictions that could not be scored.
    pub fn unscored(&self) -> u64 {
        self.unscored
    }

    /// Nodes seen.
    pub fn nodes(&self) -> usize {
        self.nodes_seen
    }
}

/// What the closed window `c` observed, per series it has (see [`crate::accuracy`]): from
/// the window's own copy of its keys and overflow series, so it may be asked after the
/// node moved on.
fn observed_of(c: &Closed) -> Vec<(u64, f64)> {
    [KEY_PRICE, KEY_VOLUME, KEY_STRESS]
        .into_iter()
        .chain(c.keys().iter().copied())
        .chain(c.overflow.iter().map(|(k, _)| *k))
        .filter_map(|k| observed_value(c, k).map(|v| (k, v)))
        .collect()
}

/// What the closed window `c` observed of series `key` (see [`crate::accuracy`]).
fn observed_value(c: &Closed, key: u64) -> Option<f64> {
    let win = &c.win;
    win.observed_fixed(key)
        .or_else(|| match c.keys().iter().position(|&k| k == key) {
            Some(s) => win.m[s].mean(),
            None => c.overflow.iter().find(|(k, _)| *k == key).and_then(|(_, a)| a.mean()),
        })
}

/// The accumulators of an overflow series of `node`, if it has one under `key`.
fn overflow_acc(overflow: &mut HashMap<u32, Vec<(u64, Vec<Acc>)>>, node: u32, key: u64) -> Option<&mut Vec<Acc>> {
    overflow
        .get_mut(&node)?
        .iter_mut()
        .find(|(k, _)| *k == key)
        .map(|(_, a)| a)
}

fn score_one(predicted: f64, base: f64, observed: f64) -> SeriesScore {
    let abs_err = (predicted - observed).abs();
    let rel_err = abs_err / observed.abs().max(REL_ERR_FLOOR);
    let direction_hit = if predicted == base || observed == base {
        None
    } else {
        Some((predicted > base) == (observed > base))
    };
    SeriesScore {
        name: String::new(),
        predicted,
        observed,
        abs_err,
        rel_err,
        direction_hit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;

    impl Texts for Names {
        fn node_id(&self) -> &str {
            "test:node"
        }
        fn status(&self) -> &str {
            "ok"
        }
        fn metric_name(&self, _i: usize) -> &str {
            "m"
        }
    }

    /// The lines `touch` names for `node` with `series` metrics.
    fn named(r: &Rollup, node: u32, series: usize) -> Vec<usize> {
        let mut lines = Vec::new();
        r.touch(node, series, |p| lines.push(p as usize / 64));
        lines
    }

    #[test]
    fn touch_names_each_windows_header_and_the_series_an_event_carries() {
        let mut r = Rollup::new(RollupConfig {
            resolutions: vec![1, 60],
            recent_ids: 4,
            ..RollupConfig::default()
        });
        let metrics: Vec<(u64, f64)> = (0..4).map(|k| (100 + k, 1.0)).collect();
        let obs = Observation {
            timestamp: 1_000,
            price: Some(1.0),
            volume: None,
            stress: None,
            status: 7,
            metrics: &metrics,
        };
        r.push(3, 1, 1_000, &obs, &Names, &mut Vec::new());
        let wins: Vec<(usize, usize)> = r.wins[6..8]
            .iter()
            .map(|w| {
                let at = std::ptr::from_ref(w) as usize;
                (at, at + std::mem::size_of::<Win>())
            })
            .collect();
        assert!(wins.iter().all(|&(at, _)| at % 64 == 0), "windows start on a line");
        let in_windows = |lines: &[usize]| -> Vec<usize> {
            let mut v: Vec<usize> = lines
                .iter()
                .copied()
                .filter(|&l| wins.iter().any(|&(a, b)| l * 64 >= a && l * 64 < b))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        // Two header lines per window, then one line per 64 bytes of the accumulators.
        for (series, lines_per_window) in [(0, 2), (1, 3), (4, 5), (8, 7), (20, 7)] {
            let lines = named(&r, 3, series);
            assert_eq!(in_windows(&lines).len(), 2 * lines_per_window, "{series} series");
        }
        // Nothing outside the node's row, windows and next id slot.
        let row = std::ptr::from_ref(&r.rows[3]) as usize;
        let slot = std::ptr::from_ref(&r.recent[3 * 4 + usize::from(r.recent_next[3]) % 4]) as usize;
        for l in named(&r, 3, 4) {
            let ok = (l * 64 + 64 > row && l * 64 < row + std::mem::size_of::<Row>())
                || l == slot / 64
                || wins.iter().any(|&(a, b)| l * 64 >= a && l * 64 < b);
            assert!(ok, "line {l:#x} is none of node 3's");
        }
        assert!(named(&r, r.node_span(), 4).is_empty(), "no state, no lines");
    }
}
