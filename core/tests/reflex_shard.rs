//! A reflex shard and its ingest in process, wired as the backtest wires them.
//!
//! Staleness on a test clock: they run on a [`ManualClock`], and a `stale(1s)` rule fires
//! when the test moves the clock, not when real time passes (the same sweep the daemon
//! runs, without a sleep). And the partition check: a node routed to a shard that does not
//! own its partition stops the shard (a bug, not an input).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use rim_core::clock::{Clock, ManualClock};
use rim_core::config::Config;
use rim_core::entry::{self, KIND_DECISION};
use rim_core::ingest::{Ingest, ReplayOutcome};
use rim_core::reflex::decision;
use rim_core::reflex::Reflex;
use rim_core::report::ShardFigures;
use rim_journal::event::{EventHead, EVENT_BYTES_MAX};

mod common;

const RULES: &str = r#"
[[rule]]
id = "silent"
nodes = ["rim:sensor:quiet:*"]
when = "stale(1s)"
severity = "critical"
"#;
const QUIET: &str = "rim:sensor:quiet:q";
const LOUD: &str = "rim:sensor:plant:a";
const T0_MS: u64 = 1_800_000_000_000;

/// One ingest and one reflex shard on `clock`, wired as the backtest wires them.
struct Shard {
    ingest: Ingest,
    reflex: Reflex,
    decisions: rtrb::Consumer<u8>,
    _ends: (common::Ends, rtrb::Producer<rim_core::ingest::Control>),
}

impl Shard {
    fn new(config: &Config, clock: Clock) -> Self {
        Self::owning(config, clock, 1, 1)
    }

    /// Shard 0 of `shards` over `partitions`; its ingest routes every node to it.
    fn owning(config: &Config, clock: Clock, partitions: u32, shards: usize) -> Self {
        let w = common::wire(
            config,
            common::Setup {
                rules: RULES,
                clock,
                partitions,
                shards,
                resolutions: Vec::new(),
                durable_seq: Arc::new(AtomicU64::new(u64::MAX)),
                journal: None,
            },
        );
        Self {
            ingest: w.ingest,
            reflex: w.reflex,
            decisions: w.persisted,
            _ends: (w.ends, w.control),
        }
    }

    /// An event of `node` at event time `at_ms`, through ingest to the shard.
    fn event(&mut self, node: &str, at_ms: u64) {
        let head = EventHead {
            rim_node_id: node,
            event_id: None,
            timestamp: at_ms as i64,
            publish_ns: 0,
            received_ms: at_ms,
            price: None,
            volume: None,
            stress: None,
            status: "ok",
            source_topic: None,
        };
        let mut buf = vec![0u8; EVENT_BYTES_MAX];
        let n = rim_journal::event::encode(&head, [("temp", 20.0)].into_iter(), &mut buf).expect("encodes");
        let rec = rim_journal::event::decode(&buf[..n]).expect("decodes");
        assert!(matches!(self.ingest.replay_evaluated(&rec), ReplayOutcome::Applied(_)));
        self.reflex.poll(usize::MAX);
    }

    /// One upkeep turn of the shard (what its loop runs between work), covering a whole
    /// sweep period; the decisions it made, as (rule, node, sweep flag).
    fn upkeep(&mut self, config: &Config) -> Vec<(String, String, bool)> {
        self.reflex
            .maintain(config.reflex.stale_sweep_ms, false, ShardFigures::default());
        self.reflex.poll(usize::MAX);
        let mut out = Vec::new();
        let mut scratch = Vec::with_capacity(entry::BODY_BYTES_MAX);
        while let Ok(Some(())) = entry::take(&mut self.decisions, &mut scratch, |head, body| {
            if head.kind == KIND_DECISION {
                let d = decision::decode(body).expect("a decision decodes");
                out.push((d.rule_id.to_owned(), d.rim_node_id.to_owned(), d.sweep));
            }
        }) {}
        out
    }
}

fn fired(node: &str) -> Vec<(String, String, bool)> {
    vec![("silent".to_owned(), node.to_owned(), true)]
}

#[test]
fn a_stale_rule_fires_when_the_test_clock_passes_its_silence_and_once_per_silence() {
    let config = Config::default();
    let clock = ManualClock::at(T0_MS);
    let mut s = Shard::new(&config, clock.clock());
    s.event(QUIET, T0_MS);
    s.event(LOUD, T0_MS);
    assert_eq!(s.upkeep(&config), vec![], "no silence yet");

    clock.advance(Duration::from_millis(999));
    assert_eq!(s.upkeep(&config), vec![], "999 ms of silence is not 1 s");

    clock.advance(Duration::from_millis(2));
    assert_eq!(
        s.upkeep(&config),
        fired(QUIET),
        "past 1 s: once, for the matching node only"
    );

    clock.advance(Duration::from_secs(3_600));
    assert_eq!(s.upkeep(&config), vec![], "one decision per silence, however long");

    let later = T0_MS + 3_601_001;
    s.event(QUIET, later);
    assert_eq!(s.upkeep(&config), vec![], "an event ends the silence");
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(s.upkeep(&config), fired(QUIET), "a new silence fires again");
}

#[test]
fn a_wall_clock_step_back_does_not_make_a_node_stale() {
    let config = Config::default();
    let clock = ManualClock::at(T0_MS);
    let mut s = Shard::new(&config, clock.clock());
    s.event(QUIET, T0_MS);
    clock.set_unix_ms(T0_MS - 60_000);
    assert_eq!(
        s.upkeep(&config),
        vec![],
        "a clock set back a minute: silence saturates at 0"
    );
    clock.set_unix_ms(T0_MS + 1_001);
    assert_eq!(s.upkeep(&config), fired(QUIET));
}

#[test]
#[should_panic(expected = "owns its partition (a bug)")]
fn a_node_routed_to_a_shard_that_does_not_own_its_partition_stops_the_shard() {
    use rim_core::ingest::nodes::{partition_of, shard_of_partition};
    let config = Config::default();
    let clock = ManualClock::at(T0_MS);
    // This shard is 0 of 2 over 12 partitions, but its ingest (one partition, one ring)
    // hands it every node: one that shard 1 owns trips the check.
    let mut s = Shard::owning(&config, clock.clock(), 12, 2);
    let foreign = (0..)
        .map(|i| format!("rim:sensor:plant:n{i}"))
        .find(|id| shard_of_partition(partition_of(id, 12), 2) == 1)
        .expect("some node belongs to shard 1");
    s.event(&foreign, T0_MS);
}
