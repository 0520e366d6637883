//! Helpers shared by the ring's integration tests: a seeded PRNG, deterministic raw records
//! and RimFastEvents that a checker can regenerate from their sequence number, and the
//! plumbing for tests that run a second, real process (a re-execution of the test binary).
//!
//! Each test binary uses a part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rim_ring::attach::{self, AttachError, Request};
use rim_ring::{EventRef, EventView};

// ---------------------------------------------------------------------------------------
// PRNG

/// SplitMix64: a bijective mixer, used to derive record contents from sequence numbers.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64*: small, fast, seeded; good enough to pick garbage and delays.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Never the all-zero state, which xorshift cannot leave.
        Self(splitmix64(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------
// Raw records

/// Largest raw record (`raw_record` writes 16, 24 or 32 bytes).
pub const RAW_BYTES_MAX: usize = 32;

/// Writes record `seq` into `out` and returns its length: the sequence number, 0 to 2 body
/// words derived from it, and a checksum word over the preceding words.
pub fn raw_record(seq: u64, out: &mut [u8; RAW_BYTES_MAX]) -> usize {
    let words = 2 + (seq % 3) as usize;
    let mut check = splitmix64(seq ^ 0x5eed);
    out[0..8].copy_from_slice(&seq.to_le_bytes());
    for w in 1..words - 1 {
        let v = splitmix64(seq.wrapping_mul(31).wrapping_add(w as u64));
        out[w * 8..w * 8 + 8].copy_from_slice(&v.to_le_bytes());
        check = splitmix64(check ^ v);
    }
    let last = (words - 1) * 8;
    out[last..last + 8].copy_from_slice(&check.to_le_bytes());
    words * 8
}

/// Checks that `bytes` is exactly record `seq`.
pub fn check_raw(seq: u64, bytes: &[u8]) -> Result<(), String> {
    let mut want = [0u8; RAW_BYTES_MAX];
    let len = raw_record(seq, &mut want);
    if bytes != &want[..len] {
        return Err(format!("record {seq}: got {:02x?}, want {:02x?}", bytes, &want[..len]));
    }
    Ok(())
}

/// The sequence number a raw record claims, if the record is whole and self-consistent
/// (length and every word match the record of that number; the checksum is among them).
pub fn verify_raw(bytes: &[u8]) -> Result<u64, String> {
    let seq_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("short record {bytes:02x?}"))?;
    let seq = u64::from_le_bytes(seq_bytes);
    check_raw(seq, bytes).map(|()| seq)
}

// ---------------------------------------------------------------------------------------
// Events

/// Templates per stream; event `i` uses template `i % TEMPLATES`.
pub const TEMPLATES: usize = 64;
/// Room for the metrics of any template.
pub const METRICS_BUF: usize = 8;

/// The string parts and presence flags of an event; the numbers come from its index.
#[derive(Debug, Clone)]
pub struct Template {
    pub node_id: String,
    pub event_id: Option<String>,
    pub status: String,
    pub source_topic: Option<String>,
    pub names: Vec<String>,
    pub has_price: bool,
    pub has_volume: bool,
    pub has_stress: bool,
}

const NODE_TYPES: [&str; 5] = ["equity", "fx", "rates-1", "crypto_x", "idx"];
const NAMESPACES: [&str; 4] = ["nyse", "lse", "cme-2", "x_1"];
const LOCAL_IDS: [&str; 5] = ["AAPL.O", "EUR:USD", "TY-Z5", "BTC_USD", "SPX"];
const LOCAL_FILL: &[u8] = b"abcXYZ09_.:-";

fn node_id(rng: &mut XorShift, len: usize) -> String {
    let mut id = format!(
        "rim:{}:{}:{}",
        NODE_TYPES[rng.below(5) as usize],
        NAMESPACES[rng.below(4) as usize],
        LOCAL_IDS[rng.below(5) as usize]
    );
    while id.len() < len {
        id.push(LOCAL_FILL[rng.below(LOCAL_FILL.len() as u64) as usize] as char);
    }
    id
}

/// `prefix` then random lowercase letters, `lo..=hi` bytes in all.
fn ascii_len(rng: &mut XorShift, prefix: &str, lo: usize, hi: usize) -> String {
    let len = rng.range(lo as u64, hi as u64) as usize;
    ascii(rng, prefix, len)
}

fn ascii(rng: &mut XorShift, prefix: &str, len: usize) -> String {
    let mut s: String = prefix.chars().take(len).collect();
    while s.len() < len {
        s.push((b'a' + rng.below(26) as u8) as char);
    }
    s
}

/// The 64 templates of a stream, the same in every process; checks that each makes valid
/// events.
pub fn templates() -> Vec<Template> {
    let t: Vec<Template> = (0..TEMPLATES).map(template).collect();
    for (k, t) in t.iter().enumerate() {
        for i in [k as u64, k as u64 + 13 * TEMPLATES as u64] {
            let mut buf = [("", 0.0); METRICS_BUF];
            let ev = event_ref(t, i, &mut buf);
            assert_eq!(ev.validate(), Ok(()), "template {k} must make valid events: {t:?}");
        }
    }
    t
}

/// How many symbols (distinct node ids, statuses, topics, metric names) a stream of
/// `events` events defines: one `Define` record each.
pub fn symbols_defined(t: &[Template], events: u64) -> u64 {
    use std::collections::HashSet;
    let used = &t[..(events as usize).min(t.len())];
    let nodes: HashSet<&str> = used.iter().map(|t| t.node_id.as_str()).collect();
    let statuses: HashSet<&str> = used.iter().map(|t| t.status.as_str()).collect();
    let topics: HashSet<&str> = used.iter().filter_map(|t| t.source_topic.as_deref()).collect();
    let names: HashSet<&str> = used.iter().flat_map(|t| t.names.iter().map(String::as_str)).collect();
    (nodes.len() + statuses.len() + topics.len() + names.len()) as u64
}

fn template(k: usize) -> Template {
    let mut rng = XorShift::new(0x7e57 + k as u64);
    let (has_price, has_volume, has_stress) = (k & 1 != 0, k & 2 != 0, k & 4 != 0);
    // A few templates sit exactly at the limits; the rest vary freely below them.
    let node_len = 9 + rng.below(80) as usize;
    let node_id = match k {
        // Exactly NODE_ID_BYTES_MAX, with every part at or near its own limit.
        5 => format!("rim:{}:{}:{}", "a".repeat(64), "b".repeat(58), "C.:-".repeat(32)),
        _ if k % 9 == 3 => "rim:a:b:c".to_owned(),
        _ => node_id(&mut rng, node_len),
    };
    let event_id = match k {
        6 => Some(ascii(&mut rng, "evt-", rim_ring::event::EVENT_ID_BYTES_MAX)),
        _ if k.is_multiple_of(3) => None,
        _ if k % 7 == 1 => Some(String::new()),
        _ => Some(ascii_len(&mut rng, "evt-", 1, 40)),
    };
    let status = match k {
        7 => ascii(&mut rng, "STATUS", rim_ring::event::STATUS_BYTES_MAX),
        8 => String::new(),
        _ if k.is_multiple_of(5) => "dégradé ✓".to_owned(),
        _ => ascii_len(&mut rng, "OK", 1, 20),
    };
    let source_topic = match k {
        9 => Some(ascii(
            &mut rng,
            "rim.fast-path.",
            rim_ring::event::SOURCE_TOPIC_BYTES_MAX,
        )),
        _ if k % 4 == 1 => None,
        _ => Some(ascii_len(&mut rng, "rim.fast-path", 1, 30)),
    };
    let count = k % 7;
    let names = (0..count)
        .map(|j| {
            let base = if (k + j).is_multiple_of(4) { "λ" } else { "m" };
            let len = base.len() + 1 + rng.below(10) as usize;
            let mut n = format!("{base}{j}");
            while n.len() < len {
                n.push((b'a' + rng.below(26) as u8) as char);
            }
            n
        })
        .collect();
    Template {
        node_id,
        event_id,
        status,
        source_topic,
        names,
        has_price,
        has_volume,
        has_stress,
    }
}

const SPECIAL: [f64; 8] = [
    0.0,
    -0.0,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    5e-324,
    -1e-300,
    123.456,
];

/// `timestamp` of event `i`.
pub fn timestamp(i: u64) -> i64 {
    if i % 101 == 7 {
        -(i as i64)
    } else {
        1_764_000_000_000 + 3 * i as i64
    }
}

pub fn price(i: u64) -> f64 {
    if i.is_multiple_of(13) {
        SPECIAL[(i / 13 % 8) as usize]
    } else {
        100.0 + (i % 10_000) as f64 * 0.01
    }
}

pub fn volume(i: u64) -> f64 {
    i as f64 * 1.5
}

pub fn stress(i: u64) -> f64 {
    (i % 1000) as f64 / 1000.0 - 0.5
}

/// Value of metric `j` of event `i`: finite, all over the range.
pub fn metric_value(i: u64, j: usize) -> f64 {
    let bits = splitmix64(i.wrapping_mul(METRICS_BUF as u64).wrapping_add(j as u64));
    if bits.is_multiple_of(17) {
        SPECIAL[(bits >> 8) as usize % 8]
    } else {
        (bits >> 11) as f64 / (1u64 << 53) as f64 * 2e6 - 1e6
    }
}

/// Event `i` of a stream, borrowing its strings from `t` and its metrics from `buf`.
/// Allocates nothing. `publish_ns` is left 0 for the ring to stamp.
pub fn event_ref<'a>(t: &'a Template, i: u64, buf: &'a mut [(&'a str, f64); METRICS_BUF]) -> EventRef<'a> {
    for (j, name) in t.names.iter().enumerate() {
        buf[j] = (name.as_str(), metric_value(i, j));
    }
    let metrics: &'a [(&'a str, f64)] = &buf[..t.names.len()];
    EventRef {
        rim_node_id: &t.node_id,
        event_id: t.event_id.as_deref(),
        timestamp: timestamp(i),
        critical_metrics: metrics,
        price: t.has_price.then(|| price(i)),
        volume: t.has_volume.then(|| volume(i)),
        stress: t.has_stress.then(|| stress(i)),
        status: &t.status,
        source_topic: t.source_topic.as_deref(),
        publish_ns: 0,
    }
}

fn same_f64(a: Option<f64>, b: Option<f64>) -> bool {
    a.map(f64::to_bits) == b.map(f64::to_bits)
}

/// Checks every field of `v` against event `i` of the stream (all but `publish_ns`, which
/// the ring stamps). Allocates only to describe a mismatch.
pub fn check_view(t: &Template, i: u64, v: &EventView<'_>) -> Result<(), String> {
    if v.rim_node_id() != t.node_id {
        return Err(format!(
            "event {i}: rim_node_id {:?} != {:?}",
            v.rim_node_id(),
            t.node_id
        ));
    }
    if v.event_id() != t.event_id.as_deref() {
        return Err(format!("event {i}: event_id {:?} != {:?}", v.event_id(), t.event_id));
    }
    if v.timestamp() != timestamp(i) {
        return Err(format!("event {i}: timestamp {} != {}", v.timestamp(), timestamp(i)));
    }
    let want = (
        t.has_price.then(|| price(i)),
        t.has_volume.then(|| volume(i)),
        t.has_stress.then(|| stress(i)),
    );
    if !same_f64(v.price(), want.0) || !same_f64(v.volume(), want.1) || !same_f64(v.stress(), want.2) {
        return Err(format!(
            "event {i}: price/volume/stress {:?} != {want:?}",
            (v.price(), v.volume(), v.stress())
        ));
    }
    if v.status() != t.status {
        return Err(format!("event {i}: status {:?} != {:?}", v.status(), t.status));
    }
    if v.source_topic() != t.source_topic.as_deref() {
        return Err(format!(
            "event {i}: source_topic {:?} != {:?}",
            v.source_topic(),
            t.source_topic
        ));
    }
    if v.metric_count() != t.names.len() {
        return Err(format!(
            "event {i}: {} metrics, want {}",
            v.metric_count(),
            t.names.len()
        ));
    }
    let mut seen = 0;
    for (j, (name, value)) in v.metrics().enumerate() {
        let want = metric_value(i, j);
        if j >= t.names.len() || name != t.names[j] || value.to_bits() != want.to_bits() {
            return Err(format!(
                "event {i}: metric {j} = ({name:?}, {value}), want ({:?}, {want})",
                t.names.get(j)
            ));
        }
        seen += 1;
    }
    if seen != t.names.len() {
        return Err(format!("event {i}: metrics() yielded {seen} of {}", t.names.len()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Second processes

/// Names the role a re-executed test binary plays; absent in a normal run.
pub const CHILD_ROLE_ENV: &str = "RIM_RING_TEST_CHILD_ROLE";
/// The attach socket the child connects to.
pub const CHILD_SOCKET_ENV: &str = "RIM_RING_TEST_SOCKET";
/// How long a two-process test waits without progress before it fails.
pub const STALL_WATCHDOG: Duration = Duration::from_secs(60);

/// In a child-role test: the socket to attach to if this process was started for `role`,
/// `None` (the test returns at once) in a normal run.
pub fn child_socket(role: &str) -> Option<PathBuf> {
    match std::env::var(CHILD_ROLE_ENV) {
        Ok(r) if r == role => Some(PathBuf::from(std::env::var(CHILD_SOCKET_ENV).expect("socket env var"))),
        _ => None,
    }
}

/// A private directory for a test's socket and child logs, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rim-ring-test-{tag}-{}-{n}", std::process::id()));
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

/// A child process running one test of this binary in a role; killed and reaped on drop
/// if it is still running (so a failing parent leaves nothing behind).
pub struct ChildProc {
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: PathBuf,
    pid: u32,
}

impl ChildProc {
    /// Re-executes this test binary to run `test_name` (a child-role test) as `role`,
    /// with its output in `<dir>/<role>.log`.
    pub fn spawn(test_name: &str, role: &str, dir: &Path, socket: &Path, env: &[(&str, String)]) -> Self {
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
        for (k, v) in env {
            cmd.env(k, v);
        }
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

    /// Waits for the child to exit, failing after `watchdog`.
    pub fn wait(&mut self, watchdog: Duration) -> ExitStatus {
        let deadline = Instant::now() + watchdog;
        loop {
            if let Some(s) = self.try_exited() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: child {} still running after {watchdog:?}\n{}",
                self.pid,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL (the child must still be running).
    pub fn kill(&mut self) {
        self.child.as_mut().expect("child").kill().expect("kill child");
    }

    /// What the child printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Value of a `KEY=value` the child printed (the harness may print the test's name
    /// before it on the same line).
    pub fn reported(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        let log = self.log();
        let at = log.find(&prefix)? + prefix.len();
        log[at..].split_whitespace().next().map(str::to_owned)
    }

    /// Fails the test if the child exited unsuccessfully, with its output.
    pub fn assert_not_failed(&mut self, what: &str) {
        if let Some(s) = self.try_exited() {
            assert!(
                s.success(),
                "{what}: child {} exited with {s}\n--- child output ---\n{}",
                self.pid,
                self.log()
            );
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

/// Accepts the child's attach request, failing if the child dies or `watchdog` passes.
pub fn accept_from(listener: &UnixListener, child: &mut ChildProc, watchdog: Duration) -> Request {
    listener.set_nonblocking(true).expect("nonblocking listener");
    let deadline = Instant::now() + watchdog;
    loop {
        match attach::accept(listener) {
            Ok(req) => return req,
            Err(AttachError::Io { source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}\n{}", child.log()),
        }
        child.assert_not_failed("before attaching");
        assert!(
            child.try_exited().is_none(),
            "child exited before attaching\n{}",
            child.log()
        );
        assert!(
            Instant::now() < deadline,
            "watchdog: no attach request within {watchdog:?}\n{}",
            child.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Backs off after a refused publish: spin first, then give the core away.
pub fn backoff(attempt: u64) {
    if attempt < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}
