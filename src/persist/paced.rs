//! The store's file under redb, written to the disk a slice at a time.
//!
//! redb keeps what a commit without a sync changed in its own memory and writes it to the
//! file at the next synced commit, which then `fsync`s it: each `checkpoint_ms` the store
//! handed the disk tens of MB at once (31 MB at 10,000 nodes and 100k events/s), and the
//! journal's own syncs, a few hundred µs each, queued behind them for 10–20 ms. Here every
//! range redb writes is noted, and before the file is synced, the noted ranges go to the
//! disk [`SLICE_BYTES`] at a time, each slice written and waited for before the next is
//! started (`sync_file_range`): a journal sync finds at most one slice ahead of it at the
//! disk. The `fsync` that follows has nothing left but metadata and the device's flush,
//! so durability is exactly redb's: the slices only choose when the bytes travel.

use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Bytes written and waited for at a time: about 0.4 ms of this machine's disk
/// (FLOORS.md: 720 MB/s sequential), what a journal sync may find ahead of it.
const SLICE_BYTES: u64 = 256 << 10;

/// redb's file backend, whose syncs send the bytes written since the last one to the
/// disk in slices first.
#[derive(Debug)]
pub(super) struct PacedFile {
    inner: FileBackend,
    /// A second handle on the same file, for `sync_file_range`.
    file: File,
    /// (offset, end) of each write since the last sync, in the order they came.
    written: Mutex<Vec<(u64, u64)>>,
    /// Syncs go in slices only once this is set (live, beside the journal's syncs):
    /// recovery's commits, which nothing waits beside, sync at the disk's full speed.
    live: Arc<AtomicBool>,
}

impl PacedFile {
    /// Opens (creating when absent) the file at `path`, as redb's own `create` does.
    pub(super) fn open(path: &Path, live: Arc<AtomicBool>) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let second = file.try_clone()?;
        let inner = FileBackend::new(file).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            inner,
            file: second,
            written: Mutex::new(Vec::new()),
            live,
        })
    }

    /// Sends the ranges written since the last call to the disk, a slice at a time. An
    /// error is the sync's: the handle shares redb's open file, so a write error reported
    /// here would not be reported again by the `fsync` after it.
    fn write_slices(&self) -> std::io::Result<()> {
        let ranges = match self.written.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => return Ok(()),
        };
        if !self.live.load(Ordering::Relaxed) {
            return Ok(());
        }
        for (start, end) in merged(ranges) {
            let mut off = start;
            while off < end {
                let len = (end - off).min(SLICE_BYTES);
                rim_core::sys::write_range_and_wait(&self.file, off, len)?;
                off += len;
            }
        }
        Ok(())
    }
}

/// `ranges` sorted, with overlapping and touching ones joined.
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

impl StorageBackend for PacedFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.write_slices()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)?;
        if let Ok(mut w) = self.written.lock() {
            w.push((offset, offset.saturating_add(data.len() as u64)));
        }
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store over the paced file keeps what a synced commit wrote, as the plain file
    /// reads it back after it is closed; what it noted was sent on at the sync.
    #[test]
    fn a_store_over_the_paced_file_reads_back_from_the_plain_file() {
        use rim_capsule::{Batch, Capsule, CapsuleBody, CapsuleKey, Store, StoreConfig, Vantage};
        let dir = std::env::temp_dir().join(format!("rimd-paced-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("capsules.redb");
        let capsule = |i: usize| Capsule {
            key: CapsuleKey {
                scope_id: format!("rim:a:b:{i}"),
                timestamp: 60_000,
                resolution: 60,
                vantage: Vantage::Named("API".into()),
            },
            body: CapsuleBody::Payload("{}".into()),
            created_ms: 1,
        };
        let batch = Batch {
            capsules: (0..2000).map(capsule).collect(),
            ..Batch::default()
        };
        {
            let file = PacedFile::open(&path, Arc::new(AtomicBool::new(true))).expect("open");
            let store = Store::open_with_backend(file, StoreConfig::default()).expect("store");
            store.write_with(&batch, false).expect("unsynced");
            store.write_with(&Batch::default(), true).expect("synced");
        }
        let plain = Store::open(&path, StoreConfig::default()).expect("reopen");
        for i in [0, 1000, 1999] {
            let c = capsule(i);
            assert_eq!(plain.get(&c.id()).expect("get"), Some(c));
        }
        drop(plain);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ranges_are_sorted_and_joined_where_they_overlap_or_touch() {
        let got = merged(vec![(100, 200), (0, 10), (150, 300), (300, 310), (400, 401), (5, 8)]);
        assert_eq!(got, vec![(0, 10), (100, 310), (400, 401)]);
        assert!(merged(Vec::new()).is_empty());
    }
}
