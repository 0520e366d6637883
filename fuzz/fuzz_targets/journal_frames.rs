//! Journal frames: recovery and `rimctl replay` read segment files that a crash may have
//! torn or a disk corrupted. Any bytes as a segment header, as a run of length-prefixed
//! CRC frames, and as one event record: a value or a typed error, never a panic, and
//! never a read past the bytes. A record that decodes encodes again to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rim_journal::{event, frame, segment};

fuzz_target!(|data: &[u8]| {
    let header = segment::HEADER_BYTES as usize;
    if data.len() >= header {
        let _ = segment::SegmentHeader::decode(&data[..header], data.len() as u64);
    }
    // Frames from the start, as recovery scans them: the first bad one ends the data.
    let mut rest = data;
    while let Ok(Some((payload, used))) = frame::read(rest) {
        assert!(used > 0 && used <= rest.len(), "a frame consumes what it spans");
        records(payload);
        rest = &rest[used..];
    }
    // And the whole input as one record body.
    records(data);
});

fn records(bytes: &[u8]) {
    let _ = event::scan(bytes);
    if let Ok(rec) = event::decode_journaled(bytes) {
        let _ = rec.metric_bytes().count();
        let _ = rec.metrics().count();
    }
    let Ok(rec) = event::decode(bytes) else { return };
    let _ = rec.metrics().count();
    let _ = rec.head();
    let _ = rec.to_event();
}
