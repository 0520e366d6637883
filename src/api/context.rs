//! What the HTTP API may touch of the daemon, in one place: the event intake ring, the
//! capsule store, live node state (asked of the reflex shards through query rings), the
//! rule set, the metrics snapshot, readiness and the decision broadcast rings.
//!
//! A [`Context`] lives on the HTTP thread (it is `!Send`: the intake producer and the
//! query rings are single-owner); the daemon builds its [`ContextParts`] (which are `Send`)
//! and the HTTP thread turns them into a context.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rim_capsule::{Capsule, CapsuleBody, HistoryQuery, Store, Vantage};
use rim_ring::{event::EventRef, same_bytes, PublishError, Segment, Sym, SymEvent, SymbolKind};
use rim_stats::StatsReader;

use crate::agent::{BeatState, ColdAgents, ShardBeat};
use crate::clock::Clock;
use crate::config::Config;
use crate::ingest::nodes::{partition_of, shard_of_partition};
use crate::persist::PersistStats;
use crate::plane::{ReplaceError, RulePlane, RulesSource};
use crate::reflex::query::{PresentQuery, QueryClient};

/// The daemon's side of the API, handed to the HTTP thread.
pub struct ContextParts {
    /// The whole configuration (the API's own section is `config.api`).
    pub config: Config,
    /// The capsule store (None when persistence is off).
    pub store: Option<Arc<Store>>,
    /// The in-process producer ring into ingest.
    pub producer: Option<rim_ring::Producer>,
    /// Decision broadcast rings, one per reflex shard.
    pub decisions: Vec<Arc<Segment>>,
    /// Live-state query rings, one per reflex shard.
    pub queries: Vec<QueryClient>,
    /// The rule plane.
    pub plane: Arc<RulePlane>,
    /// Persistence counters (readiness: recovery done).
    pub persist: Option<Arc<PersistStats>>,
    /// Each hot shard's sign of life.
    pub beats: Arc<Vec<ShardBeat>>,
    /// Hot shard threads started.
    pub shards: usize,
    /// The Kafka bridge's health (None: no bridge).
    pub bridge: Option<Arc<dyn Health>>,
    /// The daemon's clock.
    pub clock: Clock,
    /// Where the HTTP thread's agents register their figures.
    pub agents: ColdAgents,
}

/// The daemon as the HTTP thread sees it.
pub struct Context {
    config: Config,
    store: Option<Arc<Store>>,
    producer: RefCell<Option<rim_ring::Producer>>,
    decisions: Vec<Arc<Segment>>,
    queries: RefCell<Queries>,
    plane: Arc<RulePlane>,
    persist: Option<Arc<PersistStats>>,
    beats: Arc<Vec<ShardBeat>>,
    shards: usize,
    bridge: Option<Arc<dyn Health>>,
    stats: RefCell<Option<StatsReader>>,
    /// Store writes made through the API (the store writer counts its own commits).
    api_writes: std::cell::Cell<u64>,
    /// Series key → metric name, learned from observed capsules.
    /// Metric series keys → their display names (`metric.{name}`), shared by answers.
    names: RefCell<HashMap<u64, Rc<str>>>,
    /// Backtest jobs.
    backtests: super::backtests::Jobs,
    clock: Clock,
    agents: ColdAgents,
}

/// Live-state queries in flight, and boxes to reuse.
struct Queries {
    clients: Vec<QueryClient>,
    in_flight: Vec<usize>,
    depth: usize,
    series: usize,
    // Boxed: queries travel through the rings as boxes, so the shard moves a pointer
    // and never allocates or frees.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<PresentQuery>>,
    answered: HashMap<u64, Box<PresentQuery>>,
    abandoned: HashSet<u64>,
    next_tag: u64,
}

impl Queries {
    /// Moves every answer off the reply rings.
    fn collect(&mut self) {
        for (k, c) in self.clients.iter_mut().enumerate() {
            while let Ok(q) = c.replies.pop() {
                self.in_flight[k] = self.in_flight[k].saturating_sub(1);
                if self.abandoned.remove(&q.tag) {
                    self.pool.push(q);
                } else {
                    self.answered.insert(q.tag, q);
                }
            }
        }
    }
}

/// A component that reports its own health (the Kafka bridge).
pub trait Health: Send + Sync {
    /// `up`, `degraded` or `down`, and why.
    fn state_and_reason(&self) -> (String, String);
    /// Appends its counters as Prometheus text, names starting with `prefix`.
    fn render_prometheus(&self, prefix: &str, out: &mut String);
}

pub use crate::reflex::query::QUERIES_IN_FLIGHT;

/// A query someone waits for. If the wait ends without the answer (a timeout, or the
/// request's future dropped because its client went away), the answer is recycled when
/// it comes instead of being kept forever.
struct Waiting<'a> {
    queries: &'a RefCell<Queries>,
    tag: u64,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(mut q) = self.queries.try_borrow_mut() else {
            return;
        };
        match q.answered.remove(&self.tag) {
            Some(a) => q.pool.push(a),
            None => {
                q.abandoned.insert(self.tag);
            }
        }
    }
}

/// How long a live-state query may take before the slice answers without it.
const PRESENT_TIMEOUT: Duration = Duration::from_millis(100);
/// Polls of the reply ring by yielding before the wait sleeps between polls.
const PRESENT_SPINS: u32 = 16;
/// How many events ahead [`Context::publish_batch`] starts a node id's symbol lookup.
const LOOKUP_AHEAD: usize = 4;

/// A node's live state, read from its reflex shard.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Present {
    /// The node.
    pub rim_node_id: String,
    /// Ingest sequence of its last event.
    pub last_event_seq: u64,
    /// Event time of its last event, epoch ms.
    pub last_event_timestamp: i64,
    /// Wall time the shard last saw it, epoch ms.
    pub seen_ms: u64,
    /// Series: price, volume, stress and metrics.
    pub series: Vec<PresentSeries>,
}

/// One series of a node's live state.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresentSeries {
    /// `price`, `volume`, `stress`, or `metric.{name}` (`metric.#{hash}` if the name is not known).
    #[serde(serialize_with = "str_of")]
    pub name: Rc<str>,
    /// Samples seen.
    pub samples: u64,
    /// Last value.
    pub last: f64,
    /// EWMA.
    pub ewma: f64,
    /// EWMA standard deviation.
    pub stddev: f64,
}

/// Why live state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PresentError {
    /// The shard did not answer in time (it is overloaded or stopping).
    #[error("the reflex shard did not answer within {0} ms")]
    Timeout(u64),
    /// Too many questions in flight.
    #[error("too many live-state queries in flight")]
    Busy,
}

/// The rule set in force.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesView {
    /// Generation (rises by one per accepted set).
    pub generation: u64,
    /// Rules in the set.
    pub count: usize,
    /// Where the text came from (`api`, a file path, or the embedded defaults).
    pub origin: String,
    /// The source text as accepted.
    pub text: String,
    /// `toml` or `json`.
    pub format: String,
}

/// Why a rule set was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesRefused {
    /// It does not compile: one message per error, each naming line and column.
    #[error("rule set does not compile")]
    Compile(Vec<String>),
    /// The rule plane is not reachable (stopping).
    #[error("rules cannot be replaced now: {0}")]
    Unavailable(String),
    /// The set could not be recorded durably, so it was not installed.
    #[error("{0}")]
    Store(String),
}

/// Readiness parts.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// Recovery done and the shards running.
    pub ready: bool,
    /// Per component: `up`, `degraded`, `down`, `disabled`, with a reason.
    pub components: Vec<(String, String, String)>,
}

impl Context {
    /// Builds the context on the HTTP thread.
    pub fn new(parts: ContextParts) -> Self {
        let shards = parts.queries.len();
        let depth = QUERIES_IN_FLIGHT;
        Self {
            queries: RefCell::new(Queries {
                clients: parts.queries,
                in_flight: vec![0; shards],
                depth,
                series: parts.config.reflex.series_per_node,
                pool: Vec::new(),
                answered: HashMap::new(),
                abandoned: HashSet::new(),
                next_tag: 1,
            }),
            config: parts.config,
            store: parts.store,
            producer: RefCell::new(parts.producer),
            decisions: parts.decisions,
            plane: parts.plane,
            persist: parts.persist,
            beats: parts.beats,
            shards: parts.shards,
            bridge: parts.bridge,
            stats: RefCell::new(None),
            api_writes: std::cell::Cell::new(0),
            names: RefCell::new(HashMap::new()),
            backtests: super::backtests::Jobs::default(),
            clock: parts.clock,
            agents: parts.agents,
        }
    }

    /// Backtest jobs.
    pub fn backtests(&self) -> &super::backtests::Jobs {
        &self.backtests
    }

    /// The rule set in force.
    pub fn rule_set(&self) -> rim_rules::RuleSet {
        self.plane.current().set.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The daemon's clock (request times, event-time bounds, ages in answers).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The run's cold-side agents (the HTTP thread registers its own).
    pub fn agents(&self) -> &ColdAgents {
        &self.agents
    }

    /// The capsule store, if persistence is on.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// A number that changes whenever what the slices read from the store may have
    /// changed: the writer's commits of capsules or checkpoints (not those of decision
    /// runs alone, up to 200 a second) plus the writes made through the API.
    pub fn store_version(&self) -> u64 {
        let commits = self
            .persist
            .as_ref()
            .map_or(0, |p| p.store_data_version.load(Ordering::Acquire));
        commits.wrapping_add(self.api_writes.get())
    }

    /// Records a store write made through the API (after it completed).
    pub fn note_store_write(&self) {
        self.api_writes.set(self.api_writes.get().wrapping_add(1));
    }

    /// Publishes one event into ingest (validated here first, so that a bad event gets
    /// its field named). `Full` means: wait (asynchronously) and retry; `Invalid` carries
    /// the field that broke the data model. Returns the ring position just past the event
    /// (compare with [`Context::durable_position`]).
    pub fn publish<M: rim_ring::event::Metric>(&self, ev: &EventRef<'_, M>) -> Result<u64, PublishError> {
        let mut p = self.producer.borrow_mut();
        match p.as_mut() {
            Some(p) => p.try_publish_event(ev),
            None => Err(PublishError::Closed),
        }
    }

    /// Publishes `events` from index `*next` on, in order, with their strings interned
    /// once per batch ([`BatchSymbols`]): an event whose status, source topic or metric
    /// names are those of the event before (what a batch almost always holds) publishes
    /// with the same symbols, hashing nothing but a new node id. `*next` advances past
    /// every event published (so a `Full` can be waited out and the call repeated); the
    /// ring position past the last one is returned.
    pub fn publish_batch<'e>(
        &self,
        events: &[EventRef<'e>],
        next: &mut usize,
        syms: &mut BatchSymbols<'e>,
    ) -> Result<u64, PublishError> {
        let mut p = self.producer.borrow_mut();
        let Some(p) = p.as_mut() else {
            return Err(PublishError::Closed);
        };
        let mut position = p.position();
        // One clock read for the batch (the ring would read it per event).
        let now_ns = rim_ring::clock::monotonic_ns();
        while let Some(ev) = events.get(*next) {
            // Node ids differ from event to event: their lookups miss the cache, and
            // started a few events early they overlap with the publishing in between.
            if let Some(ahead) = events.get(*next + LOOKUP_AHEAD) {
                p.prefetch_symbol(SymbolKind::NodeId, ahead.rim_node_id);
            }
            position = syms.publish(p, ev, now_ns)?;
            *next += 1;
        }
        Ok(position)
    }

    /// How far ingest has taken the intake ring.
    pub fn consumed_position(&self) -> u64 {
        self.producer.borrow().as_ref().map_or(0, |p| p.consumed_position())
    }

    /// How far the intake ring's events are journaled (with persistence off, how far
    /// ingest has taken them).
    pub fn durable_position(&self) -> u64 {
        let p = self.producer.borrow();
        match (p.as_ref(), self.persist.is_some()) {
            (Some(p), true) => p.durable_position(),
            (Some(p), false) => p.consumed_position(),
            (None, _) => 0,
        }
    }

    /// A node's live state from its reflex shard; `Ok(None)` if the shard has not seen
    /// the node. Waits asynchronously (yielding, then sleeping 50 µs between polls) for
    /// at most 100 ms.
    pub async fn present(&self, node_id: &str) -> Result<Option<Present>, PresentError> {
        let mut waiting = Waiting {
            queries: &self.queries,
            tag: self.ask(node_id)?,
            done: false,
        };
        let deadline = Instant::now() + PRESENT_TIMEOUT;
        let mut polls = 0u32;
        let answer = loop {
            {
                let mut q = self.queries.borrow_mut();
                q.collect();
                if let Some(a) = q.answered.remove(&waiting.tag) {
                    waiting.done = true;
                    break a;
                }
                if Instant::now() >= deadline {
                    return Err(PresentError::Timeout(PRESENT_TIMEOUT.as_millis() as u64));
                }
            }
            polls += 1;
            if polls < PRESENT_SPINS {
                futures_lite::future::yield_now().await;
            } else {
                glommio::timer::sleep(Duration::from_micros(50)).await;
            }
        };
        let present = answer.found.then(|| self.describe(&answer));
        self.queries.borrow_mut().pool.push(answer);
        Ok(present)
    }

    /// Sends a query for `node_id` to the shard that owns it. Returns its tag.
    fn ask(&self, node_id: &str) -> Result<u64, PresentError> {
        let mut q = self.queries.borrow_mut();
        let shards = q.clients.len();
        if shards == 0 {
            return Err(PresentError::Busy);
        }
        let shard = shard_of_partition(partition_of(node_id, self.config.topology.partitions), shards);
        if q.in_flight[shard] >= q.depth {
            return Err(PresentError::Busy);
        }
        let series = q.series;
        let mut query = q.pool.pop().unwrap_or_else(|| PresentQuery::with_capacity(series));
        let tag = q.next_tag;
        q.next_tag += 1;
        query.tag = tag;
        query.node.clear();
        query.node.push_str(node_id);
        if q.clients[shard].requests.push(query).is_err() {
            return Err(PresentError::Busy);
        }
        q.in_flight[shard] += 1;
        Ok(tag)
    }

    /// Turns an answer into its API form, naming metric series from observed capsules.
    fn describe(&self, a: &PresentQuery) -> Present {
        if a.series
            .iter()
            .any(|s| s.0 > 3 && !self.names.borrow().contains_key(&s.0))
        {
            self.learn_names(&a.node);
        }
        let names = self.names.borrow();
        let series = a
            .series
            .iter()
            .map(|&(key, samples, ewma, var, last)| PresentSeries {
                name: series_name(&names, key),
                samples: samples as u64,
                last,
                ewma,
                stddev: var.max(0.0).sqrt(),
            })
            .collect();
        let (seq, ts) = a.last_event.unwrap_or((0, 0));
        Present {
            rim_node_id: a.node.clone(),
            last_event_seq: seq,
            last_event_timestamp: ts,
            seen_ms: a.seen_ms,
            series,
        }
    }

    /// Learns the metric names of `node` from its newest observed capsule, or, when no
    /// window has closed yet, from its newest prediction.
    fn learn_names(&self, node: &str) {
        let Some(store) = self.store.as_ref() else { return };
        let Some(&resolution) = self.config.persist.resolutions.first() else {
            return;
        };
        let now = self.clock.now_ms();
        for vantage in [Vantage::Observed, Vantage::Predicted] {
            let q = HistoryQuery {
                scope_id: node.to_owned(),
                resolution,
                vantage,
                from_ms: 0,
                to_ms: now + 86_400_000,
                limit: 1,
                descending: true,
            };
            if let Ok(caps) = store.history(&q) {
                if let Some(c) = caps.first() {
                    self.learn_capsule(c);
                    return;
                }
            }
        }
    }

    /// Learns the metric names an observed or predicted capsule carries (so that live
    /// series, which the shard knows by name hash only, can be named).
    pub fn learn_capsule(&self, c: &Capsule) {
        let mut names = self.names.borrow_mut();
        if names.len() > NAMES_MAX {
            names.clear();
        }
        let mut learn = |name: &str| {
            let key = crate::reflex::state::metric_key(rim_rules::name_hash(name).max(1));
            names.entry(key).or_insert_with(|| Rc::from(format!("metric.{name}")));
        };
        match &c.body {
            CapsuleBody::Observed(o) => o.metrics.iter().for_each(|m| learn(&m.name)),
            CapsuleBody::Predicted(p) => p
                .series
                .iter()
                .filter(|s| !matches!(s.name.as_str(), "price" | "volume" | "stress"))
                .for_each(|s| learn(&s.name)),
            CapsuleBody::Payload(_) => {}
        }
    }

    /// The rule set in force.
    pub fn rules(&self) -> RulesView {
        let (compiled, source) = self.plane.view();
        RulesView {
            generation: compiled.set.generation(),
            count: compiled.set.len(),
            origin: source.origin,
            text: source.text,
            format: source.format.to_owned(),
        }
    }

    /// Compiles `text` (`format` = `toml` or `json`) and, if it compiles, replaces the
    /// rule set on every shard at once.
    pub fn put_rules(&self, text: &str, format: &str) -> Result<RulesView, RulesRefused> {
        let format = if format.eq_ignore_ascii_case("json") {
            "json"
        } else {
            "toml"
        };
        let source = RulesSource {
            origin: crate::plane::API_ORIGIN.into(),
            format,
            text: text.to_owned(),
        };
        match self.plane.replace(source) {
            Ok(_) => Ok(self.rules()),
            Err(ReplaceError::Compile(errors)) => Err(RulesRefused::Compile(errors)),
            Err(e @ ReplaceError::Busy) => Err(RulesRefused::Unavailable(e.to_string())),
            Err(e @ ReplaceError::Store(_)) => Err(RulesRefused::Store(e.to_string())),
        }
    }

    /// Compiles `text` against the set in force and says what installing it would change;
    /// installs nothing.
    pub fn dry_run_rules(&self, text: &str, format: &str) -> Result<crate::plane::RulesDiff, RulesRefused> {
        let source = RulesSource {
            origin: crate::plane::API_ORIGIN.into(),
            format: if format.eq_ignore_ascii_case("json") {
                "json"
            } else {
                "toml"
            },
            text: text.to_owned(),
        };
        match self.plane.dry_run(&source) {
            Ok(d) => Ok(d),
            Err(ReplaceError::Compile(errors)) => Err(RulesRefused::Compile(errors)),
            Err(e) => Err(RulesRefused::Unavailable(e.to_string())),
        }
    }

    /// The installed rule sets, newest first, and whether they survive a restart.
    pub fn rules_history(&self) -> (Vec<crate::rulebook::RuleSummary>, bool) {
        (self.plane.history(), self.plane.durable())
    }

    /// The installed set of `generation`, if kept.
    pub fn rules_of(&self, generation: u64) -> Option<crate::rulebook::RuleRecord> {
        self.plane.record(generation)
    }

    /// Prometheus text exposition of the latest stats snapshot (published by the cold
    /// shard every `stats.interval_ms`), plus the bridge's counters.
    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        if let Some(snap) = self.snapshot() {
            rim_stats::render_prometheus(&snap, "rimd", &mut out);
        }
        if let Some(b) = self.bridge.as_ref() {
            b.render_prometheus("rimd_bridge", &mut out);
        }
        out
    }

    /// The latest stats snapshot, if the segment can be read.
    pub fn snapshot(&self) -> Option<rim_stats::Snapshot> {
        let mut reader = self.stats.borrow_mut();
        if reader.is_none() {
            *reader = StatsReader::open(&self.config.stats_path()).ok();
        }
        reader.as_ref().and_then(|r| r.read().ok())
    }

    /// The accepted event times around the daemon's clock (`[ingest]`).
    pub fn time_bounds(&self) -> crate::ingest::time::TimeBounds {
        self.config.time_bounds()
    }

    /// Whether every hot shard's loop is turning, and what readiness says about them: the
    /// count when all run, else each shard that does not, by name (not started, stalled
    /// past `topology.shard_stall_ms_max`, or its thread ended).
    fn shards_state(&self) -> (bool, String) {
        let now = rim_ring::clock::monotonic_ns();
        let stall_ns = self.config.topology.shard_stall_ms_max.saturating_mul(1_000_000);
        let down: Vec<String> = self
            .beats
            .iter()
            .filter_map(|b| match b.state(now, stall_ns) {
                BeatState::Running => None,
                s => Some(format!("{}: {s}", b.name())),
            })
            .collect();
        if down.is_empty() && self.shards > 0 {
            (true, format!("{0} of {0} hot shards running", self.shards))
        } else {
            (false, down.join("; "))
        }
    }

    /// Readiness: recovery done and every hot shard running; the bridge may be degraded
    /// without making rimd unready (the shared-memory path does not need it).
    pub fn readiness(&self) -> Readiness {
        let mut components = Vec::new();
        let (shards_up, why) = self.shards_state();
        components.push((
            "shards".to_owned(),
            if shards_up { "up" } else { "down" }.to_owned(),
            why,
        ));
        let recovered = match self.persist.as_ref() {
            Some(p) => {
                let ready = p.ready.load(Ordering::Relaxed) == 1;
                components.push((
                    "persist".to_owned(),
                    if ready { "up" } else { "down" }.to_owned(),
                    if ready { "recovered" } else { "recovering" }.to_owned(),
                ));
                ready
            }
            None => {
                components.push(("persist".to_owned(), "disabled".to_owned(), String::new()));
                true
            }
        };
        match self.bridge.as_ref() {
            Some(b) => {
                let (state, reason) = b.state_and_reason();
                components.push(("bridge".to_owned(), state, reason));
            }
            None => components.push(("bridge".to_owned(), "disabled".to_owned(), String::new())),
        }
        Readiness {
            ready: shards_up && recovered,
            components,
        }
    }

    /// Decision broadcast rings, one per reflex shard (open a
    /// `rim_ring::broadcast::Reader` on each; decode records with
    /// `crate::reflex::decision::decode`).
    pub fn decision_segments(&self) -> &[Arc<Segment>] {
        &self.decisions
    }
}

/// Metric names remembered at most (a cache: cleared when full).
const NAMES_MAX: usize = 65_536;

/// `price`, `volume`, `stress`, `metric.{name}`, or `metric.#{key:x}` when the name is
/// not known yet.
fn series_name(names: &HashMap<u64, Rc<str>>, key: u64) -> Rc<str> {
    match key {
        1 => "price".into(),
        2 => "volume".into(),
        3 => "stress".into(),
        k => match names.get(&k) {
            Some(n) => Rc::clone(n),
            None => format!("metric.#{k:016x}").into(),
        },
    }
}

fn str_of<S: serde::Serializer>(s: &Rc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

/// The symbols of the strings one batch repeats, so that each is interned (hashed and
/// looked up in the ring's table) once per batch rather than once per event. Symbols stay
/// defined in the ring once published, so a batch interrupted by `Full` keeps them.
#[derive(Default)]
pub struct BatchSymbols<'e> {
    node: Option<(&'e str, Sym)>,
    status: Option<(&'e str, Sym)>,
    topic: Option<(&'e str, Sym)>,
    metric_names: Vec<(&'e str, Sym)>,
    metrics: Vec<(Sym, f64)>,
}

impl<'e> BatchSymbols<'e> {
    /// The symbol of `text`, from `slot` when it holds the same text.
    fn sym(
        p: &mut rim_ring::Producer,
        slot: &mut Option<(&'e str, Sym)>,
        kind: SymbolKind,
        text: &'e str,
    ) -> Result<Sym, PublishError> {
        match slot {
            Some((t, s)) if same_bytes(t.as_bytes(), text.as_bytes()) => Ok(*s),
            _ => {
                let s = p.intern(kind, text)?;
                *slot = Some((text, s));
                Ok(s)
            }
        }
    }

    /// Publishes one event with its strings as symbols; the ring position past it.
    fn publish(&mut self, p: &mut rim_ring::Producer, ev: &EventRef<'e>, now_ns: u64) -> Result<u64, PublishError> {
        let node = Self::sym(p, &mut self.node, SymbolKind::NodeId, ev.rim_node_id)?;
        let status = Self::sym(p, &mut self.status, SymbolKind::Status, ev.status)?;
        let source_topic = match ev.source_topic {
            Some(t) => Some(Self::sym(p, &mut self.topic, SymbolKind::SourceTopic, t)?),
            None => None,
        };
        self.metrics.clear();
        for (i, &(name, value)) in ev.critical_metrics.iter().enumerate() {
            let sym = match self.metric_names.get(i) {
                Some(&(n, s)) if same_bytes(n.as_bytes(), name.as_bytes()) => s,
                _ => {
                    let s = p.intern(SymbolKind::MetricName, name)?;
                    self.metric_names.truncate(i);
                    self.metric_names.push((name, s));
                    s
                }
            };
            self.metrics.push((sym, value));
        }
        p.try_publish_sym(&SymEvent {
            node,
            event_id: ev.event_id,
            timestamp: ev.timestamp,
            metrics: &self.metrics,
            price: ev.price,
            volume: ev.volume,
            stress: ev.stress,
            status,
            source_topic,
            publish_ns: if ev.publish_ns == 0 { now_ns } else { ev.publish_ns },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_ring::RimFastEvent;

    fn event(node: &str, status: &str, metrics: &[(&str, f64)], topic: Option<&str>) -> RimFastEvent {
        RimFastEvent {
            rim_node_id: node.into(),
            event_id: Some(format!("{node}-{status}")),
            timestamp: 1_764_000_000_000,
            critical_metrics: metrics.iter().map(|(n, v)| ((*n).into(), *v)).collect(),
            price: Some(1.5),
            volume: None,
            stress: Some(0.25),
            status: status.into(),
            source_topic: topic.map(Into::into),
            publish_ns: 7,
        }
    }

    #[test]
    fn a_batch_with_names_interned_once_reads_back_as_sent() {
        let (mut producer, mut consumer) = rim_ring::spsc::heap_pair(1 << 16).expect("ring");
        let sent = [
            event("rim:a:b:n1", "OK", &[("t", 1.0), ("l", 2.0)], Some("x")),
            event("rim:a:b:n2", "OK", &[("t", 3.0), ("l", 4.0)], Some("x")),
            // Names change mid-batch: in place, fewer, more, none.
            event("rim:a:b:n2", "DEGRADED", &[("l", 5.0), ("t", 6.0)], None),
            event("rim:a:b:n3", "OK", &[("t", 7.0)], Some("y")),
            event("rim:a:b:n3", "OK", &[("t", 8.0), ("q", 9.0), ("r", 1.0)], Some("y")),
            event("rim:a:b:n1", "OK", &[], Some("x")),
        ];
        let owned: Vec<Vec<(&str, f64)>> = sent
            .iter()
            .map(|e| e.critical_metrics.iter().map(|(n, v)| (n.as_str(), *v)).collect())
            .collect();
        let refs: Vec<EventRef<'_>> = sent
            .iter()
            .zip(&owned)
            .map(|(e, m)| EventRef {
                rim_node_id: &e.rim_node_id,
                event_id: e.event_id.as_deref(),
                timestamp: e.timestamp,
                critical_metrics: m,
                price: e.price,
                volume: e.volume,
                stress: e.stress,
                status: &e.status,
                source_topic: e.source_topic.as_deref(),
                publish_ns: e.publish_ns,
            })
            .collect();
        let mut syms = BatchSymbols::default();
        let now_ns = rim_ring::clock::monotonic_ns();
        for ev in &refs {
            syms.publish(&mut producer, ev, now_ns).expect("publish");
        }
        let mut got = Vec::new();
        consumer
            .poll_events(64, |r| got.push(r.expect("a valid event").to_owned_event()))
            .expect("poll");
        assert_eq!(got, sent);
    }
}
