//! Guards the commit protocol under power loss: with durability frozen at the k-th file
//! sync (for every k), a crash keeps every record below the `durable()` reported before
//! the freeze byte-identical, shows no partial or foreign record, and the journal accepts
//! appends after recovery. Seed: `RIM_CRASH_SEED` (printed).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{payload, read_all, Rng};
use rim_journal::faulty::FaultyFs;
use rim_journal::{Journal, JournalConfig, Pos};

const PARTITIONS: u32 = 3;
const APPENDS: u64 = 700;

fn cfg() -> JournalConfig {
    let mut c = JournalConfig::new("/crash", PARTITIONS);
    c.segment_bytes = 64 * 1024;
    c.retention_bytes = 128 * 1024;
    c
}

fn seed() -> u64 {
    let seed = std::env::var("RIM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026_0001);
    eprintln!("crash_consistency seed: {seed} (override with RIM_CRASH_SEED)");
    seed
}

/// What the workload did before the crash.
struct Run {
    /// Every record appended: (stream, pos) → payload.
    appended: BTreeMap<(u32, Pos), Vec<u8>>,
    /// `durable()` per stream before the sync in which durability froze.
    durable_before: Vec<Pos>,
}

/// Appends, syncs and retains across streams until the file system freezes (then
/// finishes that sync and appends a few more records, as a machine would before the power
/// goes), or the workload ends.
fn workload(fs: &FaultyFs, seed: u64) -> Run {
    let mut rng = Rng(seed);
    let (mut j, _) = Journal::open(cfg(), fs.clone()).expect("open");
    let mut appended = BTreeMap::new();
    let mut durable_before: Vec<Pos> = (0..PARTITIONS).map(|p| j.durable(p)).collect();
    let mut seq = 0;
    let mut frozen = fs.is_frozen();
    let mut after_freeze = 0;
    while seq < APPENDS && after_freeze < 5 {
        let p = rng.range(0, u64::from(PARTITIONS) - 1) as u32;
        let len = if rng.range(0, 9) == 0 {
            rng.range(2000, 9000)
        } else {
            rng.range(1, 300)
        } as usize;
        let data = payload(p, seq, len);
        let pos = j.append(p, &data, seq).expect("append");
        appended.insert((p, pos), data);
        seq += 1;
        if frozen {
            after_freeze += 1;
            continue;
        }
        // Commits are pipelined as the daemon runs them: one starts, appends go on, and it
        // completes later; now and then a blocking sync.
        let before: Vec<Pos> = (0..PARTITIONS).map(|p| j.durable(p)).collect();
        match rng.range(0, 9) {
            0 | 1 => {
                j.commit().expect("commit");
            }
            2 | 3 => {
                j.complete(None).expect("complete");
            }
            4 => {
                j.sync().expect("sync");
            }
            _ => {}
        }
        if fs.is_frozen() {
            // Durability froze inside this step: what was reported durable before it holds.
            frozen = true;
            durable_before = before;
        } else {
            durable_before = (0..PARTITIONS).map(|p| j.durable(p)).collect();
        }
        if !frozen && rng.range(0, 29) == 0 {
            j.retain(seq).expect("retain");
        }
    }
    Run {
        appended,
        durable_before,
    }
}

/// Reopens the crashed file system and checks the guarantees.
fn check(crashed: FaultyFs, run: &Run, k: u64) {
    let dir = Path::new("/crash");
    let (mut j, rec) =
        Journal::open(cfg(), crashed.clone()).unwrap_or_else(|e| panic!("k={k}: reopen after crash failed: {e}"));
    for p in 0..PARTITIONS {
        let records = read_all(dir, p, 0, crashed.clone());
        let start = j.start(p);
        let mut expect_pos = start;
        for (pos, data) in &records {
            assert_eq!(*pos, expect_pos, "k={k} p={p}: records out of order or with a gap");
            let appended = run.appended.get(&(p, *pos));
            assert_eq!(
                appended,
                Some(data),
                "k={k} p={p} pos={pos}: a record that was not appended"
            );
            expect_pos = pos + rim_journal::frame::encoded_len(data.len()) as u64;
        }
        if expect_pos != j.end(p) {
            let mut r = rim_journal::Reader::open(dir, p, expect_pos, crashed.clone());
            eprintln!(
                "reader at {expect_pos}: {:?}",
                r.as_mut().map(|r| r.next().map(|o| o.map(|(p, d)| (p, d.len()))))
            );
            eprintln!("{:?} start {start}", rec.streams[p as usize]);
        }
        assert_eq!(
            expect_pos,
            j.end(p),
            "k={k} p={p}: reader and journal disagree on the end"
        );
        assert!(
            j.end(p) >= run.durable_before[p as usize],
            "k={k} p={p}: end {} is below durable {} reported before the freeze ({:?})",
            j.end(p),
            run.durable_before[p as usize],
            rec.streams[p as usize]
        );
        // Every appended record at or after the recovered start and below durable is back.
        let missing = run
            .appended
            .range((p, start)..(p, run.durable_before[p as usize]))
            .filter(|((_, pos), _)| !records.iter().any(|(q, _)| q == pos))
            .count();
        assert_eq!(missing, 0, "k={k} p={p}: durable records missing");
        // Appending after recovery works and reads back.
        let extra = payload(p, 1_000_000 + k, 77);
        let pos = j.append(p, &extra, 1).expect("append after recovery");
        assert_eq!(pos, expect_pos);
        j.sync().expect("sync after recovery");
        let back = read_all(dir, p, pos, crashed.clone());
        assert_eq!(back, vec![(pos, extra)], "k={k} p={p}");
    }
}

#[test]
fn durable_records_survive_a_crash_at_every_sync() {
    crash_at_every_sync(FaultyFs::new, "in order");
}

/// Commits in flight together reach the disk newest first (the commit threads' parts
/// may): a freeze between them leaves a later commit's records on disk after a hole.
#[test]
fn durable_records_survive_when_later_commits_reach_the_disk_first() {
    crash_at_every_sync(FaultyFs::reordering, "newest first");
}

fn crash_at_every_sync(make: fn(rim_journal::faulty::Gate) -> FaultyFs, how: &str) {
    let seed = seed();
    // Count the gate calls of an unfrozen run.
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let fs = make(Arc::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }));
    workload(&fs, seed);
    let n = calls.load(Ordering::Relaxed);
    assert!(n > 20, "the workload should sync many files, did {n}");
    let mut cut = 0;
    for k in 1..=n {
        let calls = Arc::new(AtomicU64::new(0));
        let fs = make(Arc::new(move || calls.fetch_add(1, Ordering::Relaxed) + 1 < k));
        let run = workload(&fs, seed);
        let crashed = fs.crash(seed ^ k.wrapping_mul(0x9E37_79B9));
        let (_, rec) = Journal::open(cfg(), crashed.crash(0)).expect("probe reopen");
        cut += usize::from(rec.cut_anything());
        check(crashed, &run, k);
    }
    eprintln!("crash_consistency ({how}): {n} freeze points, {cut} recoveries cut a torn tail");
}
