//! Shared-memory rings: every byte of a producer's segment is written by a process the
//! daemon does not trust. Two ways in, chosen by the first byte:
//! - records: length-prefixed payloads published as they are (symbol definitions and
//!   events in the wire format, or garbage) and read back by a consumer, which validates
//!   each against its symbol table;
//! - segment: the whole segment (header and data) is the input, written into a real memfd
//!   segment that a consumer then opens and polls until it stops or quarantines the ring.
//!
//! Either way: every record is an event, a definition or a typed error, the consumer
//! never reads outside the segment, never panics, and a quarantined ring stays quarantined.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rim_ring::{spsc, Consumer, PollError, Segment, HEADER_BYTES};

/// Data bytes of the fuzzed rings: small, so that wrapping and padding are reached.
const CAPACITY: usize = 4096;
/// Polls per input: each delivers at most `POLL_BUDGET` records.
const POLLS_MAX: usize = 64;
const POLL_BUDGET: usize = 32;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => records(rest),
        Some((_, rest)) => segment(rest),
        None => {}
    }
});

/// Payloads as `[u16 little-endian length][bytes]...`, published raw and polled as events.
fn records(mut data: &[u8]) {
    let Ok((mut producer, mut consumer)) = spsc::heap_pair(CAPACITY) else {
        return;
    };
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        let (payload, rest) = data[2..].split_at(len);
        data = rest;
        if producer.try_publish(payload).is_err() {
            // Full, or a length the ring refuses: drain and go on.
            drain(&mut consumer);
        }
    }
    drain(&mut consumer);
}

/// The input is the segment: a consumer opens it and polls it.
fn segment(data: &[u8]) {
    let bytes = spsc::segment_bytes(CAPACITY);
    let Ok(seg) = Segment::create_memfd("fuzz", bytes) else {
        return;
    };
    if spsc::init(&seg).is_err() {
        return;
    }
    let Some(fd) = seg.fd().and_then(|fd| fd.try_clone_to_owned().ok()) else {
        return;
    };
    let file = File::from(fd);
    // Past the magic and identity words when the input is short, so that short inputs
    // reach the data area; a long one rewrites the header too.
    let at = if data.len() < bytes - HEADER_BYTES {
        HEADER_BYTES
    } else {
        0
    };
    let data = &data[..data.len().min(bytes - at)];
    if file.write_all_at(data, at as u64).is_err() {
        return;
    }
    let Ok(mut consumer) = Consumer::open(Arc::new(seg)) else {
        return;
    };
    drain(&mut consumer);
}

fn drain(consumer: &mut Consumer) {
    for _ in 0..POLLS_MAX {
        match consumer.poll_events(POLL_BUDGET, |ev| {
            if let Ok(ev) = ev {
                // Touch every field the daemon reads.
                let _ = (ev.rim_node_id(), ev.status(), ev.event_id(), ev.source_topic());
                let _ = ev.metrics().count();
            }
        }) {
            Ok(0) => return,
            Ok(_) => {}
            Err(PollError::Quarantined { .. }) => {
                assert!(consumer.quarantined().is_some(), "a quarantine is remembered");
                return;
            }
            Err(_) => return,
        }
    }
}
