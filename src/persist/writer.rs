//! The store writer: one redb transaction per batch, on a thread of its own because a
//! commit blocks for milliseconds (FLOORS.md). Batches that queued up while it committed
//! are merged into the next transaction, so a slow disk means bigger transactions, not a
//! growing queue.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rim_capsule::{Batch, Store};
use tracing::{error, warn};

use super::PersistStats;
use crate::ingest::unix_ms;

/// Capsules merged into one transaction at most.
const MERGE_CAPSULES_MAX: usize = 50_000;
/// Tries per batch before it is dropped (the journal still has its events).
const TRIES: u32 = 3;
/// Store retention runs this often.
const RETAIN_EVERY: Duration = Duration::from_secs(60);

/// Commits batches until the journal thread hangs up.
pub(super) fn run(store: &Store, rx: Receiver<Batch>, stats: &PersistStats) {
    let mut retained_at = Instant::now();
    while let Ok(mut batch) = rx.recv() {
        while batch.capsules.len() < MERGE_CAPSULES_MAX {
            match rx.try_recv() {
                Ok(more) => merge(&mut batch, more),
                Err(_) => break,
            }
        }
        commit(store, &mut batch, stats);
        if retained_at.elapsed() >= RETAIN_EVERY {
            retained_at = Instant::now();
            retain(store);
        }
    }
}

fn merge(into: &mut Batch, mut more: Batch) {
    into.capsules.append(&mut more.capsules);
    into.decisions.append(&mut more.decisions);
    into.scores.append(&mut more.scores);
    // A later checkpoint supersedes an earlier one, with its watermarks (the two stay a
    // pair).
    if more.checkpoint.is_some() {
        into.checkpoint = more.checkpoint;
        into.watermarks = more.watermarks;
    }
}

/// Writes one batch (retrying), counts the outcome and clears it.
pub(super) fn commit(store: &Store, batch: &mut Batch, stats: &PersistStats) {
    let capsules = batch.capsules.len() as u64;
    for attempt in 1..=TRIES {
        match store.write(batch) {
            Ok(out) => {
                stats.store_commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .capsules_inserted
                    .fetch_add(out.inserted as u64, Ordering::Relaxed);
                stats
                    .capsules_existing
                    .fetch_add(out.existing as u64, Ordering::Relaxed);
                stats
                    .capsules_kept
                    .fetch_add(out.conflicts.len() as u64, Ordering::Relaxed);
                stats
                    .decisions_logged
                    .fetch_add(batch.decisions.len() as u64, Ordering::Relaxed);
                if !out.conflicts.is_empty() {
                    warn!(
                        conflicts = out.conflicts.len(),
                        first = %out.conflicts[0],
                        "capsules already committed with other content were kept (a window closed again after a restart)"
                    );
                }
                break;
            }
            Err(e) => {
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, attempt, "store write failed");
                if attempt == TRIES {
                    stats.store_batches_dropped.fetch_add(1, Ordering::Relaxed);
                    error!(
                        capsules,
                        "batch dropped after {TRIES} tries; a restart rebuilds it from the journal"
                    );
                } else {
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
            }
        }
    }
    let pending = stats.store_pending.load(Ordering::Relaxed);
    stats
        .store_pending
        .store(pending.saturating_sub(capsules), Ordering::Relaxed);
    batch.clear();
}

fn retain(store: &Store) {
    let now = unix_ms() as i64;
    for _ in 0..100 {
        match store.retain(now) {
            Ok(r) if r.more => continue,
            Ok(_) => break,
            Err(e) => {
                warn!(error = %e, "store retention failed");
                break;
            }
        }
    }
}
