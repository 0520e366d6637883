//! `rimctl produce`: publishes events through a producer ring, as a feed handler would.
//!
//! Generated load: `--nodes` sensors `rim:sensor:demo:n{i}` with metrics `temp` and `load`
//! (plus `m2`… up to `--metrics`), a price random walk and a status, round robin over the
//! nodes at `--rate` events per second (0 = as fast as the ring takes them). With
//! `--anomalies`, now and then a node overheats, jumps, spikes its load or degrades, and
//! node 0 goes silent half-way, so every default rule has something to fire on.
//!
//! Scripted: `--script FILE` publishes JSON lines in order, each a RimFastEvent, or
//! `{"sleep_ms": N}` (pause), or `{"garbage": N}` (N records of random bytes, which the
//! daemon must refuse and count while the good ones flow).
//!
//! A full ring is never waited on blindly: the publish is retried, and every retry is
//! counted in the summary printed at the end (JSON on stdout).

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rim_ring::{attach, Producer, PublishError, RimFastEvent, SymEvent, SymbolKind};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Events per second over all nodes (0 = as fast as possible).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Nodes to publish for.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Metrics per event (temp, load, m2, m3, …).
    #[arg(long, default_value_t = 2)]
    metrics: usize,
    /// Seconds to run (ignored with --count).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Events to publish, then stop.
    #[arg(long)]
    count: Option<u64>,
    /// Inject anomalies (overheating, jumps, load spikes, degraded status, a silent node).
    #[arg(long)]
    anomalies: bool,
    /// Give each event an event_id (`{name}-{n}`).
    #[arg(long)]
    event_ids: bool,
    /// Node id prefix; node i is `{prefix}{i}`.
    #[arg(long, default_value = "rim:sensor:demo:n")]
    node_prefix: String,
    /// Publish these JSON lines instead of generating load (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// The name this producer gives the daemon.
    #[arg(long, default_value = "rimctl-produce")]
    name: String,
    /// Ring size in bytes (a power of two).
    #[arg(long, default_value_t = 1 << 20)]
    capacity: usize,
    /// At the end, wait until the daemon has consumed everything (up to this many seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    drain_timeout: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What happened, printed at the end.
#[derive(Default)]
struct Tally {
    published: u64,
    full_retries: u64,
    invalid: u64,
    garbage: u64,
}

pub fn run(run_dir: &Path, args: Args) -> Result<ExitCode, String> {
    let socket = run_dir.join("rimd.sock");
    let mut producer = attach::attach_producer(&socket, &args.name, args.capacity)
        .map_err(|e| format!("{}: {e} (is rimd running?)", socket.display()))?;
    let started = Instant::now();
    let mut tally = Tally::default();
    let result = match &args.script {
        Some(path) => script(&mut producer, path, &mut tally),
        None => generate(&mut producer, &args, &mut tally),
    };
    let drained = wait_consumed(&producer, Duration::from_secs_f64(args.drain_timeout.max(0.0)));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "published": tally.published,
            "full_retries": tally.full_retries,
            "invalid": tally.invalid,
            "garbage": tally.garbage,
            "rejected_by_daemon": producer.rejected(),
            "consumed": drained,
            "seconds": secs,
            "events_per_s": tally.published as f64 / secs.max(1e-9),
        })
    );
    producer.close();
    result.map(|()| ExitCode::SUCCESS)
}

/// Waits until the daemon consumed up to our position; false if it did not in time.
fn wait_consumed(p: &Producer, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while p.consumed_position() < p.position() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Retries `publish` while the ring is full; other errors end the run.
fn publish_retrying(tally: &mut Tally, mut publish: impl FnMut() -> Result<u64, PublishError>) -> Result<(), String> {
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
            Err(PublishError::Invalid(e)) => {
                tally.invalid += 1;
                eprintln!("{}", json!({"invalid_event": e.to_string()}));
                return Ok(());
            }
            Err(e) => return Err(format!("publish failed: {e}")),
        }
    }
}

fn script(p: &mut Producer, path: &Path, tally: &mut Tally) -> Result<(), String> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut rng = XorShift(0x5EED_1234_ABCD_0001);
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        if let Some(ms) = v.get("sleep_ms").and_then(|x| x.as_u64()) {
            std::thread::sleep(Duration::from_millis(ms));
            continue;
        }
        if let Some(count) = v.get("garbage").and_then(|x| x.as_u64()) {
            publish_garbage(p, count, &mut rng, tally)?;
            continue;
        }
        let ev: RimFastEvent =
            serde_json::from_value(v).map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        publish_retrying(tally, || p.try_publish_event(&ev.as_ref()))?;
    }
    Ok(())
}

fn publish_garbage(p: &mut Producer, count: u64, rng: &mut XorShift, tally: &mut Tally) -> Result<(), String> {
    let mut buf = [0u8; 200];
    for _ in 0..count {
        let len = 1 + (rng.next() % buf.len() as u64) as usize;
        for b in &mut buf[..len] {
            *b = rng.next() as u8;
        }
        let mut spins = 0;
        loop {
            match p.try_publish(&buf[..len]) {
                Ok(_) => break,
                Err(PublishError::Full { .. }) if spins < 1_000_000 => {
                    spins += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(format!("publish failed: {e}")),
            }
        }
        tally.garbage += 1;
    }
    Ok(())
}

/// One generated sensor's state.
struct Sensor {
    temp: f64,
    price: f64,
}

fn generate(p: &mut Producer, a: &Args, tally: &mut Tally) -> Result<(), String> {
    let intern = |p: &mut Producer, kind, text: &str| {
        let mut spins = 0;
        loop {
            match p.intern(kind, text) {
                Err(PublishError::Full { .. }) if spins < 10_000_000 => {
                    spins += 1;
                    std::thread::yield_now();
                }
                r => return r.map_err(|e| format!("cannot define {text:?}: {e}")),
            }
        }
    };
    let nodes = a.nodes.max(1);
    let mut node_syms = Vec::with_capacity(nodes);
    for i in 0..nodes {
        node_syms.push(intern(p, SymbolKind::NodeId, &format!("{}{i}", a.node_prefix))?);
    }
    let names: Vec<String> = (0..a.metrics.min(64))
        .map(|i| match i {
            0 => "temp".to_owned(),
            1 => "load".to_owned(),
            n => format!("m{n}"),
        })
        .collect();
    let mut metric_syms = Vec::new();
    for n in &names {
        metric_syms.push(intern(p, SymbolKind::MetricName, n)?);
    }
    let ok = intern(p, SymbolKind::Status, "OK")?;
    let degraded = intern(p, SymbolKind::Status, "DEGRADED")?;
    let mut rng = XorShift(a.seed.max(1));
    let mut sensors: Vec<Sensor> = (0..nodes)
        .map(|i| Sensor {
            temp: 55.0 + (i % 10) as f64,
            price: 100.0,
        })
        .collect();
    let mut metrics = vec![(metric_syms.first().copied().unwrap_or(ok), 0.0); metric_syms.len()];
    let mut id = String::new();
    let started = Instant::now();
    let total = a.count.unwrap_or(u64::MAX);
    let duration = Duration::from_secs_f64(a.duration.max(0.0));
    let mut i: u64 = 0;
    while i < total {
        if a.count.is_none() && i.is_multiple_of(256) && started.elapsed() >= duration {
            break;
        }
        pace(a.rate, i, started);
        let node = (i % nodes as u64) as usize;
        let elapsed = started.elapsed().as_secs_f64();
        if a.anomalies && node == 0 && nodes > 1 && a.count.is_none() && elapsed > a.duration / 2.0 {
            // Node 0 falls silent half-way (the staleness rule's case).
            i += 1;
            continue;
        }
        let s = &mut sensors[node];
        s.temp = (s.temp + rng.normal() * 0.3).clamp(20.0, 85.0);
        s.price *= 1.0 + rng.normal() * 0.0005;
        let roll = rng.next() % 4000;
        let anomaly = a.anomalies && roll < 4;
        let temp = if anomaly && roll < 2 { 96.0 } else { s.temp };
        let load = if anomaly && roll == 2 {
            3.0
        } else {
            0.5 + rng.normal() * 0.05
        };
        let (status, stress) = if anomaly && roll == 3 {
            (degraded, 0.95)
        } else {
            (ok, 0.1)
        };
        for (k, m) in metrics.iter_mut().enumerate() {
            *m = (
                metric_syms[k],
                match k {
                    0 => temp,
                    1 => load,
                    _ => rng.normal(),
                },
            );
        }
        id.clear();
        if a.event_ids {
            let _ = write!(id, "{}-{i}", a.name);
        }
        let ev = SymEvent {
            node: node_syms[node],
            event_id: a.event_ids.then_some(id.as_str()),
            timestamp: unix_ms(),
            metrics: &metrics,
            price: Some(s.price),
            volume: Some(1.0),
            stress: Some(stress),
            status,
            source_topic: None,
            publish_ns: 0,
        };
        publish_retrying(tally, || p.try_publish_sym(&ev))?;
        i += 1;
    }
    Ok(())
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

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly standard normal (Irwin–Hall with 4 uniforms).
    fn normal(&mut self) -> f64 {
        let u = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        (u(self.next()) + u(self.next()) + u(self.next()) + u(self.next()) - 2.0) * 1.732
    }
}
