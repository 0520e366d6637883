//! Guards "bytes from the file are not trusted": a corrupted stored value is a typed
//! `StoreError::Corrupt` on every read path, and decoding arbitrary bytes never panics.

mod common;

use common::{mem_store, observed, Rng};
use rim_capsule::codec::{checksum64, decode_accuracy, decode_capsule, encode_capsule};
use rim_capsule::{raw, Batch, HistoryQuery, StoreError, Vantage};

fn corrupt(r: Result<impl std::fmt::Debug, StoreError>) {
    match r {
        Err(StoreError::Corrupt { table, .. }) => assert_eq!(table, "capsules"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn corrupted_value_is_reported_on_every_path() {
    let store = mem_store();
    let c = observed("rim:n:s:1", 0, 1, 3);
    store.put(&c).unwrap();
    let good = encode_capsule(&c).unwrap();

    let mut damaged = good.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xFF; // the root's relative pointer
    for bytes in [
        Vec::new(),
        vec![0u8; 3],
        vec![0xFF; good.len()],
        damaged,
        good[..good.len() / 2].to_vec(),
    ] {
        assert!(raw::overwrite_capsule_bytes(&store, &c.id(), &bytes).unwrap());
        corrupt(store.get(&c.id()));
        corrupt(store.put(&c));
        corrupt(store.write(&Batch {
            capsules: vec![c.clone()],
            ..Batch::default()
        }));
        corrupt(store.history(&HistoryQuery {
            scope_id: "rim:n:s:1".into(),
            resolution: 1,
            vantage: Vantage::Observed,
            from_ms: 0,
            to_ms: 1000,
            limit: 10,
            descending: false,
        }));
    }
}

#[test]
fn valid_archive_of_a_capsule_breaking_the_model_is_corrupt() {
    let store = mem_store();
    let c = observed("rim:n:s:1", 0, 1, 3);
    store.put(&c).unwrap();
    let mut bad = c.clone();
    bad.key.vantage = Vantage::Named("not valid".into());
    raw::overwrite_capsule_bytes(&store, &c.id(), &encode_capsule(&bad).unwrap()).unwrap();
    corrupt(store.get(&c.id()));
    // A row holding another key than the index says is caught too.
    let other = observed("rim:n:s:2", 0, 1, 3);
    raw::overwrite_capsule_bytes(&store, &c.id(), &encode_capsule(&other).unwrap()).unwrap();
    assert!(matches!(store.get(&c.id()), Err(StoreError::Corrupt { .. })));
}

#[test]
fn decoding_random_bytes_never_panics() {
    let seed = 0x5EED_u64;
    let mut rng = Rng(seed);
    let good = encode_capsule(&observed("rim:n:s:1", 0, 1, 3)).unwrap();
    for _ in 0..20_000 {
        let bytes: Vec<u8> = if rng.chance(0.5) {
            let len = rng.below(300) as usize;
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            // Change a few bytes of a valid archive and fix up the checksum, so the damage
            // reaches rkyv's validation instead of stopping at the checksum.
            let mut b = good[..good.len() - 8].to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
            }
            let sum = checksum64(&b);
            b.extend_from_slice(&sum.to_le_bytes());
            b
        };
        match decode_capsule(&bytes) {
            Ok(c) => c.validate().expect("anything decoded is valid"),
            Err(StoreError::Corrupt { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
        let _ = decode_accuracy(&bytes);
    }
}
