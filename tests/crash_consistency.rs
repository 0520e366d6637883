//! Journal, decision log and store together through their fault-injecting seams, one "disk"
//! for all: the journal's `FaultyFs` and the store's `FaultyBackend` share one sync counter,
//! and durability freezes at the k-th sync (for every k), like power failing while the
//! daemon's persist path runs its pipelined commits: events and decisions appended into the
//! buffers, a commit started while more is appended, completed later (only then
//! acknowledged), rolled up, capsules, decision runs, checkpoint and watermarks committed
//! to the store after the commit that covers them. After the crash:
//! - every acknowledged event is in the journal, in order, byte for byte; no partial record;
//! - every durable decision is in the decision log and its hash chain verifies, and every
//!   indexed run is there as indexed;
//! - the chain resumed from the log (as recovery does) never reuses a sequence number any
//!   decision was published under before the crash;
//! - redb's integrity check passes; every committed capsule is there; no watermark points
//!   past the recovered journal; the checkpoint restores.
//!
//! `RIM_CRASH_SEED` sets the seed (printed).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rim_capsule::{
    Batch, Capsule, FaultyBackend, Observation, Rollup, RollupConfig, Store, StoreConfig, Texts, Watermark,
};
use rim_journal::faulty::FaultyFs;
use rim_journal::{Journal, JournalConfig, Reader};
use rimd::persist::audit::{shard_and_seq, RunBuilder, LOG_DECISION, STREAMS, STREAM_DECISIONS, STREAM_EVENTS};
use rimd::reflex::decision::{Chain, Draft, Verifier, RECORD_BYTES_MAX};

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

fn node(n: u64) -> String {
    format!("rim:t:c:n{n}")
}

/// One event's journal record, as ingest encodes it.
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

struct Named<'a>(&'a str);
impl Texts for Named<'_> {
    fn node_id(&self) -> &str {
        self.0
    }
    fn status(&self) -> &str {
        "OK"
    }
    fn metric_name(&self, _: usize) -> &str {
        "load"
    }
}

fn cfg(dir: &Path) -> JournalConfig {
    let mut cfg = JournalConfig::new(dir, STREAMS);
    cfg.segment_bytes = 64 << 10;
    cfg
}

fn rollup_cfg() -> RollupConfig {
    RollupConfig {
        resolutions: vec![1],
        grace_ms: 1_000,
        nodes_max: 100,
        recent_ids: 4,
    }
}

/// What the run did before the freeze.
#[derive(Default)]
struct Outcome {
    /// Events acknowledged (their commit completed before the freeze), in order.
    acked: Vec<Vec<u8>>,
    /// Every event appended, in order.
    appended: Vec<Vec<u8>>,
    /// Decisions durable (their commit completed before the freeze), in order.
    decisions_acked: Vec<Vec<u8>>,
    /// The highest chain seq any decision was published under (subscribers see decisions
    /// as they are made, before they are durable).
    published_seq: u64,
    /// Capsules whose transaction committed before the freeze.
    committed: Vec<Capsule>,
}

/// Work of one commit: what becomes acknowledged and storable when it completes.
#[derive(Default)]
struct Stage {
    events: Vec<Vec<u8>>,
    decisions: Vec<Vec<u8>>,
    capsules: Vec<Capsule>,
    /// The index's runs as of the commit's start (they cover what it writes, no more).
    runs: Vec<rim_capsule::DecisionRun>,
    /// The roll-up's checkpoint and watermarks taken at the commit's start (complete to
    /// what it writes).
    checkpoint: Option<rim_capsule::Checkpoint>,
    watermarks: Vec<Watermark>,
}

/// Runs the persist path's order of operations until the shared disk freezes.
fn run(fs: &FaultyFs, backend: FaultyBackend, dir: &Path, seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let mut out = Outcome::default();
    let Ok((mut journal, _)) = Journal::open(cfg(dir), fs.clone()) else {
        return out;
    };
    let Ok(store) = Store::open_with_backend(backend.clone(), StoreConfig::default()) else {
        return out;
    };
    let mut rollup = Rollup::new(rollup_cfg());
    let mut chain = Chain::new(7);
    let mut runs = RunBuilder::default();
    let mut buf = vec![0u8; RECORD_BYTES_MAX];
    let (mut staged, mut flying) = (Stage::default(), None::<Stage>);
    let mut closed = Vec::new();
    let mut id = 0u64;
    for _round in 0..60 {
        for _ in 0..(1 + rng.next() % 30) {
            id += 1;
            let n = rng.next() % 6;
            let name = node(n);
            let ts = 1_000_000 + id as i64 * 97;
            let v = (id % 50) as f64;
            let p = payload(&name, id, ts, v);
            let pos = journal.append(STREAM_EVENTS, &p, 1).expect("append");
            let metrics = [(1_000, v)];
            let obs = Observation {
                timestamp: ts,
                price: Some(v),
                volume: None,
                stress: None,
                status: 99,
                metrics: &metrics,
            };
            rollup.push(n as u32, pos, 1, &obs, &Named(&name), &mut closed);
            let names = rollup.names();
            staged
                .capsules
                .extend(closed.drain(..).filter_map(|c| names.capsule(&c)));
            out.appended.push(p.clone());
            staged.events.push(p);
            if v > 40.0 {
                // A decision: published to subscribers now, appended to the log.
                let draft = Draft {
                    shard: 0,
                    rule_id: "hot",
                    rule_version: 1,
                    rule_generation: 1,
                    severity: 3,
                    flags: 0,
                    node: n as u32,
                    node_id: &name,
                    event_seq: id,
                    event_timestamp: ts,
                    publish_ns: 1,
                    decided_ns: 2,
                    latency_ns: 1,
                };
                let len = chain.append(&draft, 1, [("load", v)].into_iter(), &mut buf);
                let record = buf[..len].to_vec();
                out.published_seq = chain.last_seq();
                let pos = journal
                    .append_parts(STREAM_DECISIONS, &[&[LOG_DECISION], &record], 1)
                    .expect("append decision");
                runs.add(0, chain.last_seq(), pos);
                staged.decisions.push(record);
            }
        }
        // Pipelined: complete the commit in flight (its work lands), start the next.
        if flying.is_some() {
            match journal.complete(None) {
                Ok(Some(_)) if !fs.is_frozen() => {
                    let done = flying.take().expect("a flight");
                    out.acked.extend(done.events);
                    out.decisions_acked.extend(done.decisions);
                    // The store's transaction after the commit that covers its work.
                    let batch = Batch {
                        capsules: done.capsules,
                        decision_runs: done.runs,
                        watermarks: done.watermarks,
                        checkpoint: done.checkpoint,
                    };
                    let ok = store.write(&batch).is_ok();
                    if backend.is_frozen() || !ok {
                        return out;
                    }
                    out.committed.extend(batch.capsules);
                }
                Ok(Some(_)) | Err(_) => return out,
                Ok(None) => {}
            }
        }
        if flying.is_none() {
            match journal.commit() {
                Ok(true) => {
                    staged.runs = runs.take_changed();
                    let (end, log_end) = (journal.end(STREAM_EVENTS), journal.end(STREAM_DECISIONS));
                    staged.checkpoint = Some(rollup.checkpoint_all(end, log_end, 0));
                    let (committed_to, log_to) = rollup.watermarks(end, log_end);
                    staged.watermarks = vec![
                        Watermark {
                            stream: STREAM_EVENTS,
                            replay_from: committed_to,
                            committed_to,
                        },
                        Watermark {
                            stream: STREAM_DECISIONS,
                            replay_from: log_to,
                            committed_to: log_to,
                        },
                    ];
                    flying = Some(std::mem::take(&mut staged));
                }
                Ok(false) => {}
                Err(_) => return out,
            }
            if fs.is_frozen() {
                // Power fails during this commit: nothing after it is acknowledged.
                return out;
            }
        }
    }
    out
}

/// Every record of a stream on the crashed disk.
fn read_stream(dir: &Path, stream: u32, fs: &FaultyFs, k: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = Reader::open(dir, stream, 0, fs.clone()).expect("reader");
    let mut got = Vec::new();
    while let Some((pos, bytes)) = r.next().unwrap_or_else(|e| panic!("k {k} stream {stream}: {e}")) {
        got.push((pos, bytes.to_vec()));
    }
    got
}

#[test]
fn journal_decision_log_and_store_survive_power_loss_at_every_sync() {
    let seed: u64 = std::env::var("RIM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026);
    eprintln!("journal+log+store crash consistency: RIM_CRASH_SEED={seed}");
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
        let (journal, _) =
            Journal::open(cfg(dir), fs2.clone()).unwrap_or_else(|e| panic!("k {k}: journal reopen: {e}"));
        let events: Vec<Vec<u8>> = read_stream(dir, STREAM_EVENTS, &fs2, k)
            .into_iter()
            .map(|r| r.1)
            .collect();
        for e in &events {
            rim_journal::event::decode(e).unwrap_or_else(|e| panic!("k {k}: partial event: {e}"));
        }
        assert!(events.len() >= out.acked.len(), "k {k}: acknowledged events lost");
        assert_eq!(
            &events[..out.acked.len()],
            &out.acked[..],
            "k {k}: acknowledged events differ"
        );
        assert_eq!(
            &events[..],
            &out.appended[..events.len()],
            "k {k}: an event never appended"
        );

        // The decision log: durable decisions present, one verifying chain.
        let log = read_stream(dir, STREAM_DECISIONS, &fs2, k);
        let mut v = Verifier::new();
        let mut decisions = Vec::new();
        for (pos, rec) in &log {
            let (&kind, record) = rec.split_first().expect("a kind byte");
            assert_eq!(kind, LOG_DECISION, "k {k}: foreign log record at {pos}");
            v.push(record)
                .unwrap_or_else(|e| panic!("k {k}: chain broken at {pos}: {e}"));
            decisions.push(record.to_vec());
        }
        assert!(
            decisions.len() >= out.decisions_acked.len(),
            "k {k}: durable decisions lost"
        );
        assert_eq!(&decisions[..out.decisions_acked.len()], &out.decisions_acked[..]);

        // Recovery's resume: past every seq a subscriber may have seen.
        if let Some(last) = decisions.last() {
            let resumed = Chain::resume_after_gap(last).expect("resume");
            assert!(
                resumed.last_seq() >= out.published_seq,
                "k {k}: a restart would reuse seq {} (published up to {})",
                resumed.last_seq() + 1,
                out.published_seq
            );
        }

        let mut store = match Store::open_with_backend(backend.crashed(), StoreConfig::default()) {
            Ok(s) => s,
            // Power lost while redb was creating its file: nothing was ever committed, and
            // the daemon refuses to start, naming the file (left to the operator).
            Err(e) if out.committed.is_empty() && out.acked.is_empty() => {
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
                w.committed_to <= journal.end(w.stream),
                "k {k}: watermark {} past the recovered end {} of stream {}",
                w.committed_to,
                journal.end(w.stream),
                w.stream
            );
        }
        // Every indexed run is in the log as indexed.
        for run in store.decision_runs(0, 0, usize::MAX).expect("runs") {
            let seqs: Vec<u64> = log
                .iter()
                .filter(|(pos, _)| *pos >= run.pos)
                .filter_map(|(_, rec)| shard_and_seq(&rec[1..]))
                .map(|(_, seq)| seq)
                .filter(|seq| (run.first_seq..=run.last_seq).contains(seq))
                .collect();
            assert_eq!(seqs.len() as u32, run.count, "k {k}: run {run:?} not in the log");
        }
        if let Some((header, chunks)) = store.checkpoint().expect("checkpoint") {
            let mut place = |name: &str| name.strip_prefix("rim:t:c:n")?.parse().ok();
            Rollup::restore(
                rollup_cfg(),
                &header,
                chunks.iter().map(|(c, b)| (*c, b.as_slice())),
                &mut place,
            )
            .unwrap_or_else(|e| panic!("k {k}: checkpoint does not restore: {e}"));
        }
        if !froze {
            eprintln!(
                "journal+log+store crash consistency: {} crash points, all consistent",
                k - 1
            );
            break;
        }
    }
}
