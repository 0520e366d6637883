//! Suite `http`: the HTTP API under load, on a daemon holding 10,000 nodes with history.
//!
//! One daemon serves every row (started by the first, seeded through a shared-memory
//! producer with one event per node per minute over the past hour (15 minutes with
//! `--quick`), measured once its capsule store has caught up, stopped at the end). Rows:
//! - `bare`: `GET /api/v1/ping`, the cheapest route: what the server's HTTP path costs
//!   alone, beside the others in the same run.
//! - `slice`: `GET /api/v1/temporal/slice/{nodeId}` of a node drawn at random per request
//!   (the store's past capsules, the reflex shard's present, the predictions), saturating:
//!   `req_per_s` is the most it answers; `vs_bare` = slice / bare `req_per_s`. Every
//!   node's slice is asked for once first, unmeasured, so that the daemon's resident
//!   windows are filled (the slice rows measure a service whose nodes are asked for again
//!   and again, not each node's first read from the store).
//! - `bare-pad`: `bare` with `?pad=` making its answer as large as a slice's (the size of
//!   node 0's, asked for once first): the cost of moving a slice-sized answer through the
//!   server, the loopback and the generator without the slice's own work. `slice`'s
//!   `vs_pad` = slice / bare-pad `req_per_s`.
//! - `bare-10k`: `bare` offered at a fixed 10,000 requests/s, latency from each request's
//!   due time: the floor of `slice-10k` on the same placement.
//! - `slice-10k`, `slice-50k`: the same offered at a fixed 10,000 and 50,000 requests/s,
//!   latency counted from each request's due time (`offered_per_s` beside `req_per_s`).
//! - `post-bare`: the `events-post` bodies posted to `POST /api/v1/ping`, which reads each
//!   body and discards it: the HTTP transfer floor of a batch, as `events_per_s` of the
//!   bodies it carried.
//! - `events-post`: `POST /api/v1/events` of JSON batches of 2,000 RimFastEvents over 4
//!   connections, saturating: `events_per_s`, the request latencies, `lost` = events
//!   answered 2xx that reflex had not applied once the daemon settled, and `vs_floor` =
//!   its `events_per_s` / `post-bare`'s.
//! - `shm-floor`: events of the same shape (4 metrics, price, volume, stress, an
//!   `event_id`) published through a shared-memory ring of the same daemon for as long,
//!   saturating: what the daemon ingests and persists without HTTP or JSON, the ceiling of
//!   `events-post` on this placement (persistence shares the cold core with the server).
//!   `vs_floor` as `events-post`'s, against `post-bare`.
//!
//! Every row reports `errors`: non-2xx answers and requests lost with their connection,
//! kept out of the latencies (the rate limiter is off: `api.rate_*_per_min = 0`).
//!
//! The load generator ([`loadgen`]) is part of this binary: one thread, keep-alive
//! HTTP/1.1 connections (64 for the GET rows), one request in flight per connection,
//! epoll, HDR latencies per request. Where each part runs: the daemon's hot shard
//! busy-polls `--peer-core`; its cold core (`--client-core`) runs the HTTP server and
//! persistence. The generator goes to a third core when the machine has one (the first
//! core that is neither; column `gen_core`); on two cores there is none (the hot core is
//! busy-polled), so the generator shares the cold core with the server: the figures are
//! then what one core gives server and client together, a floor for the server alone.
//! `client_cpu` says how much of its core the generator itself used during the run
//! (FLOORS: hyper on glommio alone on a core, with wrk on the other, ~190k req/s).

pub mod loadgen;
pub mod requests;
pub mod server;
pub mod wire;

use std::sync::Mutex;
use std::time::Duration;

use crate::error::BenchError;
use crate::latency::LatencyNames;
use crate::report::{Figure, Row};
use crate::suite::{RowSpec, RunOpts, RunSize, Suite};
use crate::workload::applied;
use loadgen::{LoadGen, Pace, Plan, Tally};
use requests::{EachSlice, EventBatches, Fixed, RandomSlices, RequestSource};
use server::{with_server, Server};

/// Request latency figures.
const LATENCY: LatencyNames = crate::latency::PLAIN;

/// The `http` suite.
pub const SUITE: Suite = Suite {
    name: "http",
    about: "HTTP API: temporal slice and ping req/s and latency, batched JSON ingest",
    columns: &[
        "req_per_s",
        LATENCY.p50,
        LATENCY.p99,
        LATENCY.p999,
        LATENCY.max,
        "errors",
        "offered_per_s",
        "events_per_s",
        "lost",
        "vs_bare",
        "vs_pad",
        "vs_floor",
        "resp_bytes",
        "client_cpu",
        "gen_core",
    ],
    rows: &[
        RowSpec {
            name: "bare",
            run: run_bare,
        },
        RowSpec {
            name: "bare-pad",
            run: run_bare_pad,
        },
        RowSpec {
            name: "bare-10k",
            run: run_bare_10k,
        },
        RowSpec {
            name: "slice",
            run: run_slice,
        },
        RowSpec {
            name: "slice-10k",
            run: run_slice_10k,
        },
        RowSpec {
            name: "slice-50k",
            run: run_slice_50k,
        },
        RowSpec {
            name: "post-bare",
            run: run_post_bare,
        },
        RowSpec {
            name: "events-post",
            run: run_events,
        },
        RowSpec {
            name: "shm-floor",
            run: run_shm_floor,
        },
    ],
    peers: &[],
    finish: Some(server::shut_down),
};

/// The `bare` row's rate, for the `slice` row's `vs_bare`.
static BARE_REQ_PER_S: Mutex<Option<f64>> = Mutex::new(None);

/// The `bare-pad` row's rate, for the `slice` row's `vs_pad`.
static PAD_REQ_PER_S: Mutex<Option<f64>> = Mutex::new(None);

/// Pushes figure `name` = `rate` / the rate an earlier row of this run left in `floor`
/// (nothing when that row did not run).
fn push_ratio(
    figures: &mut Vec<Figure>,
    name: &'static str,
    rate: f64,
    floor: &Mutex<Option<f64>>,
) -> Result<(), BenchError> {
    let floor = *floor.lock().map_err(|_| BenchError::Setup("lock".into()))?;
    if let Some(floor) = floor {
        figures.push(Figure::real(name, rate / floor.max(1.0)));
    }
    Ok(())
}

/// The `post-bare` row's rate, for the `events-post` row's `vs_floor`.
static POST_BARE_EVENTS_PER_S: Mutex<Option<f64>> = Mutex::new(None);
/// Connections of the GET rows (as FLOORS measured hyper).
const GET_CONNECTIONS: usize = 64;
/// Events per `POST /events` request.
const BATCH_EVENTS: usize = 2_000;
/// Connections of the `events-post` row.
const POST_CONNECTIONS: usize = 4;

/// How long a row offers load, and how long it warms up first (connections open,
/// caches and the allocator settled), seconds.
fn seconds(size: RunSize) -> (f64, f64) {
    match size {
        RunSize::Full => (10.0, 2.0),
        RunSize::Quick => (4.0, 1.0),
        RunSize::Smoke => (0.2, 0.05),
    }
}

/// Connections, shrunk for `--smoke` (a debug daemon in a test).
fn connections(opts: &RunOpts, n: usize) -> usize {
    match opts.size {
        RunSize::Smoke => n.min(4),
        _ => n,
    }
}

/// How long a rate-controlled run waits for its backlog after the offered time: a server
/// that keeps up has none; one that does not would otherwise be waited out for as long
/// as it fell behind. What is left then counts as errors.
const RATE_DRAIN: Duration = Duration::from_secs(2);

fn plan(opts: &RunOpts, pace: Pace, warm: bool) -> Plan {
    let (run, warm_up) = seconds(opts.size);
    Plan {
        pace,
        duration: Duration::from_secs_f64(if warm { warm_up } else { run }),
        drain: match pace {
            Pace::Saturate => opts.peer_timeout,
            Pace::Rate(_) => RATE_DRAIN.min(opts.peer_timeout),
        },
    }
}

/// The generator's core: one neither the server's (`--client-core`) nor the hot shard's
/// (`--peer-core`) when the machine has one, else the server's (the hot core spins).
fn generator_core(opts: &RunOpts) -> usize {
    (0..crate::affinity::online_cores())
        .find(|c| *c != opts.client_core && *c != opts.peer_core)
        .unwrap_or(opts.client_core)
}

/// Warms up, then measures, with `source` over `connections` connections.
fn measure(
    server: &Server,
    opts: &RunOpts,
    connections: usize,
    pace: Pace,
    source: &mut dyn RequestSource,
) -> Result<Tally, BenchError> {
    crate::affinity::pin_current_thread(generator_core(opts))?;
    let mut gen = LoadGen::connect(server.addr, connections)?;
    gen.run(source, &plan(opts, pace, true))?;
    let tally = gen.run(source, &plan(opts, pace, false))?;
    if let Some(first) = &tally.first_error {
        eprint!("({} errors; the first: {first}) ", tally.errors);
    }
    if tally.ok == 0 {
        return Err(BenchError::Setup(format!(
            "no request succeeded: {}",
            tally.first_error.as_deref().unwrap_or("no response")
        )));
    }
    Ok(tally)
}

/// One request before the clock starts: the route answers 2xx (fail early and say why).
fn check(server: &Server, request: &[u8]) -> Result<usize, BenchError> {
    let (status, body) = loadgen::fetch(server.addr, request, Duration::from_secs(5))?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
        return Err(BenchError::Setup(format!("the route answered {status}: {text}")));
    }
    Ok(body.len())
}

/// The figures every row shares: rate, latencies, errors, the generator's core.
fn common(t: &Tally, opts: &RunOpts) -> Vec<Figure> {
    let mut figures = vec![Figure::real("req_per_s", t.per_s(t.ok))];
    figures.extend(t.latency.summary().figures(&LATENCY));
    figures.push(Figure::int("errors", t.errors));
    figures.push(Figure::int("gen_core", generator_core(opts) as u64));
    figures
}

fn run_bare(opts: &RunOpts) -> Result<Row, BenchError> {
    with_server(opts, |server| {
        check(server, &wire::get(wire::PING_PATH))?;
        let mut source = Fixed::get(wire::PING_PATH);
        let t = measure(
            server,
            opts,
            connections(opts, GET_CONNECTIONS),
            Pace::Saturate,
            &mut source,
        )?;
        *BARE_REQ_PER_S.lock().map_err(|_| BenchError::Setup("lock".into()))? = Some(t.per_s(t.ok));
        let mut figures = common(&t, opts);
        figures.push(Figure::real("resp_bytes", t.body_bytes as f64 / t.ok.max(1) as f64));
        figures.push(Figure::real("client_cpu", t.cpu_share()));
        Ok(Row::new("bare", figures).with_latency("latency", &t.latency.summary()))
    })
}

/// `bare` with an answer padded to the size of a slice's: what moving that answer costs
/// the server, the generator and the loopback, without the slice's work.
fn run_bare_pad(opts: &RunOpts) -> Result<Row, BenchError> {
    with_server(opts, |server| {
        let pong = check(server, &wire::get(wire::PING_PATH))?;
        let slice = check(server, &wire::get(&wire::slice_path(&crate::workload::node_id(0))))?;
        let path = format!("{}?pad={}", wire::PING_PATH, slice.saturating_sub(pong));
        let mut source = Fixed::get(&path);
        let t = measure(
            server,
            opts,
            connections(opts, GET_CONNECTIONS),
            Pace::Saturate,
            &mut source,
        )?;
        *PAD_REQ_PER_S.lock().map_err(|_| BenchError::Setup("lock".into()))? = Some(t.per_s(t.ok));
        let mut figures = common(&t, opts);
        push_ratio(&mut figures, "vs_bare", t.per_s(t.ok), &BARE_REQ_PER_S)?;
        figures.push(Figure::real("resp_bytes", t.body_bytes as f64 / t.ok.max(1) as f64));
        figures.push(Figure::real("client_cpu", t.cpu_share()));
        Ok(Row::new("bare-pad", figures).with_latency("latency", &t.latency.summary()))
    })
}

/// Asks for every node's slice once before a slice row measures, so that the row sees
/// the daemon's resident windows filled (as a service whose clients keep asking for the
/// same nodes has them), not the first read of each node from the store. Not measured.
fn prime_slices(server: &Server, opts: &RunOpts) -> Result<(), BenchError> {
    crate::affinity::pin_current_thread(generator_core(opts))?;
    let mut gen = LoadGen::connect(server.addr, connections(opts, GET_CONNECTIONS))?;
    let mut source = EachSlice::new(server.nodes);
    let step = Plan {
        pace: Pace::Saturate,
        duration: Duration::from_millis(250),
        drain: opts.peer_timeout,
    };
    let started = std::time::Instant::now();
    while !source.covered() {
        if started.elapsed() > opts.peer_timeout {
            return Err(BenchError::Timeout {
                waiting_for: "every node's slice once (priming)",
                timeout: opts.peer_timeout,
            });
        }
        gen.run(&mut source, &step)?;
    }
    eprint!(
        "(primed {} nodes in {:.1} s) ",
        server.nodes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `bare` offered at `slice-10k`'s rate: the latency floor of the paced rows on this
/// placement (generator, server and persistence sharing a core on two cores).
fn run_bare_10k(opts: &RunOpts) -> Result<Row, BenchError> {
    let rate = match opts.size {
        RunSize::Smoke => 10_000 / 25,
        _ => 10_000,
    };
    with_server(opts, |server| {
        let mut source = Fixed::get(wire::PING_PATH);
        let t = measure(
            server,
            opts,
            connections(opts, GET_CONNECTIONS),
            Pace::Rate(rate),
            &mut source,
        )?;
        let mut figures = common(&t, opts);
        figures.push(Figure::real("offered_per_s", rate as f64));
        figures.push(Figure::real("client_cpu", t.cpu_share()));
        Ok(Row::new("bare-10k", figures).with_latency("latency", &t.latency.summary()))
    })
}

fn run_slice(opts: &RunOpts) -> Result<Row, BenchError> {
    with_server(opts, |server| {
        check(server, &wire::get(&wire::slice_path(&crate::workload::node_id(0))))?;
        prime_slices(server, opts)?;
        let mut source = RandomSlices::new(server.nodes, 0x51CE);
        let t = measure(
            server,
            opts,
            connections(opts, GET_CONNECTIONS),
            Pace::Saturate,
            &mut source,
        )?;
        let mut figures = common(&t, opts);
        push_ratio(&mut figures, "vs_bare", t.per_s(t.ok), &BARE_REQ_PER_S)?;
        push_ratio(&mut figures, "vs_pad", t.per_s(t.ok), &PAD_REQ_PER_S)?;
        figures.push(Figure::real("resp_bytes", t.body_bytes as f64 / t.ok.max(1) as f64));
        figures.push(Figure::real("client_cpu", t.cpu_share()));
        Ok(Row::new("slice", figures).with_latency("latency", &t.latency.summary()))
    })
}

fn run_slice_10k(opts: &RunOpts) -> Result<Row, BenchError> {
    run_slice_rate(opts, "slice-10k", 10_000)
}

fn run_slice_50k(opts: &RunOpts) -> Result<Row, BenchError> {
    run_slice_rate(opts, "slice-50k", 50_000)
}

fn run_slice_rate(opts: &RunOpts, name: &str, rate: u64) -> Result<Row, BenchError> {
    let rate = match opts.size {
        RunSize::Smoke => rate / 25,
        _ => rate,
    };
    with_server(opts, |server| {
        prime_slices(server, opts)?;
        let mut source = RandomSlices::new(server.nodes, 0x50C0);
        let t = measure(
            server,
            opts,
            connections(opts, GET_CONNECTIONS),
            Pace::Rate(rate),
            &mut source,
        )?;
        let mut figures = common(&t, opts);
        figures.push(Figure::real("offered_per_s", rate as f64));
        figures.push(Figure::real("client_cpu", t.cpu_share()));
        Ok(Row::new(name, figures).with_latency("latency", &t.latency.summary()))
    })
}

/// Events per `POST` batch of a run of this size.
fn batch_events(opts: &RunOpts) -> usize {
    match opts.size {
        RunSize::Smoke => 100,
        _ => BATCH_EVENTS,
    }
}

fn run_post_bare(opts: &RunOpts) -> Result<Row, BenchError> {
    with_server(opts, |server| {
        let mut source = EventBatches::to_path(server.nodes, batch_events(opts), wire::PING_PATH);
        let mut probe = Vec::new();
        source.next(&mut probe);
        check(server, &probe)?;
        let t = measure(
            server,
            opts,
            connections(opts, POST_CONNECTIONS),
            Pace::Saturate,
            &mut source,
        )?;
        *POST_BARE_EVENTS_PER_S
            .lock()
            .map_err(|_| BenchError::Setup("lock".into()))? = Some(t.per_s(t.items));
        let mut figures = common(&t, opts);
        figures.push(Figure::real("events_per_s", t.per_s(t.items)));
        figures.push(Figure::real("client_cpu", t.cpu_share()));
        Ok(Row::new("post-bare", figures).with_latency("latency", &t.latency.summary()))
    })
}

fn run_events(opts: &RunOpts) -> Result<Row, BenchError> {
    with_server(opts, |server| {
        let mut source = EventBatches::new(server.nodes, batch_events(opts));
        let mut probe = Vec::new();
        source.next(&mut probe);
        check(server, &probe)?;
        let before = applied(&server.daemon.stats()?);
        crate::affinity::pin_current_thread(generator_core(opts))?;
        let mut gen = LoadGen::connect(server.addr, connections(opts, POST_CONNECTIONS))?;
        let warm = gen.run(&mut source, &plan(opts, Pace::Saturate, true))?;
        let t = gen.run(&mut source, &plan(opts, Pace::Saturate, false))?;
        if let Some(first) = &t.first_error {
            eprint!("({} errors; the first: {first}) ", t.errors);
        }
        // Every event answered 2xx (the probe, the warm-up's and the run's) must reach
        // reflex.
        let answered = source.batch() as u64 + warm.items + t.items;
        let lost = lost_events(server, before, answered, opts.peer_timeout)?;
        eprint!(
            "({} events per request, {} KiB) ",
            source.batch(),
            source.request_bytes() / 1024
        );
        let mut figures = common(&t, opts);
        figures.push(Figure::real("events_per_s", t.per_s(t.items)));
        figures.push(Figure::int("lost", lost));
        push_ratio(&mut figures, "vs_floor", t.per_s(t.items), &POST_BARE_EVENTS_PER_S)?;
        figures.push(Figure::real("client_cpu", t.cpu_share()));
        Ok(Row::new("events-post", figures).with_latency("latency", &t.latency.summary()))
    })
}

/// The `events-post` events through shared memory instead of HTTP and JSON: one
/// producer on the generator's core, saturating for the rows' time.
fn run_shm_floor(opts: &RunOpts) -> Result<Row, BenchError> {
    with_server(opts, |server| {
        let producer = rim_ring::attach::attach_producer(&server.daemon.socket(), "bench-http-floor", 1 << 24)
            .map_err(|e| BenchError::transport("rim-ring", "attach producer", e))?;
        let mut p = crate::workload::Publisher::new(producer)?;
        let before = applied(&server.daemon.stats()?);
        crate::affinity::pin_current_thread(generator_core(opts))?;
        let (run, warm_up) = seconds(opts.size);
        let mut seq = 0u64;
        publish_for(&mut p, server.nodes, Duration::from_secs_f64(warm_up), &mut seq)?;
        let started = std::time::Instant::now();
        let measured = publish_for(&mut p, server.nodes, Duration::from_secs_f64(run), &mut seq)?;
        let secs = started.elapsed().as_secs_f64();
        let lost = lost_events(server, before, seq, opts.peer_timeout)?;
        eprint!("(producer saw the ring full {} times) ", p.full_retries);
        let rate = measured as f64 / secs;
        let mut figures = vec![Figure::real("events_per_s", rate), Figure::int("lost", lost)];
        push_ratio(&mut figures, "vs_floor", rate, &POST_BARE_EVENTS_PER_S)?;
        figures.push(Figure::int("gen_core", generator_core(opts) as u64));
        Ok(Row::new("shm-floor", figures))
    })
}

/// Publishes events over `nodes` for `time`, each with a new `event_id` (`seq` counts
/// them across calls); how many.
fn publish_for(
    p: &mut crate::workload::Publisher,
    nodes: usize,
    time: Duration,
    seq: &mut u64,
) -> Result<u64, BenchError> {
    let started = std::time::Instant::now();
    let mut id = String::with_capacity(32);
    let mut n = 0u64;
    let mut ts = crate::workload::unix_ms();
    loop {
        // The clock once per 1,024 events, as the HTTP batches stamp one time per request.
        if n.is_multiple_of(1_024) {
            if started.elapsed() >= time {
                return Ok(n);
            }
            ts = crate::workload::unix_ms();
        }
        id.clear();
        std::fmt::Write::write_fmt(&mut id, format_args!("s{:012}", *seq))
            .map_err(|_| BenchError::Setup("id".into()))?;
        p.publish_full((*seq as usize) % nodes.max(1), 0.0, ts, 0, Some(&id))?;
        *seq += 1;
        n += 1;
    }
}

/// Events of `answered` that reflex has not applied since `before` once it settles.
fn lost_events(server: &Server, before: u64, answered: u64, timeout: Duration) -> Result<u64, BenchError> {
    let settled = server.daemon.wait_stats(timeout, |s| applied(s) >= before + answered);
    let now = match settled {
        Ok(s) => applied(&s),
        Err(_) => applied(&server.daemon.stats()?),
    };
    Ok(answered.saturating_sub(now.saturating_sub(before)))
}
