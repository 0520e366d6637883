//! The producer's symbol lookup: (kind, text) → symbol, one cache line per probe.
//!
//! A producer that publishes with strings ([`crate::wire::Encoder::encode_ref`], the C
//! ABI, the daemon's HTTP and Kafka intake) looks up its node id per event, and node ids
//! differ from one event to the next. A general hash map of boxed strings costs three
//! dependent cache misses per lookup once the table outgrows the cache: its control
//! bytes, its bucket, then the key's heap text for the final compare. Here the short
//! texts (all but the rare longest) live inline in a 64-byte slot beside their hash and
//! symbol, so a lookup touches the slot it lands on and, with linear probing at most 3/4
//! full, ~2.5 adjacent lines on average for a symbol that is there (~8.5 for one that is
//! not, which is once per new symbol); it compares words without a call, and can be
//! prefetched a few events ahead ([`SymTable::prefetch`]). Longer texts go to an ordinary
//! map.
//!
//! Indexed by the high bits of an FxHash (the producer's own strings are the keys: speed
//! matters, flooding does not). Nothing is ever removed: a producer's symbols live as long
//! as its ring. Memory: 64 bytes a slot, doubled when 3/4 full (10,000 node ids: 1 MiB;
//! the most a ring allows, [`crate::wire::SYMBOLS_MAX`]: 32 MiB). A doubling places every
//! symbol again inside the `intern` that defines a new one, as a hash map's growth does.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::wire::{FxHasher, Sym, SymbolKind};

/// Texts up to this many bytes live in their slot.
const INLINE: usize = 50;
/// Slots of a new table.
const SLOTS_MIN: usize = 64;

/// One slot: empty while `sym` is 0 (symbols are numbered from 1).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    hash: u64,
    sym: u32,
    kind: u8,
    len: u8,
    text: [u8; INLINE],
}

const EMPTY: Slot = Slot {
    hash: 0,
    sym: 0,
    kind: 0,
    len: 0,
    text: [0; INLINE],
};

/// Symbols by (kind, text).
pub(crate) struct SymTable {
    slots: Vec<Slot>,
    /// `64 - log2(slots.len())`: the index is the hash's top bits.
    shift: u32,
    /// Symbols in `slots`.
    inline: usize,
    /// Symbols whose text is longer than [`INLINE`], by kind.
    long: [HashMap<Box<str>, Sym, BuildHasherDefault<FxHasher>>; 4],
}

impl Default for SymTable {
    fn default() -> Self {
        Self {
            slots: vec![EMPTY; SLOTS_MIN],
            shift: 64 - SLOTS_MIN.trailing_zeros(),
            inline: 0,
            long: Default::default(),
        }
    }
}

impl SymTable {
    /// The symbol of `text` as a `kind`, if defined.
    #[inline]
    pub(crate) fn get(&self, kind: SymbolKind, text: &str) -> Option<Sym> {
        if text.len() > INLINE {
            return self.long[kind.index()].get(text).copied();
        }
        let hash = hash(kind, text);
        let mut i = self.index(hash);
        loop {
            let slot = self.slots.get(i)?;
            if slot.sym == 0 {
                return None;
            }
            if slot.hash == hash && slot.kind == kind as u8 && holds(slot, text.as_bytes()) {
                return Some(Sym::from_raw(slot.sym));
            }
            i = (i + 1) & (self.slots.len() - 1);
        }
    }

    /// Asks the CPU to load the slot where a lookup of `text` starts (a hint: nothing
    /// is read, and a long text, which lives elsewhere, is ignored).
    #[inline]
    pub(crate) fn prefetch(&self, kind: SymbolKind, text: &str) {
        if text.len() > INLINE {
            return;
        }
        if let Some(slot) = self.slots.get(self.index(hash(kind, text))) {
            crate::segment::prefetch_line(std::ptr::from_ref(slot).cast::<u8>());
        }
    }

    /// Records `text` as a `kind` with symbol `sym` (not already there: the caller looked
    /// it up first). Grows the table past 3/4 full.
    pub(crate) fn insert(&mut self, kind: SymbolKind, text: &str, sym: Sym) {
        if text.len() > INLINE {
            self.long[kind.index()].insert(text.into(), sym);
            return;
        }
        if (self.inline + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mut slot = Slot {
            hash: hash(kind, text),
            sym: sym.get(),
            kind: kind as u8,
            // At most INLINE (checked above), so it fits a u8.
            len: text.len() as u8,
            text: [0; INLINE],
        };
        if let Some(t) = slot.text.get_mut(..text.len()) {
            t.copy_from_slice(text.as_bytes());
        }
        self.place(slot);
        self.inline += 1;
    }

    fn index(&self, hash: u64) -> usize {
        // `shift` ≥ 64 - usize::BITS never truncates: the table is smaller than memory.
        (hash >> self.shift) as usize
    }

    /// Puts `slot` in the first empty slot from its index.
    fn place(&mut self, slot: Slot) {
        let mask = self.slots.len() - 1;
        let mut i = self.index(slot.hash);
        while let Some(s) = self.slots.get_mut(i) {
            if s.sym == 0 {
                *s = slot;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the slots and places every symbol again.
    fn grow(&mut self) {
        let doubled = vec![EMPTY; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        self.shift -= 1;
        for s in old.into_iter().filter(|s| s.sym != 0) {
            self.place(s);
        }
    }
}

fn hash(kind: SymbolKind, text: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write_u8(kind as u8);
    h.write(text.as_bytes());
    h.finish()
}

/// Whether `slot` holds exactly `text` (whose length is at most [`INLINE`]): compared a
/// word at a time, without a call.
#[inline]
fn holds(slot: &Slot, text: &[u8]) -> bool {
    slot.text
        .get(..usize::from(slot.len))
        .is_some_and(|mine| same_bytes(mine, text))
}

/// Whether `a` and `b` hold the same bytes, compared a word at a time without a call (a
/// `==` on slices calls `memcmp`, a call per comparison of strings that are mostly a few
/// words long: symbol texts here, JSON keys and metric names in the daemon's intake).
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_tail) = a.as_chunks::<8>();
    let (b_words, b_tail) = b.as_chunks::<8>();
    let words = a_words
        .iter()
        .zip(b_words)
        .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y));
    words && a_tail.iter().zip(b_tail).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_symbol_comes_back_by_kind_and_text_through_growth() {
        let mut t = SymTable::default();
        let long = "x".repeat(INLINE + 1);
        let texts: Vec<String> = (0..5_000)
            .map(|i| format!("rim:sensor:a:n{i}"))
            .chain([String::new(), "y".repeat(INLINE), long.clone(), format!("{long}z")])
            .collect();
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(t.get(SymbolKind::NodeId, text), None);
            t.insert(SymbolKind::NodeId, text, Sym::from_raw(i as u32 + 1));
        }
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(
                t.get(SymbolKind::NodeId, text),
                Some(Sym::from_raw(i as u32 + 1)),
                "{text}"
            );
            // The same text as another kind is another symbol.
            assert_eq!(t.get(SymbolKind::Status, text), None, "{text}");
            t.prefetch(SymbolKind::NodeId, text);
        }
        // Prefixes, extensions and one changed byte are not found.
        for probe in ["rim:sensor:a:n1x", "rim:sensor:a:n", "rim:sensor:a:m1", &long[1..], "y"] {
            assert_eq!(t.get(SymbolKind::NodeId, probe), None, "{probe}");
        }
        assert!(t.inline * 4 <= t.slots.len() * 3, "{} in {}", t.inline, t.slots.len());
        assert!(t.slots.len().is_power_of_two());
    }

    #[test]
    fn same_bytes_is_slice_equality_at_every_length_and_position() {
        let a: Vec<u8> = (0..40u8).collect();
        for len in 0..a.len() {
            let x = &a[..len];
            assert!(same_bytes(x, &a[..len]));
            assert!(!same_bytes(x, &a[..len + 1]));
            for at in 0..len {
                let mut y = x.to_vec();
                y[at] ^= 0x80;
                assert!(!same_bytes(x, &y), "len {len} at {at}");
            }
        }
    }

    #[test]
    fn texts_of_every_length_up_to_inline_and_past_it_are_told_apart() {
        let mut t = SymTable::default();
        let base: String = (0..=INLINE + 2).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        for len in 0..=INLINE + 2 {
            t.insert(SymbolKind::MetricName, &base[..len], Sym::from_raw(len as u32 + 1));
        }
        for len in 0..=INLINE + 2 {
            assert_eq!(
                t.get(SymbolKind::MetricName, &base[..len]),
                Some(Sym::from_raw(len as u32 + 1))
            );
            let mut changed = base[..len].to_owned().into_bytes();
            if let Some(last) = changed.last_mut() {
                *last = b'#';
                let changed = String::from_utf8(changed).expect("ascii");
                assert_eq!(t.get(SymbolKind::MetricName, &changed), None, "{changed}");
            }
        }
    }
}
