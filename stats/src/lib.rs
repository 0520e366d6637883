//! rimd's statistics, at the bottom of the dependency graph: this crate knows nothing of
//! the daemon, only of numbers.
//!
//! - [`hist`]: per-stage HDR latency histograms that hot shards record into without
//!   allocating or locking.
//! - [`handoff`](mod@handoff): the recycling channel that moves filled histograms (or any boxed value)
//!   from a hot shard to the cold shard that aggregates them, so the hot side never
//!   allocates or frees.
//! - [`snapshot`]: the data model of one statistics snapshot (what `rimctl stats` shows and
//!   `/metrics` renders).
//! - [`segment`]: the stats segment, a shared-memory file the daemon rewrites about every
//!   100 ms under a seqlock, and its reader.
//! - [`prometheus`]: Prometheus text exposition of a snapshot.
//! - [`error`]: the crate's one error type.

pub mod error;
pub mod handoff;
pub mod hist;
pub mod prometheus;
pub mod segment;
pub mod snapshot;

pub use error::StatsError;
pub use handoff::{handoff, ColdEnd, HotEnd};
pub use hist::{StageHistograms, HIGHEST_NS, LOWEST_NS, SIGNIFICANT_DIGITS};
pub use prometheus::render_prometheus;
pub use segment::{StatsReader, StatsWriter, DEFAULT_MODE, HEADER_BYTES, LAYOUT_VERSION, MAGIC};
pub use snapshot::{Quantiles, RingSnapshot, ShardSnapshot, Snapshot};

#[cfg(test)]
mod tests {
    /// The daemon moves these to the threads that use them.
    #[test]
    fn ends_and_segment_handles_are_send() {
        fn send<T: Send>() {}
        send::<crate::HotEnd<crate::StageHistograms>>();
        send::<crate::ColdEnd<crate::StageHistograms>>();
        send::<crate::StatsWriter>();
        send::<crate::StatsReader>();
        send::<crate::StageHistograms>();
    }
}
