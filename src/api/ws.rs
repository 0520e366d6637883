//! `GET /ws/decisions`: a WebSocket stream of decisions.
//!
//! RFC 6455 is implemented here rather than with a crate: the server needs only the
//! handshake, unfragmented text frames out, and ping/pong/close/text in, about 200 lines;
//! the WebSocket crates either bring tokio (tokio-tungstenite) or want their own IO
//! traits, while this runs on hyper's upgrade over glommio's stream.
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
//! frame → a pong frame; close → close. Out: `{"type":"decision","data":{…}}`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{AsyncBufRead, AsyncWrite};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use rim_ring::broadcast::{ReadError, Reader};
use tracing::{debug, warn};

use super::envelope::{Body, Code, Meta, Problem};
use super::io::Io;
use super::query::Query;
use super::routes::DecisionView;
use super::server::App;
use crate::reflex::decision;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame (or fragmented message) a client may send, bytes.
const CLIENT_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Decisions read from one ring per poller turn before yielding.
const POLL_BATCH: usize = 1_024;
/// How long the poller sleeps while no client is connected.
const IDLE_SLEEP: Duration = Duration::from_millis(50);
/// Socket reads per turn of a WebSocket task before it lets others run.
const READS_PER_TURN: usize = 16;
/// Unsent bytes (pongs, decisions) at which a client's input is no longer read.
const OUT_BYTES_MAX: usize = 256 * 1024;
/// Longest node glob.
const GLOB_BYTES_MAX: usize = 300;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BIN: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

// ---------------------------------------------------------------------------------------
// Clients and the hub

/// What a client asked to see.
#[derive(Debug, Clone)]
pub struct Filter {
    node: Option<String>,
    severity_min: u8,
}

impl Filter {
    fn matches(&self, node: &str, severity: u8) -> bool {
        severity >= self.severity_min && self.node.as_deref().is_none_or(|g| glob(g.as_bytes(), node.as_bytes()))
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
}

impl Hub {
    /// A hub over the decision rings `segments` with per-client queues of `queue_len`.
    pub fn new(segments: Vec<std::sync::Arc<rim_ring::Segment>>, queue_len: usize, clients_max: usize) -> Self {
        Self {
            clients: RefCell::new(Vec::new()),
            segments,
            readers: RefCell::new(None),
            queue_len: queue_len.max(1),
            clients_max,
            delivered: Cell::new(0),
            client_missed: Cell::new(0),
            ring_missed: Cell::new(0),
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
        Some(c)
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

    /// The poller was lapped: every client missed these.
    fn lapped(&self, missed: u64) {
        self.ring_missed.set(self.ring_missed.get() + missed);
        for c in self.clients.borrow().iter().filter_map(Weak::upgrade) {
            c.missed.set(c.missed.get() + missed);
            c.wake();
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

/// `*` matches any run (also empty), `?` one byte; everything else itself.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
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
            // from its handshake on, not a backlog.
            hub.readers.borrow_mut().take();
            glommio::timer::sleep(IDLE_SLEEP).await;
            continue;
        }
        // The readers leave the hub while they are read, so that dispatching (which
        // borrows the clients) never overlaps a borrow of the readers.
        let Some(mut readers) = hub.readers.borrow_mut().take() else {
            glommio::timer::sleep(IDLE_SLEEP).await;
            continue;
        };
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
            glommio::timer::sleep(poll_every).await;
        } else {
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
    while n < POLL_BATCH {
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
        Some(g) => {
            let ok = g.len() <= GLOB_BYTES_MAX
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'*' | b'?'));
            if !ok {
                return Err(Problem::invalid(
                    "node",
                    "a glob of [A-Za-z0-9_.:-] with * and ?, at most 300 bytes",
                ));
            }
            Some(g.to_owned())
        }
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
    // The task owns the client: when it ends, the hub forgets the client.
    glommio::spawn_local(async move {
        match on_upgrade.await {
            Ok(up) => match up.downcast::<Io>() {
                Ok(parts) => run_client(parts.io, parts.read_buf, &client).await,
                Err(_) => warn!("upgraded connection is not a glommio stream"),
            },
            Err(e) => debug!(error = %e, "WebSocket upgrade did not complete"),
        }
    })
    .detach();
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
// Framing

/// A parsed client frame.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A whole frame: FIN, opcode, unmasked payload, bytes consumed.
    Frame(bool, u8, Vec<u8>, usize),
    /// More bytes needed.
    Incomplete,
    /// A protocol error: the close code to send.
    Error(u16),
}

/// Parses one client frame from the front of `b` (clients must mask, RFC 6455 §5.1).
fn parse_frame(b: &[u8]) -> Parsed {
    if b.len() < 2 {
        return Parsed::Incomplete;
    }
    let fin = b[0] & 0x80 != 0;
    if b[0] & 0x70 != 0 {
        return Parsed::Error(1002);
    }
    let op = b[0] & 0x0F;
    if b[1] & 0x80 == 0 {
        return Parsed::Error(1002);
    }
    let (len, mut at) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(w), 10)
        }
        126 | 127 => return Parsed::Incomplete,
        n => (u64::from(n), 2),
    };
    if op >= 0x8 && (len > 125 || !fin) {
        return Parsed::Error(1002);
    }
    if len > CLIENT_MESSAGE_BYTES_MAX as u64 {
        return Parsed::Error(1009);
    }
    let len = len as usize;
    if b.len() < at + 4 + len {
        return Parsed::Incomplete;
    }
    let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    at += 4;
    let payload: Vec<u8> = b[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, x)| x ^ mask[i % 4])
        .collect();
    Parsed::Frame(fin, op, payload, at + len)
}

/// Entry point of the fuzz target `ws_frames` (`fuzz/`, feature `fuzzing` only): the
/// client frames at the front of `b`, then `b` as a subscription query whose filter is
/// matched against a node id.
#[cfg(feature = "fuzzing")]
pub fn fuzz_input(b: &[u8]) {
    let mut rest = b;
    while let Parsed::Frame(_, _, _, used) = parse_frame(rest) {
        rest = &rest[used..];
    }
    let query = std::str::from_utf8(b)
        .ok()
        .map(|s| Query::parse(Some(s)).and_then(|q| filter_of(&q)));
    if let Some(Ok(f)) = query {
        let _ = f.matches("rim:sensor:plant-7:n1.a", 3);
    }
}

/// Appends one unmasked server frame.
fn write_frame(out: &mut Vec<u8>, op: u8, payload: &[u8]) {
    out.push(0x80 | op);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A connection's protocol state.
struct Conn {
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    /// Opcode and data of a fragmented message in progress.
    partial: Option<(u8, Vec<u8>)>,
    /// A close was sent: end once `out` is written.
    closing: bool,
}

impl Conn {
    /// Handles every whole frame in `inbuf`.
    fn on_input(&mut self) {
        loop {
            match parse_frame(&self.inbuf) {
                Parsed::Incomplete => return,
                Parsed::Error(code) => {
                    self.close(code);
                    return;
                }
                Parsed::Frame(fin, op, payload, used) => {
                    self.inbuf.drain(..used);
                    self.on_frame(fin, op, payload);
                    if self.closing {
                        return;
                    }
                }
            }
        }
    }

    fn on_frame(&mut self, fin: bool, op: u8, payload: Vec<u8>) {
        match op {
            OP_PING => write_frame(&mut self.out, OP_PONG, &payload),
            OP_PONG => {}
            OP_CLOSE => {
                let code = payload.get(..2).map_or(1000, |c| u16::from_be_bytes([c[0], c[1]]));
                // Echo the client's code unless it is one that must not be sent (RFC 6455 §7.4).
                let sendable = (1000..=4999).contains(&code) && !matches!(code, 1004..=1006 | 1015);
                self.close(if sendable { code } else { 1000 });
            }
            OP_TEXT | OP_BIN if fin => self.on_message(op, &payload),
            OP_TEXT | OP_BIN if self.partial.is_none() => self.partial = Some((op, payload)),
            OP_CONT => match self.partial.take() {
                Some((first, mut data)) => {
                    data.extend_from_slice(&payload);
                    if data.len() > CLIENT_MESSAGE_BYTES_MAX {
                        self.close(1009);
                    } else if fin {
                        self.on_message(first, &data);
                    } else {
                        self.partial = Some((first, data));
                    }
                }
                None => self.close(1002),
            },
            _ => self.close(1002),
        }
    }

    fn on_message(&mut self, op: u8, data: &[u8]) {
        if op == OP_TEXT && data.trim_ascii().eq_ignore_ascii_case(b"PING") {
            write_frame(&mut self.out, OP_TEXT, b"PONG");
        }
    }

    fn close(&mut self, code: u16) {
        if !self.closing {
            write_frame(&mut self.out, OP_CLOSE, &code.to_be_bytes());
            self.closing = true;
        }
    }
}

/// Serves one client until it closes, fails, or the daemon stops.
async fn run_client(mut io: Io, leftover: Bytes, client: &Client) {
    let mut conn = Conn {
        inbuf: leftover.to_vec(),
        out: Vec::with_capacity(4096),
        out_at: 0,
        partial: None,
        closing: false,
    };
    conn.on_input();
    poll_fn(|cx| {
        let Ok(stream) = io.get() else {
            return Poll::Ready(());
        };
        // Input: read what is there, handle whole frames; bounded per turn (a client
        // cannot keep the thread), and paused while unsent answers pile up (a client that
        // pings without reading cannot grow our memory).
        let mut reads = 0;
        while !conn.closing && reads < READS_PER_TURN && conn.out.len() - conn.out_at < OUT_BYTES_MAX {
            reads += 1;
            match Pin::new(&mut *stream).poll_fill_buf(cx) {
                Poll::Ready(Ok([])) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(b)) => {
                    let n = b.len();
                    conn.inbuf.extend_from_slice(b);
                    Pin::new(&mut *stream).consume(n);
                    conn.on_input();
                }
                Poll::Pending => break,
            }
        }
        // Output: decisions from the queue once what was queued before is written.
        if conn.out_at == conn.out.len() {
            conn.out.clear();
            conn.out_at = 0;
            if !conn.closing {
                fill_from_queue(&mut conn.out, client);
            }
        }
        while conn.out_at < conn.out.len() {
            match Pin::new(&mut *stream).poll_write(cx, &conn.out[conn.out_at..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => conn.out_at += n,
                Poll::Pending => break,
            }
        }
        if conn.closing && conn.out_at == conn.out.len() {
            return Poll::Ready(());
        }
        if reads == READS_PER_TURN || (conn.out_at == conn.out.len() && !client.queue.borrow().is_empty()) {
            // Input left unread or more decisions queued: go round again soon.
            cx.waker().wake_by_ref();
        }
        *client.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
}

/// Frames queued decisions (up to 64 KiB per write), and a miss notice when the queue
/// ran dry with misses pending.
fn fill_from_queue(out: &mut Vec<u8>, client: &Client) {
    let mut q = client.queue.borrow_mut();
    while out.len() < 64 * 1024 {
        match q.pop_front() {
            Some(msg) => write_frame(out, OP_TEXT, &msg),
            None => break,
        }
    }
    let missed = client.missed.get();
    if q.is_empty() && missed > 0 {
        write_frame(out, OP_TEXT, &missed_notice(missed));
        client.missed.set(0);
    }
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
    fn globs_match_like_the_rule_language() {
        assert!(glob(b"rim:sensor:*", b"rim:sensor:plant:n1"));
        assert!(glob(b"rim:*:plant:n?", b"rim:sensor:plant:n1"));
        assert!(!glob(b"rim:sensor:*", b"rim:market:x:y"));
        assert!(glob(b"*", b""));
    }

    #[test]
    fn text_ping_gets_pong_and_ping_frames_get_pong_frames() {
        let mut c = Conn {
            inbuf: [masked(OP_TEXT, true, b"PING"), masked(OP_PING, true, b"hi")].concat(),
            out: Vec::new(),
            out_at: 0,
            partial: None,
            closing: false,
        };
        c.on_input();
        assert_eq!(
            c.out,
            [vec![0x81, 4], b"PONG".to_vec(), vec![0x8A, 2], b"hi".to_vec()].concat()
        );
        assert!(c.inbuf.is_empty());
    }

    #[test]
    fn unmasked_or_oversized_frames_close_the_connection() {
        assert_eq!(parse_frame(&[0x81, 0x01, b'x']), Parsed::Error(1002));
        let mut big = vec![0x81, 0xFF];
        big.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(parse_frame(&big), Parsed::Error(1009));
        assert_eq!(parse_frame(&[0x81]), Parsed::Incomplete);
    }

    #[test]
    fn a_full_queue_counts_misses_and_announces_them_in_order() {
        let hub = Hub::new(Vec::new(), 2, 4);
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
