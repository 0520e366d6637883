//! Guards the store's query surface: history ranges (bounds, order, limit, isolation between
//! scopes/resolutions/vantages), get by id, decisions, accuracy across batches, watermarks,
//! retention per resolution, and counts.

mod common;

use common::{mem_store, named, observed, predicted};
use rim_capsule::accuracy::SeriesScore;
use rim_capsule::{Batch, HistoryQuery, Store, StoreConfig, Vantage, Watermark};

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

#[test]
fn decisions_append_read_and_last() {
    let store = mem_store();
    assert!(store.last_decision(0).unwrap().is_none());
    let mut batch = Batch::default();
    for seq in 0..10u64 {
        batch.decisions.push((0, seq, format!("d0-{seq}").into_bytes()));
        batch.decisions.push((1, seq * 2, format!("d1-{seq}").into_bytes()));
    }
    store.write(&batch).unwrap();
    batch.clear();
    batch.decisions.push((0, 10, b"d0-10".to_vec()));
    store.write(&batch).unwrap();

    let got = store.decisions(0, 4, 3).unwrap();
    assert_eq!(
        got,
        vec![(4, b"d0-4".to_vec()), (5, b"d0-5".to_vec()), (6, b"d0-6".to_vec())]
    );
    assert_eq!(store.decisions(0, 0, 100).unwrap().len(), 11);
    assert_eq!(store.decisions(1, 0, 100).unwrap().len(), 10);
    assert!(store.decisions(2, 0, 100).unwrap().is_empty());
    assert!(store.decisions(0, 11, 100).unwrap().is_empty());
    assert_eq!(store.last_decision(0).unwrap(), Some((10, b"d0-10".to_vec())));
    assert_eq!(store.last_decision(1).unwrap(), Some((18, b"d1-9".to_vec())));
    assert_eq!(store.counts().unwrap().decisions, 21);
}

fn score(name: &str, abs: f64, hit: Option<bool>) -> SeriesScore {
    SeriesScore {
        name: name.into(),
        predicted: 0.0,
        observed: 0.0,
        abs_err: abs,
        rel_err: abs / 10.0,
        direction_hit: hit,
    }
}

#[test]
fn accuracy_aggregates_across_batches() {
    let store = mem_store();
    let mut batch = Batch::default();
    batch.scores.push((
        S.into(),
        "ewma".into(),
        vec![score("price", 1.0, Some(true)), score("volume", 4.0, None)],
    ));
    batch
        .scores
        .push((S.into(), "ewma".into(), vec![score("price", 3.0, Some(false))]));
    batch.scores.push((
        "rim:other:x:1".into(),
        "ewma".into(),
        vec![score("price", 100.0, Some(true))],
    ));
    store.write(&batch).unwrap();
    batch.clear();
    batch
        .scores
        .push((S.into(), "ewma".into(), vec![score("price", 2.0, Some(true))]));
    batch
        .scores
        .push((S.into(), "last".into(), vec![score("price", 5.0, None)]));
    store.write(&batch).unwrap();

    let acc = store.accuracy(S).unwrap();
    let names: Vec<(&str, &str)> = acc.iter().map(|(p, s, _)| (p.as_str(), s.as_str())).collect();
    assert_eq!(names, vec![("ewma", "price"), ("ewma", "volume"), ("last", "price")]);
    let price = acc[0].2;
    assert_eq!(price.count, 3);
    assert_eq!(price.abs_err_sum, 6.0);
    assert!((price.mean_abs_err().unwrap() - 2.0).abs() < 1e-12);
    assert!((price.mean_rel_err().unwrap() - 0.2).abs() < 1e-12);
    assert_eq!((price.hits, price.directional), (2, 3));
    assert!((price.hit_rate().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(acc[1].2.hit_rate(), None);
    assert_eq!(store.accuracy("rim:other:x:1").unwrap().len(), 1);
    assert!(store.accuracy("rim:other:x:").unwrap().is_empty());
    assert_eq!(store.counts().unwrap().accuracy_rows, 4);
}

#[test]
fn watermarks_are_set_and_replaced() {
    let store = mem_store();
    assert!(store.watermarks().unwrap().is_empty());
    let mut batch = Batch::default();
    batch.watermarks.push(Watermark {
        partition: 3,
        replay_from: 10,
        committed_to: 20,
    });
    batch.watermarks.push(Watermark {
        partition: 1,
        replay_from: 5,
        committed_to: 7,
    });
    store.write(&batch).unwrap();
    batch.clear();
    batch.watermarks.push(Watermark {
        partition: 3,
        replay_from: 15,
        committed_to: 40,
    });
    store.write(&batch).unwrap();
    assert_eq!(
        store.watermarks().unwrap(),
        vec![
            Watermark {
                partition: 1,
                replay_from: 5,
                committed_to: 7
            },
            Watermark {
                partition: 3,
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
