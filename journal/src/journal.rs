//! The writer: [`Journal`] owns every partition's active segment, appends records, group
//! commits, rotates, recovers at open and enforces retention. One thread owns it.

use std::collections::VecDeque;
use std::mem;
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::frame::{self, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, RECORD_BYTES_MAX};
use crate::segment::{self, SegmentHeader, Window, HEADER_BYTES};
use crate::storage::{Fs, Storage, StorageFile, SyncMethod};
use crate::Pos;

/// Smallest accepted segment file.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest accepted segment file.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Most partitions a journal may have.
pub const PARTITIONS_MAX: u32 = 1024;

/// Where the journal lives and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Root directory (created if missing).
    pub dir: PathBuf,
    /// Number of partitions (1..=[`PARTITIONS_MAX`]); must not shrink across restarts.
    pub partitions: u32,
    /// Size of each segment file, header included; default 64 MiB, 64 KiB..=1 GiB.
    pub segment_bytes: u64,
    /// Segments whose newest record is older than this are deleted; default 7 days.
    pub retention_ms: u64,
    /// Per partition, oldest segments are deleted while more than this is kept; default 16 GiB.
    pub retention_bytes: u64,
}

impl JournalConfig {
    /// The defaults for `partitions` partitions under `dir`.
    pub fn new(dir: impl Into<PathBuf>, partitions: u32) -> Self {
        Self {
            dir: dir.into(),
            partitions,
            segment_bytes: 64 * 1024 * 1024,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: 16 * 1024 * 1024 * 1024,
        }
    }

    fn check(&self) -> Result<(), JournalError> {
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(JournalError::Config(format!(
                "partitions is {}, must be 1..={PARTITIONS_MAX}",
                self.partitions
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
        Ok(())
    }

    /// Largest payload a segment of `segment_bytes` can hold.
    fn record_bytes_max(&self) -> usize {
        let room = (self.segment_bytes - HEADER_BYTES) as usize - FRAME_HEADER_BYTES;
        room.min(RECORD_BYTES_MAX)
    }
}

/// What recovery found in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionRecovery {
    /// The partition.
    pub partition: u32,
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
    /// One entry per partition, in order.
    pub partitions: Vec<PartitionRecovery>,
}

impl Recovery {
    /// True if any partition had a torn tail or removed segments.
    pub fn cut_anything(&self) -> bool {
        self.partitions
            .iter()
            .any(|p| p.cut_at.is_some() || p.segments_removed > 0)
    }
}

/// What one [`Journal::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Partitions whose durable position advanced.
    pub partitions: u32,
    /// Files whose data was synced.
    pub files: u32,
    /// Directories synced.
    pub dirs: u32,
    /// Bytes of log made durable.
    pub bytes: u64,
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
    /// Its last records are not synced yet.
    DataPending,
    /// Its data is durable; the seal goes into its header at the next sync.
    DataDurable,
    /// The seal is written, not yet synced.
    SealWritten,
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

struct Part<F> {
    dir: PathBuf,
    sealed: VecDeque<SealedSeg<F>>,
    active: ActiveSeg<F>,
    end: Pos,
    durable: Pos,
    /// The active file has unsynced writes.
    dirty: bool,
    /// The directory has unsynced creations or removals.
    dir_dirty: bool,
}

impl<F> Part<F> {
    fn start(&self) -> Pos {
        self.sealed.front().map_or(self.active.base, |s| s.base)
    }

    /// Newest record time of sealed segment `i`: the time of the record that opened the next.
    fn newest_ms(&self, i: usize) -> u64 {
        self.sealed.get(i + 1).map_or(self.active.created_ms, |s| s.created_ms)
    }
}

/// The journal writer; see the crate docs for the format and protocol.
pub struct Journal<S: Storage = Fs> {
    cfg: JournalConfig,
    storage: S,
    parts: Vec<Part<S::File>>,
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

impl<S: Storage> Journal<S> {
    /// Opens (or creates) the journal: per partition finds the end of valid data, cuts a
    /// torn tail, removes half-created segments, and syncs what it changed.
    pub fn open(cfg: JournalConfig, storage: S) -> Result<(Self, Recovery), JournalError> {
        cfg.check()?;
        storage
            .create_dir_all(&cfg.dir)
            .map_err(|e| JournalError::io(&cfg.dir, e))?;
        let sync_method = storage.probe_sync();
        let existing = list_partitions_in(&storage, &cfg.dir)?;
        if let Some(&p) = existing.iter().find(|&&p| p >= cfg.partitions) {
            return Err(JournalError::Config(format!(
                "{} holds partition {p}, but partitions is {}: the partition count must not shrink",
                cfg.dir.display(),
                cfg.partitions
            )));
        }
        let mut parts = Vec::with_capacity(cfg.partitions as usize);
        let mut recovery = Recovery::default();
        let mut window = Window::default();
        for p in 0..cfg.partitions {
            let (part, rec) = recover_partition(&storage, &cfg, p, &mut window)?;
            parts.push(part);
            recovery.partitions.push(rec);
        }
        let mut journal = Self {
            record_bytes_max: cfg.record_bytes_max(),
            root_dirty: existing.len() < cfg.partitions as usize,
            cfg,
            storage,
            parts,
            sync_method,
            poisoned: false,
        };
        // What recovery read may be only in the page cache (a process crash, not a power
        // loss) and what it cut must stay cut: sync before claiming anything durable.
        for part in &mut journal.parts {
            part.dirty = true;
        }
        journal.sync()?;
        Ok((journal, recovery))
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.cfg.partitions
    }

    /// The configuration.
    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    /// How syncs reach the disk (io_uring, fdatasync, or memory).
    pub fn sync_method(&self) -> SyncMethod {
        self.sync_method
    }

    /// Largest payload [`Journal::append`] accepts.
    pub fn record_bytes_max(&self) -> usize {
        self.record_bytes_max
    }

    /// Position after the last appended record (0 for an unknown partition).
    pub fn end(&self, partition: u32) -> Pos {
        self.parts.get(partition as usize).map_or(0, |p| p.end)
    }

    /// Position up to which records are durable (0 for an unknown partition).
    pub fn durable(&self, partition: u32) -> Pos {
        self.parts.get(partition as usize).map_or(0, |p| p.durable)
    }

    /// Oldest retained position (0 for an unknown partition).
    pub fn start(&self, partition: u32) -> Pos {
        self.parts.get(partition as usize).map_or(0, |p| p.start())
    }

    /// True if something was appended (or sealed) since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.parts
            .iter()
            .any(|p| p.dirty || p.dir_dirty || p.sealed.iter().any(|s| s.file.is_some()))
    }

    /// Appends one record and returns its start position; rotates to a new segment when
    /// it does not fit. `time_ms` is the record's time for retention by age.
    pub fn append(&mut self, partition: u32, payload: &[u8], time_ms: u64) -> Result<Pos, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let max = self.record_bytes_max;
        if payload.is_empty() || payload.len() > max {
            return Err(JournalError::RecordTooLarge {
                len: payload.len(),
                max,
            });
        }
        let frame_bytes = frame::encoded_len(payload.len()) as u64;
        let (storage, cfg) = (&self.storage, &self.cfg);
        let part = self
            .parts
            .get_mut(partition as usize)
            .ok_or(JournalError::NoPartition {
                partition,
                partitions: cfg.partitions,
            })?;
        if part.active.write_off + frame_bytes > part.active.file_len {
            rotate(storage, cfg, partition, part, time_ms)?;
        }
        let pos = part.end;
        let off = part.active.write_off;
        let file = &mut part.active.file;
        // Payload first, header last: a concurrent reader sees either no length word or a
        // CRC that fails until both are in. Padding is already zero (tail invariant).
        let path = &part.dir;
        file.write_at(off + FRAME_HEADER_BYTES as u64, payload)
            .and_then(|()| file.write_at(off, &frame::header(payload)))
            .map_err(|e| JournalError::io(path, e))?;
        part.active.write_off += frame_bytes;
        part.end += frame_bytes;
        part.dirty = true;
        Ok(pos)
    }

    /// Group commit: makes everything appended durable (one batched data sync of every
    /// dirty segment file, then the directories with new or removed segments), then
    /// advances [`Journal::durable`]. A failure poisons the journal (see
    /// [`JournalError::Poisoned`]).
    pub fn sync(&mut self) -> Result<SyncReport, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if let Err(e) = self.write_seals() {
            self.poisoned = true;
            return Err(e);
        }
        let mut report = SyncReport::default();
        let mut dirs: Vec<&Path> = Vec::new();
        let mut files: Vec<&S::File> = Vec::new();
        for part in &self.parts {
            if part.dirty {
                files.push(&part.active.file);
            }
            for s in &part.sealed {
                if matches!(s.state, SealState::DataPending | SealState::SealWritten) {
                    files.extend(s.file.as_ref());
                }
            }
            if part.dir_dirty {
                dirs.push(&part.dir);
            }
        }
        if self.root_dirty {
            dirs.push(&self.cfg.dir);
        }
        report.files = files.len() as u32;
        report.dirs = dirs.len() as u32;
        let synced = self
            .storage
            .sync_files(&files)
            .map_err(|e| JournalError::io(&self.cfg.dir, e))
            .and_then(|()| {
                dirs.iter()
                    .try_for_each(|d| self.storage.sync_dir(d).map_err(|e| JournalError::io(d, e)))
            });
        if let Err(e) = synced {
            self.poisoned = true;
            return Err(e);
        }
        self.root_dirty = false;
        for part in &mut self.parts {
            if part.durable != part.end {
                report.partitions += 1;
                report.bytes += part.end - part.durable;
            }
            part.durable = part.end;
            part.dirty = false;
            part.dir_dirty = false;
            for s in &mut part.sealed {
                s.state = match s.state {
                    SealState::DataPending => SealState::DataDurable,
                    SealState::SealWritten | SealState::Sealed => {
                        s.file = None;
                        SealState::Sealed
                    }
                    SealState::DataDurable => SealState::DataDurable,
                };
            }
        }
        Ok(report)
    }

    /// Writes the seal of every sealed segment whose data a previous sync made durable.
    /// Only then: a seal must never be on disk before the records it vouches for.
    fn write_seals(&mut self) -> Result<(), JournalError> {
        for part in &mut self.parts {
            for s in &mut part.sealed {
                if s.state != SealState::DataDurable {
                    continue;
                }
                let Some(file) = s.file.as_mut() else {
                    continue;
                };
                let (at, seal) = segment::seal_bytes(s.end);
                file.write_at(at, &seal).map_err(|e| JournalError::io(&s.path, e))?;
                s.state = SealState::SealWritten;
            }
        }
        Ok(())
    }

    /// Deletes whole sealed segments whose newest record is older than `retention_ms`
    /// before `now_ms`, or that push the partition over `retention_bytes`. Never the
    /// active segment, and only segments whose seal is durable.
    pub fn retain(&mut self, now_ms: u64) -> Result<RetainReport, JournalError> {
        let mut report = RetainReport::default();
        let (storage, cfg) = (&self.storage, &self.cfg);
        for part in &mut self.parts {
            while let Some(first) = part.sealed.front() {
                if first.state != SealState::Sealed {
                    break;
                }
                let aged = now_ms.saturating_sub(part.newest_ms(0)) > cfg.retention_ms;
                let over = part.end - first.base > cfg.retention_bytes;
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
                part.sealed.pop_front();
                part.dir_dirty = true;
            }
        }
        Ok(report)
    }

    /// Explicitly seal and sync everything, for a clean shutdown.
    pub fn close(mut self) -> Result<(), JournalError> {
        // Two rounds: data, then the seals of segments rotated since the last sync.
        self.sync()?;
        self.sync()?;
        Ok(())
    }
}

/// Seals the active segment and opens a new one at the partition's end.
fn rotate<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    partition: u32,
    part: &mut Part<S::File>,
    time_ms: u64,
) -> Result<(), JournalError> {
    let base = part.end;
    let (file, _) = create_segment(storage, cfg, partition, &part.dir, base, time_ms)?;
    let new = ActiveSeg {
        base,
        created_ms: time_ms,
        file_len: cfg.segment_bytes,
        file,
        write_off: HEADER_BYTES,
    };
    let old = mem::replace(&mut part.active, new);
    part.sealed.push_back(SealedSeg {
        base: old.base,
        end: base,
        created_ms: old.created_ms,
        path: part.dir.join(segment::segment_name(old.base)),
        file: Some(old.file),
        state: if part.dirty {
            SealState::DataPending
        } else {
            SealState::DataDurable
        },
    });
    part.dirty = true;
    part.dir_dirty = true;
    Ok(())
}

fn create_segment<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    partition: u32,
    dir: &Path,
    base: Pos,
    created_ms: u64,
) -> Result<(S::File, PathBuf), JournalError> {
    let path = dir.join(segment::segment_name(base));
    let head = SegmentHeader {
        partition,
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

/// Opens every segment of a partition, removing leftovers of an interrupted creation.
fn open_segments<S: Storage>(
    storage: &S,
    partition: u32,
    dir: &Path,
    rec: &mut PartitionRecovery,
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
            if h.partition != partition || h.base != base {
                Err(format!(
                    "header says partition {} base {}, the file name says partition {partition} base {base}",
                    h.partition, h.base
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
            Err(reason) => return Err(JournalError::corrupt(partition, base, path, reason)),
        }
    }
    Ok((found, discarded_base))
}

fn recover_partition<S: Storage>(
    storage: &S,
    cfg: &JournalConfig,
    partition: u32,
    window: &mut Window,
) -> Result<(Part<S::File>, PartitionRecovery), JournalError> {
    let dir = segment::partition_dir(&cfg.dir, partition);
    storage.create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
    let mut rec = PartitionRecovery {
        partition,
        ..PartitionRecovery::default()
    };
    let (mut found, discarded) = open_segments(storage, partition, &dir, &mut rec)?;
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
                partition,
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
                    partition,
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
        let Some(mut f) = found.pop() else {
            break;
        };
        let torn_end = segment::nonzero_end(&f.file, scan.end_off).map_err(|e| JournalError::io(&f.path, e))?;
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
            let (file, _) = create_segment(storage, cfg, partition, &dir, base, 0)?;
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
    let part = Part {
        dir,
        sealed,
        active,
        end,
        durable: 0,
        dirty: true,
        dir_dirty,
    };
    rec.start = part.start();
    rec.end = end;
    rec.segments = part.sealed.len() as u32 + 1;
    Ok((part, rec))
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
    rec: &mut PartitionRecovery,
) -> Result<(), JournalError> {
    let paths: Vec<PathBuf> = sealed.drain(..).map(|s| s.path).chain([orphan.path]).collect();
    for p in paths {
        storage.remove_file(&p).map_err(|e| JournalError::io(&p, e))?;
        rec.segments_removed += 1;
    }
    Ok(())
}

/// Partitions present under a journal directory, through a storage.
pub fn list_partitions_in<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<u32>, JournalError> {
    let entries = storage.list_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut out: Vec<u32> = entries
        .iter()
        .filter(|e| e.is_dir)
        .filter_map(|e| segment::parse_partition_dir(&e.name))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Partitions present under a journal directory on the real file system.
pub fn list_partitions(dir: &Path) -> Result<Vec<u32>, JournalError> {
    list_partitions_in(&Fs::new(), dir)
}
