//! What the store reads back from redb: capsules, accuracy aggregates and rows, roll-up
//! checkpoints. A file damaged on disk or written by another version must be refused
//! with a typed error, never a panic or an allocation the bytes do not pay for. A capsule
//! that decodes encodes to bytes that decode and encode to the same bytes (bytes, not
//! capsules: a NaN is not equal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rim_capsule::codec::{decode_accuracy, decode_accuracy_row, decode_capsule, encode_capsule};
use rim_capsule::{Rollup, RollupConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = decode_capsule(data) {
        let once = encode_capsule(&c).expect("a decoded capsule encodes");
        let back = decode_capsule(&once).expect("an encoded capsule decodes");
        let twice = encode_capsule(&back).expect("a decoded capsule encodes");
        assert_eq!(once, twice, "capsule round trip");
    }
    let _ = decode_accuracy(data);
    let _ = decode_accuracy_row(data);
    checkpoint(data);
});

/// A roll-up checkpoint: the first two bytes (little-endian) split the header from one
/// chunk; node ids are placed at rising indexes up to a small table.
fn checkpoint(data: &[u8]) {
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*split)).min(rest.len());
    let (header, chunk) = rest.split_at(split);
    let mut next = 0u32;
    let mut index_of = |_: &str| {
        next += 1;
        (next <= 64).then_some(next - 1)
    };
    let cfg = RollupConfig {
        recent_ids: 16,
        ..RollupConfig::default()
    };
    let _ = Rollup::restore(cfg, header, [(0, chunk)], &mut index_of);
}
