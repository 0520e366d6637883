//! The memory budget of a daemon, computed from its configuration (README "Memory
//! budget"): what it reserves up front, what its rings and caches may hold, and what each
//! WebSocket client may cost, plus the fixed cost of the process itself.

use rim_stats::Snapshot;
use rimd::config::Config;

/// The process without its tables, rings and caches: code, the allocator's arenas, glommio
/// executors (their io_uring rings and buffers), thread stacks, HTTP and store structures.
/// Measured: an idle default daemon with `reflex.nodes_max = 1000` peaks at ~40 MiB here;
/// the budget allows for the peak of a busy one.
pub const PROCESS_BYTES: u64 = 96 << 20;
/// One WebSocket client beyond its queue: its connection's task, hyper's read and write
/// buffers (8 KiB each, growing to 64 KiB under load), the framing buffer.
pub const WS_CLIENT_BYTES: u64 = 160 << 10;
/// State a node gains as it is used, beyond the tables allocated at start: its roll-up
/// windows per resolution, its pending predictions and their scoring, its accuracy row,
/// its names. This part grows with the nodes in use and no table bounds it up front, so
/// it is a measured constant, not a derived one: `nodes-100k` peaked at ~1,320 MiB after
/// 15 s and after 60 s alike (13.8M and 59.5M events), ~6.5 KiB per node beyond the other
/// parts; the budget allows 8 KiB.
pub const NODE_STATE_BYTES: u64 = 8 << 10;
/// One capsule waiting for the store (observed or predicted: its key, figures and names).
pub const QUEUED_CAPSULE_BYTES: u64 = 1 << 10;
/// One queued decision of a WebSocket client: its handle (the rendered text is shared by
/// every client) and a share of the text itself.
pub const WS_QUEUED_BYTES: u64 = 64;

/// The parts of one budget, named, in bytes.
#[derive(Debug, Clone)]
pub struct Budget {
    /// (part, bytes).
    pub parts: Vec<(&'static str, u64)>,
}

impl Budget {
    /// The budget of a daemon with `cfg`, whose stats `s` report the tables it reserved
    /// (sized by `reflex.nodes_max`, `ingest.dedup_window`, the series and rule limits)
    /// and the rings it granted, with `ws_clients` WebSocket clients connected and a store
    /// that does not commit for `store_stall_s` seconds (while it does not, every active
    /// node closes a window per resolution and period, each an observed and a predicted
    /// capsule, and they wait in memory).
    pub fn of(cfg: &Config, s: &Snapshot, ws_clients: u64, store_stall_s: u64) -> Self {
        let gauge = |k: &str| s.gauges.get(k).copied().unwrap_or(0).max(0) as u64;
        // Every shared-memory ring the daemon maps: producers, intake, decisions.
        let rings: u64 = s.rings.iter().map(|r| r.capacity).sum();
        let in_process = cfg.persist.journal_ring_bytes as u64
            + cfg.persist.reflex_ring_bytes as u64 * cfg.topology.reflex_shards as u64;
        let windows_per_node: f64 = cfg
            .persist
            .resolutions
            .iter()
            .map(|&r| store_stall_s as f64 / f64::from(r.max(1)))
            .sum();
        let backlog = (gauge("nodes") as f64 * windows_per_node.ceil() * 2.0) as u64 * QUEUED_CAPSULE_BYTES;
        let ws = ws_clients * (WS_CLIENT_BYTES + cfg.api.ws_queue_len as u64 * WS_QUEUED_BYTES);
        Self {
            parts: vec![
                ("process", PROCESS_BYTES),
                ("tables", gauge("tables_bytes")),
                ("node_state", cfg.reflex.nodes_max as u64 * NODE_STATE_BYTES),
                ("rings", rings + in_process),
                ("store_cache", cfg.persist.store_cache_bytes as u64),
                ("ws_clients", ws),
                ("store_backlog", backlog),
            ],
        }
    }

    /// The whole budget.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }
}
