//! The HTTP thread and the request pipeline.
//!
//! [`spawn`] starts `rimd-http` (pinned when asked), builds the glommio executor, binds
//! the listener and writes the bound address to `{run_dir}/http.addr`, then returns: a
//! bind error surfaces at start, not at join. The accept loop serves each connection as a
//! local task (`http1` with upgrades, for the WebSocket). When `stop` turns true the
//! listener closes, in-flight requests get `api.drain_ms` to finish, and the thread ends.
//! At most `api.connections_max` connections are served at once (the rest are closed at
//! accept), and each is watched for slow headers, slow bodies and idleness
//! ([`super::conn`]).
//!
//! Every request goes through [`App::handle`]: request id (taken from `X-Request-ID` when
//! it is sane, else generated), a tracing span carrying it with `X-Correlation-ID` and
//! `traceparent`, route lookup (404/405), bearer token (401/403), rate limit (429 with
//! `X-RateLimit-*`), content type (415), body limit (413), then the handler. Whatever
//! the outcome, the response carries `X-Request-ID` (and `X-Correlation-ID` if given).

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::TcpListener;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use tracing::{debug, info, warn, Instrument};

use super::auth::{Denied, Scope, Tokens};
use super::config::ApiConfig;
use super::conn::{self, ConnCounters, ConnWatch, Limits};
use super::context::{Context, ContextParts};
use super::envelope::{self, Body, Code, Meta, Problem};
use super::ratelimit::{Class, ClientKey, RateLimiter, Verdict};
use super::routes::{self, Route};
use super::ws::Hub;
use super::ApiError;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// Longest request id taken from a client.
const REQUEST_ID_BYTES_MAX: usize = 128;
/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Starts the HTTP thread: returns once the listener is bound (or with why it is not),
/// with the bound address. `core` pins the thread (the cold core by default); the thread
/// ends soon after `stop`.
pub fn spawn(
    parts: ContextParts,
    stop: Arc<AtomicBool>,
    core: Option<usize>,
) -> Result<(std::thread::JoinHandle<()>, SocketAddr), ApiError> {
    let cfg = parts.config.api.clone();
    cfg.validate().map_err(ApiError::Config)?;
    let tokens = match cfg.tokens_file.as_str() {
        "" => None,
        path => Some(Tokens::load(std::path::Path::new(path))?),
    };
    let addr_file = parts.config.daemon.run_dir.join("http.addr");
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<SocketAddr, ApiError>>(1);
    let handle = std::thread::Builder::new()
        .name("rimd-http".into())
        .spawn(move || run_thread(parts, tokens, stop, core, addr_file, tx))
        .map_err(|e| ApiError::Thread(e.to_string()))?;
    match rx.recv() {
        Ok(Ok(addr)) => {
            info!(%addr, "HTTP API listening");
            Ok((handle, addr))
        }
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(ApiError::Thread("the HTTP thread ended before binding".into()))
        }
    }
}

type Started = std::sync::mpsc::SyncSender<Result<SocketAddr, ApiError>>;

fn run_thread(
    parts: ContextParts,
    tokens: Option<Tokens>,
    stop: Arc<AtomicBool>,
    core: Option<usize>,
    addr_file: PathBuf,
    started: Started,
) {
    if let Some(c) = core {
        let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: c });
        debug!(core = c, pinned, "HTTP thread pinned");
    }
    let ex = match LocalExecutorBuilder::new(Placement::Unbound).name("rimd-http").make() {
        Ok(ex) => ex,
        Err(e) => {
            let _ = started.send(Err(ApiError::Thread(format!(
                "glommio executor: {e} (glommio needs RLIMIT_MEMLOCK of at least 512 KiB)"
            ))));
            return;
        }
    };
    ex.run(async move {
        let listen = parts.config.api.listen.clone();
        let listener = match bind(&listen, &addr_file) {
            Ok(l) => l,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let queues = Queues::create();
        let app = Rc::new(App::new(Context::new(parts), tokens, stop.clone(), queues));
        if let Ok(addr) = listener.local_addr() {
            let _ = started.send(Ok(addr));
        }
        let served = app.clone();
        let serving = glommio::spawn_local_into(
            async move {
                spawn_stream(&served, super::ws::poll_decisions(served.clone()));
                spawn_stream(&served, super::slice::follow_store(served.clone()));
                accept_loop(&listener, &served, &stop).await;
                served.hub.stopping();
                served.resident_behind.notify();
                drop(listener);
                drain(&served).await;
            },
            queues.requests,
        );
        match serving {
            Ok(task) => task.await,
            Err(e) => warn!(error = %e, "cannot start the HTTP API's task queue"),
        }
        info!("HTTP API stopped");
    });
}

/// The thread's two task queues. Requests (accepting, every connection, every answer)
/// are latency-sensitive: when one is ready the executor preempts the streams queue
/// within [`REQUEST_LATENCY`]. Streams (the WebSocket poller and every subscriber's task)
/// have a tenth of the shares: 10,000 subscribers that never read keep the streams
/// busy, yet a health check or a query still gets its turn at once instead of queueing
/// behind 10,000 tasks at every step of its request.
#[derive(Clone, Copy)]
pub struct Queues {
    /// Accepting, connections, answers.
    pub requests: TaskQueueHandle,
    /// The WebSocket poller and subscribers.
    pub streams: TaskQueueHandle,
}

/// How soon a ready request preempts the streams queue.
const REQUEST_LATENCY: Duration = Duration::from_millis(2);

impl Queues {
    fn create() -> Self {
        let ex = glommio::executor();
        Self {
            requests: ex.create_task_queue(Shares::Static(1000), Latency::Matters(REQUEST_LATENCY), "requests"),
            streams: ex.create_task_queue(Shares::Static(100), Latency::NotImportant, "streams"),
        }
    }
}

/// Runs `f` on the streams queue (detached).
pub fn spawn_stream(app: &App, f: impl std::future::Future<Output = ()> + 'static) {
    match glommio::spawn_local_into(f, app.queues.streams) {
        Ok(task) => drop(task.detach()),
        Err(e) => warn!(error = %e, "cannot spawn on the streams queue"),
    };
}

/// Binds `listen` and records the bound address (port 0 picks one) in `addr_file`.
fn bind(listen: &str, addr_file: &std::path::Path) -> Result<TcpListener, ApiError> {
    let bind_err = |reason: String| ApiError::Bind {
        addr: listen.to_owned(),
        reason,
    };
    let addr: SocketAddr = listen.parse().map_err(|e| bind_err(format!("{e}")))?;
    let listener = TcpListener::bind(addr).map_err(|e| bind_err(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| bind_err(e.to_string()))?;
    write_addr_file(addr_file, bound)?;
    Ok(listener)
}

/// Writes atomically (temp file, rename): a reader sees no file or the whole address.
fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> Result<(), ApiError> {
    let err = |source| ApiError::AddrFile {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n")).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Accepts until `stop`. One accept stays in flight across the stop checks: dropping an
/// io_uring accept that the kernel has already completed would lose that connection (its
/// client would wait forever), so the pending accept is kept and polled again, and only
/// replaced once it has yielded its connection.
async fn accept_loop(listener: &TcpListener, app: &Rc<App>, stop: &AtomicBool) {
    let mut pending = Box::pin(listener.accept());
    loop {
        let accepted = futures_lite::future::or(async { Some(pending.as_mut().await) }, async {
            glommio::timer::sleep(STOP_POLL).await;
            None
        })
        .await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(result) = accepted else { continue };
        pending.set(listener.accept());
        match result {
            Ok(stream) if app.conns.open.get() >= app.cfg.connections_max as u64 => {
                // Closed unread (dropping it closes the socket): the clients already
                // connected keep their answers, this one learns at once.
                app.conns.refused();
                drop(stream);
            }
            Ok(stream) => {
                let peer = stream
                    .peer_addr()
                    .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
                let _ = stream.set_nodelay(true);
                match glommio::spawn_local_into(serve_connection(app.clone(), stream, peer), app.queues.requests) {
                    Ok(task) => drop(task.detach()),
                    Err(e) => warn!(error = %e, "cannot spawn a connection task"),
                };
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(app: Rc<App>, stream: glommio::net::TcpStream, peer: IpAddr) {
    let _open = app.conns.open();
    let watch = Rc::new(ConnWatch::new());
    let io = super::io::Io::new(stream, watch.clone());
    let svc_app = app.clone();
    let svc_watch = watch.clone();
    let svc = hyper::service::service_fn(move |req| {
        let app = svc_app.clone();
        let watch = svc_watch.clone();
        async move { Ok::<_, Infallible>(app.handle(req, peer, watch).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .with_upgrades();
    match conn::guarded(conn, &watch, Limits::of(&app.cfg)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, %peer, "connection ended with an error"),
        Err(cut) => {
            app.conns.cut(cut);
            debug!(?cut, %peer, "connection cut");
        }
    }
}

/// Waits (bounded) for in-flight requests after the listener closed.
async fn drain(app: &App) {
    let deadline = Instant::now() + Duration::from_millis(app.cfg.drain_ms);
    while app.inflight.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if app.inflight.get() > 0 {
        warn!(
            inflight = app.inflight.get(),
            "HTTP drain deadline passed with requests in flight"
        );
    }
}

/// Generates request ids: a per-process prefix and a counter, `req-<16 hex>`.
struct RequestIds {
    prefix: u32,
    next: Cell<u32>,
}

impl RequestIds {
    /// Ids whose prefix mixes the pid with `clock`'s sub-second reading (so that two
    /// runs of one pid differ).
    fn new(clock: &crate::clock::Clock) -> Self {
        let nanos = (clock.unix_ns() % 1_000_000_000) as u32;
        Self {
            prefix: nanos ^ std::process::id().rotate_left(16),
            next: Cell::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        format!("req-{:08x}{n:08x}", self.prefix)
    }
}

/// The server's state, shared by every connection task of the thread.
pub struct App {
    /// The daemon as the API sees it.
    pub ctx: Context,
    /// `[api]`.
    pub cfg: ApiConfig,
    tokens: Option<Tokens>,
    limiter: RefCell<RateLimiter>,
    ids: RequestIds,
    /// WebSocket clients.
    pub hub: Hub,
    inflight: Cell<usize>,
    /// Connections open, refused and cut.
    pub conns: ConnCounters,
    /// The slice's recent windows.
    pub resident: RefCell<super::resident::Resident>,
    /// Wakes the task that brings the resident windows up to the store between requests.
    pub(crate) resident_behind: super::ws::Notify,
    /// The daemon's stop flag.
    pub stop: Arc<AtomicBool>,
    /// The thread's task queues.
    pub queues: Queues,
}

/// Tells the connection's watch that its request ended, however it ends.
struct Handling(Rc<ConnWatch>);

impl Handling {
    fn start(watch: Rc<ConnWatch>) -> Self {
        watch.request_started();
        Self(watch)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight<'a>(&'a Cell<usize>);

impl<'a> InFlight<'a> {
    fn enter(c: &'a Cell<usize>) -> Self {
        c.set(c.get() + 1);
        Self(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What a request's headers say about tracing.
struct Trace {
    correlation_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
}

impl App {
    fn new(ctx: Context, tokens: Option<Tokens>, stop: Arc<AtomicBool>, queues: Queues) -> Self {
        let cfg = ctx.config().api.clone();
        Self {
            limiter: RefCell::new(RateLimiter::new(
                cfg.rate_query_per_min,
                cfg.rate_command_per_min,
                cfg.rate_clients_max,
            )),
            hub: Hub::new(
                ctx.decision_segments().to_vec(),
                cfg.ws_queue_len,
                cfg.ws_clients_max,
                ctx.agents().add("rimd-http-decisions", "park"),
            ),
            ids: RequestIds::new(ctx.clock()),
            inflight: Cell::new(0),
            conns: ConnCounters::default(),
            resident: RefCell::new(super::resident::Resident::new(
                cfg.slice_resolution_s,
                cfg.slice_lookback_s,
                cfg.slice_cache_bytes,
            )),
            resident_behind: super::ws::Notify::default(),
            cfg,
            ctx,
            tokens,
            stop,
            queues,
        }
    }

    /// Serves one request; never fails (every failure is an error envelope).
    pub async fn handle(self: Rc<Self>, req: Request<Incoming>, peer: IpAddr, watch: Rc<ConnWatch>) -> Response<Body> {
        let _inflight = InFlight::enter(&self.inflight);
        let handling = Handling::start(watch);
        let started = Instant::now();
        let meta = Meta {
            request_id: self.request_id(req.headers()),
            now_ms: self.ctx.clock().now_ms(),
        };
        let trace = Trace {
            correlation_id: req.headers().get(X_CORRELATION_ID).cloned(),
            traceparent: req.headers().get(TRACEPARENT).cloned(),
        };
        let span = tracing::debug_span!(
            "http",
            request_id = %meta.request_id,
            correlation_id = tracing::field::Empty,
            traceparent = tracing::field::Empty,
            method = %req.method(),
            path = %req.uri().path(),
        );
        if let Some(c) = trace.correlation_id.as_ref().and_then(|v| v.to_str().ok()) {
            span.record("correlation_id", c);
        }
        if let Some(t) = trace.traceparent.as_ref().and_then(|v| v.to_str().ok()) {
            span.record("traceparent", t);
        }
        // `instrument`, not `enter`: the span must not stay entered on this thread while
        // the request waits and other requests run.
        async {
            let mut limits = None;
            let mut resp = match self.pipeline(req, peer, &meta, &mut limits, &handling.0).await {
                Ok(r) => r,
                Err(p) => envelope::error(&meta, &p),
            };
            self.finish_headers(&mut resp, &meta, &trace, limits);
            let status = resp.status().as_u16();
            if status >= 500 {
                // The span is debug-level (free when disabled); a failure names its ids itself.
                warn!(
                    status,
                    request_id = %meta.request_id,
                    correlation_id = ?trace.correlation_id,
                    traceparent = ?trace.traceparent,
                    "request failed"
                );
            }
            debug!(
                status,
                elapsed_us = started.elapsed().as_micros() as u64,
                "request done"
            );
            resp
        }
        .instrument(span)
        .await
    }

    async fn pipeline(
        &self,
        mut req: Request<Incoming>,
        peer: IpAddr,
        meta: &Meta,
        limits: &mut Option<Verdict>,
        watch: &ConnWatch,
    ) -> Result<Response<Body>, Problem> {
        let route = routes::resolve(req.method(), req.uri().path())?;
        let class = if req.method() == Method::GET {
            Class::Query
        } else {
            Class::Command
        };
        let client = match self.authenticate(&route, req.method(), req.headers(), peer) {
            Ok(c) => c,
            Err(denied) => {
                // Refusals count against the peer, so guessing tokens is rate limited too.
                if route.rate_limited() {
                    self.limit(ClientKey::Ip(peer), class, limits)?;
                }
                return Err(denied);
            }
        };
        if route.rate_limited() {
            self.limit(client, class, limits)?;
        }
        if let Route::Ws = route {
            return super::ws::upgrade(self, &mut req, meta);
        }
        let kind = route.body_kind(req.method());
        let (parts, incoming) = req.into_parts();
        let body = match kind {
            None => Bytes::new(),
            Some(kind) => {
                check_content_type(&parts.headers, kind)?;
                let limit = match route {
                    Route::Events | Route::Ping => self.cfg.events_body_bytes_max,
                    _ => self.cfg.body_bytes_max,
                };
                watch.body_started();
                let body = read_body(&parts.headers, incoming, limit).await;
                watch.body_done();
                body?
            }
        };
        routes::dispatch(self, route, &parts, body, meta).await
    }

    /// Counts a request of `client`; 429 when it is over its class's limit.
    fn limit(&self, client: ClientKey, class: Class, limits: &mut Option<Verdict>) -> Result<(), Problem> {
        *limits = self
            .limiter
            .borrow_mut()
            .check(client, class, self.ctx.clock().now_ms());
        match limits.filter(|v| !v.allowed) {
            Some(v) => {
                let mut p = Problem::new(Code::RateLimited, "Too many requests");
                p.retry_after_s = Some(v.retry_after_s);
                Err(p)
            }
            None => Ok(()),
        }
    }

    /// Checks the bearer token (when tokens are configured) and names the client for the
    /// rate limiter.
    fn authenticate(
        &self,
        route: &Route,
        method: &Method,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<ClientKey, Problem> {
        let Some(tokens) = &self.tokens else {
            return Ok(ClientKey::Ip(peer));
        };
        if !route.needs_auth() {
            return Ok(ClientKey::Ip(peer));
        }
        let needed = if method == Method::GET && !route.admin_only() {
            Scope::Read
        } else {
            Scope::Admin
        };
        let auth = headers.get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        match tokens.check(auth, needed) {
            Ok(caller) => Ok(ClientKey::Token(caller.id)),
            Err(Denied::Unauthenticated) => Err(Problem::new(
                Code::Unauthorized,
                "a valid bearer token is required (Authorization: Bearer <token>)",
            )),
            Err(Denied::Forbidden) => Err(Problem::new(
                Code::Forbidden,
                "this token's scope does not allow this request (admin scope needed)",
            )),
        }
    }

    fn request_id(&self, headers: &HeaderMap) -> String {
        match headers.get(X_REQUEST_ID).map(|v| v.as_bytes()) {
            Some(b) if is_sane_id(b) => String::from_utf8_lossy(b).into_owned(),
            _ => self.ids.next(),
        }
    }

    fn finish_headers(&self, resp: &mut Response<Body>, meta: &Meta, trace: &Trace, limits: Option<Verdict>) {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
            h.insert(X_REQUEST_ID, v);
        }
        if let Some(c) = &trace.correlation_id {
            h.insert(X_CORRELATION_ID, c.clone());
        }
        if let Some(v) = limits {
            h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(v.limit));
            h.insert(X_RATELIMIT_REMAINING, HeaderValue::from(v.remaining));
            h.insert(X_RATELIMIT_RESET, HeaderValue::from(v.reset_epoch_s));
        }
    }
}

/// A request id we echo: 1..=128 bytes of `[A-Za-z0-9._:-]` (anything else could break
/// a log line or a header).
fn is_sane_id(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= REQUEST_ID_BYTES_MAX
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// What body a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`.
    Json,
    /// `application/json`, or rule text as `application/toml` / `text/plain`.
    JsonOrToml,
}

fn check_content_type(headers: &HeaderMap, kind: BodyKind) -> Result<(), Problem> {
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ok = match kind {
        BodyKind::Json => mime == "application/json",
        BodyKind::JsonOrToml => matches!(mime.as_str(), "application/json" | "application/toml" | "text/plain"),
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        BodyKind::Json => "application/json",
        BodyKind::JsonOrToml => "application/json, application/toml or text/plain",
    };
    Err(Problem::new(
        Code::UnsupportedMediaType,
        format!("content type {ct:?} is not accepted here; send {expected}"),
    )
    .with(envelope::Detail::field("Content-Type", format!("expected {expected}"))))
}

/// The request body with its size limit: `Content-Length` over the limit is refused
/// before reading; a chunked body is cut at the limit.
async fn read_body(headers: &HeaderMap, body: Incoming, limit: usize) -> Result<Bytes, Problem> {
    let too_large = || Problem::new(Code::PayloadTooLarge, format!("request body larger than {limit} bytes"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Problem::new(
            Code::Validation,
            format!("request body could not be read: {e}"),
        )),
    }
}
