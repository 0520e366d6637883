//! The temporal slice answered from resident windows is the slice the store gives: the
//! same `past`, `futures` and accuracy, before and after new windows land (the tail keeps
//! memory current), the same as the store path of the same daemon (a lookback past the
//! resident one), and the same as a daemon on the same data with the resident windows off
//! (`api.slice_cache_bytes = 0`). A burst of windows larger than one step of the tail is
//! taken between requests and reaches every resident node. `GET /history` without
//! `resolution` lists every resolution. A real daemon, a real HTTP client.

mod common;

use common::{eventually, get, send_json, Daemon, HTTP_SETS};
use serde_json::{json, Value};

const NODE: &str = "rim:sensor:slice:a";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn event(node: &str, ts: i64, temp: f64) -> Value {
    json!({
        "rim_node_id": node,
        "timestamp": ts,
        "critical_metrics": {"temp": temp, "load": temp / 100.0},
        "price": 100.0 + temp / 7.0,
        "volume": 1.5,
        "status": "OK"
    })
}

fn post(a: &str, events: Vec<Value>) {
    let r = send_json(a, "POST", "/api/v1/events", &Value::Array(events));
    assert_eq!(r.status, 202, "{}", r.text());
}

/// The node's observed 60 s capsules as the store lists them.
fn history(a: &str, from: i64, to: i64, vantage: &str) -> Value {
    let r = get(
        a,
        &format!("/api/v1/history/{NODE}?resolution=60&vantageMode={vantage}&from={from}&to={to}&size=1000"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].clone()
}

fn slice(a: &str) -> Value {
    slice_with(a, "")
}

fn slice_with(a: &str, query: &str) -> Value {
    let r = get(a, &format!("/api/v1/temporal/slice/{NODE}{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].clone()
}

/// The slice agrees with the store's own lists at the slice's `now`.
#[track_caller]
fn assert_matches_store(a: &str, s: &Value) {
    let now = s["now"].as_i64().expect("now");
    let past = history(a, now - 3_600_000, now, "OBSERVED");
    assert_eq!(s["past"], past, "past differs from the store's history");
    let futures = history(a, now - 60_000, i64::MAX, "PREDICTED");
    assert_eq!(s["futures"], futures, "futures differ from the store's predictions");
}

fn metric(a: &str, name: &str) -> u64 {
    let text = get(a, "/api/v1/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// What must be equal between two slices of the same data taken at different moments
/// (over the same windows).
fn stable(s: &Value) -> Value {
    let c = &s["confidence"];
    json!({
        "past": s["past"],
        "futures": s["futures"],
        "accuracy": c["accuracy"],
        "predictionsScored": c["predictionsScored"],
        "directionHitRate": c["directionHitRate"],
        "windowsPresent": c["windowsPresent"],
    })
}

/// The windows only (the accuracy table is not what a restart is about).
fn windows(s: &Value) -> Value {
    json!({"past": s["past"], "futures": s["futures"], "windowsPresent": s["confidence"]["windowsPresent"]})
}

#[test]
fn the_resident_slice_is_the_stores_slice_before_and_after_new_windows_and_with_memory_off() {
    let sets: Vec<&str> = HTTP_SETS.iter().copied().chain(["persist.grace_ms=300"]).collect();
    let mut d = Daemon::start(&sets, None);
    let a = d.http_addr();
    let a = a.as_str();
    // Eight minutes of history, one event per minute in the middle of each window: every
    // event after the first closes the window before it, and predicts the next. (The last
    // window stays open: a quiet node's window closes a resolution plus grace after its
    // last event's arrival.)
    let minute = 60_000;
    let base = (now_ms() / minute - 12) * minute + 30_000;
    post(
        a,
        (0..8)
            .map(|i| event(NODE, base + i * minute, 40.0 + i as f64))
            .collect(),
    );
    let closed = eventually("seven closed windows in the store", || {
        let h = history(a, 0, i64::MAX, "OBSERVED");
        (h.as_array().map_or(0, Vec::len) == 7).then_some(h)
    });
    assert_eq!(closed[0]["timestamp"], base - 30_000);

    let first = slice(a);
    assert_eq!(first["past"].as_array().map(Vec::len), Some(7), "{first}");
    assert_matches_store(a, &first);
    let again = slice(a);
    assert_eq!(stable(&again), stable(&first));
    assert!(metric(a, "rimd_http_slice_resident_hits_total ") >= 2);
    assert!(metric(a, "rimd_http_slice_resident_fills_total ") >= 1);

    // Two more windows land after the node is resident: the tail brings them in.
    post(
        a,
        vec![
            event(NODE, base + 8 * minute, 60.0),
            event(NODE, base + 9 * minute, 61.0),
        ],
    );
    let grown = eventually("nine windows in the slice", || {
        let s = slice(a);
        (s["past"].as_array().map_or(0, Vec::len) == 9).then_some(s)
    });
    assert_matches_store(a, &grown);
    assert!(metric(a, "rimd_http_slice_resident_tailed_total ") >= 2);
    // A shorter lookback is answered from the same resident windows, window by window
    // (the default one from the lists rendered whole): the store's last five minutes.
    let short = slice_with(a, "?lookback=300");
    let now = short["now"].as_i64().expect("now");
    assert_eq!(short["past"], history(a, now - 300_000, now, "OBSERVED"), "{short}");
    assert!(short["past"].as_array().map_or(0, Vec::len) < 9, "{short}");
    // An event in the current window predicts the next one: a future, tailed in too.
    post(a, vec![event(NODE, now_ms() - 1_000, 62.0)]);
    let with_future = eventually("a future and the current window in the slice", || {
        let s = slice(a);
        let futures = s["futures"].as_array().map_or(0, Vec::len);
        (futures > 0 && s["past"].as_array().map_or(0, Vec::len) == 10).then_some(s)
    });
    assert_matches_store(a, &with_future);
    // The store path of the same daemon (a lookback beyond the resident hour; every
    // window is minutes old, so both cover the same ones), accuracy included.
    // Accuracy reaches the store with the roll-up's checkpoint, paced over
    // `persist.checkpoint_ms`: wait for it rather than for a moment.
    let resident = eventually("scored predictions in the slice", || {
        let s = slice(a);
        (s["confidence"]["predictionsScored"].as_u64() > Some(0)).then_some(s)
    });
    let from_store = slice_with(a, "?lookback=7200");
    assert_eq!(stable(&from_store), stable(&resident));

    // History without `resolution`: both roll-up resolutions, in window order.
    let all = get(a, &format!("/api/v1/history/{NODE}?size=1000")).json();
    let rows = all["data"].as_array().expect("a list");
    let resolutions: std::collections::BTreeSet<i64> = rows.iter().filter_map(|c| c["resolution"].as_i64()).collect();
    assert_eq!(resolutions, [1, 60].into(), "{all}");
    let starts: Vec<(i64, i64)> = rows
        .iter()
        .map(|c| {
            (
                c["timestamp"].as_i64().unwrap_or(0),
                c["resolution"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");

    // The same data, the resident windows off: the same windows.
    let resident = windows(&slice(a));
    d.sigterm();
    let dir = d.into_dir();
    let off: Vec<&str> = sets.iter().copied().chain(["api.slice_cache_bytes=0"]).collect();
    let mut d = Daemon::start_in(dir, &off, None);
    let a = d.http_addr();
    let from_store = eventually("the restarted daemon's slice", || {
        let r = get(&a, &format!("/api/v1/temporal/slice/{NODE}"));
        (r.status == 200).then(|| r.json()["data"].clone())
    });
    assert_eq!(windows(&from_store), resident);
    assert_eq!(metric(&a, "rimd_http_slice_resident_hits_total "), 0);
}

/// A node's observed 60 s windows in the store over the last hour (at `now`).
fn node_history(a: &str, node: &str, from: i64, to: i64) -> Value {
    let r = get(
        a,
        &format!("/api/v1/history/{node}?resolution=60&vantageMode=OBSERVED&from={from}&to={to}&size=1000"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].clone()
}

fn node_slice(a: &str, node: &str) -> Value {
    let r = get(a, &format!("/api/v1/temporal/slice/{node}"));
    assert_eq!(r.status, 200, "{node}: {}", r.text());
    r.json()["data"].clone()
}

#[test]
fn a_burst_of_windows_larger_than_a_tail_step_reaches_every_resident_node_between_requests() {
    let sets: Vec<&str> = HTTP_SETS.iter().copied().chain(["persist.grace_ms=300"]).collect();
    let mut d = Daemon::start(&sets, None);
    let a = d.http_addr();
    let a = a.as_str();
    let nodes: Vec<String> = (0..100).map(|i| format!("rim:sensor:burst:n{i}")).collect();
    let minute = 60_000;
    let base = (now_ms() / minute - 10) * minute + 30_000;
    let at = |i: i64| -> Vec<Value> {
        nodes
            .iter()
            .map(|n| event(n, base + i * minute, 40.0 + i as f64))
            .collect()
    };
    post(a, [at(0), at(1), at(2)].concat());
    let last = nodes.last().expect("nodes");
    eventually("two closed windows of every node in the store", || {
        (node_history(a, last, 0, i64::MAX).as_array().map_or(0, Vec::len) == 2).then_some(())
    });
    for n in &nodes {
        assert_eq!(node_slice(a, n)["past"].as_array().map(Vec::len), Some(2), "{n}");
    }
    // One more window for every node: hundreds of capsules (both resolutions, the
    // predictions) in the store's next commits, more than one step of the tail.
    post(a, at(3));
    eventually("three closed windows of every node in the store", || {
        (node_history(a, last, 0, i64::MAX).as_array().map_or(0, Vec::len) == 3).then_some(())
    });
    let tailed = metric(a, "rimd_http_slice_resident_tailed_total ");
    // Nothing has read the tail since the burst (the waits above asked the store's
    // history): it holds at least the 100 nodes' new observed windows, more than one
    // step. One slice takes one step and leaves the rest to the follower: the tail keeps
    // growing with no further slice asked for.
    let _ = node_slice(a, &nodes[0]);
    eventually("the tail taken between requests", || {
        (metric(a, "rimd_http_slice_resident_tailed_total ") > tailed + 64).then_some(())
    });
    for n in &nodes {
        let s = eventually("three windows in the slice", || {
            let s = node_slice(a, n);
            (s["past"].as_array().map_or(0, Vec::len) == 3).then_some(s)
        });
        let now = s["now"].as_i64().expect("now");
        assert_eq!(s["past"], node_history(a, n, now - 3_600_000, now), "{n}");
    }
}
