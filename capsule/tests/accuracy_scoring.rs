//! Guards what a prediction is compared with (price → close, volume → sum, stress → last,
//! metric → mean), the error arithmetic, and when a direction counts.

use rim_capsule::{score, AccuracyAgg, MetricStats, ObservedStats, Ohlc, PredictedSeries, Prediction};

fn observed() -> ObservedStats {
    ObservedStats {
        count: 3,
        first_ts: 0,
        last_ts: 900,
        metrics: vec![MetricStats {
            name: "temp".into(),
            count: 3,
            min: 1.0,
            max: 5.0,
            mean: 2.0,
            last: 5.0,
        }],
        price: Some(Ohlc {
            open: 100.0,
            high: 110.0,
            low: 90.0,
            close: 105.0,
        }),
        volume_sum: Some(50.0),
        stress_max: Some(0.9),
        stress_last: Some(0.0),
        last_status: "OK".into(),
    }
}

fn series(name: &str, value: f64, base: f64) -> PredictedSeries {
    PredictedSeries {
        name: name.into(),
        value,
        base,
    }
}

#[test]
fn scores_each_series_against_its_observed_value() {
    let pred = Prediction {
        predictor: "ewma".into(),
        made_at_ms: 0,
        horizon_ms: 1000,
        confidence: 0.5,
        series: vec![
            series("price", 103.0, 100.0),
            series("volume", 60.0, 55.0),
            series("stress", 0.5, 0.0),
            series("temp", 3.0, 3.0),
            series("unknown", 1.0, 0.0),
        ],
    };
    let s = score(&pred, &observed());
    let names: Vec<&str> = s.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["price", "volume", "stress", "temp"],
        "unknown series is not scored"
    );
    assert_eq!(
        (s[0].observed, s[0].abs_err, s[0].direction_hit),
        (105.0, 2.0, Some(true))
    );
    assert!((s[0].rel_err - 2.0 / 105.0).abs() < 1e-15);
    assert_eq!(
        (s[1].observed, s[1].abs_err, s[1].direction_hit),
        (50.0, 10.0, Some(false))
    );
    // Observed stress 0 equals the base: no direction; relative error uses the 1e-9 floor.
    assert_eq!((s[2].observed, s[2].direction_hit), (0.0, None));
    assert!((s[2].rel_err - 0.5 / 1e-9).abs() < 1.0);
    // Predicted equals the base: no direction.
    assert_eq!((s[3].observed, s[3].abs_err, s[3].direction_hit), (2.0, 1.0, None));

    let mut agg = AccuracyAgg::default();
    for x in &s {
        agg.add(x);
    }
    assert_eq!((agg.count, agg.directional, agg.hits), (4, 2, 1));
    assert_eq!(agg.hit_rate(), Some(0.5));
    assert_eq!(agg.mean_abs_err(), Some((2.0 + 10.0 + 0.5 + 1.0) / 4.0));
    assert_eq!(AccuracyAgg::default().mean_abs_err(), None);
}
