//! Guards the roll-up arithmetic against a straightforward reference: random seeded event
//! streams over several nodes and resolutions must give the same capsules (group by node and
//! window, then count/min/max/mean/last/OHLC/volume/stress/status), the same late counts, and
//! `replay_from` must be a position from which a fresh roll-up rebuilds the open windows.

mod common;

use std::collections::BTreeMap;

use common::Rng;
use rim_capsule::rollup::window_start;
use rim_capsule::{
    Capsule, CapsuleBody, CheckpointError, MetricStats, Observation, ObservedStats, Ohlc, PushOutcome, Rollup,
    RollupConfig,
};

const RESOLUTIONS: [u32; 3] = [1, 5, 60];
const PARTITIONS: u32 = 3;

#[derive(Clone, Debug)]
struct Event {
    partition: u32,
    node: String,
    pos: u64,
    arrival_ms: u64,
    ts: i64,
    price: Option<f64>,
    volume: Option<f64>,
    stress: Option<f64>,
    status: String,
    metrics: Vec<(String, f64)>,
}

fn gen_stream(seed: u64, n: usize, nodes: usize) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut clock: Vec<i64> = (0..nodes).map(|i| 1_700_000_000_000 + i as i64 * 37).collect();
    let names = ["alpha", "beta", "gamma", "delta"];
    (0..n)
        .map(|i| {
            let node = rng.below(nodes as u64) as usize;
            // Mostly forward in small steps, sometimes a jump, sometimes late.
            let step = match rng.below(100) {
                0..=79 => rng.below(400) as i64,
                80..=89 => rng.below(70_000) as i64,
                _ => -(rng.below(8_000) as i64),
            };
            clock[node] += step;
            let mut metrics = Vec::new();
            for m in names {
                if rng.chance(0.5) {
                    metrics.push((m.to_string(), (rng.f64() * 200.0 - 100.0).round() / 4.0));
                }
            }
            Event {
                partition: node as u32 % PARTITIONS,
                node: format!("rim:sensor:ns:{node}"),
                pos: i as u64,
                arrival_ms: 10_000 + i as u64,
                ts: clock[node],
                price: rng.chance(0.8).then(|| 100.0 + (rng.f64() * 10.0).round()),
                volume: rng.chance(0.6).then(|| rng.below(1000) as f64),
                stress: rng.chance(0.5).then(|| rng.f64()),
                status: ["OK", "WARN", "ALARM"][rng.below(3) as usize].to_string(),
                metrics,
            }
        })
        .collect()
}

fn push(rollup: &mut Rollup, e: &Event, out: &mut Vec<Capsule>) -> PushOutcome {
    let metrics: Vec<(&str, f64)> = e.metrics.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let obs = Observation {
        timestamp: e.ts,
        price: e.price,
        volume: e.volume,
        stress: e.stress,
        status: &e.status,
        metrics: &metrics,
    };
    rollup.push(e.partition, &e.node, e.pos, e.arrival_ms, &obs, out)
}

/// The reference: per (node, resolution) remember the open window start; group accepted
/// events by (node, resolution, window start).
#[derive(Default)]
struct Reference {
    open: BTreeMap<(String, u32), i64>,
    groups: BTreeMap<(String, u32, i64), Vec<Event>>,
    closed: Vec<(String, u32, i64)>,
    late_events: u64,
}

impl Reference {
    fn push(&mut self, e: &Event) -> PushOutcome {
        let mut late = 0;
        for r in RESOLUTIONS {
            let start = window_start(e.ts, r);
            let slot = (e.node.clone(), r);
            match self.open.get(&slot).copied() {
                Some(open) if start < open => {
                    late += 1;
                    continue;
                }
                Some(open) if start > open => self.closed.push((e.node.clone(), r, open)),
                _ => {}
            }
            self.open.insert(slot, start);
            self.groups
                .entry((e.node.clone(), r, start))
                .or_default()
                .push(e.clone());
        }
        match late {
            0 => PushOutcome::Accepted,
            n if n == RESOLUTIONS.len() => {
                self.late_events += 1;
                PushOutcome::Late
            }
            _ => {
                self.late_events += 1;
                PushOutcome::PartlyLate
            }
        }
    }

    fn stats(&self, key: &(String, u32, i64)) -> ObservedStats {
        let evs = &self.groups[key];
        let mut metrics: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for e in evs {
            for (n, v) in &e.metrics {
                metrics.entry(n).or_default().push(*v);
            }
        }
        let prices: Vec<f64> = evs.iter().filter_map(|e| e.price).collect();
        let volumes: Vec<f64> = evs.iter().filter_map(|e| e.volume).collect();
        let stresses: Vec<f64> = evs.iter().filter_map(|e| e.stress).collect();
        ObservedStats {
            count: evs.len() as u64,
            first_ts: evs.iter().map(|e| e.ts).min().unwrap(),
            last_ts: evs.iter().map(|e| e.ts).max().unwrap(),
            metrics: metrics
                .into_iter()
                .map(|(n, vs)| MetricStats {
                    name: n.to_string(),
                    count: vs.len() as u64,
                    min: vs.iter().copied().fold(f64::INFINITY, f64::min),
                    max: vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    mean: vs.iter().sum::<f64>() / vs.len() as f64,
                    last: *vs.last().unwrap(),
                })
                .collect(),
            price: (!prices.is_empty()).then(|| Ohlc {
                open: prices[0],
                high: prices.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                low: prices.iter().copied().fold(f64::INFINITY, f64::min),
                close: *prices.last().unwrap(),
            }),
            volume_sum: (!volumes.is_empty()).then(|| volumes.iter().sum()),
            stress_max: stresses.iter().copied().reduce(f64::max),
            stress_last: stresses.last().copied(),
            last_status: evs.last().unwrap().status.clone(),
        }
    }
}

fn stats_of(c: &Capsule) -> &ObservedStats {
    match &c.body {
        CapsuleBody::Observed(s) => s,
        other => panic!("not observed: {other:?}"),
    }
}

fn assert_same(got: &ObservedStats, want: &ObservedStats, what: &str) {
    let mut got = got.clone();
    assert_eq!(got.metrics.len(), want.metrics.len(), "{what}");
    for (g, w) in got.metrics.iter_mut().zip(&want.metrics) {
        assert!(
            (g.mean - w.mean).abs() <= 1e-9 * w.mean.abs().max(1.0),
            "{what}: mean {} vs {}",
            g.mean,
            w.mean
        );
        g.mean = w.mean;
    }
    assert_eq!(&got, want, "{what}");
}

fn key_of(c: &Capsule) -> (String, u32, i64) {
    (c.key.scope_id.clone(), c.key.resolution, c.key.timestamp)
}

fn cfg() -> RollupConfig {
    RollupConfig {
        resolutions: RESOLUTIONS.to_vec(),
        grace_ms: 2000,
        nodes_max: 1000,
    }
}

fn seed() -> u64 {
    std::env::var("RIM_ROLLUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0FFEE)
}

#[test]
fn rollup_matches_reference() {
    let base = seed();
    for round in 0..8u64 {
        let seed = base + round;
        println!("rollup_reference seed {seed}");
        let events = gen_stream(seed, 5000, 7);
        let mut rollup = Rollup::new(cfg());
        let mut reference = Reference::default();
        let mut closed = Vec::new();
        for e in &events {
            let got = push(&mut rollup, e, &mut closed);
            assert_eq!(got, reference.push(e), "seed {seed} pos {}", e.pos);
        }
        assert_eq!(rollup.late(), reference.late_events, "seed {seed}");
        assert!(rollup.late() > 0, "the stream exercises late events");

        // Closed windows: the same set, each exactly once.
        let mut got_keys: Vec<_> = closed.iter().map(key_of).collect();
        got_keys.sort();
        let mut want_keys = reference.closed.clone();
        want_keys.sort();
        assert_eq!(got_keys, want_keys, "seed {seed}");
        for c in &closed {
            assert_same(
                stats_of(c),
                &reference.stats(&key_of(c)),
                &format!("seed {seed} {:?}", key_of(c)),
            );
        }

        // Open windows: those the reference still has open.
        let open = rollup.open_capsules(0);
        assert_eq!(open.len(), rollup.open_windows());
        assert_eq!(open.len(), reference.open.len());
        for c in &open {
            let k = key_of(c);
            assert_eq!(reference.open[&(k.0.clone(), k.1)], k.2);
            assert_same(stats_of(c), &reference.stats(&k), &format!("seed {seed} open {k:?}"));
        }

        // flush_idle far in the future closes everything that is left.
        let mut flushed = Vec::new();
        rollup.flush_idle(u64::MAX / 2, &mut flushed);
        assert_eq!(flushed.len(), open.len());
        assert_eq!(rollup.open_windows(), 0);
        // Nodes are kept after their windows closed (their lateness bound stays).
        assert!(rollup.nodes() > 0);
        for p in 0..PARTITIONS {
            assert_eq!(rollup.replay_from(p), None);
        }
    }
}

#[test]
fn replay_from_rebuilds_the_open_windows() {
    let base = seed();
    for round in 0..8u64 {
        let seed = base + 100 + round;
        println!("replay seed {seed}");
        let events = gen_stream(seed, 3000, 6);
        // Stop at several cut points, as a crash would.
        for cut in [1usize, 10, 500, 1777, 3000] {
            let mut rollup = Rollup::new(cfg());
            let mut sink = Vec::new();
            for e in &events[..cut] {
                push(&mut rollup, e, &mut sink);
            }
            for p in 0..PARTITIONS {
                let want: Vec<Capsule> = rollup
                    .open_capsules(0)
                    .into_iter()
                    .filter(|c| events.iter().any(|e| e.node == c.key.scope_id && e.partition == p))
                    .collect();
                let Some(from) = rollup.replay_from(p) else {
                    assert!(want.is_empty());
                    continue;
                };
                let first_positions: Vec<u64> = events[..cut]
                    .iter()
                    .filter(|e| e.partition == p)
                    .map(|e| e.pos)
                    .collect();
                assert!(
                    first_positions.contains(&from),
                    "replay_from is a position of the partition"
                );
                let mut fresh = Rollup::new(cfg());
                for e in events[..cut].iter().filter(|e| e.partition == p && e.pos >= from) {
                    push(&mut fresh, e, &mut sink);
                }
                assert_eq!(fresh.open_capsules(0), want, "seed {seed} cut {cut} partition {p}");
                // Starting one event later would lose a window's first event.
                let mut short = Rollup::new(cfg());
                for e in events[..cut].iter().filter(|e| e.partition == p && e.pos > from) {
                    push(&mut short, e, &mut sink);
                }
                assert_ne!(
                    short.open_capsules(0),
                    want,
                    "replay_from is the smallest such position"
                );
            }
        }
    }
}

#[test]
fn flush_idle_waits_for_resolution_plus_grace() {
    let mut rollup = Rollup::new(RollupConfig {
        resolutions: vec![1, 60],
        grace_ms: 2000,
        nodes_max: 10,
    });
    let mut out = Vec::new();
    let obs = Observation {
        timestamp: 5_500,
        price: Some(1.0),
        volume: None,
        stress: None,
        status: "OK",
        metrics: &[],
    };
    rollup.push(0, "rim:a:b:1", 7, 100_000, &obs, &mut out);
    assert_eq!(rollup.open_windows(), 2);
    rollup.flush_idle(100_000 + 3_000, &mut out);
    assert!(out.is_empty(), "1 s + 2 s grace not yet exceeded");
    rollup.flush_idle(100_000 + 3_001, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].key.resolution, out[0].key.timestamp), (1, 5_000));
    assert_eq!(rollup.replay_from(0), Some(7), "the 60 s window is still open");
    // The closed 1 s window is not reopened by a late event for it.
    let late = rollup.push(0, "rim:a:b:1", 8, 103_002, &obs, &mut out);
    assert_eq!(late, PushOutcome::PartlyLate);
    rollup.flush_idle(103_002 + 62_001, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(stats_of(&out[1]).count, 2);
    assert_eq!(rollup.open_windows(), 0);
}

#[test]
fn nodes_max_is_enforced() {
    let mut rollup = Rollup::new(RollupConfig {
        resolutions: vec![1],
        grace_ms: 0,
        nodes_max: 2,
    });
    let mut out = Vec::new();
    let obs = Observation {
        timestamp: 0,
        price: None,
        volume: None,
        stress: None,
        status: "OK",
        metrics: &[],
    };
    assert_eq!(rollup.push(0, "rim:a:b:1", 0, 0, &obs, &mut out), PushOutcome::Accepted);
    assert_eq!(rollup.push(0, "rim:a:b:2", 1, 0, &obs, &mut out), PushOutcome::Accepted);
    assert_eq!(
        rollup.push(0, "rim:a:b:3", 2, 0, &obs, &mut out),
        PushOutcome::NodesFull
    );
    assert_eq!(rollup.refused_nodes_full(), 1);
    assert_eq!(rollup.push(0, "rim:a:b:1", 3, 0, &obs, &mut out), PushOutcome::Accepted);
}

/// A checkpoint restored into a new roll-up continues exactly as the original: the same
/// capsules close from the same later events, and garbage is refused, not trusted.
#[test]
fn checkpoint_restores_open_windows() {
    let cfg = RollupConfig {
        resolutions: vec![1, 60],
        grace_ms: 2_000,
        nodes_max: 1_000,
    };
    let metrics = [("load", 1.0), ("temp", 2.0)];
    let obs = |ts: i64, v: f64| Observation {
        timestamp: ts,
        price: Some(v),
        volume: Some(1.0),
        stress: None,
        status: "OK",
        metrics: &metrics,
    };
    let mut a = Rollup::new(cfg.clone());
    let mut out_a = Vec::new();
    for i in 0..500i64 {
        a.push(
            0,
            &format!("rim:a:b:n{}", i % 7),
            i as u64,
            0,
            &obs(1_000_000 + i * 37, i as f64),
            &mut out_a,
        );
    }
    let bytes = a.checkpoint().expect("serialises");
    let mut b = Rollup::restore(cfg.clone(), &bytes).expect("restores");
    assert_eq!(b.open_windows(), a.open_windows());
    let (mut tail_a, mut tail_b) = (Vec::new(), Vec::new());
    for i in 500..900i64 {
        let n = format!("rim:a:b:n{}", i % 7);
        a.push(0, &n, i as u64, 0, &obs(1_000_000 + i * 37, i as f64), &mut tail_a);
        b.push(0, &n, i as u64, 0, &obs(1_000_000 + i * 37, i as f64), &mut tail_b);
    }
    assert!(!tail_a.is_empty());
    assert_eq!(tail_a.len(), tail_b.len());
    for (x, y) in tail_a.iter().zip(&tail_b) {
        assert!(x.same_content(y), "{x:?} vs {y:?}");
    }
    let other = RollupConfig {
        resolutions: vec![1],
        ..cfg.clone()
    };
    assert!(matches!(
        Rollup::restore(other, &bytes),
        Err(CheckpointError::Resolutions { .. })
    ));
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(Rollup::restore(cfg.clone(), &bytes[..cut]).is_err(), "cut at {cut}");
    }
    assert!(Rollup::restore(
        cfg,
        b"{\"version\":9,\"resolutions\":[1,60],\"late_events\":0,\"nodes\":{}}"
    )
    .is_err());
}
