//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`], for `/metrics` and for
//! `rimctl stats --prometheus`.
//!
//! What comes out, with `prefix` `rimd`:
//! - `rimd_up` (1 while running), `rimd_info{version,pid}`, `rimd_start_time_seconds`;
//! - each counter as `rimd_<name>_total`, each gauge as `rimd_<name>`, the snapshot's
//!   dotted names sanitised to `[a-zA-Z0-9_:]` (`rejected.bad_symbol` →
//!   `rimd_rejected_bad_symbol_total`);
//! - stage latencies as one summary, `rimd_stage_latency_seconds{stage,quantile}` with
//!   `_sum` and `_count`, plus `rimd_stage_latency_{min,max}_seconds{stage}` (exact);
//!   quantiles of an empty stage are `NaN`, as Prometheus clients do;
//! - rings as `rimd_ring_{depth,capacity}{ring,kind}`, `rimd_ring_{delivered,rejected,
//!   refused_full}_total{ring,kind}`, `rimd_ring_refused_total{ring,kind,reason}` (the
//!   reasons a ring's events were not taken) and `rimd_ring_info{ring,kind,pid,state}`;
//! - shards as `rimd_shard_{loops,work,stalls}_total{shard}` and
//!   `rimd_shard_max_stall_seconds{shard}`.
//!
//! Seconds are printed as exact decimals of the nanosecond (or millisecond) integers, so
//! the text is deterministic. Two snapshot names that sanitise to the same metric (or to
//! one of the fixed families) cannot both be exposed; the later one is replaced by a
//! comment saying so, rather than vanishing silently or breaking the scrape.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::snapshot::{Quantiles, RingSnapshot, ShardSnapshot, Snapshot};

/// The fixed families (and summary series) rendered for every snapshot, by suffix.
const FIXED_FAMILIES: &[&str] = &[
    "up",
    "info",
    "start_time_seconds",
    "stage_latency_seconds",
    "stage_latency_seconds_sum",
    "stage_latency_seconds_count",
    "stage_latency_min_seconds",
    "stage_latency_max_seconds",
    "ring_depth",
    "ring_capacity",
    "ring_delivered_total",
    "ring_rejected_total",
    "ring_refused_full_total",
    "ring_refused_total",
    "ring_info",
    "shard_loops_total",
    "shard_work_total",
    "shard_stalls_total",
    "shard_max_stall_seconds",
];

/// Appends the Prometheus text of `snap` to `out`, every metric name starting with
/// `prefix` (sanitised) and an underscore (none if `prefix` is empty).
pub fn render_prometheus(snap: &Snapshot, prefix: &str, out: &mut String) {
    let mut r = Renderer::new(prefix, out);
    r.process(snap);
    r.counters(snap);
    r.gauges(snap);
    r.stages(snap);
    r.rings(&snap.rings);
    r.shards(&snap.shards);
}

struct Renderer<'a> {
    prefix: String,
    out: &'a mut String,
    /// Every family name emitted or reserved, to refuse collisions.
    taken: BTreeSet<String>,
}

/// `write!` into a `String` cannot fail; this keeps the call sites free of ignored results.
macro_rules! emit {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

impl<'a> Renderer<'a> {
    fn new(prefix: &str, out: &'a mut String) -> Self {
        let prefix = sanitize_name(prefix);
        let mut r = Self {
            prefix,
            out,
            taken: BTreeSet::new(),
        };
        for fixed in FIXED_FAMILIES {
            let name = r.name(fixed);
            r.taken.insert(name);
        }
        r
    }

    /// `<prefix>_<suffix>`, `suffix` already sanitised.
    fn name(&self, suffix: &str) -> String {
        if self.prefix.is_empty() {
            sanitize_name(suffix)
        } else {
            format!("{}_{}", self.prefix, suffix)
        }
    }

    fn type_line(&mut self, name: &str, kind: &str) {
        emit!(self.out, "# TYPE {name} {kind}\n");
    }

    /// Claims the family `name` for the snapshot entry `original`; false (and a comment in
    /// the output) when an earlier family already has that name.
    fn claim(&mut self, name: &str, original: &str) -> bool {
        if self.taken.insert(name.to_owned()) {
            return true;
        }
        let mut escaped = String::new();
        escape_label_value(original, &mut escaped);
        emit!(self.out, "# skipped \"{escaped}\": its name {name} is already in use\n");
        false
    }

    fn process(&mut self, snap: &Snapshot) {
        let up = self.name("up");
        self.type_line(&up, "gauge");
        emit!(self.out, "{up} {}\n", u8::from(snap.running));

        let info = self.name("info");
        self.type_line(&info, "gauge");
        emit!(self.out, "{info}{{version=\"");
        escape_label_value(&snap.version, self.out);
        emit!(self.out, "\",pid=\"{}\"}} 1\n", snap.pid);

        let start = self.name("start_time_seconds");
        self.type_line(&start, "gauge");
        emit!(self.out, "{start} ");
        write_scaled(self.out, u128::from(snap.started_unix_ms), 3);
        self.out.push('\n');
    }

    fn counters(&mut self, snap: &Snapshot) {
        for (key, value) in &snap.counters {
            let name = self.name(&format!("{}_total", sanitize_name(key)));
            if self.claim(&name, key) {
                self.type_line(&name, "counter");
                emit!(self.out, "{name} {value}\n");
            }
        }
    }

    fn gauges(&mut self, snap: &Snapshot) {
        for (key, value) in &snap.gauges {
            let name = self.name(&sanitize_name(key));
            if self.claim(&name, key) {
                self.type_line(&name, "gauge");
                emit!(self.out, "{name} {value}\n");
            }
        }
    }

    fn stages(&mut self, snap: &Snapshot) {
        if snap.stages.is_empty() {
            return;
        }
        let name = self.name("stage_latency_seconds");
        self.type_line(&name, "summary");
        for (stage, q) in &snap.stages {
            self.summary(&name, stage, q);
        }
        for (suffix, pick) in [
            (
                "stage_latency_min_seconds",
                (|q: &Quantiles| q.min) as fn(&Quantiles) -> u64,
            ),
            ("stage_latency_max_seconds", |q: &Quantiles| q.max),
        ] {
            let name = self.name(suffix);
            self.type_line(&name, "gauge");
            for (stage, q) in &snap.stages {
                self.sample_start(&name, &[("stage", stage)]);
                write_ns_or_nan(self.out, q.count, pick(q));
                self.out.push('\n');
            }
        }
    }

    /// One stage's quantile, `_sum` and `_count` lines.
    fn summary(&mut self, name: &str, stage: &str, q: &Quantiles) {
        let quantiles = [
            ("0.5", q.p50),
            ("0.9", q.p90),
            ("0.99", q.p99),
            ("0.999", q.p999),
            ("0.9999", q.p9999),
        ];
        for (label, ns) in quantiles {
            self.sample_start(name, &[("stage", stage), ("quantile", label)]);
            write_ns_or_nan(self.out, q.count, ns);
            self.out.push('\n');
        }
        // The mean is HDR's (bucket midpoints), so the sum is as precise as the
        // quantiles; `as` saturates a non-finite or negative product to 0 / max.
        let sum_ns = (q.mean * q.count as f64).round() as u128;
        self.sample_start(&format!("{name}_sum"), &[("stage", stage)]);
        write_scaled(self.out, sum_ns, 9);
        self.out.push('\n');
        self.sample_start(&format!("{name}_count"), &[("stage", stage)]);
        emit!(self.out, "{}\n", q.count);
    }

    fn rings(&mut self, rings: &[RingSnapshot]) {
        if rings.is_empty() {
            return;
        }
        type Pick = fn(&RingSnapshot) -> u64;
        let numbers: [(&str, &str, Pick); 5] = [
            ("ring_depth", "gauge", |r| r.depth),
            ("ring_capacity", "gauge", |r| r.capacity),
            ("ring_delivered_total", "counter", |r| r.delivered),
            ("ring_rejected_total", "counter", |r| r.rejected),
            ("ring_refused_full_total", "counter", |r| r.refused_full),
        ];
        for (suffix, kind, pick) in numbers {
            let name = self.name(suffix);
            self.type_line(&name, kind);
            for ring in rings {
                self.sample_start(&name, &[("ring", &ring.name), ("kind", &ring.kind)]);
                emit!(self.out, "{}\n", pick(ring));
            }
        }
        if rings.iter().any(|r| !r.refused.is_empty()) {
            let name = self.name("ring_refused_total");
            self.type_line(&name, "counter");
            for ring in rings {
                for (reason, n) in &ring.refused {
                    self.sample_start(&name, &[("ring", &ring.name), ("kind", &ring.kind), ("reason", reason)]);
                    emit!(self.out, "{n}\n");
                }
            }
        }
        let name = self.name("ring_info");
        self.type_line(&name, "gauge");
        for ring in rings {
            let pid = ring.pid.to_string();
            let labels = [
                ("ring", ring.name.as_str()),
                ("kind", &ring.kind),
                ("pid", &pid),
                ("state", &ring.state),
            ];
            self.sample_start(&name, &labels);
            self.out.push_str("1\n");
        }
    }

    fn shards(&mut self, shards: &[ShardSnapshot]) {
        if shards.is_empty() {
            return;
        }
        type Pick = fn(&ShardSnapshot) -> u64;
        let counters: [(&str, Pick); 3] = [
            ("shard_loops_total", |s| s.loops),
            ("shard_work_total", |s| s.work),
            ("shard_stalls_total", |s| s.stalls),
        ];
        for (suffix, pick) in counters {
            let name = self.name(suffix);
            self.type_line(&name, "counter");
            for shard in shards {
                self.sample_start(&name, &[("shard", &shard.name)]);
                emit!(self.out, "{}\n", pick(shard));
            }
        }
        let name = self.name("shard_max_stall_seconds");
        self.type_line(&name, "gauge");
        for shard in shards {
            self.sample_start(&name, &[("shard", &shard.name)]);
            write_scaled(self.out, u128::from(shard.max_stall_ns), 9);
            self.out.push('\n');
        }
    }

    /// `name{k="v",...} ` (label values escaped), up to the value.
    fn sample_start(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                emit!(self.out, "{key}=\"");
                escape_label_value(value, self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }
}

/// Replaces every character outside `[a-zA-Z0-9_:]` with `_`, and prefixes `_` to a
/// leading digit, so that any string becomes a valid metric name (or an empty one).
pub fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// Appends `value` escaped for a label value: backslash, double quote and newline.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `value / 10^decimals` as an exact decimal without trailing zeros
/// (`1_500, 9` → `0.0000015`, `2_000_000_000, 9` → `2`).
fn write_scaled(out: &mut String, value: u128, decimals: u32) {
    let scale = 10u128.pow(decimals);
    let (whole, frac) = (value / scale, value % scale);
    emit!(out, "{whole}");
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = decimals as usize);
        emit!(out, ".{}", digits.trim_end_matches('0'));
    }
}

/// Nanoseconds as seconds, or `NaN` for a stage with no values.
fn write_ns_or_nan(out: &mut String, count: u64, ns: u64) {
    if count == 0 {
        out.push_str("NaN");
    } else {
        write_scaled(out, u128::from(ns), 9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_decimals_are_exact() {
        let cases: [(u128, u32, &str); 5] = [
            (0, 9, "0"),
            (1, 9, "0.000000001"),
            (1_500, 9, "0.0000015"),
            (2_000_000_000, 9, "2"),
            (1_700_000_000_123, 3, "1700000000.123"),
        ];
        for (value, decimals, want) in cases {
            let mut s = String::new();
            write_scaled(&mut s, value, decimals);
            assert_eq!(s, want, "{value} / 10^{decimals}");
        }
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("decisions.rule.temp-high"), "decisions_rule_temp_high");
        assert_eq!(sanitize_name("9lives"), "_9lives");
        assert_eq!(sanitize_name("a:b_c"), "a:b_c");
        assert_eq!(sanitize_name("é x"), "__x");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_value("a\"b\\c\nd", &mut s);
        assert_eq!(s, r#"a\"b\\c\nd"#);
    }
}
