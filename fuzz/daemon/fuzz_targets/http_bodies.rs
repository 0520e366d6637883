//! `POST /events` bodies: JSON from any HTTP client, one RimFastEvent or a batch. Any
//! bytes: the events (every one valid, within the batch limit and the time bounds) or a
//! 400 whose details name the bad items, never a panic. What is accepted serialises back
//! to JSON that is accepted again as the same events. The fast batch reader takes only
//! what the owned path accepts, as the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rimd::api::events::{fuzz_fast, fuzz_parse};

/// A fixed clock, so that a crash replays.
const NOW_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let fast = fuzz_fast(data, NOW_MS);
    let owned = fuzz_parse(data, NOW_MS);
    if let Some(fast) = &fast {
        let owned = owned.as_ref().expect("the fast path took a body the owned path refuses");
        assert_eq!(fast, owned, "the fast path read other events than the owned path");
    }
    let Ok(events) = owned else { return };
    assert!(!events.is_empty() && events.len() <= 10_000, "batch bounds");
    for ev in &events {
        assert!(ev.validate().is_ok(), "an accepted event is valid");
    }
    let again = serde_json::to_vec(&events).expect("accepted events serialise");
    let back = fuzz_parse(&again, NOW_MS).expect("accepted events are accepted again");
    assert_eq!(back.len(), events.len(), "same batch");
});
