//! `rimctl rules`: compile a rule file with the daemon's limits (optionally asking a
//! running daemon what it would change), and backtest a candidate set against the
//! journal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rim_core::config::Config;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compile FILE; print its rules, or every error with its line and column.
    Check {
        /// The rule file (TOML; `.json` files are read as JSON).
        file: PathBuf,
        /// The daemon's config file, for its limits (rules_max, window range).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Also ask the running daemon (`PUT /rules?dryRun=true`) which rules the file
        /// would add, remove and change; nothing is installed.
        #[arg(long)]
        against_daemon: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Replay the journal through CANDIDATE and compare with the decisions the live rule
    /// sets made over the same range (decisions new, gone, different), off the daemon:
    /// this process reads the journal files.
    Backtest(BacktestArgs),
}

/// How to reach the daemon's HTTP API.
#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// The daemon's HTTP API.
    #[arg(long, env = "RIMD_API_URL", default_value = "http://127.0.0.1:7070")]
    api_url: String,
    /// Bearer token (admin scope: a dry run is a PUT).
    #[arg(long, env = "RIMD_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    /// The candidate rule file (TOML; `.json` as JSON). Omit with --generation.
    candidate: Option<PathBuf>,
    /// Use a generation from the daemon's rule book (`{data_dir}/rules/`) as the candidate.
    #[arg(long, conflicts_with = "candidate")]
    generation: Option<u64>,
    /// Compare decisions about events at or after this event time (epoch ms).
    #[arg(long)]
    from_ms: i64,
    /// ... and before this one (epoch ms).
    #[arg(long)]
    to_ms: i64,
    /// The daemon's config file: shards, state shape and limits must be the daemon's for
    /// the replay to be faithful.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Settings as the daemon was given them (`section.key=value`), after the file.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The data directory (default: the config's persist.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Examples kept of each kind.
    #[arg(long, default_value_t = rim_core::backtest::EXAMPLES_DEFAULT)]
    examples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 2 when the candidate decides differently from the live sets.
    #[arg(long)]
    fail_on_change: bool,
}

pub fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Check {
            file,
            config,
            against_daemon,
            api,
        } => check(&file, config.as_deref(), against_daemon.then_some(&api)),
        Command::Backtest(args) => backtest(args),
    }
}

fn is_json(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "json")
}

fn check(file: &Path, config: Option<&Path>, daemon: Option<&ApiArgs>) -> Result<ExitCode, String> {
    let config = Config::load(config, std::env::vars(), &[]).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let limits = rim_core::plane::limits(&config);
    let result = if is_json(file) {
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
        }
        Err(errors) => {
            eprintln!("{}: does not compile", file.display());
            for e in errors.errors() {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::from(1));
        }
    }
    match daemon {
        Some(api) => dry_run(api, &text, if is_json(file) { "json" } else { "toml" }),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `PUT /rules?dryRun=true`: what installing the text would change in the running daemon.
fn dry_run(api: &ApiArgs, text: &str, format: &str) -> Result<ExitCode, String> {
    let url = format!("{}/api/v1/rules?dryRun=true", api.api_url.trim_end_matches('/'));
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut request = agent.put(&url).header("Content-Type", "application/json");
    if let Some(t) = &api.token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let body = serde_json::json!({ "format": format, "text": text }).to_string();
    let mut response = request.send(body.as_bytes()).map_err(|e| format!("PUT {url}: {e}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .map_err(|e| format!("PUT {url}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("PUT {url}: answer is not JSON ({e})"))?;
    if status != 200 {
        let msg = v["error"]["message"].as_str().unwrap_or("(no message)");
        eprintln!("the daemon refuses the set ({status}): {msg}");
        if let Some(details) = v["error"]["details"].as_array() {
            for d in details {
                eprintln!("  {}", d["message"].as_str().unwrap_or_default());
            }
        }
        return Ok(ExitCode::from(1));
    }
    let d = &v["data"];
    let ids = |k: &str| -> Vec<String> {
        d[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    println!(
        "against the daemon (generation {} would be installed, {} rules):",
        d["generation"], d["rules"]
    );
    println!("  added:     {}", ids("added").join(", "));
    println!("  removed:   {}", ids("removed").join(", "));
    let changed: Vec<String> = d["changed"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{} (v{} → v{})",
                        c["id"].as_str().unwrap_or("?"),
                        c["fromVersion"],
                        c["toVersion"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!("  changed:   {}", changed.join(", "));
    println!("  unchanged: {}", d["unchanged"]);
    Ok(ExitCode::SUCCESS)
}

fn backtest(args: BacktestArgs) -> Result<ExitCode, String> {
    let config = Config::load(args.config.as_deref(), std::env::vars(), &args.sets).map_err(|e| e.to_string())?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| config.persist.data_dir.clone());
    let candidate = match (&args.candidate, args.generation) {
        (Some(file), None) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let format = if is_json(file) { "json" } else { "toml" };
            rim_core::plane::compile_as(&text, format, &config, None)
                .map_err(|e| format!("{} does not compile:\n{e}", file.display()))?
        }
        (None, Some(g)) => {
            let book = rim_core::rulebook::RuleBook::read_only(&data_dir).map_err(|e| e.to_string())?;
            let record = book
                .get(g)
                .ok_or_else(|| format!("the rule book in {} has no generation {g}", data_dir.display()))?;
            rim_core::plane::restore(&config, &record)
                .ok_or_else(|| format!("generation {g} does not compile with this configuration"))?
        }
        _ => return Err("give a candidate rule file or --generation".into()),
    };
    let mut spec = rim_core::backtest::Spec::new(data_dir.join("journal"), args.from_ms, args.to_ms, candidate);
    spec.examples_max = args.examples;
    let report = rim_core::backtest::run(&config, &spec).map_err(|e| format!("backtest: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", report.render());
    }
    if args.fail_on_change && !report.identical() {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
