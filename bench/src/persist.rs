//! Suite `persist`: what durability costs and how fast the daemon comes back.
//!
//! Rows:
//! - `journal`: a real daemon with the workload's 100 rules and persistence on (journal
//!   in a directory on disk); one producer offers 1M events/s (paced in 1 ms batches)
//!   over 10,000 nodes. `events_per_s` = events acknowledged durable / time until the
//!   last one was; `durable_lag` = from publish until the ring's durable position covered
//!   the event (one event in 64 sampled, HDR), seen by the producer itself, which
//!   sleeps between batches and looks at its durable position every 100 µs at most (the
//!   lag figures are therefore up to ~0.1 ms high).
//! - `journal-100k`: the same at 100k events/s offered, where the journal keeps up: the
//!   durable lag without queueing.
//! - `capsules`: `Store::write` of observed capsules (10,000 nodes × windows, 4 metrics,
//!   10,000 per transaction, idempotency check and encoding included), and beside it
//!   `redb-raw`: the same rows, pre-encoded, plainly inserted into the same tables with
//!   no idempotency read (rim_capsule::raw), in a fresh store, same run.
//! - `recovery`: the `journal` row's daemon is SIGKILLed (once its store has caught up
//!   with the journal, plus one checkpoint period) and a new one started on its data: `ready_ms` from spawn until it serves (control socket and stats up);
//!   `events` = events in the journal; `replayed` = records recovery read (since the
//!   store's watermarks); and `full_replay_ms` with the store deleted, so recovery reads
//!   the whole journal.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::daemon::DaemonProc;
use crate::error::BenchError;
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload::{self, applied};

/// The `persist` suite.
pub const SUITE: Suite = Suite {
    name: "persist",
    about: "journal throughput and durable lag, capsule writes vs plain redb, recovery time",
    columns: &[
        "events_per_s",
        "durable_lag_p50_ns",
        "durable_lag_p99_ns",
        "durable_lag_p999_ns",
        "durable_lag_max_ns",
        "records_per_s",
        "events",
        "replayed",
        "ready_ms",
        "full_replay_ms",
    ],
    rows: &[
        RowSpec {
            name: "journal",
            run: run_journal,
        },
        RowSpec {
            name: "journal-100k",
            run: run_journal_100k,
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
    ],
    peers: &[],
    finish: None,
};

/// The journal row's data, kept for the recovery row.
static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

struct Kept {
    data: PathBuf,
    events: u64,
}

fn seconds(size: RunSize) -> f64 {
    match size {
        RunSize::Full => 10.0,
        RunSize::Quick => 3.0,
        RunSize::Smoke => 0.05,
    }
}

const OFFERED_PER_S: u64 = 1_000_000;
const SAMPLE_EVERY: u64 = 64;

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

fn sets(opts: &RunOpts, data: &Path) -> Vec<String> {
    let mut s = workload::daemon_sets(opts.client_core, opts.peer_core);
    s.push(format!("persist.data_dir=\"{}\"", data.display()));
    s
}

fn run_journal(opts: &RunOpts) -> Result<Row, BenchError> {
    journal_row(opts, "journal", OFFERED_PER_S, true)
}

/// The same at a tenth of the offered load: the durable lag when the journal keeps up.
fn run_journal_100k(opts: &RunOpts) -> Result<Row, BenchError> {
    journal_row(opts, "journal-100k", OFFERED_PER_S / 10, false)
}

fn journal_row(opts: &RunOpts, name: &str, offered_per_s: u64, keep: bool) -> Result<Row, BenchError> {
    let data = data_dir()?;
    let daemon = DaemonProc::start(&workload::rules(), &sets(opts, &data), Duration::from_secs(60))?;
    crate::affinity::pin_current_thread(opts.client_core)?;
    let producer = rim_ring::attach::attach_producer(&daemon.socket(), "bench-persist", 1 << 24)
        .map_err(|e| BenchError::transport("rim-ring", "attach producer", e))?;
    let mut p = workload::Publisher::new(producer)?;
    let nodes = workload::nodes();
    // Warm-up: every node once, durable.
    let now = workload::unix_ms();
    for i in 0..nodes {
        p.publish(i, false, now, 0)?;
    }
    wait_durable(&p, p.producer.position(), opts.peer_timeout)?;

    let total = (seconds(opts.size) * offered_per_s as f64) as u64;
    let batch = offered_per_s / 1000;
    let mut lag =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut waiting: std::collections::VecDeque<(u64, Instant)> = std::collections::VecDeque::new();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut ts = workload::unix_ms();
    while sent < total {
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
    let journaled = stats.counters.get("persist.journal_events").copied().unwrap_or(0);
    let syncs = stats.counters.get("persist.syncs").copied().unwrap_or(0);
    let sync_ns = stats.counters.get("persist.sync_ns").copied().unwrap_or(0);
    let sync_max = stats.counters.get("persist.sync_ns_max").copied().unwrap_or(0);
    let commits = stats.counters.get("persist.store_commits").copied().unwrap_or(0);
    eprint!(
        "(producer saw the ring full {} times; {} syncs, mean {} µs, max {} µs; {} store commits) ",
        p.full_retries,
        syncs,
        sync_ns / syncs.max(1) / 1000,
        sync_max / 1000,
        commits
    );
    // Hand the data to the recovery row: SIGKILL, as a crash would, once the store has
    // caught up with the journal (under overload it lags by seconds, and recovery then
    // replays that much more: see the closing notes).
    if keep {
        let caught_up = daemon.wait_stats(Duration::from_secs(120), |s| {
            s.counters.get("persist.store_pending").copied().unwrap_or(1) == 0
        });
        if caught_up.is_err() {
            eprint!("(the store had not caught up after 120 s) ");
        }
        // One more checkpoint period, so the last checkpoint is of the quiet journal.
        std::thread::sleep(Duration::from_millis(2_500));
    }
    daemon.kill9();
    if keep {
        *KEPT.lock().map_err(|_| BenchError::Setup("lock".into()))? = Some(Kept {
            data,
            events: journaled,
        });
    } else {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(Row::new(
        name,
        vec![
            Figure::real("events_per_s", total as f64 / secs),
            Figure::int("durable_lag_p50_ns", lag.value_at_quantile(0.5)),
            Figure::int("durable_lag_p99_ns", lag.value_at_quantile(0.99)),
            Figure::int("durable_lag_p999_ns", lag.value_at_quantile(0.999)),
            Figure::int("durable_lag_max_ns", lag.max()),
        ],
    ))
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

fn wait_durable(p: &workload::Publisher, pos: u64, timeout: Duration) -> Result<(), BenchError> {
    if p.producer.wait_durable(pos, 50_000, timeout.as_nanos() as u64) {
        Ok(())
    } else {
        Err(BenchError::Timeout {
            waiting_for: "durability",
            timeout,
        })
    }
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
    let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(&dir));
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
    let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(&dir));
    Ok(Row::new(
        "redb-raw",
        vec![Figure::real("records_per_s", rows.len() as f64 / secs)],
    ))
}

fn run_recovery(opts: &RunOpts) -> Result<Row, BenchError> {
    let kept = KEPT.lock().map_err(|_| BenchError::Setup("lock".into()))?.take();
    let kept = match kept {
        Some(k) => k,
        None => {
            run_journal(opts)?;
            KEPT.lock()
                .map_err(|_| BenchError::Setup("lock".into()))?
                .take()
                .ok_or_else(|| BenchError::Setup("the journal row kept no data".into()))?
        }
    };
    let (ready_ms, replayed) = restart(opts, &kept.data)?;
    // And with no store: recovery replays the whole journal.
    let _ = std::fs::remove_file(kept.data.join("capsules.redb"));
    let (full_ms, _) = restart(opts, &kept.data)?;
    let _ = std::fs::remove_dir_all(&kept.data);
    Ok(Row::new(
        "recovery",
        vec![
            Figure::int("events", kept.events),
            Figure::int("replayed", replayed),
            Figure::real("ready_ms", ready_ms),
            Figure::real("full_replay_ms", full_ms),
        ],
    ))
}

/// Starts a daemon on `data`; returns ms until it served and the records it replayed.
fn restart(opts: &RunOpts, data: &Path) -> Result<(f64, u64), BenchError> {
    let started = Instant::now();
    let daemon = DaemonProc::start(&workload::rules(), &sets(opts, data), Duration::from_secs(300))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let s = daemon.stats()?;
    let replayed = s.counters.get("persist.recovered_events").copied().unwrap_or(0);
    daemon.stop()?;
    Ok((ms, replayed))
}
