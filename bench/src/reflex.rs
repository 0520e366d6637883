//! Suite `reflex`: tick to decision. A producer publishes an event that a rule fires on
//! and reads the decision back from the daemon's broadcast ring, one at a time, with the
//! 100 rules over 10,000 nodes of [`crate::workload`] loaded and every node's state warm.
//!
//! Rows: `rimd-reflex` (through the daemon: ring, ingest, reflex ring, state update, two
//! rules, decision encoding and SHA-256 chaining, broadcast), and beside it in the same run
//! `rimd-shm`, the bare shared-memory ring's echo round trip between two processes with the
//! same 144-byte event (the floor the daemon's path is built on), and `decision-chain`:
//! the decision record's encoding and SHA-256 chaining alone, as the hot shard does it for
//! the `probe` rule's decision (`rim_decision::Chain::append`), on this thread, per
//! decision (timed in batches of [`CHAIN_BATCH`], each batch's mean recorded, so its tail
//! percentiles are smoothed). Its figures are not round trips: they are the part of
//! `rimd-reflex`'s path that `rimd-shm` does not have and that the design fixes (every
//! decision carries the SHA-256 of the one before it, so a decision is hashed before it is
//! published), so `rimd-shm` p50 + `decision-chain` p50 estimates the floor under
//! `rimd-reflex` p50 in the same run.
//!
//! `rimd-shm-beside-syncs` is `rimd-shm` with a thread on the client's core that writes and
//! `fdatasync`s 1 ms of a 1M events/s journal's bytes every millisecond
//! ([`crate::persist::SyncLoad`], as the `persist` suite's `sync-floor`): the least disk
//! work a journal needs to keep its durable lag near the `persist` targets' 2 ms, with
//! nothing else of the daemon's. Its tail against `rimd-shm`'s is what durability alone
//! costs a round trip whose client shares its core with the syncs (`syncs_per_s` says how
//! many ran).
//!
//! `rimd-reflex-volatile` is `rimd-reflex` with persistence off: the same path with no
//! journal entries pushed and no journal, store or sync work on the cold core. On two
//! cores this bench's client sits on the daemon's cold core (the hot shard has the other),
//! so whatever the cold threads run is time taken from a spinning client in the middle of
//! a round trip. The daemon rows say how much, over the measured round trips:
//! `preempted_per_1k`, how many times per 1,000 round trips another task took the client's
//! core (`getrusage`; a round trip that contains one is a tail figure: 10 per 1,000 reach
//! p99, 1 per 1,000 p99.9), and `daemon_cpu_pct`, the daemon's threads together in % of one
//! core (the hot shard spins: about 100 of it; the rest is the cold side). With
//! `RIM_BENCH_THREADS=1` ([`crate::procfs::per_thread`]) also `client_wait_pct` (the share
//! of the time the client was runnable but waited for its core, `schedstat`),
//! `cold_cpu_pct` (the daemon's threads other than the hot shard) and the cold threads' ns
//! per round trip in the row's log line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rim_ring::broadcast::ReadError;

use crate::clock::monotonic_ns;
use crate::error::BenchError;
use crate::latency::{LatencyRecorder, RTT};
use crate::procfs::{self, Task, HOT_THREAD};
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload;

/// The `reflex` suite.
pub const SUITE: Suite = Suite {
    name: "reflex",
    about: "tick to decision through the daemon (100 rules, 10k nodes), beside the bare ring",
    columns: &[
        RTT.p50,
        RTT.p99,
        RTT.p999,
        RTT.max,
        "preempted_per_1k",
        "daemon_cpu_pct",
        "client_wait_pct",
        "cold_cpu_pct",
        "syncs_per_s",
    ],
    rows: &[
        RowSpec {
            name: "rimd-reflex",
            run: |opts| run_reflex(opts, "rimd-reflex", &[]),
        },
        RowSpec {
            name: "rimd-reflex-volatile",
            run: |opts| run_reflex(opts, "rimd-reflex-volatile", &["persist.enabled=false"]),
        },
        RowSpec {
            name: "rimd-shm",
            run: |opts| crate::ring::rimd_shm::run(&crate::ring::RingCfg::new(opts)),
        },
        RowSpec {
            name: "rimd-shm-beside-syncs",
            run: run_shm_beside_syncs,
        },
        RowSpec {
            name: "decision-chain",
            run: run_decision_chain,
        },
    ],
    peers: &[],
    finish: None,
};

/// Offset of the triggering event's sequence in a decision record.
const EVENT_SEQ_OFF: usize = rim_decision::layout::EVENT_SEQ;

fn plan(size: RunSize) -> (u64, u64) {
    match size {
        RunSize::Full => (20_000, 1_000_000),
        RunSize::Quick => (10_000, 200_000),
        RunSize::Smoke => (1_000, 2_000),
    }
}

fn run_reflex(opts: &RunOpts, name: &'static str, sets: &[&str]) -> Result<Row, BenchError> {
    let (warmup, measured) = plan(opts.size);
    // Every node's state and rule list built (two events each), with no decision.
    let (daemon, mut p, mut seq) = workload::start_with(opts, "bench-reflex", 1 << 22, 2, sets)?;
    let nodes = workload::nodes();
    let mut reader = rim_ring::attach::attach_subscriber(&daemon.socket(), "decisions")
        .map_err(|e| BenchError::transport("rim-ring", "attach subscriber", e))?;

    let mut buf = vec![0u8; reader.slot_bytes()];
    let mut hist = LatencyRecorder::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut shares = None;
    for i in 0..warmup + measured {
        if i == warmup {
            shares = Some(SharesAt::now(daemon.pid()));
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let node = (x % nodes as u64) as usize;
        let t0 = monotonic_ns();
        p.publish(node, true, workload::unix_ms(), t0)?;
        seq += 1;
        let len = read_decision(&mut reader, &mut buf, opts.peer_timeout)?;
        let t1 = monotonic_ns();
        let got = buf
            .get(EVENT_SEQ_OFF..EVENT_SEQ_OFF + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes);
        if len < EVENT_SEQ_OFF + 8 || got != Some(seq) {
            return Err(BenchError::Integrity {
                what: format!("decision for event seq {seq} expected, got {got:?} ({len} bytes)"),
            });
        }
        if i >= warmup {
            hist.record(t1 - t0);
        }
    }
    let shares = shares.and_then(|s| s.since(daemon.pid(), measured));
    let want = warmup + measured;
    let probe = |s: &rim_stats::Snapshot| s.counters.get("decisions.rule.probe").copied().unwrap_or(0);
    let decisions = match daemon.wait_stats(Duration::from_secs(5), |s| probe(s) >= want) {
        Ok(s) => probe(&s),
        Err(_) => probe(&daemon.stats()?),
    };
    if let Ok(s) = daemon.stats() {
        eprint!("(daemon's own view, p50/p99 ns:");
        for (name, q) in &s.stages {
            eprint!(" {name} {}/{}", q.p50, q.p99);
        }
        eprint!(") ");
    }
    daemon.stop()?;
    if decisions < warmup + measured {
        return Err(BenchError::Integrity {
            what: format!(
                "the daemon counted {decisions} probe decisions, expected {}",
                warmup + measured
            ),
        });
    }
    let shares =
        shares.ok_or_else(|| BenchError::Setup("no CPU clock of the daemon or rusage of this thread".into()))?;
    let rtt = hist.summary();
    let mut figures = rtt.figures(&RTT).to_vec();
    figures.extend([
        Figure::real("preempted_per_1k", shares.preempted_per_1k),
        Figure::real("daemon_cpu_pct", shares.daemon_cpu_pct),
    ]);
    if let Some((wait, cold)) = shares.threads {
        figures.extend([
            Figure::real("client_wait_pct", wait),
            Figure::real("cold_cpu_pct", cold),
        ]);
    }
    Ok(Row::new(name, figures).with_latency("rtt", &rtt))
}

/// Where the client's core went over the measured round trips.
struct Shares {
    preempted_per_1k: f64,
    daemon_cpu_pct: f64,
    /// With `RIM_BENCH_THREADS=1` ([`procfs::per_thread`]): (client_wait_pct, cold_cpu_pct).
    threads: Option<(f64, f64)>,
}

/// Readings at the start of the measured round trips.
struct SharesAt {
    at_ns: u64,
    involuntary: Option<u64>,
    daemon_ns: Option<u64>,
    /// Per-thread readings, only with `RIM_BENCH_THREADS=1`.
    threads: Option<(Option<Task>, HashMap<u32, Task>)>,
}

impl SharesAt {
    fn now(daemon: u32) -> Self {
        SharesAt {
            involuntary: procfs::involuntary_switches(),
            daemon_ns: procfs::process_cpu_ns(daemon),
            threads: procfs::per_thread().then(|| (procfs::this_thread(), procfs::tasks(daemon))),
            at_ns: monotonic_ns(),
        }
    }

    /// The shares from `self` to now, over `round_trips`; None when a reading failed.
    fn since(self, daemon: u32, round_trips: u64) -> Option<Shares> {
        let elapsed = monotonic_ns().saturating_sub(self.at_ns).max(1) as f64;
        let preempted = procfs::involuntary_switches()?.saturating_sub(self.involuntary?) as f64;
        let daemon_ns = procfs::process_cpu_ns(daemon)?.saturating_sub(self.daemon_ns?) as f64;
        let threads = match self.threads {
            Some((client, tasks)) => Some(thread_shares(client?, &tasks, daemon, elapsed, round_trips)?),
            None => None,
        };
        Some(Shares {
            preempted_per_1k: 1000.0 * preempted / round_trips.max(1) as f64,
            daemon_cpu_pct: 100.0 * daemon_ns / elapsed,
            threads,
        })
    }
}

/// (client_wait_pct, cold_cpu_pct) from per-thread readings taken `elapsed` ns ago.
fn thread_shares(
    client: Task,
    before: &HashMap<u32, Task>,
    daemon: u32,
    elapsed: f64,
    round_trips: u64,
) -> Option<(f64, f64)> {
    let after = procfs::this_thread()?;
    let now = procfs::tasks(daemon);
    if before.is_empty() || now.is_empty() {
        return None;
    }
    // Cold threads alive at the end: what each gained (all of it for one started since).
    let mut cold = procfs::gained(before, &now);
    cold.retain(|(name, _)| name != HOT_THREAD);
    let cold_ns: u64 = cold.iter().map(|(_, ns)| ns).sum();
    let per_round_trip = crate::kafka::cpu::by_group(cold, round_trips.max(1) as f64);
    eprint!(
        "(cold threads, ns per round trip: {}) ",
        crate::kafka::cpu::threads_note(&per_round_trip)
    );
    Some((
        100.0 * after.wait_ns.saturating_sub(client.wait_ns) as f64 / elapsed,
        100.0 * cold_ns as f64 / elapsed,
    ))
}

/// The journal rate whose bytes [`run_shm_beside_syncs`]'s syncs carry: the `persist`
/// suite's `sync-floor` rate, fewer bytes than `rimd-reflex`'s events and decisions.
const SYNC_LOAD_PER_S: u64 = 1_000_000;

/// `rimd-shm` with a [`crate::persist::SyncLoad`] on the client's core: the bare ring's
/// round trip beside the least disk work that `persist.enabled` needs for a durable lag
/// near the 2 ms target (a write and an `fdatasync` every millisecond), and nothing else
/// of the daemon's. On two cores the client shares its core with whatever syncs.
fn run_shm_beside_syncs(opts: &RunOpts) -> Result<Row, BenchError> {
    let load = crate::persist::SyncLoad::start(opts.client_core, SYNC_LOAD_PER_S)?;
    let row = crate::ring::rimd_shm::run(&crate::ring::RingCfg::new(opts));
    let syncs_per_s = load.stop()?;
    let mut row = row?;
    row.name = "rimd-shm-beside-syncs".into();
    row.figures.push(Figure::real("syncs_per_s", syncs_per_s));
    Ok(row)
}

/// Decisions per timed batch of `decision-chain` (a clock read is 20-30 ns here, a
/// decision's hashing a few hundred: one read per batch keeps it out of the figure).
const CHAIN_BATCH: u64 = 16;

fn run_decision_chain(opts: &RunOpts) -> Result<Row, BenchError> {
    crate::affinity::pin_current_thread(opts.peer_core)?;
    let (warmup, measured) = plan(opts.size);
    let node_ids: Vec<String> = (0..workload::nodes()).map(workload::node_id).collect();
    let mut chain = rim_decision::Chain::new(1);
    let mut buf = vec![0u8; rim_decision::RECORD_BYTES_MAX];
    let mut hist = LatencyRecorder::new();
    let mut bytes = 0usize;
    let batches = (warmup + measured) / CHAIN_BATCH;
    for b in 0..batches {
        let t0 = monotonic_ns();
        for i in 0..CHAIN_BATCH {
            let n = b * CHAIN_BATCH + i;
            let node = (n as usize * 7919) % node_ids.len();
            let d = rim_decision::Draft {
                shard: 0,
                rule_id: "probe",
                rule_version: 1,
                rule_generation: 1,
                severity: 1,
                flags: 0,
                node: node as u32,
                node_id: &node_ids[node],
                event_seq: n + 1,
                event_timestamp: 1_700_000_000_000 + n as i64,
                publish_ns: t0,
                decided_ns: t0,
                latency_ns: 0,
            };
            let evidence = [("metric.probe", n as f64 + 1.0)];
            bytes = chain.append(&d, evidence.len(), evidence.into_iter(), &mut buf);
            std::hint::black_box(&buf[..bytes]);
        }
        let t1 = monotonic_ns();
        if b * CHAIN_BATCH >= warmup {
            hist.record((t1 - t0) / CHAIN_BATCH);
        }
    }
    eprint!("({bytes}-byte records, {CHAIN_BATCH} per timed batch) ");
    // Back on the client core, as the suite's other rows expect to find this thread.
    crate::affinity::pin_current_thread(opts.client_core)?;
    let per = hist.summary();
    Ok(Row::new("decision-chain", per.figures(&RTT).to_vec()).with_latency("per_decision", &per))
}

fn read_decision(
    reader: &mut rim_ring::broadcast::Reader,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<usize, BenchError> {
    let mut spins = 0u32;
    let mut started: Option<Instant> = None;
    loop {
        match reader.read(buf) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {}
            Err(ReadError::Lapped { missed }) => {
                return Err(BenchError::Integrity {
                    what: format!("the decision reader was lapped ({missed} missed)"),
                })
            }
            Err(e) => return Err(BenchError::transport("rim-ring", "read decision", e)),
        }
        spins += 1;
        if spins.is_multiple_of(4096) {
            let s = *started.get_or_insert_with(Instant::now);
            if s.elapsed() > timeout {
                return Err(BenchError::Timeout {
                    waiting_for: "a decision",
                    timeout,
                });
            }
        }
        std::hint::spin_loop();
    }
}
