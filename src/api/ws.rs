//! `GET /ws/decisions`: a WebSocket stream of decisions.
//!
//! The handshake is hyper's upgrade (answered here); the framing is `tungstenite`'s
//! protocol state ([`WebSocketContext`]) over two in-memory buffers that this module moves
//! to and from glommio's stream, so every wait stays asynchronous on the HTTP executor and
//! no tokio or second IO stack comes in. Text frames are checked for UTF-8 (1007 if not),
//! messages bounded (1009), protocol errors closed (1002), pings answered. The server
//! pings a client it has not heard from for `api.ws_ping_interval_ms` and drops one that
//! stays silent `api.ws_pong_timeout_ms` longer (counted).
//!
//! One poller task ([`poll_decisions`]) reads every decision broadcast ring with its own
//! `rim_ring::broadcast::Reader` (so it never slows the reflex shards: a reader that falls
//! a lap behind is told how many it missed), decodes each decision once, renders its JSON
//! once, and hands the same bytes to each matching client's bounded queue
//! (`api.ws_queue_len`). A client whose queue is full misses decisions; it then receives
//! `{"type":"missed","missed":N}` before its next decision (or when its queue drains).
//! The poller sleeps when no client is connected.
//!
//! Filters (query): `node` (a glob: `*` any run, `?` one character) and `severity` (the
//! minimum: info, low, medium, high, critical). In: text `PING` → text `PONG`; a ping
//! frame → a pong frame; close → close. Out: `{"type":"decision","data":{…}}`, and pings.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{AsyncBufRead, AsyncWrite};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use rim_ring::broadcast::{ReadError, Reader};
use tracing::{debug, warn};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use super::envelope::{Body, Code, Meta, Problem};
use super::io::Io;
use super::query::Query;
use super::routes::DecisionView;
use super::server::App;
use crate::agent::AgentFigures;
use crate::reflex::decision;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame (or fragmented message) a client may send, bytes.
const CLIENT_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Decisions read from one ring per poller turn before yielding.
const POLL_BATCH: usize = 1_024;
/// How long the poller sleeps when it finds its readers taken (it parks, with no timer,
/// while no client is connected).
const IDLE_SLEEP: Duration = Duration::from_millis(50);
/// Socket reads per turn of a WebSocket task before it lets others run.
const READS_PER_TURN: usize = 16;
/// Unsent bytes (pongs, decisions) at which a client's input is no longer read.
const OUT_BYTES_MAX: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------
// Clients and the hub

/// What a client asked to see.
#[derive(Debug, Clone)]
pub struct Filter {
    node: Option<rim_rules::Glob>,
    severity_min: u8,
}

impl Filter {
    fn matches(&self, node: &str, severity: u8) -> bool {
        severity >= self.severity_min && self.node.as_ref().is_none_or(|g| g.matches(node))
    }
}

/// One connected client.
pub struct Client {
    filter: Filter,
    queue: RefCell<VecDeque<Bytes>>,
    missed: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

impl Client {
    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The connected clients. Each client's task owns its `Rc<Client>`; the hub holds weak
/// references and forgets a client when its task ends.
pub struct Hub {
    clients: RefCell<Vec<Weak<Client>>>,
    segments: Vec<std::sync::Arc<rim_ring::Segment>>,
    /// One reader per decision ring, open while a client is connected. Opened when the
    /// first client joins (not when the poller next wakes), so a client sees every
    /// decision published after its handshake.
    readers: RefCell<Option<Vec<Reader>>>,
    queue_len: usize,
    clients_max: usize,
    /// Decisions delivered to a queue / missed by a client / missed by the poller.
    pub delivered: Cell<u64>,
    /// Decisions a client missed because its queue was full.
    pub client_missed: Cell<u64>,
    /// Decisions the poller missed by being lapped on a ring.
    pub ring_missed: Cell<u64>,
    /// Clients dropped for not answering a ping in time.
    pub dropped_silent: Rc<Cell<u64>>,
    /// Wakes the poller parked on an empty hub: a client joined, or the server stops.
    wake: Notify,
    /// The poller's agent figures: a turn per batch read, a wait per empty poll or park.
    figures: std::sync::Arc<AgentFigures>,
}

/// A wake-up for one task on this executor (the hub's poller): `notify` from any task
/// of the thread, `wait` in the one. A notify before the wait is kept, so none is lost.
#[derive(Default)]
pub(crate) struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.set.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

impl Hub {
    /// A hub over the decision rings `segments` with per-client queues of `queue_len`;
    /// its poller adds to `figures`.
    pub fn new(
        segments: Vec<std::sync::Arc<rim_ring::Segment>>,
        queue_len: usize,
        clients_max: usize,
        figures: std::sync::Arc<AgentFigures>,
    ) -> Self {
        Self {
            wake: Notify::default(),
            figures,
            clients: RefCell::new(Vec::new()),
            segments,
            readers: RefCell::new(None),
            queue_len: queue_len.max(1),
            clients_max,
            delivered: Cell::new(0),
            client_missed: Cell::new(0),
            ring_missed: Cell::new(0),
            dropped_silent: Rc::new(Cell::new(0)),
        }
    }

    /// Appends the hub's counters as Prometheus text (`rimd_http_ws_…_total`).
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (what, help, v) in [
            (
                "delivered",
                "Decisions queued to WebSocket clients",
                self.delivered.get(),
            ),
            (
                "client_missed",
                "Decisions a WebSocket client missed (its queue was full)",
                self.client_missed.get(),
            ),
            (
                "ring_missed",
                "Decisions the poller missed (lapped on a ring)",
                self.ring_missed.get(),
            ),
            (
                "dropped_silent",
                "WebSocket clients dropped for not answering a ping",
                self.dropped_silent.get(),
            ),
        ] {
            let name = format!("rimd_http_ws_{what}_total");
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        }
    }

    fn join(&self, filter: Filter) -> Option<Rc<Client>> {
        self.prune();
        let mut clients = self.clients.borrow_mut();
        if clients.len() >= self.clients_max {
            return None;
        }
        let c = Rc::new(Client {
            filter,
            queue: RefCell::new(VecDeque::with_capacity(self.queue_len.min(64))),
            missed: Cell::new(0),
            waker: RefCell::new(None),
        });
        clients.push(Rc::downgrade(&c));
        let mut readers = self.readers.borrow_mut();
        if readers.is_none() {
            *readers = Some(open_readers(&self.segments));
        }
        self.wake.notify();
        Some(c)
    }

    /// Wakes the poller so that it sees the server stop.
    pub fn stopping(&self) {
        self.wake.notify();
    }

    /// Forgets clients whose task ended.
    fn prune(&self) {
        self.clients.borrow_mut().retain(|w| w.strong_count() > 0);
    }

    /// Clients connected.
    pub fn len(&self) -> usize {
        self.prune();
        self.clients.borrow().len()
    }

    /// None connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands one decision record to every matching client.
    fn dispatch(&self, record: &[u8]) {
        let d = match decision::decode(record) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "undecodable record on a decision ring");
                return;
            }
        };
        let sev = severity_code(&d.severity).unwrap_or(0);
        let mut text: Option<Bytes> = None;
        for c in self.clients.borrow().iter().filter_map(Weak::upgrade) {
            if !c.filter.matches(&d.rim_node_id, sev) {
                continue;
            }
            let msg = text.get_or_insert_with(|| render_decision(&d)).clone();
            self.offer(&c, msg);
        }
    }

    fn offer(&self, c: &Client, msg: Bytes) {
        let mut q = c.queue.borrow_mut();
        let missed = c.missed.get();
        // A pending miss notice goes in front of the next decision, in order (it may take
        // the queue one past its length: notices are small and at most one is pending).
        if q.len() >= self.queue_len {
            // Its task is busy with a full queue already (or waits for the socket): no
            // wake-up, so a stalled client costs the poller a counter, not a syscall.
            c.missed.set(missed + 1);
            self.client_missed.set(self.client_missed.get() + 1);
            return;
        }
        let was_empty = q.is_empty();
        if missed > 0 {
            q.push_back(missed_notice(missed));
            c.missed.set(0);
        }
        q.push_back(msg);
        self.delivered.set(self.delivered.get() + 1);
        drop(q);
        // A non-empty queue has woken the task already; it drains the queue before it
        // waits again (see `run_client`).
        if was_empty {
            c.wake();
        }
    }

    /// The poller was lapped: every client missed these. Only clients with an empty
    /// queue are woken (to send the notice now); the others send it when their queue
    /// drains, so a lap costs 10,000 stalled subscribers a counter each, not a task run.
    fn lapped(&self, missed: u64) {
        self.ring_missed.set(self.ring_missed.get() + missed);
        for c in self.clients.borrow().iter().filter_map(Weak::upgrade) {
            c.missed.set(c.missed.get() + missed);
            if c.queue.borrow().is_empty() {
                c.wake();
            }
        }
    }
}

fn render_decision(d: &decision::Decision) -> Bytes {
    #[derive(serde::Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        data: DecisionView<'a>,
    }
    let msg = Msg {
        kind: "decision",
        data: DecisionView::of(d),
    };
    Bytes::from(serde_json::to_vec(&msg).unwrap_or_default())
}

fn missed_notice(n: u64) -> Bytes {
    Bytes::from(format!("{{\"type\":\"missed\",\"missed\":{n}}}"))
}

/// Severity name → code (`info` 0 … `critical` 4).
fn severity_code(s: &str) -> Option<u8> {
    Some(match s {
        "info" => 0,
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "critical" => 4,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// The poller

/// Reads the decision rings and fans out to the clients, for the server's lifetime.
pub async fn poll_decisions(app: Rc<App>) {
    let hub = &app.hub;
    let mut buf = Vec::new();
    let mut laps = Laps::default();
    let poll_every = Duration::from_micros(app.cfg.ws_poll_us.max(10));
    loop {
        if app.stop.load(Ordering::Relaxed) {
            return;
        }
        if hub.is_empty() {
            // Closed; reopened at the rings' tails when a client joins: it sees decisions
            // from its handshake on, not a backlog. Parked until then (no timer).
            hub.readers.borrow_mut().take();
            hub.figures.waited();
            hub.wake.wait().await;
            continue;
        }
        // The readers leave the hub while they are read, so that dispatching (which
        // borrows the clients) never overlaps a borrow of the readers.
        let Some(mut readers) = hub.readers.borrow_mut().take() else {
            hub.figures.waited();
            glommio::timer::sleep(IDLE_SLEEP).await;
            continue;
        };
        let started = Instant::now();
        let slot = readers.iter().map(Reader::slot_bytes).max().unwrap_or(0);
        if buf.len() < slot {
            buf.resize(slot, 0);
        }
        let mut read = 0;
        for r in &mut readers {
            read += drain_ring(r, &mut buf, hub, &mut laps);
        }
        hub.readers.borrow_mut().get_or_insert(readers);
        laps.report();
        if read == 0 {
            hub.figures.waited();
            glommio::timer::sleep(poll_every).await;
        } else {
            hub.figures.turn(started.elapsed().as_nanos() as u64, read);
            // A real yield after every batch: requests get their turn however fast the
            // shards decide.
            futures_lite::future::yield_now().await;
        }
    }
}

fn open_readers(segments: &[std::sync::Arc<rim_ring::Segment>]) -> Vec<Reader> {
    segments
        .iter()
        .filter_map(|s| match Reader::open(s.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "cannot read a decision ring");
                None
            }
        })
        .collect()
}

/// Laps of the poller, logged at most once a second (a lap can repeat per read).
#[derive(Default)]
struct Laps {
    missed: u64,
    logged_at: Option<std::time::Instant>,
}

impl Laps {
    fn report(&mut self) {
        if self.missed == 0 || self.logged_at.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        warn!(
            missed = self.missed,
            "the WebSocket poller fell behind a decision ring; its clients were told"
        );
        self.missed = 0;
        self.logged_at = Some(std::time::Instant::now());
    }
}

fn drain_ring(r: &mut Reader, buf: &mut [u8], hub: &Hub, laps: &mut Laps) -> usize {
    let mut n = 0;
    // A record costs a dispatch to every client: stop when the streams queue's slice is
    // up, so requests waiting on the thread get their turn.
    while n < POLL_BATCH && !(n > 0 && glommio::executor().need_preempt()) {
        match r.read(buf) {
            Ok(Some(len)) => {
                n += 1;
                hub.dispatch(&buf[..len]);
            }
            Ok(None) => break,
            Err(ReadError::Lapped { missed }) => {
                laps.missed += missed;
                hub.lapped(missed);
            }
            Err(e) => {
                warn!(error = %e, "decision ring read failed");
                break;
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------------
// The handshake

fn header_has_token(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn filter_of(q: &Query<'_>) -> Result<Filter, Problem> {
    let node = match q.get("node") {
        None | Some("") => None,
        // The rule language's matcher and its checks (`rim_rules::Glob`).
        Some(g) => Some(rim_rules::Glob::compile(g).map_err(|e| Problem::invalid("node", e))?),
    };
    let severity_min = match q.get("severity") {
        None => 0,
        Some(s) => {
            severity_code(s).ok_or_else(|| Problem::invalid("severity", "one of info, low, medium, high, critical"))?
        }
    };
    Ok(Filter { node, severity_min })
}

/// Answers the upgrade request (101) and starts the client's task.
pub fn upgrade(app: &App, req: &mut Request<Incoming>, _meta: &Meta) -> Result<Response<Body>, Problem> {
    let q = Query::parse(req.uri().query())?;
    let filter = filter_of(&q)?;
    if !header_has_token(req, UPGRADE, "websocket") || !header_has_token(req, CONNECTION, "upgrade") {
        return Err(Problem::new(
            Code::Validation,
            "this route speaks WebSocket only (Upgrade: websocket, Connection: Upgrade)",
        ));
    }
    if req.headers().get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(Problem::invalid("Sec-WebSocket-Version", "must be 13"));
    }
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|k| k.len() == 24)
        .ok_or_else(|| Problem::invalid("Sec-WebSocket-Key", "must be 16 bytes in base64"))?;
    let accept = accept_key(key);
    let client = app
        .hub
        .join(filter)
        .ok_or_else(|| Problem::new(Code::Unavailable, "too many WebSocket clients"))?;
    let on_upgrade = hyper::upgrade::on(req);
    let liveness = Liveness {
        ping_after: Duration::from_millis(app.cfg.ws_ping_interval_ms),
        pong_within: Duration::from_millis(app.cfg.ws_pong_timeout_ms),
    };
    let dropped = app.hub.dropped_silent.clone();
    // The task owns the client: when it ends, the hub forgets the client.
    super::server::spawn_stream(app, async move {
        match on_upgrade.await {
            Ok(up) => match up.downcast::<Io>() {
                Ok(parts) => run_client(parts.io, parts.read_buf, &client, liveness, &dropped).await,
                Err(_) => warn!("upgraded connection is not a glommio stream"),
            },
            Err(e) => debug!(error = %e, "WebSocket upgrade did not complete"),
        }
    });
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(resp)
}

/// `Sec-WebSocket-Accept` for `key`.
fn accept_key(key: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key);
    h.update(GUID.as_bytes());
    base64(&h.digest().bytes())
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Framing (tungstenite)

/// The bytes between the socket and tungstenite: what came in and is not yet parsed, and
/// what tungstenite wrote and the socket has not yet taken. tungstenite's protocol state
/// ([`WebSocketContext`]) reads and writes through this, never the socket, so the socket
/// stays glommio's and every wait stays asynchronous: reading an empty input is
/// `WouldBlock`, which tungstenite treats as "come back later" without losing state.
#[derive(Default)]
struct Buffers {
    input: Vec<u8>,
    read_at: usize,
    output: Vec<u8>,
    written: usize,
}

impl std::io::Read for Buffers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pending = &self.input[self.read_at..];
        if pending.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        self.read_at += n;
        if self.read_at == self.input.len() {
            self.input.clear();
            self.read_at = 0;
        }
        Ok(n)
    }
}

impl std::io::Write for Buffers {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffers {
    fn unsent(&self) -> usize {
        self.output.len() - self.written
    }
}

/// Entry point of the fuzz target `ws_frames` (`fuzz/daemon`, feature `fuzzing` only): `b`
/// as the bytes a client sent after the handshake, fed through the session in two pieces
/// (so a frame split across reads is covered), then `b` as a subscription query whose
/// filter is matched against a node id.
#[cfg(feature = "fuzzing")]
pub fn fuzz_input(b: &[u8]) {
    let mut session = Session::new(&[]);
    let half = b.len() / 2;
    for piece in [&b[..half], &b[half..]] {
        session.io.input.extend_from_slice(piece);
        let _ = session.on_input();
    }
    let query = std::str::from_utf8(b)
        .ok()
        .map(|s| Query::parse(Some(s)).and_then(|q| filter_of(&q)));
    if let Some(Ok(f)) = query {
        let _ = f.matches("rim:sensor:plant-7:n1.a", 3);
    }
}

/// One client's protocol state: tungstenite's context, its buffers, and whether a close
/// was sent (the task ends once it is written).
struct Session {
    ws: WebSocketContext,
    io: Buffers,
    closing: bool,
}

/// What the input held besides frames tungstenite answers itself (pings, closes).
#[derive(Debug, Default, PartialEq, Eq)]
struct Heard {
    /// Any frame at all (the peer is alive).
    anything: bool,
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MESSAGE_BYTES_MAX))
        .max_frame_size(Some(CLIENT_MESSAGE_BYTES_MAX))
}

impl Session {
    fn new(leftover: &[u8]) -> Self {
        Self {
            ws: WebSocketContext::from_partially_read(leftover.to_vec(), Role::Server, Some(ws_config())),
            io: Buffers::default(),
            closing: false,
        }
    }

    /// Handles every whole message in the input: text `PING` is answered `PONG`; a ping
    /// frame is answered by tungstenite; a text frame that is not UTF-8 closes with 1007,
    /// an oversized message with 1009, a protocol error with 1002; the peer's close is
    /// echoed.
    fn on_input(&mut self) -> Heard {
        let mut heard = Heard::default();
        while !self.closing {
            match self.ws.read(&mut self.io) {
                Ok(msg) => {
                    heard.anything = true;
                    if let Message::Text(t) = &msg {
                        if t.as_str().trim().eq_ignore_ascii_case("PING") {
                            let _ = self.ws.write(&mut self.io, Message::text("PONG"));
                        }
                    }
                    if let Message::Close(_) = msg {
                        // tungstenite queued the echo; end once it is written.
                        self.closing = true;
                    }
                }
                Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(WsError::Utf8(_)) => self.close(CloseCode::Invalid, "text frame is not valid UTF-8"),
                Err(WsError::Capacity(_)) => self.close(CloseCode::Size, "message too large"),
                Err(WsError::Protocol(_)) => self.close(CloseCode::Protocol, "protocol error"),
                Err(_) => self.closing = true,
            }
        }
        let _ = self.ws.flush(&mut self.io);
        heard
    }

    /// Sends a close frame with `code` (once) and stops reading.
    fn close(&mut self, code: CloseCode, reason: &'static str) {
        if !self.closing {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = self.ws.close(&mut self.io, Some(frame));
            let _ = self.ws.flush(&mut self.io);
            self.closing = true;
        }
    }

    /// Queues a text message (already valid UTF-8: rendered by us).
    fn send_text(&mut self, bytes: Bytes) {
        match tungstenite::Utf8Bytes::try_from(bytes) {
            Ok(text) => {
                let _ = self.ws.write(&mut self.io, Message::Text(text));
            }
            Err(e) => warn!(error = %e, "a decision rendered to invalid UTF-8 was not sent"),
        }
    }

    fn ping(&mut self) {
        let _ = self.ws.write(&mut self.io, Message::Ping(Bytes::new()));
        let _ = self.ws.flush(&mut self.io);
    }
}

/// When the server pings a quiet client, and when it gives up on it.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    /// `api.ws_ping_interval_ms`: silence after which the server pings.
    ping_after: Duration,
    /// `api.ws_pong_timeout_ms`: how long a ping may go unanswered.
    pong_within: Duration,
}

/// The client's liveness clock: last heard from, and the ping in flight.
struct Alive {
    heard: Instant,
    ping_sent: Option<Instant>,
}

enum Verdict {
    /// Nothing to do until the instant.
    Wait(Instant),
    /// Ping now.
    Ping,
    /// Silent past the pong timeout: drop.
    Drop,
}

impl Alive {
    fn heard(&mut self, now: Instant) {
        self.heard = now;
        self.ping_sent = None;
    }

    fn verdict(&self, l: Liveness, now: Instant) -> Verdict {
        match self.ping_sent {
            Some(sent) if now >= sent + l.pong_within => Verdict::Drop,
            Some(sent) => Verdict::Wait(sent + l.pong_within),
            None if now >= self.heard + l.ping_after => Verdict::Ping,
            None => Verdict::Wait(self.heard + l.ping_after),
        }
    }
}

/// Serves one client until it closes, fails, stops answering pings, or the daemon stops.
async fn run_client(mut io: Io, leftover: Bytes, client: &Client, liveness: Liveness, dropped: &Cell<u64>) {
    let mut s = Session::new(&leftover);
    let mut alive = Alive {
        heard: Instant::now(),
        ping_sent: None,
    };
    let mut timer: Option<Pin<Box<glommio::timer::Timer>>> = None;
    poll_fn(|cx| {
        let Ok((stream, _)) = io.get() else {
            return Poll::Ready(());
        };
        // Input: read what is there, handle whole messages; bounded per turn (a client
        // cannot keep the thread), and paused while unsent answers pile up (a client that
        // pings without reading cannot grow our memory).
        let mut reads = 0;
        while !s.closing && reads < READS_PER_TURN && s.io.unsent() < OUT_BYTES_MAX {
            reads += 1;
            match Pin::new(&mut *stream).poll_fill_buf(cx) {
                Poll::Ready(Ok([])) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(b)) => {
                    let n = b.len();
                    s.io.input.extend_from_slice(b);
                    Pin::new(&mut *stream).consume(n);
                    if s.on_input().anything {
                        alive.heard(Instant::now());
                    }
                }
                Poll::Pending => break,
            }
        }
        // Liveness: ping a quiet client, drop one that does not answer.
        let now = Instant::now();
        match alive.verdict(liveness, now) {
            Verdict::Drop => {
                dropped.set(dropped.get() + 1);
                return Poll::Ready(());
            }
            Verdict::Ping if !s.closing => {
                s.ping();
                alive.ping_sent = Some(now);
                timer = None;
            }
            _ => {}
        }
        // Output: decisions from the queue once what was queued before is written.
        if s.io.unsent() == 0 {
            s.io.output.clear();
            s.io.written = 0;
            if !s.closing {
                fill_from_queue(&mut s, client);
            }
        }
        while s.io.unsent() > 0 {
            match Pin::new(&mut *stream).poll_write(cx, &s.io.output[s.io.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => s.io.written += n,
                Poll::Pending => break,
            }
        }
        if s.closing && s.io.unsent() == 0 {
            return Poll::Ready(());
        }
        if reads == READS_PER_TURN || (s.io.unsent() == 0 && !client.queue.borrow().is_empty()) {
            // Input left unread or more decisions queued: go round again soon.
            cx.waker().wake_by_ref();
        }
        // Wake at the next liveness deadline.
        if let Verdict::Wait(at) = alive.verdict(liveness, now) {
            let t =
                timer.get_or_insert_with(|| Box::pin(glommio::timer::Timer::new(at.saturating_duration_since(now))));
            if std::future::Future::poll(t.as_mut(), cx).is_ready() {
                timer = None;
                cx.waker().wake_by_ref();
            }
        }
        *client.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
}

/// Sends queued decisions (up to 64 KiB per write), and a miss notice when the queue ran
/// dry with misses pending.
fn fill_from_queue(s: &mut Session, client: &Client) {
    let mut q = client.queue.borrow_mut();
    while s.io.output.len() < 64 * 1024 {
        match q.pop_front() {
            Some(msg) => s.send_text(msg),
            None => break,
        }
    }
    let missed = client.missed.get();
    if q.is_empty() && missed > 0 {
        s.send_text(missed_notice(missed));
        client.missed.set(0);
    }
    let _ = s.ws.flush(&mut s.io);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![if fin { 0x80 } else { 0 } | op, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn the_filter_uses_the_rule_languages_glob() {
        let q = Query::parse(Some("node=rim:*:plant:n%3F&severity=high")).expect("query");
        let f = filter_of(&q).expect("filter");
        assert!(f.matches("rim:sensor:plant:n1", 3));
        assert!(!f.matches("rim:sensor:plant:n12", 3));
        assert!(!f.matches("rim:sensor:plant:n1", 0));
        let empty = Query::parse(Some("node=")).expect("query");
        assert!(filter_of(&empty).is_ok_and(|f| f.node.is_none()));
        for bad in ["node=a%20b", "node=a%7Bb", "severity=loud"] {
            let q = Query::parse(Some(bad)).expect("query");
            assert!(filter_of(&q).is_err(), "{bad}");
        }
    }

    /// What a session answers to `input`: its output bytes, and whether it closed.
    fn answer(input: &[u8]) -> (Vec<u8>, bool) {
        let mut s = Session::new(&[]);
        s.io.input.extend_from_slice(input);
        s.on_input();
        (s.io.output, s.closing)
    }

    fn close_code(out: &[u8]) -> Option<u16> {
        (out.first() == Some(&0x88) && out.len() >= 4).then(|| u16::from_be_bytes([out[2], out[3]]))
    }

    #[test]
    fn text_ping_gets_pong_and_ping_frames_get_pong_frames() {
        let (out, closing) = answer(&[masked(OP_TEXT, true, b"PING"), masked(OP_PING, true, b"hi")].concat());
        assert!(!closing);
        assert_eq!(
            out,
            [vec![0x81, 4], b"PONG".to_vec(), vec![0x8A, 2], b"hi".to_vec()].concat()
        );
    }

    #[test]
    fn fragments_are_joined_and_split_input_waits_for_the_rest() {
        let whole = [masked(OP_TEXT, false, b"PI"), masked(OP_CONT, true, b"NG")].concat();
        let mut s = Session::new(&whole[..3]);
        s.on_input();
        assert!(s.io.output.is_empty());
        s.io.input.extend_from_slice(&whole[3..]);
        s.on_input();
        assert_eq!(s.io.output, [vec![0x81, 4], b"PONG".to_vec()].concat());
    }

    #[test]
    fn bad_frames_close_with_the_right_code() {
        // Invalid UTF-8 in a text frame: 1007.
        let (out, closing) = answer(&masked(OP_TEXT, true, &[0x50, 0xff, 0xfe]));
        assert!(closing);
        assert_eq!(close_code(&out), Some(1007), "{out:?}");
        // Unmasked (clients must mask): 1002.
        let (out, _) = answer(&[0x81, 0x01, b'x']);
        assert_eq!(close_code(&out), Some(1002), "{out:?}");
        // Larger than a client may send: 1009.
        let mut big = vec![0x82, 0xFF];
        big.extend_from_slice(&(1u64 << 40).to_be_bytes());
        big.extend_from_slice(&[1, 2, 3, 4]);
        let (out, _) = answer(&big);
        assert_eq!(close_code(&out), Some(1009), "{out:?}");
        // A close is echoed with its code.
        let (out, closing) = answer(&masked(OP_CLOSE, true, &1001u16.to_be_bytes()));
        assert!(closing);
        assert_eq!(close_code(&out), Some(1001), "{out:?}");
        // Garbage of every length never panics.
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = answer(&junk);
        }
    }

    const OP_CONT: u8 = 0x0;
    const OP_TEXT: u8 = 0x1;
    const OP_CLOSE: u8 = 0x8;
    const OP_PING: u8 = 0x9;

    #[test]
    fn a_quiet_client_is_pinged_and_dropped_when_it_does_not_answer() {
        let l = Liveness {
            ping_after: Duration::from_millis(100),
            pong_within: Duration::from_millis(50),
        };
        let t0 = Instant::now();
        let mut a = Alive {
            heard: t0,
            ping_sent: None,
        };
        assert!(matches!(a.verdict(l, t0), Verdict::Wait(at) if at == t0 + l.ping_after));
        assert!(matches!(a.verdict(l, t0 + l.ping_after), Verdict::Ping));
        a.ping_sent = Some(t0 + l.ping_after);
        assert!(matches!(
            a.verdict(l, t0 + Duration::from_millis(120)),
            Verdict::Wait(_)
        ));
        assert!(matches!(a.verdict(l, t0 + Duration::from_millis(150)), Verdict::Drop));
        a.heard(t0 + Duration::from_millis(140));
        assert!(matches!(
            a.verdict(l, t0 + Duration::from_millis(150)),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn a_full_queue_counts_misses_and_announces_them_in_order() {
        let hub = Hub::new(Vec::new(), 2, 4, Default::default());
        let c = hub
            .join(Filter {
                node: None,
                severity_min: 0,
            })
            .expect("join");
        for i in 0..5u8 {
            hub.offer(&c, Bytes::from(vec![b'0' + i]));
        }
        assert_eq!(c.queue.borrow().len(), 2);
        assert_eq!(c.missed.get(), 3);
        c.queue.borrow_mut().clear();
        hub.offer(&c, Bytes::from_static(b"5"));
        let q: Vec<Bytes> = c.queue.borrow().iter().cloned().collect();
        assert_eq!(q, vec![missed_notice(3), Bytes::from_static(b"5")]);
        drop(c);
        assert!(hub.is_empty());
    }
}
