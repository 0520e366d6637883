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
//! Start (`start`): the journal and the store are opened, the rule set in force chosen,
//! the rings and duties built ([`crate::topology`]), the HTTP API started (liveness
//! answers during recovery), the journal recovered (torn tails cut, state rebuilt from the
//! journal since the store's watermarks), and only then do the persist, attach, hot
//! shard and bridge threads start: no shared-memory producer attaches before recovery
//! ends (events posted over HTTP meanwhile wait in the API's intake ring).
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
use rim_ring::{clock::monotonic_ns, Segment};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::agent::{pin, BeatState, ColdAgents, Idle, OnDrop, ShardBeat, Turns};
use crate::clock::Clock;
use crate::config::Config;
use crate::ingest::{self, attach};
use crate::plane::{rules_format, Initial, ReplaceError, RulePlane, RulesSource, DEFAULT_RULES};
use crate::reflex::Reflex;
use crate::rulebook::RuleBook;
use crate::stats::Aggregator;
use crate::topology::{self, HotShard};

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

/// Runs the daemon until a signal stops it.
pub fn run(config: Config) -> Result<(), DaemonError> {
    run_with(config, Arc::new(AtomicBool::new(false)))
}

/// Runs the daemon until a signal (or `stop`) stops it; SIGTERM/SIGINT set `stop`, so
/// threads started beside the daemon can watch the same flag.
pub fn run_with(config: Config, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    run_placed(place_hot_shard(config), stop)
}

/// [`run_with`] of a configuration [`place_hot_shard`] placed already: the cores are
/// chosen once, so a second look at the disk's interrupts (which irqbalance may have moved
/// meanwhile) cannot undo what threads pinned before it were placed by.
pub fn run_placed(config: Config, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let reload = Arc::new(AtomicBool::new(false));
    // Held until return: a second daemon on this directory would take over the socket and
    // the stats segment of the first.
    let _lock = prepare_process(&config, &stop, &reload)?;
    let (cold, threads) = start(&config, &stop, reload)?;
    let cold_result = run_cold(cold, &config);
    stop.store(true, Ordering::SeqCst);
    shut_down(threads, cold_result)
}

/// The configuration with its hot and cold cores swapped when the journal's disk takes
/// its interrupts on the hot core and not on the cold one (`topology.avoid_disk_irqs`,
/// [`crate::irqs`]): the hot shard then does not serve the journal's completions, and the
/// journal thread, which submits them, does.
pub fn place_hot_shard(mut config: Config) -> Config {
    // The cores as configured, which the swap exchanges.
    let (hot, cold) = (config.topology.hot_core, config.topology.cold_core);
    if let Some(disk) = crate::irqs::place(&mut config) {
        info!(
            device = %disk.device,
            irqs = ?disk.irqs,
            irq_cores = ?disk.cpus,
            "the journal's disk takes its interrupts on core {hot}: the hot shard runs on core {cold} and the cold \
             threads on core {hot} instead (topology.avoid_disk_irqs = false keeps the configured cores)"
        );
    }
    config
}

/// Signals, the panic policy, memory settings and the run directory, locked.
fn prepare_process(
    config: &Config,
    stop: &Arc<AtomicBool>,
    reload: &Arc<AtomicBool>,
) -> Result<std::fs::File, DaemonError> {
    register_signals(stop, reload)?;
    exit_on_panic();
    crate::sys::make_undumpable().map_err(|source| DaemonError::Io {
        what: "cannot make the process non-dumpable (prctl PR_SET_DUMPABLE)",
        path: PathBuf::from("(prctl)"),
        source,
    })?;
    crate::memory::set_prefault(config.reflex.prefault);
    crate::sys::keep_freed_memory();
    prepare_run_dir(config)?;
    lock_run_dir(config)
}

/// The threads [`start`] started, for [`shut_down`].
struct Threads {
    hot: Vec<std::thread::JoinHandle<()>>,
    beats: Arc<Vec<ShardBeat>>,
    attach: std::thread::JoinHandle<()>,
    /// The HTTP API's and the Kafka bridge's.
    side: Vec<std::thread::JoinHandle<()>>,
    http_addr: Option<std::net::SocketAddr>,
    persist: Vec<std::thread::JoinHandle<()>>,
    persist_stop: Arc<AtomicBool>,
    socket: PathBuf,
}

/// What the threads share, built before any starts.
struct Shared {
    plane: Arc<RulePlane>,
    beats: Arc<Vec<ShardBeat>>,
    registry: Arc<attach::Registry>,
    decisions: Vec<Arc<Segment>>,
    /// The one clock every component of the run reads.
    clock: Clock,
    /// The cold-side agents' figures, for the stats.
    agents: ColdAgents,
    /// The Kafka bridge's health, for readiness and metrics (None: no bridge).
    bridge_health: Option<Arc<crate::bridge::BridgeHealth>>,
}

/// Opens the journal and the store, builds the topology, starts the HTTP API, recovers,
/// then starts the persist, attach, hot shard and bridge threads. Returns the control
/// plane's state and the threads.
fn start(
    config: &Config,
    stop: &Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
) -> Result<(ColdShard, Threads), DaemonError> {
    let clock = Clock::system();
    // Durability: open and cut the journal, open the store, before anything attaches.
    let mut opened = config
        .persist
        .enabled
        .then(|| crate::persist::open(config, &clock))
        .transpose()?;
    let (initial, book, rules_text) = initial_rules(config, opened.is_some(), &clock)?;
    let mut topo =
        topology::build(config, &initial.compiled, opened.is_some(), &clock).map_err(|e| DaemonError::Ring(e.0))?;
    let shared = share(config, &mut topo, initial, book, clock);
    let (api_intake, bridge_intake) = open_intakes(config, &shared.registry, &mut topo.control)?;
    // The HTTP API starts before recovery, so that liveness answers during a long replay
    // and readiness says why it is not ready yet.
    let (mut side, mut http_addr) = (Vec::new(), None);
    if let Some(producer) = api_intake {
        let parts = api_parts(config, opened.as_ref(), producer, &shared, &mut topo);
        let (thread, addr) = spawn_api(parts, stop, config)?;
        side.push(thread);
        http_addr = Some(addr);
    }
    let persist_stop = Arc::new(AtomicBool::new(false));
    let persisted = match (opened.take(), topo.journal) {
        (Some(o), Some(inputs)) => Some(recover_and_persist(
            config,
            o,
            inputs,
            &mut topo.hot,
            &persist_stop,
            &shared,
        )?),
        _ => None,
    };
    let socket = config.socket_path();
    let attach = spawn_attach(config, &socket, topo.control, &shared, stop)?;
    let running = Arc::new(AtomicUsize::new(topo.hot.len()));
    let hot = spawn_hot_shards(topo.hot, config, stop, &running, &shared.beats)?;
    // Recovery (above) fed from this thread and rolled up on another, on any core, and the
    // hot shards start from its mask (one whose pin fails runs unconfined, not on the cold
    // core). From here on this thread is the control plane's, on the cold core, and every
    // thread it starts inherits that core: a library that starts threads of its own
    // (librdkafka starts seven for the bridge's clients) ran them on the hot core too.
    let pinned = pin(config.topology.cold_core, config.topology.pin);
    info!(core = config.topology.cold_core, pinned, "control plane pinned");
    if let (Some(producer), Some(health)) = (bridge_intake, shared.bridge_health.clone()) {
        let store = persisted.as_ref().map(|p| p.store.clone());
        side.extend(spawn_bridge(config, producer, store, stop.clone(), health, &shared)?);
    }
    log_running(config, &socket);
    let (aggregator, persist_threads) = aggregator(config, &shared, persisted)?;
    let cold = ColdShard {
        config: config.clone(),
        stop: stop.clone(),
        reload,
        running,
        aggregator,
        ends: topo.cold,
        registry: shared.registry,
        reported_generation: shared.plane.current().set.generation(),
        plane: shared.plane,
        rules_tried: rules_text,
        rules_read_error: None,
    };
    let threads = Threads {
        hot,
        beats: shared.beats,
        attach,
        side,
        http_addr,
        persist: persist_threads,
        persist_stop,
        socket,
    };
    Ok((cold, threads))
}

/// What the threads share: the rule plane over the shards' rule rings, the shards' beats,
/// the attach registry, the decision segments and the run's clock.
fn share(config: &Config, topo: &mut topology::Topology, initial: Initial, book: RuleBook, clock: Clock) -> Shared {
    let rules_in = std::mem::take(&mut topo.rules_in);
    let bridge_health = config
        .bridge
        .enabled
        .then(|| Arc::new(crate::bridge::BridgeHealth::with_clock(clock.clone())));
    Shared {
        bridge_health,
        beats: Arc::new(topo.hot.iter().map(|h| ShardBeat::new(h.name.clone())).collect()),
        plane: Arc::new(RulePlane::new(config.clone(), initial, book, rules_in, clock.clone())),
        registry: Arc::new(attach::Registry::default()),
        decisions: std::mem::take(&mut topo.decision_segments),
        clock,
        agents: ColdAgents::default(),
    }
}

/// The stats aggregator, with the persist threads' figures when they run (whose handles
/// it passes on).
fn aggregator(
    config: &Config,
    shared: &Shared,
    persisted: Option<Persisted>,
) -> Result<(Aggregator, Vec<std::thread::JoinHandle<()>>), DaemonError> {
    let mut aggregator = Aggregator::new(
        config,
        shared.registry.clone(),
        shared.decisions.clone(),
        shared.clock.clone(),
        shared.agents.clone(),
    )
    .map_err(|e| DaemonError::Ring(e.to_string()))?;
    let Some(p) = persisted else {
        return Ok((aggregator, Vec::new()));
    };
    aggregator.attach_persist(p.stats);
    Ok((aggregator, p.threads))
}

/// What the HTTP API's thread is given.
fn api_parts(
    config: &Config,
    opened: Option<&crate::persist::Opened>,
    producer: rim_ring::Producer,
    shared: &Shared,
    topo: &mut topology::Topology,
) -> crate::api::context::ContextParts {
    crate::api::context::ContextParts {
        config: config.clone(),
        store: opened.map(|o| o.store.clone()),
        producer: Some(producer),
        decisions: shared.decisions.clone(),
        queries: std::mem::take(&mut topo.query_clients),
        plane: shared.plane.clone(),
        persist: opened.map(|o| o.stats.clone()),
        beats: shared.beats.clone(),
        shards: shared.beats.len(),
        bridge: shared
            .bridge_health
            .clone()
            .map(|h| h as Arc<dyn crate::api::context::Health>),
        clock: shared.clock.clone(),
        agents: shared.agents.clone(),
    }
}

fn log_running(config: &Config, socket: &std::path::Path) {
    let t = &config.topology;
    info!(
        socket = %socket.display(),
        stats = %config.stats_path().display(),
        shards = t.reflex_shards,
        partitions = t.partitions,
        hot_core = t.hot_core,
        cold_core = t.cold_core,
        "rimd running"
    );
}

/// The cold core, when threads are pinned.
fn cold_core(config: &Config) -> Option<usize> {
    config.topology.pin.then_some(config.topology.cold_core)
}

/// The rules in force at start: the rule book's last set, or the rule file when it changed
/// since (the book lives in the data directory, opened under the journal's lock); with the
/// rule file's text, which the control plane compares reloads against.
fn initial_rules(
    config: &Config,
    persisted: bool,
    clock: &Clock,
) -> Result<(crate::plane::Initial, RuleBook, String), DaemonError> {
    let (origin, text) = read_rules(config)?;
    let mut book = match persisted {
        true => RuleBook::open(&config.persist.data_dir)?,
        false => RuleBook::in_memory(),
    };
    let file = RulesSource {
        origin: origin.clone(),
        format: rules_format(&origin),
        text: text.clone(),
    };
    let initial = crate::plane::initial(config, &mut book, file, clock).map_err(|e| match e {
        crate::plane::InitialError::Compile(errors) => DaemonError::Rules { path: origin, errors },
        crate::plane::InitialError::Book(e) => DaemonError::RuleBook(e),
    })?;
    let compiled = &initial.compiled;
    info!(rules = compiled.set.len(), generation = compiled.set.generation(), origin = %initial.source.origin, "rules in force");
    Ok((initial, book, text))
}

/// The in-process producer rings of the HTTP API and the Kafka bridge (when enabled).
fn open_intakes(
    config: &Config,
    registry: &Arc<attach::Registry>,
    control: &mut rtrb::Producer<ingest::Control>,
) -> Result<(Option<rim_ring::Producer>, Option<rim_ring::Producer>), DaemonError> {
    let mut intake = |enabled: bool, name: &str| -> Result<Option<rim_ring::Producer>, DaemonError> {
        if !enabled {
            return Ok(None);
        }
        attach::local_intake(name, config.ingest.intake_ring_bytes, registry, control)
            .map(Some)
            .map_err(DaemonError::Ring)
    };
    Ok((
        intake(config.api.enabled, "http")?,
        intake(config.bridge.enabled, "kafka")?,
    ))
}

/// What recovery leaves running: the journal and store threads.
struct Persisted {
    threads: Vec<std::thread::JoinHandle<()>>,
    stats: Arc<crate::persist::PersistStats>,
    store: Arc<rim_capsule::Store>,
}

/// Recovery: replays the journal since the watermarks into ingest (node table, dedup) and
/// the reflex shards (state), on this thread, before the shards start; each decision chain
/// continues after its last durable decision (the sequence numbers a subscriber may have
/// seen and lost are skipped). Then starts the journal and store threads.
fn recover_and_persist(
    config: &Config,
    mut o: crate::persist::Opened,
    inputs: crate::persist::JournalInputs,
    hot: &mut [HotShard],
    stop: &Arc<AtomicBool>,
    shared: &Shared,
) -> Result<Persisted, DaemonError> {
    let mut ingest_duty = hot[0].ingest.take();
    if let Some(ingest_duty) = ingest_duty.as_mut() {
        let mut reflexes: Vec<&mut Reflex> = hot.iter_mut().map(|h| &mut h.reflex).collect();
        crate::persist::recover(&mut o, ingest_duty, &mut reflexes)?;
    }
    hot[0].ingest = ingest_duty;
    for (k, h) in hot.iter_mut().enumerate() {
        if let Some(chain) = o.chains.get_mut(k).and_then(Option::take) {
            inputs.durable_seqs[k].store(chain.last_seq(), Ordering::Release);
            h.reflex.resume_chain(chain);
        }
    }
    o.stats.ready.store(1, Ordering::Relaxed);
    let (store, stats) = (o.store.clone(), o.stats.clone());
    let threads = crate::persist::spawn(o, inputs, stop.clone(), cold_core(config), &shared.agents)?;
    Ok(Persisted { threads, stats, store })
}

/// The control socket and the thread that attaches producers on it.
fn spawn_attach(
    config: &Config,
    socket: &std::path::Path,
    control: rtrb::Producer<ingest::Control>,
    shared: &Shared,
    stop: &Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    let listener = rim_ring::attach::listen(socket).map_err(|e| DaemonError::Socket {
        path: socket.to_path_buf(),
        message: e.to_string(),
    })?;
    attach::spawn(attach::AttachSetup {
        listener,
        limits: attach::Limits::from_config(&config.ingest),
        control,
        registry: shared.registry.clone(),
        decisions: shared.decisions.clone(),
        stop: stop.clone(),
        core: cold_core(config),
        clock: shared.clock.clone(),
    })
    .map_err(|e| DaemonError::Thread(format!("cannot start the attach thread: {e}")))
}

/// One thread per hot shard; `running` counts them down as they end.
fn spawn_hot_shards(
    hot: Vec<HotShard>,
    config: &Config,
    stop: &Arc<AtomicBool>,
    running: &Arc<AtomicUsize>,
    beats: &Arc<Vec<ShardBeat>>,
) -> Result<Vec<std::thread::JoinHandle<()>>, DaemonError> {
    hot.into_iter()
        .enumerate()
        .map(|(k, shard)| spawn_hot(shard, config, stop.clone(), running.clone(), (beats.clone(), k)))
        .collect()
}

/// After the control plane returned (the stop flag is set): joins the hot shards (unless
/// stuck), attach, the HTTP API and the bridge, then lets the journal thread drain what
/// the shards sent, sync, and hand its last batch to the store writer.
fn shut_down(threads: Threads, cold_result: Result<(), DaemonError>) -> Result<(), DaemonError> {
    let stuck = stuck_shards(&threads.beats);
    if stuck.is_empty() {
        for th in threads.hot {
            if th.join().is_err() {
                error!("a hot shard thread panicked");
            }
        }
    } else {
        // Joining would wait forever: leave them; everything else stops as usual.
        error!(shards = %stuck, "hot shards did not stop; exiting without them");
    }
    let _ = threads.attach.join();
    if let Some(addr) = threads.http_addr {
        wake_http(addr);
    }
    join_side_threads(threads.side);
    threads.persist_stop.store(true, Ordering::SeqCst);
    for th in threads.persist {
        if th.join().is_err() {
            error!("a persist thread panicked");
        }
    }
    let _ = std::fs::remove_file(&threads.socket);
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
    stop: &Arc<AtomicBool>,
    config: &Config,
) -> Result<(std::thread::JoinHandle<()>, std::net::SocketAddr), DaemonError> {
    crate::api::server::spawn(parts, stop.clone(), cold_core(config))
        .map_err(|e| DaemonError::Thread(format!("HTTP API: {e}")))
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
    shared: &Shared,
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
        clock: shared.clock.clone(),
        agents: shared.agents.clone(),
    })
    .map_err(|e| DaemonError::Thread(format!("Kafka bridge: {e}")))
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
        if let Some(ingest) = shard.ingest.as_mut() {
            ingest.wake_journal();
        }
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
    /// What it reads back from the shards.
    ends: topology::ColdEnds,
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
    info!(core = config.topology.cold_core, "control plane started");
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
        while let Ok(r) = self.ends.retired.pop() {
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
        for back in &mut self.ends.rules_back {
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
        self.ends.ingest_reports.drain(|r| agg.ingest_report(r));
        for (k, cold) in self.ends.reflex_reports.iter_mut().enumerate() {
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
