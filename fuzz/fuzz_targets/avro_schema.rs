//! Writer schemas from a registry: any text is parsed (bounded in size, depth and expanded
//! types) and, if it parses, compiled against the platform schema; a plan that compiles
//! decodes a few bodies. An error or a plan, never a panic, never unbounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rim_avro::{encode, Event, Plan, Schema};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(schema) = Schema::parse(text) else { return };
    let Ok(plan) = Plan::compile(&schema) else { return };
    let mut body = Vec::new();
    let ev = Event {
        rim_node_id: "rim:sensor:plant:n1",
        ..Event::empty()
    };
    encode::put_event(&ev, &mut body);
    for cut in [0, 1, body.len() / 2, body.len()] {
        let _ = plan.decode(&body[..cut]);
    }
    let _ = plan.decode(data);
});
