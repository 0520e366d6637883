//! What each row asks: a [`RequestSource`] appends the next request's bytes to a
//! connection's buffer. Every request is rendered before the clock starts; per request
//! the generator only picks one (slice), or patches fixed-width fields in place (the
//! event batches' ids and timestamps), because the generator shares its core with the
//! server and every cycle it spends is one the server does not get.

use std::fmt::Write as _;

use super::wire;
use crate::workload;

/// The next request of a row.
pub trait RequestSource {
    /// Appends the next request to `out`; returns the items it carries (1, or the events
    /// of a batch).
    fn next(&mut self, out: &mut Vec<u8>) -> u64;
}

/// The same request every time (the `bare` row).
pub struct Fixed {
    request: Vec<u8>,
}

impl Fixed {
    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self {
            request: wire::get(path),
        }
    }
}

impl RequestSource for Fixed {
    fn next(&mut self, out: &mut Vec<u8>) -> u64 {
        out.extend_from_slice(&self.request);
        1
    }
}

/// The temporal slice of every node once, in order (then again): primes the daemon's
/// resident windows before a slice row measures.
pub struct EachSlice {
    requests: Vec<Vec<u8>>,
    next: usize,
}

impl EachSlice {
    /// Slices of nodes `0..nodes`.
    pub fn new(nodes: usize) -> Self {
        let requests = (0..nodes.max(1))
            .map(|i| wire::get(&wire::slice_path(&workload::node_id(i))))
            .collect();
        Self { requests, next: 0 }
    }

    /// Every node was asked for at least once.
    pub fn covered(&self) -> bool {
        self.next >= self.requests.len()
    }
}

impl RequestSource for EachSlice {
    fn next(&mut self, out: &mut Vec<u8>) -> u64 {
        if let Some(r) = self.requests.get(self.next % self.requests.len().max(1)) {
            out.extend_from_slice(r);
        }
        self.next += 1;
        1
    }
}

/// The temporal slice of a node drawn uniformly at random, per request.
pub struct RandomSlices {
    requests: Vec<Vec<u8>>,
    rng: XorShift,
}

impl RandomSlices {
    /// Slices of nodes `0..nodes` of the workload.
    pub fn new(nodes: usize, seed: u64) -> Self {
        let requests = (0..nodes.max(1))
            .map(|i| wire::get(&wire::slice_path(&workload::node_id(i))))
            .collect();
        Self {
            requests,
            rng: XorShift::new(seed),
        }
    }
}

impl RequestSource for RandomSlices {
    fn next(&mut self, out: &mut Vec<u8>) -> u64 {
        let i = self.rng.below(self.requests.len());
        out.extend_from_slice(&self.requests[i]);
        1
    }
}

/// Digits of a batch's sequence number inside each `event_id` (`h{seq}-{i}`).
const SEQ_DIGITS: usize = 12;
/// Digits of an epoch-ms timestamp (13 until the year 2286).
const TS_DIGITS: usize = 13;

/// `POST /api/v1/events` of JSON arrays of `batch` RimFastEvents. The batches cover
/// every node in turn (one rendered template per `batch` nodes). Each request gets a new
/// batch number in every `event_id` (so the daemon's dedup never drops one) and the
/// current wall-clock time as every event's `timestamp` (so no event is late for its
/// node's open window).
pub struct EventBatches {
    templates: Vec<Template>,
    seq: u64,
}

/// One rendered request, with where its fixed-width fields sit.
struct Template {
    request: Vec<u8>,
    seq_at: Vec<usize>,
    ts_at: Vec<usize>,
}

impl EventBatches {
    /// Batches of `batch` events over nodes `0..nodes`, to `POST /events`.
    pub fn new(nodes: usize, batch: usize) -> Self {
        Self::to_path(nodes, batch, &format!("{}/events", wire::API))
    }

    /// The same batches to another route (`post-bare`: one that reads and discards them).
    pub fn to_path(nodes: usize, batch: usize, path: &str) -> Self {
        let nodes = nodes.max(1);
        let batch = batch.max(1);
        let mut rng = XorShift::new(0x5EED);
        let templates = (0..nodes.div_ceil(batch))
            .map(|t| Template::render(t * batch, batch, nodes, path, &mut rng))
            .collect();
        Self { templates, seq: 0 }
    }

    /// Events per request.
    pub fn batch(&self) -> usize {
        self.templates.first().map_or(0, |t| t.seq_at.len())
    }

    /// Bytes of one request (head and body).
    pub fn request_bytes(&self) -> usize {
        self.templates.first().map_or(0, |t| t.request.len())
    }
}

impl Template {
    fn render(first: usize, batch: usize, nodes: usize, path: &str, rng: &mut XorShift) -> Self {
        let mut body = String::with_capacity(batch * 280);
        let mut seq_at = Vec::with_capacity(batch);
        let mut ts_at = Vec::with_capacity(batch);
        body.push('[');
        for i in 0..batch {
            if i > 0 {
                body.push(',');
            }
            let node = workload::node_id((first + i) % nodes);
            let _ = write!(body, "{{\"rim_node_id\":\"{node}\",\"event_id\":\"h");
            seq_at.push(body.len());
            let _ = write!(body, "{:0SEQ_DIGITS$}-{i:05}\",\"timestamp\":", 0);
            ts_at.push(body.len());
            let _ = write!(
                body,
                "{:0TS_DIGITS$},\"critical_metrics\":{{\"temp\":{:.3},\"load\":{:.4},\"probe\":0,\"m3\":{:.4}}},\
                 \"price\":{:.2},\"volume\":1.0,\"stress\":0.1,\"status\":\"OK\",\"source_topic\":\"bench.http\"}}",
                0,
                50.0 + rng.unit() - 0.5,
                0.5 + (rng.unit() - 0.5) * 0.1,
                rng.unit() - 0.5,
                100.0 + rng.unit()
            );
        }
        body.push(']');
        let request = wire::post_json(path, body.as_bytes());
        // The fields' offsets inside the whole request: the head comes first.
        let head = request.len() - body.len();
        Self {
            request,
            seq_at: seq_at.into_iter().map(|at| head + at).collect(),
            ts_at: ts_at.into_iter().map(|at| head + at).collect(),
        }
    }

    fn patch(&mut self, seq: u64, timestamp_ms: u64) {
        for &at in &self.seq_at {
            wire::put_digits(&mut self.request[at..at + SEQ_DIGITS], seq);
        }
        for &at in &self.ts_at {
            wire::put_digits(&mut self.request[at..at + TS_DIGITS], timestamp_ms);
        }
    }
}

impl RequestSource for EventBatches {
    fn next(&mut self, out: &mut Vec<u8>) -> u64 {
        let n = self.templates.len() as u64;
        let Some(template) = self.templates.get_mut((self.seq % n.max(1)) as usize) else {
            return 0;
        };
        self.seq += 1;
        let now_ms = u64::try_from(workload::unix_ms()).unwrap_or(0);
        template.patch(self.seq, now_ms);
        out.extend_from_slice(&template.request);
        template.seq_at.len() as u64
    }
}

/// A small, fast, seedable generator (xorshift64): the node draws must cost nothing.
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced: xorshift never leaves 0).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (n ≥ 1; the modulo bias is far below the noise at 10k).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_valid_json_with_fresh_ids_each_time() -> Result<(), serde_json::Error> {
        let mut batches = EventBatches::new(5, 3);
        let mut first = Vec::new();
        assert_eq!(batches.next(&mut first), 3);
        let mut second = Vec::new();
        batches.next(&mut second);
        let mut third = Vec::new();
        batches.next(&mut third);
        let body = |req: &[u8]| -> Result<serde_json::Value, serde_json::Error> {
            let at = req.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
            serde_json::from_slice(&req[at..])
        };
        let a = body(&first)?;
        let c = body(&third)?;
        assert_eq!(a.as_array().map(Vec::len), Some(3));
        assert_eq!(a[0]["rim_node_id"], workload::node_id(0));
        assert_eq!(a[0]["event_id"], "h000000000001-00000");
        // The third request reuses the first template with a new batch number.
        assert_eq!(c[0]["event_id"], "h000000000003-00000");
        assert!(a[0]["timestamp"].as_i64().is_some_and(|t| t > 1_700_000_000_000));
        assert_eq!(a[0]["critical_metrics"]["probe"], 0);
        let head = String::from_utf8_lossy(&first);
        assert!(head.contains(&format!(
            "Content-Length: {}",
            first.len() - head.find("\r\n\r\n").unwrap_or(0) - 4
        )));
        Ok(())
    }

    #[test]
    fn random_slices_cover_the_nodes() {
        let mut slices = RandomSlices::new(4, 7);
        let mut seen = [false; 4];
        for _ in 0..200 {
            let mut out = Vec::new();
            slices.next(&mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            for (i, seen) in seen.iter_mut().enumerate() {
                *seen |= text.contains(&format!("{}/temporal/slice/{} ", wire::API, workload::node_id(i)));
            }
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }
}
