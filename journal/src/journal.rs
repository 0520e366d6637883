//! The writer: [`Journal`] owns every stream's active segment, appends records into its
//! own buffers, group-commits them through the storage's [`Committer`] (pipelined: the
//! next batch is appended while the previous one is written and synced), rotates, recovers
//! at open and enforces retention. One thread owns it.

use std::collections::VecDeque;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::JournalError;
use crate::frame::{self, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, RECORD_BYTES_MAX};
use crate::segment::{self, SegmentHeader, Window, HEADER_BYTES};
use crate::storage::{Commit, Committer, Fs, Storage, StorageFile, SyncMethod, WriteOp, FLIGHTS_MAX};
use crate::Pos;

/// Smallest accepted segment file.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest accepted segment file.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Most streams a journal may have.
pub const STREAMS_MAX: u32 = 1024;
/// Smallest accepted commit buffer: room for the largest frame.
pub const BUFFER_BYTES_MIN: usize = frame::encoded_len(RECORD_BYTES_MAX);
/// Largest accepted commit buffer.
pub const BUFFER_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Where the journal lives and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Root directory (created if missing).
    pub dir: PathBuf,
    /// Number of streams (1..=[`STREAMS_MAX`]), each its own chain of segment files;
    /// must not shrink across restarts.
    pub streams: u32,
    /// Size of each segment file, header included; default 64 MiB, 64 KiB..=1 GiB.
    pub segment_bytes: u64,
    /// Segments whose newest record is older than this are deleted; default 7 days.
    pub retention_ms: u64,
    /// Per stream, oldest segments are deleted while more than this is kept; default 16 GiB.
    pub retention_bytes: u64,
    /// Bytes of frames a stream buffers between two commits; [`Journal::append`] refuses
    /// a frame that does not fit ([`Journal::room`] says what does). A stream has at most
    /// 1 + [`FLIGHTS_MAX`] buffers: the one being filled and one per commit in flight.
    /// Default 4 MiB.
    pub buffer_bytes: usize,
}

impl JournalConfig {
    /// The defaults for `streams` streams under `dir`.
    pub fn new(dir: impl Into<PathBuf>, streams: u32) -> Self {
        Self {
            dir: dir.into(),
            streams,
            segment_bytes: 64 * 1024 * 1024,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: 16 * 1024 * 1024 * 1024,
            buffer_bytes: 4 * 1024 * 1024,
        }
    }

    fn check(&self) -> Result<(), JournalError> {
        if !(1..=STREAMS_MAX).contains(&self.streams) {
            return Err(JournalError::Config(format!(
                "streams is {}, must be 1..={STREAMS_MAX}",
                self.streams
            )));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(JournalError::Config(format!(
                "segment_bytes is {}, must be {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            )));
        }
        if !self.segment_bytes.is_multiple_of(FRAME_ALIGN_BYTES as u64) {
            return Err(JournalError::Config(format!(
                "segment_bytes is {}, must be a multiple of {FRAME_ALIGN_BYTES}",
                self.segment_bytes
            )));
        }
        if self.retention_bytes == 0 || self.retention_ms == 0 {
            return Err(JournalError::Config(format!(
                "retention_bytes ({}) and retention_ms ({}) must be positive",
                self.retention_bytes, self.retention_ms
            )));
        }
        if !(BUFFER_BYTES_MIN..=BUFFER_BYTES_MAX).contains(&self.buffer_bytes) {
            return Err(JournalError::Config(format!(
                "buffer_bytes is {}, must be {BUFFER_BYTES_MIN}..={BUFFER_BYTES_MAX}",
                self.buffer_bytes
            )));
        }
        Ok(())
    }

    /// Largest payload a segment of `segment_bytes` can hold.
    fn record_bytes_max(&self) -> usize {
        let room = (self.segment_bytes - HEADER_BYTES) as usize - FRAME_HEADER_BYTES;
        room.min(RECORD_BYTES_MAX)
    }
}

/// What recovery found in one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRecovery {
    /// The stream.
    pub stream: u32,
    /// Oldest retained position.
    pub start: Pos,
    /// End of valid data (where the next record goes).
    pub end: Pos,
    /// Valid records in the segments that were scanned (the last one, and any earlier one
    /// whose seal was missing).
    pub records_scanned: u64,
    /// Segments scanned record by record.
    pub segments_scanned: u32,
    /// Segments kept.
    pub segments: u32,
    /// Position where a torn tail was cut, if one was.
    pub cut_at: Option<Pos>,
    /// Non-zero bytes zeroed after the cut.
    pub torn_bytes: u64,
    /// Segment files removed: after a cut, half-created, or resurrected by a lost removal.
    pub segments_removed: u32,
}

/// What [`Journal::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// One entry per stream, in order.
    pub streams: Vec<StreamRecovery>,
}

impl Recovery {
    /// True if any stream had a torn tail or removed segments.
    pub fn cut_anything(&self) -> bool {
        self.streams
            .iter()
            .any(|p| p.cut_at.is_some() || p.segments_removed > 0)
    }
}

/// What one group commit did (one [`Journal::complete`], or all of [`Journal::sync`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Streams whose durable position advanced.
    pub streams: u32,
    /// Files whose data was synced.
    pub files: u32,
    /// Directories synced.
    pub dirs: u32,
    /// Bytes of log made durable.
    pub bytes: u64,
}

impl SyncReport {
    fn add(&mut self, other: SyncReport) {
        self.streams = self.streams.max(other.streams);
        self.files += other.files;
        self.dirs += other.dirs;
        self.bytes += other.bytes;
    }
}

/// What one [`Journal::retain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainReport {
    /// Segments deleted.
    pub segments_removed: u32,
    /// Bytes of log deleted.
    pub bytes_removed: u64,
}

/// Progress of a sealed (rotated-away) segment towards a durable seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SealState {
    /// Some of its records are not durable, and no commit in flight syncs the file after
    /// them.
    DataPending,
    /// The commit of this number syncs its last records (commits land in order, so its
    /// landing means every record before is durable too).
    DataInFlight(u64),
    /// Its data is durable; the seal goes into its header with the next commit.
    DataDurable,
    /// The seal is in the commit of this number.
    SealInFlight(u64),
    /// Seal durable; the file is closed.
    Sealed,
}

struct SealedSeg<F> {
    base: Pos,
    end: Pos,
    created_ms: u64,
    path: PathBuf,
    /// Open until the seal is durable.
    file: Option<F>,
    state: SealState,
}

struct ActiveSeg<F> {
    base: Pos,
    created_ms: u64,
    file: F,
    file_len: u64,
    /// File offset of the next frame; everything from here on is zero.
    write_off: u64,
}

/// Where a run of the pending buffer goes: `pending[start..end]` to `file` at `offset`.
struct Extent<F> {
    file: F,
    offset: u64,
    start: usize,
    end: usize,
}

struct Stream<F> {
    dir: PathBuf,
    sealed: VecDeque<SealedSeg<F>>,
    active: ActiveSeg<F>,
    end: Pos,
    durable: Pos,
    /// Frames appended since the last commit started, and where they go.
    pending: Vec<u8>,
    extents: Vec<Extent<F>>,
    /// The active file must be synced by the next commit even without new frames (what
    /// recovery read may be only in the page cache).
    needs_sync: bool,
    /// The directory has creations or removals no commit has synced yet.
    dir_dirty: bool,
}

impl<F> Stream<F> {
    fn start(&self) -> Pos {
        self.sealed.front().map_or(self.active.base, |s| s.base)
    }

    /// Newest record time of sealed segment `i`: the time of the record that opened the next.
    fn newest_ms(&self, i: usize) -> u64 {
        self.sealed.get(i + 1).map_or(self.active.created_ms, |s| s.created_ms)
    }
}

/// The commit in flight: what becomes durable when it completes.
struct InFlight {
    /// The commit's number (commits land in this order).
    seq: u64,
    /// Per stream, the end the commit covers.
    ends: Vec<Pos>,
    report: SyncReport,
}

/// Spare segment files, zero-filled ahead by a thread of their own, one per stream at a
/// time: a rotation renames the stream's spare into place instead of creating a segment
/// (creation blocks on the file system's journal, and a merely allocated file makes every
/// later data sync a metadata commit).
struct Spares {
    requests: Option<std::sync::mpsc::Sender<(u32, PathBuf)>>,
    done: std::sync::mpsc::Receiver<(u32, bool)>,
    /// Per stream: a spare is ready, or one was asked for.
    ready: Vec<bool>,
    asked: Vec<bool>,
    /// Set while the journal needs the spare in the making soon (the journal writes it).
    hurry: Arc<AtomicBool>,
    /// The thread's id (0 if it did not say).
    tid: i32,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Rotations that took a spare, and that had to create their segment.
    used: u64,
    missed: u64,
}

impl Spares {
    fn start<S: Storage>(storage: &S, streams: usize, segment_bytes: u64) -> Option<Self> {
        let (req_tx, req_rx) = std::sync::mpsc::channel::<(u32, PathBuf)>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let storage = storage.clone();
        let hurry = Arc::new(AtomicBool::new(false));
        let hurried = hurry.clone();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rim-journal-spares".into())
            .spawn(move || {
                let _ = tid_tx.send(crate::storage::thread_id());
                while let Ok((stream, path)) = req_rx.recv() {
                    let ok = storage.prepare_spare(&path, segment_bytes, Some(&hurried)).is_ok();
                    if done_tx.send((stream, ok)).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        let tid = tid_rx.recv_timeout(Duration::from_secs(5)).unwrap_or(0);
        Some(Self {
            tid,
            requests: Some(req_tx),
            done: done_rx,
            ready: vec![false; streams],
            asked: vec![false; streams],
            hurry,
            thread: Some(thread),
            used: 0,
            missed: 0,
        })
    }

    /// Tells the fill in progress whether to hurry: a stream whose spare is not ready yet
    /// has written past half of its segment (the fill runs in small writes at the idle I/O
    /// priority otherwise; see [`Storage::prepare_spare`]). The journal alone writes the
    /// flag, at every commit: a fill that cleared it itself could race a commit that had
    /// not yet heard it was done, and leave the next fill hurried from its start.
    fn hurry_if_behind<F>(&mut self, streams: &[Stream<F>]) {
        self.poll();
        let behind = streams
            .iter()
            .zip(&self.asked)
            .any(|(st, &asked)| asked && st.active.write_off > st.active.file_len / 2);
        self.hurry.store(behind, Ordering::Relaxed);
    }

    /// Notes finished spares.
    fn poll(&mut self) {
        while let Ok((stream, ok)) = self.done.try_recv() {
            if let (Some(r), Some(a)) = (self.ready.get_mut(stream as usize), self.asked.get_mut(stream as usize)) {
                *r = ok;
                *a = false;
            }
        }
    }

    /// Asks for a spare for `stream` unless one is ready or coming.
    fn ask(&mut self, stream: u32, dir: &Path) {
        let i = stream as usize;
        if self.ready[i] || self.asked[i] {
            return;
        }
        if let Some(tx) = &self.requests {
            self.asked[i] = tx.send((stream, spare_path(dir))).is_ok();
        }
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        // Hang up, then wait for the spare in the making (its file is ours to finish).
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The spare of a stream's directory (a temporary name: recovery removes it).
fn spare_path(dir: &Path) -> PathBuf {
    dir.join("spare.seg.tmp")
}

/// The journal writer; see the crate docs for the format and protocol.
pub struct Journal<S: Storage = Fs> {
    cfg: JournalConfig,
    storage: S,
    committer: S::Committer,
    spares: Option<Spares>,
    /// The spares thread has been given the CPUs of the thread that commits (at the first
    /// commit after open, see [`Journal::confine_spares`]).
    spares_confined: bool,
    streams: Vec<Stream<S::File>>,
    /// Commits started and not landed, oldest first (at most [`FLIGHTS_MAX`]).
    in_flight: VecDeque<InFlight>,
    /// Number of the next commit.
    next_seq: u64,
    /// Emptied buffers of completed commits, reused as pending buffers.
    spare: Vec<Vec<u8>>,
    record_bytes_max: usize,
    sync_method: SyncMethod,
    root_dirty: bool,
    poisoned: bool,
}

impl<S: Storage> std::fmt::Debug for Journal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("cfg", &self.cfg)
            .field("sync_method", &self.sync_method)
            .finish_non_exhaustive()
    }
}

/// Adds `file` to `syncs` unless it is there already.
fn sync_once<F: StorageFile>(syncs: &mut Vec<F>, file: &F) {
    if !syncs.iter().any(|f| f.same_file(file)) {
        syncs.push(file.clone());
    }
}

impl<S: Storage> Journal<S> {
    /// Opens (or creates) the journal: per stream finds the end of valid data, cuts a
    /// torn tail, removes half-created segments, and syncs what it changed.
    pub fn open(cfg: JournalConfig, storage: S) -> Result<(Self, Recovery), JournalError> {
        cfg.check()?;
        storage
            .create_dir_all(&cfg.dir)
            .map_err(|e| JournalError::io(&cfg.dir, e))?;
        let committer = storage.committer().map_err(|e| JournalError::io(&cfg.dir, e))?;
        let sync_method = storage.sync_method();
        let existing = list_streams_in(&storage, &cfg.dir)?;
        if let Some(&p) = existing.iter().find(|&&p| p >= cfg.streams) {
            return Err(JournalError::Config(format!(
                "{} holds stream {p}, but streams is {}: the stream count must not shrink",
                cfg.dir.display(),
                cfg.streams
            )));
        }
        let mut streams = Vec::with_capacity(cfg.streams as usize);
        let mut recovery = Recovery::default();
        // Recovery reads the newest segments front to back: in direct chunks, read ahead
        // (a journal written direct is not in the page cache, and reading it through the
        // page cache costs a fresh page per 4 KiB on this project's VM).
        let mut window = Window::read_ahead();
        for p in 0..cfg.streams {
            let (stream, rec) = recover_stream(&storage, &cfg, p, &mut window)?;
            streams.push(stream);
            recovery.streams.push(rec);
        }
        let spares = if storage.keeps_spares() {
            Spares::start(&storage, streams.len(), cfg.segment_bytes)
        } else {
            None
        };
        let mut journal = Self {
            record_bytes_max: cfg.record_bytes_max(),
            root_dirty: existing.len() < cfg.streams as usize,
            cfg,
            storage,
            committer,
            spares,
            // Open's own sync below is not the writer's first commit: nothing to give yet.
            spares_confined: true,
            streams,
            in_flight: VecDeque::new(),
            next_seq: 1,
            spare: Vec::new(),
            sync_method,
            poisoned: false,
        };
        // What recovery read may be only in the page cache (a process crash, not a power
        // loss) and what it cut must stay cut: sync before claiming anything durable.
        journal.sync()?;
        journal.spares_confined = false;
        if let Some(sp) = journal.spares.as_mut() {
            for (i, st) in journal.streams.iter().enumerate() {
                sp.ask(i as u32, &st.dir);
            }
        }
        Ok((journal, recovery))
    }

    /// Gives the spares thread the CPUs of the calling thread, once: at the first commit
    /// after open. The thread is started at open, so the first spare is ready before any
    /// load (started with the first commit instead, its fill ran inside the `journal-100k`
    /// row and its durable-lag p99 went from 1.2-2.0 ms to 4-8.5 ms); but a thread inherits
    /// the CPUs of the one that spawns it, and a journal is typically opened on a process's
    /// unconfined main thread, then written from a thread pinned to a core of its own.
    /// Left on the opener's CPUs, the spares thread ran its zero fills on the daemon's
    /// busy-polling hot core too (19 ms a second at 2.2M events/s, preempting the hot
    /// shard).
    fn confine_spares(&mut self) {
        if std::mem::replace(&mut self.spares_confined, true) {
            return;
        }
        if let Some(sp) = self.spares.as_ref() {
            crate::storage::give_own_cpus_to(sp.tid);
        }
    }

    /// Number of streams.
    pub fn streams(&self) -> u32 {
        self.cfg.streams
    }

    /// The configuration.
    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    /// How commits reach the disk (commit threads, fdatasync in the caller, or memory).
    pub fn sync_method(&self) -> SyncMethod {
        self.sync_method
    }

    /// Largest payload [`Journal::append`] accepts.
    pub fn record_bytes_max(&self) -> usize {
        self.record_bytes_max
    }

    /// Position after the last appended record (0 for an unknown stream).
    pub fn end(&self, stream: u32) -> Pos {
        self.streams.get(stream as usize).map_or(0, |p| p.end)
    }

    /// Position up to which records are durable (0 for an unknown stream).
    pub fn durable(&self, stream: u32) -> Pos {
        self.streams.get(stream as usize).map_or(0, |p| p.durable)
    }

    /// Oldest retained position (0 for an unknown stream).
    pub fn start(&self, stream: u32) -> Pos {
        self.streams.get(stream as usize).map_or(0, |p| p.start())
    }

    /// Bytes of frames `stream` can still buffer before the next commit starts (a frame
    /// of `n` payload bytes takes [`frame::encoded_len`]`(n)`).
    pub fn room(&self, stream: u32) -> usize {
        self.streams
            .get(stream as usize)
            .map_or(0, |p| self.cfg.buffer_bytes.saturating_sub(p.pending.len()))
    }

    /// Whether `stream` has a prepared spare segment waiting for its next rotation.
    pub fn spare_ready(&mut self, stream: u32) -> bool {
        self.spares.as_mut().is_some_and(|sp| {
            sp.poll();
            sp.ready.get(stream as usize).copied().unwrap_or(false)
        })
    }

    /// Rotations that took a prepared spare segment, and that had to create theirs.
    pub fn spares(&self) -> (u64, u64) {
        self.spares.as_ref().map_or((0, 0), |s| (s.used, s.missed))
    }

    /// Bytes buffered for the next commit, over every stream.
    pub fn pending_bytes(&self) -> usize {
        self.streams.iter().map(|p| p.pending.len()).sum()
    }

    /// True while a commit is in flight.
    pub fn in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Commits in flight.
    pub fn flights(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether another commit may start beside those in flight.
    pub fn can_commit(&self) -> bool {
        self.in_flight.len() < FLIGHTS_MAX
    }

    /// True if something was appended, sealed or created that no completed commit made
    /// durable yet.
    pub fn is_dirty(&self) -> bool {
        !self.in_flight.is_empty()
            || self.root_dirty
            || self.streams.iter().any(|p| {
                !p.pending.is_empty()
                    || p.needs_sync
                    || p.dir_dirty
                    || p.sealed.iter().any(|s| s.state != SealState::Sealed)
            })
    }

    /// Confines the threads that run this journal's commits to `cpus` (see
    /// [`Committer::confine_workers`]).
    pub fn confine_io_workers(&mut self, cpus: &[usize]) -> Result<(), JournalError> {
        self.committer
            .confine_workers(cpus)
            .map_err(|e| JournalError::io(&self.cfg.dir, e))
    }

    /// Appends one record into the stream's buffer and returns its start position; rotates
    /// to a new segment when it does not fit the active one. `time_ms` is the record's time
    /// for retention by age. The record is durable once a commit that started after this
    /// call completed ([`Journal::durable`] passed it).
    pub fn append(&mut self, stream: u32, payload: &[u8], time_ms: u64) -> Result<Pos, JournalError> {
        self.append_parts(stream, &[payload], time_ms)
    }

    /// [`Journal::append`] of the concatenation of `parts` (copied once, into the buffer).
    pub fn append_parts(&mut self, stream: u32, parts: &[&[u8]], time_ms: u64) -> Result<Pos, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let max = self.record_bytes_max;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 || len > max {
            return Err(JournalError::RecordTooLarge { len, max });
        }
        let frame_bytes = frame::encoded_len(len);
        let (storage, cfg) = (&self.storage, &self.cfg);
        let st = self.streams.get_mut(stream as usize).ok_or(JournalError::NoStream {
            stream,
            streams: cfg.streams,
        })?;
        if st.pending.len() + frame_bytes > cfg.buffer_bytes {
            return Err(JournalError::BufferFull {
                stream,
                need: frame_bytes,
                room: cfg.buffer_bytes.saturating_sub(st.pending.len()),
            });
        }
        if st.active.write_off + frame_bytes as u64 > st.active.file_len {
            let spare = self.spares.as_mut().and_then(|sp| {
                sp.poll();
                let ready = std::mem::take(&mut sp.ready[stream as usize]);
                if ready {
                    sp.used += 1;
                } else {
                    sp.missed += 1;
                }
                ready.then(|| spare_path(&st.dir))
            });
            rotate(storage, cfg, stream, st, time_ms, spare.as_deref())?;
            if let Some(sp) = self.spares.as_mut() {
                sp.ask(stream, &st.dir);
            }
        }
        if st.pending.capacity() == 0 {
            st.pending = self.spare.pop().unwrap_or_default();
            st.pending.reserve(cfg.buffer_bytes);
        }
        let pos = st.end;
        let off = st.active.write_off;
        let start = st.pending.len();
        frame::append_parts(&mut st.pending, parts);
        let end = st.pending.len();
        match st.extents.last_mut() {
            Some(e)
                if e.end == start
                    && e.offset + (e.end - e.start) as u64 == off
                    && e.file.same_file(&st.active.file) =>
            {
                e.end = end;
            }
            _ => st.extents.push(Extent {
                file: st.active.file.clone(),
                offset: off,
                start,
                end,
            }),
        }
        st.active.write_off += frame_bytes as u64;
        st.end += frame_bytes as u64;
        Ok(pos)
    }

    /// Starts a group commit of everything appended since the last one (and every seal
    /// and directory entry owed) beside those in flight, unless [`FLIGHTS_MAX`] are or
    /// there is nothing to commit. Returns whether one started. Appending goes on while it
    /// runs; [`Journal::complete`] collects commits in the order they started, so
    /// [`Journal::durable`] only ever covers a prefix: a later commit that reached the
    /// disk first counts once every earlier one has.
    pub fn commit(&mut self) -> Result<bool, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if !self.can_commit() {
            return Ok(false);
        }
        self.confine_spares();
        if let Some(sp) = self.spares.as_mut() {
            sp.hurry_if_behind(&self.streams);
        }
        let seq = self.next_seq;
        let mut c = Commit::default();
        let mut ends = Vec::with_capacity(self.streams.len());
        let mut report = SyncReport::default();
        for st in &mut self.streams {
            if st.durable != st.end {
                report.streams += 1;
                report.bytes += st.end - st.durable;
            }
            ends.push(st.end);
            take_pending(st, &mut c);
            take_seals(st, &mut c, seq);
            if mem::take(&mut st.needs_sync) {
                sync_once(&mut c.syncs, &st.active.file);
            }
            if mem::take(&mut st.dir_dirty) {
                c.dirs.push(st.dir.clone());
            }
        }
        if mem::take(&mut self.root_dirty) {
            c.dirs.push(self.cfg.dir.clone());
        }
        if c.is_empty() {
            return Ok(false);
        }
        report.files = c.syncs.len() as u32;
        report.dirs = c.dirs.len() as u32;
        if let Err(e) = self.committer.start(c) {
            self.poisoned = true;
            return Err(JournalError::io(&self.cfg.dir, e));
        }
        self.in_flight.push_back(InFlight { seq, ends, report });
        self.next_seq += 1;
        Ok(true)
    }

    /// Lands the oldest commit in flight once the storage finished it, waiting at most
    /// `wait` (`None`: not at all), and advances [`Journal::durable`]. `Ok(None)` while it
    /// runs or when none is in flight. A failure poisons the journal (see
    /// [`JournalError::Poisoned`]).
    pub fn complete(&mut self, wait: Option<Duration>) -> Result<Option<SyncReport>, JournalError> {
        if self.in_flight.is_empty() {
            return Ok(None);
        }
        let done = match self.committer.poll(wait) {
            Ok(Some(done)) => done,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.poisoned = true;
                return Err(JournalError::io(&self.cfg.dir, e));
            }
        };
        let Some(flight) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        for mut buf in done.commit.bufs {
            if buf.capacity() >= self.cfg.buffer_bytes && self.spare.len() < self.streams.len() * FLIGHTS_MAX {
                buf.clear();
                self.spare.push(buf);
            }
        }
        if let Err(e) = done.result {
            self.poisoned = true;
            return Err(JournalError::io(&self.cfg.dir, e));
        }
        for (st, end) in self.streams.iter_mut().zip(flight.ends) {
            st.durable = st.durable.max(end);
            for s in &mut st.sealed {
                match s.state {
                    SealState::DataInFlight(seq) if seq <= flight.seq => s.state = SealState::DataDurable,
                    SealState::SealInFlight(seq) if seq <= flight.seq => {
                        s.file = None;
                        s.state = SealState::Sealed;
                    }
                    _ => {}
                }
            }
        }
        Ok(Some(flight.report))
    }

    /// Makes everything appended durable and every rotated-away segment sealed: lands the
    /// commits in flight, then commits until nothing is owed. Blocking.
    pub fn sync(&mut self) -> Result<SyncReport, JournalError> {
        let mut report = SyncReport::default();
        loop {
            while !self.in_flight.is_empty() {
                if let Some(r) = self.complete(Some(Duration::from_secs(1)))? {
                    report.add(r);
                }
            }
            if !self.commit()? {
                return Ok(report);
            }
        }
    }

    /// Deletes whole sealed segments whose newest record is older than `retention_ms`
    /// before `now_ms`, or that push the stream over `retention_bytes`. Never the
    /// active segment, and only segments whose seal is durable.
    pub fn retain(&mut self, now_ms: u64) -> Result<RetainReport, JournalError> {
        let mut report = RetainReport::default();
        let (storage, cfg) = (&self.storage, &self.cfg);
        for st in &mut self.streams {
            while let Some(first) = st.sealed.front() {
                if first.state != SealState::Sealed {
                    break;
                }
                let aged = now_ms.saturating_sub(st.newest_ms(0)) > cfg.retention_ms;
                let over = st.end - first.base > cfg.retention_bytes;
                if !aged && !over {
                    break;
                }
                match storage.remove_file(&first.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(JournalError::io(&first.path, e)),
                }
                report.segments_removed += 1;
                report.bytes_removed += first.end - first.base;
                st.sealed.pop_front();
                st.dir_dirty = true;
            }
        }
        Ok(report)
    }

    /// Commits and seals everything, for a clean shutdown.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.sync()?;
        Ok(())
    }
}

/// Moves a stream's buffered frames into the commit: one write per extent, a sync per file.
fn take_pending<F: StorageFile>(st: &mut Stream<F>, c: &mut Commit<F>) {
    if st.pending.is_empty() {
        return;
    }
    let buf = c.bufs.len();
    c.bufs.push(mem::take(&mut st.pending));
    for e in st.extents.drain(..) {
        sync_once(&mut c.syncs, &e.file);
        c.writes.push(WriteOp {
            file: e.file,
            offset: e.offset,
            buf,
            start: e.start,
            end: e.end,
            // Frames go at the end of the segment's data: everything after is zero.
            zeros_after: true,
        });
    }
}

/// Puts owed seals into the commit: a segment whose data a completed commit made durable
/// gets its seal written now (never earlier: a seal must never be on disk before the
/// records it vouches for), and one whose data is not yet durable gets its file synced.
fn take_seals<F: StorageFile>(st: &mut Stream<F>, c: &mut Commit<F>, seq: u64) {
    for s in &mut st.sealed {
        let Some(file) = s.file.as_ref() else {
            continue;
        };
        match s.state {
            SealState::DataPending => {
                sync_once(&mut c.syncs, file);
                s.state = SealState::DataInFlight(seq);
            }
            SealState::DataDurable => {
                let (at, seal) = segment::seal_bytes(s.end);
                let buf = c.bufs.len();
                c.bufs.push(seal.to_vec());
                c.writes.push(WriteOp {
                    file: file.clone(),
                    offset: at,
                    buf,
                    start: 0,
                    end: seal.len(),
                    zeros_after: false,
                });
                sync_once(&mut c.syncs, file);
                s.state = SealState::SealInFlight(seq);
            }
            SealState::DataInFlight(_) | SealState::SealInFlight(_) | SealState::Sealed => {}
        }
    }
}

/// Seals the active segment and opens a new one at the stream's end: the prepared `spare`
/// if there is one, else a segment created now.
fn rotate<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    stream: u32,
    st: &mut Stream<S::File>,
    time_ms: u64,
    spare: Option<&Path>,
) -> Result<(), JournalError> {
    let base = st.end;
    let adopted = spare.and_then(|sp| {
        let path = st.dir.join(segment::segment_name(base));
        let head = SegmentHeader {
            stream,
            base,
            segment_bytes: cfg.segment_bytes,
            created_ms: time_ms,
        }
        .encode();
        storage.adopt_spare(sp, &path, &head).ok()
    });
    let file = match adopted {
        Some(f) => f,
        None => create_segment(storage, cfg, stream, &st.dir, base, time_ms)?.0,
    };
    let new = ActiveSeg {
        base,
        created_ms: time_ms,
        file_len: cfg.segment_bytes,
        file,
        write_off: HEADER_BYTES,
    };
    let old = mem::replace(&mut st.active, new);
    st.sealed.push_back(SealedSeg {
        base: old.base,
        end: base,
        created_ms: old.created_ms,
        path: st.dir.join(segment::segment_name(old.base)),
        file: Some(old.file),
        // Its last frames may be buffered, or in the commit in flight: the next commit
        // syncs it once more either way.
        state: if st.durable >= base {
            SealState::DataDurable
        } else {
            SealState::DataPending
        },
    });
    st.dir_dirty = true;
    Ok(())
}

/// A stream's first segment (a new journal, or every segment retired): written zero all
/// the way when the storage keeps spares, as every later segment is, so that the first
/// commits are not metadata commits; a plain created segment if that fails.
fn first_segment<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    stream: u32,
    dir: &Path,
    base: Pos,
) -> Result<S::File, JournalError> {
    if storage.keeps_spares() {
        let spare = spare_path(dir);
        if storage.prepare_spare(&spare, cfg.segment_bytes, None).is_ok() {
            let head = SegmentHeader {
                stream,
                base,
                segment_bytes: cfg.segment_bytes,
                created_ms: 0,
            }
            .encode();
            if let Ok(f) = storage.adopt_spare(&spare, &dir.join(segment::segment_name(base)), &head) {
                return Ok(f);
            }
        }
        let _ = storage.remove_file(&spare);
    }
    Ok(create_segment(storage, cfg, stream, dir, base, 0)?.0)
}

fn create_segment<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    stream: u32,
    dir: &Path,
    base: Pos,
    created_ms: u64,
) -> Result<(S::File, PathBuf), JournalError> {
    let path = dir.join(segment::segment_name(base));
    let head = SegmentHeader {
        stream,
        base,
        segment_bytes: cfg.segment_bytes,
        created_ms,
    }
    .encode();
    let file = storage
        .create_file(&path, cfg.segment_bytes, &head)
        .map_err(|e| JournalError::io(&path, e))?;
    Ok((file, path))
}

/// A segment file opened at recovery.
struct Found<F> {
    base: Pos,
    path: PathBuf,
    file: F,
    header: SegmentHeader,
    raw_header: Vec<u8>,
}

/// The segments opened at recovery, and the base of a half-created one removed.
type Opened<F> = (Vec<Found<F>>, Option<Pos>);

/// Opens every segment of a stream, removing leftovers of an interrupted creation.
fn open_segments<S: Storage>(
    storage: &S,
    stream: u32,
    dir: &Path,
    rec: &mut StreamRecovery,
) -> Result<Opened<S::File>, JournalError> {
    let (bases, temps) = segment::list_segments(storage, dir)?;
    for t in temps {
        let p = dir.join(t);
        storage.remove_file(&p).map_err(|e| JournalError::io(&p, e))?;
    }
    let mut found = Vec::with_capacity(bases.len());
    let mut discarded_base = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(segment::segment_name(base));
        let file = storage.open_file(&path, true).map_err(|e| JournalError::io(&path, e))?;
        let raw = segment::read_header(&file).map_err(|e| JournalError::io(&path, e))?;
        let checked = SegmentHeader::decode(&raw, file.len()).and_then(|h| {
            if h.stream != stream || h.base != base {
                Err(format!(
                    "header says stream {} base {}, the file name says stream {stream} base {base}",
                    h.stream, h.base
                ))
            } else {
                Ok(h)
            }
        });
        match checked {
            Ok(header) => found.push(Found {
                base,
                path,
                file,
                header,
                raw_header: raw,
            }),
            // The newest segment with a blank header was being created when the power went:
            // nothing in it was ever reported durable.
            Err(_) if i + 1 == bases.len() && raw.iter().all(|&b| b == 0) => {
                drop(file);
                storage.remove_file(&path).map_err(|e| JournalError::io(&path, e))?;
                rec.segments_removed += 1;
                discarded_base = Some(base);
            }
            Err(reason) => return Err(JournalError::corrupt(stream, base, path, reason)),
        }
    }
    Ok((found, discarded_base))
}

fn recover_stream<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    stream: u32,
    window: &mut Window,
) -> Result<(Stream<S::File>, StreamRecovery), JournalError> {
    let dir = segment::stream_dir(&cfg.dir, stream);
    storage.create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
    let mut rec = StreamRecovery {
        stream,
        ..StreamRecovery::default()
    };
    let (mut found, discarded) = open_segments(storage, stream, &dir, &mut rec)?;
    let mut dir_dirty = rec.segments_removed > 0;
    let mut sealed = VecDeque::new();
    let mut active = None;
    // `found[0]` is always the segment being judged; judged ones leave `found`.
    while !found.is_empty() {
        let next_base = found.get(1).map(|f| f.base);
        let seal = segment::sealed_end(&found[0].raw_header);
        if let (Some(next), Some(end)) = (next_base, seal) {
            if end == next {
                // Sealed after its data was durable: trusted without a scan.
                let f = found.remove(0);
                sealed.push_back(sealed_seg(f, end, SealState::Sealed));
                continue;
            }
            if end < next {
                // A fully sealed segment followed by a gap: its removal by retention was
                // lost in a crash (the removals after it were not). Drop it and all before.
                let f = found.remove(0);
                remove_orphans(storage, f, &mut sealed, &mut rec)?;
                dir_dirty = true;
                continue;
            }
            return Err(JournalError::corrupt(
                stream,
                found[0].base,
                found[0].path.clone(),
                format!("seal says the records end at {end}, past the next segment's base {next}"),
            ));
        }
        let f = &found[0];
        let scan = segment::scan(window, &f.file, HEADER_BYTES).map_err(|e| JournalError::io(&f.path, e))?;
        rec.segments_scanned += 1;
        rec.records_scanned += scan.records;
        let end_pos = f.base + scan.end_off - HEADER_BYTES;
        match next_base {
            Some(next) if end_pos == next => {
                // Whole but unsealed: sync it again, then seal it.
                let f = found.remove(0);
                sealed.push_back(SealedSeg {
                    base: f.base,
                    end: next,
                    created_ms: f.header.created_ms,
                    path: f.path,
                    file: Some(f.file),
                    state: SealState::DataPending,
                });
                continue;
            }
            Some(next) if end_pos > next => {
                return Err(JournalError::corrupt(
                    stream,
                    f.base,
                    f.path.clone(),
                    format!("records run to {end_pos}, past the next segment's base {next}"),
                ));
            }
            _ => {}
        }
        // The last segment, or a torn one before later segments: the log ends here.
        for later in found.drain(1..) {
            drop(later.file);
            storage
                .remove_file(&later.path)
                .map_err(|e| JournalError::io(&later.path, e))?;
            rec.segments_removed += 1;
            dir_dirty = true;
        }
        let Some(f) = found.pop() else {
            break;
        };
        let torn_end = segment::nonzero_end(window, &f.file, scan.end_off).map_err(|e| JournalError::io(&f.path, e))?;
        if let Some(torn_end) = torn_end {
            f.file
                .zero_range(scan.end_off, torn_end - scan.end_off)
                .map_err(|e| JournalError::io(&f.path, e))?;
            rec.torn_bytes = torn_end - scan.end_off;
        }
        if torn_end.is_some() || rec.segments_removed > 0 {
            rec.cut_at = Some(end_pos);
        }
        active = Some(ActiveSeg {
            base: f.base,
            created_ms: f.header.created_ms,
            file_len: f.header.segment_bytes,
            file: f.file,
            write_off: scan.end_off,
        });
    }
    let active = match active {
        Some(a) => a,
        None => {
            // No segment left: start one where the log ends.
            let base = sealed
                .back()
                .map(|s: &SealedSeg<S::File>| s.end)
                .or(discarded)
                .unwrap_or(0);
            let file = first_segment(storage, cfg, stream, &dir, base)?;
            dir_dirty = true;
            ActiveSeg {
                base,
                created_ms: 0,
                file,
                file_len: cfg.segment_bytes,
                write_off: HEADER_BYTES,
            }
        }
    };
    let end = active.base + active.write_off - HEADER_BYTES;
    let st = Stream {
        dir,
        sealed,
        active,
        end,
        durable: 0,
        pending: Vec::new(),
        extents: Vec::new(),
        needs_sync: true,
        dir_dirty,
    };
    rec.start = st.start();
    rec.end = end;
    rec.segments = st.sealed.len() as u32 + 1;
    Ok((st, rec))
}

fn sealed_seg<F>(f: Found<F>, end: Pos, state: SealState) -> SealedSeg<F> {
    SealedSeg {
        base: f.base,
        end,
        created_ms: f.header.created_ms,
        path: f.path,
        file: None,
        state,
    }
}

/// Removes `orphan` and every segment already accepted into `sealed`: segments older than
/// a gap in the chain.
fn remove_orphans<S: Storage>(
    storage: &S,
    orphan: Found<S::File>,
    sealed: &mut VecDeque<SealedSeg<S::File>>,
    rec: &mut StreamRecovery,
) -> Result<(), JournalError> {
    let paths: Vec<PathBuf> = sealed.drain(..).map(|s| s.path).chain([orphan.path]).collect();
    for p in paths {
        storage.remove_file(&p).map_err(|e| JournalError::io(&p, e))?;
        rec.segments_removed += 1;
    }
    Ok(())
}

/// Streams present under a journal directory, through a storage.
pub fn list_streams_in<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<u32>, JournalError> {
    let entries = storage.list_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut out: Vec<u32> = entries
        .iter()
        .filter(|e| e.is_dir)
        .filter_map(|e| segment::parse_stream_dir(&e.name))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Streams present under a journal directory on the real file system.
pub fn list_streams(dir: &Path) -> Result<Vec<u32>, JournalError> {
    list_streams_in(&Fs::new(), dir)
}
