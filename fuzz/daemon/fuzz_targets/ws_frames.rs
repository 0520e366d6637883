//! `GET /ws/decisions`: the frames a WebSocket client sends (RFC 6455, masked, control
//! frames bounded) and the subscription's query (`node` glob, `severity`). Any bytes: a
//! frame, "more bytes needed" or a close code, never a panic, never a read past the bytes,
//! and a glob matched in time linear in the node id (no backtracking blow-up).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rimd::api::ws::fuzz_input(data);
});
