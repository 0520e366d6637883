//! The Kafka bridge's way in: a Confluent frame (magic, schema id) and an Avro body,
//! decoded by the compiled plan of one of several writer schemas (the platform's, a newer
//! one with fields to skip, an older one that promotes and defaults, one of unions). Any
//! bytes: an error or an event, never a panic, never more work than the bytes allow. A
//! body the platform plan decodes, encoded again, decodes and encodes to the same bytes
//! (bytes, not events: a NaN is not equal to itself).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rim_avro::{encode, wire, Plan, Schema};

const NEWER: &str = r#"{"type":"record","name":"RimFastEvent","fields":[
  {"name":"rim_node_id","type":"string"},
  {"name":"region","type":{"type":"array","items":"string"},"default":[]},
  {"name":"event_id","type":["null","string"],"default":null},
  {"name":"timestamp","type":"long"},
  {"name":"origin","type":{"type":"record","name":"O","fields":[{"name":"e","type":{"type":"enum","name":"C","symbols":["R","G"]}},{"name":"f","type":{"type":"fixed","name":"F","size":3}},{"name":"ok","type":"boolean"},{"name":"x","type":"float"}]}},
  {"name":"critical_metrics","type":{"type":"map","values":"double"}},
  {"name":"price","type":["null","double"],"default":null},
  {"name":"volume","type":["null","double"],"default":null},
  {"name":"stress","type":["null","double"],"default":null},
  {"name":"status","type":"string"},
  {"name":"source_topic","type":["null","string"],"default":null},
  {"name":"tags","type":{"type":"map","values":{"type":"array","items":["null","long"]}},"default":{}}]}"#;

const OLDER: &str = r#"{"type":"record","name":"RimFastEvent","fields":[
  {"name":"status","type":"bytes"},
  {"name":"timestamp","type":"int"},
  {"name":"rim_node_id","type":"string"},
  {"name":"critical_metrics","type":{"type":"map","values":"int"}}]}"#;

const UNIONS: &str = r#"{"type":"record","name":"RimFastEvent","fields":[
  {"name":"rim_node_id","type":["null","string"]},
  {"name":"timestamp","type":["int","long"]},
  {"name":"critical_metrics","type":["null",{"type":"map","values":["null","float","long"]}]},
  {"name":"price","type":["int","double","null"]},
  {"name":"status","type":["string","bytes"]}]}"#;

fn plans() -> &'static [Plan] {
    static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();
    PLANS.get_or_init(|| {
        [wire::RIM_FAST_EVENT_AVSC, NEWER, OLDER, UNIONS]
            .iter()
            .map(|text| Plan::compile(&Schema::parse(text).expect("schema")).expect("plan"))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok((id, body)) = wire::split(data) else { return };
    let plans = plans();
    let index = id as usize % plans.len();
    let Ok(ev) = plans[index].decode(body) else { return };
    if index == 0 {
        let mut again = Vec::new();
        encode::put_event(&ev, &mut again);
        let decoded = plans[0].decode(&again).expect("a re-encoded body decodes");
        let mut twice = Vec::new();
        encode::put_event(&decoded, &mut twice);
        assert_eq!(again, twice, "a re-encoded body decodes differently");
    }
});
