//! `rim-bench`: rimd's benchmark harness.
//!
//! `rim-bench <suite> [--quick] [--json PATH] [--plot DIR]` runs one suite, prints its table
//! and, with `--json`, writes `{"suite", "quick", "results": [{"name", <figures>}]}`; with
//! `--plot DIR` it also leaves in DIR the same JSON (`{suite}.json`) and, per latency row,
//! a percentile plot (`.svg`) and the histogram as an HdrHistogram interval log (`.hlog`).
//! `rim-bench report DIR` writes `DIR/report.md` from every suite run into DIR. Suites live
//! in one module each and are listed in [`suite::SUITES`]. `rim-bench __peer <kind> ...`
//! (hidden) is the other end of a two-process measurement, started by the harness itself.
//!
//! Module map: `suite` (registry, running a suite), `report` (rows, table, JSON), `plot`
//! (SVG and interval logs), `page` (the markdown report),
//! `peer` (peer processes), `watchdog` (bounded spinning), `latency` (HDR percentiles),
//! `clock`, `affinity`, `payload` (the bytes every row moves), `error`; suites: `ring`,
//! `reflex`, `ingest`, `persist`, `http`, `kafka`, `memory`, `idle` (`daemon` runs a real rimd
//! for all but `ring`, `workload` is their rules and nodes).

mod affinity;
mod clock;
mod daemon;
mod error;
mod http;
mod idle;
mod ingest;
mod kafka;
mod latency;
mod memory;
mod page;
mod payload;
mod peer;
mod persist;
mod plot;
mod procfs;
mod reflex;
mod report;
mod ring;
mod soak;
mod suite;
mod watchdog;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::error::BenchError;
use crate::peer::{PeerArgs, PEER_SUBCOMMAND};
use crate::report::{render_table, Report};
use crate::suite::{find_peer, find_suite, run_suite, RunOpts, RunSize};

/// Run one of rimd's benchmark suites.
#[derive(Debug, Parser)]
#[command(name = "rim-bench", version, after_help = after_help())]
struct Cli {
    /// The suite to run.
    suite: String,
    /// The short run: the whole suite in under a minute.
    #[arg(long)]
    quick: bool,
    /// A tiny run that only checks every row works (for tests; figures meaningless).
    #[arg(long, hide = true, conflicts_with = "quick")]
    smoke: bool,
    /// Also write the results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also leave in DIR the JSON results and, per latency row, an HDR percentile plot
    /// (SVG) and the histogram as an HdrHistogram interval log (.hlog).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Run only these rows (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "ROW,...")]
    rows: Vec<String>,
    /// Core of the measuring thread [default: 0, or 1 when the disk under the temporary
    /// directory takes its interrupts on core 1 and not on core 0].
    #[arg(long)]
    client_core: Option<usize>,
    /// Core of the peer thread or process (the daemon's hot shard) [default: 1, or 0 when
    /// the disk takes its interrupts on core 1 and not on core 0].
    #[arg(long)]
    peer_core: Option<usize>,
    /// Seconds any single wait for a peer may last before its row fails.
    #[arg(long, default_value_t = 30)]
    peer_timeout_s: u64,
}

/// `rim-bench report DIR`: the markdown page of every suite run into DIR.
#[derive(Debug, Parser)]
#[command(name = "rim-bench report")]
struct ReportCli {
    /// A directory that `rim-bench SUITE --plot DIR` wrote into.
    dir: PathBuf,
}

/// The first argument that asks for the report instead of a suite.
const REPORT_SUBCOMMAND: &str = "report";

/// `rim-bench __peer <kind> ...`: the hidden peer entry point.
#[derive(Debug, Parser)]
#[command(name = "rim-bench __peer", hide = true)]
struct PeerCli {
    #[command(flatten)]
    args: PeerArgs,
}

fn after_help() -> String {
    let suites = suite::SUITES
        .iter()
        .map(|suite| format!("  {:<10} {}", suite.name, suite.about))
        .collect::<Vec<_>>()
        .join("\n");
    format!("Suites:\n{suites}")
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let outcome = if argv.get(1).is_some_and(|arg| arg == daemon::DAEMON_SUBCOMMAND) {
        let sets: Vec<String> = argv.iter().skip(2).map(|a| a.to_string_lossy().into_owned()).collect();
        daemon::daemon_main(&sets)
    } else if argv.get(1).is_some_and(|arg| arg == PEER_SUBCOMMAND) {
        let cli = PeerCli::parse_from(argv.iter().skip(1));
        peer_main(&cli.args)
    } else if argv.get(1).is_some_and(|arg| arg == soak::SOAK_SUBCOMMAND) {
        soak::main(&soak::SoakCli::parse_from(argv.iter().skip(1)))
    } else if argv.get(1).is_some_and(|arg| arg == REPORT_SUBCOMMAND) {
        let cli = ReportCli::parse_from(argv.iter().skip(1));
        page::write(&cli.dir).map(|path| println!("{}", path.display()))
    } else {
        harness_main(&Cli::parse_from(&argv))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rim-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn peer_main(args: &PeerArgs) -> Result<(), BenchError> {
    let run = find_peer(&args.kind)?;
    peer::run_peer(args, run)
}

fn harness_main(cli: &Cli) -> Result<(), BenchError> {
    let suite = find_suite(&cli.suite)?;
    check_rows(suite, &cli.rows)?;
    let opts = run_opts(cli)?;
    let rows = run_suite(suite, &opts, &cli.rows);
    print!("{}", render_table(suite.columns, &rows));
    let report = Report {
        suite: suite.name,
        quick: cli.quick,
        results: &rows,
    };
    if let Some(path) = &cli.json {
        report.write_json(path)?;
    }
    if let Some(dir) = &cli.plot {
        write_plots(dir, &report)?;
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(BenchError::RowsFailed {
            failed: failed.len(),
            total: rows.len(),
            names: failed.join(", "),
        });
    }
    Ok(())
}

/// `--plot DIR`: the JSON results and each latency row's plot and interval log, listed on
/// stderr.
fn write_plots(dir: &std::path::Path, report: &Report<'_>) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Report {
        path: dir.display().to_string(),
        source,
    })?;
    let json = dir.join(format!("{}.json", report.suite));
    report.write_json(&json)?;
    let mut files = vec![json];
    files.extend(plot::write_rows(dir, report.suite, report.results)?);
    for f in &files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

/// Every name in `--rows` must be a row of the suite.
fn check_rows(suite: &suite::Suite, wanted: &[String]) -> Result<(), BenchError> {
    let known: Vec<&str> = suite.rows.iter().map(|row| row.name).collect();
    match wanted.iter().find(|name| !known.contains(&name.as_str())) {
        None => Ok(()),
        Some(name) => Err(BenchError::UnknownRow {
            suite: suite.name,
            name: name.clone(),
            known: known.join(", "),
        }),
    }
}

fn run_opts(cli: &Cli) -> Result<RunOpts, BenchError> {
    let (client_core, peer_core) = cores(cli);
    if client_core == peer_core {
        return Err(BenchError::SameCore { core: client_core });
    }
    let size = match (cli.quick, cli.smoke) {
        (_, true) => RunSize::Smoke,
        (true, false) => RunSize::Quick,
        (false, false) => RunSize::Full,
    };
    Ok(RunOpts {
        size,
        client_core,
        peer_core,
        peer_timeout: Duration::from_secs(cli.peer_timeout_s),
    })
}

/// The client's and the peer's cores: as given, else the daemon's default cold and hot
/// cores as [`rimd::irqs::place`] places them for a data directory under the temporary
/// directory (where the bench's daemons journal): the daemon's own choice
/// (`topology.avoid_disk_irqs`), made here so that the bench can pin its client thread to
/// the daemon's cold core; the daemon is then told its cores with that choice off.
fn cores(cli: &Cli) -> (usize, usize) {
    if cli.client_core.is_some() || cli.peer_core.is_some() {
        return (cli.client_core.unwrap_or(0), cli.peer_core.unwrap_or(1));
    }
    let mut config = rimd::config::Config::default();
    config.persist.data_dir = std::env::temp_dir();
    if let Some(disk) = rimd::irqs::place(&mut config) {
        eprintln!(
            "cores: client {}, peer {} (the disk under {}, {}, takes its interrupts on core {}; --client-core and --peer-core choose)",
            config.topology.cold_core,
            config.topology.hot_core,
            config.persist.data_dir.display(),
            disk.device,
            config.topology.cold_core
        );
    }
    (config.topology.cold_core, config.topology.hot_core)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::suite_names;

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::parse_from(["rim-bench", "ring", "--quick", "--json", "/tmp/x.json"]);
        assert_eq!(cli.suite, "ring");
        assert!(cli.quick);
        let names = suite_names();
        assert!(names.contains("ring"), "{names}");
        assert!(
            find_suite(REPORT_SUBCOMMAND).is_err(),
            "`report` is the page, not a suite"
        );
    }

    #[test]
    fn the_peer_command_line_parses() {
        let cli = PeerCli::parse_from([
            "__peer",
            "uds-echo",
            "--core",
            "1",
            "--count",
            "5",
            "--endpoint",
            "3",
            "--timeout-ms",
            "100",
            "--parent-pid",
            "1",
        ]);
        assert_eq!(cli.args.kind, "uds-echo");
        assert_eq!(cli.args.count, 5);
    }
}
