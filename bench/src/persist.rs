//! Suite `persist`: what durability costs, against what the disk can do, and how fast the
//! daemon comes back.
//!
//! Rows (a real daemon with the workload's 100 rules and persistence on, its journal in a
//! directory on disk; one producer over 10,000 nodes, pinned to the client core, which the
//! daemon's cold side shares):
//! - `journal-max`: the producer publishes as fast as its ring takes events for the run's
//!   length; `events_per_s` = events / time until the last one was durable. Its journal's
//!   commit cadence (bytes per group commit) and bytes per event are kept for `disk-floor`.
//!   With `RIM_BENCH_THREADS=1` ([`crate::procfs::per_thread`]) also `journal_thread_ns`
//!   and `producer_ns`, the CPU per event of the daemon's journal thread and of this
//!   producer over the flood: on two cores they share the cold core (the hot shard has the
//!   other), so one core over their sum bounds the flood's rate.
//! - `disk-floor`: the machine's limit at that cadence: the same bytes the journal wrote,
//!   written sequentially by one thread into preallocated files of the journal's segment
//!   size, a direct `pwrite` (`O_DIRECT`, whole blocks, as the journal appends) +
//!   `fdatasync` per commit's worth, no framing, no daemon. `events_per_s`
//!   counts them as events of the journal's mean size; `sync_p99_ns` is per commit.
//! - `journal`: 1M events/s offered (paced in 1 ms batches); `durable_lag` = from publish
//!   until the ring's durable position covered the event (one event in 64 sampled, HDR),
//!   seen by the producer itself, which sleeps between batches and looks at its durable
//!   position every 100 µs at most (the lag figures are therefore up to ~0.1 ms high).
//! - `journal-100k`: the same at 100k events/s offered; `journal-100k-store-quiet` the
//!   same with the store writer idle for the run (no capsule batch, no checkpoint).
//! - `sync-floor`, `sync-floor-100k`: the disk's floor under the durable lag of the two
//!   rows above: every 1 ms, one thread `pwrite`s (direct) 1 ms worth of the journal's bytes at 1M
//!   and 100k events/s into a segment-sized file written zero beforehand (as the journal's
//!   segments are) and `fdatasync`s it; `durable_lag` = the write and sync (no queueing,
//!   no framing, no daemon), `sync_p99_ns` the same p99.
//! - `journal-bare`, `journal-bare-100k`: the floor under the two rows above: the journal
//!   crate alone on one pinned thread (no daemon, no ring, no roll-up, no store), records of
//!   the daemon's mean size appended at 1M and 100k/s in 1 ms batches, committed as the
//!   journal thread does (a new commit once the newest in flight ran 250 µs); `durable_lag` from
//!   append to the completion that covered it, every record counted.
//! - `decisions`: every event fires a rule (the workload's `probe`); `decisions_per_s` =
//!   decisions made durable in the decision log *and* indexed in the store / time, the
//!   producer publishing as fast as its ring takes events. The row's note on stderr says
//!   when the last decision was durable and when the last was indexed, and what the store
//!   committed before and after the flood's end: the store writer runs on the time the
//!   journal thread and the producer leave on their shared core, so under a flood it
//!   indexes little until the flood ends, and the row's time includes that catch-up.
//! - `capsules`: `Store::write` of observed capsules (10,000 nodes × windows, 4 metrics,
//!   10,000 per transaction, idempotency check and encoding included), and beside it
//!   `redb-raw`: the same rows, pre-encoded, plainly inserted into the same tables with
//!   no idempotency check (rim_capsule::raw), in a fresh store, same run.
//! - `recovery`: 10M events journaled as fast as they go, the store caught up, one
//!   checkpoint period later the daemon is SIGKILLed and a new one started on its data:
//!   `ready_ms` from spawn until it serves (control socket and stats up); `replayed` =
//!   records recovery read; and `full_replay_ms` with the store deleted, so recovery reads
//!   the whole journal; of that full replay, `recovery_ms` (the daemon's own count, from
//!   the start of recovery, the roll-up's checkpoint restored, to its last commit) and `recovery_cpu_ms` (every daemon
//!   thread's CPU time until it served: recovery's work, which this VM's noise moves less
//!   than the wall times).
//! - `recovery-lagging`: 1M events/s for 10 s with the store's hand-off held back
//!   (`persist.store_interval_ms` = 60 s, and `persist.store_batch_max` = 1M, since a full
//!   batch is handed off at once: with 10,000 nodes each second's closed windows were one,
//!   and the store fell only 4-6 s behind), SIGKILL at 10 s: the store is 10 s behind, and
//!   recovery replays those 10 s; `recovery_ms` and `recovery_cpu_ms` as in `recovery`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::daemon::DaemonProc;
use crate::error::BenchError;
use crate::procfs::{self, HOT_THREAD};
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload::{self, applied};

/// The `persist` suite.
pub const SUITE: Suite = Suite {
    name: "persist",
    about: "journal throughput and durable lag against the disk's floor, decisions, capsule writes vs plain redb, recovery time",
    columns: &[
        "events_per_s",
        "decisions_per_s",
        "durable_lag_p50_ns",
        "durable_lag_p99_ns",
        "durable_lag_p999_ns",
        "durable_lag_max_ns",
        "sync_p99_ns",
        "bytes_per_sync",
        "records_per_s",
        "events",
        "replayed",
        "ready_ms",
        "full_replay_ms",
        "recovery_ms",
        "recovery_cpu_ms",
        "journal_thread_ns",
        "producer_ns",
    ],
    rows: &[
        RowSpec {
            name: "journal-max",
            run: run_journal_max,
        },
        RowSpec {
            name: "disk-floor",
            run: run_disk_floor,
        },
        RowSpec {
            name: "journal",
            run: run_journal,
        },
        RowSpec {
            name: "journal-100k",
            run: run_journal_100k,
        },
        RowSpec {
            name: "journal-100k-store-quiet",
            run: run_journal_100k_store_quiet,
        },
        RowSpec {
            name: "sync-floor",
            run: run_sync_floor,
        },
        RowSpec {
            name: "sync-floor-100k",
            run: run_sync_floor_100k,
        },
        RowSpec {
            name: "journal-bare",
            run: run_journal_bare,
        },
        RowSpec {
            name: "journal-bare-100k",
            run: run_journal_bare_100k,
        },
        RowSpec {
            name: "decisions",
            run: run_decisions,
        },
        RowSpec {
            name: "capsules",
            run: run_capsules,
        },
        RowSpec {
            name: "redb-raw",
            run: run_raw,
        },
        RowSpec {
            name: "recovery",
            run: run_recovery,
        },
        RowSpec {
            name: "recovery-lagging",
            run: run_recovery_lagging,
        },
    ],
    peers: &[],
    finish: None,
};

/// What `journal-max` measured of its journal, for `disk-floor`.
#[derive(Clone, Copy, Debug)]
struct Cadence {
    /// Bytes the group commits wrote.
    bytes: u64,
    /// Group commits.
    syncs: u64,
    /// Mean journal bytes per event (frame included).
    bytes_per_event: f64,
}

static CADENCE: Mutex<Option<Cadence>> = Mutex::new(None);

fn seconds(size: RunSize) -> f64 {
    match size {
        RunSize::Full => 10.0,
        RunSize::Quick => 3.0,
        RunSize::Smoke => 0.05,
    }
}

const OFFERED_PER_S: u64 = 1_000_000;
const SAMPLE_EVERY: u64 = 64;
/// The journal's segment size (the default), for the disk floor's files.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Removes a row's data and waits until the file system has let go of it: this disk is
/// mounted with online discard, and the discards of a removed journal, issued at the next
/// metadata commit, would otherwise land in the next row's syncs.
pub(crate) fn remove_data(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    #[allow(unsafe_code)]
    // SAFETY: sync(2) takes no arguments and touches no memory of this process.
    unsafe {
        libc::sync();
    }
}

fn data_dir() -> Result<PathBuf, BenchError> {
    // On disk (not /dev/shm): fdatasync must mean something.
    let p = std::env::temp_dir().join(format!(
        "rim-bench-persist-{}-{}",
        std::process::id(),
        workload::unix_ms()
    ));
    std::fs::create_dir_all(&p).map_err(|source| BenchError::Io {
        what: "creating the persist data directory",
        source,
    })?;
    Ok(p)
}

pub(crate) fn sets(opts: &RunOpts, data: &Path) -> Vec<String> {
    let mut s = workload::daemon_sets(opts.client_core, opts.peer_core);
    s.push(format!("persist.data_dir=\"{}\"", data.display()));
    s
}

pub(crate) fn counter(s: &rim_stats::Snapshot, name: &str) -> u64 {
    s.counters.get(name).copied().unwrap_or(0)
}

/// A daemon on a fresh data directory, this thread pinned to the client core, a producer
/// with every string interned, and every node's first event durable.
pub(crate) fn start(
    opts: &RunOpts,
    name: &str,
    extra: &[&str],
) -> Result<(PathBuf, DaemonProc, workload::Publisher), BenchError> {
    let data = data_dir()?;
    let mut s = sets(opts, &data);
    s.extend(extra.iter().map(|x| (*x).to_owned()));
    let daemon = DaemonProc::start(&workload::rules(), &s, Duration::from_secs(60))?;
    crate::affinity::pin_current_thread(opts.client_core)?;
    let producer = rim_ring::attach::attach_producer(&daemon.socket(), name, 1 << 24)
        .map_err(|e| BenchError::transport("rim-ring", "attach producer", e))?;
    let mut p = workload::Publisher::new(producer)?;
    let now = workload::unix_ms();
    for i in 0..workload::nodes() {
        p.publish(i, false, now, 0)?;
    }
    wait_durable(&p, p.producer.position(), opts.peer_timeout)?;
    Ok((data, daemon, p))
}

/// Publishes as fast as the ring takes events for `secs` (or `max` events); returns
/// (events, seconds until the last was durable).
pub(crate) fn flood(
    p: &mut workload::Publisher,
    secs: f64,
    max: u64,
    probe: bool,
    timeout: Duration,
) -> Result<(u64, f64), BenchError> {
    let nodes = workload::nodes();
    let started = Instant::now();
    // No deadline when `secs` is too large for a Duration (a run bounded by `max` alone).
    let until = Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| started.checked_add(d));
    let mut sent = 0u64;
    let mut ts = workload::unix_ms();
    while sent < max && (!sent.is_multiple_of(4096) || until.is_none_or(|u| Instant::now() < u)) {
        if sent.is_multiple_of(4096) {
            ts = ts.max(workload::unix_ms());
        }
        p.publish_probe(
            sent as usize % nodes,
            if probe { sent as f64 + 1.0 } else { 0.0 },
            ts,
            0,
        )?;
        sent += 1;
    }
    wait_durable(p, p.producer.position(), timeout * 4)?;
    Ok((sent, started.elapsed().as_secs_f64()))
}

fn run_journal_max(opts: &RunOpts) -> Result<Row, BenchError> {
    let (data, daemon, mut p) = start(opts, "bench-journal-max", &[])?;
    let before = daemon.stats()?;
    // Per-thread figures only on request (see crate::procfs for why).
    let cpu_before = procfs::per_thread().then(|| (procfs::tasks(daemon.pid()), procfs::this_thread()));
    let (sent, secs) = flood(&mut p, seconds(opts.size), u64::MAX, false, opts.peer_timeout)?;
    let shares = cpu_before.and_then(|before| {
        let shares = FloodShares::since(before, daemon.pid(), sent, secs);
        if shares.is_none() {
            eprint!("(no per-thread figures: a /proc reading failed) ");
        }
        shares
    });
    let after = daemon.wait_stats(Duration::from_secs(10), |s| {
        counter(s, "persist.journal_events") >= sent
    })?;
    let d = |n: &str| counter(&after, n).saturating_sub(counter(&before, n));
    let (bytes, syncs, events) = (
        d("persist.commit_bytes"),
        d("persist.syncs"),
        d("persist.journal_events"),
    );
    let payload = d("persist.journal_bytes");
    let cadence = Cadence {
        bytes,
        syncs: syncs.max(1),
        // Each frame adds 8 bytes of header and pads to 8.
        bytes_per_event: (payload as f64 / events.max(1) as f64 + 8.0 + 4.0).max(1.0),
    };
    *CADENCE.lock().map_err(|_| BenchError::Setup("lock".into()))? = Some(cadence);
    eprint!(
        "({} commits of {} KiB mean, {:.0} B/event; producer saw the ring full {} times; {} rotations without a spare) ",
        syncs,
        bytes / syncs.max(1) / 1024,
        cadence.bytes_per_event,
        p.full_retries,
        d("persist.spares_missed")
    );
    let mut figures = vec![
        Figure::real("events_per_s", sent as f64 / secs),
        Figure::int("bytes_per_sync", bytes / syncs.max(1)),
    ];
    if let Some(shares) = shares {
        eprint!(
            "(% of a core over the flood: {JOURNAL_THREAD} {:.0}, this producer {:.0} on the same core, {HOT_THREAD} {:.0}) ",
            shares.journal_pct, shares.producer_pct, shares.hot_pct
        );
        figures.extend([
            Figure::int("journal_thread_ns", shares.journal_ns),
            Figure::int("producer_ns", shares.producer_ns),
        ]);
    }
    daemon.stop()?;
    remove_data(&data);
    Ok(Row::new("journal-max", figures))
}

/// The daemon's journal thread and hot shard, by thread name.
const JOURNAL_THREAD: &str = "rimd-journal";

/// Where `journal-max`'s CPU went: on two cores the producer (this thread) and the journal
/// thread share the cold core, the hot shard has the other, so the flood's rate is bounded
/// by one core over the two's time per event.
struct FloodShares {
    /// The journal thread's CPU per event, ns.
    journal_ns: u64,
    /// This producer's CPU per event, ns.
    producer_ns: u64,
    journal_pct: f64,
    producer_pct: f64,
    hot_pct: f64,
}

impl FloodShares {
    /// From the readings `before` the flood to now, over `events` in `secs`; None when a
    /// reading failed or a thread is missing.
    fn since(
        before: (HashMap<u32, procfs::Task>, Option<procfs::Task>),
        daemon: u32,
        events: u64,
        secs: f64,
    ) -> Option<Self> {
        let (threads, me) = (before.0, before.1?);
        let (now, me_now) = (procfs::tasks(daemon), procfs::this_thread()?);
        let gains = procfs::gained(&threads, &now);
        // Summed over the threads of that name (glommio's executor starts a second one).
        let gained = |name: &str| -> Option<u64> {
            let named = gains.iter().filter(|(n, _)| n == name);
            named.clone().next().map(|_| named.map(|(_, ns)| ns).sum())
        };
        let (journal, hot) = (gained(JOURNAL_THREAD)?, gained(HOT_THREAD)?);
        let producer = me_now.run_ns.saturating_sub(me.run_ns);
        let n = events.max(1);
        let pct = |ns: u64| 100.0 * ns as f64 / (secs.max(1e-9) * 1e9);
        Some(Self {
            journal_ns: journal / n,
            producer_ns: producer / n,
            journal_pct: pct(journal),
            producer_pct: pct(producer),
            hot_pct: pct(hot),
        })
    }
}

/// Writes `total` bytes in `chunk`-sized `pwrite` + `fdatasync` rounds into preallocated
/// segment-sized files; returns (seconds, per-round latency histogram).
fn write_floor(dir: &Path, total: u64, chunk: u64) -> Result<(f64, Histogram<u64>), BenchError> {
    use std::os::unix::fs::FileExt;
    let io = |what: &'static str| move |source| BenchError::Io { what, source };
    let mut lat =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| BenchError::Setup(e.to_string()))?;
    let chunk = direct_len(chunk);
    let block = Aligned::new(chunk as usize);
    let buf = block.bytes();
    let mut file: Option<std::fs::File> = None;
    let mut off = SEGMENT_BYTES;
    let mut written = 0u64;
    let mut n = 0;
    let started = Instant::now();
    while written < total {
        if off + chunk > SEGMENT_BYTES {
            let path = dir.join(format!("floor-{n}.seg"));
            std::fs::File::options()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(io("creating a disk-floor file"))?;
            let f = open_direct(&path).map_err(io("opening a disk-floor file"))?;
            preallocate(&f, SEGMENT_BYTES).map_err(io("preallocating a disk-floor file"))?;
            file = Some(f);
            off = 0;
            n += 1;
        }
        let Some(f) = file.as_ref() else { break };
        let t0 = Instant::now();
        f.write_all_at(buf, off).map_err(io("writing a disk-floor file"))?;
        f.sync_data().map_err(io("syncing a disk-floor file"))?;
        let _ = lat.record((t0.elapsed().as_nanos() as u64).max(1));
        off += chunk;
        written += chunk;
    }
    Ok((started.elapsed().as_secs_f64(), lat))
}

/// `len` rounded up to whole blocks of a direct write.
fn direct_len(len: u64) -> u64 {
    len.div_ceil(DIRECT_BLOCK as u64) * DIRECT_BLOCK as u64
}

/// Bytes of a direct write's block (as the journal's appends write them).
const DIRECT_BLOCK: usize = 4096;

/// `path` opened for writing with `O_DIRECT`, as the journal opens its segments for
/// appends (buffered where the file system refuses it), so a floor pays what the
/// journal pays per byte and nothing more.
fn open_direct(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::File::options();
    o.read(true).write(true);
    match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => o.open(path),
        r => r,
    }
}

/// A buffer of changing bytes whose start is [`DIRECT_BLOCK`]-aligned (what `O_DIRECT`
/// asks of memory).
struct Aligned {
    raw: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let raw: Vec<u8> = (0..len + DIRECT_BLOCK).map(|i| (i * 131 + 7) as u8).collect();
        let at = raw.as_ptr().align_offset(DIRECT_BLOCK).min(DIRECT_BLOCK);
        Self { raw, at, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.at..self.at + self.len]
    }
}

fn preallocate(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fallocate only reads the descriptor number of an open file (as the
    // journal's own files are preallocated).
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        f.set_len(len)
    }
}

fn run_disk_floor(opts: &RunOpts) -> Result<Row, BenchError> {
    let kept = *CADENCE.lock().map_err(|_| BenchError::Setup("lock".into()))?;
    let cadence = match kept {
        Some(c) => c,
        None => {
            run_journal_max(opts)?;
            CADENCE
                .lock()
                .map_err(|_| BenchError::Setup("lock".into()))?
                .ok_or_else(|| BenchError::Setup("journal-max kept no cadence".into()))?
        }
    };
    crate::affinity::pin_current_thread(opts.client_core)?;
    let dir = data_dir()?;
    let chunk = (cadence.bytes / cadence.syncs).clamp(4096, SEGMENT_BYTES);
    let (secs, lat) = write_floor(&dir, cadence.bytes.max(chunk), chunk)?;
    remove_data(&dir);
    let events = cadence.bytes.max(chunk) as f64 / cadence.bytes_per_event;
    Ok(Row::new(
        "disk-floor",
        vec![
            Figure::real("events_per_s", events / secs),
            Figure::int("sync_p99_ns", lat.value_at_quantile(0.99)),
            Figure::int("bytes_per_sync", chunk),
        ],
    )
    .with_histogram("sync", &lat))
}

fn run_journal(opts: &RunOpts) -> Result<Row, BenchError> {
    journal_row(opts, "journal", OFFERED_PER_S)
}

/// The same at a tenth of the offered load.
fn run_journal_100k(opts: &RunOpts) -> Result<Row, BenchError> {
    journal_row(opts, "journal-100k", OFFERED_PER_S / 10)
}

/// `journal-100k` with the store writer kept idle (no capsule batch, no checkpoint during
/// the run): the daemon's journal path alone, to tell its lag from the store's share of
/// the cold core and the disk.
fn run_journal_100k_store_quiet(opts: &RunOpts) -> Result<Row, BenchError> {
    journal_row_with(
        opts,
        "journal-100k-store-quiet",
        OFFERED_PER_S / 10,
        &[
            "persist.store_interval_ms=600000",
            "persist.store_batch_max=1000000",
            "persist.checkpoint_ms=600000",
        ],
    )
}

fn run_sync_floor(opts: &RunOpts) -> Result<Row, BenchError> {
    sync_floor_row(opts, "sync-floor", OFFERED_PER_S)
}

fn run_sync_floor_100k(opts: &RunOpts) -> Result<Row, BenchError> {
    sync_floor_row(opts, "sync-floor-100k", OFFERED_PER_S / 10)
}

/// The journal's mean bytes per event (frame included), from `journal-max` when it ran.
fn bytes_per_event() -> f64 {
    CADENCE
        .lock()
        .ok()
        .and_then(|c| *c)
        .map_or(136.0, |c| c.bytes_per_event)
}

fn sync_floor_row(opts: &RunOpts, name: &str, per_s: u64) -> Result<Row, BenchError> {
    crate::affinity::pin_current_thread(opts.client_core)?;
    let mut floor = SyncEveryMs::create(per_s, "floor.seg")?;
    let mut lat =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| BenchError::Setup(e.to_string()))?;
    let ticks = (seconds(opts.size) * 1000.0) as u64;
    for _ in 0..ticks {
        let ns = floor.next()?;
        let _ = lat.record(ns.max(1));
    }
    let chunk = floor.chunk;
    drop(floor);
    Ok(Row::new(
        name,
        [
            lag_figures(&lat).as_slice(),
            &[
                Figure::int("sync_p99_ns", lat.value_at_quantile(0.99)),
                Figure::int("bytes_per_sync", chunk),
            ],
        ]
        .concat(),
    )
    .with_histogram("durable_lag", &lat))
}

/// `sync-floor`'s disk work, also [`SyncLoad`]'s: every millisecond (at once when behind),
/// 1 ms worth of the journal's bytes at `per_s` events/s written (direct, whole blocks)
/// into a segment-sized file written zero beforehand (as the journal's segments are),
/// from its start again when full, and `fdatasync`ed. No framing, no queueing, no daemon.
/// The file's directory is removed on drop.
struct SyncEveryMs {
    dir: PathBuf,
    file: std::fs::File,
    block: Aligned,
    chunk: u64,
    off: u64,
    started: Instant,
    ticks: u64,
}

impl SyncEveryMs {
    fn create(per_s: u64, file_name: &str) -> Result<Self, BenchError> {
        use rim_journal::Storage;
        let io = |what: &'static str| move |source| BenchError::Io { what, source };
        let dir = data_dir()?;
        let path = dir.join(file_name);
        rim_journal::Fs::new()
            .prepare_spare(&path, SEGMENT_BYTES, None)
            .map_err(io("writing a sync-floor file zero"))?;
        let file = open_direct(&path).map_err(io("opening a sync-floor file"))?;
        let chunk = direct_len(((per_s as f64 / 1000.0 * bytes_per_event()) as u64).max(64));
        Ok(Self {
            dir,
            file,
            block: Aligned::new(chunk as usize),
            chunk,
            off: 0,
            started: Instant::now(),
            ticks: 0,
        })
    }

    /// Waits for the next millisecond's turn, then writes and syncs; returns the ns the
    /// write and sync took.
    fn next(&mut self) -> Result<u64, BenchError> {
        use std::os::unix::fs::FileExt;
        let io = |what: &'static str| move |source| BenchError::Io { what, source };
        let due = self.started + Duration::from_millis(self.ticks);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        if self.off + self.chunk > SEGMENT_BYTES {
            self.off = 0;
        }
        let t0 = Instant::now();
        self.file
            .write_all_at(self.block.bytes(), self.off)
            .map_err(io("writing a sync-floor file"))?;
        self.file.sync_data().map_err(io("syncing a sync-floor file"))?;
        self.off += self.chunk;
        self.ticks += 1;
        Ok(t0.elapsed().as_nanos() as u64)
    }
}

impl Drop for SyncEveryMs {
    fn drop(&mut self) {
        remove_data(&self.dir);
    }
}

/// Disk work beside another suite's row: a thread pinned to `core` doing `sync-floor`'s
/// writes and syncs ([`SyncEveryMs`]) until stopped. What a journal that keeps its durable
/// lag near the 2 ms target must at least do: on this machine's kernel each sync is two
/// wake-ups of the thread (its timer and the sync's completion) on the core it shares.
pub(crate) struct SyncLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64, BenchError>>,
    started: Instant,
}

impl SyncLoad {
    pub(crate) fn start(core: usize, per_s: u64) -> Result<Self, BenchError> {
        let mut load = SyncEveryMs::create(per_s, "sync-load.seg")?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sync-load".into())
            .spawn(move || {
                crate::affinity::pin_current_thread(core)?;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    load.next()?;
                }
                Ok(load.ticks)
            })
            .map_err(|source| BenchError::Io {
                what: "starting the sync-load thread",
                source,
            })?;
        Ok(Self {
            stop,
            thread,
            started: Instant::now(),
        })
    }

    /// Stops the thread; returns its syncs per second.
    pub(crate) fn stop(self) -> Result<f64, BenchError> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let syncs = self
            .thread
            .join()
            .map_err(|_| BenchError::Setup("the sync-load thread panicked".into()))??;
        Ok(syncs as f64 / secs.max(1e-9))
    }
}

/// A durable-lag row: the rate, the lag figures, and the histogram for `--plot`.
fn lag_row(name: &str, events_per_s: f64, lag: &Histogram<u64>) -> Row {
    Row::new(
        name,
        [
            &[Figure::real("events_per_s", events_per_s)],
            lag_figures(lag).as_slice(),
        ]
        .concat(),
    )
    .with_histogram("durable_lag", lag)
}

/// The four durable-lag figures every lag row reports: p50, p99, p99.9 and max.
fn lag_figures(lag: &Histogram<u64>) -> [Figure; 4] {
    [
        Figure::int("durable_lag_p50_ns", lag.value_at_quantile(0.5)),
        Figure::int("durable_lag_p99_ns", lag.value_at_quantile(0.99)),
        Figure::int("durable_lag_p999_ns", lag.value_at_quantile(0.999)),
        Figure::int("durable_lag_max_ns", lag.max()),
    ]
}

fn run_journal_bare(opts: &RunOpts) -> Result<Row, BenchError> {
    bare_row(opts, "journal-bare", OFFERED_PER_S)
}

fn run_journal_bare_100k(opts: &RunOpts) -> Result<Row, BenchError> {
    bare_row(opts, "journal-bare-100k", OFFERED_PER_S / 10)
}

/// The journal crate alone at `per_s`: one thread appends each 1 ms batch and commits with
/// the persist thread's policy ([`Bare`]), collecting completions between batches.
fn bare_row(opts: &RunOpts, name: &str, per_s: u64) -> Result<Row, BenchError> {
    use rim_journal::{Fs, Journal, JournalConfig};
    let jerr = |what: &'static str| move |e: rim_journal::JournalError| BenchError::transport("journal", what, e);
    crate::affinity::pin_current_thread(opts.client_core)?;
    let dir = data_dir()?;
    let mut cfg = JournalConfig::new(dir.join("journal"), 2);
    cfg.segment_bytes = SEGMENT_BYTES;
    cfg.buffer_bytes = 2 << 20;
    let (mut journal, _) = Journal::open(cfg, Fs::new()).map_err(jerr("open"))?;
    // The daemon's mean record (its frame adds 8 bytes and pads to 8).
    let record_len = (bytes_per_event() - 12.0).max(16.0) as usize;
    let record: Vec<u8> = (0..record_len).map(|i| (i * 31 + 1) as u8).collect();
    let total = (seconds(opts.size) * per_s as f64) as u64;
    let batch = (per_s / 1000).max(1);
    let mut bare = Bare {
        lag: Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| BenchError::Setup(e.to_string()))?,
        waiting: std::collections::VecDeque::new(),
        newest_at: None,
    };
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = started + Duration::from_nanos(sent * 1_000_000_000 / per_s);
        loop {
            bare.turn(&mut journal, Duration::ZERO).map_err(jerr("commit"))?;
            let now = Instant::now();
            if now >= due {
                break;
            }
            bare.turn(&mut journal, (due - now).min(Duration::from_micros(100)))
                .map_err(jerr("commit"))?;
        }
        let at = Instant::now();
        let n = batch.min(total - sent);
        for _ in 0..n {
            // A stalled sync can fill the buffer: wait for room as the daemon's thread does.
            while journal.room(0) < record.len() + 16 {
                bare.turn(&mut journal, Duration::from_micros(100))
                    .map_err(jerr("commit"))?;
            }
            journal.append(0, &record, 0).map_err(jerr("append"))?;
        }
        sent += n;
        bare.waiting.push_back((journal.end(0), at, n));
        bare.turn(&mut journal, Duration::ZERO).map_err(jerr("commit"))?;
    }
    while !bare.waiting.is_empty() {
        bare.turn(&mut journal, Duration::from_millis(10))
            .map_err(jerr("commit"))?;
    }
    let lag = bare.lag;
    let secs = started.elapsed().as_secs_f64();
    drop(journal);
    remove_data(&dir);
    Ok(lag_row(name, total as f64 / secs, &lag))
}

/// The bare journal row's commit loop: the persist thread's policy (a new flight beside the
/// ones in flight once the newest has run `COMMIT_AGAIN_AFTER`) without the daemon around it.
struct Bare {
    lag: Histogram<u64>,
    /// (end position of a batch, when it was appended, events in it), oldest first.
    waiting: std::collections::VecDeque<(u64, Instant, u64)>,
    newest_at: Option<Instant>,
}

impl Bare {
    const COMMIT_AGAIN_AFTER: Duration = Duration::from_micros(250);

    /// Lands what completed (waiting up to `wait` when something is in flight), then starts a
    /// commit when the policy allows one.
    fn turn(&mut self, journal: &mut rim_journal::Journal, wait: Duration) -> Result<(), rim_journal::JournalError> {
        if journal.in_flight() {
            let wait = if wait.is_zero() { None } else { Some(wait) };
            if journal.complete(wait)?.is_some() {
                self.settle(journal);
                if !journal.in_flight() {
                    self.newest_at = None;
                }
            }
        } else if !wait.is_zero() && !journal.is_dirty() {
            std::thread::sleep(wait);
        }
        let again = self.newest_at.is_none_or(|at| at.elapsed() >= Self::COMMIT_AGAIN_AFTER);
        if journal.is_dirty() && journal.can_commit() && again && journal.commit()? {
            self.newest_at = Some(Instant::now());
        }
        Ok(())
    }

    fn settle(&mut self, journal: &rim_journal::Journal) {
        let durable = journal.durable(0);
        while let Some(&(end, at, n)) = self.waiting.front() {
            if end > durable {
                break;
            }
            let _ = self.lag.record_n((at.elapsed().as_nanos() as u64).max(1), n);
            self.waiting.pop_front();
        }
    }
}

fn journal_row(opts: &RunOpts, name: &str, offered_per_s: u64) -> Result<Row, BenchError> {
    journal_row_with(opts, name, offered_per_s, &[])
}

fn journal_row_with(opts: &RunOpts, name: &str, offered_per_s: u64, extra: &[&str]) -> Result<Row, BenchError> {
    let (data, daemon, mut p) = start(opts, "bench-persist", extra)?;
    let nodes = workload::nodes();
    let total = (seconds(opts.size) * offered_per_s as f64) as u64;
    let mut lag =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut waiting = std::collections::VecDeque::new();
    let started = Instant::now();
    let mut ts = workload::unix_ms();
    let batch = (offered_per_s / 1000).max(1);
    let mut sent = 0u64;
    let mut stalls = Stalls::default();
    let mut looked = Instant::now();
    while sent < total {
        if looked.elapsed() >= Duration::from_millis(250) {
            looked = Instant::now();
            stalls.look(&daemon);
        }
        let due = started + Duration::from_nanos(sent * 1_000_000_000 / offered_per_s);
        // Sleep between batches, looking at the durable position every 100 µs at most:
        // the daemon's journal and store threads share this core, and a spinning
        // producer would take the time they need.
        loop {
            settle(&p, &mut waiting, &mut lag);
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_micros(100)));
        }
        ts = ts.max(workload::unix_ms());
        for _ in 0..batch.min(total - sent) {
            p.publish(sent as usize % nodes, false, ts, 0)?;
            if sent.is_multiple_of(SAMPLE_EVERY) {
                waiting.push_back((p.producer.position(), Instant::now()));
            }
            sent += 1;
        }
        settle(&p, &mut waiting, &mut lag);
    }
    let end = p.producer.position();
    let deadline = Instant::now() + opts.peer_timeout * 4;
    while p.producer.durable_position() < end {
        settle(&p, &mut waiting, &mut lag);
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                waiting_for: "the last events to become durable",
                timeout: opts.peer_timeout * 4,
            });
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    settle(&p, &mut waiting, &mut lag);
    let secs = started.elapsed().as_secs_f64();
    let stats = daemon.wait_stats(Duration::from_secs(10), |s| applied(s) >= total + nodes as u64)?;
    stalls.look(&daemon);
    let syncs = counter(&stats, "persist.syncs");
    eprint!(
        "(producer saw the ring full {} times; {} commits, mean {} µs; {}) ",
        p.full_retries,
        syncs,
        counter(&stats, "persist.sync_ns") / syncs.max(1) / 1000,
        stalls
    );
    daemon.stop()?;
    remove_data(&data);
    Ok(lag_row(name, total as f64 / secs, &lag))
}

/// Calls `publish(i)` for `total` events at `per_s`, in 1 ms batches, sleeping between
/// batches (the daemon's cold side shares this core: a spinning producer would take the
/// time it needs).
fn paced(total: u64, per_s: u64, mut publish: impl FnMut(u64) -> Result<(), BenchError>) -> Result<(), BenchError> {
    let batch = (per_s / 1000).max(1);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = started + Duration::from_nanos(sent * 1_000_000_000 / per_s);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        for _ in 0..batch.min(total - sent) {
            publish(sent)?;
            sent += 1;
        }
    }
    Ok(())
}

/// The journal thread's own account of its stalls, the worst seen over a run (the daemon
/// publishes each second's).
#[derive(Default)]
struct Stalls {
    turns_slow: u64,
    turn_max: u64,
    drain_max: u64,
    drain_entries: u64,
    land_max: u64,
    commit_start_max: u64,
    upkeep_max: u64,
    commit_p99_max: u64,
    commit_max: u64,
    /// Rotations that found no spare segment ready (a segment allocated only, whose syncs
    /// commit metadata).
    spares_missed: u64,
}

impl Stalls {
    fn look(&mut self, daemon: &DaemonProc) {
        let Ok(s) = daemon.stats() else { return };
        let c = |n: &str| counter(&s, n);
        self.turns_slow = c("persist.turns_slow");
        self.turn_max = self.turn_max.max(c("persist.turn_ns_max"));
        if c("persist.drain_ns_max") > self.drain_max {
            self.drain_max = c("persist.drain_ns_max");
            self.drain_entries = c("persist.drain_entries_at_max");
        }
        self.land_max = self.land_max.max(c("persist.land_ns_max"));
        self.commit_start_max = self.commit_start_max.max(c("persist.commit_start_ns_max"));
        self.upkeep_max = self.upkeep_max.max(c("persist.upkeep_ns_max"));
        self.commit_p99_max = self.commit_p99_max.max(c("persist.commit_p99_ns"));
        self.commit_max = self.commit_max.max(c("persist.commit_max_ns"));
        self.spares_missed = self.spares_missed.max(c("persist.spares_missed"));
    }
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |ns: u64| ns / 1000;
        write!(
            f,
            "journal thread: {} turns over 1 ms, longest {} µs (land {}, drain {} for {} entries, commit start {}, upkeep {}); commit p99 {} µs, max {} µs; {} rotations without a spare",
            self.turns_slow,
            us(self.turn_max),
            us(self.land_max),
            us(self.drain_max),
            self.drain_entries,
            us(self.commit_start_max),
            us(self.upkeep_max),
            us(self.commit_p99_max),
            us(self.commit_max),
            self.spares_missed
        )
    }
}

fn settle(p: &workload::Publisher, waiting: &mut std::collections::VecDeque<(u64, Instant)>, lag: &mut Histogram<u64>) {
    let durable = p.producer.durable_position();
    while let Some(&(pos, at)) = waiting.front() {
        if pos > durable {
            break;
        }
        let _ = lag.record((at.elapsed().as_nanos() as u64).max(1));
        waiting.pop_front();
    }
}

pub(crate) fn wait_durable(p: &workload::Publisher, pos: u64, timeout: Duration) -> Result<(), BenchError> {
    if p.producer.wait_durable(pos, 50_000, timeout.as_nanos() as u64) {
        Ok(())
    } else {
        Err(BenchError::Timeout {
            waiting_for: "durability",
            timeout,
        })
    }
}

fn run_decisions(opts: &RunOpts) -> Result<Row, BenchError> {
    let (data, daemon, mut p) = start(opts, "bench-decisions", &[])?;
    let at_start = daemon.stats()?;
    let before = counter(&at_start, "persist.decisions_indexed");
    let started = Instant::now();
    let (sent, durable_secs) = flood(&mut p, seconds(opts.size), u64::MAX, true, opts.peer_timeout)?;
    let flooded = started.elapsed();
    let at_flood_end = daemon.stats()?;
    let deadline = Instant::now() + opts.peer_timeout * 4;
    let mut indexed;
    loop {
        let s = daemon.stats()?;
        indexed = counter(&s, "persist.decisions_indexed").saturating_sub(before);
        if indexed >= sent {
            break;
        }
        if Instant::now() > deadline {
            let log = daemon.log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            eprint!("({indexed} of {sent} decisions indexed; the daemon's log ends: {tail:?}) ");
            return Err(BenchError::Timeout {
                waiting_for: "every decision durable and indexed",
                timeout: opts.peer_timeout * 4,
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = started.elapsed().as_secs_f64();
    let at_end = daemon.stats()?;
    let grew =
        |from: &rim_stats::Snapshot, to: &rim_stats::Snapshot, n: &str| counter(to, n).saturating_sub(counter(from, n));
    eprint!(
        "(the last decision durable {:.0} ms into the row, the flood over at {:.0} ms, the last indexed at {:.0} ms; \
         the store inserted {} capsules in {} commits by the flood's end, {} capsules in {} commits after it; {} capsules waiting at its end) ",
        durable_secs * 1e3,
        flooded.as_secs_f64() * 1e3,
        secs * 1e3,
        grew(&at_start, &at_flood_end, "persist.capsules_inserted"),
        grew(&at_start, &at_flood_end, "persist.store_commits"),
        grew(&at_flood_end, &at_end, "persist.capsules_inserted"),
        grew(&at_flood_end, &at_end, "persist.store_commits"),
        counter(&at_flood_end, "persist.store_pending"),
    );
    daemon.stop()?;
    remove_data(&data);
    Ok(Row::new(
        "decisions",
        vec![
            Figure::real("decisions_per_s", indexed as f64 / secs),
            Figure::real("events_per_s", sent as f64 / secs),
        ],
    ))
}

fn capsule_count(size: RunSize) -> usize {
    match size {
        RunSize::Full => 200_000,
        RunSize::Quick => 100_000,
        RunSize::Smoke => 2_000,
    }
}

/// Observed capsules as the roll-up makes them: node-major order of arrival is window
/// by window, each window every node.
fn capsules(n: usize) -> Vec<rim_capsule::Capsule> {
    use rim_capsule::{Capsule, CapsuleBody, CapsuleKey, MetricStats, ObservedStats, Ohlc, Vantage};
    let nodes = workload::nodes();
    let t0 = 1_760_000_000_000i64;
    (0..n)
        .map(|i| {
            let (w, node) = (i / nodes, i % nodes);
            let metric = |name: &str, k: f64| MetricStats {
                name: name.into(),
                count: 10,
                min: k,
                max: k + 1.0,
                mean: k + 0.5,
                last: k + 0.25,
            };
            Capsule {
                key: CapsuleKey {
                    scope_id: workload::node_id(node),
                    timestamp: t0 + w as i64 * 1000,
                    resolution: 1,
                    vantage: Vantage::Observed,
                },
                body: CapsuleBody::Observed(ObservedStats {
                    count: 10,
                    first_ts: t0 + w as i64 * 1000,
                    last_ts: t0 + w as i64 * 1000 + 900,
                    metrics: vec![
                        metric("temp", 50.0),
                        metric("load", 0.5),
                        metric("probe", 0.0),
                        metric("m3", 0.1),
                    ],
                    price: Some(Ohlc {
                        open: 100.0,
                        high: 101.0,
                        low: 99.0,
                        close: 100.5,
                    }),
                    volume_sum: Some(10.0),
                    stress_max: Some(0.2),
                    stress_last: Some(0.1),
                    last_status: "OK".into(),
                }),
                created_ms: workload::unix_ms(),
            }
        })
        .collect()
}

const PER_TXN: usize = 10_000;

fn open_store(tag: &str) -> Result<(PathBuf, rim_capsule::Store), BenchError> {
    let dir = data_dir()?.join(tag);
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io {
        what: "creating the store directory",
        source,
    })?;
    let store = rim_capsule::Store::open(&dir.join("capsules.redb"), rim_capsule::StoreConfig::default())
        .map_err(|e| BenchError::transport("redb", "open", e))?;
    Ok((dir, store))
}

fn run_capsules(opts: &RunOpts) -> Result<Row, BenchError> {
    crate::affinity::pin_current_thread(opts.client_core)?;
    let all = capsules(capsule_count(opts.size));
    let (dir, store) = open_store("capsules")?;
    let mut batch = rim_capsule::Batch::default();
    let started = Instant::now();
    for chunk in all.chunks(PER_TXN) {
        batch.capsules.clear();
        batch.capsules.extend_from_slice(chunk);
        let out = store
            .write(&batch)
            .map_err(|e| BenchError::transport("redb", "write", e))?;
        if out.inserted != chunk.len() {
            return Err(BenchError::Setup(format!(
                "{} of {} capsules inserted",
                out.inserted,
                chunk.len()
            )));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(store);
    remove_data(dir.parent().unwrap_or(&dir));
    Ok(Row::new(
        "capsules",
        vec![Figure::real("records_per_s", all.len() as f64 / secs)],
    ))
}

fn run_raw(opts: &RunOpts) -> Result<Row, BenchError> {
    crate::affinity::pin_current_thread(opts.client_core)?;
    let all = capsules(capsule_count(opts.size));
    let (dir, store) = open_store("raw")?;
    let rows =
        rim_capsule::raw::rows_from_capsules(&store, &all).map_err(|e| BenchError::transport("redb", "encode", e))?;
    let started = Instant::now();
    for chunk in rows.chunks(PER_TXN) {
        rim_capsule::raw::write_raw(&store, chunk).map_err(|e| BenchError::transport("redb", "write", e))?;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(store);
    remove_data(dir.parent().unwrap_or(&dir));
    Ok(Row::new(
        "redb-raw",
        vec![Figure::real("records_per_s", rows.len() as f64 / secs)],
    ))
}

/// Events the recovery row journals (10M, as the target names; a smoke run far fewer).
fn recovery_events(size: RunSize) -> u64 {
    match size {
        RunSize::Smoke => 50_000,
        _ => 10_000_000,
    }
}

fn run_recovery(opts: &RunOpts) -> Result<Row, BenchError> {
    let (data, daemon, mut p) = start(opts, "bench-recovery", &[])?;
    let (sent, _) = flood(
        &mut p,
        f64::MAX,
        recovery_events(opts.size),
        false,
        opts.peer_timeout * 4,
    )?;
    // SIGKILL, as a crash would, once the store has caught up with the journal and one
    // more checkpoint period passed.
    let caught_up = daemon.wait_stats(Duration::from_secs(120), |s| {
        counter(s, "persist.store_pending") == 0 && counter(s, "persist.store_waiting") == 0
    });
    if caught_up.is_err() {
        eprint!("(the store had not caught up after 120 s) ");
    }
    std::thread::sleep(Duration::from_millis(2_500));
    let journaled = counter(&daemon.stats()?, "persist.journal_events");
    daemon.kill9();
    let kept = restart(opts, &data, &[])?;
    // And with no store: recovery replays the whole journal.
    let _ = std::fs::remove_file(data.join("capsules.redb"));
    let full = restart(opts, &data, &[])?;
    remove_data(&data);
    eprint!("({sent} published) ");
    Ok(Row::new(
        "recovery",
        vec![
            Figure::int("events", journaled),
            Figure::int("replayed", kept.replayed),
            Figure::real("ready_ms", kept.ready_ms),
            Figure::real("full_replay_ms", full.ready_ms),
            Figure::int("recovery_ms", full.recovery_ms),
            Figure::real("recovery_cpu_ms", full.cpu_ms),
        ],
    ))
}

fn run_recovery_lagging(opts: &RunOpts) -> Result<Row, BenchError> {
    const HOLD: [&str; 2] = ["persist.store_interval_ms=60000", "persist.store_batch_max=1000000"];
    let (data, daemon, mut p) = start(opts, "bench-recovery-lagging", &HOLD)?;
    let lag_s = match opts.size {
        RunSize::Smoke => 0.05,
        _ => 10.0,
    };
    let nodes = workload::nodes();
    let total = (lag_s * OFFERED_PER_S as f64) as u64;
    let mut ts = workload::unix_ms();
    paced(total, OFFERED_PER_S, |sent| {
        ts = ts.max(workload::unix_ms());
        p.publish(sent as usize % nodes, false, ts, 0)
    })?;
    wait_durable(&p, p.producer.position(), opts.peer_timeout)?;
    let journaled = counter(&daemon.stats()?, "persist.journal_events");
    daemon.kill9();
    let r = restart(opts, &data, &HOLD)?;
    remove_data(&data);
    Ok(Row::new(
        "recovery-lagging",
        vec![
            Figure::int("events", journaled),
            Figure::int("replayed", r.replayed),
            Figure::real("ready_ms", r.ready_ms),
            Figure::int("recovery_ms", r.recovery_ms),
            Figure::real("recovery_cpu_ms", r.cpu_ms),
        ],
    ))
}

/// What a restart on kept data took.
struct Restarted {
    /// ms from spawn until the daemon served.
    ready_ms: f64,
    /// Records recovery read.
    replayed: u64,
    /// The daemon's own count of recovery's time, ms (`persist.recovery_ms`).
    recovery_ms: u64,
    /// CPU time of all the daemon's threads until it served, ms: the work, which this
    /// VM's noise moves less than the wall time (recovery runs two busy threads on two
    /// cores, so `ready_ms` follows whatever else the cores run).
    cpu_ms: f64,
}

/// Starts a daemon on `data`, and says what its recovery took.
fn restart(opts: &RunOpts, data: &Path, extra: &[&str]) -> Result<Restarted, BenchError> {
    let started = Instant::now();
    let mut s = sets(opts, data);
    s.extend(extra.iter().map(|x| (*x).to_owned()));
    let daemon = DaemonProc::start(&workload::rules(), &s, Duration::from_secs(300))?;
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = procfs::process_cpu_ns(daemon.pid()).unwrap_or(0) as f64 / 1e6;
    let s = daemon.stats()?;
    let out = Restarted {
        ready_ms,
        replayed: counter(&s, "persist.recovered_events"),
        recovery_ms: counter(&s, "persist.recovery_ms"),
        cpu_ms,
    };
    daemon.stop()?;
    Ok(out)
}
