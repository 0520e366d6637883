//! The HTTP API answers every bad input with the right status and the platform's error
//! envelope, and its happy paths do what they say: events posted over HTTP become
//! decisions in the audit log and on the WebSocket, capsules round-trip, the slice,
//! rules, metrics and health answer. A real daemon, a real HTTP/1.1 client.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, eventually, get, http, http_raw, send_json, Daemon, WsClient, HTTP_SETS, SOON, T0};
use serde_json::{json, Value};

const RULES: &str = r#"
[[rule]]
id = "hot"
nodes = "rim:sensor:http:*"
when = "metric.temp > 90"
severity = "high"
"#;

fn daemon(extra: &[&str]) -> (Daemon, String) {
    let sets: Vec<&str> = HTTP_SETS.iter().chain(extra.iter()).copied().collect();
    let mut d = Daemon::start(&sets, Some(RULES));
    let addr = d.http_addr();
    (d, addr)
}

fn event(node: &str, ts: i64, temp: f64) -> Value {
    json!({
        "rim_node_id": node,
        "timestamp": ts,
        "critical_metrics": {"temp": temp},
        "status": "OK"
    })
}

fn capsule(scope: &str, payload: Value) -> Value {
    json!({"scopeId": scope, "timestamp": T0, "resolution": 60, "vantageMode": "ANALYST", "payload": payload})
}

#[test]
fn bad_inputs_get_the_right_status_and_the_error_envelope() {
    let (_d, a) = daemon(&["api.body_bytes_max=4096", "api.events_body_bytes_max=8192"]);
    let a = a.as_str();
    let zeros = "0".repeat(64);
    let bad_event = json!([
        event("rim:sensor:http:n1", T0, 1.0),
        {"rim_node_id": "not-a-node", "timestamp": T0, "critical_metrics": {}, "status": "OK"},
        {"rim_node_id": "rim:sensor:http:n1", "timestamp": T0, "critical_metrics": {}, "status": "OK", "extra": 1},
    ]);
    let conflict_a = capsule("rim:sensor:http:c1", json!({"v": 1}));
    let conflict_b = capsule("rim:sensor:http:c1", json!({"v": 2}));
    assert_eq!(send_json(a, "POST", "/api/v1/capsules", &conflict_a).status, 201);
    // Headers only: the server refuses on Content-Length without reading a byte.
    let oversized = "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: 100000\r\nConnection: close\r\n\r\n";
    let json_ct = [("Content-Type", "application/json")];
    // (what, response, status, code)
    let cases: Vec<(&str, common::HttpResponse, u16, &str)> = vec![
        (
            "body over the limit",
            http_raw(a, oversized.as_bytes()),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "events as text/plain",
            http(
                a,
                "POST",
                "/api/v1/events",
                &[("Content-Type", "text/plain")],
                Some(b"{}"),
            ),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "events without a content type",
            http(a, "POST", "/api/v1/events", &[], Some(b"{}")),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "DELETE /events",
            http(a, "DELETE", "/api/v1/events", &[], None),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "POST /decisions",
            http(a, "POST", "/api/v1/decisions", &json_ct, Some(b"{}")),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        ("unknown route", get(a, "/api/v1/nothing-here"), 404, "NOT_FOUND"),
        ("outside the prefix", get(a, "/index.html"), 404, "NOT_FOUND"),
        (
            "unknown capsule",
            get(a, &format!("/api/v1/capsules/{zeros}")),
            404,
            "NOT_FOUND",
        ),
        (
            "unknown capsule delete",
            http(a, "DELETE", &format!("/api/v1/capsules/{zeros}"), &[], None),
            404,
            "NOT_FOUND",
        ),
        (
            "bad capsule id",
            get(a, "/api/v1/capsules/xyz"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "bad node id in the slice",
            get(a, "/api/v1/temporal/slice/nope"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "list without scopeId",
            get(a, "/api/v1/capsules"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "bad page size",
            get(a, "/api/v1/capsules?scopeId=rim:sensor:http:c1&size=0"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "bad sort",
            get(a, "/api/v1/capsules?scopeId=rim:sensor:http:c1&sort=price,desc"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "malformed events JSON",
            http(a, "POST", "/api/v1/events", &json_ct, Some(b"[{\"rim_node_id\":")),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "bad capsule JSON",
            http(a, "POST", "/api/v1/capsules", &json_ct, Some(b"{\"scopeId\": 3}")),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "capsule with rimd's own vantage",
            send_json(
                a,
                "POST",
                "/api/v1/capsules",
                &json!({"scopeId": "rim:sensor:http:c2", "timestamp": T0, "resolution": 60, "vantageMode": "OBSERVED", "payload": {}}),
            ),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "conflicting capsule",
            send_json(a, "POST", "/api/v1/capsules", &conflict_b),
            409,
            "CONFLICT",
        ),
        (
            "bad severity filter",
            get(a, "/api/v1/ws/decisions?severity=loud"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "WebSocket route without an upgrade",
            get(a, "/api/v1/ws/decisions"),
            400,
            "VALIDATION_ERROR",
        ),
    ];
    for (what, r, status, code) in &cases {
        assert_error(r, *status, code, what);
    }
    let r = http(a, "DELETE", "/api/v1/rules", &[], None);
    assert_eq!(r.header("allow"), Some("GET, PUT"), "405 names the allowed methods");

    // Per-item errors: the index and the field of each bad event; nothing accepted.
    let r = send_json(a, "POST", "/api/v1/events", &bad_event);
    let v = assert_error(&r, 400, "VALIDATION_ERROR", "invalid events");
    let details = v["error"]["details"].as_array().expect("details");
    assert_eq!(details.len(), 2, "{v}");
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["field"], "rim_node_id");
    assert!(
        details[0]["message"].as_str().unwrap_or("").contains("rim:{nodeType}"),
        "{v}"
    );
    assert_eq!(details[1]["index"], 2);
    assert_eq!(details[1]["field"], "extra");

    // A rule set that does not compile says where; the running set stays.
    let before = get(a, "/api/v1/rules").json()["data"]["generation"].clone();
    let bad_rules = "[[rule]]\nid = \"x\"\nwhen = \"metric.c > > 1\"\nseverity = \"high\"\n";
    let r = http(
        a,
        "PUT",
        "/api/v1/rules",
        &[("Content-Type", "application/toml")],
        Some(bad_rules.as_bytes()),
    );
    let v = assert_error(&r, 400, "VALIDATION_ERROR", "rules that do not compile");
    let msg = v["error"]["details"][0]["message"].as_str().unwrap_or("").to_owned();
    assert!(msg.contains("line 3"), "the error names the line: {v}");
    assert_eq!(get(a, "/api/v1/rules").json()["data"]["generation"], before);
}

#[test]
fn tokens_guard_reads_and_writes_and_must_be_private() {
    let dir = common::TempDir::new("tokens");
    let path = dir.path().join("tokens");
    std::fs::write(&path, "# test tokens\nread reader-secret\nadmin admin-secret\n").expect("write tokens");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let tokens = format!("api.tokens_file={}", path.display());
    let (d, a) = daemon(&[tokens.as_str()]);
    let a = a.as_str();
    let read = [("Authorization", "Bearer reader-secret")];
    let admin = [("Authorization", "Bearer admin-secret")];
    assert_error(&get(a, "/api/v1/rules"), 401, "UNAUTHORIZED", "no token");
    assert_error(
        &http(a, "GET", "/api/v1/rules", &[("Authorization", "Bearer wrong")], None),
        401,
        "UNAUTHORIZED",
        "unknown token",
    );
    assert_eq!(http(a, "GET", "/api/v1/rules", &read, None).status, 200);
    let body = serde_json::to_vec(&capsule("rim:sensor:http:t1", json!(1))).expect("json");
    let ct = ("Content-Type", "application/json");
    assert_error(
        &http(a, "POST", "/api/v1/capsules", &[read[0], ct], Some(&body)),
        403,
        "FORBIDDEN",
        "read token writing",
    );
    assert_eq!(
        http(a, "POST", "/api/v1/capsules", &[admin[0], ct], Some(&body)).status,
        201
    );
    assert_eq!(get(a, "/api/v1/health/live").status, 200, "probes need no token");
    assert!(!d.log_text().contains("reader-secret"), "a token reached the log");
    drop(d);

    // A token file others can read is refused at start.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = dir.path().join("run2");
    let status = common::rimd_command()
        .arg("--run-dir")
        .arg(&run)
        .args(common::BASE_SETS.iter().flat_map(|s| ["--set", s]))
        .args(["--set", "api.listen=127.0.0.1:0", "--set", tokens.as_str()])
        .arg("--set")
        .arg(format!("persist.data_dir={}", dir.path().join("data2").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run rimd");
    assert!(!status.success(), "rimd started with a group-readable token file");
}

#[test]
fn rate_limits_answer_429_with_headers_and_retry_after() {
    let (_d, a) = daemon(&["api.rate_command_per_min=2"]);
    let a = a.as_str();
    let body = json!([event("rim:sensor:http:r1", T0, 1.0)]);
    for i in 0..2 {
        let r = send_json(a, "POST", "/api/v1/events", &body);
        assert_eq!(r.status, 202, "request {i}: {}", r.text());
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(if i == 0 { "1" } else { "0" }));
    }
    let r = send_json(a, "POST", "/api/v1/events", &body);
    let v = assert_error(&r, 429, "RATE_LIMITED", "third command in a minute");
    let retry = v["error"]["retryAfter"].as_u64().expect("retryAfter");
    assert!((1..=60).contains(&retry), "{v}");
    assert_eq!(r.header("retry-after"), Some(retry.to_string().as_str()));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = r
        .header("x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("reset");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(reset > now_s && reset <= now_s + 61, "reset {reset} vs now {now_s}");
    // Queries are another class with their own budget.
    let r = get(a, "/api/v1/ping");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000"));
}

#[test]
fn posted_events_become_decisions_in_the_audit_log_and_on_the_websocket() {
    let (_d, a) = daemon(&[]);
    let a = a.as_str();
    eventually("ready", || (get(a, "/api/v1/health/ready").status == 200).then_some(()));
    let mut ws = WsClient::connect(a, "/api/v1/ws/decisions?node=rim:sensor:http:*&severity=medium", &[]);
    let mut other = WsClient::connect(a, "/api/v1/ws/decisions?severity=critical", &[]);
    ws.send_text("PING");
    assert_eq!(ws.next_text(SOON).as_deref(), Some("PONG"));
    ws.send(0x9, b"hb");
    assert_eq!(
        ws.next_frame(SOON),
        Some((0xA, b"hb".to_vec())),
        "protocol ping gets a pong"
    );

    let node = "rim:sensor:http:w1";
    let batch = json!([event(node, T0, 20.0), event(node, T0 + 1, 95.0)]);
    let r = http(
        a,
        "POST",
        "/api/v1/events?wait=durable",
        &[
            ("Content-Type", "application/json"),
            ("X-Request-ID", "req-test-1"),
            ("X-Correlation-ID", "corr-9"),
        ],
        Some(&serde_json::to_vec(&batch).expect("json")),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"]["accepted"], 2);
    assert_eq!(v["data"]["durable"], true);
    assert_eq!(v["meta"]["requestId"], "req-test-1");
    assert_eq!(r.header("x-request-id"), Some("req-test-1"));
    assert_eq!(r.header("x-correlation-id"), Some("corr-9"));

    let msg = ws.next_text(SOON).expect("a decision on the WebSocket");
    let m: Value = serde_json::from_str(&msg).expect("json message");
    assert_eq!(m["type"], "decision", "{m}");
    assert_eq!(m["data"]["ruleId"], "hot");
    assert_eq!(m["data"]["rimNodeId"], node);
    assert_eq!(m["data"]["severity"], "high");
    assert_eq!(m["data"]["eventTimestamp"], T0 + 1);
    assert!(
        other.next_text(Duration::from_millis(500)).is_none(),
        "the severity filter let a high decision through"
    );

    let found = eventually("the decision in GET /decisions", || {
        let r = get(a, &format!("/api/v1/decisions?rimNodeId={node}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let list = v["data"].as_array()?.clone();
        (!list.is_empty()).then_some(v)
    });
    assert_eq!(found["data"][0]["ruleId"], "hot");
    assert_eq!(
        found["data"][0]["hash"], m["data"]["hash"],
        "the WebSocket and the audit log carry the same decision"
    );
    assert!(found["meta"]["pagination"]["totalElements"].as_u64() >= Some(1));
    let v = get(a, "/api/v1/decisions/verify").json();
    assert_eq!(v["data"]["valid"], true, "{v}");
    assert!(v["data"]["shards"][0]["records"].as_u64() >= Some(1), "{v}");
}

#[test]
fn capsules_round_trip_and_history_and_slice_answer() {
    let (_d, a) = daemon(&[]);
    let a = a.as_str();
    let scope = "rim:sensor:http:cap";
    let c = capsule(scope, json!({"note": "first", "n": [1, 2]}));
    let r = send_json(a, "POST", "/api/v1/capsules", &c);
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json()["data"].clone();
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(r.header("location"), Some(format!("/api/v1/capsules/{id}").as_str()));
    assert_eq!(
        send_json(a, "POST", "/api/v1/capsules", &c).status,
        200,
        "the same capsule again is idempotent"
    );
    let got = get(a, &format!("/api/v1/capsules/{id}")).json();
    assert_eq!(got["data"]["payload"], json!({"note": "first", "n": [1, 2]}));
    assert_eq!(got["data"]["scopeId"], scope);
    assert_eq!(got["data"]["vantageMode"], "ANALYST");

    for (i, ts) in [T0 + 60_000, T0 + 120_000].iter().enumerate() {
        let mut more = capsule(scope, json!({"i": i}));
        more["timestamp"] = json!(ts);
        assert_eq!(send_json(a, "POST", "/api/v1/capsules", &more).status, 201);
    }
    let list = get(
        a,
        &format!("/api/v1/capsules?scopeId={scope}&vantageMode=ANALYST&size=2&sort=timestamp,desc"),
    )
    .json();
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(list["data"][0]["timestamp"], T0 + 120_000, "newest first");
    assert_eq!(
        list["meta"]["pagination"],
        json!({"page": 0, "size": 2, "totalElements": 3, "totalPages": 2})
    );
    let page1 = get(
        a,
        &format!("/api/v1/capsules?scopeId={scope}&vantageMode=ANALYST&size=2&page=1&sort=timestamp,desc"),
    )
    .json();
    assert_eq!(page1["data"][0]["timestamp"], T0);
    let hist = get(
        a,
        &format!(
            "/api/v1/history/{scope}?vantageMode=ANALYST&from={}&to={}",
            T0,
            T0 + 120_000
        ),
    )
    .json();
    assert_eq!(hist["data"].as_array().map(Vec::len), Some(2), "{hist}");
    let hist2 = get(a, &format!("/api/v1/history?scopeId={scope}&vantageMode=ANALYST")).json();
    assert_eq!(hist2["data"].as_array().map(Vec::len), Some(3));

    let r = http(a, "DELETE", &format!("/api/v1/capsules/{id}"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(a, &format!("/api/v1/capsules/{id}")).status, 404);

    // The slice of a node that has live state.
    let node = "rim:sensor:http:s1";
    let r = send_json(a, "POST", "/api/v1/events", &json!(event(node, T0, 42.0)));
    assert_eq!(r.status, 202, "{}", r.text());
    let slice = eventually("the node's present in the slice", || {
        let r = get(a, &format!("/api/v1/temporal/slice/{node}?lookback=600&resolution=60"));
        (r.status == 200 && !r.json()["data"]["present"].is_null()).then(|| r.json())
    });
    let s = &slice["data"];
    assert_eq!(s["nodeId"], node);
    assert_eq!(s["present"]["rimNodeId"], node);
    assert_eq!(s["resolution"], 60);
    assert_eq!(s["lookbackSeconds"], 600);
    assert!(s["past"].is_array() && s["futures"].is_array());
    let conf = &s["confidence"];
    assert_eq!(conf["windowsExpected"], 10);
    let value = conf["value"].as_f64().expect("confidence value");
    assert!((0.0..=1.0).contains(&value), "{conf}");
    assert!(
        conf["freshness"].as_f64().is_some_and(|f| f > 0.0 && f <= 1.0),
        "{conf}"
    );
    assert_eq!(get(a, "/api/v1/temporal/slice/rim:sensor:http:never").status, 404);
}

#[test]
fn rules_metrics_health_and_request_ids() {
    let (_d, a) = daemon(&[]);
    let a = a.as_str();
    let rules = get(a, "/api/v1/rules").json();
    assert_eq!(rules["data"]["count"], 1, "{rules}");
    let generation = rules["data"]["generation"].as_u64().expect("generation");
    let text = "[[rule]]\nid = \"cold\"\nwhen = \"metric.temp < 0\"\nseverity = \"low\"\n";
    let r = send_json(a, "PUT", "/api/v1/rules", &json!({"format": "toml", "text": text}));
    assert_eq!(r.status, 200, "{}", r.text());
    let now = get(a, "/api/v1/rules").json();
    assert_eq!(now["data"]["generation"].as_u64(), Some(generation + 1));
    assert_eq!(now["data"]["text"], text);

    let m = eventually("metrics", || {
        let r = get(a, "/api/v1/metrics");
        (r.status == 200 && r.text().contains("rimd_up")).then_some(r)
    });
    assert!(m.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    assert!(m.text().contains("rimd_stage_latency_seconds"), "{}", m.text());

    let live = get(a, "/api/v1/health/live");
    assert_eq!(live.json()["data"]["status"], "UP");
    let ready = eventually("ready", || {
        let r = get(a, "/api/v1/health/ready");
        (r.status == 200).then_some(r)
    });
    let comps = ready.json()["data"]["components"].clone();
    assert!(
        comps
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x["name"] == "shards")),
        "{comps}"
    );

    let p1 = get(a, "/api/v1/ping");
    let p2 = get(a, "/api/v1/ping");
    assert_eq!(p1.json()["data"], "pong");
    // `pad` makes the answer larger by that much whitespace, the same JSON.
    let padded = get(a, "/api/v1/ping?pad=13000");
    assert_eq!(padded.status, 200);
    assert_eq!(padded.json()["data"], "pong");
    assert!(
        padded.body.len() >= p1.body.len() + 13_000 - 8,
        "{} vs {}",
        padded.body.len(),
        p1.body.len()
    );
    for wrong in ["-1", "1048577", "x"] {
        assert_eq!(get(a, &format!("/api/v1/ping?pad={wrong}")).status, 400, "pad={wrong}");
    }
    let (r1, r2) = (p1.header("x-request-id"), p2.header("x-request-id"));
    assert!(r1.is_some() && r1 != r2, "generated request ids differ: {r1:?} {r2:?}");
    let bad = http(
        a,
        "GET",
        "/api/v1/ping",
        &[("X-Request-ID", "has spaces and \"quotes\"")],
        None,
    );
    assert_ne!(
        bad.header("x-request-id"),
        Some("has spaces and \"quotes\""),
        "an unsafe id is replaced"
    );
}

#[test]
fn a_slow_websocket_client_is_told_what_it_missed_and_stop_still_exits_cleanly() {
    let (mut d, a) = daemon(&["api.ws_queue_len=4", "api.rate_command_per_min=0"]);
    let a = a.as_str();
    eventually("ready", || (get(a, "/api/v1/health/ready").status == 200).then_some(()));
    // This client reads nothing while the decisions are made.
    let mut slow = WsClient::connect(a, "/api/v1/ws/decisions?node=rim:sensor:http:*", &[]);
    let batches = 3;
    let per_batch = 10_000;
    for b in 0..batches {
        let batch: Vec<Value> = (0..per_batch)
            .map(|i| {
                event(
                    &format!("rim:sensor:http:m{}", i % 500),
                    T0 + (b * per_batch + i) as i64,
                    95.0,
                )
            })
            .collect();
        let r = send_json(a, "POST", "/api/v1/events", &Value::Array(batch));
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let total = (batches * per_batch) as u64;
    let (mut decisions, mut missed, mut notices) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + SOON * 2;
    while decisions + missed < total && Instant::now() < deadline {
        let Some(text) = slow.next_text(Duration::from_secs(2)) else {
            break;
        };
        let m: Value = serde_json::from_str(&text).expect("json message");
        match m["type"].as_str() {
            Some("decision") => decisions += 1,
            Some("missed") => {
                notices += 1;
                missed += m["missed"].as_u64().expect("missed count");
            }
            other => panic!("unexpected message type {other:?}: {m}"),
        }
    }
    assert!(
        notices >= 1 && missed >= 1,
        "no miss notice ({decisions} decisions read)"
    );
    assert_eq!(
        decisions + missed,
        total,
        "every decision is either delivered or counted as missed"
    );
    // The hot path was not slowed into losing anything: the audit log has them all.
    let logged = eventually("all decisions in the audit log", || {
        let v = get(a, "/api/v1/decisions?size=1").json();
        let n = v["meta"]["pagination"]["totalElements"].as_u64()?;
        (n >= total).then_some(n)
    });
    assert_eq!(logged, total);
    // Stop with the client still connected.
    let status = d.sigterm();
    assert!(status.success(), "rimd exited with {status}");
}
