//! What a suite produces and how it is shown: [`Row`]s of named [`Figure`]s, printed as a
//! table and written as the JSON report
//! `{"suite": "...", "quick": bool, "results": [{"name": "...", <figures>}]}`.
//!
//! A row that failed keeps its name, has no figures and carries `"error"` instead. A row
//! that measured latency also carries its histograms, for `--plot` ([`crate::plot`]); they
//! are not part of the JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::BenchError;
use crate::latency::LatencySummary;

/// A figure's value. Integers (nanoseconds, counts) print as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An exact integer: nanoseconds, counts, bytes.
    Int(u64),
    /// A measured ratio: events per second, MB/s.
    Real(f64),
}

/// One named number of a row, e.g. `rtt_p50_ns = 312`. Names carry their unit last.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The figure's name, unit last (`rtt_p99_ns`, `events_per_s`).
    pub name: &'static str,
    /// Its value.
    pub value: Value,
}

impl Figure {
    /// An integer figure (nanoseconds, counts).
    pub fn int(name: &'static str, value: u64) -> Self {
        Self {
            name,
            value: Value::Int(value),
        }
    }

    /// A real-valued figure (rates).
    pub fn real(name: &'static str, value: f64) -> Self {
        Self {
            name,
            value: Value::Real(value),
        }
    }
}

/// A latency histogram a row measured, named by what it measured (`rtt`, `latency`).
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// What was measured; the `Tag` of its interval-log line.
    pub label: &'static str,
    /// Nanoseconds, every value recorded.
    pub histogram: Histogram<u64>,
}

/// One line of a suite's result: a name and its figures in order, or the error that
/// stopped it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's name (`rtrb-threads`).
    pub name: String,
    /// The figures, in the order the suite declares them.
    pub figures: Vec<Figure>,
    /// Why the row has no figures, when it failed.
    pub error: Option<String>,
    /// The latency histograms behind its percentile figures (none for throughput rows).
    pub latencies: Vec<Latency>,
    /// When the row started (wall clock) and how long it ran; set by the suite runner.
    pub span: Option<(SystemTime, Duration)>,
}

impl Row {
    /// A row that measured something.
    pub fn new(name: impl Into<String>, figures: Vec<Figure>) -> Self {
        Self {
            name: name.into(),
            figures,
            error: None,
            latencies: Vec::new(),
            span: None,
        }
    }

    /// A row that failed: no figures, the error kept for the table and the report.
    pub fn failed(name: impl Into<String>, error: &BenchError) -> Self {
        Self {
            name: name.into(),
            figures: Vec::new(),
            error: Some(error.to_string()),
            latencies: Vec::new(),
            span: None,
        }
    }

    /// The row with the histogram behind `summary`'s figures, labelled `label`.
    pub fn with_latency(self, label: &'static str, summary: &LatencySummary) -> Self {
        self.with_histogram(label, &summary.histogram)
    }

    /// The row with `histogram` (ns) behind its percentile figures, labelled `label`.
    pub fn with_histogram(mut self, label: &'static str, histogram: &Histogram<u64>) -> Self {
        self.latencies.push(Latency {
            label,
            histogram: histogram.clone(),
        });
        self
    }

    /// The value of the figure called `name`, if the row has it.
    pub fn figure(&self, name: &str) -> Option<Value> {
        self.figures
            .iter()
            .find(|figure| figure.name == name)
            .map(|figure| figure.value)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Value::Int(v) => serializer.serialize_u64(v),
            Value::Real(v) => serializer.serialize_f64(v),
        }
    }
}

impl Serialize for Row {
    /// `{"name": ..., <figure>: <number>, ..., "error": ...?}`, figures in row order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let extra = usize::from(self.error.is_some());
        let mut map = serializer.serialize_map(Some(1 + self.figures.len() + extra))?;
        map.serialize_entry("name", &self.name)?;
        for figure in &self.figures {
            map.serialize_entry(figure.name, &figure.value)?;
        }
        if let Some(error) = &self.error {
            map.serialize_entry("error", error)?;
        }
        map.end()
    }
}

/// The JSON report of one suite run.
#[derive(Debug, serde::Serialize)]
pub struct Report<'a> {
    /// The suite's name.
    pub suite: &'a str,
    /// Whether the run was `--quick`.
    pub quick: bool,
    /// Its rows, in suite order.
    pub results: &'a [Row],
}

impl Report<'_> {
    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| BenchError::Report {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Renders rows as an aligned text table: `name`, then `columns` (plus any figure a row has
/// that `columns` lacks), a `-` where a row has no such figure, and each failed row's error
/// on its own line underneath.
pub fn render_table(columns: &[&str], rows: &[Row]) -> String {
    let columns = all_columns(columns, rows);
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    let header = std::iter::once("name".to_string())
        .chain(columns.iter().map(|c| c.to_string()))
        .collect();
    cells.push(header);
    for row in rows {
        let line = std::iter::once(row.name.clone())
            .chain(columns.iter().map(|c| format_cell(row.figure(c))))
            .collect();
        cells.push(line);
    }
    let mut out = aligned(&cells);
    for row in rows {
        if let Some(error) = &row.error {
            let _ = writeln!(out, "{}: error: {error}", row.name);
        }
    }
    out
}

fn all_columns<'a>(declared: &[&'a str], rows: &'a [Row]) -> Vec<&'a str> {
    let mut columns: Vec<&str> = declared.to_vec();
    for figure in rows.iter().flat_map(|row| &row.figures) {
        if !columns.contains(&figure.name) {
            columns.push(figure.name);
        }
    }
    columns
}

fn format_cell(value: Option<Value>) -> String {
    match value {
        None => "-".to_string(),
        Some(Value::Int(v)) => v.to_string(),
        Some(Value::Real(v)) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(Value::Real(v)) => format!("{v:.3}"),
    }
}

/// Left-aligns the first column and right-aligns the numbers.
fn aligned(cells: &[Vec<String>]) -> String {
    let width_of = |col: usize| {
        cells
            .iter()
            .filter_map(|line| line.get(col))
            .map(String::len)
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cells.first().map_or(0, Vec::len)).map(width_of).collect();
    let mut out = String::new();
    for line in cells {
        for (col, cell) in line.iter().enumerate() {
            let width = widths[col];
            let _ = match col {
                0 => write!(out, "{cell:<width$}"),
                _ => write!(out, "  {cell:>width$}"),
            };
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rows() -> Vec<Row> {
        vec![
            Row::new(
                "fast",
                vec![Figure::int("p50_ns", 300), Figure::real("events_per_s", 1.5e7)],
            ),
            Row::failed(
                "broken",
                &BenchError::Integrity {
                    what: "the broken row".into(),
                },
            ),
        ]
    }

    #[test]
    fn a_failed_row_prints_dashes_and_its_error() {
        let table = render_table(&["p50_ns", "events_per_s"], &sample_rows());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("name"));
        assert!(lines[1].contains("300") && lines[1].contains("15000000"));
        assert!(lines[2].starts_with("broken") && lines[2].contains('-'));
        assert!(lines[3].contains("integrity: the broken row"));
    }

    #[test]
    fn json_keeps_figure_order_and_the_error() -> Result<(), serde_json::Error> {
        let rows = sample_rows();
        let report = Report {
            suite: "demo",
            quick: true,
            results: &rows,
        };
        let text = serde_json::to_string(&report)?;
        assert_eq!(
            text,
            "{\"suite\":\"demo\",\"quick\":true,\"results\":[\
             {\"name\":\"fast\",\"p50_ns\":300,\"events_per_s\":15000000.0},\
             {\"name\":\"broken\",\"error\":\"integrity: the broken row\"}]}"
        );
        Ok(())
    }
}
