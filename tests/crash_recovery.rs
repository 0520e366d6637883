//! Durability across SIGKILL: a producer keeps a ledger of the events the daemon reported
//! durable (its ring's durable position); the daemon is killed at random moments under
//! load, restarted, and the producer resends whatever was not acknowledged. After every
//! restart and at the end, the journal must hold every acknowledged event exactly once
//! (0 lost, 0 duplicates), and every committed observed capsule must count exactly the
//! journaled events of its window (nothing rolled up twice).
//!
//! `RIM_KILLS` sets the number of kills (default 50), `RIM_CRASH_SEED` the seed (printed).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use common::*;
use rim_ring::{attach, PublishError};

const NODES: u64 = 40;
/// Unacknowledged events a producer keeps in flight at most: with 40 nodes that is ≤ 50
/// per node, inside the dedup window set below, so a resent event that did reach the
/// journal before the kill is recognised as a duplicate after the restart.
const INFLIGHT_MAX: usize = 2_000;
/// Checkpoints every 100 ms, so that kills fall both before and after checkpoints.
const SETS: &[&str] = &[
    "ingest.dedup_window=256",
    "persist.grace_ms=200",
    "persist.checkpoint_ms=100",
];

/// A rule firing on about one event in six (`load` is `id % 97`), so every life appends
/// decisions and each restart resumes the chain.
const RULES: &str = r#"
[[rule]]
id = "crash-load"
nodes = "rim:sensor:crash:*"
when = "metric.load > 80"
severity = "low"
"#;

fn node(id: u64) -> String {
    format!("rim:sensor:crash:n{}", id % NODES)
}

fn ts(id: u64) -> i64 {
    T0 + id as i64
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The producer side of one daemon's life: publishes (resends first), tracks
/// acknowledgements, and returns what was never acknowledged.
fn run_round(
    d: &Daemon,
    queue: &mut VecDeque<u64>,
    next: &mut u64,
    acked: &mut HashSet<u64>,
    run_for: Duration,
    allow_new: bool,
) {
    let mut p = attach::attach_producer(&d.socket(), "ledger", 1 << 20).expect("attach");
    let mut inflight: VecDeque<(u64, u64)> = VecDeque::new();
    let settle = |p: &rim_ring::Producer, inflight: &mut VecDeque<(u64, u64)>, acked: &mut HashSet<u64>| {
        let durable = p.durable_position();
        while let Some(&(id, pos)) = inflight.front() {
            if pos > durable {
                break;
            }
            acked.insert(id);
            inflight.pop_front();
        }
    };
    let t0 = Instant::now();
    // The last life (no new events) ends once everything is acknowledged.
    while t0.elapsed() < run_for && (allow_new || !(queue.is_empty() && inflight.is_empty())) {
        settle(&p, &mut inflight, acked);
        if inflight.len() >= INFLIGHT_MAX {
            std::thread::yield_now();
            continue;
        }
        let id = match queue.pop_front() {
            Some(id) => id,
            None if allow_new => {
                *next += 1;
                *next
            }
            None => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let mut ev = event(&node(id), ts(id), &[("load", (id % 97) as f64)]);
        ev.event_id = Some(format!("e{id}"));
        ev.price = Some(100.0 + (id % 13) as f64);
        match p.try_publish_event(&ev.as_ref()) {
            Ok(pos) => inflight.push_back((id, pos)),
            Err(PublishError::Full { .. }) => {
                queue.push_front(id);
                std::thread::yield_now();
            }
            Err(e) => panic!("publish: {e}"),
        }
    }
    // The header outlives the daemon: what it reported durable before it died stands.
    settle(&p, &mut inflight, acked);
    for (id, _) in inflight.into_iter().rev() {
        queue.push_front(id);
    }
    if !allow_new {
        p.close();
    }
}

/// Every event id in the journal with how often it appears, and per (node, 1 s window)
/// the number of events.
fn read_journal(data: &std::path::Path) -> (HashMap<u64, u32>, BTreeMap<(String, i64), u64>) {
    let dir = data.join("journal");
    let mut ids = HashMap::new();
    let mut windows = BTreeMap::new();
    {
        let part = rimd::persist::audit::STREAM_EVENTS;
        let mut r = rim_journal::Reader::open(&dir, part, 0, rim_journal::Fs::new()).expect("reader");
        while let Some((pos, bytes)) = r.next().expect("journal reads") {
            let rec = rim_journal::event::decode(bytes).unwrap_or_else(|e| panic!("s{part}@{pos}: {e}"));
            let id: u64 = rec
                .event_id
                .and_then(|s| s.strip_prefix('e'))
                .and_then(|s| s.parse().ok())
                .expect("id");
            *ids.entry(id).or_insert(0) += 1;
            *windows
                .entry((rec.rim_node_id.to_owned(), rec.timestamp.div_euclid(1000) * 1000))
                .or_insert(0) += 1;
        }
    }
    (ids, windows)
}

fn check_ledger(round: usize, ids: &HashMap<u64, u32>, acked: &HashSet<u64>) {
    let lost: Vec<u64> = acked.iter().filter(|id| !ids.contains_key(id)).copied().collect();
    let dup: Vec<(u64, u32)> = ids.iter().filter(|(_, &n)| n > 1).map(|(&i, &n)| (i, n)).collect();
    assert!(
        lost.is_empty(),
        "round {round}: {} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        dup.is_empty(),
        "round {round}: {} events journaled twice, e.g. {:?}",
        dup.len(),
        &dup[..dup.len().min(5)]
    );
}

/// The decision index walks every shard's chain with strictly increasing seqs: a restart
/// never indexes a decision twice (a second run over seqs already indexed reads as a chain
/// going back) nor reuses a seq.
fn check_decision_index(round: usize, data: &std::path::Path) {
    let store =
        rim_capsule::Store::open(&data.join("capsules.redb"), rim_capsule::StoreConfig::default()).expect("store");
    let log = rimd::persist::audit::DecisionLog::new(&data.join("journal"), std::sync::Arc::new(store));
    for shard in log.shards().expect("shards") {
        let decisions = log.decisions(shard, 0, usize::MAX).expect("decisions");
        for pair in decisions.windows(2) {
            assert!(
                pair[1].0 > pair[0].0,
                "round {round}: shard {shard}'s index goes from seq {} to {} ({} decisions indexed)",
                pair[0].0,
                pair[1].0,
                decisions.len()
            );
        }
    }
}

#[test]
fn sigkill_loop_loses_no_acknowledged_event() {
    let kills: usize = std::env::var("RIM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("RIM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("sigkill loop: {kills} kills, RIM_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut dir = TempDir::new("crash");
    let (mut queue, mut next, mut acked) = (VecDeque::new(), 0u64, HashSet::new());
    for round in 0..kills {
        let mut d = Daemon::start_in(dir, SETS, Some(RULES));
        let run_for = Duration::from_millis(5 + rng.next() % 120);
        let data = d.data_dir();
        run_round(&d, &mut queue, &mut next, &mut acked, run_for, true);
        d.kill9();
        dir = d.into_dir();
        // After every kill: what the producer holds as acknowledged is in the journal once.
        let (ids, _) = read_journal(&data);
        if std::env::var("RIM_DEBUG").is_ok() && ids.values().any(|&n| n > 1) {
            let dir = data.join("journal");
            let dups: HashSet<u64> = ids.iter().filter(|(_, &n)| n > 1).map(|(&i, _)| i).take(3).collect();
            {
                let part = rimd::persist::audit::STREAM_EVENTS;
                let mut r = rim_journal::Reader::open(&dir, part, 0, rim_journal::Fs::new()).unwrap();
                while let Some((pos, bytes)) = r.next().unwrap() {
                    let rec = rim_journal::event::decode(bytes).unwrap();
                    let id: u64 = rec.event_id.unwrap()[1..].parse().unwrap();
                    if dups.contains(&id) {
                        eprintln!("dup {id} at p{part}@{pos} recv {}", rec.received_ms);
                    }
                }
            }
            let store =
                rim_capsule::Store::open(&data.join("capsules.redb"), rim_capsule::StoreConfig::default()).unwrap();
            eprintln!("watermarks {:?}", store.watermarks().unwrap());
            eprintln!(
                "log:\n{}",
                std::fs::read_to_string(dir.parent().unwrap().parent().unwrap().join("rimd.log"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.contains("producer attached"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        check_ledger(round, &ids, &acked);
        check_decision_index(round, &data);
    }
    // A last life: resend what is left, wait until everything is acknowledged, stop cleanly.
    let mut d = Daemon::start_in(dir, SETS, Some(RULES));
    let data = d.data_dir();
    let total_before = next;
    run_round(&d, &mut queue, &mut next, &mut acked, SOON, false);
    assert!(
        queue.is_empty() && acked.len() as u64 == total_before,
        "not everything acknowledged within {SOON:?}: {} of {total_before}, {} queued",
        acked.len(),
        queue.len()
    );
    let status = d.sigterm();
    assert!(status.success(), "rimd exited with {status}");
    let (ids, windows) = read_journal(&data);
    check_ledger(kills, &ids, &acked);
    assert_eq!(ids.len() as u64, total_before, "every event published is journaled");
    eprintln!(
        "sigkill loop: {} events, {} acknowledged, 0 lost, 0 duplicates",
        ids.len(),
        acked.len()
    );

    // Roll-ups: no committed observed 1 s capsule counts more than its window's journaled
    // events (nothing rolled up twice; it may count fewer: a resent event whose window
    // had already closed is late and not rolled up).
    let store =
        rim_capsule::Store::open(&data.join("capsules.redb"), rim_capsule::StoreConfig::default()).expect("store");
    let (mut checked, mut exact) = (0, 0);
    for n in 0..NODES {
        let scope = node(n);
        let q = rim_capsule::HistoryQuery {
            scope_id: scope.clone(),
            resolution: 1,
            vantage: rim_capsule::Vantage::Observed,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: 1_000_000,
            descending: false,
        };
        for c in store.history(&q).expect("history") {
            let rim_capsule::CapsuleBody::Observed(o) = &c.body else {
                panic!("observed capsule with another body: {c:?}");
            };
            let expected = windows.get(&(scope.clone(), c.key.timestamp)).copied().unwrap_or(0);
            assert!(
                o.count <= expected && o.count > 0,
                "capsule {} {} counts {} events, the journal has {expected}",
                scope,
                c.key.timestamp,
                o.count
            );
            checked += 1;
            exact += usize::from(o.count == expected);
        }
    }
    assert!(checked > 0, "no observed capsule was committed");
    eprintln!("sigkill loop: {checked} observed capsules, none over-counted, {exact} exactly equal to the journal");
}
