//! A reflex shard and its ingest in process, wired as the backtest wires them.
//!
//! Staleness on a test clock: they run on a [`ManualClock`], and a `stale(1s)` rule fires
//! when the test moves the clock, not when real time passes (the same sweep the daemon
//! runs, without a sleep). And the partition check: a node routed to a shard that does not
//! own its partition stops the shard (a bug, not an input).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rim_core::clock::{Clock, ManualClock};
use rim_core::config::Config;
use rim_core::entry::{self, KIND_DECISION};
use rim_core::ingest::{Ingest, ReplayOutcome};
use rim_core::reflex::Reflex;
use rim_core::reflex::{self, decision};
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
        let buf = journaled(node, at_ms);
        let rec = rim_journal::event::decode(&buf).expect("decodes");
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

/// The journal record of an event of `node` (`temp` = 20) at event time `at_ms`.
fn journaled(node: &str, at_ms: u64) -> Vec<u8> {
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
    buf.truncate(n);
    buf
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

/// Fires on every event that carries `temp`.
const EVERY_EVENT: &str = r#"
[[rule]]
id = "every"
nodes = ["rim:sensor:plant:*"]
when = "metric.temp > 0"
severity = "info"
"#;

/// A shard whose decisions the journal thread neither takes nor makes durable holds
/// events back, and counts why: first for room in its ring to the journal thread, then,
/// once that ring is drained, for the decisions in flight (none is durable); an idle
/// shard with nothing waiting counts nothing.
#[test]
fn a_shard_counts_why_it_holds_events_back() {
    let config = Config::default();
    let durable = Arc::new(AtomicU64::new(0));
    let mut w = common::wire(
        &config,
        common::Setup {
            rules: EVERY_EVENT,
            clock: Clock::system(),
            partitions: 1,
            shards: 1,
            resolutions: Vec::new(),
            // Nothing is durable: a fresh chain's first decision is sequence 1.
            durable_seq: durable.clone(),
            journal: None,
        },
    );
    let counters = |w: &mut common::Wired| {
        w.reflex.maintain(0, true, ShardFigures::default());
        w.ends.counters(0).expect("a report")
    };
    let feed = |w: &mut common::Wired, n: usize, drain: bool| {
        let mut scratch = Vec::with_capacity(entry::BODY_BYTES_MAX);
        for i in 0..n {
            let buf = journaled(LOUD, T0_MS + i as u64);
            let rec = rim_journal::event::decode(&buf).expect("decodes");
            while drain && matches!(entry::take(&mut w.persisted, &mut scratch, |_, _| {}), Ok(Some(()))) {}
            w.reflex.poll(usize::MAX);
            // The shard's input ring full: it is holding back.
            if !matches!(w.ingest.replay_evaluated(&rec), ReplayOutcome::Applied(_)) {
                break;
            }
        }
    };
    let before = counters(&mut w);
    let (room, in_flight) = (reflex::C_HELD_PERSIST_ROOM, reflex::C_HELD_IN_FLIGHT);
    assert_eq!((before[room], before[in_flight]), (0, 0));
    // The 4 MiB ring to the journal thread fills long before IN_FLIGHT_MAX decisions.
    feed(&mut w, decision::IN_FLIGHT_MAX as usize, false);
    let full = counters(&mut w);
    assert!(full[room] > 0, "held for room: {}", full[room]);
    assert_eq!(full[in_flight], 0);
    let decided = full[reflex::C_DECISIONS];
    assert!(decided > 0 && decided < decision::IN_FLIGHT_MAX);
    // Drained as the journal thread would, but never durable: the in-flight bound holds.
    feed(&mut w, decision::IN_FLIGHT_MAX as usize, true);
    let bounded = counters(&mut w);
    assert!(
        bounded[in_flight] > 0,
        "held for decisions in flight: {}",
        bounded[in_flight]
    );
    assert!(bounded[reflex::C_DECISIONS] < decision::IN_FLIGHT_MAX);
    // Everything durable: the held events go through, and the input ring empties.
    durable.store(u64::MAX, Ordering::Release);
    let mut scratch = Vec::with_capacity(entry::BODY_BYTES_MAX);
    loop {
        while matches!(entry::take(&mut w.persisted, &mut scratch, |_, _| {}), Ok(Some(()))) {}
        if w.reflex.poll(usize::MAX) == 0 {
            break;
        }
    }
    let drained = counters(&mut w);
    // In flight again, with nothing waiting: an idle shard holds nothing back.
    durable.store(0, Ordering::Release);
    for _ in 0..100 {
        assert_eq!(w.reflex.poll(usize::MAX), 0);
    }
    let idle = counters(&mut w);
    assert_eq!(idle[in_flight], drained[in_flight], "an idle shard counted a hold");
    assert_eq!(idle[room], drained[room], "an idle shard counted a hold");
}
