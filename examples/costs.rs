//! Per-operation costs of the reflex path, measured in isolation (release build):
//! decision encoding + SHA-256 chaining, and a node-state update over N random nodes.
//! `cargo run --release --example costs`
use std::time::Instant;

use rimd::reflex::decision::{Chain, Draft, RECORD_BYTES_MAX};

fn main() {
    let mut c = Chain::new(1);
    let mut buf = vec![0u8; RECORD_BYTES_MAX];
    let n = 200_000;
    let t = Instant::now();
    let mut total = 0;
    for i in 0..n {
        let d = Draft {
            shard: 0,
            rule_id: "probe",
            rule_version: 1,
            rule_generation: 1,
            severity: 0,
            flags: 0,
            node: 5,
            node_id: "rim:bench:g05:n1234",
            event_seq: i,
            event_timestamp: 1,
            publish_ns: 1,
            decided_ns: 2,
            latency_ns: 1,
        };
        total += c.append(&d, 1, [("metric.probe", 1.0)].into_iter(), &mut buf);
    }
    let el = t.elapsed();
    println!(
        "decision append: {:.0} ns each ({} bytes avg)",
        el.as_nanos() as f64 / n as f64,
        total / n as usize
    );
    let rules = std::fs::read_to_string(std::env::args().nth(1).unwrap_or_default()).unwrap_or_default();
    if !rules.is_empty() {
        let sizes: Vec<usize> = std::env::args().skip(2).filter_map(|a| a.parse().ok()).collect();
        for nodes in if sizes.is_empty() { vec![100, 10_000] } else { sizes } {
            path_cost(nodes, &rules);
        }
    }
}

/// The whole in-process path (ring consumer → ingest → tick ring → reflex → decision) per
/// event, over `nodes` nodes with the bench's 100 rules, in turns of `COSTS_BATCH` events
/// (default 1: one event at a time).
#[allow(dead_code)]
fn path_cost(nodes: usize, rules: &str) {
    use rim_ring::{SymEvent, SymbolKind};
    use rimd::ingest::{Ingest, IngestSetup, ProducerRing};
    use rimd::reflex::{state::Shape, Compiled, Reflex, ReflexSetup};
    use rimd::report::Reporter;
    let (mut prod, cons) = rim_ring::spsc::heap_pair(1 << 22).expect("ring");
    let (ticks_tx, ticks_rx) = rtrb::RingBuffer::new(1 << 16);
    let (mut control_tx, control_rx) = rtrb::RingBuffer::new(16);
    let (retired_tx, _retired_rx) = rtrb::RingBuffer::new(16);
    let (rep, _cold) = Reporter::new(rimd::ingest::C_COUNT, 0);
    let mut ingest = Ingest::new(IngestSetup {
        nodes_max: 100_000,
        partitions: 12,
        outs: vec![ticks_tx],
        budget: 256,
        dedup_window: 16,
        producers_max: 4,
        sample_every: 128,
        control: control_rx,
        retired: retired_tx,
        reporter: rep,
        journal: None,
        bounds: rimd::ingest::time::TimeBounds::NONE,
        clock: rimd::clock::Clock::system(),
    });
    let _ = control_tx.push(rimd::ingest::Control::Add(Box::new(ProducerRing::new(
        1,
        "p".into(),
        0,
        cons,
    ))));
    let limits = rim_rules::Limits {
        rules_max: 1000,
        window_min_ms: 500,
        window_max_ms: 15_500,
        stale_rules_max: 64,
    };
    let set = rim_rules::compile_toml(rules, &limits, None).expect("rules");
    let (rrep, _rcold) = Reporter::new(rimd::reflex::C_COUNT, 1000);
    let (_rin_tx, rin) = rtrb::RingBuffer::new(4);
    let (rout, _rout_rx) = rtrb::RingBuffer::new(4);
    let writer = rim_ring::broadcast::heap(8192, 2048).expect("broadcast");
    let mut reflex = Reflex::new(ReflexSetup {
        shard: 0,
        input: ticks_rx,
        shape: Shape {
            nodes: 100_000,
            series: 8,
            points: 32,
            step_ms: 500,
            alpha: 0.1,
            zscore_min: 20,
        },
        rules_max: 1000,
        cooldown_slots: 1 << 18,
        out: writer,
        rules: Compiled::new(set),
        rules_in: rin,
        rules_out: rout,
        reporter: rrep,
        sweep_ms: 100,
        epoch: 1,
        resume: None,
        persist: None,
        queries: None,
        clock: rimd::clock::Clock::system(),
        partitions: 12,
        shards: 1,
    });
    ingest.maintain(0, false, Default::default());
    let syms: Vec<_> = (0..nodes)
        .map(|i| {
            prod.intern(SymbolKind::NodeId, &format!("rim:bench:g{:02}:n{i}", i % 99))
                .expect("intern")
        })
        .collect();
    let m: Vec<_> = ["temp", "load", "probe", "m3"]
        .iter()
        .map(|n| prod.intern(SymbolKind::MetricName, n).expect("m"))
        .collect();
    let ok = prod.intern(SymbolKind::Status, "OK").expect("ok");
    let mut x: u64 = 88172645463325252;
    // Events published before each turn of ingest and reflex (1: one event at a time, the
    // latency case; 32-256: the batches a saturated shard turns over).
    let batch: usize = std::env::var("COSTS_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 256);
    let mut pending = 0;
    let mut run = |probe: f64, count: usize| {
        let t = Instant::now();
        for _ in 0..count {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let metrics = [(m[0], 50.0), (m[1], 0.5), (m[2], probe), (m[3], 0.0)];
            let ev = SymEvent {
                node: syms[(x % nodes as u64) as usize],
                event_id: None,
                timestamp: 1_700_000_000_000,
                metrics: &metrics,
                price: Some(1.0),
                volume: Some(1.0),
                stress: Some(0.1),
                status: ok,
                source_topic: None,
                publish_ns: 0,
            };
            prod.try_publish_sym(&ev).expect("publish");
            pending += 1;
            if pending == batch {
                pending = 0;
                ingest.poll();
                reflex.poll(4096);
                ingest.wake_journal();
            }
        }
        // The last, partial batch is taken too, so every event timed went the whole way.
        if pending > 0 {
            pending = 0;
            ingest.poll();
            reflex.poll(4096);
            ingest.wake_journal();
        }
        t.elapsed().as_nanos() as f64 / count as f64
    };
    let n: usize = std::env::var("COSTS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    run(0.0, nodes * 3);
    let quiet = run(0.0, n);
    let firing = run(1.0, n);
    println!(
        "path over {nodes} nodes, {batch} events a turn: {quiet:.0} ns/event without a decision, {firing:.0} ns/event with one"
    );
}
