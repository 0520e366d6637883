//! Avro RimFastEvents in the Confluent wire format, read without a value tree.
//!
//! Guarantees, for any bytes and any schema text (both come from outside the process):
//! - **No panic, bounded work.** Schema text, nesting depth and the expanded type tree are
//!   bounded when a schema is parsed ([`schema`]); at decode time every length is checked
//!   against the bytes left, varints are at most 10 bytes, a message holds at most
//!   [`plan::VALUES_MAX`] values and at most [`METRICS_MAX`] metrics. Every failure is a
//!   typed error that says where.
//! - **No allocation per message.** A writer schema is resolved against the platform's
//!   reader schema once ([`Plan::compile`], Avro's resolution rules: a newer writer's extra
//!   fields are skipped, an older writer's missing optional fields take the reader's
//!   defaults, int → long → float → double and string ↔ bytes promote, unions resolve
//!   branch by branch). [`Plan::decode`] then reads a body straight into an [`Event`] whose
//!   strings borrow the message.
//!
//! Why hand-written rather than `apache-avro`: the bridge reads one record type from
//! untrusted bytes, and what it needs (a plan that fills the intake ring's event in place,
//! hard bounds, typed errors) is not what that crate offers (a value tree per message:
//! ~4–5.5 µs per event here against ~0.3–0.4 µs for a plan); its schema parser and
//! resolution rules would save only [`schema`] at the price of 50 crates. The README
//! ("Dependencies beyond the chosen set") has the measurement. The decoder is tested against an independent encoder (Python's fastavro
//! through confluent-kafka's `AvroSerializer`, `tests/kafka.rs`) and fuzzed (`fuzz/`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod encode;
pub mod plan;
pub mod schema;
pub mod wire;

pub use plan::{DecodeError, Plan, PlanError};
pub use schema::{Schema, SchemaError};

/// Metrics one event may carry (the ring's limit, `rim_ring::event::METRICS_MAX`).
pub const METRICS_MAX: usize = 64;

/// A RimFastEvent as the platform schema has it, strings borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event<'a> {
    /// `rim_node_id`.
    pub rim_node_id: &'a str,
    /// `event_id`.
    pub event_id: Option<&'a str>,
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// `critical_metrics`, in the writer's order.
    pub critical_metrics: Metrics<'a>,
    /// `price`.
    pub price: Option<f64>,
    /// `volume`.
    pub volume: Option<f64>,
    /// `stress`.
    pub stress: Option<f64>,
    /// `status`.
    pub status: &'a str,
    /// `source_topic`.
    pub source_topic: Option<&'a str>,
}

impl Event<'_> {
    /// Empties every field, as [`Event::empty`], without rewriting the metrics' storage.
    pub fn clear(&mut self) {
        // Destructured so that a field added later cannot be forgotten here.
        let Event {
            rim_node_id,
            event_id,
            timestamp,
            critical_metrics,
            price,
            volume,
            stress,
            status,
            source_topic,
        } = self;
        *rim_node_id = "";
        *event_id = None;
        *timestamp = 0;
        critical_metrics.clear();
        *price = None;
        *volume = None;
        *stress = None;
        *status = "";
        *source_topic = None;
    }

    /// An event with every field empty (what a plan fills in).
    pub const fn empty() -> Self {
        Event {
            rim_node_id: "",
            event_id: None,
            timestamp: 0,
            critical_metrics: Metrics::new(),
            price: None,
            volume: None,
            stress: None,
            status: "",
            source_topic: None,
        }
    }
}

/// Up to [`METRICS_MAX`] metrics, in place (no allocation).
#[derive(Clone, Copy)]
pub struct Metrics<'a> {
    items: [(&'a str, f64); METRICS_MAX],
    len: usize,
}

impl<'a> Metrics<'a> {
    /// None.
    pub const fn new() -> Self {
        Metrics {
            items: [("", 0.0); METRICS_MAX],
            len: 0,
        }
    }

    /// Empties the list (the storage is left as it is: only the first `len` are read).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends one; `false` when [`METRICS_MAX`] are there already.
    pub fn push(&mut self, name: &'a str, value: f64) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = (name, value);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The metrics, in order.
    pub fn as_slice(&self) -> &[(&'a str, f64)] {
        &self.items[..self.len]
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.len
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Metrics<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// Equal when they hold the same metrics in the same order (the storage past them, left
/// by [`Metrics::clear`], is not compared).
impl PartialEq for Metrics<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for Metrics<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}
