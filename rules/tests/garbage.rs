//! Garbage in, errors out, never a panic: random bytes, mutations and truncations of valid
//! files, random expressions (compiled and evaluated). Fixed seeds; a failure prints the
//! seed, the iteration and the input.

mod common;

use std::panic::catch_unwind;

use common::{metric, TestInputs};
use rim_rules::{compile_json, compile_toml, Evidence, Limits, Series};

/// xorshift64*: small, deterministic, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TOML: &str = r#"[[rule]]
id = "temp-high"
nodes = ["rim:sensor:*", "rim:x:?"]
when = "metric.temp > 80 and change(metric.temp, 5s) > 10 or not (status == \"A\")"
severity = "high"
cooldown = "10s"

[[rule]]
id = "q"
when = '''
stale(30s) or abs(zscore(price) - ewma(metric["a b"])) / 2 >= -1.5e3
'''
severity = "low"
"#;

const JSON: &str = r#"{"rule": [{"id": "a", "nodes": ["rim:*"], "when": "pct_change(volume, 500ms) < 3 and gap > 1", "severity": "info", "cooldown": "1m"}]}"#;

/// Compiles `text` both ways and evaluates whatever compiles; reports a panic with context.
fn feed(seed: u64, iter: usize, text: &str) {
    let r = catch_unwind(|| {
        for set in [
            compile_toml(text, &Limits::default(), None),
            compile_json(text, &Limits::default(), None),
        ]
        .into_iter()
        .flatten()
        {
            let mut ev = Evidence::new();
            for i in 0..set.len() {
                set.eval(i, &inputs(), &mut ev);
                set.rule(i).matches("rim:sensor:a:b");
            }
        }
    });
    assert!(r.is_ok(), "panic: seed {seed:#x}, iteration {iter}, input {text:?}");
}

fn inputs() -> TestInputs {
    TestInputs {
        price: Some(1.0),
        volume: Some(0.0),
        stress: Some(-1.0),
        gap: None,
        status: "A".into(),
        metrics: vec![("temp", 90.0), ("a b", 0.0)],
        changes: vec![(metric("temp"), 5_000, 0.0, 1e308), (Series::Volume, 500, 0.0, 1.0)],
        zscores: vec![(Series::Price, f64::NAN)],
        ewmas: vec![(metric("a b"), 2.0)],
        silent: Some(u64::MAX),
    }
}

#[test]
fn random_bytes() {
    for seed in [1u64, 0xdead_beef, 42] {
        let mut rng = Rng(seed);
        for iter in 0..2_000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            feed(seed, iter, &String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn mutations_and_truncations() {
    const ALPHABET: &[u8] = b"[]{}()\"'=,.:*?<>!-+/\\\n 0159aemsx#_";
    for (seed, base) in [(7u64, TOML), (11, JSON)] {
        let mut rng = Rng(seed);
        for cut in 0..=base.len() {
            feed(seed, cut, &String::from_utf8_lossy(&base.as_bytes()[..cut]));
        }
        for iter in 0..3_000 {
            let mut bytes = base.as_bytes().to_vec();
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] = *rng.pick(ALPHABET),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, *rng.pick(ALPHABET)),
            }
            feed(seed, iter, &String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn random_expressions() {
    const WORDS: &[&str] = &[
        "price",
        "volume",
        "stress",
        "gap",
        "status",
        "metric.temp",
        "metric[\"a b\"]",
        "metric.",
        "metric[",
        "change(",
        "pct_change(",
        "zscore(",
        "ewma(",
        "abs(",
        "stale(",
        "and",
        "or",
        "not",
        "(",
        ")",
        ",",
        "5s",
        "500ms",
        "2m",
        "0s",
        "1",
        "0",
        "-",
        "+",
        "*",
        "/",
        "<",
        "<=",
        ">",
        ">=",
        "==",
        "!=",
        "\"A\"",
        "\"",
        "1e308",
        "1.5",
        "=",
        "!",
        "é",
        "\\",
    ];
    for seed in [3u64, 99] {
        let mut rng = Rng(seed);
        let mut compiled = 0;
        for iter in 0..20_000 {
            let n = 1 + rng.below(12);
            let expr: Vec<&str> = (0..n).map(|_| *rng.pick(WORDS)).collect();
            let expr = expr.join(" ");
            let text = serde_json::json!({"rule": [{"id": "r", "when": expr, "severity": "low"}]}).to_string();
            let r = catch_unwind(|| {
                compile_json(&text, &Limits::default(), None).map(|set| {
                    let mut ev = Evidence::new();
                    set.eval(0, &inputs(), &mut ev);
                    set.eval(0, &TestInputs::default(), &mut ev);
                })
            });
            match r {
                Ok(Ok(())) => compiled += 1,
                Ok(Err(_)) => {}
                Err(_) => panic!("panic: seed {seed:#x}, iteration {iter}, expression {expr:?}"),
            }
        }
        // The vocabulary is rich enough that some random expressions are valid.
        assert!(compiled > 0, "seed {seed:#x}: nothing compiled");
    }
}

#[test]
fn pathological_nesting_does_not_overflow() {
    let n = 400_000;
    for text in [
        format!("a = {}{}", "[".repeat(n), "]".repeat(n)),
        format!("a = {}", "{ b = ".repeat(n / 8)),
        "[[rule]]\n".repeat(n / 9),
        "[".repeat(n),
        "{\"rule\": ".repeat(n / 9),
    ] {
        feed(0, 0, &text);
    }
}
