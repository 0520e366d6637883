//! `rimctl stats`: reads the daemon's stats segment and prints it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use rim_stats::{Snapshot, StatsReader};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the snapshot as JSON.
    #[arg(long)]
    json: bool,
    /// Print again every N seconds.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<f64>,
}

pub fn run(run_dir: &Path, args: Args) -> Result<ExitCode, String> {
    let path = run_dir.join("stats");
    let reader = StatsReader::open(&path).map_err(|e| format!("{}: {e} (is rimd running?)", path.display()))?;
    loop {
        let snap = reader.read().map_err(|e| format!("{}: {e}", path.display()))?;
        if args.json {
            println!("{}", serde_json::to_string(&snap).map_err(|e| e.to_string())?);
        } else {
            print!("{}", render(&snap));
        }
        match args.watch {
            Some(s) if s > 0.0 => std::thread::sleep(Duration::from_secs_f64(s)),
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn render(s: &Snapshot) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let age = s.taken_unix_ms.saturating_sub(s.started_unix_ms) / 1000;
    let _ = writeln!(
        o,
        "rimd {} pid {} {} (up {age} s)",
        s.version,
        s.pid,
        if s.running { "running" } else { "stopped" }
    );
    let _ = writeln!(
        o,
        "\nstage latency (ns)     count        p50        p99      p99.9        max"
    );
    for (name, q) in &s.stages {
        let _ = writeln!(
            o,
            "  {name:<18} {:>9} {:>10} {:>10} {:>10} {:>10}",
            q.count, q.p50, q.p99, q.p999, q.max
        );
    }
    let _ = writeln!(o, "\ncounters");
    for (name, v) in s.counters.iter().filter(|(_, v)| **v != 0) {
        let _ = writeln!(o, "  {name:<40} {v:>14}");
    }
    let _ = writeln!(o, "\ngauges");
    for (name, v) in &s.gauges {
        let _ = writeln!(o, "  {name:<40} {v:>14}");
    }
    // Every figure is the daemon's own count but `full`: publishes the producer says its
    // ring refused as full (the daemon never sees those).
    let _ = writeln!(
        o,
        "\nrings                    kind        pid      depth   delivered   rejected  full(producer)  refused"
    );
    for r in &s.rings {
        let refused: Vec<String> = r.refused.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            o,
            "  {:<22} {:<9} {:>6} {:>10} {:>11} {:>10} {:>15}  {}",
            r.name,
            r.kind,
            r.pid,
            r.depth,
            r.delivered,
            r.rejected,
            r.refused_full,
            refused.join(" ")
        );
    }
    let _ = writeln!(
        o,
        "\nshards                   core        loops         work   stalls  max_turn_ns"
    );
    for sh in &s.shards {
        let core = sh.core.map_or("-".to_owned(), |c| c.to_string());
        let _ = writeln!(
            o,
            "  {:<22} {:>4} {:>12} {:>12} {:>8} {:>12}",
            sh.name, core, sh.loops, sh.work, sh.stalls, sh.max_stall_ns
        );
    }
    o
}
