//! Guards "all or nothing per batch, and Ok means durable": batches are written through a
//! backend whose durability freezes at the k-th sync, for every k; the durable image reopened
//! must pass redb's integrity check, hold every batch acknowledged before the freeze, and hold
//! each batch entirely or not at all. Seed printed; override with `RIM_CRASH_SEED`.

mod common;

use common::{observed, predicted, Rng};
use rim_capsule::{AccuracyAgg, Batch, Checkpoint, DecisionRun, FaultyBackend, Store, StoreConfig, Watermark};

const BATCHES: usize = 10;
const SCOPE: &str = "rim:crash:test:1";

fn batches(seed: u64) -> Vec<Batch> {
    let mut rng = Rng(seed);
    (0..BATCHES)
        .map(|b| {
            let n = 1 + rng.below(300) as usize;
            let mut capsules = Vec::with_capacity(n);
            for i in 0..n {
                let node = format!("rim:crash:n{}:{}", b, rng.below(20));
                let ts = (b * 100_000 + i * 1000) as i64;
                if rng.chance(0.8) {
                    capsules.push(observed(&node, ts, 1, 1 + rng.below(9)));
                } else {
                    capsules.push(predicted(&node, ts, 1, rng.f64()));
                }
            }
            Batch {
                capsules,
                decision_runs: vec![DecisionRun {
                    shard: 0,
                    first_seq: b as u64,
                    last_seq: b as u64,
                    pos: b as u64 * 64,
                    count: 1,
                }],
                watermarks: vec![Watermark {
                    stream: 0,
                    replay_from: b as u64,
                    committed_to: b as u64 + 1,
                }],
                // The checkpoint carries the accuracy so far: batch b has b + 1 scores.
                checkpoint: Some(Checkpoint {
                    header: format!("checkpoint {}", b + 1).into_bytes(),
                    chunks: vec![(b as u32 % 3, format!("chunk of batch {b}").into_bytes())],
                    chunk_count: 3,
                    accuracy: vec![(
                        SCOPE.into(),
                        vec![(
                            "price".into(),
                            AccuracyAgg {
                                count: b as u64 + 1,
                                ..AccuracyAgg::default()
                            },
                        )],
                    )],
                }),
            }
        })
        .collect()
}

/// Which of the batch's parts the store holds: (capsules present, total, decision, etc.).
fn presence(store: &Store, b: usize, batch: &Batch) -> (usize, usize, bool) {
    let present = batch
        .capsules
        .iter()
        .filter(|c| match store.get(&c.id()).expect("read capsule") {
            Some(stored) => {
                assert!(stored.same_content(c), "batch {b}: stored capsule differs");
                true
            }
            None => false,
        })
        .count();
    let runs = store.decision_runs(0, b as u64, 1).expect("read the decision index");
    let decision = runs.first().is_some_and(|r| r.first_seq == b as u64);
    (present, batch.capsules.len(), decision)
}

/// Runs all batches over a backend whose first `allowed` syncs persist; returns whether the
/// store's creation was durable, how many batches were acknowledged before the freeze, and
/// the backend handle.
fn run(batches: &[Batch], allowed: u64) -> (bool, usize, FaultyBackend) {
    let handle = FaultyBackend::new(FaultyBackend::gate_after(allowed));
    let Ok(store) = Store::open_with_backend(handle.clone(), StoreConfig::default()) else {
        return (false, 0, handle);
    };
    let created = !handle.is_frozen();
    let mut acked = 0;
    for batch in batches {
        let result = store.write(batch);
        if result.is_ok() && !handle.is_frozen() {
            acked += 1;
        }
    }
    (created, acked, handle)
}

fn seed() -> u64 {
    std::env::var("RIM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xDEC0DE)
}

#[test]
fn every_acknowledged_batch_survives_and_none_is_partial() {
    let seed = seed();
    println!("crash_consistency seed {seed} (override with RIM_CRASH_SEED)");
    let batches = batches(seed);

    let (_, acked_all, reliable) = run(&batches, u64::MAX);
    assert_eq!(acked_all, BATCHES);
    let total_syncs = reliable.syncs();
    println!("a full run syncs {total_syncs} times");

    for allowed in 0..=total_syncs {
        let (created, acked, handle) = run(&batches, allowed);
        let mut store = match Store::open_with_backend(handle.crashed(), StoreConfig::default()) {
            Ok(s) => s,
            // A crash while redb is still creating the file leaves a file that is not a
            // database yet; nothing was acknowledged, and redb refuses it rather than guess.
            Err(e) if !created => {
                println!("k {allowed}: creation interrupted, reopen refused: {e}");
                continue;
            }
            Err(e) => panic!("seed {seed} freeze after {allowed} syncs: reopen failed: {e}"),
        };
        assert!(
            store.check_integrity().expect("integrity check runs"),
            "seed {seed} k {allowed}"
        );

        let mut present_batches = 0;
        for (b, batch) in batches.iter().enumerate() {
            let (present, total, decision) = presence(&store, b, batch);
            let whole = present == total && decision;
            let none = present == 0 && !decision;
            assert!(
                whole || none,
                "seed {seed} k {allowed}: batch {b} partial ({present}/{total} capsules, decision {decision})"
            );
            if b < acked {
                assert!(whole, "seed {seed} k {allowed}: acknowledged batch {b} lost");
            }
            if whole {
                assert_eq!(present_batches, b, "seed {seed} k {allowed}: batches land in order");
                present_batches += 1;
            }
        }
        // The accuracy and the watermark moved with their batches.
        let acc = store.accuracy(SCOPE).unwrap();
        let count = acc.first().map_or(0, |(_, _, a)| a.count);
        assert_eq!(count, present_batches as u64, "seed {seed} k {allowed}: accuracy");
        let wm = store.watermarks().unwrap();
        let committed_to = wm.first().map_or(0, |w| w.committed_to);
        assert_eq!(
            committed_to, present_batches as u64,
            "seed {seed} k {allowed}: watermark"
        );
        // The roll-up checkpoint is the one written with those watermarks: its header, and
        // each chunk as the newest batch that wrote it left it.
        let cp = store.checkpoint().unwrap();
        let expected_cp = (present_batches > 0).then(|| {
            let header = format!("checkpoint {present_batches}").into_bytes();
            let chunks = (0..3u32)
                .filter_map(|c| {
                    (0..present_batches)
                        .rev()
                        .find(|b| *b as u32 % 3 == c)
                        .map(|b| (c, format!("chunk of batch {b}").into_bytes()))
                })
                .collect::<Vec<_>>();
            (header, chunks)
        });
        assert_eq!(cp, expected_cp, "seed {seed} k {allowed}: checkpoint");
        let expected: usize = batches[..present_batches].iter().map(|b| b.capsules.len()).sum();
        assert_eq!(store.counts().unwrap().capsules, expected as u64);

        // The recovered store takes writes, and replaying everything is idempotent.
        for batch in &batches {
            let out = store.write(batch).expect("write after recovery");
            assert!(out.conflicts.is_empty());
        }
        assert_eq!(
            store.counts().unwrap().capsules,
            batches.iter().map(|b| b.capsules.len() as u64).sum::<u64>()
        );
    }
}
