//! `rimctl doctor`: checks this host against what rimd's configuration needs, the way
//! Chronicle Tune or a tuned profile would, and prints a table (check, status, found,
//! wanted, what to do) or, with `--json`, one JSON object per check per line.
//!
//! Exit status: 0 when every required check passes (warnings allowed), 1 when one
//! fails. A configuration that cannot be read at all is the required check `config`
//! failing (the checks that need it are skipped), so exit 1 too; only a command line clap
//! cannot parse exits 2. The configuration is read as `rimd` reads it: embedded defaults,
//! `--config FILE`, `RIMD_*` variables, `--set`.

mod checks;
mod host;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use rim_core::config::Config;

use checks::{Check, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// rimd's configuration file (as `rimd --config`).
    #[arg(long, short = 'c', env = "RIMD_CONFIG")]
    config: Option<PathBuf>,
    /// Override a setting: section.key=value (repeatable, as `rimd --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// One JSON object per check per line, instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode, String> {
    let env = std::env::vars().filter(|(k, _)| k != "RIMD_CONFIG");
    let checks = match Config::load_unchecked(args.config.as_deref(), env, &args.sets) {
        Ok(config) => checks::all(&config),
        Err(e) => {
            eprintln!("rimctl doctor: {e}");
            checks::unreadable(&e.to_string())
        }
    };
    let text = if args.json {
        json_lines(&checks)?
    } else {
        table(&checks)
    };
    // A closed pipe (`| head`) is the reader's choice, not an error of the checks.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn json_lines(checks: &[Check]) -> Result<String, String> {
    let mut out = String::new();
    for c in checks {
        out.push_str(&serde_json::to_string(c).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    Ok(out)
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Skip => "skip",
    }
}

/// The checks as an aligned table; the action (often long) last, unpadded.
fn table(checks: &[Check]) -> String {
    let rows: Vec<[String; 5]> = checks
        .iter()
        .map(|c| {
            let name = if c.required {
                format!("{} *", c.check)
            } else {
                c.check.to_owned()
            };
            [
                name,
                status_word(c.status).to_owned(),
                c.found.clone(),
                c.wanted.clone(),
                c.action.clone(),
            ]
        })
        .collect();
    let header = ["check", "status", "found", "wanted", "what to do"].map(str::to_owned);
    let width = |i: usize| {
        rows.iter()
            .chain([&header])
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        for (cell, w) in r.iter().zip(widths) {
            let _ = write!(out, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", r[4]);
    }
    out.push_str("* required: a failure makes rimctl doctor exit 1\n");
    out
}
