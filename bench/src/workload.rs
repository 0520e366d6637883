//! The workload of the `reflex` and `ingest` suites: 10,000 nodes in 99 groups and 100
//! rules, as DESIGN's reflex benchmark asks.
//!
//! Rule g (g < 99) watches group g's nodes (`rim:bench:gNN:*`) with one of four kinds of
//! condition in turn (a metric threshold, a change over 1 s, an EWMA z-score, a status and
//! stress conjunction), with thresholds the steady load never reaches, so they are
//! evaluated on every event of their group but do not fire. Rule 99, `probe`, watches every
//! node and fires on events that carry `probe > 0`. So each event evaluates two rules
//! (its group's and `probe`): the per-event work of a node that 2 of 100 rules match.

use std::fmt::Write as _;

use rim_ring::{Producer, PublishError, Sym, SymEvent, SymbolKind};

use crate::error::BenchError;

/// Nodes.
pub const NODES: usize = 10_000;

/// Nodes used by this run: [`NODES`], or `RIM_BENCH_NODES` (for experiments on how the
/// working set drives the latency; the published figures use the default).
pub fn nodes() -> usize {
    std::env::var("RIM_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(NODES)
        .clamp(1, NODES)
}
/// Groups (one rule each).
pub const GROUPS: usize = 99;

/// Node `i`'s id.
pub fn node_id(i: usize) -> String {
    format!("rim:bench:g{:02}:n{i}", i % GROUPS)
}

/// The 100-rule file.
pub fn rules() -> String {
    let mut s = String::new();
    for g in 0..GROUPS {
        let when = match g % 4 {
            0 => "metric.temp > 90",
            1 => "change(metric.temp, 1s) > 20",
            2 => "zscore(metric.load) > 50",
            _ => "status == \"DEGRADED\" and stress > 0.8",
        };
        let _ = write!(
            s,
            "[[rule]]\nid = \"group-{g:02}\"\nnodes = \"rim:bench:g{g:02}:*\"\nwhen = '{when}'\nseverity = \"medium\"\ncooldown = \"1s\"\n\n"
        );
    }
    s.push_str("[[rule]]\nid = \"probe\"\nnodes = \"rim:bench:*\"\nwhen = \"metric.probe > 0\"\nseverity = \"info\"\n");
    s
}

/// A producer with every node and metric interned.
pub struct Publisher {
    /// The ring.
    pub producer: Producer,
    nodes: Vec<Sym>,
    temp: Sym,
    load: Sym,
    probe: Sym,
    extra: Sym,
    ok: Sym,
    /// Publishes refused as full (retried).
    pub full_retries: u64,
    x: u64,
}

impl Publisher {
    /// Interns the workload's strings in `producer`'s ring.
    pub fn new(mut producer: Producer) -> Result<Self, BenchError> {
        let mut intern = |kind, text: &str| loop {
            match producer.intern(kind, text) {
                Ok(s) => return Ok(s),
                Err(PublishError::Full { .. }) => std::thread::yield_now(),
                Err(e) => return Err(BenchError::transport("rim-ring", "intern", e)),
            }
        };
        let nodes = (0..NODES)
            .map(|i| intern(SymbolKind::NodeId, &node_id(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let temp = intern(SymbolKind::MetricName, "temp")?;
        let load = intern(SymbolKind::MetricName, "load")?;
        let probe = intern(SymbolKind::MetricName, "probe")?;
        let extra = intern(SymbolKind::MetricName, "m3")?;
        let ok = intern(SymbolKind::Status, "OK")?;
        Ok(Self {
            producer,
            nodes,
            temp,
            load,
            probe,
            extra,
            ok,
            full_retries: 0,
            x: 0x9E37_79B9_7F4A_7C15,
        })
    }

    fn noise(&mut self) -> f64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    /// Publishes one event for node `node` (4 metrics: temp, load, probe, m3), retrying
    /// while the ring is full. `publish_ns` 0 lets the ring stamp it.
    pub fn publish(&mut self, node: usize, probe: bool, timestamp_ms: i64, publish_ns: u64) -> Result<(), BenchError> {
        self.publish_probe(node, if probe { 1.0 } else { 0.0 }, timestamp_ms, publish_ns)
    }

    /// [`Publisher::publish`] with `metric.probe` set to `probe`: the `probe` rule fires
    /// when it is above 0 and its decision carries the value as evidence, so a distinct
    /// value per event tells the event's decision apart (suite `kafka`).
    pub fn publish_probe(
        &mut self,
        node: usize,
        probe: f64,
        timestamp_ms: i64,
        publish_ns: u64,
    ) -> Result<(), BenchError> {
        self.publish_full(node, probe, timestamp_ms, publish_ns, None)
    }

    /// [`Publisher::publish_probe`] with an `event_id` (which the journal de-duplicates
    /// by, as it does the HTTP and Kafka events that carry one).
    pub fn publish_full(
        &mut self,
        node: usize,
        probe: f64,
        timestamp_ms: i64,
        publish_ns: u64,
        event_id: Option<&str>,
    ) -> Result<(), BenchError> {
        let metrics = [
            (self.temp, 50.0 + self.noise()),
            (self.load, 0.5 + self.noise() * 0.1),
            (self.probe, probe),
            (self.extra, self.noise()),
        ];
        let ev = SymEvent {
            node: self.nodes[node % NODES],
            event_id,
            timestamp: timestamp_ms,
            metrics: &metrics,
            price: Some(100.0),
            volume: Some(1.0),
            stress: Some(0.1),
            status: self.ok,
            source_topic: None,
            publish_ns,
        };
        let mut tries = 0u32;
        loop {
            match self.producer.try_publish_sym(&ev) {
                Ok(_) => return Ok(()),
                Err(PublishError::Full { .. }) => {
                    self.full_retries += 1;
                    tries += 1;
                    back_off(tries);
                }
                Err(e) => return Err(BenchError::transport("rim-ring", "publish", e)),
            }
        }
    }
}

/// Waits before publishing again into a full ring: a few spins, a few yields, then sleeps.
/// The daemon's journal and store threads share this core with the producer: a producer
/// that spins (or yields, which under EEVDF gives little away) on a full ring takes the
/// time they need to drain it; measured in `persist`/`journal-max`, the spinning producer
/// had a third of the cold core and the journal thread 43%. A sleep of 50 µs (about 70 µs
/// with the timer's slack) is a few dozen events of a ring that holds tens of milliseconds.
pub(crate) fn back_off(tries: u32) {
    const SPINS: u32 = 16;
    const YIELDS: u32 = 8;
    if tries <= SPINS {
        std::hint::spin_loop();
    } else if tries <= SPINS + YIELDS {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Events the daemon's reflex shards have applied, from its stats.
pub fn applied(s: &rim_stats::Snapshot) -> u64 {
    s.counters.get("reflex.events_applied").copied().unwrap_or(0)
}

/// What both suites start from: a daemon with the workload's rules, this thread pinned to
/// the client core, a producer with every string interned, and every node's state and rule
/// list built by `rounds` events each (none fires). Returns the events published.
/// `extra`: more daemon settings (after the suite's own; they win).
pub fn start_with(
    opts: &crate::suite::RunOpts,
    name: &str,
    ring_bytes: usize,
    rounds: usize,
    extra: &[&str],
) -> Result<(crate::daemon::DaemonProc, Publisher, u64), BenchError> {
    let mut sets = daemon_sets(opts.client_core, opts.peer_core);
    sets.extend(extra.iter().map(|s| (*s).to_owned()));
    let daemon = crate::daemon::DaemonProc::start(&rules(), &sets, std::time::Duration::from_secs(20))?;
    crate::affinity::pin_current_thread(opts.client_core)?;
    let producer = rim_ring::attach::attach_producer(&daemon.socket(), name, ring_bytes)
        .map_err(|e| BenchError::transport("rim-ring", "attach producer", e))?;
    let mut p = Publisher::new(producer)?;
    let warm = nodes() * rounds;
    let now = unix_ms();
    for i in 0..warm {
        p.publish(i, false, now, 0)?;
    }
    daemon.wait_stats(opts.peer_timeout, |s| applied(s) >= warm as u64)?;
    p.full_retries = 0;
    Ok((daemon, p, warm as u64))
}

/// The daemon settings of both suites: the hot shard on the peer core, the control plane
/// on the client's core (where it sleeps), as the bench chose them (the daemon's own
/// choice by the disk's interrupts off: the bench made it already), stats every 50 ms.
pub fn daemon_sets(client_core: usize, peer_core: usize) -> Vec<String> {
    vec![
        format!("topology.hot_core={peer_core}"),
        format!("topology.cold_core={client_core}"),
        "topology.avoid_disk_irqs=false".into(),
        "stats.interval_ms=50".into(),
    ]
}

/// `RIM_BENCH_SETS="k=v;k=v"`: more daemon settings for experiments on where the time
/// goes (`persist.enabled=false`, `persist.journal_ring_bytes=…`), applied after every
/// suite's own ([`crate::daemon::DaemonProc::start`]). The published figures use none.
pub fn experiment_sets() -> Vec<String> {
    std::env::var("RIM_BENCH_SETS")
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Epoch ms now.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
