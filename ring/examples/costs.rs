//! Single-thread cost of each step of the event path, ns per event (4 metrics).
//! `cargo run --release -p rim-ring --example costs` (set COSTS_N to change the count).

use std::hint::black_box;
use std::time::Instant;

use rim_ring::wire::{AlignedRecord, Decoded, Decoder, Encoder};
use rim_ring::{EventRef, SymEvent, SymbolKind};

fn per_event(n: u64, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n: u64 = std::env::var("COSTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let metrics = [("bid", 101.0), ("ask", 101.5), ("spread", 0.5), ("depth", 1200.0)];
    let ev = |i: u64| EventRef {
        rim_node_id: "rim:equity:nyse:AAPL.O",
        event_id: None,
        timestamp: i as i64,
        critical_metrics: &metrics[..],
        price: Some(101.25),
        volume: Some(300.0),
        stress: None,
        status: "OK",
        source_topic: None,
        publish_ns: i + 1,
    };
    let mut enc = Encoder::new();
    let mut dec = Decoder::new();
    let mut records = Vec::new();
    // Define the strings once, feeding the definitions to the decoder.
    enc.encode_ref(&ev(0), |d: &[u8]| {
        records.push(d.to_vec());
        Ok::<(), ()>(())
    })
    .expect("first encode");
    let mut rec = Box::new(AlignedRecord([0; 4096]));
    for d in &records {
        rec.0[..d.len()].copy_from_slice(d);
        dec.decode(&rec.0[..d.len()]).expect("define");
    }
    let mut never = |_: &[u8]| Err::<(), ()>(());
    let node = enc
        .intern(SymbolKind::NodeId, "rim:equity:nyse:AAPL.O", &mut never)
        .expect("node");
    let status = enc.intern(SymbolKind::Status, "OK", &mut never).expect("status");
    let syms: Vec<_> = metrics
        .iter()
        .map(|(m, v)| (enc.intern(SymbolKind::MetricName, m, &mut never).expect("metric"), *v))
        .collect();
    let sym_ev = |i: u64| SymEvent {
        node,
        event_id: None,
        timestamp: i as i64,
        metrics: &syms,
        price: Some(101.25),
        volume: Some(300.0),
        stress: None,
        status,
        source_topic: None,
        publish_ns: i + 1,
    };
    let validate = per_event(n, |i| {
        black_box(black_box(ev(i)).validate()).expect("valid");
    });
    let encode_ref = per_event(n, |i| {
        black_box(enc.encode_ref(black_box(&ev(i)), &mut never).expect("encode").len());
    });
    let encode_sym = per_event(n, |i| {
        black_box(enc.encode_event(black_box(&sym_ev(i))).expect("encode").len());
    });
    let bytes = enc.encode_event(&sym_ev(7)).expect("encode").to_vec();
    rec.0[..bytes.len()].copy_from_slice(&bytes);
    let decode = per_event(n, |_| match dec.decode(black_box(&rec.0[..bytes.len()])) {
        Ok(Decoded::Event(v)) => {
            black_box(v.timestamp());
        }
        other => panic!("{other:?}"),
    });
    let clock = per_event(n, |_| {
        black_box(rim_ring::clock::monotonic_ns());
    });
    println!("archived event {} B", bytes.len());
    println!(
        "validate strings {validate:.1} ns | encode from strings {encode_ref:.1} ns | encode from symbols {encode_sym:.1} ns | decode+validate {decode:.1} ns | clock {clock:.1} ns"
    );
}
