//! The seqlock protocol of the stats segment, over any array of atomic 64-bit words: the
//! shared mapping in [`crate::segment`], and under `--cfg loom` a heap array of loom's
//! model-checked atomics (`tests/loom_seqlock.rs`), so the model checks this very code.
//!
//! Writer: `seq += 1` (odd), release fence, payload words and length, `seq += 1` (even,
//! release). Reader: load `seq`, acquire fence, odd → busy; load the length, bounds-check;
//! copy the payload words; acquire fence; re-load `seq`: unchanged → the copy is whole.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 64;
/// Byte offset of the sequence word.
pub const SEQ_OFF: usize = 16;
/// Byte offset of the payload length word.
pub const LEN_OFF: usize = 24;

/// A segment seen as 8-byte atomic words.
pub trait Words {
    /// The word at byte offset `off` (8-aligned, inside the segment).
    fn word(&self, off: usize) -> &AtomicU64;
    /// Payload bytes the segment holds, in whole words.
    fn payload_cap(&self) -> usize;
}

fn load<W: Words + ?Sized>(w: &W, off: usize) -> u64 {
    u64::from_le(w.word(off).load(Ordering::Relaxed))
}

fn store<W: Words + ?Sized>(w: &W, off: usize, v: u64) {
    w.word(off).store(v.to_le(), Ordering::Relaxed);
}

/// Writes `payload` (which fits: `len <= payload_cap`) under the seqlock; `seq` is the
/// current (even) sequence. Returns the new one.
pub fn write<W: Words + ?Sized>(w: &W, seq: u64, payload: &[u8]) -> u64 {
    let odd = seq.wrapping_add(1);
    store(w, SEQ_OFF, odd);
    // Orders the odd sequence before the payload stores: a reader that sees any new
    // payload word (and then fences) also sees the sequence moved.
    fence(Ordering::Release);
    for (i, chunk) in payload.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w.word(HEADER_BYTES + i * 8)
            .store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
    store(w, LEN_OFF, payload.len() as u64);
    let even = odd.wrapping_add(1);
    // Release: a reader that sees the even sequence sees the whole payload.
    w.word(SEQ_OFF).store(even.to_le(), Ordering::Release);
    even
}

/// What one read attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The writer was busy (or moved on during the copy): try again.
    Busy,
    /// Nothing was ever published.
    Empty,
    /// A whole payload.
    Payload(Vec<u8>),
    /// A stable header whose length does not fit the segment.
    OutOfBounds {
        /// The stored length.
        len: u64,
        /// The payload capacity.
        cap: usize,
    },
}

/// One seqlock read attempt; the payload is copied out before anyone looks at it.
pub fn try_read<W: Words + ?Sized>(w: &W) -> Attempt {
    let seq = load(w, SEQ_OFF);
    // Pairs with the writer's release store of the even sequence.
    fence(Ordering::Acquire);
    if seq % 2 == 1 {
        return Attempt::Busy;
    }
    if seq == 0 {
        return Attempt::Empty;
    }
    let len = load(w, LEN_OFF);
    let cap = w.payload_cap();
    let Some(n) = usize::try_from(len).ok().filter(|&l| l <= cap) else {
        // Only an error if the header was stable while we read it; otherwise it is a
        // writer mid-update and worth another try.
        return if unchanged_since(w, seq) {
            Attempt::OutOfBounds { len, cap }
        } else {
            Attempt::Busy
        };
    };
    let mut out = Vec::with_capacity(n.div_ceil(8) * 8);
    for i in 0..n.div_ceil(8) {
        out.extend_from_slice(&w.word(HEADER_BYTES + i * 8).load(Ordering::Relaxed).to_ne_bytes());
    }
    out.truncate(n);
    if unchanged_since(w, seq) {
        Attempt::Payload(out)
    } else {
        Attempt::Busy
    }
}

/// Whether the sequence is still `seq` after everything read so far.
fn unchanged_since<W: Words + ?Sized>(w: &W, seq: u64) -> bool {
    // Orders the payload loads before the re-load: if any of them saw a newer write,
    // this load sees the writer's odd (or later) sequence.
    fence(Ordering::Acquire);
    load(w, SEQ_OFF) == seq
}
