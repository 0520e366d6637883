//! A quick look at the event path's cost in one process: one thread publishes full
//! RimFastEvents (4 metrics) as fast as the ring takes them, another validates every one.
//! The real, two-process numbers come from `rim-bench ring`.
//!
//! `cargo run --release -p rim-ring --example pingpong_events`

use std::time::Instant;

use rim_ring::{spsc, SymEvent, SymbolKind};

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity
    // reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    const EVENTS: u64 = 20_000_000;
    let (mut producer, mut consumer) = spsc::heap_pair(1 << 20).expect("ring");
    let reader = std::thread::spawn(move || {
        pin(1);
        let mut seen = 0u64;
        let mut sum = 0.0f64;
        let mut bad = 0u64;
        let start = Instant::now();
        while seen < EVENTS {
            let n = consumer
                .poll_events(256, |ev| match ev {
                    Ok(ev) => {
                        seen += 1;
                        sum += ev.metrics().map(|(_, v)| v).sum::<f64>() + ev.timestamp() as f64;
                    }
                    Err(_) => bad += 1,
                })
                .expect("poll");
            if n == 0 {
                std::hint::spin_loop();
            }
        }
        (start.elapsed(), sum, bad)
    });
    pin(0);
    let names = ["bid", "ask", "spread", "depth"];
    let node = producer
        .intern(SymbolKind::NodeId, "rim:equity:nyse:AAPL.O")
        .expect("node");
    let status = producer.intern(SymbolKind::Status, "OK").expect("status");
    let mut metrics = [(node, 0.0); 4];
    for (slot, name) in metrics.iter_mut().zip(names) {
        slot.0 = producer.intern(SymbolKind::MetricName, name).expect("metric");
    }
    let mut full = 0u64;
    let mut now = 0;
    for i in 0..EVENTS {
        // One clock read per 32 events, as a feed handler stamping a packet's updates would.
        if i % 32 == 0 {
            now = rim_ring::clock::monotonic_ns();
        }
        for (j, m) in metrics.iter_mut().enumerate() {
            m.1 = (i + j as u64) as f64;
        }
        let ev = SymEvent {
            node,
            event_id: None,
            timestamp: i as i64,
            metrics: &metrics,
            price: Some(101.25),
            volume: Some(300.0),
            stress: None,
            status,
            source_topic: None,
            publish_ns: now,
        };
        while let Err(e) = producer.try_publish_sym(&ev) {
            match e {
                spsc::PublishError::Full { .. } => {
                    full += 1;
                    std::hint::spin_loop();
                }
                other => panic!("{other}"),
            }
        }
    }
    let (elapsed, sum, bad) = reader.join().expect("reader");
    println!(
        "{EVENTS} events in {:?}: {:.1} M validated events/s (full refusals {full}, invalid {bad}, checksum {sum:.0})",
        elapsed,
        EVENTS as f64 / elapsed.as_secs_f64() / 1e6
    );
}
