//! Row `rimd-shm`: rimd's own shared-memory ring (crate `rim-ring`) between two processes,
//! one SPSC ring each way, carrying real RimFastEvents (4 metrics).
//!
//! Unlike the baseline rows, which move opaque bytes, every message here is published as a
//! RimFastEvent through [`Producer::try_publish_sym`] (archived with rkyv into the ring) and
//! read with [`Consumer::poll_events`], which copies the record out of shared memory and
//! validates it (its structure, symbol references, finite numbers, unique metric names)
//! before the harness sees it; the harness reads the metric values by symbol, as the
//! daemon does. The node id, status and metric names are interned once at
//! set-up, as a feed handler would, so their `Define` records cross the ring before the
//! measurement starts.
//!
//! The harness's messages map onto the event exactly: word 0 (the stamp) travels in
//! `timestamp`, and the 32-bit halves of words 1–3 (the sink's report uses them) in
//! `price`, `volume`, `stress` and three of the metric values, so every event carries
//! changing numbers, as a market feed does. `publish_ns` is stamped from a clock read once per
//! [`CLOCK_READ_EVERY`] sends, as a feed handler stamping one packet's updates would: the
//! harness measures latency with its own stamp, so this only spares the stream a ~30 ns
//! clock read per event.
//!
//! The client creates both segments (sealed memfds) and hands them to the peer over a Unix
//! socket pair whose other end the peer inherits ([`rim_ring::attach::send_segment`]).
//!
//! Row `rimd-shm-bytes` is the same two rings carrying the harness's 144 bytes as an opaque
//! payload ([`Producer::try_publish`], [`Consumer::poll`]): the ring alone, beside
//! `rtrb-threads`. What `rimd-shm` takes beyond it is the event layer: archiving the event
//! with the producer's checks, and on the other side the structural and data-model checks
//! of the record (`cargo run --release -p rim-ring --example costs` times each step).

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use rim_ring::attach::{recv_segment, send_segment};
use rim_ring::spsc::{self, Consumer, Producer, PublishError};
use rim_ring::{Segment, Sym, SymEvent, SymbolKind};

use super::link::{Link, Message};
use super::process::{run_process_row, serve_peer, PeerEnd, ProcessTransport, Role};
use super::RingCfg;
use crate::error::BenchError;
use crate::payload::{read_stamp, sample_message, write_stamp, PAYLOAD_LEN};
use crate::peer::PeerArgs;
use crate::report::Row;

/// The row's name.
pub const NAME: &str = "rimd-shm";
/// The bytes row's name.
pub const BYTES_NAME: &str = "rimd-shm-bytes";

/// Sends between two clock reads for `publish_ns`.
pub const CLOCK_READ_EVERY: u32 = 16;

/// Bytes of ring per queued message: a 144-byte archived event plus its 8-byte header,
/// rounded up.
const RING_BYTES_PER_MESSAGE: usize = 160;

/// The strings every event refers to, interned once per ring.
const NODE_ID: &str = "rim:equity:nyse:AAPL.O";
const STATUS: &str = "OK";
const METRIC_NAMES: [&str; 4] = ["bid", "ask", "spread", "depth"];
const METRIC_VALUES: [f64; 4] = [101.25, 101.5, 0.25, 1200.0];

/// The transport marker for [`run_process_row`]: events, or opaque bytes when `BYTES`.
pub struct RimdShm<const BYTES: bool>;

/// Row `rimd-shm-bytes`'s transport.
pub type RimdShmBytes = RimdShm<true>;

/// One end: a producer towards the other process, a consumer from it.
pub struct RimdShmEnd {
    producer: Producer,
    consumer: Consumer,
    node: Sym,
    status: Sym,
    metrics: [(Sym, f64); 4],
    clock_ns: u64,
    sends_since_clock: u32,
    /// The message body received messages are rebuilt on, made once.
    template: Message,
    /// Messages cross as opaque bytes, not as events (row `rimd-shm-bytes`).
    bytes: bool,
    _control: UnixStream,
}

impl RimdShmEnd {
    fn new(producer: Producer, consumer: Consumer, control: UnixStream, bytes: bool) -> Result<Self, BenchError> {
        let mut end = Self {
            producer,
            consumer,
            node: Sym::default(),
            status: Sym::default(),
            metrics: [(Sym::default(), 0.0); 4],
            clock_ns: 0,
            sends_since_clock: 0,
            template: sample_message(),
            bytes,
            _control: control,
        };
        if bytes {
            // No symbols: a definition would reach the other side as a message.
            return Ok(end);
        }
        end.node = end.intern(SymbolKind::NodeId, NODE_ID)?;
        end.status = end.intern(SymbolKind::Status, STATUS)?;
        for (i, name) in METRIC_NAMES.iter().enumerate() {
            end.metrics[i] = (end.intern(SymbolKind::MetricName, name)?, METRIC_VALUES[i]);
        }
        Ok(end)
    }

    fn intern(&mut self, kind: SymbolKind, text: &str) -> Result<Sym, BenchError> {
        self.producer
            .intern(kind, text)
            .map_err(|e| integrity(format!("interning {text:?}: {e}")))
    }

    fn publish_ns(&mut self) -> u64 {
        if self.sends_since_clock == 0 {
            self.clock_ns = rim_ring::clock::monotonic_ns();
        }
        self.sends_since_clock = (self.sends_since_clock + 1) % CLOCK_READ_EVERY;
        self.clock_ns
    }
}

fn integrity(what: String) -> BenchError {
    BenchError::Integrity { what }
}

fn word(msg: &Message, i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&msg[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

/// The six 32-bit halves of message words 1–3, each exact as an f64.
fn halves(msg: &Message) -> [f64; 6] {
    let mut out = [0.0; 6];
    for (i, w) in (1..4).map(|i| word(msg, i)).enumerate() {
        out[2 * i] = (w & 0xffff_ffff) as f64;
        out[2 * i + 1] = (w >> 32) as f64;
    }
    out
}

fn unhalve(lo: f64, hi: f64) -> u64 {
    (lo as u64 & 0xffff_ffff) | ((hi as u64) << 32)
}

impl RimdShmEnd {
    fn send_bytes(&mut self, msg: &Message) -> Result<bool, BenchError> {
        match self.producer.try_publish(&msg[..]) {
            Ok(_) => Ok(true),
            Err(PublishError::Full { .. }) => Ok(false),
            Err(e) => Err(integrity(format!("publishing into the rimd ring: {e}"))),
        }
    }

    fn recv_bytes(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError> {
        let mut got = None;
        self.consumer
            .poll(1, |b| {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                got = Some(b.len());
            })
            .map_err(|e| integrity(format!("rimd ring: {e}")))?;
        Ok(got)
    }
}

impl Link for RimdShmEnd {
    fn send(&mut self, msg: &Message) -> Result<bool, BenchError> {
        if self.bytes {
            return self.send_bytes(msg);
        }
        let stamp = read_stamp(msg).ok_or_else(|| integrity("message shorter than its stamp".into()))?;
        let publish_ns = self.publish_ns();
        let h = halves(msg);
        self.metrics[0].1 = h[3];
        self.metrics[1].1 = h[4];
        self.metrics[2].1 = h[5];
        let ev = SymEvent {
            node: self.node,
            event_id: None,
            timestamp: stamp as i64,
            metrics: &self.metrics,
            price: Some(h[0]),
            volume: Some(h[1]),
            stress: Some(h[2]),
            status: self.status,
            source_topic: None,
            publish_ns,
        };
        match self.producer.try_publish_sym(&ev) {
            Ok(_) => Ok(true),
            Err(PublishError::Full { .. }) => Ok(false),
            Err(e) => Err(integrity(format!("publishing into the rimd ring: {e}"))),
        }
    }

    fn recv(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError> {
        if self.bytes {
            return self.recv_bytes(buf);
        }
        let mut got: Option<(u64, [f64; 6], usize)> = None;
        let mut refused = None;
        self.consumer
            .poll_events(1, |r| match r {
                Ok(ev) => {
                    let mut h = [0.0; 6];
                    h[0] = ev.price().unwrap_or(f64::NAN);
                    h[1] = ev.volume().unwrap_or(f64::NAN);
                    h[2] = ev.stress().unwrap_or(f64::NAN);
                    // By symbol, as the daemon reads them: the names were checked when the
                    // event was validated, and resolving them to text is work no one here uses.
                    for (slot, (_, v)) in h[3..].iter_mut().zip(ev.metric_syms()) {
                        *slot = v;
                    }
                    got = Some((ev.timestamp() as u64, h, ev.metric_count()));
                }
                Err(e) => refused = Some(e),
            })
            .map_err(|e| integrity(format!("rimd ring: {e}")))?;
        if let Some(e) = refused {
            return Err(integrity(format!("rimd ring refused a record: {e}")));
        }
        let Some((stamp, h, metrics)) = got else {
            return Ok(None);
        };
        if metrics != METRIC_NAMES.len() || h.iter().any(|v| v.is_nan()) {
            return Err(integrity(format!(
                "event arrived incomplete ({metrics} metrics, fields {h:?})"
            )));
        }
        *buf = self.template;
        write_stamp(buf, stamp);
        for i in 0..3 {
            let w = unhalve(h[2 * i], h[2 * i + 1]);
            buf[(i + 1) * 8..(i + 2) * 8].copy_from_slice(&w.to_le_bytes());
        }
        Ok(Some(PAYLOAD_LEN))
    }
}

fn shm_err(what: &'static str) -> impl Fn(rim_ring::attach::AttachError) -> BenchError {
    move |e| integrity(format!("{what}: {e}"))
}

fn segment_err(e: rim_ring::SegmentError) -> BenchError {
    integrity(format!("rimd segment: {e}"))
}

fn new_ring(name: &str, capacity: usize) -> Result<Arc<Segment>, BenchError> {
    let seg = Segment::create_memfd(name, spsc::segment_bytes(capacity)).map_err(segment_err)?;
    spsc::init(&seg).map_err(segment_err)?;
    Ok(Arc::new(seg))
}

impl<const BYTES: bool> ProcessTransport for RimdShm<BYTES> {
    const NAME: &'static str = if BYTES { BYTES_NAME } else { NAME };
    type End = RimdShmEnd;

    fn client_end(cfg: &RingCfg) -> Result<(RimdShmEnd, PeerEnd), BenchError> {
        client_end(cfg, BYTES)
    }

    fn peer_end(args: &PeerArgs) -> Result<RimdShmEnd, BenchError> {
        peer_end(args, BYTES)
    }
}

/// Makes both rings and the client's end; the peer's end goes to it through a socket pair.
fn client_end(cfg: &RingCfg, bytes: bool) -> Result<(RimdShmEnd, PeerEnd), BenchError> {
    let capacity = (cfg.queue_depth_messages * RING_BYTES_PER_MESSAGE).next_power_of_two();
    let to_peer = new_ring("rim-bench-to-peer", capacity)?;
    let from_peer = new_ring("rim-bench-from-peer", capacity)?;
    let (mine, theirs) = UnixStream::pair().map_err(|e| integrity(format!("socket pair: {e}")))?;
    send_segment(&mine, &to_peer).map_err(shm_err("handing over the ring to the peer"))?;
    send_segment(&mine, &from_peer).map_err(shm_err("handing over the ring from the peer"))?;
    let producer = Producer::open(to_peer).map_err(segment_err)?;
    let consumer = Consumer::open(from_peer).map_err(segment_err)?;
    let theirs = OwnedFd::from(theirs);
    let peer_end = PeerEnd {
        endpoint: theirs.as_raw_fd().to_string(),
        fd: Some(theirs),
    };
    Ok((RimdShmEnd::new(producer, consumer, mine, bytes)?, peer_end))
}

/// Opens the peer's end from the segments the client sent.
fn peer_end(args: &PeerArgs, bytes: bool) -> Result<RimdShmEnd, BenchError> {
    let control = UnixStream::from(super::uds::adopt_inherited_socket(&args.endpoint, libc::SOCK_STREAM)?);
    let from_client = recv_segment(&control).map_err(shm_err("receiving the ring from the client"))?;
    let to_client = recv_segment(&control).map_err(shm_err("receiving the ring to the client"))?;
    let consumer = Consumer::open(Arc::new(from_client)).map_err(segment_err)?;
    let producer = Producer::open(Arc::new(to_client)).map_err(segment_err)?;
    RimdShmEnd::new(producer, consumer, control, bytes)
}

/// Measures the row.
pub fn run(cfg: &RingCfg) -> Result<Row, BenchError> {
    run_process_row::<RimdShm<false>>(cfg)
}

/// `__peer rimd-shm-echo`.
pub fn peer_echo(args: &PeerArgs) -> Result<(), BenchError> {
    serve_peer::<RimdShm<false>>(args, Role::Echo)
}

/// `__peer rimd-shm-sink`.
pub fn peer_sink(args: &PeerArgs) -> Result<(), BenchError> {
    serve_peer::<RimdShm<false>>(args, Role::Sink)
}
