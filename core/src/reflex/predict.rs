//! The predictor: at the first event of each new window of a node (per configured
//! resolution), the reflex shard predicts the **next** window from the node's present
//! state, and the journal thread stores it as a PREDICTED capsule and scores it when the
//! observed capsule of that window lands.
//!
//! **`ewma` predictor.** For each series the node has (price, volume, stress, each
//! metric), the predicted value is the series' exponentially weighted moving average
//! (weight `reflex.ewma_alpha`), i.e. "the next window's mean is the recent level". The
//! base is the last observed value, so the direction the prediction calls is
//! `sign(predicted − last)`. Confidence, in (0, 1], is the mean over series of
//! `n / (n + 10) × 1 / (1 + σ / max(|ewma|, 1e-9))`: low with few samples, low when the
//! series swings widely around its level (σ = √ of the EWMA variance).
//!
//! The record the reflex shard sends (little-endian), also kept in the decision log:
//! ```text
//! node id: u16 length + bytes   node index u32 (ingest's, this run)
//! window start i64 (epoch ms)   resolution u32 (s)
//! made at i64 (event time, epoch ms)   confidence f64   series count u8
//! per series: key u64 (1 price, 2 volume, 3 stress, else the metric's name hash), predicted f64, base f64
//! ```

/// The predictor's name as stored and reported.
pub const PREDICTOR: &str = "ewma";
/// Series in one prediction at most.
pub const SERIES_MAX: usize = 64;
/// Bytes of the largest record.
pub const RECORD_BYTES_MAX: usize = 2 + 256 + 4 + 8 + 4 + 8 + 8 + 1 + SERIES_MAX * 24;

/// One series' prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesGuess {
    /// Series key.
    pub key: u64,
    /// Predicted window mean.
    pub value: f64,
    /// Last observed value when predicted.
    pub base: f64,
}

/// A decoded prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess<'a> {
    /// Node id.
    pub node_id: &'a str,
    /// The node's index in this run (a log read after a restart goes by `node_id`).
    pub node: u32,
    /// Predicted window's start, epoch ms.
    pub window_ms: i64,
    /// Resolution, seconds.
    pub resolution: u32,
    /// Event time it was made at, epoch ms.
    pub made_at_ms: i64,
    /// Confidence in (0, 1].
    pub confidence: f64,
    /// Series.
    pub series: Vec<SeriesGuess>,
}

/// Confidence of one series (see the module docs).
pub fn series_confidence(count: f64, ewma: f64, var: f64) -> f64 {
    let sd = var.max(0.0).sqrt();
    let cv = sd / ewma.abs().max(1e-9);
    (count / (count + 10.0)) * (1.0 / (1.0 + cv))
}

/// Encodes a prediction into `out`; returns the bytes written (0 if `out` is too small).
#[allow(clippy::too_many_arguments)]
pub fn encode(
    node_id: &str,
    node: u32,
    window_ms: i64,
    resolution: u32,
    made_at_ms: i64,
    confidence: f64,
    series: &[SeriesGuess],
    out: &mut [u8],
) -> usize {
    let id = &node_id.as_bytes()[..node_id.len().min(256)];
    let n = series.len().min(SERIES_MAX);
    let need = 2 + id.len() + 4 + 8 + 4 + 8 + 8 + 1 + n * 24;
    if out.len() < need {
        return 0;
    }
    let mut at = 0;
    let mut put = |b: &[u8]| {
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&(id.len() as u16).to_le_bytes());
    put(id);
    put(&node.to_le_bytes());
    put(&window_ms.to_le_bytes());
    put(&resolution.to_le_bytes());
    put(&made_at_ms.to_le_bytes());
    put(&confidence.to_le_bytes());
    put(&[n as u8]);
    for s in &series[..n] {
        put(&s.key.to_le_bytes());
        put(&s.value.to_le_bytes());
        put(&s.base.to_le_bytes());
    }
    at
}

/// Why a prediction record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("prediction record malformed at byte {0}")]
pub struct GuessError(pub usize);

/// Decodes a prediction, checking every bound.
pub fn decode(b: &[u8]) -> Result<Guess<'_>, GuessError> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], GuessError> {
        let s = b.get(at..at + n).ok_or(GuessError(at))?;
        at += n;
        Ok(s)
    };
    let u64_of = |s: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(s);
        u64::from_le_bytes(w)
    };
    let id_len = u16::from_le_bytes([take(1)?[0], take(1)?[0]]) as usize;
    let node_id = std::str::from_utf8(take(id_len)?).map_err(|_| GuessError(2))?;
    let ix = take(4)?;
    let node = u32::from_le_bytes([ix[0], ix[1], ix[2], ix[3]]);
    let window_ms = u64_of(take(8)?) as i64;
    let r = take(4)?;
    let resolution = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
    let made_at_ms = u64_of(take(8)?) as i64;
    let confidence = f64::from_bits(u64_of(take(8)?));
    let n = take(1)?[0] as usize;
    let mut series = Vec::with_capacity(n);
    for _ in 0..n {
        series.push(SeriesGuess {
            key: u64_of(take(8)?),
            value: f64::from_bits(u64_of(take(8)?)),
            base: f64::from_bits(u64_of(take(8)?)),
        });
    }
    if at != b.len() {
        return Err(GuessError(at));
    }
    Ok(Guess {
        node_id,
        node,
        window_ms,
        resolution,
        made_at_ms,
        confidence,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let series = [
            SeriesGuess {
                key: 1,
                value: 10.5,
                base: 10.0,
            },
            SeriesGuess {
                key: 99,
                value: -3.0,
                base: 0.0,
            },
        ];
        let mut buf = [0u8; RECORD_BYTES_MAX];
        let n = encode("rim:a:b:c", 17, 1_000, 1, 999, 0.5, &series, &mut buf);
        let g = decode(&buf[..n]).expect("decodes");
        assert_eq!((g.node_id, g.node), ("rim:a:b:c", 17));
        assert_eq!(
            (g.window_ms, g.resolution, g.made_at_ms, g.confidence),
            (1_000, 1, 999, 0.5)
        );
        assert_eq!(g.series, series);
        for cut in 0..n {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 80) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (rng >> (i % 8 * 8)) as u8).collect();
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn confidence_is_bounded_and_ordered() {
        let calm = series_confidence(100.0, 10.0, 0.01);
        let wild = series_confidence(100.0, 10.0, 100.0);
        let young = series_confidence(1.0, 10.0, 0.01);
        assert!(calm > wild && calm > young);
        for c in [calm, wild, young, series_confidence(0.0, 0.0, 0.0)] {
            assert!((0.0..=1.0).contains(&c), "{c}");
        }
    }
}
