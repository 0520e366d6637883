//! Entries on the in-process byte rings into the journal thread: ingest's events and
//! durability markers, the reflex shards' decisions and predictions.
//!
//! An entry is a 16-byte head and a payload, pushed whole with one copy
//! (`push_entire_slice`) and popped whole, so the journal thread never sees half an entry:
//! ```text
//!  0  payload length u32   4  kind u8   5  reserved u8   6  partition u16   8  aux u64
//! 16  payload
//! ```
//! `aux` is the event's arrival time (ms) for events, the marker's sequence for markers,
//! the shard for decisions.

/// Bytes of an entry's head.
pub const HEAD_BYTES: usize = 16;
/// An event, encoded by [`rim_journal::event::encode`].
pub const KIND_EVENT: u8 = 1;
/// A durability marker: every entry before it covers the producer positions ingest
/// recorded under its sequence.
pub const KIND_MARKER: u8 = 2;
/// A decision record (the broadcast ring's bytes), for the audit log.
pub const KIND_DECISION: u8 = 3;
/// A prediction (see [`crate::persist::predict`]).
pub const KIND_PREDICTION: u8 = 4;
/// Largest payload accepted from a ring (a bound, not a format limit).
pub const PAYLOAD_BYTES_MAX: usize = 64 << 10;

/// An entry's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload bytes.
    pub len: u32,
    /// What the payload is.
    pub kind: u8,
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
        out[5] = 0;
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
            partition: word(6..8) as u16,
            aux: word(8..16),
        }
    }
}

/// Pushes a whole entry (`bytes` = head and payload); false, writing nothing, when the
/// ring lacks room.
pub fn push(ring: &mut rtrb::Producer<u8>, bytes: &[u8]) -> bool {
    ring.push_entire_slice(bytes).is_ok()
}

/// Pushes head and payload (cold path: copies both into `scratch` first).
pub fn push_parts(ring: &mut rtrb::Producer<u8>, head: Head, payload: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.clear();
    scratch.resize(HEAD_BYTES, 0);
    head.put(scratch);
    scratch.extend_from_slice(payload);
    push(ring, scratch)
}

/// Why a ring's content could not be read (a bug in the writer; the ring is abandoned).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("entry of kind {kind} claims {len} payload bytes (at most {PAYLOAD_BYTES_MAX}, {available} available)")]
pub struct EntryError {
    /// The kind read.
    pub kind: u8,
    /// The length read.
    pub len: u32,
    /// Bytes in the ring after the head.
    pub available: usize,
}

/// Pops the next whole entry into `payload`; `Ok(None)` when none is complete.
pub fn pop(ring: &mut rtrb::Consumer<u8>, payload: &mut Vec<u8>) -> Result<Option<Head>, EntryError> {
    let mut raw = [0u8; HEAD_BYTES];
    {
        let Ok(chunk) = ring.read_chunk(HEAD_BYTES) else {
            return Ok(None);
        };
        let (a, b) = chunk.as_slices();
        raw[..a.len()].copy_from_slice(a);
        raw[a.len()..].copy_from_slice(b);
        // Not committed: the head is consumed with its payload below.
    }
    let head = Head::get(&raw);
    let available = ring.slots() - HEAD_BYTES;
    if head.len as usize > PAYLOAD_BYTES_MAX {
        return Err(EntryError {
            kind: head.kind,
            len: head.len,
            available,
        });
    }
    // The writer pushes head and payload in one commit, so a visible head has its payload.
    let Ok(chunk) = ring.read_chunk(HEAD_BYTES + head.len as usize) else {
        return Err(EntryError {
            kind: head.kind,
            len: head.len,
            available,
        });
    };
    payload.clear();
    let (a, b) = chunk.as_slices();
    // Skip the head, which may straddle the wrap.
    if a.len() >= HEAD_BYTES {
        payload.extend_from_slice(&a[HEAD_BYTES..]);
        payload.extend_from_slice(b);
    } else {
        payload.extend_from_slice(&b[HEAD_BYTES - a.len()..]);
    }
    chunk.commit_all();
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_cross_the_wrap_whole() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(100);
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        for i in 0..50u64 {
            let payload: Vec<u8> = (0..(i % 37) as u8).collect();
            let head = Head {
                len: payload.len() as u32,
                kind: KIND_EVENT,
                partition: i as u16,
                aux: i * 7,
            };
            assert!(push_parts(&mut tx, head, &payload, &mut scratch));
            let got = pop(&mut rx, &mut out).expect("valid").expect("an entry");
            assert_eq!(got, head);
            assert_eq!(out, payload);
            assert_eq!(pop(&mut rx, &mut out), Ok(None));
        }
    }

    #[test]
    fn a_full_ring_takes_nothing() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(40);
        let mut scratch = Vec::new();
        let head = Head {
            len: 20,
            kind: KIND_DECISION,
            partition: 0,
            aux: 1,
        };
        assert!(push_parts(&mut tx, head, &[1; 20], &mut scratch));
        assert!(!push_parts(&mut tx, head, &[2; 20], &mut scratch));
        let mut out = Vec::new();
        assert_eq!(pop(&mut rx, &mut out), Ok(Some(head)));
        assert_eq!(out, vec![1; 20]);
        assert_eq!(pop(&mut rx, &mut out), Ok(None));
    }
}
