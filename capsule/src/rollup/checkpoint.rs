//! The roll-up's checkpoint, chunk by chunk (see the module docs of [`super`]).
//!
//! ```text
//! header = u32 version | u32 n, u32 resolution × n | u64 late | u64 late per resolution × n
//!          | u64 scored | u64 unscored | u32 k, (u64 key, str text) × k
//! chunk  = u32 version | u32 entries | entry × entries
//! entry  = str node id | u64 events applied to | u64 log applied to | u8 m, u64 key × m
//!          | window × resolutions | u32 o, (u64 key, acc × resolutions) × o
//!          | u32 a, (u64 key, u64 count, f64 abs, f64 rel, u64 hits, u64 directional) × a
//!          | (u8 p, (i64 window, u32 s, (u64 key, f64 value, f64 base) × s) × p) × resolutions
//!          | u32 d, u64 event-id hash × d (oldest first; version 4 on)
//! window = u8 open | i64 closed until | (if open) i64 start, u64 first pos, u64 last arrival,
//!          u64 count, i64 first ts, i64 last ts, u8 flags, f64 × 4 ohlc, f64 volume,
//!          f64 stress max, f64 stress last, u64 status, acc × m
//! acc    = u64 count, f64 min, f64 max, f64 sum, f64 last
//! str    = u16 length, UTF-8 bytes
//! ```
//! Little-endian. Every number read back is checked (finite floats, counts within bounds);
//! anything else is a [`CheckpointError`], never a panic. Version 3 (no event-id hashes)
//! is still read: its nodes come back with none.

use super::{Acc, AccuracyAgg, Expected, Rollup, RollupConfig, Row, Win, CHUNK_NODES, F_PRICE, F_STRESS, F_VOLUME};
use super::{INLINE_METRICS, PREDICTED_SERIES_MAX, PREDICTIONS_PER_SLOT, RECENT_IDS_MAX, RESOLUTIONS_MAX};

const CHECKPOINT_VERSION: u32 = 4;
/// The oldest version still read (before event-id hashes).
const CHECKPOINT_VERSION_MIN: u32 = 3;

/// One step's checkpoint: the header and the chunks encoded (merged with later steps'
/// when they travel together; the newest bytes of a chunk win).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Resolutions, counters and key names.
    pub header: Vec<u8>,
    /// (chunk number, entries).
    pub chunks: Vec<(u32, Vec<u8>)>,
    /// Chunks the roll-up spans now: stored chunks at or past this are stale.
    pub chunk_count: u32,
    /// Nodes of the encoded chunks that have accuracy, with it: (node id, [(series name,
    /// aggregate)]).
    pub accuracy: Vec<(String, Vec<(String, AccuracyAgg)>)>,
}

/// Why a roll-up checkpoint was not restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The bytes are not a checkpoint.
    #[error("roll-up checkpoint does not parse: {0}")]
    Parse(String),
    /// Written by another format version.
    #[error("roll-up checkpoint version {0} is not supported")]
    Version(u32),
    /// Written with other resolutions.
    #[error("roll-up checkpoint has resolutions {stored:?}, the configuration {configured:?}")]
    Resolutions {
        /// In the checkpoint.
        stored: Vec<u32>,
        /// Configured now.
        configured: Vec<u32>,
    },
    /// A node the caller could not place (its node table is full).
    #[error("roll-up checkpoint node {0:?} cannot be placed (node table full)")]
    NodeNotPlaced(String),
}

impl Rollup {
    /// True if a chunk changed since it was last encoded.
    pub fn changed(&self) -> bool {
        self.chunks.iter().any(|c| c.dirty)
    }

    /// Marks every chunk changed, so the next steps encode them all.
    pub fn mark_all_changed(&mut self) {
        self.chunks.iter_mut().for_each(|c| c.dirty = true);
    }

    /// Milliseconds from `now_ms` until a chunk that changed is at least `min_age_ms`
    /// past its last encoding (0: one is due now); None when no chunk changed. A thread
    /// that parks when idle wakes by it, so that a round of the rolling checkpoint ends
    /// within an interval of the last event rather than one chunk per park.
    pub fn checkpoint_due_in(&self, now_ms: u64, min_age_ms: u64) -> Option<u64> {
        self.chunks
            .iter()
            .filter(|c| c.dirty)
            .map(|c| c.due_in(now_ms, min_age_ms))
            .min()
    }

    /// Encodes the next chunk that changed and was last encoded at least `min_age_ms`
    /// before `now_ms` (round robin), as complete to the journal's ends now (`events_end`,
    /// `log_end`); None when no chunk is due, or while closes and filings wait to be
    /// settled ([`Rollup::settle`]): a chunk encoded then would hold windows as closed whose
    /// capsules and scores were not handed out yet, and a crash would lose them.
    pub fn checkpoint_step(
        &mut self,
        events_end: u64,
        log_end: u64,
        now_ms: u64,
        min_age_ms: u64,
    ) -> Option<Checkpoint> {
        if self.unsettled() > 0 {
            return None;
        }
        let n = self.chunks.len();
        let due = (0..n)
            .map(|i| (self.cursor + i) % n)
            .find(|&c| self.chunks[c].dirty && self.chunks[c].due_in(now_ms, min_age_ms) == 0)?;
        self.cursor = (due + 1) % n.max(1);
        let mut cp = Checkpoint {
            header: self.encode_header(),
            chunk_count: n as u32,
            ..Checkpoint::default()
        };
        // The chunk's last size and an eighth more up front (a KiB per node the first
        // time): growing by doubling copies the chunk into fresh pages, and in a VM each
        // first touch of a fresh page is a fault the guest pays for (the bench's chunks are
        // about 340 KiB, and a fixed 256 KiB made each of them one copy of 256 KiB into
        // 512 KiB of fresh pages). Its own size, not the largest chunk's: a chunk of a few
        // nodes, or one that shrank, reserves no more than it needs.
        let last = self.chunks[due].encoded_bytes;
        let mut bytes = Vec::with_capacity(if last == 0 {
            CHUNK_NODES * 1024
        } else {
            last / 8 * 9 + 64
        });
        put_u32(&mut bytes, CHECKPOINT_VERSION);
        put_u32(&mut bytes, 0);
        let mut count = 0u32;
        let hi = ((due + 1) * CHUNK_NODES).min(self.rows.len());
        for node in (due * CHUNK_NODES..hi).map(|i| i as u32) {
            if !self.encode_node(node, events_end, log_end, &mut bytes) {
                continue;
            }
            count += 1;
            let acc = self.accuracy_of(node);
            if let (false, Some(name)) = (acc.is_empty(), self.names.node(node)) {
                cp.accuracy.push((name.to_owned(), acc));
            }
        }
        bytes[4..8].copy_from_slice(&count.to_le_bytes());
        let encoded = bytes.len();
        cp.chunks.push((due as u32, bytes));
        let c = &mut self.chunks[due];
        c.encoded_bytes = encoded;
        c.dirty = false;
        c.unstored_from = None;
        c.unstored_log_from = None;
        c.encoded_ms = now_ms;
        Some(cp)
    }

    /// Every chunk encoded now (tests, shutdown): the steps of [`Rollup::checkpoint_step`]
    /// with no age limit, merged. Settle first: with work waiting, no chunk is encoded.
    pub fn checkpoint_all(&mut self, events_end: u64, log_end: u64, now_ms: u64) -> Checkpoint {
        debug_assert_eq!(self.unsettled(), 0, "checkpoint_all with closes not settled");
        let mut all = Checkpoint {
            header: self.encode_header(),
            chunk_count: self.chunks.len() as u32,
            ..Checkpoint::default()
        };
        while let Some(step) = self.checkpoint_step(events_end, log_end, now_ms, 0) {
            all.header = step.header;
            all.chunks.extend(step.chunks);
            all.accuracy.extend(step.accuracy);
        }
        all
    }

    /// Where a replay must start so that what no stored chunk holds is rebuilt: (events,
    /// decision log); the given ends when every chunk is stored as it is.
    pub fn watermarks(&self, events_end: u64, log_end: u64) -> (u64, u64) {
        let events = self.chunks.iter().filter_map(|c| c.unstored_from).min();
        let log = self.chunks.iter().filter_map(|c| c.unstored_log_from).min();
        (
            events.unwrap_or(events_end).min(events_end),
            log.unwrap_or(log_end).min(log_end),
        )
    }

    /// Whether the restored state of `node` already holds the event at `pos` (a replay
    /// skips it).
    pub fn holds_event(&self, node: u32, pos: u64) -> bool {
        self.rows.get(node as usize).is_some_and(|r| pos < r.applied_to)
    }

    /// Per node index, the event position its restored state holds everything before
    /// (what [`Rollup::holds_event`] compares with; 0 for a node not restored): a copy for
    /// another thread replaying alongside.
    pub fn held_events(&self) -> Vec<u64> {
        self.rows.iter().map(|r| r.applied_to).collect()
    }

    /// Whether the restored state of `node` already holds the decision-log record at `pos`.
    pub fn holds_log(&self, node: u32, pos: u64) -> bool {
        self.rows.get(node as usize).is_some_and(|r| pos < r.applied_log)
    }

    fn encode_header(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_u32(&mut b, CHECKPOINT_VERSION);
        put_u32(&mut b, self.cfg.resolutions.len() as u32);
        for &r in &self.cfg.resolutions {
            put_u32(&mut b, r);
        }
        put_u64(&mut b, self.late_events);
        for &l in &self.late_by_resolution {
            put_u64(&mut b, l);
        }
        put_u64(&mut b, self.scored);
        put_u64(&mut b, self.unscored);
        put_u32(&mut b, self.names.keys.len() as u32);
        let mut keys: Vec<(&u64, &Box<str>)> = self.names.keys.iter().collect();
        keys.sort_by_key(|(k, _)| **k);
        for (k, text) in keys {
            put_u64(&mut b, *k);
            put_str(&mut b, text);
        }
        b
    }

    /// One node's state; false (nothing written) for a node never seen.
    fn encode_node(&self, node: u32, events_end: u64, log_end: u64, b: &mut Vec<u8>) -> bool {
        let n = node as usize;
        let row = &self.rows[n];
        let Some(name) = self.names.node(node) else {
            return false;
        };
        if !row.seen {
            return false;
        }
        put_str(b, name);
        put_u64(b, events_end);
        put_u64(b, log_end);
        b.push(row.keys_len);
        for &k in &row.keys[..row.keys_len as usize] {
            put_u64(b, k);
        }
        let r_count = self.resolutions();
        for r in 0..r_count {
            encode_win(&self.wins[n * r_count + r], row.keys_len as usize, b);
        }
        let over = self.overflow.get(&node).map_or(&[][..], |v| &v[..]);
        put_u32(b, over.len() as u32);
        for (k, accs) in over {
            put_u64(b, *k);
            for a in accs {
                encode_acc(a, b);
            }
        }
        let acc = self.accuracy.get(n).map_or(&[][..], |v| &v[..]);
        put_u32(b, acc.len() as u32);
        for (k, a) in acc {
            put_u64(b, *k);
            put_u64(b, a.count);
            put_f64(b, a.abs_err_sum);
            put_f64(b, a.rel_err_sum);
            put_u64(b, a.hits);
            put_u64(b, a.directional);
        }
        for r in 0..r_count {
            let pending = self.expected.get(n * r_count + r).map_or(&[][..], |v| &v[..]);
            let pending = &pending[pending.len().saturating_sub(PREDICTIONS_PER_SLOT)..];
            b.push(pending.len() as u8);
            for e in pending {
                put_i64(b, e.window_ms);
                put_u32(b, e.series.len() as u32);
                for &(k, v, base) in &e.series {
                    put_u64(b, k);
                    put_f64(b, v);
                    put_f64(b, base);
                }
            }
        }
        let ids = b.len();
        put_u32(b, 0);
        let mut d = 0u32;
        for h in self.recent_ids(node) {
            put_u64(b, h);
            d += 1;
        }
        b[ids..ids + 4].copy_from_slice(&d.to_le_bytes());
        true
    }

    /// A node's event-id hashes from its entry (oldest first): the newest that fit.
    fn restore_ids(&mut self, node: u32, ids: &[u64]) {
        let w = self.cfg.recent_ids;
        let n = node as usize;
        if w == 0 || n >= self.recent_next.len() {
            return;
        }
        let Some(ring) = self.recent.get_mut(n * w..(n + 1) * w) else {
            return;
        };
        ring.fill(0);
        let kept = &ids[ids.len().saturating_sub(w)..];
        for (slot, &h) in ring.iter_mut().zip(kept) {
            *slot = h;
        }
        self.recent_next[n] = (kept.len() % w.max(1)) as u16;
    }

    /// Rebuilds a roll-up from a checkpoint's header and all of its chunks (chunk number,
    /// bytes). `index_of` places each node (by its id) at an index, or refuses it (node
    /// table full). A node found in two chunks (left behind by a restart that renumbered
    /// nodes) keeps the entry complete to the later position. Refused, with a typed error
    /// (the caller starts empty and replays further back), if anything does not parse, is
    /// of another version or was made with other resolutions.
    pub fn restore<'c>(
        cfg: RollupConfig,
        header: &[u8],
        chunks: impl IntoIterator<Item = (u32, &'c [u8])>,
        index_of: &mut dyn FnMut(&str) -> Option<u32>,
    ) -> Result<Self, CheckpointError> {
        let mut r = Rollup::new(cfg);
        r.decode_header(header)?;
        let mut moved = false;
        for (number, chunk) in chunks {
            let mut rd = Rd::new(chunk);
            let version = rd.u32()?;
            if !(CHECKPOINT_VERSION_MIN..=CHECKPOINT_VERSION).contains(&version) {
                return Err(CheckpointError::Version(version));
            }
            let count = rd.len(CHUNK_NODES.max(1 << 20))?;
            for _ in 0..count {
                let node = r.decode_node(&mut rd, version, index_of)?;
                moved |= node as usize / CHUNK_NODES != number as usize;
            }
            rd.end()?;
        }
        r.open_windows = r.wins.iter().filter(|w| w.open).count();
        if moved {
            // Stored chunks no longer match the numbering: rewrite them all.
            r.chunks.iter_mut().for_each(|c| c.dirty = true);
        }
        Ok(r)
    }

    fn decode_header(&mut self, header: &[u8]) -> Result<(), CheckpointError> {
        let mut rd = Rd::new(header);
        let version = rd.u32()?;
        if !(CHECKPOINT_VERSION_MIN..=CHECKPOINT_VERSION).contains(&version) {
            return Err(CheckpointError::Version(version));
        }
        let n = rd.len(RESOLUTIONS_MAX)?;
        let stored = (0..n).map(|_| rd.u32()).collect::<Result<Vec<_>, _>>()?;
        if stored != self.cfg.resolutions {
            return Err(CheckpointError::Resolutions {
                stored,
                configured: self.cfg.resolutions.clone(),
            });
        }
        self.late_events = rd.u64()?;
        for l in &mut self.late_by_resolution {
            *l = rd.u64()?;
        }
        self.scored = rd.u64()?;
        self.unscored = rd.u64()?;
        let keys = rd.len(1 << 24)?;
        for _ in 0..keys {
            let k = rd.u64()?;
            let text = rd.str()?;
            self.names.keys.insert(k, text.into());
        }
        rd.end()
    }

    /// One node's entry, placed through `index_of`; returns its index.
    fn decode_node(
        &mut self,
        rd: &mut Rd<'_>,
        version: u32,
        index_of: &mut dyn FnMut(&str) -> Option<u32>,
    ) -> Result<u32, CheckpointError> {
        let name = rd.str()?;
        let node = index_of(name)
            .filter(|&i| (i as usize) < self.cfg.nodes_max)
            .ok_or_else(|| CheckpointError::NodeNotPlaced(name.chars().take(300).collect()))?;
        if !self.ensure(node) {
            return Err(CheckpointError::NodeNotPlaced(name.to_owned()));
        }
        let applied_to = rd.u64()?;
        let applied_log = rd.u64()?;
        let keys_len = rd.u8()? as usize;
        if keys_len > INLINE_METRICS {
            return Err(CheckpointError::Parse(format!("{keys_len} inline series")));
        }
        let mut row = Row {
            seen: true,
            keys_len: keys_len as u8,
            status_known: 0,
            keys: [0; INLINE_METRICS],
            applied_to,
            applied_log,
        };
        for k in &mut row.keys[..keys_len] {
            *k = rd.u64()?;
        }
        let r_count = self.resolutions();
        let wins = (0..r_count)
            .map(|_| decode_win(rd, keys_len))
            .collect::<Result<Vec<_>, _>>()?;
        let over = rd.len(1 << 16)?;
        let mut overflow = Vec::with_capacity(over);
        for _ in 0..over {
            let k = rd.u64()?;
            let accs = (0..r_count).map(|_| decode_acc(rd)).collect::<Result<Vec<_>, _>>()?;
            overflow.push((k, accs));
        }
        let acc = rd.len(1 << 16)?;
        let mut acc_row = Vec::with_capacity(acc);
        for _ in 0..acc {
            let k = rd.u64()?;
            acc_row.push((
                k,
                AccuracyAgg {
                    count: rd.u64()?,
                    abs_err_sum: rd.f64()?,
                    rel_err_sum: rd.f64()?,
                    hits: rd.u64()?,
                    directional: rd.u64()?,
                },
            ));
        }
        let mut expected = Vec::with_capacity(r_count);
        for _ in 0..r_count {
            let pending = rd.u8()? as usize;
            if pending > PREDICTIONS_PER_SLOT {
                return Err(CheckpointError::Parse(format!("{pending} pending predictions")));
            }
            let mut list = Vec::with_capacity(pending);
            for _ in 0..pending {
                let window_ms = rd.i64()?;
                let s = rd.len(PREDICTED_SERIES_MAX)?;
                let series = (0..s)
                    .map(|_| Ok((rd.u64()?, rd.f64()?, rd.f64()?)))
                    .collect::<Result<Vec<_>, CheckpointError>>()?;
                list.push(Expected { window_ms, series });
            }
            expected.push(list);
        }
        let ids = if version >= 4 {
            let d = rd.len(RECENT_IDS_MAX)?;
            (0..d).map(|_| rd.u64()).collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let n = node as usize;
        // A node in two chunks: the entry complete to the later position wins.
        if self.rows[n].seen && self.rows[n].applied_to >= applied_to {
            return Ok(node);
        }
        if !self.rows[n].seen {
            self.nodes_seen += 1;
        }
        self.names.learn_node(node, name);
        self.rows[n] = row;
        for (r, w) in wins.into_iter().enumerate() {
            self.wins[n * r_count + r] = w;
        }
        self.overflow.remove(&node);
        if !overflow.is_empty() {
            self.overflow.insert(node, overflow);
        }
        self.accuracy[n] = acc_row;
        for (r, list) in expected.into_iter().enumerate() {
            self.expected[n * r_count + r] = list;
        }
        self.restore_ids(node, &ids);
        Ok(node)
    }
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_f64(b: &mut Vec<u8>, v: f64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_str(b: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.extend_from_slice(&(end as u16).to_le_bytes());
    b.extend_from_slice(&s.as_bytes()[..end]);
}

fn encode_acc(a: &Acc, b: &mut Vec<u8>) {
    put_u64(b, a.count);
    put_f64(b, a.min);
    put_f64(b, a.max);
    put_f64(b, a.sum);
    put_f64(b, a.last);
}

fn decode_acc(rd: &mut Rd<'_>) -> Result<Acc, CheckpointError> {
    Ok(Acc {
        count: rd.u64()?,
        min: rd.f64()?,
        max: rd.f64()?,
        sum: rd.f64()?,
        last: rd.f64()?,
    })
}

fn encode_win(w: &Win, keys_len: usize, b: &mut Vec<u8>) {
    b.push(u8::from(w.open));
    put_i64(b, w.closed_until_ms);
    if !w.open {
        return;
    }
    put_i64(b, w.start_ms);
    put_u64(b, w.first_pos);
    put_u64(b, w.last_arrival_ms);
    put_u64(b, w.count);
    put_i64(b, w.first_ts);
    put_i64(b, w.last_ts);
    b.push(w.flags);
    for v in w.ohlc {
        put_f64(b, v);
    }
    put_f64(b, w.volume_sum);
    put_f64(b, w.stress_max);
    put_f64(b, w.stress_last);
    put_u64(b, w.status);
    for a in &w.m[..keys_len] {
        encode_acc(a, b);
    }
}

fn decode_win(rd: &mut Rd<'_>, keys_len: usize) -> Result<Win, CheckpointError> {
    let open = match rd.u8()? {
        0 => false,
        1 => true,
        f => return Err(CheckpointError::Parse(format!("window flag {f}"))),
    };
    let mut w = Win {
        closed_until_ms: rd.i64()?,
        ..Win::default()
    };
    if !open {
        return Ok(w);
    }
    w.open = true;
    w.start_ms = rd.i64()?;
    w.first_pos = rd.u64()?;
    w.last_arrival_ms = rd.u64()?;
    w.count = rd.u64()?;
    w.first_ts = rd.i64()?;
    w.last_ts = rd.i64()?;
    w.flags = rd.u8()?;
    if w.flags & !(F_PRICE | F_VOLUME | F_STRESS) != 0 {
        return Err(CheckpointError::Parse(format!("window flags {:#x}", w.flags)));
    }
    for v in &mut w.ohlc {
        *v = rd.f64()?;
    }
    w.volume_sum = rd.f64()?;
    w.stress_max = rd.f64()?;
    w.stress_last = rd.f64()?;
    w.status = rd.u64()?;
    for a in &mut w.m[..keys_len] {
        *a = decode_acc(rd)?;
    }
    Ok(w)
}

/// A bounds-checked little-endian reader: every read fails cleanly past the end.
struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| CheckpointError::Parse(format!("truncated at byte {} of {}", self.at, self.b.len())))?;
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.take(1)?[0])
    }

    fn word(&mut self) -> Result<[u8; 8], CheckpointError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(w)
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(w))
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.word()?))
    }

    fn i64(&mut self) -> Result<i64, CheckpointError> {
        Ok(i64::from_le_bytes(self.word()?))
    }

    fn f64(&mut self) -> Result<f64, CheckpointError> {
        let v = f64::from_le_bytes(self.word()?);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(CheckpointError::Parse(format!(
                "a number at byte {} is not finite",
                self.at - 8
            )))
        }
    }

    /// A count, at most `max`.
    fn len(&mut self, max: usize) -> Result<usize, CheckpointError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(CheckpointError::Parse(format!(
                "count {n} over {max} at byte {}",
                self.at - 4
            )));
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, CheckpointError> {
        let mut w = [0u8; 2];
        w.copy_from_slice(self.take(2)?);
        let n = u16::from_le_bytes(w) as usize;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| CheckpointError::Parse(format!("text at byte {} is not UTF-8", self.at - n)))
    }

    fn end(&self) -> Result<(), CheckpointError> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(CheckpointError::Parse(format!(
                "{} trailing bytes",
                self.b.len() - self.at
            )))
        }
    }
}
