//! `rim-bench soak`: N SIGKILLs (default 1,000) of a real daemon at random moments under
//! mixed load (shared-memory producers and HTTP posts), with the ledger of events the
//! daemon acknowledged as durable checked after every kill: 0 lost, 0 duplicated after
//! de-duplication, no observed capsule counting more than the journal's events of its
//! window, and every decision hash chain verifying (checked on disk after every kill, and
//! by the daemon's `GET /decisions/verify` after the first restart, every hundredth and
//! the last). Each check reads only what the daemon wrote since the previous one. The kill
//! moments come from the seed, which is printed: the same seed replays the same
//! schedule (the machine's timing still decides where in its work each kill lands).
//!
//! A last life resends what was never acknowledged, waits until everything is, stops the
//! daemon with SIGTERM (exit 0) and checks everything once more, every capsule included.

mod check;
mod load;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use self::check::{CapsuleTally, ChainTally, JournalTally, Ledger};
use self::load::{Source, Target, Via};
use crate::daemon::DaemonProc;
use crate::error::BenchError;
use crate::report::{render_table, Figure, Report, Row};

/// The first argument that runs the soak.
pub const SOAK_SUBCOMMAND: &str = "soak";

/// `rim-bench soak`: SIGKILL a daemon under load, again and again, checking the ledger.
#[derive(Debug, Parser)]
#[command(name = "rim-bench soak")]
pub struct SoakCli {
    /// How many times the daemon is killed.
    #[arg(long, default_value_t = 1_000)]
    kills: usize,
    /// The seed of the kill moments (printed; pass it to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// Short lives: 5-120 ms of load before each kill (otherwise 5-500 ms).
    #[arg(long)]
    quick: bool,
    /// Shared-memory producer processes' worth of sources (threads, each its own ring).
    #[arg(long, default_value_t = 2)]
    producers: u64,
    /// Leave HTTP posts out of the load.
    #[arg(long)]
    no_http: bool,
    /// Also write the final row as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// The soak's rule: fires on one event in sixteen, no cooldown, so every life decides
/// and every shard's chain grows.
const RULES: &str = r#"
[[rule]]
id = "soak-load"
nodes = "rim:sensor:soak*"
when = "metric.load > 140"
severity = "low"
"#;

/// Settings of every life (the data directory is added per run): the crash test's
/// (dedup window, quick window closing, a checkpoint every 100 ms so kills fall on both
/// sides of one), event times of 2025 allowed, and no rate limit on the HTTP posts.
const SETS: &[&str] = &[
    "ingest.dedup_window=256",
    "persist.grace_ms=200",
    "persist.checkpoint_ms=100",
    "ingest.event_age_ms_max=0",
    "api.rate_command_per_min=0",
    "api.rate_query_per_min=0",
];

/// The table's columns.
const COLUMNS: &[&str] = &[
    "kills",
    "events",
    "acked",
    "lost",
    "duplicated",
    "chain_checks",
    "chain_breaks",
    "decisions",
    "decisions_verified",
    "capsules",
    "capsules_exact",
    "capsules_over",
    "ready_p50_ms",
    "ready_max_ms",
    "check_p50_ms",
    "check_max_ms",
    "elapsed_s",
];

/// The daemon's own verification runs after the first restart and every this many kills
/// (it reads every shard's chain from its first record).
const HTTP_VERIFY_EVERY: usize = 100;
/// How long a daemon may take to recover and answer.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the last life may take to get everything acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What the run found so far.
#[derive(Debug, Default)]
struct Totals {
    lost: u64,
    duplicated: u64,
    chain_checks: u64,
    chain_breaks: u64,
    decisions: u64,
    shards: u16,
    chain: ChainTally,
    capsules: CapsuleTally,
    ready_ms: Vec<u64>,
    check_ms: Vec<u64>,
    first_failure: Option<String>,
    last_failure: Option<String>,
    reported_dups: u64,
}

impl Totals {
    /// Records a failure; printed unless it repeats the previous one word for word.
    fn fail(&mut self, what: String) {
        if self.last_failure.as_deref() != Some(what.as_str()) {
            eprintln!("soak: FAILURE: {what}");
        }
        self.first_failure.get_or_insert_with(|| what.clone());
        self.last_failure = Some(what);
    }

    fn add_capsules(&mut self, c: CapsuleTally) {
        self.capsules.checked += c.checked;
        self.capsules.exact += c.exact;
        self.capsules.over += c.over;
    }
}

/// Runs the soak.
pub fn main(cli: &SoakCli) -> Result<(), BenchError> {
    let seed = cli.seed.unwrap_or_else(clock_seed);
    let quick = if cli.quick { " --quick" } else { "" };
    eprintln!(
        "soak: {} kills, seed {seed} (replay: rim-bench soak --kills {} --seed {seed}{quick})",
        cli.kills, cli.kills
    );
    let data = std::env::temp_dir().join(format!("rim-soak-{}", std::process::id()));
    std::fs::create_dir_all(&data).map_err(|source| BenchError::Io {
        what: "creating the soak's data directory",
        source,
    })?;
    let outcome = run(cli, seed, &data);
    let _ = std::fs::remove_dir_all(&data);
    outcome
}

fn run(cli: &SoakCli, seed: u64, data: &std::path::Path) -> Result<(), BenchError> {
    let sets = life_sets(data);
    let mut sources: Vec<Source> = (0..cli.producers).map(|i| Source::new(i, Via::Shm)).collect();
    if !cli.no_http {
        sources.push(Source::new(cli.producers, Via::Http));
    }
    let (lo_ms, hi_ms) = if cli.quick { (5, 120) } else { (5, 500) };
    let mut rng = Rng(seed);
    let mut tally = JournalTally::default();
    let mut ledger = Ledger::default();
    let mut totals = Totals::default();
    let started = Instant::now();
    for kill in 1..=cli.kills {
        let run_for = Duration::from_millis(lo_ms + rng.below(hi_ms - lo_ms));
        let verify = kill == 1 || kill % HTTP_VERIFY_EVERY == 0;
        one_life(&sets, &mut sources, &mut totals, run_for, verify)?;
        // The daemon is dead: the journal and the store are read as it left them.
        let t0 = Instant::now();
        let when = format!("after kill {kill}");
        let touched = tally.update(data)?;
        ledger.check(&tally, &mut sources);
        check_ledger(&tally, &ledger, &mut totals, &when, data);
        check_store(data, &tally, &touched, &mut totals, &when)?;
        totals.check_ms.push(t0.elapsed().as_millis() as u64);
        if kill % 10 == 0 || kill == cli.kills {
            progress(kill, cli.kills, &sources, &totals, started);
        }
    }
    last_life(&sets, &mut sources, &mut totals)?;
    let touched = tally.update(data)?;
    ledger.check(&tally, &mut sources);
    check_ledger(&tally, &ledger, &mut totals, "at the end", data);
    check_store(data, &tally, &touched, &mut totals, "at the end")?;
    let published: u64 = sources.iter().map(Source::published).sum();
    let acked: u64 = sources.iter().map(|s| s.acked).sum();
    if acked != published || tally.ids.len() as u64 != published {
        totals.fail(format!(
            "at the end: {published} events published, {acked} acknowledged, {} journaled",
            tally.ids.len()
        ));
    }
    let all = match check::open_store(data)? {
        Some(store) => check::capsules(&store, &tally, &check::all_nodes(&tally))?,
        None => CapsuleTally::default(),
    };
    if all.over > 0 {
        totals.fail(format!("at the end: {} capsules over-count", all.over));
    }
    let row = final_row(cli.kills, published, acked, &totals, all, started);
    print!("{}", render_table(COLUMNS, std::slice::from_ref(&row)));
    println!(
        "lost={} duplicated={} chains={} capsules_over={} seed={seed}",
        totals.lost,
        totals.duplicated,
        if totals.chain_breaks == 0 { "verified" } else { "BROKEN" },
        all.over
    );
    if let Some(path) = &cli.json {
        Report {
            suite: "soak",
            quick: cli.quick,
            results: std::slice::from_ref(&row),
        }
        .write_json(path)?;
    }
    match totals.first_failure {
        None => Ok(()),
        Some(what) => Err(BenchError::Integrity {
            what: format!("{what} (seed {seed})"),
        }),
    }
}

fn life_sets(data: &std::path::Path) -> Vec<String> {
    let mut sets: Vec<String> = SETS.iter().map(|s| (*s).to_owned()).collect();
    sets.push(format!("persist.data_dir=\"{}\"", data.display()));
    sets
}

/// Starts a daemon, has it verify its chains if `verify`, loads it for `run_for`, and
/// SIGKILLs it while the sources are still publishing.
fn one_life(
    sets: &[String],
    sources: &mut [Source],
    totals: &mut Totals,
    run_for: Duration,
    verify: bool,
) -> Result<(), BenchError> {
    let d = start(sets, totals)?;
    let socket = d.socket();
    let http = http_addr(&d)?;
    if verify {
        check_chains(http, totals);
    }
    let target = Target { socket: &socket, http };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for src in sources.iter_mut() {
            let (target, stop) = (&target, &stop);
            s.spawn(move || load::run_life(src, target, stop, true));
        }
        std::thread::sleep(run_for);
        d.kill9();
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

/// The last life: resend what is left until all is acknowledged, then SIGTERM.
fn last_life(sets: &[String], sources: &mut [Source], totals: &mut Totals) -> Result<(), BenchError> {
    let d = start(sets, totals)?;
    let socket = d.socket();
    let http = http_addr(&d)?;
    check_chains(http, totals);
    let target = Target { socket: &socket, http };
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    std::thread::scope(|s| {
        let workers: Vec<_> = sources
            .iter_mut()
            .map(|src| {
                let (target, stop) = (&target, &stop);
                s.spawn(move || load::run_life(src, target, stop, false))
            })
            .collect();
        while workers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    check_chains(http, totals);
    d.stop()
}

fn start(sets: &[String], totals: &mut Totals) -> Result<DaemonProc, BenchError> {
    let t0 = Instant::now();
    let d = DaemonProc::start(RULES, sets, START_TIMEOUT)?;
    totals.ready_ms.push(t0.elapsed().as_millis() as u64);
    Ok(d)
}

/// The daemon's HTTP address, from `{run_dir}/http.addr`.
fn http_addr(d: &DaemonProc) -> Result<std::net::SocketAddr, BenchError> {
    let path = d.run_dir.join("http.addr");
    let t0 = Instant::now();
    loop {
        if let Some(addr) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()) {
            return Ok(addr);
        }
        if t0.elapsed() > START_TIMEOUT {
            return Err(BenchError::Timeout {
                waiting_for: "the daemon's http.addr",
                timeout: START_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check_chains(http: std::net::SocketAddr, totals: &mut Totals) {
    totals.chain_checks += 1;
    // A verification that did not answer (a loaded machine) is asked once more before it
    // counts: unverified is a failure, but a slow answer is not a break.
    match check::chains(http).or_else(|_| check::chains(http)) {
        Ok((true, records, shards, _)) => {
            totals.decisions = totals.decisions.max(records);
            totals.shards = totals.shards.max(shards);
        }
        Ok((false, _, _, body)) => {
            totals.chain_breaks += 1;
            totals.fail(format!("a decision hash chain does not verify: {body}"));
        }
        Err(e) => {
            totals.chain_breaks += 1;
            totals.fail(format!("chain verification failed: {e}"));
        }
    }
}

fn check_ledger(tally: &JournalTally, ledger: &Ledger, totals: &mut Totals, when: &str, data: &std::path::Path) {
    totals.lost = ledger.lost.len() as u64;
    totals.duplicated = tally.dups.len() as u64;
    if let Some(&id) = ledger.lost.first() {
        totals.fail(format!(
            "{when}: {} acknowledged events lost, e.g. {}",
            ledger.lost.len(),
            check::describe(id)
        ));
    }
    // Reported when their number grows, with where the journal holds the first copies.
    if let (Some(&id), true) = (tally.dups.first(), totals.duplicated > totals.reported_dups) {
        totals.reported_dups = totals.duplicated;
        totals.fail(format!(
            "{when}: {} events journaled twice, e.g. {} at (position, received_ms) {:?}",
            totals.duplicated,
            check::describe(id),
            check::occurrences(data, id)
        ));
    }
}

/// The store as the daemon left it: the chains' new records, and the observed capsules of
/// the windows that gained events.
fn check_store(
    data: &std::path::Path,
    tally: &JournalTally,
    touched: &std::collections::HashMap<String, i64>,
    totals: &mut Totals,
    when: &str,
) -> Result<(), BenchError> {
    let Some(store) = check::open_store(data)? else {
        return Ok(());
    };
    let shards = totals.shards.max(1);
    totals.chain_checks += 1;
    if let Some(why) = totals.chain.update(&check::decision_log(data, store.clone()), shards)? {
        totals.chain_breaks += 1;
        totals.fail(format!("{when}: a decision hash chain does not verify: {why}"));
    }
    totals.add_capsules(check::capsules(&store, tally, touched)?);
    if totals.capsules.over > 0 {
        totals.fail(format!("{when}: {} capsules over-count", totals.capsules.over));
    }
    Ok(())
}

fn progress(kill: usize, kills: usize, sources: &[Source], totals: &Totals, started: Instant) {
    let published: u64 = sources.iter().map(Source::published).sum();
    let acked: u64 = sources.iter().map(|s| s.acked).sum();
    let (p50, max) = ready(&totals.ready_ms);
    let last_checks = &totals.check_ms[totals.check_ms.len().saturating_sub(10)..];
    let (check_p50, check_max) = ready(last_checks);
    eprintln!(
        "soak: kill {kill}/{kills}: events {published} acked {acked} lost={} duplicated={} chains {} ({} breaks, \
         {} records) capsules {} over {} ready p50 {p50} ms max {max} ms, checks p50 {check_p50} ms max \
         {check_max} ms (last 10), {:.0} s",
        totals.lost,
        totals.duplicated,
        if totals.chain_breaks == 0 { "ok" } else { "BROKEN" },
        totals.chain_breaks,
        totals.chain.records,
        totals.capsules.checked,
        totals.capsules.over,
        started.elapsed().as_secs_f64()
    );
}

fn final_row(kills: usize, published: u64, acked: u64, t: &Totals, all: CapsuleTally, started: Instant) -> Row {
    let (p50, max) = ready(&t.ready_ms);
    let (check_p50, check_max) = ready(&t.check_ms);
    Row::new(
        "soak",
        vec![
            Figure::int("kills", kills as u64),
            Figure::int("events", published),
            Figure::int("acked", acked),
            Figure::int("lost", t.lost),
            Figure::int("duplicated", t.duplicated),
            Figure::int("chain_checks", t.chain_checks),
            Figure::int("chain_breaks", t.chain_breaks),
            Figure::int("decisions", t.decisions),
            Figure::int("decisions_verified", t.chain.records),
            Figure::int("capsules", all.checked),
            Figure::int("capsules_exact", all.exact),
            Figure::int("capsules_over", all.over),
            Figure::int("ready_p50_ms", p50),
            Figure::int("ready_max_ms", max),
            Figure::int("check_p50_ms", check_p50),
            Figure::int("check_max_ms", check_max),
            Figure::real("elapsed_s", started.elapsed().as_secs_f64()),
        ],
    )
}

/// Median and maximum of the start-to-ready times.
fn ready(ms: &[u64]) -> (u64, u64) {
    let mut v = ms.to_vec();
    v.sort_unstable();
    (v.get(v.len() / 2).copied().unwrap_or(0), v.last().copied().unwrap_or(0))
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// splitmix64: the kill schedule, from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
