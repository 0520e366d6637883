//! The stats segment: round trips, concurrent readers (threads and a process), hostile
//! files, and oversize snapshots.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rim_stats::segment::{MIN_SEGMENT_BYTES, READ_RETRIES};
use rim_stats::{
    Quantiles, RingSnapshot, ShardSnapshot, Snapshot, StatsError, StatsReader, StatsWriter, DEFAULT_MODE, HEADER_BYTES,
    LAYOUT_VERSION, MAGIC,
};

/// A fresh directory for one test under Cargo's per-target scratch space.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rim-stats-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn full_snapshot() -> Snapshot {
    let q = Quantiles {
        count: 1000,
        min: 1,
        mean: 500.5,
        p50: 500,
        p90: 900,
        p99: 990,
        p999: 999,
        p9999: 1000,
        max: 1000,
    };
    Snapshot {
        pid: 4242,
        version: "0.1.0".into(),
        running: true,
        started_unix_ms: 1_700_000_000_000,
        taken_unix_ms: 1_700_000_000_100,
        counters: BTreeMap::from([("events_in".into(), 10), ("rejected.bad_symbol".into(), 2)]),
        gauges: BTreeMap::from([("nodes".into(), 3), ("delta".into(), -5)]),
        stages: BTreeMap::from([("ring_hop".into(), q)]),
        rings: vec![RingSnapshot {
            name: "feed-a".into(),
            kind: "spsc".into(),
            pid: 77,
            state: "live".into(),
            depth: 5,
            capacity: 1024,
            delivered: 100,
            rejected: 1,
            refused_full: 0,
            invalid: 1,
            refused: Default::default(),
        }],
        shards: vec![ShardSnapshot {
            name: "hot-0".into(),
            core: Some(1),
            idle: "spin".into(),
            loops: 1_000_000,
            work: 10_000,
            stalls: 3,
            max_stall_ns: 250_000,
        }],
    }
}

#[test]
fn publish_then_read_round_trips() {
    let dir = scratch("round-trip");
    let path = dir.join("stats");
    let mut writer = StatsWriter::create(&path, 64 * 1024, DEFAULT_MODE).expect("create");
    let reader = StatsReader::open(&path).expect("open");
    assert!(matches!(reader.read(), Err(StatsError::Empty)), "nothing published yet");
    assert_eq!(reader.writer_pid(), std::process::id());

    let snap = full_snapshot();
    writer.publish(&snap).expect("publish");
    assert_eq!(reader.read().expect("read"), snap);

    let mut next = snap.clone();
    next.counters.insert("events_in".into(), 11);
    next.version = "a much longer version string than before".into();
    writer.publish(&next).expect("publish");
    assert_eq!(reader.read().expect("read"), next);
    // A second reader opened later sees the same.
    assert_eq!(StatsReader::open(&path).expect("open").read().expect("read"), next);

    // And a shorter one after a longer one: the length, not leftover bytes, decides.
    writer.publish(&Snapshot::default()).expect("publish");
    assert_eq!(reader.read().expect("read"), Snapshot::default());
}

#[test]
fn file_gets_the_requested_mode_and_size() {
    let dir = scratch("mode");
    let path = dir.join("stats");
    let writer = StatsWriter::create(&path, 8192, DEFAULT_MODE).expect("create");
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 8192);
    assert_eq!(writer.capacity(), 8192 - HEADER_BYTES);
    drop(writer);

    StatsWriter::create(&path, 8192, 0o640).expect("create");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        std::fs::read_dir(&dir).expect("ls").count(),
        1,
        "no temporary file left behind"
    );
}

#[test]
fn dropping_the_writer_leaves_the_final_snapshot_readable() {
    let dir = scratch("drop");
    let path = dir.join("stats");
    let mut writer = StatsWriter::create(&path, 8192, DEFAULT_MODE).expect("create");
    let mut last = full_snapshot();
    last.running = false;
    writer.publish(&last).expect("publish");
    drop(writer);
    assert_eq!(StatsReader::open(&path).expect("open").read().expect("read"), last);
}

#[test]
fn remove_deletes_the_file() {
    let dir = scratch("remove");
    let path = dir.join("stats");
    let writer = StatsWriter::create(&path, 8192, DEFAULT_MODE).expect("create");
    writer.remove().expect("remove");
    assert!(!path.exists());
}

#[test]
fn create_replaces_a_stale_segment_without_disturbing_its_readers() {
    let dir = scratch("replace");
    let path = dir.join("stats");
    let mut old = StatsWriter::create(&path, 8192, DEFAULT_MODE).expect("create");
    let mut old_snap = full_snapshot();
    old_snap.pid = 1;
    old.publish(&old_snap).expect("publish");
    drop(old);
    let old_reader = StatsReader::open(&path).expect("open old");

    let mut new = StatsWriter::create(&path, 4096, DEFAULT_MODE).expect("create over stale");
    let mut new_snap = full_snapshot();
    new_snap.pid = 2;
    new.publish(&new_snap).expect("publish");

    assert_eq!(StatsReader::open(&path).expect("open new").read().expect("read").pid, 2);
    // The old mapping is of the old (unlinked, untruncated) file: still valid, still old.
    assert_eq!(old_reader.read().expect("read old").pid, 1);

    // A garbage file at the path is replaced just the same.
    std::fs::write(&path, b"garbage").expect("write");
    StatsWriter::create(&path, 4096, DEFAULT_MODE).expect("create over garbage");
    assert!(matches!(
        StatsReader::open(&path).expect("open").read(),
        Err(StatsError::Empty)
    ));
}

#[test]
fn create_refuses_bad_sizes_and_paths() {
    let dir = scratch("bad-create");
    let err = StatsWriter::create(&dir.join("stats"), MIN_SEGMENT_BYTES - 1, DEFAULT_MODE).expect_err("too small");
    assert!(
        matches!(err, StatsError::TooSmall { len, min } if len + 1 == min),
        "{err:?}"
    );
    let err = StatsWriter::create(Path::new("/"), 4096, DEFAULT_MODE).expect_err("no file name");
    assert!(matches!(err, StatsError::Io { op: "create", .. }), "{err:?}");
    let err = StatsWriter::create(&dir.join("missing/stats"), 4096, DEFAULT_MODE).expect_err("no dir");
    assert!(matches!(err, StatsError::Io { .. }), "{err:?}");
}

#[test]
fn a_snapshot_too_large_is_refused_and_the_previous_stays() {
    let dir = scratch("too-large");
    let path = dir.join("stats");
    let mut writer = StatsWriter::create(&path, 4096, DEFAULT_MODE).expect("create");
    let small = full_snapshot();
    writer.publish(&small).expect("publish");

    let mut big = small.clone();
    for i in 0..200 {
        big.counters.insert(format!("counter.number.{i}"), i);
    }
    let err = writer.publish(&big).expect_err("too large");
    match err {
        StatsError::TooLarge { need, cap } => {
            assert_eq!(cap, 4096 - HEADER_BYTES as u64);
            assert_eq!(need, serde_json::to_vec(&big).expect("json").len() as u64);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(StatsReader::open(&path).expect("open").read().expect("read"), small);
    // And the writer still works afterwards.
    let mut next = small.clone();
    next.pid = 9;
    writer.publish(&next).expect("publish");
    assert_eq!(StatsReader::open(&path).expect("open").read().expect("read"), next);
}

/// The i-th snapshot of the concurrent tests: counters `a` and `b` both `i`, and fields
/// whose lengths vary with `i`, so that a torn copy would mix lengths and values.
fn numbered(i: u64) -> Snapshot {
    let mut s = Snapshot {
        pid: i as u32,
        version: "v".repeat((i % 97) as usize),
        running: true,
        taken_unix_ms: i,
        ..Snapshot::default()
    };
    s.counters.insert("a".into(), i);
    s.counters.insert("b".into(), i);
    for k in 0..(i % 13) {
        s.gauges.insert(format!("g{k}"), i as i64);
    }
    s
}

/// Checks a snapshot is one whole `numbered(i)`; returns `i`.
fn check_consistent(s: &Snapshot) -> u64 {
    let i = s.counters["a"];
    assert_eq!(s, &numbered(i), "torn snapshot");
    i
}

const PUBLISHES: u64 = 10_000;

#[test]
fn readers_never_see_a_torn_snapshot_while_the_writer_publishes() {
    let dir = scratch("concurrent");
    let path = dir.join("stats");
    let mut writer = StatsWriter::create(&path, 16 * 1024, DEFAULT_MODE).expect("create");
    writer.publish(&numbered(0)).expect("publish");
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, done) = (path.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let reader = StatsReader::open(&path).expect("open");
                let (mut ok, mut torn, mut last) = (0u64, 0u64, 0u64);
                while !done.load(Ordering::Acquire) {
                    match reader.read() {
                        Ok(s) => {
                            let i = check_consistent(&s);
                            assert!(i >= last, "went back from {last} to {i}");
                            last = i;
                            ok += 1;
                        }
                        Err(StatsError::Torn { .. }) => torn += 1,
                        Err(e) => panic!("reader error: {e}"),
                    }
                }
                (ok, torn)
            })
        })
        .collect();

    for i in 1..=PUBLISHES {
        writer.publish(&numbered(i)).expect("publish");
    }
    done.store(true, Ordering::Release);
    for r in readers {
        let (ok, torn) = r.join().expect("reader thread");
        eprintln!("reader: {ok} consistent reads, {torn} gave up as torn");
        assert!(ok > 0, "the reader never got a snapshot");
    }
    let last = StatsReader::open(&path).expect("open").read().expect("read");
    assert_eq!(check_consistent(&last), PUBLISHES);
}

/// Environment variable that turns this test binary into the reader process of the test
/// below.
const CHILD_ENV: &str = "RIM_STATS_TEST_READER_PATH";

#[test]
fn reader_process_never_sees_a_torn_snapshot() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child_reader(Path::new(&path));
        return;
    }
    let dir = scratch("process");
    let path = dir.join("stats");
    let mut writer = StatsWriter::create(&path, 16 * 1024, DEFAULT_MODE).expect("create");
    writer.publish(&numbered(0)).expect("publish");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "reader_process_never_sees_a_torn_snapshot",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn reader process");
    // Publish until the child is done (it stops once it has seen the last snapshot).
    let mut i = 0;
    while child.try_wait().expect("wait").is_none() {
        i += 1;
        writer.publish(&numbered(i.min(PUBLISHES))).expect("publish");
    }
    let out = child.wait_with_output().expect("child output");
    assert!(
        out.status.success(),
        "reader process failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("reader process: "), "the child ran no reader: {report}");
    eprintln!("{}", report.trim());
}

/// The child's side: read until snapshot `PUBLISHES` appears, checking each one.
fn child_reader(path: &Path) {
    let reader = StatsReader::open(path).expect("open");
    let (mut ok, mut torn, mut last) = (0u64, 0u64, 0u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while last < PUBLISHES {
        assert!(std::time::Instant::now() < deadline, "writer too slow: at {last}");
        match reader.read() {
            Ok(s) => {
                let i = check_consistent(&s);
                assert!(i >= last, "went back from {last} to {i}");
                last = i;
                ok += 1;
            }
            Err(StatsError::Torn { .. }) => torn += 1,
            Err(e) => panic!("reader error: {e}"),
        }
    }
    eprintln!("reader process: {ok} consistent reads, {torn} gave up as torn");
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A header as a writer would leave it, followed by `payload` and padding to `file_len`.
fn handmade(version: u32, seq: u64, len: u64, payload: &[u8], file_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(file_len);
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&version.to_le_bytes());
    f.extend_from_slice(&1234u32.to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&len.to_le_bytes());
    f.resize(HEADER_BYTES, 0);
    f.extend_from_slice(payload);
    f.resize(file_len.max(f.len()), 0);
    f
}

fn open_and_read(path: &Path, contents: &[u8]) -> Result<Snapshot, StatsError> {
    std::fs::write(path, contents).expect("write file");
    StatsReader::open(path)?.read()
}

#[test]
fn random_files_of_every_small_size_are_refused_with_the_right_error() {
    let dir = scratch("garbage");
    let path = dir.join("stats");
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let sizes = (0..=300).chain([511, 4096, 4097, 65_536]);
    for size in sizes {
        let bytes = rng.bytes(size);
        let result = open_and_read(&path, &bytes);
        if size < HEADER_BYTES {
            assert!(
                matches!(result, Err(StatsError::TooSmall { len, min: 64 }) if len == size as u64),
                "{size}: {result:?}"
            );
        } else {
            assert!(matches!(result, Err(StatsError::BadMagic)), "{size}: {result:?}");
        }
    }
}

#[test]
fn random_content_behind_a_valid_magic_never_panics() {
    let dir = scratch("garbage-magic");
    let path = dir.join("stats");
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for round in 0..500 {
        let size = HEADER_BYTES + (rng.next() % 2048) as usize;
        let mut bytes = rng.bytes(size);
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        // Even sequence (odd ones are covered below and cost the full retry budget), and
        // every other round a length that fits, so the payload parser sees garbage too.
        let seq = rng.next() & !1;
        bytes[16..24].copy_from_slice(&seq.to_le_bytes());
        if round % 2 == 0 {
            let len = rng.next() % (size - HEADER_BYTES + 1) as u64;
            bytes[24..32].copy_from_slice(&len.to_le_bytes());
        }
        match open_and_read(&path, &bytes) {
            Err(StatsError::Empty | StatsError::LengthOutOfBounds { .. } | StatsError::Json(_)) => {}
            other => panic!("round {round}: unexpected {other:?}"),
        }
    }
}

/// What a hostile file is, its bytes, and the error it must get.
type Case = (&'static str, Vec<u8>, fn(&StatsError) -> bool);

#[test]
fn hostile_headers_get_typed_errors() {
    let dir = scratch("hostile");
    let path = dir.join("stats");
    let valid = serde_json::to_vec(&full_snapshot()).expect("json");

    let cases: Vec<Case> = vec![
        (
            "bad magic",
            {
                let mut f = handmade(LAYOUT_VERSION, 2, valid.len() as u64, &valid, 4096);
                f[0] = b'X';
                f
            },
            |e| matches!(e, StatsError::BadMagic),
        ),
        (
            "bad version",
            handmade(LAYOUT_VERSION + 1, 2, valid.len() as u64, &valid, 4096),
            |e| matches!(e, StatsError::BadVersion { found: 2, expected: 1 }),
        ),
        (
            "huge length",
            handmade(LAYOUT_VERSION, 2, u64::MAX, &valid, 4096),
            |e| {
                matches!(
                    e,
                    StatsError::LengthOutOfBounds {
                        len: u64::MAX,
                        cap: 4032
                    }
                )
            },
        ),
        (
            "length one past the end",
            handmade(LAYOUT_VERSION, 2, 4033, &valid, 4096),
            |e| matches!(e, StatsError::LengthOutOfBounds { len: 4033, cap: 4032 }),
        ),
        (
            "length past an unaligned end",
            handmade(LAYOUT_VERSION, 2, 20, b"{}", HEADER_BYTES + 17),
            |e| matches!(e, StatsError::LengthOutOfBounds { len: 20, cap: 16 }),
        ),
        (
            "invalid JSON",
            handmade(LAYOUT_VERSION, 2, 10, b"not json!!", 4096),
            |e| matches!(e, StatsError::Json(_)),
        ),
        (
            "invalid UTF-8",
            handmade(LAYOUT_VERSION, 2, 6, b"\"\xff\xfe\"  ", 4096),
            |e| matches!(e, StatsError::Json(_)),
        ),
        (
            "JSON of the wrong shape",
            handmade(LAYOUT_VERSION, 2, 7, b"[1,2,3]", 4096),
            |e| matches!(e, StatsError::Json(_)),
        ),
        (
            "truncated JSON",
            handmade(LAYOUT_VERSION, 2, 10, &valid[..10], 4096),
            |e| matches!(e, StatsError::Json(_)),
        ),
        ("empty payload", handmade(LAYOUT_VERSION, 2, 0, b"", 4096), |e| {
            matches!(e, StatsError::Json(_))
        }),
        ("never published", handmade(LAYOUT_VERSION, 0, 0, b"", 4096), |e| {
            matches!(e, StatsError::Empty)
        }),
        ("header only", handmade(LAYOUT_VERSION, 2, 0, b"", HEADER_BYTES), |e| {
            matches!(e, StatsError::Json(_))
        }),
        (
            "writer stuck mid-write",
            handmade(LAYOUT_VERSION, 3, valid.len() as u64, &valid, 4096),
            |e| matches!(e, StatsError::Torn { retries } if *retries == READ_RETRIES),
        ),
    ];
    for (what, contents, expected) in cases {
        match open_and_read(&path, &contents) {
            Err(e) if expected(&e) => {}
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
    // The same header with the right length does read.
    let good = handmade(LAYOUT_VERSION, 2, valid.len() as u64, &valid, 4096);
    assert_eq!(
        open_and_read(&path, &good).expect("valid handmade segment"),
        full_snapshot()
    );
}

#[test]
fn a_missing_file_is_an_io_error() {
    let dir = scratch("missing");
    let err = StatsReader::open(&dir.join("nope")).expect_err("missing");
    assert!(matches!(err, StatsError::Io { op: "open", .. }), "{err:?}");
}

#[test]
fn a_fifo_or_directory_is_refused_without_blocking() {
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let err = StatsReader::open(&fifo).expect_err("fifo");
    assert!(matches!(err, StatsError::Io { op: "open", .. }), "{err:?}");
    let err = StatsReader::open(&dir).expect_err("directory");
    assert!(matches!(err, StatsError::Io { .. }), "{err:?}");
}
