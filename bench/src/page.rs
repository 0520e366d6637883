//! `rim-bench report DIR`: one markdown page (`DIR/report.md`) with the table and the
//! plots of every suite run into DIR with `--plot DIR` (each left `{suite}.json`, and a
//! `{suite}-{row}.svg` and `.hlog` per latency row).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::BenchError;
use crate::plot::file_stem;
use crate::suite::SUITES;

/// The page's file name inside DIR.
pub const PAGE: &str = "report.md";

/// One suite's results as `--plot` left them.
struct SuiteRun {
    suite: String,
    quick: bool,
    rows: Vec<serde_json::Map<String, Value>>,
}

fn results_error(path: &Path, detail: impl std::fmt::Display) -> BenchError {
    BenchError::Results {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Reads one `{suite}.json`; `None` for JSON that is not a suite report (skipped).
fn read_run(path: &Path) -> Result<Option<SuiteRun>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| results_error(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| results_error(path, e))?;
    let (Some(suite), Some(results)) = (v["suite"].as_str(), v["results"].as_array()) else {
        return Ok(None);
    };
    let rows = results.iter().filter_map(|r| r.as_object().cloned()).collect();
    Ok(Some(SuiteRun {
        suite: suite.to_owned(),
        quick: v["quick"].as_bool().unwrap_or(false),
        rows,
    }))
}

/// Every suite run in `dir`, in the harness's suite order (unknown suites last).
fn read_runs(dir: &Path) -> Result<Vec<SuiteRun>, BenchError> {
    let entries = std::fs::read_dir(dir).map_err(|e| results_error(dir, e))?;
    let mut runs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| results_error(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            runs.extend(read_run(&path)?);
        }
    }
    let rank = |name: &str| SUITES.iter().position(|s| s.name == name).unwrap_or(SUITES.len());
    runs.sort_by(|a, b| (rank(&a.suite), &a.suite).cmp(&(rank(&b.suite), &b.suite)));
    Ok(runs)
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.abs() >= 100.0 => format!("{f:.0}"),
            (None, Some(f)) => format!("{f:.3}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// The columns of a suite's table: the suite's own, then any other figure, by name.
fn columns(run: &SuiteRun) -> Vec<String> {
    let declared: Vec<String> = SUITES
        .iter()
        .find(|s| s.name == run.suite)
        .map(|s| s.columns.iter().map(|c| (*c).to_owned()).collect())
        .unwrap_or_default();
    let mut extra: Vec<String> = run
        .rows
        .iter()
        .flat_map(|r| r.keys())
        .filter(|k| !["name", "error"].contains(&k.as_str()) && !declared.contains(k))
        .cloned()
        .collect();
    extra.sort();
    extra.dedup();
    declared.into_iter().chain(extra).collect()
}

fn section(out: &mut String, dir: &Path, run: &SuiteRun) {
    let about = SUITES.iter().find(|s| s.name == run.suite).map_or("", |s| s.about);
    let _ = writeln!(out, "## {}\n", run.suite);
    let _ = writeln!(out, "{about} ({} run)\n", if run.quick { "quick" } else { "full" });
    let cols = columns(run);
    let _ = writeln!(out, "| row | {} |", cols.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(cols.len()));
    for row in &run.rows {
        let name = row.get("name").and_then(Value::as_str).unwrap_or("?");
        let cells: Vec<String> = cols.iter().map(|c| cell(row.get(c))).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    out.push('\n');
    for row in &run.rows {
        let name = row.get("name").and_then(Value::as_str).unwrap_or("?");
        if let Some(error) = row.get("error").and_then(Value::as_str) {
            let _ = writeln!(out, "- **{name}** failed: {error}");
        }
    }
    for row in &run.rows {
        let name = row.get("name").and_then(Value::as_str).unwrap_or("?");
        let stem = file_stem(&[&run.suite, name]);
        if dir.join(format!("{stem}.svg")).exists() {
            let _ = writeln!(
                out,
                "\n### {} / {name}\n\n![{} {name}: percentile distribution]({stem}.svg)\n\n\
                 Raw histogram (HdrHistogram interval log): [{stem}.hlog]({stem}.hlog)",
                run.suite, run.suite
            );
        }
    }
    out.push('\n');
}

/// Writes `DIR/report.md` from every suite run in DIR; returns its path.
pub fn write(dir: &Path) -> Result<PathBuf, BenchError> {
    let runs = read_runs(dir)?;
    if runs.is_empty() {
        return Err(results_error(
            dir,
            "no suite results here (run `rim-bench SUITE --plot DIR` first)",
        ));
    }
    let mut out = String::from("# rim-bench results\n\n");
    out.push_str(
        "Latencies in ns unless a name says otherwise; plots show the percentile distribution \
         on HdrHistogram's log scale of 1/(1-p). Compare rows within one run: shared machines \
         are noisy.\n\n",
    );
    for run in &runs {
        section(&mut out, dir, run);
    }
    let path = dir.join(PAGE);
    std::fs::write(&path, out).map_err(|source| BenchError::Report {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_print_integers_and_rates_like_the_table() {
        let v: Value = serde_json::json!({"a": 312, "b": 1.5e7, "c": 0.25});
        assert_eq!(cell(v.get("a")), "312");
        assert_eq!(cell(v.get("b")), "15000000");
        assert_eq!(cell(v.get("c")), "0.250");
        assert_eq!(cell(v.get("missing")), "-");
    }
}
