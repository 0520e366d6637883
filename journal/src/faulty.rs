//! [`FaultyFs`]: an in-memory [`Storage`] that keeps, per file, a **live** image (what the
//! page cache holds) and a **durable** image (what survives power loss), for crash tests
//! here and in the daemon.
//!
//! * A commit ([`crate::storage::Commit`], run by [`FaultyCommitter`] at once, or newest
//!   first when the journal polls for a [`FaultyFs::reordering`] one) applies its
//!   writes to the live images, then copies live → durable for each file it syncs, and
//!   makes each directory's entries (creations, removals) durable, but only while the
//!   injected gate allows it:
//!   the gate is called once per file or directory synced, and once it returns false the
//!   file system is frozen — that sync and every later one still return `Ok` (a lying disk
//!   just before power loss) but change nothing durable.
//! * [`FaultyFs::crash`] returns the file system after power loss: each file's durable
//!   image plus a seeded random subset of the 512-byte sectors in which the live image
//!   differed (writeback that happened to reach the disk; a sector is atomic); a creation
//!   or removal whose directory was never synced may or may not have happened (seeded).
//!   A file whose data was never synced comes back either empty or zero-filled (seeded),
//!   plus torn sectors. Directories always survive.
//!
//! Prints nothing: the test prints its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Commit, Committer, DirEntry, Done, Storage, StorageFile, SyncMethod};

/// Sector size: the unit that is written whole or not at all at a crash.
pub const SECTOR_BYTES: usize = 512;

/// Decides, per file synced, whether the sync reaches the durable image.
pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Default)]
struct Inode {
    live: Vec<u8>,
    /// None until the first sync of the file's data.
    durable: Option<Vec<u8>>,
}

type InodeRef = Arc<Mutex<Inode>>;

struct State {
    /// The namespace as processes see it.
    live: BTreeMap<PathBuf, InodeRef>,
    /// The namespace as it would be found after power loss (entries whose dir was synced).
    durable: BTreeMap<PathBuf, InodeRef>,
    dirs: BTreeSet<PathBuf>,
    frozen: bool,
    syncs: u64,
}

/// In-memory file system with live and durable images; see the module docs.
#[derive(Clone)]
pub struct FaultyFs {
    state: Arc<Mutex<State>>,
    gate: Gate,
    /// Commits in flight reach the disk newest first (see [`FaultyFs::reordering`]).
    reorder: bool,
}

impl std::fmt::Debug for FaultyFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyFs").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// splitmix64: a tiny seeded generator, enough for choosing sectors.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl FaultyFs {
    /// An empty file system whose syncs are let through while `gate` returns true.
    pub fn new(gate: Gate) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                dirs: BTreeSet::new(),
                frozen: false,
                syncs: 0,
            })),
            gate,
            reorder: false,
        }
    }

    /// Like [`FaultyFs::new`], but the committer writes each commit when it starts and
    /// holds its syncs until the journal polls, then runs them newest first: a later
    /// commit reaches the disk before an earlier one, as the commit threads' parts may,
    /// and a freeze can fall between them.
    pub fn reordering(gate: Gate) -> Self {
        Self {
            reorder: true,
            ..Self::new(gate)
        }
    }

    /// An empty file system that never freezes.
    pub fn reliable() -> Self {
        Self::new(Arc::new(|| true))
    }

    /// How many file and directory syncs were asked for so far (frozen or not).
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// True once the gate has refused a sync.
    pub fn is_frozen(&self) -> bool {
        lock(&self.state).frozen
    }

    /// Whether this sync reaches the durable image (asks the gate unless frozen).
    fn pass_gate(&self, st: &mut State) -> bool {
        st.syncs += 1;
        if st.frozen {
            return false;
        }
        if !(self.gate)() {
            st.frozen = true;
        }
        !st.frozen
    }

    /// The file system after power loss, with a reliable gate; see the module docs.
    pub fn crash(&self, seed: u64) -> FaultyFs {
        let st = lock(&self.state);
        let mut rng = SplitMix(seed ^ 0xC2B2_AE3D_27D4_EB4F);
        let paths: BTreeSet<&PathBuf> = st.live.keys().chain(st.durable.keys()).collect();
        let mut files = BTreeMap::new();
        for path in paths {
            let chosen = match (st.live.get(path), st.durable.get(path)) {
                (Some(l), Some(d)) if Arc::ptr_eq(l, d) => Some(l),
                (Some(l), Some(d)) => Some(if rng.coin() { l } else { d }),
                // Creation or removal never made durable: a coin decides.
                (Some(x), None) | (None, Some(x)) => rng.coin().then_some(x),
                (None, None) => None,
            };
            if let Some(inode) = chosen {
                let image = crash_image(&lock(inode), &mut rng);
                files.insert(
                    path.clone(),
                    Arc::new(Mutex::new(Inode {
                        live: image.clone(),
                        durable: Some(image),
                    })),
                );
            }
        }
        FaultyFs {
            state: Arc::new(Mutex::new(State {
                durable: files.clone(),
                live: files,
                dirs: st.dirs.clone(),
                frozen: false,
                syncs: 0,
            })),
            gate: Arc::new(|| true),
            reorder: false,
        }
    }

    fn inode(&self, path: &Path) -> io::Result<InodeRef> {
        lock(&self.state).live.get(path).cloned().ok_or_else(|| not_found(path))
    }
}

/// What is on disk after power loss: the durable image (or empty / zeros if never synced)
/// plus a random subset of the sectors where the live image differs.
fn crash_image(inode: &Inode, rng: &mut SplitMix) -> Vec<u8> {
    let mut image = match &inode.durable {
        Some(d) => d.clone(),
        None if rng.coin() => Vec::new(),
        None => vec![0; inode.live.len()],
    };
    if image.is_empty() {
        return image;
    }
    image.resize(inode.live.len(), 0);
    for (dst, src) in image.chunks_mut(SECTOR_BYTES).zip(inode.live.chunks(SECTOR_BYTES)) {
        if dst != src && rng.coin() {
            dst.copy_from_slice(src);
        }
    }
    image
}

/// An open file of [`FaultyFs`]; keeps its inode after removal, like a descriptor.
#[derive(Clone)]
pub struct FaultyFile {
    inode: InodeRef,
    writable: bool,
}

impl std::fmt::Debug for FaultyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyFile")
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

fn range_of(offset: u64, len: usize, file_len: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    match start.checked_add(len) {
        Some(end) if end <= file_len => Ok(start..end),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} is outside the file of {file_len} bytes"),
        )),
    }
}

impl StorageFile for FaultyFile {
    fn len(&self) -> u64 {
        lock(&self.inode).live.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let inode = lock(&self.inode);
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(inode.live.len());
        let n = buf.len().min(inode.live.len() - start);
        buf[..n].copy_from_slice(&inode.live[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"));
        }
        let mut inode = lock(&self.inode);
        let r = range_of(offset, bytes.len(), inode.live.len())?;
        inode.live[r].copy_from_slice(bytes);
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"));
        }
        let mut inode = lock(&self.inode);
        let r = range_of(offset, usize::try_from(len).unwrap_or(usize::MAX), inode.live.len())?;
        inode.live[r].fill(0);
        Ok(())
    }

    fn same_file(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inode, &other.inode)
    }
}

impl FaultyFs {
    fn sync_file(&self, f: &FaultyFile) {
        let mut st = lock(&self.state);
        if self.pass_gate(&mut st) {
            let mut inode = lock(&f.inode);
            inode.durable = Some(inode.live.clone());
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        if !self.pass_gate(&mut st) {
            return Ok(());
        }
        st.durable.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<(PathBuf, InodeRef)> = st
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        st.durable.extend(entries);
        Ok(())
    }

    fn run(&self, commit: &Commit<FaultyFile>) -> io::Result<()> {
        self.write(commit)?;
        self.sync(commit)
    }

    /// A commit's writes reach the live images, unless the power is already gone: after
    /// the freeze, the syncs that "succeed" are lies no real process would have seen
    /// return, so nothing it wrote in response may reach the disk either.
    fn write(&self, commit: &Commit<FaultyFile>) -> io::Result<()> {
        if self.is_frozen() {
            return Ok(());
        }
        for w in &commit.writes {
            let bytes = commit
                .bufs
                .get(w.buf)
                .and_then(|b| b.get(w.start..w.end))
                .ok_or_else(|| io::Error::other("write refers outside its buffer"))?;
            w.file.write_at(w.offset, bytes)?;
        }
        Ok(())
    }

    fn sync(&self, commit: &Commit<FaultyFile>) -> io::Result<()> {
        for f in &commit.syncs {
            self.sync_file(f);
        }
        for d in &commit.dirs {
            self.sync_dir(d)?;
        }
        Ok(())
    }
}

/// [`FaultyFs`]'s committer: runs each commit whole inside `start`.
pub struct FaultyCommitter {
    fs: FaultyFs,
    /// Started, not run yet (reordering only), oldest first.
    held: std::collections::VecDeque<Commit<FaultyFile>>,
    finished: std::collections::VecDeque<Done<FaultyFile>>,
}

impl Committer for FaultyCommitter {
    type File = FaultyFile;

    fn start(&mut self, commit: Commit<FaultyFile>) -> io::Result<()> {
        if self.flights() >= crate::storage::FLIGHTS_MAX {
            return Err(io::Error::other("too many commits in flight"));
        }
        if self.fs.reorder {
            // Written when started, synced when polled.
            self.fs.write(&commit)?;
            self.held.push_back(commit);
        } else {
            let result = self.fs.run(&commit);
            self.finished.push_back(Done { commit, result });
        }
        Ok(())
    }

    fn poll(&mut self, _wait: Option<std::time::Duration>) -> io::Result<Option<Done<FaultyFile>>> {
        // Newest first; handed back oldest first, as every committer does.
        let mut ran: Vec<Done<FaultyFile>> = Vec::with_capacity(self.held.len());
        while let Some(commit) = self.held.pop_back() {
            let result = self.fs.sync(&commit);
            ran.push(Done { commit, result });
        }
        self.finished.extend(ran.into_iter().rev());
        Ok(self.finished.pop_front())
    }

    fn confine_workers(&mut self, _cpus: &[usize]) -> io::Result<()> {
        Ok(())
    }

    fn flights(&self) -> usize {
        self.held.len() + self.finished.len()
    }
}

impl Storage for FaultyFs {
    type File = FaultyFile;
    type Committer = FaultyCommitter;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        for a in dir.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let st = lock(&self.state);
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let child = |p: &PathBuf, is_dir: bool| {
            (p.parent() == Some(dir)).then(|| DirEntry {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                is_dir,
            })
        };
        let mut out: Vec<DirEntry> = st.live.keys().filter_map(|p| child(p, false)).collect();
        out.extend(st.dirs.iter().filter_map(|p| child(p, true)));
        Ok(out)
    }

    fn create_file(&self, path: &Path, len: u64, head: &[u8]) -> io::Result<FaultyFile> {
        let mut st = lock(&self.state);
        let parent = path.parent().unwrap_or(Path::new(""));
        if !st.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        if st.live.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
        let mut live = vec![0; len];
        let n = head.len().min(len);
        live[..n].copy_from_slice(&head[..n]);
        let inode = Arc::new(Mutex::new(Inode { live, durable: None }));
        st.live.insert(path.to_path_buf(), inode.clone());
        Ok(FaultyFile { inode, writable: true })
    }

    fn open_file(&self, path: &Path, writable: bool) -> io::Result<FaultyFile> {
        Ok(FaultyFile {
            inode: self.inode(path)?,
            writable,
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        lock(&self.state)
            .live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn prepare_spare(&self, path: &Path, len: u64, _background: Option<&AtomicBool>) -> io::Result<()> {
        let _ = self.remove_file(path);
        self.create_file(path, len, &[]).map(drop)
    }

    fn adopt_spare(&self, spare: &Path, path: &Path, head: &[u8]) -> io::Result<FaultyFile> {
        let file = self.open_file(spare, true)?;
        file.write_at(0, head)?;
        let mut st = lock(&self.state);
        if st.live.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let inode = st.live.remove(spare).ok_or_else(|| not_found(spare))?;
        st.live.insert(path.to_path_buf(), inode);
        drop(st);
        Ok(file)
    }

    fn committer(&self) -> io::Result<FaultyCommitter> {
        Ok(FaultyCommitter {
            fs: self.clone(),
            held: std::collections::VecDeque::new(),
            finished: std::collections::VecDeque::new(),
        })
    }

    fn sync_method(&self) -> SyncMethod {
        SyncMethod::Memory
    }
}
