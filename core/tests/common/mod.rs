//! One ingest and one reflex shard in process, wired as the backtest and the daemon wire
//! them: the setup the core crate's integration tests share, so a change to
//! [`IngestSetup`] or [`ReflexSetup`] is made here once.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rim_core::clock::Clock;
use rim_core::config::Config;
use rim_core::ingest::{Control, Ingest, IngestSetup, JournalOut, Retired};
use rim_core::reflex::{self, Compiled, PersistOut, Reflex, ReflexSetup};
use rim_core::report::{Report, Reporter};
use rim_core::tick::Slot;
use rim_ring::Segment;

/// What differs between the tests' shards.
pub struct Setup<'a> {
    /// The rule file (TOML).
    pub rules: &'a str,
    pub clock: Clock,
    /// The shard is 0 of `shards` over `partitions`; its ingest routes every node to it.
    pub partitions: u32,
    pub shards: usize,
    /// Resolutions predicted, seconds (empty: no predictions).
    pub resolutions: Vec<u32>,
    /// The chain sequence of the shard's newest durable decision (the journal thread's).
    pub durable_seq: Arc<AtomicU64>,
    /// Ingest's ring to the journal thread (None: persistence off).
    pub journal: Option<JournalOut>,
}

/// The wired parts and the ring ends a test may use.
pub struct Wired {
    pub ingest: Ingest,
    pub reflex: Reflex,
    /// Reflex → journal thread: decisions and predictions.
    pub persisted: rtrb::Consumer<u8>,
    /// The shard's decision broadcast (a subscriber opens a reader on it).
    #[allow(dead_code)] // each test binary uses a part of this module
    pub broadcast: Arc<Segment>,
    /// Attached producers' rings, to ingest (taken at its next `maintain`).
    pub control: rtrb::Producer<Control>,
    /// Ring ends no test reads, held open.
    pub ends: Ends,
}

/// Ring ends most tests do not read, held open.
pub struct Ends {
    _rules_tx: rtrb::Producer<Arc<Compiled>>,
    _rules_back: rtrb::Consumer<Arc<Compiled>>,
    _retired: rtrb::Consumer<Retired>,
    /// The reflex shard's reports, then ingest's.
    reports: Vec<rim_stats::ColdEnd<Report>>,
}

impl Ends {
    /// The counters of the newest report the reflex shard (`0`) or ingest (`1`) sent
    /// since the last call, if any.
    #[allow(dead_code)] // each test binary uses a part of this module
    pub fn counters(&mut self, which: usize) -> Option<Vec<u64>> {
        let mut newest = None;
        self.reports
            .get_mut(which)?
            .drain(|r| newest = Some(r.counters.clone()));
        newest
    }
}

/// Compiles `setup.rules` and wires ingest to a reflex shard.
pub fn wire(config: &Config, setup: Setup<'_>) -> Wired {
    let set = rim_core::plane::compile_as(setup.rules, "toml", config, None).expect("rules compile");
    let (tick_tx, input) = rtrb::RingBuffer::<Slot>::new(1 << 14);
    let (rules_tx, rules_in) = rtrb::RingBuffer::new(1);
    let (rules_out, rules_back) = rtrb::RingBuffer::new(1);
    let (reporter, reflex_reports) = Reporter::new(reflex::C_COUNT, config.reflex.rules_max);
    let (ring, persisted) = rtrb::RingBuffer::<u8>::new(1 << 22);
    let out = rim_ring::broadcast::heap(1 << 12, config.decisions.slot_bytes).expect("decision ring");
    let broadcast = out.segment().clone();
    let reflex = Reflex::new(ReflexSetup {
        shard: 0,
        input,
        shape: reflex::state::Shape::of(config),
        rules_max: config.reflex.rules_max,
        cooldown_slots: config.reflex.cooldown_slots,
        out,
        rules: Compiled::new(set),
        rules_in,
        rules_out,
        reporter,
        sweep_ms: config.reflex.stale_sweep_ms,
        epoch: 1,
        resume: None,
        persist: Some(PersistOut {
            ring,
            resolutions: setup.resolutions,
            durable_seq: setup.durable_seq,
        }),
        queries: None,
        clock: setup.clock.clone(),
        partitions: setup.partitions,
        shards: setup.shards,
    });
    let (control, control_rx) = rtrb::RingBuffer::new(4);
    let (retired_tx, retired) = rtrb::RingBuffer::new(4);
    let (ingest_reporter, ingest_reports) = Reporter::new(rim_core::ingest::C_COUNT, 0);
    let ingest = Ingest::new(IngestSetup {
        nodes_max: config.reflex.nodes_max,
        partitions: 1,
        outs: vec![tick_tx],
        budget: config.ingest.poll_budget,
        dedup_window: config.ingest.dedup_window,
        producers_max: 4,
        sample_every: 64,
        control: control_rx,
        retired: retired_tx,
        reporter: ingest_reporter,
        journal: setup.journal,
        bounds: config.time_bounds(),
        clock: setup.clock,
    });
    Wired {
        ingest,
        reflex,
        persisted,
        broadcast,
        control,
        ends: Ends {
            _rules_tx: rules_tx,
            _rules_back: rules_back,
            _retired: retired,
            reports: vec![reflex_reports, ingest_reports],
        },
    }
}
