//! Helpers shared by the integration tests: a seeded PRNG, temp dirs, payloads.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rim_journal::{Pos, Reader, Storage};

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rim-journal-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A payload that names its stream and sequence number, `len` bytes long.
pub fn payload(stream: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(u64::from(stream) << 40 ^ seq ^ 0x5EED);
    let mut p = r.bytes(len);
    let tag = [stream.to_le_bytes().as_slice(), seq.to_le_bytes().as_slice()].concat();
    let n = tag.len().min(len);
    p[..n].copy_from_slice(&tag[..n]);
    p
}

/// Every record of a stream from `from`, with positions.
pub fn read_all<S: Storage>(dir: &Path, stream: u32, from: Pos, storage: S) -> Vec<(Pos, Vec<u8>)> {
    let mut r = Reader::open(dir, stream, from, storage).expect("reader open");
    let mut out = Vec::new();
    while let Some((pos, p)) = r.next().expect("reader next") {
        out.push((pos, p.to_vec()));
    }
    out
}

/// A directory on the build's own file system (`CARGO_TARGET_TMPDIR`), not the system
/// temp dir, which is tmpfs on many machines (and tmpfs takes no `O_DIRECT`).
pub fn on_disk(tag: &str) -> TempDir {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("direct-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("test dir");
    TempDir(p)
}

/// Whether the file system under `dir` takes `O_DIRECT` (tmpfs does not).
pub fn takes_direct(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let ok = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// The `Cpus_allowed_list` in a thread's `status` (`task`: `/proc/self/task/TID` or
/// `/proc/thread-self`).
pub fn cpus_allowed(task: &Path) -> String {
    let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// (thread id, `Cpus_allowed_list`) of every thread of this process whose name starts with
/// `prefix` (names are cut to 15 bytes).
pub fn threads_named(prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("tasks").flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            out.push((
                task.file_name().to_string_lossy().into_owned(),
                cpus_allowed(&task.path()),
            ));
        }
    }
    out
}

/// The CPUs the calling thread may run on (its `sched_getaffinity` set).
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .expect("the calling thread's CPU set")
        .into_iter()
        .map(|c| c.id)
        .collect()
}
