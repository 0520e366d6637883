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
//! - [`seqlock`]: the segment's protocol over any array of atomic words (model-checked with
//!   loom).
//! - [`prometheus`]: Prometheus text exposition of a snapshot.
//! - [`error`]: the crate's one error type.

pub mod error;
pub mod handoff;
pub mod hist;
pub mod prometheus;
#[cfg(not(loom))]
pub mod segment;
pub mod seqlock;
pub mod snapshot;

pub use error::StatsError;
pub use handoff::{handoff, ColdEnd, HotEnd};
pub use hist::{StageHistograms, HIGHEST_NS, LOWEST_NS, SIGNIFICANT_DIGITS};
pub use prometheus::render_prometheus;
#[cfg(not(loom))]
pub use segment::{StatsReader, StatsWriter, DEFAULT_MODE, LAYOUT_VERSION, MAGIC};
pub use seqlock::HEADER_BYTES;
pub use snapshot::{Quantiles, RingSnapshot, ShardSnapshot, Snapshot};

#[cfg(all(test, not(loom)))]
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
