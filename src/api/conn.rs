//! What keeps one client from holding the server: a cap on open connections and a
//! watchdog per connection that cuts it when it is too slow.
//!
//! Guarantees:
//! - at most `api.connections_max` HTTP connections are served at once; the accept loop
//!   closes every connection beyond that at once (counted), so the ones already open keep
//!   their answers;
//! - a request's header must be complete within `api.header_read_timeout_ms` of its first
//!   byte, its body within `api.body_read_timeout_ms` of the header;
//! - a connection with no request in progress on which no byte moved for
//!   `api.idle_timeout_ms` (including one that never sends a byte) is closed;
//! - every cut and refusal is counted and shown in `/metrics`.
//!
//! The timers are glommio's own (`glommio::timer::sleep`), on the HTTP executor: hyper's
//! `header_read_timeout` is not used because it needs a `Send + Sync` timer and starts
//! counting as soon as a keep-alive connection falls idle, so idle and header timeouts
//! could not be told apart. A request being handled (a `?wait=durable` post, a store
//! write) is never cut: its own bounds apply (`api.durable_wait_ms`, …). A WebSocket
//! leaves this watch at its upgrade and is kept alive by its own pings.

use std::cell::Cell;
use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use super::config::ApiConfig;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests (or before the first): waiting for a request's first byte.
    Idle,
    /// A request's first byte arrived; its header is not complete.
    Header,
    /// The header is complete and the handler is reading the body.
    Body,
    /// The handler is working (or its answer is being written).
    Busy,
}

/// Why a connection was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// No request and no byte for `api.idle_timeout_ms`.
    Idle,
    /// A header took longer than `api.header_read_timeout_ms`.
    Header,
    /// A body took longer than `api.body_read_timeout_ms`.
    Body,
}

/// One connection's phase and since when it is in it. Shared (`Rc`) by the stream
/// adapter (bytes moving), the request pipeline (request start and end) and the watchdog.
#[derive(Debug)]
pub struct ConnWatch {
    phase: Cell<Phase>,
    since: Cell<Instant>,
    handling: Cell<u32>,
}

impl Default for ConnWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnWatch {
    /// A connection just accepted: idle.
    pub fn new() -> Self {
        Self {
            phase: Cell::new(Phase::Idle),
            since: Cell::new(Instant::now()),
            handling: Cell::new(0),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    fn enter(&self, phase: Phase) {
        self.phase.set(phase);
        self.since.set(Instant::now());
    }

    /// Bytes arrived: the first byte of a request starts its header clock.
    pub fn on_read(&self) {
        if self.phase.get() == Phase::Idle {
            self.enter(Phase::Header);
        }
    }

    /// Bytes left: an answer still flowing out to a slow reader is not idleness.
    pub fn on_write(&self) {
        if self.phase.get() == Phase::Idle {
            self.since.set(Instant::now());
        }
    }

    /// A request's header is complete: the handler starts (hyper may pipeline).
    pub fn request_started(&self) {
        self.handling.set(self.handling.get() + 1);
        self.enter(Phase::Busy);
    }

    /// The handler reads the body now (bounded by `api.body_read_timeout_ms`).
    pub fn body_started(&self) {
        self.enter(Phase::Body);
    }

    /// The body is read; the handler works on.
    pub fn body_done(&self) {
        if self.phase.get() == Phase::Body {
            self.enter(Phase::Busy);
        }
    }

    /// A handler returned its answer; with none left the connection is idle.
    pub fn request_done(&self) {
        let left = self.handling.get().saturating_sub(1);
        self.handling.set(left);
        if left == 0 {
            self.enter(Phase::Idle);
        }
    }

    /// Whether the connection has overstayed its phase at `now`.
    pub fn overdue(&self, limits: &Limits, now: Instant) -> Option<Cut> {
        let spent = now.saturating_duration_since(self.since.get());
        match self.phase.get() {
            Phase::Idle if spent >= limits.idle => Some(Cut::Idle),
            Phase::Header if spent >= limits.header => Some(Cut::Header),
            Phase::Body if spent >= limits.body => Some(Cut::Body),
            _ => None,
        }
    }
}

/// The connection timeouts of `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `api.idle_timeout_ms`.
    pub idle: Duration,
    /// `api.header_read_timeout_ms`.
    pub header: Duration,
    /// `api.body_read_timeout_ms`.
    pub body: Duration,
}

/// Coarsest and finest watchdog period: a cut comes at most a quarter of the shortest
/// timeout late, and the watchdog wakes at most every 10 ms.
const TICK_MIN: Duration = Duration::from_millis(10);
const TICK_MAX: Duration = Duration::from_secs(1);

impl Limits {
    /// From `[api]`.
    pub fn of(cfg: &ApiConfig) -> Self {
        Self {
            idle: Duration::from_millis(cfg.idle_timeout_ms),
            header: Duration::from_millis(cfg.header_read_timeout_ms),
            body: Duration::from_millis(cfg.body_read_timeout_ms),
        }
    }

    /// How often the watchdog looks.
    pub fn tick(&self) -> Duration {
        (self.idle.min(self.header).min(self.body) / 4).clamp(TICK_MIN, TICK_MAX)
    }
}

/// Resolves when `watch` overstays a phase (never while a request is handled).
pub async fn watchdog(watch: &ConnWatch, limits: Limits) -> Cut {
    let tick = limits.tick();
    loop {
        glommio::timer::sleep(tick).await;
        if let Some(cut) = watch.overdue(&limits, Instant::now()) {
            return cut;
        }
    }
}

/// Runs `conn` until it ends or the watchdog cuts it (dropping `conn` closes the socket).
pub async fn guarded<F: Future>(conn: F, watch: &ConnWatch, limits: Limits) -> Result<F::Output, Cut> {
    futures_lite::future::or(async { Ok(conn.await) }, async { Err(watchdog(watch, limits).await) }).await
}

/// The server's connection counters (one executor: plain cells).
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Open now.
    pub open: Cell<u64>,
    /// Accepted and served, ever.
    pub accepted: Cell<u64>,
    /// Closed at accept because `api.connections_max` were open.
    pub refused_cap: Cell<u64>,
    /// Cut for idleness.
    pub cut_idle: Cell<u64>,
    /// Cut for a slow header.
    pub cut_header: Cell<u64>,
    /// Cut for a slow body.
    pub cut_body: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

impl ConnCounters {
    /// Counts a cut.
    pub fn cut(&self, why: Cut) {
        match why {
            Cut::Idle => bump(&self.cut_idle),
            Cut::Header => bump(&self.cut_header),
            Cut::Body => bump(&self.cut_body),
        }
    }

    /// Counts a refusal at the cap.
    pub fn refused(&self) {
        bump(&self.refused_cap);
    }

    /// Counts a connection taken in; the returned guard counts it out when dropped.
    pub fn open(&self) -> OpenGuard<'_> {
        bump(&self.accepted);
        bump(&self.open);
        OpenGuard(self)
    }

    /// Appends the counters as Prometheus text (`rimd_http_…`).
    pub fn render_prometheus(&self, cap: usize, out: &mut String) {
        let gauges = [
            (
                "rimd_http_connections_open",
                "HTTP connections open now",
                self.open.get(),
            ),
            ("rimd_http_connections_max", "api.connections_max", cap as u64),
        ];
        for (name, help, v) in gauges {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        }
        let counters = [
            (
                "rimd_http_connections_accepted_total",
                "HTTP connections served",
                self.accepted.get(),
            ),
            (
                "rimd_http_connections_refused_total",
                "HTTP connections closed at accept: api.connections_max were open",
                self.refused_cap.get(),
            ),
        ];
        for (name, help, v) in counters {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        }
        let name = "rimd_http_connections_cut_total";
        let _ = write!(
            out,
            "# HELP {name} HTTP connections closed for being too slow, by reason\n# TYPE {name} counter\n"
        );
        for (reason, v) in [
            ("idle", self.cut_idle.get()),
            ("header", self.cut_header.get()),
            ("body", self.cut_body.get()),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {v}");
        }
    }
}

/// Counts an open connection out when dropped.
pub struct OpenGuard<'a>(&'a ConnCounters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            idle: Duration::from_millis(1_000),
            header: Duration::from_millis(100),
            body: Duration::from_millis(200),
        }
    }

    #[test]
    fn each_phase_has_its_own_clock_and_a_request_in_progress_is_never_cut() {
        let w = ConnWatch::new();
        let t0 = Instant::now();
        let l = limits();
        assert_eq!(w.overdue(&l, t0 + Duration::from_millis(500)), None);
        assert_eq!(w.overdue(&l, t0 + Duration::from_millis(1_100)), Some(Cut::Idle));
        w.on_read();
        assert_eq!(w.phase(), Phase::Header);
        assert_eq!(
            w.overdue(&l, Instant::now() + Duration::from_millis(150)),
            Some(Cut::Header)
        );
        w.request_started();
        assert_eq!(w.overdue(&l, Instant::now() + Duration::from_secs(3_600)), None);
        w.body_started();
        assert_eq!(
            w.overdue(&l, Instant::now() + Duration::from_millis(250)),
            Some(Cut::Body)
        );
        w.body_done();
        assert_eq!(w.phase(), Phase::Busy);
        w.request_done();
        assert_eq!(w.phase(), Phase::Idle);
        // More bytes of the same header do not restart its clock.
        w.on_read();
        let since = w.since.get();
        w.on_read();
        assert_eq!(w.since.get(), since);
    }

    #[test]
    fn pipelined_requests_keep_the_connection_busy_until_the_last_answer() {
        let w = ConnWatch::new();
        w.request_started();
        w.request_started();
        w.request_done();
        assert_eq!(w.phase(), Phase::Busy);
        w.request_done();
        assert_eq!(w.phase(), Phase::Idle);
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shortest_timeout_within_bounds() {
        assert_eq!(limits().tick(), Duration::from_millis(25));
        let long = Limits {
            idle: Duration::from_secs(60),
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
        };
        assert_eq!(long.tick(), TICK_MAX);
    }

    #[test]
    fn counters_render_as_prometheus_text() {
        let c = ConnCounters::default();
        let g = c.open();
        c.refused();
        c.cut(Cut::Header);
        let mut out = String::new();
        c.render_prometheus(8, &mut out);
        assert!(out.contains("rimd_http_connections_open 1\n"), "{out}");
        assert!(out.contains("rimd_http_connections_refused_total 1\n"), "{out}");
        assert!(
            out.contains("rimd_http_connections_cut_total{reason=\"header\"} 1\n"),
            "{out}"
        );
        drop(g);
        assert_eq!(c.open.get(), 0);
    }
}
