//! Reflex: one shard's share of the nodes (the partitions ingest routes to it). For each
//! event it updates the node's present state, evaluates the rules whose node pattern
//! matches, and publishes what fires as a hash-chained decision on the shard's broadcast
//! ring. A staleness sweep visits the shard's nodes to fire `stale()` rules for nodes that
//! went quiet.
//!
//! Rule sets arrive compiled from the cold shard and are swapped between events; the old
//! one goes back to be freed there, so no allocation or free happens here. Which rules
//! match a node is a bitset per node, rebuilt lazily the first time the node is seen under
//! a new rule-set generation (one glob match per rule, once).

pub(crate) mod cooldown;
pub mod predict;
pub mod query;
pub mod state;
/// The decision record and its chain live in their own crate, shared with subscribers.
pub use rim_decision as decision;

// A rule's evidence must fit the record: the record keeps as many entries as a rule makes.
const _: () = assert!(rim_rules::EVIDENCE_MAX == decision::EVIDENCE_MAX);

use std::sync::Arc;

use rim_ring::broadcast;
use rim_rules::{Evidence, RuleSet};

use crate::clock::Clock;
use crate::entry::{self, HEAD_BYTES, KIND_DECISION, KIND_PREDICTION};
use crate::ingest::nodes::{partition_of, shard_of_partition};
use crate::report::{Reporter, ShardFigures, STAGE_INGEST_TO_REFLEX, STAGE_PUBLISH_TO_DECISION, STAGE_RULE_EVAL};
use crate::tick::{self, Record, Slot, TickView, NODE_ID_BYTES_MAX};
use cooldown::{Cooldowns, Gate};
use decision::{Chain, Draft, FLAG_SWEEP, RECORD_BYTES_MAX};
use predict::SeriesGuess;
use state::{NodeState, Shape};

/// Counter: events applied.
pub const C_TICKS: usize = 0;
/// Counter: decisions published.
pub const C_DECISIONS: usize = 1;
/// Counter: firings held back by a cooldown.
pub const C_COOLDOWN_QUIET: usize = 2;
/// Counter: firings whose cooldown could not be recorded (table set full).
pub const C_COOLDOWN_OVERFLOW: usize = 3;
/// Counter: decisions the broadcast ring refused (must stay 0).
pub const C_PUBLISH_FAILED: usize = 4;
/// Counter: series not tracked because a node's series slots were full.
pub const C_SERIES_REFUSED: usize = 5;
/// Counter: rule sets swapped in.
pub const C_RULE_SWAPS: usize = 6;
/// Counter: decisions from the staleness sweep.
pub const C_SWEEP_DECISIONS: usize = 7;
/// Counter: records with a node index out of range (must stay 0).
pub const C_BAD_NODE: usize = 8;
/// Counter: rule evaluations.
pub const C_EVALUATIONS: usize = 9;
/// Counter (a level): slots waiting in the ingest → reflex ring at the last upkeep.
pub const C_INPUT_DEPTH: usize = 10;
/// Counter: decisions the audit ring to the journal thread had no room for (must stay 0).
pub const C_AUDIT_DROPPED: usize = 11;
/// Counter: predictions sent to the journal thread.
pub const C_PREDICTIONS: usize = 12;
/// Counter: predictions the ring had no room for (shed: a prediction is advisory).
pub const C_PREDICTIONS_DROPPED: usize = 13;
/// Counter: replayed events applied at start.
pub const C_REPLAYED: usize = 14;
/// Counter: turns an event waited because the ring to the journal thread had no room for
/// its decisions and predictions (the journal thread is behind). A turn is a
/// [`Reflex::step`] that held back, one per pass of the shard's loop, so the count grows
/// with the idle strategy's pace as much as with the time held.
pub const C_HELD_PERSIST_ROOM: usize = 15;
/// Counter: turns an event waited because [`decision::IN_FLIGHT_MAX`] decisions were not
/// yet durable (the journal's syncs are behind).
pub const C_HELD_IN_FLIGHT: usize = 16;
/// Number of reflex counters.
pub const C_COUNT: usize = 17;
/// Counter names, in order.
pub const COUNTER_NAMES: &[&str] = &[
    "events_applied",
    "decisions",
    "cooldown_quiet",
    "cooldown_overflow",
    "decisions_publish_failed",
    "series_refused",
    "rule_swaps",
    "sweep_decisions",
    "bad_node",
    "rule_evaluations",
    "input_depth_slots",
    "audit_dropped",
    "predictions",
    "predictions_dropped",
    "events_replayed",
    "held_persist_room_turns",
    "held_in_flight_turns",
];

/// A rule set as the shards use it, with what they precompute from it.
pub struct Compiled {
    /// The rules.
    pub set: RuleSet,
    /// Each rule's id hash (cooldown keys survive reloads).
    pub id_hash: Vec<u64>,
    /// Indices of rules that use `stale()`.
    pub stale: Vec<usize>,
}

impl Compiled {
    /// Wraps a compiled set (on the cold shard: this allocates).
    pub fn new(set: RuleSet) -> Arc<Self> {
        let id_hash = set.rules().map(|r| rim_rules::name_hash(r.id())).collect();
        let stale = (0..set.len()).filter(|&i| set.rule(i).uses_stale()).collect();
        Arc::new(Self { set, id_hash, stale })
    }
}

/// What a reflex shard needs at start.
pub struct ReflexSetup {
    /// Shard number.
    pub shard: u32,
    /// From ingest.
    pub input: rtrb::Consumer<Slot>,
    /// State shape.
    pub shape: Shape,
    /// Rule limit (bitset width).
    pub rules_max: usize,
    /// Cooldown table size.
    pub cooldown_slots: usize,
    /// The decision ring.
    pub out: broadcast::Writer,
    /// Initial rules.
    pub rules: Arc<Compiled>,
    /// New rule sets from the cold shard.
    pub rules_in: rtrb::Consumer<Arc<Compiled>>,
    /// Old rule sets back to the cold shard.
    pub rules_out: rtrb::Producer<Arc<Compiled>>,
    /// Reports.
    pub reporter: Reporter,
    /// Full staleness sweep period, ms.
    pub sweep_ms: u64,
    /// Chain epoch (unix ns).
    pub epoch: u64,
    /// The chain to continue (from the audit log), instead of a new one.
    pub resume: Option<Chain>,
    /// Decisions and predictions to the journal thread (None: not persisted).
    pub persist: Option<PersistOut>,
    /// Live-state queries from the HTTP thread (None: no API).
    pub queries: Option<query::QueryPort>,
    /// The wall clock staleness is measured on (read once per loop turn).
    pub clock: Clock,
    /// Partitions and reflex shards of the run: each node this shard is given must be in
    /// a partition it owns (checked once per node).
    pub partitions: u32,
    /// See `partitions`.
    pub shards: usize,
}

/// A reflex shard's end of the ring to the journal thread.
pub struct PersistOut {
    /// Decisions (for the audit log) and predictions.
    pub ring: rtrb::Producer<u8>,
    /// Resolutions to predict the next window of, seconds (empty: no predictions).
    pub resolutions: Vec<u32>,
    /// The chain sequence of this shard's newest durable decision (set by the journal
    /// thread): the shard keeps fewer than [`decision::IN_FLIGHT_MAX`] beyond it.
    pub durable_seq: Arc<std::sync::atomic::AtomicU64>,
}

/// Room the persist ring must have before an event is taken: 16 decisions and 8
/// predictions of the largest size (an event firing more than 16 rules with the ring
/// nearly full can still lose audit records; they are counted in `audit_dropped`).
const PERSIST_ROOM_PER_EVENT: usize =
    16 * (HEAD_BYTES + RECORD_BYTES_MAX) + 8 * (HEAD_BYTES + predict::RECORD_BYTES_MAX);

/// Decisions one event is assumed to fire at most when judging room (see
/// [`PERSIST_ROOM_PER_EVENT`]).
const DECISIONS_PER_EVENT_MAX: u64 = 16;

/// The audit copy of decisions and the predictor's per-node window tracking.
struct Persisted {
    ring: rtrb::Producer<u8>,
    durable_seq: Arc<std::sync::atomic::AtomicU64>,
    /// Preallocated to the largest entry, so pushing never allocates.
    scratch: Vec<u8>,
    /// Resolutions, ms.
    resolutions_ms: Vec<i64>,
    /// Per node and resolution: the start of the window its last event fell in
    /// (`i64::MIN` = none yet).
    windows: crate::memory::HugeTable<i64>,
    guesses: Vec<SeriesGuess>,
    record: Box<[u8]>,
}

impl Persisted {
    fn new(out: PersistOut, nodes: usize) -> Self {
        let r = out.resolutions.len();
        Self {
            ring: out.ring,
            durable_seq: out.durable_seq,
            scratch: Vec::with_capacity(HEAD_BYTES + RECORD_BYTES_MAX.max(predict::RECORD_BYTES_MAX)),
            resolutions_ms: out.resolutions.iter().map(|&s| i64::from(s) * 1000).collect(),
            windows: crate::memory::filled(i64::MIN, nodes * r),
            guesses: Vec::with_capacity(predict::SERIES_MAX),
            record: vec![0u8; predict::RECORD_BYTES_MAX].into_boxed_slice(),
        }
    }

    fn push(&mut self, kind: u8, aux: u64, payload: &[u8]) -> bool {
        let head = entry::Head {
            len: payload.len() as u32,
            kind,
            keys: 0,
            partition: 0,
            aux,
        };
        entry::push_parts(&mut self.ring, head, payload, &mut self.scratch)
    }

    /// At an event of node `n` at `ts`: for each resolution whose window changed, the
    /// next window's prediction (none for replayed events, which only move the windows).
    fn on_event(&mut self, state: &NodeState, n: u32, ts: i64, replay: bool, counters: &mut [u64; C_COUNT]) {
        let r = self.resolutions_ms.len();
        for k in 0..r {
            let res = self.resolutions_ms[k];
            // Event times come from producers: any i64. Windows that do not fit are not
            // predicted.
            let Some(w) = ts.div_euclid(res).checked_mul(res) else {
                continue;
            };
            let slot = n as usize * r + k;
            let Some(seen) = self.windows.get_mut(slot) else { return };
            if *seen == w {
                continue;
            }
            *seen = w;
            if replay {
                continue;
            }
            let Some(next) = w.checked_add(res) else { continue };
            match self.predict(state, n, next, (res / 1000) as u32, ts) {
                Some(true) => counters[C_PREDICTIONS] += 1,
                Some(false) => counters[C_PREDICTIONS_DROPPED] += 1,
                None => {}
            }
        }
    }

    /// Sends the prediction: Some(sent), or None when the node has no series yet.
    fn predict(&mut self, state: &NodeState, n: u32, window_ms: i64, resolution: u32, ts: i64) -> Option<bool> {
        self.guesses.clear();
        let mut conf = 0.0;
        for (key, count, ewma, var, last) in state.series(n).take(predict::SERIES_MAX) {
            self.guesses.push(SeriesGuess {
                key,
                value: ewma,
                base: last,
            });
            conf += predict::series_confidence(count, ewma, var);
        }
        if self.guesses.is_empty() {
            return None;
        }
        let confidence = conf / self.guesses.len() as f64;
        let len = predict::encode(
            state.name(n),
            n,
            window_ms,
            resolution,
            ts,
            confidence,
            &self.guesses,
            &mut self.record,
        );
        let record = std::mem::take(&mut self.record);
        let ok = len > 0 && self.push(KIND_PREDICTION, 0, &record[..len]);
        self.record = record;
        Some(ok)
    }
}

/// Where fired rules go: cooldowns, the chain, the ring, the counts.
struct Emitter {
    shard: u32,
    cooldowns: Cooldowns,
    chain: Chain,
    out: broadcast::Writer,
    buf: Box<[u8]>,
    counters: [u64; C_COUNT],
    rule_counts: Vec<u64>,
    reporter: Reporter,
    persisted: Option<Persisted>,
}

/// The reflex duty of one shard.
pub struct Reflex {
    input: rtrb::Consumer<Slot>,
    state: NodeState,
    rules: Arc<Compiled>,
    matches: crate::memory::HugeTable<u64>,
    words: usize,
    evidence: Evidence,
    emit: Emitter,
    rules_in: rtrb::Consumer<Arc<Compiled>>,
    rules_out: rtrb::Producer<Arc<Compiled>>,
    pending: Option<Arc<Compiled>>,
    scratch: [u8; NODE_ID_BYTES_MAX],
    now_ms: u64,
    nodes_high: u32,
    sweep_cursor: u32,
    sweep_ms: u64,
    queries: Option<query::QueryPort>,
    /// An answer the reply ring had no room for (cannot happen while the asker keeps no
    /// more in flight than the ring holds; kept rather than dropped, so the hot path never
    /// frees).
    unsent: Option<Box<query::PresentQuery>>,
    clock: Clock,
    /// (partitions, shards) of the run, for the ownership check.
    owns: (u32, usize),
}

/// The event a decision is about.
struct Trigger {
    node: u32,
    seq: u64,
    timestamp: i64,
    publish_ns: u64,
    ingest_ns: u64,
    flags: u8,
}

impl Reflex {
    /// Builds the shard's state, allocating everything up front.
    pub fn new(s: ReflexSetup) -> Self {
        let words = s.rules_max.div_ceil(64).max(1);
        let rules_max = s.rules_max;
        Self {
            input: s.input,
            state: NodeState::new(s.shape),
            rules: s.rules,
            matches: crate::memory::zeroed(s.shape.nodes * words),
            words,
            evidence: Evidence::new(),
            emit: Emitter {
                shard: s.shard,
                cooldowns: Cooldowns::new(s.cooldown_slots),
                chain: s.resume.unwrap_or_else(|| Chain::new(s.epoch)),
                out: s.out,
                buf: vec![0u8; RECORD_BYTES_MAX].into_boxed_slice(),
                counters: [0; C_COUNT],
                rule_counts: vec![0; rules_max],
                reporter: s.reporter,
                persisted: s.persist.map(|p| Persisted::new(p, s.shape.nodes)),
            },
            rules_in: s.rules_in,
            rules_out: s.rules_out,
            pending: None,
            scratch: [0; NODE_ID_BYTES_MAX],
            now_ms: s.clock.unix_ms(),
            nodes_high: 0,
            sweep_cursor: 0,
            sweep_ms: s.sweep_ms.max(1),
            queries: s.queries,
            unsent: None,
            clock: s.clock,
            owns: (s.partitions, s.shards),
        }
    }

    /// Continues `chain` (read back from the decision log at recovery) instead of the new
    /// one the shard started with. Before the shard runs.
    pub fn resume_chain(&mut self, chain: Chain) {
        self.emit.chain = chain;
    }

    /// Answers up to [`query::ANSWERS_PER_TURN`] live-state queries. Returns how many.
    pub fn answer_queries(&mut self) -> usize {
        let Some(port) = self.queries.as_mut() else {
            return 0;
        };
        if let Some(q) = self.unsent.take() {
            if let Err(rtrb::PushError::Full(q)) = port.replies.push(q) {
                self.unsent = Some(q);
                return 0;
            }
        }
        let mut n = 0;
        while n < query::ANSWERS_PER_TURN {
            let Ok(mut q) = port.requests.pop() else {
                break;
            };
            q.answer(&self.state);
            n += 1;
            if let Err(rtrb::PushError::Full(q)) = port.replies.push(q) {
                self.unsent = Some(q);
                break;
            }
        }
        n
    }

    /// After a restart, before the journal's tail is replayed: the window `node`'s last
    /// event fell in at `resolution` (seconds), as the restored roll-up knows it. The
    /// predictor then does not predict again a window it predicted before the restart
    /// (the store keeps the first prediction and would count the second a conflict).
    pub fn seed_prediction_window(&mut self, node: u32, resolution: u32, window_ms: i64) {
        let Some(p) = self.emit.persisted.as_mut() else { return };
        let res_ms = i64::from(resolution) * 1000;
        let r = p.resolutions_ms.len();
        if let Some(k) = p.resolutions_ms.iter().position(|&x| x == res_ms) {
            if let Some(seen) = p.windows.get_mut(node as usize * r + k) {
                *seen = window_ms;
            }
        }
    }

    /// Reads and handles one record. Returns false when the ring is empty.
    pub fn step(&mut self) -> bool {
        // Back-pressure from the journal thread: an event is only taken when its audit
        // records and predictions fit, so a lagging store slows ingest (producers see
        // Full) instead of losing audit records.
        if let Some(p) = self.emit.persisted.as_ref() {
            // The journal thread's position as last loaded first: it only ever frees more,
            // and a fresh load per event is a transfer of the line that thread keeps writing.
            let held = if p.ring.cached_slots() < PERSIST_ROOM_PER_EVENT && p.ring.slots() < PERSIST_ROOM_PER_EVENT {
                Some(C_HELD_PERSIST_ROOM)
            } else {
                // Subscribers see decisions before they are durable; a restart skips
                // IN_FLIGHT_MAX sequence numbers, so never more than that may be in flight.
                let durable = p.durable_seq.load(std::sync::atomic::Ordering::Acquire);
                let in_flight = self.emit.chain.last_seq().saturating_sub(durable);
                (in_flight + DECISIONS_PER_EVENT_MAX >= decision::IN_FLIGHT_MAX).then_some(C_HELD_IN_FLIGHT)
            };
            if let Some(reason) = held {
                // Counted only when an event waits (an idle shard holds nothing back).
                if !self.input.is_empty() {
                    self.emit.counters[reason] += 1;
                }
                return false;
            }
        }
        let Self {
            input,
            scratch,
            state,
            rules,
            matches,
            words,
            evidence,
            emit,
            now_ms,
            nodes_high,
            owns: (partitions, shards),
            ..
        } = self;
        tick::pop(input, scratch, |r| match r {
            &Record::Node { node, id } => {
                // Paired with ingest's routing by the same function.
                let (owner, shard) = (shard_of_partition(partition_of(id, *partitions), *shards), emit.shard);
                assert_eq!(
                    owner, shard as usize,
                    "node {id} reached shard {shard}, but shard {owner} owns its partition (a bug)"
                );
                if state.contains(node) {
                    crate::fault::on_node(id);
                    state.define(node, id);
                    *nodes_high = (*nodes_high).max(node + 1);
                } else {
                    emit.counters[C_BAD_NODE] += 1;
                }
            }
            Record::Tick(t) => on_tick(state, rules, matches, *words, evidence, emit, *now_ms, t),
        })
    }

    /// Handles up to `limit` records. Returns how many.
    pub fn poll(&mut self, limit: usize) -> usize {
        let mut n = 0;
        while n < limit && self.step() {
            n += 1;
        }
        n
    }

    /// Starts loading node `n`'s state into the cache ([`NodeState::prefetch`]).
    pub fn prefetch_node(&self, n: u32) {
        self.state.prefetch(n);
    }

    /// Where this shard's node state is, for ingest on the same core to prefetch it
    /// ([`crate::memory::NodePrefetch`]).
    pub fn node_prefetch(&self) -> crate::memory::NodePrefetch {
        let hint = self.state.prefetch_hint().with(&self.matches, self.words);
        match self.emit.persisted.as_ref() {
            Some(p) => hint.with(&p.windows, p.resolutions_ms.len()),
            None => hint,
        }
    }

    /// Whether ingest has records waiting for this shard.
    pub fn has_data(&self) -> bool {
        !self.input.is_empty()
    }

    /// Upkeep between work: the wall clock, rule swaps, the staleness sweep, reports.
    pub fn maintain(&mut self, elapsed_ms: u64, report_due: bool, shard: ShardFigures) {
        self.now_ms = self.clock.unix_ms();
        self.swap_rules(shard);
        if !self.rules.stale.is_empty() {
            self.sweep(elapsed_ms);
        }
        self.emit.counters[C_SERIES_REFUSED] = self.state.series_refused;
        self.emit.counters[C_COOLDOWN_OVERFLOW] = self.emit.cooldowns.overflow;
        self.emit.counters[C_INPUT_DEPTH] = self.input.slots() as u64;
        if report_due {
            self.report(shard);
        }
    }

    /// Sends the current report; false if no box was free.
    pub fn report(&mut self, shard: ShardFigures) -> bool {
        let e = &mut self.emit;
        e.reporter
            .send(&e.counters, self.rules.set.generation(), &e.rule_counts, shard)
    }

    /// Takes a new rule set if one came. The per-rule counts of the old set are reported
    /// first, so the cold shard's totals lose nothing across the swap.
    fn swap_rules(&mut self, shard: ShardFigures) {
        if self.pending.is_none() {
            self.pending = self.rules_in.pop().ok();
        }
        let Some(new) = self.pending.take() else { return };
        if !self.report(shard) {
            self.pending = Some(new);
            return;
        }
        let old = std::mem::replace(&mut self.rules, new);
        self.emit.rule_counts.iter_mut().for_each(|c| *c = 0);
        self.emit.counters[C_RULE_SWAPS] += 1;
        // The cold shard drains this ring every tick; if it is full the old set is freed
        // here, off the event path (between events), which is rare and bounded.
        let _ = self.rules_out.push(old);
    }

    /// Visits a slice of the nodes so that every node is visited once per `sweep_ms`.
    fn sweep(&mut self, elapsed_ms: u64) {
        let high = self.nodes_high;
        if high == 0 {
            return;
        }
        let chunk = u64::from(high)
            .saturating_mul(elapsed_ms.max(1))
            .div_ceil(self.sweep_ms)
            .min(u64::from(high)) as u32;
        let chunk = chunk.max(1);
        for _ in 0..chunk {
            let n = self.sweep_cursor % high;
            self.sweep_cursor = (n + 1) % high;
            self.sweep_node(n);
        }
    }

    fn sweep_node(&mut self, n: u32) {
        let Some((seq, ts)) = self.state.last_event(n) else {
            return;
        };
        let silent = self.now_ms.saturating_sub(self.state.seen_ms(n));
        refresh_matches(&mut self.state, &self.rules, &mut self.matches, self.words, n);
        let fired = self.state.stale_fired(n);
        for k in 0..self.rules.stale.len() {
            let i = self.rules.stale[k];
            let rule = self.rules.set.rule(i);
            let ordinal = rule.stale_ordinal().unwrap_or(0);
            if fired & 1 << (ordinal % 64) != 0 || !bit(&self.matches, self.words, n, i) {
                continue;
            }
            self.evidence.clear();
            let inputs = self.state.sweep_inputs(n, silent);
            self.emit.counters[C_EVALUATIONS] += 1;
            if self.rules.set.eval(i, &inputs, &mut self.evidence) {
                let trigger = Trigger {
                    node: n,
                    seq,
                    timestamp: ts,
                    publish_ns: 0,
                    ingest_ns: 0,
                    flags: FLAG_SWEEP,
                };
                if self.emit.fire(&self.rules, i, &self.state, &trigger, &self.evidence) {
                    self.emit.counters[C_SWEEP_DECISIONS] += 1;
                }
                self.state.mark_stale_fired(n, ordinal);
            }
        }
    }

    /// A counter's value.
    pub fn counter(&self, c: usize) -> u64 {
        self.emit.counters.get(c).copied().unwrap_or(0)
    }
}

fn bit(matches: &[u64], words: usize, n: u32, i: usize) -> bool {
    matches
        .get(n as usize * words + i / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Rebuilds node `n`'s rule bitset if it was built for another generation.
fn refresh_matches(state: &mut NodeState, rules: &Compiled, matches: &mut [u64], words: usize, n: u32) {
    let generation = rules.set.generation();
    if state.rules_generation(n) == generation {
        return;
    }
    let row = &mut matches[n as usize * words..(n as usize + 1) * words];
    row.iter_mut().for_each(|w| *w = 0);
    let name = state.name(n);
    for i in 0..rules.set.len().min(words * 64) {
        if rules.set.rule(i).matches(name) {
            row[i / 64] |= 1 << (i % 64);
        }
    }
    state.set_rules_generation(n, generation);
}

#[allow(clippy::too_many_arguments)]
fn on_tick(
    state: &mut NodeState,
    rules: &Compiled,
    matches: &mut [u64],
    words: usize,
    evidence: &mut Evidence,
    emit: &mut Emitter,
    now_ms: u64,
    t: &TickView<'_>,
) {
    let head = t.head();
    if !state.contains(head.node) {
        emit.counters[C_BAD_NODE] += 1;
        return;
    }
    // A replayed tick, or a shard without rules, decides nothing.
    let decides = !head.replay && !rules.set.is_empty();
    // A decision carries the node's id: its text starts loading now, while the state is
    // updated and the rules run.
    if decides {
        state.prefetch_name(head.node);
    }
    let sampled = head.ingest_ns != 0;
    let t0 = if sampled {
        let now = rim_ring::clock::monotonic_ns();
        emit.reporter
            .current
            .hists
            .record(STAGE_INGEST_TO_REFLEX, now.saturating_sub(head.ingest_ns));
        now
    } else {
        0
    };
    let gap = state.apply(t, &head, now_ms);
    emit.counters[C_TICKS] += 1;
    if decides {
        refresh_matches(state, rules, matches, words, head.node);
        let state = &*state;
        let inputs = state.event_inputs(t, &head, gap);
        let trigger = Trigger {
            node: head.node,
            seq: head.seq,
            timestamp: head.timestamp,
            publish_ns: head.publish_ns,
            ingest_ns: head.ingest_ns,
            flags: 0,
        };
        let row = &matches[head.node as usize * words..(head.node as usize + 1) * words];
        for (w, &word) in row.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                evidence.clear();
                emit.counters[C_EVALUATIONS] += 1;
                if rules.set.eval(i, &inputs, evidence) {
                    emit.fire(rules, i, state, &trigger, evidence);
                }
            }
        }
    }
    // The node's next windows' predictions once its decisions are out: they read the
    // state the rules read (rules do not change it), and a subscriber waiting for a
    // decision need not wait for them too.
    if let Some(p) = emit.persisted.as_mut() {
        p.on_event(state, head.node, head.timestamp, head.replay, &mut emit.counters);
    }
    if head.replay {
        emit.counters[C_REPLAYED] += 1;
    }
    if sampled && decides {
        let now = rim_ring::clock::monotonic_ns();
        emit.reporter
            .current
            .hists
            .record(STAGE_RULE_EVAL, now.saturating_sub(t0));
    }
}

impl Emitter {
    /// Publishes rule `i`'s decision unless its cooldown holds it. True if published.
    /// The node's id is read only here (most events fire nothing); on a large node set it
    /// is a cache miss, which `on_tick` has started loading before the rules ran.
    fn fire(&mut self, rules: &Compiled, i: usize, state: &NodeState, t: &Trigger, evidence: &Evidence) -> bool {
        let node_id = state.name(t.node);
        let rule = rules.set.rule(i);
        if t.flags & FLAG_SWEEP == 0 {
            match self
                .cooldowns
                .check(rules.id_hash[i], t.node, t.timestamp, rule.cooldown_ms())
            {
                Gate::Quiet => {
                    self.counters[C_COOLDOWN_QUIET] += 1;
                    return false;
                }
                Gate::Fire | Gate::FireUntracked => {}
            }
        }
        let decided_ns = rim_ring::clock::monotonic_ns();
        let from = if t.publish_ns != 0 && t.publish_ns <= decided_ns {
            t.publish_ns
        } else if t.ingest_ns != 0 {
            t.ingest_ns
        } else {
            decided_ns
        };
        let draft = Draft {
            shard: self.shard,
            rule_id: rule.id(),
            rule_version: rule.version(),
            rule_generation: rules.set.generation(),
            severity: rule.severity() as u8,
            flags: t.flags,
            node: t.node,
            node_id,
            event_seq: t.seq,
            event_timestamp: t.timestamp,
            publish_ns: t.publish_ns,
            decided_ns,
            latency_ns: decided_ns - from,
        };
        let ev = evidence.iter().map(|(l, v)| (rule.label(l), v));
        let len = self.chain.append(&draft, evidence.len(), ev, &mut self.buf);
        // Subscribers first, the decision log's copy right after: a subscriber does not
        // wait for the copy, and the journal gets it within the same turn either way.
        let published = self.out.publish(&self.buf[..len]).is_ok();
        if let Some(p) = self.persisted.as_mut() {
            if !p.push(KIND_DECISION, u64::from(self.shard), &self.buf[..len]) {
                self.counters[C_AUDIT_DROPPED] += 1;
            }
        }
        if !published {
            self.counters[C_PUBLISH_FAILED] += 1;
            return false;
        }
        if from == t.publish_ns && t.publish_ns != 0 {
            self.reporter
                .current
                .hists
                .record(STAGE_PUBLISH_TO_DECISION, decided_ns - from);
        }
        self.counters[C_DECISIONS] += 1;
        if let Some(c) = self.rule_counts.get_mut(i) {
            *c += 1;
        }
        true
    }
}
