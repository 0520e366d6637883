//! `--plot DIR`: per latency row, an HDR percentile distribution plot (SVG) and the raw
//! histogram in HdrHistogram's interval-log format (`.hlog`), so HdrHistogram's own tools
//! (HistogramLogProcessor, HistogramLogAnalyzer, hdr-plot) read the same data.
//!
//! The plot is drawn the way HdrHistogram's plotter draws a percentile distribution: the
//! horizontal axis is the percentile on a log scale of `1 / (1 - p)` (0 %, 90 %, 99 %,
//! 99.9 %, … evenly spaced), the vertical axis the latency, one line per histogram. The
//! latency axis is linear unless the maximum is more than [`LOG_Y_RATIO`] times the median,
//! as on a shared machine whose tail reaches milliseconds: then it is logarithmic, so the
//! body of the distribution does not flatten onto the axis. It is plain SVG written here
//! (a few lines and labels do not need a plotting library and its font stack).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::error::BenchError;
use crate::report::{Latency, Row};

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 110.0;
/// Percentile steps per halving of the distance to 100 % (HdrHistogram's default output).
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Most nines on the horizontal axis (99.9999 %).
const NINES_MAX: u32 = 6;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
/// Max / median above which the latency axis turns logarithmic.
const LOG_Y_RATIO: u64 = 50;

/// The latency axis: linear from 0, or logarithmic over whole decades.
#[derive(Debug, Clone, Copy, PartialEq)]
enum YAxis {
    /// 0 ..= max ns.
    Linear { max: f64 },
    /// 10^lo ..= 10^hi ns.
    Log { lo: i32, hi: i32 },
}

impl YAxis {
    fn for_latencies(latencies: &[Latency]) -> Self {
        let max = latencies.iter().map(|l| l.histogram.max()).max().unwrap_or(1).max(1);
        let median = latencies
            .iter()
            .map(|l| l.histogram.value_at_quantile(0.5))
            .min()
            .unwrap_or(1)
            .max(1);
        if max / median > LOG_Y_RATIO {
            let min = latencies.iter().map(|l| l.histogram.min().max(1)).min().unwrap_or(1);
            Self::Log {
                lo: (min as f64).log10().floor() as i32,
                hi: ((max as f64).log10().ceil() as i32).max(1),
            }
        } else {
            Self::Linear {
                max: nice_ceiling(max as f64 * 1.05),
            }
        }
    }

    /// Where `ns` lies, 0 (bottom) ..= 1 (top).
    fn fraction(self, ns: f64) -> f64 {
        match self {
            Self::Linear { max } => ns / max,
            Self::Log { lo, hi } => (ns.max(1.0).log10() - f64::from(lo)) / f64::from(hi - lo).max(1.0),
        }
    }

    /// The tick values, ns.
    fn ticks(self) -> Vec<f64> {
        match self {
            Self::Linear { max } => (0..=5).map(|i| max * f64::from(i) / 5.0).collect(),
            Self::Log { lo, hi } => (lo..=hi).map(|k| 10f64.powi(k)).collect(),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Linear { .. } => "latency",
            Self::Log { .. } => "latency (log scale)",
        }
    }
}

/// A file name made of `parts`: letters, digits, `.`, `_` and `-` kept, anything else `_`.
pub fn file_stem(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes `{suite}-{row}.svg` and `{suite}-{row}.hlog` into `dir` for every row with a
/// latency histogram; returns the files written.
pub fn write_rows(dir: &Path, suite: &str, rows: &[Row]) -> Result<Vec<PathBuf>, BenchError> {
    let mut written = Vec::new();
    for row in rows.iter().filter(|r| !r.latencies.is_empty()) {
        let stem = file_stem(&[suite, &row.name]);
        let svg = dir.join(format!("{stem}.svg"));
        let title = format!("rim-bench {suite} / {}", row.name);
        write_file(&svg, percentile_svg(&title, &row.latencies).as_bytes())?;
        let hlog = dir.join(format!("{stem}.hlog"));
        let span = row.span.unwrap_or((SystemTime::now(), Duration::ZERO));
        write_file(&hlog, &interval_log(&title, &row.latencies, span)?)?;
        written.extend([svg, hlog]);
    }
    Ok(written)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    std::fs::write(path, bytes).map_err(|source| BenchError::Report {
        path: path.display().to_string(),
        source,
    })
}

/// The histograms as an interval log: the Java writer's header lines, then one interval
/// per histogram (the row's whole run), tagged with its label, values in ns.
pub fn interval_log(title: &str, latencies: &[Latency], span: (SystemTime, Duration)) -> Result<Vec<u8>, BenchError> {
    let bad = |what: String| BenchError::Setup(format!("interval log: {what}"));
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    IntervalLogWriterBuilder::new()
        .add_comment(&format!("[{title}: latency in ns, one interval per histogram]"))
        .add_comment("[Histogram log format version 1.3]")
        .with_start_time(span.0)
        .with_base_time(span.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| bad(e.to_string()))?;
    out.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    let mut log = IntervalLogWriterBuilder::new()
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| bad(e.to_string()))?;
    for l in latencies {
        let tag = Tag::new(l.label).ok_or_else(|| bad(format!("tag {:?} has a space or comma", l.label)))?;
        log.write_histogram(&l.histogram, Duration::ZERO, span.1, Some(tag))
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(out)
}

/// A latency value with a unit that keeps it short: `850 ns`, `12.5 µs`, `3 ms`.
pub fn duration_label(ns: f64) -> String {
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// `1 / (1 - q)` on a log10 scale: 0 at the median's left end (q = 0), 1 at 90 %, 2 at
/// 99 %, …; capped at `x_max` (q = 1 is infinitely far).
fn x_of(quantile: f64, x_max: f64) -> f64 {
    if quantile >= 1.0 {
        return x_max;
    }
    (1.0 / (1.0 - quantile)).log10().min(x_max)
}

/// The smallest "nice" number (1, 2 or 5 × 10^k) at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * base)
}

/// The points of a percentile distribution: (quantile, value in ns).
fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = h
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            (
                v.quantile_iterated_to(),
                h.highest_equivalent(v.value_iterated_to()) as f64,
            )
        })
        .collect();
    points.insert(0, (0.0, h.min() as f64));
    points
}

/// Nines the horizontal axis shows: enough for the largest histogram (a count of 10^k
/// resolves k nines), at least 3, at most [`NINES_MAX`].
fn nines_for(latencies: &[Latency]) -> u32 {
    let count = latencies.iter().map(|l| l.histogram.len()).max().unwrap_or(0).max(1);
    ((count as f64).log10().ceil() as u32).clamp(3, NINES_MAX)
}

/// The SVG of a percentile distribution plot of `latencies`.
pub fn percentile_svg(title: &str, latencies: &[Latency]) -> String {
    let x_max = f64::from(nines_for(latencies));
    let y_axis = YAxis::for_latencies(latencies);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| TOP + plot_h - y_axis.fraction(y) * plot_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Horizontal axis: 0 %, 90 %, 99 %, … with a grid line each.
    for k in 0..=x_max as u32 {
        let x = px(f64::from(k));
        let label = percentile_label(k);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 40.0
    );
    // Vertical axis: five steps of a nice size, or one tick per decade.
    for v in y_axis.ticks() {
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            duration_label(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        y_axis.title()
    );
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="black"/>"#
    );
    for (i, l) in latencies.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = distribution(&l.histogram)
            .iter()
            .map(|&(q, v)| format!("{:.1},{:.1}", px(x_of(q, x_max)), py(v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            points.join(" ")
        );
        let h = &l.histogram;
        let legend = format!(
            "{}: {} samples; p50 {}, p99 {}, p99.9 {}, max {}",
            l.label,
            h.len(),
            duration_label(h.value_at_quantile(0.5) as f64),
            duration_label(h.value_at_quantile(0.99) as f64),
            duration_label(h.value_at_quantile(0.999) as f64),
            duration_label(h.max() as f64)
        );
        let y = TOP + plot_h + 62.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 4.0,
            LEFT + 24.0,
            y - 4.0,
            LEFT + 30.0,
            escape(&legend)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `0%`, `90%`, `99%`, `99.9%`, …
fn percentile_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)).replace("99.%", "99%"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    fn latency(values: impl Iterator<Item = u64>) -> Latency {
        let mut h = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
        values.for_each(|v| h.record(v).expect("in range"));
        Latency {
            label: "rtt",
            histogram: h,
        }
    }

    #[test]
    fn the_percentile_axis_is_log_scaled_like_hdrhistograms_plotter() {
        assert_eq!(x_of(0.0, 6.0), 0.0);
        assert!((x_of(0.9, 6.0) - 1.0).abs() < 1e-9);
        assert!((x_of(0.999, 6.0) - 3.0).abs() < 1e-9);
        assert_eq!(x_of(1.0, 6.0), 6.0);
        let labels: Vec<String> = (0..5).map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(
            (nice_ceiling(0.7), nice_ceiling(130.0), nice_ceiling(4_100.0)),
            (1.0, 200.0, 5_000.0)
        );
        assert_eq!(duration_label(1_500.0), "1.5 µs");
    }

    #[test]
    fn a_tail_far_above_the_median_gets_a_log_latency_axis() {
        let narrow = [latency(1_000..=2_000)];
        assert_eq!(YAxis::for_latencies(&narrow), YAxis::Linear { max: 5_000.0 });
        let wide = [latency((1..=10_000).map(|v| {
            if v == 10_000 {
                30_000_000
            } else {
                700 + v % 100
            }
        }))];
        let axis = YAxis::for_latencies(&wide);
        assert_eq!(axis, YAxis::Log { lo: 2, hi: 8 });
        assert!((axis.fraction(1e5) - 0.5).abs() < 1e-9);
        assert_eq!(axis.ticks().len(), 7);
    }

    #[test]
    fn the_svg_has_a_line_per_histogram_and_its_percentiles() {
        let svg = percentile_svg("ring / <x>", &[latency(1..=10_000)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("ring / &lt;x&gt;") && svg.contains("10000 samples") && svg.contains("99.99%"));
    }

    #[test]
    fn the_interval_log_reads_back_with_hdrhistograms_own_parser() {
        let l = latency((1..=5_000).map(|v| v * 100));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let log = interval_log("t", std::slice::from_ref(&l), (start, Duration::from_secs(3))).expect("log");
        let text = String::from_utf8(log.clone()).expect("text");
        assert!(text.contains("#[Histogram log format version 1.3]") && text.contains("\"StartTimestamp\""));
        let intervals: Vec<_> = IntervalLogIterator::new(&log)
            .filter_map(|e| match e.expect("parses") {
                LogEntry::Interval(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 1);
        assert_eq!(
            intervals[0].tag().map(|t| t.as_str().to_owned()),
            Some("rtt".to_owned())
        );
        assert_eq!(intervals[0].duration(), Duration::from_secs(3));
        let b64 = intervals[0].encoded_histogram();
        let raw = base64_decode(b64);
        let back: Histogram<u64> = Deserializer::new().deserialize(&mut raw.as_slice()).expect("histogram");
        assert_eq!(back, l.histogram);
    }

    /// Standard base64 (the interval log's encoding of each histogram).
    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}
