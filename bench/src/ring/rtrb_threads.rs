//! Row `rtrb-threads`: the floor. Two rtrb rings of fixed-size slots (one each way)
//! between two threads of this process, pinned to the client and peer cores, running the
//! same protocol as the process rows.

use std::sync::atomic::{AtomicBool, Ordering};

use rtrb::{Consumer, Producer, RingBuffer};

use super::link::{client_round_trips, client_stream, serve_echo, serve_sink, Link, Message};
use super::{combine, ring_row, RingCfg};
use crate::affinity::pin_current_thread;
use crate::error::BenchError;
use crate::report::Row;
use crate::watchdog::Watch;

/// The row's name.
pub const NAME: &str = "rtrb-threads";

/// One ring slot: a whole message, copied in and out.
#[derive(Clone, Copy)]
struct Slot(Message);

/// One end: a producer towards the other thread and a consumer from it.
pub struct RtrbEnd {
    tx: Producer<Slot>,
    rx: Consumer<Slot>,
}

impl Link for RtrbEnd {
    #[inline]
    fn send(&mut self, msg: &Message) -> Result<bool, BenchError> {
        Ok(self.tx.push(Slot(*msg)).is_ok())
    }

    #[inline]
    fn recv(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError> {
        Ok(self.rx.pop().ok().map(|Slot(msg)| {
            *buf = msg;
            msg.len()
        }))
    }
}

/// Two connected ends with `depth` slots each way.
fn pair(depth: usize) -> (RtrbEnd, RtrbEnd) {
    let (there_tx, there_rx) = RingBuffer::new(depth);
    let (back_tx, back_rx) = RingBuffer::new(depth);
    (
        RtrbEnd {
            tx: there_tx,
            rx: back_rx,
        },
        RtrbEnd {
            tx: back_tx,
            rx: there_rx,
        },
    )
}

/// Measures the row: round trips, then a stream.
pub fn run(cfg: &RingCfg) -> Result<Row, BenchError> {
    pin_current_thread(cfg.client_core)?;
    let rtt = with_peer_thread(
        cfg,
        |link, watch| client_round_trips(link, &cfg.rtt, watch),
        |link, watch| serve_echo(link, cfg.rtt.total(), watch),
    )?;
    let stream = with_peer_thread(
        cfg,
        |link, watch| client_stream(link, &cfg.stream, watch),
        |link, watch| serve_sink(link, cfg.stream.messages, watch),
    )?;
    Ok(ring_row(NAME, cfg, &rtt, &stream))
}

/// Runs `client` here and `peer` on a thread pinned to the peer core, over a fresh pair of
/// rings. Each side's waits end early once the other side has finished.
fn with_peer_thread<R>(
    cfg: &RingCfg,
    client: impl FnOnce(&mut RtrbEnd, &Watch<'_>) -> Result<R, BenchError>,
    peer: impl FnOnce(&mut RtrbEnd, &Watch<'_>) -> Result<(), BenchError> + Send,
) -> Result<R, BenchError> {
    let (mut mine, mut theirs) = pair(cfg.queue_depth_messages);
    let client_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            pin_current_thread(cfg.peer_core)?;
            let client_gone = || client_done.load(Ordering::Acquire);
            peer(&mut theirs, &Watch::with_peer(cfg.timeout, &client_gone))
        });
        let peer_gone = || handle.is_finished();
        let measured = client(&mut mine, &Watch::with_peer(cfg.timeout, &peer_gone));
        client_done.store(true, Ordering::Release);
        let served = handle.join().unwrap_or(Err(BenchError::PeerPanicked { kind: NAME }));
        combine(measured, served)
    })
}
