//! Assembles the daemon from its configuration and runs it until SIGTERM/SIGINT.
//!
//! Threads (the 2-core default):
//! - `rimd-hot` on `topology.hot_core`: a glommio executor whose one task busy-polls
//!   ingest and reflex shard 0;
//! - `rimd-reflex-K` on `topology.reflex_cores[K-1]`: the same for reflex shard K (only
//!   with more than one shard);
//! - the main thread, on `topology.cold_core`: a glommio executor for the control plane
//!   (stats, rule reloads, reclaiming rings), asleep between timers;
//! - `rimd-attach`, also on the cold core: the control socket, asleep in `poll(2)`;
//! - `rimd-journal` and `rimd-store`, also on the cold core: the journal (append, group
//!   commit, roll-ups) and the redb writer ([`crate::persist`]).
//!
//! Start: the journal and the store are opened and recovered (torn tails cut, state
//! rebuilt from the journal since the store's watermarks) before any producer attaches.
//!
//! Shutdown: the signal sets a flag; attach stops taking producers; the hot shards drain
//! every ring they own until empty (bounded by [`DRAIN_DEADLINE`]), send a final report,
//! and hand their rings back; the journal thread drains, syncs and hands its last batch
//! to the store writer, which commits it; the cold shard publishes a final stats snapshot with
//! `running = false`, and `rimd` exits 0. A hot shard that has not ended
//! [`SHUTDOWN_DEADLINE`] after the signal is left behind: the rest shuts down as above and
//! `rimd` exits 1 naming it, so SIGTERM always ends the process.
//!
//! A dead shard is never a zombie: a panic on any of the daemon's threads (but the Kafka
//! bridge's, where the client library's panics on hostile headers are caught by design)
//! ends the process with code [`EXIT_PANIC`] and a message naming the thread, and
//! readiness names a hot shard whose loop stopped turning ([`crate::agent::ShardBeat`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use rim_ring::{broadcast, clock::monotonic_ns, Segment};
use rim_rules::{Limits, RuleSet};
use rim_stats::ColdEnd;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::agent::{pin, BeatState, Idle, OnDrop, ShardBeat, Turns};
use crate::api::context::QUERIES_IN_FLIGHT;
use crate::config::Config;
use crate::ingest::{self, attach, Ingest, IngestSetup, Retired};
use crate::plane::{ReplaceError, RulePlane, RulesSource};
use crate::reflex::query::{query_rings, QueryClient, QueryPort};
use crate::reflex::{self, state::Shape, Compiled, Reflex, ReflexSetup};
use crate::report::{Report, Reporter};
use crate::rulebook::RuleBook;
use crate::stats::Aggregator;
use crate::tick::Slot;

/// Longest the hot shards keep draining at shutdown.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Longest the daemon waits for its hot shards to end after the stop signal (their drain,
/// final reports and the producers' last durable positions take at most ~11 s).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);
/// Exit code when a daemon thread panicked (EX_SOFTWARE): a restart recovers from the
/// journal, as after a crash.
pub const EXIT_PANIC: i32 = 70;
/// Upkeep period of the hot shards.
const UPKEEP_NS: u64 = 1_000_000;
/// Records a reflex duty takes per turn.
const REFLEX_BATCH: usize = 4096;
/// Stage latencies are sampled for one event in this many.
const SAMPLE_EVERY: u64 = 8;

/// Why the daemon could not start or stopped badly.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// A file or socket operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The rule file does not compile (start-up refuses it; reloads keep the old set).
    #[error("rule file {path} does not compile:\n{errors}")]
    Rules {
        /// The file.
        path: String,
        /// The compile errors, one per line.
        errors: String,
    },
    /// The rule book (the installed rule sets, in the data directory) could not be read
    /// or written.
    #[error("{0}")]
    RuleBook(#[from] crate::rulebook::RuleBookError),
    /// A ring could not be set up.
    #[error("ring setup: {0}")]
    Ring(String),
    /// The control socket could not be opened.
    #[error("control socket {path}: {message}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A thread or executor failed.
    #[error("{0}")]
    Thread(String),
    /// The journal or the store could not be opened, recovered or started.
    #[error("persist: {0}")]
    Persist(#[from] crate::persist::PersistError),
    /// Hot shards did not end after the stop signal; the daemon exits without them.
    #[error(
        "hot shard(s) {shards} did not stop within {SHUTDOWN_DEADLINE:?} of the stop signal; exiting without them (a restart recovers from the journal)"
    )]
    ShardsStuck {
        /// Their names and states.
        shards: String,
    },
    /// Another daemon holds the run directory.
    #[error(
        "another rimd (pid {pid}) is running with run directory {run_dir}; stop it or choose another daemon.run_dir"
    )]
    AlreadyRunning {
        /// The directory.
        run_dir: PathBuf,
        /// The pid written in its lock file ("?" if unreadable).
        pid: String,
    },
}

impl DaemonError {
    /// Whether the operator's input (rule file) is at fault rather than the machine.
    pub fn is_configuration(&self) -> bool {
        matches!(self, DaemonError::Rules { .. })
            || matches!(self, DaemonError::Io { what, .. } if what.contains("rule file"))
    }
}

/// The reflex state's shape the configuration asks for (the daemon's shards and a
/// backtest's use the same, so evidence values agree).
pub fn shape(config: &Config) -> Shape {
    Shape {
        nodes: config.reflex.nodes_max,
        series: config.reflex.series_per_node,
        points: config.reflex.window_points,
        step_ms: config.reflex.window_step_ms,
        alpha: config.reflex.ewma_alpha,
        zscore_min: config.reflex.zscore_min_samples,
    }
}

/// The rules compiled in when no file is configured.
pub const DEFAULT_RULES: &str = include_str!("../config/default-rules.toml");

/// Rule-compile limits from the configuration.
pub fn limits(config: &Config) -> Limits {
    Limits {
        rules_max: config.reflex.rules_max,
        window_min_ms: config.reflex.window_step_ms,
        window_max_ms: config.window_max_ms(),
        stale_rules_max: 64,
    }
}

/// The rule text in force at start: the configured file, or the embedded defaults.
pub fn read_rules(config: &Config) -> Result<(String, String), DaemonError> {
    let path = &config.reflex.rules_file;
    if path.as_os_str().is_empty() {
        return Ok(("(embedded default rules)".into(), DEFAULT_RULES.to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| DaemonError::Io {
        what: "cannot read rule file",
        path: path.clone(),
        source,
    })?;
    Ok((path.display().to_string(), text))
}

/// The format of a rule file, by its name: `json` for `*.json`, else `toml`.
pub fn rules_format(origin: &str) -> &'static str {
    if origin.ends_with(".json") {
        "json"
    } else {
        "toml"
    }
}

/// Compiles rule text from `origin` (its format by [`rules_format`]), rendering errors one
/// per line.
pub fn compile(text: &str, origin: &str, config: &Config, previous: Option<&RuleSet>) -> Result<RuleSet, String> {
    compile_as(text, rules_format(origin), config, previous).map_err(|errs| errs.to_string())
}

/// Compiles rule text in `format` (`json`, else TOML).
pub fn compile_as(
    text: &str,
    format: &str,
    config: &Config,
    previous: Option<&RuleSet>,
) -> Result<RuleSet, rim_rules::CompileErrors> {
    match format {
        "json" => rim_rules::compile_json(text, &limits(config), previous),
        _ => rim_rules::compile_toml(text, &limits(config), previous),
    }
}

/// Everything one hot shard thread owns.
struct HotShard {
    name: String,
    core: usize,
    ingest: Option<Ingest>,
    reflex: Reflex,
}

/// Runs the daemon until a signal stops it.
pub fn run(config: Config) -> Result<(), DaemonError> {
    run_with(config, Arc::new(AtomicBool::new(false)))
}

/// Runs the daemon until a signal (or `stop`) stops it; SIGTERM/SIGINT set `stop`, so
/// threads started beside the daemon can watch the same flag.
pub fn run_with(config: Config, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let reload = Arc::new(AtomicBool::new(false));
    register_signals(&stop, &reload)?;
    exit_on_panic();
    crate::sys::make_undumpable().map_err(|source| DaemonError::Io {
        what: "cannot make the process non-dumpable (prctl PR_SET_DUMPABLE)",
        path: PathBuf::from("(prctl)"),
        source,
    })?;
    crate::memory::set_prefault(config.reflex.prefault);
    crate::sys::keep_freed_memory();
    prepare_run_dir(&config)?;
    // Held until return: a second daemon on this directory would take over the socket and
    // the stats segment of the first.
    let _lock = lock_run_dir(&config)?;

    let t = &config.topology;
    let shards = t.reflex_shards;
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);

    // Rings between the parts.
    let mut ticks_tx = Vec::new();
    let mut ticks_rx = Vec::new();
    for _ in 0..shards {
        let (mut tx, mut rx) = rtrb::RingBuffer::<Slot>::new(config.ingest.reflex_ring_slots);
        prefault(&mut tx, &mut rx);
        ticks_tx.push(tx);
        ticks_rx.push(rx);
    }
    let (control_tx, control_rx) = rtrb::RingBuffer::new(config.ingest.producers_max.max(16));
    let (retired_tx, retired_rx) = rtrb::RingBuffer::<Retired>::new(config.ingest.producers_max.max(16) * 2);

    // Durability: open and cut the journal, open the store, before anything attaches.
    let mut opened = if config.persist.enabled {
        Some(crate::persist::open(&config)?)
    } else {
        None
    };
    // Rules: the rule book's last set, or the rule file when it changed since (the book
    // lives in the data directory, opened under its lock).
    let (rules_origin, rules_text) = read_rules(&config)?;
    let mut book = match opened.as_ref() {
        Some(_) => RuleBook::open(&config.persist.data_dir)?,
        None => RuleBook::in_memory(),
    };
    let file_source = RulesSource {
        origin: rules_origin.clone(),
        format: rules_format(&rules_origin),
        text: rules_text.clone(),
    };
    let initial_rules = crate::plane::initial(&config, &mut book, file_source).map_err(|e| match e {
        crate::plane::InitialError::Compile(errors) => DaemonError::Rules {
            path: rules_origin.clone(),
            errors,
        },
        crate::plane::InitialError::Book(e) => DaemonError::RuleBook(e),
    })?;
    let compiled = initial_rules.compiled.clone();
    info!(rules = compiled.set.len(), generation = compiled.set.generation(), origin = %initial_rules.source.origin, "rules in force");
    let durable_marker = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let journal_wake = Arc::new(crate::persist::wake::Wake::new());
    let durable_seqs: Vec<Arc<std::sync::atomic::AtomicU64>> = (0..shards)
        .map(|_| Arc::new(std::sync::atomic::AtomicU64::new(0)))
        .collect();
    let (journal_out, journal_in) = if opened.is_some() {
        let (tx, rx) = rtrb::RingBuffer::<u8>::new(config.persist.journal_ring_bytes);
        (
            Some(ingest::JournalOut {
                ring: tx,
                wake: journal_wake.clone(),
                durable_marker: durable_marker.clone(),
            }),
            Some(rx),
        )
    } else {
        (None, None)
    };
    let mut persist_rx = Vec::new();

    let (ingest_reporter, ingest_reports) = Reporter::new(ingest::C_COUNT, 0);
    let ingest_duty = Ingest::new(IngestSetup {
        nodes_max: config.reflex.nodes_max,
        partitions: t.partitions,
        outs: ticks_tx,
        budget: config.ingest.poll_budget,
        dedup_window: config.ingest.dedup_window,
        producers_max: config.ingest.producers_max,
        sample_every: SAMPLE_EVERY,
        control: control_rx,
        retired: retired_tx,
        reporter: ingest_reporter,
        journal: journal_out,
        bounds: config.time_bounds(),
    });

    let shape = shape(&config);
    // Live-state queries from the HTTP thread, one pair of rings per shard.
    let (query_clients, mut query_ports): (Vec<QueryClient>, Vec<Option<QueryPort>>) = if config.api.enabled {
        (0..shards)
            .map(|_| {
                let (c, p) = query_rings(QUERIES_IN_FLIGHT);
                (c, Some(p))
            })
            .unzip()
    } else {
        (Vec::new(), Vec::new())
    };
    let mut decision_segments = Vec::new();
    let mut reflex_reports: Vec<ColdEnd<Report>> = Vec::new();
    let mut rules_in = Vec::new();
    let mut rules_back = Vec::new();
    let mut hot = Vec::new();
    let mut ingest_slot = Some(ingest_duty);
    for (k, input) in ticks_rx.into_iter().enumerate() {
        let seg = decision_segment(&config, k)?;
        let writer = broadcast::Writer::open(seg.clone()).map_err(|e| DaemonError::Ring(e.to_string()))?;
        decision_segments.push(seg);
        let (reporter, cold) = Reporter::new(reflex::C_COUNT, config.reflex.rules_max);
        reflex_reports.push(cold);
        let (rtx, rrx) = rtrb::RingBuffer::new(4);
        let (btx, brx) = rtrb::RingBuffer::new(16);
        rules_in.push(rtx);
        rules_back.push(brx);
        let persist = opened.as_ref().map(|_| {
            let (tx, rx) = rtrb::RingBuffer::<u8>::new(config.persist.reflex_ring_bytes);
            persist_rx.push(rx);
            reflex::PersistOut {
                ring: tx,
                durable_seq: durable_seqs[k].clone(),
                resolutions: if config.persist.predict {
                    config.persist.resolutions.clone()
                } else {
                    Vec::new()
                },
            }
        });
        let duty = Reflex::new(ReflexSetup {
            shard: k as u32,
            input,
            shape,
            rules_max: config.reflex.rules_max,
            cooldown_slots: config.reflex.cooldown_slots,
            out: writer,
            rules: compiled.clone(),
            rules_in: rrx,
            rules_out: btx,
            reporter,
            sweep_ms: config.reflex.stale_sweep_ms,
            epoch,
            resume: None,
            persist,
            queries: query_ports.get_mut(k).and_then(Option::take),
        });
        let (name, core) = if k == 0 {
            ("rimd-hot".to_owned(), t.hot_core)
        } else {
            (format!("rimd-reflex-{k}"), t.reflex_cores[k - 1])
        };
        hot.push(HotShard {
            name,
            core,
            ingest: if k == 0 { ingest_slot.take() } else { None },
            reflex: duty,
        });
    }

    let beats: Arc<Vec<ShardBeat>> = Arc::new(hot.iter().map(|h| ShardBeat::new(h.name.clone())).collect());
    let plane = Arc::new(RulePlane::new(config.clone(), initial_rules, book, rules_in));

    let registry = Arc::new(attach::Registry::default());
    let mut control_tx = control_tx;
    let intake = |name: &str, control: &mut rtrb::Producer<ingest::Control>| {
        attach::local_intake(name, config.ingest.intake_ring_bytes, &registry, control).map_err(DaemonError::Ring)
    };
    let api_intake = if config.api.enabled {
        Some(intake("http", &mut control_tx)?)
    } else {
        None
    };
    let bridge_intake = if config.bridge.enabled {
        Some(intake("kafka", &mut control_tx)?)
    } else {
        None
    };
    // The HTTP API starts before recovery, so that liveness answers during a long replay
    // and readiness says why it is not ready yet.
    let running = Arc::new(AtomicUsize::new(0));
    let mut side_threads = Vec::new();
    let mut http_addr = None;
    let bridge_health: Option<Arc<crate::bridge::BridgeHealth>> = bridge_intake
        .as_ref()
        .map(|_| Arc::new(crate::bridge::BridgeHealth::new()));
    if let Some(producer) = api_intake {
        let parts = crate::api::context::ContextParts {
            config: config.clone(),
            store: opened.as_ref().map(|o| o.store.clone()),
            producer: Some(producer),
            decisions: decision_segments.clone(),
            queries: query_clients,
            plane: plane.clone(),
            persist: opened.as_ref().map(|o| o.stats.clone()),
            beats: beats.clone(),
            shards,
            bridge: bridge_health.clone().map(|h| h as Arc<dyn crate::api::context::Health>),
        };
        let (thread, addr) = spawn_api(parts, stop.clone(), t.pin.then_some(t.cold_core))?;
        side_threads.push(thread);
        http_addr = Some(addr);
    }

    // Recovery: replay the journal since the watermarks into ingest (node table, dedup)
    // and the reflex shards (state), on this thread, before the shards start.
    let persist_stop = Arc::new(AtomicBool::new(false));
    let mut persist_threads = Vec::new();
    let mut persist_stats = None;
    let mut store = None;
    if let (Some(mut o), Some(journal_rx)) = (opened.take(), journal_in) {
        let mut ingest_duty = hot[0].ingest.take();
        if let Some(ingest_duty) = ingest_duty.as_mut() {
            let mut reflexes: Vec<&mut Reflex> = hot.iter_mut().map(|h| &mut h.reflex).collect();
            crate::persist::recover(&mut o, ingest_duty, &mut reflexes)?;
        }
        hot[0].ingest = ingest_duty;
        // Each chain continues after its last durable decision (the sequence numbers a
        // subscriber may have seen and lost are skipped).
        for (k, h) in hot.iter_mut().enumerate() {
            if let Some(chain) = o.chains.get_mut(k).and_then(Option::take) {
                durable_seqs[k].store(chain.last_seq(), Ordering::Release);
                h.reflex.resume_chain(chain);
            }
        }
        o.stats.ready.store(1, Ordering::Relaxed);
        store = Some(o.store.clone());
        persist_stats = Some(o.stats.clone());
        persist_threads = crate::persist::spawn(
            o,
            crate::persist::JournalInputs {
                ingest: journal_rx,
                reflex: persist_rx,
                durable_marker,
                durable_seqs,
                wake: journal_wake,
            },
            persist_stop.clone(),
            t.pin.then_some(t.cold_core),
        )?;
    }

    let socket = config.socket_path();
    let listener = rim_ring::attach::listen(&socket).map_err(|e| DaemonError::Socket {
        path: socket.clone(),
        message: e.to_string(),
    })?;
    let attach_thread = attach::spawn(attach::AttachSetup {
        listener,
        limits: attach::Limits::from_config(&config.ingest),
        control: control_tx,
        registry: registry.clone(),
        decisions: decision_segments.clone(),
        stop: stop.clone(),
        core: t.pin.then_some(t.cold_core),
    })
    .map_err(|e| DaemonError::Thread(format!("cannot start the attach thread: {e}")))?;

    running.store(hot.len(), Ordering::SeqCst);
    let mut threads = Vec::new();
    for (k, shard) in hot.into_iter().enumerate() {
        threads.push(spawn_hot(
            shard,
            &config,
            stop.clone(),
            running.clone(),
            (beats.clone(), k),
        )?);
    }
    if let (Some(producer), Some(health)) = (bridge_intake, bridge_health) {
        side_threads.extend(spawn_bridge(&config, producer, store.clone(), stop.clone(), health)?);
    }
    info!(
        socket = %socket.display(),
        stats = %config.stats_path().display(),
        shards,
        partitions = t.partitions,
        hot_core = t.hot_core,
        cold_core = t.cold_core,
        "rimd running"
    );

    let mut aggregator =
        Aggregator::new(&config, registry.clone(), decision_segments).map_err(|e| DaemonError::Ring(e.to_string()))?;
    if let Some(stats) = persist_stats.clone() {
        aggregator.attach_persist(stats);
    }
    let cold = ColdShard {
        config: config.clone(),
        stop: stop.clone(),
        reload,
        running: running.clone(),
        aggregator,
        ingest_reports,
        reflex_reports,
        retired: retired_rx,
        rules_back,
        registry,
        plane: plane.clone(),
        reported_generation: plane.current().set.generation(),
        rules_tried: rules_text,
        rules_read_error: None,
    };
    let cold_result = run_cold(cold, &config);

    stop.store(true, Ordering::SeqCst);
    let stuck = stuck_shards(&beats);
    if stuck.is_empty() {
        for th in threads {
            if th.join().is_err() {
                error!("a hot shard thread panicked");
            }
        }
    } else {
        // Joining would wait forever: leave them; everything else stops as usual.
        error!(shards = %stuck, "hot shards did not stop; exiting without them");
    }
    let _ = attach_thread.join();
    if let Some(addr) = http_addr {
        wake_http(addr);
    }
    join_side_threads(side_threads);
    // The hot shards are drained: the journal thread drains what they sent, syncs, and
    // hands its last batch to the writer.
    persist_stop.store(true, Ordering::SeqCst);
    for th in persist_threads {
        if th.join().is_err() {
            error!("a persist thread panicked");
        }
    }
    let _ = std::fs::remove_file(&socket);
    cold_result?;
    if !stuck.is_empty() {
        return Err(DaemonError::ShardsStuck { shards: stuck });
    }
    info!("rimd stopped");
    Ok(())
}

/// The hot shards whose threads have not ended, with their states ("" when none).
fn stuck_shards(beats: &[ShardBeat]) -> String {
    let now = monotonic_ns();
    beats
        .iter()
        .filter_map(|b| match b.state(now, u64::MAX) {
            BeatState::Ended => None,
            s => Some(format!("{} ({s})", b.name())),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes a panic on any daemon thread end the process (code [`EXIT_PANIC`]) after the
/// standard message, instead of leaving a dead thread behind a live process (a hot shard
/// that panicked would otherwise leave readiness, liveness and the socket answering while
/// nothing is consumed). The Kafka bridge's threads are the exception: the client library
/// panics on a header name that is not UTF-8, any Kafka producer can send one, and the
/// bridge catches that panic and treats the headers as absent.
fn exit_on_panic() {
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        standard(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("(unnamed)");
        // A backtest thread holds no daemon state: its job fails (caught there), the
        // daemon runs on.
        if name.starts_with("rimd-kafka") || name == crate::api::backtests::THREAD_NAME {
            return;
        }
        error!(
            thread = name,
            "a daemon thread panicked: rimd exits (code {EXIT_PANIC}); a restart recovers from the journal"
        );
        eprintln!(
            "rimd: thread {name} panicked; exiting (code {EXIT_PANIC}) so that a restart recovers from the journal"
        );
        std::process::exit(EXIT_PANIC);
    }));
}

/// Starts the HTTP API's thread (returns once it is listening).
fn spawn_api(
    parts: crate::api::context::ContextParts,
    stop: Arc<AtomicBool>,
    core: Option<usize>,
) -> Result<(std::thread::JoinHandle<()>, std::net::SocketAddr), DaemonError> {
    crate::api::server::spawn(parts, stop, core).map_err(|e| DaemonError::Thread(format!("HTTP API: {e}")))
}

/// Wakes the HTTP thread at shutdown with a connection of our own: it completes the accept
/// the thread waits on, and the accept loop then sees the stop flag. Its 50 ms stop poll
/// is a glommio timer, and once in a clean-clone CI run the thread slept in `io_uring_enter`
/// with no timeout for 14 minutes past the stop (interrupting the call released it).
fn wake_http(addr: std::net::SocketAddr) {
    let target = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        ip if ip.is_unspecified() => std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    };
    let _ = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200));
}

/// Joins `threads`, leaving behind (and naming in the log) those not finished within
/// [`SHUTDOWN_DEADLINE`]: a side thread that does not stop must not keep the process
/// alive.
fn join_side_threads(threads: Vec<std::thread::JoinHandle<()>>) {
    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    for th in threads {
        while !th.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !th.is_finished() {
            let name = th.thread().name().unwrap_or("?").to_owned();
            error!(thread = %name, "a side thread did not stop within {SHUTDOWN_DEADLINE:?}; exiting without it");
            continue;
        }
        if th.join().is_err() {
            error!("an API or bridge thread panicked");
        }
    }
}

/// Starts the Kafka bridge's threads (on the cold core).
fn spawn_bridge(
    config: &Config,
    producer: rim_ring::Producer,
    store: Option<Arc<rim_capsule::Store>>,
    stop: Arc<AtomicBool>,
    health: Arc<crate::bridge::BridgeHealth>,
) -> Result<Vec<std::thread::JoinHandle<()>>, DaemonError> {
    crate::bridge::spawn(crate::bridge::BridgeSetup {
        config: config.bridge.clone(),
        producer,
        durable: config.persist.enabled,
        log: store.map(|s| crate::persist::audit::DecisionLog::new(&config.persist.journal_dir(), s)),
        stop,
        health,
        core: config.topology.pin.then_some(config.topology.cold_core),
        bounds: config.time_bounds(),
    })
    .map_err(|e| DaemonError::Thread(format!("Kafka bridge: {e}")))
}

/// Writes and reads every slot once, so the ring's pages are resident before the first
/// event instead of faulting in on the hot path.
fn prefault(tx: &mut rtrb::Producer<Slot>, rx: &mut rtrb::Consumer<Slot>) {
    let n = tx.slots();
    if let Ok(chunk) = tx.write_chunk_uninit(n) {
        chunk.fill_from_iter(std::iter::repeat([0u64; 4]));
    }
    if let Ok(chunk) = rx.read_chunk(n) {
        chunk.commit_all();
    }
}

fn register_signals(stop: &Arc<AtomicBool>, reload: &Arc<AtomicBool>) -> Result<(), DaemonError> {
    let io = |source| DaemonError::Io {
        what: "cannot install a signal handler",
        path: PathBuf::from("(signals)"),
        source,
    };
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).map_err(io)?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone()).map_err(io)?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()).map_err(io)?;
    Ok(())
}

fn prepare_run_dir(config: &Config) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = &config.daemon.run_dir;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DaemonError::Io {
                what: "cannot create run directory",
                path: dir.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Takes `{run_dir}/rimd.lock` (an advisory lock the kernel drops when the process dies,
/// so a crashed daemon never leaves it held) and writes this pid into it.
fn lock_run_dir(config: &Config) -> Result<std::fs::File, DaemonError> {
    let path = config.daemon.run_dir.join("rimd.lock");
    match crate::lockfile::try_lock(&path) {
        Ok(crate::lockfile::Lock::Held(file)) => Ok(file),
        Ok(crate::lockfile::Lock::Busy(pid)) => Err(DaemonError::AlreadyRunning {
            run_dir: config.daemon.run_dir.clone(),
            pid,
        }),
        Err(source) => Err(DaemonError::Io {
            what: "cannot lock",
            path,
            source,
        }),
    }
}

fn decision_segment(config: &Config, shard: usize) -> Result<Arc<Segment>, DaemonError> {
    let d = &config.decisions;
    let bytes = broadcast::segment_bytes(d.slots, d.slot_bytes).map_err(|e| DaemonError::Ring(e.to_string()))?;
    let seg = Segment::create_memfd_for_readers(&format!("rimd-decisions-{shard}"), bytes)
        .map_err(|e| DaemonError::Ring(e.to_string()))?;
    broadcast::init(&seg, d.slots, d.slot_bytes).map_err(|e| DaemonError::Ring(e.to_string()))?;
    Ok(Arc::new(seg))
}

fn spawn_hot(
    mut shard: HotShard,
    config: &Config,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
    (beats, k): (Arc<Vec<ShardBeat>>, usize),
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    let idle = config.topology.idle;
    let pin_enabled = config.topology.pin;
    let report_ns = config.stats.interval_ms * 1_000_000;
    std::thread::Builder::new()
        .name(shard.name.clone())
        .spawn(move || {
            // However the thread ends (returned or unwound), readiness and shutdown hear it.
            let beat = &beats[k];
            let _ended = OnDrop(|| {
                beat.end();
                running.fetch_sub(1, Ordering::SeqCst);
            });
            let pinned = pin(shard.core, pin_enabled);
            info!(shard = %shard.name, core = shard.core, pinned, "shard started");
            let ex = LocalExecutorBuilder::new(Placement::Unbound).name(&shard.name).make();
            match ex {
                Ok(ex) => ex.run(hot_loop(&mut shard, idle, report_ns, &stop, beat)),
                Err(e) => {
                    error!(shard = %shard.name, error = %e, "cannot start the glommio executor; running the loop bare");
                    futures_block_on(hot_loop(&mut shard, idle, report_ns, &stop, beat));
                }
            }
        })
        .map_err(|e| DaemonError::Thread(format!("cannot start shard thread: {e}")))
}

/// Drives a future that never waits on I/O (the hot loop only yields) without an executor.
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The hot shard's loop: poll, upkeep every millisecond (with a beat), idle, drain at stop.
async fn hot_loop(
    shard: &mut HotShard,
    idle: crate::config::IdleStrategy,
    report_ns: u64,
    stop: &AtomicBool,
    beat: &ShardBeat,
) {
    let mut idle = Idle::new(idle);
    let mut turns = Turns::default();
    let mut upkeep_at = monotonic_ns();
    let mut report_at = upkeep_at;
    beat.beat(upkeep_at);
    let mut draining_since: Option<Instant> = None;
    loop {
        let mut work = 0;
        if let Some(ingest) = shard.ingest.as_mut() {
            work += ingest.poll();
        }
        work += shard.reflex.poll(REFLEX_BATCH);
        work += shard.reflex.answer_queries();
        let now = monotonic_ns();
        turns.turn(now, work);
        if now >= upkeep_at {
            let elapsed_ms = (now - upkeep_at + UPKEEP_NS) / 1_000_000;
            upkeep_at = now + UPKEEP_NS;
            let report_due = now >= report_at;
            if report_due {
                report_at = now + report_ns;
            }
            let fig = turns.figures;
            beat.beat(now);
            if let Some(ingest) = shard.ingest.as_mut() {
                ingest.maintain(now, report_due, fig);
            }
            shard.reflex.maintain(elapsed_ms, report_due, fig);
            glommio::yield_if_needed().await;
        }
        if stop.load(Ordering::Relaxed) {
            let since = *draining_since.get_or_insert_with(Instant::now);
            let pending = shard.ingest.as_ref().is_some_and(|i| i.has_data()) || shard.reflex.has_data();
            if !pending || since.elapsed() > DRAIN_DEADLINE {
                if pending {
                    warn!(shard = %shard.name, "drain deadline passed with records still queued");
                }
                break;
            }
        }
        if idle.after(work) {
            turns.rebase(monotonic_ns());
        }
    }
    finish(shard, turns.figures);
}

/// Final reports (retried until a box is free) and rings handed back.
fn finish(shard: &mut HotShard, fig: crate::report::ShardFigures) {
    let deadline = Instant::now() + Duration::from_secs(1);
    if let Some(ingest) = shard.ingest.as_mut() {
        ingest.maintain(monotonic_ns(), false, fig);
        while !ingest.report_now(fig) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The journal thread still runs: the producers' last durable positions.
        ingest.settle_final(DRAIN_DEADLINE);
        ingest.retire_all();
    }
    shard.reflex.maintain(0, false, fig);
    while !shard.reflex.report(fig) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    info!(shard = %shard.name, loops = fig.loops, stalls = fig.stalls, "shard drained");
}

/// The control plane's state.
struct ColdShard {
    config: Config,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
    aggregator: Aggregator,
    ingest_reports: ColdEnd<Report>,
    reflex_reports: Vec<ColdEnd<Report>>,
    retired: rtrb::Consumer<Retired>,
    rules_back: Vec<rtrb::Consumer<Arc<Compiled>>>,
    registry: Arc<attach::Registry>,
    plane: Arc<RulePlane>,
    /// Generation of the set the aggregator was last told about.
    reported_generation: u64,
    /// The rule text last tried (compiled or refused): a reload happens when the file's
    /// content differs (which also catches a rewrite within one mtime tick) or on SIGHUP.
    rules_tried: String,
    /// The last error reading the rule file, so a missing file is reported once, not
    /// every poll.
    rules_read_error: Option<String>,
}

fn run_cold(mut cold: ColdShard, config: &Config) -> Result<(), DaemonError> {
    let pinned = pin(config.topology.cold_core, config.topology.pin);
    info!(core = config.topology.cold_core, pinned, "control plane started");
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("rimd-cold")
        .make()
        .map_err(|e| DaemonError::Thread(format!("cannot start the cold glommio executor: {e}")))?;
    ex.run(async move {
        let stats_every = Duration::from_millis(config.stats.interval_ms);
        let rules_every = Duration::from_millis(config.reflex.rules_poll_ms);
        let tick = stats_every.min(rules_every).min(Duration::from_millis(100));
        let (mut stats_at, mut rules_at) = (Instant::now(), Instant::now());
        let mut stopping_since: Option<Instant> = None;
        loop {
            glommio::timer::sleep(tick).await;
            cold.reclaim();
            let sighup = cold.reload.swap(false, Ordering::Relaxed);
            if sighup || rules_at.elapsed() >= rules_every {
                rules_at = Instant::now();
                cold.poll_rules(sighup);
            }
            if stats_at.elapsed() >= stats_every {
                stats_at = Instant::now();
                cold.publish_stats(true);
            }
            if cold.stop.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                // A shard that never ends (a stuck loop) must not keep the process alive.
                if cold.running.load(Ordering::SeqCst) == 0 || since.elapsed() > SHUTDOWN_DEADLINE {
                    break;
                }
            }
        }
        cold.reclaim();
        cold.publish_stats(false);
    });
    Ok(())
}

impl ColdShard {
    /// Frees what the hot shards handed back: drained rings and replaced rule sets.
    fn reclaim(&mut self) {
        while let Ok(r) = self.retired.pop() {
            let stats = r.ring.consumer.stats();
            info!(
                id = r.ring.id,
                name = %r.ring.name,
                pid = r.ring.pid,
                reason = ?r.reason,
                delivered = stats.delivered,
                rejected = stats.rejected,
                "producer ring reclaimed"
            );
            self.registry.remove(r.ring.id);
            r.ring.consumer.close();
        }
        for back in &mut self.rules_back {
            while back.pop().is_ok() {}
        }
    }

    /// Reads the rule file once and, if its text changed (or `forced`, on SIGHUP),
    /// compiles it: a good set goes to every shard, a bad one is logged with its positions
    /// and the running set stays.
    fn poll_rules(&mut self, forced: bool) {
        let (origin, text) = match read_rules(&self.config) {
            Ok(r) => {
                self.rules_read_error = None;
                r
            }
            Err(e) => {
                let e = e.to_string();
                if forced || self.rules_read_error.as_deref() != Some(e.as_str()) {
                    self.aggregator.rules_reload_failed();
                    error!(error = %e, "rule reload failed; the running rules stay");
                }
                self.rules_read_error = Some(e);
                return;
            }
        };
        if !forced && text == self.rules_tried {
            return;
        }
        self.rules_tried = text.clone();
        let format = rules_format(&origin);
        match self.plane.replace(RulesSource {
            origin: origin.clone(),
            format,
            text,
        }) {
            Ok(compiled) => {
                info!(origin = %origin, rules = compiled.set.len(), generation = compiled.set.generation(), "rules reloaded");
            }
            Err(e) => {
                self.aggregator.rules_reload_failed();
                error!(origin = %origin, "rule reload refused; the running rules stay:\n{e}");
                if matches!(e, ReplaceError::Busy) {
                    // Not the file's fault: try it again at the next poll.
                    self.rules_tried.clear();
                }
            }
        }
    }

    fn publish_stats(&mut self, running: bool) {
        let agg = &mut self.aggregator;
        self.ingest_reports.drain(|r| agg.ingest_report(r));
        for (k, cold) in self.reflex_reports.iter_mut().enumerate() {
            cold.drain(|r| agg.reflex_report(k, r));
        }
        let current = self.plane.current();
        if current.set.generation() != self.reported_generation {
            self.reported_generation = current.set.generation();
            agg.rules_loaded(&current);
        }
        if let Err(e) = agg.publish(&current, running) {
            warn!(error = %e, "stats segment not updated");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_file_compiles_in_the_format_its_name_says() {
        let config = Config::default();
        let json = r#"{"rule":[{"id":"hot","nodes":"rim:sensor:*","when":"metric.temp > 90","severity":"high"}]}"#;
        let set = compile(json, "/etc/rimd/rules.json", &config, None).expect("JSON by extension");
        assert_eq!(set.len(), 1);
        assert!(
            compile(json, "/etc/rimd/rules.toml", &config, None).is_err(),
            "JSON is not TOML"
        );
        let toml = "[[rule]]\nid = \"hot\"\nwhen = \"metric.temp > 90\"\nseverity = \"high\"\n";
        assert_eq!(
            compile(toml, "(embedded default rules)", &config, None).map(|s| s.len()),
            Ok(1)
        );
    }
}
