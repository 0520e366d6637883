//! Loom model of the stats segment's seqlock (`rim_stats::seqlock`, the code the segment
//! runs): one writer publishes two payloads of different lengths while a reader reads;
//! every read the protocol accepts must be exactly one published payload, never a mix.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p rim-stats --test loom_seqlock --release`
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use rim_stats::seqlock::{self, Attempt, Words, HEADER_BYTES};

struct Heap(Vec<AtomicU64>);

impl Words for Heap {
    fn word(&self, off: usize) -> &AtomicU64 {
        &self.0[off / 8]
    }
    fn payload_cap(&self) -> usize {
        (self.0.len() * 8 - HEADER_BYTES) / 8 * 8
    }
}

const FIRST: &[u8] = b"aaaaaaaaaaaa"; // 12 bytes: two words, the second padded
const SECOND: &[u8] = b"bbbbbbbbbbbbbbbb"; // 16 bytes: two full words

#[test]
fn a_read_is_one_whole_payload_or_busy() {
    loom::model(|| {
        let seg = Arc::new(Heap((0..HEADER_BYTES / 8 + 2).map(|_| AtomicU64::new(0)).collect()));
        let seq = seqlock::write(&*seg, 0, FIRST);
        let writer = {
            let seg = seg.clone();
            loom::thread::spawn(move || {
                seqlock::write(&*seg, seq, SECOND);
            })
        };
        for _ in 0..2 {
            match seqlock::try_read(&*seg) {
                Attempt::Payload(p) => assert!(p == FIRST || p == SECOND, "torn read: {p:?}"),
                Attempt::Busy => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        writer.join().expect("writer");
        assert_eq!(seqlock::try_read(&*seg), Attempt::Payload(SECOND.to_vec()));
    });
}
