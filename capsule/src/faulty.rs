//! A storage backend for crash tests: memory with a **live** and a **durable** image.
//!
//! Writes go to the live image; `sync_data` copies live → durable while the injected gate
//! allows it. The gate is called once per sync; the first time it answers `false` durability
//! freezes: that sync and every later one succeed without persisting, as a disk that lost
//! power would look to the process. [`FaultyBackend::crashed`] then yields a backend holding
//! only the durable image — what a restart would find.
//!
//! Clones share the images, so a test keeps one clone and hands another to the store.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Decides, once per sync, whether that sync persists.
pub type SyncGate = Arc<dyn Fn() -> bool + Send + Sync>;

struct Inner {
    live: Mutex<Vec<u8>>,
    durable: Mutex<Vec<u8>>,
    gate: SyncGate,
    frozen: AtomicBool,
    syncs: AtomicU64,
    persisted_syncs: AtomicU64,
}

#[derive(Clone)]
pub struct FaultyBackend {
    inner: Arc<Inner>,
}

// A poisoned image is still the image: a panicking test thread must not hide the data.
fn lock(m: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn out_of_range(offset: u64, len: usize, size: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("range {offset}+{len} outside storage of {size} bytes"),
    )
}

impl FaultyBackend {
    /// An empty backend whose syncs persist while `gate` returns true.
    pub fn new(gate: SyncGate) -> Self {
        Self::with_image(Vec::new(), gate)
    }

    /// An empty backend whose every sync persists.
    pub fn reliable() -> Self {
        Self::new(Arc::new(|| true))
    }

    /// A gate that lets the first `n` syncs persist and freezes from the `n+1`-th on.
    pub fn gate_after(n: u64) -> SyncGate {
        let count = Arc::new(AtomicU64::new(0));
        Arc::new(move || count.fetch_add(1, Ordering::SeqCst) < n)
    }

    fn with_image(image: Vec<u8>, gate: SyncGate) -> Self {
        FaultyBackend {
            inner: Arc::new(Inner {
                live: Mutex::new(image.clone()),
                durable: Mutex::new(image),
                gate,
                frozen: AtomicBool::new(false),
                syncs: AtomicU64::new(0),
                persisted_syncs: AtomicU64::new(0),
            }),
        }
    }

    /// What a restart after a crash would find: the durable image, with a reliable gate.
    pub fn crashed(&self) -> FaultyBackend {
        let image = lock(&self.inner.durable).clone();
        Self::with_image(image, Arc::new(|| true))
    }

    /// True once a sync was refused.
    pub fn is_frozen(&self) -> bool {
        self.inner.frozen.load(Ordering::SeqCst)
    }

    /// Syncs requested so far.
    pub fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::SeqCst)
    }

    /// Syncs that persisted.
    pub fn persisted_syncs(&self) -> u64 {
        self.inner.persisted_syncs.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("live_len", &lock(&self.inner.live).len())
            .field("durable_len", &lock(&self.inner.durable).len())
            .field("frozen", &self.is_frozen())
            .field("syncs", &self.syncs())
            .finish()
    }
}

impl redb::StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(lock(&self.inner.live).len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let live = lock(&self.inner.live);
        let start = usize::try_from(offset).map_err(|_| out_of_range(offset, out.len(), live.len()))?;
        let src = start
            .checked_add(out.len())
            .and_then(|end| live.get(start..end))
            .ok_or_else(|| out_of_range(offset, out.len(), live.len()))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut live = lock(&self.inner.live);
        let len = usize::try_from(len).map_err(|_| out_of_range(len, 0, live.len()))?;
        live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.syncs.fetch_add(1, Ordering::SeqCst);
        if self.is_frozen() {
            return Ok(());
        }
        if !(self.inner.gate)() {
            self.inner.frozen.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let live = lock(&self.inner.live);
        let mut durable = lock(&self.inner.durable);
        durable.clear();
        durable.extend_from_slice(&live);
        self.inner.persisted_syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut live = lock(&self.inner.live);
        let size = live.len();
        let start = usize::try_from(offset).map_err(|_| out_of_range(offset, data.len(), size))?;
        let dst = start
            .checked_add(data.len())
            .and_then(|end| live.get_mut(start..end))
            .ok_or_else(|| out_of_range(offset, data.len(), size))?;
        dst.copy_from_slice(data);
        Ok(())
    }
}
