//! Shared test fixtures: a plain-data [`Inputs`] and helpers to compile one condition.
#![allow(dead_code)]

use rim_rules::{compile_json, name_hash, Evidence, Field, Inputs, Limits, MetricKey, RuleSet, Series};

/// Inputs as plain data; anything not set is unknown.
#[derive(Clone, Debug, Default)]
pub struct TestInputs {
    pub price: Option<f64>,
    pub volume: Option<f64>,
    pub stress: Option<f64>,
    pub gap: Option<f64>,
    pub status: String,
    pub metrics: Vec<(&'static str, f64)>,
    /// (series, window_ms, then, now)
    pub changes: Vec<(Series, u64, f64, f64)>,
    pub zscores: Vec<(Series, f64)>,
    pub ewmas: Vec<(Series, f64)>,
    pub silent: Option<u64>,
}

impl Inputs for TestInputs {
    fn field(&self, f: Field) -> Option<f64> {
        match f {
            Field::Price => self.price,
            Field::Volume => self.volume,
            Field::Stress => self.stress,
            Field::Gap => self.gap,
        }
    }
    fn status_hash(&self) -> u64 {
        name_hash(&self.status)
    }
    fn metric(&self, key: MetricKey) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| name_hash(n) == key.0)
            .map(|&(_, v)| v)
    }
    fn change(&self, s: Series, window_ms: u64) -> Option<(f64, f64)> {
        self.changes
            .iter()
            .find(|c| c.0 == s && c.1 == window_ms)
            .map(|c| (c.2, c.3))
    }
    fn zscore(&self, s: Series) -> Option<f64> {
        self.zscores.iter().find(|z| z.0 == s).map(|z| z.1)
    }
    fn ewma(&self, s: Series) -> Option<f64> {
        self.ewmas.iter().find(|z| z.0 == s).map(|z| z.1)
    }
    fn silent_ms(&self) -> Option<u64> {
        self.silent
    }
}

pub fn metric(name: &str) -> Series {
    Series::Metric(MetricKey(name_hash(name)))
}

/// A one-rule set for `when`, compiled through JSON (no quoting worries).
pub fn one_rule(when: &str) -> RuleSet {
    let text = serde_json::json!({"rule": [{"id": "r", "when": when, "severity": "high"}]}).to_string();
    match compile_json(&text, &Limits::default(), None) {
        Ok(set) => set,
        Err(e) => panic!("{when:?} did not compile: {e}"),
    }
}

/// Fires? plus the evidence as (label, value).
pub fn run(when: &str, inp: &TestInputs) -> (bool, Vec<(String, f64)>) {
    let set = one_rule(when);
    let mut ev = Evidence::new();
    let fired = set.eval(0, inp, &mut ev);
    let rule = set.rule(0);
    (fired, ev.iter().map(|(l, v)| (rule.label(l).to_owned(), v)).collect())
}

/// Three-valued outcome: `Some(true)` if `when` fires, `Some(false)` if `not (when)` fires,
/// `None` (unknown) if neither does.
pub fn tri(when: &str, inp: &TestInputs) -> Option<bool> {
    if run(when, inp).0 {
        return Some(true);
    }
    if run(&format!("not ({when})"), inp).0 {
        return Some(false);
    }
    None
}

/// The first error of compiling `text` as TOML, as (line, column, path, message).
pub fn toml_err(text: &str) -> (Option<u32>, Option<u32>, String, String) {
    match rim_rules::compile_toml(text, &Limits::default(), None) {
        Ok(_) => panic!("compiled, but an error was expected:\n{text}"),
        Err(e) => {
            let f = e.first();
            (f.line, f.column, f.path.clone(), f.message.clone())
        }
    }
}

pub fn json_err(text: &str) -> (Option<u32>, Option<u32>, String, String) {
    match compile_json(text, &Limits::default(), None) {
        Ok(_) => panic!("compiled, but an error was expected:\n{text}"),
        Err(e) => {
            let f = e.first();
            (f.line, f.column, f.path.clone(), f.message.clone())
        }
    }
}

/// The first error of a one-rule JSON file with this condition.
pub fn when_err(when: &str) -> (Option<u32>, String) {
    let text = serde_json::json!({"rule": [{"id": "r", "when": when, "severity": "high"}]}).to_string();
    let (_, col, _, msg) = json_err(&text);
    (col, msg)
}
