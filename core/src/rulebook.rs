//! The rule book: every rule set the daemon installed, by generation, durable across
//! restarts and crashes, so that a decision's `ruleGeneration` always resolves to the
//! text that made it and a restart brings back the set that was in force.
//!
//! **Storage.** One small JSON file per generation in `{data_dir}/rules/`
//! (`00000000000000000042.json`), written as a temporary file, fsynced, renamed into
//! place, and the directory fsynced, before the set is pushed to any shard. Why files and
//! not the redb store the daemon already has: the store belongs to the capsule crate and
//! its single write transaction to the store writer thread, so a rule install would queue
//! behind a capsule batch (and touch the persist plane); a rule set is written a few
//! times a day, is immutable once written, and a file per generation makes the crash
//! cases trivial:
//! - killed before the rename: only a `.tmp` file exists; it is removed at the next
//!   open and the set was never installed (no shard saw it, no decision names it);
//! - killed after the rename: the record is whole (renames are atomic) and durable once
//!   the directory's fsync returned, which happens before any shard takes the set;
//! - a record that does not parse (a disk fault, a hand edit) is skipped with a warning,
//!   and the newest valid one wins.
//!
//! Without persistence (`persist.enabled = false`) the book lives in memory only (the
//! newest [`MEMORY_RECORDS_MAX`]): history and lookups work, restarts forget.
//!
//! The book keeps the newest [`RECORDS_MAX`] generations; older files are removed (a
//! decision older than that many rule changes no longer resolves to its text).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::warn;

/// Generations kept on disk.
pub const RECORDS_MAX: usize = 1024;
/// Generations kept when the book is in memory only.
pub const MEMORY_RECORDS_MAX: usize = 64;
/// The book's directory under the data directory.
pub const DIR_NAME: &str = "rules";
/// Largest record file read (a rule file is at most [`rim_rules::FILE_BYTES_MAX`]; JSON
/// escaping can double it).
const RECORD_BYTES_MAX: u64 = 4 * rim_rules::FILE_BYTES_MAX as u64 + 65_536;

/// Why the book could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RuleBookError {
    /// A file operation failed.
    #[error("rule book {path}: {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("rule book: cannot encode generation {0}: {1}")]
    Encode(u64, String),
}

/// One installed rule set, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRecord {
    /// The set's generation (decisions carry it as `ruleGeneration`).
    pub generation: u64,
    /// `toml` or `json`.
    pub format: String,
    /// Where it came from: a rule file's path, `(embedded default rules)` or `api`.
    pub origin: String,
    /// When it was installed, unix ms.
    pub installed_ms: u64,
    /// SHA-256 of `text`, lower-case hex.
    pub sha256: String,
    /// Rules in the set.
    pub rules: usize,
    /// Each rule's id and version, in file order.
    pub versions: Vec<(String, u32)>,
    /// SHA-256 of the rule file's (or the embedded defaults') text as the daemon last read
    /// it when this set was installed: at start, a file whose hash differs has changed
    /// since, and wins over this set.
    pub file_sha256: String,
    /// The text as compiled.
    pub text: String,
}

/// A record without its text (what `GET /rules/history` lists).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSummary {
    /// See [`RuleRecord`].
    pub generation: u64,
    /// See [`RuleRecord`].
    pub format: String,
    /// See [`RuleRecord`].
    pub origin: String,
    /// See [`RuleRecord`].
    pub installed_ms: u64,
    /// See [`RuleRecord`].
    pub sha256: String,
    /// See [`RuleRecord`].
    pub rules: usize,
}

impl RuleRecord {
    fn summary(&self) -> RuleSummary {
        RuleSummary {
            generation: self.generation,
            format: self.format.clone(),
            origin: self.origin.clone(),
            installed_ms: self.installed_ms,
            sha256: self.sha256.clone(),
            rules: self.rules,
        }
    }
}

/// Lower-case hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    let d: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The book: summaries in memory, texts on disk (or in memory without a directory).
#[derive(Debug)]
pub struct RuleBook {
    dir: Option<PathBuf>,
    summaries: BTreeMap<u64, RuleSummary>,
    /// Whole records, when there is no directory.
    memory: BTreeMap<u64, RuleRecord>,
}

impl RuleBook {
    /// A book in memory only.
    pub fn in_memory() -> Self {
        Self {
            dir: None,
            summaries: BTreeMap::new(),
            memory: BTreeMap::new(),
        }
    }

    /// Opens (creating) the book in `{data_dir}/rules/`, removing temporary files a
    /// crash left and skipping records that do not parse.
    pub fn open(data_dir: &Path) -> Result<Self, RuleBookError> {
        let dir = data_dir.join(DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(|source| RuleBookError::Io {
            what: "cannot create the directory",
            path: dir.clone(),
            source,
        })?;
        let mut book = Self {
            dir: Some(dir.clone()),
            summaries: BTreeMap::new(),
            memory: BTreeMap::new(),
        };
        let entries = std::fs::read_dir(&dir).map_err(|source| RuleBookError::Io {
            what: "cannot list",
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A set whose install a crash interrupted: never installed.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(generation) = name.strip_suffix(".json").and_then(|g| g.parse::<u64>().ok()) else {
                continue;
            };
            match read_record(&path) {
                Ok(r) if r.generation == generation => {
                    book.summaries.insert(generation, r.summary());
                }
                Ok(r) => {
                    warn!(path = %path.display(), generation = r.generation, "rule record names another generation; skipped")
                }
                Err(e) => warn!(error = %e, "rule record unreadable; skipped"),
            }
        }
        Ok(book)
    }

    /// Reads the book of a data directory without creating or cleaning anything (tools).
    pub fn read_only(data_dir: &Path) -> Result<Self, RuleBookError> {
        let dir = data_dir.join(DIR_NAME);
        let mut book = Self {
            dir: Some(dir.clone()),
            summaries: BTreeMap::new(),
            memory: BTreeMap::new(),
        };
        let entries = std::fs::read_dir(&dir).map_err(|source| RuleBookError::Io {
            what: "cannot list",
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(generation) = name.strip_suffix(".json").and_then(|g| g.parse::<u64>().ok()) else {
                continue;
            };
            if let Ok(r) = read_record(&entry.path()) {
                if r.generation == generation {
                    book.summaries.insert(generation, r.summary());
                }
            }
        }
        Ok(book)
    }

    /// Whether records survive a restart.
    pub fn is_durable(&self) -> bool {
        self.dir.is_some()
    }

    /// The newest record.
    pub fn latest(&self) -> Option<RuleRecord> {
        let (&g, _) = self.summaries.last_key_value()?;
        self.get(g)
    }

    /// The record of `generation`, if kept.
    pub fn get(&self, generation: u64) -> Option<RuleRecord> {
        if !self.summaries.contains_key(&generation) {
            return None;
        }
        match &self.dir {
            None => self.memory.get(&generation).cloned(),
            Some(dir) => match read_record(&record_path(dir, generation)) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(error = %e, "rule record unreadable");
                    None
                }
            },
        }
    }

    /// Summaries, newest first.
    pub fn history(&self) -> Vec<RuleSummary> {
        self.summaries.values().rev().cloned().collect()
    }

    /// Stores `record` durably (see the module docs), then forgets the oldest beyond the
    /// limit. On error nothing is recorded, and the caller must not install the set.
    pub fn record(&mut self, record: RuleRecord) -> Result<(), RuleBookError> {
        let generation = record.generation;
        match self.dir.clone() {
            None => {
                self.summaries.insert(generation, record.summary());
                self.memory.insert(generation, record);
                while self.memory.len() > MEMORY_RECORDS_MAX {
                    if let Some((g, _)) = self.memory.pop_first() {
                        self.summaries.remove(&g);
                    }
                }
            }
            Some(dir) => {
                write_durably(&dir, &record)?;
                self.summaries.insert(generation, record.summary());
                while self.summaries.len() > RECORDS_MAX {
                    if let Some((g, _)) = self.summaries.pop_first() {
                        let _ = std::fs::remove_file(record_path(&dir, g));
                    }
                }
            }
        }
        Ok(())
    }
}

fn record_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}.json"))
}

fn read_record(path: &Path) -> Result<RuleRecord, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(RECORD_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Temporary file, fsync, rename, fsync of the directory: after this returns the record
/// survives a crash; before, a crash leaves at most a `.tmp` file.
fn write_durably(dir: &Path, record: &RuleRecord) -> Result<(), RuleBookError> {
    let bytes = serde_json::to_vec(record).map_err(|e| RuleBookError::Encode(record.generation, e.to_string()))?;
    let path = record_path(dir, record.generation);
    let tmp = path.with_extension("json.tmp");
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| RuleBookError::Io { what, path, source }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
    file.write_all(&bytes).map_err(io("cannot write", &tmp))?;
    file.sync_all().map_err(io("cannot fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io("cannot rename into place", &path))?;
    let d = std::fs::File::open(dir).map_err(io("cannot open the directory", dir))?;
    d.sync_all().map_err(io("cannot fsync the directory", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64, text: &str) -> RuleRecord {
        RuleRecord {
            generation,
            format: "toml".into(),
            origin: "api".into(),
            installed_ms: 1,
            sha256: sha256_hex(text),
            rules: 0,
            versions: vec![("a".into(), 2)],
            file_sha256: sha256_hex(""),
            text: text.into(),
        }
    }

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("rimd-rulebook-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn records_survive_reopening_and_garbage_is_skipped() {
        let d = temp("reopen");
        let mut b = RuleBook::open(&d).expect("open");
        b.record(record(1, "one")).expect("record");
        b.record(record(2, "two")).expect("record");
        // What a crash mid-install leaves, and a file that is not a record.
        std::fs::write(d.join(DIR_NAME).join("00000000000000000003.json.tmp"), b"{half").expect("tmp");
        std::fs::write(d.join(DIR_NAME).join("00000000000000000009.json"), b"\xff\x00garbage").expect("junk");
        let b = RuleBook::open(&d).expect("reopen");
        assert_eq!(b.latest().map(|r| r.text), Some("two".into()));
        assert_eq!(b.get(1).map(|r| r.versions), Some(vec![("a".to_owned(), 2)]));
        assert_eq!(b.history().iter().map(|s| s.generation).collect::<Vec<_>>(), vec![2, 1]);
        assert!(!d.join(DIR_NAME).join("00000000000000000003.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_memory_book_keeps_the_newest() {
        let mut b = RuleBook::in_memory();
        for g in 1..=(MEMORY_RECORDS_MAX as u64 + 5) {
            b.record(record(g, "x")).expect("record");
        }
        assert_eq!(b.history().len(), MEMORY_RECORDS_MAX);
        assert!(b.get(1).is_none());
        assert!(b.latest().is_some());
    }
}
