//! Measures `Store::write` of observed capsules against the raw redb baseline (same tables,
//! no idempotency lookup, no encoding) at 10,000 capsules per batch. Figures are printed, not
//! asserted (no test asserts a runtime). Run:
//! `cargo test -p rim-capsule --release --test throughput -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::observed;
use rim_capsule::{raw, Batch, Capsule, HistoryQuery, Store, StoreConfig, Vantage};

const BATCH: usize = 10_000;
const BATCHES: usize = 10;
const NODES: usize = 1_000;

fn capsules(batch: usize) -> Vec<Capsule> {
    // 1,000 nodes × 10 consecutive 1 s windows per batch: what the roll-up emits under load.
    (0..BATCH)
        .map(|i| {
            let node = i % NODES;
            let window = (batch * BATCH + i) / NODES;
            observed(
                &format!("rim:market:xnas:SYM{node:04}"),
                1_700_000_000_000 + window as i64 * 1000,
                1,
                1 + (i % 7) as u64,
            )
        })
        .collect()
}

fn path(name: &str) -> std::path::PathBuf {
    let dir = std::env::var("RIM_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    dir.join(format!("rim-capsule-{name}-{}.redb", std::process::id()))
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[test]
#[ignore = "throughput figures; run in --release with --ignored --nocapture"]
fn write_throughput_vs_raw() {
    let p_store = path("store");
    let p_raw = path("raw");
    let _ = std::fs::remove_file(&p_store);
    let _ = std::fs::remove_file(&p_raw);
    let store = Store::open(&p_store, StoreConfig::default()).unwrap();
    let raw_store = Store::open(&p_raw, StoreConfig::default()).unwrap();

    let (mut t_store, mut t_raw) = (Duration::ZERO, Duration::ZERO);
    let mut worst_store = Duration::ZERO;
    for b in 0..BATCHES {
        let caps = capsules(b);
        let rows = raw::rows_from_capsules(&raw_store, &caps).unwrap();
        let batch = Batch {
            capsules: caps,
            ..Batch::default()
        };
        // Alternate which runs first so neither always gets the warmer cache.
        let run_store = |t: &mut Duration, worst: &mut Duration| {
            let t0 = Instant::now();
            let out = store.write(&batch).unwrap();
            let d = t0.elapsed();
            assert_eq!(out.inserted, BATCH);
            *t += d;
            *worst = (*worst).max(d);
        };
        let run_raw = |t: &mut Duration| {
            let t0 = Instant::now();
            raw::write_raw(&raw_store, &rows).unwrap();
            *t += t0.elapsed();
        };
        if b % 2 == 0 {
            run_store(&mut t_store, &mut worst_store);
            run_raw(&mut t_raw);
        } else {
            run_raw(&mut t_raw);
            run_store(&mut t_store, &mut worst_store);
        }
    }
    let n = BATCH * BATCHES;
    let (r_store, r_raw) = (rate(n, t_store), rate(n, t_raw));
    println!("capsules:  {r_store:>9.0} capsules/s  ({BATCHES} batches of {BATCH}, worst batch {worst_store:?})");
    println!("redb-raw:  {r_raw:>9.0} records/s");
    println!("ratio capsules/raw: {:.2}", r_store / r_raw);

    // Replaying the same batch (recovery): every capsule is an idempotent "existing".
    let batch = Batch {
        capsules: capsules(0),
        ..Batch::default()
    };
    let t0 = Instant::now();
    let out = store.write(&batch).unwrap();
    let d = t0.elapsed();
    assert_eq!(out.existing, BATCH);
    println!("replay of an existing batch: {:.0} capsules/s", rate(BATCH, d));

    // History of one node: 100 windows through the index.
    let q = HistoryQuery {
        scope_id: "rim:market:xnas:SYM0007".into(),
        resolution: 1,
        vantage: Vantage::Observed,
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        limit: 10_000,
        descending: true,
    };
    let t0 = Instant::now();
    let got = store.history(&q).unwrap();
    println!("history: {} capsules of one node in {:?}", got.len(), t0.elapsed());

    drop(store);
    drop(raw_store);
    let _ = std::fs::remove_file(&p_store);
    let _ = std::fs::remove_file(&p_raw);
}
