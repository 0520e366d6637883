//! A store whose process died (abort: no destructor, no clean shutdown) after a durable
//! commit and several non-durable ones opens without redb's full repair: the durable
//! commit recorded the allocator state. The repair checks every page and walks every tree,
//! so without this a restart after a crash would take longer the larger the store grew.
//! The reopened store holds the durable commit whole and none of what followed it.

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use common::observed;
use rim_capsule::{Batch, HistoryQuery, Store, StoreConfig, Vantage};

/// Set in the child: the store file to write and then abandon.
const CHILD_ENV: &str = "RIM_CAPSULE_CRASH_CHILD";
const SCOPE: &str = "rim:sensor:crash:1";
/// Batches committed durably, then not; their capsules stay under one history page.
const DURABLE_BATCHES: i64 = 8;
const LOST_BATCHES: i64 = 5;
const PER_BATCH: i64 = 500;

fn batch(first: i64) -> Batch {
    Batch {
        capsules: (first..first + PER_BATCH)
            .map(|i| observed(SCOPE, i * 1000, 1, 1))
            .collect(),
        ..Batch::default()
    }
}

/// The child: durable batches (so the file has something to repair), then non-durable
/// ones, then abort.
#[test]
fn child_writes_then_dies() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&path), StoreConfig::default()).expect("open");
    for b in 0..DURABLE_BATCHES {
        store.write_with(&batch(b * PER_BATCH), true).expect("durable write");
    }
    for b in DURABLE_BATCHES..DURABLE_BATCHES + LOST_BATCHES {
        store
            .write_with(&batch(b * PER_BATCH), false)
            .expect("non-durable write");
    }
    std::process::abort();
}

fn crashed_store(dir: &Path) -> PathBuf {
    let path = dir.join("store.redb");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_writes_then_dies", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .status()
        .expect("spawn the child");
    assert!(!status.success(), "the child must die, not exit");
    path
}

#[test]
fn a_crashed_store_opens_without_a_full_repair() {
    let dir = std::env::temp_dir().join(format!("rim-capsule-crash-reopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = crashed_store(&dir);
    let repairs = Rc::new(Cell::new(0u32));
    let seen = repairs.clone();
    let db = redb::Database::builder()
        .set_repair_callback(move |_| seen.set(seen.get() + 1))
        .open(&path)
        .expect("reopen");
    drop(db);
    assert_eq!(repairs.get(), 0, "opening after the crash ran redb's repair");

    let store = Store::open(&path, StoreConfig::default()).expect("reopen as a store");
    let rows = store
        .history(&HistoryQuery {
            scope_id: SCOPE.into(),
            resolution: 1,
            vantage: Vantage::Observed,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: 100_000,
            descending: false,
        })
        .expect("history");
    assert_eq!(
        rows.len() as i64,
        DURABLE_BATCHES * PER_BATCH,
        "the durable batches whole, nothing after them"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
