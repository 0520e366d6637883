//! The record ingest hands a reflex shard over an in-process rtrb ring.
//!
//! The ring carries 32-byte [`Slot`]s; a record is a run of slots, so an event with four
//! metrics takes five slots and one with sixty-four takes thirty-five, and nothing is
//! padded to the worst case. Ingest writes each record straight into the ring's slots
//! (the event's one copy after it left shared memory) and the reflex shard reads it in
//! place.
//!
//! Two kinds of record:
//! - **Node**: the first time ingest routes a node to a shard, its id text (≤ 256 bytes)
//!   and dense index, so the shard can name the node in decisions and match rule globs.
//! - **Tick**: one accepted event, its strings already reduced to numbers: the node index,
//!   the status and metric names as [`rim_rules::name_hash`] values.

/// One ring slot.
pub type Slot = [u64; 4];
/// Bytes of a slot.
pub const SLOT_BYTES: u64 = 32;

const KIND_TICK: u64 = 1;
const KIND_NODE: u64 = 2;
/// Words of a tick's head.
const HEAD_WORDS: usize = 12;
const HEAD_SLOTS: usize = HEAD_WORDS / 4;
/// Metrics an event may carry (the data model's limit).
pub const METRICS_MAX: usize = 64;
/// Bytes of a node id (the data model's limit).
pub const NODE_ID_BYTES_MAX: usize = 256;
/// Slots of the largest record.
pub const SLOTS_PER_RECORD_MAX: usize = HEAD_SLOTS + METRICS_MAX / 2;

const HAS_PRICE: u64 = 1;
const HAS_VOLUME: u64 = 1 << 1;
const HAS_STRESS: u64 = 1 << 2;
/// Replayed from the journal at start: applied to state, decides nothing.
const REPLAY: u64 = 1 << 3;

/// The fixed part of a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TickHead {
    /// Ingest's sequence number of the event (1, 2, …; unique for the daemon's run).
    pub seq: u64,
    /// Dense node index.
    pub node: u32,
    /// Index of the producer ring it came from (for stats).
    pub source: u32,
    /// Event time, epoch ms.
    pub timestamp: i64,
    /// Producer's CLOCK_MONOTONIC at publish (0 when unknown).
    pub publish_ns: u64,
    /// CLOCK_MONOTONIC when ingest accepted it.
    pub ingest_ns: u64,
    /// Wall clock when ingest accepted it, epoch ms (for staleness).
    pub received_ms: u64,
    /// `price`.
    pub price: Option<f64>,
    /// `volume`.
    pub volume: Option<f64>,
    /// `stress`.
    pub stress: Option<f64>,
    /// `name_hash(status)`.
    pub status: u64,
    /// Replayed from the journal at start (state only: no rules, no predictions).
    pub replay: bool,
}

/// Slots a node definition of an id of `len` bytes takes.
fn node_slots(len: usize) -> usize {
    1 + len.div_ceil(32)
}

/// Slots a tick with `metrics` metrics takes.
pub fn tick_slots(metrics: usize) -> usize {
    HEAD_SLOTS + metrics.div_ceil(2)
}

fn opt_bits(v: Option<f64>) -> u64 {
    v.map_or(0, f64::to_bits)
}

/// Writes a tick; `metrics` are (name hash, value) pairs, at most [`METRICS_MAX`].
/// Returns false, writing nothing, when the ring lacks room.
pub fn push_tick(
    ring: &mut rtrb::Producer<Slot>,
    head: &TickHead,
    metrics: impl ExactSizeIterator<Item = (u64, f64)>,
) -> bool {
    // Paired with `pop`'s length check: events were validated (≤ 64 metrics) upstream, and
    // the head's count and length come from the `tick_slots` the reader checks against.
    let n = metrics.len();
    assert!(n <= METRICS_MAX, "a tick of {n} metrics reached the tick ring (a bug)");
    let slots = tick_slots(n);
    let Ok(chunk) = ring.write_chunk_uninit(slots) else {
        return false;
    };
    let flags = u64::from(head.price.is_some())
        | u64::from(head.volume.is_some()) << 1
        | u64::from(head.stress.is_some()) << 2
        | u64::from(head.replay) << 3;
    let words: [u64; HEAD_WORDS] = [
        KIND_TICK | (n as u64) << 8 | flags << 16 | (slots as u64) << 32,
        head.seq,
        u64::from(head.node) | u64::from(head.source) << 32,
        head.timestamp as u64,
        head.publish_ns,
        head.ingest_ns,
        head.received_ms,
        opt_bits(head.price),
        opt_bits(head.volume),
        opt_bits(head.stress),
        head.status,
        0,
    ];
    let mut metrics = metrics;
    let mut pair = move || metrics.next().map_or([0, 0], |(k, v)| [k, v.to_bits()]);
    let mut i = 0;
    let written = chunk.fill_from_iter(std::iter::from_fn(|| {
        let slot = if i < HEAD_SLOTS {
            [words[i * 4], words[i * 4 + 1], words[i * 4 + 2], words[i * 4 + 3]]
        } else {
            let [a, b] = pair();
            let [c, d] = pair();
            [a, b, c, d]
        };
        i += 1;
        Some(slot)
    }));
    // The iterator never ends, so the chunk is always filled.
    debug_assert_eq!(written, slots);
    true
}

/// Writes a node definition. Returns false, writing nothing, when the ring lacks room.
pub fn push_node(ring: &mut rtrb::Producer<Slot>, node: u32, id: &str) -> bool {
    // Paired with `pop`'s checks: ids were validated (≤ 256 bytes) before they got a node.
    assert!(
        id.len() <= NODE_ID_BYTES_MAX,
        "a node id of {} bytes reached the tick ring (a bug)",
        id.len()
    );
    let bytes = id.as_bytes();
    let slots = node_slots(bytes.len());
    let Ok(chunk) = ring.write_chunk_uninit(slots) else {
        return false;
    };
    let mut i = 0;
    chunk.fill_from_iter(std::iter::from_fn(|| {
        let slot = if i == 0 {
            [
                KIND_NODE | (bytes.len() as u64) << 8 | (slots as u64) << 32,
                u64::from(node),
                0,
                0,
            ]
        } else {
            let mut s = [0u64; 4];
            let chunk = bytes.get((i - 1) * 32..(i * 32).min(bytes.len())).unwrap_or(&[]);
            for (w, part) in s.iter_mut().zip(chunk.chunks(8)) {
                let mut b = [0u8; 8];
                b[..part.len()].copy_from_slice(part);
                *w = u64::from_le_bytes(b);
            }
            s
        };
        i += 1;
        Some(slot)
    }));
    true
}

/// Slots free in `ring` for the next record.
pub fn room(ring: &rtrb::Producer<Slot>) -> usize {
    ring.slots()
}

/// A record read in place from the ring.
pub enum Record<'a> {
    /// A node definition.
    Node {
        /// Dense node index.
        node: u32,
        /// Its id text.
        id: &'a str,
    },
    /// An event.
    Tick(TickView<'a>),
}

/// A tick read in place: slot accessors across the ring's wrap.
#[derive(Clone, Copy)]
pub struct TickView<'a> {
    a: &'a [Slot],
    b: &'a [Slot],
    metrics: usize,
}

impl<'a> TickView<'a> {
    fn word(&self, i: usize) -> u64 {
        let (slot, lane) = (i / 4, i % 4);
        match self.a.get(slot) {
            Some(s) => s[lane],
            None => self.b.get(slot - self.a.len()).map_or(0, |s| s[lane]),
        }
    }

    /// The fixed part.
    pub fn head(&self) -> TickHead {
        let flags = self.word(0) >> 16 & 0xff;
        let opt = |bit: u64, w: usize| (flags & bit != 0).then(|| f64::from_bits(self.word(w)));
        TickHead {
            seq: self.word(1),
            node: self.word(2) as u32,
            source: (self.word(2) >> 32) as u32,
            timestamp: self.word(3) as i64,
            publish_ns: self.word(4),
            ingest_ns: self.word(5),
            received_ms: self.word(6),
            price: opt(HAS_PRICE, 7),
            volume: opt(HAS_VOLUME, 8),
            stress: opt(HAS_STRESS, 9),
            status: self.word(10),
            replay: flags & REPLAY != 0,
        }
    }

    /// Node index, without decoding the rest.
    pub fn node(&self) -> u32 {
        self.word(2) as u32
    }

    /// Number of metrics.
    pub fn metric_count(&self) -> usize {
        self.metrics
    }

    /// Metric `i` as (name hash, value).
    pub fn metric(&self, i: usize) -> (u64, f64) {
        let w = HEAD_WORDS + i * 2;
        (self.word(w), f64::from_bits(self.word(w + 1)))
    }

    /// The value of the metric whose name hashes to `key`, if the event has it.
    pub fn find_metric(&self, key: u64) -> Option<f64> {
        (0..self.metrics)
            .map(|i| self.metric(i))
            .find(|m| m.0 == key)
            .map(|m| m.1)
    }
}

/// Reads one record in place and hands it to `f`; returns false when the ring is empty.
///
/// # Panics
/// On a record whose head does not match its length or kind: it cannot come from ingest
/// (same process, same code, written whole), so it is a bug, and the process stops rather
/// than guess (a restart recovers from the journal).
///
/// `f` gets the record by reference: handed over by value, the record, built with narrow
/// stores, was copied again with wide loads that the store buffer cannot forward, which
/// then waited for every store ahead of them (in `rim-bench ingest`, 2-7% more events/s
/// without that copy).
pub fn pop(
    ring: &mut rtrb::Consumer<Slot>,
    scratch: &mut [u8; NODE_ID_BYTES_MAX],
    f: impl FnOnce(&Record<'_>),
) -> bool {
    let Ok(head) = ring.peek() else { return false };
    let w0 = head[0];
    let slots = ((w0 >> 32) as usize).clamp(1, SLOTS_PER_RECORD_MAX);
    // A record is committed whole, so the writer's position as last loaded (by `peek`)
    // already covers it: no fresh load of a position the writer keeps moving.
    let Ok(chunk) = ring.read_chunk(slots.min(ring.cached_slots())) else {
        return false;
    };
    let (a, b) = chunk.as_slices();
    match w0 & 0xff {
        KIND_TICK => {
            let metrics = ((w0 >> 8 & 0xff) as usize).min(METRICS_MAX);
            // Paired with `push_tick`'s check of what it wrote.
            assert!(
                tick_slots(metrics) == slots && a.len() + b.len() == slots,
                "a tick's length does not match its head: {metrics} metrics, {slots} slots, {} read (a bug)",
                a.len() + b.len()
            );
            f(&Record::Tick(TickView { a, b, metrics }));
        }
        KIND_NODE => {
            let len = (w0 >> 8 & 0xffff) as usize;
            assert!(
                len <= NODE_ID_BYTES_MAX && node_slots(len) == slots && a.len() + b.len() == slots,
                "a node definition's length does not match its head: {len} bytes, {slots} slots (a bug)"
            );
            let node = a[0][1] as u32;
            let mut n = 0;
            for word in a.iter().chain(b.iter()).skip(1).flat_map(|s| s.iter()) {
                for byte in word.to_le_bytes() {
                    if n < len {
                        scratch[n] = byte;
                        n += 1;
                    }
                }
            }
            match std::str::from_utf8(&scratch[..n]) {
                Ok(id) => f(&Record::Node { node, id }),
                Err(e) => panic!("a node definition is not UTF-8: {e} (a bug)"),
            }
        }
        kind => panic!("a tick ring record of unknown kind {kind} (a bug)"),
    }
    chunk.commit_all();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64) -> TickHead {
        TickHead {
            seq,
            node: 7,
            source: 3,
            timestamp: 1_700_000_000_123,
            publish_ns: 11,
            ingest_ns: 22,
            received_ms: 33,
            price: Some(1.5),
            volume: None,
            stress: Some(-2.0),
            status: 99,
            replay: seq.is_multiple_of(2),
        }
    }

    #[test]
    #[should_panic(expected = "unknown kind 99")]
    fn a_record_of_unknown_kind_is_a_bug_not_skipped() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<Slot>::new(8);
        assert!(tx.push([99, 0, 0, 0]).is_ok());
        pop(&mut rx, &mut [0; NODE_ID_BYTES_MAX], |_| {});
    }

    #[test]
    #[should_panic(expected = "does not match its head")]
    fn a_tick_whose_head_lies_about_its_length_is_a_bug() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<Slot>::new(8);
        // Two metrics need four slots; the head says three.
        assert!(tx.push([KIND_TICK | 2 << 8 | 3 << 32, 0, 0, 0]).is_ok());
        for _ in 0..3 {
            assert!(tx.push([0; 4]).is_ok());
        }
        pop(&mut rx, &mut [0; NODE_ID_BYTES_MAX], |_| {});
    }

    #[test]
    fn ticks_and_nodes_round_trip_across_the_wrap() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<Slot>::new(64);
        let mut scratch = [0u8; NODE_ID_BYTES_MAX];
        for round in 0..200u64 {
            let n = (round % 65) as usize;
            let metrics: Vec<(u64, f64)> = (0..n).map(|i| (i as u64 + 100, i as f64 * 0.5)).collect();
            assert!(push_tick(&mut tx, &head(round), metrics.iter().copied()));
            let id = format!("rim:sensor:ns:{}", "x".repeat((round % 200) as usize + 1));
            assert!(push_node(&mut tx, round as u32, &id));
            let mut got = false;
            assert!(pop(&mut rx, &mut scratch, |r| match r {
                Record::Tick(t) => {
                    assert_eq!(t.head(), head(round));
                    assert_eq!(t.metric_count(), n);
                    for (i, m) in metrics.iter().enumerate() {
                        assert_eq!(t.metric(i), *m);
                    }
                    if n > 3 {
                        assert_eq!(t.find_metric(103), Some(1.5));
                    }
                    got = true;
                }
                Record::Node { .. } => panic!("expected a tick"),
            }));
            assert!(got);
            assert!(pop(&mut rx, &mut scratch, |r| match r {
                &Record::Node { node, id: got } => {
                    assert_eq!(node, round as u32);
                    assert_eq!(got, id);
                }
                Record::Tick(_) => panic!("expected a node"),
            }));
            assert!(!pop(&mut rx, &mut scratch, |_| {}));
        }
    }

    #[test]
    fn a_full_ring_takes_nothing() {
        let (mut tx, _rx) = rtrb::RingBuffer::<Slot>::new(4);
        assert!(push_tick(&mut tx, &head(1), [(1, 1.0)].into_iter()));
        assert!(!push_tick(&mut tx, &head(2), [(1, 1.0)].into_iter()));
        assert_eq!(room(&tx), 0);
    }
}
