//! The wire format written down in `docs/design.md` is the one the code speaks: the test
//! vectors (`tests/vectors/wire-v1.json`) decode to the events and definitions they say,
//! are refused for the reasons they say (symbol numbering included), are what the encoder
//! writes, and the record frames, the segment header and the attach messages are byte for
//! byte what a producer, a consumer and the control socket exchange.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use rim_ring::attach::{self, AttachError, Role};
use rim_ring::event::RECORD_BYTES_MAX;
use rim_ring::wire::{AlignedRecord, Decoded, Decoder, Encoder};
use rim_ring::{spsc, Consumer, EventError, Producer, RimFastEvent, Segment, Sym, SymEvent, SymbolKind};
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/wire-v1.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("the vector file is JSON")
}

fn bytes(hex: &Value) -> Vec<u8> {
    let s = hex.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn kind(n: u64) -> SymbolKind {
    match n {
        1 => SymbolKind::NodeId,
        2 => SymbolKind::MetricName,
        3 => SymbolKind::Status,
        4 => SymbolKind::SourceTopic,
        _ => panic!("no symbol kind {n}"),
    }
}

/// The snake-case name the vectors give an error.
fn error_name(e: &EventError) -> &'static str {
    match e {
        EventError::NodeId(_) => "node_id",
        EventError::TooLong { .. } => "too_long",
        EventError::NotFinite { .. } => "not_finite",
        EventError::BadSymbol { .. } => "bad_symbol",
        EventError::Malformed(_) => "malformed",
        _ => "other",
    }
}

fn expected_event(v: &Value) -> RimFastEvent {
    serde_json::from_value(v.clone()).expect("an event in the platform's JSON")
}

/// Decodes one vector with `dec` and checks it against what it says it is.
fn check_decoded(dec: &mut Decoder, buf: &mut AlignedRecord, v: &Value) {
    let name = v["name"].as_str().unwrap_or("?");
    let raw = bytes(&v["hex"]);
    assert!(raw.len() <= RECORD_BYTES_MAX);
    buf.0[..raw.len()].copy_from_slice(&raw);
    let got = dec.decode(&buf.0[..raw.len()]);
    if let Some(why) = v["refused"].as_str() {
        match got {
            Err(e) => assert_eq!(error_name(&e), why, "{name}: {e}"),
            Ok(d) => panic!("{name}: taken as {d:?}, expected refused ({why})"),
        }
        return;
    }
    match got {
        Ok(Decoded::Defined { sym, kind: k }) => {
            let def = &v["define"];
            assert_eq!(u64::from(sym.get()), def["sym"].as_u64().expect("sym"), "{name}");
            assert_eq!(k, kind(def["kind"].as_u64().expect("kind")), "{name}");
            assert_eq!(dec.resolve(sym, k), def["text"].as_str(), "{name}");
        }
        Ok(Decoded::Event(ev)) => assert_eq!(ev.to_owned_event(), expected_event(&v["event"]), "{name}"),
        Err(e) => panic!("{name}: refused ({e})"),
    }
}

#[test]
fn records_decode_to_what_the_vectors_say_and_refusals_keep_the_numbering() {
    let v = vectors();
    let mut dec = Decoder::new();
    let mut buf = Box::new(AlignedRecord([0; RECORD_BYTES_MAX]));
    let records = v["records"].as_array().expect("records");
    let refusals = v["refusals"].as_array().expect("refusals");
    for r in records.iter().chain(refusals) {
        check_decoded(&mut dec, &mut buf, r);
    }
    assert_eq!(
        dec.symbol_count(),
        7,
        "six symbols and the poisoned one; the out-of-order one took none"
    );
}

#[test]
fn the_encoder_writes_exactly_the_vectors() {
    let v = vectors();
    let mut enc = Encoder::new();
    let mut syms: HashMap<(u64, String), Sym> = HashMap::new();
    for r in v["records"].as_array().expect("records") {
        let name = r["name"].as_str().unwrap_or("?");
        let want = bytes(&r["hex"]);
        if let Some(def) = r.get("define") {
            let k = def["kind"].as_u64().expect("kind");
            let text = def["text"].as_str().expect("text");
            let mut written = Vec::new();
            let sym = enc
                .intern(kind(k), text, &mut |rec: &[u8]| {
                    written = rec.to_vec();
                    Ok::<(), ()>(())
                })
                .expect("define");
            assert_eq!(written, want, "{name}");
            syms.insert((k, text.to_owned()), sym);
            continue;
        }
        let e = expected_event(&r["event"]);
        let sym = |k: u64, t: &str| syms[&(k, t.to_owned())];
        let metrics: Vec<(Sym, f64)> = e.critical_metrics.iter().map(|(n, x)| (sym(2, n), *x)).collect();
        let ev = SymEvent {
            node: sym(1, &e.rim_node_id),
            event_id: e.event_id.as_deref(),
            timestamp: e.timestamp,
            metrics: &metrics,
            price: e.price,
            volume: e.volume,
            stress: e.stress,
            status: sym(3, &e.status),
            source_topic: e.source_topic.as_deref().map(|t| sym(4, t)),
            publish_ns: e.publish_ns,
        };
        assert_eq!(enc.encode_event(&ev).expect("encode"), want.as_slice(), "{name}");
    }
}

/// Maps `seg` again, read-only, to read its bytes as another process would.
fn raw_view(seg: &Segment) -> memmap2::Mmap {
    let fd = seg.fd().expect("a memfd").try_clone_to_owned().expect("dup");
    // SAFETY: a read-only shared mapping of a sealed memfd (its size cannot change); the
    // bytes are only read, while this test's producer and consumer are idle.
    unsafe { memmap2::Mmap::map(&std::fs::File::from(fd)) }.expect("map")
}

fn word(map: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(map[off..off + 8].try_into().expect("8 bytes"))
}

#[test]
fn frames_and_the_header_are_laid_out_as_documented() {
    let v = vectors();
    let f = &v["frames"];
    let capacity = f["capacity"].as_u64().expect("capacity") as usize;
    let seg = Arc::new(Segment::create_memfd("vectors", spsc::segment_bytes(capacity)).expect("memfd"));
    spsc::init(&seg).expect("init");
    let mut p = Producer::open(seg.clone()).expect("producer");
    let mut c = Consumer::open(seg.clone()).expect("consumer");
    let map = raw_view(&seg);
    assert_eq!(&map[..24], bytes(&f["header_hex"]).as_slice(), "identity words");
    for (i, step) in f["steps"].as_array().expect("steps").iter().enumerate() {
        let n = step["payload_bytes"].as_u64().expect("bytes") as usize;
        p.try_publish(&vec![0x5A; n]).expect("publish");
        for (off, hex) in step["words"].as_object().expect("words") {
            let off: usize = off.parse().expect("offset");
            let want = u64::from_str_radix(hex.as_str().expect("hex"), 16).expect("hex");
            let got = word(&map, rim_ring::HEADER_BYTES + off);
            assert_eq!(got, want, "step {i}, data offset {off}: {got:016x} != {want:016x}");
        }
        c.poll(usize::MAX, |_| {}).expect("poll");
    }
}

#[test]
fn attach_messages_are_the_documented_bytes() {
    let v = vectors();
    let a = &v["attach"];
    let dir = std::env::temp_dir().join(format!("rim-vectors-{}", std::process::id()));
    let path = dir.join("rimd.sock");
    let listener = attach::listen(&path).expect("listen");

    // The client's request, byte for byte; a refusal reply as bytes reaches it as Refused.
    let client = {
        let path = path.clone();
        std::thread::spawn(move || attach::attach_producer(&path, "feed-1", 65_536))
    };
    let (mut s, _) = listener.accept().expect("accept");
    let mut req = [0u8; 64];
    s.read_exact(&mut req).expect("request");
    assert_eq!(req.as_slice(), bytes(&a["producer_request"]["hex"]).as_slice());
    s.write_all(&bytes(&a["refused_reply"]["hex"])).expect("reply");
    match client.join().expect("thread") {
        Err(AttachError::Refused(m)) => assert_eq!(m, a["refused_reply"]["message"].as_str().expect("message")),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The owner's side: the request's bytes as a client in any language would send them.
    listener.set_nonblocking(true).expect("non-blocking");
    for (key, role) in [
        ("producer_request", Role::Producer),
        ("subscriber_request", Role::Subscriber),
    ] {
        let mut peer = UnixStream::connect(&path).expect("connect");
        peer.write_all(&bytes(&a[key]["hex"])).expect("request bytes");
        let mut conn = loop {
            if let Some(c) = attach::accept_incoming(&listener).expect("accept") {
                break c;
            }
        };
        while !conn.read_available().expect("read") {}
        let r = conn.into_request().expect("a valid request");
        assert_eq!(
            (r.role, r.capacity as u64),
            (role, a[key]["capacity"].as_u64().expect("capacity"))
        );
        assert_eq!(r.name, a[key]["name"].as_str().expect("name"));
        let mut reply = [0u8; 64];
        if role == Role::Producer {
            let _consumer = r.grant_producer(1 << 20).expect("grant");
            peer.read_exact(&mut reply).expect("reply");
            assert_eq!(reply.as_slice(), bytes(&a["granted_reply"]["hex"]).as_slice());
        } else {
            let _ = r.refuse("quota: ingest.rings_per_pid_max");
            peer.read_exact(&mut reply).expect("reply");
            assert_eq!(reply.as_slice(), bytes(&a["refused_reply"]["hex"]).as_slice());
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
