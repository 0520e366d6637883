//! `GET /temporal/slice/{nodeId}`: the NEXUS slice of one node.
//!
//! - `past`: its OBSERVED capsules of resolution `resolution` (seconds, default
//!   `api.slice_resolution_s` = 60) whose window starts in `[now - lookback, now)`
//!   (`lookback` in seconds, default `api.slice_lookback_s` = 3600), in time order;
//! - `present`: its live state, asked of its reflex shard (`null` when the node is
//!   unknown there or the shard did not answer; `presentError` then says why);
//! - `futures`: its PREDICTED capsules of that resolution with window start
//!   `≥ now - resolution` (the current and coming windows);
//! - `confidence`: one number in `[0, 1]` and its parts:
//!   - `coverage` = windows present in `past` / windows expected (`lookback / resolution`),
//!   - `freshness` = `0.5 ^ (age / api.freshness_half_life_ms)`, the age being how long
//!     ago the shard last saw an event of the node (`null` without a present),
//!   - `accuracy` = `1 - min(1, mean relative error)` of the node's scored predictions
//!     (`Store::accuracy`, over every predictor and series; `null` before any score),
//!   - `value` = the weighted mean of the parts that exist, weights coverage 0.3,
//!     freshness 0.3, accuracy 0.4 (0 when none exists).
//!
//! 404 when the node has no past, no present and no futures.

use hyper::{Response, StatusCode};
use rim_capsule::{Capsule, HistoryQuery, Vantage};
use serde::Serialize;

use super::context::Present;
use super::envelope::{self, Body, Code, Meta, Problem};
use super::query::Query;
use super::routes::{check_node, CapsuleList};
use super::server::App;

/// Predicted windows returned at most.
const FUTURES_MAX: usize = 64;
/// Weights of coverage, freshness and accuracy in the combined confidence.
const WEIGHTS: [f64; 3] = [0.3, 0.3, 0.4];
/// Longest lookback, seconds (30 days).
const LOOKBACK_S_MAX: u64 = 30 * 86_400;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Confidence {
    value: f64,
    coverage: Option<f64>,
    freshness: Option<f64>,
    accuracy: Option<f64>,
    windows_present: usize,
    windows_expected: u64,
    present_age_ms: Option<i64>,
    predictions_scored: u64,
    direction_hit_rate: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Slice<'a> {
    node_id: &'a str,
    now: i64,
    lookback_seconds: u64,
    resolution: u32,
    past: CapsuleList<'a>,
    present: Option<&'a Present>,
    #[serde(skip_serializing_if = "Option::is_none")]
    present_error: Option<String>,
    futures: CapsuleList<'a>,
    confidence: Confidence,
}

/// Handles the slice.
pub async fn get(app: &App, meta: &Meta, q: &Query<'_>, node: &str) -> Result<Response<Body>, Problem> {
    check_node("nodeId", node)?;
    let resolution = q.int("resolution", app.cfg.slice_resolution_s, 1..=86_400)?;
    let lookback_s = q.int("lookback", app.cfg.slice_lookback_s, 1..=LOOKBACK_S_MAX)?;
    let now = envelope::now_ms();
    let res_ms = i64::from(resolution) * 1000;
    let (past, futures) = capsules(app, node, resolution, now, lookback_s)?;
    if let Some(newest) = past.last() {
        // Lets the live state name its metric series (the shard knows only their hashes).
        app.ctx.learn_capsule(newest);
    }
    let (present, present_error) = match app.ctx.present(node).await {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e.to_string())),
    };
    if past.is_empty() && futures.is_empty() && present.is_none() && present_error.is_none() {
        return Err(Problem::new(Code::NotFound, format!("nothing is known of node {node}")));
    }
    let expected = (lookback_s * 1000).div_ceil(res_ms as u64).max(1);
    let confidence = confidence(app, node, now, &past, expected, present.as_ref())?;
    let s = Slice {
        node_id: node,
        now,
        lookback_seconds: lookback_s,
        resolution,
        past: CapsuleList(&past),
        present: present.as_ref(),
        present_error,
        futures: CapsuleList(&futures),
        confidence,
    };
    Ok(envelope::data(meta, StatusCode::OK, &s, None))
}

/// The past and futures capsules (none when persistence is off).
fn capsules(
    app: &App,
    node: &str,
    resolution: u32,
    now: i64,
    lookback_s: u64,
) -> Result<(Vec<Capsule>, Vec<Capsule>), Problem> {
    let Some(store) = app.ctx.store() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let res_ms = i64::from(resolution) * 1000;
    let lookback_ms = i64::try_from(lookback_s * 1000).unwrap_or(i64::MAX);
    let past_q = HistoryQuery {
        scope_id: node.to_owned(),
        resolution,
        vantage: Vantage::Observed,
        from_ms: now.saturating_sub(lookback_ms),
        to_ms: now,
        limit: rim_capsule::store::HISTORY_ROWS_MAX,
        descending: false,
    };
    let fail = |e: rim_capsule::StoreError| Problem::internal("capsule store failed", &e);
    let past = store.history(&past_q).map_err(fail)?;
    let futures_q = HistoryQuery {
        vantage: Vantage::Predicted,
        from_ms: now.saturating_sub(res_ms),
        to_ms: i64::MAX,
        limit: FUTURES_MAX,
        ..past_q
    };
    let futures = store.history(&futures_q).map_err(fail)?;
    Ok((past, futures))
}

fn confidence(
    app: &App,
    node: &str,
    now: i64,
    past: &[Capsule],
    expected: u64,
    present: Option<&Present>,
) -> Result<Confidence, Problem> {
    let coverage = (past.len() as f64 / expected as f64).min(1.0);
    let age_ms = present.map(|p| now.saturating_sub(i64::try_from(p.seen_ms).unwrap_or(i64::MAX)).max(0));
    let half_life = app.cfg.freshness_half_life_ms.max(1) as f64;
    let freshness = age_ms.map(|a| 0.5f64.powf(a as f64 / half_life));
    let mut agg = rim_capsule::AccuracyAgg::default();
    if let Some(store) = app.ctx.store() {
        let rows = store
            .accuracy(node)
            .map_err(|e| Problem::internal("capsule store failed", &e))?;
        for (_, _, a) in &rows {
            agg.merge(a);
        }
    }
    let accuracy = agg
        .mean_rel_err()
        .filter(|e| e.is_finite())
        .map(|e| 1.0 - e.clamp(0.0, 1.0));
    let parts = [Some(coverage), freshness, accuracy];
    let (sum, weight) = parts
        .iter()
        .zip(WEIGHTS)
        .filter_map(|(p, w)| p.map(|v| (v * w, w)))
        .fold((0.0, 0.0), |(s, t), (v, w)| (s + v, t + w));
    Ok(Confidence {
        value: if weight > 0.0 { sum / weight } else { 0.0 },
        coverage: Some(coverage),
        freshness,
        accuracy,
        windows_present: past.len(),
        windows_expected: expected,
        present_age_ms: age_ms,
        predictions_scored: agg.count,
        direction_hit_rate: agg.hit_rate(),
    })
}
