//! The reflex rule language: rule files and `PUT /rules` bodies come from operators and
//! API clients. Any text, as TOML and as JSON, compiles or is refused with errors that
//! carry a position; never a panic, never unbounded work. A set that compiles compiles
//! again as the successor of itself (the hot-reload path keeps state across versions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rim_rules::{compile_json, compile_toml, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let limits = Limits::default();
    if let Ok(set) = compile_toml(text, &limits, None) {
        let _ = compile_toml(text, &limits, Some(&set));
    }
    if let Ok(set) = compile_json(text, &limits, None) {
        let _ = compile_json(text, &limits, Some(&set));
    }
});
