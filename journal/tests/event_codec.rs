//! Guards the journal payload codec: every combination of optional fields and up to 64
//! metrics round-trips exactly; any truncation or random bytes decode to an error, never
//! a panic; limits are enforced on both sides; encoding never allocates.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Rng;
use rim_journal::event::{
    decode, decode_journaled, encode, encode_parsed, DecodeError, EncodeError, EventHead, EVENT_BYTES_MAX,
};

/// Counts allocations of the test thread that asks (others are ignored).
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local!(static COUNT_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });

// SAFETY: defers every operation to the system allocator unchanged; the counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_HERE.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn head(mask: u8) -> EventHead<'static> {
    EventHead {
        rim_node_id: "rim:equity:nyse:AAPL.O",
        event_id: (mask & 1 != 0).then_some("e-123"),
        timestamp: 1_764_000_000_123,
        publish_ns: 987_654_321,
        received_ms: 1_764_000_000_200,
        price: (mask & 2 != 0).then_some(101.25),
        volume: (mask & 4 != 0).then_some(-0.0),
        stress: (mask & 8 != 0).then_some(f64::MAX),
        status: "OK",
        source_topic: (mask & 16 != 0).then_some("rim.fast-path"),
    }
}

fn metric_names() -> Vec<String> {
    (0..64).map(|i| format!("m{i:02}-{}", "x".repeat(i % 61))).collect()
}

#[test]
fn every_optional_combination_and_metric_count_round_trips() {
    let names = metric_names();
    let mut buf = vec![0u8; EVENT_BYTES_MAX];
    for mask in 0..32u8 {
        for count in [0usize, 1, 4, 63, 64] {
            let h = head(mask);
            let metrics: Vec<(&str, f64)> = names[..count]
                .iter()
                .map(|n| (n.as_str(), n.len() as f64 * 0.5))
                .collect();
            let n = encode(&h, metrics.iter().copied(), &mut buf).expect("encode");
            let rec = decode(&buf[..n]).expect("decode");
            assert_eq!(rec.head(), h);
            assert_eq!(rec.metric_count(), count);
            assert_eq!(rec.metrics().collect::<Vec<_>>(), metrics);
            let ev = rec.to_event();
            assert_eq!(ev.critical_metrics.len(), count);
            assert_eq!(ev.price, h.price);
            assert_eq!(ev.event_id.as_deref(), h.event_id);
            assert!(ev.validate().is_ok());
        }
    }
}

#[test]
fn the_largest_event_fits_event_bytes_max() {
    let names: Vec<String> = (0..64).map(|i| format!("{i:02}{}", "n".repeat(62))).collect();
    let node = format!("rim:{}:{}:{}", "a".repeat(64), "b".repeat(64), "C".repeat(120));
    let (id, status, topic) = ("i".repeat(128), "s".repeat(64), "t".repeat(249));
    let h = EventHead {
        rim_node_id: &node,
        event_id: Some(&id),
        status: &status,
        source_topic: Some(&topic),
        price: Some(1.0),
        volume: Some(2.0),
        stress: Some(3.0),
        ..head(0)
    };
    let mut buf = vec![0u8; EVENT_BYTES_MAX];
    let n = encode(&h, names.iter().map(|s| (s.as_str(), 1.0)), &mut buf).expect("max event");
    assert!(n <= EVENT_BYTES_MAX);
    assert!(decode(&buf[..n]).is_ok());
    // One byte short: a clear error, not a panic.
    let e = encode(&h, names.iter().map(|s| (s.as_str(), 1.0)), &mut buf[..n - 1]).expect_err("short");
    assert!(matches!(e, EncodeError::BufferTooSmall { .. }), "{e}");
}

#[test]
fn encode_parsed_writes_what_encode_writes_and_a_bad_id_does_not_decode() {
    let names = metric_names();
    let (mut a, mut b) = (vec![0u8; EVENT_BYTES_MAX], vec![0u8; EVENT_BYTES_MAX]);
    for mask in [0, 31] {
        let metrics = || names[..5].iter().map(|s| (s.as_str(), 3.5));
        let n = encode(&head(mask), metrics(), &mut a).expect("encode");
        let m = encode_parsed(&head(mask), metrics(), &mut b).expect("encode_parsed");
        assert_eq!(a[..n], b[..m]);
    }
    // Skipping the id's parse is the caller's promise; broken, the record is refused on
    // the way back rather than trusted.
    let bad_node = EventHead {
        rim_node_id: "rim:UPPER:ns:x",
        ..head(0)
    };
    let n = encode_parsed(&bad_node, std::iter::empty(), &mut a).expect("written as is");
    assert!(decode(&a[..n]).is_err());
    // Read back from the journal, only the pattern goes unchecked: the id comes as written.
    assert_eq!(
        decode_journaled(&a[..n]).expect("journaled").rim_node_id,
        "rim:UPPER:ns:x"
    );
    let long = format!("rim:sensor:ns:{}", "x".repeat(300));
    let too_long = EventHead {
        rim_node_id: &long,
        ..head(0)
    };
    assert!(encode_parsed(&too_long, std::iter::empty(), &mut a).is_err());
}

#[test]
fn journaled_decoding_checks_all_but_the_id_pattern_and_metric_bytes_match_metrics() {
    let names = metric_names();
    let mut buf = vec![0u8; EVENT_BYTES_MAX];
    for mask in [0, 31] {
        let n = encode(&head(mask), names[..7].iter().map(|s| (s.as_str(), 1.25)), &mut buf).expect("encode");
        let (full, journaled) = (
            decode(&buf[..n]).expect("decode"),
            decode_journaled(&buf[..n]).expect("journaled"),
        );
        assert_eq!(full.head(), journaled.head());
        let bytes: Vec<(&[u8], f64)> = full.metric_bytes().collect();
        let texts: Vec<(&[u8], f64)> = full.metrics().map(|(m, v)| (m.as_bytes(), v)).collect();
        assert_eq!((bytes.len(), &bytes), (7, &texts));
        // Every other check stays: a name that is not UTF-8, a cut record.
        let at = buf[..n]
            .windows(names[0].len())
            .position(|w| w == names[0].as_bytes())
            .expect("name");
        let mut bad = buf[..n].to_vec();
        bad[at] = 0xff;
        assert!(decode_journaled(&bad).is_err());
        assert!(decode_journaled(&buf[..n - 1]).is_err());
    }
}

#[test]
fn limits_are_refused_on_encode() {
    let mut buf = vec![0u8; EVENT_BYTES_MAX];
    let bad_node = EventHead {
        rim_node_id: "rim:UPPER:ns:x",
        ..head(0)
    };
    assert!(encode(&bad_node, std::iter::empty(), &mut buf).is_err());
    let nan = EventHead {
        price: Some(f64::NAN),
        ..head(0)
    };
    assert!(encode(&nan, std::iter::empty(), &mut buf).is_err());
    let names = metric_names();
    let too_many = names.iter().map(|n| (n.as_str(), 1.0)).chain([("extra", 1.0)]);
    assert!(encode(&head(0), too_many, &mut buf).is_err());
    assert!(encode(&head(0), [("", 1.0)].into_iter(), &mut buf).is_err());
    assert!(encode(&head(0), [("m", f64::INFINITY)].into_iter(), &mut buf).is_err());
    let long = "s".repeat(65);
    let long_status = EventHead {
        status: &long,
        ..head(0)
    };
    let e = encode(&long_status, std::iter::empty(), &mut buf).expect_err("long status");
    assert!(e.to_string().contains("65"), "{e}");
}

#[test]
fn truncations_and_random_bytes_are_errors_never_panics() {
    let names = metric_names();
    let mut buf = vec![0u8; EVENT_BYTES_MAX];
    let n = encode(&head(31), names[..8].iter().map(|s| (s.as_str(), 2.0)), &mut buf).expect("encode");
    for cut in 0..n {
        assert!(decode(&buf[..cut]).is_err(), "truncated at {cut}");
    }
    let mut longer = buf[..n].to_vec();
    longer.push(0);
    assert_eq!(decode(&longer), Err(DecodeError::Trailing { extra: 1 }));
    let mut rng = Rng(0xDEC0DE);
    for _ in 0..20_000 {
        let len = rng.range(0, 600) as usize;
        let mut b = rng.bytes(len);
        if len > 1 && rng.range(0, 1) == 0 {
            b[0] = 1; // valid version, so decoding goes deeper
            b[1] &= 0x1F;
        }
        let _ = decode(&b);
    }
    // Single-bit flips of a valid event: decode either errs or yields a valid event.
    for byte in 0..n {
        for bit in 0..8 {
            let mut b = buf[..n].to_vec();
            b[byte] ^= 1 << bit;
            if let Ok(rec) = decode(&b) {
                let _ = rec.metrics().count();
            }
        }
    }
}

#[test]
fn encode_does_not_allocate() {
    let h = head(31);
    let metrics = [("bid", 1.5), ("ask", 1.6), ("last", 1.55), ("spread", 0.1)];
    let mut buf = [0u8; EVENT_BYTES_MAX];
    COUNT_HERE.with(|c| c.set(true));
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut total = 0;
    let t = std::time::Instant::now();
    let rounds = 100_000;
    for _ in 0..rounds {
        total += encode(&h, metrics.iter().copied(), &mut buf).expect("encode");
    }
    let elapsed = t.elapsed();
    let after = ALLOCS.load(Ordering::Relaxed);
    COUNT_HERE.with(|c| c.set(false));
    assert_eq!(after, before, "encode allocated");
    assert!(total > 0);
    eprintln!(
        "figures: encode of a 4-metric event {:.1} ns",
        elapsed.as_nanos() as f64 / rounds as f64
    );
}

#[test]
fn texts_beyond_ascii_decode_and_broken_utf8_is_refused_in_every_free_text() {
    // Decoding checks ASCII texts word-wise and hands any other text to `from_utf8`: a
    // multi-byte text must decode as written, and a broken one must fail in every field
    // but the node id (which `encode` holds to the RimNodeId pattern, ASCII only).
    let mut buf = vec![0u8; EVENT_BYTES_MAX];
    let h = EventHead {
        event_id: Some("é-123-ü"),
        status: "DÉGRADÉ",
        source_topic: Some("rim.fast-path.€"),
        ..head(31)
    };
    let names = ["température", "ładunek", "温度"];
    let n = encode(&h, names.iter().map(|s| (*s, 2.5)), &mut buf).expect("encode");
    let rec = decode(&buf[..n]).expect("decode");
    assert_eq!(rec.head(), h);
    assert_eq!(rec.metrics().map(|(m, _)| m).collect::<Vec<_>>(), names);
    for text in [
        "é-123-ü",
        "DÉGRADÉ",
        "rim.fast-path.€",
        "température",
        "ładunek",
        "温度",
    ] {
        let at = buf[..n]
            .windows(text.len())
            .position(|w| w == text.as_bytes())
            .expect("text in the record");
        // A continuation byte where a multi-byte sequence's lead was, and a lead byte
        // with no continuation where its last byte was.
        let lead = at + text.find(|c: char| !c.is_ascii()).expect("a non-ASCII char");
        for (i, b) in [(lead, 0x80), (at + text.len() - 1, 0xc3)] {
            let mut bad = buf[..n].to_vec();
            bad[i] = b;
            assert!(decode(&bad).is_err(), "{text}: byte {i} = {b:#x}");
            assert!(decode_journaled(&bad).is_err(), "{text}: byte {i} = {b:#x}");
        }
    }
}
