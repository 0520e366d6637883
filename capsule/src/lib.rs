//! # rim-capsule — rimd's CAPSULE store
//!
//! Owns the capsule model and its idempotency key, the observed roll-up arithmetic,
//! prediction scoring, and the redb tables that persist capsules, decisions, accuracy and
//! journal watermarks. It knows nothing of the daemon, rings or the journal: journal positions
//! are plain `u64`s and partitions plain `u32`s.
//!
//! ## Guarantees
//! - **Idempotent capsules.** A capsule's id is SHA-256 over `scope_id|timestamp|resolution|vantage`
//!   ([`CapsuleKey::id`]). Writing the same key with the same content again is a success that
//!   writes nothing; with different content it is a conflict and the stored capsule is kept.
//!   `created_ms` is not content.
//! - **All or nothing per batch.** [`Store::write`] is one redb write transaction with
//!   `Durability::Immediate`: when it returns `Ok`, the whole batch is durable; after a crash
//!   at any point, either all of a batch is present or none of it (`tests/crash_consistency.rs`).
//!   [`Store::write_with`] may skip the sync: the store then comes back as of its last
//!   durable commit, every batch before it whole, none after.
//! - **Bytes from the file are not trusted.** Every value read back is validated (rkyv with
//!   bytecheck, then the model's invariants) and a bad one is a [`StoreError::Corrupt`], never
//!   a panic (`tests/garbage.rs`).
//! - **Bounded work.** History queries, retention passes and decision reads take limits.
//!
//! ## Table layout
//! Following the redb measurements (rising integer keys insert far faster than random ones,
//! and every index row of a batch costs a B-tree descent and dirty pages), capsules live
//! under a rising sequence number and each other table is an index as small as it can be:
//!
//! | table | key → value | why |
//! |---|---|---|
//! | `capsules` | `u64` seq → rkyv bytes of [`Capsule`] | appends at the right edge of the B-tree; the Kafka outbox reads it in order |
//! | `by_scope` | `(scope &str, resolution u32, vantage &str, window start i64)` → seq | history range scans in time order, and the idempotency check (a key has one id) |
//! | `by_id_prefix` | `(first 8 bytes of the id u64, seq)` → `()` | `get`/`delete` by id: the rows under a prefix are read and the whole id compared |
//! | `expiry_runs` | `(expires_at_ms i64, first seq u64)` → last seq | retention, oldest first with bounded work: one row per run of a batch's consecutive capsules with one expiry (a window of one resolution) |
//! | `decision_index` | `(shard u16, first chain seq u64)` → `(log position, last seq, count)` | runs of the decision log, indexed per commit |
//! | `accuracy` | scope `&str` → the node's aggregates | written with the checkpoint |
//! | `rollup_checkpoint` | chunk `u32` → bytes (header under `u32::MAX`) | the roll-up's open windows, rewritten chunk by chunk when they change |
//! | `watermarks` | journal stream `u32` → `(replay_from, committed_to)` | where journal recovery restarts |
//! | `meta` | `&str` → `u64` | `format_version` ([`store::FORMAT_VERSION`]), `next_seq` |
//!
//! A batch's capsule `i` gets sequence number `next_seq + i`, so capsules that are not
//! written (invalid, existing, conflicting) leave gaps that readers skip. A capsule's expiry
//! (window start + retention for its resolution; API-created capsules use the 30-day
//! default) is fixed when it is written, so changing the retention configuration affects
//! new capsules only. A format-2 store (one `[u8; 32] → seq` row per id and one expiry row
//! per capsule) is migrated in one transaction when opened.
//!
//! ## Storage encoding
//! rkyv 0.8 archives, validated with bytecheck on every read (see [`codec`]). rkyv was kept
//! over a hand-written codec: the derive covers every model type, validation is complete
//! (UTF-8, enum tags, lengths within the buffer), and the only cost is one copy into an aligned
//! buffer on read, since redb hands out values at arbitrary offsets.
//!
//! ## Write protocol
//! For each capsule of a batch: validate it against the model ([`Capsule::validate`]; invalid
//! ones are listed and skipped), insert its scope key into `by_scope` (in key order); if the
//! key was there, put the old row back, decode the stored capsule and compare content
//! (existing or conflict); if not, encode and insert the capsule, its expiry run and its
//! `by_id_prefix` row (in key order) under its sequence number. Then decisions, accuracy (the batch's scores are summed
//! per key first so each row is read and written once), watermarks, the new `next_seq`, and one
//! commit. redb's commit protocol makes the transaction atomic; a crash before the commit's
//! sync leaves the previous state.
//!
//! ## Modules
//! - [`model`]: the capsule, its key and id, bodies, JSON shape.
//! - [`rollup`]: observed roll-ups per node and resolution, late events, replay positions.
//! - [`accuracy`]: scoring a prediction against the observed window.
//! - [`store`]: the redb store.
//! - [`raw`]: the benchmark baseline and a corruption seam for tests.
//! - [`faulty`]: a storage backend with live and durable images for crash tests.

#![forbid(unsafe_code)]

pub mod accuracy;
pub mod codec;
pub mod error;
pub mod faulty;
pub mod model;
pub mod raw;
pub mod rollup;
pub mod store;

pub use accuracy::{score, AccuracyAgg, Score, SeriesScore};
pub use error::{ModelError, StoreError};
pub use faulty::FaultyBackend;
pub use model::{
    Capsule, CapsuleBody, CapsuleId, CapsuleKey, CapsuleRequest, MetricStats, ObservedStats, Ohlc, PredictedSeries,
    Prediction, Vantage, PAYLOAD_BYTES_MAX,
};
pub use rollup::{
    Checkpoint, CheckpointError, Closed, Expected, Names, NamesDelta, Observation, PushOutcome, Rollup, RollupConfig,
    Texts, KEY_PRICE, KEY_STRESS, KEY_VOLUME,
};
pub use store::{
    Batch, BatchOutcome, DecisionRun, HistoryQuery, PutOutcome, RetainReport, Store, StoreConfig, StoreCounts,
    StoredCheckpoint, Watermark,
};
