//! What a hot duty reports to the cold shard: its counters, its stage histograms since the
//! last report, and (reflex) decisions per rule. Reports travel in boxes recycled through
//! [`rim_stats::handoff`], so reporting never allocates on the hot shard.

use rim_stats::StageHistograms;

/// Latency stages, in the order of their histograms.
pub const STAGES: &[&str] = &["ring_hop", "ingest_to_reflex", "rule_eval", "publish_to_decision"];
/// Stage: producer publish → ingest read (sampled).
pub const STAGE_RING_HOP: usize = 0;
/// Stage: ingest read → reflex shard dequeue (sampled).
pub const STAGE_INGEST_TO_REFLEX: usize = 1;
/// Stage: evaluating one event's rules (sampled).
pub const STAGE_RULE_EVAL: usize = 2;
/// Stage: producer publish → decision on the broadcast ring (every decision).
pub const STAGE_PUBLISH_TO_DECISION: usize = 3;

/// One duty's report.
pub struct Report {
    /// Latencies recorded since the previous report.
    pub hists: StageHistograms,
    /// Cumulative counters (meaning fixed by the duty: see `ingest::C_*`, `reflex::C_*`).
    pub counters: Vec<u64>,
    /// Rule-set generation the per-rule counts belong to (reflex only).
    pub rule_generation: u64,
    /// Decisions per rule index in that generation, cumulative (reflex only).
    pub rule_counts: Vec<u64>,
    /// Shard loop figures.
    pub shard: ShardFigures,
}

/// A shard's loop figures, cumulative.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardFigures {
    /// Turns of the work loop.
    pub loops: u64,
    /// Work items done.
    pub work: u64,
    /// Turns longer than the stall threshold.
    pub stalls: u64,
    /// Longest turn, ns.
    pub max_stall_ns: u64,
}

impl Report {
    /// An empty report for `counters` counters and `rules` rules.
    pub fn new(counters: usize, rules: usize) -> Box<Self> {
        Box::new(Self {
            hists: StageHistograms::new(STAGES),
            counters: vec![0; counters],
            rule_generation: 0,
            rule_counts: vec![0; rules],
            shard: ShardFigures::default(),
        })
    }
}

/// A hot duty's reporting end: the box being filled and the way to the cold shard.
pub struct Reporter {
    /// The report being filled.
    pub current: Box<Report>,
    end: rim_stats::HotEnd<Report>,
}

impl Reporter {
    /// A reporter and the cold end that receives its reports (three boxes in flight).
    pub fn new(counters: usize, rules: usize) -> (Self, rim_stats::ColdEnd<Report>) {
        let spares = (0..3).map(|_| Report::new(counters, rules)).collect();
        let (end, cold) = rim_stats::handoff(spares);
        (
            Self {
                current: Report::new(counters, rules),
                end,
            },
            cold,
        )
    }

    /// Sends the current report, carrying the cumulative counters over to the next box.
    /// False when no empty box has come back yet (try again later; nothing is lost, the
    /// histograms keep filling).
    pub fn send(&mut self, counters: &[u64], rule_generation: u64, rule_counts: &[u64], shard: ShardFigures) -> bool {
        let r = &mut self.current;
        let n = r.counters.len().min(counters.len());
        r.counters[..n].copy_from_slice(&counters[..n]);
        r.rule_generation = rule_generation;
        let n = r.rule_counts.len().min(rule_counts.len());
        r.rule_counts[..n].copy_from_slice(&rule_counts[..n]);
        r.shard = shard;
        self.end.swap(&mut self.current)
    }
}
