//! The roll-up's per-event cost over many nodes, on one thread: `Rollup::push` of events
//! spread over `NODES` nodes in a random order (as a feed of many instruments arrives),
//! pushed one by one, and pushed in groups of 16 whose nodes are touched one group ahead
//! (`Rollup::touch`; the journal thread's cursor names one entry at a time, 15 ahead:
//! the group form here is the simpler way to the same overlap). Rounds alternate so that both see the
//! same machine.
//!
//! `cargo run --release -p rim-capsule --example rollup_push -- [NODES] [EVENTS] [ROUNDS]`

use std::time::Instant;

use rim_capsule::rollup::{Closed, Observation, Rollup, RollupConfig, Texts};

struct Names;

impl Texts for Names {
    fn node_id(&self) -> &str {
        "bench:node"
    }
    fn status(&self) -> &str {
        "ok"
    }
    fn metric_name(&self, _i: usize) -> &str {
        "metric"
    }
}

/// Events per touched group (the journal thread's `TOUCH_AHEAD`).
const GROUP: usize = 16;

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// A xorshift sequence of node indices: the same for every round.
fn order(nodes: usize, events: usize) -> Vec<u32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..events)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % nodes as u64) as u32
        })
        .collect()
}

/// Pushes `events` (1 ms of event time apart per 1,000, so 1 s windows close as in a
/// 1M events/s feed); `touch` prefetches each group's nodes first. Returns ns per event.
fn run(r: &mut Rollup, nodes: &[u32], start_ms: i64, touch: bool) -> f64 {
    let group_len = std::env::var("GROUP")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(GROUP);
    let metrics: [(u64, f64); 5] = [(11, 1.0), (12, 2.0), (13, 3.0), (14, 4.0), (15, 5.0)];
    let mut out: Vec<Closed> = Vec::new();
    let groups: Vec<&[u32]> = nodes.chunks(group_len).collect();
    let t = Instant::now();
    if touch {
        for &n in groups.first().copied().unwrap_or_default() {
            r.touch(n, metrics.len(), rim_ring::prefetch_line);
        }
    }
    for (g, group) in groups.iter().enumerate() {
        // The next group's lines are named before this one is pushed.
        if touch {
            for &n in groups.get(g + 1).copied().unwrap_or_default() {
                r.touch(n, metrics.len(), rim_ring::prefetch_line);
            }
        }
        for (i, &n) in group.iter().enumerate() {
            let k = (g * group_len + i) as i64;
            let ts = start_ms + k / 1000;
            let obs = Observation {
                timestamp: ts,
                price: Some(100.0),
                volume: Some(1.0),
                stress: Some(0.1),
                status: 21,
                metrics: &metrics,
            };
            r.note_id(n, k as u64 + 1);
            r.push(n, k as u64, ts as u64, &obs, &Names, &mut out);
        }
        out.clear();
    }
    t.elapsed().as_nanos() as f64 / nodes.len() as f64
}

fn main() {
    let nodes = arg(1, 10_000);
    let events = arg(2, 2_000_000);
    let rounds = arg(3, 5);
    let seq = order(nodes, events);
    let cfg = RollupConfig {
        resolutions: vec![1, 60],
        recent_ids: 16,
        ..RollupConfig::default()
    };
    let mut plain = Rollup::new(cfg.clone());
    let mut touched = Rollup::new(cfg);
    // Warm: every node's state exists in both before timing.
    let mut start = 1_700_000_000_000i64;
    run(&mut plain, &seq, start, false);
    run(&mut touched, &seq, start, true);
    println!("nodes {nodes}, events {events} per round");
    println!("round  push_ns_per_event  touch16_ns_per_event  ratio");
    for round in 1..=rounds {
        start += (events as i64 / 1000) + 1000;
        let a = run(&mut plain, &seq, start, false);
        let b = run(&mut touched, &seq, start, true);
        println!("{round:>5}  {a:>17.1}  {b:>20.1}  {:>5.2}", b / a);
    }
}
