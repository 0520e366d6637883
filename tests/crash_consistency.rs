//! Journal and store together through their fault-injecting seams, one "disk" for both:
//! the journal's `FaultyFs` and the store's `FaultyBackend` share one sync counter, and
//! durability freezes at the k-th sync (for every k), like power failing while the
//! daemon's persist path runs: events appended and synced (acknowledged), rolled up,
//! capsules and watermarks committed after the sync that covers them. After the crash:
//! every acknowledged event is in the journal, in order, byte for byte; no partial record
//! is visible; redb's integrity check passes; every committed capsule is there; and no
//! watermark points past the recovered journal (the property recovery relies on).
//!
//! `RIM_CRASH_SEED` sets the seed (printed).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rim_capsule::{Batch, FaultyBackend, Observation, Rollup, RollupConfig, Store, StoreConfig, Watermark};
use rim_journal::faulty::FaultyFs;
use rim_journal::{Journal, JournalConfig, Reader};

const PARTITIONS: u32 = 3;

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

/// One event's journal payload, as ingest encodes it.
fn payload(node: &str, id: u64, ts: i64, v: f64) -> Vec<u8> {
    let event_id = format!("e{id}");
    let head = rim_journal::event::EventHead {
        rim_node_id: node,
        event_id: Some(&event_id),
        timestamp: ts,
        publish_ns: 1,
        received_ms: 1,
        price: Some(v),
        volume: None,
        stress: None,
        status: "OK",
        source_topic: None,
    };
    let mut buf = vec![0u8; rim_journal::event::EVENT_BYTES_MAX];
    let n = rim_journal::event::encode(&head, [("load", v)].into_iter(), &mut buf).expect("encode");
    buf.truncate(n);
    buf
}

struct Outcome {
    /// Per partition: payloads acknowledged (synced before the freeze), in order.
    acked: Vec<Vec<Vec<u8>>>,
    /// Per partition: everything appended, in order.
    appended: Vec<Vec<Vec<u8>>>,
    /// Capsules whose transaction committed before the freeze.
    committed: Vec<rim_capsule::Capsule>,
}

/// Runs the persist path's order of operations until the shared disk freezes.
fn run(fs: &FaultyFs, backend: FaultyBackend, dir: &Path, seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let mut cfg = JournalConfig::new(dir, PARTITIONS);
    cfg.segment_bytes = 64 << 10;
    let (mut journal, _) = Journal::open(cfg, fs.clone()).expect("open journal");
    let store = Store::open_with_backend(backend.clone(), StoreConfig::default()).ok();
    let mut rollup = Rollup::new(RollupConfig {
        resolutions: vec![1],
        grace_ms: 1_000,
        nodes_max: 100,
    });
    let mut out = Outcome {
        acked: vec![Vec::new(); PARTITIONS as usize],
        appended: vec![Vec::new(); PARTITIONS as usize],
        committed: Vec::new(),
    };
    let Some(store) = store else { return out };
    let mut id = 0u64;
    let mut unsynced: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut closed = Vec::new();
    for _round in 0..40 {
        for _ in 0..(1 + rng.next() % 40) {
            id += 1;
            let n = rng.next() % 6;
            let part = (n % u64::from(PARTITIONS)) as u32;
            let node = format!("rim:t:c:n{n}");
            let ts = 1_000_000 + id as i64 * 97;
            let p = payload(&node, id, ts, (id % 50) as f64);
            let pos = journal.append(part, &p, 1).expect("append");
            let metrics = [("load", (id % 50) as f64)];
            let obs = Observation {
                timestamp: ts,
                price: Some((id % 50) as f64),
                volume: None,
                stress: None,
                status: "OK",
                metrics: &metrics,
            };
            rollup.push(part, &node, pos, 1, &obs, &mut closed);
            out.appended[part as usize].push(p.clone());
            unsynced.push((part, p));
        }
        if journal.sync().is_err() || fs.is_frozen() {
            // Power fails during this sync: nothing after it happens.
            return out;
        }
        for (part, p) in unsynced.drain(..) {
            out.acked[part as usize].push(p);
        }
        // The store's transaction after the sync that covers its capsules.
        let watermarks = (0..PARTITIONS)
            .map(|p| Watermark {
                partition: p,
                replay_from: journal.durable(p),
                committed_to: journal.durable(p),
            })
            .collect();
        let batch = Batch {
            capsules: std::mem::take(&mut closed),
            watermarks,
            checkpoint: Some(rollup.checkpoint().expect("checkpoint")),
            ..Batch::default()
        };
        let ok = store.write(&batch).is_ok();
        if backend.is_frozen() || !ok {
            return out;
        }
        out.committed.extend(batch.capsules);
    }
    out
}

#[test]
fn journal_and_store_survive_power_loss_at_every_sync() {
    let seed: u64 = std::env::var("RIM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026);
    eprintln!("journal+store crash consistency: RIM_CRASH_SEED={seed}");
    let dir = Path::new("/rimd/journal");
    let mut k = 0u64;
    loop {
        k += 1;
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let gate: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || c.fetch_add(1, Ordering::SeqCst) < k);
        let fs = FaultyFs::new(gate.clone());
        let backend = FaultyBackend::new(gate);
        let out = run(&fs, backend.clone(), dir, seed ^ k);
        let froze = fs.is_frozen() || backend.is_frozen();

        // Restart on what the disk kept.
        let fs2 = fs.crash(seed ^ k);
        let mut cfg = JournalConfig::new(dir, PARTITIONS);
        cfg.segment_bytes = 64 << 10;
        let (journal, _) = Journal::open(cfg, fs2.clone()).unwrap_or_else(|e| panic!("k {k}: journal reopen: {e}"));
        let mut ends = HashMap::new();
        for part in 0..PARTITIONS {
            let mut r = Reader::open(dir, part, 0, fs2.clone()).expect("reader");
            let mut got = Vec::new();
            while let Some((_, bytes)) = r.next().unwrap_or_else(|e| panic!("k {k} p{part}: {e}")) {
                rim_journal::event::decode(bytes).unwrap_or_else(|e| panic!("k {k} p{part}: partial record: {e}"));
                got.push(bytes.to_vec());
            }
            let acked = &out.acked[part as usize];
            assert!(
                got.len() >= acked.len(),
                "k {k} p{part}: {} acknowledged, {} recovered",
                acked.len(),
                got.len()
            );
            assert_eq!(
                &got[..acked.len()],
                &acked[..],
                "k {k} p{part}: acknowledged records differ"
            );
            let appended = &out.appended[part as usize];
            assert!(
                got.len() <= appended.len() && got[..] == appended[..got.len()],
                "k {k} p{part}: a record that was never appended"
            );
            ends.insert(part, journal.end(part));
        }
        let mut store = match Store::open_with_backend(backend.crashed(), StoreConfig::default()) {
            Ok(s) => s,
            // Power lost while redb was creating its file: nothing was ever committed, and
            // the daemon refuses to start, naming the file (left to the operator).
            Err(e) if out.committed.is_empty() && out.acked.iter().all(Vec::is_empty) => {
                eprintln!("k {k}: store never created: {e}");
                continue;
            }
            Err(e) => panic!("k {k}: store reopen: {e}"),
        };
        assert!(
            store.check_integrity().expect("integrity check runs"),
            "k {k}: redb integrity"
        );
        for c in &out.committed {
            let got = store
                .get(&c.id())
                .expect("get")
                .unwrap_or_else(|| panic!("k {k}: committed capsule lost"));
            assert!(got.same_content(c), "k {k}: capsule changed");
        }
        for w in store.watermarks().expect("watermarks") {
            assert!(
                w.committed_to <= ends[&w.partition],
                "k {k}: watermark {} past the recovered journal end {}",
                w.committed_to,
                ends[&w.partition]
            );
        }
        if store.checkpoint().expect("checkpoint").is_some() {
            Rollup::restore(
                RollupConfig {
                    resolutions: vec![1],
                    grace_ms: 1_000,
                    nodes_max: 100,
                },
                &store.checkpoint().expect("checkpoint").unwrap_or_default(),
            )
            .unwrap_or_else(|e| panic!("k {k}: checkpoint does not restore: {e}"));
        }
        if !froze {
            eprintln!(
                "journal+store crash consistency: {} crash points, all consistent",
                k - 1
            );
            break;
        }
    }
}
