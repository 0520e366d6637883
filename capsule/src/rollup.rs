//! Observed roll-ups: events of one node folded into one window per configured resolution.
//!
//! A node's window at resolution `r` is `[floor(ts / (r·1000)) · r·1000, +r·1000)` in event
//! time. Per (node, resolution) at most one window is open:
//! - an event in the open window is folded in;
//! - an event in a later window closes the open one (it is emitted as an OBSERVED capsule)
//!   and opens its own;
//! - an event in an earlier window — or, when no window is open, in a window that already
//!   closed — is **late**: not folded in, counted, and reported. Resolutions are judged
//!   independently: an event can be late at 1 s and still belong to the open 60 s window.
//!
//! [`Rollup::flush_idle`] closes windows whose node went quiet (processing time), so an idle
//! node's last capsule lands. A node whose windows are all closed is forgotten by the flush to
//! keep memory bounded; a late event for a forgotten node's already-landed window then builds
//! a capsule with the same key and different content, which the store refuses and lists as a
//! conflict — it never overwrites.
//!
//! Within a window, values are taken in **arrival order**: `open`/`close` and every `last` are
//! the first/last arrived, while `first_ts`/`last_ts` are the smallest/largest event times.
//!
//! Recovery: [`Rollup::replay_from`] is the smallest journal position of the first event of
//! any open window of a partition. Replaying the partition from there into a fresh `Rollup`
//! rebuilds every open window exactly. Windows of that stretch that had already closed (and
//! landed) are rebuilt too; those rebuilt whole come out identical (the store answers
//! "existing"), those whose first events lie before the replay point come out partial and the
//! store refuses them as conflicts, keeping the complete capsule that landed first.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{Capsule, CapsuleBody, CapsuleKey, MetricStats, ObservedStats, Ohlc, Vantage};

/// One event as the roll-up sees it.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// Event time, epoch ms.
    pub timestamp: i64,
    pub price: Option<f64>,
    pub volume: Option<f64>,
    pub stress: Option<f64>,
    pub status: &'a str,
    pub metrics: &'a [(&'a str, f64)],
}

#[derive(Clone, Debug)]
pub struct RollupConfig {
    /// Window lengths in seconds; each must be ≥ 1.
    pub resolutions: Vec<u32>,
    /// How long after a node's last arrival (beyond the resolution) an open window is closed
    /// by [`Rollup::flush_idle`].
    pub grace_ms: u64,
    /// Most nodes tracked at once; events of further nodes are refused (counted).
    pub nodes_max: usize,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            resolutions: vec![1, 60],
            grace_ms: 2000,
            nodes_max: 100_000,
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
    /// The node is new and `nodes_max` nodes are already tracked: not rolled up.
    NodesFull,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MetricAcc {
    name: String,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Window {
    start_ms: i64,
    first_pos: u64,
    last_arrival_ms: u64,
    count: u64,
    first_ts: i64,
    last_ts: i64,
    metrics: Vec<MetricAcc>,
    price: Option<Ohlc>,
    volume_sum: Option<f64>,
    stress_max: Option<f64>,
    stress_last: Option<f64>,
    last_status: String,
}

impl Window {
    fn open(start_ms: i64, pos: u64, arrival_ms: u64, obs: &Observation<'_>) -> Self {
        let mut w = Window {
            start_ms,
            first_pos: pos,
            last_arrival_ms: arrival_ms,
            count: 0,
            first_ts: obs.timestamp,
            last_ts: obs.timestamp,
            metrics: Vec::with_capacity(obs.metrics.len()),
            price: None,
            volume_sum: None,
            stress_max: None,
            stress_last: None,
            last_status: String::new(),
        };
        w.fold(arrival_ms, obs);
        w
    }

    fn fold(&mut self, arrival_ms: u64, obs: &Observation<'_>) {
        self.count += 1;
        self.last_arrival_ms = self.last_arrival_ms.max(arrival_ms);
        self.first_ts = self.first_ts.min(obs.timestamp);
        self.last_ts = self.last_ts.max(obs.timestamp);
        if let Some(p) = obs.price {
            self.price = Some(match self.price {
                None => Ohlc {
                    open: p,
                    high: p,
                    low: p,
                    close: p,
                },
                Some(o) => Ohlc {
                    open: o.open,
                    high: o.high.max(p),
                    low: o.low.min(p),
                    close: p,
                },
            });
        }
        if let Some(v) = obs.volume {
            self.volume_sum = Some((self.volume_sum.unwrap_or(0.0) + v).clamp(f64::MIN, f64::MAX));
        }
        if let Some(s) = obs.stress {
            self.stress_max = Some(self.stress_max.map_or(s, |m| m.max(s)));
            self.stress_last = Some(s);
        }
        if self.last_status != obs.status {
            self.last_status.clear();
            self.last_status.push_str(obs.status);
        }
        for &(name, value) in obs.metrics {
            self.fold_metric(name, value);
        }
    }

    fn fold_metric(&mut self, name: &str, value: f64) {
        match self.metrics.binary_search_by(|m| m.name.as_str().cmp(name)) {
            Ok(i) => {
                let m = &mut self.metrics[i];
                m.count += 1;
                m.min = m.min.min(value);
                m.max = m.max.max(value);
                // Sums of finite inputs can still overflow: saturate, so every stored
                // number (and the checkpoint, JSON) stays finite.
                m.sum = (m.sum + value).clamp(f64::MIN, f64::MAX);
                m.last = value;
            }
            Err(i) => self.metrics.insert(
                i,
                MetricAcc {
                    name: name.to_owned(),
                    count: 1,
                    min: value,
                    max: value,
                    sum: value,
                    last: value,
                },
            ),
        }
    }

    fn to_capsule(&self, scope_id: &str, resolution: u32, created_ms: i64) -> Capsule {
        let metrics = self
            .metrics
            .iter()
            .map(|m| MetricStats {
                name: m.name.clone(),
                count: m.count,
                min: m.min,
                max: m.max,
                mean: m.sum / m.count as f64,
                last: m.last,
            })
            .collect();
        Capsule {
            key: CapsuleKey {
                scope_id: scope_id.to_owned(),
                timestamp: self.start_ms,
                resolution,
                vantage: Vantage::Observed,
            },
            body: CapsuleBody::Observed(ObservedStats {
                count: self.count,
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                metrics,
                price: self.price,
                volume_sum: self.volume_sum,
                stress_max: self.stress_max,
                stress_last: self.stress_last,
                last_status: self.last_status.clone(),
            }),
            created_ms,
        }
    }
}

/// One (node, resolution): the open window, and where closed windows end (for lateness).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Slot {
    open: Option<Window>,
    /// End (exclusive) of the newest window that closed; events before it are late.
    closed_until_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Node {
    partition: u32,
    slots: Vec<Slot>,
}

/// The roll-up state of every tracked node. Single-threaded (owned by the journal thread).
#[derive(Clone, Debug)]
pub struct Rollup {
    cfg: RollupConfig,
    nodes: HashMap<String, Node>,
    open_windows: usize,
    late_events: u64,
    late_by_resolution: Vec<u64>,
    refused_nodes_full: u64,
}

const CHECKPOINT_VERSION: u32 = 1;

#[derive(Serialize)]
struct CheckpointRef<'a> {
    version: u32,
    resolutions: &'a [u32],
    late_events: u64,
    nodes: &'a HashMap<String, Node>,
}

#[derive(Deserialize)]
struct Checkpoint {
    version: u32,
    resolutions: Vec<u32>,
    late_events: u64,
    nodes: HashMap<String, Node>,
}

/// Why a roll-up checkpoint was not restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The bytes are not a checkpoint.
    #[error("roll-up checkpoint does not parse: {0}")]
    Parse(String),
    /// Written by another format version.
    #[error("roll-up checkpoint version {0} is not supported")]
    Version(u32),
    /// Written with other resolutions.
    #[error("roll-up checkpoint has resolutions {stored:?}, the configuration {configured:?}")]
    Resolutions {
        /// In the checkpoint.
        stored: Vec<u32>,
        /// Configured now.
        configured: Vec<u32>,
    },
    /// More nodes than `nodes_max`.
    #[error("roll-up checkpoint holds {0} nodes, more than allowed")]
    TooManyNodes(usize),
}

/// Window start of `ts` at a window length of `res_ms` (floor, also for negative times).
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
        let n = cfg.resolutions.len();
        Rollup {
            cfg,
            nodes: HashMap::new(),
            open_windows: 0,
            late_events: 0,
            late_by_resolution: vec![0; n],
            refused_nodes_full: 0,
        }
    }

    pub fn config(&self) -> &RollupConfig {
        &self.cfg
    }

    /// Every node's open windows and lateness bounds, serialised: stored with the journal
    /// positions it corresponds to, it lets recovery start from there instead of from the
    /// first event of the oldest open window (up to the coarsest resolution back).
    pub fn checkpoint(&self) -> Result<Vec<u8>, serde_json::Error> {
        let cp = CheckpointRef {
            version: CHECKPOINT_VERSION,
            resolutions: &self.cfg.resolutions,
            late_events: self.late_events,
            nodes: &self.nodes,
        };
        serde_json::to_vec(&cp)
    }

    /// Rebuilds a roll-up from [`Rollup::checkpoint`]'s bytes. Refused (a typed error, the
    /// caller starts empty and replays further back) if the bytes do not parse, are of
    /// another version, were made with other resolutions, or hold more nodes than allowed.
    pub fn restore(cfg: RollupConfig, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let cp: Checkpoint = serde_json::from_slice(bytes).map_err(|e| CheckpointError::Parse(e.to_string()))?;
        let mut r = Rollup::new(cfg);
        if cp.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version(cp.version));
        }
        if cp.resolutions != r.cfg.resolutions {
            return Err(CheckpointError::Resolutions {
                stored: cp.resolutions,
                configured: r.cfg.resolutions.clone(),
            });
        }
        if cp.nodes.len() > r.cfg.nodes_max {
            return Err(CheckpointError::TooManyNodes(cp.nodes.len()));
        }
        if cp.nodes.values().any(|n| n.slots.len() != r.cfg.resolutions.len()) {
            return Err(CheckpointError::Parse(
                "a node's slots do not match the resolutions".into(),
            ));
        }
        r.open_windows = cp
            .nodes
            .values()
            .flat_map(|n| &n.slots)
            .filter(|s| s.open.is_some())
            .count();
        r.late_events = cp.late_events;
        r.nodes = cp.nodes;
        Ok(r)
    }

    /// Adds one event of node `scope_id` (in `partition`), read from journal position `pos`,
    /// arriving at processing time `arrival_ms`. Closed windows are appended to `out`.
    pub fn push(
        &mut self,
        partition: u32,
        scope_id: &str,
        pos: u64,
        arrival_ms: u64,
        obs: &Observation<'_>,
        out: &mut Vec<Capsule>,
    ) -> PushOutcome {
        if !self.nodes.contains_key(scope_id) {
            if self.nodes.len() >= self.cfg.nodes_max {
                self.refused_nodes_full += 1;
                return PushOutcome::NodesFull;
            }
            let slots = self
                .cfg
                .resolutions
                .iter()
                .map(|_| Slot {
                    open: None,
                    closed_until_ms: i64::MIN,
                })
                .collect();
            self.nodes.insert(scope_id.to_owned(), Node { partition, slots });
        }
        let Some(node) = self.nodes.get_mut(scope_id) else {
            return PushOutcome::NodesFull;
        };
        node.partition = partition;
        let mut late_at = 0usize;
        for (i, slot) in node.slots.iter_mut().enumerate() {
            let resolution = self.cfg.resolutions[i];
            let start = window_start(obs.timestamp, resolution);
            match push_slot(slot, resolution, scope_id, start, pos, arrival_ms, obs, out) {
                SlotPush::Folded => {}
                SlotPush::Opened => self.open_windows += 1,
                SlotPush::Rolled => {}
                SlotPush::Late => {
                    late_at += 1;
                    self.late_by_resolution[i] += 1;
                }
            }
        }
        match late_at {
            0 => PushOutcome::Accepted,
            n if n == self.cfg.resolutions.len() => {
                self.late_events += 1;
                PushOutcome::Late
            }
            _ => {
                self.late_events += 1;
                PushOutcome::PartlyLate
            }
        }
    }

    /// Closes every open window whose last arrival is more than `resolution + grace` before
    /// `now_ms` (processing time). Nodes are kept (see the body).
    pub fn flush_idle(&mut self, now_ms: u64, out: &mut Vec<Capsule>) {
        let grace_ms = self.cfg.grace_ms;
        let resolutions = &self.cfg.resolutions;
        let mut closed = 0usize;
        // Nodes stay (bounded by nodes_max): a node's `closed_until_ms` is what makes a
        // later event for a window already closed count as late instead of opening the
        // window again.
        self.nodes.retain(|scope_id, node| {
            let mut any_open = false;
            for (slot, &resolution) in node.slots.iter_mut().zip(resolutions) {
                let idle_ms = u64::from(resolution) * 1000 + grace_ms;
                let expired = slot
                    .open
                    .as_ref()
                    .is_some_and(|w| now_ms.saturating_sub(w.last_arrival_ms) > idle_ms);
                if expired {
                    close_slot(slot, resolution, scope_id, ms_i64(now_ms), out);
                    closed += 1;
                }
                any_open |= slot.open.is_some();
            }
            let _ = any_open;
            true
        });
        self.open_windows -= closed;
    }

    /// Closes every open window now (shutdown), and forgets all nodes.
    pub fn flush_all(&mut self, now_ms: u64, out: &mut Vec<Capsule>) {
        for (scope_id, node) in &mut self.nodes {
            for (slot, &resolution) in node.slots.iter_mut().zip(&self.cfg.resolutions) {
                if slot.open.is_some() {
                    close_slot(slot, resolution, scope_id, ms_i64(now_ms), out);
                }
            }
        }
        self.nodes.clear();
        self.open_windows = 0;
    }

    /// Where recovery must start reading `partition` so that every open window is rebuilt:
    /// the smallest position of the first event of any open window of a node in it; `None`
    /// when none is open (everything read so far is in closed capsules).
    pub fn replay_from(&self, partition: u32) -> Option<u64> {
        self.nodes
            .values()
            .filter(|n| n.partition == partition)
            .flat_map(|n| n.slots.iter())
            .filter_map(|s| s.open.as_ref().map(|w| w.first_pos))
            .min()
    }

    /// [`Rollup::replay_from`] of partitions `0..partitions` in one pass over the nodes
    /// (the journal thread computes every partition's watermark at each hand-off).
    pub fn replay_from_all(&self, partitions: u32) -> Vec<Option<u64>> {
        let mut out = vec![None; partitions as usize];
        for n in self.nodes.values() {
            let Some(slot) = out.get_mut(n.partition as usize) else {
                continue;
            };
            for w in n.slots.iter().filter_map(|s| s.open.as_ref()) {
                *slot = Some(slot.map_or(w.first_pos, |p: u64| p.min(w.first_pos)));
            }
        }
        out
    }

    /// Capsules of the windows open now (not emitted; for "present" views and tests), sorted
    /// by (scope, resolution, window start).
    pub fn open_capsules(&self, created_ms: i64) -> Vec<Capsule> {
        let mut out: Vec<Capsule> = self
            .nodes
            .iter()
            .flat_map(|(scope_id, node)| {
                node.slots
                    .iter()
                    .zip(&self.cfg.resolutions)
                    .filter_map(move |(slot, &r)| slot.open.as_ref().map(|w| w.to_capsule(scope_id, r, created_ms)))
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

    /// Events refused because `nodes_max` nodes were tracked.
    pub fn refused_nodes_full(&self) -> u64 {
        self.refused_nodes_full
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }
}

enum SlotPush {
    Folded,
    Opened,
    /// Closed the open window and opened the event's.
    Rolled,
    Late,
}

#[allow(clippy::too_many_arguments)]
fn push_slot(
    slot: &mut Slot,
    resolution: u32,
    scope_id: &str,
    start: i64,
    pos: u64,
    arrival_ms: u64,
    obs: &Observation<'_>,
    out: &mut Vec<Capsule>,
) -> SlotPush {
    match &mut slot.open {
        Some(w) if start == w.start_ms => {
            w.fold(arrival_ms, obs);
            SlotPush::Folded
        }
        Some(w) if start < w.start_ms => SlotPush::Late,
        Some(_) => {
            close_slot(slot, resolution, scope_id, ms_i64(arrival_ms), out);
            slot.open = Some(Window::open(start, pos, arrival_ms, obs));
            SlotPush::Rolled
        }
        None if start < slot.closed_until_ms => SlotPush::Late,
        None => {
            slot.open = Some(Window::open(start, pos, arrival_ms, obs));
            SlotPush::Opened
        }
    }
}

fn close_slot(slot: &mut Slot, resolution: u32, scope_id: &str, created_ms: i64, out: &mut Vec<Capsule>) {
    if let Some(w) = slot.open.take() {
        let res_ms = i64::from(resolution) * 1000;
        slot.closed_until_ms = w.start_ms.saturating_add(res_ms);
        out.push(w.to_capsule(scope_id, resolution, created_ms));
    }
}
