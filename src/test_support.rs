//! Values the unit tests of several modules build alike (test builds only).

use rim_capsule::{Capsule, CapsuleBody, CapsuleKey, MetricStats, ObservedStats, Vantage};

/// An observed one-minute capsule of `node` at `ts`, one metric `t` = 1.5.
pub(crate) fn observed(node: &str, ts: i64) -> Capsule {
    Capsule {
        key: CapsuleKey {
            scope_id: node.to_owned(),
            timestamp: ts,
            resolution: 60,
            vantage: Vantage::Observed,
        },
        body: CapsuleBody::Observed(ObservedStats {
            count: 1,
            first_ts: ts,
            last_ts: ts,
            metrics: vec![MetricStats {
                name: "t".into(),
                count: 1,
                min: 1.5,
                max: 1.5,
                mean: 1.5,
                last: 1.5,
            }],
            price: None,
            volume_sum: None,
            stress_max: None,
            stress_last: None,
            last_status: "OK".into(),
        }),
        created_ms: ts,
    }
}
