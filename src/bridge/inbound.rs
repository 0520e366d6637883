//! The inbound side: a consumer group on the inbound topic; each message is decoded
//! (Confluent frame, the compiled plan of its writer schema id, straight into the event
//! the ring takes: no value tree, no allocation) and published on the in-process ring
//! into ingest, or sent to the DLQ.
//!
//! Batches: the thread takes up to `consume_batch_max` messages at a time with
//! librdkafka's batch call, from the queue the assigned partitions are forwarded to
//! ([`super::fetch`]), after serving the consumer's own queue (rebalances, errors); then it
//! settles and stores offsets once for the batch: the wait, the clock, the counters and the
//! offset bookkeeping are per batch, and nothing per message makes a system call. Commits (synchronous, every
//! `commit_interval_ms`) run on a thread of their own so that their broker round trip
//! never stalls consumption.
//!
//! Offsets: a message's offset is stored (and then committed, every
//! `commit_interval_ms`) only once it is *settled*: its event is durable (the ring's
//! durable position has passed it; its consumed position when persistence is off), or its
//! DLQ copy was acknowledged by the broker. Messages settle in consumption order, so the
//! committed offset of a partition never passes an unsettled message. A crash therefore
//! redelivers at most what was not yet committed; ingest drops the redelivered events whose
//! `event_id` is still in its node's dedup window (rebuilt from the journal on restart).
//! An event without an `event_id` gets one from its place in Kafka,
//! `kafka:{partition}:{offset}` ([`position_id`]): a redelivered copy carries the same
//! id, so it is de-duplicated by partition and offset the same way.
//!
//! Order: one thread publishes every message in partition order into one SPSC ring, and a
//! message that waits (retry with backoff, a full ring) holds back the ones after it, so
//! per-node order is kept.
//!
//! Rebalances: before partitions are revoked, the bridge waits (bounded) for their messages
//! to settle and commits synchronously, so the next owner starts after them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use rim_ring::{EventError, PublishError, SymbolKind};
use thiserror::Error;
use tracing::{debug, error, info, warn};

use super::clients::{forward_log, on_error, OutContext, Report};
use super::config::BridgeConfig;
use super::fetch::{Batch, FetchQueue, HeaderPair, Msg};
use super::health::{BridgeHealth, Side};
use super::registry::{RegistryError, Schemas};
use super::trace::{TraceIds, Traces};
use super::wire::{self, WireError};
use crate::agent::AgentFigures;
use crate::clock::Clock;
use crate::ingest::time::{TimeBounds, TimeRefusal};
use crate::peerlog::{self, PeerLog};
use rim_avro::DecodeError;

/// Messages of a batch that share one read of the clock for their publish time (at most
/// a few tens of microseconds apart; the ring reads the clock per event otherwise).
const STAMP_EVERY: usize = 32;
/// Calls of the consumer's `poll` per turn (for its events: rebalances, errors).
const EVENT_POLLS: u32 = 4;
/// Longest wait for a seek back (see [`Worker::handle_taken`]).
const SEEK_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a revoke waits for the revoked partitions' messages to settle.
const REVOKE_WAIT: Duration = Duration::from_secs(3);
/// Longest shutdown waits for everything handed to ingest to settle.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How often a degraded consumer asks the brokers for metadata to see if they are back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a message went to the DLQ.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Failure {
    /// Not a Confluent frame.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The Avro body does not decode under its writer schema.
    #[error("Avro body: {0}")]
    Avro(#[from] DecodeError),
    /// The writer schema could not be had.
    #[error(transparent)]
    Schema(#[from] RegistryError),
    /// Decoded, but breaks the data model (RimNodeId pattern, limits).
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
    /// The ring cannot carry the event (too large for it).
    #[error("event cannot be published: {0}")]
    Unpublishable(String),
    /// The event's time is outside the bounds around the daemon's clock.
    #[error("event time refused: {0}")]
    EventTime(#[from] TimeRefusal),
}

impl Failure {
    /// A short, stable name for the `dlq.error.kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Wire(_) => "bad-frame",
            // Decodes, but more metrics than the data model allows.
            Failure::Avro(DecodeError::TooManyMetrics(_)) => "invalid-event",
            Failure::Avro(_) => "bad-avro",
            Failure::Schema(RegistryError::Unreachable(_)) => "registry-unreachable",
            Failure::Schema(RegistryError::Refused(_)) => "registry-refused",
            Failure::Schema(RegistryError::UnknownId(_)) => "unknown-schema",
            Failure::Schema(_) => "bad-schema",
            Failure::Invalid(_) => "invalid-event",
            Failure::Unpublishable(_) => "unpublishable",
            Failure::EventTime(_) => "event-time",
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, Failure::Schema(e) if e.is_transient())
    }
}

/// When a consumed message's offset may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Once the ring's durable (or consumed) position reaches this.
    Ring(u64),
    /// Once the DLQ copy with this token is acknowledged.
    Dlq(u64),
    /// Now.
    Done,
}

#[derive(Debug)]
struct Pending {
    partition: i32,
    offset: i64,
    settle: Settle,
}

/// A DLQ message kept until the broker acknowledges it (sent again if it fails).
struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    sent: bool,
}

/// Everything between consuming a message and committing its offset. Lives in the
/// consumer's context so that the revoke callback (run inside `poll`, on the same thread)
/// can settle and commit too.
pub(crate) struct Tracker {
    ring: rim_ring::Producer,
    durable: bool,
    topic: String,
    pending: VecDeque<Pending>,
    dlq: BaseProducer<OutContext>,
    dlq_topic: String,
    dead: HashMap<u64, DeadLetter>,
    next_token: u64,
    reports: Vec<Report>,
    health: Arc<BridgeHealth>,
    /// Offsets were stored since the last commit.
    stored: bool,
    /// Per partition, the highest offset settled by the current `settle` (kept to reuse
    /// its allocation).
    highest: Vec<(i32, i64)>,
}

impl Tracker {
    fn settled_position(&self) -> u64 {
        if self.durable {
            self.ring.durable_position()
        } else {
            self.ring.consumed_position()
        }
    }

    /// Serves DLQ delivery reports, sends failed DLQ copies again, pops every settled
    /// message from the front and stores its offset. Returns how many settled.
    fn settle(&mut self, consumer: &BaseConsumer<InContext>) -> usize {
        self.dlq.poll(Duration::ZERO);
        self.dlq.context().take_reports(&mut self.reports);
        for r in std::mem::take(&mut self.reports) {
            match r.result {
                Ok(()) => {
                    if self.dead.remove(&r.token).is_some() {
                        BridgeHealth::bump(&self.health.dlq, 1);
                    }
                    for p in self.pending.iter_mut() {
                        if p.settle == Settle::Dlq(r.token) {
                            p.settle = Settle::Done;
                        }
                    }
                }
                Err(e) => {
                    warn!("dlq delivery failed, sending again: {e}");
                    if let Some(d) = self.dead.get_mut(&r.token) {
                        d.sent = false;
                    }
                }
            }
        }
        self.send_dead_letters();
        let position = self.settled_position();
        let mut highest = std::mem::take(&mut self.highest);
        highest.clear();
        let mut n = 0;
        while let Some(front) = self.pending.front() {
            let settled = match front.settle {
                Settle::Ring(pos) => position >= pos,
                Settle::Dlq(_) => false,
                Settle::Done => true,
            };
            if !settled {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                match highest.iter_mut().find(|(part, _)| *part == p.partition) {
                    Some(h) => h.1 = h.1.max(p.offset),
                    None => highest.push((p.partition, p.offset)),
                }
                n += 1;
            }
        }
        for &(partition, offset) in &highest {
            // librdkafka's (legacy) offset store takes the message's offset and commits the
            // next one, `offset + 1`, itself.
            match consumer.store_offset(&self.topic, partition, offset) {
                Ok(()) => self.stored = true,
                // The partition was revoked meanwhile: its next owner reads it again.
                Err(e) => debug!(partition, offset, "offset not stored: {e}"),
            }
        }
        self.highest = highest;
        n
    }

    fn send_dead_letters(&mut self) {
        for (token, d) in self.dead.iter_mut().filter(|(_, d)| !d.sent) {
            let mut headers = OwnedHeaders::new_with_capacity(d.headers.len());
            for (k, v) in &d.headers {
                headers = headers.insert(Header {
                    key: k.as_str(),
                    value: v.as_deref(),
                });
            }
            let mut record: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(&self.dlq_topic, *token as usize).headers(headers);
            if let Some(k) = &d.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &d.payload {
                record = record.payload(p.as_slice());
            }
            match self.dlq.send(record) {
                Ok(()) => d.sent = true,
                // Queue full or broker trouble: tried again at the next settle.
                Err((e, _)) => debug!("dlq send deferred: {e}"),
            }
        }
    }

    /// Forgets the pending messages of revoked partitions (their next owner reads them
    /// again from the committed offset).
    fn forget(&mut self, partitions: &[i32]) -> usize {
        let before = self.pending.len();
        self.pending.retain(|p| !partitions.contains(&p.partition));
        before - self.pending.len()
    }

    fn pending_in(&self, partitions: &[i32]) -> usize {
        self.pending
            .iter()
            .filter(|p| partitions.contains(&p.partition))
            .count()
    }
}

/// The consumer's context: health, and the tracker.
pub(crate) struct InContext {
    health: Arc<BridgeHealth>,
    tracker: Mutex<Tracker>,
    /// Where assigned partitions' messages are forwarded ([`super::fetch`]); set once the
    /// consumer exists, taken out at shutdown (before the consumer goes).
    fetch: Mutex<Option<FetchQueue>>,
}

impl InContext {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // A panic while holding the lock cannot leave the tracker half-updated in a way
        // that matters more than stopping the bridge would: keep going with its state.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fetch_queue(&self) -> MutexGuard<'_, Option<FetchQueue>> {
        self.fetch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for InContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(Side::In, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        on_error(&self.health, Side::In, &error, reason);
    }
}

impl ConsumerContext for InContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = partitions(tpl);
                let mut t = self.tracker();
                let deadline = Instant::now() + REVOKE_WAIT;
                while t.pending_in(&parts) > 0 && Instant::now() < deadline {
                    if t.settle(consumer) == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => BridgeHealth::bump(&self.health.commits, 1),
                    Err(e) => debug!("commit at revoke: {e}"),
                }
                t.stored = false;
                let dropped = t.forget(&parts);
                if dropped > 0 {
                    warn!(
                        dropped,
                        "partitions revoked before {dropped} messages were durable: their next owner reads them again"
                    );
                }
                info!(partitions = ?parts, "kafka: partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                // Before the assignment takes effect: no message of these partitions can
                // have reached the consumer's own queue yet.
                let mut forwarded = 0;
                if let Some(q) = self.fetch_queue().as_ref() {
                    let rk = consumer.client().native_ptr();
                    for e in tpl.elements() {
                        if q.forward(rk, e.topic(), e.partition()) {
                            forwarded += 1;
                        } else {
                            warn!(
                                partition = e.partition(),
                                "kafka: partition queue not forwarded; its messages come one by one"
                            );
                        }
                    }
                }
                info!(partitions = ?partitions(tpl), forwarded, "kafka: partitions assigned");
                self.health.ok(Side::In);
            }
            Rebalance::Error(e) => on_error(&self.health, Side::In, e, "rebalance"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                BridgeHealth::bump(&self.health.commits, 1);
                self.health.ok(Side::In);
            }
            // Nothing stored since the last commit: not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => on_error(&self.health, Side::In, &e, "offset commit"),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// What the inbound thread owns.
pub(crate) struct Inbound {
    consumer: BaseConsumer<InContext>,
    w: Worker,
}

/// Everything but the consumer (a consumed message borrows the consumer while the worker
/// handles it).
struct Worker {
    cfg: BridgeConfig,
    schemas: Schemas,
    /// Where correlation ids go for the outbox's decisions; `None` when no decision is
    /// published, and then a message's headers are read only for a DLQ copy (librdkafka
    /// allocates to parse them, even when there are none: 11% of this thread measured).
    traces: Option<Arc<Mutex<Traces>>>,
    stop: Arc<AtomicBool>,
    health: Arc<BridgeHealth>,
    bounds: TimeBounds,
    clock: Clock,
    /// The `rimd-kafka-in` agent's figures: a turn per batch, a wait per empty poll.
    figures: Arc<AgentFigures>,
    /// Rate limit on the per-message dead-letter line.
    dead_log: PeerLog,
    /// The id given to an event without one ([`position_id`]); reused, never reallocated
    /// after the first.
    id_buf: String,
}

type InConsumer = BaseConsumer<InContext>;

/// A message's headers, copied: (name, value).
type HeaderList = Vec<HeaderPair>;

/// What [`Inbound::new`] needs.
pub(crate) struct InboundSetup {
    pub cfg: BridgeConfig,
    pub ring: rim_ring::Producer,
    pub durable: bool,
    pub schemas: Schemas,
    /// `None` when no decision is published (see [`Worker`]'s field).
    pub traces: Option<Arc<Mutex<Traces>>>,
    pub stop: Arc<AtomicBool>,
    pub health: Arc<BridgeHealth>,
    pub bounds: TimeBounds,
    pub clock: Clock,
    pub figures: Arc<AgentFigures>,
}

/// One batch's clock readings and what it did (counted once for the batch).
#[derive(Default)]
struct Turn {
    /// The daemon's clock, ms: event times are checked against it.
    now_ms: i64,
    /// The publish time of the events (0: the ring reads the clock per event).
    publish_ns: u64,
    /// A wait (ring full, registry retry) made `publish_ns` old.
    stale: bool,
    /// A message's schema needed retries: the registry is in trouble.
    retried: bool,
    consumed: u64,
    ingested: u64,
}

impl Inbound {
    /// Creates the consumer and the DLQ producer and subscribes.
    pub(crate) fn new(s: InboundSetup) -> Result<Self, super::BridgeError> {
        let dlq = super::clients::producer(&s.cfg, OutContext::new(s.health.clone()))?;
        let tracker = Tracker {
            ring: s.ring,
            durable: s.durable,
            topic: s.cfg.in_topic.clone(),
            pending: VecDeque::with_capacity(s.cfg.in_flight_max.min(1 << 16)),
            dlq,
            dlq_topic: s.cfg.dlq_topic(),
            dead: HashMap::new(),
            next_token: 0,
            reports: Vec::new(),
            health: s.health.clone(),
            stored: false,
            highest: Vec::new(),
        };
        let ctx = InContext {
            health: s.health.clone(),
            tracker: Mutex::new(tracker),
            fetch: Mutex::new(None),
        };
        let consumer = super::clients::consumer(&s.cfg, ctx)?;
        consumer
            .subscribe(&[s.cfg.in_topic.as_str()])
            .map_err(super::BridgeError::Kafka)?;
        // Created once nothing can fail before `Inbound` (whose drop takes it out before
        // the consumer goes) exists; partitions are assigned later, inside `poll`.
        let fetch = FetchQueue::new(consumer.client().native_ptr());
        if fetch.is_none() {
            warn!("kafka bridge: no queue for batch consumption; consuming one message at a time");
        }
        *consumer.context().fetch_queue() = fetch;
        Ok(Self {
            consumer,
            w: Worker {
                cfg: s.cfg,
                schemas: s.schemas,
                traces: s.traces,
                stop: s.stop,
                health: s.health,
                bounds: s.bounds,
                dead_log: PeerLog::new(
                    "kafka dead-letter",
                    peerlog::BURST,
                    peerlog::WINDOW,
                    Arc::new(std::sync::atomic::AtomicU64::new(0)),
                    s.clock.clone(),
                ),
                clock: s.clock,
                figures: s.figures,
                id_buf: String::with_capacity(64),
            },
        })
    }

    /// The thread's loop, until `stop`: settle, take a batch. Offsets are committed every
    /// `commit_interval_ms` by a thread of its own (`rimd-kafka-commit`, which inherits the
    /// cold core): a synchronous commit waits a broker round trip, and on the consuming
    /// thread that wait stalled every message behind it.
    pub(crate) fn run(mut self) {
        info!(topic = %self.w.cfg.in_topic, group = %self.w.cfg.group_id, "kafka bridge: consuming");
        let Inbound { consumer, w } = &mut self;
        let consumer = &*consumer;
        let commit_every = Duration::from_millis(w.cfg.commit_interval_ms);
        let health = w.health.clone();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let committer = std::thread::Builder::new()
                .name("rimd-kafka-commit".into())
                .spawn_scoped(s, || commit_loop(consumer, &health, commit_every, &done));
            let inline_commits = match committer {
                Ok(_) => None,
                Err(e) => {
                    warn!("kafka bridge: no commit thread ({e}); committing on the consuming thread");
                    Some(commit_every)
                }
            };
            consume_loop(consumer, w, inline_commits);
            done.store(true, Ordering::Release);
        });
        shut_down(consumer, w);
    }
}

impl Drop for Inbound {
    /// The fetch queue goes before the consumer, on every path (librdkafka's destroy
    /// waits for the application's queues): what it still holds is dropped, and read again
    /// from the committed offsets by the next owner.
    fn drop(&mut self) {
        drop(self.consumer.context().fetch_queue().take());
    }
}

/// Settles and takes batches until `stop`; commits too when `inline_commits` is given
/// (no commit thread).
fn consume_loop(consumer: &InConsumer, w: &mut Worker, inline_commits: Option<Duration>) {
    // Dropped on return, before the consumer: librdkafka's destroy waits for its messages.
    let mut taken = Batch::new();
    let mut last_commit = Instant::now();
    let mut last_probe = Instant::now();
    while !w.stopping() {
        let pending = {
            let mut t = consumer.context().tracker();
            t.settle(consumer);
            t.pending.len()
        };
        if inline_commits.is_some_and(|every| last_commit.elapsed() >= every) {
            commit(consumer, &w.health, false);
            last_commit = Instant::now();
        }
        if !w.health.is_ok(Side::In) && last_probe.elapsed() >= PROBE_INTERVAL {
            probe(consumer, w);
            last_probe = Instant::now();
        }
        if pending >= w.cfg.in_flight_max {
            // Ingest or the journal is behind: wait for it rather than read more.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let room = (w.cfg.in_flight_max - pending).min(w.cfg.consume_batch_max);
        w.batch(consumer, &mut taken, room);
    }
}

/// Commits what settled every `every`, until `done` (checked every 10 ms at most, so
/// shutdown does not wait out an interval).
fn commit_loop(consumer: &InConsumer, health: &BridgeHealth, every: Duration, done: &AtomicBool) {
    let mut last = Instant::now();
    while !done.load(Ordering::Acquire) {
        let left = every.saturating_sub(last.elapsed());
        if left.is_zero() {
            commit(consumer, health, false);
            last = Instant::now();
        } else {
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
    }
}

/// Commits the stored offsets, synchronously: the result is known here (librdkafka's
/// asynchronous commit results do not reach a `BaseConsumer`'s poll: tried, the commit
/// callback never ran). Skipped while the consumer side is degraded unless `force`d (the
/// offsets stay stored and go with the first commit after recovery).
fn commit(consumer: &InConsumer, health: &BridgeHealth, force: bool) {
    let mut t = consumer.context().tracker();
    if !t.stored || (!force && !health.is_ok(Side::In)) {
        return;
    }
    t.stored = false;
    drop(t);
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => BridgeHealth::bump(&health.commits, 1),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            // The offsets stay stored in librdkafka: the next round commits them.
            consumer.context().tracker().stored = true;
            on_error(health, Side::In, &e, "offset commit");
        }
    }
}

fn probe(consumer: &InConsumer, w: &Worker) {
    match consumer.fetch_metadata(Some(w.cfg.in_topic.as_str()), Duration::from_secs(1)) {
        Ok(_) => w.health.ok(Side::In),
        Err(e) => on_error(&w.health, Side::In, &e, "metadata probe"),
    }
}

/// Waits (bounded) for what was handed to ingest to settle, commits, and closes.
fn shut_down(consumer: &InConsumer, w: &Worker) {
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    loop {
        let left = {
            let mut t = consumer.context().tracker();
            t.settle(consumer);
            t.pending.len()
        };
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                warn!(
                    left,
                    "kafka bridge: stopping with messages not yet durable; they will be read again"
                );
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    commit(consumer, &w.health, true);
    {
        let t = consumer.context().tracker();
        let _ = t.dlq.flush(Duration::from_secs(2));
    }
    info!("kafka bridge: consumer stopped");
    // Dropping the consumer leaves the group (its revoke callback commits again).
}

/// The id of an event without one: its partition and offset, which a redelivered copy of
/// the message shares (so ingest's dedup drops it), written into `buf`.
pub fn position_id(partition: i32, offset: i64, buf: &mut String) -> &str {
    // Not `write!`: a formatter per message was 7% of the consuming thread.
    let mut num = itoa::Buffer::new();
    buf.clear();
    buf.push_str("kafka:");
    buf.push_str(num.format(partition));
    buf.push(':');
    buf.push_str(num.format(offset));
    buf.as_str()
}

impl Worker {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Takes up to `room` messages and hands each to ingest (or the DLQ). The consumer's
    /// own queue is served first, with no message in hand: rebalance callbacks run there,
    /// and it holds the messages of any partition not forwarded to the fetch queue. Then
    /// one batch from the fetch queue, waiting up to 50 ms for its first message when the
    /// consumer's queue had nothing.
    fn batch(&mut self, consumer: &InConsumer, taken: &mut Batch, room: usize) {
        let mut turn = Turn {
            now_ms: self.clock.now_ms(),
            ..Turn::default()
        };
        let forwarded = consumer.context().fetch_queue().is_some();
        let wait = Duration::from_millis(50);
        // Without a fetch queue every message comes this way, the first one waited for.
        let mut first_wait = if forwarded { Duration::ZERO } else { wait };
        // The batch's own time starts with its first message, after the wait.
        let mut started: Option<Instant> = None;
        // `poll` serves one event per call and says nothing when it served one, so it is
        // called a few times whatever it returns.
        let mut empty_polls = 0;
        while (turn.consumed as usize) < room && empty_polls < EVENT_POLLS && !self.stopping() {
            match consumer.poll(std::mem::take(&mut first_wait)) {
                None => empty_polls += 1,
                Some(Ok(m)) => {
                    started.get_or_insert_with(Instant::now);
                    if let Some(msg) = Msg::of(&m) {
                        let mut ev = rim_avro::Event::empty();
                        self.handle(consumer, msg, None, &mut ev, &mut turn);
                    }
                }
                Some(Err(e)) => {
                    on_error(&self.health, Side::In, &e, "consume");
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
        let left = room.saturating_sub(turn.consumed as usize);
        if forwarded && left > 0 && !self.stopping() {
            let wait = if turn.consumed == 0 { wait } else { Duration::ZERO };
            let n = match consumer.context().fetch_queue().as_ref() {
                Some(q) => q.take(wait, left, taken),
                None => 0,
            };
            if n > 0 {
                started.get_or_insert_with(Instant::now);
                self.handle_taken(consumer, taken, &mut turn);
            }
            taken.clear();
        }
        match started {
            Some(t) => self.figures.turn(t.elapsed().as_nanos() as u64, turn.consumed as usize),
            None => self.figures.waited(),
        }
        if turn.consumed > 0 {
            BridgeHealth::bump(&self.health.consumed, turn.consumed);
            BridgeHealth::bump(&self.health.ingested, turn.ingested);
            self.health.ok(Side::In);
        }
    }

    /// Handles the messages of one batch in order, decoding each into the same event; the
    /// node symbol of each next message is prefetched while the one before it is
    /// published, and the events' publish time is read every [`STAMP_EVERY`] messages and
    /// after any wait.
    ///
    /// Once a message needed schema retries (the registry failing), the rest of the batch
    /// is not handled now: each could wait out its own retries, and without a `poll` in
    /// between the group would drop this member after `max.poll.interval.ms`. Their
    /// partitions are sought back to them, to be read again in later turns.
    fn handle_taken(&mut self, consumer: &InConsumer, taken: &Batch, turn: &mut Turn) {
        if let Some(first) = taken.get(0) {
            prefetch_node(&mut consumer.context().tracker(), first);
        }
        let mut ev = rim_avro::Event::empty();
        let mut rewound: Vec<i32> = Vec::new();
        let mut errors = 0;
        let mut i = 0;
        while let Some(msg) = taken.get(i) {
            if i % STAMP_EVERY == 0 || std::mem::take(&mut turn.stale) {
                turn.publish_ns = rim_ring::clock::monotonic_ns();
            }
            i += 1;
            if let Some(code) = msg.error() {
                // A partition's fetch failed (librdkafka goes on fetching it): said once
                // per batch.
                if errors == 0 {
                    on_error(&self.health, Side::In, &KafkaError::MessageConsumption(code), "consume");
                }
                errors += 1;
                continue;
            }
            if rewound.contains(&msg.partition()) {
                continue;
            }
            self.handle(consumer, msg, taken.get(i), &mut ev, turn);
            if self.stopping() {
                // The rest are not handed over, so not committed: read again.
                break;
            }
            if std::mem::take(&mut turn.retried) && rewound.is_empty() {
                rewound = self.rewind(consumer, taken, i);
            }
        }
    }

    /// Seeks every partition with messages in `taken[from..]` back to its first one;
    /// returns the partitions sought (a partition whose seek fails keeps being handled
    /// from the batch, so that none of its messages is skipped).
    fn rewind(&self, consumer: &InConsumer, taken: &Batch, from: usize) -> Vec<i32> {
        let mut first: Vec<(i32, i64)> = Vec::new();
        for msg in (from..).map_while(|j| taken.get(j)).filter(|m| m.error().is_none()) {
            if !first.iter().any(|(p, _)| *p == msg.partition()) {
                first.push((msg.partition(), msg.offset()));
            }
        }
        let mut sought = Vec::with_capacity(first.len());
        for (partition, offset) in first {
            match consumer.seek(&self.cfg.in_topic, partition, Offset::Offset(offset), SEEK_TIMEOUT) {
                Ok(()) => sought.push(partition),
                Err(e) => warn!(
                    partition,
                    offset, "kafka bridge: could not seek back ({e}); handling the batch on"
                ),
            }
        }
        if !sought.is_empty() {
            info!(partitions = ?sought, "kafka bridge: schema registry failing; the rest of the batch is read again later");
        }
        sought
    }

    /// Decodes `msg` into `decoded` and publishes its event (or dead-letters it); `next`,
    /// the message after it, gets its node symbol prefetched under the same lock as the
    /// publish.
    fn handle<'b>(
        &mut self,
        consumer: &InConsumer,
        msg: Msg<'b>,
        next: Option<Msg<'b>>,
        decoded: &mut rim_avro::Event<'b>,
        turn: &mut Turn,
    ) {
        turn.consumed += 1;
        let payload = msg.payload().unwrap_or(&[]);
        match decode_with_retries(self, consumer, payload, decoded, turn.now_ms) {
            Ok(0) => {}
            Ok(_) => {
                turn.retried = true;
                turn.stale = true;
            }
            Err((failure, retries)) => {
                turn.retried |= retries > 0;
                turn.stale |= retries > 0;
                return self.dead_letter(consumer, msg, &failure, retries);
            }
        }
        if let Some(traces) = &self.traces {
            if let Some(h) = msg.headers() {
                remember_trace(traces, decoded.rim_node_id, decoded.timestamp, &h);
            }
        }
        let mut ev = wire::event_ref(decoded);
        // After a retry's wait the batch's stamp is old: the ring reads the clock instead.
        ev.publish_ns = if turn.stale { 0 } else { turn.publish_ns };
        if ev.event_id.is_none() {
            ev.event_id = Some(position_id(msg.partition(), msg.offset(), &mut self.id_buf));
        }
        let published = publish(&self.stop, &self.health, consumer, msg, &mut ev, next);
        // A publish that waited for room cleared the stamp: the next events' is old too.
        turn.stale |= ev.publish_ns == 0;
        match published {
            Ok(true) => turn.ingested += 1,
            Ok(false) => {}
            Err(failure) => self.dead_letter(consumer, msg, &failure, 0),
        }
    }

    /// Sleeps up to `d` in short slices, settling and watching `stop`.
    fn sleep_settling(&self, consumer: &InConsumer, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline && !self.stopping() {
            consumer.context().tracker().settle(consumer);
            std::thread::sleep(Duration::from_millis(10).min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    fn dead_letter(&mut self, consumer: &InConsumer, msg: Msg<'_>, failure: &Failure, retries: u32) {
        // Any Kafka producer can send bad messages: the line is rate-limited (the DLQ
        // copy and the health counter still record every one).
        if self.dead_log.admit() {
            warn!(
                partition = msg.partition(),
                offset = msg.offset(),
                kind = failure.kind(),
                retries,
                "kafka bridge: to the DLQ: {failure}"
            );
        }
        self.health.error(&format!("dead-lettered: {failure}"));
        let mut all = msg.headers().unwrap_or_default();
        all.extend(dlq_headers(
            msg,
            failure,
            retries,
            &self.cfg.in_topic,
            self.clock.unix_ms(),
        ));
        let mut t = consumer.context().tracker();
        let token = t.next_token;
        t.next_token += 1;
        t.dead.insert(
            token,
            DeadLetter {
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().map(<[u8]>::to_vec),
                headers: all,
                sent: false,
            },
        );
        t.pending.push_back(Pending {
            partition: msg.partition(),
            offset: msg.offset(),
            settle: Settle::Dlq(token),
        });
        t.send_dead_letters();
    }
}

fn remember_trace(traces: &Mutex<Traces>, node: &str, timestamp: i64, headers: &[HeaderPair]) {
    let Some(ids) = TraceIds::from_headers(headers) else {
        return;
    };
    if let Ok(mut t) = traces.lock() {
        t.insert(node, timestamp, ids);
    }
}

/// Asks the CPU for the intake ring's symbol slot of the message's key, which the
/// platform's producers set to the event's node id: the slot is then loaded while the
/// body is decoded (a miss there was 16% of this thread with 10,000 nodes). A key that
/// is not the node id only wastes the hint.
fn prefetch_node(t: &mut Tracker, msg: Msg<'_>) {
    if let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) {
        t.ring.prefetch_symbol(SymbolKind::NodeId, key);
    }
}

/// Decodes a message with the plan of its writer schema and checks its event time
/// against the daemon's clock (read once per batch).
fn decode<'m>(
    schemas: &mut Schemas,
    bounds: &TimeBounds,
    payload: &'m [u8],
    ev: &mut rim_avro::Event<'m>,
    now_ms: i64,
) -> Result<(), Failure> {
    let (id, body) = wire::split(payload)?;
    schemas.get(id)?.decode_into(body, ev)?;
    bounds.check(ev.timestamp, now_ms)?;
    Ok(())
}

/// Decodes, retrying what may pass (the registry unreachable or refusing) with exponential
/// backoff; returns the retries made, with the failure if it did not pass.
fn decode_with_retries<'m>(
    w: &mut Worker,
    consumer: &InConsumer,
    payload: &'m [u8],
    ev: &mut rim_avro::Event<'m>,
    mut now_ms: i64,
) -> Result<u32, (Failure, u32)> {
    let mut retries = 0u32;
    loop {
        match decode(&mut w.schemas, &w.bounds, payload, ev, now_ms) {
            Ok(()) => return Ok(retries),
            Err(f) if f.is_transient() && retries < w.cfg.retries_max && !w.stopping() => {
                let delay = backoff(retries, &w.cfg);
                retries += 1;
                BridgeHealth::bump(&w.health.retries, 1);
                w.health.error(&format!("{f} (retry {retries} in {delay:?})"));
                warn!(retry = retries, ?delay, "kafka bridge: {f}");
                w.sleep_settling(consumer, delay);
                now_ms = w.clock.now_ms();
            }
            Err(f) => return Err((f, retries)),
        }
    }
}

/// Publishes on the ring, waiting while it is full. `Ok(true)`: published; `Ok(false)`:
/// not, and not to be committed (stopping, or the ring is gone); `Err`: for the DLQ.
fn publish(
    stop: &AtomicBool,
    health: &BridgeHealth,
    consumer: &InConsumer,
    msg: Msg<'_>,
    ev: &mut rim_ring::event::EventRef<'_>,
    next: Option<Msg<'_>>,
) -> Result<bool, Failure> {
    let mut waits = 0u32;
    loop {
        let result = {
            let mut t = consumer.context().tracker();
            let r = t.ring.try_publish_event(ev);
            if let Ok(pos) = r {
                t.pending.push_back(Pending {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    settle: Settle::Ring(pos),
                });
                if let Some(next) = next {
                    prefetch_node(&mut t, next);
                }
            }
            r
        };
        match result {
            Ok(_) => return Ok(true),
            Err(PublishError::Full { .. }) => {
                if waits == 0 {
                    BridgeHealth::bump(&health.ring_full, 1);
                }
                // Stamped when it is finally published (the ring reads the clock).
                ev.publish_ns = 0;
                waits = waits.saturating_add(1);
                if stop.load(Ordering::Acquire) {
                    // Not settled, so not committed: read again after a restart.
                    return Ok(false);
                }
                consumer.context().tracker().settle(consumer);
                std::thread::sleep(Duration::from_micros(if waits < 100 { 50 } else { 1000 }));
            }
            Err(PublishError::Invalid(e)) => return Err(Failure::Invalid(e)),
            Err(e @ PublishError::TooLarge { .. }) => return Err(Failure::Unpublishable(e.to_string())),
            Err(e) => {
                // Quarantined or closed: the daemon is going away; leave uncommitted.
                error!("kafka bridge: ring into ingest refused: {e}");
                stop.store(true, Ordering::Release);
                return Ok(false);
            }
        }
    }
}

/// The headers a DLQ copy carries besides the original's.
fn dlq_headers(msg: Msg<'_>, failure: &Failure, retries: u32, topic: &str, now_ms: u64) -> HeaderList {
    let h = |k: &str, v: String| (k.to_owned(), Some(v.into_bytes()));
    vec![
        h("dlq.error", failure.to_string()),
        h("dlq.error.kind", failure.kind().to_owned()),
        h("dlq.retry.count", retries.to_string()),
        h("dlq.original.topic", topic.to_owned()),
        h("dlq.original.partition", msg.partition().to_string()),
        h("dlq.original.offset", msg.offset().to_string()),
        h("dlq.original.timestamp", msg.timestamp_ms().to_string()),
        h("dlq.timestamp", now_ms.to_string()),
    ]
}

/// The delay before retry `n` (0-based): `retry_backoff_ms × 2ⁿ`, capped.
pub(crate) fn backoff(n: u32, cfg: &BridgeConfig) -> Duration {
    let ms = cfg
        .retry_backoff_ms
        .saturating_mul(1u64.checked_shl(n).unwrap_or(u64::MAX))
        .min(cfg.retry_backoff_max_ms);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = BridgeConfig {
            retry_backoff_ms: 1_000,
            retry_backoff_max_ms: 30_000,
            ..BridgeConfig::default()
        };
        let got: Vec<u64> = (0..7).map(|n| backoff(n, &cfg).as_millis() as u64).collect();
        assert_eq!(got, vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(backoff(200, &cfg), Duration::from_secs(30));
    }

    #[test]
    fn failure_kinds_name_the_cause() {
        assert_eq!(Failure::Wire(WireError::BadMagic(1)).kind(), "bad-frame");
        assert_eq!(Failure::Avro(DecodeError::BadUtf8(0)).kind(), "bad-avro");
        assert_eq!(Failure::Avro(DecodeError::TooManyMetrics(64)).kind(), "invalid-event");
        assert_eq!(Failure::Schema(RegistryError::UnknownId(3)).kind(), "unknown-schema");
        assert_eq!(
            Failure::Schema(RegistryError::Refused("401".into())).kind(),
            "registry-refused"
        );
        assert!(Failure::Schema(RegistryError::Unreachable("x".into())).is_transient());
        assert!(Failure::Schema(RegistryError::Refused("x".into())).is_transient());
        assert!(!Failure::Schema(RegistryError::UnknownId(3)).is_transient());
        assert!(!Failure::Wire(WireError::Truncated(0)).is_transient());
    }

    #[test]
    fn an_event_without_an_id_is_named_by_its_place_in_kafka() {
        let mut buf = String::new();
        assert_eq!(position_id(3, 1_234, &mut buf), "kafka:3:1234");
        assert_eq!(
            position_id(i32::MAX, i64::MAX, &mut buf),
            "kafka:2147483647:9223372036854775807"
        );
        assert!(buf.len() <= rim_ring::event::EVENT_ID_BYTES_MAX);
        assert_eq!(position_id(0, 0, &mut buf), "kafka:0:0");
        assert_eq!(position_id(-1, i64::MIN, &mut buf), "kafka:-1:-9223372036854775808");
    }
}
