//! `[api]` settings: where the HTTP server listens, who may call it, how much it takes
//! and how often, and the defaults of the temporal slice.
use serde::{Deserialize, Serialize};

/// `[api]`: the HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the HTTP API.
    pub enabled: bool,
    /// Listen address (loopback by default; port 0 picks a free port, written to
    /// `{run_dir}/http.addr` once bound).
    pub listen: String,
    /// Bearer-token file (empty: no authentication). Must be mode 0600 (no group or other
    /// bits). One token per line: `<scope> <token>` with scope `read` or `admin`; `#`
    /// starts a comment.
    pub tokens_file: String,
    /// Largest request body, bytes (413 above), for every route but `POST /events`.
    pub body_bytes_max: usize,
    /// Largest `POST /events` body, bytes: large enough for a full batch.
    pub events_body_bytes_max: usize,
    /// Events in one `POST /events` batch at most.
    pub batch_events_max: usize,
    /// Query requests (GET) per client per minute; 0 = unlimited.
    pub rate_query_per_min: u32,
    /// Command requests (POST, PUT, DELETE) per client per minute; 0 = unlimited.
    pub rate_command_per_min: u32,
    /// Clients tracked by the rate limiter at most (the oldest windows are forgotten first).
    pub rate_clients_max: usize,
    /// How long `POST /events` keeps retrying a full intake ring before 503, ms.
    pub publish_wait_ms: u64,
    /// How long `POST /events?wait=durable` waits for the journal before 504, ms.
    pub durable_wait_ms: u64,
    /// Decisions queued per WebSocket client before it starts missing them.
    pub ws_queue_len: usize,
    /// WebSocket clients at most.
    pub ws_clients_max: usize,
    /// Silence from a WebSocket client after which the server pings it, ms.
    pub ws_ping_interval_ms: u64,
    /// How long a ping may go unanswered (no frame at all) before the client is dropped, ms.
    pub ws_pong_timeout_ms: u64,
    /// How often the decision poller looks at the broadcast rings when idle, µs.
    pub ws_poll_us: u64,
    /// Default lookback of `GET /temporal/slice`, seconds.
    pub slice_lookback_s: u64,
    /// Default resolution of `GET /temporal/slice`, seconds.
    pub slice_resolution_s: u32,
    /// Memory for the slice's resident windows (rendered capsules of the nodes asked for,
    /// at the default resolution and lookback), bytes; 0 = always read the store.
    pub slice_cache_bytes: usize,
    /// Half-life of the slice's freshness (the present's weight halves with each), ms.
    pub freshness_half_life_ms: u64,
    /// Page size when a request gives none.
    pub page_size_default: usize,
    /// Largest page size.
    pub page_size_max: usize,
    /// On stop: how long in-flight requests may take to finish, ms.
    pub drain_ms: u64,
    /// HTTP connections served at once at most; more are closed at accept (counted).
    pub connections_max: usize,
    /// How long a request's header may take from its first byte, ms (slow clients are
    /// cut and counted).
    pub header_read_timeout_ms: u64,
    /// How long a request's body may take once its header is complete, ms.
    pub body_read_timeout_ms: u64,
    /// How long a connection may stay open with no request in progress and no byte
    /// moving (before its first request, or between keep-alive requests), ms.
    pub idle_timeout_ms: u64,
    /// Backtests (`POST /rules/backtests`) running at once at most; more are refused (429).
    pub backtests_max: usize,
    /// Widest range a backtest may compare, ms of event time.
    pub backtest_range_ms_max: u64,
    /// Journal events a backtest replays at most (it replays from the journal's start).
    pub backtest_events_max: u64,
    /// Finished backtests kept for `GET /rules/backtests/{id}` (the oldest go first).
    pub backtests_kept: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:7070".into(),
            tokens_file: String::new(),
            body_bytes_max: 1 << 20,
            events_body_bytes_max: 8 << 20,
            batch_events_max: 10_000,
            rate_query_per_min: 1_000,
            rate_command_per_min: 100,
            rate_clients_max: 10_000,
            publish_wait_ms: 2_000,
            durable_wait_ms: 5_000,
            ws_queue_len: 1_024,
            ws_clients_max: 256,
            ws_poll_us: 1_000,
            ws_ping_interval_ms: 30_000,
            ws_pong_timeout_ms: 10_000,
            slice_lookback_s: 3_600,
            slice_resolution_s: 60,
            slice_cache_bytes: 256 << 20,
            freshness_half_life_ms: 60_000,
            page_size_default: 20,
            page_size_max: 1_000,
            drain_ms: 500,
            // A public-facing server's settings: room for many clients, but no slowloris.
            connections_max: 1_024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            backtests_max: 1,
            backtest_range_ms_max: 7 * 24 * 3_600_000,
            backtest_events_max: 200_000_000,
            backtests_kept: 16,
        }
    }
}

impl ApiConfig {
    /// Checks the settings against each other; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 11] = [
            (
                self.backtests_kept >= self.backtests_max && self.backtest_range_ms_max > 0,
                "api.backtests_kept must be at least api.backtests_max, and api.backtest_range_ms_max at least 1",
            ),
            (self.body_bytes_max > 0, "api.body_bytes_max must be at least 1"),
            (
                self.events_body_bytes_max > 0,
                "api.events_body_bytes_max must be at least 1",
            ),
            (
                (1..=1_000_000).contains(&self.batch_events_max),
                "api.batch_events_max must be in 1..=1000000",
            ),
            (self.ws_queue_len > 0, "api.ws_queue_len must be at least 1"),
            (
                self.slice_resolution_s > 0 && self.slice_lookback_s > 0,
                "api.slice_resolution_s and api.slice_lookback_s must be at least 1",
            ),
            (
                self.page_size_default > 0 && self.page_size_default <= self.page_size_max,
                "api.page_size_default must be in 1..=api.page_size_max",
            ),
            (self.rate_clients_max > 0, "api.rate_clients_max must be at least 1"),
            (self.connections_max > 0, "api.connections_max must be at least 1"),
            (
                self.ws_ping_interval_ms > 0 && self.ws_pong_timeout_ms > 0,
                "api.ws_ping_interval_ms and api.ws_pong_timeout_ms must be at least 1",
            ),
            (
                self.header_read_timeout_ms > 0 && self.body_read_timeout_ms > 0 && self.idle_timeout_ms > 0,
                "api.header_read_timeout_ms, api.body_read_timeout_ms and api.idle_timeout_ms must be at least 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_owned()),
            None => Ok(()),
        }
    }
}
