//! The suite registry and the loop that runs one suite.
//!
//! A suite is a static [`Suite`]: its name, the figures its table shows, its rows (each a
//! function returning a [`Row`]) and the peer kinds its rows spawn. Adding a suite means
//! writing a module that exports such a `SUITE` and listing it in [`SUITES`]; nothing else in
//! the harness changes.

use std::time::{Duration, Instant, SystemTime};

use crate::error::BenchError;
use crate::peer::PeerFn;
use crate::report::Row;

/// How much work a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSize {
    /// The default: figures worth publishing.
    Full,
    /// `--quick`: the whole suite in under 60 s.
    Quick,
    /// `--smoke` (hidden): a few thousand messages per row, to test that every row works.
    Smoke,
}

/// Options every suite receives from the command line.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// How much work to do.
    pub size: RunSize,
    /// The core the measuring (client) thread is pinned to.
    pub client_core: usize,
    /// The core peers (threads or processes) are pinned to.
    pub peer_core: usize,
    /// How long any single wait for a peer may last before the row fails.
    pub peer_timeout: Duration,
}

/// One row of a suite.
#[derive(Clone, Copy)]
pub struct RowSpec {
    /// The row's name, as it appears in the table and the report.
    pub name: &'static str,
    /// Measures the row.
    pub run: fn(&RunOpts) -> Result<Row, BenchError>,
}

/// One kind of peer process a suite spawns (`rim-bench __peer <kind>`).
#[derive(Clone, Copy)]
pub struct PeerSpec {
    /// The kind named on the peer's command line.
    pub kind: &'static str,
    /// Runs the peer.
    pub run: PeerFn,
}

/// A benchmark suite.
pub struct Suite {
    /// Its name on the command line (`ring`).
    pub name: &'static str,
    /// One line on what it measures.
    pub about: &'static str,
    /// The figures every row reports, in column order.
    pub columns: &'static [&'static str],
    /// Its rows, in table order.
    pub rows: &'static [RowSpec],
    /// The peer kinds its rows spawn.
    pub peers: &'static [PeerSpec],
    /// Runs after the last row, whichever rows ran: releases what rows shared (a daemon
    /// kept running from one row to the next).
    pub finish: Option<fn()>,
}

/// Every suite the harness knows.
pub const SUITES: &[&Suite] = &[
    &crate::ring::SUITE,
    &crate::reflex::SUITE,
    &crate::ingest::SUITE,
    &crate::persist::SUITE,
    &crate::http::SUITE,
    &crate::kafka::SUITE,
    &crate::memory::SUITE,
    &crate::idle::SUITE,
];

/// The suite called `name`.
pub fn find_suite(name: &str) -> Result<&'static Suite, BenchError> {
    SUITES
        .iter()
        .copied()
        .find(|suite| suite.name == name)
        .ok_or_else(|| BenchError::UnknownSuite {
            name: name.to_string(),
            known: suite_names(),
        })
}

/// The peer function for `kind`, from whichever suite declares it.
pub fn find_peer(kind: &str) -> Result<PeerFn, BenchError> {
    SUITES
        .iter()
        .flat_map(|suite| suite.peers)
        .find(|peer| peer.kind == kind)
        .map(|peer| peer.run)
        .ok_or_else(|| BenchError::UnknownPeer { kind: kind.to_string() })
}

/// The suites' names, comma-separated.
pub fn suite_names() -> String {
    SUITES.iter().map(|suite| suite.name).collect::<Vec<_>>().join(", ")
}

/// Runs the suite's rows in order (all, or those named in `only`), then its finish hook.
/// A row that fails becomes a row with its error and no figures; the others still run.
/// Progress goes to stderr.
pub fn run_suite(suite: &Suite, opts: &RunOpts, only: &[String]) -> Vec<Row> {
    let rows = suite
        .rows
        .iter()
        .filter(|row| only.is_empty() || only.iter().any(|name| name == row.name))
        .map(|row| run_row(suite, row, opts))
        .collect();
    if let Some(finish) = suite.finish {
        finish();
    }
    rows
}

fn run_row(suite: &Suite, row: &RowSpec, opts: &RunOpts) -> Row {
    eprint!("{}/{} ... ", suite.name, row.name);
    let started_wall = SystemTime::now();
    let started = Instant::now();
    let outcome = (row.run)(opts);
    let elapsed = started.elapsed();
    match outcome {
        Ok(mut measured) => {
            eprintln!("done in {:.1} s", elapsed.as_secs_f64());
            measured.span = Some((started_wall, elapsed));
            measured
        }
        Err(error) => {
            eprintln!("failed after {:.1} s: {error}", elapsed.as_secs_f64());
            Row::failed(row.name, &error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_suite_names_the_known_ones() {
        let Err(error) = find_suite("nope") else {
            panic!("`nope` is not a suite");
        };
        let text = error.to_string();
        assert!(text.contains("nope") && text.contains("ring"), "{text}");
    }

    #[test]
    fn suite_and_peer_names_are_unique() {
        let mut kinds: Vec<&str> = SUITES
            .iter()
            .flat_map(|suite| suite.peers)
            .map(|peer| peer.kind)
            .collect();
        let total = kinds.len();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), total, "a peer kind is declared twice");
        for suite in SUITES {
            let mut rows: Vec<&str> = suite.rows.iter().map(|row| row.name).collect();
            let total = rows.len();
            rows.sort_unstable();
            rows.dedup();
            assert_eq!(rows.len(), total, "suite {} repeats a row", suite.name);
        }
    }
}
