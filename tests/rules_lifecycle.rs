//! Rule sets have a life beyond the process: a set put through the API is still in force
//! after a restart (even after SIGKILL), every installed generation keeps its text, a
//! dry run installs nothing, and a backtest of the live generation over its own journal
//! reproduces exactly the decisions that were made (the replay is faithful), while a
//! changed threshold shows exactly the decisions it adds and removes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rimd::backtest::{self, Spec};
use rimd::config::Config;

const HOT: &str =
    "[[rule]]\nid = \"hot\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > 90\"\nseverity = \"high\"\n";

/// `hot` plus a windowed rule with a cooldown (state and cooldowns must replay alike).
fn rules(threshold: f64) -> String {
    format!(
        "[[rule]]\nid = \"hot\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > {threshold}\"\nseverity = \"high\"\n\n\
         [[rule]]\nid = \"rising\"\nwhen = \"change(metric.temp, 1s) > 15 and ewma(metric.temp) > 40\"\nseverity = \"medium\"\ncooldown = \"100ms\"\n"
    )
}

fn put_rules(addr: &str, path: &str, text: &str) -> HttpResponse {
    http(
        addr,
        "PUT",
        path,
        &[("Content-Type", "application/toml")],
        Some(text.as_bytes()),
    )
}

#[test]
fn a_set_put_through_the_api_survives_sigkill_with_its_history() {
    let sets = HTTP_SETS;
    let mut d = Daemon::start(sets, Some(HOT));
    let addr = d.http_addr();
    let first = get(&addr, "/api/v1/rules").json();
    assert_eq!(first["data"]["generation"], 1, "{first}");

    let two = rules(90.0);
    let r = put_rules(&addr, "/api/v1/rules", &two);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["generation"], 2);

    // A dry run says what would change and installs nothing.
    let three = "[[rule]]\nid = \"hot\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > 99\"\nseverity = \"high\"\n\n[[rule]]\nid = \"cold\"\nwhen = \"metric.temp < 0\"\nseverity = \"low\"\n";
    let dry = put_rules(&addr, "/api/v1/rules?dryRun=true", three).json();
    let dd = &dry["data"];
    assert_eq!(dd["dryRun"], true, "{dry}");
    assert_eq!(dd["generation"], 3);
    assert_eq!(dd["added"], serde_json::json!(["cold"]));
    assert_eq!(dd["removed"], serde_json::json!(["rising"]));
    assert_eq!(dd["changed"][0]["id"], "hot");
    assert_eq!(dd["changed"][0]["toVersion"], 2);
    assert_eq!(
        get(&addr, "/api/v1/rules").json()["data"]["generation"],
        2,
        "dry run installed nothing"
    );
    let bad = put_rules(
        &addr,
        "/api/v1/rules?dryRun=true",
        "[[rule]]\nid = \"x\"\nwhen = \"metric.t >\"\n",
    );
    assert_error(&bad, 400, "VALIDATION_ERROR", "a broken set in a dry run");

    // A decision names generation 2, which resolves to its text.
    let mut sub = d.subscriber();
    let mut feed = d.producer("p", 1 << 16);
    feed.publish(&event("rim:sensor:plant:a", T0, &[("temp", 95.0)]));
    let dec = sub.next(SOON).expect("a decision");
    assert_eq!(dec.rule_generation, 2);
    let of = get(&addr, &format!("/api/v1/rules/{}", dec.rule_generation)).json();
    assert_eq!(of["data"]["text"], two.as_str());
    assert_eq!(of["data"]["origin"], "api");
    drop(feed);

    // SIGKILL, restart with the same rule file: the API's set is in force again.
    let dir = d.into_dir();
    let mut d = Daemon::start_in(dir, sets, Some(HOT));
    let addr = d.http_addr();
    let now = get(&addr, "/api/v1/rules").json();
    assert_eq!(now["data"]["generation"], 2, "{now}\n{}", d.log_text());
    assert_eq!(now["data"]["origin"], "api");
    assert_eq!(now["data"]["text"], two.as_str());
    assert!(
        d.log_text().contains("rules restored from the rule book"),
        "{}",
        d.log_text()
    );
    let h = get(&addr, "/api/v1/rules/history").json();
    assert_eq!(h["data"]["current"], 2, "{h}");
    assert_eq!(h["data"]["durable"], true);
    let gens: Vec<u64> = h["data"]["sets"]
        .as_array()
        .expect("sets")
        .iter()
        .map(|s| s["generation"].as_u64().expect("generation"))
        .collect();
    assert_eq!(gens, vec![2, 1]);
    assert_eq!(get(&addr, "/api/v1/rules/1").json()["data"]["text"], HOT);
    assert_error(
        &get(&addr, "/api/v1/rules/99"),
        404,
        "NOT_FOUND",
        "an unknown generation",
    );
    assert_error(
        &get(&addr, "/api/v1/rules/x1"),
        400,
        "VALIDATION_ERROR",
        "a generation that is no number",
    );

    // The rule file changed while the daemon was down: it wins, as the next generation.
    let dir = d.into_dir();
    let changed =
        "[[rule]]\nid = \"hot\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > 80\"\nseverity = \"high\"\n";
    let mut d = Daemon::start_in(dir, sets, Some(changed));
    let addr = d.http_addr();
    let now = get(&addr, "/api/v1/rules").json();
    assert_eq!(now["data"]["generation"], 3, "{now}");
    assert_eq!(now["data"]["text"], changed);
    assert!(d.log_text().contains("the rule file changed"), "{}", d.log_text());
    let h = get(&addr, "/api/v1/rules/history").json();
    assert_eq!(h["data"]["sets"].as_array().map(Vec::len), Some(3));
}

/// Events over 12 nodes whose temperatures cross 90 often, in 10 ms steps of event time.
fn script() -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..3_000i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let node = format!("rim:sensor:plant:s{}", x % 12);
        let temp = 40.0 + (x >> 20) as f64 % 600.0 / 10.0;
        out.push((node, T0 + i * 10, temp));
    }
    out
}

fn config_of(dir: &Path, sets: &[&str]) -> Config {
    let data = format!("persist.data_dir={}", dir.join("data").display());
    let all: Vec<String> = BASE_SETS
        .iter()
        .copied()
        .chain([data.as_str()])
        .chain(sets.iter().copied())
        .map(str::to_owned)
        .collect();
    Config::load(None, std::iter::empty(), &all).expect("config")
}

fn compile(text: &str, config: &Config) -> rim_rules::RuleSet {
    rimd::plane::compile_as(text, "toml", config, None).expect("compiles")
}

#[test]
fn the_live_generation_replays_to_exactly_its_decisions() {
    // Two shards: each replays its own partitions, in journal order, as live.
    let sets = &[
        "reflex.cooldown_slots=4096",
        "topology.reflex_shards=2",
        "topology.reflex_cores=[0]",
    ];
    let live_rules = rules(90.0);
    let mut d = Daemon::start(sets, Some(&live_rules));
    let mut feed = d.producer("p", 1 << 20);
    let events = script();
    for (node, ts, temp) in &events {
        feed.publish(&event(node, *ts, &[("temp", *temp)]));
    }
    d.wait_for(SOON, "every event applied", |s| {
        counter(s, "ingest.events_accepted") == events.len() as u64
    });
    drop(feed);
    assert!(d.sigterm().success(), "{}", d.log_text());
    let config = config_of(d.dir(), sets);
    let journal = d.data_dir().join("journal");
    let (from, to) = (T0, T0 + 10 * events.len() as i64);

    // The live generation, as the rule book holds it: exactly the recorded decisions.
    let book = rimd::rulebook::RuleBook::read_only(&d.data_dir()).expect("rule book");
    let live = rimd::plane::restore(&config, &book.get(1).expect("generation 1")).expect("restores");
    let r = backtest::run(&config, &Spec::new(journal.clone(), from, to, live)).expect("backtest");
    assert!(r.live_decisions > 100, "{}", r.render());
    assert!(
        r.identical(),
        "the live generation must replay to its own decisions:\n{}",
        r.render()
    );
    assert_eq!(r.same, r.live_decisions);
    assert_eq!(r.candidate_decisions, r.live_decisions);
    assert_eq!(r.events_replayed, events.len() as u64);
    assert!(
        r.rules.iter().any(|row| row.rule_id == "rising" && row.same > 0),
        "{}",
        r.render()
    );

    // A higher threshold for `hot` (no cooldown): exactly the events in (90, 95] are gone.
    let gone_expected = events.iter().filter(|(_, _, t)| *t > 90.0 && *t <= 95.0).count() as u64;
    let r = backtest::run(
        &config,
        &Spec::new(journal.clone(), from, to, compile(&rules(95.0), &config)),
    )
    .expect("backtest");
    assert_eq!((r.new, r.gone, r.different), (0, gone_expected, 0), "{}", r.render());
    assert!(r.examples.gone.iter().all(|o| o.rule_id == "hot"));
    // A lower one: exactly the events in (85, 90] are new.
    let new_expected = events.iter().filter(|(_, _, t)| *t > 85.0 && *t <= 90.0).count() as u64;
    let r = backtest::run(
        &config,
        &Spec::new(journal.clone(), from, to, compile(&rules(85.0), &config)),
    )
    .expect("backtest");
    assert_eq!((r.new, r.gone, r.different), (new_expected, 0, 0), "{}", r.render());
    assert!(r.examples.new.len() <= backtest::EXAMPLES_DEFAULT && !r.examples.new.is_empty());

    // A narrower range compares only its own decisions.
    let half = T0 + 10 * 1_500;
    let r = backtest::run(&config, &Spec::new(journal, from, half, compile(&live_rules, &config))).expect("backtest");
    assert!(r.identical(), "{}", r.render());
    assert_eq!(r.events_in_range, 1_500);
}

#[test]
fn the_api_runs_a_backtest_as_a_job() {
    let mut d = Daemon::start(HTTP_SETS, Some(&rules(90.0)));
    let addr = d.http_addr();
    let mut feed = d.producer("p", 1 << 20);
    let events = script();
    for (node, ts, temp) in events.iter().take(1_000) {
        feed.publish(&event(node, *ts, &[("temp", *temp)]));
    }
    d.wait_for(SOON, "events applied and decisions logged", |s| {
        counter(s, "ingest.events_accepted") == 1_000
            && counter(s, "persist.decisions_logged") == counter(s, "reflex.decisions")
    });
    // A barrier: an event no rule watches, outside the range, made durable after every
    // decision was logged, so the journal files hold them all when the job reads them.
    feed.publish(&event("rim:pump:plant:barrier", T0 - 60_000, &[("flow", 1.0)]));
    assert!(
        feed.p.wait_durable(feed.p.position(), 50_000, 30_000_000_000),
        "barrier durable"
    );
    let (from, to) = (T0, T0 + 10_000);
    let post = |body: serde_json::Value| send_json(&addr, "POST", "/api/v1/rules/backtests", &body);

    assert_error(
        &post(serde_json::json!({"fromMs": to, "toMs": from})),
        400,
        "VALIDATION_ERROR",
        "a reversed range",
    );
    assert_error(
        &post(serde_json::json!({"fromMs": 0, "toMs": i64::MAX})),
        400,
        "VALIDATION_ERROR",
        "a range over the limit",
    );
    assert_error(
        &post(serde_json::json!({"fromMs": from, "toMs": to, "text": "[[rule]]\nid = 1\n"})),
        400,
        "VALIDATION_ERROR",
        "a candidate that does not compile",
    );
    assert_error(
        &http(
            &addr,
            "POST",
            "/api/v1/rules/backtests",
            &[("Content-Type", "application/json")],
            Some(b"\x00{garbage"),
        ),
        400,
        "VALIDATION_ERROR",
        "garbage",
    );
    assert_error(
        &get(&addr, "/api/v1/rules/backtests/77"),
        404,
        "NOT_FOUND",
        "an unknown job",
    );

    let started = post(serde_json::json!({"fromMs": from, "toMs": to, "text": rules(95.0)}));
    assert_eq!(started.status, 202, "{}", started.text());
    let location = started.header("location").expect("Location").to_owned();
    let done = eventually("the backtest job to finish", || {
        let v = get(&addr, &location).json();
        (v["data"]["state"] != "running").then_some(v)
    });
    assert_eq!(done["data"]["state"], "done", "{done}");
    let res = &done["data"]["result"];
    let gone_expected = events
        .iter()
        .take(1_000)
        .filter(|(_, _, t)| *t > 90.0 && *t <= 95.0)
        .count();
    assert_eq!(res["gone"], gone_expected as u64, "{done}");
    assert_eq!(res["new"], 0);
    assert_eq!(res["eventsReplayed"], 1_001, "the 1,000 and the barrier");

    // The set in force, as the candidate: nothing changes.
    let started = post(serde_json::json!({"fromMs": from, "toMs": to}));
    let location = started.header("location").expect("Location").to_owned();
    let done = eventually("the second job", || {
        let v = get(&addr, &location).json();
        (v["data"]["state"] != "running").then_some(v)
    });
    let res = &done["data"]["result"];
    assert_eq!(
        (res["new"].as_u64(), res["gone"].as_u64(), res["different"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{done}"
    );
    assert!(res["liveDecisions"].as_u64() > Some(0));
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
fn backtests_need_the_admin_scope_even_to_read() {
    let dir = TempDir::new("bt-tokens");
    let path = dir.path().join("tokens");
    std::fs::write(&path, "read reader-secret\nadmin admin-secret\n").expect("write tokens");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let tokens = format!("api.tokens_file={}", path.display());
    let mut sets = HTTP_SETS.to_vec();
    sets.push(tokens.as_str());
    let mut d = Daemon::start(&sets, Some(HOT));
    let addr = d.http_addr();
    let read = ("Authorization", "Bearer reader-secret");
    let admin = ("Authorization", "Bearer admin-secret");
    let json = ("Content-Type", "application/json");
    // History and generations are reads.
    assert_eq!(http(&addr, "GET", "/api/v1/rules/history", &[read], None).status, 200);
    assert_eq!(http(&addr, "GET", "/api/v1/rules/1", &[read], None).status, 200);
    // A dry run is a PUT: admin.
    let dry = http(
        &addr,
        "PUT",
        "/api/v1/rules?dryRun=true",
        &[read, ("Content-Type", "text/plain")],
        Some(HOT.as_bytes()),
    );
    assert_error(&dry, 403, "FORBIDDEN", "a dry run with a read token");
    let dry = http(
        &addr,
        "PUT",
        "/api/v1/rules?dryRun=maybe",
        &[admin, ("Content-Type", "text/plain")],
        Some(HOT.as_bytes()),
    );
    assert_error(&dry, 400, "VALIDATION_ERROR", "dryRun that is no boolean");
    let body = br#"{"fromMs": 0, "toMs": 1000}"#;
    let r = http(&addr, "POST", "/api/v1/rules/backtests", &[read, json], Some(body));
    assert_error(&r, 403, "FORBIDDEN", "starting a backtest with a read token");
    let r = http(&addr, "POST", "/api/v1/rules/backtests", &[admin, json], Some(body));
    assert_eq!(r.status, 202, "{}", r.text());
    let location = r.header("location").expect("Location").to_owned();
    assert_error(
        &http(&addr, "GET", &location, &[read], None),
        403,
        "FORBIDDEN",
        "reading a backtest with a read token",
    );
    assert_eq!(http(&addr, "GET", &location, &[admin], None).status, 200);
    drop(dir);
}
