//! The decision log: every shard's decisions (and the predictions) appended by the
//! journal thread to the journal's decision stream, CRC-framed and synced with the same
//! group commits as the events, and indexed in the store per run of consecutive chain
//! sequence numbers ([`DecisionRun`]). Readers (`GET /decisions`, their verification, the
//! Kafka bridge's outbox, recovery) find a run in the index and read the log from its
//! position.
//!
//! A log record is one kind byte and the record: [`LOG_DECISION`] and the decision record
//! (`crate::reflex::decision`), [`LOG_PREDICTION`] and the prediction record
//! (`crate::reflex::predict`), or [`LOG_SHUTDOWN`] alone.
//!
//! Only what the index covers is served: the index is written after the records are
//! durable, so a reader never returns a decision a crash could take back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rim_capsule::{DecisionRun, Store, StoreError};
use rim_journal::{Fs, JournalError, Reader};
use thiserror::Error;

pub use rim_core::streams::{LOG_DECISION, LOG_PREDICTION, LOG_SHUTDOWN, STREAMS, STREAM_DECISIONS, STREAM_EVENTS};
/// Records of one shard a run holds at most (bounds a reader's scan to a seq).
pub const RUN_RECORDS_MAX: u32 = 1024;
/// Bytes of log a run may span at most (other shards' records and predictions sit in
/// between), so finding a seq reads little.
pub const RUN_SPAN_BYTES_MAX: u64 = 256 << 10;

/// Why the log could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// The index.
    #[error("decision index: {0}")]
    Store(#[from] StoreError),
    /// The log.
    #[error("decision log: {0}")]
    Journal(#[from] JournalError),
    /// A run the index names is not in the log as indexed.
    #[error("decision log: shard {shard} run from seq {first_seq} at {pos}: {reason}")]
    Index {
        /// Shard.
        shard: u16,
        /// The run's first seq.
        first_seq: u64,
        /// Its position.
        pos: u64,
        /// What was found instead.
        reason: String,
    },
}

/// A decision record's shard and chain seq (offsets 24 and 8 of its layout).
pub fn shard_and_seq(record: &[u8]) -> Option<(u16, u64)> {
    let seq = u64::from_le_bytes(record.get(8..16)?.try_into().ok()?);
    let shard = u32::from_le_bytes(record.get(24..28)?.try_into().ok()?);
    Some((u16::try_from(shard).ok()?, seq))
}

/// Reads decisions back through the index.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    dir: PathBuf,
    store: Arc<Store>,
}

impl DecisionLog {
    /// The log of the journal under `journal_dir`, indexed in `store`.
    pub fn new(journal_dir: &Path, store: Arc<Store>) -> Self {
        Self {
            dir: journal_dir.to_owned(),
            store,
        }
    }

    /// The store the index lives in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Decision records of `shard` with chain seq ≥ `from_seq`, in order, at most `limit`
    /// (seqs a restart skipped are simply absent).
    pub fn decisions(&self, shard: u16, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let mut out = Vec::new();
        let mut from = from_seq;
        while out.len() < limit {
            let runs = self.store.decision_runs(shard, from, 64)?;
            if runs.is_empty() {
                break;
            }
            for run in &runs {
                self.read_run(run, from, limit, &mut out)?;
                if out.len() >= limit {
                    break;
                }
            }
            let Some(last) = runs.last() else { break };
            match last.last_seq.checked_add(1) {
                Some(next) if next > from => from = next,
                _ => break,
            }
        }
        Ok(out)
    }

    /// The newest indexed decision of `shard`.
    pub fn last_decision(&self, shard: u16) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let Some(run) = self.store.last_decision_run(shard)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        self.read_run(&run, run.last_seq, 1, &mut out)?;
        Ok(out.pop())
    }

    /// Shards with indexed decisions.
    pub fn shards(&self) -> Result<Vec<u16>, LogError> {
        Ok(self.store.decision_shards()?)
    }

    /// Appends the records of `run` with seq ≥ `from` to `out`, up to `limit` in all.
    fn read_run(
        &self,
        run: &DecisionRun,
        from: u64,
        limit: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), LogError> {
        let mut reader = Reader::open(&self.dir, STREAM_DECISIONS, run.pos, Fs::new())?;
        let mut seen = 0u32;
        while seen < run.count && out.len() < limit {
            let Some((pos, bytes)) = reader.next()? else {
                return Err(self.broken(run, format!("the log ends after {seen} of its {} records", run.count)));
            };
            if pos > run.pos + RUN_SPAN_BYTES_MAX + rim_journal::RECORD_BYTES_MAX as u64 {
                return Err(self.broken(run, format!("no record of it past position {pos}")));
            }
            let Some((&LOG_DECISION, record)) = bytes.split_first() else {
                continue;
            };
            let Some((s, seq)) = shard_and_seq(record) else {
                continue;
            };
            if s != run.shard {
                continue;
            }
            if seq < run.first_seq || seq > run.last_seq {
                return Err(self.broken(run, format!("seq {seq} at {pos} is outside it")));
            }
            seen += 1;
            if seq >= from {
                out.push((seq, record.to_vec()));
            }
            if seq == run.last_seq {
                break;
            }
        }
        Ok(())
    }

    fn broken(&self, run: &DecisionRun, reason: String) -> LogError {
        LogError::Index {
            shard: run.shard,
            first_seq: run.first_seq,
            pos: run.pos,
            reason,
        }
    }
}

/// Builds the index's runs as decisions are appended: one open run per shard, extended
/// while seqs follow each other, closed at [`RUN_RECORDS_MAX`] records or
/// [`RUN_SPAN_BYTES_MAX`] of log, or at a gap.
#[derive(Debug, Default, Clone)]
pub struct RunBuilder {
    open: Vec<Option<DecisionRun>>,
    /// Runs changed since the last [`RunBuilder::take_changed`].
    changed: Vec<bool>,
    closed: Vec<DecisionRun>,
}

impl RunBuilder {
    /// Notes a decision of `shard` with `seq`, appended at `pos`.
    pub fn add(&mut self, shard: u16, seq: u64, pos: u64) {
        let i = usize::from(shard);
        if self.open.len() <= i {
            self.open.resize(i + 1, None);
            self.changed.resize(i + 1, false);
        }
        if let Some(run) = self.open[i].as_mut() {
            let follows = run.last_seq.checked_add(1) == Some(seq);
            if follows && run.count < RUN_RECORDS_MAX && pos - run.pos <= RUN_SPAN_BYTES_MAX {
                run.last_seq = seq;
                run.count += 1;
                self.changed[i] = true;
                return;
            }
            if let Some(done) = self.open[i].take() {
                if self.changed[i] {
                    self.closed.push(done);
                }
            }
        }
        self.open[i] = Some(DecisionRun {
            shard,
            first_seq: seq,
            last_seq: seq,
            pos,
            count: 1,
        });
        self.changed[i] = true;
    }

    /// Runs closed, and open runs changed, since the last call: what the index needs now
    /// (an open run's row is rewritten as it grows).
    pub fn take_changed(&mut self) -> Vec<DecisionRun> {
        let mut out = std::mem::take(&mut self.closed);
        for (run, changed) in self.open.iter().zip(self.changed.iter_mut()) {
            if std::mem::take(changed) {
                out.extend(*run);
            }
        }
        out
    }

    /// Continues from runs the index already holds (at recovery): the open run of each
    /// shard is its newest one.
    pub fn resume(&mut self, last: impl IntoIterator<Item = DecisionRun>) {
        for run in last {
            let i = usize::from(run.shard);
            if self.open.len() <= i {
                self.open.resize(i + 1, None);
                self.changed.resize(i + 1, false);
            }
            self.open[i] = Some(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_follow_seqs_and_split_at_gaps_and_bounds() {
        let mut b = RunBuilder::default();
        for seq in 1..=3 {
            b.add(0, seq, seq * 100);
        }
        b.add(1, 7, 350);
        let first = b.take_changed();
        assert_eq!(first.len(), 2);
        assert_eq!((first[0].first_seq, first[0].last_seq, first[0].count), (1, 3, 3));
        assert!(b.take_changed().is_empty(), "nothing changed since");
        // A gap (a restart's jump) starts a new run; the old one is reported closed.
        b.add(0, 70_000, 1_000);
        let second = b.take_changed();
        assert_eq!(second.len(), 1);
        assert_eq!((second[0].first_seq, second[0].pos), (70_000, 1_000));
        // The span bound closes a run too.
        b.add(0, 70_001, 1_000 + RUN_SPAN_BYTES_MAX + 1);
        let third = b.take_changed();
        assert_eq!(third.iter().map(|r| r.first_seq).collect::<Vec<_>>(), vec![70_001]);
        let mut c = RunBuilder::default();
        for seq in 1..=u64::from(RUN_RECORDS_MAX) + 1 {
            c.add(2, seq, seq);
        }
        let runs = c.take_changed();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].count, RUN_RECORDS_MAX);
        assert_eq!(runs[1].first_seq, u64::from(RUN_RECORDS_MAX) + 1);
    }
}
