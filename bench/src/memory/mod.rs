//! Suite `memory`: floods a real daemon and reports its peak RSS (the kernel's `VmHWM`,
//! published by the daemon as `rss_peak_bytes`) against a budget computed from its
//! configuration ([`budget::Budget`], stated in the README). A row fails when the peak
//! passes the budget by more than 10 %, when a bystander producer's events stop being
//! read (none may wait longer than [`STALL_MS_MAX`]), or when `/health/ready` does not
//! answer 200 at any of its checks during the flood.
//!
//! Rows: `producers-64` (64 rings flooding at full speed), `nodes-100k` (events for
//! 100,000 distinct nodes), `ws-10k` (10,000 WebSocket subscribers that never read while
//! every event decides), `store-stall-60s` (the store's file system frozen for 60 s
//! while events flood in).

mod budget;
mod load;
mod stall;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use self::budget::Budget;
use crate::daemon::DaemonProc;
use crate::error::BenchError;
use crate::http::{loadgen, wire};
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};

/// The suite.
pub const SUITE: Suite = Suite {
    name: "memory",
    about: "peak RSS of a flooded daemon against its configured budget",
    columns: &[
        "budget_mib",
        "peak_rss_mib",
        "peak_pct",
        "events",
        "ws_clients",
        "bystander_lag_max_ms",
        "ready_checks",
        "ready_failed",
    ],
    rows: &[
        RowSpec {
            name: "producers-64",
            run: load::producers_64,
        },
        RowSpec {
            name: "nodes-100k",
            run: load::nodes_100k,
        },
        RowSpec {
            name: "ws-10k",
            run: load::ws_10k,
        },
        RowSpec {
            name: "store-stall-60s",
            run: stall::store_stall,
        },
    ],
    peers: &[],
    finish: None,
};

/// The longest a bystander's event may wait to be read.
pub const STALL_MS_MAX: u64 = 1_000;
/// How far past its budget a daemon may go.
const BUDGET_SLACK_PCT: u64 = 10;

/// How long each row floods.
pub fn flood_for(opts: &RunOpts) -> Duration {
    match opts.size {
        RunSize::Full => Duration::from_secs(60),
        RunSize::Quick => Duration::from_secs(15),
        RunSize::Smoke => Duration::from_secs(3),
    }
}

/// What a flood reports.
pub struct Flood {
    /// Events published.
    pub events: u64,
    /// WebSocket clients connected.
    pub ws_clients: u64,
}

/// Starts a daemon with `sets`, runs `flood` for `duration` while a bystander producer publishes one
/// event every 10 ms and `/health/ready` is asked every 200 ms, then measures.
pub fn measure(
    name: &str,
    opts: &RunOpts,
    duration: Duration,
    store_stall_s: u64,
    rules: &str,
    sets: &[String],
    flood: impl FnOnce(&DaemonProc, SocketAddr, &AtomicBool) -> Result<Flood, BenchError> + Send,
) -> Result<Row, BenchError> {
    let _ = opts;
    let d = DaemonProc::start(rules, sets, Duration::from_secs(60))?;
    let http = http_addr(&d)?;
    let stop = AtomicBool::new(false);
    let lag_max_ms = AtomicU64::new(0);
    let (checks, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let socket = d.socket();
    let flood = std::thread::scope(|s| {
        s.spawn(|| load::bystander(&socket, &stop, &lag_max_ms));
        s.spawn(|| ready_checks(http, &stop, &checks, &failed));
        let started = Instant::now();
        let flooder = s.spawn(|| flood(&d, http, &stop));
        while started.elapsed() < duration && !flooder.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        flooder
            .join()
            .map_err(|_| BenchError::Setup(format!("{name}: the flood panicked")))?
    })?;
    // VmHWM is monotonic: a snapshot published after the flood holds the peak.
    std::thread::sleep(Duration::from_millis(300));
    let s = d.stats()?;
    let cfg = rimd::config::Config::load(None::<&std::path::Path>, std::iter::empty(), sets)
        .map_err(|e| BenchError::Setup(format!("{name}: config: {e}")))?;
    let b = Budget::of(&cfg, &s, flood.ws_clients, store_stall_s);
    let peak = s.gauges.get("rss_peak_bytes").copied().unwrap_or(0).max(0) as u64;
    let total = b.total();
    let lag = lag_max_ms.load(Ordering::Relaxed);
    let (checks, failed) = (checks.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let parts: Vec<String> = b.parts.iter().map(|(n, v)| format!("{n} {} MiB", v >> 20)).collect();
    eprintln!("{name}: budget {} MiB = {}", total >> 20, parts.join(" + "));
    let mut row = Row::new(
        name,
        vec![
            Figure::int("budget_mib", total >> 20),
            Figure::int("peak_rss_mib", peak >> 20),
            Figure::int("peak_pct", peak * 100 / total.max(1)),
            Figure::int("events", flood.events),
            Figure::int("ws_clients", flood.ws_clients),
            Figure::int("bystander_lag_max_ms", lag),
            Figure::int("ready_checks", checks),
            Figure::int("ready_failed", failed),
        ],
    );
    let mut broken = Vec::new();
    if peak > total + total * BUDGET_SLACK_PCT / 100 {
        broken.push(format!(
            "peak RSS {} MiB over budget {} MiB + 10 %",
            peak >> 20,
            total >> 20
        ));
    }
    if lag > STALL_MS_MAX {
        broken.push(format!("a bystander event waited {lag} ms"));
    }
    if failed > 0 || checks == 0 {
        broken.push(format!("/health/ready failed {failed} of {checks} checks"));
    }
    if !broken.is_empty() {
        row.error = Some(broken.join("; "));
    }
    d.stop()?;
    Ok(row)
}

fn ready_checks(http: SocketAddr, stop: &AtomicBool, checks: &AtomicU64, failed: &AtomicU64) {
    let request = wire::get(&format!("{}/health/ready", wire::API));
    while !stop.load(Ordering::Relaxed) {
        let ok = matches!(loadgen::fetch(http, &request, Duration::from_secs(2)), Ok((200, _)));
        checks.fetch_add(1, Ordering::Relaxed);
        failed.fetch_add(u64::from(!ok), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The daemon's HTTP address, from `{run_dir}/http.addr`.
pub fn http_addr(d: &DaemonProc) -> Result<SocketAddr, BenchError> {
    let path = d.run_dir.join("http.addr");
    let t0 = Instant::now();
    loop {
        if let Some(addr) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()) {
            return Ok(addr);
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(BenchError::Timeout {
                waiting_for: "the daemon's http.addr",
                timeout: Duration::from_secs(30),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
