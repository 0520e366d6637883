//! Prediction scoring: how far a predicted capsule was from the observed capsule of the same
//! window.
//!
//! The observed value a series is compared with:
//! - `price`: the window's **close**. The roll-up keeps OHLC, not a mean price, and the close is
//!   the level a next-window forecast is judged by;
//! - `volume`: the window's **sum**;
//! - `stress`: the **last** value (the level at the window's end, like the close);
//! - any other name: that metric's **mean**.
//!
//! A series with no observed value in the window (no price, unknown metric) is not scored.

use serde::{Deserialize, Serialize};

use crate::model::{ObservedStats, Prediction};

/// Smallest magnitude the relative error divides by, so a zero observation gives a finite
/// (large) relative error rather than infinity.
pub const REL_ERR_FLOOR: f64 = 1e-9;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesScore {
    pub name: String,
    pub predicted: f64,
    pub observed: f64,
    pub abs_err: f64,
    /// `abs_err / max(|observed|, 1e-9)`.
    pub rel_err: f64,
    /// Whether the predicted move from `base` had the observed move's sign; `None` when either
    /// move is zero (no direction to hit).
    pub direction_hit: Option<bool>,
}

/// The name the brief's API uses for one series' score.
pub type Score = SeriesScore;

/// The observed value a series named `name` is judged against (see the module docs).
pub fn observed_value(name: &str, observed: &ObservedStats) -> Option<f64> {
    match name {
        "price" => observed.price.map(|p| p.close),
        "volume" => observed.volume_sum,
        "stress" => observed.stress_last,
        metric => observed.metric(metric).map(|m| m.mean),
    }
}

/// Scores every predicted series that has an observed value, in the prediction's order.
pub fn score(pred: &Prediction, observed: &ObservedStats) -> Vec<SeriesScore> {
    pred.series
        .iter()
        .filter_map(|s| {
            let obs = observed_value(&s.name, observed)?;
            Some(score_one(&s.name, s.value, s.base, obs))
        })
        .collect()
}

fn score_one(name: &str, predicted: f64, base: f64, observed: f64) -> SeriesScore {
    let abs_err = (predicted - observed).abs();
    let rel_err = abs_err / observed.abs().max(REL_ERR_FLOOR);
    let direction_hit = if predicted == base || observed == base {
        None
    } else {
        Some((predicted > base) == (observed > base))
    };
    SeriesScore {
        name: name.to_owned(),
        predicted,
        observed,
        abs_err,
        rel_err,
        direction_hit,
    }
}

/// Running sums of scores for one (scope, predictor, series).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccuracyAgg {
    pub count: u64,
    pub abs_err_sum: f64,
    pub rel_err_sum: f64,
    /// Scores with a direction that hit.
    pub hits: u64,
    /// Scores with a direction (`direction_hit` was `Some`).
    pub directional: u64,
}

impl AccuracyAgg {
    pub fn add(&mut self, s: &SeriesScore) {
        self.count += 1;
        self.abs_err_sum += s.abs_err;
        self.rel_err_sum += s.rel_err;
        if let Some(hit) = s.direction_hit {
            self.directional += 1;
            self.hits += u64::from(hit);
        }
    }

    pub fn merge(&mut self, o: &AccuracyAgg) {
        self.count += o.count;
        self.abs_err_sum += o.abs_err_sum;
        self.rel_err_sum += o.rel_err_sum;
        self.hits += o.hits;
        self.directional += o.directional;
    }

    pub fn mean_abs_err(&self) -> Option<f64> {
        (self.count > 0).then(|| self.abs_err_sum / self.count as f64)
    }

    pub fn mean_rel_err(&self) -> Option<f64> {
        (self.count > 0).then(|| self.rel_err_sum / self.count as f64)
    }

    /// Share of directional scores that hit; `None` before the first directional score.
    pub fn hit_rate(&self) -> Option<f64> {
        (self.directional > 0).then(|| self.hits as f64 / self.directional as f64)
    }
}
