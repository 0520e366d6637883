//! Generated load for demos and `rimctl produce`: sensors `rim:sensor:demo:n{i}` with
//! metrics `temp` and `load` (plus `m2`… up to the metric count), a price random walk and a
//! status, round robin over the nodes at a set rate. With anomalies on, now and then a node
//! overheats, jumps, spikes its load or degrades, and node 0 falls silent half-way through
//! a timed run, so every embedded default rule has something to fire on.
//!
//! `rimd --demo` runs one such producer and a decision printer beside the daemon, both
//! through the daemon's control socket and shared-memory rings like any other process.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rim_ring::{attach, Producer, PublishError, Sym, SymEvent, SymbolKind};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Load {
    /// Events per second over all nodes (0 = as fast as the ring takes them).
    pub rate: f64,
    /// Nodes.
    pub nodes: usize,
    /// Metrics per event.
    pub metrics: usize,
    /// How long (ignored with `count`; `None` = until stopped).
    pub duration: Option<Duration>,
    /// How many events.
    pub count: Option<u64>,
    /// Inject anomalies.
    pub anomalies: bool,
    /// Give each event an id `{name}-{n}`.
    pub event_ids: bool,
    /// Node i is `{node_prefix}{i}`.
    pub node_prefix: String,
    /// The producer's name (event ids).
    pub name: String,
    /// Random seed.
    pub seed: u64,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            rate: 1000.0,
            nodes: 100,
            metrics: 2,
            duration: Some(Duration::from_secs(10)),
            count: None,
            anomalies: true,
            event_ids: false,
            node_prefix: "rim:sensor:demo:n".into(),
            name: "demo".into(),
            seed: 1,
        }
    }
}

/// What happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Events published.
    pub published: u64,
    /// Publishes refused as full and retried.
    pub full_retries: u64,
    /// Events refused as invalid by the ring (not retried).
    pub invalid: u64,
}

/// Retries `publish` while the ring is full; an invalid event is counted and skipped;
/// other errors (closed, quarantined) end the run.
pub fn publish_retrying(
    tally: &mut Tally,
    mut publish: impl FnMut() -> Result<u64, PublishError>,
) -> Result<(), PublishError> {
    let mut spins = 0u32;
    loop {
        match publish() {
            Ok(_) => {
                tally.published += 1;
                return Ok(());
            }
            Err(PublishError::Full { .. }) => {
                tally.full_retries += 1;
                spins += 1;
                if spins > 64 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            Err(PublishError::Invalid(_)) => {
                tally.invalid += 1;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

fn intern(p: &mut Producer, kind: SymbolKind, text: &str) -> Result<Sym, PublishError> {
    let mut spins = 0;
    loop {
        match p.intern(kind, text) {
            Err(PublishError::Full { .. }) if spins < 10_000_000 => {
                spins += 1;
                std::thread::yield_now();
            }
            r => return r,
        }
    }
}

/// One generated sensor's state.
struct Sensor {
    temp: f64,
    price: f64,
}

/// Publishes `load` through `p` until done or `stop` is set.
pub fn generate(p: &mut Producer, load: &Load, tally: &mut Tally, stop: &AtomicBool) -> Result<(), PublishError> {
    let nodes = load.nodes.max(1);
    let Symbols {
        nodes: node_syms,
        metrics: metric_syms,
        ok,
        degraded,
    } = Symbols::intern(p, load, nodes)?;
    let mut rng = XorShift(load.seed.max(1));
    let mut sensors: Vec<Sensor> = (0..nodes)
        .map(|i| Sensor {
            temp: 55.0 + (i % 10) as f64,
            price: 100.0,
        })
        .collect();
    let mut metrics = vec![(ok, 0.0); metric_syms.len()];
    let mut id = String::new();
    // A producer stamps its events with the system's wall clock.
    let clock = crate::clock::Clock::system();
    let started = Instant::now();
    let total = load.count.unwrap_or(u64::MAX);
    let half = load.duration.map(|d| d / 2);
    let mut i: u64 = 0;
    while i < total {
        if i.is_multiple_of(256) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if load.count.is_none() && load.duration.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
        }
        pace(load.rate, i, started);
        let node = (i % nodes as u64) as usize;
        i += 1;
        if load.anomalies && node == 0 && nodes > 1 && half.is_some_and(|h| started.elapsed() > h) {
            // Node 0 falls silent half-way (the staleness rule's case).
            continue;
        }
        let s = &mut sensors[node];
        let r = s.read(&mut rng, load.anomalies);
        let (temp, load_v) = (r.temp, r.load);
        let (status, stress) = if r.degraded { (degraded, 0.95) } else { (ok, 0.1) };
        for (k, m) in metrics.iter_mut().enumerate() {
            let v = match k {
                0 => temp,
                1 => load_v,
                _ => rng.normal(),
            };
            *m = (metric_syms[k], v);
        }
        id.clear();
        if load.event_ids {
            let _ = write!(id, "{}-{i}", load.name);
        }
        let ev = SymEvent {
            node: node_syms[node],
            event_id: load.event_ids.then_some(id.as_str()),
            timestamp: clock.now_ms(),
            metrics: &metrics,
            price: Some(s.price),
            volume: Some(1.0),
            stress: Some(stress),
            status,
            source_topic: None,
            publish_ns: 0,
        };
        publish_retrying(tally, || p.try_publish_sym(&ev))?;
    }
    Ok(())
}

/// The symbols a demo producer publishes with, interned once.
struct Symbols {
    nodes: Vec<Sym>,
    metrics: Vec<Sym>,
    ok: Sym,
    degraded: Sym,
}

impl Symbols {
    fn intern(p: &mut Producer, load: &Load, nodes: usize) -> Result<Self, PublishError> {
        let mut node_syms = Vec::with_capacity(nodes);
        for i in 0..nodes {
            node_syms.push(intern(p, SymbolKind::NodeId, &format!("{}{i}", load.node_prefix))?);
        }
        let mut metrics = Vec::new();
        for i in 0..load.metrics.min(64) {
            let name = match i {
                0 => "temp".to_owned(),
                1 => "load".to_owned(),
                n => format!("m{n}"),
            };
            metrics.push(intern(p, SymbolKind::MetricName, &name)?);
        }
        Ok(Self {
            nodes: node_syms,
            metrics,
            ok: intern(p, SymbolKind::Status, "OK")?,
            degraded: intern(p, SymbolKind::Status, "DEGRADED")?,
        })
    }
}

/// One reading of a sensor: its temperature and load, and whether it reports DEGRADED.
struct Reading {
    temp: f64,
    load: f64,
    degraded: bool,
}

impl Sensor {
    /// Moves the sensor on by one event: a random walk, and with `anomalies` about one event
    /// in 1,000 out of line (a temperature spike, a load spike or DEGRADED, in turn).
    fn read(&mut self, rng: &mut XorShift, anomalies: bool) -> Reading {
        self.temp = (self.temp + rng.normal() * 0.3).clamp(20.0, 85.0);
        self.price *= 1.0 + rng.normal() * 0.0005;
        let roll = rng.next_u64() % 4000;
        let anomaly = anomalies && roll < 4;
        Reading {
            temp: if anomaly && roll < 2 { 96.0 } else { self.temp },
            load: if anomaly && roll == 2 {
                3.0
            } else {
                0.5 + rng.normal() * 0.05
            },
            degraded: anomaly && roll == 3,
        }
    }
}

/// Sleeps when ahead of `rate` events per second.
fn pace(rate: f64, i: u64, started: Instant) {
    if rate <= 0.0 {
        return;
    }
    let due = Duration::from_secs_f64(i as f64 / rate);
    let now = started.elapsed();
    if due > now + Duration::from_micros(200) {
        std::thread::sleep(due - now);
    }
}

/// A small xorshift generator (no dependency, reproducible by seed).
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly standard normal (Irwin–Hall with 4 uniforms).
    pub fn normal(&mut self) -> f64 {
        let u = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        (u(self.next_u64()) + u(self.next_u64()) + u(self.next_u64()) + u(self.next_u64()) - 2.0) * 1.732
    }
}

/// `rimd --demo`: once the daemon's socket answers, a producer thread publishes the demo
/// load (1,000 events/s over 100 sensors, anomalies on, until the daemon stops) and a
/// printer thread writes each decision on stdout, one short line each. Both are pinned to
/// `core` (the control plane's) when given, so they never take the hot shard's core.
pub fn spawn(socket: PathBuf, stop: Arc<AtomicBool>, core: Option<usize>) {
    let s2 = socket.clone();
    let stop2 = stop.clone();
    let pin = move || {
        if let Some(id) = core {
            core_affinity::set_for_current(core_affinity::CoreId { id });
        }
    };
    let _ = std::thread::Builder::new()
        .name("rimd-demo-tail".into())
        .spawn(move || {
            pin();
            if let Some(mut reader) = wait_for(&s2, &stop2, |s| attach::attach_subscriber(s, "decisions").ok()) {
                print_decisions(&mut reader, &stop2);
            }
        });
    let _ = std::thread::Builder::new()
        .name("rimd-demo-feed".into())
        .spawn(move || {
            pin();
            let Some(mut p) = wait_for(&socket, &stop, |s| attach::attach_producer(s, "demo", 1 << 20).ok()) else {
                return;
            };
            let load = Load {
                duration: None,
                ..Load::default()
            };
            let mut tally = Tally::default();
            let _ = generate(&mut p, &load, &mut tally, &stop);
            p.close();
        });
}

fn wait_for<T>(socket: &Path, stop: &AtomicBool, mut f: impl FnMut(&Path) -> Option<T>) -> Option<T> {
    while !stop.load(Ordering::Relaxed) {
        if socket.exists() {
            if let Some(t) = f(socket) {
                return Some(t);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn print_decisions(reader: &mut rim_ring::broadcast::Reader, stop: &AtomicBool) {
    let mut buf = vec![0u8; reader.slot_bytes()];
    while !stop.load(Ordering::Relaxed) {
        match reader.read(&mut buf) {
            Ok(Some(n)) => {
                if let Ok(d) = crate::reflex::decision::decode(&buf[..n]) {
                    let evidence: Vec<String> = d
                        .evidence
                        .iter()
                        .map(|(l, v)| format!("{l}={}", v.map_or("?".into(), |v| format!("{v:.2}"))))
                        .collect();
                    println!(
                        "{:<8} {:<13} {:<22} {}  ({} µs after publish)",
                        d.severity,
                        d.rule_id,
                        d.rim_node_id,
                        evidence.join(" "),
                        d.latency_ns / 1000
                    );
                }
            }
            Ok(None) => {
                reader.wait(50_000, 50_000_000);
            }
            Err(e) => println!("(decision reader: {e})"),
        }
    }
}
