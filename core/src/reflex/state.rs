//! Present state per node, owned by one reflex shard: the last event's facts, and per
//! series (price, volume, stress, each metric) the last value, an EWMA with its variance,
//! and a ring of checkpoints that `change()` looks back through.
//!
//! Everything is allocated once, zeroed, from `reflex.nodes_max`: plain arrays of numbers
//! (all-zero means "empty"), so the kernel maps pages only for the nodes that appear and
//! RSS follows the nodes in use, not the limit. A node has `series_per_node` series
//! slots, taken first come; a series past that is counted and not tracked.
//!
//! Checkpoints: a series records (time, value) when its last checkpoint is at least
//! `window_step_ms` old, into a ring of `window_points`. `change(x, W)` compares the value
//! now with the newest checkpoint at or before `now - W`, so its look-back is between W
//! and W + step; the rule compiler refuses windows shorter than one step or longer than
//! the ring covers.
//!
//! Event times reach here already checked against the daemon's clock (ingest, the HTTP
//! API and the bridge refuse what is too far ahead or too old), but the arithmetic does
//! not rely on it: with the bounds turned off, any `i64` timestamp in any order is taken
//! without overflow (time differences are computed in `i128` or `f64`, counts saturate).

use rim_rules::{Field, Inputs, MetricKey, Series};

use crate::memory::{filled, zeroed, HugeTable, NodePrefetch};
use crate::tick::TickView;

/// Per-node words.
const M_LAST_SEQ: usize = 0;
const M_LAST_TS: usize = 1;
const M_EVENTS: usize = 2;
const M_SEEN_MS: usize = 3;
const M_RULES_GEN: usize = 4;
const M_STALE_SEQ: usize = 5;
const M_STALE_MASK: usize = 6;
const M_STATUS: usize = 7;

/// An empty slot of the id lookup table.
const NO_INDEX: u32 = u32::MAX;

/// Per-series floats.
const S_LAST: usize = 0;
const S_EWMA: usize = 1;
const S_VAR: usize = 2;
const S_EWMA_PREV: usize = 3;
const S_VAR_PREV: usize = 4;
const S_COUNT: usize = 5;
const S_HEAD: usize = 6;
const S_POINT_TS: usize = 7;

/// The key a series is stored under (0 means an empty slot).
pub fn series_key(s: Series) -> u64 {
    match s {
        Series::Price => 1,
        Series::Volume => 2,
        Series::Stress => 3,
        Series::Metric(MetricKey(h)) => metric_key(h),
    }
}

/// The stored key of a metric whose name hashes to `h` (clear of the field keys).
pub fn metric_key(h: u64) -> u64 {
    if h <= 3 {
        h + 4
    } else {
        h
    }
}

/// Shape of the state.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Nodes.
    pub nodes: usize,
    /// Series slots per node.
    pub series: usize,
    /// Checkpoints per series.
    pub points: usize,
    /// Checkpoint spacing, ms.
    pub step_ms: u64,
    /// EWMA weight.
    pub alpha: f64,
    /// Samples before a z-score is known.
    pub zscore_min: u32,
}

impl Shape {
    /// The shape the configuration asks for (the daemon's shards and a backtest's use the
    /// same, so evidence values agree).
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            nodes: config.reflex.nodes_max,
            series: config.reflex.series_per_node,
            points: config.reflex.window_points,
            step_ms: config.reflex.window_step_ms,
            alpha: config.reflex.ewma_alpha,
            zscore_min: config.reflex.zscore_min_samples,
        }
    }
}

/// Where one series' words are.
#[derive(Clone, Copy)]
struct Ser {
    /// Index of its 8 value words in `blocks`.
    vals: usize,
    /// Index of its first checkpoint in `points`.
    points: usize,
}

/// All nodes' present state in one shard.
pub struct NodeState {
    shape: Shape,
    /// One block per node, so that an event's reads and writes fall on adjacent cache
    /// lines of one page: 8 meta words, then `series` keys, then 8 words per series
    /// (floats stored as their bits).
    blocks: HugeTable<u64>,
    stride: usize,
    points: HugeTable<[f64; 2]>,
    names: HugeTable<(u32, u32)>,
    /// Open-addressed id → node index (for live-state queries by id), `NO_INDEX` = empty.
    lookup: HugeTable<u32>,
    arena: String,
    /// Series not tracked because a node's slots were full.
    pub series_refused: u64,
}

impl NodeState {
    /// Allocates (zeroed) state of `shape`.
    pub fn new(shape: Shape) -> Self {
        let s = shape.nodes * shape.series;
        let stride = 8 + shape.series * 9;
        Self {
            shape,
            blocks: zeroed(shape.nodes * stride),
            stride,
            points: zeroed(s * shape.points),
            names: zeroed(shape.nodes),
            lookup: filled(NO_INDEX, (shape.nodes * 2).next_power_of_two().max(16)),
            arena: String::with_capacity(shape.nodes.saturating_mul(40)),
            series_refused: 0,
        }
    }

    fn meta(&self, n: usize) -> &[u64] {
        &self.blocks[n * self.stride..n * self.stride + 8]
    }

    fn meta_mut(&mut self, n: usize) -> &mut [u64] {
        &mut self.blocks[n * self.stride..n * self.stride + 8]
    }

    /// Where series `slot` of node `n` lives (multiplications only: this runs several
    /// times per event, and a division by the runtime series count would cost more than
    /// the rest of the lookup).
    fn ser(&self, n: usize, slot: usize) -> Ser {
        let b = n * self.stride;
        Ser {
            vals: b + 8 + self.shape.series + slot * 8,
            points: (n * self.shape.series + slot) * self.shape.points,
        }
    }

    fn val(&self, s: Ser, f: usize) -> f64 {
        f64::from_bits(self.blocks[s.vals + f])
    }

    /// Records node `n`'s id.
    pub fn define(&mut self, n: u32, id: &str) {
        if self.name(n) == id {
            return;
        }
        if let Some(slot) = self.names.get_mut(n as usize) {
            let start = self.arena.len() as u32;
            self.arena.push_str(id);
            *slot = (start, id.len() as u32);
            self.index(n, id);
        }
    }

    /// Enters `id` → `n` in the lookup table (a node index is defined once per id per
    /// run, and the table has twice as many slots as nodes, so it never fills).
    fn index(&mut self, n: u32, id: &str) {
        let mask = self.lookup.len() - 1;
        let mut i = rim_rules::name_hash(id) as usize & mask;
        for _ in 0..self.lookup.len() {
            let m = self.lookup[i];
            if m == NO_INDEX || m == n || self.name(m) == id {
                self.lookup[i] = n;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The index of the node called `id`, if this shard has defined it.
    pub fn find(&self, id: &str) -> Option<u32> {
        let mask = self.lookup.len() - 1;
        let mut i = rim_rules::name_hash(id) as usize & mask;
        for _ in 0..self.lookup.len() {
            let m = self.lookup[i];
            if m == NO_INDEX {
                return None;
            }
            if self.name(m) == id {
                return Some(m);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Node `n`'s id ("" if never defined).
    pub fn name(&self, n: u32) -> &str {
        self.names
            .get(n as usize)
            .and_then(|&(s, l)| self.arena.get(s as usize..(s + l) as usize))
            .unwrap_or("")
    }

    /// Starts loading node `n`'s block (meta, series keys, series) into the cache without
    /// waiting for it: a caller with many nodes' events at hand (recovery's replay) issues
    /// them together so that the misses overlap. Any `n` is harmless (out of range: none).
    pub fn prefetch(&self, n: u32) {
        let start = (n as usize).saturating_mul(self.stride);
        let Some(block) = self.blocks.get(start..start + self.stride) else {
            return;
        };
        for line in block.chunks(8) {
            rim_ring::prefetch_line(line.as_ptr().cast());
        }
    }

    /// Starts loading the first and the last line of node `n`'s id text (a decision
    /// carries it; the table entry that locates it is in [`NodeState::prefetch_hint`], the
    /// text itself could not be: where it is depends on that entry).
    pub fn prefetch_name(&self, n: u32) {
        if let Some(&(start, len)) = self.names.get(n as usize) {
            let p = self.arena.as_ptr().wrapping_add(start as usize);
            rim_ring::prefetch_line(p);
            rim_ring::prefetch_line(p.wrapping_add(len.saturating_sub(1) as usize));
        }
    }

    /// Where the nodes' blocks and names are, for [`NodePrefetch`].
    pub fn prefetch_hint(&self) -> NodePrefetch {
        NodePrefetch::new(self.shape.nodes)
            .with(&self.blocks, self.stride)
            .with(&self.names, 1)
    }

    /// Whether `n` is a node index this state holds.
    pub fn contains(&self, n: u32) -> bool {
        (n as usize) < self.shape.nodes
    }

    /// Applies an event (`t`, whose head the caller decoded as `head`) to its node. Returns
    /// the gap to the node's previous event (ms), if it had one. `now_ms` is the shard's
    /// wall clock.
    pub fn apply(&mut self, t: &TickView<'_>, head: &crate::tick::TickHead, now_ms: u64) -> Option<f64> {
        let n = head.node as usize;
        let (seq, ts) = (head.seq, head.timestamp);
        let m = self.meta_mut(n);
        let gap = (m[M_EVENTS] > 0).then(|| time_gap_ms(m[M_LAST_TS] as i64, ts));
        m[M_LAST_SEQ] = seq;
        m[M_LAST_TS] = ts as u64;
        m[M_EVENTS] = m[M_EVENTS].saturating_add(1);
        m[M_SEEN_MS] = now_ms;
        m[M_STATUS] = head.status;
        // `hint`: the slot the series would have if this node's events always carried the
        // same series in the same order, as a feed's events for one node usually do.
        let mut hint = 0;
        for (key, v) in [(1, head.price), (2, head.volume), (3, head.stress)] {
            if let Some(v) = v {
                self.observe(n, key, v, ts, hint);
                hint += 1;
            }
        }
        for i in 0..t.metric_count() {
            let (h, v) = t.metric(i);
            self.observe(n, metric_key(h), v, ts, hint + i);
        }
        gap
    }

    fn slot(&self, n: usize, key: u64) -> Option<Ser> {
        let b = n * self.stride + 8;
        let keys = &self.blocks[b..b + self.shape.series];
        keys.iter().position(|&k| k == key).map(|slot| self.ser(n, slot))
    }

    /// The slot of series `key` of node `n`, taking the first free one if it has none;
    /// `hint` is looked at first. A node's keys fill its slots from the front and a key is
    /// in one slot at most, so a match at `hint` is the slot the scan would find.
    fn slot_or_take(&mut self, n: usize, key: u64, hint: usize) -> Option<Ser> {
        let b = n * self.stride + 8;
        if hint < self.shape.series && self.blocks[b + hint] == key {
            return Some(self.ser(n, hint));
        }
        let keys = &mut self.blocks[b..b + self.shape.series];
        let slot = keys.iter().position(|&k| k == key || k == 0)?;
        keys[slot] = key;
        Some(self.ser(n, slot))
    }

    fn observe(&mut self, n: usize, key: u64, x: f64, ts: i64, hint: usize) {
        let Some(ser) = self.slot_or_take(n, key, hint) else {
            self.series_refused += 1;
            return;
        };
        let alpha = self.shape.alpha;
        let at = ser.vals;
        let mut s = [0.0f64; 8];
        for (f, w) in s.iter_mut().zip(&self.blocks[at..at + 8]) {
            *f = f64::from_bits(*w);
        }
        s[S_EWMA_PREV] = s[S_EWMA];
        s[S_VAR_PREV] = s[S_VAR];
        if s[S_COUNT] == 0.0 {
            s[S_EWMA] = x;
            s[S_VAR] = 0.0;
        } else {
            // West's exponentially weighted mean and variance.
            let diff = x - s[S_EWMA];
            let incr = alpha * diff;
            s[S_EWMA] += incr;
            s[S_VAR] = (1.0 - alpha) * (s[S_VAR] + diff * incr);
        }
        s[S_LAST] = x;
        // A count in an f64 stops growing at 2^53 rather than wrapping.
        s[S_COUNT] += 1.0;
        let due = s[S_COUNT] == 1.0 || ts as f64 - s[S_POINT_TS] >= self.shape.step_ms as f64;
        if due {
            let next = s[S_HEAD] as usize + 1;
            let head = if s[S_COUNT] == 1.0 || next == self.shape.points {
                0
            } else {
                next
            };
            s[S_HEAD] = head as f64;
            s[S_POINT_TS] = ts as f64;
            self.points[ser.points + head] = [ts as f64, x];
        }
        for (w, f) in self.blocks[at..at + 8].iter_mut().zip(s) {
            *w = f.to_bits();
        }
    }

    fn last(&self, n: usize, key: u64) -> Option<f64> {
        self.slot(n, key).map(|s| self.val(s, S_LAST))
    }

    fn change(&self, n: usize, key: u64, window_ms: u64, now_ts: i64) -> Option<(f64, f64)> {
        let s = self.slot(n, key)?;
        let p = self.shape.points;
        let target = now_ts as f64 - window_ms as f64;
        let head = self.val(s, S_HEAD) as usize;
        let count = (self.val(s, S_COUNT) as usize).min(p);
        let last = self.val(s, S_LAST);
        let ring = &self.points[s.points..s.points + p];
        // Newest first: `head` down to 0, then from the end of the ring down past `head`.
        let (to_head, after_head) = ring.split_at((head + 1).min(p));
        to_head
            .iter()
            .rev()
            .chain(after_head.iter().rev())
            .take(count)
            .find(|pt| pt[0] != 0.0 && pt[0] <= target)
            .map(|pt| (pt[1], last))
    }

    fn zscore(&self, n: usize, key: u64) -> Option<f64> {
        let s = self.slot(n, key)?;
        let (count, var_prev) = (self.val(s, S_COUNT), self.val(s, S_VAR_PREV));
        if count - 1.0 < f64::from(self.shape.zscore_min) || var_prev <= 0.0 {
            return None;
        }
        Some((self.val(s, S_LAST) - self.val(s, S_EWMA_PREV)) / var_prev.sqrt())
    }

    fn ewma(&self, n: usize, key: u64) -> Option<f64> {
        let s = self.slot(n, key)?;
        (self.val(s, S_COUNT) > 0.0).then(|| self.val(s, S_EWMA))
    }

    /// Node `n`'s series as (key, samples, EWMA, EWMA variance, last value), for the
    /// predictor.
    pub fn series(&self, n: u32) -> impl Iterator<Item = (u64, f64, f64, f64, f64)> + '_ {
        let n = n as usize;
        let b = n * self.stride + 8;
        self.blocks[b..b + self.shape.series]
            .iter()
            .enumerate()
            .filter(|(_, &k)| k != 0)
            .map(move |(slot, &k)| {
                let s = self.ser(n, slot);
                (
                    k,
                    self.val(s, S_COUNT),
                    self.val(s, S_EWMA),
                    self.val(s, S_VAR),
                    self.val(s, S_LAST),
                )
            })
    }

    /// The rule-set generation node `n`'s rule list was built for.
    pub fn rules_generation(&self, n: u32) -> u64 {
        self.meta(n as usize)[M_RULES_GEN]
    }

    /// Marks node `n`'s rule list as built for `g`.
    pub fn set_rules_generation(&mut self, n: u32, g: u64) {
        self.meta_mut(n as usize)[M_RULES_GEN] = g;
    }

    /// Node `n`'s last event (seq, event time), if it has had one.
    pub fn last_event(&self, n: u32) -> Option<(u64, i64)> {
        let m = self.meta(n as usize);
        (m[M_EVENTS] > 0).then(|| (m[M_LAST_SEQ], m[M_LAST_TS] as i64))
    }

    /// Wall ms node `n` was last seen.
    pub fn seen_ms(&self, n: u32) -> u64 {
        self.meta(n as usize)[M_SEEN_MS]
    }

    /// Stale rules that fired for node `n` since its last event (bit = stale ordinal).
    pub fn stale_fired(&self, n: u32) -> u64 {
        let m = self.meta(n as usize);
        if m[M_STALE_SEQ] == m[M_LAST_SEQ] {
            m[M_STALE_MASK]
        } else {
            0
        }
    }

    /// Records that stale rule `ordinal` fired for node `n` during its current silence.
    pub fn mark_stale_fired(&mut self, n: u32, ordinal: u8) {
        let fired = self.stale_fired(n);
        let m = self.meta_mut(n as usize);
        m[M_STALE_SEQ] = m[M_LAST_SEQ];
        m[M_STALE_MASK] = fired | 1 << (ordinal % 64);
    }

    /// The event-time view of node `n` for rules, during tick `t`.
    pub fn event_inputs<'s>(
        &'s self,
        t: &'s TickView<'s>,
        head: &'s crate::tick::TickHead,
        gap: Option<f64>,
    ) -> EventInputs<'s> {
        EventInputs {
            state: self,
            tick: t,
            head,
            gap,
        }
    }

    /// The sweep's view of node `n`: its last values, silent for `silent_ms`.
    pub fn sweep_inputs(&self, n: u32, silent_ms: u64) -> SweepInputs<'_> {
        SweepInputs {
            state: self,
            node: n as usize,
            silent_ms,
        }
    }
}

/// `to - from` in ms, for any two event times (in `i128`: the difference of two `i64`s
/// always fits, and the `f64` the rules read is exact for real timestamps).
#[inline]
fn time_gap_ms(from: i64, to: i64) -> f64 {
    (i128::from(to) - i128::from(from)) as f64
}

/// Rule inputs while an event is evaluated: fields and metrics from the event, series
/// statistics from the state it just updated.
pub struct EventInputs<'s> {
    state: &'s NodeState,
    tick: &'s TickView<'s>,
    head: &'s crate::tick::TickHead,
    gap: Option<f64>,
}

impl Inputs for EventInputs<'_> {
    fn field(&self, f: Field) -> Option<f64> {
        match f {
            Field::Price => self.head.price,
            Field::Volume => self.head.volume,
            Field::Stress => self.head.stress,
            Field::Gap => self.gap,
        }
    }
    fn status_hash(&self) -> u64 {
        self.head.status
    }
    fn metric(&self, key: MetricKey) -> Option<f64> {
        self.tick.find_metric(key.0.max(1))
    }
    fn change(&self, s: Series, window_ms: u64) -> Option<(f64, f64)> {
        self.state
            .change(self.head.node as usize, series_key(s), window_ms, self.head.timestamp)
    }
    fn zscore(&self, s: Series) -> Option<f64> {
        self.state.zscore(self.head.node as usize, series_key(s))
    }
    fn ewma(&self, s: Series) -> Option<f64> {
        self.state.ewma(self.head.node as usize, series_key(s))
    }
    fn silent_ms(&self) -> Option<u64> {
        None
    }
}

/// Rule inputs in the staleness sweep: the node's last values.
pub struct SweepInputs<'s> {
    state: &'s NodeState,
    node: usize,
    silent_ms: u64,
}

impl Inputs for SweepInputs<'_> {
    fn field(&self, f: Field) -> Option<f64> {
        match f {
            Field::Price => self.state.last(self.node, 1),
            Field::Volume => self.state.last(self.node, 2),
            Field::Stress => self.state.last(self.node, 3),
            Field::Gap => Some(self.silent_ms as f64),
        }
    }
    fn status_hash(&self) -> u64 {
        self.state.meta(self.node)[M_STATUS]
    }
    fn metric(&self, key: MetricKey) -> Option<f64> {
        self.state.last(self.node, metric_key(key.0.max(1)))
    }
    fn change(&self, s: Series, window_ms: u64) -> Option<(f64, f64)> {
        let ts = self.state.meta(self.node)[M_LAST_TS] as i64;
        self.state.change(self.node, series_key(s), window_ms, ts)
    }
    fn zscore(&self, s: Series) -> Option<f64> {
        self.state.zscore(self.node, series_key(s))
    }
    fn ewma(&self, s: Series) -> Option<f64> {
        self.state.ewma(self.node, series_key(s))
    }
    fn silent_ms(&self) -> Option<u64> {
        Some(self.silent_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(points: usize) -> Shape {
        Shape {
            nodes: 4,
            series: 2,
            points,
            step_ms: 100,
            alpha: 0.5,
            zscore_min: 2,
        }
    }

    #[test]
    fn change_looks_back_through_checkpoints_across_the_ring_wrap() {
        let mut st = NodeState::new(shape(4));
        // Checkpoints at 0, 100, …, 900 ms (values = ms / 10); the ring keeps the last 4.
        for t in (0..=900).step_by(50) {
            st.observe(1, 7, t as f64 / 10.0, 1_000 + t, 0);
        }
        // now = 1900 (value 90). 250 ms back → newest checkpoint at or before 1650 is 1600.
        assert_eq!(st.change(1, 7, 250, 1_900), Some((60.0, 90.0)));
        // 1 ms back → 1899: the checkpoint at 1900 is too new, 1800 (value 80) is taken.
        assert_eq!(st.change(1, 7, 1, 1_900), Some((80.0, 90.0)));
        // Only 1600..=1900 remain: 300 ms back reaches 1600, 350 ms back is unknown.
        assert_eq!(st.change(1, 7, 300, 1_900), Some((60.0, 90.0)));
        assert_eq!(st.change(1, 7, 350, 1_900), None);
        assert_eq!(st.change(1, 8, 100, 1_900), None, "unknown series");
        assert_eq!(st.change(2, 7, 100, 1_900), None, "other node");
    }

    #[test]
    fn the_prefetch_hint_covers_each_block_and_ignores_other_nodes() {
        let st = NodeState::new(shape(4));
        let hint = st.prefetch_hint();
        assert_eq!(hint.count, 2);
        assert_eq!(hint.regions[0], (st.blocks.as_ptr() as usize, st.stride * 8));
        assert_eq!(hint.regions[1], (st.names.as_ptr() as usize, 8));
        assert_eq!(hint.nodes, 4);
        // Past REGIONS_MAX tables, more are ignored rather than overflowing.
        let full = hint.with(&st.blocks, 1).with(&st.blocks, 1).with(&st.blocks, 1);
        assert_eq!(full.count, NodePrefetch::REGIONS_MAX);
        // A hint, never a read: any index, in range or not, is harmless.
        for n in [0, 3, 4, 1 << 20, u32::MAX] {
            hint.node(n);
        }
    }

    #[test]
    fn nodes_are_found_by_id_once_defined() {
        let mut st = NodeState::new(shape(4));
        let ids: Vec<String> = (0..st.shape.nodes as u32)
            .map(|n| format!("rim:sensor:t:n{n}"))
            .collect();
        assert_eq!(st.find(&ids[0]), None, "nothing defined yet");
        for (n, id) in ids.iter().enumerate() {
            st.define(n as u32, id);
        }
        // Defining again (ingest re-sends a definition after a ring was full) keeps one entry.
        st.define(3, &ids[3]);
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(st.find(id), Some(n as u32), "{id}");
        }
        assert_eq!(st.find("rim:sensor:t:unknown"), None);
        assert_eq!(st.find(""), None);
    }

    #[test]
    fn a_query_is_answered_without_growing_its_buffers() {
        let mut st = NodeState::new(shape(4));
        st.define(2, "rim:sensor:t:a");
        st.observe(2, 7, 5.0, 1_000, 0);
        st.observe(2, 8, 6.0, 1_000, 1);
        let mut q = crate::reflex::query::PresentQuery::with_capacity(1);
        q.node.push_str("rim:sensor:t:a");
        q.answer(&st);
        assert!(q.found);
        assert_eq!(q.series.len(), 1, "capped at the reserved capacity");
        assert_eq!(q.series.capacity(), 1);
        q.node.clear();
        q.node.push_str("rim:sensor:t:b");
        q.answer(&st);
        assert!(!q.found);
        assert!(q.series.is_empty());
    }

    #[test]
    fn ewma_and_zscore_use_the_state_before_the_sample() {
        let mut st = NodeState::new(shape(4));
        for (i, x) in [10.0, 12.0, 10.0, 12.0].into_iter().enumerate() {
            st.observe(0, 5, x, i as i64 * 1_000, 0);
        }
        // EWMA (alpha 0.5): 10 → 11 → 10.5 → 11.25; variance (West) before the last: 0.75.
        assert_eq!(st.ewma(0, 5), Some(11.25));
        let z = st.zscore(0, 5).expect("known after 3 samples");
        assert!((z - (12.0 - 10.5) / 0.75f64.sqrt()).abs() < 1e-12, "{z}");
    }

    #[test]
    fn extreme_event_times_in_any_order_never_overflow() {
        let mut st = NodeState::new(shape(4));
        for (i, ts) in [i64::MAX, i64::MIN, 0, i64::MAX, -1, i64::MIN + 1]
            .into_iter()
            .enumerate()
        {
            for x in [f64::MAX, -f64::MAX, f64::MIN_POSITIVE, 0.0] {
                st.observe(1, 7, x, ts, 0);
            }
            let _ = st.change(1, 7, 1, ts);
            let _ = st.change(1, 7, u64::MAX, ts);
            let _ = st.zscore(1, 7);
            let _ = st.ewma(1, 7);
            assert_eq!(st.last(1, 7), Some(0.0), "round {i}");
        }
        // ±(2^64 - 1), which rounds to ±2^64 in an f64.
        assert_eq!(time_gap_ms(i64::MAX, i64::MIN), -(2f64.powi(64)));
        assert_eq!(time_gap_ms(i64::MIN, i64::MAX), 2f64.powi(64));
        assert_eq!(time_gap_ms(1_000, 1_250), 250.0);
    }

    #[test]
    fn a_node_takes_at_most_its_series_slots() {
        let mut st = NodeState::new(shape(4));
        st.observe(3, 100, 1.0, 0, 0);
        st.observe(3, 101, 1.0, 0, 0);
        st.observe(3, 102, 1.0, 0, 0);
        assert_eq!(st.series_refused, 1);
        assert_eq!(st.last(3, 101), Some(1.0));
        assert_eq!(st.last(3, 102), None);
    }

    #[test]
    fn a_series_keeps_its_slot_whatever_slot_it_is_hinted_at() {
        let mut st = NodeState::new(Shape { series: 4, ..shape(4) });
        // Wrong hints: another series' slot, a free slot, past the end (and the first two,
        // into empty slots, take them by the scan).
        let wrong = [
            (10, 1.0, 0),
            (11, 2.0, 1),
            (11, 3.0, 0),
            (10, 4.0, 1),
            (12, 5.0, 3),
            (10, 6.0, 9),
        ];
        // Then right ones, which the lookup takes without scanning.
        let right = [(11, 7.0, 1), (12, 8.0, 2), (10, 9.0, 0), (12, 10.0, 2)];
        for (key, x, hint) in wrong.into_iter().chain(right) {
            st.observe(1, key, x, 0, hint);
        }
        let keys = |st: &NodeState| st.series(1).map(|(k, ..)| k).collect::<Vec<_>>();
        assert_eq!(keys(&st), [10, 11, 12], "first come, first slot; none taken twice");
        assert_eq!(
            st.series(1).map(|(_, count, ..)| count).collect::<Vec<_>>(),
            [4.0, 3.0, 3.0]
        );
        assert_eq!(
            (st.last(1, 10), st.last(1, 11), st.last(1, 12)),
            (Some(9.0), Some(7.0), Some(10.0))
        );
    }
}
