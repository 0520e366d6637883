//! The daemon's in-process topology: the rings between ingest, the reflex shards and the
//! journal thread, and the duties at their ends, built from the configuration before any
//! thread starts. [`crate::daemon`] then hands the pieces to the threads that own them.
//!
//! ```text
//! producers ─▶ ingest ─ticks─▶ reflex shard k ─decisions─▶ broadcast segment k
//!                │                  └─decisions, predictions─▶ journal thread
//!                └─events, markers─────────────────────────────▶ journal thread
//! control plane ─control─▶ ingest ─retired─▶ control plane
//!               ─rules───▶ reflex k ─old rules─▶ control plane
//! HTTP thread ─queries─▶ reflex k ─answers─▶ HTTP thread
//! ```
//!
//! Every ring is allocated here, once, at its configured size; the hot path never
//! allocates one.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rim_ring::{broadcast, Segment};
use rim_stats::ColdEnd;
use thiserror::Error;

use crate::clock::Clock;
use crate::config::Config;
use crate::ingest::{self, Ingest, IngestSetup, Retired};
use crate::persist::JournalInputs;
use crate::reflex::query::{query_rings, QueryClient, QueryPort, QUERIES_IN_FLIGHT};
use crate::reflex::{self, state::Shape, Compiled, Reflex, ReflexSetup};
use crate::report::{Report, Reporter};
use crate::tick::Slot;
use crate::wake::Wake;

/// Rule sets in flight to a shard, and old ones on their way back.
const RULES_IN_SLOTS: usize = 4;
const RULES_BACK_SLOTS: usize = 16;

/// A ring or segment could not be set up.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct RingSetupError(pub String);

/// Everything one hot shard thread owns.
pub struct HotShard {
    /// Its thread's name (`rimd-hot`, `rimd-reflex-K`).
    pub name: String,
    /// The core it is pinned to.
    pub core: usize,
    /// Ingest, on shard 0 only.
    pub ingest: Option<Ingest>,
    /// Its reflex shard.
    pub reflex: Reflex,
}

/// The ends the control plane, the HTTP thread and the journal thread keep.
pub struct Topology {
    /// The hot shards, shard 0 with ingest.
    pub hot: Vec<HotShard>,
    /// New producer rings, to ingest.
    pub control: rtrb::Producer<ingest::Control>,
    /// What the control plane reads back from the shards.
    pub cold: ColdEnds,
    /// The journal thread's inputs (persistence on).
    pub journal: Option<JournalInputs>,
    /// New rule sets, to each shard.
    pub rules_in: Vec<rtrb::Producer<Arc<Compiled>>>,
    /// Each shard's decision ring.
    pub decision_segments: Vec<Arc<Segment>>,
    /// Live-state queries, one client per shard (the HTTP API on).
    pub query_clients: Vec<QueryClient>,
}

/// The rings the control plane reads from the shards.
pub struct ColdEnds {
    /// Ingest's reports.
    pub ingest_reports: ColdEnd<Report>,
    /// Each reflex shard's reports.
    pub reflex_reports: Vec<ColdEnd<Report>>,
    /// Rings ingest let go of.
    pub retired: rtrb::Consumer<Retired>,
    /// Replaced rule sets, back from each shard (freed off the hot path).
    pub rules_back: Vec<rtrb::Consumer<Arc<Compiled>>>,
}

/// Builds the rings and duties of the configuration, with `rules` in force and a journal
/// when `persisted`.
pub fn build(
    config: &Config,
    rules: &Arc<Compiled>,
    persisted: bool,
    clock: &Clock,
) -> Result<Topology, RingSetupError> {
    let shards = config.topology.reflex_shards;
    let (ticks_tx, ticks_rx) = tick_rings(config, shards);
    let (control, control_rx) = rtrb::RingBuffer::new(config.ingest.producers_max.max(16));
    let (retired_tx, retired) = rtrb::RingBuffer::<Retired>::new(config.ingest.producers_max.max(16) * 2);
    let (journal_out, mut journal) = if persisted {
        let (out, inputs) = journal_ring(config, shards);
        (Some(out), Some(inputs))
    } else {
        (None, None)
    };
    let (ingest_reporter, ingest_reports) = Reporter::new(ingest::C_COUNT, 0);
    let mut ingest = Some(Ingest::new(IngestSetup {
        nodes_max: config.reflex.nodes_max,
        partitions: config.topology.partitions,
        outs: ticks_tx,
        budget: config.ingest.poll_budget,
        dedup_window: config.ingest.dedup_window,
        producers_max: config.ingest.producers_max,
        sample_every: config.stats.stage_sample_every,
        control: control_rx,
        retired: retired_tx,
        reporter: ingest_reporter,
        journal: journal_out,
        bounds: config.time_bounds(),
        clock: clock.clone(),
    }));
    let (query_clients, mut query_ports) = queries(config, shards);
    // The chains' epoch: one wall-clock reading for every shard of the run.
    let epoch = clock.unix_ns();
    let mut topology = Topology {
        hot: Vec::with_capacity(shards),
        control,
        cold: ColdEnds {
            ingest_reports,
            reflex_reports: Vec::with_capacity(shards),
            retired,
            rules_back: Vec::with_capacity(shards),
        },
        journal: None,
        rules_in: Vec::with_capacity(shards),
        decision_segments: Vec::with_capacity(shards),
        query_clients,
    };
    for (k, input) in ticks_rx.into_iter().enumerate() {
        let ends = ShardEnds {
            input,
            epoch,
            clock: clock.clone(),
            persist: journal.as_mut().map(|j| persist_ring(config, j, k)),
            queries: query_ports.get_mut(k).and_then(Option::take),
        };
        let reflex = reflex_shard(config, k, rules, ends, &mut topology)?;
        if let (0, Some(i)) = (k, ingest.as_mut()) {
            // Shard 0 runs on ingest's own thread: its node state is in this core's reach.
            i.prefetch_for(0, reflex.node_prefetch());
        }
        let (name, core) = match k {
            0 => ("rimd-hot".to_owned(), config.topology.hot_core),
            _ => (format!("rimd-reflex-{k}"), config.topology.reflex_cores[k - 1]),
        };
        topology.hot.push(HotShard {
            name,
            core,
            ingest: ingest.take(),
            reflex,
        });
    }
    topology.journal = journal;
    Ok(topology)
}

/// The ingest → reflex ring of each shard, its pages touched.
fn tick_rings(config: &Config, shards: usize) -> (Vec<rtrb::Producer<Slot>>, Vec<rtrb::Consumer<Slot>>) {
    (0..shards)
        .map(|_| {
            let (mut tx, mut rx) = rtrb::RingBuffer::<Slot>::new(config.ingest.reflex_ring_slots);
            prefault(&mut tx, &mut rx);
            (tx, rx)
        })
        .unzip()
}

/// Writes and reads every slot once, so the ring's pages are resident before the first
/// event instead of faulting in on the hot path.
fn prefault(tx: &mut rtrb::Producer<Slot>, rx: &mut rtrb::Consumer<Slot>) {
    let n = tx.slots();
    if let Ok(chunk) = tx.write_chunk_uninit(n) {
        chunk.fill_from_iter(std::iter::repeat([0u64; 4]));
    }
    if let Ok(chunk) = rx.read_chunk(n) {
        chunk.commit_all();
    }
}

/// The ingest → journal ring and the journal thread's inputs (the reflex shards' rings
/// are added as the shards are built).
fn journal_ring(config: &Config, shards: usize) -> (ingest::JournalOut, JournalInputs) {
    let (ring, rx) = rtrb::RingBuffer::<u8>::new(config.persist.journal_ring_bytes);
    let wake = Arc::new(Wake::new());
    let durable_marker = Arc::new(AtomicU64::new(0));
    let out = ingest::JournalOut {
        ring,
        wake: wake.clone(),
        durable_marker: durable_marker.clone(),
    };
    let inputs = JournalInputs {
        ingest: rx,
        reflex: Vec::with_capacity(shards),
        durable_marker,
        durable_seqs: (0..shards).map(|_| Arc::new(AtomicU64::new(0))).collect(),
        wake,
    };
    (out, inputs)
}

/// Reflex shard `k`'s ring to the journal thread.
fn persist_ring(config: &Config, journal: &mut JournalInputs, k: usize) -> reflex::PersistOut {
    let (ring, rx) = rtrb::RingBuffer::<u8>::new(config.persist.reflex_ring_bytes);
    journal.reflex.push(rx);
    reflex::PersistOut {
        ring,
        durable_seq: journal.durable_seqs[k].clone(),
        resolutions: if config.persist.predict {
            config.persist.resolutions.clone()
        } else {
            Vec::new()
        },
    }
}

/// Live-state query rings from the HTTP thread, one pair per shard (none without the API).
fn queries(config: &Config, shards: usize) -> (Vec<QueryClient>, Vec<Option<QueryPort>>) {
    if !config.api.enabled {
        return (Vec::new(), Vec::new());
    }
    (0..shards)
        .map(|_| {
            let (client, port) = query_rings(QUERIES_IN_FLIGHT);
            (client, Some(port))
        })
        .unzip()
}

/// The rings a reflex shard reads and writes besides those the topology keeps.
struct ShardEnds {
    input: rtrb::Consumer<Slot>,
    /// The decision chains' epoch (one for every shard of a run).
    epoch: u64,
    clock: Clock,
    persist: Option<reflex::PersistOut>,
    queries: Option<QueryPort>,
}

/// Reflex shard `k`, its decision segment, report box and rule rings (their other ends
/// go into `topology`).
fn reflex_shard(
    config: &Config,
    k: usize,
    rules: &Arc<Compiled>,
    ends: ShardEnds,
    topology: &mut Topology,
) -> Result<Reflex, RingSetupError> {
    let seg = decision_segment(config, k)?;
    let out = broadcast::Writer::open(seg.clone()).map_err(|e| RingSetupError(e.to_string()))?;
    topology.decision_segments.push(seg);
    let (reporter, cold) = Reporter::new(reflex::C_COUNT, config.reflex.rules_max);
    topology.cold.reflex_reports.push(cold);
    let (rules_tx, rules_in) = rtrb::RingBuffer::new(RULES_IN_SLOTS);
    let (rules_out, rules_back) = rtrb::RingBuffer::new(RULES_BACK_SLOTS);
    topology.rules_in.push(rules_tx);
    topology.cold.rules_back.push(rules_back);
    Ok(Reflex::new(ReflexSetup {
        shard: k as u32,
        input: ends.input,
        shape: Shape::of(config),
        rules_max: config.reflex.rules_max,
        cooldown_slots: config.reflex.cooldown_slots,
        out,
        rules: rules.clone(),
        rules_in,
        rules_out,
        reporter,
        sweep_ms: config.reflex.stale_sweep_ms,
        epoch: ends.epoch,
        resume: None,
        persist: ends.persist,
        queries: ends.queries,
        clock: ends.clock,
        partitions: config.topology.partitions,
        shards: config.topology.reflex_shards,
    }))
}

/// Shard `k`'s decision ring: a sealed memfd subscribers map read-only.
fn decision_segment(config: &Config, shard: usize) -> Result<Arc<Segment>, RingSetupError> {
    let d = &config.decisions;
    let err = |e: rim_ring::SegmentError| RingSetupError(e.to_string());
    let bytes = broadcast::segment_bytes(d.slots, d.slot_bytes).map_err(err)?;
    let seg = Segment::create_memfd_for_readers(&format!("rimd-decisions-{shard}"), bytes).map_err(err)?;
    broadcast::init(&seg, d.slots, d.slot_bytes).map_err(err)?;
    Ok(Arc::new(seg))
}
