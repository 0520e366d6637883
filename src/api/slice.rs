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
//!
//! At the default resolution and a lookback up to the default, `past`, `futures` and
//! the accuracy come from the resident windows ([`super::resident`]: the same JSON, from
//! memory); otherwise, or with `api.slice_cache_bytes = 0`, from the store.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use hyper::{Response, StatusCode};
use rim_capsule::{Capsule, HistoryQuery, Vantage};
use serde::Serialize;
use tracing::warn;

use super::context::Present;
use super::envelope::{self, Body, Code, Meta, Problem};
use super::query::Query;
use super::resident::{merged_accuracy, FragmentList};
use super::routes::{check_node, CapsuleList};
use super::server::App;

/// Predicted windows returned at most.
const FUTURES_MAX: usize = 64;
/// Weights of coverage, freshness and accuracy in the combined confidence.
const WEIGHTS: [f64; 3] = [0.3, 0.3, 0.4];
/// Pause between two steps of [`follow_store`].
const FOLLOW_PAUSE: std::time::Duration = std::time::Duration::from_micros(200);
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
    past: Windows,
    present: Option<&'a Present>,
    #[serde(skip_serializing_if = "Option::is_none")]
    present_error: Option<String>,
    futures: Windows,
    confidence: Confidence,
}

/// Capsules read from the store, or their JSON from memory: serialized the same.
enum Windows {
    Read(Vec<Capsule>),
    Resident(FragmentList),
}

impl Windows {
    fn len(&self) -> usize {
        match self {
            Windows::Read(v) => v.len(),
            Windows::Resident(f) => f.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON bytes of the resident fragments (0 for capsules still to render).
    fn bytes(&self) -> usize {
        match self {
            Windows::Read(_) => 0,
            Windows::Resident(f) => f.json_bytes(),
        }
    }
}

impl Serialize for Windows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Windows::Read(v) => CapsuleList(v).serialize(s),
            Windows::Resident(f) => f.serialize(s),
        }
    }
}

/// What the slice takes from the store (or memory): past, futures, accuracy.
struct Stored {
    past: Windows,
    futures: Windows,
    accuracy: rim_capsule::AccuracyAgg,
}

/// Handles the slice.
pub async fn get(app: &App, meta: &Meta, q: &Query<'_>, node: &str) -> Result<Response<Body>, Problem> {
    check_node("nodeId", node)?;
    let resolution = q.int("resolution", app.cfg.slice_resolution_s, 1..=86_400)?;
    let lookback_s = q.int("lookback", app.cfg.slice_lookback_s, 1..=LOOKBACK_S_MAX)?;
    let now = app.ctx.clock().now_ms();
    let res_ms = i64::from(resolution) * 1000;
    let stored = stored(app, node, resolution, now, lookback_s)?;
    let (past, futures) = (stored.past, stored.futures);
    let (present, present_error) = match app.ctx.present(node).await {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e.to_string())),
    };
    if past.is_empty() && futures.is_empty() && present.is_none() && present_error.is_none() {
        return Err(Problem::new(Code::NotFound, format!("nothing is known of node {node}")));
    }
    let expected = (lookback_s * 1000).div_ceil(res_ms as u64).max(1);
    let confidence = confidence(app, now, past.len(), expected, present.as_ref(), &stored.accuracy);
    let s = Slice {
        node_id: node,
        now,
        lookback_seconds: lookback_s,
        resolution,
        past,
        present: present.as_ref(),
        present_error,
        futures,
        confidence,
    };
    // The capsule lists are most of the answer; the rest fits in a few KiB.
    let hint = s.past.bytes() + s.futures.bytes() + 4096;
    Ok(envelope::data_sized(meta, StatusCode::OK, &s, None, hint))
}

/// Past, futures and accuracy: from memory when the resident windows cover the request,
/// else from the store (nothing when persistence is off).
fn stored(app: &App, node: &str, resolution: u32, now: i64, lookback_s: u64) -> Result<Stored, Problem> {
    let fail = |e: rim_capsule::StoreError| Problem::internal("capsule store failed", &e);
    let lookback_ms = i64::try_from(lookback_s * 1000).unwrap_or(i64::MAX);
    if let Some(store) = app.ctx.store() {
        let mut resident = app.resident.borrow_mut();
        if resident.serves(store, resolution, lookback_ms) {
            let version = app.ctx.store_version();
            let w = resident.windows(store, version, node, now, lookback_ms).map_err(fail)?;
            if resident.behind(version) {
                // A burst of capsules: the rest is taken between requests.
                app.resident_behind.notify();
            }
            drop(resident);
            if let Some(newest) = &w.newest {
                // Lets the live state name its metric series (the shard knows only their
                // hashes): once per newest capsule.
                app.ctx.learn_capsule(newest);
            }
            return Ok(Stored {
                past: Windows::Resident(w.past),
                futures: Windows::Resident(w.futures),
                accuracy: w.accuracy,
            });
        }
    }
    let (past, futures) = capsules(app, node, resolution, now, lookback_s)?;
    if let Some(newest) = past.last() {
        app.ctx.learn_capsule(newest);
    }
    let accuracy = match app.ctx.store() {
        Some(store) => merged_accuracy(store, node).map_err(fail)?,
        None => rim_capsule::AccuracyAgg::default(),
    };
    Ok(Stored {
        past: Windows::Read(past),
        futures: Windows::Read(futures),
        accuracy,
    })
}

/// Brings the resident windows up to the store a step at a time while a request left
/// them behind (a burst of capsules larger than one step), pausing between steps so that
/// requests are answered in between. Parked otherwise; ends when the daemon stops.
pub async fn follow_store(app: Rc<App>) {
    loop {
        app.resident_behind.wait().await;
        loop {
            if app.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(store) = app.ctx.store() else {
                return;
            };
            let version = app.ctx.store_version();
            let now = app.ctx.clock().now_ms();
            // The borrow ends before any await: requests borrow the windows in between.
            let behind = app.resident.borrow_mut().follow(store, version, now);
            match behind {
                Ok(true) => glommio::timer::sleep(FOLLOW_PAUSE).await,
                Ok(false) => break,
                Err(e) => {
                    warn!(error = %e, "slice windows: reading the store's tail failed; the next slice retries");
                    break;
                }
            }
        }
    }
}

/// The past and futures capsules from the store (none when persistence is off).
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
    now: i64,
    windows_present: usize,
    expected: u64,
    present: Option<&Present>,
    agg: &rim_capsule::AccuracyAgg,
) -> Confidence {
    let coverage = (windows_present as f64 / expected as f64).min(1.0);
    let age_ms = present.map(|p| now.saturating_sub(i64::try_from(p.seen_ms).unwrap_or(i64::MAX)).max(0));
    let half_life = app.cfg.freshness_half_life_ms.max(1) as f64;
    let freshness = age_ms.map(|a| 0.5f64.powf(a as f64 / half_life));
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
    Confidence {
        value: if weight > 0.0 { sum / weight } else { 0.0 },
        coverage: Some(coverage),
        freshness,
        accuracy,
        windows_present,
        windows_expected: expected,
        present_age_ms: age_ms,
        predictions_scored: agg.count,
        direction_hit_rate: agg.hit_rate(),
    }
}
