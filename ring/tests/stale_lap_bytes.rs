//! Guards that bytes an earlier lap left in the SPSC data area are never taken for a
//! committed record: a consumer that has caught up with the producer must see "nothing
//! yet", whatever the old bytes at the producer's next position look like (they can be
//! any payload word of an earlier lap, since record boundaries move from lap to lap).

mod common;

use common::{check_view, event_ref, templates, METRICS_BUF, TEMPLATES};
use rim_ring::spsc;

/// What a record header word looks like (see the protocol in `spsc.rs`).
fn header_word(tag: u64, kind: u64, len: u64) -> u64 {
    (tag << 32) | (kind << 24) | len
}

/// A 256-byte ring. Lap 0 carries, inside the payload of its first record, a word that
/// reads as a DATA header of lap 1 (tag 2). In lap 1 a 16-byte record ends exactly where
/// that word lies, and the consumer, caught up, looks there next: the producer has
/// published nothing more, so nothing more may be delivered.
#[test]
fn a_stale_payload_word_is_not_taken_for_a_record() {
    let (mut p, mut c) = spsc::heap_pair(256).expect("ring");
    let mut first = [0u8; 24];
    first[8..16].copy_from_slice(&header_word(2, 1, 8).to_le_bytes());
    p.try_publish(&first)
        .expect("record 0 at 0..32, the look-alike word at offset 16");
    p.try_publish(&[1; 104]).expect("record 1 at 32..144");
    assert_eq!(c.poll(usize::MAX, |_| {}), Ok(2));
    p.try_publish(&[2; 104]).expect("record 2 at 144..256");
    assert_eq!(p.position(), 256);
    assert_eq!(c.poll(usize::MAX, |_| {}), Ok(1));
    assert_eq!(p.try_publish(&[3; 8]), Ok(272), "lap 1: one record at 256..272");
    let mut got = Vec::new();
    assert_eq!(
        c.poll(usize::MAX, |b| got.push(b.to_vec())),
        Ok(1),
        "only the one record published; got {got:02x?}"
    );
    assert_eq!(got, vec![vec![3u8; 8]]);
    assert!(
        !c.has_data(),
        "the consumer is at the producer's position: nothing is waiting"
    );
    assert_eq!(c.position(), p.position());
}

/// The same with nothing but valid RimFastEvents, published one at a time and read after
/// each publish, as a daemon that keeps up does. Event records contain small numbers
/// (symbol ids, presence flags) in the high half of a word, which is what a later lap's
/// tag looks like: a consumer that took such a word for a header would quarantine an
/// honest producer's ring (this happened within ~5,000 events at 2 KiB before the
/// producer started clearing the next header slot) or deliver a phantom record.
#[test]
fn an_honest_event_stream_read_as_it_comes_is_never_quarantined() {
    let t = templates();
    for capacity in [1024usize, 2048, 4096, 8192] {
        let (mut p, mut c) = spsc::heap_pair(capacity).expect("ring");
        for i in 0..20_000u64 {
            let mut buf = [("", 0.0); METRICS_BUF];
            let template = &t[i as usize % TEMPLATES];
            let ev = event_ref(template, i, &mut buf);
            let mut events = 0;
            let mut on_event = |r: rim_ring::spsc::EventResult<'_>| {
                let v = r.unwrap_or_else(|e| panic!("capacity {capacity}, event {i}: refused: {e}"));
                if let Err(e) = check_view(template, i, &v) {
                    panic!("capacity {capacity}: {e}");
                }
                events += 1;
            };
            // The first use of long strings may need more than the ring: their definitions
            // stay published on `Full`, so read them and retry.
            loop {
                match p.try_publish_event(&ev) {
                    Ok(_) => break,
                    Err(rim_ring::PublishError::Full { .. }) => {
                        let polled = c.poll_events(usize::MAX, &mut on_event);
                        assert!(
                            polled.is_ok(),
                            "capacity {capacity}, event {i}, position {}: {polled:?}",
                            p.position()
                        );
                    }
                    Err(e) => panic!("capacity {capacity}, event {i}: {e}"),
                }
            }
            let polled = c.poll_events(usize::MAX, &mut on_event);
            assert!(
                polled.is_ok(),
                "capacity {capacity}, event {i}, position {}: {polled:?}",
                p.position()
            );
            assert_eq!(events, 1, "capacity {capacity}: exactly event {i} was published");
            assert_eq!(c.position(), p.position(), "capacity {capacity}, event {i}");
        }
    }
}
