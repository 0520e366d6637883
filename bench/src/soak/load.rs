//! The soak's load: sources that publish numbered events into one daemon life and keep a
//! ledger of what the daemon acknowledged as durable. A shared-memory source counts an
//! event acknowledged once its ring's durable position passed it (the header outlives the
//! daemon, so what it said before it died stands); an HTTP source once its
//! `POST /events?wait=durable` was answered 202. Whatever was not acknowledged when the
//! daemon died is sent again in the next life, with the same event id and time, so the
//! daemon must de-duplicate it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rim_ring::{attach, PublishError, RimFastEvent};

use crate::http::{loadgen, wire};

/// Event time base: a fixed instant (2025), so windows are exact and replayable.
pub const T0_MS: i64 = 1_760_000_000_000;
/// Nodes per source: each source has nodes of its own, so a node's unacknowledged events
/// come from one source and stay inside the dedup window the soak configures.
pub const NODES_PER_SOURCE: u64 = 40;
/// Unacknowledged shared-memory events a source keeps in flight at most (≤ 50 per node,
/// inside `ingest.dedup_window = 256`).
const INFLIGHT_MAX: usize = 2_000;
/// Events per HTTP request.
const HTTP_BATCH: usize = 100;
/// Bits of an id that number the events of one source; the source is above them.
const SEQ_BITS: u32 = 40;
/// Ring bytes each shared-memory source asks for.
const RING_BYTES: usize = 1 << 20;

/// Which way a source's events enter the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A shared-memory producer ring.
    Shm,
    /// `POST /api/v1/events?wait=durable`.
    Http,
}

/// The ledger of one source across daemon lives.
#[derive(Debug)]
pub struct Source {
    /// Its number (part of every id).
    pub index: u64,
    /// How its events travel.
    pub via: Via,
    /// Sequence numbers not (yet) acknowledged, oldest first, to send (again).
    pub queue: VecDeque<u64>,
    /// The last sequence number handed out.
    pub next: u64,
    /// How many ids were acknowledged durable (each once: an acknowledged id is never
    /// sent again).
    pub acked: u64,
    /// Ids acknowledged since the ledger last looked: the ledger checks each once, and
    /// keeps those it did not find.
    pub fresh: Vec<u64>,
    /// Publish attempts refused (ring full, HTTP errors): back-pressure, not loss.
    pub refused: u64,
}

impl Source {
    /// A source with nothing sent yet.
    pub fn new(index: u64, via: Via) -> Self {
        Self {
            index,
            via,
            queue: VecDeque::new(),
            next: 0,
            acked: 0,
            fresh: Vec::new(),
            refused: 0,
        }
    }

    /// Events handed out so far.
    pub fn published(&self) -> u64 {
        self.next
    }

    fn ack(&mut self, id: u64) {
        self.acked += 1;
        self.fresh.push(id);
    }

    fn take(&mut self, allow_new: bool) -> Option<u64> {
        self.queue.pop_front().or_else(|| {
            allow_new.then(|| {
                self.next += 1;
                self.next
            })
        })
    }
}

/// An event's id: its source above [`SEQ_BITS`], its sequence number below.
pub fn id_of(source: u64, seq: u64) -> u64 {
    (source << SEQ_BITS) | seq
}

/// The node of an event id.
pub fn node_of(id: u64) -> String {
    let source = id >> SEQ_BITS;
    let seq = id & ((1 << SEQ_BITS) - 1);
    format!("rim:sensor:soak{source}:n{}", seq % NODES_PER_SOURCE)
}

/// The event of an id: its time is fixed by its sequence number, its `load` makes the
/// soak's rule fire on about one event in sixteen (decisions for the hash chains).
pub fn event_of(id: u64) -> RimFastEvent {
    let seq = id & ((1 << SEQ_BITS) - 1);
    RimFastEvent {
        rim_node_id: node_of(id),
        event_id: Some(format!("e{id}")),
        timestamp: T0_MS + seq as i64,
        critical_metrics: vec![("load".to_owned(), (seq % 16) as f64 * 10.0)],
        price: Some(100.0 + (seq % 13) as f64),
        volume: None,
        stress: None,
        status: "OK".to_owned(),
        source_topic: None,
        publish_ns: 0,
    }
}

/// Parses an id back from a journaled `event_id`.
pub fn parse_id(event_id: Option<&str>) -> Option<u64> {
    event_id?.strip_prefix('e')?.parse().ok()
}

/// Where one life's daemon is.
pub struct Target<'a> {
    /// Its control socket.
    pub socket: &'a Path,
    /// Its HTTP API.
    pub http: SocketAddr,
}

/// Publishes into one daemon life until `stop`; with `allow_new` false, only resends and
/// returns once everything is acknowledged (or `stop`).
pub fn run_life(src: &mut Source, target: &Target<'_>, stop: &AtomicBool, allow_new: bool) {
    match src.via {
        Via::Shm => shm_life(src, target.socket, stop, allow_new),
        Via::Http => http_life(src, target.http, stop, allow_new),
    }
}

fn shm_life(src: &mut Source, socket: &Path, stop: &AtomicBool, allow_new: bool) {
    let name = format!("soak{}", src.index);
    let Ok(mut p) = attach::attach_producer(socket, &name, RING_BYTES) else {
        // The daemon died before we attached: nothing sent, nothing lost.
        return;
    };
    let mut inflight: VecDeque<(u64, u64)> = VecDeque::new();
    let settle = |p: &rim_ring::Producer, inflight: &mut VecDeque<(u64, u64)>, src: &mut Source| {
        let durable = p.durable_position();
        while let Some(&(id, pos)) = inflight.front() {
            if pos > durable {
                break;
            }
            src.ack(id);
            inflight.pop_front();
        }
    };
    while !stop.load(Ordering::Relaxed) {
        settle(&p, &mut inflight, src);
        if !allow_new && src.queue.is_empty() && inflight.is_empty() {
            break;
        }
        if inflight.len() >= INFLIGHT_MAX {
            std::thread::yield_now();
            continue;
        }
        let Some(seq) = src.take(allow_new) else {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        let id = id_of(src.index, seq);
        match p.try_publish_event(&event_of(id).as_ref()) {
            Ok(pos) => inflight.push_back((id, pos)),
            Err(PublishError::Full { .. }) => {
                src.refused += 1;
                src.queue.push_front(seq);
                std::thread::yield_now();
            }
            Err(_) => {
                // Closed or quarantined: the daemon is gone; keep it for the next life.
                src.queue.push_front(seq);
                break;
            }
        }
    }
    settle(&p, &mut inflight, src);
    for (id, _) in inflight.into_iter().rev() {
        src.queue.push_front(id & ((1 << SEQ_BITS) - 1));
    }
}

fn http_life(src: &mut Source, addr: SocketAddr, stop: &AtomicBool, allow_new: bool) {
    let path = format!("{}/events?wait=durable", wire::API);
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<u64> = (0..HTTP_BATCH).map_while(|_| src.take(allow_new)).collect();
        if batch.is_empty() {
            break;
        }
        let events: Vec<RimFastEvent> = batch.iter().map(|&s| event_of(id_of(src.index, s))).collect();
        let Ok(body) = serde_json::to_vec(&events) else {
            requeue(src, &batch);
            break;
        };
        match loadgen::fetch(addr, &wire::post_json(&path, &body), Duration::from_secs(10)) {
            Ok((202, _)) => {
                for &s in &batch {
                    src.ack(id_of(src.index, s));
                }
            }
            Ok(_) | Err(_) => {
                // Refused (back-pressure, shutting down) or cut by the kill: not acknowledged.
                src.refused += 1;
                requeue(src, &batch);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn requeue(src: &mut Source, batch: &[u64]) {
    for &s in batch.iter().rev() {
        src.queue.push_front(s);
    }
}
