//! Compiling whole files: accessors, node globs, versions across recompiles, limits.

mod common;

use common::{json_err, metric, toml_err, when_err};
use rim_rules::{compile_json, compile_toml, Limits, RuleSet, Series, Severity, EVIDENCE_MAX};

const FILE: &str = r#"
[[rule]]
id = "temp-high"
nodes = "rim:sensor:*"
when = "metric.temp > 80 and change(metric.temp, 5s) > 10"
severity = "high"
cooldown = "10s"

[[rule]]
id = "quiet"
nodes = ["rim:pump:*", "rim:valve:plant:v?"]
when = "stale(30s) or zscore(price) > 3 or ewma(metric.temp) > 1 or pct_change(price, 1m) > 5"
severity = "critical"

[[rule]]
id = "degraded"
when = "status == \"DEGRADED\""
severity = "info"
"#;

fn compile(text: &str, prev: Option<&RuleSet>) -> RuleSet {
    match compile_toml(text, &Limits::default(), prev) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn accessors() {
    let set = compile(FILE, None);
    assert_eq!(set.len(), 3);
    assert_eq!(set.generation(), 1);
    assert_eq!(set.source(), FILE);
    let r = set.rule(0);
    assert_eq!(r.id(), "temp-high");
    assert_eq!(r.version(), 1);
    assert_eq!(r.severity(), Severity::High);
    assert_eq!(r.cooldown_ms(), 10_000);
    assert_eq!(r.when(), "metric.temp > 80 and change(metric.temp, 5s) > 10");
    assert_eq!(r.label(0), "metric.temp");
    assert_eq!(r.label(1), "change(metric.temp, 5s)");
    assert_eq!(r.label(9), "");
    assert!(!r.uses_stale());
    assert_eq!(r.stale_ordinal(), None);
    assert_eq!(r.series_used().collect::<Vec<_>>(), vec![metric("temp")]);
    let q = set.rule(1);
    assert!(q.uses_stale());
    assert_eq!(q.stale_ordinal(), Some(0));
    assert_eq!(q.series_used().collect::<Vec<_>>(), vec![Series::Price, metric("temp")]);
    assert_eq!(q.cooldown_ms(), 0);
    let d = set.rule(2);
    assert_eq!(d.severity(), Severity::Info);
    assert_eq!(d.label(0), "status == \"DEGRADED\"");
    assert_eq!(
        set.rules().map(|r| r.id()).collect::<Vec<_>>(),
        ["temp-high", "quiet", "degraded"]
    );
    assert!(RuleSet::empty().is_empty());
    assert_eq!(RuleSet::empty().generation(), 0);
}

#[test]
fn node_globs() {
    let set = compile(FILE, None);
    let (temp, quiet, any) = (set.rule(0), set.rule(1), set.rule(2));
    assert!(temp.matches("rim:sensor:plant:t1"));
    assert!(temp.matches("rim:sensor:plant:a:b"));
    assert!(!temp.matches("rim:pump:plant:p1"));
    assert!(quiet.matches("rim:pump:yard:p1"));
    assert!(quiet.matches("rim:valve:plant:v7"));
    assert!(!quiet.matches("rim:valve:plant:v77"));
    assert!(!quiet.matches("rim:sensor:plant:t1"));
    assert!(any.matches("rim:anything:at:all"));
}

#[test]
fn stale_ordinals_are_dense_and_limited() {
    let rule = |i: usize| {
        format!(
            "[[rule]]\nid = \"s{i}\"\nwhen = \"stale({}s)\"\nseverity = \"low\"\n",
            i + 1
        )
    };
    let plain = "[[rule]]\nid = \"p\"\nwhen = \"price > 1\"\nseverity = \"low\"\n";
    let text = format!("{}{plain}{}", rule(0), rule(1));
    let set = compile(&text, None);
    let ords: Vec<_> = set.rules().map(|r| r.stale_ordinal()).collect();
    assert_eq!(ords, vec![Some(0), None, Some(1)]);

    let limits = Limits {
        stale_rules_max: 2,
        ..Limits::default()
    };
    let text: String = (0..3).map(rule).collect();
    let errs = compile_toml(&text, &limits, None)
        .err()
        .map(|e| e.into_vec())
        .unwrap_or_default();
    assert_eq!(errs.len(), 1);
    assert_eq!(
        (errs[0].line, errs[0].column, errs[0].path.as_str()),
        (Some(9), Some(1), "rule[2].when")
    );
    assert_eq!(
        errs[0].message,
        "more than 2 rules use stale(); this one is over the limit"
    );
}

#[test]
fn versions_follow_definitions() {
    let v1 = compile(FILE, None);
    // Same file: same versions, next generation.
    let v2 = compile(FILE, Some(&v1));
    assert_eq!(v2.generation(), 2);
    assert!(v2.rules().all(|r| r.version() == 1));

    // Reformatting `when` is not a change; changing severity, cooldown, nodes or the
    // condition is.
    let edited = FILE
        .replace(
            "metric.temp > 80 and change(metric.temp, 5s) > 10",
            "metric.temp>80 and change(metric.temp,5000ms)>10",
        )
        .replace("severity = \"critical\"", "severity = \"high\"")
        .replace("DEGRADED", "FAILED");
    let v3 = compile(&edited, Some(&v2));
    assert_eq!(v3.generation(), 3);
    let versions: Vec<_> = v3.rules().map(|r| (r.id(), r.version())).collect();
    assert_eq!(versions, [("temp-high", 1), ("quiet", 2), ("degraded", 2)]);

    let edited2 = edited
        .replace("cooldown = \"10s\"", "cooldown = \"11s\"")
        .replace("id = \"degraded\"", "id = \"fresh\"");
    let v4 = compile(&edited2, Some(&v3));
    let versions: Vec<_> = v4.rules().map(|r| (r.id(), r.version())).collect();
    assert_eq!(versions, [("temp-high", 2), ("quiet", 2), ("fresh", 1)]);

    let nodes = edited2.replace("nodes = \"rim:sensor:*\"", "nodes = [\"rim:sensor:*\", \"rim:x:*\"]");
    let v5 = compile(&nodes, Some(&v4));
    assert_eq!(v5.rule(0).version(), 3);
    // A dropped rule coming back starts over.
    let v6 = compile(&edited, Some(&v5));
    assert_eq!(v6.rule(2).id(), "degraded");
    assert_eq!(v6.rule(2).version(), 1);
    assert_eq!(v6.generation(), 6);
}

#[test]
fn json_matches_toml() {
    let json = r#"{"rule": [
        {"id": "temp-high", "nodes": "rim:sensor:*", "when": "metric.temp > 80 and change(metric.temp, 5s) > 10",
         "severity": "high", "cooldown": "10s"},
        {"id": "many", "nodes": ["rim:a:*", "rim:b:*"], "when": "price > 1", "severity": "low"}
    ]}"#;
    let set = compile_json(json, &Limits::default(), None).unwrap_or_else(|e| panic!("{e}"));
    let toml = compile(FILE, None);
    let (a, b) = (set.rule(0), toml.rule(0));
    assert_eq!(
        (a.id(), a.severity(), a.cooldown_ms(), a.when()),
        (b.id(), b.severity(), b.cooldown_ms(), b.when())
    );
    assert!(set.rule(1).matches("rim:b:x:y") && !set.rule(1).matches("rim:c:x:y"));
    // A JSON set can follow a TOML one: versions carry over.
    let next = compile_json(json, &Limits::default(), Some(&toml)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((next.rule(0).version(), next.generation()), (1, 2));
    assert!(compile_json(r#"{"rule": []}"#, &Limits::default(), None).is_ok_and(|s| s.is_empty()));
    assert!(compile_toml("", &Limits::default(), None).is_ok_and(|s| s.is_empty()));
}

#[test]
fn limits() {
    let rule = |i: usize| format!("[[rule]]\nid = \"r{i}\"\nwhen = \"price > {i}\"\nseverity = \"low\"\n");
    let limits = Limits {
        rules_max: 3,
        ..Limits::default()
    };
    let three: String = (0..3).map(rule).collect();
    assert!(compile_toml(&three, &limits, None).is_ok());
    let four: String = (0..4).map(rule).collect();
    let e = compile_toml(&four, &limits, None).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("line 1, column 3 (rule): 4 rules, more than the limit of 3")
    );
    let json = format!("{{\"rule\": [{}]}}", ["{}"; 4].join(","));
    assert_eq!(json_err_with(&json, &limits).3, "4 rules, more than the limit of 3");

    // Windows follow the limits.
    let narrow = Limits {
        window_min_ms: 1_000,
        window_max_ms: 10_000,
        ..Limits::default()
    };
    let w = |when: &str| {
        let text = serde_json::json!({"rule": [{"id": "r", "when": when, "severity": "low"}]}).to_string();
        json_err_with(&text, &narrow)
    };
    assert_eq!(
        w("change(price, 500ms) > 1").3,
        "window 500ms is outside the allowed 1s to 10s"
    );
    assert_eq!(w("pct_change(price, 11s) > 1").1, Some(19));

    // Leaves.
    let many: Vec<String> = (0..=EVIDENCE_MAX).map(|i| format!("metric.m{i} > 0")).collect();
    let (col, msg) = when_err(&many.join(" or "));
    let want_col = many[..EVIDENCE_MAX].join(" or ").len() + " or ".len() + 1;
    assert_eq!(col, Some(want_col as u32));
    assert_eq!(msg, "a rule may read at most 16 distinct inputs; this is one more");
    let same: Vec<String> = (0..40).map(|i| format!("metric.m > {i}")).collect();
    assert!(compile_json(
        &serde_json::json!({"rule": [{"id": "r", "when": same.join(" or "), "severity": "low"}]}).to_string(),
        &Limits::default(),
        None
    )
    .is_ok());

    // Nesting, length, file size.
    let deep = format!("{}price > 1{}", "(".repeat(10_000), ")".repeat(10_000));
    let (_, msg) = when_err(&deep);
    assert_eq!(msg, "the condition is 20009 bytes, more than the limit of 4096");
    let deep = format!("{}price > 1{}", "(".repeat(1000), ")".repeat(1000));
    assert_eq!(
        when_err(&deep),
        (Some(65), "the condition nests deeper than 64 levels".to_owned())
    );
    let nots = format!("{}price > 1", "not ".repeat(1000));
    assert_eq!(when_err(&nots).1, "the condition nests deeper than 64 levels");
    let negs = format!("{}price > 1", "-".repeat(1000));
    assert_eq!(when_err(&negs).1, "the condition nests deeper than 64 levels");
    let chain = format!("price{} > 1", " + 1".repeat(200));
    assert_eq!(when_err(&chain).1, "the condition nests deeper than 64 levels");
    let big = format!("# {}\n", "x".repeat(1 << 20));
    assert_eq!(
        toml_err(&big),
        (
            None,
            None,
            String::new(),
            format!("the rule file is {} bytes, more than the limit of 1048576", big.len())
        )
    );
    assert_eq!(json_err(&big).3, toml_err(&big).3);
    let long_id = "x".repeat(65);
    assert_eq!(
        toml_err(&format!(
            "[[rule]]\nid = \"{long_id}\"\nwhen = \"price > 1\"\nseverity = \"low\"\n"
        ))
        .3,
        format!("id \"{long_id}\" must match [A-Za-z0-9_.-]{{1,64}}")
    );
}

fn json_err_with(text: &str, limits: &Limits) -> (Option<u32>, Option<u32>, String, String) {
    match compile_json(text, limits, None) {
        Ok(_) => panic!("compiled: {text}"),
        Err(e) => {
            let f = e.first();
            (f.line, f.column, f.path.clone(), f.message.clone())
        }
    }
}

#[test]
fn severity_round_trips() {
    for s in Severity::ALL {
        assert_eq!(Severity::from_u8(s as u8), Some(s));
        assert_eq!(Severity::parse(s.as_str()), Some(s));
    }
    assert_eq!(Severity::from_u8(5), None);
    assert!(Severity::Info < Severity::Critical);
}

#[test]
fn name_hash_is_fnv1a() {
    assert_eq!(rim_rules::name_hash("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(rim_rules::MetricKey::of("temp").0, rim_rules::name_hash("temp"));
}

/// Every example condition in docs/rules.md compiles.
#[test]
fn doc_examples_compile() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md")).unwrap_or_default();
    let Some(start) = doc.find("### Examples") else {
        panic!("docs/rules.md has no examples section");
    };
    let block = doc[start..].split("```").nth(1).unwrap_or("");
    let exprs: Vec<&str> = block
        .lines()
        .skip(1)
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(exprs.len() >= 5, "{exprs:?}");
    for e in exprs {
        common::one_rule(e);
    }
}
