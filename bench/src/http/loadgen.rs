//! The load generator: one thread, `connections` keep-alive HTTP/1.1 connections, one
//! request in flight per connection (no pipelining), readiness from epoll, an HDR
//! histogram of every request's latency ([`crate::latency`]).
//!
//! Two ways to pace it:
//! - [`Pace::Saturate`] (closed loop, like wrk): a connection sends its next request as
//!   soon as the last response is in; latency is from the actual send. This measures
//!   the most the server answers; its latencies are those of a saturated server and
//!   suffer coordinated omission (a stalled server also stalls the sends that would have
//!   seen the stall), which is why the rate-controlled runs exist.
//! - [`Pace::Rate`] (open loop, like wrk2): request k is due at `start + k / rate`; it goes
//!   out on the first idle connection at or after that time, and its latency is counted
//!   from when it was due, not from when it was sent, so a server (or a generator) that
//!   falls behind shows it in the percentiles instead of hiding it.
//!
//! Anything but a 2xx, and any request whose connection failed before its response
//! came, is counted in `errors` and kept out of the latencies.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::requests::RequestSource;
use super::wire;
use crate::clock::monotonic_ns;
use crate::error::BenchError;
use crate::latency::LatencyRecorder;

/// Receive buffer per connection to start with (grows for larger responses).
const INBUF_BYTES: usize = 64 * 1024;
/// Readiness events taken per wait.
const EVENTS_MAX: usize = 256;
/// Longest single wait, so the deadline is checked even when nothing happens.
const WAIT_MAX_NS: u64 = 50_000_000;
/// Bytes of the first non-2xx body kept for the error message.
const ERROR_BODY_MAX: usize = 300;

/// How requests are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Closed loop: each connection sends again as soon as its response is in.
    Saturate,
    /// Open loop at this many requests per second, latency from each one's due time.
    Rate(u64),
}

/// One run of the generator.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// How requests are offered.
    pub pace: Pace,
    /// How long requests are offered.
    pub duration: Duration,
    /// After `duration`, how long the requests still in flight (and, rate-controlled,
    /// still due) may take before they are counted as errors.
    pub drain: Duration,
}

/// What a run measured.
pub struct Tally {
    /// Latency of every 2xx response, ns.
    pub latency: LatencyRecorder,
    /// 2xx responses.
    pub ok: u64,
    /// Non-2xx responses, requests whose connection failed, requests left at the drain.
    pub errors: u64,
    /// Items (events of a batch, or 1 per request) in 2xx responses.
    pub items: u64,
    /// Body bytes of 2xx responses.
    pub body_bytes: u64,
    /// Requests offered (rate-controlled: due within the duration).
    pub offered: u64,
    /// From the first send until the last response, ns.
    pub elapsed_ns: u64,
    /// CPU time the generator's thread used during the run, ns.
    pub cpu_ns: u64,
    /// Connections opened again (the server closed one, or it failed).
    pub reconnects: u64,
    /// The first error: status and the start of its body, or what failed.
    pub first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: LatencyRecorder::new(),
            ok: 0,
            errors: 0,
            items: 0,
            body_bytes: 0,
            offered: 0,
            elapsed_ns: 0,
            cpu_ns: 0,
            reconnects: 0,
            first_error: None,
        }
    }

    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// 2xx responses per second.
    pub fn per_s(&self, count: u64) -> f64 {
        count as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }

    /// The generator's share of its core during the run (1.0 = all of it).
    pub fn cpu_share(&self) -> f64 {
        self.cpu_ns as f64 / self.elapsed_ns.max(1) as f64
    }
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    filled: usize,
    /// When its request's latency starts (the send, or the due time), ns.
    origin_ns: u64,
    items: u64,
    busy: bool,
    want_write: bool,
}

/// The generator: its connections and the epoll instance watching them.
pub struct LoadGen {
    addr: SocketAddr,
    epoll: OwnedFd,
    conns: Vec<Conn>,
    events: Vec<libc::epoll_event>,
}

/// The state of one run.
struct RunState {
    tally: Tally,
    idle: Vec<usize>,
    in_flight: usize,
    last_done_ns: u64,
}

impl LoadGen {
    /// Opens `connections` connections to `addr`.
    pub fn connect(addr: SocketAddr, connections: usize) -> Result<Self, BenchError> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(BenchError::last_os("epoll_create1"));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut gen = Self {
            addr,
            epoll,
            conns: Vec::with_capacity(connections),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX],
        };
        for i in 0..connections.max(1) {
            let stream = open(addr)?;
            gen.watch(libc::EPOLL_CTL_ADD, stream.as_raw_fd(), i, false)?;
            gen.conns.push(Conn {
                stream,
                out: Vec::new(),
                written: 0,
                inbuf: vec![0; INBUF_BYTES],
                filled: 0,
                origin_ns: 0,
                items: 0,
                busy: false,
                want_write: false,
            });
        }
        // Sleep as precisely as asked: the default 50 µs of timer slack would make every
        // rate-controlled send up to 50 µs late (and count it as latency).
        // SAFETY: prctl with PR_SET_TIMERSLACK takes a plain integer.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        Ok(gen)
    }

    /// Offers requests from `source` as `plan` says.
    pub fn run(&mut self, source: &mut dyn RequestSource, plan: &Plan) -> Result<Tally, BenchError> {
        let cpu_start = thread_cpu_ns();
        let start_ns = monotonic_ns();
        let mut st = RunState {
            tally: Tally::new(),
            idle: (0..self.conns.len()).rev().collect(),
            in_flight: 0,
            last_done_ns: start_ns,
        };
        let duration_ns = nanos(plan.duration);
        let deadline_ns = start_ns + duration_ns;
        let drain_end_ns = deadline_ns + nanos(plan.drain);
        let (period_ns, offered) = match plan.pace {
            Pace::Saturate => (0, u64::MAX),
            Pace::Rate(per_s) => {
                let per_s = per_s.max(1);
                (1_000_000_000 / per_s, duration_ns.saturating_mul(per_s) / 1_000_000_000)
            }
        };
        let mut sent = 0u64;
        loop {
            let now = monotonic_ns();
            let next_due = start_ns + sent.saturating_mul(period_ns);
            match plan.pace {
                Pace::Saturate if now < deadline_ns => {
                    while let Some(i) = st.idle.pop() {
                        self.send(i, monotonic_ns(), source, &mut st)?;
                        sent += 1;
                    }
                }
                Pace::Saturate => {}
                Pace::Rate(_) => {
                    // Every request due by now goes out, on whichever connection is idle;
                    // a backlog keeps its due times.
                    while sent < offered && start_ns + sent * period_ns <= now {
                        let Some(i) = st.idle.pop() else { break };
                        self.send(i, start_ns + sent * period_ns, source, &mut st)?;
                        sent += 1;
                    }
                }
            }
            let finished = st.in_flight == 0
                && match plan.pace {
                    Pace::Saturate => now >= deadline_ns,
                    Pace::Rate(_) => sent >= offered,
                };
            if finished {
                break;
            }
            if now >= drain_end_ns {
                self.abandon(&mut st, offered.saturating_sub(sent), plan.pace)?;
                break;
            }
            let wake_ns = match plan.pace {
                Pace::Rate(_) if sent < offered && !st.idle.is_empty() => next_due.max(now),
                _ if now < deadline_ns => deadline_ns,
                _ => drain_end_ns,
            };
            let ready = self.wait(wake_ns.saturating_sub(now).min(WAIT_MAX_NS))?;
            for k in 0..ready {
                let ev = self.events[k];
                self.on_ready(ev.u64 as usize, ev.events, &mut st)?;
            }
        }
        let mut tally = st.tally;
        tally.offered = match plan.pace {
            Pace::Saturate => sent,
            Pace::Rate(_) => offered,
        };
        tally.elapsed_ns = st.last_done_ns.saturating_sub(start_ns).max(1);
        tally.cpu_ns = thread_cpu_ns().saturating_sub(cpu_start);
        Ok(tally)
    }

    /// Starts a request on idle connection `i`, latency counted from `origin_ns`.
    fn send(
        &mut self,
        i: usize,
        origin_ns: u64,
        source: &mut dyn RequestSource,
        st: &mut RunState,
    ) -> Result<(), BenchError> {
        let conn = &mut self.conns[i];
        conn.out.clear();
        conn.items = source.next(&mut conn.out);
        conn.written = 0;
        conn.origin_ns = origin_ns;
        conn.busy = true;
        st.in_flight += 1;
        self.flush(i, st)
    }

    /// Writes what the socket takes; watches for writability while something is left.
    fn flush(&mut self, i: usize, st: &mut RunState) -> Result<(), BenchError> {
        let conn = &mut self.conns[i];
        let failed = loop {
            if conn.written == conn.out.len() {
                break None;
            }
            match conn.stream.write(&conn.out[conn.written..]) {
                Ok(0) => break Some("the connection closed while sending".to_string()),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Some(format!("send: {e}")),
            }
        };
        if let Some(what) = failed {
            return self.fail(i, st, what);
        }
        let want_write = conn.written < conn.out.len();
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let fd = conn.stream.as_raw_fd();
            self.watch(libc::EPOLL_CTL_MOD, fd, i, want_write)?;
        }
        Ok(())
    }

    /// Handles readiness of connection `i`.
    fn on_ready(&mut self, i: usize, events: u32, st: &mut RunState) -> Result<(), BenchError> {
        if i >= self.conns.len() {
            return Ok(());
        }
        if events & libc::EPOLLOUT as u32 != 0 && self.conns[i].busy {
            self.flush(i, st)?;
        }
        if events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            self.receive(i, st)?;
        }
        Ok(())
    }

    /// Reads once; completes the request if its whole response is in.
    fn receive(&mut self, i: usize, st: &mut RunState) -> Result<(), BenchError> {
        let conn = &mut self.conns[i];
        if conn.filled == conn.inbuf.len() {
            let grown = conn.inbuf.len() * 2;
            conn.inbuf.resize(grown, 0);
        }
        let outcome = conn.stream.read(&mut conn.inbuf[conn.filled..]);
        match outcome {
            Ok(0) => return self.fail(i, st, "the server closed the connection".into()),
            Ok(n) => conn.filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return Ok(()),
            Err(e) => return self.fail(i, st, format!("receive: {e}")),
        }
        let Some(response) = wire::parse(&conn.inbuf[..conn.filled])? else {
            return Ok(());
        };
        if !conn.busy {
            // Nothing was asked on this connection (a server's notice before it closes an
            // idle one): count it and start the connection afresh.
            st.tally
                .error(|| format!("HTTP {} came with no request", response.status));
            return self.reopen(i, st);
        }
        let done_ns = monotonic_ns();
        self.complete(i, &response, done_ns, st)
    }

    /// Counts a finished request and makes the connection idle (or opens it again if the
    /// server closes it, or if its request was not completely sent).
    fn complete(&mut self, i: usize, r: &wire::Response, done_ns: u64, st: &mut RunState) -> Result<(), BenchError> {
        let conn = &mut self.conns[i];
        if r.ok() {
            st.tally.ok += 1;
            st.tally.items += conn.items;
            st.tally.body_bytes += (r.len - r.body_start) as u64;
            st.tally.latency.record(done_ns.saturating_sub(conn.origin_ns).max(1));
        } else {
            let body = r.body(&conn.inbuf[..conn.filled]);
            let snippet = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_MAX)]).into_owned();
            st.tally.error(|| format!("HTTP {}: {snippet}", r.status));
        }
        st.last_done_ns = done_ns;
        let unsent = conn.written < conn.out.len();
        conn.busy = false;
        conn.inbuf.copy_within(r.len..conn.filled, 0);
        conn.filled -= r.len;
        st.in_flight -= 1;
        if r.close || unsent || conn.filled > 0 {
            self.reopen(i, st)?;
        }
        st.idle.push(i);
        Ok(())
    }

    /// The connection failed: its request (if any) is an error; it is opened again.
    fn fail(&mut self, i: usize, st: &mut RunState, what: String) -> Result<(), BenchError> {
        let conn = &mut self.conns[i];
        let was_busy = conn.busy;
        if was_busy {
            conn.busy = false;
            st.in_flight -= 1;
            st.tally.error(|| what);
        }
        self.reopen(i, st)?;
        if was_busy {
            st.idle.push(i);
        }
        Ok(())
    }

    /// Replaces connection `i` by a new one (the old one is closed, which also removes it
    /// from the epoll set).
    fn reopen(&mut self, i: usize, st: &mut RunState) -> Result<(), BenchError> {
        let stream = open(self.addr)?;
        self.watch(libc::EPOLL_CTL_ADD, stream.as_raw_fd(), i, false)?;
        let conn = &mut self.conns[i];
        conn.stream = stream;
        conn.filled = 0;
        conn.written = 0;
        conn.out.clear();
        conn.want_write = false;
        st.tally.reconnects += 1;
        Ok(())
    }

    /// At the end of the drain: requests still in flight, and those never sent, are
    /// errors; their connections are replaced so a later run starts clean.
    fn abandon(&mut self, st: &mut RunState, never_sent: u64, pace: Pace) -> Result<(), BenchError> {
        let busy: Vec<usize> = (0..self.conns.len()).filter(|&i| self.conns[i].busy).collect();
        for i in busy {
            self.fail(i, st, "no response within the drain time".into())?;
        }
        if pace != Pace::Saturate && never_sent > 0 {
            st.tally.errors += never_sent;
            st.tally.first_error.get_or_insert_with(|| {
                format!("{never_sent} requests were still due, unsent, at the end of the drain time")
            });
        }
        Ok(())
    }

    fn watch(&self, op: libc::c_int, fd: RawFd, i: usize, write: bool) -> Result<(), BenchError> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
        if write {
            flags |= libc::EPOLLOUT;
        }
        let mut ev = libc::epoll_event {
            events: flags as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open and owned by `self`; `ev` is a valid event.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(BenchError::last_os("epoll_ctl"));
        }
        Ok(())
    }

    /// Waits up to `timeout_ns` (nanosecond precision: epoll_pwait2) for readiness.
    fn wait(&mut self, timeout_ns: u64) -> Result<usize, BenchError> {
        let timeout = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `events` is a live buffer of EVENTS_MAX entries the kernel may fill;
        // `timeout` is a valid timespec; a null sigmask leaves the mask alone.
        let n = unsafe {
            libc::epoll_pwait2(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &timeout,
                std::ptr::null(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() == ErrorKind::Interrupted {
            return Ok(0);
        }
        Err(BenchError::Io {
            what: "epoll_pwait2",
            source: error,
        })
    }
}

/// A new non-blocking connection, Nagle off (a request is one write; waiting for more
/// would only add latency).
fn open(addr: SocketAddr) -> Result<TcpStream, BenchError> {
    let io = |what: &'static str| move |source| BenchError::Io { what, source };
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io("connecting to the API"))?;
    stream.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
    stream.set_nonblocking(true).map_err(io("O_NONBLOCK"))?;
    Ok(stream)
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One request on a fresh blocking connection (set-up and checks, not measurements):
/// the status and the body.
pub fn fetch(addr: SocketAddr, request: &[u8], timeout: Duration) -> Result<(u16, Vec<u8>), BenchError> {
    let io = |what: &'static str| move |source| BenchError::Io { what, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io("connecting to the API"))?;
    stream.set_read_timeout(Some(timeout)).map_err(io("SO_RCVTIMEO"))?;
    stream.write_all(request).map_err(io("sending a request"))?;
    let mut buf = Vec::with_capacity(INBUF_BYTES);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(r) = wire::parse(&buf)? {
            return Ok((r.status, r.body(&buf).to_vec()));
        }
        let n = stream.read(&mut chunk).map_err(io("reading a response"))?;
        if n == 0 {
            return Err(BenchError::Integrity {
                what: "the server closed the connection before its response was complete".into(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::requests::Fixed;
    use std::net::TcpListener;

    /// A tiny blocking server: one thread per connection, answers every request with
    /// `status` (and closes after `close_after` responses, if set).
    fn serve(status: u16, close_after: Option<usize>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(stream, status, close_after));
            }
        });
        addr
    }

    fn answer(mut stream: TcpStream, status: u16, close_after: Option<usize>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut answered = 0;
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..at + 4);
                answered += 1;
                let close = close_after.is_some_and(|n| answered >= n);
                let header = if close { "connection: close\r\n" } else { "" };
                let reply = format!("HTTP/1.1 {status} X\r\n{header}content-length: 2\r\n\r\nok");
                if stream.write_all(reply.as_bytes()).is_err() || close {
                    return;
                }
            }
        }
    }

    fn plan(pace: Pace) -> Plan {
        Plan {
            pace,
            duration: Duration::from_millis(100),
            drain: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_saturating_run_counts_every_response_and_reconnects_when_told() -> Result<(), BenchError> {
        // One connection, closed by the server after every second response: whatever the
        // machine's load, the generator must open it again exactly that often.
        let addr = serve(200, Some(2));
        let mut gen = LoadGen::connect(addr, 1)?;
        let tally = gen.run(&mut Fixed::get("/x"), &plan(Pace::Saturate))?;
        assert!(tally.ok > 0);
        assert_eq!(tally.errors, 0, "{:?}", tally.first_error);
        assert_eq!(tally.reconnects, tally.ok / 2);
        assert_eq!(tally.latency.summary().count, tally.ok);
        Ok(())
    }

    #[test]
    fn a_paced_run_sends_what_is_due_and_errors_are_not_latencies() -> Result<(), BenchError> {
        let addr = serve(429, None);
        let mut gen = LoadGen::connect(addr, 2)?;
        let tally = gen.run(&mut Fixed::get("/x"), &plan(Pace::Rate(1_000)))?;
        assert_eq!(tally.offered, 100);
        assert_eq!(tally.errors, 100);
        assert_eq!(tally.ok, 0);
        assert_eq!(tally.latency.summary().count, 0);
        assert!(tally.first_error.is_some_and(|e| e.starts_with("HTTP 429")));
        Ok(())
    }
}
