//! Backtest: the journal's events replayed through a candidate rule set, and the decisions
//! it would have made compared with the decisions the live sets made (the decision log).
//!
//! **Faithful by construction.** The replay is the daemon's own code: the events go
//! through [`Ingest`] (node table, dedup, routing to shards by partition, the same
//! path recovery replays through, with evaluation on) into as many [`Reflex`] shards as
//! the daemon runs, shaped by the same configuration; the shards' decision records are
//! taken from their persist rings exactly as the journal thread takes them. So the live
//! generation replayed over its own journal reproduces its decisions: the same rules
//! fire on the same events with the same evidence (the workspace's `tests/rules_lifecycle.rs`
//! checks it).
//!
//! What the comparison leaves out, and why:
//! - decisions of the staleness sweep (`stale()` rules): they depend on wall-clock
//!   silence, not on the journal; they are counted (`sweepDecisionsNotCompared`);
//! - the shards' state before a restart's recovery point: a live daemon restarted from a
//!   checkpoint rebuilt its state from the journal since then, a backtest from the
//!   journal's start; decisions near a restart can differ for rules with long windows.
//!
//! Every event from the journal's start is replayed (state, windows and cooldowns warm up
//! as they did live) and evaluated with the candidate; decisions are compared when their
//! event's time is in `[from_ms, to_ms)`. A decision is matched by (rule, node, event
//! time, occurrence); matched pairs are the same or *different* (severity or evidence),
//! unmatched ones are *new* (only the candidate) or *gone* (only the live set).
//!
//! Runs in the caller's thread: `rimctl rules backtest` (its own process) or the API's
//! backtest thread (on the cold core). It allocates the shards' tables like a daemon does.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rim_journal::{Fs, Reader};
use rim_rules::RuleSet;
use serde::Serialize;
use thiserror::Error;

use crate::clock::Clock;
use crate::config::Config;
use crate::entry::{self, KIND_DECISION};
use crate::ingest::{Ingest, IngestSetup, ReplayOutcome};
use crate::reflex::decision::{self, Decision};
use crate::reflex::{self, Compiled, PersistOut, Reflex, ReflexSetup};
use crate::report::Reporter;
use crate::streams::{LOG_DECISION, STREAM_DECISIONS, STREAM_EVENTS};
use crate::tick::Slot;

/// Examples of each kind a report keeps by default.
pub const EXAMPLES_DEFAULT: usize = 5;
/// Bytes of each shard's decision ring in a backtest (drained after every batch).
const DECISION_RING_BYTES: usize = 4 << 20;
/// Slots of each ingest → shard ring in a backtest.
const SHARD_RING_SLOTS: usize = 1 << 16;
/// Events between progress updates and cancellation checks.
const PROGRESS_EVERY: u64 = 4096;

/// Why a backtest could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BacktestError {
    /// The journal could not be read.
    #[error("journal: {0}")]
    Journal(#[from] rim_journal::JournalError),
    /// A journal record that passed its CRC does not decode.
    #[error("journal stream {stream} position {pos}: {message}")]
    Record {
        /// Stream.
        stream: u32,
        /// Position.
        pos: u64,
        /// What is wrong.
        message: String,
    },
    /// The range is empty or reversed.
    #[error("the range [{from_ms}, {to_ms}) is empty")]
    Range {
        /// Start, epoch ms.
        from_ms: i64,
        /// End, epoch ms.
        to_ms: i64,
    },
    /// More events than the limit.
    #[error("the journal holds more than {0} events to replay; narrow the range or raise the limit")]
    TooManyEvents(u64),
    /// Cancelled (the daemon is stopping).
    #[error("cancelled")]
    Cancelled,
    /// A shard's ring could not be made.
    #[error("ring setup: {0}")]
    Ring(String),
}

/// What to replay and against what.
pub struct Spec {
    /// The journal (`persist.data_dir/journal`).
    pub journal_dir: PathBuf,
    /// Decisions about events at or after this event time (epoch ms) are compared.
    pub from_ms: i64,
    /// ... and before this one.
    pub to_ms: i64,
    /// The candidate set.
    pub candidate: RuleSet,
    /// Examples of each kind kept.
    pub examples_max: usize,
    /// Events replayed at most (0: no limit).
    pub events_max: u64,
    /// Events read so far, for whoever watches.
    pub progress: Arc<AtomicU64>,
    /// Set to stop early.
    pub cancel: Arc<AtomicBool>,
    /// The clock the replay's ingest and shards read (the system's by default; the
    /// daemon's own when it runs the backtest).
    pub clock: Clock,
}

impl Spec {
    /// A spec with defaults for the limits and watchers.
    pub fn new(journal_dir: PathBuf, from_ms: i64, to_ms: i64, candidate: RuleSet) -> Self {
        Self {
            journal_dir,
            from_ms,
            to_ms,
            candidate,
            examples_max: EXAMPLES_DEFAULT,
            events_max: 0,
            progress: Arc::new(AtomicU64::new(0)),
            cancel: Arc::new(AtomicBool::new(false)),
            clock: Clock::system(),
        }
    }
}

/// A decision as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The rule.
    pub rule_id: String,
    /// Its version.
    pub rule_version: u32,
    /// The set's generation.
    pub rule_generation: u64,
    /// Severity.
    pub severity: String,
    /// The node.
    pub rim_node_id: String,
    /// The event's time, epoch ms.
    pub event_timestamp: i64,
    /// What the rule read: label and value (null when unknown).
    pub evidence: Vec<(String, Option<f64>)>,
}

impl Outcome {
    fn of(d: Decision) -> Self {
        Self {
            rule_id: d.rule_id,
            rule_version: d.rule_version,
            rule_generation: d.rule_generation,
            severity: d.severity,
            rim_node_id: d.rim_node_id,
            event_timestamp: d.event_timestamp,
            evidence: d.evidence,
        }
    }

    /// Same severity and the same evidence, bit for bit.
    fn agrees(&self, other: &Outcome) -> bool {
        self.severity == other.severity
            && self.evidence.len() == other.evidence.len()
            && self
                .evidence
                .iter()
                .zip(&other.evidence)
                .all(|((la, va), (lb, vb))| la == lb && va.map(f64::to_bits) == vb.map(f64::to_bits))
    }
}

/// A decision both sets made, differently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// What the live set decided.
    pub live: Outcome,
    /// What the candidate would have decided.
    pub candidate: Outcome,
}

/// One row of the summary: a rule at a severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRow {
    /// The rule.
    pub rule_id: String,
    /// The severity (the candidate's for new and different decisions, the live set's for
    /// gone ones).
    pub severity: String,
    /// Decisions the live sets made.
    pub live: u64,
    /// Decisions the candidate would have made.
    pub candidate: u64,
    /// Made by both, alike.
    pub same: u64,
    /// Only the candidate's.
    pub new: u64,
    /// Only the live set's.
    pub gone: u64,
    /// Made by both, with another severity or evidence.
    pub different: u64,
}

/// The first few of each kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Examples {
    /// Only the candidate's.
    pub new: Vec<Outcome>,
    /// Only the live set's.
    pub gone: Vec<Outcome>,
    /// Made by both, differently.
    pub different: Vec<Difference>,
}

/// What a backtest found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The compared range, epoch ms (event time).
    pub from_ms: i64,
    /// See `from_ms`.
    pub to_ms: i64,
    /// The candidate's generation (1 for a file compiled on its own).
    pub candidate_generation: u64,
    /// Rules in the candidate.
    pub candidate_rules: usize,
    /// Journal events replayed (from the journal's start).
    pub events_replayed: u64,
    /// Of those, events whose time is in the range.
    pub events_in_range: u64,
    /// Generations of the live decisions in the range.
    pub live_generations: Vec<u64>,
    /// Live decisions compared.
    pub live_decisions: u64,
    /// Candidate decisions compared.
    pub candidate_decisions: u64,
    /// Made by both, alike.
    pub same: u64,
    /// Only the candidate's.
    pub new: u64,
    /// Only the live set's.
    pub gone: u64,
    /// Made by both, differently.
    pub different: u64,
    /// Live staleness-sweep decisions in the range (not compared: wall-clock driven).
    pub sweep_decisions_not_compared: u64,
    /// Per rule and severity.
    pub rules: Vec<RuleRow>,
    /// The first few of each kind.
    pub examples: Examples,
    /// Time spent replaying and comparing, ms.
    pub elapsed_ms: u64,
    /// Events replayed per second.
    pub events_per_s: f64,
}

impl Report {
    /// Whether the candidate decides exactly as the live sets did.
    pub fn identical(&self) -> bool {
        self.new == 0 && self.gone == 0 && self.different == 0
    }

    /// The summary as a text table, then the examples.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "backtest [{}, {}): {} events replayed ({} in range) in {} ms ({:.0} events/s)",
            self.from_ms, self.to_ms, self.events_replayed, self.events_in_range, self.elapsed_ms, self.events_per_s
        );
        let _ = writeln!(
            s,
            "live decisions {} (generations {:?}), candidate {} (generation {}, {} rules): same {}, new {}, gone {}, different {}; sweep decisions not compared {}",
            self.live_decisions,
            self.live_generations,
            self.candidate_decisions,
            self.candidate_generation,
            self.candidate_rules,
            self.same,
            self.new,
            self.gone,
            self.different,
            self.sweep_decisions_not_compared
        );
        let _ = writeln!(
            s,
            "\n{:<28} {:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "rule", "severity", "live", "candidate", "same", "new", "gone", "different"
        );
        for r in &self.rules {
            let _ = writeln!(
                s,
                "{:<28} {:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                r.rule_id, r.severity, r.live, r.candidate, r.same, r.new, r.gone, r.different
            );
        }
        let line = |o: &Outcome| {
            let ev: Vec<String> = o
                .evidence
                .iter()
                .map(|(l, v)| format!("{l}={}", v.map_or("?".to_owned(), |v| v.to_string())))
                .collect();
            format!(
                "{} {} @{} [{}] {}",
                o.rule_id,
                o.rim_node_id,
                o.event_timestamp,
                o.severity,
                ev.join(" ")
            )
        };
        for (what, list) in [("new", &self.examples.new), ("gone", &self.examples.gone)] {
            if !list.is_empty() {
                let _ = writeln!(s, "\nfirst {what}:");
                for o in list {
                    let _ = writeln!(s, "  {}", line(o));
                }
            }
        }
        if !self.examples.different.is_empty() {
            let _ = writeln!(s, "\nfirst different:");
            for d in &self.examples.different {
                let _ = writeln!(s, "  live      {}", line(&d.live));
                let _ = writeln!(s, "  candidate {}", line(&d.candidate));
            }
        }
        s
    }
}

/// Runs the backtest of `spec` with the daemon's `config` (shards, state shape, limits).
pub fn run(config: &Config, spec: &Spec) -> Result<Report, BacktestError> {
    if spec.to_ms <= spec.from_ms {
        return Err(BacktestError::Range {
            from_ms: spec.from_ms,
            to_ms: spec.to_ms,
        });
    }
    let started = Instant::now();
    let mut report = Report {
        from_ms: spec.from_ms,
        to_ms: spec.to_ms,
        candidate_generation: spec.candidate.generation(),
        candidate_rules: spec.candidate.len(),
        ..Report::default()
    };
    let candidate = replay(config, spec, &mut report)?;
    let live = live_decisions(spec, &mut report)?;
    compare(live, candidate, spec.examples_max, &mut report);
    let secs = started.elapsed().as_secs_f64();
    report.elapsed_ms = (secs * 1000.0) as u64;
    report.events_per_s = if secs > 0.0 {
        report.events_replayed as f64 / secs
    } else {
        0.0
    };
    Ok(report)
}

/// A decision's matching key: event time, rule, node.
type Key = (i64, String, String);
/// Decisions keyed for matching, each key's in decision order.
type Keyed = HashMap<Key, Vec<Outcome>>;

fn in_range(spec: &Spec, ts: i64) -> bool {
    ts >= spec.from_ms && ts < spec.to_ms
}

/// The decision log's live decisions about events in the range (sweeps counted apart).
fn live_decisions(spec: &Spec, report: &mut Report) -> Result<Keyed, BacktestError> {
    let mut out = Keyed::new();
    let mut generations = std::collections::BTreeSet::new();
    let mut reader = Reader::open_sequential(&spec.journal_dir, STREAM_DECISIONS, 0, Fs::new())?;
    while let Some((pos, bytes)) = reader.next()? {
        let Some((&LOG_DECISION, record)) = bytes.split_first() else {
            continue;
        };
        let d = decision::decode(record).map_err(|e| BacktestError::Record {
            stream: STREAM_DECISIONS,
            pos,
            message: e.to_string(),
        })?;
        if !in_range(spec, d.event_timestamp) {
            continue;
        }
        if d.sweep {
            report.sweep_decisions_not_compared += 1;
            continue;
        }
        generations.insert(d.rule_generation);
        report.live_decisions += 1;
        let o = Outcome::of(d);
        out.entry((o.event_timestamp, o.rule_id.clone(), o.rim_node_id.clone()))
            .or_default()
            .push(o);
    }
    report.live_generations = generations.into_iter().collect();
    Ok(out)
}

/// The daemon's ingest and reflex shards, offline.
struct Engine {
    ingest: Ingest,
    shards: Vec<Reflex>,
    decisions: Vec<rtrb::Consumer<u8>>,
    scratch: Vec<u8>,
    // Kept so that the shards' and ingest's rings stay connected.
    _keep: Keep,
}

/// Ring ends nothing reads in a backtest, held open for the engine's life.
#[derive(Default)]
struct Keep {
    rules_tx: Vec<rtrb::Producer<Arc<Compiled>>>,
    rules_back: Vec<rtrb::Consumer<Arc<Compiled>>>,
    control: Option<rtrb::Producer<crate::ingest::Control>>,
    retired: Option<rtrb::Consumer<crate::ingest::Retired>>,
    reports: Vec<rim_stats::ColdEnd<crate::report::Report>>,
}

impl Engine {
    fn new(config: &Config, candidate: Arc<Compiled>, clock: &Clock) -> Result<Self, BacktestError> {
        let shards = config.topology.reflex_shards.max(1);
        let mut keep = Keep::default();
        let mut outs = Vec::with_capacity(shards);
        let mut reflexes = Vec::with_capacity(shards);
        let mut decisions = Vec::with_capacity(shards);
        for k in 0..shards {
            let (tx, input) = rtrb::RingBuffer::<Slot>::new(SHARD_RING_SLOTS);
            outs.push(tx);
            let (rules_tx, rules_in) = rtrb::RingBuffer::new(1);
            let (rules_out, rules_back) = rtrb::RingBuffer::new(1);
            let (reporter, cold) = Reporter::new(reflex::C_COUNT, config.reflex.rules_max);
            let (ring, rx) = rtrb::RingBuffer::<u8>::new(DECISION_RING_BYTES);
            decisions.push(rx);
            // Subscribers of a backtest: none. A small heap ring the records pass through.
            let out = rim_ring::broadcast::heap(16, config.decisions.slot_bytes)
                .map_err(|e| BacktestError::Ring(e.to_string()))?;
            reflexes.push(Reflex::new(ReflexSetup {
                shard: k as u32,
                input,
                shape: crate::reflex::state::Shape::of(config),
                rules_max: config.reflex.rules_max,
                cooldown_slots: config.reflex.cooldown_slots,
                out,
                rules: candidate.clone(),
                rules_in,
                rules_out,
                reporter,
                sweep_ms: config.reflex.stale_sweep_ms,
                epoch: 0,
                resume: None,
                persist: Some(PersistOut {
                    ring,
                    resolutions: Vec::new(),
                    // Nothing to wait for: every record is "durable" at once.
                    durable_seq: Arc::new(AtomicU64::new(u64::MAX)),
                }),
                queries: None,
                // Staleness-sweep decisions are not compared (module docs).
                clock: clock.clone(),
                partitions: config.topology.partitions,
                shards,
            }));
            keep.rules_tx.push(rules_tx);
            keep.rules_back.push(rules_back);
            keep.reports.push(cold);
        }
        let (control, control_rx) = rtrb::RingBuffer::new(1);
        let (retired_tx, retired) = rtrb::RingBuffer::new(1);
        let (reporter, cold) = Reporter::new(crate::ingest::C_COUNT, 0);
        keep.control = Some(control);
        keep.retired = Some(retired);
        keep.reports.push(cold);
        let ingest = Ingest::new(IngestSetup {
            nodes_max: config.reflex.nodes_max,
            partitions: config.topology.partitions,
            outs,
            budget: config.ingest.poll_budget,
            dedup_window: config.ingest.dedup_window,
            producers_max: 0,
            // Stage latencies are sampled on live events only; replayed ones never are.
            sample_every: 1 << 30,
            control: control_rx,
            retired: retired_tx,
            reporter,
            journal: None,
            bounds: config.time_bounds(),
            clock: clock.clone(),
        });
        Ok(Self {
            ingest,
            shards: reflexes,
            decisions,
            scratch: Vec::with_capacity(entry::BODY_BYTES_MAX),
            _keep: keep,
        })
    }

    /// Runs every shard dry, handing each decision record to `sink`.
    fn drain(&mut self, sink: &mut impl FnMut(&[u8])) {
        for (shard, rx) in self.shards.iter_mut().zip(&mut self.decisions) {
            loop {
                shard.poll(usize::MAX);
                while let Ok(Some(())) = entry::take(rx, &mut self.scratch, |head, body| {
                    if head.kind == KIND_DECISION {
                        sink(body);
                    }
                }) {}
                if !shard.has_data() {
                    break;
                }
            }
        }
    }
}

/// Replays the journal through the candidate; its decisions about events in the range.
fn replay(config: &Config, spec: &Spec, report: &mut Report) -> Result<Keyed, BacktestError> {
    let mut engine = Engine::new(config, Compiled::new(spec.candidate.clone()), &spec.clock)?;
    let mut out = Keyed::new();
    let mut bad: Option<String> = None;
    let mut sink = |record: &[u8]| match decision::decode(record) {
        Ok(d) if in_range(spec, d.event_timestamp) && !d.sweep => {
            let o = Outcome::of(d);
            out.entry((o.event_timestamp, o.rule_id.clone(), o.rim_node_id.clone()))
                .or_default()
                .push(o);
        }
        Ok(_) => {}
        Err(e) => bad = Some(e.to_string()),
    };
    let mut reader = Reader::open_sequential(&spec.journal_dir, STREAM_EVENTS, 0, Fs::new())?;
    let mut read = 0u64;
    while let Some((pos, bytes)) = reader.next()? {
        let rec = rim_journal::event::decode(bytes).map_err(|e| BacktestError::Record {
            stream: STREAM_EVENTS,
            pos,
            message: e.to_string(),
        })?;
        read += 1;
        if spec.events_max != 0 && read > spec.events_max {
            return Err(BacktestError::TooManyEvents(spec.events_max));
        }
        if in_range(spec, rec.timestamp) {
            report.events_in_range += 1;
        }
        while engine.ingest.replay_evaluated(&rec) == ReplayOutcome::Full {
            engine.drain(&mut sink);
        }
        if read.is_multiple_of(PROGRESS_EVERY) {
            spec.progress.store(read, Ordering::Relaxed);
            if spec.cancel.load(Ordering::Relaxed) {
                return Err(BacktestError::Cancelled);
            }
        }
    }
    engine.drain(&mut sink);
    spec.progress.store(read, Ordering::Relaxed);
    report.events_replayed = read;
    if let Some(message) = bad {
        return Err(BacktestError::Record {
            stream: STREAM_DECISIONS,
            pos: 0,
            message: format!("a backtest decision does not decode: {message}"),
        });
    }
    report.candidate_decisions = out.values().map(|v| v.len() as u64).sum();
    Ok(out)
}

/// Matches the two sides key by key, in event-time order (so the examples are the
/// first ones), in decision order within a key.
fn compare(mut live: Keyed, mut candidate: Keyed, examples_max: usize, report: &mut Report) {
    let mut keys: Vec<Key> = live.keys().chain(candidate.keys()).cloned().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rows: BTreeMap<(String, String), RuleRow> = BTreeMap::new();
    let mut bump = |o: &Outcome, f: &dyn Fn(&mut RuleRow)| {
        let r = rows
            .entry((o.rule_id.clone(), o.severity.clone()))
            .or_insert_with(|| RuleRow {
                rule_id: o.rule_id.clone(),
                severity: o.severity.clone(),
                ..RuleRow::default()
            });
        f(r);
    };
    let ex = &mut report.examples;
    let (mut same, mut new, mut gone, mut different) = (0u64, 0u64, 0u64, 0u64);
    for key in keys {
        let cands = candidate.remove(&key).unwrap_or_default();
        let lives = live.remove(&key).unwrap_or_default();
        let paired = cands.len().min(lives.len());
        for (c, l) in cands.iter().zip(&lives) {
            bump(l, &|r| r.live += 1);
            bump(c, &|r| r.candidate += 1);
            if c.agrees(l) {
                same += 1;
                bump(c, &|r| r.same += 1);
            } else {
                different += 1;
                bump(c, &|r| r.different += 1);
                if ex.different.len() < examples_max {
                    ex.different.push(Difference {
                        live: l.clone(),
                        candidate: c.clone(),
                    });
                }
            }
        }
        for c in &cands[paired..] {
            new += 1;
            bump(c, &|r| {
                r.candidate += 1;
                r.new += 1;
            });
            if ex.new.len() < examples_max {
                ex.new.push(c.clone());
            }
        }
        for l in &lives[paired..] {
            gone += 1;
            bump(l, &|r| {
                r.live += 1;
                r.gone += 1;
            });
            if ex.gone.len() < examples_max {
                ex.gone.push(l.clone());
            }
        }
    }
    report.same = same;
    report.new = new;
    report.gone = gone;
    report.different = different;
    report.rules = rows.into_values().collect();
}
