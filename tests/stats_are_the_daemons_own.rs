//! What a producer writes into its own ring header never becomes the daemon's figures:
//! the stats (what `rimctl stats` and `/metrics` show) report what the daemon counted,
//! the depth stays within the ring whatever write position the producer claims, and its
//! count of publishes refused as full (which only it can know) neither jumps to
//! 18446744073709551615 nor runs backwards.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{counter, event, Daemon, SOON, T0};

/// Header offsets of the counters a lying producer overwrites (`docs/design.md`).
const WRITER_POSITION: usize = 80;
const REFUSED_FULL: usize = 88;
const REFUSED_INVALID_BY_PRODUCER: usize = 104;
const REJECTED: usize = 160;
const DELIVERED: usize = 168;
const DUPLICATES: usize = 176;
const NODE_TABLE_FULL: usize = 184;

#[test]
fn a_producer_that_overwrites_its_header_counters_changes_only_its_own_view() {
    let started = std::time::Instant::now();
    let mut d = Daemon::start(
        &[],
        Some("[[rule]]\nid = \"seen\"\nwhen = \"metric.v > 0\"\nseverity = \"info\"\n"),
    );
    let name = format!("liar-{}", std::process::id());
    let mut p = d.producer(&name, 1 << 16);
    let good = 20u64;
    for k in 0..good {
        p.publish(&event("rim:sensor:liar:n1", T0 + k as i64, &[("v", 1.0)]));
    }
    p.publish_raw(&[0xEE; 40]);
    p.publish_raw(&[0xEF; 48]);
    assert!(p.wait_consumed(SOON));
    // Three definitions (node, status, metric), the events, the two garbage records.
    let records = 3 + good + 2;
    let s = d.wait_for(SOON, "everything counted", |s| {
        counter(s, "ingest.events_accepted") == good && common::ring(s, &name).is_some_and(|r| r.delivered == records)
    });
    assert_eq!(common::ring(&s, &name).map(|r| r.rejected), Some(2));

    // The producer scribbles over every counter it can reach in its header.
    let (base, len) = common::map_own_memfd(&format!("rimd-{name}"));
    for off in [
        WRITER_POSITION,
        REFUSED_FULL,
        REFUSED_INVALID_BY_PRODUCER,
        REJECTED,
        DELIVERED,
        DUPLICATES,
        NODE_TABLE_FULL,
    ] {
        assert!(off + 8 <= len);
        // SAFETY: `off` is 8-aligned and inside the mapping; the word is shared with the
        // daemon, so it is written atomically.
        let word = unsafe { &*(base.add(off) as *const AtomicU64) };
        word.store(u64::MAX, Ordering::Relaxed);
    }
    // One more good event, so the daemon reports this ring again.
    p.publish(&event("rim:sensor:liar:n1", T0 + 1_000, &[("v", 1.0)]));
    assert!(p.wait_consumed(SOON));
    let s = d.wait_for(SOON, "the last event counted", |s| {
        counter(s, "ingest.events_accepted") == good + 1
            && common::ring(s, &name).is_some_and(|r| r.delivered == records + 1)
    });
    let ring = common::ring(&s, &name).expect("ring in stats");
    assert_eq!(
        (ring.delivered, ring.rejected, ring.invalid),
        (records + 1, 2, 2),
        "the daemon's own figures: {ring:?}"
    );
    assert!(ring.refused.is_empty(), "{ring:?}");
    assert!(ring.depth <= ring.capacity, "depth clamped to the ring: {ring:?}");
    // The producer's claim rises no faster than one publish attempt per 10 ns.
    let bound = started.elapsed().as_nanos() as u64 / rimd::ingest::figures::FULL_CLAIM_NS_PER_ATTEMPT;
    assert!(
        ring.refused_full <= bound,
        "full(producer) bounded by {bound}: {ring:?}"
    );
    // Written back to 0, it does not fall.
    // SAFETY: as above.
    let full = unsafe { &*(base.add(REFUSED_FULL) as *const AtomicU64) };
    full.store(0, Ordering::Relaxed);
    let before = ring.refused_full;
    p.publish(&event("rim:sensor:liar:n1", T0 + 2_000, &[("v", 1.0)]));
    assert!(p.wait_consumed(SOON));
    let s = d.wait_for(SOON, "the next event counted", |s| {
        common::ring(s, &name).is_some_and(|r| r.delivered == records + 2)
    });
    let after = common::ring(&s, &name).map_or(0, |r| r.refused_full);
    assert!(after >= before, "full(producer) went from {before} back to {after}");
    // SAFETY: unmapping the mapping made above, no longer used.
    unsafe { libc::munmap(base.cast(), len) };
}
