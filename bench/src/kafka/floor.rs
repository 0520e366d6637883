//! The `broker-floor` row: the `kafka-in` row's messages (same encoding, keys, producer
//! settings and window) produced to a topic of their own and read back by a plain
//! librdkafka consumer in the bench (same fetch settings as the bridge's, on the same
//! core) that does not decode them: what the broker and the client library cost on this
//! machine, the ceiling of any Kafka way in.
//!
//! Matching a message to its event without decoding it: the producer sends each to the
//! partition Kafka's partitioner would pick for its key (murmur2, positive, modulo the
//! partition count), and keeps per partition the tags it sent in order; an idempotent
//! producer keeps a partition's order, so the n-th message read from a partition is its
//! n-th tag.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::avro;
use super::broker::{FLOOR_TOPIC, PARTITIONS};
use super::measure::{Completions, Sender};
use super::produce::{KafkaProducer, Sent};
use crate::clock::monotonic_ns;
use crate::error::BenchError;

/// Per partition, the tags sent and not yet read back, oldest first (one thread uses
/// both halves; the mutex only makes the suite's shared state `Send`).
type Fifos = Arc<Mutex<Vec<VecDeque<u64>>>>;

fn fifos(f: &Fifos) -> MutexGuard<'_, Vec<VecDeque<u64>>> {
    f.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sending half: the `kafka-in` row's messages, to [`FLOOR_TOPIC`].
pub struct FloorIn {
    producer: KafkaProducer,
    node_ids: Vec<String>,
    partitions: Vec<i32>,
    buf: Vec<u8>,
    fifos: Fifos,
}

/// The reading half: a plain consumer of [`FLOOR_TOPIC`], every partition assigned.
pub struct FloorOut {
    consumer: BaseConsumer,
    fifos: Fifos,
}

/// Both halves, sharing the tags in flight.
pub fn start(brokers: &str, node_ids: Vec<String>, fetch_wait_max_ms: u32) -> Result<(FloorIn, FloorOut), BenchError> {
    let fifos: Fifos = Arc::new(Mutex::new(vec![VecDeque::new(); PARTITIONS as usize]));
    let partitions = node_ids.iter().map(|n| partition_of(n)).collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "rim-bench-floor")
        .set("group.id", "rim-bench-floor")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // As the bridge's consumer (src/bridge/clients.rs and the suite's settings).
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.wait.max.ms", fetch_wait_max_ms.to_string())
        .create()
        .map_err(|e| BenchError::transport("rdkafka", "creating the floor consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition_offset(FLOOR_TOPIC, p, Offset::Beginning)
            .map_err(|e| BenchError::transport("rdkafka", "floor partitions", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| BenchError::transport("rdkafka", "assigning the floor partitions", e))?;
    let producer = KafkaProducer::new(brokers, FLOOR_TOPIC)?;
    Ok((
        FloorIn {
            producer,
            node_ids,
            partitions,
            buf: Vec::with_capacity(256),
            fifos: fifos.clone(),
        },
        FloorOut { consumer, fifos },
    ))
}

/// The partition Kafka's default partitioner gives `key` (as the bridge's own producers
/// and the platform's Java clients do).
fn partition_of(key: &str) -> i32 {
    let h = rimd::ingest::nodes::murmur2(key.as_bytes()) & 0x7fff_ffff;
    (h % PARTITIONS) as i32
}

impl Sender for FloorIn {
    fn offer(&mut self, node: usize, tag: u64, timestamp_ms: i64, _now_ns: u64) -> Result<bool, BenchError> {
        let i = node % self.node_ids.len();
        let ev = avro::EventFields {
            node_id: &self.node_ids[i],
            timestamp_ms,
            metrics: [50.0, 0.5, tag as f64, 0.0],
        };
        avro::encode(super::SCHEMA_ID, &ev, &mut self.buf);
        let partition = self.partitions[i];
        if self.producer.try_send_to(&self.node_ids[i], partition, &self.buf)? == Sent::QueueFull {
            return Ok(false);
        }
        if let Some(q) = fifos(&self.fifos).get_mut(partition as usize) {
            q.push_back(tag);
        }
        Ok(true)
    }

    fn service(&mut self) -> Result<(), BenchError> {
        self.producer.service()
    }

    fn idle(&mut self) {
        std::thread::sleep(Duration::from_micros(20));
    }
}

impl Completions for FloorOut {
    fn drain(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u64, u64) -> Result<(), BenchError>,
    ) -> Result<(usize, u64), BenchError> {
        let mut read = 0;
        for _ in 0..max {
            let msg = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(BenchError::transport("rdkafka", "floor consume", e)),
            };
            let read_ns = monotonic_ns();
            let tag = usize::try_from(msg.partition())
                .ok()
                .and_then(|p| fifos(&self.fifos).get_mut(p).and_then(VecDeque::pop_front));
            match tag {
                Some(tag) => {
                    f(tag, read_ns)?;
                    read += 1;
                }
                None => {
                    return Err(BenchError::Integrity {
                        what: format!(
                            "the floor read a message of partition {} that was not sent",
                            msg.partition()
                        ),
                    })
                }
            }
        }
        Ok((read, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_kafkas_default_partitioner() {
        // Kafka: Utils.toPositive(Utils.murmur2(key)) % partitions.
        for key in ["rim:bench:g00:n0", "rim:bench:g42:n9999", ""] {
            let p = partition_of(key);
            assert!((0..PARTITIONS as i32).contains(&p), "{key}: {p}");
        }
        assert_eq!(
            partition_of("rim:bench:g01:n1"),
            ((rimd::ingest::nodes::murmur2(b"rim:bench:g01:n1") & 0x7fff_ffff) % 12) as i32
        );
    }
}
