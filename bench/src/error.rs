//! The harness's one error type. A row that fails carries one of these into the table and
//! the JSON report; the rest of the suite goes on.

use std::io;
use std::time::Duration;

/// Everything that can stop a benchmark row, a peer or the harness itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The suite named on the command line does not exist.
    #[error("unknown suite `{name}`; the suites are: {known}")]
    UnknownSuite {
        /// What the user asked for.
        name: String,
        /// The suites there are, comma-separated.
        known: String,
    },

    /// `--rows` named a row the suite does not have.
    #[error("suite `{suite}` has no row `{name}`; its rows are: {known}")]
    UnknownRow {
        /// The suite.
        suite: &'static str,
        /// The row asked for.
        name: String,
        /// The suite's rows, comma-separated.
        known: String,
    },

    /// The client and the peer were given the same core; two spinners there never progress.
    #[error("the client and the peer must be on different cores (both on {core})")]
    SameCore {
        /// The core given to both.
        core: usize,
    },

    /// A `__peer` kind that no suite runs (a harness bug or a hand-made command line).
    #[error("unknown peer kind `{kind}`")]
    UnknownPeer {
        /// The kind asked for.
        kind: String,
    },

    /// A thread could not be pinned to the core it was given.
    #[error("cannot pin to core {core} ({online} cores online)")]
    Pin {
        /// The core asked for.
        core: usize,
        /// How many cores the machine has online.
        online: usize,
    },

    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: &'static str,
        /// The error the OS gave.
        #[source]
        source: io::Error,
    },

    /// A busy-wait ran past its deadline: the other side stopped answering.
    #[error("timed out after {timeout:?} waiting for {waiting_for}")]
    Timeout {
        /// What was being waited for.
        waiting_for: &'static str,
        /// How long the harness waited.
        timeout: Duration,
    },

    /// The peer ended while the client was still waiting for it.
    #[error("the peer ended while the client waited for {waiting_for}")]
    PeerGone {
        /// What the client was waiting for.
        waiting_for: &'static str,
    },

    /// A peer process ended badly (non-zero exit, killed by a signal).
    #[error("peer `{kind}` failed ({status}){}", stderr_suffix(.stderr))]
    PeerFailed {
        /// The peer kind.
        kind: String,
        /// Its exit status, as the OS reports it.
        status: String,
        /// What the peer wrote to stderr (its own error message, if any).
        stderr: String,
    },

    /// A peer did not exit within the timeout once its work was done; it was killed.
    #[error("peer `{kind}` did not exit within {timeout:?}; killed")]
    PeerHung {
        /// The peer kind.
        kind: String,
        /// How long the harness waited.
        timeout: Duration,
    },

    /// A peer thread panicked.
    #[error("peer thread `{kind}` panicked")]
    PeerPanicked {
        /// The peer kind.
        kind: &'static str,
    },

    /// A message arrived with the wrong length, sequence number or echoed stamp.
    #[error("integrity: {what}")]
    Integrity {
        /// What was wrong, with the numbers.
        what: String,
    },

    /// A row could not set up what it measures.
    #[error("setup: {0}")]
    Setup(String),

    /// A transport library (iceoryx2, rim-ring) reported an error.
    #[error("{transport}: {what}: {detail}")]
    Transport {
        /// The transport (`iceoryx2`, `rim-ring`, ...).
        transport: &'static str,
        /// What the harness was doing.
        what: &'static str,
        /// The library's message.
        detail: String,
    },

    /// Some rows failed (each printed with its error; the others were measured).
    #[error("{failed} of {total} rows failed: {names}")]
    RowsFailed {
        /// Rows that failed.
        failed: usize,
        /// Rows run.
        total: usize,
        /// Their names.
        names: String,
    },

    /// A report (JSON, plot, interval log, markdown page) could not be written.
    #[error("writing {path}: {source}")]
    Report {
        /// Where the report was going.
        path: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },

    /// `rim-bench report DIR`: a suite's results in DIR cannot be read.
    #[error("reading results {path}: {detail}")]
    Results {
        /// The file or directory.
        path: String,
        /// Why.
        detail: String,
    },

    /// The report could not be encoded.
    #[error("encoding the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// An [`BenchError::Io`] from the last OS error (`errno`).
    pub fn last_os(what: &'static str) -> Self {
        Self::Io {
            what,
            source: io::Error::last_os_error(),
        }
    }

    /// A [`BenchError::Transport`] from any library error that displays.
    pub fn transport(transport: &'static str, what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Transport {
            transport,
            what,
            detail: detail.to_string(),
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(": {trimmed}")
    }
}
