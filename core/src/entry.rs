//! Entries on the in-process byte rings into the journal thread: ingest's events and
//! durability markers, the reflex shards' decisions and predictions.
//!
//! An entry is a 16-byte head and a body, pushed whole with one copy and popped whole,
//! so the journal thread never sees half an entry:
//! ```text
//!  0  body length u32   4  kind u8   5  metric keys u8 (events)   6  partition u16   8  aux u64
//! 16  body
//! ```
//! `aux` is the event's arrival time (ms) for events, the marker's sequence for markers,
//! the shard for decisions and predictions. (Recovery hands replayed events from its
//! feeding thread to its roll-up thread as event entries too, with the record's journal
//! position in `aux`.)
//!
//! An event's body carries, before the journal record, what the roll-up needs that ingest
//! already computed, so the cold core neither hashes names nor looks nodes up per event:
//! ```text
//!  0  node index u32   4  reserved u32   8  status key u64   16  event-id hash u64 (0: none)
//! 24  metric name hashes u64 × n   24 + 8n  the journal record (`rim_journal::event` encoding)
//! ```
//! The event-id hash is the one ingest's dedup window keeps: the roll-up keeps each node's
//! recent ones in its checkpoint, so the windows survive a restart.
//!
//! The rings are written and read by this process only; a malformed entry is a bug, and
//! the journal thread stops the process rather than guess (see [`EntryError`]).

/// Bytes of an entry's head.
pub const HEAD_BYTES: usize = 16;
/// An event: roll-up extras, then the journal record.
pub const KIND_EVENT: u8 = 1;
/// A durability marker: every entry before it covers the producer positions ingest
/// recorded under its sequence.
pub const KIND_MARKER: u8 = 2;
/// A decision record (the broadcast ring's bytes), for the decision log.
pub const KIND_DECISION: u8 = 3;
/// A prediction (see [`crate::reflex::predict`]).
pub const KIND_PREDICTION: u8 = 4;
/// Largest body accepted from a ring (a bound, not a format limit).
pub const BODY_BYTES_MAX: usize = 64 << 10;
/// Bytes of an event's extras before its metric keys.
pub const EXTRAS_BYTES: usize = 24;
/// Metric keys an event entry carries at most.
pub const KEYS_MAX: usize = 64;

/// An entry's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Body bytes.
    pub len: u32,
    /// What the body is.
    pub kind: u8,
    /// Metric keys of an event (0 otherwise).
    pub keys: u8,
    /// The event's partition (events), else 0.
    pub partition: u16,
    /// Kind-specific word.
    pub aux: u64,
}

impl Head {
    /// Writes the head into `out[..HEAD_BYTES]`.
    pub fn put(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4] = self.kind;
        out[5] = self.keys;
        out[6..8].copy_from_slice(&self.partition.to_le_bytes());
        out[8..16].copy_from_slice(&self.aux.to_le_bytes());
    }

    fn get(b: &[u8; HEAD_BYTES]) -> Self {
        let word = |r: std::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(w)
        };
        Self {
            len: word(0..4) as u32,
            kind: b[4],
            keys: b[5],
            partition: word(6..8) as u16,
            aux: word(8..16),
        }
    }
}

/// An event's extras and journal record, borrowed from an entry's body.
#[derive(Debug, Clone, Copy)]
pub struct EventBody<'a> {
    /// Ingest's dense node index.
    pub node: u32,
    /// The status text's key.
    pub status: u64,
    /// The event id's dedup hash (0: the event has no id).
    pub id_hash: u64,
    /// The metrics' name hashes (`rim_rules::name_hash`, at least 1), little-endian words,
    /// in the record's metric order.
    keys: &'a [u8],
    /// The journal record.
    pub record: &'a [u8],
}

impl EventBody<'_> {
    /// Metric `i`'s name hash.
    pub fn key(&self, i: usize) -> Option<u64> {
        let w = self.keys.get(i * 8..i * 8 + 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        Some(u64::from_le_bytes(b))
    }

    /// How many keys the entry carries.
    pub fn key_count(&self) -> usize {
        self.keys.len() / 8
    }
}

/// Splits an event entry's body; `None` if it is shorter than its keys say.
pub fn event_body<'a>(head: &Head, body: &'a [u8]) -> Option<EventBody<'a>> {
    let keys_end = EXTRAS_BYTES + usize::from(head.keys) * 8;
    let word = |r: std::ops::Range<usize>| -> Option<u64> {
        let mut w = [0u8; 8];
        let s = body.get(r)?;
        w[..s.len()].copy_from_slice(s);
        Some(u64::from_le_bytes(w))
    };
    Some(EventBody {
        node: word(0..4)? as u32,
        status: word(8..16)?,
        id_hash: word(16..24)?,
        keys: body.get(EXTRAS_BYTES..keys_end)?,
        record: body.get(keys_end..)?,
    })
}

/// What ingest computed for the roll-up, carried before an event's journal record.
#[derive(Debug, Clone, Copy)]
pub struct Extras<'k> {
    /// Ingest's dense node index.
    pub node: u32,
    /// The status text's key.
    pub status: u64,
    /// The event id's dedup hash (0: no id).
    pub id_hash: u64,
    /// The metrics' name hashes, in the record's metric order.
    pub keys: &'k [u64],
}

/// Writes an event entry's head and extras into `out` (at least
/// `HEAD_BYTES + EXTRAS_BYTES + 8 × keys.len()` bytes) for a record of `record_len` bytes
/// that the caller places right after; returns where the record goes.
pub fn put_event_head(out: &mut [u8], partition: u16, received_ms: u64, x: &Extras<'_>, record_len: usize) -> usize {
    let Extras {
        node,
        status,
        id_hash,
        keys,
    } = *x;
    let keys = &keys[..keys.len().min(KEYS_MAX)];
    let extras = EXTRAS_BYTES + keys.len() * 8;
    Head {
        len: (extras + record_len) as u32,
        kind: KIND_EVENT,
        keys: keys.len() as u8,
        partition,
        aux: received_ms,
    }
    .put(&mut out[..HEAD_BYTES]);
    let b = &mut out[HEAD_BYTES..HEAD_BYTES + extras];
    b[0..4].copy_from_slice(&node.to_le_bytes());
    b[4..8].fill(0);
    b[8..16].copy_from_slice(&status.to_le_bytes());
    b[16..24].copy_from_slice(&id_hash.to_le_bytes());
    for (i, k) in keys.iter().enumerate() {
        let at = EXTRAS_BYTES + i * 8;
        b[at..at + 8].copy_from_slice(&k.to_le_bytes());
    }
    HEAD_BYTES + extras
}

/// Pushes a whole entry (`bytes` = head and body); false, writing nothing, when the
/// ring lacks room.
pub fn push(ring: &mut rtrb::Producer<u8>, bytes: &[u8]) -> bool {
    let pushed = ring.push_entire_slice(bytes).is_ok();
    if pushed {
        take_ahead(ring);
    }
    pushed
}

/// Bytes of free ring after an entry that [`push`] takes for writing: the next entry or so.
const TAKE_AHEAD_BYTES: usize = 256;

/// Takes the free lines the next entry will be copied into for writing, now. The reader
/// runs on the other core and has read them a lap ago; without this each store of the
/// next copy waited for that core to give its line up, and every later store, and every
/// load forwarded from one (the next entry is encoded in a scratch buffer, then copied),
/// waited behind it. Only whole lines of free slots (the reader is done with them), only
/// when the writer's cached view already shows that many free (asking for more would load
/// the reader's position, a line it keeps writing), and never committed: nothing is
/// written.
#[inline]
fn take_ahead(ring: &mut rtrb::Producer<u8>) {
    if ring.cached_slots() < TAKE_AHEAD_BYTES {
        return;
    }
    if let Ok(mut chunk) = ring.write_chunk_uninit(TAKE_AHEAD_BYTES) {
        let (free, _) = chunk.as_mut_slices();
        rim_ring::prefetch_whole_lines_for_write(free.as_ptr().cast::<u8>(), free.len());
    }
}

/// Pushes head and body (cold path: copies both into `scratch` first).
pub fn push_parts(ring: &mut rtrb::Producer<u8>, head: Head, body: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.clear();
    scratch.resize(HEAD_BYTES, 0);
    head.put(scratch);
    scratch.extend_from_slice(body);
    push(ring, scratch)
}

/// Why a ring's content could not be read (a bug in the writer; the ring is abandoned).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("entry of kind {kind} claims {len} body bytes (at most {BODY_BYTES_MAX}, {available} available)")]
pub struct EntryError {
    /// The kind read.
    pub kind: u8,
    /// The length read.
    pub len: u32,
    /// Bytes in the ring after the head.
    pub available: usize,
}

/// The head of the next whole entry, without taking it; `Ok(None)` when none is there.
pub fn peek(ring: &mut rtrb::Consumer<u8>) -> Result<Option<Head>, EntryError> {
    let Ok(chunk) = ring.read_chunk(HEAD_BYTES) else {
        return Ok(None);
    };
    let (a, b) = chunk.as_slices();
    // Almost always whole in the first slice: a fixed-size read, where two copies of
    // lengths known only at run time were two memcpy calls per entry.
    let raw: [u8; HEAD_BYTES] = match a.first_chunk::<HEAD_BYTES>() {
        Some(whole) => *whole,
        None => {
            let mut raw = [0u8; HEAD_BYTES];
            raw[..a.len()].copy_from_slice(a);
            raw[a.len()..].copy_from_slice(b);
            raw
        }
    };
    // Not committed: the head is taken with its body.
    let head = Head::get(&raw);
    // The writer pushes head and body in one commit, so a visible head has its body, and
    // the writer's position as last loaded (by `read_chunk` above) already covers it: no
    // load of the position the writer's core keeps writing, a cache miss per entry when
    // the check reloaded it. Only a body it does not cover looks again before refusing.
    let mut available = ring.cached_slots() - HEAD_BYTES;
    if head.len as usize > available {
        available = ring.slots() - HEAD_BYTES;
    }
    if head.len as usize > BODY_BYTES_MAX || head.len as usize > available {
        return Err(EntryError {
            kind: head.kind,
            len: head.len,
            available,
        });
    }
    Ok(Some(head))
}

/// A cursor that runs a few entries ahead of the reader of an entry ring, so that the
/// reader can prefetch what the entries ahead will touch while it works on the front one.
///
/// Each [`Lookahead::fill`] looks at entries until `depth` are ahead of the front (one, in
/// the steady state: the one the last take let in), handing each event's node and metric
/// count to its caller, and prefetches the ring's own bytes a little past them. Every
/// entry taken from the front must be told with [`Lookahead::taken`]. Only entries whole
/// in the ring's first contiguous slice are looked at: at the ring's end the cursor waits
/// until the front passes it, and a malformed head just stops it (the take reports it).
///
/// Why one entry at a time, not a group of entries every so often: a group's lines, all
/// named at once, overran the core's outstanding-miss slots (the journal thread then
/// waited on its own prefetch instructions), and each head's place comes from the length
/// in the one before, so unfetched heads were a chain of misses on lines the writer's
/// core holds, taken one after the other.
#[derive(Debug, Default)]
pub struct Lookahead {
    /// Bytes from the ring's front to the first entry not yet looked at.
    off: usize,
    /// Entries between the front and `off`.
    count: usize,
    /// Bytes from the front whose lines were prefetched.
    fetched: usize,
}

impl Lookahead {
    /// A cursor at the ring's front.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at entries until `depth` are ahead of the front, handing the node index and
    /// metric count of each event among them to `f`, then prefetches the ring's lines up to
    /// `ring_ahead` bytes past the last one looked at.
    pub fn fill(
        &mut self,
        ring: &mut rtrb::Consumer<u8>,
        depth: usize,
        ring_ahead: usize,
        mut f: impl FnMut(u32, usize),
    ) {
        if self.count >= depth {
            return;
        }
        // The writer's position as last loaded, reloaded only when it covers no further
        // entry: a reload is a cache miss on a line the writer keeps.
        let mut visible = ring.cached_slots();
        if visible < self.off + HEAD_BYTES + EXTRAS_BYTES {
            visible = ring.slots();
        }
        let Ok(chunk) = ring.read_chunk(visible) else {
            return;
        };
        let (first, _) = chunk.as_slices();
        while self.count < depth {
            let Some(raw) = first.get(self.off..).and_then(|r| r.first_chunk::<HEAD_BYTES>()) else {
                break;
            };
            let head = Head::get(raw);
            let end = self.off + HEAD_BYTES + head.len as usize;
            let Some(body) = first.get(self.off + HEAD_BYTES..end) else {
                break;
            };
            if head.kind == KIND_EVENT {
                if let Some(node) = body.first_chunk::<4>() {
                    f(u32::from_le_bytes(*node), usize::from(head.keys));
                }
            }
            self.off = end;
            self.count += 1;
        }
        let want = self.off.saturating_add(ring_ahead).min(first.len());
        let mut at = self.fetched.max(self.off);
        while at < want {
            rim_ring::prefetch_line(first[at..].as_ptr());
            at += 64;
        }
        self.fetched = at;
        // Not committed: nothing is taken.
    }

    /// The front took an entry of `bytes` (its head included).
    pub fn taken(&mut self, bytes: usize) {
        if self.count > 0 {
            self.count -= 1;
            self.off = self.off.saturating_sub(bytes);
        } else {
            // The cursor was at the front (waiting at the ring's end, or stopped).
            self.off = 0;
        }
        self.fetched = self.fetched.saturating_sub(bytes);
    }
}

/// Takes the next whole entry and hands its head and body to `f`: straight from the ring
/// when the body is contiguous there, else through `scratch` (an entry straddling the
/// ring's end). `Ok(None)` when none is there.
pub fn take<R>(
    ring: &mut rtrb::Consumer<u8>,
    scratch: &mut Vec<u8>,
    f: impl FnOnce(Head, &[u8]) -> R,
) -> Result<Option<R>, EntryError> {
    let Some(head) = peek(ring)? else {
        return Ok(None);
    };
    let total = HEAD_BYTES + head.len as usize;
    let Ok(chunk) = ring.read_chunk(total) else {
        return Err(EntryError {
            kind: head.kind,
            len: head.len,
            available: ring.slots(),
        });
    };
    let (a, b) = chunk.as_slices();
    let out = if a.len() >= total {
        f(head, &a[HEAD_BYTES..total])
    } else {
        scratch.clear();
        if a.len() >= HEAD_BYTES {
            scratch.extend_from_slice(&a[HEAD_BYTES..]);
            scratch.extend_from_slice(b);
        } else {
            scratch.extend_from_slice(&b[HEAD_BYTES - a.len()..]);
        }
        f(head, scratch)
    };
    chunk.commit_all();
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_cross_the_wrap_whole() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(100);
        let mut scratch = Vec::new();
        let mut buf = Vec::new();
        for i in 0..50u64 {
            let body: Vec<u8> = (0..(i % 37) as u8).collect();
            let head = Head {
                len: body.len() as u32,
                kind: KIND_DECISION,
                keys: 0,
                partition: i as u16,
                aux: i * 7,
            };
            assert!(push_parts(&mut tx, head, &body, &mut scratch));
            let got = take(&mut rx, &mut buf, |h, b| (h, b.to_vec())).expect("valid");
            assert_eq!(got, Some((head, body)));
            assert_eq!(take(&mut rx, &mut buf, |_, _| ()), Ok(None));
        }
    }

    #[test]
    fn a_full_ring_takes_nothing() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(40);
        let mut scratch = Vec::new();
        let head = Head {
            len: 20,
            kind: KIND_DECISION,
            keys: 0,
            partition: 0,
            aux: 1,
        };
        assert!(push_parts(&mut tx, head, &[1; 20], &mut scratch));
        assert!(!push_parts(&mut tx, head, &[2; 20], &mut scratch));
        let got = take(&mut rx, &mut scratch, |h, b| (h, b.to_vec())).expect("valid");
        assert_eq!(got, Some((head, vec![1; 20])));
        assert_eq!(take(&mut rx, &mut scratch, |_, _| ()), Ok(None));
    }

    #[test]
    fn an_event_entry_carries_its_extras() {
        let mut out = vec![0u8; 256];
        let x = Extras {
            node: 41,
            status: 0xABCD,
            id_hash: 0x1D,
            keys: &[11, 22, 33],
        };
        let at = put_event_head(&mut out, 7, 99, &x, 5);
        out[at..at + 5].copy_from_slice(b"hello");
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(1024);
        assert!(push(&mut tx, &out[..at + 5]));
        let mut scratch = Vec::new();
        let got = take(&mut rx, &mut scratch, |h, b| {
            let e = event_body(&h, b).expect("an event body");
            (
                h.partition,
                h.aux,
                e.node,
                e.status,
                e.id_hash,
                e.key(2),
                e.key(3),
                e.record.to_vec(),
            )
        })
        .expect("valid");
        assert_eq!(got, Some((7, 99, 41, 0xABCD, 0x1D, Some(33), None, b"hello".to_vec())));
    }

    /// An event entry of `node` with a 5-byte record, as ingest writes it.
    fn event_entry(node: u32) -> Vec<u8> {
        event_entry_keys(node, 1)
    }

    /// An event entry of `node` with `keys` metric keys (and so a size of its own).
    fn event_entry_keys(node: u32, keys: usize) -> Vec<u8> {
        let mut out = vec![0u8; 128 + keys * 8];
        let keys = vec![7u64; keys];
        let x = Extras {
            node,
            status: 1,
            id_hash: 0,
            keys: &keys,
        };
        let at = put_event_head(&mut out, 0, 0, &x, 5);
        out.truncate(at + 5);
        out
    }

    #[test]
    fn lookahead_names_the_events_ahead_once_each_and_takes_nothing() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(4096);
        let mut scratch = Vec::new();
        for node in [3, 9] {
            assert!(push(&mut tx, &event_entry(node)));
        }
        let marker = Head {
            len: 0,
            kind: KIND_MARKER,
            keys: 0,
            partition: 0,
            aux: 5,
        };
        assert!(push_parts(&mut tx, marker, &[], &mut scratch));
        for node in [4, 1] {
            assert!(push(&mut tx, &event_entry(node)));
        }
        let before = rx.slots();
        let mut ahead = Lookahead::new();
        let mut seen = Vec::new();
        ahead.fill(&mut rx, 2, 4096, |n, keys| seen.push((n, keys)));
        assert_eq!(
            seen,
            [(3, 1), (9, 1)],
            "at most `depth` entries ahead, with their metric counts"
        );
        assert_eq!(rx.slots(), before, "nothing taken");
        ahead.fill(&mut rx, 2, 4096, |n, _| seen.push((n, 0)));
        assert_eq!(seen.len(), 2, "already `depth` ahead: nothing new");
        let mut seen: Vec<u32> = Vec::new();
        let mut take_one = |rx: &mut rtrb::Consumer<u8>, ahead: &mut Lookahead| {
            let got = take(rx, &mut scratch, |h, b| {
                (HEAD_BYTES + b.len(), event_body(&h, b).map(|e| e.node))
            });
            let (bytes, node) = got.expect("valid").expect("an entry");
            ahead.taken(bytes);
            node
        };
        assert_eq!(take_one(&mut rx, &mut ahead), Some(3));
        ahead.fill(&mut rx, 2, 4096, |n, _| seen.push(n));
        assert_eq!(seen, [] as [u32; 0], "the marker let in: no event named");
        assert_eq!(take_one(&mut rx, &mut ahead), Some(9));
        ahead.fill(&mut rx, 2, 4096, |n, _| seen.push(n));
        assert_eq!(seen, [4], "one entry let in, one named");
        for want in [None, Some(4), Some(1)] {
            assert_eq!(take_one(&mut rx, &mut ahead), want);
            ahead.fill(&mut rx, 2, 4096, |n, _| seen.push(n));
        }
        assert_eq!(seen, [4, 1], "each event named once");
        assert_eq!(rx.slots(), 0);
    }

    #[test]
    fn lookahead_keeps_up_with_a_reader_across_many_wraps() {
        // Entries of three sizes through a ring a few entries long, written and taken in
        // uneven steps: every event is named once, in order, and never after it was taken.
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(event_entry(0).len() * 5 + 37);
        let mut scratch = Vec::new();
        let mut ahead = Lookahead::new();
        let (mut next_in, mut named, mut taken) = (0u32, Vec::new(), Vec::new());
        for step in 0..5_000u32 {
            for _ in 0..step % 4 {
                if !push(&mut tx, &event_entry_keys(next_in, (next_in % 3) as usize)) {
                    break;
                }
                next_in += 1;
            }
            let last_taken = taken.last().copied();
            ahead.fill(&mut rx, 3, 256, |n, keys| {
                assert!(
                    last_taken.is_none_or(|t| n > t),
                    "{n} named after {last_taken:?} was taken"
                );
                named.push((n, keys));
            });
            for _ in 0..(step + 1) % 3 {
                let got = take(&mut rx, &mut scratch, |h, b| {
                    (HEAD_BYTES + b.len(), event_body(&h, b).map(|e| e.node))
                });
                match got.expect("valid") {
                    Some((bytes, node)) => {
                        ahead.taken(bytes);
                        taken.push(node.expect("an event"));
                    }
                    None => break,
                }
            }
        }
        assert!(taken.len() > 1000, "{} taken", taken.len());
        let named_nodes: Vec<u32> = named.iter().map(|&(n, _)| n).collect();
        assert!(named_nodes.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
        assert!(named.iter().all(|&(n, keys)| keys == (n % 3) as usize), "metric counts");
        // Only entries across the ring's end are not named (the take meets them first).
        assert!(
            named.len() * 10 >= taken.len() * 6,
            "{} named of {}",
            named.len(),
            taken.len()
        );
    }

    #[test]
    fn lookahead_stops_at_the_wrap_and_at_garbage_without_panicking() {
        // A ring of two and a half entries: after one is taken, the third straddles the end.
        let len = event_entry(1).len();
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(len * 2 + len / 2);
        let mut scratch = Vec::new();
        let mut ahead = Lookahead::new();
        assert!(push(&mut tx, &event_entry(1)));
        let _ = take(&mut rx, &mut scratch, |_, _| ());
        assert!(push(&mut tx, &event_entry(2)) && push(&mut tx, &event_entry(3)));
        let mut seen = Vec::new();
        ahead.fill(&mut rx, 16, 1 << 20, |n, _| seen.push(n));
        assert_eq!(seen, [2], "the entry across the end is left for `take`");
        let nodes: Vec<_> = (0..2)
            .map(|_| take(&mut rx, &mut scratch, |h, b| event_body(&h, b).map(|e| e.node)))
            .collect();
        assert_eq!(nodes, [Ok(Some(Some(2))), Ok(Some(Some(3)))]);

        // A head that claims more than the ring holds, and a short event body.
        for bytes in [vec![0xFFu8; HEAD_BYTES + 3], {
            let mut raw = [0u8; HEAD_BYTES];
            Head {
                len: 2,
                kind: KIND_EVENT,
                keys: 0,
                partition: 0,
                aux: 0,
            }
            .put(&mut raw);
            [raw.as_slice(), &[1, 2]].concat()
        }] {
            let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(256);
            assert!(push(&mut tx, &bytes));
            let mut ahead = Lookahead::new();
            let mut seen = Vec::new();
            ahead.fill(&mut rx, 16, 4096, |n, _| seen.push(n));
            assert!(seen.is_empty(), "{seen:?}");
        }
    }

    #[test]
    fn a_lying_length_is_an_error_not_a_panic() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(64);
        let mut raw = [0u8; HEAD_BYTES];
        Head {
            len: 40,
            kind: KIND_EVENT,
            keys: 0,
            partition: 0,
            aux: 0,
        }
        .put(&mut raw);
        assert!(push(&mut tx, &raw));
        let mut scratch = Vec::new();
        assert!(take(&mut rx, &mut scratch, |_, _| ()).is_err());
        // An event body shorter than its keys say.
        let h = Head {
            len: 8,
            kind: KIND_EVENT,
            keys: 4,
            partition: 0,
            aux: 0,
        };
        assert!(event_body(&h, &[0u8; 8]).is_none());
    }
}
