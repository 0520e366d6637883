//! Guards that nothing a producer can put in (or do to) a segment makes the consumer panic
//! or fault: garbage anywhere in the header or data, bytes changing while the consumer
//! copies them, malformed or mutated records, headers that lie about the size, unsealed
//! fds, and a producer that tries to resize its memfd. Every outcome must be one the API
//! names: records that decode or give an `EventError`, or `PollError::Quarantined`.
//!
//! `RIM_TEST_SEEDS` sets the number of random segments of the first test (default 2,000).

mod common;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::{
    accept_from, backoff, check_raw, child_socket, env_u64, event_ref, raw_record, templates, ChildProc, TempDir,
    XorShift, METRICS_BUF, RAW_BYTES_MAX, STALL_WATCHDOG, TEMPLATES,
};
use memmap2::MmapMut;
use rim_ring::spsc::{self, EventResult};
use rim_ring::wire::{Decoded, Decoder, Encoder};
use rim_ring::{
    attach, broadcast, Consumer, EventView, PollError, Producer, PublishError, RimNodeId, Segment, SegmentError,
    SymEvent, SymbolKind, HEADER_BYTES,
};

/// Header offsets from the layout in `header.rs`.
const CAPACITY_OFF: usize = 16;
const SLOT_BYTES_OFF: usize = 24;
const HEAD_OFF: usize = 144;

/// A ring in a sealed memfd, both ends in this process, and a second, writable mapping of
/// the same memory: the hands of a misbehaving producer.
struct ShmRing {
    p: Producer,
    c: Consumer,
    bytes: MmapMut,
}

fn writable_mapping(seg: &Segment) -> MmapMut {
    let fd = seg.fd().expect("memfd segment").try_clone_to_owned().expect("dup");
    let file = File::from(fd);
    // SAFETY: the memfd is sealed against shrinking, so the mapping stays backed for its
    // whole life. This process writes arbitrary bytes through it on purpose: the consumer
    // under test must treat the segment as untrusted memory that may change at any time.
    unsafe { MmapMut::map_mut(&file) }.expect("second mapping")
}

fn shm_ring(capacity: usize) -> ShmRing {
    let seg = Segment::create_memfd("rim-untrusted", spsc::segment_bytes(capacity)).expect("memfd");
    spsc::init(&seg).expect("init");
    let bytes = writable_mapping(&seg);
    let seg = Arc::new(seg);
    ShmRing {
        p: Producer::open(seg.clone()).expect("producer"),
        c: Consumer::open(seg).expect("consumer"),
        bytes,
    }
}

/// The data-model rules that any event the consumer delivers must satisfy.
fn check_delivered(v: &EventView<'_>) -> Result<(), String> {
    RimNodeId::parse(v.rim_node_id()).map_err(|e| format!("delivered node id {:?}: {e}", v.rim_node_id()))?;
    let owned = v.to_owned_event();
    owned
        .validate()
        .map_err(|e| format!("delivered event breaks the data model ({e}): {owned:?}"))?;
    let metrics = v.metrics().count();
    if metrics != v.metric_count() {
        return Err(format!("metrics() yields {metrics} of {} metrics", v.metric_count()));
    }
    Ok(())
}

/// What a random segment did to the consumer, over all seeds.
#[derive(Debug, Default)]
struct Outcomes {
    events_ok: u64,
    events_refused: u64,
    raw_records: u64,
    quarantined: u64,
}

/// Publishes valid raw records and events, reading some, so that the consumer sits
/// somewhere in the middle of a lap.
fn publish_valid(r: &mut ShmRing, rng: &mut XorShift, t: &[common::Template]) {
    let mut raw = [0u8; 512];
    for i in 0..rng.below(40) {
        let published = if rng.chance(2) {
            let len = rng.range(1, r.p.payload_max().min(raw.len()) as u64) as usize;
            rng.fill(&mut raw[..len]);
            r.p.try_publish(&raw[..len])
        } else {
            let mut buf = [("", 0.0); METRICS_BUF];
            r.p.try_publish_event(&event_ref(&t[i as usize % TEMPLATES], i, &mut buf))
        };
        match published {
            Ok(_) | Err(PublishError::Full { .. }) | Err(PublishError::TooLarge { .. }) => {}
            Err(e) => panic!("valid publish refused: {e}"),
        }
        if rng.chance(3) {
            let limit = rng.below(8) as usize;
            r.c.poll_events(limit, |_| {}).expect("valid records");
        }
    }
}

/// Overwrites 1 to 6 ranges of the whole segment: random bytes anywhere, or a header word
/// with the current lap's tag and a chosen kind and length at the consumer's position (so
/// that the checks behind the tag are reached, not just the tag compare).
fn corrupt(r: &mut ShmRing, rng: &mut XorShift, capacity: usize) {
    let len = r.bytes.len();
    for _ in 0..rng.range(1, 6) {
        match rng.below(4) {
            0 | 1 => {
                let off = rng.below(len as u64) as usize;
                let n = if rng.chance(8) {
                    len - off
                } else {
                    rng.range(1, 64.min(len - off) as u64) as usize
                };
                rng.fill(&mut r.bytes[off..off + n]);
            }
            2 => {
                let head = r.c.position();
                let lap = head / capacity as u64;
                let tag = (lap + rng.below(3)).wrapping_add(1) & 0xffff_ffff;
                let kind = [0u64, 1, 2, 3, 0xff][rng.below(5) as usize];
                let at = (head % capacity as u64) as usize;
                let room = (capacity - at - 8) as u64;
                let payload_max = r.p.payload_max() as u64;
                let rec_len = [
                    0,
                    1,
                    room,
                    room + 1,
                    payload_max,
                    payload_max + 1,
                    0xff_ffff,
                    rng.below(1 << 24),
                ][rng.below(8) as usize];
                let word = (tag << 32) | (kind << 24) | (rec_len & 0xff_ffff);
                let off = HEADER_BYTES + at;
                r.bytes[off..off + 8].copy_from_slice(&word.to_le_bytes());
            }
            _ => {
                let off = HEADER_BYTES + 8 * rng.below((capacity / 8) as u64) as usize;
                r.bytes[off..off + 8].copy_from_slice(&rng.next_u64().to_le_bytes());
            }
        }
    }
}

/// Polls a corrupted ring many ways; every outcome must be a named one.
fn poll_corrupted(r: &mut ShmRing, rng: &mut XorShift, out: &mut Outcomes) -> Result<(), String> {
    let mut quarantine: Option<PollError> = None;
    for _ in 0..8 {
        let limit = rng.range(1, 64) as usize;
        let _ = r.c.has_data();
        let _ = r.c.stats();
        let polled = if rng.chance(2) {
            let mut delivered = 0;
            let polled = r.c.poll(limit, |b| {
                assert!(
                    !b.is_empty() && b.len() <= spsc::PAYLOAD_BYTES_MAX,
                    "raw record of {} bytes",
                    b.len()
                );
                delivered += 1;
            });
            out.raw_records += delivered;
            polled
        } else {
            let mut failure = None;
            let polled = r.c.poll_events(limit, |res: EventResult<'_>| match res {
                Ok(v) => {
                    out.events_ok += 1;
                    if let Err(e) = check_delivered(&v) {
                        failure.get_or_insert(e);
                    }
                }
                Err(_) => out.events_refused += 1,
            });
            if let Some(e) = failure {
                return Err(e);
            }
            polled
        };
        match (polled, quarantine) {
            (Ok(n), None) if n <= limit => {}
            (Err(e @ PollError::Quarantined { .. }), None) => {
                out.quarantined += 1;
                quarantine = Some(e);
            }
            (Err(e), Some(q)) if e == q => {}
            (other, q) => {
                return Err(format!(
                    "unexpected poll outcome {other:?} (limit {limit}, quarantine {q:?})"
                ))
            }
        }
        if let Some(q) = quarantine {
            if r.c.quarantined() != Some(q) || r.c.has_data() {
                return Err(format!(
                    "quarantine {q:?} not sticky: {:?}, has_data {}",
                    r.c.quarantined(),
                    r.c.has_data()
                ));
            }
        }
    }
    // A parked wait must come back at once on a quarantined or garbage ring, never hang.
    let _ = r.c.wait(0, 1_000_000);
    Ok(())
}

#[test]
fn random_bytes_anywhere_in_the_segment_never_fault_the_consumer() {
    let seeds = env_u64("RIM_TEST_SEEDS", 2_000);
    let t = templates();
    let mut out = Outcomes::default();
    for seed in 0..seeds {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut rng = XorShift::new(seed);
            let capacity = [64usize, 128, 256, 512, 1024, 4096][rng.below(6) as usize];
            let mut r = shm_ring(capacity);
            publish_valid(&mut r, &mut rng, &t);
            corrupt(&mut r, &mut rng, capacity);
            poll_corrupted(&mut r, &mut rng, &mut out)
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("seed {seed}: {e}"),
            Err(p) => panic!("seed {seed}: the consumer panicked: {}", panic_message(&p)),
        }
    }
    println!("{seeds} corrupted segments: {out:?}");
    // The corruption reached every path: good records, refused ones, quarantines.
    assert!(
        out.events_ok > 0 && out.events_refused > 0 && out.raw_records > 0 && out.quarantined > 0,
        "{out:?}"
    );
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// The consumer's own position is the one thing it takes from the segment when it opens:
/// a garbage one must be refused or survived, not make a later poll panic.
#[test]
fn a_consumer_opened_on_a_garbage_consumed_position_does_not_fault() {
    for head in [3u64, 4, 1 << 63 | 5, u64::MAX - 3] {
        let seg = Segment::create_memfd("rim-untrusted", spsc::segment_bytes(1024)).expect("memfd");
        spsc::init(&seg).expect("init");
        let mut bytes = writable_mapping(&seg);
        bytes[HEAD_OFF..HEAD_OFF + 8].copy_from_slice(&head.to_le_bytes());
        let result = catch_unwind(AssertUnwindSafe(|| match Consumer::open(Arc::new(seg)) {
            Err(_) => {}
            Ok(mut c) => {
                let _ = c.has_data();
                let polled = c.poll(16, |_| {});
                assert!(
                    matches!(polled, Ok(0) | Err(PollError::Quarantined { .. })),
                    "{polled:?}"
                );
            }
        }));
        assert!(
            result.is_ok(),
            "consumed position {head:#x}: {}",
            result.err().map(|p| panic_message(&p)).unwrap_or_default()
        );
    }
}

/// The TOCTOU case: bytes change while the consumer validates and copies them. It copies
/// first and reads only its copy, so it must deliver valid events, refuse broken ones or
/// quarantine, never crash.
#[test]
fn a_scribbler_racing_the_consumer_never_faults_it() {
    let t = templates();
    let rounds = 200u64;
    let mut totals = Outcomes::default();
    for round in 0..rounds {
        let capacity = 4096;
        let ShmRing {
            mut p,
            mut c,
            mut bytes,
        } = shm_ring(capacity);
        let stop = AtomicBool::new(false);
        let writes = AtomicU64::new(0);
        let result = std::thread::scope(|s| {
            let (stop, writes) = (&stop, &writes);
            let scribbler = s.spawn(move || {
                let mut rng = XorShift::new(round);
                let data = &mut bytes[HEADER_BYTES..HEADER_BYTES + capacity];
                while !stop.load(Ordering::Relaxed) {
                    let off = rng.below(capacity as u64) as usize;
                    let n = rng.range(1, 16.min(capacity - off) as u64) as usize;
                    rng.fill(&mut data[off..off + n]);
                    if writes.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            });
            let consumer = s.spawn(move || {
                let mut out = Outcomes::default();
                let mut failure = None;
                while !stop.load(Ordering::Relaxed) {
                    let polled = c.poll_events(64, |res: EventResult<'_>| match res {
                        Ok(v) => {
                            out.events_ok += 1;
                            if let Err(e) = check_delivered(&v) {
                                failure.get_or_insert(e);
                            }
                        }
                        Err(_) => out.events_refused += 1,
                    });
                    match polled {
                        Err(PollError::Quarantined { .. }) => {
                            out.quarantined += 1;
                            break;
                        }
                        Ok(0) => std::thread::yield_now(),
                        _ => {}
                    }
                }
                (out, failure)
            });
            while writes.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            'publish: for i in 0..1_000u64 {
                let mut buf = [("", 0.0); METRICS_BUF];
                let ev = event_ref(&t[i as usize % TEMPLATES], i, &mut buf);
                // A scribbled header can stall the consumer for good ("nothing yet" where
                // the producer wrote): the round ends when it makes no room for a while.
                for attempt in 0.. {
                    match p.try_publish_event(&ev) {
                        Ok(_) => break,
                        Err(PublishError::Full { .. }) if attempt < 2_000 && !consumer.is_finished() => {
                            std::thread::yield_now()
                        }
                        Err(PublishError::Full { .. } | PublishError::Quarantined) => break 'publish,
                        Err(e) => panic!("round {round}: valid publish refused: {e}"),
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            scribbler.join().expect("scribbler");
            (consumer.join(), writes.load(Ordering::Relaxed))
        });
        match result {
            (Ok((out, None)), writes) => {
                assert!(writes > 0, "round {round}: the scribbler never wrote");
                totals.events_ok += out.events_ok;
                totals.events_refused += out.events_refused;
                totals.quarantined += out.quarantined;
            }
            (Ok((_, Some(e))), _) => panic!("round {round}: {e}"),
            (Err(p), _) => panic!("round {round}: the consumer panicked: {}", panic_message(&p)),
        }
    }
    println!("{rounds} scribbled rings: {totals:?}");
    assert!(
        totals.events_ok > 0 && totals.events_refused > 0 && totals.quarantined > 0,
        "the race reached every outcome: {totals:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Records, outside any ring

/// A buffer aligned like the consumer's scratch, larger than any record.
#[repr(C, align(16))]
struct Aligned([u8; 8192]);

/// The records a producer publishes for `events` events of the stream: each `Define` the
/// first time a string is used, then the event.
fn encoded_stream(events: impl IntoIterator<Item = u64>) -> Vec<Vec<u8>> {
    let t = templates();
    let mut enc = Encoder::new();
    let mut records = Vec::new();
    for i in events {
        let mut buf = [("", 0.0); METRICS_BUF];
        let mut defines = Vec::new();
        let event = enc
            .encode_ref(&event_ref(&t[i as usize % TEMPLATES], i, &mut buf), |d: &[u8]| {
                defines.push(d.to_vec());
                Ok::<(), ()>(())
            })
            .expect("valid event")
            .to_vec();
        records.extend(defines);
        records.push(event);
    }
    records
}

/// Decodes `bytes` (copied to an aligned buffer, starting at `misalign`) and checks that
/// whatever decodes obeys the data model.
fn decode_checked(dec: &mut Decoder, buf: &mut Aligned, bytes: &[u8], misalign: usize) -> Result<bool, String> {
    let view = &mut buf.0[misalign..misalign + bytes.len()];
    view.copy_from_slice(bytes);
    match dec.decode(view) {
        Ok(Decoded::Event(v)) => check_delivered(&v).map(|()| true),
        Ok(Decoded::Defined { sym, kind }) => {
            let text = dec
                .resolve(sym, kind)
                .ok_or_else(|| format!("defined {sym:?} does not resolve"))?;
            kind.validate(text)
                .map_err(|e| format!("defined {kind:?} {text:?} is invalid: {e}"))?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

#[test]
fn random_and_mutated_records_decode_or_are_refused() {
    let stream = encoded_stream(0..3 * TEMPLATES as u64);
    let mut buf = Box::new(Aligned([0; 8192]));
    // A decoder that knows the stream's symbols, so random events can resolve some.
    let mut primed = Decoder::new();
    for r in &stream {
        assert_eq!(
            decode_checked(&mut primed, &mut buf, r, 0),
            Ok(true),
            "the valid stream decodes"
        );
    }
    let mut rng = XorShift::new(0xdec0de);
    let (mut ok, mut refused) = (0u64, 0u64);
    for case in 0..20_000u64 {
        let mut bytes = match rng.below(3) {
            // Pure noise of any length, including past RECORD_BYTES_MAX.
            0 => {
                let len = [rng.below(64), rng.below(512), rng.below(4200)][rng.below(3) as usize] as usize;
                let mut b = vec![0u8; len];
                rng.fill(&mut b);
                b
            }
            // A valid record with a few bytes changed, or cut short, or extended.
            _ => {
                let mut b = stream[rng.below(stream.len() as u64) as usize].clone();
                match rng.below(3) {
                    0 => b.truncate(rng.below(b.len() as u64) as usize),
                    1 => b.extend((0..rng.range(1, 64)).map(|_| rng.next_u64() as u8)),
                    _ => {}
                }
                for _ in 0..rng.range(1, 4) {
                    if !b.is_empty() {
                        let at = rng.below(b.len() as u64) as usize;
                        b[at] = rng.next_u64() as u8;
                    }
                }
                b
            }
        };
        bytes.truncate(8192 - 8);
        let misalign = if rng.chance(10) { rng.range(1, 7) as usize } else { 0 };
        let mut fresh = Decoder::new();
        let dec = if rng.chance(2) { &mut primed } else { &mut fresh };
        let result = catch_unwind(AssertUnwindSafe(|| decode_checked(dec, &mut buf, &bytes, misalign)));
        match result {
            Ok(Ok(true)) => ok += 1,
            Ok(Ok(false)) => refused += 1,
            Ok(Err(e)) => panic!("case {case}: {e}\nbytes {bytes:02x?}"),
            Err(p) => panic!(
                "case {case}: decode panicked: {}\nbytes {bytes:02x?}",
                panic_message(&p)
            ),
        }
    }
    println!("random records: {ok} decoded, {refused} refused");
    assert!(ok > 0 && refused > 0);
}

/// Every byte of each event record takes every other value; every byte of each `Define`
/// record takes seven (0, 0xff, ±1, three bit flips), since a mutated definition is
/// followed by the whole rest of the stream.
#[test]
fn every_single_byte_mutation_of_a_valid_record_decodes_validly_or_is_refused() {
    // Events at the limits: a 256-byte node id, a 128-byte event_id, a 249-byte topic, six
    // metrics with non-ASCII names, an empty status and event_id, absent fields.
    let stream = encoded_stream([1, 5, 6, 8, 9, 13]);
    let mut buf = Box::new(Aligned([0; 8192]));
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut prefix = Decoder::new();
    for (index, record) in stream.iter().enumerate() {
        let is_event = {
            let mut probe = Decoder::new();
            for r in &stream[..index] {
                decode_checked(&mut probe, &mut buf, r, 0).expect("prefix");
            }
            buf.0[..record.len()].copy_from_slice(record);
            matches!(probe.decode(&buf.0[..record.len()]), Ok(Decoded::Event(_)))
        };
        for at in 0..record.len() {
            let b = record[at];
            let values: Vec<u8> = if is_event {
                (0..=255).collect()
            } else {
                vec![0, 0xff, b ^ 1, b ^ 0x20, b ^ 0x80, b.wrapping_add(1), b.wrapping_sub(1)]
            };
            for value in values {
                if value == b {
                    continue;
                }
                let mut bytes = record.clone();
                bytes[at] = value;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    if is_event {
                        // Events leave the table alone: decode against the prefix's table.
                        decode_checked(&mut prefix, &mut buf, &bytes, 0)
                    } else {
                        // A definition changes the table: start from the prefix each time,
                        // then check the events of the stream against what it defined.
                        let mut dec = Decoder::new();
                        for r in &stream[..index] {
                            decode_checked(&mut dec, &mut buf, r, 0)?;
                        }
                        let decoded = decode_checked(&mut dec, &mut buf, &bytes, 0)?;
                        for r in &stream[index + 1..] {
                            decode_checked(&mut dec, &mut buf, r, 0)?;
                        }
                        Ok(decoded)
                    }
                }));
                match result {
                    Ok(Ok(true)) => ok += 1,
                    Ok(Ok(false)) => refused += 1,
                    Ok(Err(e)) => panic!("record {index}, byte {at} = {value:#04x}: {e}"),
                    Err(p) => panic!(
                        "record {index}, byte {at} = {value:#04x}: decode panicked: {}",
                        panic_message(&p)
                    ),
                }
            }
        }
        decode_checked(&mut prefix, &mut buf, record, 0).expect("the valid record");
    }
    println!("single-byte mutations: {ok} decoded validly, {refused} refused");
    assert!(ok > 0 && refused > 0);
}

/// The consumer checks metric names for uniqueness by symbol number. A producer that
/// defines the same name twice (two numbers, one text) must not get an event with a
/// repeated metric name past it.
#[test]
fn a_producer_cannot_smuggle_duplicate_metric_names_past_the_consumer() {
    // Two encoders: the first numbers node 1, status 2, "bid" 3; the second numbers node 1,
    // status 2, "x" 3, "bid" 4. Its definition of 4 and its event [(3, ..), (4, ..)] follow
    // the first's definitions: to the consumer, 3 and 4 would both be "bid".
    let mut first: Vec<Vec<u8>> = Vec::new();
    let mut second: Vec<Vec<u8>> = Vec::new();
    let mut enc = Encoder::new();
    let mut sink = |r: &[u8]| {
        first.push(r.to_vec());
        Ok::<(), ()>(())
    };
    for (kind, text) in [
        (SymbolKind::NodeId, "rim:equity:nyse:AAPL"),
        (SymbolKind::Status, "OK"),
        (SymbolKind::MetricName, "bid"),
    ] {
        enc.intern(kind, text, &mut sink).expect("define");
    }
    let mut enc2 = Encoder::new();
    let mut sink2 = |r: &[u8]| {
        second.push(r.to_vec());
        Ok::<(), ()>(())
    };
    let node = enc2
        .intern(SymbolKind::NodeId, "rim:equity:nyse:AAPL", &mut sink2)
        .expect("node");
    let status = enc2.intern(SymbolKind::Status, "OK", &mut sink2).expect("status");
    let x = enc2.intern(SymbolKind::MetricName, "x", &mut sink2).expect("x");
    let bid = enc2.intern(SymbolKind::MetricName, "bid", &mut sink2).expect("bid");
    assert_eq!((x.get(), bid.get()), (3, 4));
    let metrics = [(x, 1.0), (bid, 2.0)];
    let ev = SymEvent {
        node,
        event_id: None,
        timestamp: 1,
        metrics: &metrics,
        price: None,
        volume: None,
        stress: None,
        status,
        source_topic: None,
        publish_ns: 1,
    };
    let event = enc2.encode_event(&ev).expect("valid for the second encoder").to_vec();
    let mut records = first;
    records.push(second[3].clone());
    records.push(event);

    let (mut p, mut c) = spsc::heap_pair(4096).expect("ring");
    for r in &records {
        p.try_publish(r).expect("publish crafted record");
    }
    let mut delivered = Vec::new();
    c.poll_events(usize::MAX, |res| {
        if let Ok(v) = res {
            delivered.push(v.to_owned_event());
        }
    })
    .expect("poll");
    for ev in &delivered {
        assert_eq!(
            ev.validate(),
            Ok(()),
            "the consumer delivered an event that breaks the data model: {ev:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Segments that lie about their size, or could change it

fn spsc_with_word(capacity: usize, off: usize, value: u64) -> Arc<Segment> {
    let seg = Segment::create_memfd("rim-untrusted", spsc::segment_bytes(capacity)).expect("memfd");
    spsc::init(&seg).expect("init");
    writable_mapping(&seg)[off..off + 8].copy_from_slice(&value.to_le_bytes());
    Arc::new(seg)
}

#[test]
fn a_header_that_claims_more_than_the_mapping_or_is_not_a_ring_is_refused() {
    let len = spsc::segment_bytes(1024);
    for capacity in [1u64 << 40, 1 << 63, 2048] {
        let seg = spsc_with_word(1024, CAPACITY_OFF, capacity);
        let needed = HEADER_BYTES + capacity as usize;
        for err in [
            Consumer::open(seg.clone()).expect_err("consumer"),
            Producer::open(seg).expect_err("producer"),
        ] {
            assert!(
                matches!(err, SegmentError::Truncated { len: l, needed: n } if l == len && n == needed),
                "capacity {capacity}: {err:?}"
            );
        }
    }
    for capacity in [0u64, 32, 100, 1000] {
        let err = Consumer::open(spsc_with_word(1024, CAPACITY_OFF, capacity)).expect_err("bad capacity");
        assert!(
            matches!(err, SegmentError::BadSize { bytes, .. } if bytes as u64 == capacity),
            "{capacity}: {err:?}"
        );
    }
    let err = Consumer::open(spsc_with_word(1024, 0, u64::from_le_bytes(*b"NOTARING"))).expect_err("magic");
    assert!(
        matches!(err, SegmentError::BadHeader("magic is not RIMDRING")),
        "{err:?}"
    );
    let err = Consumer::open(spsc_with_word(1024, 8, (2 << 32) | 1)).expect_err("version");
    assert!(matches!(err, SegmentError::BadHeader("unsupported version")), "{err:?}");
    let err = Consumer::open(spsc_with_word(1024, 8, (1 << 32) | 2)).expect_err("kind");
    assert!(matches!(err, SegmentError::BadHeader("wrong ring kind")), "{err:?}");
    let err = Consumer::open(Arc::new(Segment::heap(128).expect("heap"))).expect_err("smaller than a header");
    assert!(
        matches!(
            err,
            SegmentError::Truncated {
                len: 128,
                needed: HEADER_BYTES
            }
        ),
        "{err:?}"
    );

    // A broadcast header whose slots do not fit the mapping.
    let bytes = broadcast::segment_bytes(8, 64).expect("size");
    let seg = Segment::create_memfd("rim-untrusted", bytes).expect("memfd");
    broadcast::init(&seg, 8, 64).expect("init");
    writable_mapping(&seg)[CAPACITY_OFF..CAPACITY_OFF + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = broadcast::Reader::open(Arc::new(seg)).expect_err("slots past the mapping");
    // 2^40 slots exceed even the largest segment: refused as a bad size before any mapping
    // arithmetic.
    assert!(
        matches!(err, SegmentError::Truncated { len, .. } if len == bytes)
            || matches!(err, SegmentError::BadSize { bytes: b, .. } if b == 1 << 40),
        "{err:?}"
    );
}

/// A slot count whose byte size overflows must be refused like any other that does not fit.
#[test]
fn a_broadcast_header_whose_size_overflows_is_refused() {
    let bytes = broadcast::segment_bytes(8, 64).expect("size");
    for slots in [1u64 << 62, 1 << 63] {
        let seg = Segment::create_memfd("rim-untrusted", bytes).expect("memfd");
        broadcast::init(&seg, 8, 64).expect("init");
        let mut map = writable_mapping(&seg);
        map[CAPACITY_OFF..CAPACITY_OFF + 8].copy_from_slice(&slots.to_le_bytes());
        map[SLOT_BYTES_OFF..SLOT_BYTES_OFF + 8].copy_from_slice(&8u64.to_le_bytes());
        let seg = Arc::new(seg);
        let result = catch_unwind(AssertUnwindSafe(|| broadcast::Reader::open(seg.clone()).map(|_| ())));
        match result {
            Ok(Err(SegmentError::Truncated { .. } | SegmentError::BadSize { .. })) => {}
            Ok(other) => panic!("slots {slots:#x}: {other:?}"),
            Err(p) => panic!("slots {slots:#x}: Reader::open panicked: {}", panic_message(&p)),
        }
    }
}

fn memfd(flags: libc::c_uint, len: u64, seals: libc::c_int) -> OwnedFd {
    // SAFETY: the name is a NUL-terminated literal; memfd_create returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(c"rim-unsealed".as_ptr(), flags) };
    assert!(raw >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let file = File::from(fd);
    file.set_len(len).expect("size");
    let fd = OwnedFd::from(file);
    if seals != 0 {
        // SAFETY: fcntl on a valid fd with an integer argument.
        let rc = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_ADD_SEALS, seals) };
        assert_eq!(rc, 0, "F_ADD_SEALS: {}", std::io::Error::last_os_error());
    }
    fd
}

#[test]
fn an_fd_whose_size_can_change_is_refused() {
    let path = std::env::temp_dir().join(format!("rim-ring-test-plain-{}", std::process::id()));
    let file = File::create(&path).expect("plain file");
    file.set_len(4096).expect("size");
    let err = Segment::from_fd(OwnedFd::from(file)).expect_err("a plain file");
    let _ = std::fs::remove_file(&path);
    assert!(matches!(err, SegmentError::NotSealed { seals: 0 }), "{err:?}");

    // Created without MFD_ALLOW_SEALING: the kernel reports it as sealed against sealing only.
    let err = Segment::from_fd(memfd(libc::MFD_CLOEXEC, 4096, 0)).expect_err("unsealable memfd");
    assert!(
        matches!(
            err,
            SegmentError::NotSealed {
                seals: libc::F_SEAL_SEAL
            }
        ),
        "{err:?}"
    );
    let sealing = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let err = Segment::from_fd(memfd(sealing, 4096, libc::F_SEAL_SHRINK)).expect_err("can still grow");
    assert!(
        matches!(
            err,
            SegmentError::NotSealed {
                seals: libc::F_SEAL_SHRINK
            }
        ),
        "{err:?}"
    );
    let err = Segment::from_fd(memfd(sealing, 4096, libc::F_SEAL_GROW)).expect_err("can still shrink");
    assert!(
        matches!(
            err,
            SegmentError::NotSealed {
                seals: libc::F_SEAL_GROW
            }
        ),
        "{err:?}"
    );
    let both = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    let err = Segment::from_fd(memfd(sealing, 100, both)).expect_err("not a multiple of 64");
    assert!(matches!(err, SegmentError::Truncated { len: 100, .. }), "{err:?}");
    assert_eq!(
        Segment::from_fd(memfd(sealing, 4096, both)).expect("sealed").len(),
        4096
    );
}

// A producer process that tries to resize the memfd it was handed.

const RESIZE_CHILD: &str = "child_tries_to_resize_its_memfd";
const RESIZE_RECORDS: u64 = 20_000;

#[test]
fn a_producer_cannot_resize_its_memfd_and_the_consumer_keeps_reading() {
    let dir = TempDir::new("resize");
    let sock = dir.path().join("rimd.sock");
    let listener = attach::listen(&sock).expect("listen");
    let mut child = ChildProc::spawn(RESIZE_CHILD, "resize", dir.path(), &sock, &[]);
    let mut c = accept_from(&listener, &mut child, STALL_WATCHDOG)
        .grant_producer(4096)
        .expect("grant");
    let mut next = 0u64;
    let mut last_progress = Instant::now();
    while next < 2 * RESIZE_RECORDS {
        let got = c
            .poll(usize::MAX, |b| {
                if let Err(e) = check_raw(next, b) {
                    panic!("{e}");
                }
                next += 1;
            })
            .unwrap_or_else(|e| panic!("poll after {next}: {e}"));
        if got > 0 {
            last_progress = Instant::now();
        } else if !c.wait(50_000, 10_000_000) {
            child.assert_not_failed("while resizing");
            assert!(
                last_progress.elapsed() < STALL_WATCHDOG,
                "watchdog: stuck at {next}\n{}",
                child.log()
            );
        }
    }
    let status = child.wait(STALL_WATCHDOG);
    assert!(status.success(), "{status}\n{}", child.log());
    let eperm = libc::EPERM.to_string();
    assert_eq!(child.reported("SHRINK_ERRNO").as_ref(), Some(&eperm), "{}", child.log());
    assert_eq!(child.reported("GROW_ERRNO").as_ref(), Some(&eperm), "{}", child.log());
    assert_eq!(c.poll(usize::MAX, |_| panic!("no more records")), Ok(0));
    assert_eq!(c.quarantined(), None);
    assert_eq!(c.stats().delivered, 2 * RESIZE_RECORDS);
}

#[test]
fn child_tries_to_resize_its_memfd() {
    let Some(sock) = child_socket("resize") else { return };
    let mut p = attach::attach_producer(&sock, "resize", 4096).expect("attach_producer");
    let mut buf = [0u8; RAW_BYTES_MAX];
    let mut publish = |p: &mut Producer, seq: u64| {
        let len = raw_record(seq, &mut buf);
        let mut attempt = 0;
        loop {
            match p.try_publish(&buf[..len]) {
                Ok(_) => return,
                Err(PublishError::Full { .. }) => {
                    attempt += 1;
                    backoff(attempt);
                }
                Err(e) => panic!("publish {seq}: {e}"),
            }
        }
    };
    for seq in 0..RESIZE_RECORDS {
        publish(&mut p, seq);
    }
    // The received memfd, reopened through /proc read-write, as a hostile producer would.
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").expect("fds") {
        let path = entry.expect("fd").path();
        if std::fs::read_link(&path).is_ok_and(|l| l.to_string_lossy().contains("memfd:rimd-resize")) {
            found = Some(path);
        }
    }
    let path = found.expect("the received memfd is among this process's fds");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("reopen the memfd");
    let shrink = file.set_len(0).expect_err("shrinking a sealed memfd must fail");
    let grow = file.set_len(1 << 20).expect_err("growing a sealed memfd must fail");
    println!("\nSHRINK_ERRNO={}", shrink.raw_os_error().unwrap_or(-1));
    println!("GROW_ERRNO={}", grow.raw_os_error().unwrap_or(-1));
    for seq in RESIZE_RECORDS..2 * RESIZE_RECORDS {
        publish(&mut p, seq);
    }
    p.close();
}
