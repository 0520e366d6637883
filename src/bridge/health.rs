//! What the bridge tells readiness and metrics: a state (up, degraded, down), the last
//! error, and counters. Written by the bridge threads and librdkafka's callbacks, read by
//! the HTTP API and the stats; atomics except the error text.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::clock::Clock;

/// The bridge's state as readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeState {
    /// Not running (disabled, not started yet, stopped, or failed to start).
    Down,
    /// Running, but a broker or the registry is failing: events from Kafka may wait, the
    /// shared-memory path is unaffected.
    Degraded,
    /// Running and talking to the brokers.
    Up,
}

impl BridgeState {
    /// `down`, `degraded` or `up`.
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeState::Down => "down",
            BridgeState::Degraded => "degraded",
            BridgeState::Up => "up",
        }
    }
}

/// Shared health of the bridge. Create one with [`BridgeHealth::new`], hand it to
/// [`super::spawn`], and read it anywhere.
#[derive(Debug, Default)]
pub struct BridgeHealth {
    running: AtomicBool,
    /// The consumer side reached the brokers since its last error.
    in_ok: AtomicBool,
    /// The producer side reached the brokers since its last error.
    out_ok: AtomicBool,
    last_error: Mutex<String>,
    last_error_ms: AtomicU64,
    /// Times the last error.
    clock: Clock,
    /// Messages taken from the inbound topic.
    pub consumed: AtomicU64,
    /// Events handed to ingest.
    pub ingested: AtomicU64,
    /// Capsules and decisions delivered to their topics (acknowledged by the broker).
    pub published: AtomicU64,
    /// Messages delivered to the DLQ.
    pub dlq: AtomicU64,
    /// Offset commits that succeeded.
    pub commits: AtomicU64,
    /// Retries of messages (registry unreachable).
    pub retries: AtomicU64,
    /// Times the ring into ingest was full and a publish waited.
    pub ring_full: AtomicU64,
    /// Outbox deliveries that failed and were sent again.
    pub redeliveries: AtomicU64,
}

/// A copy of the health at one instant (for JSON and metrics).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeHealthSnapshot {
    /// `up`, `degraded`, `down`.
    pub state: BridgeState,
    /// The last error, if any since start.
    pub last_error: Option<String>,
    /// When it happened, unix ms (0 when none).
    pub last_error_ms: u64,
    /// See [`BridgeHealth::consumed`].
    pub consumed: u64,
    /// See [`BridgeHealth::ingested`].
    pub ingested: u64,
    /// See [`BridgeHealth::published`].
    pub published: u64,
    /// See [`BridgeHealth::dlq`].
    pub dlq: u64,
    /// See [`BridgeHealth::commits`].
    pub commits: u64,
    /// See [`BridgeHealth::retries`].
    pub retries: u64,
    /// See [`BridgeHealth::ring_full`].
    pub ring_full: u64,
    /// See [`BridgeHealth::redeliveries`].
    pub redeliveries: u64,
}

/// Which client an error or a success is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    In,
    Out,
}

impl BridgeHealth {
    /// Down, counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Health whose error times are read on `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// The current state.
    pub fn state(&self) -> BridgeState {
        if !self.running.load(Ordering::Acquire) {
            return BridgeState::Down;
        }
        if self.in_ok.load(Ordering::Acquire) && self.out_ok.load(Ordering::Acquire) {
            BridgeState::Up
        } else {
            BridgeState::Degraded
        }
    }

    /// The last error text, if any.
    pub fn last_error(&self) -> Option<String> {
        let e = self.last_error.lock().map(|g| g.clone()).unwrap_or_default();
        (!e.is_empty()).then_some(e)
    }

    /// Everything at once.
    pub fn snapshot(&self) -> BridgeHealthSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BridgeHealthSnapshot {
            state: self.state(),
            last_error: self.last_error(),
            last_error_ms: get(&self.last_error_ms),
            consumed: get(&self.consumed),
            ingested: get(&self.ingested),
            published: get(&self.published),
            dlq: get(&self.dlq),
            commits: get(&self.commits),
            retries: get(&self.retries),
            ring_full: get(&self.ring_full),
            redeliveries: get(&self.redeliveries),
        }
    }

    /// `(name, kind, value)` for Prometheus text, names without their prefix: `state` is
    /// a gauge (0 down, 1 degraded, 2 up), the rest are counters.
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        let s = self.snapshot();
        let state = match s.state {
            BridgeState::Down => 0,
            BridgeState::Degraded => 1,
            BridgeState::Up => 2,
        };
        vec![
            ("state", "gauge", state),
            ("consumed_total", "counter", s.consumed),
            ("ingested_total", "counter", s.ingested),
            ("published_total", "counter", s.published),
            ("dlq_total", "counter", s.dlq),
            ("commits_total", "counter", s.commits),
            ("retries_total", "counter", s.retries),
            ("ring_full_total", "counter", s.ring_full),
            ("redeliveries_total", "counter", s.redeliveries),
        ]
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
    }

    /// A client reached the brokers.
    pub(crate) fn ok(&self, side: Side) {
        self.flag(side).store(true, Ordering::Release);
    }

    /// Whether a client is known to reach the brokers.
    pub(crate) fn is_ok(&self, side: Side) -> bool {
        self.flag(side).load(Ordering::Acquire)
    }

    /// A client failed: degraded until it reaches the brokers again.
    pub(crate) fn failed(&self, side: Side, error: &str) {
        self.flag(side).store(false, Ordering::Release);
        self.error(error);
    }

    /// Records an error that does not change the state (a message sent to the DLQ).
    pub(crate) fn error(&self, error: &str) {
        if let Ok(mut g) = self.last_error.lock() {
            g.clear();
            g.push_str(error);
        }
        self.last_error_ms.store(self.clock.unix_ms(), Ordering::Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn flag(&self, side: Side) -> &AtomicBool {
        match side {
            Side::In => &self.in_ok,
            Side::Out => &self.out_ok,
        }
    }

    /// A side that does not run counts as healthy (a bridge that only publishes is up
    /// when its producer is).
    pub(crate) fn not_used(&self, side: Side) {
        self.ok(side);
    }
}

impl crate::api::context::Health for BridgeHealth {
    fn state_and_reason(&self) -> (String, String) {
        let state = self.state();
        let reason = match state {
            BridgeState::Up => String::new(),
            _ => self.last_error().unwrap_or_else(|| "not connected yet".to_owned()),
        };
        (state.as_str().to_owned(), reason)
    }

    fn render_prometheus(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write;
        for (name, kind, value) in self.metrics() {
            let _ = writeln!(out, "# TYPE {prefix}_{name} {kind}\n{prefix}_{name} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_running_and_both_sides() {
        let h = BridgeHealth::new();
        assert_eq!(h.state(), BridgeState::Down);
        h.set_running(true);
        assert_eq!(h.state(), BridgeState::Degraded);
        h.ok(Side::In);
        h.ok(Side::Out);
        assert_eq!(h.state(), BridgeState::Up);
        h.failed(Side::Out, "broker down");
        assert_eq!(h.state(), BridgeState::Degraded);
        assert_eq!(h.last_error().as_deref(), Some("broker down"));
        h.ok(Side::Out);
        assert_eq!(h.state(), BridgeState::Up);
        h.set_running(false);
        assert_eq!(h.state(), BridgeState::Down);
        let m = h.metrics();
        assert_eq!(m[0], ("state", "gauge", 0));
        let mut text = String::new();
        crate::api::context::Health::render_prometheus(&h, "rimd_bridge", &mut text);
        assert!(
            text.contains("# TYPE rimd_bridge_state gauge\nrimd_bridge_state 0\n"),
            "{text}"
        );
        assert!(text.contains("rimd_bridge_dlq_total 0\n"), "{text}");
    }
}
