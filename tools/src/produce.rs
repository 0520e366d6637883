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

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rim_core::demo::{self, XorShift};
use rim_ring::{attach, Producer, PublishError, RimFastEvent};
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
    events: demo::Tally,
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
    // Read after `wait_consumed`: the daemon counts a record's verdict before its consumed
    // position passes it.
    let v = producer.verdicts();
    println!(
        "{}",
        json!({
            "published": tally.events.published,
            "full_retries": tally.events.full_retries,
            "invalid": tally.events.invalid,
            "garbage": tally.garbage,
            "rejected_by_daemon": producer.rejected(),
            "refused_by_daemon": {
                "invalid": v.invalid,
                "node_table_full": v.node_table_full,
                "event_time_ahead": v.time_ahead,
                "event_time_too_old": v.time_too_old,
                "node_not_allowed": v.node_not_allowed,
            },
            "duplicates_by_daemon": v.duplicates,
            "consumed": drained,
            "seconds": secs,
            "events_per_s": tally.events.published as f64 / secs.max(1e-9),
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

/// Retries `publish` while the ring is full; an invalid event is reported and skipped;
/// other errors end the run.
fn publish_retrying(tally: &mut Tally, publish: impl FnMut() -> Result<u64, PublishError>) -> Result<(), String> {
    let invalid = tally.events.invalid;
    let r = demo::publish_retrying(&mut tally.events, publish).map_err(|e| format!("publish failed: {e}"));
    if tally.events.invalid > invalid {
        eprintln!("{}", json!({"invalid_event": "refused by the ring's validation"}));
    }
    r
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
        let len = 1 + (rng.next_u64() % buf.len() as u64) as usize;
        for b in &mut buf[..len] {
            *b = rng.next_u64() as u8;
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

fn generate(p: &mut Producer, a: &Args, tally: &mut Tally) -> Result<(), String> {
    let load = demo::Load {
        rate: a.rate,
        nodes: a.nodes,
        metrics: a.metrics,
        duration: Some(Duration::from_secs_f64(a.duration.max(0.0))),
        count: a.count,
        anomalies: a.anomalies,
        event_ids: a.event_ids,
        node_prefix: a.node_prefix.clone(),
        name: a.name.clone(),
        seed: a.seed,
    };
    demo::generate(p, &load, &mut tally.events, &AtomicBool::new(false)).map_err(|e| format!("publish failed: {e}"))
}
