//! The daemon journal's streams and the decision log's record kinds: the on-disk layout the
//! journal thread writes and every reader (recovery, the backtest, `rimctl replay`, the
//! store's decision index) reads. Kept apart from the log's reader (`rimd::persist::audit`)
//! so the readers that do not open the store need not link it.

/// The journal stream of events.
pub const STREAM_EVENTS: u32 = 0;
/// The journal stream of decisions and predictions.
pub const STREAM_DECISIONS: u32 = 1;
/// Streams of the daemon's journal.
pub const STREAMS: u32 = 2;
/// Log record kind: a decision.
pub const LOG_DECISION: u8 = 1;
/// Log record kind: a prediction.
pub const LOG_PREDICTION: u8 = 2;
/// Log record kind: a clean shutdown (the kind byte alone), written after everything else
/// was durable: a log that ends with it lost nothing undurable, so the chains resume with
/// no gap.
pub const LOG_SHUTDOWN: u8 = 3;
