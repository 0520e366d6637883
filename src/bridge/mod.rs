//! The Kafka bridge (DESIGN "Kafka bridge"): rimd as one node of the platform's Kafka
//! engine.
//!
//! - **In** ([`inbound`], thread `rimd-kafka-in`): a consumer group on `bridge.in_topic`;
//!   Avro RimFastEvents in the Confluent wire format ([`wire`]), writer schemas from local
//!   files or a schema registry ([`registry`]), each compiled once into a decoding plan
//!   against the platform schema (`rim_avro`);
//!   each event goes into ingest through an in-process SPSC ring like any producer's, and
//!   its offset is committed only once ingest reports it durable. Messages that cannot be
//!   decoded or are invalid go to `{in_topic}.dlq` after bounded retries.
//! - **Out** ([`outbox`], thread `rimd-kafka-out`): capsules and decisions read from the
//!   store (the outbox) and published as JSON, keyed by RimNodeId, with an idempotent
//!   producer; the cursors advance on delivery reports and are kept in the store.
//! - **Health** ([`health`]): up, degraded or down, the last error, counters; a broker
//!   outage makes the bridge degraded and nothing else: the shared-memory path runs on.
//!
//! librdkafka runs its own threads for each client; the bridge's threads sleep in
//! `poll` when idle and never touch the hot shards except through the ring.

pub(crate) mod clients;
pub(crate) mod fetch;
/// `[bridge]` (defined with the rest of the configuration, which depends on nothing here).
pub use crate::config::bridge as config;
pub mod health;
pub(crate) mod inbound;
pub(crate) mod outbox;
pub mod registry;
pub(crate) mod trace;
pub mod wire;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use thiserror::Error;
use tracing::info;

pub use health::{BridgeHealth, BridgeHealthSnapshot, BridgeState};

/// Why the bridge could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// Settings that do not make sense.
    #[error("bridge config: {0}")]
    Config(String),
    /// A configured schema file or the registry URL is unusable.
    #[error("bridge schemas: {0}")]
    Schemas(#[from] registry::RegistryError),
    /// librdkafka refused a client's configuration or a subscription.
    #[error("kafka client: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// The store could not be read for the outbox cursors.
    #[error("bridge store: {0}")]
    Store(rim_capsule::StoreError),
    /// A thread could not be started.
    #[error("bridge thread: {0}")]
    Thread(std::io::Error),
}

/// What the daemon hands the bridge.
pub struct BridgeSetup {
    /// `[bridge]`.
    pub config: config::BridgeConfig,
    /// The in-process ring into ingest (already registered with ingest).
    pub producer: rim_ring::Producer,
    /// Persistence is on: offsets wait for the durable position (else the consumed one).
    pub durable: bool,
    /// The store and its decision log, the outbox's source; `None` when persistence is
    /// off (nothing published).
    pub log: Option<crate::persist::audit::DecisionLog>,
    /// Set at shutdown; the bridge threads settle, commit and return.
    pub stop: Arc<AtomicBool>,
    /// Shared with readiness and metrics.
    pub health: Arc<BridgeHealth>,
    /// Core to pin the bridge threads to (the cold core), if any.
    pub core: Option<usize>,
    /// Accepted event times around the daemon's clock (`[ingest]`); an event outside goes
    /// to the DLQ (kind `event-time`).
    pub bounds: crate::ingest::time::TimeBounds,
    /// The daemon's clock (event-time bounds, DLQ times).
    pub clock: crate::clock::Clock,
    /// Where the bridge's loops register their agent figures (`rimd-kafka-in`,
    /// `rimd-kafka-out`).
    pub agents: crate::agent::ColdAgents,
}

/// Starts the bridge's threads (`rimd-kafka-in` when `consume`, `rimd-kafka-out` when
/// there is a store and something to publish). Configuration and schema files are checked
/// and the clients created before any thread starts, so a bad setting fails here.
pub fn spawn(setup: BridgeSetup) -> Result<Vec<JoinHandle<()>>, BridgeError> {
    let BridgeSetup {
        config,
        producer,
        durable,
        log,
        stop,
        health,
        core,
        bounds,
        clock,
        agents,
    } = setup;
    config.validate().map_err(BridgeError::Config)?;
    let traces = Arc::new(Mutex::new(trace::Traces::default()));
    let publishes = config.publish_capsules || config.publish_decisions;
    // Correlation ids only ever go out on published decisions.
    let traced = config.publish_decisions && log.is_some();
    let inbound = if config.consume {
        let schemas = registry::Schemas::new(&config)?;
        Some(inbound::Inbound::new(inbound::InboundSetup {
            cfg: config.clone(),
            ring: producer,
            durable,
            schemas,
            traces: traced.then(|| traces.clone()),
            stop: stop.clone(),
            health: health.clone(),
            bounds,
            clock,
            figures: agents.add("rimd-kafka-in", "poll"),
        })?)
    } else {
        health.not_used(health::Side::In);
        None
    };
    let outbox = match log {
        Some(log) if publishes => Some(outbox::Outbox::new(outbox::OutboxSetup {
            cfg: config.clone(),
            log,
            traces,
            stop: stop.clone(),
            health: health.clone(),
            figures: agents.add("rimd-kafka-out", "poll"),
        })?),
        _ => None,
    };
    if outbox.is_none() {
        // The DLQ producer is the only outbound client then; its errors still count.
        if inbound.is_none() {
            return Err(BridgeError::Config(
                "bridge enabled with nothing to do (consume off, and no store or nothing to publish)".into(),
            ));
        }
        health.not_used(health::Side::Out);
    }
    health.set_running(true);
    let mut handles = Vec::new();
    if let Some(inb) = inbound {
        let h = health.clone();
        handles.push(spawn_named("rimd-kafka-in", core, move || {
            inb.run();
            h.set_running(false);
        })?);
    }
    if let Some(out) = outbox {
        let h = health.clone();
        handles.push(spawn_named("rimd-kafka-out", core, move || {
            out.run();
            h.set_running(false);
        })?);
    }
    info!(
        brokers = %config.brokers,
        in_topic = %config.in_topic,
        consume = config.consume,
        publish = publishes,
        "kafka bridge started"
    );
    Ok(handles)
}

fn spawn_named(
    name: &str,
    core: Option<usize>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, BridgeError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Some(c) = core {
                crate::agent::pin(c, true);
            }
            f();
        })
        .map_err(BridgeError::Thread)
}
