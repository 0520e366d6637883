//! The capsule model: key, idempotency id, bodies, and their JSON shape.
//!
//! JSON uses camelCase field names as the platform's HTTP API does; the vantage is a plain
//! string (`"OBSERVED"`, `"PREDICTED"`, or a caller's upper-case name) and the id is lower-case
//! hex. The storage encoding is rkyv (see [`crate::codec`]).

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// Largest JSON payload of an API-created capsule, in bytes of its JSON text.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Largest scope id accepted, in bytes. A RimNodeId is at most 4+64+1+64+1+128 = 262 bytes; the
/// bound is looser so that this crate does not need to know the node id grammar.
pub const SCOPE_BYTES_MAX: usize = 512;
/// Longest vantage name (the `[A-Z][A-Z0-9_]{0,31}` grammar).
pub const VANTAGE_NAME_CHARS_MAX: usize = 32;

/// Who looked at the window: rimd's roll-up, rimd's predictor, or a named API caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Vantage {
    Observed,
    Predicted,
    /// An upper-case name of a caller's choosing; never `OBSERVED` or `PREDICTED` (those parse
    /// to the variants above, so one name has one representation and one id).
    Named(String),
}

impl Vantage {
    /// The wire name, which is also what the idempotency key hashes.
    pub fn as_str(&self) -> &str {
        match self {
            Vantage::Observed => "OBSERVED",
            Vantage::Predicted => "PREDICTED",
            Vantage::Named(name) => name,
        }
    }

    /// Parses and validates `[A-Z][A-Z0-9_]{0,31}`.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "OBSERVED" => return Ok(Vantage::Observed),
            "PREDICTED" => return Ok(Vantage::Predicted),
            _ => {}
        }
        if is_vantage_name(s) {
            Ok(Vantage::Named(s.to_owned()))
        } else {
            Err(ModelError::InvalidVantage {
                value: truncate_for_message(s),
            })
        }
    }

    /// True when this value could have come out of [`Vantage::parse`].
    pub fn is_valid(&self) -> bool {
        match self {
            Vantage::Observed | Vantage::Predicted => true,
            Vantage::Named(name) => is_vantage_name(name) && name != "OBSERVED" && name != "PREDICTED",
        }
    }
}

fn is_vantage_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    first.is_ascii_uppercase()
        && rest.len() < VANTAGE_NAME_CHARS_MAX
        && rest
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(64).collect()
}

impl fmt::Display for Vantage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Vantage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Vantage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Vantage::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 idempotency id of a capsule key. Displays as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapsuleId(pub [u8; 32]);

impl CapsuleId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case).
    pub fn parse_hex(s: &str) -> Result<Self, ModelError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(ModelError::InvalidId {
                reason: "expected 64 hex digits",
            });
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]);
            let lo = hex_val(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
                _ => {
                    return Err(ModelError::InvalidId {
                        reason: "not a hex digit",
                    })
                }
            }
        }
        Ok(CapsuleId(out))
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for CapsuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CapsuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapsuleId({self})")
    }
}

impl Serialize for CapsuleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CapsuleId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        CapsuleId::parse_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// What a capsule is about: one node (scope), one window, one vantage.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct CapsuleKey {
    pub scope_id: String,
    /// Window start, epoch milliseconds.
    pub timestamp: i64,
    /// Window length, seconds.
    pub resolution: u32,
    #[serde(rename = "vantageMode")]
    pub vantage: Vantage,
}

impl CapsuleKey {
    /// SHA-256 over the UTF-8 text `scope_id|timestamp|resolution|vantage` with decimal numbers,
    /// exactly as DESIGN defines the idempotency key. The `|` cannot occur in a RimNodeId or a
    /// vantage name, and the two numbers are decimal without padding, so distinct keys hash
    /// distinct texts.
    pub fn id(&self) -> CapsuleId {
        let mut h = Sha256::new();
        h.update(self.scope_id.as_bytes());
        h.update(b"|");
        // Formatted without allocating: `id()` is on the writer's path.
        let mut num = itoa::Buffer::new();
        h.update(num.format(self.timestamp).as_bytes());
        h.update(b"|");
        h.update(num.format(self.resolution).as_bytes());
        h.update(b"|");
        h.update(self.vantage.as_str().as_bytes());
        CapsuleId(h.finalize().into())
    }
}

/// A snapshot of one node over one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capsule {
    #[serde(flatten)]
    pub key: CapsuleKey,
    #[serde(flatten)]
    pub body: CapsuleBody,
    /// When rimd built or received it (processing time, epoch ms). Not part of the content:
    /// re-creating a capsule later with the same key and body is the same capsule.
    pub created_ms: i64,
}

impl Capsule {
    pub fn id(&self) -> CapsuleId {
        self.key.id()
    }

    /// Same key and same body (bit-for-bit on floats, so a NaN equals itself); `created_ms`
    /// is ignored.
    pub fn same_content(&self, other: &Capsule) -> bool {
        self.key == other.key && self.body.bits_eq(&other.body)
    }

    /// Checks the invariants a stored capsule must hold: a valid vantage that matches the body
    /// kind (OBSERVED ↔ observed stats, PREDICTED ↔ prediction, a named vantage ↔ payload),
    /// bounded scope and payload, a non-zero resolution.
    pub fn validate(&self) -> Result<(), ModelError> {
        let scope_len = self.key.scope_id.len();
        if scope_len == 0 || scope_len > SCOPE_BYTES_MAX {
            return Err(ModelError::InvalidScope { len: scope_len });
        }
        if self.key.resolution == 0 {
            return Err(ModelError::ZeroResolution);
        }
        if !self.key.vantage.is_valid() {
            return Err(ModelError::InvalidVantage {
                value: truncate_for_message(self.key.vantage.as_str()),
            });
        }
        let matches = matches!(
            (&self.key.vantage, &self.body),
            (Vantage::Observed, CapsuleBody::Observed(_))
                | (Vantage::Predicted, CapsuleBody::Predicted(_))
                | (Vantage::Named(_), CapsuleBody::Payload(_))
        );
        if !matches {
            return Err(ModelError::BodyMismatch {
                vantage: truncate_for_message(self.key.vantage.as_str()),
            });
        }
        if let CapsuleBody::Payload(p) = &self.body {
            check_payload_len(p.len())?;
        }
        Ok(())
    }
}

fn check_payload_len(len: usize) -> Result<(), ModelError> {
    if len > PAYLOAD_BYTES_MAX {
        return Err(ModelError::PayloadTooLarge {
            len,
            max: PAYLOAD_BYTES_MAX,
        });
    }
    Ok(())
}

/// What a capsule holds. JSON: `{"observed": {...}}`, `{"predicted": {...}}`, or
/// `{"payload": <the JSON value itself>}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CapsuleBody {
    Observed(ObservedStats),
    Predicted(Prediction),
    /// JSON text, at most [`PAYLOAD_BYTES_MAX`] bytes. Built by [`CapsuleBody::payload`], which
    /// normalises it (serde_json's sorted maps, no whitespace) so that the same JSON value sent
    /// twice with different formatting is the same content.
    Payload(#[serde(with = "payload_json")] String),
}

impl CapsuleBody {
    /// A payload body from a JSON value, normalised and bounded.
    pub fn payload(value: &serde_json::Value) -> Result<Self, ModelError> {
        let text = value.to_string();
        check_payload_len(text.len())?;
        Ok(CapsuleBody::Payload(text))
    }

    fn bits_eq(&self, other: &CapsuleBody) -> bool {
        match (self, other) {
            (CapsuleBody::Observed(a), CapsuleBody::Observed(b)) => a.bits_eq(b),
            (CapsuleBody::Predicted(a), CapsuleBody::Predicted(b)) => a.bits_eq(b),
            (CapsuleBody::Payload(a), CapsuleBody::Payload(b)) => a == b,
            _ => false,
        }
    }
}

/// The payload is held as JSON text but shown in JSON as the value itself, not as a string.
mod payload_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        value.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(value.to_string())
    }
}

fn f64_bits_eq(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

fn opt_bits_eq(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => f64_bits_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Roll-up of one node's events over one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedStats {
    pub count: u64,
    /// Smallest event time in the window (epoch ms).
    pub first_ts: i64,
    /// Largest event time in the window (epoch ms).
    pub last_ts: i64,
    /// Sorted by name.
    pub metrics: Vec<MetricStats>,
    pub price: Option<Ohlc>,
    pub volume_sum: Option<f64>,
    pub stress_max: Option<f64>,
    pub stress_last: Option<f64>,
    pub last_status: String,
}

impl ObservedStats {
    fn bits_eq(&self, o: &ObservedStats) -> bool {
        self.count == o.count
            && self.first_ts == o.first_ts
            && self.last_ts == o.last_ts
            && self.metrics.len() == o.metrics.len()
            && self.metrics.iter().zip(&o.metrics).all(|(a, b)| a.bits_eq(b))
            && match (&self.price, &o.price) {
                (Some(a), Some(b)) => a.bits_eq(b),
                (None, None) => true,
                _ => false,
            }
            && opt_bits_eq(self.volume_sum, o.volume_sum)
            && opt_bits_eq(self.stress_max, o.stress_max)
            && opt_bits_eq(self.stress_last, o.stress_last)
            && self.last_status == o.last_status
    }

    /// The stats of one metric, by name.
    pub fn metric(&self, name: &str) -> Option<&MetricStats> {
        self.metrics
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.metrics[i])
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricStats {
    pub name: String,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub last: f64,
}

impl MetricStats {
    fn bits_eq(&self, o: &MetricStats) -> bool {
        self.name == o.name
            && self.count == o.count
            && f64_bits_eq(self.min, o.min)
            && f64_bits_eq(self.max, o.max)
            && f64_bits_eq(self.mean, o.mean)
            && f64_bits_eq(self.last, o.last)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ohlc {
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
}

impl Ohlc {
    fn bits_eq(&self, o: &Ohlc) -> bool {
        f64_bits_eq(self.open, o.open)
            && f64_bits_eq(self.high, o.high)
            && f64_bits_eq(self.low, o.low)
            && f64_bits_eq(self.close, o.close)
    }
}

/// A predictor's forecast of one window (the capsule key's window).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    pub predictor: String,
    pub made_at_ms: i64,
    pub horizon_ms: u64,
    pub confidence: f64,
    pub series: Vec<PredictedSeries>,
}

impl Prediction {
    fn bits_eq(&self, o: &Prediction) -> bool {
        self.predictor == o.predictor
            && self.made_at_ms == o.made_at_ms
            && self.horizon_ms == o.horizon_ms
            && f64_bits_eq(self.confidence, o.confidence)
            && self.series.len() == o.series.len()
            && self
                .series
                .iter()
                .zip(&o.series)
                .all(|(a, b)| a.name == b.name && f64_bits_eq(a.value, b.value) && f64_bits_eq(a.base, b.base))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictedSeries {
    /// `"price"`, `"volume"`, `"stress"`, or a metric name.
    pub name: String,
    /// Predicted value of the window (see [`crate::accuracy`] for what it is compared with).
    pub value: f64,
    /// The last observed value when the prediction was made; gives the predicted direction.
    pub base: f64,
}

/// The body of `POST /capsules`: `{"scopeId","timestamp","resolution","vantageMode","payload"}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapsuleRequest {
    pub scope_id: String,
    pub timestamp: i64,
    pub resolution: u32,
    pub vantage_mode: String,
    pub payload: serde_json::Value,
}

impl CapsuleRequest {
    /// Validates the request and builds the capsule (API-created capsules must use a named
    /// vantage: OBSERVED and PREDICTED belong to rimd).
    pub fn into_capsule(self, created_ms: i64) -> Result<Capsule, ModelError> {
        let vantage = Vantage::parse(&self.vantage_mode)?;
        let capsule = Capsule {
            key: CapsuleKey {
                scope_id: self.scope_id,
                timestamp: self.timestamp,
                resolution: self.resolution,
                vantage,
            },
            body: CapsuleBody::payload(&self.payload)?,
            created_ms,
        };
        capsule.validate()?;
        Ok(capsule)
    }
}
