//! `rimctl rules check FILE`: compiles a rule file with the daemon's limits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use rimd::config::Config;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compile FILE; print its rules, or every error with its line and column.
    Check {
        /// The rule file (TOML; `.json` files are read as JSON).
        file: PathBuf,
        /// The daemon's config file, for its limits (rules_max, window range).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> Result<ExitCode, String> {
    let Command::Check { file, config } = command;
    let config = Config::load(config.as_deref(), std::env::vars(), &[]).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let limits = rimd::daemon::limits(&config);
    let result = if file.extension().is_some_and(|e| e == "json") {
        rim_rules::compile_json(&text, &limits, None)
    } else {
        rim_rules::compile_toml(&text, &limits, None)
    };
    match result {
        Ok(set) => {
            println!("{}: {} rules ok", file.display(), set.len());
            for r in set.rules() {
                println!(
                    "  {:<24} {:<8} cooldown {:>6} ms  when {}",
                    r.id(),
                    r.severity().as_str(),
                    r.cooldown_ms(),
                    r.when()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{}: does not compile", file.display());
            for e in errors.errors() {
                eprintln!("  {e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}
