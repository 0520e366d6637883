//! `rimctl replay`: reads the journal back, from an event time or a position, as JSON
//! lines (one RimFastEvent each, the platform's field names) or into a daemon through a
//! producer ring (whose dedup drops events it already has, by `event_id`).
//!
//! Order: journal order, which keeps each node's order (all partitions share the journal's
//! events stream; each record's partition is its node's, `murmur2(id) % partitions`);
//! `--partition` keeps one. Safe while a daemon writes the journal: a record not yet
//! whole (or still in the daemon's buffer) is where the read stops.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rim_journal::{Fs, Reader};
use rim_ring::PublishError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The daemon's data directory (persist.data_dir); the journal is its `journal/`.
    #[arg(long, env = "RIMD_PERSIST_DATA_DIR", default_value = "/var/tmp/rimd")]
    data_dir: PathBuf,
    /// Only the events of this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Partitions the daemon hashes nodes to (topology.partitions).
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// Start at this position of the journal's events stream.
    #[arg(long, default_value_t = 0)]
    from_pos: u64,
    /// Only events whose event time (epoch ms) is at or after this.
    #[arg(long)]
    from_ms: Option<i64>,
    /// Only events before this event time (epoch ms).
    #[arg(long)]
    to_ms: Option<i64>,
    /// Publish into the daemon (of --run-dir) instead of printing.
    #[arg(long)]
    into_daemon: bool,
    /// Print `{"partition":..,"pos":..,"event":{..}}` instead of the bare event.
    #[arg(long)]
    with_position: bool,
}

pub fn run(run_dir: &Path, args: Args) -> Result<ExitCode, String> {
    let dir = args.data_dir.join("journal");
    if args.partitions == 0 {
        return Err("--partitions must be at least 1".into());
    }
    let mut producer = if args.into_daemon {
        let socket = run_dir.join("rimd.sock");
        Some(
            rim_ring::attach::attach_producer(&socket, "rimctl-replay", 1 << 22)
                .map_err(|e| format!("attach to {}: {e}", socket.display()))?,
        )
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    let stream = rim_core::streams::STREAM_EVENTS;
    let mut reader = Reader::open(&dir, stream, args.from_pos, Fs::new()).map_err(|e| format!("journal: {e}"))?;
    {
        while let Some((pos, bytes)) = reader.next().map_err(|e| format!("journal: {e}"))? {
            let rec = rim_journal::event::decode(bytes).map_err(|e| format!("journal position {pos}: {e}"))?;
            if args.from_ms.is_some_and(|t| rec.timestamp < t) || args.to_ms.is_some_and(|t| rec.timestamp >= t) {
                continue;
            }
            let part = rim_core::ingest::nodes::partition_of(rec.rim_node_id, args.partitions);
            if args.partition.is_some_and(|p| p != part) {
                continue;
            }
            let ev = rec.to_event();
            match producer.as_mut() {
                Some(p) => publish(p, &ev)?,
                None => {
                    let line = if args.with_position {
                        serde_json::json!({ "partition": part, "pos": pos, "event": ev })
                    } else {
                        serde_json::to_value(&ev).map_err(|e| e.to_string())?
                    };
                    if writeln!(out, "{line}").is_err() {
                        // A closed pipe (`| head`): stop quietly.
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            count += 1;
        }
    }
    let _ = out.flush();
    if let Some(p) = producer {
        let end = p.position();
        if !p.wait_durable(end, 50_000, 30_000_000_000) {
            return Err(format!("{count} events published, but not all durable within 30 s"));
        }
        eprintln!("rimctl replay: {count} events published into the daemon, all durable");
        p.close();
    }
    Ok(ExitCode::SUCCESS)
}

fn publish(p: &mut rim_ring::Producer, ev: &rim_ring::RimFastEvent) -> Result<(), String> {
    let since = Instant::now();
    loop {
        match p.try_publish_event(&ev.as_ref()) {
            Ok(_) => return Ok(()),
            Err(PublishError::Full { .. }) if since.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(format!("publish: {e}")),
        }
    }
}
