//! Suite `ring`: how fast a message crosses cores, per transport.
//!
//! Rows, in order: `rimd-shm` (rimd's own shared-memory ring, two processes, carrying
//! events), `rimd-shm-bytes` (the same ring carrying the message as opaque bytes: the ring
//! without the event layer), `rtrb-threads`
//! (two rtrb rings between two pinned threads: the floor), `uds` (a Unix SEQPACKET socket
//! pair between two processes), `iceoryx2` (iceoryx2 0.10 publish-subscribe between two
//! processes). Every row moves the same bytes ([`crate::payload`]) through the same protocol
//! ([`link`]) and reports `rtt_p50_ns`, `rtt_p99_ns`, `rtt_p999_ns`, `rtt_max_ns` and
//! `events_per_s`.
//!
//! Module map: [`link`] (the protocol over any [`link::Link`]), [`process`] (running a
//! transport between two processes), one module per transport.

pub mod iceoryx2_ipc;
pub mod link;
pub mod process;
pub mod rimd_shm;
pub mod rtrb_threads;
pub mod uds;

use std::time::Duration;

use crate::error::BenchError;
use crate::latency::{LatencySummary, RTT};
use crate::report::{Figure, Row};
use crate::suite::{PeerSpec, RowSpec, RunOpts, RunSize, Suite};
use link::{RttPlan, StreamPlan, StreamSummary};
use process::{serve_peer, Role};

/// The figures of every `ring` row, in column order.
pub const COLUMNS: &[&str] = &[RTT.p50, RTT.p99, RTT.p999, RTT.max, EVENTS_PER_S];

/// Streaming throughput figure.
pub const EVENTS_PER_S: &str = "events_per_s";

/// The `ring` suite.
pub const SUITE: Suite = Suite {
    name: "ring",
    about: "message round trip and throughput across cores, per transport",
    columns: COLUMNS,
    rows: &[
        RowSpec {
            name: rimd_shm::NAME,
            run: |opts| rimd_shm::run(&RingCfg::new(opts)),
        },
        RowSpec {
            name: rimd_shm::BYTES_NAME,
            run: |opts| process::run_process_row::<rimd_shm::RimdShmBytes>(&RingCfg::new(opts)),
        },
        RowSpec {
            name: rtrb_threads::NAME,
            run: |opts| rtrb_threads::run(&RingCfg::new(opts)),
        },
        RowSpec {
            name: uds::NAME,
            run: |opts| uds::run(&RingCfg::new(opts)),
        },
        RowSpec {
            name: iceoryx2_ipc::NAME,
            run: |opts| iceoryx2_ipc::run(&RingCfg::new(opts)),
        },
    ],
    peers: &[
        PeerSpec {
            kind: "rimd-shm-echo",
            run: rimd_shm::peer_echo,
        },
        PeerSpec {
            kind: "rimd-shm-sink",
            run: rimd_shm::peer_sink,
        },
        PeerSpec {
            kind: "rimd-shm-bytes-echo",
            run: |args| serve_peer::<rimd_shm::RimdShmBytes>(args, Role::Echo),
        },
        PeerSpec {
            kind: "rimd-shm-bytes-sink",
            run: |args| serve_peer::<rimd_shm::RimdShmBytes>(args, Role::Sink),
        },
        PeerSpec {
            kind: "uds-echo",
            run: |args| serve_peer::<uds::Uds>(args, Role::Echo),
        },
        PeerSpec {
            kind: "uds-sink",
            run: |args| serve_peer::<uds::Uds>(args, Role::Sink),
        },
        PeerSpec {
            kind: "iceoryx2-echo",
            run: |args| serve_peer::<iceoryx2_ipc::Iceoryx2>(args, Role::Echo),
        },
        PeerSpec {
            kind: "iceoryx2-sink",
            run: |args| serve_peer::<iceoryx2_ipc::Iceoryx2>(args, Role::Sink),
        },
    ],
    finish: None,
};

/// Round trips and stream of a full run. The budgets bound a slow transport: `uds` pays a
/// wake-up per message (~60-80 µs a round trip, ~250-500k messages/s on the 2-core VM).
const FULL: (RttPlan, StreamPlan) = (
    RttPlan {
        warmup: 10_000,
        measured: 1_000_000,
        budget: Duration::from_secs(120),
    },
    StreamPlan {
        messages: 20_000_000,
        budget: Duration::from_secs(20),
    },
);

/// Round trips and stream of a `--quick` run; the budgets keep the suite under a minute.
const QUICK: (RttPlan, StreamPlan) = (
    RttPlan {
        warmup: 10_000,
        measured: 200_000,
        budget: Duration::from_secs(20),
    },
    StreamPlan {
        messages: 3_000_000,
        budget: Duration::from_secs(6),
    },
);

/// Round trips and stream of a smoke run: enough to see every row work.
const SMOKE: (RttPlan, StreamPlan) = (
    RttPlan {
        warmup: 100,
        measured: 2_000,
        budget: Duration::from_secs(5),
    },
    StreamPlan {
        messages: 20_000,
        budget: Duration::from_secs(5),
    },
);

/// Slots per direction, for transports whose queue depth is ours to choose.
const QUEUE_DEPTH_MESSAGES: usize = 512;

/// Everything a `ring` row needs to know.
#[derive(Debug, Clone)]
pub struct RingCfg {
    /// Core of the measuring thread.
    pub client_core: usize,
    /// Core of the echo/sink (thread or process).
    pub peer_core: usize,
    /// Round trips: warm-up and recorded.
    pub rtt: RttPlan,
    /// Messages streamed for throughput.
    pub stream: StreamPlan,
    /// Slots per direction where the transport lets us choose.
    pub queue_depth_messages: usize,
    /// Longest any single wait for the other side may last.
    pub timeout: Duration,
}

impl RingCfg {
    /// The configuration for a run of the given size.
    pub fn new(opts: &RunOpts) -> Self {
        let (rtt, stream) = match opts.size {
            RunSize::Full => FULL,
            RunSize::Quick => QUICK,
            RunSize::Smoke => SMOKE,
        };
        Self {
            client_core: opts.client_core,
            peer_core: opts.peer_core,
            rtt,
            stream,
            queue_depth_messages: QUEUE_DEPTH_MESSAGES,
            timeout: opts.peer_timeout,
        }
    }
}

/// A `ring` row from its two measurements. Says on stderr when a time budget cut a
/// measurement short.
pub fn ring_row(name: &str, cfg: &RingCfg, rtt: &LatencySummary, stream: &StreamSummary) -> Row {
    if rtt.count < cfg.rtt.measured {
        eprint!(
            "(round trips cut at {} of {} by the {:?} budget) ",
            rtt.count, cfg.rtt.measured, cfg.rtt.budget
        );
    }
    if stream.messages < cfg.stream.messages {
        eprint!(
            "(stream cut at {} of {} messages by the {:?} budget) ",
            stream.messages, cfg.stream.messages, cfg.stream.budget
        );
    }
    let events_per_s = stream.events_per_s;
    let mut figures: Vec<Figure> = rtt.figures(&RTT).to_vec();
    figures.push(Figure::real(EVENTS_PER_S, events_per_s));
    Row::new(name, figures).with_latency("rtt", rtt)
}

/// Combines the client's outcome with the peer's: the client's result when both did
/// well; the peer's error when the peer failed (it explains a client that saw the peer
/// vanish); otherwise the client's own error.
pub fn combine<R>(client: Result<R, BenchError>, peer: Result<(), BenchError>) -> Result<R, BenchError> {
    match (client, peer) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(peer_error)) => Err(peer_error),
        (Err(BenchError::PeerGone { .. }), Err(peer_error)) => Err(peer_error),
        (Err(client_error), _) => Err(client_error),
    }
}
