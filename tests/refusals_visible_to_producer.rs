//! Every event the daemon does not take is visible to the producer that sent it: node-table
//! refusals and time refusals raise the producer's own `rejected` counter, and each
//! reason (duplicates included) has a counter of its own in the producer's ring header,
//! counted before the consumed position passes the event.

mod common;

use common::{counter, event, Daemon, SOON, T0};

/// The case: a node table that is full drops new nodes' events, and the producer
/// used to see them consumed with nothing refused.
#[test]
fn node_table_refusals_and_duplicates_are_counted_in_the_producers_ring() {
    let mut d = Daemon::start(
        &["reflex.nodes_max=4", "ingest.dedup_window=4"],
        Some("[[rule]]\nid = \"seen\"\nwhen = \"metric.v > 0\"\nseverity = \"info\"\n"),
    );
    let mut p = d.producer("filler", 1 << 16);
    // Ten nodes, one event each: the first four are known, the other six refused.
    for k in 0..10 {
        let mut ev = event(&format!("rim:sensor:fill:n{k}"), T0 + k, &[("v", 1.0)]);
        ev.event_id = Some(format!("e{k}"));
        p.publish(&ev);
    }
    // Two repeats of an id already taken for node 0: dropped as duplicates.
    for _ in 0..2 {
        let mut ev = event("rim:sensor:fill:n0", T0 + 100, &[("v", 1.0)]);
        ev.event_id = Some("e0".into());
        p.publish(&ev);
    }
    assert!(p.wait_consumed(SOON), "the daemon read the ring");
    // No waiting on stats: the counts are in the header once the position passed them.
    assert_eq!(
        p.p.rejected(),
        6,
        "node-table refusals are rejections the producer sees"
    );
    let v = p.p.verdicts();
    assert_eq!(
        (v.node_table_full, v.duplicates, v.invalid, v.time_ahead, v.time_too_old),
        (6, 2, 0, 0, 0),
        "{v:?}"
    );

    let s = d.wait_for(SOON, "the daemon's counts", |s| {
        counter(s, "ingest.nodes_refused") == 6 && counter(s, "ingest.duplicates") == 2
    });
    let ring = common::ring(&s, "filler").expect("ring in stats");
    assert_eq!(ring.rejected, 6, "{ring:?}");
    assert_eq!(ring.refused.get("node_table_full"), Some(&6), "{ring:?}");
    assert_eq!(ring.refused.get("duplicate"), Some(&2), "{ring:?}");
}
