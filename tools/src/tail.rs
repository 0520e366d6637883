//! `rimctl tail`: decisions live from the daemon's broadcast ring(s).
//!
//! One JSON object per line on stdout. A reader that falls behind is told how many
//! decisions it missed (a `{"lapped": N}` line on stderr) and goes on; `--verify` checks
//! each shard's hash chain as records arrive and fails on the first break, except across
//! a lap, where the chain is picked up again at the next record.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rim_decision::{self as decision, Verifier};
use rim_ring::broadcast::{ReadError, Reader};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Reflex shards to read (default: as many as the daemon's stats list).
    #[arg(long)]
    shards: Option<usize>,
    /// Stop after this many decisions.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Stop after this many seconds without a decision.
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// Verify the hash chain; exit 3 on a break.
    #[arg(long)]
    verify: bool,
    /// Print a short line per decision instead of JSON.
    #[arg(long)]
    short: bool,
    /// Print "ready" on stderr once attached (for scripts that start producers after).
    #[arg(long)]
    ready: bool,
}

pub fn run(run_dir: &Path, args: Args) -> Result<ExitCode, String> {
    let socket = run_dir.join("rimd.sock");
    let mut readers: Vec<(Reader, Verifier)> = Vec::new();
    let shards = args.shards.unwrap_or_else(|| {
        rim_stats::StatsReader::open(&run_dir.join("stats"))
            .and_then(|r| r.read())
            .map_or(1, |s| s.gauges.get("decision_rings").map_or(1, |&n| n.max(1) as usize))
    });
    for k in 0..shards.max(1) {
        let name = if k == 0 {
            "decisions".to_owned()
        } else {
            format!("decisions:{k}")
        };
        let r = rim_ring::attach::attach_subscriber(&socket, &name)
            .map_err(|e| format!("{}: {e} (is rimd running?)", socket.display()))?;
        readers.push((r, Verifier::new()));
    }
    if args.ready {
        eprintln!("ready");
    }
    let slot = readers.iter().map(|(r, _)| r.slot_bytes()).max().unwrap_or(0);
    let mut buf = vec![0u8; slot];
    let started = Instant::now();
    let mut last = Instant::now();
    let mut seen = 0u64;
    let deadline = args.timeout.map(Duration::from_secs_f64);
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    loop {
        let mut got = false;
        for (reader, verifier) in &mut readers {
            match reader.read(&mut buf) {
                Ok(Some(n)) => {
                    got = true;
                    seen += 1;
                    let bytes = &buf[..n];
                    let d = if args.verify {
                        match verifier.push(bytes) {
                            Ok(d) => d,
                            Err(e) => {
                                eprintln!("{}", serde_json::json!({"chain_error": e.to_string()}));
                                return Ok(ExitCode::from(3));
                            }
                        }
                    } else {
                        match decision::decode(bytes) {
                            Ok(d) => d,
                            Err(e) => {
                                eprintln!("{}", serde_json::json!({"bad_record": e.to_string()}));
                                continue;
                            }
                        }
                    };
                    if args.short {
                        println!(
                            "{:<9} {:<20} {:<32} seq {:>8} latency {:>8} ns",
                            d.severity, d.rule_id, d.rim_node_id, d.event_seq, d.latency_ns
                        );
                    } else {
                        println!("{}", serde_json::to_string(&d).map_err(|e| e.to_string())?);
                    }
                }
                Ok(None) => {}
                Err(ReadError::Lapped { missed }) => {
                    eprintln!("{}", serde_json::json!({ "lapped": missed }));
                    *verifier = Verifier::new();
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if got {
            last = Instant::now();
        }
        if args.count.is_some_and(|c| seen >= c)
            || deadline.is_some_and(|d| started.elapsed() >= d)
            || idle.is_some_and(|d| last.elapsed() >= d)
        {
            return Ok(ExitCode::SUCCESS);
        }
        if !got {
            if let Some((r, _)) = readers.first() {
                r.wait(50_000, 10_000_000);
            }
        }
    }
}
