//! Dedup by `event_id`: the last `window` event ids of each node, as 64-bit hashes.
//!
//! Bounded by construction (`nodes_max × window` hashes, allocated zeroed up front so only
//! the pages of nodes that appear become resident). An event id seen again within its
//! node's window is a duplicate; older ids have left the window and pass, which is the
//! documented bound. Events without an `event_id` are never deduplicated.

/// Per-node windows of recent event-id hashes.
pub struct Dedup {
    window: usize,
    hashes: crate::memory::HugeTable<u64>,
    cursor: Vec<u16>,
}

impl Dedup {
    /// Windows of `window` ids for `nodes` nodes (`window` 0 turns dedup off).
    pub fn new(nodes: usize, window: usize) -> Self {
        Self {
            window,
            hashes: crate::memory::zeroed(nodes * window),
            cursor: vec![0; if window == 0 { 0 } else { nodes }],
        }
    }

    /// A non-zero 64-bit hash of an event id.
    pub fn hash(id: &str) -> u64 {
        Self::hash_bytes(id.as_bytes())
    }

    /// [`Dedup::hash`] of an id's bytes (a journal record's, read without decoding it).
    pub fn hash_bytes(id: &[u8]) -> u64 {
        rim_rules::name_hash_bytes(id) | 1
    }

    /// True if `id` was seen in `node`'s window; otherwise remembers it and returns false.
    pub fn seen(&mut self, node: u32, id: &str) -> bool {
        self.seen_hash(node, Self::hash(id))
    }

    /// [`Dedup::seen`] of an id's [`Dedup::hash`].
    pub fn seen_hash(&mut self, node: u32, h: u64) -> bool {
        let Some(win) = self.window_of(node) else {
            return false;
        };
        if win.contains(&h) {
            return true;
        }
        self.remember(node, h);
        false
    }

    /// Puts `hashes` (oldest first) into `node`'s window without checking them: the
    /// window as a checkpoint kept it, before the journal's tail is replayed.
    pub fn restore(&mut self, node: u32, hashes: impl Iterator<Item = u64>) {
        for h in hashes {
            self.remember(node, h);
        }
    }

    fn window_of(&mut self, node: u32) -> Option<&mut [u64]> {
        let base = node as usize * self.window;
        if self.window == 0 {
            return None;
        }
        self.hashes.get_mut(base..base + self.window)
    }

    fn remember(&mut self, node: u32, h: u64) {
        let window = self.window;
        let Some(c) = self.cursor.get(node as usize).copied() else {
            return;
        };
        let Some(win) = self.window_of(node) else {
            return;
        };
        win[c as usize] = h;
        self.cursor[node as usize] = ((c as usize + 1) % window) as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inside_the_window_are_caught_and_old_ones_pass() {
        let mut d = Dedup::new(4, 3);
        assert!(!d.seen(0, "a"));
        assert!(!d.seen(0, "b"));
        assert!(d.seen(0, "a"));
        assert!(!d.seen(1, "a"), "windows are per node");
        assert!(!d.seen(0, "c"));
        assert!(!d.seen(0, "d")); // evicts "a"
        assert!(!d.seen(0, "a"));
        assert!(d.seen(0, "d"));
    }

    #[test]
    fn a_restored_window_is_the_window_it_was() {
        let mut d = Dedup::new(2, 3);
        d.restore(1, ["a", "b", "c", "d"].iter().map(|s| Dedup::hash(s)));
        assert!(!d.seen(1, "a"), "the oldest left a window of three");
        assert!(d.seen(1, "c") && d.seen(1, "d"));
        assert!(!d.seen(1, "e")); // evicts "b"
        assert!(!d.seen(1, "b"));
        assert!(!d.seen(0, "c"), "windows are per node");
    }

    #[test]
    fn window_zero_is_off() {
        let mut d = Dedup::new(4, 0);
        assert!(!d.seen(0, "a"));
        assert!(!d.seen(0, "a"));
    }
}
