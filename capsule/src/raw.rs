//! The benchmark baseline and a test seam, both working on the store's own tables.
//!
//! [`write_raw`] is "plain batched redb inserts of the same records": the same rows per
//! capsule (`capsules`, `by_id_prefix`, `by_scope`, and `expiry_runs` per run) in one `Durability::Immediate`
//! transaction, but with no idempotency lookup and no encoding (values are pre-encoded by
//! [`rows_from_capsules`] outside the timed part). `Store::write` is measured against it.
//!
//! [`overwrite_capsule_bytes`] replaces a stored capsule's value with arbitrary bytes, so
//! tests can check that corrupt rows surface as `StoreError::Corrupt`.

use redb::ReadableTable;

use crate::codec;
use crate::error::StoreError;
use crate::model::{Capsule, CapsuleId};
use crate::store::{extend_expiry_run, id_prefix, CapsuleTables, Store};

/// One capsule's rows, ready to insert.
#[derive(Clone, Debug)]
pub struct RawRow {
    pub id: [u8; 32],
    pub scope_id: String,
    pub resolution: u32,
    pub vantage: String,
    pub timestamp: i64,
    pub expires_at_ms: i64,
    pub value: Vec<u8>,
}

/// Pre-computes ids and encodings (not part of the baseline's timed work).
pub fn rows_from_capsules(store: &Store, capsules: &[Capsule]) -> Result<Vec<RawRow>, StoreError> {
    capsules
        .iter()
        .map(|c| {
            Ok(RawRow {
                id: c.id().0,
                scope_id: c.key.scope_id.clone(),
                resolution: c.key.resolution,
                vantage: c.key.vantage.as_str().to_owned(),
                timestamp: c.key.timestamp,
                expires_at_ms: store.config().expires_at_ms(c),
                value: codec::encode_capsule(c)?,
            })
        })
        .collect()
}

/// Inserts the rows in one immediate transaction, without checking for existing ids.
pub fn write_raw(store: &Store, rows: &[RawRow]) -> Result<(), StoreError> {
    let mut txn = store.db().begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    // Committed as the store commits a durable batch, so the comparison is like for like.
    txn.set_quick_repair(true);
    {
        let mut t = CapsuleTables::open(&txn)?;
        let first = t.next_seq()?;
        // The same rows and key-ordered insertion as `Store::write`, so the comparison
        // measures the idempotency check and the encoding, not the layout.
        let mut run: Option<(i64, u64, u64)> = None;
        for (i, r) in rows.iter().enumerate() {
            let seq = first + i as u64;
            t.capsules.insert(seq, r.value.as_slice())?;
            extend_expiry_run(&mut t, &mut run, r.expires_at_ms, seq)?;
        }
        if let Some((e, f, l)) = run {
            t.by_expiry.insert((e, f), l)?;
        }
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_unstable_by(|a, b| scope(&rows[*a]).cmp(&scope(&rows[*b])));
        for &i in &order {
            t.by_scope.insert(scope(&rows[i]), first + i as u64)?;
        }
        let mut ids: Vec<(u64, u64)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (id_prefix(&CapsuleId(r.id)), first + i as u64))
            .collect();
        ids.sort_unstable();
        for key in ids {
            t.by_id.insert(key, ())?;
        }
        t.set_next_seq(first + rows.len() as u64)?;
    }
    txn.commit()?;
    Ok(())
}

fn scope(r: &RawRow) -> (&str, u32, &str, i64) {
    (r.scope_id.as_str(), r.resolution, r.vantage.as_str(), r.timestamp)
}

/// Test seam: replaces the stored value of capsule `id` with `bytes`. False when absent.
/// Takes the first row under the id's prefix without decoding it (so a row can be damaged
/// again and again); tests never make two ids share a prefix.
pub fn overwrite_capsule_bytes(store: &Store, id: &CapsuleId, bytes: &[u8]) -> Result<bool, StoreError> {
    let txn = store.db().begin_write()?;
    {
        let mut t = CapsuleTables::open(&txn)?;
        let p = id_prefix(id);
        let seq = t
            .by_id
            .range((p, 0)..=(p, u64::MAX))?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().1);
        let Some(seq) = seq else {
            return Ok(false);
        };
        t.capsules.insert(seq, bytes)?;
    }
    txn.commit()?;
    Ok(true)
}
