//! The node table of ingest: RimNodeId text → dense index, and each node's partition.
//!
//! Sized once from `reflex.nodes_max`: an open-addressing index (twice the node limit, so
//! probes stay short) and the id texts in one arena. Each index slot holds its id's text
//! too when it fits (most RimNodeIds do), so a lookup by text reads one cache line instead
//! of three (slot, span, arena), and [`NodeTable::touch`] can warm that one line ahead of
//! the lookup (recovery looks up every replayed event's node by its text; with 10k nodes
//! those misses were a quarter of its feeding thread). A node past the limit is refused and
//! counted by the caller; nothing here allocates after start-up except the arena growing
//! past its initial reservation for unusually long ids.

/// "No node": the index refused or not yet known.
pub const NO_NODE: u32 = u32::MAX;

/// Kafka's murmur2 (the Java client's default partitioner), so that a node's partition
/// here is the partition the platform's producers key it to on `rim.fast-path`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Kafka's partition for a key: `toPositive(murmur2(key)) % partitions`.
pub fn partition_of(node_id: &str, partitions: u32) -> u32 {
    (murmur2(node_id.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// The reflex shard that owns `partition` among `shards`: ingest routes by it, and each
/// shard checks every node it is given against it.
pub fn shard_of_partition(partition: u32, shards: usize) -> usize {
    partition as usize % shards.max(1)
}

/// Bytes of an id kept in its index slot.
const INLINE: usize = 27;
/// `Slot::len` of an id longer than [`INLINE`] (its first bytes are in the slot, the whole
/// text in the arena).
const LONG: u8 = u8::MAX;

/// One index slot: a node and its id (whole up to [`INLINE`] bytes, else a prefix).
/// 32 bytes and aligned to them: two to a cache line, never across two.
#[derive(Clone, Copy)]
#[repr(align(32))]
struct Slot {
    /// Node index + 1; 0 is an empty slot.
    node: u32,
    /// The id's length, or [`LONG`].
    len: u8,
    text: [u8; INLINE],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Slot {
    const EMPTY: Slot = Slot {
        node: 0,
        len: 0,
        text: [0; INLINE],
    };

    fn new(node: u32, id: &[u8]) -> Self {
        let mut text = [0; INLINE];
        let kept = id.len().min(INLINE);
        text[..kept].copy_from_slice(&id[..kept]);
        let len = if id.len() <= INLINE { id.len() as u8 } else { LONG };
        Slot {
            node: node + 1,
            len,
            text,
        }
    }

    /// Whether this slot may hold `id`: certainly when it fits inline, else if the prefix
    /// agrees (the caller compares the whole text).
    fn matches(&self, id: &[u8]) -> Option<bool> {
        if id.len() <= INLINE {
            // Compared eight bytes at a time inside the slot. A slice compare called libc's
            // memcmp, whose 32-byte vector read from `text` (5 bytes into a 32-byte slot)
            // runs past the slot, and for the second slot of a cache line onto the next
            // line, which nothing prefetched: a miss every other lookup, 11-17% of recovery's
            // feeding thread (perf: 95% of memcmp's samples on that read). A zero-padded
            // copy of `id` compared as arrays stalled instead on the copy's stores.
            Some(usize::from(self.len) == id.len() && same_prefix(&self.text, id))
        } else if self.len == LONG && same_prefix(&self.text, &id[..INLINE]) {
            None
        } else {
            Some(false)
        }
    }
}

/// Whether `text` starts with `id` (`id.len()` ≤ [`INLINE`]), reading nothing past `text`:
/// whole words, then the last word overlapping the ones before it.
fn same_prefix(text: &[u8; INLINE], id: &[u8]) -> bool {
    debug_assert!(id.len() <= INLINE, "a prefix longer than the slot's text");
    let word = |b: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b.get(at..at + 8).unwrap_or(&[0; 8]));
        u64::from_ne_bytes(w)
    };
    let n = id.len();
    if n < 8 {
        return text.iter().zip(id).all(|(a, b)| a == b);
    }
    let mut at = 0;
    while at + 8 <= n {
        if word(text, at) != word(id, at) {
            return false;
        }
        at += 8;
    }
    at == n || word(text, n - 8) == word(id, n - 8)
}

/// RimNodeId → dense index, with each node's partition.
pub struct NodeTable {
    slots: crate::memory::HugeTable<Slot>,
    mask: usize,
    spans: Vec<(u32, u32)>,
    partitions: Vec<u32>,
    arena: String,
    limit: usize,
    partition_count: u32,
}

impl NodeTable {
    /// A table for `limit` nodes over `partitions` partitions.
    pub fn new(limit: usize, partitions: u32) -> Self {
        let cap = (limit * 2).next_power_of_two().max(16);
        Self {
            slots: crate::memory::filled(Slot::EMPTY, cap),
            mask: cap - 1,
            spans: Vec::with_capacity(limit),
            partitions: Vec::with_capacity(limit),
            arena: String::with_capacity(limit.saturating_mul(48)),
            limit,
            partition_count: partitions,
        }
    }

    fn hash(id: &str) -> usize {
        // FNV-1a (the rules' name hash): short keys, no DoS concern (ids come from local
        // producers that already hold a ring), and one pass.
        rim_rules::name_hash(id) as usize
    }

    /// The index of `id`, adding it if new. `None` when the table is full.
    pub fn intern(&mut self, id: &str) -> Option<(u32, bool)> {
        let mut i = Self::hash(id) & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.node == 0 {
                break;
            }
            let n = slot.node - 1;
            match slot.matches(id.as_bytes()) {
                Some(true) => return Some((n, false)),
                None if self.name(n) == id => return Some((n, false)),
                _ => {}
            }
            i = (i + 1) & self.mask;
        }
        if self.spans.len() >= self.limit {
            return None;
        }
        let n = self.spans.len() as u32;
        let start = self.arena.len() as u32;
        self.arena.push_str(id);
        self.spans.push((start, id.len() as u32));
        self.partitions.push(partition_of(id, self.partition_count));
        self.slots[i] = Slot::new(n, id.as_bytes());
        Some((n, true))
    }

    /// Warms the first slot each of `ids` hashes to, so that a later [`NodeTable::intern`]
    /// of it finds the line in cache, and tells the node each slot holds: `out[i]` is
    /// `ids[i]`'s node unless another id took the slot first (good enough to prefetch by,
    /// never to act on). Every slot is prefetched before any is read: a plain load held the
    /// core's reorder window until its line arrived, and with an id's hashing between two
    /// loads only one or two misses were in flight at once (12% of recovery's feeding
    /// thread waited on them).
    pub fn touch(&self, ids: &[&str], out: &mut [Option<u32>]) {
        const CHUNK: usize = 64;
        for (ids, out) in ids.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            let mut at = [0usize; CHUNK];
            for (a, id) in at.iter_mut().zip(ids) {
                *a = Self::hash(id) & self.mask;
                if let Some(slot) = self.slots.get(*a) {
                    rim_ring::prefetch_line(std::ptr::from_ref(slot).cast());
                }
            }
            for (o, &a) in out.iter_mut().zip(&at[..ids.len()]) {
                *o = self.slots.get(a).and_then(|s| s.node.checked_sub(1));
            }
        }
    }

    /// The id text of node `n` ("" when unknown).
    pub fn name(&self, n: u32) -> &str {
        self.spans
            .get(n as usize)
            .and_then(|&(s, l)| self.arena.get(s as usize..(s + l) as usize))
            .unwrap_or("")
    }

    /// The partition of node `n`.
    pub fn partition(&self, n: u32) -> u32 {
        self.partitions.get(n as usize).copied().unwrap_or(0)
    }

    /// Nodes known.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No nodes yet.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_reference_values() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn same_prefix_agrees_with_a_slice_compare() {
        let text: [u8; INLINE] = *b"rim:sensor:abcdefghijklmnop";
        for n in 0..=INLINE {
            assert!(same_prefix(&text, &text[..n]), "{n} bytes of the text itself");
            for flip in 0..n {
                let mut id = text[..n].to_vec();
                id[flip] ^= 0x20;
                assert!(!same_prefix(&text, &id), "{n} bytes, byte {flip} differs");
            }
        }
    }

    #[test]
    fn interning_is_stable_and_bounded() {
        let mut t = NodeTable::new(100, 12);
        let ids: Vec<String> = (0..100).map(|i| format!("rim:sensor:ns:n{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.intern(id), Some((i as u32, true)));
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.intern(id), Some((i as u32, false)));
            assert_eq!(t.name(i as u32), id);
            assert!(t.partition(i as u32) < 12);
        }
        assert_eq!(t.intern("rim:sensor:ns:one-too-many"), None);
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn ids_around_the_inline_length_are_told_apart() {
        // Ids that fit their slot, ids one byte longer, and long ids sharing a prefix (the
        // slot holds only the prefix of those: the arena decides), in a small table so that
        // probes run through each other's slots.
        let base = "rim:sensor:abcdefghijklmnop";
        assert_eq!(base.len(), INLINE);
        let mut ids = vec![
            String::new(),
            "x".to_owned(),
            base[..INLINE - 1].to_owned(),
            base.to_owned(),
        ];
        for tail in ["0", "1", "00", "01", &"z".repeat(300)] {
            ids.push(format!("{base}{tail}"));
        }
        let mut t = NodeTable::new(ids.len(), 3);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.intern(id), Some((i as u32, true)), "{id:?}");
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.intern(id), Some((i as u32, false)), "{id:?}");
            assert_eq!(t.name(i as u32), id);
        }
        assert_eq!(t.intern(&format!("{base}2")), None, "a new id past the limit");
    }
}
