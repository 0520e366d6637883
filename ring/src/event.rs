//! The RimFastEvent: its owned JSON form, its borrowed producer form, and its archived
//! (rkyv) form as it crosses shared memory.
//!
//! This module owns every rule about what a valid event is (RimNodeId pattern, field
//! limits), so the ring, the daemon, the HTTP and Kafka paths all refuse the same things
//! with the same errors.
//!
//! The archived form that crosses shared memory lives in [`crate::wire`].

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest accepted `rim_node_id`, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 256;
/// Most entries in `critical_metrics`.
pub const METRICS_MAX: usize = 64;
/// Longest metric name, in bytes.
pub const METRIC_NAME_BYTES_MAX: usize = 64;
/// Longest `status`, in bytes.
pub const STATUS_BYTES_MAX: usize = 64;
/// Longest `event_id`, in bytes.
pub const EVENT_ID_BYTES_MAX: usize = 128;
/// Longest `source_topic`, in bytes (Kafka's own topic-name limit).
pub const SOURCE_TOPIC_BYTES_MAX: usize = 249;
/// Largest archived record, in bytes.
pub const RECORD_BYTES_MAX: usize = 4096;

const NODE_TYPE_BYTES_MAX: usize = 64;
const NAMESPACE_BYTES_MAX: usize = 64;
const LOCAL_ID_BYTES_MAX: usize = 128;

/// Pattern of a RimNodeId's `nodeType` and `namespace` parts.
pub const NODE_PART_PATTERN: &str = "[a-z0-9_-]{1,64}";
/// Pattern of a RimNodeId's `localId` part.
pub const LOCAL_ID_PATTERN: &str = "[A-Za-z0-9_.:-]{1,128}";
/// Pattern of a whole RimNodeId.
pub const NODE_ID_PATTERN: &str = "rim:{nodeType}:{namespace}:{localId}";

/// Why a `rim_node_id` was refused. Every variant names the part and the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The id does not start with `rim:` or lacks one of the three parts.
    #[error("rim_node_id must look like {NODE_ID_PATTERN}")]
    Shape,
    /// A part is empty, too long, or holds a character outside its pattern.
    #[error("rim_node_id part {part} must match {pattern}")]
    Part {
        /// `nodeType`, `namespace` or `localId`.
        part: &'static str,
        /// The regular expression the part must match.
        pattern: &'static str,
    },
}

/// The three parts of a valid RimNodeId, borrowed from the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RimNodeId<'a> {
    /// `nodeType`, `[a-z0-9_-]{1,64}`.
    pub node_type: &'a str,
    /// `namespace`, `[a-z0-9_-]{1,64}`.
    pub namespace: &'a str,
    /// `localId`, `[A-Za-z0-9_.:-]{1,128}`.
    pub local_id: &'a str,
}

impl<'a> RimNodeId<'a> {
    /// Parses `rim:{nodeType}:{namespace}:{localId}`; `localId` may itself contain `:`.
    ///
    /// Runs twice per event on the hot path (producer and consumer), so it is written as
    /// two colon scans and three branch-free folds over a byte-class table.
    pub fn parse(id: &'a str) -> Result<Self, NodeIdError> {
        let rest = id.strip_prefix("rim:").ok_or(NodeIdError::Shape)?;
        let b = rest.as_bytes();
        let c1 = b.iter().position(|&x| x == b':').ok_or(NodeIdError::Shape)?;
        let after = &b[c1 + 1..];
        let c2 = after.iter().position(|&x| x == b':').ok_or(NodeIdError::Shape)?;
        let (node_type, namespace, local) = (&b[..c1], &after[..c2], &after[c2 + 1..]);
        if !class_ok(node_type, PART, NODE_TYPE_BYTES_MAX) {
            return Err(NodeIdError::Part {
                part: "nodeType",
                pattern: NODE_PART_PATTERN,
            });
        }
        if !class_ok(namespace, PART, NAMESPACE_BYTES_MAX) {
            return Err(NodeIdError::Part {
                part: "namespace",
                pattern: NODE_PART_PATTERN,
            });
        }
        if !class_ok(local, LOCAL, LOCAL_ID_BYTES_MAX) {
            return Err(NodeIdError::Part {
                part: "localId",
                pattern: LOCAL_ID_PATTERN,
            });
        }
        // Split at ASCII ':' bytes, which are char boundaries.
        let ns_start = c1 + 1;
        let local_start = ns_start + c2 + 1;
        Ok(Self {
            node_type: &rest[..c1],
            namespace: &rest[ns_start..ns_start + c2],
            local_id: &rest[local_start..],
        })
    }
}

const PART: u8 = 1;
const LOCAL: u8 = 2;

/// Byte classes: PART for `[a-z0-9_-]`, LOCAL for `[A-Za-z0-9_.:-]`.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let part = c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-';
        let local = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b':' || c == b'-';
        t[b] = (if part { PART } else { 0 }) | (if local { LOCAL } else { 0 });
        b += 1;
    }
    t
};

/// `bytes` is 1..=max long and every byte is in `class`.
#[inline]
fn class_ok(bytes: &[u8], class: u8, max: usize) -> bool {
    let acc = bytes.iter().fold(class, |acc, &x| acc & CLASS[usize::from(x)]);
    !bytes.is_empty() && bytes.len() <= max && acc == class
}

/// Why an event was refused, by the producer before publishing or by the consumer after
/// reading it from an untrusted segment. Carries only static data: building one never
/// allocates, so refusing is as cheap as accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EventError {
    /// `rim_node_id` is not a RimNodeId.
    #[error("field rim_node_id: {0}")]
    NodeId(#[from] NodeIdError),
    /// A string field is longer than its limit.
    #[error("field {field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// The field's schema name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// `critical_metrics` has more entries than [`METRICS_MAX`].
    #[error("field critical_metrics has {count} entries, more than the limit of {max}")]
    TooManyMetrics {
        /// Entries given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A metric name is empty.
    #[error("field critical_metrics: metric {index} has an empty name")]
    EmptyMetricName {
        /// Position of the metric.
        index: usize,
    },
    /// Two metrics share a name.
    #[error("field critical_metrics: metric {index} repeats an earlier name")]
    DuplicateMetric {
        /// Position of the second occurrence.
        index: usize,
    },
    /// A number is NaN or infinite.
    #[error("field {field} must be a finite number")]
    NotFinite {
        /// The field's schema name.
        field: &'static str,
    },
    /// The archived record would exceed [`RECORD_BYTES_MAX`].
    #[error("record is larger than {max} bytes")]
    RecordTooLarge {
        /// The limit.
        max: usize,
    },
    /// A symbol reference is undefined, of the wrong kind, or out of range.
    #[error("field {field} refers to a symbol this ring has not defined (or of another kind)")]
    BadSymbol {
        /// The field's schema name.
        field: &'static str,
    },
    /// The ring's symbol table is full.
    #[error("the ring defined more than {max} symbols")]
    TooManySymbols {
        /// The limit.
        max: usize,
    },
    /// The bytes are not a well-formed archived record.
    #[error("archived record is malformed: {0}")]
    Malformed(&'static str),
}

/// One `critical_metrics` entry, whatever the caller stores it as.
pub trait Metric {
    /// The metric's name.
    fn name(&self) -> &str;
    /// The metric's value.
    fn value(&self) -> f64;
}

impl Metric for (&str, f64) {
    fn name(&self) -> &str {
        self.0
    }
    fn value(&self) -> f64 {
        self.1
    }
}

impl Metric for (String, f64) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> f64 {
        self.1
    }
}

/// A RimFastEvent borrowed from the producer's own memory: what a feed handler publishes
/// without allocating.
#[derive(Debug)]
pub struct EventRef<'a, M: Metric = (&'a str, f64)> {
    /// `rim_node_id`.
    pub rim_node_id: &'a str,
    /// `event_id`.
    pub event_id: Option<&'a str>,
    /// `timestamp`: event time, epoch milliseconds.
    pub timestamp: i64,
    /// `critical_metrics`, names unique.
    pub critical_metrics: &'a [M],
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
    /// Producer's CLOCK_MONOTONIC at publish, ns; set by the ring when 0.
    pub publish_ns: u64,
}

// Manual impls: every field is a reference or Copy, whatever `M` is.
impl<M: Metric> Clone for EventRef<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: Metric> Copy for EventRef<'_, M> {}

impl<M: Metric> EventRef<'_, M> {
    /// The event with its strings owned (the inverse of [`RimFastEvent::as_ref`]).
    pub fn to_event(&self) -> RimFastEvent {
        RimFastEvent {
            rim_node_id: self.rim_node_id.to_owned(),
            event_id: self.event_id.map(str::to_owned),
            timestamp: self.timestamp,
            critical_metrics: self
                .critical_metrics
                .iter()
                .map(|m| (m.name().to_owned(), m.value()))
                .collect(),
            price: self.price,
            volume: self.volume,
            stress: self.stress,
            status: self.status.to_owned(),
            source_topic: self.source_topic.map(str::to_owned),
            publish_ns: self.publish_ns,
        }
    }

    /// Checks every rule of the data model; the same rules the consumer applies.
    pub fn validate(&self) -> Result<(), EventError> {
        check_node_id(self.rim_node_id)?;
        if let Some(id) = self.event_id {
            check_len("event_id", id.len(), EVENT_ID_BYTES_MAX)?;
        }
        check_len("status", self.status.len(), STATUS_BYTES_MAX)?;
        if let Some(topic) = self.source_topic {
            check_len("source_topic", topic.len(), SOURCE_TOPIC_BYTES_MAX)?;
        }
        check_optional_finite("price", self.price)?;
        check_optional_finite("volume", self.volume)?;
        check_optional_finite("stress", self.stress)?;
        check_metrics(self.critical_metrics)
    }
}

/// `rim_node_id` within its byte limit and matching the RimNodeId pattern.
pub(crate) fn check_node_id(id: &str) -> Result<(), EventError> {
    check_len("rim_node_id", id.len(), NODE_ID_BYTES_MAX)?;
    RimNodeId::parse(id)?;
    Ok(())
}

pub(crate) fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), EventError> {
    if len > max {
        Err(EventError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

pub(crate) fn check_optional_finite(field: &'static str, v: Option<f64>) -> Result<(), EventError> {
    match v {
        Some(x) if !x.is_finite() => Err(EventError::NotFinite { field }),
        _ => Ok(()),
    }
}

/// Checks count, name lengths, finiteness and uniqueness (quadratic over at most
/// [`METRICS_MAX`] short names). Not on the ring's hot path: a ring checks each name once,
/// when it defines it, and compares symbol numbers per event.
fn check_metrics<M: Metric>(metrics: &[M]) -> Result<(), EventError> {
    if metrics.len() > METRICS_MAX {
        return Err(EventError::TooManyMetrics {
            count: metrics.len(),
            max: METRICS_MAX,
        });
    }
    for (index, m) in metrics.iter().enumerate() {
        let name = m.name();
        if name.is_empty() {
            return Err(EventError::EmptyMetricName { index });
        }
        check_len("critical_metrics name", name.len(), METRIC_NAME_BYTES_MAX)?;
        if !m.value().is_finite() {
            return Err(EventError::NotFinite {
                field: "critical_metrics value",
            });
        }
        if metrics[..index].iter().any(|earlier| earlier.name() == name) {
            return Err(EventError::DuplicateMetric { index });
        }
    }
    Ok(())
}

/// A RimFastEvent that owns its data: the JSON form (field names exactly as the Avro
/// schema `com.z254.butterfly.hft.RimFastEvent`) and what tests and tools hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RimFastEvent {
    /// `rim_node_id`.
    pub rim_node_id: String,
    /// `event_id`.
    #[serde(default)]
    pub event_id: Option<String>,
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// `critical_metrics`, a JSON object of name → number; order kept.
    #[serde(serialize_with = "ser_metrics", deserialize_with = "de_metrics")]
    pub critical_metrics: Vec<(String, f64)>,
    /// `price`.
    #[serde(default)]
    pub price: Option<f64>,
    /// `volume`.
    #[serde(default)]
    pub volume: Option<f64>,
    /// `stress`.
    #[serde(default)]
    pub stress: Option<f64>,
    /// `status`.
    pub status: String,
    /// `source_topic`.
    #[serde(default)]
    pub source_topic: Option<String>,
    /// Producer's CLOCK_MONOTONIC at publish, ns (shared-memory path only; 0 when unset).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub publish_ns: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl RimFastEvent {
    /// Borrows the event for validation or publishing.
    pub fn as_ref(&self) -> EventRef<'_, (String, f64)> {
        EventRef {
            rim_node_id: &self.rim_node_id,
            event_id: self.event_id.as_deref(),
            timestamp: self.timestamp,
            critical_metrics: &self.critical_metrics,
            price: self.price,
            volume: self.volume,
            stress: self.stress,
            status: &self.status,
            source_topic: self.source_topic.as_deref(),
            publish_ns: self.publish_ns,
        }
    }

    /// Checks every rule of the data model.
    pub fn validate(&self) -> Result<(), EventError> {
        self.as_ref().validate()
    }
}

fn ser_metrics<S: Serializer>(metrics: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(metrics.len()))?;
    for (k, v) in metrics {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn de_metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    struct MetricsVisitor;
    impl<'de> Visitor<'de> for MetricsVisitor {
        type Value = Vec<(String, f64)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an object of at most {METRICS_MAX} metric name -> number entries")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(METRICS_MAX));
            let mut seen = BTreeSet::new();
            while let Some((k, v)) = map.next_entry::<String, f64>()? {
                if out.len() == METRICS_MAX {
                    return Err(serde::de::Error::custom(format_args!(
                        "critical_metrics has more than {METRICS_MAX} entries"
                    )));
                }
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format_args!(
                        "critical_metrics repeats the name {k:?}"
                    )));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(MetricsVisitor)
}

/// An event with most fields set, for unit tests across the crate.
#[cfg(test)]
pub(crate) fn sample_event() -> RimFastEvent {
    RimFastEvent {
        rim_node_id: "rim:equity:nyse:AAPL.O".into(),
        event_id: Some("e-1".into()),
        timestamp: 1_764_000_000_000,
        critical_metrics: vec![("bid".into(), 1.5), ("ask".into(), 1.6), ("λ".into(), -3.0)],
        price: Some(101.25),
        volume: None,
        stress: Some(0.5),
        status: "OK".into(),
        source_topic: None,
        publish_ns: 42,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RimFastEvent {
        sample_event()
    }

    #[test]
    fn json_uses_the_avro_field_names() {
        let json = serde_json::to_value(sample()).expect("json");
        for key in [
            "rim_node_id",
            "event_id",
            "timestamp",
            "critical_metrics",
            "price",
            "status",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        // Through text (a Value would sort the map's keys): order is kept.
        let text = serde_json::to_string(&sample()).expect("text");
        let back: RimFastEvent = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, sample());
    }

    #[test]
    fn garbage_json_is_refused_with_a_message_naming_the_problem() {
        let cases = [
            ("", "EOF"),
            ("[]", "struct RimFastEvent"),
            (r#"{"timestamp":1,"critical_metrics":{},"status":"s"}"#, "rim_node_id"),
            (
                r#"{"rim_node_id":"rim:a:b:c","timestamp":"x","critical_metrics":{},"status":"s"}"#,
                "invalid type",
            ),
            (
                r#"{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":[],"status":"s"}"#,
                "metric name",
            ),
            (
                r#"{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{"x":"1"},"status":"s"}"#,
                "invalid type",
            ),
            (
                r#"{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{},"status":"s","extra":1}"#,
                "unknown field",
            ),
            (
                r#"{"rim_node_id":"rim:a:b:c","timestamp":1e400,"critical_metrics":{},"status":"s"}"#,
                "",
            ),
        ];
        for (text, needle) in cases {
            let err = serde_json::from_str::<RimFastEvent>(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let too_many: String = (0..=METRICS_MAX)
            .map(|i| format!("\"m{i}\":1"))
            .collect::<Vec<_>>()
            .join(",");
        let text =
            format!(r#"{{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{{{too_many}}},"status":"s"}}"#);
        let err = serde_json::from_str::<RimFastEvent>(&text)
            .expect_err("65 metrics")
            .to_string();
        assert!(err.contains("more than 64"), "{err}");
        // Parsed but invalid: the model's rules still apply after JSON.
        let ev: RimFastEvent =
            serde_json::from_str(r#"{"rim_node_id":"rim:A:b:c","timestamp":1,"critical_metrics":{},"status":"s"}"#)
                .expect("well-formed JSON");
        assert!(matches!(
            ev.validate(),
            Err(EventError::NodeId(NodeIdError::Part { part: "nodeType", .. }))
        ));
    }

    #[test]
    fn json_refuses_duplicate_metric_names() {
        let text = r#"{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{"x":1,"x":2},"status":"s"}"#;
        let err = serde_json::from_str::<RimFastEvent>(text).expect_err("duplicate");
        assert!(err.to_string().contains("repeats"), "{err}");
    }

    #[test]
    fn node_id_errors_name_the_part_and_pattern() {
        assert_eq!(RimNodeId::parse("rom:a:b:c"), Err(NodeIdError::Shape));
        assert_eq!(RimNodeId::parse("rim:a:b"), Err(NodeIdError::Shape));
        assert_eq!(
            RimNodeId::parse("rim:A:b:c"),
            Err(NodeIdError::Part {
                part: "nodeType",
                pattern: NODE_PART_PATTERN
            })
        );
        assert_eq!(
            RimNodeId::parse("rim:a::c"),
            Err(NodeIdError::Part {
                part: "namespace",
                pattern: NODE_PART_PATTERN
            })
        );
        assert_eq!(
            RimNodeId::parse("rim:a:b:c d"),
            Err(NodeIdError::Part {
                part: "localId",
                pattern: LOCAL_ID_PATTERN
            })
        );
        let ok = RimNodeId::parse("rim:a-1:b_2:X.y:z").expect("valid");
        assert_eq!(ok.local_id, "X.y:z");
        let msg = EventError::from(RimNodeId::parse("rim:a:B:c").unwrap_err()).to_string();
        assert!(msg.contains("namespace") && msg.contains(NODE_PART_PATTERN), "{msg}");
    }

    #[test]
    fn limits_are_enforced() {
        let mut ev = sample();
        ev.status = "s".repeat(STATUS_BYTES_MAX + 1);
        assert!(matches!(
            ev.validate(),
            Err(EventError::TooLong { field: "status", .. })
        ));
        let mut ev = sample();
        ev.critical_metrics = (0..=METRICS_MAX).map(|i| (format!("m{i}"), 1.0)).collect();
        assert!(matches!(ev.validate(), Err(EventError::TooManyMetrics { .. })));
        let mut ev = sample();
        ev.critical_metrics = vec![("a".into(), 1.0), ("a".into(), 2.0)];
        assert_eq!(ev.validate(), Err(EventError::DuplicateMetric { index: 1 }));
        let mut ev = sample();
        ev.price = Some(f64::NAN);
        assert_eq!(ev.validate(), Err(EventError::NotFinite { field: "price" }));
        let mut ev = sample();
        ev.critical_metrics = (0..METRICS_MAX).map(|i| (format!("{i:0>64}"), 1.0)).collect();
        ev.validate().expect("64 metrics of 64 bytes are within limits");
    }
}
