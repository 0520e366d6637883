//! Guards the store's query surface: history ranges (bounds, order, limit, isolation between
//! scopes/resolutions/vantages), get by id, the decision index, accuracy and checkpoint rows, watermarks,
//! retention per resolution, and counts.

mod common;

use common::{mem_store, named, observed, predicted};
use rim_capsule::{AccuracyAgg, Batch, Checkpoint, DecisionRun, HistoryQuery, Store, StoreConfig, Vantage, Watermark};

const S: &str = "rim:sensor:plant:1";

fn seed_history(store: &Store) {
    let mut capsules = Vec::new();
    for i in 0..20i64 {
        capsules.push(observed(S, i * 1000, 1, i as u64 + 1));
        capsules.push(observed("rim:sensor:plant:2", i * 1000, 1, 1));
        capsules.push(predicted(S, i * 1000, 1, 100.0 + i as f64));
    }
    for i in 0..3i64 {
        capsules.push(observed(S, i * 60_000, 60, 7));
    }
    capsules.push(named(S, 5000, "MANUAL", serde_json::json!({"note": "x"})));
    let out = store
        .write(&Batch {
            capsules,
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(out.inserted, 64);
}

fn q(resolution: u32, vantage: Vantage, from_ms: i64, to_ms: i64, limit: usize, descending: bool) -> HistoryQuery {
    HistoryQuery {
        scope_id: S.into(),
        resolution,
        vantage,
        from_ms,
        to_ms,
        limit,
        descending,
    }
}

fn starts(v: &[rim_capsule::Capsule]) -> Vec<i64> {
    v.iter().map(|c| c.key.timestamp).collect()
}

#[test]
fn history_range_bounds_order_limit_and_isolation() {
    let store = mem_store();
    seed_history(&store);

    let got = store.history(&q(1, Vantage::Observed, 3000, 7000, 100, false)).unwrap();
    assert_eq!(starts(&got), vec![3000, 4000, 5000, 6000], "half-open [from, to)");
    assert!(got
        .iter()
        .all(|c| c.key.scope_id == S && c.key.resolution == 1 && c.key.vantage == Vantage::Observed));

    let got = store.history(&q(1, Vantage::Observed, 3000, 7000, 100, true)).unwrap();
    assert_eq!(starts(&got), vec![6000, 5000, 4000, 3000]);

    let got = store
        .history(&q(1, Vantage::Observed, i64::MIN, i64::MAX, 3, true))
        .unwrap();
    assert_eq!(starts(&got), vec![19000, 18000, 17000]);
    let got = store
        .history(&q(1, Vantage::Observed, i64::MIN, i64::MAX, 3, false))
        .unwrap();
    assert_eq!(starts(&got), vec![0, 1000, 2000]);

    let got = store
        .history(&q(60, Vantage::Observed, 0, i64::MAX, 100, false))
        .unwrap();
    assert_eq!(starts(&got), vec![0, 60_000, 120_000]);

    let got = store.history(&q(1, Vantage::Predicted, 0, 2000, 100, false)).unwrap();
    assert_eq!(starts(&got), vec![0, 1000]);
    assert!(got.iter().all(|c| c.key.vantage == Vantage::Predicted));

    let manual = Vantage::parse("MANUAL").unwrap();
    let got = store.history(&q(60, manual, 0, 10_000, 100, false)).unwrap();
    assert_eq!(starts(&got), vec![5000]);

    assert!(store
        .history(&q(1, Vantage::Observed, 7000, 7000, 100, false))
        .unwrap()
        .is_empty());
    assert!(store
        .history(&q(1, Vantage::Observed, 7000, 3000, 100, false))
        .unwrap()
        .is_empty());
    assert!(store
        .history(&q(1, Vantage::Observed, 0, 7000, 0, false))
        .unwrap()
        .is_empty());
    assert!(store
        .history(&q(5, Vantage::Observed, 0, i64::MAX, 100, false))
        .unwrap()
        .is_empty());

    let mut other = q(1, Vantage::Observed, 0, i64::MAX, 100, false);
    other.scope_id = "rim:sensor:plant:2".into();
    assert_eq!(store.history(&other).unwrap().len(), 20);
    other.scope_id = "rim:sensor:plant:".into(); // a prefix is another scope
    assert!(store.history(&other).unwrap().is_empty());
}

#[test]
fn get_by_id_and_delete() {
    let store = mem_store();
    seed_history(&store);
    let c = observed(S, 4000, 1, 5);
    assert_eq!(store.get(&c.id()).unwrap().unwrap(), c);
    assert!(store.get(&observed(S, 999_000, 1, 1).id()).unwrap().is_none());

    assert!(store.delete(&c.id()).unwrap());
    assert!(!store.delete(&c.id()).unwrap());
    assert!(store.get(&c.id()).unwrap().is_none());
    let got = store.history(&q(1, Vantage::Observed, 3000, 6000, 100, false)).unwrap();
    assert_eq!(starts(&got), vec![3000, 5000]);
    assert_eq!(store.counts().unwrap().capsules, 63);
}

fn run(shard: u16, first_seq: u64, last_seq: u64, pos: u64) -> DecisionRun {
    DecisionRun {
        shard,
        first_seq,
        last_seq,
        pos,
        count: (last_seq - first_seq + 1) as u32,
    }
}

#[test]
fn the_decision_index_finds_the_run_holding_a_seq() {
    let store = mem_store();
    assert!(store.last_decision_run(0).unwrap().is_none());
    let mut batch = Batch::default();
    batch.decision_runs.push(run(0, 1, 10, 0));
    batch.decision_runs.push(run(1, 1, 4, 64));
    store.write(&batch).unwrap();
    batch.clear();
    batch.decision_runs.push(run(0, 11, 30, 4096));
    batch.decision_runs.push(run(0, 31, 31, 9000));
    store.write(&batch).unwrap();

    // The run that holds seq 12, then the ones after it.
    let got = store.decision_runs(0, 12, 10).unwrap();
    assert_eq!(got, vec![run(0, 11, 30, 4096), run(0, 31, 31, 9000)]);
    assert_eq!(store.decision_runs(0, 0, 10).unwrap().len(), 3);
    assert_eq!(store.decision_runs(0, 1, 1).unwrap(), vec![run(0, 1, 10, 0)]);
    assert!(store.decision_runs(0, 32, 10).unwrap().is_empty());
    assert!(store.decision_runs(2, 0, 10).unwrap().is_empty());
    assert_eq!(store.decision_runs(1, 3, 10).unwrap(), vec![run(1, 1, 4, 64)]);
    assert_eq!(store.last_decision_run(0).unwrap(), Some(run(0, 31, 31, 9000)));
    assert_eq!(store.decision_shards().unwrap(), vec![0, 1]);
    assert_eq!(store.counts().unwrap().decision_runs, 4);
}

#[test]
fn a_run_written_again_shorter_keeps_its_longer_row() {
    let store = mem_store();
    let mut batch = Batch::default();
    batch.decision_runs.push(run(0, 1, 150, 0));
    store.write(&batch).unwrap();
    batch.clear();
    // An older version of the same run, arriving late.
    batch.decision_runs.push(run(0, 1, 100, 0));
    store.write(&batch).unwrap();
    assert_eq!(store.decision_runs(0, 1, 10).unwrap(), vec![run(0, 1, 150, 0)]);
    batch.clear();
    // A newer one still replaces it.
    batch.decision_runs.push(run(0, 1, 151, 0));
    store.write(&batch).unwrap();
    assert_eq!(store.last_decision_run(0).unwrap(), Some(run(0, 1, 151, 0)));
    // Both versions in one batch, the shorter last: the longer stays.
    batch.clear();
    batch.decision_runs.push(run(0, 200, 260, 5000));
    batch.decision_runs.push(run(0, 200, 230, 5000));
    store.write(&batch).unwrap();
    assert_eq!(store.last_decision_run(0).unwrap(), Some(run(0, 200, 260, 5000)));
}

fn agg(count: u64, abs: f64, hits: u64, directional: u64) -> AccuracyAgg {
    AccuracyAgg {
        count,
        abs_err_sum: abs,
        rel_err_sum: abs / 10.0,
        hits,
        directional,
    }
}

#[test]
fn accuracy_rows_come_with_the_checkpoint_and_the_newest_wins() {
    let store = mem_store();
    let cp = |accuracy: Vec<(String, Vec<(String, AccuracyAgg)>)>| Checkpoint {
        header: b"h".to_vec(),
        chunks: Vec::new(),
        chunk_count: 0,
        accuracy,
    };
    let mut batch = Batch {
        checkpoint: Some(cp(vec![
            (
                S.into(),
                vec![
                    ("volume".into(), agg(1, 4.0, 0, 0)),
                    ("price".into(), agg(2, 4.0, 1, 2)),
                ],
            ),
            ("rim:other:x:1".into(), vec![("price".into(), agg(1, 100.0, 1, 1))]),
        ])),
        ..Batch::default()
    };
    store.write(&batch).unwrap();
    batch.checkpoint = Some(cp(vec![(
        S.into(),
        vec![
            ("price".into(), agg(3, 6.0, 2, 3)),
            ("volume".into(), agg(1, 4.0, 0, 0)),
        ],
    )]));
    store.write(&batch).unwrap();

    let acc = store.accuracy(S).unwrap();
    let names: Vec<(&str, &str)> = acc.iter().map(|(p, s, _)| (p.as_str(), s.as_str())).collect();
    assert_eq!(names, vec![("ewma", "price"), ("ewma", "volume")]);
    let price = acc[0].2;
    assert_eq!(price.count, 3);
    assert!((price.mean_abs_err().unwrap() - 2.0).abs() < 1e-12);
    assert!((price.hit_rate().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(acc[1].2.hit_rate(), None);
    assert_eq!(store.accuracy("rim:other:x:1").unwrap().len(), 1);
    assert!(store.accuracy("rim:other:x:").unwrap().is_empty());
    assert_eq!(store.counts().unwrap().accuracy_rows, 2);
}

#[test]
fn checkpoint_chunks_are_replaced_and_stale_ones_dropped() {
    let store = mem_store();
    assert!(store.checkpoint().unwrap().is_none());
    let cp = |chunks: Vec<(u32, &str)>, chunk_count: u32| Checkpoint {
        header: format!("header {chunk_count}").into_bytes(),
        chunks: chunks.into_iter().map(|(c, t)| (c, t.as_bytes().to_vec())).collect(),
        chunk_count,
        accuracy: Vec::new(),
    };
    let write = |c| {
        store
            .write(&Batch {
                checkpoint: Some(c),
                ..Batch::default()
            })
            .unwrap()
    };
    write(cp(vec![(0, "a0"), (1, "a1"), (2, "a2")], 3));
    write(cp(vec![(1, "b1")], 3));
    let (header, chunks) = store.checkpoint().unwrap().expect("a checkpoint");
    assert_eq!(header, b"header 3");
    assert_eq!(
        chunks,
        vec![(0, b"a0".to_vec()), (1, b"b1".to_vec()), (2, b"a2".to_vec())]
    );
    // A roll-up spanning fewer chunks (a restart that renumbered nodes) drops the rest.
    write(cp(vec![(0, "c0")], 1));
    assert_eq!(
        store.checkpoint().unwrap().expect("a checkpoint").1,
        vec![(0, b"c0".to_vec())]
    );
}

#[test]
fn watermarks_are_set_and_replaced() {
    let store = mem_store();
    assert!(store.watermarks().unwrap().is_empty());
    let mut batch = Batch::default();
    batch.watermarks.push(Watermark {
        stream: 3,
        replay_from: 10,
        committed_to: 20,
    });
    batch.watermarks.push(Watermark {
        stream: 1,
        replay_from: 5,
        committed_to: 7,
    });
    store.write(&batch).unwrap();
    batch.clear();
    batch.watermarks.push(Watermark {
        stream: 3,
        replay_from: 15,
        committed_to: 40,
    });
    store.write(&batch).unwrap();
    assert_eq!(
        store.watermarks().unwrap(),
        vec![
            Watermark {
                stream: 1,
                replay_from: 5,
                committed_to: 7
            },
            Watermark {
                stream: 3,
                replay_from: 15,
                committed_to: 40
            },
        ]
    );
}

#[test]
fn retention_is_per_resolution_and_bounded() {
    const DAY: i64 = 86_400_000;
    let cfg = StoreConfig::default();
    let store = Store::open_with_backend(redb::backends::InMemoryBackend::new(), cfg).unwrap();
    let mut capsules = Vec::new();
    for i in 0..10i64 {
        capsules.push(observed(S, i * 1000, 1, 1)); // 1 s: kept one day
        capsules.push(observed(S, i * 60_000, 60, 1)); // 60 s: kept 30 days
        capsules.push(predicted(S, i * 1000, 1, 1.0)); // predicted 1 s: one day
        capsules.push(named(S, i * 1000, "MANUAL", serde_json::json!(i))); // API: 30 days
    }
    store
        .write(&Batch {
            capsules,
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.counts().unwrap().capsules, 40);

    // Just before the 1 s windows expire: nothing goes.
    let r = store.retain(DAY - 1).unwrap();
    assert_eq!((r.deleted, r.more), (0, false));

    // Two days later the 1 s observed and predicted capsules go, in bounded steps.
    let r = store.retain_bounded(2 * DAY, 15).unwrap();
    assert_eq!((r.deleted, r.more), (15, true));
    let r = store.retain_bounded(2 * DAY, 15).unwrap();
    assert_eq!((r.deleted, r.more), (5, false));
    assert_eq!(store.counts().unwrap().capsules, 20);
    let all = |res, v| {
        store
            .history(&q(res, v, i64::MIN, i64::MAX, 1000, false))
            .unwrap()
            .len()
    };
    assert_eq!(all(1, Vantage::Observed), 0);
    assert_eq!(all(1, Vantage::Predicted), 0);
    assert_eq!(all(60, Vantage::Observed), 10);
    assert_eq!(all(60, Vantage::parse("MANUAL").unwrap()), 10);
    assert!(store.get(&observed(S, 0, 1, 1).id()).unwrap().is_none());

    // After 31 days the rest go; the 60 s window that started latest expires last.
    let r = store.retain(30 * DAY + 9 * 60_000 - 1).unwrap();
    assert_eq!(r.deleted, 19);
    let r = store.retain(31 * DAY).unwrap();
    assert_eq!(r.deleted, 1);
    assert_eq!(store.counts().unwrap().capsules, 0);

    // A retired id can be written again (it is a new capsule).
    assert_eq!(
        store.put(&observed(S, 0, 1, 1)).unwrap(),
        rim_capsule::PutOutcome::Inserted
    );
}

#[test]
fn reopening_a_file_keeps_everything() {
    let dir = std::env::temp_dir().join(format!("rim-capsule-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reopen.redb");
    let _ = std::fs::remove_file(&path);
    {
        let store = Store::open(&path, StoreConfig::default()).unwrap();
        seed_history(&store);
    }
    let mut store = Store::open(&path, StoreConfig::default()).unwrap();
    assert!(store.check_integrity().unwrap());
    assert_eq!(store.counts().unwrap().capsules, 64);
    // The sequence continues after reopening: a new capsule does not overwrite an old row.
    store.put(&observed(S, 999_000, 1, 1)).unwrap();
    assert_eq!(store.counts().unwrap().capsules, 65);
    assert_eq!(
        store.get(&observed(S, 0, 1, 1).id()).unwrap().unwrap(),
        observed(S, 0, 1, 1)
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_is_send_and_sync_and_reads_while_writing() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let store = std::sync::Arc::new(mem_store());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..50i64 {
                store
                    .write(&Batch {
                        capsules: vec![observed(S, i * 1000, 1, 1)],
                        ..Batch::default()
                    })
                    .unwrap();
            }
        })
    };
    let mut last = 0;
    while !writer.is_finished() {
        let n = store
            .history(&q(1, Vantage::Observed, 0, i64::MAX, 1000, false))
            .unwrap()
            .len();
        assert!(n >= last, "a reader never sees the history shrink");
        last = n;
    }
    writer.join().unwrap();
    assert_eq!(store.counts().unwrap().capsules, 50);
}
