//! Every kind of compile error, with its exact position.

mod common;

use common::{json_err, toml_err, when_err};
use rim_rules::{compile_json, compile_toml, Limits};

fn err(line: u32, col: u32, path: &str, msg: &str) -> (Option<u32>, Option<u32>, String, String) {
    (Some(line), Some(col), path.to_owned(), msg.to_owned())
}

#[test]
fn when_error_on_line_7_points_into_the_file() {
    let text = "[[rule]]\nid = \"ok\"\nwhen = \"price > 1\"\nseverity = \"low\"\n\n[[rule]]\n\
                when = \"metric.temp > 80 and change(metric.temp, 5) > 10\"\nid = \"bad\"\nseverity = \"high\"\n";
    assert_eq!(
        toml_err(text),
        err(
            7,
            50,
            "rule[1].when",
            "expected a duration like 5s after ',' in change(...)"
        )
    );
    let e = compile_toml(text, &Limits::default(), None)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("line 7, column 50 (rule[1].when): expected a duration like 5s after ',' in change(...)")
    );
}

#[test]
fn multi_line_literal_string_maps_exactly() {
    let text = "[[rule]]\nid = \"m\"\nseverity = \"low\"\nwhen = '''\nprice > 1 and\n  volume >> 2'''\n";
    assert_eq!(
        toml_err(text),
        err(6, 11, "rule[0].when", "expected a value, found '>'")
    );
    let text = "[[rule]]\nid = \"m\"\nseverity = \"low\"\nwhen = '''price > 1 and\n  volume >> 2'''\n";
    assert_eq!(
        toml_err(text),
        err(5, 11, "rule[0].when", "expected a value, found '>'")
    );
}

#[test]
fn escaped_string_points_at_its_start() {
    let text = "[[rule]]\nid = \"e\"\nseverity = \"low\"\nwhen = \"status == \\\"X\\\" and price >\"\n";
    assert_eq!(
        toml_err(text),
        err(
            4,
            8,
            "rule[0].when",
            "expected a value, found the end of the expression (at line 1, column 26 of the condition)"
        )
    );
}

#[test]
fn toml_syntax_error_has_position() {
    let (line, col, path, msg) = toml_err("[[rule]]\nid = \"x\"\nwhen = \"price > 1\nseverity = \"low\"\n");
    assert_eq!((line, col, path.as_str()), (Some(3), Some(18), ""), "{msg}");
    assert!(msg.starts_with("TOML syntax: "), "{msg}");
    let (line, col, _, msg) = toml_err("[[rule]\n");
    assert_eq!((line, col), (Some(1), Some(8)), "{msg}");
}

#[test]
fn rule_keys_are_checked() {
    let base = "[[rule]]\nid = \"a\"\nwhen = \"price > 1\"\nseverity = \"low\"\n";
    assert_eq!(
        toml_err(&format!("{base}colour = \"red\"\n")),
        err(
            5,
            1,
            "rule[0].colour",
            "unknown key 'colour' in a rule; the keys are id, nodes, when, severity, cooldown"
        )
    );
    assert_eq!(
        toml_err("[[rule]]\nwhen = \"price > 1\"\nseverity = \"low\"\n"),
        err(1, 1, "rule[0]", "missing required key 'id'")
    );
    assert_eq!(
        toml_err("[[rule]]\nid = \"a\"\nseverity = \"low\"\n"),
        err(1, 1, "rule[0]", "missing required key 'when'")
    );
    assert_eq!(
        toml_err("[[rule]]\nid = \"a\"\nwhen = \"price > 1\"\n"),
        err(1, 1, "rule[0]", "missing required key 'severity'")
    );
    assert_eq!(
        toml_err(&format!(
            "{base}\n[[rule]]\nid = \"a\"\nwhen = \"price > 2\"\nseverity = \"low\"\n"
        )),
        err(7, 6, "rule[1].id", "id 'a' is already used by an earlier rule")
    );
    assert_eq!(
        toml_err("[[rule]]\nid = \"a b\"\nwhen = \"price > 1\"\nseverity = \"low\"\n"),
        err(2, 6, "rule[0].id", "id \"a b\" must match [A-Za-z0-9_.-]{1,64}")
    );
    assert_eq!(
        toml_err("[[rule]]\nid = \"a\"\nwhen = \"price > 1\"\nseverity = \"severe\"\n"),
        err(
            4,
            12,
            "rule[0].severity",
            "unknown severity \"severe\"; use info, low, medium, high or critical"
        )
    );
    assert_eq!(
        toml_err(&format!("{base}cooldown = \"10 s\"\n")),
        err(
            5,
            12,
            "rule[0].cooldown",
            "unknown duration unit ' s'; use ms, s, m or h"
        )
    );
    assert_eq!(
        toml_err(&format!("{base}cooldown = 10\n")),
        err(
            5,
            12,
            "rule[0].cooldown",
            "expected a duration like \"10s\", found an integer"
        )
    );
    assert_eq!(
        toml_err(&format!("{base}nodes = [\"rim:a:*\", \"rim:b c\"]\n")),
        err(
            5,
            21,
            "rule[0].nodes[1]",
            "a node glob may contain only [A-Za-z0-9_.:-], '*' and '?', found ' '"
        )
    );
    assert_eq!(
        toml_err(&format!("{base}nodes = []\n")),
        err(
            5,
            9,
            "rule[0].nodes",
            "nodes may not be an empty array; use \"*\" for every node"
        )
    );
    assert_eq!(
        toml_err("extra = 1\n[[rule]]\nid = \"a\"\nwhen = \"price > 1\"\nseverity = \"low\"\n"),
        err(1, 1, "", "unknown top-level key 'extra'; rules go in [[rule]] tables")
    );
    assert_eq!(
        toml_err("[rule]\nid = \"a\"\n"),
        err(
            1,
            2,
            "rule",
            "'rule' must be an array of tables: write each rule under [[rule]]"
        )
    );
}

#[test]
fn every_rules_errors_are_reported() {
    let text = "[[rule]]\nid = \"a\"\nwhen = \"price >\"\nseverity = \"low\"\n\n\
                [[rule]]\nid = \"b\"\nwhen = \"price > 1\"\nseverity = \"nope\"\n\n\
                [[rule]]\nid = \"c\"\nwhen = \"status > 1\"\nseverity = \"low\"\n";
    let errs = compile_toml(text, &Limits::default(), None)
        .err()
        .map(|e| e.into_vec())
        .unwrap_or_default();
    let got: Vec<_> = errs.iter().map(|e| (e.line, e.column, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(3), Some(16), "rule[0].when"),
            (Some(9), Some(12), "rule[1].severity"),
            (Some(13), Some(18), "rule[2].when"),
        ]
    );
}

#[test]
fn type_errors() {
    let cases: &[(&str, u32, &str)] = &[
        (
            "status > \"X\"",
            8,
            "status can only be compared with == or != against a string, like status == \"DEGRADED\"",
        ),
        (
            "status == 1",
            11,
            "status can only be compared with == or != against a string, like status == \"DEGRADED\"",
        ),
        (
            "status",
            1,
            "status can only be compared with == or != against a string, like status == \"DEGRADED\"",
        ),
        (
            "\"X\" == price",
            1,
            "a string can only be compared with status, like status == \"DEGRADED\"",
        ),
        (
            "price",
            1,
            "expected a condition here, found a number; compare it, e.g. metric.temp > 80",
        ),
        (
            "price + 1",
            1,
            "expected a condition here, found a number; compare it, e.g. metric.temp > 80",
        ),
        (
            "not price",
            5,
            "expected a condition here, found a number; compare it, e.g. metric.temp > 80",
        ),
        (
            "price > 1 and 2",
            15,
            "expected a condition here, found a number; compare it, e.g. metric.temp > 80",
        ),
        ("(price > 1) + 1 > 0", 1, "expected a number here, found a condition"),
        ("abs(price > 1) > 0", 11, "expected ')' to close abs(...), found '>'"),
        (
            "(price > 1) == (volume > 1)",
            1,
            "expected a number here, found a condition",
        ),
        ("stale(5s) > 1", 1, "expected a number here, found a condition"),
    ];
    for &(when, col, msg) in cases {
        assert_eq!(when_err(when), (Some(col), msg.to_owned()), "{when}");
    }
}

#[test]
fn syntax_errors() {
    let cases: &[(&str, u32, &str)] = &[
        ("price >= 1 = 2", 12, "use '==' to compare"),
        ("price > 1 && volume > 1", 11, "use 'and' instead of '&&'"),
        ("price > 1 > 2", 11, "comparisons do not chain; join them with 'and'"),
        ("", 1, "the condition is empty"),
        (
            "price > 5s",
            9,
            "a duration like 5s can only be the window of change(), pct_change() or stale()",
        ),
        (
            "change(gap, 5s) > 1",
            8,
            "expected a series (price, volume, stress or metric.NAME) in change(...)",
        ),
        (
            "change(price 5s) > 1",
            14,
            "expected ',' and a window like 5s after the series in change(...)",
        ),
        (
            "change(price, 2m) > 1",
            15,
            "window 2m is outside the allowed 1ms to 1m",
        ),
        (
            "zscore(price, 5s) > 1",
            13,
            "expected ')' to close zscore(...), found ','",
        ),
        (
            "foo > 1",
            1,
            "unknown name 'foo'; expected price, volume, stress, gap, status, metric.NAME or a function",
        ),
        (
            "max(price) > 1",
            1,
            "unknown function 'max'; the functions are change, pct_change, zscore, ewma, abs and stale",
        ),
        ("metric.5x > 1", 9, "unknown duration unit 'x'; use ms, s, m or h"),
        ("metric[\"\"] > 1", 7, "a metric name must be 1 to 64 bytes"),
        ("price > 1e400", 9, "number 1e400 is not a finite number"),
        ("status == \"a", 11, "string is not closed with '\"'"),
        (
            "stale(0s)",
            7,
            "stale(0s) would hold on every sweep; give a silence longer than 0",
        ),
        ("price > 1 and", 14, "expected a value, found the end of the expression"),
        ("price > 1 and or", 15, "expected a value before 'or'"),
        (
            "price > 1 price",
            11,
            "expected 'and', 'or' or the end of the condition, found 'price'",
        ),
        ("price > 1.5s", 9, "a duration must be a whole number, like 1500ms"),
        ("stress > é", 10, "unexpected character 'é'"),
    ];
    for &(when, col, msg) in cases {
        assert_eq!(when_err(when), (Some(col), msg.to_owned()), "{when}");
    }
}

#[test]
fn json_errors() {
    let (line, col, path, msg) = json_err("{\"rule\": [\n  {\"id\": \"a\",, }\n]}");
    assert_eq!((line, col, path.as_str()), (Some(2), Some(14), ""), "{msg}");
    assert!(msg.starts_with("JSON syntax: "), "{msg}");
    let text = r#"{"rule": [
        {"id": "a", "when": "price > 1", "severity": "low"},
        {"id": "b", "when": "price >= 1 = 2", "severity": "low"}
    ]}"#;
    assert_eq!(
        json_err(text),
        (
            None,
            Some(12),
            "rule[1].when".to_owned(),
            "use '==' to compare".to_owned()
        )
    );
    let e = compile_json(text, &Limits::default(), None)
        .err()
        .map(|e| e.to_string());
    assert_eq!(e.as_deref(), Some("rule[1].when, column 12: use '==' to compare"));
    assert_eq!(
        json_err(r#"{"rule": [{"id": "a", "when": "price > 1", "severity": 3}]}"#),
        (
            None,
            None,
            "rule[0].severity".to_owned(),
            "expected a severity, found a number".to_owned()
        )
    );
    assert_eq!(
        json_err(r#"{"rule": [{"id": "a", "when": "price > 1"}]}"#),
        (
            None,
            None,
            "rule[0]".to_owned(),
            "missing required key 'severity'".to_owned()
        )
    );
    assert_eq!(
        json_err(r#"{"rules": []}"#),
        (
            None,
            None,
            "rules".to_owned(),
            "unknown top-level key 'rules'; the only key is 'rule'".to_owned()
        )
    );
    assert_eq!(
        json_err(r#"[1]"#),
        (
            None,
            None,
            String::new(),
            "expected an object like {\"rule\": [...]}".to_owned()
        )
    );
}

#[test]
fn errors_within_a_rule_are_in_file_order() {
    let text = "[[rule]]\nwhen = \"price >\"\nseverity = \"bad\"\nid = \"x y\"\ncolour = 1\n";
    let errs = compile_toml(text, &Limits::default(), None)
        .err()
        .map(|e| e.into_vec())
        .unwrap_or_default();
    let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, [Some(2), Some(3), Some(4), Some(5)]);
    let shown = compile_toml(
        "[[rule]]\nid = \"a\"\nwhen = \"(price > 1\"\nseverity = \"low\"\n",
        &Limits::default(),
        None,
    )
    .err()
    .map(|e| e.to_string());
    assert_eq!(
        shown.as_deref(),
        Some("line 3, column 19 (rule[0].when): expected ')' to close '(', found the end of the expression")
    );
}
