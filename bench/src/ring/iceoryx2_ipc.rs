//! Row `iceoryx2`: iceoryx2 0.10 publish-subscribe (`ipc` services) between two
//! processes, the best-known Rust shared-memory IPC library.
//!
//! Two services per measurement, `<prefix>/ping` (client → peer) and `<prefix>/pong`
//! (peer → client), with `<prefix>` = `rimd-bench/<client pid>/<n>` so that runs and rows
//! never share a service. The payload type is `[u8; PAYLOAD_LEN]`; a send loans a sample,
//! copies the message in and sends it; a receive copies the sample out (every row copies
//! once on each side). Receivers busy-poll `receive()`.
//!
//! Back-pressure: the services do not overflow (`enable_safe_overflow(false)`), so nothing
//! is lost. A send to a full subscriber retries inside iceoryx2 (its own
//! `RetryUntilDelivered` loop: spin checks with `sched_yield`, sleeps only after 10,000
//! yields), bounded by a back-pressure handler that gives up after the watchdog timeout.
//! That beat retrying in the harness (`DiscardData` + loan/send again), whose tight
//! retries slowed the subscriber: about 2.7 M/s against 1.1 M/s in the median of four runs.
//! A send before the peer's subscriber is connected delivers to nobody (returns 0) and the
//! harness retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iceoryx2::node::Node;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::{BackpressureAction, BackpressureInfo};
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use super::link::{Link, Message};
use super::process::{run_process_row, PeerEnd, ProcessTransport};
use super::RingCfg;
use crate::error::BenchError;
use crate::peer::PeerArgs;
use crate::report::Row;

/// The row's name.
pub const NAME: &str = "iceoryx2";

/// The transport name in errors.
const TRANSPORT: &str = "iceoryx2";

/// Numbers the links this process makes, for unique service names.
static NEXT_LINK: AtomicU64 = AtomicU64::new(0);

type Ipc = ipc::Service;
type Port = PortFactory<Ipc, Message, ()>;

/// The transport marker for [`run_process_row`].
pub struct Iceoryx2;

/// One end: a publisher on one service and a subscriber on the other. Fields drop in
/// order: ports, then services, then the node.
pub struct Iceoryx2End {
    publisher: Publisher<Ipc, Message, ()>,
    subscriber: Subscriber<Ipc, Message, ()>,
    _outgoing: Port,
    _incoming: Port,
    _node: Node<Ipc>,
}

impl Link for Iceoryx2End {
    #[inline]
    fn send(&mut self, msg: &Message) -> Result<bool, BenchError> {
        let sample = self
            .publisher
            .loan_uninit()
            .map_err(|e| BenchError::transport(TRANSPORT, "loaning a sample", e))?;
        let delivered = sample
            .write_payload(*msg)
            .send()
            .map_err(|e| BenchError::transport(TRANSPORT, "sending a sample", e))?;
        // 0: the subscriber is not connected yet or its buffer is full; retry.
        Ok(delivered > 0)
    }

    #[inline]
    fn recv(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError> {
        let sample = self
            .subscriber
            .receive()
            .map_err(|e| BenchError::transport(TRANSPORT, "receiving a sample", e))?;
        Ok(sample.map(|sample| {
            buf.copy_from_slice(sample.payload());
            buf.len()
        }))
    }
}

/// Which way an end faces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Publishes on ping, subscribes to pong; creates the services.
    Client,
    /// Publishes on pong, subscribes to ping; opens the services.
    Peer,
}

impl ProcessTransport for Iceoryx2 {
    const NAME: &'static str = NAME;
    type End = Iceoryx2End;

    fn client_end(cfg: &RingCfg) -> Result<(Iceoryx2End, PeerEnd), BenchError> {
        let link = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("rimd-bench/{}/{link}", std::process::id());
        let end = open_end(&prefix, Side::Client, cfg.queue_depth_messages, cfg.timeout)?;
        let peer_end = PeerEnd {
            endpoint: prefix,
            fd: None,
        };
        Ok((end, peer_end))
    }

    fn peer_end(args: &PeerArgs) -> Result<Iceoryx2End, BenchError> {
        // The client created the services; their depth is its choice.
        open_end(&args.endpoint, Side::Peer, 0, args.timeout())
    }
}

/// Measures the row.
pub fn run(cfg: &RingCfg) -> Result<Row, BenchError> {
    run_process_row::<Iceoryx2>(cfg)
}

/// Makes one end: a node, both services (created by the client, opened by the peer), a
/// publisher on the outgoing one and a subscriber on the incoming one.
fn open_end(prefix: &str, side: Side, depth: usize, timeout: Duration) -> Result<Iceoryx2End, BenchError> {
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Ipc>()
        .map_err(|e| BenchError::transport(TRANSPORT, "creating a node", e))?;
    let ping = service(&node, &format!("{prefix}/ping"), side, depth)?;
    let pong = service(&node, &format!("{prefix}/pong"), side, depth)?;
    let (outgoing, incoming) = match side {
        Side::Client => (ping, pong),
        Side::Peer => (pong, ping),
    };
    let publisher = outgoing
        .publisher_builder()
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .set_backpressure_handler(move |info: &BackpressureInfo| retry_until(info, timeout))
        .create()
        .map_err(|e| BenchError::transport(TRANSPORT, "creating a publisher", e))?;
    let subscriber = incoming
        .subscriber_builder()
        .create()
        .map_err(|e| BenchError::transport(TRANSPORT, "creating a subscriber", e))?;
    Ok(Iceoryx2End {
        publisher,
        subscriber,
        _outgoing: outgoing,
        _incoming: incoming,
        _node: node,
    })
}

/// Keeps retrying a send to a full subscriber until `timeout`, then fails it (the
/// watchdog's bound, since this wait happens inside iceoryx2).
fn retry_until(info: &BackpressureInfo, timeout: Duration) -> BackpressureAction {
    if info.elapsed_time > timeout {
        BackpressureAction::DiscardDataAndFail
    } else {
        BackpressureAction::Retry
    }
}

/// Creates (client) or opens (peer) one publish-subscribe service of whole messages.
fn service(node: &Node<Ipc>, name: &str, side: Side, depth: usize) -> Result<Port, BenchError> {
    let name = ServiceName::new(name).map_err(|e| BenchError::transport(TRANSPORT, "naming a service", e))?;
    let builder = node.service_builder(&name).publish_subscribe::<Message>();
    match side {
        Side::Client => builder
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(depth)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .max_nodes(2)
            .create()
            .map_err(|e| BenchError::transport(TRANSPORT, "creating a service", e)),
        Side::Peer => builder
            .open()
            .map_err(|e| BenchError::transport(TRANSPORT, "opening a service", e)),
    }
}
