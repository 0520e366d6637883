//! Suite `kafka`: events into the daemon through the Kafka bridge, beside the same events
//! through a shared-memory ring, produce (or publish) to decision.
//!
//! One tansu broker (started by the suite on a free loopback port, from the venv of
//! `scripts/pyenv.sh`) and one real daemon (`bridge.enabled`, the Avro writer schema from a
//! local `.avsc` mapped to id 1 by `bridge.schema_files`, no registry) serve every row:
//! started by the first row, stopped by the suite's finish hook. The workload is the
//! `reflex` suite's (100 rules over 10,000 nodes, every node's state warm); every event
//! carries a distinct `metric.probe` value, on which the `probe` rule (no cooldown) fires
//! once per event, so every event has exactly one decision and the decision names its
//! event ([`measure`]).
//!
//! Rows (latency = from the instant the bench handed the event over, or for a paced row the
//! instant the event was due, CLOCK_MONOTONIC, to the instant it read the event's decision
//! from the broadcast ring):
//! - `broker-floor`: the `kafka-in` row's messages, saturating, through the same broker to
//!   a topic of their own, read back by a plain librdkafka consumer in the bench that does
//!   not decode them ([`floor`]): the broker's and the client library's limit here, beside
//!   which `kafka-in` is judged; `broker-floor-50k` the same paced at 50,000 events/s,
//!   the latency floor of `kafka-in-50k`.
//! - `kafka-in`: Avro events in the Confluent wire format produced to `rim.fast-path` (12
//!   partitions, keyed by RimNodeId) with rdkafka (`BaseProducer`, linger 5 ms),
//!   **saturating**: offered as fast as the producer takes them, with at most
//!   [`WINDOW`] events without their decision. `events_per_s` is the throughput; the
//!   latencies are under that load, queueing included: the backlog grows until the window
//!   is full, so they come out near `WINDOW / events_per_s` and say little alone.
//! - `kafka-in-50k`: the same **paced** at 50,000 events/s: the latency without queueing,
//!   counted from each event's due time (so a sender that stalls cannot hide latency).
//! - `shm`, `shm-50k`: the same two through a `rim_ring` producer attached to the same
//!   daemon (publish to decision).
//!
//! Every row also reports the CPU time per event of the daemon, the broker and this bench
//! process over the row, and how busy the machine was ([`cpu`]).
//!
//! Where things run on two cores: the daemon's hot shard is pinned to `--peer-core`; the
//! bench thread (and librdkafka's producer threads, which inherit its affinity) sit on
//! `--client-core`, the daemon's cold core, with the bridge's consumer, the journal and
//! the store; the broker is free to run anywhere. The broker shares the machine's two
//! cores with the daemon, so the daemon runs with the shared-core setting,
//! `topology.idle = "backoff"` (its shard sleeps when it finds no work), not the default
//! `spin`: a spinning shard keeps its core whether or not events come, and left the
//! broker, the producer and the daemon's cold threads one core between them. Measured
//! with `spin` in the `kafka-in-50k` row (per-thread `schedstat` over 2 s), the broker's
//! threads waited 1.3 s for that core and ran 55 ms on the other, while the shard spun
//! there with nothing to do: `broker-floor-50k` p99 42–83 ms and `kafka-in-50k` 67–94
//! ms, against 29–44 ms and 24–38 ms with `backoff`. It also made the `broker-floor`
//! rows the limit of a broker on one core, not of the machine. The decision outbox (decisions and
//! capsules published back to Kafka) is off: one decision per event is this workload's
//! artefact, and publishing each would measure the outbox, not the way in.

mod avro;
mod broker;
pub(crate) mod cpu;
mod floor;
mod measure;
mod produce;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::daemon::DaemonProc;
use crate::error::BenchError;
use crate::latency::LatencyNames;
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload::{self, applied, Publisher};
use broker::Broker;
use measure::{Completions, Decisions, Outcome, Phase, Sender, Tags};
use produce::{KafkaProducer, Sent};

/// Produce (publish) → decision figures.
const LATENCY: LatencyNames = crate::latency::PLAIN;

/// The `kafka` suite.
pub const SUITE: Suite = Suite {
    name: "kafka",
    about: "produce to decision through the Kafka bridge (tansu on loopback) beside shared memory",
    columns: &[
        "events_per_s",
        LATENCY.p50,
        LATENCY.p99,
        LATENCY.p999,
        LATENCY.max,
        "offered_per_s",
        "events",
        "daemon_cpu_ns",
        "broker_cpu_ns",
        "bench_cpu_ns",
        "busy_pct",
    ],
    rows: &[
        RowSpec {
            name: "broker-floor",
            run: |opts| run_row(opts, "broker-floor", Way::Floor, None),
        },
        RowSpec {
            name: "broker-floor-50k",
            run: |opts| run_row(opts, "broker-floor-50k", Way::Floor, Some(PACED_PER_S)),
        },
        RowSpec {
            name: "kafka-in",
            run: |opts| run_row(opts, "kafka-in", Way::Kafka, None),
        },
        RowSpec {
            name: "kafka-in-50k",
            run: |opts| run_row(opts, "kafka-in-50k", Way::Kafka, Some(PACED_PER_S)),
        },
        RowSpec {
            name: "shm",
            run: |opts| run_row(opts, "shm", Way::Shm, None),
        },
        RowSpec {
            name: "shm-50k",
            run: |opts| run_row(opts, "shm-50k", Way::Shm, Some(PACED_PER_S)),
        },
    ],
    peers: &[],
    finish: Some(shut_down),
};

/// Offered rate of the paced rows.
const PACED_PER_S: u64 = 50_000;

/// Slots of the daemon's decision ring: room for [`WINDOW`] decisions not yet read, and a
/// margin for the (non-firing) other rules.
const DECISION_SLOTS: u64 = 1 << 17;

/// Events without their decision, at most (so the decision reader is never lapped).
const WINDOW: u64 = DECISION_SLOTS * 3 / 4;

/// The bridge consumer's `fetch.wait.max.ms` (see [`daemon_sets`]).
const FETCH_WAIT_MAX_MS: u32 = 5;

/// The schema id the bench writes and `bridge.schema_files` maps to the local `.avsc`.
const SCHEMA_ID: u32 = 1;

/// Longest a phase may go with no event taken and no decision read: the first Kafka
/// phase includes the consumer group's join.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Which way events go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// The `kafka-in` messages to a plain consumer, not to rimd.
    Floor,
    Kafka,
    Shm,
}

/// Events per row and of the Kafka warm-up (which also waits out the consumer group's
/// join), by run size.
fn events(size: RunSize, way: Way, paced: bool) -> u64 {
    let seconds_at_pace = |s: f64| (s * PACED_PER_S as f64) as u64;
    match (size, way, paced) {
        (RunSize::Full, Way::Kafka | Way::Floor, false) => 2_000_000,
        (RunSize::Full, Way::Shm, false) => 5_000_000,
        (RunSize::Full, _, true) => seconds_at_pace(10.0),
        (RunSize::Quick, Way::Kafka | Way::Floor, false) => 400_000,
        (RunSize::Quick, Way::Shm, false) => 1_000_000,
        (RunSize::Quick, _, true) => seconds_at_pace(3.0),
        (RunSize::Smoke, _, false) => 3_000,
        (RunSize::Smoke, _, true) => 1_000,
    }
}

/// The floor's warm-up: a twentieth of its row, as the Kafka warm-up is of `kafka-in`.
fn warmup_events_floor(row_events: u64) -> u64 {
    (row_events / 20).max(100)
}

fn warmup_events(size: RunSize) -> u64 {
    match size {
        RunSize::Full => 50_000,
        RunSize::Quick => 20_000,
        RunSize::Smoke => 500,
    }
}

/// The broker, the daemon and both ways in, shared by the rows of one run.
struct Bench {
    // Field order is drop order: the daemon goes before the broker it consumes from.
    daemon: DaemonProc,
    kafka: KafkaIn,
    shm: ShmIn,
    /// Started by the floor row's first use (warmed up then).
    floor: Option<(floor::FloorIn, floor::FloorOut)>,
    decisions: Decisions,
    tags: Tags,
    broker: Broker,
    _dir: ScratchDir,
}

/// The running bench, or why it could not start (the rows after the first then fail at
/// once with the same reason instead of each waiting out its own timeouts).
static SHARED: Mutex<Option<Result<Bench, String>>> = Mutex::new(None);

fn run_row(opts: &RunOpts, name: &str, way: Way, rate_per_s: Option<u64>) -> Result<Row, BenchError> {
    let mut shared = SHARED
        .lock()
        .map_err(|_| BenchError::Setup("the shared bench's lock".into()))?;
    let bench = match shared.get_or_insert_with(|| Bench::start(opts).map_err(|e| e.to_string())) {
        Ok(bench) => bench,
        Err(why) => return Err(BenchError::Setup(format!("the broker and daemon did not start: {why}"))),
    };
    let phase = Phase {
        events: events(opts.size, way, rate_per_s.is_some()),
        rate_per_s,
        window: WINDOW,
        stall_timeout: STALL_TIMEOUT,
    };
    // The floor's consumer joins and warms up before the row's CPU readings begin.
    if way == Way::Floor && bench.floor.is_none() {
        if let Err(e) = bench.start_floor(&phase) {
            shared.take();
            return Err(e);
        }
    }
    let (daemon_pid, broker_pid) = (bench.daemon.pid(), bench.broker.pid());
    let cpu_before = cpu::snapshot(daemon_pid, broker_pid);
    let stats_before = bench.daemon.stats().ok();
    // The floor's rows do not involve the daemon.
    let commits = (way != Way::Floor).then(|| crate::daemon::CommitWatch::start(&bench.daemon));
    let outcome = bench.measure(way, &phase);
    let cpu = cpu_before.per_event(&cpu::snapshot(daemon_pid, broker_pid), phase.events);
    let slowest_commit = commits
        .and_then(crate::daemon::CommitWatch::stop)
        .map_or_else(|| "not read".to_owned(), |ns| format!("{:.1} ms", ns as f64 / 1e6));
    // Whether ingest and the shards held events back (persistence behind) during the row.
    if let (Some(before), Ok(after), true) = (stats_before, bench.daemon.stats(), way != Way::Floor) {
        let d = |name: &str| crate::daemon::counter_delta(&before, &after, name);
        eprint!(
            "(ingest held back {} turns for room downstream, {} of them the journal ring's{}; the slowest \
             journal commit took {slowest_commit}) ",
            d("ingest.backpressure_turns"),
            d("ingest.backpressure_journal_turns"),
            crate::daemon::holds_note(&before, &after),
        );
    }
    let threads = cpu::threads_note(&cpu.daemon_threads);
    match outcome {
        Ok(outcome) => {
            if outcome.skipped > 0 {
                eprint!(
                    "({} decisions of other rules or earlier rows skipped) ",
                    outcome.skipped
                );
            }
            eprint!(
                "(sent over {:.0} ms, first decision at {:.0} ms) ",
                outcome.sent_ms, outcome.first_read_ms
            );
            if crate::procfs::per_thread() {
                eprint!("(daemon CPU ns/event by thread: {threads}) ");
            }
            Ok(row(name, &phase, &outcome, &cpu))
        }
        Err(e) => {
            // A failed row takes the bench down: the next row starts afresh.
            if let Some(Ok(bench)) = shared.take() {
                eprint!("(daemon log: {}) ", bench.daemon.log().trim());
            }
            Err(e)
        }
    }
}

fn row(name: &str, phase: &Phase, outcome: &Outcome, cpu: &cpu::PerEvent) -> Row {
    let mut figures = vec![Figure::real("events_per_s", outcome.events_per_s)];
    figures.extend(outcome.latency.figures(&LATENCY));
    if phase.rate_per_s.is_some() {
        figures.push(Figure::real("offered_per_s", outcome.offered_per_s));
    }
    figures.push(Figure::int("events", phase.events));
    figures.extend([
        Figure::real("daemon_cpu_ns", cpu.daemon_ns),
        Figure::real("broker_cpu_ns", cpu.broker_ns),
        Figure::real("bench_cpu_ns", cpu.bench_ns),
        Figure::real("busy_pct", cpu.busy_pct),
    ]);
    Row::new(name, figures).with_latency("latency", &outcome.latency)
}

/// Stops the daemon, then the broker (the suite's finish hook).
fn shut_down() {
    let Ok(mut shared) = SHARED.lock() else { return };
    if let Some(Ok(bench)) = shared.take() {
        let Bench { daemon, kafka, .. } = bench;
        // Everything produced was consumed (each event's decision was read); nothing to
        // flush but acknowledgements.
        drop(kafka);
        if let Err(e) = daemon.stop() {
            eprintln!("rim-bench kafka: stopping the daemon: {e}");
        }
    }
}

impl Bench {
    fn start(opts: &RunOpts) -> Result<Self, BenchError> {
        // Fail first, and clearly, when the venv is missing.
        broker::tansu_binary()?;
        let dir = ScratchDir::new()?;
        let schema = dir.0.join("rim-fast-event.avsc");
        std::fs::write(&schema, rimd::bridge::wire::RIM_FAST_EVENT_AVSC).map_err(|source| BenchError::Io {
            what: "writing the Avro schema file",
            source,
        })?;
        let broker = Broker::start(&dir.0)?;
        let daemon = DaemonProc::start(&workload::rules(), &daemon_sets(opts, &broker, &schema), STALL_TIMEOUT)?;
        crate::affinity::pin_current_thread(opts.client_core)?;
        let nodes = workload::nodes();
        let shm = ShmIn::start(&daemon, nodes, opts.peer_timeout)?;
        let reader = rim_ring::attach::attach_subscriber(&daemon.socket(), "decisions")
            .map_err(|e| BenchError::transport("rim-ring", "attach subscriber", e))?;
        // Created after pinning: librdkafka's threads inherit the client core.
        let kafka = KafkaIn::new(&broker)?;
        let mut bench = Self {
            daemon,
            kafka,
            shm,
            floor: None,
            decisions: Decisions::new(reader),
            tags: Tags::new(nodes),
            broker,
            _dir: dir,
        };
        bench.warm_kafka(opts.size)?;
        Ok(bench)
    }

    /// Kafka events until the consumer group has joined and the path is warm (producer
    /// connections, partition leaders, the bridge's buffers).
    fn warm_kafka(&mut self, size: RunSize) -> Result<(), BenchError> {
        let phase = Phase {
            events: warmup_events(size),
            rate_per_s: None,
            window: WINDOW,
            stall_timeout: STALL_TIMEOUT,
        };
        let out = self.measure(Way::Kafka, &phase)?;
        eprint!(
            "(warm-up: {} Kafka events, p50 {:.1} ms incl. the group join) ",
            phase.events,
            out.latency.p50_ns as f64 / 1e6
        );
        Ok(())
    }

    fn measure(&mut self, way: Way, phase: &Phase) -> Result<Outcome, BenchError> {
        if way == Way::Floor && self.floor.is_none() {
            self.start_floor(phase)?;
        }
        let (sender, completions): (&mut dyn Sender, &mut dyn Completions) = match (way, &mut self.floor) {
            (Way::Floor, Some((tx, rx))) => (tx, rx),
            (Way::Floor, None) => return Err(BenchError::Setup("the floor consumer did not start".into())),
            (Way::Kafka, _) => (&mut self.kafka, &mut self.decisions),
            (Way::Shm, _) => (&mut self.shm, &mut self.decisions),
        };
        // On a stall, what the daemon says it decided tells a stuck reader from a daemon
        // that stopped deciding, and its persistence figures say whether it holds events
        // back for durability, and whether the journal thread waits for the store.
        let daemon = &self.daemon;
        let decided = || {
            let Ok(s) = daemon.stats() else {
                return "; the daemon's stats could not be read".to_owned();
            };
            let c = |name: &str| s.counters.get(name).copied().unwrap_or(0);
            format!(
                "; the daemon counts {} probe decisions, {} turns held for decisions in flight, {} \
                 for room to the journal thread; the journal lags {} bytes, the store has {} \
                 capsules waiting and held the journal thread back {} turns (writer raised {} \
                 times)",
                c("decisions.rule.probe"),
                c("reflex.held_in_flight_turns"),
                c("reflex.held_persist_room_turns"),
                c("persist.journal_lag_bytes"),
                c("persist.store_waiting"),
                c("persist.store_backpressure_turns"),
                c("persist.store_writer_raised"),
            )
        };
        measure::run(sender, completions, &mut self.tags, phase, &decided)
    }

    /// The floor's producer and consumer, warmed up as the Kafka way is at start.
    fn start_floor(&mut self, like: &Phase) -> Result<(), BenchError> {
        let node_ids = (0..workload::NODES).map(workload::node_id).collect();
        let (mut tx, mut rx) = floor::start(&self.kafka.brokers, node_ids, FETCH_WAIT_MAX_MS)?;
        let warm = Phase {
            events: warmup_events_floor(like.events),
            ..*like
        };
        measure::run(&mut tx, &mut rx, &mut self.tags, &warm, &String::new)?;
        self.floor = Some((tx, rx));
        Ok(())
    }
}

/// The daemon's settings: the house topology, the bridge consuming from the suite's
/// broker with the local schema file, the outbox off, a decision ring for [`WINDOW`].
fn daemon_sets(opts: &RunOpts, broker: &Broker, schema: &std::path::Path) -> Vec<String> {
    let mut sets = workload::daemon_sets(opts.client_core, opts.peer_core);
    sets.extend([
        "bridge.enabled=true".to_string(),
        format!("bridge.brokers=\"{}\"", broker.addr()),
        "bridge.group_id=\"rim-bench\"".to_string(),
        format!("bridge.in_topic=\"{}\"", broker::IN_TOPIC),
        format!("bridge.schema_files=[\"{SCHEMA_ID}={}\"]", schema.display()),
        "bridge.publish_capsules=false".to_string(),
        "bridge.publish_decisions=false".to_string(),
        // As tests/kafka.rs: the defaults make the first join (and any rebalance) slow.
        "bridge.session_timeout_ms=6000".to_string(),
        "bridge.heartbeat_interval_ms=1000".to_string(),
        // tansu answers a consumer's fetch only when its max wait runs out, even with data
        // waiting (a Kafka broker answers as soon as `fetch.min.bytes` = 1 is there): at
        // librdkafka's default 500 ms every event waited ~250 ms on average (p50 215-285
        // ms measured). A short wait stands for the broker behaviour the bridge expects.
        format!("bridge.librdkafka=[\"fetch.wait.max.ms={FETCH_WAIT_MAX_MS}\"]"),
        format!("decisions.slots={DECISION_SLOTS}"),
        // The broker runs on these two cores too (see the module's docs).
        "topology.idle=\"backoff\"".to_string(),
    ]);
    sets
}

/// The Kafka way in: Avro events keyed by node id.
struct KafkaIn {
    producer: KafkaProducer,
    brokers: String,
    node_ids: Vec<String>,
    buf: Vec<u8>,
    noise: u64,
}

impl KafkaIn {
    fn new(broker: &Broker) -> Result<Self, BenchError> {
        Ok(Self {
            producer: KafkaProducer::new(&broker.addr(), broker::IN_TOPIC)?,
            brokers: broker.addr(),
            node_ids: (0..workload::NODES).map(workload::node_id).collect(),
            buf: Vec::with_capacity(256),
            noise: 0x9E37_79B9_7F4A_7C15,
        })
    }

    /// In −0.5..0.5, as the shared-memory publisher's metrics vary.
    fn noise(&mut self) -> f64 {
        self.noise ^= self.noise << 13;
        self.noise ^= self.noise >> 7;
        self.noise ^= self.noise << 17;
        (self.noise >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

impl Sender for KafkaIn {
    fn offer(&mut self, node: usize, tag: u64, timestamp_ms: i64, _now_ns: u64) -> Result<bool, BenchError> {
        let metrics = [50.0 + self.noise(), 0.5 + self.noise() * 0.1, tag as f64, self.noise()];
        let node_id = &self.node_ids[node % self.node_ids.len()];
        let ev = avro::EventFields {
            node_id,
            timestamp_ms,
            metrics,
        };
        avro::encode(SCHEMA_ID, &ev, &mut self.buf);
        Ok(self.producer.try_send(node_id, &self.buf)? == Sent::Queued)
    }

    fn service(&mut self) -> Result<(), BenchError> {
        self.producer.service()
    }

    fn idle(&mut self) {
        // Latencies here are milliseconds; a short sleep costs them nothing and leaves
        // the core to the bridge and the broker.
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// The shared-memory way in: the workload's publisher on a ring of its own.
struct ShmIn {
    publisher: Publisher,
    idle_spins: u32,
}

impl ShmIn {
    /// Attaches, and warms every node's state and rule list (two events each, no
    /// decision), as the `reflex` suite does.
    fn start(daemon: &DaemonProc, nodes: usize, timeout: Duration) -> Result<Self, BenchError> {
        let producer = rim_ring::attach::attach_producer(&daemon.socket(), "bench-kafka-shm", 1 << 22)
            .map_err(|e| BenchError::transport("rim-ring", "attach producer", e))?;
        let mut publisher = Publisher::new(producer)?;
        let warm = nodes * 2;
        let now = workload::unix_ms();
        for i in 0..warm {
            publisher.publish(i, false, now, 0)?;
        }
        daemon.wait_stats(timeout, |s| applied(s) >= warm as u64)?;
        publisher.full_retries = 0;
        Ok(Self {
            publisher,
            idle_spins: 0,
        })
    }
}

impl Sender for ShmIn {
    fn offer(&mut self, node: usize, tag: u64, timestamp_ms: i64, now_ns: u64) -> Result<bool, BenchError> {
        self.publisher.publish_probe(node, tag as f64, timestamp_ms, now_ns)?;
        Ok(true)
    }

    fn service(&mut self) -> Result<(), BenchError> {
        Ok(())
    }

    fn idle(&mut self) {
        // Sub-millisecond latencies: a sleep would be most of them, and a yield on a busy
        // machine gives the core away for a whole time slice. Spin, yielding now and then
        // so the journal and store threads on this core are not kept waiting. (The
        // daemon's shard backs off here, see the module's docs: the first event after a
        // pause may wait out its sleep, so these rows are not the `reflex` suite's.)
        self.idle_spins = self.idle_spins.wrapping_add(1);
        if self.idle_spins.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A directory for the broker's log and the schema file, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self, BenchError> {
        let dir = std::env::temp_dir().join(format!(
            "rim-bench-kafka-{}-{}",
            std::process::id(),
            workload::unix_ms()
        ));
        std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io {
            what: "creating the kafka suite's directory",
            source,
        })?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
