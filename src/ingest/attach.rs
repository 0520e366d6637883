//! The control socket: producers and subscribers attach here.
//!
//! A thread of its own on the cold core, asleep in `poll(2)` until someone connects:
//! the handshake is blocking socket I/O bounded by `rim_ring::attach::IO_TIMEOUT`, which
//! must never run on a polling shard. Producers get a fresh sealed ring (handed to ingest
//! through a control ring); subscribers get a read-only mapping of a reflex shard's
//! decision ring (`decisions` or `decisions:K` for shard K). The registry it keeps is
//! what stats report about rings.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rim_ring::attach::{self, Role};
use rim_ring::Segment;
use tracing::{info, warn};

use super::{Control, ProducerRing};

/// A ring as the registry knows it.
#[derive(Clone)]
pub struct RingEntry {
    /// Registry id.
    pub id: u64,
    /// The producer's name.
    pub name: String,
    /// The producer's pid.
    pub pid: u32,
    /// Data bytes.
    pub capacity: usize,
    /// The segment (for its header counters).
    pub segment: Arc<Segment>,
    /// An in-process intake ring (HTTP API, Kafka bridge), not an attached producer.
    pub local: bool,
}

/// Rings attached now, shared by the attach thread and the stats task (both cold).
#[derive(Default)]
pub struct Registry {
    rings: Mutex<Vec<RingEntry>>,
    next_id: AtomicU64,
}

impl Registry {
    /// A copy of the entries.
    pub fn entries(&self) -> Vec<RingEntry> {
        self.rings.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Rings attached.
    pub fn len(&self) -> usize {
        self.rings.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// No rings attached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// What the attach thread needs.
pub struct AttachSetup {
    /// The bound listener.
    pub listener: UnixListener,
    /// Producer limit.
    pub producers_max: usize,
    /// Largest ring a producer may ask for.
    pub capacity_max: usize,
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
}

/// Starts the attach thread.
pub fn spawn(s: AttachSetup) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("rimd-attach".into()).spawn(move || {
        if let Some(core) = s.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        run(s)
    })
}

fn run(mut s: AttachSetup) {
    while !s.stop.load(Ordering::Relaxed) {
        if !readable(&s.listener, 100) {
            continue;
        }
        match attach::accept(&s.listener) {
            Ok(req) => handle(&mut s, req),
            Err(e) => warn!(error = %e, "attach request refused"),
        }
    }
}

/// Waits up to `timeout_ms` for a connection, so the thread sees `stop` promptly.
#[allow(unsafe_code)]
fn readable(listener: &UnixListener, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

fn handle(s: &mut AttachSetup, req: attach::Request) {
    let (pid, name, role) = (req.peer_pid, req.name.clone(), req.role);
    match role {
        Role::Producer => grant_producer(s, req),
        Role::Subscriber => match shard_of(&name, s.decisions.len()) {
            Some(k) => match req.grant_subscriber(&s.decisions[k]) {
                Ok(()) => info!(pid, name, shard = k, "subscriber attached"),
                Err(e) => warn!(pid, name, error = %e, "subscriber attach failed"),
            },
            None => {
                let e = req.refuse("no such decision ring: ask for `decisions` or `decisions:K`");
                warn!(pid, name, error = %e, "subscriber refused");
            }
        },
    }
}

fn grant_producer(s: &mut AttachSetup, req: attach::Request) {
    let (pid, name, capacity) = (req.peer_pid, req.name.clone(), req.capacity);
    if s.registry.len() >= s.producers_max {
        let e = req.refuse("producer limit reached (ingest.producers_max)");
        warn!(pid, name, error = %e, "producer refused");
        return;
    }
    if s.control.slots() == 0 {
        let e = req.refuse("daemon busy: try again");
        warn!(pid, name, error = %e, "producer refused");
        return;
    }
    let consumer = match req.grant_producer(s.capacity_max) {
        Ok(c) => c,
        Err(e) => {
            warn!(pid, name, error = %e, "producer attach failed");
            return;
        }
    };
    let id = s.registry.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let segment = consumer.segment().clone();
    let capacity = consumer.capacity().max(capacity);
    let ring = Box::new(ProducerRing::new(id, name.clone(), pid, consumer));
    s.registry.add(RingEntry {
        id,
        name: name.clone(),
        pid,
        capacity,
        segment,
        local: false,
    });
    if s.control.push(Control::Add(ring)).is_err() {
        // Checked for room above and this thread is the only sender.
        s.registry.remove(id);
        warn!(pid, name, "control ring full: producer ring dropped");
        return;
    }
    info!(pid, name, id, capacity, "producer attached");
}

/// Creates an in-process producer ring called `name` (the HTTP API's or the Kafka
/// bridge's way into ingest), registers it and hands its consumer to ingest like an
/// attached producer's. Called before the attach thread takes `control`.
pub fn local_intake(
    name: &str,
    capacity: usize,
    registry: &Registry,
    control: &mut rtrb::Producer<Control>,
) -> Result<rim_ring::Producer, String> {
    let (producer, consumer) = rim_ring::spsc::heap_pair(capacity).map_err(|e| e.to_string())?;
    let id = registry.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let pid = std::process::id();
    registry.add(RingEntry {
        id,
        name: name.to_owned(),
        pid,
        capacity: consumer.capacity(),
        segment: consumer.segment().clone(),
        local: true,
    });
    let mut ring = Box::new(ProducerRing::new(id, name.to_owned(), pid, consumer));
    ring.local = true;
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
}
