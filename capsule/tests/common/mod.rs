//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rim_capsule::{
    Capsule, CapsuleBody, CapsuleKey, MetricStats, ObservedStats, Ohlc, PredictedSeries, Prediction, Store,
    StoreConfig, Vantage,
};

/// Small deterministic generator (SplitMix64), so tests replay from a seed without a
/// dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

pub fn mem_store() -> Store {
    Store::open_with_backend(redb::backends::InMemoryBackend::new(), StoreConfig::default())
        .expect("open in-memory store")
}

pub fn observed(scope: &str, ts: i64, resolution: u32, count: u64) -> Capsule {
    Capsule {
        key: CapsuleKey {
            scope_id: scope.to_owned(),
            timestamp: ts,
            resolution,
            vantage: Vantage::Observed,
        },
        body: CapsuleBody::Observed(ObservedStats {
            count,
            first_ts: ts,
            last_ts: ts + 10,
            metrics: vec![MetricStats {
                name: "temp".into(),
                count,
                min: 1.0,
                max: 3.0,
                mean: 2.0,
                last: 2.5,
            }],
            price: Some(Ohlc {
                open: 100.0,
                high: 101.0,
                low: 99.5,
                close: 100.5,
            }),
            volume_sum: Some(1234.0),
            stress_max: Some(0.7),
            stress_last: Some(0.4),
            last_status: "OK".into(),
        }),
        created_ms: ts + 2000,
    }
}

pub fn predicted(scope: &str, ts: i64, resolution: u32, value: f64) -> Capsule {
    Capsule {
        key: CapsuleKey {
            scope_id: scope.to_owned(),
            timestamp: ts,
            resolution,
            vantage: Vantage::Predicted,
        },
        body: CapsuleBody::Predicted(Prediction {
            predictor: "ewma".into(),
            made_at_ms: ts - 1000,
            horizon_ms: 1000,
            confidence: 0.8,
            series: vec![PredictedSeries {
                name: "price".into(),
                value,
                base: 100.0,
            }],
        }),
        created_ms: ts - 1000,
    }
}

pub fn named(scope: &str, ts: i64, vantage: &str, payload: serde_json::Value) -> Capsule {
    Capsule {
        key: CapsuleKey {
            scope_id: scope.to_owned(),
            timestamp: ts,
            resolution: 60,
            vantage: Vantage::parse(vantage).expect("valid vantage"),
        },
        body: CapsuleBody::payload(&payload).expect("payload fits"),
        created_ms: ts,
    }
}
