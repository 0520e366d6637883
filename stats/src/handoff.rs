//! The recycling hand-off of boxed values from one hot thread to one cold thread.
//!
//! Two rtrb SPSC rings: filled boxes travel cold-ward, emptied ones travel back. The hot
//! side only ever moves boxes it already owns between its `current` slot and the rings,
//! so it never allocates or frees; when no emptied box has come back yet it keeps
//! recording into the one it has (losing nothing) and tries again later. The cold side
//! merges and resets each filled box and returns it.
//!
//! Boxes in circulation: the spares given to [`handoff`] plus the hot side's `current`.
//! Each ring holds one more than the spares, so a box taken from one ring always has room
//! in the other and neither side ever has to drop one.

use rtrb::{Consumer, Producer, RingBuffer};

/// The hot thread's end: swaps its filled box for a spare.
#[derive(Debug)]
pub struct HotEnd<T> {
    filled: Producer<Box<T>>,
    spares: Consumer<Box<T>>,
}

/// The cold thread's end: takes filled boxes, empties them, sends them back.
#[derive(Debug)]
pub struct ColdEnd<T> {
    filled: Consumer<Box<T>>,
    spares: Producer<Box<T>>,
}

/// Builds a hand-off whose hot side starts with `spares` to swap in. All allocation
/// happens here (the rings and, already done by the caller, the boxes).
pub fn handoff<T: Send>(spares: Vec<Box<T>>) -> (HotEnd<T>, ColdEnd<T>) {
    let capacity = spares.len() + 1;
    let (filled_tx, filled_rx) = RingBuffer::new(capacity);
    let (mut spare_tx, spare_rx) = RingBuffer::new(capacity);
    for spare in spares {
        // `capacity` exceeds the number of spares, so every push fits.
        let pushed = spare_tx.push(spare);
        debug_assert!(pushed.is_ok(), "spare ring sized for all spares");
    }
    (
        HotEnd {
            filled: filled_tx,
            spares: spare_rx,
        },
        ColdEnd {
            filled: filled_rx,
            spares: spare_tx,
        },
    )
}

impl<T> HotEnd<T> {
    /// Sends `current` (filled) to the cold side and replaces it with a spare; returns
    /// false (and keeps `current`) when no spare has come back yet or the ring is full.
    /// Never allocates, frees or blocks.
    #[inline]
    pub fn swap(&mut self, current: &mut Box<T>) -> bool {
        // Check for room first: once a spare is popped it must go somewhere, and a push
        // that fails would hand the box back only to be dropped (a free on the hot path).
        // Only this thread pushes to `filled`, so room seen here stays there.
        if self.filled.is_full() {
            return false;
        }
        let Ok(mut spare) = self.spares.pop() else {
            return false;
        };
        std::mem::swap(current, &mut spare);
        match self.filled.push(spare) {
            Ok(()) => true,
            Err(rtrb::PushError::Full(filled)) => {
                // Unreachable: room was checked above and only this thread pushes. Should
                // it happen anyway, keep the filled box (nothing recorded is lost) and leak
                // the spare: the hot end cannot push to the spare ring (it consumes it),
                // and leaking one box beats freeing on the hot path or panicking.
                std::mem::forget(std::mem::replace(current, filled));
                false
            }
        }
    }

    /// How many emptied boxes are waiting to be swapped in.
    pub fn spares_ready(&self) -> usize {
        self.spares.slots()
    }
}

impl<T> ColdEnd<T> {
    /// Hands each filled box to `f` (which should merge and reset it), then returns it to
    /// the hot side. Returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(&mut T)) -> usize {
        let mut n = 0;
        while let Ok(mut boxed) = self.filled.pop() {
            f(&mut boxed);
            // The spare ring holds one more than the boxes that can be away from the hot
            // side at once, so this fits; if it ever did not, dropping here on the cold
            // side is harmless.
            let returned = self.spares.push(boxed);
            debug_assert!(returned.is_ok(), "spare ring sized for every box");
            n += 1;
        }
        n
    }

    /// How many filled boxes are waiting.
    pub fn pending(&self) -> usize {
        self.filled.slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_without_spares_keeps_current() {
        let (mut hot, mut cold) = handoff::<u32>(Vec::new());
        let mut cur = Box::new(7);
        assert!(!hot.swap(&mut cur));
        assert_eq!(*cur, 7);
        assert_eq!(cold.drain(|_| {}), 0);
    }

    #[test]
    fn boxes_circulate() {
        let (mut hot, mut cold) = handoff(vec![Box::new(0u32)]);
        let mut cur = Box::new(5);
        assert!(hot.swap(&mut cur));
        assert_eq!(*cur, 0);
        *cur = 9;
        assert!(!hot.swap(&mut cur), "the only spare is on the cold side");
        let mut seen = Vec::new();
        assert_eq!(
            cold.drain(|v| {
                seen.push(*v);
                *v = 0;
            }),
            1
        );
        assert_eq!(seen, [5]);
        assert_eq!(hot.spares_ready(), 1);
        assert!(hot.swap(&mut cur));
        assert_eq!(*cur, 0);
        assert_eq!(cold.pending(), 1);
    }
}
