//! The vocabulary shared by the compiler, the evaluator and the daemon: what a rule can read
//! ([`Field`], [`Series`], [`MetricKey`]), the [`Inputs`] trait through which the daemon
//! supplies those values, the [`Evidence`] a rule leaves behind, [`Severity`] and the compile
//! [`Limits`].
//!
//! Nothing here allocates: these types sit on the hot path.

use crate::hash::name_hash;

/// A metric, by the [`name_hash`] of its name. The daemon hashes the names of an event's
/// `critical_metrics` with the same function, so lookups never touch strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetricKey(pub u64);

impl MetricKey {
    /// The key of the metric called `name`.
    pub fn of(name: &str) -> Self {
        Self(name_hash(name))
    }
}

/// A value with history, as read by `change`, `pct_change`, `zscore` and `ewma`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Series {
    /// The event's `price`.
    Price,
    /// The event's `volume`.
    Volume,
    /// The event's `stress`.
    Stress,
    /// One of the event's `critical_metrics`.
    Metric(MetricKey),
}

/// A numeric field of the current event (or of the node's state, for `gap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The event's `price`, if present.
    Price,
    /// The event's `volume`, if present.
    Volume,
    /// The event's `stress`, if present.
    Stress,
    /// Milliseconds since the node's previous event; absent for a node's first event.
    Gap,
}

/// How serious a fired rule is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Severity {
    /// Informational.
    Info = 0,
    /// Low.
    Low = 1,
    /// Medium.
    Medium = 2,
    /// High.
    High = 3,
    /// Critical.
    Critical = 4,
}

impl Severity {
    /// Every severity, in order.
    pub const ALL: [Severity; 5] = [Self::Info, Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The name used in rule files: `info`, `low`, `medium`, `high`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// The severity whose `repr(u8)` is `v`, if any.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// The severity named `s` (exactly as [`Severity::as_str`] spells it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sev| sev.as_str() == s)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule can read, supplied by the daemon for one node and one event.
///
/// Every method returns `None` (unknown) when the value does not exist: an absent optional
/// field, a metric not in this event, not enough history. Implementations should be cheap
/// and must not block: they are called on the hot path, once per leaf read.
pub trait Inputs {
    /// A numeric field of the current event, or `gap`.
    fn field(&self, f: Field) -> Option<f64>;
    /// [`name_hash`] of the event's `status`.
    fn status_hash(&self) -> u64;
    /// The current event's value of a metric.
    fn metric(&self, key: MetricKey) -> Option<f64>;
    /// `(then, now)`: the series' value `window_ms` ago and now, if the history reaches back
    /// that far.
    fn change(&self, s: Series, window_ms: u64) -> Option<(f64, f64)>;
    /// The series' current z-score against its EWMA mean and variance.
    fn zscore(&self, s: Series) -> Option<f64>;
    /// The series' EWMA.
    fn ewma(&self, s: Series) -> Option<f64>;
    /// `Some(ms)` only during a staleness sweep: how long the node has been silent.
    fn silent_ms(&self) -> Option<u64>;
}

/// Most leaves one rule may read (and so most entries in an [`Evidence`]).
pub const EVIDENCE_MAX: usize = 16;

/// What a rule read while evaluating: `(index into the rule's labels, value)`, the value NaN
/// when unknown. Fixed capacity, no allocation; each label appears at most once, in the
/// order first read.
#[derive(Clone, Copy, Debug)]
pub struct Evidence {
    items: [(u16, f64); EVIDENCE_MAX],
    len: u8,
}

impl Default for Evidence {
    fn default() -> Self {
        Self::new()
    }
}

impl Evidence {
    /// An empty record.
    pub fn new() -> Self {
        Self {
            items: [(0, f64::NAN); EVIDENCE_MAX],
            len: 0,
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Entries recorded.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// No entry recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, in the order first read.
    pub fn iter(&self) -> impl Iterator<Item = (u16, f64)> + '_ {
        self.items[..self.len()].iter().copied()
    }

    /// The value recorded for `label`, if it was read (NaN when it was unknown).
    pub fn get(&self, label: u16) -> Option<f64> {
        self.iter().find(|&(l, _)| l == label).map(|(_, v)| v)
    }

    /// Records a read. A label read twice (short-circuiting may re-read a shared leaf) keeps
    /// its first entry; the compiler guarantees at most [`EVIDENCE_MAX`] distinct labels, and
    /// an overflow is dropped rather than panicking.
    #[inline]
    pub(crate) fn push(&mut self, label: u16, value: Option<f64>) {
        let n = self.len();
        if self.items[..n].iter().any(|&(l, _)| l == label) {
            return;
        }
        if let Some(slot) = self.items.get_mut(n) {
            *slot = (label, value.unwrap_or(f64::NAN));
            self.len += 1;
        }
    }
}

/// Bounds on what a rule file may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most rules in one file.
    pub rules_max: usize,
    /// Shortest `change`/`pct_change` window, in milliseconds.
    pub window_min_ms: u64,
    /// Longest `change`/`pct_change` window, in milliseconds (the daemon keeps this much
    /// history).
    pub window_max_ms: u64,
    /// Most rules that use `stale()` (each gets a bit in the daemon's per-node sweep mask;
    /// never more than 256 whatever this says, as ordinals are `u8`).
    pub stale_rules_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rules_max: 1000,
            window_min_ms: 1,
            window_max_ms: 60_000,
            stale_rules_max: 64,
        }
    }
}
