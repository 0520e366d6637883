//! The control socket: producers and subscribers attach here.
//!
//! A thread of its own on the cold core, asleep in `poll(2)` until a peer connects or
//! sends. Every local peer is untrusted, so the socket is served without head-of-line
//! blocking: connections are accepted without reading, each collects its 64-byte request
//! as bytes arrive (non-blocking), and is answered as soon as the request is whole. A
//! peer that connects and sends nothing, or trickles, holds only its own connection, for
//! at most `ingest.attach_timeout_ms`; at most `ingest.attach_pending_max` connections
//! (and a quarter of that per process) may be waiting for their request at once, and
//! further ones are refused at once ("busy"), so no one can exhaust the thread. A
//! connection whose request is already there when it is accepted (a well-behaved client
//! writes it right after connecting) is served at once and never counts as pending.
//!
//! Producers get a fresh sealed ring (handed to ingest through a control ring) within
//! their quotas: rings and ring bytes per process (pid) and per user (uid), as the kernel
//! reports them for the socket (`SO_PEERCRED`), never as the peer says. The in-process
//! intake rings (HTTP API, Kafka bridge) count against none of these. Subscribers get a
//! read-only mapping of a reflex shard's decision ring (`decisions` or `decisions:K` for
//! shard K). The registry kept here is what stats report about rings.
//!
//! Lines about refused or failed peers are rate-limited ([`crate::peerlog`]).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rim_ring::attach::{self, AttachError, Incoming, Role};
use rim_ring::Segment;
use tracing::{info, warn};

use super::figures::RingFigures;
use super::{Control, ProducerRing};
use crate::peerlog::{self, PeerLog};

/// Longest the thread sleeps in `poll(2)`, so that it sees `stop` promptly.
const POLL_MS_MAX: u64 = 100;

/// A ring as the registry knows it.
#[derive(Clone)]
pub struct RingEntry {
    /// Registry id.
    pub id: u64,
    /// The producer's name.
    pub name: String,
    /// The producer's pid.
    pub pid: u32,
    /// The producer's uid.
    pub uid: u32,
    /// Data bytes.
    pub capacity: usize,
    /// The segment (for the producer's own header counters and position).
    pub segment: Arc<Segment>,
    /// The daemon's own counts for this ring (what stats report).
    pub figures: Arc<RingFigures>,
    /// An in-process intake ring (HTTP API, Kafka bridge), not an attached producer.
    pub local: bool,
}

/// What the attach thread refused, for the stats.
#[derive(Debug, Default)]
pub struct AttachCounters {
    /// Connections refused because too many were waiting for their request.
    pub busy: AtomicU64,
    /// Connections dropped because their request did not arrive in time.
    pub timed_out: AtomicU64,
    /// Malformed requests and connections that failed.
    pub failed: AtomicU64,
    /// Producers refused by a limit or quota.
    pub refused: AtomicU64,
    /// Log lines about peers suppressed by the rate limit.
    pub log_suppressed: Arc<AtomicU64>,
}

impl AttachCounters {
    /// (name, value) of each counter, for the stats.
    pub fn fields(&self) -> [(&'static str, u64); 5] {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("busy", r(&self.busy)),
            ("timed_out", r(&self.timed_out)),
            ("failed", r(&self.failed)),
            ("refused", r(&self.refused)),
            ("log_suppressed", r(&self.log_suppressed)),
        ]
    }
}

/// Rings attached now, shared by the attach thread and the stats task (both cold).
#[derive(Default)]
pub struct Registry {
    rings: Mutex<Vec<RingEntry>>,
    next_id: AtomicU64,
    /// What the attach thread refused.
    pub counters: AttachCounters,
}

/// What one peer holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Attached producers (intake rings excluded).
    pub producers: usize,
    /// Rings of the process.
    pub pid_rings: usize,
    /// Ring bytes of the process.
    pub pid_bytes: u64,
    /// Rings of the user.
    pub uid_rings: usize,
    /// Ring bytes of the user.
    pub uid_bytes: u64,
}

impl Registry {
    /// A copy of the entries.
    pub fn entries(&self) -> Vec<RingEntry> {
        self.rings.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Rings attached (intake rings included).
    pub fn len(&self) -> usize {
        self.rings.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// No rings attached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the producers hold now, overall and for process `pid` and user `uid`.
    pub fn usage(&self, pid: u32, uid: u32) -> Usage {
        let Ok(rings) = self.rings.lock() else {
            return Usage::default();
        };
        let mut u = Usage::default();
        for e in rings.iter().filter(|e| !e.local) {
            u.producers += 1;
            if e.pid == pid {
                u.pid_rings += 1;
                u.pid_bytes = u.pid_bytes.saturating_add(e.capacity as u64);
            }
            if e.uid == uid {
                u.uid_rings += 1;
                u.uid_bytes = u.uid_bytes.saturating_add(e.capacity as u64);
            }
        }
        u
    }

    fn add(&self, entry: RingEntry) {
        if let Ok(mut r) = self.rings.lock() {
            r.push(entry);
        }
    }

    /// Forgets ring `id`.
    pub fn remove(&self, id: u64) {
        if let Ok(mut r) = self.rings.lock() {
            r.retain(|e| e.id != id);
        }
    }
}

/// The limits the attach thread enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Attached producers at once (intake rings excluded).
    pub producers_max: usize,
    /// Largest ring a producer may ask for.
    pub capacity_max: usize,
    /// Rings per process.
    pub rings_per_pid_max: usize,
    /// Rings per user.
    pub rings_per_uid_max: usize,
    /// Ring bytes per process.
    pub ring_bytes_per_pid_max: u64,
    /// Ring bytes per user.
    pub ring_bytes_per_uid_max: u64,
    /// Connections waiting for their request at once.
    pub pending_max: usize,
    /// How long a connection may take to send its request.
    pub timeout: Duration,
}

impl Limits {
    /// Connections of one process that may wait for their request at once: a quarter of
    /// the total, so one process cannot take every place.
    pub fn pending_per_pid_max(&self) -> usize {
        (self.pending_max / 4).max(1)
    }

    /// The limits of `[ingest]`.
    pub fn from_config(i: &crate::config::IngestConfig) -> Self {
        Self {
            producers_max: i.producers_max,
            capacity_max: i.ring_capacity_max,
            rings_per_pid_max: i.rings_per_pid_max,
            rings_per_uid_max: i.rings_per_uid_max,
            ring_bytes_per_pid_max: i.ring_bytes_per_pid_max,
            ring_bytes_per_uid_max: i.ring_bytes_per_uid_max,
            pending_max: i.attach_pending_max,
            timeout: Duration::from_millis(i.attach_timeout_ms),
        }
    }

    /// Why a producer holding `u` may not have another ring of `capacity` bytes, if so
    /// (the message names the setting; it is cut to the reply's 48 bytes on the wire).
    pub fn refusal(&self, u: &Usage, capacity: usize) -> Option<&'static str> {
        let bytes = capacity as u64;
        if u.producers >= self.producers_max {
            Some("producer limit reached (ingest.producers_max)")
        } else if u.pid_rings >= self.rings_per_pid_max {
            Some("quota: ingest.rings_per_pid_max")
        } else if u.uid_rings >= self.rings_per_uid_max {
            Some("quota: ingest.rings_per_uid_max")
        } else if u.pid_bytes.saturating_add(bytes) > self.ring_bytes_per_pid_max {
            Some("quota: ingest.ring_bytes_per_pid_max")
        } else if u.uid_bytes.saturating_add(bytes) > self.ring_bytes_per_uid_max {
            Some("quota: ingest.ring_bytes_per_uid_max")
        } else {
            None
        }
    }
}

/// What the attach thread needs.
pub struct AttachSetup {
    /// The bound listener.
    pub listener: UnixListener,
    /// Limits and quotas.
    pub limits: Limits,
    /// Into ingest.
    pub control: rtrb::Producer<Control>,
    /// The rings attached.
    pub registry: Arc<Registry>,
    /// Each reflex shard's decision segment.
    pub decisions: Vec<Arc<Segment>>,
    /// Set at shutdown.
    pub stop: Arc<AtomicBool>,
    /// Core to pin to, if any.
    pub core: Option<usize>,
    /// The clock the peer log's windows are timed on.
    pub clock: crate::clock::Clock,
}

/// Starts the attach thread.
pub fn spawn(s: AttachSetup) -> std::io::Result<JoinHandle<()>> {
    s.listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("rimd-attach".into()).spawn(move || {
        if let Some(core) = s.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        Server::new(s).run()
    })
}

/// A connection waiting for its request, and until when.
struct Pending {
    conn: Incoming,
    deadline: Instant,
}

/// The attach thread's state.
struct Server {
    s: AttachSetup,
    pending: Vec<Pending>,
    pollfds: Vec<libc::pollfd>,
    log: PeerLog,
}

impl Server {
    fn new(s: AttachSetup) -> Self {
        let n = s.limits.pending_max;
        let total = s.registry.counters.log_suppressed.clone();
        let log = PeerLog::new("attach peer", peerlog::BURST, peerlog::WINDOW, total, s.clock.clone());
        Self {
            s,
            pending: Vec::with_capacity(n),
            pollfds: Vec::with_capacity(n + 1),
            log,
        }
    }

    fn run(mut self) {
        while !self.s.stop.load(Ordering::Relaxed) {
            self.wait();
            self.accept_waiting();
            self.read_pending();
            self.expire(Instant::now());
            self.log.tick();
        }
    }

    /// Sleeps in `poll(2)` until the listener or a pending connection is readable, the
    /// nearest deadline, or [`POLL_MS_MAX`].
    fn wait(&mut self) {
        let now = Instant::now();
        let nearest = self.pending.iter().map(|p| p.deadline).min();
        let ms = nearest.map_or(POLL_MS_MAX, |d| {
            (d.saturating_duration_since(now).as_millis() as u64 + 1).min(POLL_MS_MAX)
        });
        self.pollfds.clear();
        let listen = self.s.listener.as_raw_fd();
        for fd in std::iter::once(listen).chain(self.pending.iter().map(|p| p.conn.fd().as_raw_fd())) {
            self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // An error (EINTR) only ends the wait early: the next turn looks again.
        let _ = crate::sys::poll(&mut self.pollfds, ms as i32);
    }

    /// Accepts every connection waiting. One whose request is already whole is served at
    /// once; the others wait, within the caps, for the rest of their request.
    fn accept_waiting(&mut self) {
        loop {
            let mut conn = match attach::accept_incoming(&self.s.listener) {
                Ok(Some(conn)) => conn,
                Ok(None) => return,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog until the next turn.
                    self.note_failure(0, "", &e, "attach connection failed");
                    return;
                }
            };
            let pid = conn.peer_pid();
            match conn.read_available() {
                Ok(true) => {
                    match conn.into_request() {
                        Ok(req) => self.handle(req),
                        Err(e) => self.note_failure(pid, "", &e, "attach request refused"),
                    }
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    self.note_failure(pid, "", &e, "attach request refused");
                    continue;
                }
            }
            let of_pid = self.pending.iter().filter(|p| p.conn.peer_pid() == pid).count();
            if self.pending.len() >= self.s.limits.pending_max || of_pid >= self.s.limits.pending_per_pid_max() {
                self.s.registry.counters.busy.fetch_add(1, Ordering::Relaxed);
                conn.refuse("busy: too many attaches pending; try again");
                if self.log.admit() {
                    warn!(
                        pid,
                        pending = self.pending.len(),
                        "attach refused: too many pending connections"
                    );
                }
                continue;
            }
            let deadline = Instant::now() + self.s.limits.timeout;
            self.pending.push(Pending { conn, deadline });
        }
    }

    /// Reads what arrived on every pending connection; serves the whole requests.
    fn read_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i].conn.read_available() {
                Ok(false) => i += 1,
                Ok(true) => {
                    let p = self.pending.swap_remove(i);
                    let pid = p.conn.peer_pid();
                    match p.conn.into_request() {
                        Ok(req) => self.handle(req),
                        Err(e) => self.note_failure(pid, "", &e, "attach request refused"),
                    }
                }
                Err(e) => {
                    let p = self.pending.swap_remove(i);
                    self.note_failure(p.conn.peer_pid(), "", &e, "attach request refused");
                }
            }
        }
    }

    /// Drops the connections whose request did not arrive in time.
    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline > now {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            let pid = p.conn.peer_pid();
            p.conn.refuse("request not received in time");
            self.s.registry.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            if self.log.admit() {
                warn!(
                    pid,
                    timeout_ms = self.s.limits.timeout.as_millis() as u64,
                    "attach connection dropped: no whole request in time"
                );
            }
        }
    }

    fn note_failure(&mut self, pid: u32, name: &str, e: &AttachError, what: &'static str) {
        self.s.registry.counters.failed.fetch_add(1, Ordering::Relaxed);
        if self.log.admit() {
            warn!(pid, name, error = %e, "{what}");
        }
    }

    fn note_refused(&mut self, pid: u32, name: &str, e: &AttachError, what: &'static str) {
        self.s.registry.counters.refused.fetch_add(1, Ordering::Relaxed);
        if self.log.admit() {
            warn!(pid, name, error = %e, "{what}");
        }
    }

    fn handle(&mut self, req: attach::Request) {
        let (pid, name, role) = (req.peer_pid, req.name.clone(), req.role);
        match role {
            Role::Producer => self.grant_producer(req),
            Role::Subscriber => match shard_of(&name, self.s.decisions.len()) {
                Some(k) => match req.grant_subscriber(&self.s.decisions[k]) {
                    Ok(()) => info!(pid, name, shard = k, "subscriber attached"),
                    Err(e) => self.note_failure(pid, &name, &e, "subscriber attach failed"),
                },
                None => {
                    let e = req.refuse("no such decision ring: ask for `decisions` or `decisions:K`");
                    self.note_refused(pid, &name, &e, "subscriber refused");
                }
            },
        }
    }

    fn grant_producer(&mut self, req: attach::Request) {
        let (pid, uid, name, capacity) = (req.peer_pid, req.peer_uid, req.name.clone(), req.capacity);
        let usage = self.s.registry.usage(pid, uid);
        if let Some(why) = self.s.limits.refusal(&usage, capacity) {
            let e = req.refuse(why);
            self.note_refused(pid, &name, &e, "producer refused");
            return;
        }
        if self.s.control.slots() == 0 {
            let e = req.refuse("daemon busy: try again");
            self.note_refused(pid, &name, &e, "producer refused");
            return;
        }
        let consumer = match req.grant_producer(self.s.limits.capacity_max) {
            Ok(c) => c,
            Err(e) => {
                self.note_failure(pid, &name, &e, "producer attach failed");
                return;
            }
        };
        let id = self.s.registry.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let segment = consumer.segment().clone();
        let capacity = consumer.capacity().max(capacity);
        let ring = Box::new(ProducerRing::new(id, name.clone(), pid, consumer));
        self.s.registry.add(RingEntry {
            id,
            name: name.clone(),
            pid,
            uid,
            capacity,
            segment,
            figures: ring.figures.clone(),
            local: false,
        });
        if self.s.control.push(Control::Add(ring)).is_err() {
            // Checked for room above and this thread is the only sender.
            self.s.registry.remove(id);
            warn!(pid, name, "control ring full: producer ring dropped");
            return;
        }
        info!(pid, uid, name, id, capacity, "producer attached");
    }
}

/// Creates an in-process producer ring called `name` (the HTTP API's or the Kafka
/// bridge's way into ingest), registers it and hands its consumer to ingest like an
/// attached producer's. Called before the attach thread takes `control`. Intake rings
/// count against no producer limit or quota.
pub fn local_intake(
    name: &str,
    capacity: usize,
    registry: &Registry,
    control: &mut rtrb::Producer<Control>,
) -> Result<rim_ring::Producer, String> {
    let (producer, consumer) = rim_ring::spsc::heap_pair(capacity).map_err(|e| e.to_string())?;
    let id = registry.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let pid = std::process::id();
    let mut ring = Box::new(ProducerRing::new(id, name.to_owned(), pid, consumer));
    ring.local = true;
    registry.add(RingEntry {
        id,
        name: name.to_owned(),
        pid,
        uid: 0,
        capacity: ring.consumer.capacity(),
        segment: ring.consumer.segment().clone(),
        figures: ring.figures.clone(),
        local: true,
    });
    if control.push(Control::Add(ring)).is_err() {
        registry.remove(id);
        return Err("control ring full".into());
    }
    info!(name, id, capacity, "in-process intake ring ready");
    Ok(producer)
}

/// `decisions` → 0, `decisions:K` → K, if that shard exists.
pub fn shard_of(name: &str, shards: usize) -> Option<usize> {
    let k = match name.strip_prefix("decisions") {
        Some("") => 0,
        Some(rest) => rest.strip_prefix(':')?.parse().ok()?,
        None => return None,
    };
    (k < shards).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_names_pick_a_shard() {
        assert_eq!(shard_of("decisions", 1), Some(0));
        assert_eq!(shard_of("decisions:1", 2), Some(1));
        assert_eq!(shard_of("decisions:2", 2), None);
        assert_eq!(shard_of("decisions:x", 2), None);
        assert_eq!(shard_of("decisionsX", 2), None);
        assert_eq!(shard_of("", 2), None);
    }

    #[test]
    fn quotas_name_the_setting_that_refused() {
        let l = Limits {
            producers_max: 10,
            capacity_max: 1 << 20,
            rings_per_pid_max: 2,
            rings_per_uid_max: 4,
            ring_bytes_per_pid_max: 3 << 20,
            ring_bytes_per_uid_max: 5 << 20,
            pending_max: 4,
            timeout: Duration::from_secs(1),
        };
        let u = |producers, pid_rings, pid_bytes, uid_rings, uid_bytes| Usage {
            producers,
            pid_rings,
            pid_bytes,
            uid_rings,
            uid_bytes,
        };
        assert_eq!(l.refusal(&u(0, 0, 0, 0, 0), 1 << 20), None);
        assert!(l
            .refusal(&u(10, 0, 0, 0, 0), 1)
            .is_some_and(|m| m.contains("producers_max")));
        assert!(l
            .refusal(&u(2, 2, 2, 2, 2), 1)
            .is_some_and(|m| m.contains("rings_per_pid_max")));
        assert!(l
            .refusal(&u(4, 1, 1, 4, 4), 1)
            .is_some_and(|m| m.contains("rings_per_uid_max")));
        assert!(l
            .refusal(&u(1, 1, 2 << 20, 1, 2 << 20), 2 << 20)
            .is_some_and(|m| m.contains("ring_bytes_per_pid_max")));
        assert!(l
            .refusal(&u(3, 1, 1 << 20, 3, 4 << 20), 2 << 20)
            .is_some_and(|m| m.contains("ring_bytes_per_uid_max")));
        // Every message fits the reply's 48 bytes whole.
        for m in [
            "producer limit reached (ingest.producers_max)",
            "quota: ingest.ring_bytes_per_uid_max",
            "busy: too many attaches pending; try again",
        ] {
            assert!(m.len() <= 48, "{m}");
        }
    }
}
