//! The Kafka bridge against a real broker: tansu (Kafka protocol, in-memory storage) from
//! the venv `scripts/pyenv.sh` builds, one broker per test on its own loopback port, and an
//! independent client (Python confluent-kafka: `AvroSerializer` writes the Confluent wire
//! format, a plain consumer reads the out topics and the DLQ), so rimd is checked against
//! someone else's encoder and decoder, not its own.
//!
//! Guards: events from Kafka reach ingest exactly once with every field, through schema
//! resolution of a newer writer schema; malformed messages land in the DLQ with their bytes
//! and headers; capsules and decisions reach their topics; offsets are committed only after
//! durability (a restarted or second consumer does not see them again); the outbox cursor
//! survives restarts; and with the daemon: decisions from Kafka events, a SIGKILL and
//! restart that loses nothing and journals every redelivered event once (with or without
//! an `event_id`), two instances splitting the partitions, a broker outage that degrades
//! only the bridge, and librdkafka's threads kept off the hot core.
//!
//! The venv must exist (`scripts/pyenv.sh`; `scripts/test.sh` runs it first): a test
//! without it fails and says so.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rim_capsule::{Batch, Capsule, CapsuleBody, CapsuleKey, Store, StoreConfig, Vantage};
use rimd::bridge::config::BridgeConfig;
use rimd::bridge::{BridgeHealth, BridgeSetup, BridgeState};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// The Python venv, the broker, the registry, the independent client

/// The venv of `scripts/pyenv.sh` (or `RIM_PYENV`).
fn venv() -> PathBuf {
    let dir = std::env::var_os("RIM_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv-kafka"));
    assert!(
        dir.join("bin/tansu").exists() && dir.join("bin/python").exists(),
        "no Kafka test environment at {}: run scripts/pyenv.sh first (it installs the tansu broker and \
         confluent-kafka, pinned with hashes)",
        dir.display()
    );
    dir
}

fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka").join(name)
}

/// A free loopback port (bound then released; the broker binds it right after).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

const TOPICS: [&str; 4] = [
    "rim.fast-path",
    "rim.fast-path.dlq",
    "capsule.snapshots",
    "odyssey.reflex",
];

/// A tansu broker on its own port; killed on drop.
struct Broker {
    venv: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let mut b = Broker {
            venv: venv(),
            port: free_port(),
            child: None,
            log: dir.join("broker.log"),
        };
        b.launch();
        b
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn tansu(&self) -> Command {
        let mut c = Command::new(self.venv.join("bin/tansu"));
        // `RUST_LOG` set for the tests is not the broker's (at debug its log grows by GBs).
        c.env_remove("RUST_LOG").stdin(Stdio::null());
        c
    }

    /// Starts the broker (again, after `kill`: the same port, empty storage) and creates
    /// the topics, 12 partitions each.
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let child = self
            .tansu()
            .args([
                "broker",
                "--listener-url",
                &self.url(),
                "--advertised-listener-url",
                &self.url(),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .tansu()
                .args(["topic", "list", "--broker", &self.url()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not answer within 30 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for t in TOPICS {
            let out = self
                .tansu()
                .args(["topic", "create", "--broker", &self.url(), "--partitions", "12", t])
                .output()
                .expect("tansu topic create");
            assert!(out.status.success(), "create topic {t}: {out:?}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The registry test server (`tests/kafka/registry.py`); killed on drop.
struct Registry {
    child: Child,
    url: String,
}

impl Registry {
    fn start() -> Registry {
        let mut child = Command::new(venv().join("bin/python"))
            .arg(helper("registry.py"))
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn registry");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("registry port");
        let port = line.trim().strip_prefix("PORT=").expect("PORT= line").to_owned();
        Registry {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The platform's schema, and a newer version that adds a field with a default (BACKWARD
/// compatible: rimd, reading with the older schema, must skip it).
fn write_schemas(dir: &Path) -> (PathBuf, PathBuf) {
    let v1 = dir.join("rim-fast-event-v1.avsc");
    std::fs::write(&v1, rimd::bridge::wire::RIM_FAST_EVENT_AVSC).expect("write v1");
    let mut schema: Value = serde_json::from_str(rimd::bridge::wire::RIM_FAST_EVENT_AVSC).expect("schema");
    let fields = schema["fields"].as_array_mut().expect("fields");
    fields.insert(
        2,
        json!({"name": "region", "type": {"type": "array", "items": "string"}, "default": []}),
    );
    fields.push(json!({"name": "quality", "type": ["null", "int"], "default": null}));
    let v2 = dir.join("rim-fast-event-v2.avsc");
    std::fs::write(&v2, schema.to_string()).expect("write v2");
    (v1, v2)
}

/// Produces `lines` (see `tests/kafka/produce.py`) with the independent client.
fn produce(broker: &Broker, registry: &Registry, schema: &Path, lines: &[Value]) {
    let mut child = Command::new(venv().join("bin/python"))
        .arg(helper("produce.py"))
        .args([
            "--brokers",
            &broker.addr(),
            "--registry",
            &registry.url,
            "--topic",
            "rim.fast-path",
        ])
        .arg("--schema")
        .arg(schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn produce.py");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write line");
        }
    }
    let out = child.wait_with_output().expect("produce.py");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&format!("PRODUCED={}", lines.len())),
        "produce.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads `count` messages of `topics` from the beginning (fresh group); fails if fewer
/// arrive within `timeout_s`.
#[track_caller]
fn consume(broker: &Broker, topics: &[&str], count: usize, timeout_s: u32) -> Vec<Value> {
    let got = consume_upto(broker, topics, count, timeout_s);
    assert_eq!(
        got.len(),
        count,
        "only {} of {count} messages on {topics:?}: {got:#?}",
        got.len()
    );
    got
}

fn consume_upto(broker: &Broker, topics: &[&str], count: usize, timeout_s: u32) -> Vec<Value> {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(helper("consume.py")).args(["--brokers", &broker.addr()]);
    for t in topics {
        cmd.args(["--topic", t]);
    }
    let out = cmd
        .args(["--count", &count.to_string(), "--timeout", &timeout_s.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("consume.py");
    assert!(
        out.status.success(),
        "consume.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("consume.py line"))
        .collect()
}

fn event_json(node: &str, id: &str, ts: i64, temp: f64) -> Value {
    json!({
        "rim_node_id": node, "event_id": id, "timestamp": ts,
        "critical_metrics": {"temp": temp, "load": 0.5},
        "price": 100.0, "volume": null, "stress": 0.25, "status": "OK", "source_topic": null
    })
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bridge settings of a test (small timeouts; the defaults stall rebalances).
fn bridge_config(broker: &Broker, registry: &str, group: &str) -> BridgeConfig {
    BridgeConfig {
        enabled: true,
        brokers: broker.addr(),
        group_id: group.to_owned(),
        schema_registry_url: registry.to_owned(),
        session_timeout_ms: 6_000,
        heartbeat_interval_ms: 1_000,
        retry_backoff_ms: 50,
        retry_backoff_max_ms: 400,
        commit_interval_ms: 50,
        outbox_interval_ms: 20,
        cursor_interval_ms: 50,
        reconnect_backoff_max_ms: 500,
        ..BridgeConfig::default()
    }
}

/// The same as `--set`s for a daemon.
fn bridge_sets(broker: &Broker, registry: &str, group: &str) -> Vec<String> {
    vec![
        "bridge.enabled=true".into(),
        format!("bridge.brokers={}", broker.addr()),
        format!("bridge.group_id={group}"),
        format!("bridge.schema_registry_url={registry}"),
        "bridge.session_timeout_ms=6000".into(),
        "bridge.heartbeat_interval_ms=1000".into(),
        "bridge.retry_backoff_ms=50".into(),
        "bridge.retry_backoff_max_ms=400".into(),
        "bridge.commit_interval_ms=50".into(),
        "bridge.outbox_interval_ms=20".into(),
        "bridge.cursor_interval_ms=50".into(),
        "bridge.reconnect_backoff_max_ms=500".into(),
    ]
}

#[track_caller]
fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// The bridge as a library, with a stand-in for ingest

/// What the stand-in ingest took from the ring.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    node: String,
    id: Option<String>,
    ts: i64,
    metrics: Vec<(String, f64)>,
    price: Option<f64>,
    volume: Option<f64>,
    stress: Option<f64>,
    status: String,
}

/// Drains the ring like ingest would and reports everything durable at once.
fn fake_ingest(
    mut rx: rim_ring::Consumer,
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Got>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            let n = rx
                .poll_events(256, |r| {
                    let ev = r.expect("the bridge publishes only valid events");
                    got.lock().expect("got").push(Got {
                        node: ev.rim_node_id().to_owned(),
                        id: ev.event_id().map(str::to_owned),
                        ts: ev.timestamp(),
                        metrics: ev.metrics().map(|(k, v)| (k.to_owned(), v)).collect(),
                        price: ev.price(),
                        volume: ev.volume(),
                        stress: ev.stress(),
                        status: ev.status().to_owned(),
                    });
                })
                .expect("poll");
            rx.set_durable_position(rx.position());
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
}

/// Event-time bounds of the library bridge: the scripts' fixed times are old (no age
/// bound), and an event more than 5 s ahead of the clock goes to the DLQ.
const LIB_BOUNDS: rimd::ingest::time::TimeBounds = rimd::ingest::time::TimeBounds {
    ahead_ms_max: 5_000,
    age_ms_max: 0,
};

struct LibBridge {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
    ingest: Option<std::thread::JoinHandle<()>>,
    ingest_stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Got>>>,
    health: Arc<BridgeHealth>,
}

/// The bridge's logs in the test output (`RUST_LOG`, default warnings).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

impl LibBridge {
    fn start(config: BridgeConfig, log: Option<rimd::persist::audit::DecisionLog>) -> LibBridge {
        init_logs();
        let (tx, rx) = rim_ring::spsc::heap_pair(1 << 20).expect("ring");
        let stop = Arc::new(AtomicBool::new(false));
        let ingest_stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let ingest = fake_ingest(rx, ingest_stop.clone(), got.clone());
        let health = Arc::new(BridgeHealth::new());
        let handles = rimd::bridge::spawn(BridgeSetup {
            config,
            producer: tx,
            durable: true,
            log,
            stop: stop.clone(),
            health: health.clone(),
            core: None,
            bounds: LIB_BOUNDS,
            clock: rimd::clock::Clock::system(),
            agents: rimd::agent::ColdAgents::default(),
        })
        .expect("spawn bridge");
        LibBridge {
            stop,
            handles,
            ingest: Some(ingest),
            ingest_stop,
            got,
            health,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("got").clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.handles.drain(..) {
            h.join().expect("bridge thread");
        }
        self.ingest_stop.store(true, Ordering::Release);
        if let Some(h) = self.ingest.take() {
            h.join().expect("ingest thread");
        }
    }
}

impl Drop for LibBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.ingest_stop.store(true, Ordering::Release);
    }
}

fn named_capsule(scope: &str, ts: i64) -> Capsule {
    Capsule {
        key: CapsuleKey {
            scope_id: scope.into(),
            timestamp: ts,
            resolution: 60,
            vantage: Vantage::Named("API".into()),
        },
        body: CapsuleBody::Payload(r#"{"k":1}"#.into()),
        created_ms: 7,
    }
}

/// Two decision records of shard 0, a real hash chain.
/// Writes `records` (shard 0) into a decision log under `dir/journal` and indexes them in
/// `store`, as the journal thread does; returns the log for the bridge.
fn decision_log(dir: &Path, store: &Arc<Store>, records: &[(u16, u64, Vec<u8>)]) -> rimd::persist::audit::DecisionLog {
    use rimd::persist::audit::{RunBuilder, LOG_DECISION, STREAMS, STREAM_DECISIONS};
    let journal_dir = dir.join("journal");
    let (mut j, _) = rim_journal::Journal::open(
        rim_journal::JournalConfig::new(&journal_dir, STREAMS),
        rim_journal::Fs::new(),
    )
    .expect("journal");
    let mut runs = RunBuilder::default();
    for (shard, seq, record) in records {
        let pos = j
            .append_parts(STREAM_DECISIONS, &[&[LOG_DECISION], record], 1)
            .expect("append");
        runs.add(*shard, *seq, pos);
    }
    j.close().expect("sync the log");
    store
        .write(&Batch {
            decision_runs: runs.take_changed(),
            ..Batch::default()
        })
        .expect("index");
    rimd::persist::audit::DecisionLog::new(&journal_dir, store.clone())
}

fn decision_records(node: &str) -> Vec<(u16, u64, Vec<u8>)> {
    use rimd::reflex::decision::{Chain, Draft, RECORD_BYTES_MAX};
    let mut chain = Chain::new(1);
    let mut out = Vec::new();
    for seq in 1..=2u64 {
        let mut buf = vec![0u8; RECORD_BYTES_MAX];
        let d = Draft {
            shard: 0,
            rule_id: "hot",
            rule_version: 1,
            rule_generation: 1,
            severity: 3,
            flags: 0,
            node: 0,
            node_id: node,
            event_seq: seq,
            event_timestamp: T0 + seq as i64,
            publish_ns: 0,
            decided_ns: 1,
            latency_ns: 1,
        };
        let n = chain.append(&d, 1, [("metric.temp", 95.0)].into_iter(), &mut buf);
        out.push((0, seq, buf[..n].to_vec()));
    }
    out
}

fn header<'v>(m: &'v Value, k: &str) -> &'v str {
    m["headers"][k]
        .as_str()
        .unwrap_or_else(|| panic!("no header {k} in {m}"))
}

#[test]
fn bridge_reads_an_independent_encoder_dead_letters_garbage_and_publishes_the_outbox() {
    let dir = TempDir::new("kafka-lib");
    let broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, v2) = write_schemas(dir.path());

    // The outbox's source: a store with two capsules and two decisions.
    let store = Arc::new(Store::open(&dir.path().join("store.redb"), StoreConfig::default()).expect("store"));
    store.put(&named_capsule("rim:sensor:plant:s1", 60_000)).expect("put");
    store.put(&named_capsule("rim:sensor:plant:s2", 60_000)).expect("put");
    let log = decision_log(dir.path(), &store, &decision_records("rim:sensor:plant:s1"));

    let mut bridge = LibBridge::start(bridge_config(&broker, &registry.url, "lib"), Some(log.clone()));

    // 20 events in v1 over 4 nodes (with trace headers on the first), 5 in v2.
    let mut v1_lines = Vec::new();
    for k in 0..20 {
        let node = format!("rim:sensor:plant:s{}", k % 4);
        let mut line = json!({"event": event_json(&node, &format!("e{k}"), T0 + k, 20.0 + k as f64)});
        if k == 0 {
            line["headers"] = json!({"X-Request-ID": "req-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"});
        }
        v1_lines.push(line);
    }
    produce(&broker, &registry, &v1, &v1_lines);
    let mut v2_lines = Vec::new();
    for k in 20..25 {
        let mut ev = event_json("rim:sensor:plant:s9", &format!("e{k}"), T0 + k, 1.0);
        ev["region"] = json!(["eu", "west"]);
        ev["quality"] = json!(3);
        v2_lines.push(json!({"event": ev}));
    }
    produce(&broker, &registry, &v2, &v2_lines);

    // Garbage, each with a header that must survive into the DLQ.
    let good = rimd::bridge::wire::encode_event(
        1,
        &rim_ring::RimFastEvent {
            rim_node_id: "rim:sensor:plant:g".into(),
            event_id: None,
            timestamp: 1,
            critical_metrics: vec![],
            price: None,
            volume: None,
            stress: None,
            status: "OK".into(),
            source_topic: None,
            publish_ns: 0,
        },
    );
    let mut bad_union = good.clone();
    bad_union[5 + 1 + "rim:sensor:plant:g".len()] = 9; // event_id's union index → 4
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("bad-magic", b"{\"not\": \"avro\"}".to_vec()),
        ("truncated", vec![0, 0, 0]),
        ("unknown-schema", rimd::bridge::wire::frame(999_999, &good[5..])),
        ("bad-union", bad_union),
        ("bad-utf8", {
            let mut b = good.clone();
            b[6] = 0xff;
            b
        }),
        (
            "huge-length",
            rimd::bridge::wire::frame(1, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
        ),
    ];
    let lines: Vec<Value> = garbage
        .iter()
        .map(|(tag, bytes)| json!({"raw_b64": b64(bytes), "key": tag, "headers": {"x-case": tag}}))
        .collect();
    produce(&broker, &registry, &v1, &lines);
    // Decodes, but breaks the data model (nodeType upper case): the DLQ, after the ring refused it.
    // And one an hour ahead of the clock: the DLQ, refused for its event time.
    let hour_ahead = rimd::clock::Clock::system().now_ms() + 3_600_000;
    produce(
        &broker,
        &registry,
        &v1,
        &[
            json!({"event": event_json("rim:SENSOR:plant:x", "bad-node", T0, 1.0), "headers": {"x-case": "invalid-node"}}),
            json!({"event": event_json("rim:sensor:plant:s0", "ahead", hour_ahead, 1.0), "headers": {"x-case": "time-ahead"}}),
        ],
    );

    wait_until(Duration::from_secs(60), "25 events through the bridge", || {
        bridge.got().len() >= 25
    });
    let got = bridge.got();
    assert_eq!(got.len(), 25, "{got:#?}");
    let ids: BTreeSet<String> = got.iter().filter_map(|g| g.id.clone()).collect();
    assert_eq!(ids, (0..25).map(|k| format!("e{k}")).collect::<BTreeSet<_>>());
    let e7 = got.iter().find(|g| g.id.as_deref() == Some("e7")).expect("e7");
    assert_eq!(
        e7,
        &Got {
            node: "rim:sensor:plant:s3".into(),
            id: Some("e7".into()),
            ts: T0 + 7,
            // The map in the order the encoder wrote it (the test's JSON sorts its keys).
            metrics: vec![("load".into(), 0.5), ("temp".into(), 27.0)],
            price: Some(100.0),
            volume: None,
            stress: Some(0.25),
            status: "OK".into(),
        }
    );
    // Per-node order: each node's events arrive in the order produced.
    for n in 0..4 {
        let node = format!("rim:sensor:plant:s{n}");
        let ts: Vec<i64> = got.iter().filter(|g| g.node == node).map(|g| g.ts).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{node}: {ts:?}");
    }

    // The DLQ: every bad message, its bytes, its header, and why.
    let dlq = consume(&broker, &["rim.fast-path.dlq"], garbage.len() + 2, 60);
    let mut kinds = BTreeMap::new();
    for m in &dlq {
        let case = header(m, "x-case").to_owned();
        assert_eq!(header(m, "dlq.original.topic"), "rim.fast-path");
        assert!(header(m, "dlq.original.partition").parse::<i32>().is_ok());
        assert!(header(m, "dlq.original.offset").parse::<i64>().is_ok());
        assert!(header(m, "dlq.original.timestamp").parse::<i64>().expect("ts") > 0);
        assert!(header(m, "dlq.timestamp").parse::<u64>().expect("ts") > 0);
        assert_eq!(header(m, "dlq.retry.count"), "0", "{m}");
        assert!(!header(m, "dlq.error").is_empty());
        if let Some((_, bytes)) = garbage.iter().find(|(t, _)| *t == case) {
            let value = m["value_b64"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| b64(m["value"].as_str().expect("value").as_bytes()));
            assert_eq!(value, b64(bytes), "{case}: original bytes");
            assert_eq!(m["key"], case);
        }
        kinds.insert(case, header(m, "dlq.error.kind").to_owned());
    }
    let expect: BTreeMap<String, String> = [
        ("bad-magic", "bad-frame"),
        ("truncated", "bad-frame"),
        ("unknown-schema", "unknown-schema"),
        ("bad-union", "bad-avro"),
        ("bad-utf8", "bad-avro"),
        ("huge-length", "bad-avro"),
        ("invalid-node", "invalid-event"),
        ("time-ahead", "event-time"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(kinds, expect);

    // The outbox: both capsules and both decisions, keyed by node, as JSON.
    let out = consume(&broker, &["capsule.snapshots", "odyssey.reflex"], 4, 60);
    let capsules: Vec<&Value> = out.iter().filter(|m| m["topic"] == "capsule.snapshots").collect();
    let decisions: Vec<&Value> = out.iter().filter(|m| m["topic"] == "odyssey.reflex").collect();
    assert_eq!((capsules.len(), decisions.len()), (2, 2), "{out:#?}");
    for m in &capsules {
        let body: Value = serde_json::from_str(m["value"].as_str().expect("json")).expect("capsule json");
        assert_eq!(m["key"], body["scopeId"]);
        assert_eq!(body["vantageMode"], "API");
        assert_eq!(header(m, "rimd.capsule.id"), body["id"].as_str().expect("id"));
        assert_eq!(body["id"].as_str().expect("id").len(), 64);
    }
    for m in &decisions {
        let body: Value = serde_json::from_str(m["value"].as_str().expect("json")).expect("decision json");
        assert_eq!(m["key"], "rim:sensor:plant:s1");
        assert_eq!(body["rule_id"], "hot");
        assert!(header(m, "X-Request-ID").starts_with("decision-0-1-"));
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = bridge.health.snapshot();
        if h.dlq == 8 && h.published == 4 && h.commits > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "health counters: {h:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = bridge.health.snapshot();
    assert_eq!(h.consumed, 33, "{h:?}");
    assert_eq!(h.ingested, 25, "{h:?}");
    assert_eq!(h.state, BridgeState::Up, "{h:?}");
    bridge.stop();
    assert_eq!(bridge.health.state(), BridgeState::Down);
    assert_eq!(store.outbox_cursor("kafka:capsules").expect("cursor"), Some(2));
    assert_eq!(store.outbox_cursor("kafka:decisions:0").expect("cursor"), Some(3));

    // A second bridge in the same group with the same store: offsets were committed after
    // durability and the cursors stored, so nothing comes in again and nothing goes out again.
    store.put(&named_capsule("rim:sensor:plant:s3", 120_000)).expect("put");
    let mut again = LibBridge::start(bridge_config(&broker, &registry.url, "lib"), Some(log.clone()));
    produce(
        &broker,
        &registry,
        &v1,
        &[json!({"event": event_json("rim:sensor:plant:s1", "after", T0 + 100, 1.0)})],
    );
    wait_until(Duration::from_secs(60), "the new event", || !again.got().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let got = again.got();
    assert_eq!(got.len(), 1, "only the new event is read: {got:#?}");
    assert_eq!(got[0].id.as_deref(), Some("after"));
    let caps = consume_upto(&broker, &["capsule.snapshots"], 4, 8);
    assert_eq!(caps.len(), 3, "the old capsules are not sent twice: {caps:#?}");
    again.stop();
    assert_eq!(store.outbox_cursor("kafka:capsules").expect("cursor"), Some(3));
}

#[test]
fn an_unreachable_registry_is_retried_with_backoff_then_dead_lettered() {
    let dir = TempDir::new("kafka-reg");
    let broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, _) = write_schemas(dir.path());
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut cfg = bridge_config(&broker, &dead, "reg");
    cfg.retries_max = 3;
    let mut bridge = LibBridge::start(cfg, None);
    // Encoded by the real registry (id 1), read by a bridge whose registry is down. Three
    // of one node, so one partition and most likely one batch: after the first one's
    // retries the rest of the batch is sought back and read again, each retried in turn.
    let lines: Vec<Value> = (1..=3)
        .map(|k| json!({"event": event_json("rim:sensor:plant:s1", &format!("r{k}"), T0 + k, 1.0), "headers": {"x-case": format!("r{k}")}}))
        .collect();
    produce(&broker, &registry, &v1, &lines);
    let dlq = consume(&broker, &["rim.fast-path.dlq"], 3, 60);
    let cases: Vec<&str> = dlq.iter().map(|m| header(m, "x-case")).collect();
    assert_eq!(cases, ["r1", "r2", "r3"], "each once, in order");
    for m in &dlq {
        assert_eq!(header(m, "dlq.retry.count"), "3");
        assert_eq!(header(m, "dlq.error.kind"), "registry-unreachable");
    }
    assert!(bridge.got().is_empty());
    wait_until(Duration::from_secs(10), "dlq counted", || {
        bridge.health.snapshot().dlq == 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let h = bridge.health.snapshot();
    assert_eq!((h.dlq, h.retries), (3, 9), "nothing handled twice");
    bridge.stop();
}

#[test]
fn local_schema_files_serve_without_a_registry() {
    let dir = TempDir::new("kafka-files");
    let broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, v2) = write_schemas(dir.path());
    // The registry numbers schemas 1, 2, … in registration order: v1 is 1, v2 is 2.
    let mut cfg = bridge_config(&broker, "", "files");
    cfg.schema_files = vec![format!("1={}", v1.display()), format!("2={}", v2.display())];
    let mut bridge = LibBridge::start(cfg, None);
    produce(
        &broker,
        &registry,
        &v1,
        &[json!({"event": event_json("rim:sensor:plant:s1", "f1", T0, 1.0)})],
    );
    let mut ev = event_json("rim:sensor:plant:s1", "f2", T0 + 1, 2.0);
    ev["region"] = json!(["x"]);
    produce(&broker, &registry, &v2, &[json!({"event": ev})]);
    wait_until(Duration::from_secs(60), "both events", || bridge.got().len() == 2);
    let ids: Vec<Option<String>> = bridge.got().into_iter().map(|g| g.id).collect();
    assert_eq!(ids, vec![Some("f1".to_owned()), Some("f2".to_owned())]);
    bridge.stop();
}

// ---------------------------------------------------------------------------------------
// Through the daemon

const RULES: &str = r#"
[[rule]]
id = "hot"
nodes = "rim:sensor:*"
when = "metric.temp > 90"
severity = "high"
"#;

/// Every journaled event id of a data directory, with how often it appears.
fn journal_ids(data_dir: &Path) -> BTreeMap<String, usize> {
    let dir = data_dir.join("journal");
    let mut out = BTreeMap::new();
    let stream = rimd::persist::audit::STREAM_EVENTS;
    let Ok(mut r) = rim_journal::Reader::open(&dir, stream, 0, rim_journal::Fs::new()) else {
        return out;
    };
    while let Ok(Some((_, bytes))) = r.next() {
        if let Ok(rec) = rim_journal::event::decode(bytes) {
            *out.entry(rec.event_id.unwrap_or("").to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// Every journaled event as (node, event time), with how often it appears: the outside
/// view of exactly-once, whether or not the event had an `event_id`.
fn journal_events(data_dir: &Path) -> BTreeMap<(String, i64), usize> {
    let dir = data_dir.join("journal");
    let mut out = BTreeMap::new();
    let stream = rimd::persist::audit::STREAM_EVENTS;
    let Ok(mut r) = rim_journal::Reader::open(&dir, stream, 0, rim_journal::Fs::new()) else {
        return out;
    };
    while let Ok(Some((_, bytes))) = r.next() {
        if let Ok(rec) = rim_journal::event::decode(bytes) {
            *out.entry((rec.rim_node_id.to_owned(), rec.timestamp)).or_insert(0) += 1;
        }
    }
    out
}

fn daemon_sets(broker: &Broker, registry: &str, group: &str, extra: &[&str]) -> Vec<String> {
    let mut sets = bridge_sets(broker, registry, group);
    sets.extend(extra.iter().map(|s| (*s).to_owned()));
    sets
}

fn start_daemon(dir: TempDir, sets: &[String]) -> Daemon {
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    Daemon::start_in(dir, &refs, Some(RULES))
}

fn hot_events(first: usize, n: usize, nodes: usize) -> Vec<Value> {
    (first..first + n)
        .map(|k| {
            let node = format!("rim:sensor:plant:k{}", k % nodes);
            let temp = if k % 5 == 0 { 95.0 } else { 20.0 };
            json!({"event": event_json(&node, &format!("k{k}"), T0 + k as i64 * 250, temp),
                   "headers": {"X-Correlation-ID": format!("corr-{k}")}})
        })
        .collect()
}

/// As [`hot_events`], without `event_id` (null): only their place in Kafka names them.
fn anonymous_events(first: usize, n: usize, nodes: usize) -> Vec<Value> {
    let mut lines = hot_events(first, n, nodes);
    for l in &mut lines {
        l["event"]["event_id"] = Value::Null;
    }
    lines
}

#[track_caller]
fn wait_journal_events(d: &Daemon, n: usize) -> BTreeMap<(String, i64), usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = journal_events(&d.data_dir());
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events journaled\n{}",
            events.len(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[track_caller]
fn wait_journal(d: &Daemon, n: usize) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = journal_ids(&d.data_dir());
        if ids.len() >= n {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} event ids journaled\n{}",
            ids.len(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kafka_events_become_decisions_and_capsules_and_a_restart_loses_nothing() {
    let dir = TempDir::new("kafka-daemon");
    let broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, _) = write_schemas(dir.path());
    let sets = daemon_sets(&broker, &registry.url, "daemon", &[]);
    let d = start_daemon(TempDir::new("kafka-daemon-d"), &sets);

    produce(&broker, &registry, &v1, &hot_events(0, 30, 3));
    // 6 of the 30 are hot: 6 decisions, keyed by node, with the inbound correlation id.
    let decisions = consume(&broker, &["odyssey.reflex"], 6, 60);
    for m in &decisions {
        let body: Value = serde_json::from_str(m["value"].as_str().expect("json")).expect("decision");
        assert_eq!(body["rule_id"], "hot");
        assert_eq!(m["key"], body["rim_node_id"]);
        let k = (body["event_timestamp"].as_i64().expect("ts") - T0) / 250;
        assert_eq!(header(m, "X-Correlation-ID"), format!("corr-{k}"));
    }
    // Every assigned partition was read through the batch queue (src/bridge/fetch.rs).
    let log = d.log_text();
    let assigned = log
        .lines()
        .find(|l| l.contains("kafka: partitions assigned"))
        .unwrap_or_else(|| panic!("no assignment logged\n{log}"));
    let listed = assigned.matches(',').count() + 1;
    assert!(assigned.contains(&format!("forwarded={listed}")), "{assigned}");
    assert!(!log.contains("not forwarded"), "{log}");

    // Observed capsules of closed windows reach capsule.snapshots.
    let capsules = consume(&broker, &["capsule.snapshots"], 1, 60);
    let body: Value = serde_json::from_str(capsules[0]["value"].as_str().expect("json")).expect("capsule");
    assert!(body["scopeId"]
        .as_str()
        .expect("scope")
        .starts_with("rim:sensor:plant:k"));

    // Killed mid-stream: what was not yet committed is read again, and dropped as a
    // duplicate by ingest; what was produced while rimd was down is read after the restart.
    produce(&broker, &registry, &v1, &hot_events(30, 30, 3));
    std::thread::sleep(Duration::from_millis(150));
    let dir_back = d.into_dir();
    produce(&broker, &registry, &v1, &hot_events(60, 30, 3));
    let d = start_daemon(dir_back, &sets);
    let ids = wait_journal(&d, 90);
    std::thread::sleep(Duration::from_millis(500));
    let ids_after = journal_ids(&d.data_dir());
    assert_eq!(ids, ids_after, "nothing more arrives");
    let expected: BTreeSet<String> = (0..90).map(|k| format!("k{k}")).collect();
    assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "journaled more than once: {twice:?}");
}

/// With `topology.pin`, librdkafka's own threads (started when the bridge makes its
/// clients) run on the cold core: the bridge was made on the main thread before it was
/// pinned, and they ran on the hot core too.
#[test]
fn the_bridges_client_threads_stay_off_the_hot_core() {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("the_bridges_client_threads_stay_off_the_hot_core: skipped, this process has one CPU");
        return;
    }
    let (cold, hot) = (cpus[0], cpus[1]);
    let dir = TempDir::new("kafka-pin");
    let broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, _) = write_schemas(dir.path());
    let pin = [
        "topology.pin=true".to_owned(),
        format!("topology.cold_core={cold}"),
        format!("topology.hot_core={hot}"),
        "topology.avoid_disk_irqs=false".to_owned(),
    ];
    let pin: Vec<&str> = pin.iter().map(String::as_str).collect();
    let sets = daemon_sets(&broker, &registry.url, "pin", &pin);
    let d = start_daemon(TempDir::new("kafka-pin-d"), &sets);
    produce(&broker, &registry, &v1, &hot_events(0, 5, 1));
    wait_journal(&d, 5);
    let threads = threads_of(d.pid());
    let kafka: Vec<_> = threads.iter().filter(|(n, _)| n.starts_with("rdk:")).collect();
    assert!(!kafka.is_empty(), "no librdkafka thread: {threads:?}");
    let cold = cold.to_string();
    for (name, cpus) in &kafka {
        assert_eq!(cpus, &cold, "librdkafka's {name} runs on CPUs {cpus}; all: {threads:?}");
    }
}

#[test]
fn events_without_an_event_id_are_journaled_once_after_a_sigkill() {
    let dir = TempDir::new("kafka-anon");
    let broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, _) = write_schemas(dir.path());
    // The first daemon never commits an offset and never checkpoints: after its SIGKILL
    // every message it took is delivered again, all of them already journaled, and
    // recovery replays the whole journal into ingest's dedup windows.
    let first_sets = daemon_sets(
        &broker,
        &registry.url,
        "anon",
        &[
            "bridge.commit_interval_ms=600000",
            "persist.checkpoint_ms=600000",
            "bridge.publish_capsules=false",
            "bridge.publish_decisions=false",
        ],
    );
    let d = start_daemon(TempDir::new("kafka-anon-d"), &first_sets);
    // 40 events without an id and 10 with one, over 10 nodes (5 a node: inside the
    // default dedup window of 16).
    let mut lines = anonymous_events(0, 40, 10);
    lines.extend(hot_events(40, 10, 10));
    produce(&broker, &registry, &v1, &lines);
    wait_journal_events(&d, 50);
    let dir_back = d.into_dir();
    produce(&broker, &registry, &v1, &anonymous_events(50, 20, 10));
    let later_sets = daemon_sets(
        &broker,
        &registry.url,
        "anon",
        &["bridge.publish_capsules=false", "bridge.publish_decisions=false"],
    );
    let d = start_daemon(dir_back, &later_sets);
    let events = wait_journal_events(&d, 70);
    // The 50 redelivered messages are read before the 20 new ones (partition order), so
    // once the 20 are in, any duplicate would be too.
    let expected: BTreeSet<(String, i64)> = (0..70)
        .map(|k| (format!("rim:sensor:plant:k{}", k % 10), T0 + k as i64 * 250))
        .collect();
    assert_eq!(events.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let twice: Vec<_> = events.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "journaled more than once: {twice:?}\n{}",
        d.log_text()
    );
    // The anonymous ones carry their place in Kafka as their id.
    let named = journal_ids(&d.data_dir());
    assert_eq!(
        named.keys().filter(|k| k.starts_with("kafka:")).count(),
        60,
        "{named:?}"
    );
}

#[test]
fn two_instances_in_one_group_split_the_partitions() {
    let dir = TempDir::new("kafka-two");
    let broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, _) = write_schemas(dir.path());
    let sets = daemon_sets(&broker, &registry.url, "pair", &["bridge.publish_capsules=false"]);
    let a = start_daemon(TempDir::new("kafka-two-a"), &sets);
    let b = start_daemon(TempDir::new("kafka-two-b"), &sets);
    // Both hold partitions (the last assignment each logged), disjoint and covering all 12.
    let assigned = |d: &Daemon| -> BTreeSet<i32> {
        let log = d.log_text();
        let Some(line) = log.lines().rev().find(|l| l.contains("partitions assigned")) else {
            return BTreeSet::new();
        };
        let list = line
            .split("partitions=[")
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap_or("");
        list.split(',').filter_map(|p| p.trim().parse().ok()).collect()
    };
    wait_until(
        Duration::from_secs(60),
        "both instances assigned 12 partitions together",
        || {
            let (pa, pb) = (assigned(&a), assigned(&b));
            !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && pa.len() + pb.len() == 12
        },
    );
    produce(&broker, &registry, &v1, &hot_events(0, 64, 16));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ja, jb) = loop {
        let (ja, jb) = (journal_ids(&a.data_dir()), journal_ids(&b.data_dir()));
        if ja.len() + jb.len() >= 64 {
            break (ja, jb);
        }
        assert!(Instant::now() < deadline, "{} + {} of 64 journaled", ja.len(), jb.len());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !ja.is_empty() && !jb.is_empty(),
        "both instances took events: {} / {}",
        ja.len(),
        jb.len()
    );
    for k in 0..64 {
        let id = format!("k{k}");
        let n = ja.get(&id).copied().unwrap_or(0) + jb.get(&id).copied().unwrap_or(0);
        assert_eq!(n, 1, "{id} journaled {n} times");
    }
    // Each node's events all went to one instance.
    for node in 0..16 {
        let ids: Vec<String> = (0..64).filter(|k| k % 16 == node).map(|k| format!("k{k}")).collect();
        let in_a = ids.iter().filter(|i| ja.contains_key(*i)).count();
        assert!(
            in_a == 0 || in_a == ids.len(),
            "node k{node} split: {in_a} of {}",
            ids.len()
        );
    }
}

/// `GET path` on the daemon's HTTP API: (status, body).
fn http_get(d: &Daemon, path: &str) -> (u16, String) {
    use std::io::Read;
    // Not there yet while the API starts: the callers wait and retry.
    let Ok(addr) = std::fs::read_to_string(d.run_dir().join("http.addr")) else {
        return (0, "(no http.addr)".to_owned());
    };
    let Ok(mut s) = std::net::TcpStream::connect(addr.trim()) else {
        return (0, "(cannot connect)".to_owned());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn bridge_state(d: &Daemon) -> String {
    let (_, body) = http_get(d, "/api/v1/health/ready");
    // The component list names the bridge with its state; find it without depending on
    // the envelope's exact nesting.
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    fn find(v: &Value) -> Option<String> {
        match v {
            Value::Object(m) => {
                if m.get("name").and_then(Value::as_str) == Some("bridge") {
                    return m
                        .get("state")
                        .or_else(|| m.get("status"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                if let Some(Value::Object(b)) = m.get("bridge") {
                    if let Some(s) = b.get("state").or_else(|| b.get("status")).and_then(Value::as_str) {
                        return Some(s.to_owned());
                    }
                }
                m.values().find_map(find)
            }
            Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).unwrap_or_else(|| format!("(no bridge state in {body})"))
}

#[test]
fn a_broker_outage_degrades_only_the_bridge() {
    let dir = TempDir::new("kafka-outage");
    let mut broker = Broker::start(dir.path());
    let registry = Registry::start();
    let (v1, _) = write_schemas(dir.path());
    let sets = daemon_sets(
        &broker,
        &registry.url,
        "outage",
        &["api.enabled=true", "api.listen=127.0.0.1:0"],
    );
    let d = start_daemon(TempDir::new("kafka-outage-d"), &sets);
    wait_until(Duration::from_secs(60), "bridge up", || bridge_state(&d) == "up");

    let mut feed = d.producer("shm", 1 << 16);
    let mut sub = d.subscriber();
    let hot = |feed: &mut Feed, k: i64| {
        let mut ev = event("rim:sensor:plant:shm", T0 + k * 1000, &[("temp", 99.0)]);
        ev.event_id = Some(format!("s{k}"));
        feed.publish(&ev);
    };
    hot(&mut feed, 0);
    assert!(sub.next(SOON).is_some(), "decision before the outage");

    broker.kill();
    wait_until(Duration::from_secs(60), "bridge degraded", || {
        bridge_state(&d) == "degraded"
    });
    // The shared-memory path does not notice.
    for k in 1..=5 {
        hot(&mut feed, k);
        let dec = sub.next(SOON).expect("decision during the outage");
        assert_eq!(dec.event_timestamp, T0 + k * 1000);
    }
    let (status, _) = http_get(&d, "/api/v1/health/ready");
    assert_eq!(status, 200, "rimd stays ready with the bridge degraded");

    // Back: the bridge reconnects by itself and takes events again.
    broker.launch();
    produce(&broker, &registry, &v1, &hot_events(0, 5, 1));
    wait_journal(&d, 6 + 5);
    wait_until(Duration::from_secs(60), "bridge up again", || bridge_state(&d) == "up");
}
