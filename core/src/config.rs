//! Configuration: the TOML file, `RIMD_*` environment overrides and `--set` overrides,
//! merged in that order over the embedded defaults, then checked as a whole.
//!
//! Every setting has a default right for a 2-core machine, so `rimd` runs with no file.
//! Checks that involve more than one setting (cores, shard counts, ring and slot sizes)
//! happen in [`Config::validate`], once, before any thread starts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod api;
pub mod bridge;

/// The accepted range of event times around the daemon's clock (checked by
/// `ingest::time`, which implements it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// Most ms an event may be ahead of the clock (0 = unbounded).
    pub ahead_ms_max: u64,
    /// Most ms an event may be older than the clock (0 = unbounded).
    pub age_ms_max: u64,
}

/// Why the configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The TOML (file, environment or `--set`) does not parse or does not fit the schema.
    #[error("config {origin}: {message}")]
    Parse {
        /// Where the bad text came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// An override names no setting.
    #[error("{origin}: no setting called `{key}` (settings look like `reflex.nodes_max`)")]
    UnknownKey {
        /// Where the override came from.
        origin: String,
        /// The key.
        key: String,
    },
    /// Settings that parse but do not make sense together.
    #[error("config: {0}")]
    Invalid(String),
}

/// How a busy-polling shard waits when it found no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleStrategy {
    /// Spin on the core (lowest latency; the core is the shard's alone).
    Spin,
    /// Spin, then yield, then sleep in growing steps up to 1 ms; 4 ms once idle for about a
    /// second, 10 ms after ten seconds (a shared core).
    Backoff,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Files and sockets.
    pub daemon: DaemonConfig,
    /// Cores and shards.
    pub topology: TopologyConfig,
    /// Producer rings and ingest.
    pub ingest: IngestConfig,
    /// Present state and rules.
    pub reflex: ReflexConfig,
    /// The decision broadcast ring.
    pub decisions: DecisionsConfig,
    /// The stats segment.
    pub stats: StatsConfig,
    /// The journal and the CAPSULE store.
    pub persist: PersistConfig,
    /// The HTTP API.
    pub api: api::ApiConfig,
    /// The Kafka bridge.
    pub bridge: bridge::BridgeConfig,
}

/// Files and sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Directory of the control socket and the stats segment (created 0700 if missing).
    pub run_dir: PathBuf,
    /// Log filter (`tracing` env-filter syntax); `RUST_LOG` wins when set.
    pub log: String,
}

/// Cores and shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Core of the hot shard (ingest and reflex shard 0), which busy-polls.
    pub hot_core: usize,
    /// Core shared by the control plane (attach, stats, rule reload; later persist, HTTP,
    /// Kafka), which sleeps when idle.
    pub cold_core: usize,
    /// Reflex shards. Shard 0 runs on the hot core beside ingest; shards 1.. run on
    /// `reflex_cores`.
    pub reflex_shards: usize,
    /// Cores of reflex shards 1.. (one each).
    pub reflex_cores: Vec<usize>,
    /// Node partitions (the platform's partition count); each belongs to one reflex shard.
    pub partitions: u32,
    /// How the hot shards wait when idle.
    pub idle: IdleStrategy,
    /// Pin threads to their cores (off only for machines where pinning is not allowed).
    pub pin: bool,
    /// A hot shard whose loop has not advanced for this long makes `/health/ready`
    /// answer 503, naming it, ms.
    pub shard_stall_ms_max: u64,
    /// Keep the hot shard off the core that takes the journal disk's interrupts: when they
    /// land on `hot_core` and not on `cold_core`, the two are swapped at start
    /// ([`crate::irqs::place`]: with persistence and pinning on, unless `hot_core` is isolated
    /// and `cold_core` is not; logged, and the cores in force are in `/stats`).
    pub avoid_disk_irqs: bool,
}

impl TopologyConfig {
    /// Swaps the hot and the cold core when `busy` (cores that take a disk's interrupts)
    /// holds the hot core and not the cold one, and only then; true when it did. A machine
    /// whose every core takes them, or whose cold core does too, keeps its layout.
    pub fn avoid_cores(&mut self, busy: &[usize]) -> bool {
        let swap = busy.contains(&self.hot_core)
            && !busy.contains(&self.cold_core)
            && !self.reflex_cores.contains(&self.cold_core);
        if swap {
            std::mem::swap(&mut self.hot_core, &mut self.cold_core);
        }
        swap
    }
}

/// Producer rings and ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Producers attached at once; more are refused at attach. The in-process intake
    /// rings of the HTTP API and the Kafka bridge are not counted.
    pub producers_max: usize,
    /// Rings one process (by the pid the kernel reports for its socket) may hold at once.
    pub rings_per_pid_max: usize,
    /// Rings the processes of one user (uid) may hold at once.
    pub rings_per_uid_max: usize,
    /// Ring bytes one process may hold at once (the sum of its rings' capacities).
    pub ring_bytes_per_pid_max: u64,
    /// Ring bytes the processes of one user may hold at once.
    pub ring_bytes_per_uid_max: u64,
    /// Connections to the control socket whose request has not arrived yet, at most;
    /// more are refused at once ("busy").
    pub attach_pending_max: usize,
    /// How long a connection may take to send its whole request before it is dropped, ms.
    pub attach_timeout_ms: u64,
    /// Most an event's `timestamp` may be ahead of the daemon's clock, ms (0 = no bound).
    pub event_ahead_ms_max: u64,
    /// Most an event's `timestamp` may be behind the daemon's clock, ms (0 = no bound).
    pub event_age_ms_max: u64,
    /// Largest ring a producer may ask for, bytes (power of two).
    pub ring_capacity_max: usize,
    /// Records taken from one ring before the next ring's turn (fairness).
    pub poll_budget: usize,
    /// Last event ids remembered per node for dedup.
    pub dedup_window: usize,
    /// Slots (32 B each) of each ingest → reflex ring.
    pub reflex_ring_slots: usize,
    /// Bytes of each in-process intake ring (the HTTP API's and the Kafka bridge's way
    /// into ingest; a power of two).
    pub intake_ring_bytes: usize,
}

/// Present state and rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReflexConfig {
    /// Nodes with state, allocated up front; a node past this is refused and counted.
    pub nodes_max: usize,
    /// Rules in one rule set.
    pub rules_max: usize,
    /// Rule file; empty = the embedded default rules. Reloaded on change and on SIGHUP.
    pub rules_file: PathBuf,
    /// How often the rule file's modification time is checked, ms.
    pub rules_poll_ms: u64,
    /// Series (price, volume, stress, metrics) tracked per node; more are counted and skipped.
    pub series_per_node: usize,
    /// Spacing of the checkpoints `change()` looks back through, ms.
    pub window_step_ms: u64,
    /// Checkpoints kept per series; the longest window is `(points - 1) * step`.
    pub window_points: usize,
    /// EWMA weight of a new sample (0 < alpha ≤ 1).
    pub ewma_alpha: f64,
    /// Samples before `zscore()` is known.
    pub zscore_min_samples: u32,
    /// Entries of the (rule, node) cooldown table.
    pub cooldown_slots: usize,
    /// How often the staleness sweep visits every node, ms.
    pub stale_sweep_ms: u64,
    /// Write every page of the per-node tables at start (RSS = full capacity; a node's
    /// first event then pays no page faults).
    pub prefault: bool,
}

/// The decision broadcast ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsConfig {
    /// Slots of each reflex shard's broadcast ring (power of two).
    pub slots: u64,
    /// Bytes per slot; must hold the largest decision record.
    pub slot_bytes: usize,
}

/// The stats segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// How often shards report and the segment is rewritten, ms.
    pub interval_ms: u64,
    /// Size of the stats segment, bytes.
    pub segment_bytes: usize,
    /// Stage latencies (`ring_hop`, `ingest_to_reflex`, `rule_eval`) are measured for one
    /// event in this many (a power of two; `publish_to_decision` is measured for every
    /// decision). A measured event costs the hot shard three clock reads and three
    /// histogram entries, about 90 ns here: at 1 in 8 that was 5-6% of its time per event
    /// at full rate, and it made one round trip in 8 slower, which a p99 sees. At 1 in 128
    /// a shard at 1M events/s still measures about 8,000 events a second.
    pub stage_sample_every: u64,
}

/// The journal and the CAPSULE store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// Journal and store on (off: nothing is durable and producers' durable position
    /// never moves).
    pub enabled: bool,
    /// Where the journal (`journal/`) and the store (`capsules.redb`) live.
    pub data_dir: PathBuf,
    /// Bytes of each journal segment file.
    pub segment_bytes: u64,
    /// Most bytes one group commit writes per journal stream: the journal's buffer. A
    /// commit starts soon after the previous one completed, so this bounds only the queue
    /// ahead of a slow sync (then the rings fill and producers see `Full`).
    pub commit_bytes: u64,
    /// Group commits in flight at once (1..=4): with more than one, a commit starts beside
    /// those in flight once the newest has run 250 µs (and `commit_interval_us` is out),
    /// so records need not wait for the slowest sync ahead of them.
    pub commit_flights: usize,
    /// Under a steady stream over fast syncs (the last two commits started less than 1.5
    /// intervals apart, the last sync took less than one), the least time from the start
    /// of one commit to the start of the next, µs (0: a commit always starts as soon as
    /// the previous one completed). Pending records (of all streams) that fill half of
    /// `commit_bytes` start it sooner. Each commit costs the cold core tens of µs of its
    /// own and of the kernel's block layer whatever it carries; under a steady stream this
    /// makes fewer, fuller commits, for a durable lag longer by at most this much. Bursts
    /// further apart, and a backlog behind a slow sync, are not held.
    pub commit_interval_us: u64,
    /// Journal retention by age, hours.
    pub retention_hours: u64,
    /// Journal retention by size, bytes per partition.
    pub retention_bytes: u64,
    /// Bytes of the ring from ingest to the journal thread (a power of two). With the
    /// journal's buffers it is what a slow sync is ridden out in before ingest holds
    /// producers back: 32 MiB is about 130,000 events, 1.3 s at 100k events/s (at 4 MiB,
    /// with the reflex ring at 4 MiB too, a 0.7 s sync stall reached the decisions of the
    /// kafka suite's `shm-50k` row: p99 0.2-0.65 s in five runs; `scripts/sync-stall.sh`).
    pub journal_ring_bytes: usize,
    /// Bytes of each reflex shard's ring to the journal thread (decisions, predictions; a
    /// power of two). A shard holds an event back when it is full, so it should hold the
    /// `IN_FLIGHT_MAX` (65,536) decisions durability already bounds: 32 MiB is 512 bytes
    /// each. At 4 MiB (about 28,000 decisions) a sync stall of 0.7 s held the shard.
    pub reflex_ring_bytes: usize,
    /// Roll-up resolutions, seconds.
    pub resolutions: Vec<u32>,
    /// Capsule retention per resolution, hours (same order as `resolutions`).
    pub resolution_retention_hours: Vec<u64>,
    /// A node's open window closes this long (processing time) after its end when no
    /// later event closed it, ms.
    pub grace_ms: u64,
    /// Most time between store transactions, ms (the store commits sooner when a batch
    /// reaches `store_batch_max`).
    pub store_interval_ms: u64,
    /// Capsules per store transaction at most.
    pub store_batch_max: usize,
    /// How often the roll-up's open windows are checkpointed into the store with the
    /// journal positions they are complete to, ms; recovery reads the journal from the
    /// last checkpoint, so this bounds what it replays.
    pub checkpoint_ms: u64,
    /// Predict each node's next window (the EWMA predictor).
    pub predict: bool,
    /// Bytes of the store's page cache (redb's own default, 1 GiB, would be the daemon's
    /// largest memory use).
    pub store_cache_bytes: usize,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            data_dir: PathBuf::from("/var/tmp/rimd"),
            segment_bytes: 64 << 20,
            commit_bytes: 2 << 20,
            commit_flights: 1,
            commit_interval_us: 500,
            retention_hours: 7 * 24,
            retention_bytes: 16 << 30,
            journal_ring_bytes: 32 << 20,
            reflex_ring_bytes: 32 << 20,
            resolutions: vec![1, 60],
            resolution_retention_hours: vec![24, 30 * 24],
            grace_ms: 2_000,
            store_interval_ms: 100,
            store_batch_max: 10_000,
            checkpoint_ms: 2_000,
            predict: true,
            store_cache_bytes: 64 << 20,
        }
    }
}

impl PersistConfig {
    /// The journal's directory.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// The store's file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("capsules.redb")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.segment_bytes < 64 << 10 || self.segment_bytes > 1 << 30 {
            return bad(format!(
                "persist.segment_bytes = {} (64 KiB..=1 GiB)",
                self.segment_bytes
            ));
        }
        let buffer = rim_journal::BUFFER_BYTES_MIN as u64..=rim_journal::BUFFER_BYTES_MAX as u64;
        if !buffer.contains(&self.commit_bytes) {
            return bad(format!(
                "persist.commit_bytes = {} ({}..={})",
                self.commit_bytes,
                buffer.start(),
                buffer.end()
            ));
        }
        if self.store_cache_bytes < 1 << 20 {
            return bad(format!(
                "persist.store_cache_bytes = {} (≥ 1 MiB)",
                self.store_cache_bytes
            ));
        }
        for (name, v) in [
            ("persist.journal_ring_bytes", self.journal_ring_bytes),
            ("persist.reflex_ring_bytes", self.reflex_ring_bytes),
        ] {
            if !v.is_power_of_two() || !(1 << 16..=1 << 30).contains(&v) {
                return bad(format!("{name} = {v} (a power of two, 64 KiB..=1 GiB)"));
            }
        }
        if self.resolutions.is_empty() || self.resolutions.len() > 8 {
            return bad(format!(
                "persist.resolutions = {:?} (1 to 8 resolutions)",
                self.resolutions
            ));
        }
        if self.resolutions.iter().any(|&r| r == 0 || r > 86_400) {
            return bad(format!(
                "persist.resolutions = {:?} (each 1..=86400 s)",
                self.resolutions
            ));
        }
        if self.resolution_retention_hours.len() != self.resolutions.len() {
            return bad(format!(
                "persist.resolution_retention_hours has {} entries, persist.resolutions {}: one retention per resolution",
                self.resolution_retention_hours.len(),
                self.resolutions.len()
            ));
        }
        if !(1..=rim_journal::FLIGHTS_MAX).contains(&self.commit_flights) {
            return bad(format!(
                "persist.commit_flights = {} (1..={})",
                self.commit_flights,
                rim_journal::FLIGHTS_MAX
            ));
        }
        if self.commit_interval_us > COMMIT_INTERVAL_US_MAX {
            return bad(format!(
                "persist.commit_interval_us = {} (0..={COMMIT_INTERVAL_US_MAX})",
                self.commit_interval_us
            ));
        }
        if self.checkpoint_ms < 100 {
            return bad(format!("persist.checkpoint_ms = {} (≥ 100)", self.checkpoint_ms));
        }
        if self.store_batch_max == 0 || self.store_batch_max > 1_000_000 || self.store_interval_ms == 0 {
            return bad(format!(
                "persist.store_batch_max = {} (1..=1000000) and persist.store_interval_ms = {} (≥ 1)",
                self.store_batch_max, self.store_interval_ms
            ));
        }
        Ok(())
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            run_dir: PathBuf::from("/dev/shm/rimd"),
            log: "info".into(),
        }
    }
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            hot_core: 1,
            cold_core: 0,
            reflex_shards: 1,
            reflex_cores: Vec::new(),
            partitions: 12,
            idle: IdleStrategy::Spin,
            pin: true,
            shard_stall_ms_max: 2_000,
            avoid_disk_irqs: true,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            producers_max: 64,
            rings_per_pid_max: 8,
            rings_per_uid_max: 32,
            ring_bytes_per_pid_max: 256 << 20,
            ring_bytes_per_uid_max: 1 << 30,
            attach_pending_max: 64,
            attach_timeout_ms: 1_000,
            event_ahead_ms_max: 5_000,
            event_age_ms_max: 7 * 24 * 3_600_000,
            ring_capacity_max: 64 << 20,
            poll_budget: 256,
            dedup_window: 16,
            reflex_ring_slots: 1 << 16,
            intake_ring_bytes: 8 << 20,
        }
    }
}

impl Default for ReflexConfig {
    fn default() -> Self {
        Self {
            nodes_max: 100_000,
            rules_max: 1_000,
            rules_file: PathBuf::new(),
            rules_poll_ms: 500,
            series_per_node: 8,
            window_step_ms: 500,
            window_points: 32,
            ewma_alpha: 0.1,
            zscore_min_samples: 20,
            cooldown_slots: 1 << 18,
            stale_sweep_ms: 100,
            prefault: false,
        }
    }
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        Self {
            slots: 8192,
            slot_bytes: 2048,
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            interval_ms: 100,
            segment_bytes: 1 << 20,
            stage_sample_every: 128,
        }
    }
}

/// Environment variables that override settings start with this: `RIMD_REFLEX_NODES_MAX`
/// sets `reflex.nodes_max`.
pub const ENV_PREFIX: &str = "RIMD_";

/// Longest `persist.commit_interval_us`: 10 ms, five times the durable lag the journal
/// is built for.
const COMMIT_INTERVAL_US_MAX: u64 = 10_000;

/// Bytes of the largest config file read.
const FILE_BYTES_MAX: u64 = 1 << 20;

impl Config {
    /// Builds the configuration: defaults, then `file`, then the environment, then `sets`
    /// (`section.key=value`, the value in TOML syntax or a bare string), and checks it
    /// ([`Config::validate`]).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self, ConfigError> {
        let config = Self::load_unchecked(file, env, sets)?;
        config.validate()?;
        Ok(config)
    }

    /// As [`Config::load`], without the checks of settings against each other and the
    /// machine: for tools that report those checks themselves (`rimctl doctor`).
    pub fn load_unchecked(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self, ConfigError> {
        let mut table = to_table(&Config::default())?;
        if let Some(path) = file {
            let text = read_bounded(path)?;
            let from_file: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: path.display().to_string(),
                message: e.to_string(),
            })?;
            merge(&mut table, from_file, &path.display().to_string())?;
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let origin = format!("environment variable {name}");
            let key = env_key(&table, rest).ok_or_else(|| ConfigError::UnknownKey {
                origin: origin.clone(),
                key: rest.to_ascii_lowercase(),
            })?;
            set_key(&mut table, &key, &value, &origin)?;
        }
        for set in sets {
            let origin = format!("--set {set}");
            let (key, value) = set.split_once('=').ok_or_else(|| ConfigError::Parse {
                origin: origin.clone(),
                message: "expected section.key=value".into(),
            })?;
            set_key(&mut table, key.trim(), value.trim(), &origin)?;
        }
        table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: "(merged)".into(),
            message: e.to_string(),
        })
    }

    /// The configuration as TOML (`rimd --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Cores on this machine.
    pub fn cores_online() -> usize {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }

    /// Checks the relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.api
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("api: {e}")))?;
        self.bridge
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("bridge: {e}")))?;
        self.validate_topology(Self::cores_online())?;
        self.validate_sizes()?;
        self.persist.validate()
    }

    fn validate_topology(&self, cores: usize) -> Result<(), ConfigError> {
        let t = &self.topology;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (name, core) in [("topology.hot_core", t.hot_core), ("topology.cold_core", t.cold_core)]
            .into_iter()
            .chain(t.reflex_cores.iter().map(|&c| ("topology.reflex_cores", c)))
        {
            if core >= cores {
                return bad(format!("{name} = {core}, but this machine has cores 0..{}", cores - 1));
            }
        }
        if t.idle == IdleStrategy::Spin && t.hot_core == t.cold_core && cores > 1 {
            return bad(format!(
                "topology.hot_core and topology.cold_core are both {}: a spinning shard would starve the control plane \
                 (give them different cores, or set topology.idle = \"backoff\")",
                t.hot_core
            ));
        }
        if t.reflex_shards == 0 || t.reflex_shards > 64 {
            return bad(format!("topology.reflex_shards = {} (1..=64)", t.reflex_shards));
        }
        if t.reflex_cores.len() != t.reflex_shards - 1 {
            return bad(format!(
                "topology.reflex_shards = {} needs {} entries in topology.reflex_cores (shard 0 shares the hot core), found {}",
                t.reflex_shards,
                t.reflex_shards - 1,
                t.reflex_cores.len()
            ));
        }
        let mut used = vec![t.hot_core, t.cold_core];
        for &c in &t.reflex_cores {
            // Shards that back off when idle may share cores (small machines, tests);
            // spinning ones may not.
            if used.contains(&c) && t.idle == IdleStrategy::Spin {
                return bad(format!(
                    "topology.reflex_cores: core {c} is already taken (hot {}, cold {}, reflex {:?}); a spinning shard needs its own core (or set topology.idle = \"backoff\")",
                    t.hot_core, t.cold_core, t.reflex_cores
                ));
            }
            used.push(c);
        }
        if t.partitions == 0 || t.partitions > 4096 {
            return bad(format!("topology.partitions = {} (1..=4096)", t.partitions));
        }
        if (t.partitions as usize) < t.reflex_shards {
            return bad(format!(
                "topology.partitions = {} is fewer than topology.reflex_shards = {}: a shard would own no partition",
                t.partitions, t.reflex_shards
            ));
        }
        Ok(())
    }

    fn validate_sizes(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let i = &self.ingest;
        let r = &self.reflex;
        let d = &self.decisions;
        if i.producers_max == 0 || i.producers_max > 4096 {
            return bad(format!("ingest.producers_max = {} (1..=4096)", i.producers_max));
        }
        if !i.ring_capacity_max.is_power_of_two() || i.ring_capacity_max < 4096 || i.ring_capacity_max > 1 << 29 {
            return bad(format!(
                "ingest.ring_capacity_max = {} (a power of two, 4 KiB..=512 MiB)",
                i.ring_capacity_max
            ));
        }
        self.validate_quotas()?;
        if i.poll_budget == 0 || i.poll_budget > 65_536 {
            return bad(format!("ingest.poll_budget = {} (1..=65536)", i.poll_budget));
        }
        if i.dedup_window > 256 {
            return bad(format!("ingest.dedup_window = {} (0..=256)", i.dedup_window));
        }
        let slots_min = crate::tick::SLOTS_PER_RECORD_MAX * 4;
        if !i.intake_ring_bytes.is_power_of_two() || !(1 << 16..=1 << 30).contains(&i.intake_ring_bytes) {
            return Err(ConfigError::Invalid(format!(
                "ingest.intake_ring_bytes = {} (a power of two, 65536..=1073741824)",
                i.intake_ring_bytes
            )));
        }
        if !i.reflex_ring_slots.is_power_of_two() || i.reflex_ring_slots < slots_min || i.reflex_ring_slots > 1 << 24 {
            return bad(format!(
                "ingest.reflex_ring_slots = {} (a power of two, {slots_min}..=16777216)",
                i.reflex_ring_slots
            ));
        }
        if r.nodes_max == 0 || r.nodes_max > 10_000_000 {
            return bad(format!("reflex.nodes_max = {} (1..=10000000)", r.nodes_max));
        }
        if r.rules_max == 0 || r.rules_max > 65_535 {
            return bad(format!("reflex.rules_max = {} (1..=65535)", r.rules_max));
        }
        if r.series_per_node == 0 || r.series_per_node > 64 {
            return bad(format!("reflex.series_per_node = {} (1..=64)", r.series_per_node));
        }
        if r.window_step_ms == 0 || r.window_points < 2 || r.window_points > 1024 {
            return bad(format!(
                "reflex.window_step_ms = {} and reflex.window_points = {} (step ≥ 1, points 2..=1024)",
                r.window_step_ms, r.window_points
            ));
        }
        if !(r.ewma_alpha > 0.0 && r.ewma_alpha <= 1.0) {
            return bad(format!("reflex.ewma_alpha = {} (0 < alpha ≤ 1)", r.ewma_alpha));
        }
        if !r.cooldown_slots.is_power_of_two() || r.cooldown_slots < 64 {
            return bad(format!(
                "reflex.cooldown_slots = {} (a power of two ≥ 64)",
                r.cooldown_slots
            ));
        }
        if r.stale_sweep_ms == 0 || r.rules_poll_ms == 0 || self.stats.interval_ms == 0 {
            return bad("reflex.stale_sweep_ms, reflex.rules_poll_ms and stats.interval_ms must be ≥ 1".into());
        }
        if !d.slots.is_power_of_two() || d.slots < 2 {
            return bad(format!("decisions.slots = {} (a power of two ≥ 2)", d.slots));
        }
        if d.slot_bytes < rim_decision::RECORD_BYTES_MAX || d.slot_bytes > 64 * 1024 {
            return bad(format!(
                "decisions.slot_bytes = {} must hold the largest decision record ({} bytes) and be ≤ 65536",
                d.slot_bytes,
                rim_decision::RECORD_BYTES_MAX
            ));
        }
        let every = self.stats.stage_sample_every;
        if !every.is_power_of_two() || every > 1 << 16 {
            return bad(format!(
                "stats.stage_sample_every = {every} (a power of two, 1..=65536)"
            ));
        }
        if self.stats.segment_bytes < 4096 || self.stats.segment_bytes > 64 << 20 {
            return bad(format!(
                "stats.segment_bytes = {} (4 KiB..=64 MiB)",
                self.stats.segment_bytes
            ));
        }
        Ok(())
    }

    /// Quotas: each at least one ring of the largest size, the per-process one within
    /// the per-user one, and attach limits in range.
    fn validate_quotas(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let i = &self.ingest;
        if i.rings_per_pid_max == 0 || i.rings_per_pid_max > i.rings_per_uid_max {
            return bad(format!(
                "ingest.rings_per_pid_max = {} must be 1..=ingest.rings_per_uid_max ({})",
                i.rings_per_pid_max, i.rings_per_uid_max
            ));
        }
        if i.ring_bytes_per_pid_max < i.ring_capacity_max as u64 || i.ring_bytes_per_pid_max > i.ring_bytes_per_uid_max
        {
            return bad(format!(
                "ingest.ring_bytes_per_pid_max = {} must be ingest.ring_capacity_max ({})..=ingest.ring_bytes_per_uid_max ({})",
                i.ring_bytes_per_pid_max, i.ring_capacity_max, i.ring_bytes_per_uid_max
            ));
        }
        if i.attach_pending_max == 0 || i.attach_pending_max > 4096 {
            return bad(format!(
                "ingest.attach_pending_max = {} (1..=4096)",
                i.attach_pending_max
            ));
        }
        if i.attach_timeout_ms == 0 || i.attach_timeout_ms > 60_000 {
            return bad(format!(
                "ingest.attach_timeout_ms = {} (1..=60000)",
                i.attach_timeout_ms
            ));
        }
        if self.topology.shard_stall_ms_max == 0 {
            return bad("topology.shard_stall_ms_max must be ≥ 1".into());
        }
        Ok(())
    }

    /// The accepted range of event times around the daemon's clock.
    pub fn time_bounds(&self) -> TimeBounds {
        TimeBounds {
            ahead_ms_max: self.ingest.event_ahead_ms_max,
            age_ms_max: self.ingest.event_age_ms_max,
        }
    }

    /// The longest window `change()` can look back through, ms.
    pub fn window_max_ms(&self) -> u64 {
        self.reflex.window_step_ms * (self.reflex.window_points as u64 - 1)
    }

    /// Path of the control (attach) socket.
    pub fn socket_path(&self) -> PathBuf {
        self.daemon.run_dir.join("rimd.sock")
    }

    /// Path of the stats segment.
    pub fn stats_path(&self) -> PathBuf {
        self.daemon.run_dir.join("stats")
    }
}

fn read_bounded(path: &std::path::Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > FILE_BYTES_MAX {
        return Err(ConfigError::Parse {
            origin: path.display().to_string(),
            message: format!("larger than {FILE_BYTES_MAX} bytes"),
        });
    }
    Ok(text)
}

fn to_table(config: &Config) -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(config).map_err(|e| ConfigError::Parse {
        origin: "(defaults)".into(),
        message: e.to_string(),
    })
}

/// Lays `over` onto `base` section by section; unknown sections and keys are refused here,
/// with the origin named, rather than by the final schema check.
fn merge(base: &mut toml::Table, over: toml::Table, origin: &str) -> Result<(), ConfigError> {
    for (section, value) in over {
        let Some(toml::Value::Table(dst)) = base.get_mut(&section) else {
            return Err(ConfigError::UnknownKey {
                origin: origin.into(),
                key: section,
            });
        };
        let toml::Value::Table(src) = value else {
            return Err(ConfigError::Parse {
                origin: origin.into(),
                message: format!("`{section}` must be a table ([{section}])"),
            });
        };
        for (key, v) in src {
            if !dst.contains_key(&key) {
                return Err(ConfigError::UnknownKey {
                    origin: origin.into(),
                    key: format!("{section}.{key}"),
                });
            }
            dst.insert(key, v);
        }
    }
    Ok(())
}

/// Finds the `section.key` an environment suffix such as `REFLEX_NODES_MAX` names.
fn env_key(table: &toml::Table, rest: &str) -> Option<String> {
    let lower = rest.to_ascii_lowercase();
    table.iter().find_map(|(section, v)| {
        let key = lower.strip_prefix(section.as_str())?.strip_prefix('_')?;
        let toml::Value::Table(t) = v else { return None };
        t.contains_key(key).then(|| format!("{section}.{key}"))
    })
}

fn set_key(table: &mut toml::Table, key: &str, raw: &str, origin: &str) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        origin: origin.into(),
        key: key.into(),
    };
    let (section, name) = key.split_once('.').ok_or_else(unknown)?;
    let Some(toml::Value::Table(t)) = table.get_mut(section) else {
        return Err(unknown());
    };
    let old = t.get(name).ok_or_else(unknown)?;
    let value = parse_value(raw, old);
    t.insert(name.into(), value);
    Ok(())
}

/// A value in TOML syntax (`42`, `true`, `[1, 2]`, `"x"`), or else the raw text as a
/// string; the schema check then says if it is the wrong type.
fn parse_value(raw: &str, old: &toml::Value) -> toml::Value {
    if matches!(old, toml::Value::String(_)) && !raw.starts_with('"') {
        return toml::Value::String(raw.into());
    }
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Settings as flat `section.key = value` pairs (for logs at start-up).
pub fn flat(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(table) = to_table(config) {
        for (section, v) in table {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    out.insert(format!("{section}.{k}"), v.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)], sets: &[&str]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "rimd-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let path = dir.join("rimd.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(file.map(|_| path.as_path()), env, &sets)
    }

    #[test]
    fn defaults_validate_on_this_machine() {
        let c = load(None, &[], &[]).expect("defaults");
        assert_eq!(c.topology.partitions, 12);
        assert_eq!(c.reflex.nodes_max, 100_000);
        assert_eq!(c.reflex.rules_max, 1_000);
    }

    #[test]
    fn file_then_env_then_set_in_that_order() {
        let c = load(
            Some("[reflex]\nnodes_max = 10\nrules_max = 20\n[ingest]\npoll_budget = 7\n"),
            &[("RIMD_REFLEX_NODES_MAX", "30"), ("OTHER", "x")],
            &["ingest.poll_budget=9"],
        )
        .expect("load");
        assert_eq!(c.reflex.nodes_max, 30);
        assert_eq!(c.reflex.rules_max, 20);
        assert_eq!(c.ingest.poll_budget, 9);
    }

    #[test]
    fn strings_and_enums_from_env() {
        let c = load(
            None,
            &[("RIMD_DAEMON_RUN_DIR", "/tmp/x y"), ("RIMD_TOPOLOGY_IDLE", "backoff")],
            &[],
        )
        .expect("load");
        assert_eq!(c.daemon.run_dir, PathBuf::from("/tmp/x y"));
        assert_eq!(c.topology.idle, IdleStrategy::Backoff);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load(Some("[reflex]\nnodes = 1\n"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("reflex.nodes"), "{e}");
        let e = load(Some("[nope]\nx = 1\n"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = load(None, &[("RIMD_REFLEX_NODEZ", "1")], &[]).unwrap_err().to_string();
        assert!(e.contains("RIMD_REFLEX_NODEZ"), "{e}");
        let e = load(None, &[], &["reflex.x=1"]).unwrap_err().to_string();
        assert!(e.contains("reflex.x"), "{e}");
    }

    #[test]
    fn wrong_types_and_syntax_are_clear() {
        let e = load(Some("[reflex]\nnodes_max = \"many\"\n"), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodes_max"), "{e}");
        let e = load(Some("[reflex\n"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = load(None, &[], &["noequals"]).unwrap_err().to_string();
        assert!(e.contains("section.key=value"), "{e}");
    }

    #[test]
    fn the_hot_core_moves_off_a_disks_interrupts_only_to_a_core_free_of_them() {
        let t = |hot, cold, reflex: Vec<usize>| TopologyConfig {
            hot_core: hot,
            cold_core: cold,
            reflex_cores: reflex,
            ..Default::default()
        };
        let mut a = t(1, 0, vec![]);
        assert!(a.avoid_cores(&[1]));
        assert_eq!((a.hot_core, a.cold_core), (0, 1));
        assert!(!a.avoid_cores(&[1]), "placing again changes nothing");
        assert_eq!((a.hot_core, a.cold_core), (0, 1));
        for (busy, why) in [
            (&[0][..], "the interrupts are on the cold core already"),
            (&[0, 1][..], "every core takes them"),
            (&[][..], "no interrupts known"),
            (&[5][..], "on a core rimd does not use"),
        ] {
            let mut b = t(1, 0, vec![]);
            assert!(!b.avoid_cores(busy), "{why}");
            assert_eq!((b.hot_core, b.cold_core), (1, 0), "{why}");
        }
        // A cold core that is also a reflex shard's is not free to take the hot shard.
        let mut c = t(1, 2, vec![2]);
        assert!(!c.avoid_cores(&[1]));
        assert!(TopologyConfig::default().avoid_disk_irqs, "on by default");
    }

    #[test]
    fn relations_are_checked() {
        let cases: &[(&[&str], &str)] = &[
            (&["topology.hot_core=99"], "hot_core = 99"),
            (&["topology.reflex_shards=2"], "reflex_cores"),
            (&["topology.partitions=0"], "partitions"),
            (&["ingest.ring_capacity_max=1000"], "power of two"),
            (&["decisions.slot_bytes=64"], "largest decision"),
            (&["reflex.ewma_alpha=0"], "ewma_alpha"),
            (&["reflex.cooldown_slots=100"], "cooldown_slots"),
            (&["ingest.reflex_ring_slots=3"], "reflex_ring_slots"),
            (&["ingest.rings_per_pid_max=40"], "rings_per_pid_max"),
            (&["ingest.ring_bytes_per_pid_max=4096"], "ring_bytes_per_pid_max"),
            (&["ingest.attach_pending_max=0"], "attach_pending_max"),
            (
                &["persist.commit_interval_us=10001"],
                "commit_interval_us = 10001 (0..=10000)",
            ),
            (&["stats.stage_sample_every=0"], "stage_sample_every = 0"),
            (&["stats.stage_sample_every=100"], "stage_sample_every = 100"),
            (&["stats.stage_sample_every=131072"], "stage_sample_every = 131072"),
        ];
        for (sets, want) in cases {
            let e = load(None, &[], sets).unwrap_err().to_string();
            assert!(e.contains(want), "{sets:?}: {e}");
        }
        for ok in [
            "persist.commit_interval_us=0",
            "persist.commit_interval_us=10000",
            "stats.stage_sample_every=1",
            "stats.stage_sample_every=65536",
        ] {
            load(None, &[], &[ok]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        if Config::cores_online() > 1 {
            let e = load(None, &[], &["topology.hot_core=0"]).unwrap_err().to_string();
            assert!(e.contains("starve"), "{e}");
            load(None, &[], &["topology.hot_core=0", "topology.idle=backoff"]).expect("backoff may share");
        }
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rimd.example.toml");
        let c = Config::load(Some(&path), std::iter::empty(), &[]).expect("example config loads");
        assert_eq!(
            c,
            Config::default(),
            "config/rimd.example.toml drifted from the defaults"
        );
    }

    #[test]
    fn garbage_files_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..300 {
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"[]=\".\n abcreflx_01"[(x % 18) as usize]
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let _ = load(Some(&text), &[], &[]);
        }
    }
}
