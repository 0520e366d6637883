//! The data model of one statistics snapshot: what the daemon publishes into the stats
//! segment, what `rimctl stats` prints and what `/metrics` renders. Plain data with serde;
//! latencies are in nanoseconds, times in Unix milliseconds. Every field has a default,
//! so a reader of a newer daemon's snapshot that lacks a field still parses it, and
//! unknown fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One snapshot of the daemon's statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// The daemon's pid.
    pub pid: u32,
    /// The daemon's version string.
    pub version: String,
    /// False in the final snapshot a daemon publishes on its way out.
    pub running: bool,
    /// When the daemon started (Unix ms).
    pub started_unix_ms: u64,
    /// When this snapshot was taken (Unix ms).
    pub taken_unix_ms: u64,
    /// Monotonic counters, dotted names (`"events_in"`, `"rejected.bad_symbol"`,
    /// `"decisions.rule.temp-high"`).
    pub counters: BTreeMap<String, u64>,
    /// Point-in-time values (`"nodes"`, `"producers"`, `"rss_bytes"`).
    pub gauges: BTreeMap<String, i64>,
    /// Latency summaries per stage (`"ring_hop"`, `"ingest_to_reflex"`, `"rule_eval"`,
    /// `"publish_to_decision"`).
    pub stages: BTreeMap<String, Quantiles>,
    /// Every shared-memory and in-process ring.
    pub rings: Vec<RingSnapshot>,
    /// Every work loop: the reflex shards' (`rimd-hot`, `rimd-reflex-K`), then the cold-side
    /// agents' (`rimd-journal`, `rimd-store`, …).
    pub shards: Vec<ShardSnapshot>,
}

/// A latency summary, all values in nanoseconds; all zero when nothing was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quantiles {
    /// Values recorded.
    pub count: u64,
    /// Exact smallest value.
    pub min: u64,
    /// Mean value.
    pub mean: f64,
    /// Median (to HDR precision, 3 significant digits).
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Exact largest value (values above 60 s count as 60 s).
    pub max: u64,
}

/// One ring as the daemon sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RingSnapshot {
    /// Its name (producer name, or the in-process ring's role).
    pub name: String,
    /// `"spsc"`, `"broadcast"`, `"rtrb"`, ...
    pub kind: String,
    /// The peer process's pid (0 for in-process rings).
    pub pid: u32,
    /// `"live"`, `"draining"`, `"dead"`, `"quarantined"`, ...
    pub state: String,
    /// Records or bytes waiting.
    pub depth: u64,
    /// Capacity, in the unit of `depth`.
    pub capacity: u64,
    /// Records delivered.
    pub delivered: u64,
    /// Records the daemon refused, any reason but duplication (invalid records and
    /// refused events; the producer reads the same figure in its header).
    pub rejected: u64,
    /// Publishes refused because the ring was full, as the producer reports it (the
    /// daemon never sees these: its own header word, not verified).
    pub refused_full: u64,
    /// Records the daemon found invalid.
    #[serde(default)]
    pub invalid: u64,
    /// Valid events the daemon did not take, by reason (`duplicate`, `node_table_full`,
    /// `event_time_ahead`, `event_time_too_old`, `node_not_allowed`); reasons with none
    /// are left out.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
}

/// One shard's work loop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardSnapshot {
    /// Its name (`"hot-0"`, `"cold"`, ...).
    pub name: String,
    /// The core it is pinned to, if any.
    pub core: Option<usize>,
    /// Its idle strategy (`"spin"`, `"park"`).
    pub idle: String,
    /// Loop iterations.
    pub loops: u64,
    /// Iterations that found work.
    pub work: u64,
    /// Iterations slower than the stall threshold.
    pub stalls: u64,
    /// The slowest iteration, ns.
    pub max_stall_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_default_and_unknown_ones_are_ignored() {
        let s: Snapshot = serde_json::from_str(r#"{"pid":3,"future_field":[1,2]}"#).expect("parses");
        assert_eq!(s.pid, 3);
        assert!(s.counters.is_empty());
    }
}
