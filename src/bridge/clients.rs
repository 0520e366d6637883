//! librdkafka clients: their properties, and the contexts through which librdkafka's
//! callbacks (logs, errors, delivery reports, commits) reach the bridge's health and
//! threads. Callbacks run inside `poll` on the thread that polls, so the small mutexes
//! here are never contended.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use tracing::{debug, error, info, warn};

use super::config::BridgeConfig;
use super::health::{BridgeHealth, Side};
use super::BridgeError;

/// Properties both clients share.
fn common(cfg: &BridgeConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", &cfg.client_id)
        .set("reconnect.backoff.max.ms", cfg.reconnect_backoff_max_ms.to_string())
        // librdkafka logs through our context (below), at its own levels.
        .set_log_level(RDKafkaLogLevel::Info);
    c
}

fn extra(c: &mut ClientConfig, cfg: &BridgeConfig) {
    for kv in &cfg.librdkafka {
        if let Some((k, v)) = kv.split_once('=') {
            c.set(k.trim(), v.trim());
        }
    }
}

/// The consumer: manual offset store and commit (offsets are stored only for messages
/// whose events are durable or dead-lettered), no auto-commit.
pub(crate) fn consumer<C: ConsumerContext>(cfg: &BridgeConfig, ctx: C) -> Result<BaseConsumer<C>, BridgeError> {
    let mut c = common(cfg);
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &cfg.offset_reset)
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", cfg.heartbeat_interval_ms.to_string())
        // Bounded prefetch: the bridge applies its own back-pressure (the ring into ingest).
        .set("queued.max.messages.kbytes", "16384")
        // A broker that holds a fetch until its maximum wait even with data ready (tansu,
        // as measured by `rim-bench kafka`: p50 ~250 ms at librdkafka's 500 ms default,
        // ~50 ms at 5 ms) would eat the platform's 50 ms budget; 10 ms costs an idle
        // bridge 100 small fetches a second. `bridge.librdkafka` can override it.
        .set("fetch.wait.max.ms", "10");
    extra(&mut c, cfg);
    c.create_with_context(ctx).map_err(BridgeError::Kafka)
}

/// A producer: idempotent, acks=all, so a retried send is never duplicated or reordered
/// by the broker.
pub(crate) fn producer(cfg: &BridgeConfig, ctx: OutContext) -> Result<BaseProducer<OutContext>, BridgeError> {
    let mut c = common(cfg);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &cfg.compression)
        .set("linger.ms", "5")
        // Key → partition as the platform's Java clients do it.
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", cfg.delivery_timeout_ms.to_string());
    extra(&mut c, cfg);
    c.create_with_context(ctx).map_err(BridgeError::Kafka)
}

pub(crate) fn forward_log(side: Side, level: RDKafkaLogLevel, fac: &str, msg: &str) {
    let side = match side {
        Side::In => "consumer",
        Side::Out => "producer",
    };
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            error!(client = side, facility = fac, "librdkafka: {msg}")
        }
        RDKafkaLogLevel::Warning => warn!(client = side, facility = fac, "librdkafka: {msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(client = side, facility = fac, "librdkafka: {msg}"),
        RDKafkaLogLevel::Debug => debug!(client = side, facility = fac, "librdkafka: {msg}"),
    }
}

/// Errors librdkafka reports for a client: each makes that side degraded until it reaches
/// the brokers again.
pub(crate) fn on_error(health: &BridgeHealth, side: Side, error: &KafkaError, reason: &str) {
    let text = format!("{error}: {reason}");
    warn!(client = ?side, "kafka: {text}");
    health.failed(side, &text);
}

/// What a delivery report says about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// The token the sender attached.
    pub token: u64,
    /// `Err(text)` when the message could not be delivered.
    pub result: Result<(), String>,
}

/// Context of a producer: health, and delivery reports queued for the owning thread.
pub(crate) struct OutContext {
    pub health: Arc<BridgeHealth>,
    pub reports: Mutex<Vec<Report>>,
}

impl OutContext {
    pub(crate) fn new(health: Arc<BridgeHealth>) -> Self {
        Self {
            health,
            reports: Mutex::new(Vec::new()),
        }
    }

    /// Takes the reports gathered by the last polls.
    pub(crate) fn take_reports(&self, into: &mut Vec<Report>) {
        if let Ok(mut r) = self.reports.lock() {
            into.append(&mut r);
        }
    }
}

impl ClientContext for OutContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(Side::Out, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        on_error(&self.health, Side::Out, &error, reason);
    }
}

impl ProducerContext for OutContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        let result = match result {
            Ok(_) => {
                self.health.ok(Side::Out);
                Ok(())
            }
            Err((e, msg)) => {
                let text = format!("delivery to {} failed: {e}", msg.topic());
                self.health.failed(Side::Out, &text);
                Err(text)
            }
        };
        if let Ok(mut r) = self.reports.lock() {
            r.push(Report {
                token: token as u64,
                result,
            });
        }
    }
}
