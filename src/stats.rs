//! The daemon's statistics on the cold shard: folds the hot duties' reports into
//! cumulative figures and rewrites the stats segment (`{run_dir}/stats`) every
//! `stats.interval_ms`, which `rimctl stats` reads while the daemon runs and the HTTP
//! `/metrics` will render. Allocation is fine here: this is the cold core.

use std::collections::BTreeMap;
use std::sync::Arc;

use rim_ring::Segment;
use rim_stats::{RingSnapshot, ShardSnapshot, Snapshot, StageHistograms, StatsError, StatsWriter};

use crate::agent::ColdAgents;
use crate::clock::Clock;
use crate::config::Config;
use crate::ingest::{self, attach::Registry, attach::RingEntry};
use crate::reflex::{self, Compiled};
use crate::report::{Report, ShardFigures, STAGES};

/// Cumulative figures and the segment they are written to.
pub struct Aggregator {
    writer: StatsWriter,
    pid: u32,
    started_ms: u64,
    stages: StageHistograms,
    ingest: Vec<u64>,
    hot: ShardFigures,
    reflex: Vec<Vec<u64>>,
    reflex_shards: Vec<ShardFigures>,
    live_rules: Vec<Option<(u64, Vec<u64>)>>,
    rule_totals: BTreeMap<String, u64>,
    sets: BTreeMap<u64, Arc<Compiled>>,
    reloads: u64,
    reload_failures: u64,
    registry: Arc<Registry>,
    decisions: Vec<Arc<Segment>>,
    cores: (usize, Vec<usize>),
    reflex_ring_bytes: u64,
    persist: Option<Arc<crate::persist::PersistStats>>,
    clock: Clock,
    agents: ColdAgents,
    cold_core: Option<usize>,
}

impl Aggregator {
    /// Creates the stats segment.
    pub fn new(
        config: &Config,
        registry: Arc<Registry>,
        decisions: Vec<Arc<Segment>>,
        clock: Clock,
        agents: ColdAgents,
    ) -> Result<Self, StatsError> {
        let writer = StatsWriter::create(&config.stats_path(), config.stats.segment_bytes, 0o600)?;
        let shards = config.topology.reflex_shards;
        Ok(Self {
            writer,
            pid: std::process::id(),
            started_ms: clock.unix_ms(),
            stages: StageHistograms::new(STAGES),
            ingest: vec![0; ingest::C_COUNT],
            hot: ShardFigures::default(),
            reflex: vec![vec![0; reflex::C_COUNT]; shards],
            reflex_shards: vec![ShardFigures::default(); shards],
            live_rules: vec![None; shards],
            rule_totals: BTreeMap::new(),
            sets: BTreeMap::new(),
            reloads: 0,
            reload_failures: 0,
            registry,
            decisions,
            cores: (config.topology.hot_core, config.topology.reflex_cores.clone()),
            reflex_ring_bytes: config.ingest.reflex_ring_slots as u64 * crate::tick::SLOT_BYTES,
            persist: None,
            clock,
            agents,
            cold_core: config.topology.pin.then_some(config.topology.cold_core),
        })
    }

    /// Reports the persist path's counters from now on.
    pub fn attach_persist(&mut self, stats: Arc<crate::persist::PersistStats>) {
        self.persist = Some(stats);
    }

    /// Folds an ingest report (its histograms are then reset for reuse).
    pub fn ingest_report(&mut self, r: &mut Report) {
        self.stages.add(&r.hists);
        r.hists.reset();
        self.ingest.clone_from(&r.counters);
        self.hot = r.shard;
    }

    /// Folds reflex shard `k`'s report.
    pub fn reflex_report(&mut self, k: usize, r: &mut Report) {
        self.stages.add(&r.hists);
        r.hists.reset();
        if let Some(c) = self.reflex.get_mut(k) {
            c.clone_from(&r.counters);
        }
        if k > 0 {
            if let Some(s) = self.reflex_shards.get_mut(k) {
                *s = r.shard;
            }
        }
        let Some(live) = self.live_rules.get_mut(k) else { return };
        if let Some((generation, counts)) = live.take() {
            if generation != r.rule_generation {
                // The shard moved to a new set: its last counts under the old one are final.
                if let Some(set) = self.sets.get(&generation) {
                    for (i, rule) in set.set.rules().enumerate() {
                        *self.rule_totals.entry(rule.id().to_owned()).or_default() +=
                            counts.get(i).copied().unwrap_or(0);
                    }
                }
            }
        }
        *live = Some((r.rule_generation, r.rule_counts.clone()));
    }

    /// A new rule set is in force.
    pub fn rules_loaded(&mut self, set: &Arc<Compiled>) {
        self.reloads += 1;
        self.sets.insert(set.set.generation(), set.clone());
    }

    /// A reload was refused (the errors are in the log).
    pub fn rules_reload_failed(&mut self) {
        self.reload_failures += 1;
    }

    /// Builds the snapshot and writes it to the segment.
    pub fn publish(&mut self, current: &Arc<Compiled>, running: bool) -> Result<(), StatsError> {
        self.sets
            .entry(current.set.generation())
            .or_insert_with(|| current.clone());
        let in_use: Vec<u64> = self.live_rules.iter().flatten().map(|(g, _)| *g).collect();
        let keep_from = in_use.iter().copied().min().unwrap_or(current.set.generation());
        self.sets
            .retain(|&g, _| g >= keep_from || g == current.set.generation());
        let snap = self.snapshot(current, running);
        self.writer.publish(&snap)
    }

    /// The current snapshot.
    pub fn snapshot(&self, current: &Arc<Compiled>, running: bool) -> Snapshot {
        let entries = self.registry.entries();
        let mut counters = self.counters();
        if let Some(p) = &self.persist {
            for (name, v) in p.fields() {
                counters.insert(format!("persist.{name}"), v);
            }
        }
        let gauges = self.gauges(current, &entries);
        let rings = self.rings(&entries);
        let shards = self.shards();
        let mut stages = BTreeMap::new();
        for (i, name) in STAGES.iter().enumerate() {
            stages.insert((*name).to_owned(), self.stages.quantiles(i));
        }
        Snapshot {
            pid: self.pid,
            version: env!("CARGO_PKG_VERSION").into(),
            running,
            started_unix_ms: self.started_ms,
            taken_unix_ms: self.clock.unix_ms(),
            counters,
            gauges,
            stages,
            rings,
            shards,
        }
    }

    /// Counters of ingest, attach, reflex, rules and decisions per rule.
    fn counters(&self) -> BTreeMap<String, u64> {
        let mut counters = BTreeMap::new();
        for (i, name) in ingest::COUNTER_NAMES.iter().enumerate() {
            counters.insert(format!("ingest.{name}"), self.ingest[i]);
        }
        let mut rejected = 0;
        for (i, reason) in ingest::REJECT_REASONS.iter().enumerate() {
            let v = self.ingest[ingest::C_REJECTED_BASE + i];
            rejected += v;
            counters.insert(format!("ingest.rejected.{reason}"), v);
        }
        counters.insert("ingest.rejected".into(), rejected);
        let time_ahead = self.ingest[ingest::C_TIME_AHEAD];
        let time_too_old = self.ingest[ingest::C_TIME_TOO_OLD];
        counters.insert("ingest.refused.event_time_ahead".into(), time_ahead);
        counters.insert("ingest.refused.event_time_too_old".into(), time_too_old);
        counters.insert(
            "ingest.backpressure_journal_turns".into(),
            self.ingest[ingest::C_BACKPRESSURE_JOURNAL],
        );
        let events_in = self.ingest[ingest::C_ACCEPTED]
            + self.ingest[ingest::C_DUPLICATES]
            + self.ingest[ingest::C_NODES_REFUSED]
            + time_ahead
            + time_too_old
            + rejected;
        for (name, v) in self.registry.counters.fields() {
            counters.insert(format!("attach.{name}"), v);
        }
        counters.insert("ingest.events_in".into(), events_in);
        for (i, name) in reflex::COUNTER_NAMES.iter().enumerate() {
            if i != reflex::C_INPUT_DEPTH {
                counters.insert(format!("reflex.{name}"), self.reflex.iter().map(|c| c[i]).sum());
            }
        }
        let mut per_rule = self.rule_totals.clone();
        for (generation, counts) in self.live_rules.iter().flatten() {
            if let Some(set) = self.sets.get(generation) {
                for (i, rule) in set.set.rules().enumerate() {
                    *per_rule.entry(rule.id().to_owned()).or_default() += counts.get(i).copied().unwrap_or(0);
                }
            }
        }
        for (id, n) in per_rule {
            counters.insert(format!("decisions.rule.{id}"), n);
        }
        counters.insert("rules.reloads".into(), self.reloads);
        counters.insert("rules.reload_failures".into(), self.reload_failures);

        counters
    }

    /// Levels: nodes, producers, rules, memory.
    fn gauges(&self, current: &Arc<Compiled>, entries: &[RingEntry]) -> BTreeMap<String, i64> {
        let mut gauges = BTreeMap::new();
        gauges.insert("nodes".into(), self.ingest[ingest::C_NODES] as i64);
        gauges.insert("producers".into(), entries.iter().filter(|e| !e.local).count() as i64);
        gauges.insert("rules".into(), current.set.len() as i64);
        // One per reflex shard: what a subscriber such as `rimctl tail` attaches to.
        gauges.insert("decision_rings".into(), self.decisions.len() as i64);
        gauges.insert("rules.generation".into(), current.set.generation() as i64);
        // One read of /proc/self/status for both (the kernel formats the whole file per
        // read: about a tenth of an idle daemon's stats publication).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        gauges.insert("rss_bytes".into(), status_field_kb(&status, "VmRSS:") as i64);
        gauges.insert("rss_peak_bytes".into(), status_field_kb(&status, "VmHWM:") as i64);
        gauges.insert("tables_bytes".into(), crate::memory::table_bytes() as i64);
        gauges
    }

    /// Every ring: producers and intakes, decision rings, reflex inputs.
    fn rings(&self, entries: &[RingEntry]) -> Vec<RingSnapshot> {
        let mut rings: Vec<RingSnapshot> = entries.iter().map(producer_ring).collect();
        for (k, seg) in self.decisions.iter().enumerate() {
            let published = self.reflex.get(k).map_or(0, |c| c[reflex::C_DECISIONS]);
            rings.push(RingSnapshot {
                name: format!("decisions:{k}"),
                kind: "decisions".into(),
                pid: self.pid,
                state: "broadcasting".into(),
                depth: 0,
                capacity: seg.len() as u64,
                delivered: published,
                rejected: 0,
                refused_full: 0,
                ..RingSnapshot::default()
            });
        }

        for (k, c) in self.reflex.iter().enumerate() {
            rings.push(RingSnapshot {
                name: format!("reflex:{k}"),
                kind: "reflex".into(),
                pid: self.pid,
                state: "in-process".into(),
                depth: c[reflex::C_INPUT_DEPTH] * crate::tick::SLOT_BYTES,
                capacity: self.reflex_ring_bytes,
                delivered: c[reflex::C_TICKS],
                rejected: 0,
                // Ingest's turns stopped for room, less those the journal's ring stopped.
                refused_full: self.ingest[ingest::C_BACKPRESSURE]
                    .saturating_sub(self.ingest[ingest::C_BACKPRESSURE_JOURNAL]),
                ..RingSnapshot::default()
            });
        }
        rings
    }

    /// The hot shard and the other reflex shards, then the cold-side agents, with their
    /// loop figures.
    fn shards(&self) -> Vec<ShardSnapshot> {
        let mut shards = vec![shard("rimd-hot", Some(self.cores.0), &self.hot)];
        for (k, s) in self.reflex_shards.iter().enumerate().skip(1) {
            shards.push(shard(&format!("rimd-reflex-{k}"), self.cores.1.get(k - 1).copied(), s));
        }
        self.agents.each(|a| {
            let mut s = shard(&a.name, self.cold_core, &a.figures.figures());
            s.idle = a.idle.to_owned();
            shards.push(s);
        });
        shards
    }
}

/// A producer or intake ring with the daemon's own figures. Only `refused_full` (a
/// refusal the producer meets before anything reaches the daemon) and the write position
/// behind `depth` come from the producer's header; the depth is clamped to the capacity,
/// and `refused_full` never falls and rises no faster than publishes can be tried
/// ([`crate::ingest::figures::RingFigures::full_claim`]).
fn producer_ring(e: &RingEntry) -> RingSnapshot {
    let own = e.figures.load();
    let header = rim_ring::spsc::stats_of(&e.segment);
    let written = rim_ring::spsc::writer_position(&e.segment);
    let v = own.verdicts;
    let refused = [
        ("duplicate", v.duplicates),
        ("node_table_full", v.node_table_full),
        ("event_time_ahead", v.time_ahead),
        ("event_time_too_old", v.time_too_old),
        ("node_not_allowed", v.node_not_allowed),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    RingSnapshot {
        name: e.name.clone(),
        kind: if e.local { "intake" } else { "producer" }.into(),
        pid: e.pid,
        state: "attached".into(),
        depth: written.saturating_sub(own.consumed).min(e.capacity as u64),
        capacity: e.capacity as u64,
        delivered: own.delivered,
        rejected: v.rejected(),
        refused_full: e
            .figures
            .full_claim(header.refused_full, rim_ring::clock::monotonic_ns()),
        invalid: v.invalid,
        refused,
    }
}

fn shard(name: &str, core: Option<usize>, f: &ShardFigures) -> ShardSnapshot {
    ShardSnapshot {
        name: name.into(),
        core,
        idle: String::new(),
        loops: f.loops,
        work: f.work,
        stalls: f.stalls,
        max_stall_ns: f.max_stall_ns,
    }
}

/// The `kB` line `key` of a `/proc/self/status` text, in bytes (0 if missing or garbled).
fn status_field_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::status_field_kb;

    #[test]
    fn status_fields_are_read_in_bytes_and_garbage_reads_zero() {
        let status = "Name:\trimd\nVmHWM:\t  2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(status_field_kb(status, "VmRSS:"), 1024 * 1024);
        assert_eq!(status_field_kb(status, "VmHWM:"), 2048 * 1024);
        assert_eq!(status_field_kb(status, "VmSwap:"), 0);
        assert_eq!(status_field_kb("VmRSS:\tlots kB\n", "VmRSS:"), 0);
        assert_eq!(status_field_kb("VmRSS:\t99999999999999999999 kB\n", "VmRSS:"), 0);
        assert_eq!(
            status_field_kb(&format!("VmRSS:\t{} kB\n", u64::MAX), "VmRSS:"),
            u64::MAX
        );
    }
}
