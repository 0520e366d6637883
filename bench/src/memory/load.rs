//! The floods of suite `memory` and the bystander that must keep being served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rim_ring::{attach, EventRef, PublishError};

use super::{flood_for, measure, Flood, STALL_MS_MAX};
use crate::error::BenchError;
use crate::report::Row;
use crate::suite::RunOpts;

/// Event time of every flood: now, so no event-time bound refuses it.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn event<'a>(node: &'a str, timestamp: i64, metrics: &'a [(&'a str, f64)]) -> EventRef<'a> {
    EventRef {
        rim_node_id: node,
        event_id: None,
        timestamp,
        critical_metrics: metrics,
        price: None,
        volume: None,
        stress: None,
        status: "OK",
        source_topic: None,
        publish_ns: 0,
    }
}

/// Publishes one event every 10 ms into a ring of its own and records the longest wait
/// until the daemon read it (at most [`STALL_MS_MAX`] + 1 is recorded: a stall).
pub fn bystander(socket: &Path, stop: &AtomicBool, lag_max_ms: &AtomicU64) {
    let Ok(mut p) = attach::attach_producer(socket, "bystander", 64 * 1024) else {
        lag_max_ms.store(u64::MAX, Ordering::Relaxed);
        return;
    };
    let metrics = [("load", 1.0)];
    while !stop.load(Ordering::Relaxed) {
        let ev = event("rim:sensor:bystander:n1", now_ms(), &metrics);
        let t0 = Instant::now();
        let lag = match p.try_publish_event(&ev) {
            Ok(pos) => {
                while p.consumed_position() < pos && t0.elapsed().as_millis() as u64 <= STALL_MS_MAX {
                    std::thread::sleep(Duration::from_micros(200));
                }
                t0.elapsed().as_millis() as u64
            }
            // A bystander's ring is never full unless the daemon stopped reading it.
            Err(_) => STALL_MS_MAX + 1,
        };
        lag_max_ms.fetch_max(lag, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Publishes events for `nodes` (round robin) as fast as the ring takes them, until stop,
/// and in any case until every node had one.
pub fn flood_ring(socket: &Path, name: &str, nodes: &[String], stop: &AtomicBool) -> Result<u64, BenchError> {
    let mut p =
        attach::attach_producer(socket, name, 1 << 20).map_err(|e| BenchError::transport("rim-ring", "attach", e))?;
    let metrics = [("load", 1.0), ("temp", 20.0)];
    let (mut sent, mut i) = (0u64, 0usize);
    let ts = now_ms();
    while i < nodes.len() || !stop.load(Ordering::Relaxed) {
        // Event times advance with the events, a millisecond per pass over the nodes.
        let ev = event(&nodes[i % nodes.len()], ts + (i / nodes.len()) as i64, &metrics);
        match p.try_publish_event(&ev) {
            Ok(_) => {
                sent += 1;
                i += 1;
            }
            Err(PublishError::Full { .. }) => std::thread::yield_now(),
            Err(e) => return Err(BenchError::transport("rim-ring", "publish", e)),
        }
    }
    Ok(sent)
}

fn sets(extra: &[&str]) -> Vec<String> {
    extra.iter().map(|s| (*s).to_owned()).collect()
}

/// The rules of the floods: thresholds the floods never reach (so only `ws-10k` decides).
pub const QUIET_RULES: &str = r#"
[[rule]]
id = "hot"
when = "metric.temp > 1000"
severity = "high"
"#;

/// `producers-64`: 64 rings of 1 MiB from one process, each flooding as fast as it can.
pub fn producers_64(opts: &RunOpts) -> Result<Row, BenchError> {
    let s = sets(&[
        "ingest.producers_max=72",
        "ingest.rings_per_pid_max=72",
        "ingest.rings_per_uid_max=72",
        "ingest.ring_capacity_max=1048576",
        "ingest.ring_bytes_per_pid_max=134217728",
    ]);
    measure(
        "producers-64",
        opts,
        flood_for(opts),
        0,
        QUIET_RULES,
        &s,
        |d, _, stop| {
            let socket = d.socket();
            let sent = std::thread::scope(|sc| {
                let workers: Vec<_> = (0..64)
                    .map(|k| {
                        let socket = &socket;
                        sc.spawn(move || {
                            let nodes: Vec<String> = (0..100).map(|n| format!("rim:sensor:flood{k}:n{n}")).collect();
                            flood_ring(socket, &format!("flood{k}"), &nodes, stop)
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|_| Err(BenchError::Setup("a flooding thread panicked".into())))
                    })
                    .sum::<Result<u64, BenchError>>()
            })?;
            Ok(Flood {
                events: sent,
                ws_clients: 0,
            })
        },
    )
}

/// `nodes-100k`: one ring flooding events over 100,000 distinct nodes.
pub fn nodes_100k(opts: &RunOpts) -> Result<Row, BenchError> {
    // The bystander's node too.
    let s = sets(&["reflex.nodes_max=100016"]);
    measure("nodes-100k", opts, flood_for(opts), 0, QUIET_RULES, &s, |d, _, stop| {
        let nodes: Vec<String> = (0..100_000).map(|n| format!("rim:sensor:many:n{n}")).collect();
        Ok(Flood {
            events: flood_ring(&d.socket(), "many", &nodes, stop)?,
            ws_clients: 0,
        })
    })
}

/// WebSocket subscribers of `ws-10k`.
const WS_CLIENTS: usize = 10_000;

/// `ws-10k`: 10,000 WebSocket subscribers that never read, while one ring floods events
/// that each fire a rule.
pub fn ws_10k(opts: &RunOpts) -> Result<Row, BenchError> {
    // Each side holds one descriptor per client; the daemon inherits the limit.
    raise_fd_limit(WS_CLIENTS as u64 + 1024)?;
    // Upgrades count as queries of one client (the loopback address): no rate limit.
    let s = sets(&["api.ws_clients_max=10000", "api.rate_query_per_min=0"]);
    let rules = r#"
[[rule]]
id = "every"
nodes = "rim:sensor:ws:*"
when = "metric.load >= 0"
severity = "low"
"#;
    measure("ws-10k", opts, flood_for(opts), 0, rules, &s, |d, http, stop| {
        let mut clients = Vec::with_capacity(WS_CLIENTS);
        for _ in 0..WS_CLIENTS {
            clients.push(ws_connect(http)?);
        }
        let nodes: Vec<String> = (0..100).map(|n| format!("rim:sensor:ws:n{n}")).collect();
        let events = flood_ring(&d.socket(), "ws-flood", &nodes, stop)?;
        drop(clients);
        Ok(Flood {
            events,
            ws_clients: WS_CLIENTS as u64,
        })
    })
}

/// Opens a WebSocket on `/api/v1/ws/decisions` and returns it unread after the 101.
fn ws_connect(http: SocketAddr) -> Result<TcpStream, BenchError> {
    let io = |what: &'static str| move |source| BenchError::Io { what, source };
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(5)).map_err(io("connecting a WebSocket"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("SO_RCVTIMEO"))?;
    let req = "GET /api/v1/ws/decisions HTTP/1.1\r\nHost: rimd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(req.as_bytes()).map_err(io("sending the upgrade"))?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).map_err(io("reading the upgrade answer"))?;
        if n == 0 || head.len() > 4096 {
            break;
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(BenchError::Setup(format!(
            "WebSocket upgrade refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        )));
    }
    Ok(s)
}

/// Raises this process's open-file limit (inherited by the daemon) to at least `n`.
fn raise_fd_limit(n: u64) -> Result<(), BenchError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(BenchError::last_os("getrlimit"));
    }
    if lim.rlim_cur >= n {
        return Ok(());
    }
    lim.rlim_cur = n.min(lim.rlim_max);
    // SAFETY: setrlimit reads one rlimit through a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 || lim.rlim_cur < n {
        return Err(BenchError::Setup(format!(
            "ws-10k needs {n} open files; the hard limit is {}",
            lim.rlim_max
        )));
    }
    Ok(())
}
