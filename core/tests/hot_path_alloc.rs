//! The composed hot path allocates nothing once warm (issue 13): a producer's
//! shared-memory ring, ingest (dedup, routing, the journal entry of every event,
//! durability markers), the tick ring, a reflex shard evaluating rules that fire on every
//! event, the decisions it encodes, chains, broadcasts and pushes to the journal thread,
//! and the predictions of each window, all on this thread as the daemon's hot loop runs
//! them. The journal thread's side is played here too: it drains both rings and reports
//! markers and decisions durable, so ingest's acknowledgements, the producer's durable
//! position and the shard's in-flight bound move as in the daemon. Only the hot path's own
//! calls are counted (the played journal side decodes decisions into owned values).
//!
//! And with the same parts: a journal thread that stops taking entries holds ingest back,
//! and ingest counts those turns as the journal ring's.
//!
//! Its own test binary: it installs a counting global allocator. Counts are per thread,
//! so the harness's threads do not disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rim_core::clock::ManualClock;
use rim_core::config::Config;
use rim_core::entry::{self, KIND_DECISION, KIND_EVENT, KIND_MARKER, KIND_PREDICTION};
use rim_core::ingest::{self, Control, Ingest, JournalOut, ProducerRing};
use rim_core::reflex::{decision, Reflex};
use rim_core::report::ShardFigures;
use rim_core::wake::Wake;
use rim_ring::{spsc, Consumer, Producer, PublishError, Segment, Sym, SymEvent, SymbolKind};

mod common;

struct CountingAllocator;

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: never panic inside the allocator, even while a thread is torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// allocator's contract is System's; the thread-local counter allocates nothing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded as is; `ptr` came from this allocator, i.e. from System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator, i.e. from System.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Rules that fire on every event of the test's nodes (each event is one decision per
/// rule), beside one that never fires and one over a window.
const RULES: &str = r#"
[[rule]]
id = "every-event"
nodes = "rim:sensor:*"
when = "metric.temp > 0"
severity = "info"

[[rule]]
id = "hot"
nodes = "rim:sensor:*"
when = "metric.temp > 1000"
severity = "critical"

[[rule]]
id = "jump"
nodes = "rim:sensor:*"
when = "change(metric.temp, 2s) > -1000"
severity = "medium"
"#;

const NODES: usize = 64;
const T0_MS: u64 = 1_800_000_000_000;

/// The hot path's parts, wired as the daemon wires them for one shard.
struct HotPath {
    producer: Producer,
    ingest: Ingest,
    reflex: Reflex,
    /// Ingest → journal thread.
    journal: rtrb::Consumer<u8>,
    durable_marker: Arc<AtomicU64>,
    /// Reflex → journal thread (decisions, predictions).
    persisted: rtrb::Consumer<u8>,
    /// The chain sequence of the shard's newest durable decision.
    durable_seq: Arc<AtomicU64>,
    broadcast: rim_ring::broadcast::Reader,
    /// One broadcast slot, read into.
    slot: Vec<u8>,
    nodes: Vec<Sym>,
    status: Sym,
    temp: Sym,
    scratch: Vec<u8>,
    clock: ManualClock,
    sent: u64,
    decisions: u64,
    predictions: u64,
    events_journaled: u64,
    /// Allocations made by the hot path's own calls (the producer's publish, ingest and
    /// the shard), not by this test's journal-thread side.
    hot_allocations: u64,
    _ends: (common::Ends, rtrb::Producer<Control>),
}

impl HotPath {
    fn new(config: &Config) -> Self {
        let clock = ManualClock::at(T0_MS);
        let (journal_ring, journal) = rtrb::RingBuffer::<u8>::new(1 << 22);
        let durable_marker = Arc::new(AtomicU64::new(0));
        let durable_seq = Arc::new(AtomicU64::new(0));
        let w = common::wire(
            config,
            common::Setup {
                rules: RULES,
                clock: clock.clock(),
                partitions: 1,
                shards: 1,
                resolutions: vec![1, 60],
                durable_seq: durable_seq.clone(),
                journal: Some(JournalOut {
                    ring: journal_ring,
                    wake: Arc::new(Wake::new()),
                    durable_marker: durable_marker.clone(),
                }),
            },
        );
        let broadcast = rim_ring::broadcast::Reader::open(w.broadcast).expect("decision reader");
        let mut control = w.control;
        let seg = Arc::new(Segment::create_memfd("rim-test-hot-path", spsc::segment_bytes(1 << 20)).expect("memfd"));
        spsc::init(&seg).expect("init");
        let mut producer = Producer::open(seg.clone()).expect("producer");
        let consumer = Consumer::open(seg).expect("consumer");
        assert!(control
            .push(Control::Add(Box::new(ProducerRing::new(
                1,
                "hot-path-test".into(),
                std::process::id(),
                consumer
            ))))
            .is_ok());
        let nodes = (0..NODES)
            .map(|i| {
                producer
                    .intern(SymbolKind::NodeId, &format!("rim:sensor:hall:n{i}"))
                    .expect("node")
            })
            .collect();
        let status = producer.intern(SymbolKind::Status, "ok").expect("status");
        let temp = producer.intern(SymbolKind::MetricName, "temp").expect("metric");
        Self {
            producer,
            ingest: w.ingest,
            reflex: w.reflex,
            journal,
            durable_marker,
            persisted: w.persisted,
            durable_seq,
            broadcast,
            slot: vec![0; config.decisions.slot_bytes],
            nodes,
            status,
            temp,
            scratch: Vec::with_capacity(entry::BODY_BYTES_MAX + entry::HEAD_BYTES),
            clock,
            sent: 0,
            decisions: 0,
            predictions: 0,
            events_journaled: 0,
            hot_allocations: 0,
            _ends: (w.ends, control),
        }
    }

    /// Publishes event `i`: node `i` round the nodes, event time `i` ms past `T0_MS`, the
    /// test clock moved on 1 ms first.
    fn publish(&mut self, i: u64, temp: f64, price: Option<f64>) -> Result<u64, PublishError> {
        self.clock.advance(std::time::Duration::from_millis(1));
        let metrics = [(self.temp, temp)];
        let ev = SymEvent {
            node: self.nodes[i as usize % NODES],
            event_id: None,
            timestamp: (T0_MS + i) as i64,
            metrics: &metrics,
            price,
            volume: None,
            stress: None,
            status: self.status,
            source_topic: None,
            publish_ns: 0,
        };
        self.producer.try_publish_sym(&ev)
    }

    /// Publishes `n` events round the nodes, 1 ms of event time apart, and runs the hot
    /// loop and the journal thread's side until all of them are decided and durable.
    fn run(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.sent;
            let before = allocations();
            let published = self.publish(i, 20.0 + (i % 7) as f64, Some(100.0));
            self.hot_allocations += allocations() - before;
            published.expect("room in the producer's ring");
            self.sent += 1;
            self.turn();
        }
        for _ in 0..64 {
            self.turn();
        }
        assert_eq!(
            self.producer.durable_position(),
            self.producer.position(),
            "every event durable"
        );
    }

    /// One turn of the hot loop (ingest, the shard, its upkeep), then the journal
    /// thread's: drain both rings and report the markers durable.
    fn turn(&mut self) {
        let before = allocations();
        self.ingest
            .maintain(rim_ring::clock::monotonic_ns(), false, ShardFigures::default());
        self.ingest.poll();
        self.reflex.poll(usize::MAX);
        self.ingest.wake_journal();
        self.reflex.maintain(1, false, ShardFigures::default());
        self.hot_allocations += allocations() - before;
        self.drain_journal();
        self.drain_persisted();
        while let Ok(Some(_)) = self.broadcast.read(&mut self.slot) {}
    }

    fn drain_journal(&mut self) {
        let (marker, events) = (&self.durable_marker, &mut self.events_journaled);
        while let Ok(Some(())) = entry::take(&mut self.journal, &mut self.scratch, |head, _| match head.kind {
            KIND_MARKER => marker.store(head.aux, Ordering::Release),
            KIND_EVENT => *events += 1,
            _ => {}
        }) {}
    }

    /// As the journal thread: each decision counted and, once "durable", its chain
    /// sequence published to the shard.
    fn drain_persisted(&mut self) {
        let (decisions, predictions, durable) = (&mut self.decisions, &mut self.predictions, &self.durable_seq);
        while let Ok(Some(())) = entry::take(&mut self.persisted, &mut self.scratch, |head, body| match head.kind {
            KIND_DECISION => {
                *decisions += 1;
                let d = decision::decode(body).expect("a decision decodes");
                durable.fetch_max(d.chain_seq, Ordering::Release);
            }
            KIND_PREDICTION => *predictions += 1,
            _ => {}
        }) {}
    }
}

/// Events per phase: 70 s of event time at 1 ms apart, so each phase crosses a minute's
/// boundary (every node's 60 s window closes and is predicted, as its 1 s windows are).
const PHASE: u64 = 70_000;

#[test]
fn the_composed_hot_path_allocates_nothing_once_warm() {
    let config = Config::default();
    let mut path = HotPath::new(&config);
    // Warm-up: every node seen, every window and rule state made, every buffer grown.
    path.run(PHASE);
    let warm_up = path.hot_allocations;
    let (decided, predicted) = (path.decisions, path.predictions);
    assert!(
        warm_up > 0,
        "the warm-up's allocations are counted (new nodes, symbols)"
    );
    assert!(decided >= PHASE, "the every-event rule fired: {decided} decisions");
    assert_eq!(path.events_journaled, PHASE, "every event journaled");

    path.hot_allocations = 0;
    path.run(PHASE);

    assert!(path.decisions - decided >= PHASE, "decisions kept coming");
    // Each node's next 1 s window, 70 times, and its next 60 s window at least once.
    let windows = NODES as u64 * 70;
    assert!(
        path.predictions - predicted > windows,
        "predictions were made: {}",
        path.predictions - predicted
    );
    assert_eq!(path.events_journaled, 2 * PHASE, "every event journaled");
    assert_eq!(path.hot_allocations, 0, "allocations on the hot path after warm-up");
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(64);
    std::hint::black_box(&v);
    assert!(allocations() > before, "the counting allocator is installed");
}

/// A journal thread that stops taking entries holds ingest back, and ingest says whose
/// ring stopped it: every turn that stopped for room is one the journal's ring stopped
/// (the reflex ring is drained each turn). Once the journal thread drains again, every
/// event goes through and none is lost.
#[test]
fn a_full_journal_ring_holds_ingest_back_and_ingest_says_so() {
    let config = Config::default();
    let mut path = HotPath::new(&config);
    let ingest_counters = |path: &mut HotPath| {
        path.ingest
            .maintain(rim_ring::clock::monotonic_ns(), true, ShardFigures::default());
        path._ends.0.counters(1).expect("an ingest report")
    };
    let before = ingest_counters(&mut path);
    assert_eq!(before[ingest::C_BACKPRESSURE_JOURNAL], 0);
    // The journal ring (4 MiB) fills first; then the producer ring, and publishing stops.
    let mut sent = 0u64;
    while sent < 100_000 {
        if path.publish(sent, 20.0, None).is_err() {
            break;
        }
        sent += 1;
        path.ingest
            .maintain(rim_ring::clock::monotonic_ns(), false, ShardFigures::default());
        path.ingest.poll();
        path.reflex.poll(usize::MAX);
        path.drain_persisted();
        while let Ok(Some(_)) = path.broadcast.read(&mut path.slot) {}
    }
    let held = ingest_counters(&mut path);
    let journal_turns = held[ingest::C_BACKPRESSURE_JOURNAL];
    assert!(
        journal_turns > 0,
        "ingest counted no turn the journal ring stopped ({sent} sent, {held:?})"
    );
    assert_eq!(
        journal_turns,
        held[ingest::C_BACKPRESSURE],
        "every turn that stopped for room, the journal's ring stopped"
    );
    assert!(path.events_journaled == 0 && sent > 20_000);
    path.sent = sent;
    for _ in 0..256 {
        path.turn();
    }
    assert_eq!(
        path.events_journaled, sent,
        "every event journaled once the ring drained"
    );
    let after = ingest_counters(&mut path);
    assert_eq!(after[ingest::C_LOST], 0);
    // Now the shard stops (its input ring fills) while the journal thread keeps up: the
    // turns stopped for room rise, the journal ring's do not.
    for i in sent..sent + 40_000 {
        if path.publish(i, 20.0, None).is_err() {
            break;
        }
        path.ingest
            .maintain(rim_ring::clock::monotonic_ns(), false, ShardFigures::default());
        path.ingest.poll();
        path.drain_journal();
    }
    let shard_held = ingest_counters(&mut path);
    assert!(
        shard_held[ingest::C_BACKPRESSURE] > after[ingest::C_BACKPRESSURE],
        "a full input ring of the shard stopped no turn"
    );
    assert_eq!(
        shard_held[ingest::C_BACKPRESSURE_JOURNAL],
        after[ingest::C_BACKPRESSURE_JOURNAL],
        "a turn the shard's ring stopped was counted as the journal ring's"
    );
}
