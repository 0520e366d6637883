//! What the HTTP API may touch of the daemon, in one place: the event intake ring, the
//! capsule store, live node state (asked of the reflex shards through query rings), the
//! rule set, the metrics snapshot, readiness and the decision broadcast rings.
//!
//! A [`Context`] lives on the HTTP thread (it is `!Send`: the intake producer and the
//! query rings are single-owner); the daemon builds its [`ContextParts`] (which are `Send`)
//! and the HTTP thread turns them into a context.

use std::cell::RefCell;
use std::sync::Arc;

use rim_capsule::Store;
use rim_ring::{event::RimFastEvent, PublishError, Segment};

use crate::config::Config;

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
}

/// The daemon as the HTTP thread sees it.
pub struct Context {
    config: Config,
    store: Option<Arc<Store>>,
    producer: RefCell<Option<rim_ring::Producer>>,
    decisions: Vec<Arc<Segment>>,
}

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
    pub name: String,
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
        Self {
            config: parts.config,
            store: parts.store,
            producer: RefCell::new(parts.producer),
            decisions: parts.decisions,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The capsule store, if persistence is on.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Publishes one validated-or-not event into ingest. `Full` means: wait (asynchronously)
    /// and retry; `Invalid` carries the field that broke the data model. Returns the ring
    /// position just past the event (compare with [`Context::durable_position`]).
    pub fn publish(&self, ev: &RimFastEvent) -> Result<u64, PublishError> {
        let mut p = self.producer.borrow_mut();
        match p.as_mut() {
            Some(p) => p.try_publish_event(&ev.as_ref()),
            None => Err(PublishError::Closed),
        }
    }

    /// How far ingest has taken the intake ring.
    pub fn consumed_position(&self) -> u64 {
        self.producer.borrow().as_ref().map_or(0, |p| p.consumed_position())
    }

    /// How far the intake ring's events are journaled (equal to consumed when
    /// persistence is off).
    pub fn durable_position(&self) -> u64 {
        self.producer.borrow().as_ref().map_or(0, |p| p.durable_position())
    }

    /// A node's live state from its reflex shard; `Ok(None)` if the node is unknown.
    pub async fn present(&self, _node_id: &str) -> Result<Option<Present>, PresentError> {
        Err(PresentError::Busy)
    }

    /// The rule set in force.
    pub fn rules(&self) -> RulesView {
        RulesView {
            generation: 0,
            count: 0,
            origin: String::new(),
            text: String::new(),
            format: "toml".into(),
        }
    }

    /// Compiles `text` (`format` = `toml` or `json`) and, if it compiles, replaces the
    /// rule set on every shard at once.
    pub fn put_rules(&self, _text: &str, _format: &str) -> Result<RulesView, RulesRefused> {
        Err(RulesRefused::Unavailable("not wired".into()))
    }

    /// Prometheus text exposition of the latest stats.
    pub fn metrics_text(&self) -> String {
        String::new()
    }

    /// Readiness.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            ready: false,
            components: Vec::new(),
        }
    }

    /// Decision broadcast rings, one per reflex shard (open a
    /// `rim_ring::broadcast::Reader` on each; decode records with
    /// `crate::reflex::decision::decode`).
    pub fn decision_segments(&self) -> &[Arc<Segment>] {
        &self.decisions
    }
}
