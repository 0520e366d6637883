//! The rimd daemon binary: parse the command line, build the configuration, run.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rimd::config::Config;

/// rimd: the local fast path of the BUTTERFLY platform.
///
/// Settings come from the embedded defaults, then the TOML file (--config), then
/// RIMD_<SECTION>_<KEY> environment variables, then --set section.key=value.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "RIMD_CONFIG")]
    config: Option<PathBuf>,
    /// Override a setting: section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run directory (control socket, stats segment); same as --set daemon.run_dir=DIR.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Rule file; same as --set reflex.rules_file=FILE.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration and the rules, then exit.
    #[arg(long)]
    check: bool,
    /// Also run a demo: a producer publishing 1,000 sensor events/s with anomalies, and
    /// every decision printed on stdout (both through the daemon's socket and rings).
    #[arg(long)]
    demo: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut sets = cli.sets.clone();
    if let Some(dir) = &cli.run_dir {
        sets.push(format!("daemon.run_dir=\"{}\"", dir.display()));
    }
    if let Some(rules) = &cli.rules {
        sets.push(format!("reflex.rules_file=\"{}\"", rules.display()));
    }
    let env = std::env::vars().filter(|(k, _)| k != "RIMD_CONFIG");
    let config = match Config::load(cli.config.as_deref(), env, &sets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rimd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(&config.daemon.log);
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if cli.check {
        return match rimd::daemon::read_rules(&config)
            .map_err(|e| e.to_string())
            .and_then(|(origin, text)| rimd::plane::compile(&text, &origin, &config, None).map(|s| (origin, s)))
        {
            Ok((origin, set)) => {
                println!("config ok; {} rules from {origin}", set.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rimd: {e}");
                ExitCode::from(2)
            }
        };
    }
    // The cores in force before anything is pinned: the demo's producer sits on the cold
    // core.
    let config = rimd::daemon::place_hot_shard(config);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if cli.demo {
        let core = config.topology.pin.then_some(config.topology.cold_core);
        rimd::demo::spawn(config.socket_path(), stop.clone(), core);
    }
    match rimd::daemon::run_placed(config, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("rimd: {e}");
            // Like a bad config: the operator's input is wrong, not the machine.
            if e.is_configuration() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
