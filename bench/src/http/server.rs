//! The daemon every row of the suite talks to: started once (by whichever row runs
//! first), seeded with 10,000 nodes with an hour of history, kept for the following rows
//! (so `slice` and `bare` are measured on the same server in the same run), and stopped by
//! the suite's finish hook.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::loadgen::fetch;
use super::wire;
use crate::daemon::DaemonProc;
use crate::error::BenchError;
use crate::suite::{RunOpts, RunSize};
use crate::workload::{self, applied, Publisher};

/// A seeded daemon with its HTTP address.
pub struct Server {
    /// The daemon.
    pub daemon: DaemonProc,
    /// Where its API listens.
    pub addr: SocketAddr,
    /// Nodes with history.
    pub nodes: usize,
    /// The seeding producer, kept attached so its ring is not reclaimed mid-measurement
    /// (reclaiming is work on the cold core, where the HTTP server runs).
    _seeder: Publisher,
}

/// The running server, shared by the rows of one suite run; or why it could not start
/// (the rows after the first then fail at once with the same reason instead of each
/// waiting out its own timeouts).
static SHARED: Mutex<Option<Result<Server, String>>> = Mutex::new(None);

/// How the history is laid out.
#[derive(Debug, Clone, Copy)]
struct History {
    /// Events per node.
    steps: i64,
    /// Event time between two events of a node, ms.
    spacing_ms: i64,
}

/// One event per node per minute of event time: every event is a 1 s and a 60 s window
/// of its own (the observed capsules the slice reads).
fn history(size: RunSize) -> History {
    let steps = match size {
        RunSize::Full => 60,
        RunSize::Quick => 15,
        RunSize::Smoke => 1,
    };
    History {
        steps,
        spacing_ms: 60_000,
    }
}

/// Nodes seeded (and asked for): the workload's 10,000; a tenth for `--smoke`, whose
/// daemon is a debug build in `cargo test` and whose store would take half a minute.
fn seeded_nodes(size: RunSize) -> usize {
    match size {
        RunSize::Smoke => workload::nodes().min(1_000),
        _ => workload::nodes(),
    }
}

/// Runs `f` with the suite's server, starting and seeding it first if no row did yet.
/// A row that fails takes the server down with it (the next row starts a fresh one), so
/// one broken daemon does not fail the rows after it for a reason not their own.
pub fn with_server<T>(opts: &RunOpts, f: impl FnOnce(&Server) -> Result<T, BenchError>) -> Result<T, BenchError> {
    let mut shared = SHARED
        .lock()
        .map_err(|_| BenchError::Setup("the shared server's lock".into()))?;
    let server = match shared.get_or_insert_with(|| Server::start(opts).map_err(|e| e.to_string())) {
        Ok(server) => server,
        Err(why) => return Err(BenchError::Setup(format!("the daemon did not start: {why}"))),
    };
    let outcome = f(server);
    if outcome.is_err() {
        if let Some(Ok(server)) = shared.take() {
            print_log_tail(&server.daemon);
        }
    }
    outcome
}

/// Stops the shared server (the suite's finish hook).
pub fn shut_down() {
    let Ok(mut shared) = SHARED.lock() else { return };
    if let Some(Ok(server)) = shared.take() {
        // The daemon logs warnings only (RUST_LOG=warn): anything there is worth seeing.
        print_log_tail(&server.daemon);
        if let Err(e) = server.daemon.stop() {
            eprintln!("rim-bench http: stopping the daemon: {e}");
        }
    }
}

impl Server {
    fn start(opts: &RunOpts) -> Result<Self, BenchError> {
        let timeout = Duration::from_secs(60);
        let daemon = DaemonProc::start(&workload::rules(), &daemon_sets(opts), timeout)?;
        crate::affinity::pin_current_thread(opts.client_core)?;
        // The API is up before recovery starts: once the daemon serves its control socket,
        // the address file is there or about to be.
        let addr = wait_addr(&daemon, Duration::from_secs(10)).inspect_err(|_| print_log_tail(&daemon))?;
        wait_ready(addr, timeout)?;
        let producer = rim_ring::attach::attach_producer(&daemon.socket(), "bench-http-seed", 1 << 24)
            .map_err(|e| BenchError::transport("rim-ring", "attach producer", e))?;
        let mut seeder = Publisher::new(producer)?;
        let nodes = seeded_nodes(opts.size);
        let started = Instant::now();
        let seeded = seed(&mut seeder, nodes, history(opts.size))?;
        let published = started.elapsed();
        wait_caught_up(&daemon, seeded, opts.peer_timeout * 4)?;
        eprint!(
            "(seeded {seeded} events over {nodes} nodes in {:.1} s; the store caught up {:.1} s later) ",
            published.as_secs_f64(),
            (started.elapsed() - published).as_secs_f64()
        );
        Ok(Self {
            daemon,
            addr,
            nodes,
            _seeder: seeder,
        })
    }
}

/// The daemon's settings: the house topology (hot shard on the peer core, the cold core,
/// where the HTTP server, persistence and the load generator sit, on the client core), a
/// port of its own, and no rate limit (a 429 would measure the limiter, not the server).
fn daemon_sets(opts: &RunOpts) -> Vec<String> {
    let mut sets = workload::daemon_sets(opts.client_core, opts.peer_core);
    sets.extend([
        "api.listen=\"127.0.0.1:0\"".to_string(),
        "api.rate_query_per_min=0".to_string(),
        "api.rate_command_per_min=0".to_string(),
    ]);
    sets
}

/// The address the server bound, from `{run_dir}/http.addr`.
fn wait_addr(daemon: &DaemonProc, timeout: Duration) -> Result<SocketAddr, BenchError> {
    let path = daemon.run_dir.join("http.addr");
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(addr) = text.trim().parse() {
                return Ok(addr);
            }
        }
        if started.elapsed() > timeout {
            return Err(BenchError::Timeout {
                waiting_for: "the daemon's http.addr",
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls readiness until 200.
fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), BenchError> {
    let started = Instant::now();
    let request = wire::get(wire::READY_PATH);
    loop {
        let answer = fetch(addr, &request, Duration::from_secs(2));
        if matches!(answer, Ok((200, _))) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(BenchError::Setup(format!("the API did not become ready: {answer:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes the history through shared memory, time step by time step (so every node's
/// events arrive in event-time order and none is late for its open window), each node at
/// its own offset inside the step. The last step ends a whole step before now, so every
/// window (60 s at most) has ended and closes within `persist.grace_ms`, before the
/// measurements, not during them. Returns the events published.
fn seed(p: &mut Publisher, nodes: usize, h: History) -> Result<u64, BenchError> {
    let first_ms = workload::unix_ms() - (h.steps + 1) * h.spacing_ms;
    for step in 0..h.steps {
        for node in 0..nodes {
            let offset = (node as i64 * 7_919) % h.spacing_ms;
            p.publish(node, false, first_ms + step * h.spacing_ms + offset, 0)?;
        }
        wait_taken(p)?;
    }
    Ok(h.steps as u64 * nodes as u64)
}

/// Sleeps until the daemon has taken everything published. The seeder runs on the cold
/// core, where the journal and store threads drain what it publishes: spinning on a full
/// ring there would take the time they need (seeding is not measured; sleeping is free).
fn wait_taken(p: &Publisher) -> Result<(), BenchError> {
    let end = p.producer.position();
    let timeout = Duration::from_secs(120);
    let started = Instant::now();
    while p.producer.consumed_position() < end {
        if started.elapsed() > timeout {
            return Err(BenchError::Timeout {
                waiting_for: "the daemon to take the seeded events",
                timeout,
            });
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

/// Waits until reflex applied and the journal holds every seeded event, then until the
/// store has nothing pending and its insert count has stopped moving for a while (the
/// nodes' last windows close only after `persist.grace_ms` of processing time, so "no
/// pending" alone can come too early).
fn wait_caught_up(daemon: &DaemonProc, seeded: u64, timeout: Duration) -> Result<(), BenchError> {
    let counter = |s: &rim_stats::Snapshot, name: &str| s.counters.get(name).copied().unwrap_or(0);
    daemon.wait_stats(timeout, |s| {
        applied(s) >= seeded && counter(s, "persist.journal_events") >= seeded
    })?;
    let started = Instant::now();
    let quiet_for = Duration::from_millis(3_000);
    let mut last = (u64::MAX, Instant::now());
    loop {
        let s = daemon.stats()?;
        let inserted = counter(&s, "persist.capsules_inserted");
        let pending = counter(&s, "persist.store_pending");
        if inserted != last.0 || pending > 0 {
            last = (inserted, Instant::now());
        } else if last.1.elapsed() >= quiet_for {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(BenchError::Timeout {
                waiting_for: "the capsule store to catch up with the seeded history",
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_log_tail(daemon: &DaemonProc) {
    let log = daemon.log();
    let tail: Vec<&str> = log.lines().rev().take(10).collect();
    if !tail.is_empty() {
        eprintln!("\nthe daemon's log ends with:");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }
}
