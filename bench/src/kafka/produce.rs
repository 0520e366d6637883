//! The `kafka-in` row's producer: an rdkafka `BaseProducer` (librdkafka's own threads do
//! the network; this thread only enqueues and polls), keyed by RimNodeId like the
//! platform's producers, batching with a short linger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::error::BenchError;

/// librdkafka's batching delay: a few ms, as a latency-minded producer would set it (the
/// bridge's own producers use 5 ms).
const LINGER_MS: &str = "5";

/// Counts failed deliveries, so that a lost event fails the row at once instead of
/// timing it out.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// What `try_send` made of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Enqueued.
    Queued,
    /// librdkafka's queue is full: poll, then offer it again.
    QueueFull,
}

/// The producer.
pub struct KafkaProducer {
    inner: BaseProducer<Deliveries>,
    topic: String,
}

impl KafkaProducer {
    /// A producer to `brokers`, sending to `topic`.
    pub fn new(brokers: &str, topic: &str) -> Result<Self, BenchError> {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "rim-bench")
            .set("linger.ms", LINGER_MS)
            // Room for a whole saturating run in flight: the row's own window (events
            // without their decision) bounds it before librdkafka's queue does.
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("batch.num.messages", "10000")
            .set("batch.size", "1048576")
            // Loopback: CPU, not bandwidth, is what two cores lack.
            .set("compression.type", "none")
            // As the platform's producers: no duplicate or reordering on a retry (a
            // duplicate would fail the row's integrity check), key → partition by murmur2.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .create_with_context(Deliveries::default())
            .map_err(|e| BenchError::transport("rdkafka", "creating the producer", e))?;
        Ok(Self {
            inner,
            topic: topic.to_owned(),
        })
    }

    /// Enqueues `payload` keyed by `key`, without blocking.
    pub fn try_send(&self, key: &str, payload: &[u8]) -> Result<Sent, BenchError> {
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic).key(key).payload(payload);
        match self.inner.send(record) {
            Ok(()) => Ok(Sent::Queued),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(Sent::QueueFull),
            Err((e, _)) => Err(BenchError::transport("rdkafka", "send", e)),
        }
    }

    /// Enqueues `payload` keyed by `key` into `partition` (chosen by the caller), without
    /// blocking.
    pub fn try_send_to(&self, key: &str, partition: i32, payload: &[u8]) -> Result<Sent, BenchError> {
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic)
            .key(key)
            .partition(partition)
            .payload(payload);
        match self.inner.send(record) {
            Ok(()) => Ok(Sent::Queued),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(Sent::QueueFull),
            Err((e, _)) => Err(BenchError::transport("rdkafka", "send", e)),
        }
    }

    /// Serves delivery reports (frees librdkafka's queue); fails on any failed delivery.
    pub fn service(&self) -> Result<(), BenchError> {
        self.inner.poll(Duration::ZERO);
        self.check()
    }

    fn check(&self) -> Result<(), BenchError> {
        let ctx = self.inner.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = ctx.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        Err(BenchError::Integrity {
            what: format!("{failed} events were not delivered to the broker (first: {first})"),
        })
    }
}
