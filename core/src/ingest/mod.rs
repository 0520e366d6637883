//! Ingest: owns the producers' rings once attached. Polls them fairly, validates (the ring
//! crate checks every record), drops duplicates, gives each node a dense index and a
//! partition, and writes each event once, as a [`crate::tick`] record, into the ring of
//! the reflex shard that owns its partition.
//!
//! Fairness: rings take turns, each turn at most `ingest.poll_budget` records, and the
//! first ring of the next round rotates, so a flooding producer gets its budget and no
//! more while the others keep flowing. Back-pressure: a ring is only polled when every
//! reflex ring has room for a whole budget's worst case, so an event once read is always
//! routed; when reflex falls behind, producers see `Full` on their own ring.
//!
//! Refusals are visible to the producer that caused them: every valid event that is not
//! taken (event time out of bounds, node table full, duplicate) is counted per reason in
//! the ring's own counters, which the producer reads in its header before the consumed
//! position passes the record; the daemon's copies ([`figures`]) are what stats report.

pub mod attach;
pub mod dedup;
pub mod figures;
pub mod nodes;
pub mod time;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rim_journal::event::{EventHead, EventRecord, EVENT_BYTES_MAX};
use rim_ring::{liveness::PeerState, Consumer, EventError, EventView, Refusal, Verdict};

use crate::clock::Clock;
use crate::entry::{self, HEAD_BYTES, KIND_MARKER};
use crate::report::{Reporter, ShardFigures, STAGE_RING_HOP};
use crate::tick::{self, Slot, TickHead, NODE_ID_BYTES_MAX, SLOTS_PER_RECORD_MAX};
use crate::wake::Wake;
use dedup::Dedup;
use figures::RingFigures;
use nodes::{NodeTable, NO_NODE};
use time::TimeBounds;

/// Counter: events accepted and routed.
pub const C_ACCEPTED: usize = 0;
/// Counter: duplicates dropped.
pub const C_DUPLICATES: usize = 1;
/// Counter: events refused because the node table is full.
pub const C_NODES_REFUSED: usize = 2;
/// Counter: turns that stopped because a reflex ring, or the journal thread's ring, had
/// no room.
pub const C_BACKPRESSURE: usize = 3;
/// Counter: rings attached.
pub const C_ATTACHED: usize = 4;
/// Counter: rings reclaimed after their producer died or closed.
pub const C_RECLAIMED: usize = 5;
/// Counter: rings quarantined as corrupt.
pub const C_QUARANTINED: usize = 6;
/// Counter: events lost inside the daemon (must stay 0; checked by tests).
pub const C_LOST: usize = 7;
/// Counter: rejected records, first of [`REJECT_REASONS`].
pub const C_REJECTED_BASE: usize = 8;
/// Reasons a record is rejected, in counter order.
pub const REJECT_REASONS: &[&str] = &[
    "node_id",
    "too_long",
    "too_many_metrics",
    "empty_metric_name",
    "duplicate_metric",
    "not_finite",
    "record_too_large",
    "bad_symbol",
    "too_many_symbols",
    "malformed",
    "other",
];
/// Counters of ingest.
pub const COUNTER_NAMES: &[&str] = &[
    "events_accepted",
    "duplicates",
    "nodes_refused",
    "backpressure_turns",
    "producers_attached",
    "producers_reclaimed",
    "producers_quarantined",
    "events_lost",
];
/// Counter: events refused because their time is too far ahead of the daemon's clock.
pub const C_TIME_AHEAD: usize = C_REJECTED_BASE + 11;
/// Counter: events refused because their time is older than allowed.
pub const C_TIME_TOO_OLD: usize = C_TIME_AHEAD + 1;
/// Counter (a level, not a count): nodes known.
pub const C_NODES: usize = C_TIME_TOO_OLD + 1;
/// Counter: of the [`C_BACKPRESSURE`] turns, those the journal thread's ring stopped (it
/// had no room for the turn's entries): persistence, not a reflex shard, was behind.
pub const C_BACKPRESSURE_JOURNAL: usize = C_NODES + 1;
/// Number of ingest counters.
pub const C_COUNT: usize = C_BACKPRESSURE_JOURNAL + 1;

fn reject_reason(e: &EventError) -> usize {
    match e {
        EventError::NodeId(_) => 0,
        EventError::TooLong { .. } => 1,
        EventError::TooManyMetrics { .. } => 2,
        EventError::EmptyMetricName { .. } => 3,
        EventError::DuplicateMetric { .. } => 4,
        EventError::NotFinite { .. } => 5,
        EventError::RecordTooLarge { .. } => 6,
        EventError::BadSymbol { .. } => 7,
        EventError::TooManySymbols { .. } => 8,
        EventError::Malformed(_) => 9,
        _ => 10,
    }
}

/// A producer's ring as ingest holds it.
pub struct ProducerRing {
    /// Registry id.
    pub id: u64,
    /// The name the producer gave.
    pub name: String,
    /// The producer's pid (from the kernel).
    pub pid: u32,
    /// The consuming end.
    pub consumer: Consumer,
    /// An in-process intake ring (HTTP API, Kafka bridge): not counted as an attached
    /// producer, and its event times were checked by its front door (the HTTP API or
    /// the bridge) with the same bounds, where the refusal reaches the client.
    pub local: bool,
    /// The daemon's own counts for this ring, read by stats.
    pub figures: Arc<RingFigures>,
    node_of: Vec<u32>,
    hash_of: Vec<u64>,
    /// (marker sequence, ring position): once the journal thread reports the marker
    /// durable, everything before the position is, and the producer is told so.
    acks: VecDeque<(u64, u64)>,
}

/// Durability markers a ring may have outstanding; past this the newest is moved
/// forward instead (the producer hears a little later, never too early).
const ACKS_MAX: usize = 64;

impl ProducerRing {
    /// Wraps a granted ring.
    pub fn new(id: u64, name: String, pid: u32, consumer: Consumer) -> Self {
        Self {
            id,
            name,
            pid,
            consumer,
            local: false,
            figures: Arc::new(RingFigures::default()),
            node_of: Vec::new(),
            hash_of: Vec::new(),
            acks: VecDeque::with_capacity(ACKS_MAX),
        }
    }
}

/// Control messages into ingest (from the attach thread).
pub enum Control {
    /// A newly attached producer.
    Add(Box<ProducerRing>),
}

/// Why a ring left ingest.
#[derive(Debug, Clone)]
pub enum RetireReason {
    /// The producer closed its end.
    Closed,
    /// The producer process exited.
    Dead,
    /// The ring was corrupt.
    Quarantined(String),
    /// The daemon is stopping.
    Shutdown,
    /// Over the producer limit.
    Refused,
}

/// A ring handed back to the cold shard to be dropped and reported.
pub struct Retired {
    /// The ring, drained.
    pub ring: Box<ProducerRing>,
    /// Why.
    pub reason: RetireReason,
}

/// Where routed events go and the per-node facts ingest keeps.
struct Router {
    nodes: NodeTable,
    /// Per node: bit k set once its id was sent to reflex shard k.
    defined: crate::memory::HugeTable<u64>,
    dedup: Dedup,
    outs: Vec<rtrb::Producer<Slot>>,
    part_shard: Vec<u16>,
    seq: u64,
    sample_mask: u64,
    counters: [u64; C_COUNT],
    reporter: Reporter,
    /// Wall clock, epoch ms, refreshed by `maintain` (about every millisecond).
    now_ms: u64,
    /// Accepted event times around `now_ms`.
    bounds: TimeBounds,
    journal: Option<JournalSide>,
    /// A replayed event's (key, value) pairs on their way into its tick (capacity
    /// `tick::METRICS_MAX`, so no allocation after start).
    replay_metrics: Vec<(u64, f64)>,
    /// A live event's metric-name keys (capacity `tick::METRICS_MAX`, kept: no
    /// allocation after start, and no per-event zeroing of a local array).
    event_keys: Vec<u64>,
    /// The reflex shard on this core and where its node state is: an event for it starts
    /// loading its node's state as soon as its node is known ([`Ingest::prefetch_for`]).
    prefetch: Option<(usize, crate::memory::NodePrefetch)>,
    /// Prefetches left in this turn: the first few events of a turn get one (a lone event
    /// is what waits on the miss; in a full turn the reflex shard's own batch overlaps).
    prefetch_left: u32,
}

/// Events per turn whose node state ingest prefetches.
const PREFETCH_PER_TURN: u32 = 4;

/// Ingest's end of the journal: the byte ring to the journal thread, and the marker
/// sequence the journal thread reports durable.
pub struct JournalOut {
    /// Events and markers, to the journal thread.
    pub ring: rtrb::Producer<u8>,
    /// Unparks the journal thread when it sleeps (a syscall only then).
    pub wake: Arc<Wake>,
    /// The last marker whose entries (and every entry before) are synced.
    pub durable_marker: Arc<AtomicU64>,
}

struct JournalSide {
    out: JournalOut,
    /// One entry being built: head, extras, then the encoded event.
    scratch: Box<[u8]>,
    marker_seq: u64,
    settled_marker: u64,
    /// Entries pushed since the journal thread was last told.
    pushed: bool,
}

/// Bytes of the largest entry ingest pushes.
const JOURNAL_ENTRY_MAX: usize = HEAD_BYTES + entry::EXTRAS_BYTES + entry::KEYS_MAX * 8 + EVENT_BYTES_MAX;

impl JournalSide {
    /// Encodes an accepted event, with the roll-up's extras (node index, status and metric
    /// keys) before it, and pushes it; false when it cannot (counted as lost by the caller;
    /// room was checked before the turn, so this does not happen).
    #[allow(clippy::too_many_arguments)]
    fn append<'m>(
        &mut self,
        partition: u32,
        node: u32,
        status: u64,
        id_hash: u64,
        keys: &[u64],
        head: &EventHead<'_>,
        metrics: impl Iterator<Item = (&'m str, f64)>,
    ) -> bool {
        let at = HEAD_BYTES + entry::EXTRAS_BYTES + keys.len().min(entry::KEYS_MAX) * 8;
        // The id came through the ring's wire decoder, which parsed it on arrival.
        let Ok(n) = rim_journal::event::encode_parsed(head, metrics, &mut self.scratch[at..]) else {
            return false;
        };
        let extras = entry::Extras {
            node,
            status,
            id_hash,
            keys,
        };
        let at = entry::put_event_head(&mut self.scratch, partition as u16, head.received_ms, &extras, n);
        self.pushed = true;
        entry::push(&mut self.out.ring, &self.scratch[..at + n])
    }

    /// Unparks the journal thread if it sleeps and something was pushed since.
    fn notify(&mut self) {
        if std::mem::take(&mut self.pushed) {
            self.out.wake.notify();
        }
    }

    /// After a turn on a ring: a marker, and the ring's position remembered under it.
    fn mark(&mut self, acks: &mut VecDeque<(u64, u64)>, position: u64) {
        let seq = self.marker_seq + 1;
        let mut raw = [0u8; HEAD_BYTES];
        entry::Head {
            len: 0,
            kind: KIND_MARKER,
            keys: 0,
            partition: 0,
            aux: seq,
        }
        .put(&mut raw);
        if !entry::push(&mut self.out.ring, &raw) {
            // The next turn's marker covers this position too.
            return;
        }
        // A turn of refused events pushes only its marker; the producer waits on it.
        self.pushed = true;
        self.marker_seq = seq;
        if acks.len() >= ACKS_MAX {
            if let Some(last) = acks.back_mut() {
                *last = (seq, position);
            }
        } else {
            acks.push_back((seq, position));
        }
    }

    /// Events the ring can take for sure, `want` at most. The writer's cached view of the
    /// ring is asked first; the reader's position is loaded only when that view shows less
    /// than `want`: the journal thread writes that position as it drains, so loading it
    /// every turn was a miss on a line from the other core in the turn that found an
    /// event after a quiet spell, on that event's way to its decision.
    fn room_events(&self, want: usize) -> usize {
        let events = |slots: usize| slots.saturating_sub(HEAD_BYTES) / JOURNAL_ENTRY_MAX;
        let cached = events(self.out.ring.cached_slots());
        if cached >= want {
            return want;
        }
        events(self.out.ring.slots()).min(want)
    }
}

/// The ingest duty.
pub struct Ingest {
    // Boxed: rings arrive and leave as boxes through the control and retire rings, and
    // stay put while ingest reorders its list.
    #[allow(clippy::vec_box)]
    rings: Vec<Box<ProducerRing>>,
    next: usize,
    budget: usize,
    producers_max: usize,
    router: Router,
    control: rtrb::Consumer<Control>,
    retired: rtrb::Producer<Retired>,
    pending_retire: Vec<Retired>,
    liveness_due_ns: u64,
    clock: Clock,
}

/// In-process intake rings at most (the HTTP API's and the Kafka bridge's), outside
/// `ingest.producers_max`.
pub const LOCAL_RINGS_MAX: usize = 2;
/// Worst case of one event in a reflex ring: its node definition and its tick.
const EVENT_SLOTS_MAX: usize = SLOTS_PER_RECORD_MAX + 1 + NODE_ID_BYTES_MAX / 32;
/// How often producers' liveness is checked (a syscall per ring).
const LIVENESS_INTERVAL_NS: u64 = 20_000_000;

/// What ingest needs at start.
pub struct IngestSetup {
    /// Node limit.
    pub nodes_max: usize,
    /// Partitions.
    pub partitions: u32,
    /// Reflex shards' rings, by shard.
    pub outs: Vec<rtrb::Producer<Slot>>,
    /// Records per ring per turn.
    pub budget: usize,
    /// Dedup window per node.
    pub dedup_window: usize,
    /// Producer limit.
    pub producers_max: usize,
    /// Stage latencies are recorded for one event in this many (a power of two).
    pub sample_every: u64,
    /// From the attach thread.
    pub control: rtrb::Consumer<Control>,
    /// To the cold shard.
    pub retired: rtrb::Producer<Retired>,
    /// To the cold shard.
    pub reporter: Reporter,
    /// To the journal thread (None: nothing is journaled).
    pub journal: Option<JournalOut>,
    /// Accepted event times around the daemon's clock.
    pub bounds: TimeBounds,
    /// The wall clock event times are bounded by (read once per loop turn).
    pub clock: Clock,
}

impl Ingest {
    /// Builds ingest, allocating every table up front.
    pub fn new(s: IngestSetup) -> Self {
        let shards = s.outs.len().max(1);
        // Partition p belongs to shard p mod shards: contiguous ownership is not needed,
        // only that each partition has exactly one owner.
        let part_shard = (0..s.partitions)
            .map(|p| nodes::shard_of_partition(p, shards) as u16)
            .collect();
        Self {
            // Attached producers plus the in-process intake rings (HTTP, Kafka).
            rings: Vec::with_capacity(s.producers_max + LOCAL_RINGS_MAX),
            next: 0,
            budget: s.budget,
            producers_max: s.producers_max,
            router: Router {
                nodes: NodeTable::new(s.nodes_max, s.partitions),
                defined: crate::memory::zeroed(s.nodes_max),
                dedup: Dedup::new(s.nodes_max, s.dedup_window),
                outs: s.outs,
                part_shard,
                seq: 0,
                sample_mask: s.sample_every.max(1).next_power_of_two() - 1,
                counters: [0; C_COUNT],
                reporter: s.reporter,
                now_ms: s.clock.unix_ms(),
                bounds: s.bounds,
                journal: s.journal.map(|out| JournalSide {
                    out,
                    scratch: vec![0u8; JOURNAL_ENTRY_MAX].into_boxed_slice(),
                    marker_seq: 0,
                    settled_marker: 0,
                    pushed: false,
                }),
                replay_metrics: Vec::with_capacity(tick::METRICS_MAX),
                event_keys: Vec::with_capacity(tick::METRICS_MAX),
                prefetch: None,
                prefetch_left: 0,
            },
            control: s.control,
            retired: s.retired,
            pending_retire: Vec::with_capacity(s.producers_max + LOCAL_RINGS_MAX),
            liveness_due_ns: 0,
            clock: s.clock,
        }
    }

    /// Prefetch the node state of reflex shard `shard`, which runs on this core, as
    /// `hint` says: a lone event then finds its node's state loaded, or loading, when the
    /// rules run (see [`crate::memory::NodePrefetch`]).
    pub fn prefetch_for(&mut self, shard: usize, hint: crate::memory::NodePrefetch) {
        self.router.prefetch = Some((shard, hint));
    }

    /// One fair round over the rings. Returns records read. The journal thread is not
    /// woken here: the caller calls [`Ingest::wake_journal`] once the turn's reflex step
    /// has run (a parked journal thread not woken takes the entries up to 100 ms late).
    pub fn poll(&mut self) -> usize {
        self.router.prefetch_left = PREFETCH_PER_TURN;
        self.settle_durable();
        let n = self.rings.len();
        if n == 0 {
            return 0;
        }
        let mut work = 0;
        for k in 0..n {
            let i = (self.next + k) % n;
            let limit = self.router.room_events(self.budget);
            if limit == 0 {
                self.router.counters[C_BACKPRESSURE] += 1;
                if self.router.journal_full() {
                    self.router.counters[C_BACKPRESSURE_JOURNAL] += 1;
                }
                break;
            }
            let ring = &mut self.rings[i];
            let ProducerRing {
                consumer,
                node_of,
                hash_of,
                acks,
                local,
                ..
            } = &mut **ring;
            let router = &mut self.router;
            let source = i as u32;
            let check_time = !*local;
            let result = consumer.poll_events_judged(limit, |res| match res {
                Ok(ev) => router.route(source, node_of, hash_of, &ev, check_time),
                Err(e) => {
                    router.counters[C_REJECTED_BASE + reject_reason(&e)] += 1;
                    Verdict::Taken
                }
            });
            // A quarantined ring stops delivering; `maintain` retires it within 1 ms.
            if let Ok(read) = result {
                work += read;
                if read > 0 {
                    if let Some(j) = router.journal.as_mut() {
                        j.mark(acks, consumer.position());
                    }
                }
            }
        }
        self.next = (self.next + 1) % n;
        work
    }

    /// Wakes the journal thread if it parks and this turn handed it entries. The hot loop
    /// calls it once per turn, after the reflex shard has run: its `SeqCst` fence waits
    /// until the turn's stores are visible, the journal entries' among them (their lines
    /// were last read by the journal thread on the other core), and before the shard's
    /// step that wait was on every decision's way out.
    pub fn wake_journal(&mut self) {
        if let Some(j) = self.router.journal.as_mut() {
            j.notify();
        }
    }

    /// Tells producers how far their records are durable, from the markers the journal
    /// thread has synced (one atomic load per turn when nothing moved).
    fn settle_durable(&mut self) {
        let Some(j) = self.router.journal.as_mut() else {
            return;
        };
        let durable = j.out.durable_marker.load(Ordering::Acquire);
        if durable == j.settled_marker {
            return;
        }
        // The pair of the journal thread's check before it publishes: durability only
        // moves forward, and only over markers this side has issued.
        assert!(
            durable > j.settled_marker && durable <= j.marker_seq,
            "durable marker {durable} outside ({}, {}]: it went back, or covers a marker never sent",
            j.settled_marker,
            j.marker_seq
        );
        j.settled_marker = durable;
        for ring in &mut self.rings {
            let mut pos = None;
            while let Some(&(seq, p)) = ring.acks.front() {
                if seq > durable {
                    break;
                }
                pos = Some(p);
                ring.acks.pop_front();
            }
            if let Some(p) = pos {
                // A producer may reuse what is durable: never more than was read.
                assert!(
                    p <= ring.consumer.position(),
                    "durable position {p} past the read position {}",
                    ring.consumer.position()
                );
                ring.consumer.set_durable_position(p);
            }
        }
    }

    /// Feeds one journaled event back through routing at start (recovery): node index,
    /// dedup window (unless `held` says the node's restored window already has it), and
    /// the reflex shard's state; nothing is journaled again and nothing is decided.
    /// `Full` when the reflex ring lacks room (drain it and retry).
    pub fn replay(&mut self, rec: &EventRecord<'_>, held: &dyn Fn(u32) -> bool) -> ReplayOutcome {
        if self.router.room_events(1) == 0 {
            return ReplayOutcome::Full;
        }
        self.router.route_replay(rec, held, true)
    }

    /// Puts a node's dedup window back as a checkpoint kept it (hashes oldest first),
    /// before the journal's tail is replayed.
    pub fn restore_dedup(&mut self, node: u32, hashes: impl Iterator<Item = u64>) {
        self.router.dedup.restore(node, hashes);
    }

    /// As [`Ingest::replay`] from the journal's start (every event through the dedup
    /// windows), but the reflex shard evaluates its rules on the event as if it were live:
    /// what a backtest replays (its ingest journals nothing, and its shards' decisions go
    /// to the backtest, not to subscribers).
    pub fn replay_evaluated(&mut self, rec: &EventRecord<'_>) -> ReplayOutcome {
        if self.router.room_events(1) == 0 {
            return ReplayOutcome::Full;
        }
        self.router.route_replay(rec, &|_| false, false)
    }

    /// Warms the node table's slots for `ids` (see [`nodes::NodeTable::touch`]): `out[i]`
    /// is the node index `ids[i]`'s slot holds, if any: its own unless another id took
    /// the slot first, so good enough to prefetch by, never to act on.
    pub fn touch_nodes(&self, ids: &[&str], out: &mut [Option<u32>]) {
        self.router.nodes.touch(ids, out);
    }

    /// The reflex shard ingest routes node `n`'s events to.
    pub fn shard_of_node(&self, n: u32) -> usize {
        self.router.shard_of(n)
    }

    /// The index of node `id`, giving it one if it has none (recovery places checkpointed
    /// nodes this way, in their old order, before replaying); None past `nodes_max`.
    pub fn node_index(&mut self, id: &str) -> Option<u32> {
        self.router.nodes.intern(id).map(|(n, _)| n)
    }

    /// Rings that have data waiting.
    pub fn has_data(&self) -> bool {
        self.rings.iter().any(|r| r.consumer.has_data())
    }

    /// Off-the-hot-path upkeep: new rings, dead and corrupt ones, reports.
    pub fn maintain(&mut self, now_ns: u64, report_due: bool, shard: ShardFigures) {
        while let Ok(Control::Add(ring)) = self.control.pop() {
            // The intake rings are outside the producers' budget (attach enforces both;
            // this is the backstop).
            let attached = self.rings.iter().filter(|r| !r.local).count();
            if !ring.local && attached >= self.producers_max || self.rings.len() == self.rings.capacity() {
                self.pending_retire.push(Retired {
                    ring,
                    reason: RetireReason::Refused,
                });
            } else {
                if !ring.local {
                    self.router.counters[C_ATTACHED] += 1;
                }
                self.rings.push(ring);
            }
        }
        self.retire_quarantined();
        if now_ns >= self.liveness_due_ns {
            self.liveness_due_ns = now_ns + LIVENESS_INTERVAL_NS;
            self.reclaim_gone();
        }
        self.flush_retired();
        self.router.now_ms = self.clock.unix_ms();
        if report_due {
            self.report_now(shard);
        }
    }

    fn retire_quarantined(&mut self) {
        let mut i = 0;
        while i < self.rings.len() {
            if let Some(q) = self.rings[i].consumer.quarantined() {
                let ring = self.rings.swap_remove(i);
                self.router.counters[C_QUARANTINED] += 1;
                self.pending_retire.push(Retired {
                    ring,
                    reason: RetireReason::Quarantined(q.to_string()),
                });
            } else {
                i += 1;
            }
        }
    }

    /// Rings whose producer closed or exited: drained to the end, then handed back.
    fn reclaim_gone(&mut self) {
        let mut i = 0;
        while i < self.rings.len() {
            let c = &self.rings[i].consumer;
            let reason = if c.producer_closed() {
                Some(RetireReason::Closed)
            } else if c.producer_state() == PeerState::Dead {
                Some(RetireReason::Dead)
            } else {
                None
            };
            match reason {
                // A gone producer writes nothing more: once its ring reads empty it is done.
                Some(reason) if !self.rings[i].consumer.has_data() => {
                    let ring = self.rings.swap_remove(i);
                    self.router.counters[C_RECLAIMED] += 1;
                    self.pending_retire.push(Retired { ring, reason });
                }
                _ => i += 1,
            }
        }
    }

    fn flush_retired(&mut self) {
        while let Some(r) = self.pending_retire.pop() {
            if let Err(rtrb::PushError::Full(r)) = self.retired.push(r) {
                self.pending_retire.push(r);
                break;
            }
        }
    }

    /// At shutdown, after the rings are drained: waits (up to `timeout`) until the
    /// journal thread has synced the last marker, and tells the producers, so that a
    /// producer waiting for durability hears about its last events before rimd exits.
    pub fn settle_final(&mut self, timeout: std::time::Duration) {
        let Some(last) = self.router.journal.as_ref().map(|j| j.marker_seq) else {
            return;
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.settle_durable();
            let settled = self.router.journal.as_ref().map_or(last, |j| j.settled_marker);
            if settled >= last || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// At shutdown: hands every ring back (after the caller drained them).
    pub fn retire_all(&mut self) {
        while let Some(ring) = self.rings.pop() {
            self.pending_retire.push(Retired {
                ring,
                reason: RetireReason::Shutdown,
            });
        }
        self.flush_retired();
    }

    /// Rings attached.
    pub fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// A counter's value.
    pub fn counter(&self, c: usize) -> u64 {
        self.router.counters.get(c).copied().unwrap_or(0)
    }

    /// Sends the current report now (at shutdown); false if no box was free. Each ring's
    /// own figures are copied out for stats first.
    pub fn report_now(&mut self, shard: ShardFigures) -> bool {
        for ring in &self.rings {
            let c = &ring.consumer;
            ring.figures.store(c.delivered(), c.position(), &c.verdicts());
        }
        let r = &mut self.router;
        r.counters[C_NODES] = r.nodes.len() as u64;
        r.reporter.send(&r.counters, 0, &[], shard)
    }
}

impl Router {
    /// Events every reflex ring (and the journal's, with persistence on) can take for
    /// sure, `want` at most.
    fn room_events(&self, want: usize) -> usize {
        let reflex = self
            .outs
            .iter()
            .map(|o| tick::room(o) / EVENT_SLOTS_MAX)
            .min()
            .unwrap_or(0)
            .min(want);
        // One marker per turn rides along; a whole entry's worth of margin covers it.
        let journal = self.journal.as_ref().map_or(usize::MAX, |j| {
            j.room_events(reflex.saturating_add(1)).saturating_sub(1)
        });
        reflex.min(journal)
    }

    /// True when the journal thread's ring has no room for one event and the turn's
    /// marker (asked only on a turn that stopped for room: it loads the reader's position
    /// again, so a turn both rings stopped counts as the journal's, and one the journal
    /// thread freed room for in between is missed; a diagnostic, not an account).
    fn journal_full(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.room_events(2) < 2)
    }

    /// The reflex shard that owns `node`'s partition.
    fn shard_of(&self, node: u32) -> usize {
        self.part_shard[self.nodes.partition(node) as usize % self.part_shard.len()] as usize
    }

    /// Dedup, then the node's definition to its shard if it is new there. Returns the
    /// shard, or why the event stops here (counted): a refusal, or `None` when it was
    /// lost inside the daemon (counted as lost; cannot happen while room is checked).
    /// `id_hash` is the event id's [`Dedup::hash`] (0: no id); `check` false puts nothing
    /// in the window (a replayed event its restored window already holds).
    fn admit(&mut self, node: u32, id_hash: u64, check: bool) -> Result<usize, Option<Refusal>> {
        if id_hash != 0 && check && self.dedup.seen_hash(node, id_hash) {
            self.counters[C_DUPLICATES] += 1;
            return Err(Some(Refusal::Duplicate));
        }
        let shard = self.shard_of(node);
        let Some(out) = self.outs.get_mut(shard) else {
            self.counters[C_LOST] += 1;
            return Err(None);
        };
        let bit = 1u64 << (shard % 64);
        if self.defined[node as usize] & bit == 0 {
            if !tick::push_node(out, node, self.nodes.name(node)) {
                self.counters[C_LOST] += 1;
                return Err(None);
            }
            self.defined[node as usize] |= bit;
        }
        Ok(shard)
    }

    /// The event's time against the daemon's clock; a refusal is counted by its side.
    fn check_time(&mut self, timestamp: i64) -> Result<(), Refusal> {
        let now = i64::try_from(self.now_ms).unwrap_or(i64::MAX);
        match self.bounds.check(timestamp, now) {
            Ok(()) => Ok(()),
            Err(time::TimeRefusal::Ahead { .. }) => {
                self.counters[C_TIME_AHEAD] += 1;
                Err(Refusal::TimeAhead)
            }
            Err(_) => {
                self.counters[C_TIME_TOO_OLD] += 1;
                Err(Refusal::TimeTooOld)
            }
        }
    }

    fn route_replay(&mut self, rec: &EventRecord<'_>, held: &dyn Fn(u32) -> bool, replay: bool) -> ReplayOutcome {
        let Some((node, _)) = self.nodes.intern(rec.rim_node_id) else {
            self.counters[C_NODES_REFUSED] += 1;
            return ReplayOutcome::Refused;
        };
        let id_hash = rec.event_id.map_or(0, Dedup::hash);
        let Ok(shard) = self.admit(node, id_hash, !held(node)) else {
            return ReplayOutcome::Refused;
        };
        self.seq += 1;
        let head = TickHead {
            seq: self.seq,
            node,
            source: u32::MAX,
            timestamp: rec.timestamp,
            publish_ns: 0,
            ingest_ns: 0,
            received_ms: rec.received_ms,
            price: rec.price,
            volume: rec.volume,
            stress: rec.stress,
            status: rim_rules::name_hash(rec.status).max(1),
            replay,
        };
        // A scratch kept across events: a fresh zeroed array here was a 1 KiB memset per
        // replayed event.
        self.replay_metrics.clear();
        self.replay_metrics.extend(
            rec.metric_bytes()
                .take(tick::METRICS_MAX)
                .map(|(name, v)| (rim_rules::name_hash_bytes(name).max(1), v)),
        );
        if tick::push_tick(&mut self.outs[shard], &head, self.replay_metrics.iter().copied()) {
            ReplayOutcome::Applied(node)
        } else {
            self.counters[C_LOST] += 1;
            ReplayOutcome::Refused
        }
    }

    /// Starts loading `node`'s state when `shard` is the reflex shard on this core and
    /// the turn has prefetches left.
    fn prefetch_state(&mut self, shard: usize, node: u32) {
        if let Some((local, hint)) = self.prefetch {
            if local == shard && self.prefetch_left > 0 {
                self.prefetch_left -= 1;
                hint.node(node);
            }
        }
    }

    /// Routes one valid event, or says why not. The time check comes first, so that a
    /// refused event never takes a node slot or a dedup entry.
    fn route(
        &mut self,
        source: u32,
        node_of: &mut Vec<u32>,
        hash_of: &mut Vec<u64>,
        ev: &EventView<'_>,
        check_time: bool,
    ) -> Verdict {
        if check_time {
            if let Err(r) = self.check_time(ev.timestamp()) {
                return Verdict::Refused(r);
            }
        }
        let node = match self.node_index(node_of, ev) {
            Some(n) => n,
            None => {
                self.counters[C_NODES_REFUSED] += 1;
                return Verdict::Refused(Refusal::NodeTableFull);
            }
        };
        let id_hash = ev.event_id().map_or(0, Dedup::hash);
        let shard = match self.admit(node, id_hash, true) {
            Ok(shard) => shard,
            Err(Some(refusal)) => return Verdict::Refused(refusal),
            Err(None) => return Verdict::Taken,
        };
        self.prefetch_state(shard, node);
        // Names as keys, once per event (cached per ring symbol): the tick and the
        // journal entry's roll-up extras share them.
        let status = cached_hash(hash_of, ev.status_sym().get(), || ev.status());
        // In a buffer kept for it: a local array of `METRICS_MAX` keys was a 512-byte
        // memset per event.
        let mut keys = std::mem::take(&mut self.event_keys);
        keys.clear();
        keys.extend(
            ev.metric_syms()
                .enumerate()
                .take(tick::METRICS_MAX)
                .map(|(i, (sym, _))| cached_hash(hash_of, sym.get(), || ev.metrics().nth(i).map_or("", |m| m.0))),
        );
        if !self.journal_event(node, status, id_hash, &keys, ev) {
            self.event_keys = keys;
            self.counters[C_LOST] += 1;
            return Verdict::Taken;
        }
        self.seq += 1;
        let sampled = self.seq & self.sample_mask == 0;
        let ingest_ns = if sampled {
            let now = rim_ring::clock::monotonic_ns();
            let publish = ev.publish_ns();
            if publish != 0 && publish <= now {
                self.reporter.current.hists.record(STAGE_RING_HOP, now - publish);
            }
            now
        } else {
            0
        };
        let head = TickHead {
            seq: self.seq,
            node,
            source,
            timestamp: ev.timestamp(),
            publish_ns: ev.publish_ns(),
            ingest_ns,
            received_ms: self.now_ms,
            price: ev.price(),
            volume: ev.volume(),
            stress: ev.stress(),
            status,
            replay: false,
        };
        let metrics = ev.metric_syms().zip(&keys).map(|((_, v), &k)| (k, v));
        if tick::push_tick(&mut self.outs[shard], &head, metrics) {
            self.counters[C_ACCEPTED] += 1;
        } else {
            self.counters[C_LOST] += 1;
        }
        self.event_keys = keys;
        Verdict::Taken
    }

    /// Hands an admitted event to the journal thread (when persistence is on), with the
    /// roll-up's extras ingest already computed; false when the journal's ring is full.
    #[inline]
    fn journal_event(&mut self, node: u32, status: u64, id_hash: u64, keys: &[u64], ev: &EventView<'_>) -> bool {
        let Some(j) = self.journal.as_mut() else {
            return true;
        };
        let head = EventHead {
            rim_node_id: ev.rim_node_id(),
            event_id: ev.event_id(),
            timestamp: ev.timestamp(),
            publish_ns: ev.publish_ns(),
            received_ms: self.now_ms,
            price: ev.price(),
            volume: ev.volume(),
            stress: ev.stress(),
            status: ev.status(),
            source_topic: ev.source_topic(),
        };
        let partition = self.nodes.partition(node);
        j.append(partition, node, status, id_hash, keys, &head, ev.metrics())
    }

    fn node_index(&mut self, node_of: &mut Vec<u32>, ev: &EventView<'_>) -> Option<u32> {
        let sym = ev.node_sym().get() as usize;
        if let Some(&n) = node_of.get(sym) {
            if n != NO_NODE {
                return Some(n);
            }
        }
        let (n, _) = self.nodes.intern(ev.rim_node_id())?;
        if node_of.len() <= sym {
            node_of.resize(sym + 1, NO_NODE);
        }
        node_of[sym] = n;
        Some(n)
    }
}

/// What became of a replayed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Routed to its shard; the node's index.
    Applied(u32),
    /// Dropped (duplicate, node limit): counted like a live one.
    Refused,
    /// The reflex ring is full: drain it and offer the event again.
    Full,
}

/// The `name_hash` of a ring symbol's text, cached per ring by symbol number.
fn cached_hash<'t>(cache: &mut Vec<u64>, sym: u32, text: impl FnOnce() -> &'t str) -> u64 {
    let i = sym as usize;
    if let Some(&h) = cache.get(i) {
        if h != 0 {
            return h;
        }
    }
    let h = rim_rules::name_hash(text()).max(1);
    if cache.len() <= i {
        cache.resize(i + 1, 0);
    }
    cache[i] = h;
    h
}
