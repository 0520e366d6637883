//! `[bridge]` settings.
use serde::{Deserialize, Serialize};

/// `[bridge]`: the Kafka bridge (in: `in_topic` through a consumer group into ingest; out:
/// capsules and decisions from the store to their topics; failures to `{in_topic}.dlq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Run the bridge.
    pub enabled: bool,
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Consumer group of the inbound topic (many rimd nodes share one to split partitions).
    pub group_id: String,
    /// `client.id` of both clients.
    pub client_id: String,
    /// The inbound topic (Avro RimFastEvents, Confluent wire format).
    pub in_topic: String,
    /// Where committed capsules go (JSON, key = scope id).
    pub capsules_topic: String,
    /// Where decisions go (JSON, key = RimNodeId).
    pub decisions_topic: String,
    /// Consume `in_topic` (off: out only).
    pub consume: bool,
    /// Publish capsules.
    pub publish_capsules: bool,
    /// Publish decisions.
    pub publish_decisions: bool,
    /// Schema registry base URL (`http://` or `https://host[:port][/prefix]`); empty for
    /// none.
    pub schema_registry_url: String,
    /// Local writer schemas, `"ID=PATH.avsc"` each (checked before the registry).
    pub schema_files: Vec<String>,
    /// Total time of one registry request (resolution, connection, TLS, the whole answer), ms.
    pub registry_timeout_ms: u64,
    /// Basic-auth user of the registry (empty: no basic auth).
    pub registry_username: String,
    /// Basic-auth password of the registry (`RIMD_BRIDGE_REGISTRY_PASSWORD` keeps it out of
    /// files).
    pub registry_password: String,
    /// Bearer token for the registry (empty: none; not together with basic auth).
    pub registry_bearer_token: String,
    /// PEM file of the CAs trusted for an `https://` registry (empty: Mozilla's roots).
    pub registry_ca_file: String,
    /// Writer schemas from the registry kept compiled, at most (the oldest goes first).
    pub registry_cache_max: usize,
    /// How long an id the registry does not know is not asked again, ms.
    pub registry_negative_ttl_ms: u64,
    /// Retries of a message whose failure may pass (registry unreachable) before the DLQ.
    pub retries_max: u32,
    /// First retry delay, ms (doubling per retry).
    pub retry_backoff_ms: u64,
    /// Longest retry delay, ms.
    pub retry_backoff_max_ms: u64,
    /// `session.timeout.ms` of the consumer group.
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms` of the consumer group.
    pub heartbeat_interval_ms: u64,
    /// `auto.offset.reset` for a group without committed offsets (`earliest` or `latest`).
    pub offset_reset: String,
    /// How often durable offsets are committed, ms.
    pub commit_interval_ms: u64,
    /// Messages handed to ingest and not yet durable, at most (consumption pauses beyond).
    pub in_flight_max: usize,
    /// Messages taken from the consumer and handled in one batch, at most.
    pub consume_batch_max: usize,
    /// How often the outbox looks for new capsules and decisions, ms.
    pub outbox_interval_ms: u64,
    /// Rows read per stream per look.
    pub outbox_batch_max: usize,
    /// Messages per stream sent and not yet acknowledged, at most.
    pub outbox_in_flight_max: usize,
    /// How often delivered outbox cursors are written to the store, ms.
    pub cursor_interval_ms: u64,
    /// `compression.type` of the producers.
    pub compression: String,
    /// `message.timeout.ms` of the producers: a delivery not acknowledged by then fails
    /// (the outbox then sends again from its cursor).
    pub delivery_timeout_ms: u64,
    /// `reconnect.backoff.max.ms` of both clients.
    pub reconnect_backoff_max_ms: u64,
    /// Extra librdkafka properties for both clients, `"key=value"` each.
    pub librdkafka: Vec<String>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            brokers: "127.0.0.1:9092".into(),
            group_id: "rimd".into(),
            client_id: "rimd".into(),
            in_topic: "rim.fast-path".into(),
            capsules_topic: "capsule.snapshots".into(),
            decisions_topic: "odyssey.reflex".into(),
            consume: true,
            publish_capsules: true,
            publish_decisions: true,
            schema_registry_url: String::new(),
            schema_files: Vec::new(),
            registry_timeout_ms: 5_000,
            registry_username: String::new(),
            registry_password: String::new(),
            registry_bearer_token: String::new(),
            registry_ca_file: String::new(),
            registry_cache_max: 1_000,
            registry_negative_ttl_ms: 30_000,
            retries_max: 3,
            retry_backoff_ms: 1_000,
            retry_backoff_max_ms: 30_000,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 2_000,
            offset_reset: "earliest".into(),
            commit_interval_ms: 200,
            in_flight_max: 10_000,
            consume_batch_max: 1_024,
            outbox_interval_ms: 100,
            outbox_batch_max: 1_000,
            outbox_in_flight_max: 10_000,
            cursor_interval_ms: 200,
            compression: "zstd".into(),
            delivery_timeout_ms: 300_000,
            reconnect_backoff_max_ms: 2_000,
            librdkafka: Vec::new(),
        }
    }
}

impl BridgeConfig {
    /// The dead-letter topic of the inbound topic.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.in_topic)
    }

    /// Checks the settings that only make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let named = [
            ("bridge.brokers", &self.brokers),
            ("bridge.group_id", &self.group_id),
            ("bridge.in_topic", &self.in_topic),
            ("bridge.capsules_topic", &self.capsules_topic),
            ("bridge.decisions_topic", &self.decisions_topic),
        ];
        for (name, v) in named {
            if v.trim().is_empty() {
                return Err(format!("{name} is empty"));
            }
        }
        if !matches!(self.offset_reset.as_str(), "earliest" | "latest") {
            return Err(format!(
                "bridge.offset_reset = {:?} (earliest or latest)",
                self.offset_reset
            ));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(format!(
                "bridge.heartbeat_interval_ms = {} must be above 0 and below bridge.session_timeout_ms = {}",
                self.heartbeat_interval_ms, self.session_timeout_ms
            ));
        }
        if self.retry_backoff_ms == 0 || self.retry_backoff_ms > self.retry_backoff_max_ms {
            return Err(format!(
                "bridge.retry_backoff_ms = {} must be in 1..=bridge.retry_backoff_max_ms ({})",
                self.retry_backoff_ms, self.retry_backoff_max_ms
            ));
        }
        for (name, v) in [
            ("bridge.in_flight_max", self.in_flight_max),
            ("bridge.consume_batch_max", self.consume_batch_max),
            ("bridge.registry_cache_max", self.registry_cache_max),
            ("bridge.outbox_batch_max", self.outbox_batch_max),
            ("bridge.outbox_in_flight_max", self.outbox_in_flight_max),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.registry_timeout_ms == 0 {
            return Err("bridge.registry_timeout_ms must be at least 1".into());
        }
        for kv in &self.librdkafka {
            if !kv.contains('=') {
                return Err(format!("bridge.librdkafka entry {kv:?} is not key=value"));
            }
        }
        Ok(())
    }
}
