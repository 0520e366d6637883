//! Model-checks the ring protocols under every interleaving loom explores: a record is
//! visible only whole and in order across wrap and padding (SPSC), and a broadcast reader
//! never accepts a torn record (seqlock). Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p rim-ring --test loom_protocol --release`
//! (`.ci/run` does, in its own target directory).
#![cfg(loom)]

use std::sync::Arc;

use rim_ring::{broadcast, spsc, Segment};

fn record(i: u8) -> [u8; 16] {
    let mut r = [i; 16];
    r[15] = i.wrapping_mul(31).wrapping_add(7);
    r
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

/// Three 16-byte records through a 64-byte ring: the third wraps behind a PAD record and
/// must wait for the consumer to release space.
#[test]
fn spsc_records_are_whole_and_ordered_across_wrap() {
    builder().check(|| {
        let seg = Arc::new(Segment::heap(spsc::segment_bytes(64)).expect("segment"));
        spsc::init(&seg).expect("init");
        let mut producer = spsc::Producer::open(seg.clone()).expect("producer");
        let mut consumer = spsc::Consumer::open(seg).expect("consumer");
        let t = loom::thread::spawn(move || {
            for i in 0..3u8 {
                loop {
                    match producer.try_publish(&record(i)) {
                        Ok(_) => break,
                        Err(spsc::PublishError::Full { .. }) => loom::thread::yield_now(),
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                }
            }
        });
        let mut next = 0u8;
        while next < 3 {
            let n = consumer
                .poll(4, |bytes| {
                    assert_eq!(bytes, &record(next)[..], "record {next} torn or out of order");
                    next += 1;
                })
                .expect("no corruption from an honest producer");
            if n == 0 {
                loom::thread::yield_now();
            }
        }
        t.join().expect("producer");
        assert!(!consumer.has_data());
    });
}

/// A writer laps a two-slot ring while a reader reads: every record the reader accepts is
/// exactly what was written for its sequence; the rest are reported as missed.
#[test]
fn broadcast_reader_never_accepts_a_torn_record() {
    builder().check(|| {
        let mut writer = broadcast::heap(2, 16).expect("ring");
        let mut reader = broadcast::Reader::open(writer.segment().clone()).expect("reader");
        let t = loom::thread::spawn(move || {
            for i in 0..3u8 {
                writer.publish(&record(i)).expect("publish");
            }
        });
        let mut buf = [0u8; 16];
        let mut accounted = 0u64;
        let mut attempts = 0;
        while accounted < 3 && attempts < 8 {
            attempts += 1;
            let expected = reader.position();
            match reader.read(&mut buf) {
                Ok(Some(len)) => {
                    assert_eq!(&buf[..len], &record(expected as u8)[..], "torn record {expected}");
                    accounted += 1;
                }
                Ok(None) => loom::thread::yield_now(),
                Err(broadcast::ReadError::Lapped { missed }) => accounted += missed,
                Err(e) => panic!("{e}"),
            }
        }
        t.join().expect("writer");
        assert!(accounted <= 3, "never more records than were written");
    });
}
