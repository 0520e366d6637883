//! Round trip between two pinned threads over two rim-ring rings, one message in flight:
//! `raw` moves 144 opaque bytes (the ring alone), `event` publishes and validates a
//! RimFastEvent each way (the full path). Prints p50/p99/p99.9 in ns.
//! `cargo run --release -p rim-ring --example rtt -- [raw|event] [memfd]` (memfd: the rings in
//! sealed memfd segments, as between processes, instead of heap memory)

use std::time::Instant;

use rim_ring::spsc::{self, Consumer, Producer};
use rim_ring::{Sym, SymEvent, SymbolKind};

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity
    // reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Syms {
    node: Sym,
    status: Sym,
    metrics: [(Sym, f64); 4],
}

fn intern(p: &mut Producer, event: bool) -> Syms {
    if !event {
        return Syms {
            node: Sym::default(),
            status: Sym::default(),
            metrics: [(Sym::default(), 0.0); 4],
        };
    }
    let node = p.intern(SymbolKind::NodeId, "rim:equity:nyse:AAPL.O").expect("node");
    let status = p.intern(SymbolKind::Status, "OK").expect("status");
    let mut metrics = [(node, 0.0); 4];
    for (m, name) in metrics.iter_mut().zip(["bid", "ask", "spread", "depth"]) {
        *m = (p.intern(SymbolKind::MetricName, name).expect("metric"), 1.0);
    }
    Syms { node, status, metrics }
}

fn send(p: &mut Producer, s: &Syms, stamp: u64, event: bool) {
    if event {
        let ev = SymEvent {
            node: s.node,
            event_id: None,
            timestamp: stamp as i64,
            metrics: &s.metrics,
            price: Some(1.0),
            volume: Some(2.0),
            stress: Some(3.0),
            status: s.status,
            source_topic: None,
            publish_ns: stamp,
        };
        while p.try_publish_sym(&ev).is_err() {}
    } else {
        let mut msg = [7u8; 144];
        msg[..8].copy_from_slice(&stamp.to_le_bytes());
        while p.try_publish(&msg).is_err() {}
    }
}

fn recv(c: &mut Consumer, event: bool) -> u64 {
    let mut stamp = None;
    while stamp.is_none() {
        if event {
            c.poll_events(1, |r| stamp = r.ok().map(|e| e.publish_ns()))
                .expect("poll");
        } else {
            c.poll(1, |b| stamp = Some(u64::from_le_bytes(b[..8].try_into().expect("8"))))
                .expect("poll");
        }
    }
    stamp.unwrap_or(0)
}

fn main() {
    let event = std::env::args().nth(1).as_deref() != Some("raw");

    const N: usize = 1_000_000;
    let memfd = std::env::args().nth(2).as_deref() == Some("memfd");
    let pair = |name: &str| {
        if !memfd {
            return spsc::heap_pair(1 << 17).expect("ring");
        }
        let seg =
            std::sync::Arc::new(rim_ring::Segment::create_memfd(name, spsc::segment_bytes(1 << 17)).expect("memfd"));
        spsc::init(&seg).expect("init");
        (Producer::open(seg.clone()).expect("p"), Consumer::open(seg).expect("c"))
    };
    let (mut p1, mut c1) = pair("rtt-1");
    let (mut p2, mut c2) = pair("rtt-2");
    let s1 = intern(&mut p1, event);
    let echo = std::thread::spawn(move || {
        pin(1);
        let s2 = intern(&mut p2, event);
        for _ in 0..N + 10_000 {
            let stamp = recv(&mut c1, event);
            send(&mut p2, &s2, stamp, event);
        }
    });
    pin(0);
    let mut samples = Vec::with_capacity(N);
    let start = Instant::now();
    for i in 0..N + 10_000 {
        let t0 = rim_ring::clock::monotonic_ns();
        send(&mut p1, &s1, t0, event);
        let back = recv(&mut c2, event);
        let t1 = rim_ring::clock::monotonic_ns();
        assert_eq!(back, t0);
        if i >= 10_000 {
            samples.push(t1 - t0);
        }
    }
    let elapsed = start.elapsed();
    echo.join().expect("echo");
    samples.sort_unstable();
    let q = |f: f64| samples[((samples.len() as f64 * f) as usize).min(samples.len() - 1)];
    println!(
        "{}: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns ({:?} total)",
        if event { "event" } else { "raw" },
        q(0.5),
        q(0.99),
        q(0.999),
        samples[samples.len() - 1],
        elapsed
    );
}
