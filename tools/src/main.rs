//! rimctl: operate and inspect rimd.
//!
//! - `produce`: a load generator (or a scripted publisher) through the ring API;
//! - `tail`: decisions live from the broadcast ring, optionally verifying the hash chain;
//! - `stats`: the daemon's stats segment;
//! - `rules check FILE`: compile a rule file the way the daemon would (`--against-daemon`:
//!   and what it would change in the running one); `rules backtest`: replay the journal
//!   through a candidate set and compare its decisions with the live ones;
//! - `replay`: the journal back as JSON lines, or into a daemon;
//! - `doctor`: this host against what the configuration needs.
#![forbid(unsafe_code)]

mod doctor;
mod produce;
mod replay;
mod rules;
mod stats;
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operate and inspect rimd.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The daemon's run directory (control socket, stats segment).
    #[arg(long, global = true, env = "RIMD_DAEMON_RUN_DIR", default_value = "/dev/shm/rimd")]
    run_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish events through a producer ring: generated load, or a script of JSON lines.
    Produce(produce::Args),
    /// Print decisions as they are published.
    Tail(tail::Args),
    /// Show the daemon's statistics.
    Stats(stats::Args),
    /// Read the journal back (JSON lines, or into a daemon).
    Replay(replay::Args),
    /// Check this host against what rimd's configuration needs (exit 1 when a required check fails).
    Doctor(doctor::Args),
    /// Rule files.
    Rules {
        #[command(subcommand)]
        command: rules::Command,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Produce(a) => produce::run(&cli.run_dir, a),
        Command::Tail(a) => tail::run(&cli.run_dir, a),
        Command::Stats(a) => stats::run(&cli.run_dir, a),
        Command::Replay(a) => replay::run(&cli.run_dir, a),
        Command::Doctor(a) => doctor::run(a),
        Command::Rules { command } => rules::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rimctl: {e}");
            ExitCode::FAILURE
        }
    }
}
