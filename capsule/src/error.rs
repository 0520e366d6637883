//! Typed errors: [`ModelError`] for values that break the model's rules, [`StoreError`] for
//! everything the store can report. Messages carry the numbers.

use crate::model::CapsuleId;

/// A value that breaks the capsule model's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("invalid vantage {value:?}: expected OBSERVED, PREDICTED or [A-Z][A-Z0-9_]{{0,31}}")]
    InvalidVantage { value: String },
    #[error("invalid capsule id: {reason}")]
    InvalidId { reason: &'static str },
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("scope id of {len} bytes: expected 1..=512 bytes")]
    InvalidScope { len: usize },
    #[error("resolution must be at least 1 second")]
    ZeroResolution,
    #[error("vantage {vantage} does not match the body kind (OBSERVED needs observed stats, PREDICTED a prediction, a named vantage a payload)")]
    BodyMismatch { vantage: String },
}

/// Everything the store can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The id exists with different content; nothing was written.
    #[error("capsule {id} already exists with different content")]
    Conflict { id: CapsuleId },
    /// Bytes read from the file failed validation.
    #[error("corrupt row in table {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("invalid vantage {value:?}")]
    InvalidVantage { value: String },
    #[error("invalid capsule: {0}")]
    Invalid(ModelError),
    /// The file was written by a format this build does not read.
    #[error("store format version {found}, this build reads version {expected}")]
    FormatVersion { found: u64, expected: u64 },
    #[error("capsule sequence exhausted")]
    SequenceExhausted,
    #[error("encoding a capsule failed: {0}")]
    Encode(String),
    #[error(transparent)]
    Database(#[from] redb::DatabaseError),
    #[error(transparent)]
    Transaction(#[from] redb::TransactionError),
    #[error(transparent)]
    Table(#[from] redb::TableError),
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error(transparent)]
    Commit(#[from] redb::CommitError),
    #[error(transparent)]
    Durability(#[from] redb::SetDurabilityError),
}

impl From<ModelError> for StoreError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::PayloadTooLarge { len, max } => StoreError::PayloadTooLarge { len, max },
            ModelError::InvalidVantage { value } => StoreError::InvalidVantage { value },
            other => StoreError::Invalid(other),
        }
    }
}
