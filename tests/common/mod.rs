//! Helpers for the daemon's integration tests: a real `rimd` process in a private run
//! directory, its stats segment, producers and subscribers attached over its control
//! socket, and the plumbing for tests that need a second process of their own (a
//! re-execution of the test binary).
//!
//! Every daemon runs with `topology.idle=backoff` and `topology.pin=false` (tests run in
//! parallel on a 2-core machine: a spinning daemon per test would starve the rest) and
//! small tables unless a test asks for more. Timeouts are generous and nothing asserts on
//! timing; event times are the test's own, so rule windows and cooldowns are exact.
//!
//! Each test binary uses a part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rim_ring::broadcast::{ReadError, Reader};
use rim_ring::{attach, Producer, PublishError, RimFastEvent};
use rim_stats::{Snapshot, StatsReader};
use rimd::reflex::decision::{decode, Decision};

/// How long a daemon may take to come up (a cold start on a loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default wait for something the daemon should do "soon".
pub const SOON: Duration = Duration::from_secs(20);

/// Polls `f` every 50 ms until it returns Some, or fails with `what` after [`SOON`].
#[allow(dead_code)] // each test binary uses a part of this module
#[track_caller]
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + SOON;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Settings every test daemon starts with (the test's own `--set`s come after and win).
pub const BASE_SETS: &[&str] = &[
    "topology.idle=backoff",
    "topology.pin=false",
    "reflex.nodes_max=1000",
    "ingest.reflex_ring_slots=4096",
    "ingest.producers_max=16",
    "decisions.slots=1024",
    "reflex.cooldown_slots=1024",
    "stats.segment_bytes=262144",
    "persist.segment_bytes=1048576",
    "persist.journal_ring_bytes=1048576",
    "persist.reflex_ring_bytes=1048576",
    // Tests run in parallel: each daemon's HTTP API on a port of its own.
    "api.listen=\"127.0.0.1:0\"",
    // Event times are the scripts' own fixed instants (T0, in 2025): no age bound. The
    // tests of the bounds set their own.
    "ingest.event_age_ms_max=0",
];

/// Event time base of the scripts: a fixed instant, so windows and cooldowns are exact.
pub const T0: i64 = 1_760_000_000_000;

// ---------------------------------------------------------------------------------------
// Temp dirs

/// A private directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rimd-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
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

/// Replaces `path` atomically (write a sibling, rename), so a reader never sees half a file.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

// ---------------------------------------------------------------------------------------
// The daemon

/// The `rimd` binary under test.
pub fn rimd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rimd")
}

/// A `rimd` command with a clean environment for its settings (no `RUST_LOG`, no
/// `RIMD_*` from the caller's shell).
pub fn rimd_command() -> Command {
    let mut cmd = Command::new(rimd_bin());
    cmd.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("RIMD_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A running `rimd` in its own run directory; killed (and its directory removed) on drop.
/// A panicking test prints the daemon's log.
pub struct Daemon {
    child: Option<Child>,
    status: Option<ExitStatus>,
    dir: Option<TempDir>,
    log: PathBuf,
    rules: Option<PathBuf>,
    reader: Option<StatsReader>,
}

impl Daemon {
    /// Starts `rimd` with [`BASE_SETS`], then `sets`, and (if given) `rules` written to a
    /// rule file in the run directory; returns once the control socket exists and the
    /// stats segment reads.
    pub fn start(sets: &[&str], rules: Option<&str>) -> Daemon {
        Self::start_in(TempDir::new("d"), sets, rules)
    }

    /// As [`Daemon::start`], in `dir` (which may hold a previous daemon's journal and
    /// store under `data/`: a restart).
    pub fn start_in(dir: TempDir, sets: &[&str], rules: Option<&str>) -> Daemon {
        Self::start_with(dir, sets, rules, |_| {})
    }

    /// As [`Daemon::start_in`], with `customize` applied to the command before it is
    /// spawned (environment, credentials).
    pub fn start_with(
        dir: TempDir,
        sets: &[&str],
        rules: Option<&str>,
        customize: impl FnOnce(&mut Command),
    ) -> Daemon {
        let log = dir.path().join("rimd.log");
        let run_dir = dir.path().join("run");
        let data = format!("persist.data_dir={}", dir.path().join("data").display());
        // A killed predecessor's socket and stats would look like this daemon being up.
        let _ = std::fs::remove_file(run_dir.join("rimd.sock"));
        let _ = std::fs::remove_file(run_dir.join("stats"));
        let mut cmd = rimd_command();
        cmd.arg("--run-dir").arg(&run_dir);
        for s in BASE_SETS
            .iter()
            .copied()
            .chain([data.as_str()])
            .chain(sets.iter().copied())
        {
            cmd.arg("--set").arg(s);
        }
        let rules_path = rules.map(|text| {
            let p = dir.path().join("rules.toml");
            std::fs::write(&p, text).expect("write rule file");
            p
        });
        if let Some(p) = &rules_path {
            cmd.arg("--rules").arg(p);
        }
        let out = File::create(&log).expect("daemon log");
        let err = out.try_clone().expect("daemon log");
        cmd.stdout(out).stderr(err);
        customize(&mut cmd);
        let child = cmd.spawn().expect("spawn rimd");
        let mut d = Daemon {
            child: Some(child),
            status: None,
            dir: Some(dir),
            log,
            rules: rules_path,
            reader: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(s) = d.try_exited() {
                panic!("rimd exited during start-up with {s}\n{}", d.log_text());
            }
            if d.socket().exists() {
                if let Ok(r) = StatsReader::open(&d.stats_path()) {
                    if r.read().is_ok() {
                        d.reader = Some(r);
                        return d;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "rimd did not come up within {START_TIMEOUT:?}\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("daemon dir").path()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("rimd.sock")
    }

    pub fn stats_path(&self) -> PathBuf {
        self.run_dir().join("stats")
    }

    /// The rule file the daemon was started with.
    pub fn rules_path(&self) -> &Path {
        self.rules.as_deref().expect("daemon started without a rule file")
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The latest stats snapshot (works after the daemon exited: the segment stays).
    pub fn stats(&mut self) -> Snapshot {
        if self.reader.is_none() {
            self.reader = Some(StatsReader::open(&self.stats_path()).expect("open stats segment"));
        }
        let r = self.reader.as_ref().expect("reader");
        let mut last = None;
        for _ in 0..100 {
            match r.read() {
                Ok(s) => return s,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("stats segment unreadable: {last:?}\n{}", self.log_text());
    }

    /// Polls the stats until `cond` holds; fails after `timeout` with the last snapshot
    /// and the daemon's log.
    #[track_caller]
    pub fn wait_for(&mut self, timeout: Duration, what: &str, mut cond: impl FnMut(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\ncounters: {:#?}\ngauges: {:#?}\nrings: {:#?}\n--- rimd log ---\n{}",
                    s.counters,
                    s.gauges,
                    s.rings,
                    self.log_text()
                );
            }
            if let Some(st) = self.try_exited() {
                panic!("rimd exited ({st}) while waiting for: {what}\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid this test spawned (not yet reaped: `child` is Some).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error());
    }

    /// The exit status if the daemon has exited (reaps it).
    /// SIGSTOP, then waits until every thread of the daemon is actually stopped (signal
    /// delivery is asynchronous: a running thread may take a few more steps).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let deadline = Instant::now() + SOON;
        let tasks = format!("/proc/{}/task", self.pid());
        loop {
            let all_stopped = std::fs::read_dir(&tasks)
                .map(|dir| {
                    dir.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .ok()
                            .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                            .unwrap_or(true)
                    })
                })
                .unwrap_or(false);
            if all_stopped {
                return;
            }
            assert!(Instant::now() < deadline, "rimd did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().expect("try_wait");
            }
        }
        self.status
    }

    /// Waits for the daemon to exit, failing after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exited() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "rimd still running {timeout:?} after being told to stop\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for the exit (up to a minute: the drain is bounded at 5 s).
    #[track_caller]
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(60))
    }

    /// The journal and store directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// SIGKILLs the daemon (no drain, no final commit) and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            self.status = c.wait().ok();
        }
    }

    /// Stops the daemon if it still runs (SIGKILL) and hands back its directory, with the
    /// journal and the store, for a restart.
    pub fn into_dir(mut self) -> TempDir {
        self.kill9();
        self.dir.take().expect("daemon dir")
    }

    /// Attaches a producer ring of `capacity` bytes named `name`.
    pub fn producer(&self, name: &str, capacity: usize) -> Feed {
        let p = attach::attach_producer(&self.socket(), name, capacity)
            .unwrap_or_else(|e| panic!("attach producer {name}: {e}\n{}", self.log_text()));
        Feed::new(p)
    }

    /// Attaches a subscriber to reflex shard 0's decisions.
    pub fn subscriber(&self) -> Subscriber {
        let r = attach::attach_subscriber(&self.socket(), "decisions")
            .unwrap_or_else(|e| panic!("attach subscriber: {e}\n{}", self.log_text()));
        Subscriber::new(r)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() && matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- rimd log ({}) ---\n{}", self.log.display(), self.log_text());
        }
    }
}

/// A counter of the snapshot; fails if the daemon does not publish it (a renamed counter
/// must break the tests, not make them read 0).
#[track_caller]
pub fn counter(s: &Snapshot, name: &str) -> u64 {
    *s.counters
        .get(name)
        .unwrap_or_else(|| panic!("no counter {name:?} in the snapshot; counters: {:?}", s.counters.keys()))
}

/// A gauge of the snapshot; fails if it is missing.
#[track_caller]
pub fn gauge(s: &Snapshot, name: &str) -> i64 {
    *s.gauges
        .get(name)
        .unwrap_or_else(|| panic!("no gauge {name:?} in the snapshot; gauges: {:?}", s.gauges.keys()))
}

/// The producer ring called `name` in the snapshot, if it is attached.
pub fn ring<'s>(s: &'s Snapshot, name: &str) -> Option<&'s rim_stats::RingSnapshot> {
    s.rings.iter().find(|r| r.kind == "producer" && r.name == name)
}

// ---------------------------------------------------------------------------------------
// Producers

/// How long a publish keeps retrying a full ring before the test fails.
pub const FULL_WATCHDOG: Duration = Duration::from_secs(60);

/// A producer ring with publishing that retries while the ring is full.
pub struct Feed {
    pub p: Producer,
    /// Publishes refused with `Full` (and retried).
    pub full_retries: u64,
    /// Events and raw records published.
    pub published: u64,
}

impl Feed {
    pub fn new(p: Producer) -> Self {
        Self {
            p,
            full_retries: 0,
            published: 0,
        }
    }

    /// Publishes `ev`, retrying while the ring is full.
    #[track_caller]
    pub fn publish(&mut self, ev: &RimFastEvent) {
        let r = ev.as_ref();
        let p = &mut self.p;
        self.full_retries += retry_full(|| p.try_publish_event(&r));
        self.published += 1;
    }

    /// Publishes raw bytes (garbage, or a hand-made record), retrying while full.
    #[track_caller]
    pub fn publish_raw(&mut self, bytes: &[u8]) {
        let p = &mut self.p;
        self.full_retries += retry_full(|| p.try_publish(bytes));
        self.published += 1;
    }

    /// Waits until the daemon has read everything published; false on timeout.
    pub fn wait_consumed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.p.consumed_position() < self.p.position() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// Calls `publish` until it is not refused as full; returns the refusals. Any other error
/// fails the test.
#[track_caller]
pub fn retry_full(mut publish: impl FnMut() -> Result<u64, PublishError>) -> u64 {
    let mut refused = 0u64;
    let mut since: Option<Instant> = None;
    loop {
        match publish() {
            Ok(_) => return refused,
            Err(PublishError::Full { .. }) => {
                refused += 1;
                let t = *since.get_or_insert_with(Instant::now);
                assert!(t.elapsed() < FULL_WATCHDOG, "ring full for {FULL_WATCHDOG:?}");
                if refused < 64 {
                    std::hint::spin_loop();
                } else if refused < 1024 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

/// Maps the memfd this process holds under `memfd:{name}` (the producer's own ring).
pub fn map_own_memfd(name: &str) -> (*mut u8, usize) {
    let want = format!("/memfd:{name} (deleted)");
    for entry in std::fs::read_dir("/proc/self/fd").expect("fd dir").flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if link.to_string_lossy() != want {
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(entry.path())
            .expect("reopen the memfd");
        let len = file.metadata().expect("memfd size").len() as usize;
        // SAFETY: a fresh shared mapping of a file we opened read-write, of its full
        // length; nothing else in this process aliases it as a Rust reference.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap the memfd");
        return (ptr.cast(), len);
    }
    panic!("no memfd called {name} in this process");
}

/// An event of `node` at event time `ts` with `metrics` and status "OK"; set the other
/// fields on the result.
pub fn event(node: &str, ts: i64, metrics: &[(&str, f64)]) -> RimFastEvent {
    RimFastEvent {
        rim_node_id: node.to_owned(),
        event_id: None,
        timestamp: ts,
        critical_metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        price: None,
        volume: None,
        stress: None,
        status: "OK".to_owned(),
        source_topic: None,
        publish_ns: 0,
    }
}

// ---------------------------------------------------------------------------------------
// Subscribers

/// A reader of a decision ring.
pub struct Subscriber {
    r: Reader,
    buf: Vec<u8>,
}

impl Subscriber {
    pub fn new(r: Reader) -> Self {
        let buf = vec![0u8; r.slot_bytes()];
        Self { r, buf }
    }

    /// The next record's bytes, waiting up to `timeout`. A lap fails the test (these
    /// tests never publish enough decisions to lap a reader).
    pub fn next_raw(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.r.read(&mut self.buf) {
                Ok(Some(n)) => return Some(self.buf[..n].to_vec()),
                Ok(None) => {}
                Err(ReadError::Lapped { missed }) => panic!("subscriber lapped: {missed} decisions missed"),
                Err(e) => panic!("decision ring read: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let left = (deadline - now).min(Duration::from_millis(50));
            self.r.wait(10_000, left.as_nanos() as u64);
        }
    }

    /// The next decision, decoded, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Decision> {
        self.next_raw(timeout)
            .map(|b| decode(&b).unwrap_or_else(|e| panic!("undecodable decision: {e}")))
    }

    /// Exactly `n` records (fails if they do not come within `timeout`).
    #[track_caller]
    pub fn take_raw(&mut self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_raw(left) {
                Some(b) => out.push(b),
                None => {
                    let got: Vec<String> = out
                        .iter()
                        .map(|b| decode(b).map(|d| short(&d)).unwrap_or_else(|e| e.to_string()))
                        .collect();
                    panic!("only {} of {n} decisions within {timeout:?}: {got:#?}", out.len());
                }
            }
        }
        out
    }

    /// Fails if a decision arrives within `quiet`.
    #[track_caller]
    pub fn expect_none(&mut self, quiet: Duration, context: &str) {
        if let Some(b) = self.next_raw(quiet) {
            let d = decode(&b).map(|d| format!("{d:#?}")).unwrap_or_else(|e| e.to_string());
            panic!("unexpected decision ({context}): {d}");
        }
    }
}

/// A decision in one line, for failure messages.
pub fn short(d: &Decision) -> String {
    format!(
        "{} {} seq={} ts={} sev={} sweep={} ev={:?}",
        d.rule_id, d.rim_node_id, d.event_seq, d.event_timestamp, d.severity, d.sweep, d.evidence
    )
}

// ---------------------------------------------------------------------------------------
// Second processes

/// Names the role a re-executed test binary plays; absent in a normal run.
pub const CHILD_ROLE_ENV: &str = "RIMD_IT_CHILD_ROLE";
/// The control socket the child attaches to.
pub const CHILD_SOCKET_ENV: &str = "RIMD_IT_SOCKET";

/// In a child-role test: the socket to attach to if this process was started for `role`,
/// `None` (the test returns at once) in a normal run.
pub fn child_socket(role: &str) -> Option<PathBuf> {
    match std::env::var(CHILD_ROLE_ENV) {
        Ok(r) if r == role => Some(PathBuf::from(std::env::var(CHILD_SOCKET_ENV).expect("socket env var"))),
        _ => None,
    }
}

/// A child process running one test of this binary in a role; killed and reaped on drop.
pub struct ChildProc {
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: PathBuf,
    pid: u32,
}

impl ChildProc {
    /// Re-executes this test binary to run `test_name` (a child-role test) as `role`,
    /// with its output in `<dir>/<role>.log`.
    pub fn spawn(test_name: &str, role: &str, dir: &Path, socket: &Path) -> Self {
        Self::spawn_with(test_name, role, dir, socket, |_| {})
    }

    /// As [`ChildProc::spawn`], with `customize` applied to the command (environment,
    /// credentials).
    pub fn spawn_with(
        test_name: &str,
        role: &str,
        dir: &Path,
        socket: &Path,
        customize: impl FnOnce(&mut Command),
    ) -> Self {
        let log = dir.join(format!("{role}.log"));
        let out = File::create(&log).expect("child log");
        let err = out.try_clone().expect("child log");
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ROLE_ENV, role)
            .env(CHILD_SOCKET_ENV, socket)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        customize(&mut cmd);
        let child = cmd.spawn().expect("spawn child test process");
        let pid = child.id();
        Self {
            child: Some(child),
            status: None,
            log,
            pid,
        }
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The child's exit status if it has exited (reaps it).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.status = child.try_wait().expect("try_wait");
            }
        }
        self.status
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("child");
        child.kill().expect("kill child");
        let s = child.wait().expect("reap child");
        self.status = Some(s);
        s
    }

    /// What the child printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Value of a `KEY=value` the child printed.
    pub fn reported(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        let log = self.log();
        let at = log.find(&prefix)? + prefix.len();
        log[at..].split_whitespace().next().map(str::to_owned)
    }

    /// Waits until the child printed `KEY=value`; fails if it exits first or on timeout.
    #[track_caller]
    pub fn wait_reported(&mut self, key: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.reported(key) {
                return v;
            }
            if let Some(s) = self.try_exited() {
                panic!("child exited ({s}) before reporting {key}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "child did not report {key} within {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.status.is_none() && matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

// =======================================================================================
// HTTP API helpers (tests/http.rs): a plain HTTP/1.1 client and a minimal WebSocket
// client over std::net::TcpStream, and the daemon's bound HTTP address.
// =======================================================================================

/// Settings of a daemon whose HTTP API listens on a free loopback port.
pub const HTTP_SETS: &[&str] = &["api.enabled=true", "api.listen=127.0.0.1:0"];

impl Daemon {
    /// The HTTP API's bound address, from `{run_dir}/http.addr` (waits for it).
    #[track_caller]
    pub fn http_addr(&mut self) -> String {
        let path = self.run_dir().join("http.addr");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let t = text.trim();
                if !t.is_empty() {
                    return t.to_owned();
                }
            }
            if let Some(s) = self.try_exited() {
                panic!(
                    "rimd exited ({s}) before writing {}\n{}",
                    path.display(),
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {} within {START_TIMEOUT:?}\n{}",
                path.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (fails the test if it is not).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    http_raw(addr, &bytes)
}

/// GET with no headers.
pub fn get(addr: &str, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[], None)
}

/// POST/PUT of a JSON value.
pub fn send_json(addr: &str, method: &str, path: &str, value: &serde_json::Value) -> HttpResponse {
    let body = serde_json::to_vec(value).expect("json");
    http(addr, method, path, &[("Content-Type", "application/json")], Some(&body))
}

/// Writes `request` as is and reads the response until the server closes.
pub fn http_raw(addr: &str, request: &[u8]) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(SOON)).expect("timeout");
    // The server may answer (413) and close before taking all of a large body.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => {
                let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
                panic!("no response from {addr} to {}: {e}", String::from_utf8_lossy(line))
            }
            Err(_) => break,
        }
        if let Some(r) = parse_response(&buf) {
            return r;
        }
    }
    parse_response(&buf).unwrap_or_else(|| panic!("incomplete response: {}", String::from_utf8_lossy(&buf)))
}

/// A whole response at the front of `buf`, if it is complete.
fn parse_response(buf: &[u8]) -> Option<HttpResponse> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if status == 101 || status == 204 || status == 304 {
        Vec::new()
    } else {
        return None;
    };
    Some(HttpResponse { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).ok()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Asserts the error envelope: `status`, `error.code`, a message, `meta.requestId`
/// (also echoed in `X-Request-ID`) and `meta.timestamp`. Returns the body.
#[track_caller]
pub fn assert_error(r: &HttpResponse, status: u16, code: &str, what: &str) -> serde_json::Value {
    assert_eq!(r.status, status, "{what}: status; body {}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{what}: code; body {v}");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: message; {v}"
    );
    assert!(v["error"]["details"].is_array(), "{what}: details; {v}");
    let rid = v["meta"]["requestId"].as_str().unwrap_or_default();
    assert!(!rid.is_empty(), "{what}: meta.requestId; {v}");
    assert_eq!(
        r.header("x-request-id"),
        Some(rid),
        "{what}: X-Request-ID echoes meta.requestId"
    );
    assert!(
        v["meta"]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{what}: meta.timestamp; {v}"
    );
    v
}

/// A minimal WebSocket client (RFC 6455): masked frames out, unmasked frames in.
pub struct WsClient {
    s: std::net::TcpStream,
    buf: Vec<u8>,
}

impl WsClient {
    /// Opens `path` (with its query) and checks the 101 and `Sec-WebSocket-Accept`.
    #[track_caller]
    pub fn connect(addr: &str, path: &str, headers: &[(&str, &str)]) -> WsClient {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("send handshake");
        let mut buf = Vec::new();
        let deadline = Instant::now() + SOON;
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(Instant::now() < deadline, "no handshake answer");
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => panic!("closed during handshake: {}", String::from_utf8_lossy(&buf)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "wrong accept key: {head}"
        );
        let rest = buf[end + 4..].to_vec();
        WsClient { s, buf: rest }
    }

    /// Sends a masked frame.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        use std::io::Write;
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).expect("send frame");
    }

    /// A frame without the mask clients must use (a protocol error).
    pub fn send_unmasked(&mut self, opcode: u8, payload: &[u8]) {
        use std::io::Write;
        let mut f = vec![0x80 | opcode, payload.len() as u8];
        f.extend_from_slice(payload);
        self.s.write_all(&f).expect("send frame");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(0x1, text.as_bytes());
    }

    /// The next frame (opcode, payload) within `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((op, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((op, payload));
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 16384];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    /// Whether the server closes the connection within `timeout` (frames before the end
    /// are read and dropped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// The next text message as JSON or text, skipping control frames.
    pub fn next_text(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (op, payload) = self.next_frame(left)?;
            if op == 0x1 {
                return Some(String::from_utf8_lossy(&payload).into_owned());
            }
        }
    }
}

fn parse_server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let op = b[0] & 0x0f;
    let (len, at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = b.get(at..at + len)?.to_vec();
    Some((op, payload, at + len))
}

/// (name, `Cpus_allowed_list`) of every thread of process `pid`.
#[allow(dead_code)] // each test binary uses a part of this module
pub fn threads_of(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        out.push((comm.trim_end().to_owned(), cpus));
    }
    out
}

/// The CPUs the calling thread may run on (its `sched_getaffinity` set).
#[allow(dead_code)]
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .expect("the calling thread's CPU set")
        .into_iter()
        .map(|c| c.id)
        .collect()
}
