//! Writes `fuzz/seeds/TARGET/*`: valid inputs of every fuzz target, made by the same
//! encoders (and from the same events, rule files and requests) the tests use, so that
//! fuzzing starts from inputs that reach deep into each parser instead of from nothing.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rim_capsule::codec::encode_capsule;
use rim_capsule::{
    Capsule, CapsuleBody, CapsuleKey, MetricStats, ObservedStats, Ohlc, PredictedSeries, Prediction, Vantage,
};
use rim_journal::{event as jevent, frame};
use rim_ring::{spsc, RimFastEvent, Segment};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = root.join("../..");
    let events = events()?;
    write(&root, "shm_records", shm_seeds(&events)?)?;
    write(&root, "journal_frames", journal_seeds(&events)?)?;
    write(&root, "capsule_stored", capsule_seeds()?)?;
    write(&root, "stats_segment", stats_seeds()?)?;
    write(&root, "avro_decode", avro_seeds(&events))?;
    write(
        &root,
        "avro_schema",
        vec![rim_avro::wire::RIM_FAST_EVENT_AVSC.as_bytes().to_vec()],
    )?;
    write(&root, "rules_compile", rule_seeds(&repo)?)?;
    write(&root, "http_bodies", body_seeds(&events)?)?;
    write(&root, "http_query", query_seeds())?;
    write(&root, "ws_frames", ws_seeds())?;
    Ok(())
}

fn write(root: &Path, target: &str, seeds: Vec<Vec<u8>>) -> Result<()> {
    let dir: PathBuf = root.join(target);
    fs::create_dir_all(&dir)?;
    for (i, s) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:02}")), s)?;
    }
    println!("{target}: {} seeds", seeds.len());
    Ok(())
}

/// The events of the tests: a plain one, one with every optional field, one at the limits.
fn events() -> Result<Vec<RimFastEvent>> {
    let long_id = format!("rim:sensor:{}:{}", "a".repeat(64), "b".repeat(128));
    let texts = [
        r#"{"rim_node_id":"rim:sensor:plant:n1","timestamp":1767225600000,"critical_metrics":{"temp":21.5},"status":"OK"}"#.to_owned(),
        r#"{"rim_node_id":"rim:market:xnas:AAPL.O","event_id":"e-42","timestamp":1767225600123,"critical_metrics":{"load":0.93,"temp":96.0,"rate":-3.5e7},"price":187.25,"volume":1200.0,"stress":0.95,"status":"DEGRADED","source_topic":"rim.fast-path"}"#.to_owned(),
        format!(r#"{{"rim_node_id":"{long_id}","event_id":"{}","timestamp":-1,"critical_metrics":{{}},"status":""}}"#, "x".repeat(128)),
    ];
    texts.iter().map(|t| Ok(serde_json::from_str(t)?)).collect()
}

/// Mode byte 0: `[u16 len][payload]` records as the producer encodes them (definitions
/// first); mode byte 1: a whole memfd segment after those records were published.
fn shm_seeds(events: &[RimFastEvent]) -> Result<Vec<Vec<u8>>> {
    let mut seeds = Vec::new();
    // Records: the payloads the producer writes, captured by a consumer.
    let (mut p, mut c) = spsc::heap_pair(1 << 16)?;
    let mut records = vec![0u8];
    for ev in events {
        p.try_publish_event(&ev.as_ref())?;
        c.poll(64, |bytes| {
            records.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            records.extend_from_slice(bytes);
        })?;
    }
    seeds.push(records);
    // Segments: the data area after one and after all events, wrap included.
    for n in [1, events.len()] {
        let seg = Segment::create_memfd("seed", spsc::segment_bytes(4096))?;
        spsc::init(&seg)?;
        let seg = std::sync::Arc::new(seg);
        let mut p = rim_ring::Producer::open(seg.clone())?;
        for ev in events.iter().cycle().take(n * 7) {
            if p.try_publish_event(&ev.as_ref()).is_err() {
                break;
            }
        }
        let fd = seg.fd().ok_or("memfd segment has an fd")?.try_clone_to_owned()?;
        let file = fs::File::from(fd);
        let mut bytes = vec![0u8; spsc::segment_bytes(4096) - rim_ring::HEADER_BYTES];
        file.read_exact_at(&mut bytes, rim_ring::HEADER_BYTES as u64)?;
        let mut seed = vec![1u8];
        seed.extend_from_slice(&bytes);
        seeds.push(seed);
    }
    Ok(seeds)
}

fn journal_record(ev: &RimFastEvent) -> Result<Vec<u8>> {
    let head = jevent::EventHead {
        rim_node_id: &ev.rim_node_id,
        event_id: ev.event_id.as_deref(),
        timestamp: ev.timestamp,
        publish_ns: 123_456_789,
        received_ms: 1_767_225_600_500,
        price: ev.price,
        volume: ev.volume,
        stress: ev.stress,
        status: &ev.status,
        source_topic: ev.source_topic.as_deref(),
    };
    let mut buf = vec![0u8; 8192];
    let n = jevent::encode(
        &head,
        ev.critical_metrics.iter().map(|(k, v)| (k.as_str(), *v)),
        &mut buf,
    )?;
    buf.truncate(n);
    Ok(buf)
}

/// Runs of frames as segments hold them, one bare record, and a run with a torn tail.
fn journal_seeds(events: &[RimFastEvent]) -> Result<Vec<Vec<u8>>> {
    let mut seeds = Vec::new();
    let mut run = Vec::new();
    for ev in events {
        let rec = journal_record(ev)?;
        frame::append(&mut run, &rec);
        seeds.push(rec);
    }
    seeds.push(run.clone());
    run.truncate(run.len() - 3);
    seeds.push(run);
    Ok(seeds)
}

fn key(scope: &str, ts: i64, resolution: u32, vantage: Vantage) -> CapsuleKey {
    CapsuleKey {
        scope_id: scope.to_owned(),
        timestamp: ts,
        resolution,
        vantage,
    }
}

/// The capsules of capsule/tests/common: observed, predicted, API-created.
fn capsule_seeds() -> Result<Vec<Vec<u8>>> {
    let scope = "rim:sensor:plant:n1";
    let observed = Capsule {
        key: key(scope, 1_767_225_600_000, 1, Vantage::Observed),
        body: CapsuleBody::Observed(ObservedStats {
            count: 3,
            first_ts: 1_767_225_600_000,
            last_ts: 1_767_225_600_010,
            metrics: vec![MetricStats {
                name: "temp".into(),
                count: 3,
                min: 1.0,
                max: 3.0,
                mean: 2.0,
                last: 2.5,
            }],
            price: Some(Ohlc {
                open: 100.0,
                high: 101.0,
                low: 99.5,
                close: 100.5,
            }),
            volume_sum: Some(1234.0),
            stress_max: Some(0.7),
            stress_last: Some(0.4),
            last_status: "OK".into(),
        }),
        created_ms: 1_767_225_602_000,
    };
    let predicted = Capsule {
        key: key(scope, 1_767_225_601_000, 1, Vantage::Predicted),
        body: CapsuleBody::Predicted(Prediction {
            predictor: "ewma".into(),
            made_at_ms: 1_767_225_600_000,
            horizon_ms: 1000,
            confidence: 0.8,
            series: vec![PredictedSeries {
                name: "price".into(),
                value: 101.0,
                base: 100.0,
            }],
        }),
        created_ms: 1_767_225_600_000,
    };
    let named = Capsule {
        key: key(scope, 1_767_225_600_000, 60, Vantage::parse("MANUAL")?),
        body: CapsuleBody::payload(&serde_json::json!({"note": "hand-made", "level": [1, 2, 3]}))?,
        created_ms: 1_767_225_600_000,
    };
    Ok(vec![
        encode_capsule(&observed)?,
        encode_capsule(&predicted)?,
        encode_capsule(&named)?,
    ])
}

/// A stats segment as the daemon publishes it (an empty snapshot and one with figures).
fn stats_seeds() -> Result<Vec<Vec<u8>>> {
    let dir = std::env::temp_dir().join(format!("rimd-fuzz-seeds-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let path = dir.join("stats");
    let mut seeds = Vec::new();
    let mut snap = rim_stats::Snapshot::default();
    for round in 0..2 {
        let _ = fs::remove_file(&path);
        let mut w = rim_stats::StatsWriter::create(&path, 64 * 1024, 0o600)?;
        if round == 1 {
            snap = serde_json::from_value(with_figures(serde_json::to_value(&snap)?))?;
        }
        w.publish(&snap)?;
        let mut bytes = fs::read(&path)?;
        // The writer's capacity is mostly zeros: keep the header and the payload.
        let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        bytes.truncate(used.max(rim_stats::HEADER_BYTES));
        seeds.push(bytes);
    }
    fs::remove_dir_all(&dir)?;
    Ok(seeds)
}

/// Sets every number at the top of a snapshot's JSON to a figure, so the seed reaches the
/// renderer's non-zero paths.
fn with_figures(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(map) = v.as_object_mut() {
        for (i, value) in map.values_mut().enumerate() {
            if value.is_u64() {
                *value = serde_json::json!(1000 + i as u64);
            }
        }
    }
    v
}

/// Confluent frames of the events with the platform schema (id 0 picks plan 0).
fn avro_seeds(events: &[RimFastEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|ev| {
            let mut metrics = rim_avro::Metrics::new();
            for (k, v) in &ev.critical_metrics {
                metrics.push(k, *v);
            }
            let a = rim_avro::Event {
                rim_node_id: &ev.rim_node_id,
                event_id: ev.event_id.as_deref(),
                timestamp: ev.timestamp,
                critical_metrics: metrics,
                price: ev.price,
                volume: ev.volume,
                stress: ev.stress,
                status: &ev.status,
                source_topic: ev.source_topic.as_deref(),
            };
            let mut out = Vec::new();
            rim_avro::encode::encode_event(0, &a, &mut out);
            out
        })
        .collect()
}

/// The default rule file, the rule language's documented examples, and a JSON rule set.
fn rule_seeds(repo: &Path) -> Result<Vec<Vec<u8>>> {
    let mut seeds = vec![fs::read(repo.join("config/default-rules.toml"))?];
    let doc = fs::read_to_string(repo.join("docs/rules.md"))?;
    // Every fenced toml block of docs/rules.md.
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let Some(end) = body.find("```") else { break };
        seeds.push(body[..end].as_bytes().to_vec());
        rest = &body[end + 3..];
    }
    seeds.push(
        br#"{"rules":[{"id":"hot","nodes":"rim:sensor:*","when":"metric.temp > 90 and not (status == \"OK\")","severity":"high","cooldown":"5s"}]}"#
            .to_vec(),
    );
    Ok(seeds)
}

/// `POST /events` bodies: one event, a batch, and a batch with a bad item.
fn body_seeds(events: &[RimFastEvent]) -> Result<Vec<Vec<u8>>> {
    let mut bad = serde_json::to_value(events)?;
    bad[1]["rim_node_id"] = serde_json::json!("not-a-node");
    Ok(vec![
        serde_json::to_vec(&events[0])?,
        serde_json::to_vec(&events[..2])?,
        serde_json::to_vec(&bad)?,
    ])
}

/// Query strings of the API's list endpoints and subscriptions.
fn query_seeds() -> Vec<Vec<u8>> {
    [
        "scopeId=rim:sensor:plant:n1&from=1767225600000&to=1767229200000&resolution=60&vantageMode=OBSERVED&page=0&size=100&sort=timestamp,desc",
        "size=3&sort=chainSeq,desc",
        "lookback=3600&resolution=60",
        "scopeId=rim%3Asensor%3Aplant%3An1&wait=durable",
        "rim%3Asensor%3Aplant%3An%2F1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Masked client frames (text PING, close, a fragmented text, a 16-bit length) and a
/// subscription query.
fn ws_seeds() -> Vec<Vec<u8>> {
    let masked = |first: u8, payload: &[u8]| {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![first];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    let mut fragmented = masked(0x01, b"PI");
    fragmented.extend(masked(0x80, b"NG"));
    vec![
        masked(0x81, b"PING"),
        masked(0x88, &[0x03, 0xe8]),
        fragmented,
        masked(0x82, &[7u8; 300]),
        b"node=rim:sensor:*:n?&severity=high".to_vec(),
    ]
}
