//! The outbound side: the redb store is the outbox. Capsules (by their rising sequence)
//! and each reflex shard's decisions (the audit log, by chain sequence) are read from a
//! cursor and published as JSON, keyed by RimNodeId, with an idempotent producer.
//!
//! Cursors: each stream's cursor is the lowest sequence not yet acknowledged by the broker
//! (a delivery report); it is written to the store's `outbox_cursors` table (a durable redb
//! transaction) every `cursor_interval_ms` and at shutdown. A restart resumes from the
//! stored cursor, so nothing committed is lost; what was delivered after the last cursor
//! write is sent again (at-least-once: consumers de-duplicate by capsule id, or by shard and
//! chain sequence). A failed delivery rewinds its stream to the cursor.
//!
//! Why redb rather than a cursor file: the store is already open and fsynced by its own
//! transactions, a cursor table costs no new file format, and a cursor and the rows it
//! points into live in one file, so they cannot be restored from different backups.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rim_capsule::{Capsule, Store};

use crate::agent::AgentFigures;
use crate::persist::audit::DecisionLog;
use tracing::{error, info, warn};

use super::clients::{OutContext, Report};
use super::config::BridgeConfig;
use super::health::{BridgeHealth, Side};
use super::trace::Traces;
use crate::reflex::decision;

/// Cursor name of the capsule stream.
pub const CAPSULES_STREAM: &str = "kafka:capsules";
/// How often the list of decision shards is read again.
const SHARDS_INTERVAL: Duration = Duration::from_secs(1);
/// How often a degraded producer asks the brokers for metadata.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest shutdown waits for deliveries in flight.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The cursor name of shard `shard`'s decisions.
pub fn decisions_stream(shard: u16) -> String {
    format!("kafka:decisions:{shard}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Capsules,
    Decisions(u16),
}

struct Stream {
    name: String,
    kind: Kind,
    /// Lowest sequence not yet acknowledged.
    cursor: u64,
    /// The cursor as last written to the store.
    saved: u64,
    /// Next sequence to read and send.
    next: u64,
    in_flight: BTreeSet<u64>,
    /// A delivery failed: once nothing is in flight, send again from the cursor.
    rewind: bool,
}

/// One message ready to send.
struct Outgoing {
    seq: u64,
    key: String,
    payload: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// What the outbox thread needs.
pub(crate) struct OutboxSetup {
    pub cfg: BridgeConfig,
    pub log: DecisionLog,
    pub traces: Arc<Mutex<Traces>>,
    pub stop: Arc<AtomicBool>,
    pub health: Arc<BridgeHealth>,
    /// The `rimd-kafka-out` agent's figures.
    pub figures: Arc<AgentFigures>,
}

pub(crate) struct Outbox {
    cfg: BridgeConfig,
    store: Arc<Store>,
    log: DecisionLog,
    traces: Arc<Mutex<Traces>>,
    stop: Arc<AtomicBool>,
    health: Arc<BridgeHealth>,
    producer: BaseProducer<OutContext>,
    streams: Vec<Stream>,
    /// Delivery token → (stream index, sequence).
    tokens: HashMap<u64, (usize, u64)>,
    next_token: u64,
    reports: Vec<Report>,
    figures: Arc<AgentFigures>,
}

impl Outbox {
    pub(crate) fn new(s: OutboxSetup) -> Result<Self, super::BridgeError> {
        let producer = super::clients::producer(&s.cfg, OutContext::new(s.health.clone()))?;
        let mut o = Self {
            producer,
            streams: Vec::new(),
            tokens: HashMap::new(),
            next_token: 0,
            reports: Vec::new(),
            cfg: s.cfg,
            store: s.log.store().clone(),
            log: s.log,
            traces: s.traces,
            stop: s.stop,
            health: s.health,
            figures: s.figures,
        };
        if o.cfg.publish_capsules {
            o.add_stream(CAPSULES_STREAM.to_owned(), Kind::Capsules)?;
        }
        Ok(o)
    }

    fn add_stream(&mut self, name: String, kind: Kind) -> Result<(), super::BridgeError> {
        let cursor = self
            .store
            .outbox_cursor(&name)
            .map_err(super::BridgeError::Store)?
            .unwrap_or(0);
        info!(stream = %name, cursor, "kafka outbox: stream resumes");
        self.streams.push(Stream {
            name,
            kind,
            cursor,
            saved: cursor,
            next: cursor,
            in_flight: BTreeSet::new(),
            rewind: false,
        });
        Ok(())
    }

    /// The thread's loop, until `stop`.
    pub(crate) fn run(mut self) {
        let interval = Duration::from_millis(self.cfg.outbox_interval_ms);
        let cursor_every = Duration::from_millis(self.cfg.cursor_interval_ms);
        let mut last_shards: Option<Instant> = None;
        let mut last_save = Instant::now();
        let mut last_probe = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let started = Instant::now();
            let sent_before = self.next_token;
            let reports = self.apply_reports();
            self.check_fatal();
            if self.cfg.publish_decisions && last_shards.is_none_or(|t| t.elapsed() >= SHARDS_INTERVAL) {
                self.refresh_shards();
                last_shards = Some(Instant::now());
            }
            if last_save.elapsed() >= cursor_every {
                self.save_cursors();
                last_save = Instant::now();
            }
            if !self.health.is_ok(Side::Out) && last_probe.elapsed() >= PROBE_INTERVAL {
                self.probe();
                last_probe = Instant::now();
            }
            for i in 0..self.streams.len() {
                self.fill(i);
            }
            let work = reports + (self.next_token - sent_before) as usize;
            match work {
                0 => self.figures.waited(),
                _ => self.figures.turn(started.elapsed().as_nanos() as u64, work),
            }
            // Sleeps until a delivery report or the interval, whichever is first.
            self.producer.poll(interval);
        }
        self.shut_down();
    }

    fn shut_down(mut self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        while self.streams.iter().any(|s| !s.in_flight.is_empty()) && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(20));
            self.apply_reports();
        }
        self.save_cursors();
        info!("kafka outbox: stopped");
    }

    fn probe(&self) {
        match self.producer.client().fetch_metadata(None, Duration::from_secs(1)) {
            Ok(_) => self.health.ok(Side::Out),
            Err(e) => super::clients::on_error(&self.health, Side::Out, &e, "metadata probe"),
        }
    }

    /// Applies delivery reports: an acknowledged message leaves the in-flight set (the
    /// cursor follows the lowest still in flight); a failed one rewinds its stream.
    /// Applies the delivery reports that came; returns how many.
    fn apply_reports(&mut self) -> usize {
        self.producer.context().take_reports(&mut self.reports);
        let reports = self.reports.len();
        for r in std::mem::take(&mut self.reports) {
            let Some((i, seq)) = self.tokens.remove(&r.token) else {
                continue;
            };
            let Some(s) = self.streams.get_mut(i) else { continue };
            s.in_flight.remove(&seq);
            match r.result {
                Ok(()) => BridgeHealth::bump(&self.health.published, 1),
                Err(e) => {
                    warn!(stream = %s.name, seq, "kafka outbox: {e}; sending again from the cursor");
                    s.rewind = true;
                    // The failed message is behind the cursor until it is delivered.
                    s.cursor = s.cursor.min(seq);
                    BridgeHealth::bump(&self.health.redeliveries, 1);
                }
            }
        }
        for s in &mut self.streams {
            if !s.rewind {
                s.cursor = s.in_flight.first().copied().unwrap_or(s.next);
            } else if s.in_flight.is_empty() {
                s.next = s.cursor;
                s.rewind = false;
            }
        }
        reports
    }

    /// A fatal error (the idempotent producer's state cannot continue, e.g. the broker lost
    /// its producer ids): a new producer, and every stream sends again from its cursor.
    fn check_fatal(&mut self) {
        let Some((code, reason)) = fatal_error(self.producer.client()) else {
            return;
        };
        error!("kafka outbox: producer fatal error {code:?}: {reason}; starting a new producer");
        self.health
            .failed(Side::Out, &format!("producer fatal error: {reason}"));
        match super::clients::producer(&self.cfg, OutContext::new(self.health.clone())) {
            Ok(p) => {
                self.producer = p;
                self.tokens.clear();
                for s in &mut self.streams {
                    s.in_flight.clear();
                    s.next = s.cursor;
                    s.rewind = false;
                }
            }
            Err(e) => error!("kafka outbox: cannot create a producer: {e}"),
        }
    }

    fn refresh_shards(&mut self) {
        let shards = match self.log.shards() {
            Ok(s) => s,
            Err(e) => {
                warn!("kafka outbox: reading decision shards: {e}");
                return;
            }
        };
        for shard in shards {
            if !self.streams.iter().any(|s| s.kind == Kind::Decisions(shard)) {
                if let Err(e) = self.add_stream(decisions_stream(shard), Kind::Decisions(shard)) {
                    warn!("kafka outbox: {e}");
                }
            }
        }
    }

    fn save_cursors(&mut self) {
        let changed: Vec<(&str, u64)> = self
            .streams
            .iter()
            .filter(|s| s.cursor != s.saved)
            .map(|s| (s.name.as_str(), s.cursor))
            .collect();
        if changed.is_empty() {
            return;
        }
        match self.store.set_outbox_cursors(&changed) {
            Ok(()) => {
                for s in &mut self.streams {
                    s.saved = s.cursor;
                }
            }
            Err(e) => warn!("kafka outbox: saving cursors: {e}"),
        }
    }

    /// Reads what follows the stream's `next` and sends it, up to the in-flight bound.
    fn fill(&mut self, i: usize) {
        let (kind, next, room) = {
            let s = &self.streams[i];
            if s.rewind {
                return;
            }
            (
                s.kind,
                s.next,
                self.cfg.outbox_in_flight_max.saturating_sub(s.in_flight.len()),
            )
        };
        let limit = room.min(self.cfg.outbox_batch_max);
        if limit == 0 {
            return;
        }
        let rows = match kind {
            Kind::Capsules => self.capsules(next, limit),
            Kind::Decisions(shard) => self.decisions(shard, next, limit),
        };
        for out in rows {
            if !self.send(i, &out) {
                return;
            }
            self.streams[i].next = out.seq + 1;
        }
    }

    fn capsules(&self, from: u64, limit: usize) -> Vec<Outgoing> {
        let rows = match self.store.capsules_since(from, limit) {
            Ok(r) => r,
            Err(e) => {
                warn!("kafka outbox: reading capsules: {e}");
                return Vec::new();
            }
        };
        rows.into_iter().map(|(seq, c)| capsule_message(seq, &c)).collect()
    }

    fn decisions(&self, shard: u16, from: u64, limit: usize) -> Vec<Outgoing> {
        let rows = match self.log.decisions(shard, from, limit) {
            Ok(r) => r,
            Err(e) => {
                warn!("kafka outbox: reading decisions of shard {shard}: {e}");
                return Vec::new();
            }
        };
        let traces = self.traces.lock().ok();
        let mut out = Vec::with_capacity(rows.len());
        for (seq, raw) in rows {
            match decision::decode(&raw) {
                Ok(d) => {
                    let ids = traces.as_ref().and_then(|t| t.get(&d.rim_node_id, d.event_timestamp));
                    out.push(decision_message(seq, shard, &d, ids));
                }
                // A record the audit log holds but this build cannot read: skipped, said.
                Err(e) => error!(shard, seq, "kafka outbox: undecodable decision skipped: {e}"),
            }
        }
        out
    }

    /// Sends one message; false when the producer's queue is full (try again later).
    fn send(&mut self, i: usize, out: &Outgoing) -> bool {
        let topic = match self.streams[i].kind {
            Kind::Capsules => self.cfg.capsules_topic.as_str(),
            Kind::Decisions(_) => self.cfg.decisions_topic.as_str(),
        };
        let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
        for (k, v) in &out.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let token = self.next_token;
        let record = BaseRecord::with_opaque_to(topic, token as usize)
            .key(out.key.as_str())
            .payload(out.payload.as_slice())
            .headers(headers);
        match self.producer.send(record) {
            Ok(()) => {
                self.next_token += 1;
                self.tokens.insert(token, (i, out.seq));
                self.streams[i].in_flight.insert(out.seq);
                true
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => false,
            Err((e, _)) => {
                super::clients::on_error(&self.health, Side::Out, &e, "send");
                false
            }
        }
    }
}

fn fatal_error(client: &Client<OutContext>) -> Option<(RDKafkaErrorCode, String)> {
    client.fatal_error()
}

/// A capsule as JSON: its serde form plus its `id`.
fn capsule_message(seq: u64, c: &Capsule) -> Outgoing {
    let id = c.id().to_string();
    let payload = match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("id".into(), serde_json::Value::String(id.clone()));
            serde_json::to_vec(&m).unwrap_or_default()
        }
        Ok(other) => serde_json::to_vec(&other).unwrap_or_default(),
        Err(e) => {
            error!(seq, "kafka outbox: capsule {id} does not serialise: {e}");
            Vec::new()
        }
    };
    Outgoing {
        seq,
        key: c.key.scope_id.clone(),
        payload,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("X-Request-ID", format!("capsule-{id}")),
            ("rimd.capsule.id", id),
            ("rimd.vantage", c.key.vantage.as_str().to_owned()),
        ],
    }
}

/// A decision as JSON, with the correlation ids of the Kafka message that triggered it
/// when it came from Kafka with some.
fn decision_message(seq: u64, shard: u16, d: &decision::Decision, ids: Option<&super::trace::TraceIds>) -> Outgoing {
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("X-Request-ID", format!("decision-{shard}-{}-{}", d.epoch, d.chain_seq)),
        ("rimd.decision.hash", d.hash.clone()),
    ];
    if let Some(ids) = ids {
        if let Some(c) = &ids.correlation_id {
            headers.push(("X-Correlation-ID", c.clone()));
        }
        if let Some(t) = &ids.traceparent {
            headers.push(("traceparent", t.clone()));
        }
    }
    Outgoing {
        seq,
        key: d.rim_node_id.clone(),
        payload: serde_json::to_vec(d).unwrap_or_default(),
        headers,
    }
}
