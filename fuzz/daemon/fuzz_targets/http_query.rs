//! HTTP query strings and path segments: percent-decoding, typed parameters and the
//! platform's `page`/`size`/`sort`. Any text: values or a 400 naming the parameter, never
//! a panic; a page's offset never overflows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rimd::api::query::{decode_path, Paging, Query};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = decode_path(text);
    let Ok(q) = Query::parse(Some(text)) else { return };
    let _ = q.int("from", 0i64, i64::MIN..=i64::MAX);
    let _ = q.opt_int::<u32>("resolution", 1..=86_400);
    if let Ok(p) = Paging::parse(&q, "timestamp", 100, 1_000, false) {
        let _ = p.offset();
    }
});
