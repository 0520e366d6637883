//! Live-state queries: the HTTP thread asks a reflex shard for one node's present state
//! without stopping it.
//!
//! A query is a preallocated box that travels to the shard on one SPSC ring and comes back
//! filled on another: the shard neither allocates nor frees (the series vector is reserved
//! to the shard's series count before it is sent, and the box goes back to its sender).
//! The shard answers at most [`ANSWERS_PER_TURN`] per loop turn, so a burst of queries
//! costs the hot path a bounded slice of each turn.

use super::state::NodeState;

/// Queries a shard answers per turn of its loop.
pub const ANSWERS_PER_TURN: usize = 4;

/// One query and, once answered, its answer.
#[derive(Debug, Default)]
pub struct PresentQuery {
    /// The sender's tag (to match answers to waiters).
    pub tag: u64,
    /// The node asked about.
    pub node: String,
    /// The shard has defined the node.
    pub found: bool,
    /// Its last event (ingest sequence, event time), if it had one.
    pub last_event: Option<(u64, i64)>,
    /// Wall ms the shard last saw it.
    pub seen_ms: u64,
    /// Series as (key, samples, EWMA, EWMA variance, last value).
    pub series: Vec<(u64, f64, f64, f64, f64)>,
}

impl PresentQuery {
    /// A query whose answer will fit `series` series without growing.
    pub fn with_capacity(series: usize) -> Box<Self> {
        Box::new(Self {
            series: Vec::with_capacity(series),
            node: String::with_capacity(64),
            ..Self::default()
        })
    }

    /// Fills the answer from `state` (no allocation: `series` was reserved by the sender,
    /// and entries past its capacity are left out rather than grown into).
    pub fn answer(&mut self, state: &NodeState) {
        self.series.clear();
        self.last_event = None;
        self.seen_ms = 0;
        let Some(n) = state.find(&self.node) else {
            self.found = false;
            return;
        };
        self.found = true;
        self.last_event = state.last_event(n);
        self.seen_ms = state.seen_ms(n);
        let room = self.series.capacity();
        for s in state.series(n).take(room) {
            self.series.push(s);
        }
    }
}

/// A shard's end of the query rings.
pub struct QueryPort {
    /// Questions from the HTTP thread.
    pub requests: rtrb::Consumer<Box<PresentQuery>>,
    /// Answers back (same capacity as `requests`, so there is always room).
    pub replies: rtrb::Producer<Box<PresentQuery>>,
}

/// The asking end of one shard's query rings.
pub struct QueryClient {
    /// Questions to the shard.
    pub requests: rtrb::Producer<Box<PresentQuery>>,
    /// Answers from the shard.
    pub replies: rtrb::Consumer<Box<PresentQuery>>,
}

/// Live-state queries in flight per shard (the query rings' depth).
pub const QUERIES_IN_FLIGHT: usize = 256;

/// A pair of query rings holding up to `depth` queries in flight.
pub fn query_rings(depth: usize) -> (QueryClient, QueryPort) {
    let (req_tx, req_rx) = rtrb::RingBuffer::new(depth);
    let (rep_tx, rep_rx) = rtrb::RingBuffer::new(depth);
    (
        QueryClient {
            requests: req_tx,
            replies: rep_rx,
        },
        QueryPort {
            requests: req_rx,
            replies: rep_tx,
        },
    )
}
