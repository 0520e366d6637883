//! Guards the roll-up arithmetic against a straightforward reference: random seeded event
//! streams over several nodes and resolutions (some nodes with more metrics than a row keeps
//! inline) must give the same capsules (group by node and window, then
//! count/min/max/mean/last/OHLC/volume/stress/status), the same late counts; `replay_from`
//! must be a position from which a fresh roll-up rebuilds the open windows; a checkpoint
//! restored (even under other node indices) must continue exactly like the original.

mod common;

use std::collections::BTreeMap;

use common::Rng;
use rim_capsule::rollup::window_start;
use rim_capsule::{
    Capsule, CapsuleBody, CheckpointError, Closed, MetricStats, Observation, ObservedStats, Ohlc, PushOutcome, Rollup,
    RollupConfig, Texts,
};

const RESOLUTIONS: [u32; 3] = [1, 5, 60];
/// More names than a row keeps inline, so some series go to the overflow map.
const METRIC_NAMES: [&str; 11] = [
    "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lambda",
];

#[derive(Clone, Debug)]
struct Event {
    node_index: u32,
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
            // Node 0 uses every name (overflow); the others the first four.
            let names = if node == 0 {
                &METRIC_NAMES[..]
            } else {
                &METRIC_NAMES[..4]
            };
            for m in names {
                if rng.chance(0.5) {
                    metrics.push((m.to_string(), (rng.f64() * 200.0 - 100.0).round() / 4.0));
                }
            }
            Event {
                node_index: node as u32,
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

/// The key a text gets (as ingest's name hash would give it): never 1..=3.
fn key(text: &str) -> u64 {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    h.max(4)
}

struct EventTexts<'a>(&'a Event);

impl Texts for EventTexts<'_> {
    fn node_id(&self) -> &str {
        &self.0.node
    }
    fn status(&self) -> &str {
        &self.0.status
    }
    fn metric_name(&self, i: usize) -> &str {
        &self.0.metrics[i].0
    }
}

fn push_at(rollup: &mut Rollup, index: u32, e: &Event, out: &mut Vec<Capsule>) -> PushOutcome {
    let metrics: Vec<(u64, f64)> = e.metrics.iter().map(|(n, v)| (key(n), *v)).collect();
    let obs = Observation {
        timestamp: e.ts,
        price: e.price,
        volume: e.volume,
        stress: e.stress,
        status: key(&e.status),
        metrics: &metrics,
    };
    let mut closed = Vec::new();
    // As the journal thread does before a group of events: the node's own state, one
    // without state yet and one past every bound are named without effect or panic.
    for n in [index, index.saturating_add(1000), u32::MAX] {
        let mut lines = 0;
        rollup.touch(n, metrics.len(), |_| lines += 1);
        assert!(
            n < rollup.node_span() || lines == 0,
            "node {n} has no state, so no lines"
        );
    }
    let outcome = rollup.push(index, e.pos, e.arrival_ms, &obs, &EventTexts(e), &mut closed);
    let mut lines = 0;
    rollup.touch(index, metrics.len(), |_| lines += 1);
    assert!(
        index >= rollup.node_span() || lines > 0,
        "node {index} has state, so its next event's lines are named"
    );
    out.extend(capsules(rollup, &closed));
    outcome
}

/// The capsules of closed windows, as the store writer makes them.
fn capsules(rollup: &Rollup, closed: &[Closed]) -> Vec<Capsule> {
    closed
        .iter()
        .map(|c| rollup.names().capsule(c).expect("a known node"))
        .collect()
}

fn flush_idle(rollup: &mut Rollup, now_ms: u64, out: &mut Vec<Capsule>) {
    let mut closed = Vec::new();
    rollup.flush_idle(now_ms, &mut closed);
    out.extend(capsules(rollup, &closed));
}

fn push(rollup: &mut Rollup, e: &Event, out: &mut Vec<Capsule>) -> PushOutcome {
    push_at(rollup, e.node_index, e, out)
}

/// An event of node `node` (index = the number) with the given metrics.
fn simple(node: u32, pos: u64, arrival_ms: u64, ts: i64, price: Option<f64>, metrics: &[(&str, f64)]) -> Event {
    Event {
        node_index: node,
        node: format!("rim:a:b:{node}"),
        pos,
        arrival_ms,
        ts,
        price,
        volume: None,
        stress: None,
        status: "OK".into(),
        metrics: metrics.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
    }
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
        recent_ids: 0,
    }
}

/// One-second and one-minute windows for up to 4,000 nodes, keeping `recent_ids` ids each.
fn seconds_and_minutes(recent_ids: usize) -> RollupConfig {
    RollupConfig {
        resolutions: vec![1, 60],
        grace_ms: 2_000,
        nodes_max: 4_000,
        recent_ids,
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
        flush_idle(&mut rollup, u64::MAX / 2, &mut flushed);
        assert_eq!(flushed.len(), open.len());
        assert_eq!(rollup.open_windows(), 0);
        // Nodes are kept after their windows closed (their lateness bound stays).
        assert!(rollup.nodes() > 0);
        assert_eq!(rollup.replay_from(), None);
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
            let want = rollup.open_capsules(0);
            let Some(from) = rollup.replay_from() else {
                assert!(want.is_empty());
                continue;
            };
            assert!(events[..cut].iter().any(|e| e.pos == from), "replay_from is a position");
            let mut fresh = Rollup::new(cfg());
            for e in events[..cut].iter().filter(|e| e.pos >= from) {
                push(&mut fresh, e, &mut sink);
            }
            assert_eq!(fresh.open_capsules(0), want, "seed {seed} cut {cut}");
            // Starting one event later would lose a window's first event.
            let mut short = Rollup::new(cfg());
            for e in events[..cut].iter().filter(|e| e.pos > from) {
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

#[test]
fn flush_idle_waits_for_resolution_plus_grace() {
    let mut rollup = Rollup::new(RollupConfig {
        resolutions: vec![1, 60],
        grace_ms: 2000,
        nodes_max: 10,
        recent_ids: 0,
    });
    let mut out = Vec::new();
    let e = simple(0, 7, 100_000, 5_500, Some(1.0), &[]);
    push(&mut rollup, &e, &mut out);
    assert_eq!(rollup.open_windows(), 2);
    flush_idle(&mut rollup, 100_000 + 3_000, &mut out);
    assert!(out.is_empty(), "1 s + 2 s grace not yet exceeded");
    flush_idle(&mut rollup, 100_000 + 3_001, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].key.resolution, out[0].key.timestamp), (1, 5_000));
    assert_eq!(rollup.replay_from(), Some(7), "the 60 s window is still open");
    // The closed 1 s window is not reopened by a late event for it.
    let late = push(&mut rollup, &simple(0, 8, 103_002, 5_500, Some(1.0), &[]), &mut out);
    assert_eq!(late, PushOutcome::PartlyLate);
    flush_idle(&mut rollup, 103_002 + 62_001, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(stats_of(&out[1]).count, 2);
    assert_eq!(rollup.open_windows(), 0);
}

/// A roll-up of one-second windows only, closed by the next window's first event (no
/// grace), for up to `nodes_max` nodes.
fn one_second_windows(nodes_max: usize) -> Rollup {
    Rollup::new(RollupConfig {
        resolutions: vec![1],
        grace_ms: 0,
        nodes_max,
        recent_ids: 0,
    })
}

#[test]
fn nodes_max_is_enforced() {
    let mut rollup = one_second_windows(2);
    let mut out = Vec::new();
    for (node, pos, want) in [
        (0, 0, PushOutcome::Accepted),
        (1, 1, PushOutcome::Accepted),
        (2, 2, PushOutcome::NodesFull),
        (0, 3, PushOutcome::Accepted),
    ] {
        assert_eq!(push(&mut rollup, &simple(node, pos, 0, 0, None, &[]), &mut out), want);
    }
    assert_eq!(rollup.refused_nodes_full(), 1);
}

/// A prediction filed for a window is scored when that window closes (price against the
/// close, a metric against its mean), once; one for a window already closed is not.
#[test]
fn predictions_are_scored_when_their_window_closes() {
    let mut r = one_second_windows(10);
    let mut out = Vec::new();
    push(&mut r, &simple(3, 0, 0, 1_000, Some(10.0), &[("temp", 1.0)]), &mut out);
    assert!(r.expect(
        3,
        1,
        2_000,
        vec![(rim_capsule::KEY_PRICE, 12.0, 10.0), (key("temp"), 2.0, 1.0)],
        0
    ));
    push(&mut r, &simple(3, 1, 0, 2_100, Some(11.0), &[("temp", 3.0)]), &mut out);
    push(&mut r, &simple(3, 2, 0, 2_900, Some(13.0), &[("temp", 5.0)]), &mut out);
    assert_eq!(r.scored(), 0, "window 2000 is still open");
    push(&mut r, &simple(3, 3, 0, 3_000, Some(13.0), &[]), &mut out);
    assert_eq!(r.scored(), 1);
    let acc = r.accuracy_of(3);
    let price = acc.iter().find(|(n, _)| n == "price").expect("price scored").1;
    assert_eq!(
        (price.count, price.abs_err_sum, price.hits, price.directional),
        (1, 1.0, 1, 1)
    );
    let temp = acc.iter().find(|(n, _)| n == "temp").expect("temp scored").1;
    assert_eq!((temp.count, temp.abs_err_sum), (1, 2.0), "mean of 3 and 5 is 4");
    assert!(
        !r.expect(3, 1, 2_000, vec![(rim_capsule::KEY_PRICE, 1.0, 1.0)], 0),
        "window closed"
    );
    assert_eq!(r.unscored(), 1);
    // A prediction read after its window closed (a burst of events ahead of it) is scored
    // against what the window observed.
    push(&mut r, &simple(3, 4, 0, 4_000, Some(20.0), &[]), &mut out);
    assert!(!r.expect(3, 1, 3_000, vec![(rim_capsule::KEY_PRICE, 12.0, 10.0)], 0));
    assert_eq!((r.scored(), r.unscored()), (2, 1));
    let price = r
        .accuracy_of(3)
        .into_iter()
        .find(|(n, _)| n == "price")
        .expect("price")
        .1;
    assert_eq!(
        (price.count, price.abs_err_sum),
        (2, 2.0),
        "close of window 3000 was 13"
    );
}

fn restore_all(
    cfg: RollupConfig,
    cps: &[rim_capsule::Checkpoint],
    index_of: &mut dyn FnMut(&str) -> Option<u32>,
) -> Result<Rollup, CheckpointError> {
    // The store keeps the newest bytes of each chunk and the newest header.
    let mut chunks: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for cp in cps {
        for (c, b) in &cp.chunks {
            chunks.insert(*c, b.clone());
        }
    }
    let header = &cps.last().expect("a checkpoint").header;
    Rollup::restore(cfg, header, chunks.iter().map(|(c, b)| (*c, b.as_slice())), index_of)
}

/// A checkpoint restored into a new roll-up (here with the nodes numbered differently)
/// continues exactly as the original: the same capsules close from the same later events,
/// the same predictions are scored; garbage is refused, not trusted.
#[test]
fn checkpoint_restores_windows_predictions_and_accuracy() {
    let cfg = seconds_and_minutes(5);
    let events = gen_stream(seed() + 7, 6000, 7);
    let mut a = Rollup::new(cfg.clone());
    let mut out_a = Vec::new();
    let mut cps = Vec::new();
    for (i, e) in events[..4000].iter().enumerate() {
        push(&mut a, e, &mut out_a);
        a.note_id(e.node_index, e.pos + 1);
        if i % 97 == 0 {
            let next = rim_capsule::rollup::window_start(e.ts, 1) + 1000;
            a.expect(
                e.node_index,
                1,
                next,
                vec![(rim_capsule::KEY_PRICE, 100.0, 99.0)],
                i as u64,
            );
        }
        if i % 1000 == 999 {
            cps.push(a.checkpoint_all(e.pos + 1, i as u64 + 1, 0));
        }
    }
    assert!(a.scored() > 0);
    assert!(!a.changed());
    assert_eq!(a.watermarks(4000, 4000), (4000, 4000), "every chunk is stored");
    // Node i of the original is placed at 2000 + i: restoring must not depend on indices.
    let mut index_of = |name: &str| name.rsplit(':').next()?.parse::<u32>().ok().map(|i| 2000 + i);
    let mut b = restore_all(cfg.clone(), &cps, &mut index_of).expect("restores");
    assert_eq!(b.open_windows(), a.open_windows());
    assert_eq!((b.scored(), b.late()), (a.scored(), a.late()));
    for n in 0..7u32 {
        assert_eq!(b.accuracy_of(2000 + n), a.accuracy_of(n), "node {n}");
        // The dedup windows' ids: the newest five of each node, oldest first.
        let ids: Vec<u64> = a.recent_ids(n).collect();
        let want: Vec<u64> = events[..4000]
            .iter()
            .filter(|e| e.node_index == n)
            .map(|e| e.pos + 1)
            .collect();
        assert_eq!(ids, want[want.len() - 5..], "node {n}");
        assert_eq!(b.recent_ids(2000 + n).collect::<Vec<_>>(), ids, "node {n} restored");
    }
    // A roll-up keeping fewer ids keeps the newest of them.
    let fewer = RollupConfig {
        recent_ids: 2,
        ..cfg.clone()
    };
    let c = restore_all(fewer, &cps, &mut index_of).expect("restores");
    let ids: Vec<u64> = a.recent_ids(3).collect();
    assert_eq!(c.recent_ids(2003).collect::<Vec<_>>(), ids[3..]);
    let (mut tail_a, mut tail_b) = (Vec::new(), Vec::new());
    for e in &events[4000..] {
        let pa = push(&mut a, e, &mut tail_a);
        let pb = push_at(&mut b, 2000 + e.node_index, e, &mut tail_b);
        assert_eq!(pa, pb);
    }
    assert!(!tail_a.is_empty());
    assert_eq!(tail_a.len(), tail_b.len());
    for (x, y) in tail_a.iter().zip(&tail_b) {
        assert!(x.same_content(y), "{x:?} vs {y:?}");
    }
    assert_eq!(b.scored(), a.scored());

    let other = RollupConfig {
        resolutions: vec![1],
        ..cfg.clone()
    };
    let mut same = |name: &str| name.rsplit(':').next()?.parse::<u32>().ok();
    assert!(matches!(
        restore_all(other, &cps, &mut same),
        Err(CheckpointError::Resolutions { .. })
    ));
    // Every truncation of the header and of a chunk is refused, never a panic.
    a.mark_all_changed();
    let full = a.checkpoint_all(6000, 6000, 0);
    let mut all = cps.clone();
    all.push(full);
    let last = all.last().expect("one").clone();
    for cut in [0, 1, last.header.len() / 2, last.header.len() - 1] {
        let r = Rollup::restore(cfg.clone(), &last.header[..cut], std::iter::empty(), &mut same);
        assert!(r.is_err(), "header cut at {cut}");
    }
    let chunk = &last.chunks[0].1;
    for cut in (0..chunk.len()).step_by(chunk.len() / 50 + 1) {
        let r = Rollup::restore(cfg.clone(), &last.header, [(0, &chunk[..cut])], &mut same);
        assert!(r.is_err(), "chunk cut at {cut}");
    }
    // A node the caller cannot place (its node table is full) is an error.
    let mut none = |_: &str| None;
    assert!(matches!(
        Rollup::restore(cfg, &last.header, [(0, &chunk[..])], &mut none),
        Err(CheckpointError::NodeNotPlaced(_))
    ));
}

/// The closed windows kept for late predictions are bounded (1,024 at this size): past
/// the bound the oldest to close go first, one for each that comes, so a late prediction
/// of a window just past the bound is counted unscored and one of the oldest kept window
/// is still scored. Keys taken by late predictions do not keep a live window from its
/// turn, and what is kept after many of them is still the newest windows.
#[test]
fn the_oldest_unscored_windows_go_first_past_the_bound() {
    let mut r = one_second_windows(10);
    let mut out = Vec::new();
    let late = |r: &mut Rollup, window_ms: i64| {
        assert!(!r.expect(1, 1, window_ms, vec![(rim_capsule::KEY_PRICE, 12.0, 10.0)], 0));
        (r.scored(), r.unscored())
    };
    // 1,300 one-second windows of node 1 close (0 to 1,299 s), none with a prediction
    // waiting: the first 276 go, one per close past 1,024 (dropping the older half at
    // once, as before, kept only windows from 513 s on).
    for s in 0..=1_300u64 {
        push(&mut r, &simple(1, s, 0, s as i64 * 1_000, Some(10.0), &[]), &mut out);
    }
    assert_eq!(late(&mut r, 275_000), (0, 1), "window 275 s went");
    assert_eq!(
        late(&mut r, 276_000),
        (1, 1),
        "window 276 s, the oldest kept, is scored"
    );
    assert_eq!(
        late(&mut r, 276_000),
        (1, 2),
        "taken by its prediction, not scored twice"
    );
    // Late predictions take every window kept, then 2,000 more windows close and each is
    // taken at once (the order of kept windows is then mostly taken keys, cleared a
    // couple per close); then 1,100 close and stay: the newest 1,024 are kept.
    for w in 277..1_300i64 {
        late(&mut r, w * 1_000);
    }
    for s in 1_301..=3_300u64 {
        push(&mut r, &simple(1, s, 0, s as i64 * 1_000, Some(10.0), &[]), &mut out);
        late(&mut r, (s as i64 - 1) * 1_000);
    }
    assert_eq!(
        (r.scored(), r.unscored()),
        (1 + 1_023 + 2_000, 2),
        "every late one scored"
    );
    for s in 3_301..=4_400u64 {
        push(&mut r, &simple(1, s, 0, s as i64 * 1_000, Some(10.0), &[]), &mut out);
    }
    let (scored, unscored) = (r.scored(), r.unscored());
    assert_eq!(
        late(&mut r, 4_399_000),
        (scored + 1, unscored),
        "the newest closed window is kept"
    );
    assert_eq!(
        late(&mut r, 3_376_000),
        (scored + 2, unscored),
        "1,024 windows are kept"
    );
    assert_eq!(late(&mut r, 3_375_000), (scored + 2, unscored + 1), "and no more");
}

/// A deferred roll-up (the journal thread's) settles its closes and filings later, a few
/// at a time, and ends exactly where one that settles each at once does: the same
/// capsules, scores, accuracy and checkpoint. While work waits, no chunk is encoded.
#[test]
fn deferred_settling_ends_where_settling_at_once_does() {
    let cfg = seconds_and_minutes(0);
    let events = gen_stream(seed() + 11, 8000, 9);
    let mut now = Rollup::new(cfg.clone());
    let mut later = Rollup::new(cfg);
    later.set_deferred(true);
    let (mut out_now, mut out_later) = (Vec::new(), Vec::new());
    let mut rng = Rng(seed() + 12);
    let mut waited = 0;
    let mut settled = Vec::new();
    for (i, e) in events.iter().enumerate() {
        push(&mut now, e, &mut out_now);
        push(&mut later, e, &mut out_later);
        // Predictions of the next window (filed before it closes), of the window just
        // left (after it closed: scored from what it observed) and of one long gone.
        if i % 7 == 0 {
            let this = window_start(e.ts, 1);
            for (k, window) in [this + 1000, this - 1000, this - 60_000].into_iter().enumerate() {
                let series = vec![
                    (rim_capsule::KEY_PRICE, 100.0 + k as f64, 99.0),
                    (key("alpha"), 1.0, 0.5),
                ];
                let filed_now = now.expect(e.node_index, 1, window, series.clone(), i as u64);
                let filed_later = later.expect(e.node_index, 1, window, series, i as u64);
                assert_eq!(filed_now, filed_later, "event {i} window {window}");
            }
        }
        waited = waited.max(later.unsettled());
        if later.unsettled() > 0 {
            assert!(
                later.checkpoint_step(e.pos + 1, i as u64 + 1, 0, 0).is_none(),
                "no chunk is encoded while closes wait"
            );
        }
        if rng.chance(0.3) {
            let before = later.unsettled();
            let budget = rng.below(4) as usize;
            let n = later.settle(budget, &mut settled);
            assert_eq!(n, budget.min(before), "settles what the budget allows");
            out_later.extend(capsules(&later, &settled));
            settled.clear();
        }
    }
    assert!(waited > 10, "work waited ({waited} at most)");
    later.settle(usize::MAX, &mut settled);
    out_later.extend(capsules(&later, &settled));
    assert_eq!(later.unsettled(), 0);
    assert!(now.scored() > 100, "predictions were scored: {}", now.scored());
    assert_eq!((later.scored(), later.unscored()), (now.scored(), now.unscored()));
    let mut a = out_now;
    let mut b = out_later;
    let order = |c: &Capsule| (c.key.scope_id.clone(), c.key.resolution, c.key.timestamp);
    a.sort_by_key(order);
    b.sort_by_key(order);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.same_content(y), "{x:?} vs {y:?}");
    }
    for n in 0..9 {
        assert_eq!(later.accuracy_of(n), now.accuracy_of(n), "node {n}");
    }
    let (cp_now, cp_later) = (now.checkpoint_all(8000, 8000, 0), later.checkpoint_all(8000, 8000, 0));
    assert_eq!(cp_now, cp_later);
}

/// Past its bound, a deferred roll-up settles the oldest work first: what waits stays
/// bounded however long the caller does not settle, and nothing is lost.
#[test]
fn deferred_work_stays_bounded_when_never_settled() {
    let cfg = RollupConfig {
        resolutions: vec![1],
        grace_ms: 2_000,
        nodes_max: 40_000,
        recent_ids: 0,
    };
    let mut r = Rollup::new(cfg);
    r.set_deferred(true);
    let mut handed_out = Vec::new();
    let nodes = 20_000u32;
    // Two seconds of one event per node: the second closes every node's first window.
    for (i, ts) in [1_700_000_000_000i64, 1_700_000_001_000].into_iter().enumerate() {
        for n in 0..nodes {
            let e = simple(n, u64::from(n) + i as u64 * 100_000, 10_000, ts, Some(1.0), &[]);
            push(&mut r, &e, &mut handed_out);
            assert!(r.unsettled() <= 1 << 14, "{} wait", r.unsettled());
        }
    }
    assert!(!handed_out.is_empty(), "past the bound, closes were settled on the way");
    let mut rest = Vec::new();
    r.settle(usize::MAX, &mut rest);
    assert_eq!(r.unsettled(), 0);
    handed_out.extend(capsules(&r, &rest));
    let mut scopes: Vec<String> = handed_out.iter().map(|c| c.key.scope_id.clone()).collect();
    scopes.sort();
    scopes.dedup();
    assert_eq!(handed_out.len(), nodes as usize, "every node's first window");
    assert_eq!(scopes.len(), nodes as usize, "once each");
}

/// `checkpoint_due_in` tells an idle caller when to wake for the next checkpoint step: never
/// while no chunk changed, now for a changed chunk never encoded, and for a chunk changed
/// again after an encoding, when its age reaches the minimum.
#[test]
fn checkpoint_due_in_says_when_the_next_chunk_is_due() {
    let mut rollup = one_second_windows(2 * rim_capsule::rollup::CHUNK_NODES);
    let mut out = Vec::new();
    assert_eq!(rollup.checkpoint_due_in(10_000, 2_000), None, "nothing changed");
    push(&mut rollup, &simple(0, 0, 0, 0, None, &[]), &mut out);
    assert_eq!(
        rollup.checkpoint_due_in(10_000, 2_000),
        Some(0),
        "a chunk never encoded"
    );
    let cp = rollup
        .checkpoint_step(1, 0, 10_000, 2_000)
        .expect("the chunk is encoded");
    assert_eq!(cp.chunks.len(), 1);
    assert_eq!(rollup.checkpoint_due_in(10_500, 2_000), None, "nothing changed since");
    push(&mut rollup, &simple(0, 1, 0, 10, None, &[]), &mut out);
    assert_eq!(
        rollup.checkpoint_due_in(10_500, 2_000),
        Some(1_500),
        "due 2 s after its encoding"
    );
    assert!(rollup.checkpoint_step(2, 0, 10_500, 2_000).is_none(), "not due yet");
    assert_eq!(rollup.checkpoint_due_in(12_000, 2_000), Some(0));
    assert!(rollup.checkpoint_step(2, 0, 12_000, 2_000).is_some(), "due now");
}
