//! The C ABI's subscriber side: attach to a reflex shard's decision ring (mapped
//! read-only), poll or wait for the next decision, read it as a self-contained
//! `rim_decision`, check the hash chain, and learn how many decisions were lost when the
//! subscriber fell a whole ring behind. Declared in `ring/include/rim_ring.h` next to the
//! producer side ([`crate::ffi`]).
//!
//! A `rim_subscriber` is used by one thread at a time. After `rim_subscriber_attach` it
//! allocates nothing: the record buffer is sized to the ring's slots at attach, and a
//! decision is copied into the caller's `rim_decision`, whose strings are NUL-terminated
//! arrays, so it stays valid after the next poll.

// The C names are the ABI: lower-case types as C code spells them.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::attach;
use crate::broadcast::{ReadError, Reader};
use crate::decision::{
    self, ChainCheck, DecisionView, EVIDENCE_MAX, LABEL_BYTES_MAX, NODE_ID_BYTES_MAX, RULE_ID_BYTES_MAX,
};
use crate::ffi::{RIM_ERR_ARGUMENT, RIM_ERR_ATTACH, RIM_ERR_INTERNAL, RIM_OK};

/// No new decision yet.
pub const RIM_ERR_EMPTY: c_int = 16;
/// The subscriber fell a whole ring behind and lost decisions (`rim_subscriber_missed`).
pub const RIM_ERR_LAPPED: c_int = 17;
/// A record that is not a valid decision was skipped.
pub const RIM_ERR_CORRUPT: c_int = 18;
/// The decision was read, but breaks the hash chain (with `RIM_SUB_VERIFY`).
pub const RIM_ERR_CHAIN: c_int = 19;
/// Nothing arrived before the timeout.
pub const RIM_ERR_TIMEOUT: c_int = 20;

/// `rim_subscriber_attach` flag: start with the oldest decision still in the ring
/// instead of the next one published.
pub const RIM_SUB_FROM_OLDEST: u32 = 1;
/// `rim_subscriber_attach` flag: check every decision's hash and its link to the one
/// read before it.
pub const RIM_SUB_VERIFY: u32 = 1 << 1;

/// Spin before parking in `rim_subscriber_next`, ns.
const SPIN_NS: u64 = crate::wait::SPIN_NS_DEFAULT;

/// One item of evidence: what a rule read.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rim_evidence {
    /// The input, e.g. `metric.temp` or `zscore(price)` (NUL-terminated).
    pub label: [c_char; LABEL_BYTES_MAX + 1],
    /// Its value; NaN when it was unknown.
    pub value: f64,
}

/// A decision, copied out of the ring: self-contained, valid until overwritten.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rim_decision {
    /// Position in its chain (1, 2, … per shard and epoch).
    pub chain_seq: u64,
    /// When the chain began, unix ns.
    pub epoch_ns: u64,
    /// Rule-set generation.
    pub rule_generation: u64,
    /// Ingest's sequence number of the triggering event.
    pub event_seq: u64,
    /// The triggering event's time, epoch ms.
    pub event_timestamp_ms: i64,
    /// Producer's publish time, CLOCK_MONOTONIC ns (0 when unknown).
    pub publish_ns: u64,
    /// Decision time, CLOCK_MONOTONIC ns.
    pub decided_ns: u64,
    /// Publish (or ingest) → decision, ns.
    pub latency_ns: u64,
    /// Reflex shard.
    pub shard: u32,
    /// The rule's version.
    pub rule_version: u32,
    /// Dense node index (this run of the daemon).
    pub node_index: u32,
    /// 0 info, 1 low, 2 medium, 3 high, 4 critical (`rim_severity_text`).
    pub severity: u8,
    /// `RIM_DECISION_SWEEP` (fired by the staleness sweep), `RIM_DECISION_RESUMED`
    /// (first after the chain resumed at a restart).
    pub flags: u8,
    /// Entries used in `evidence`.
    pub evidence_count: u16,
    /// SHA-256 of the previous decision of the chain (zero for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 of this decision's record.
    pub hash: [u8; 32],
    /// The rule's id (NUL-terminated).
    pub rule_id: [c_char; RULE_ID_BYTES_MAX + 1],
    /// The node's RimNodeId (NUL-terminated).
    pub node_id: [c_char; NODE_ID_BYTES_MAX + 1],
    /// What the rule read.
    pub evidence: [rim_evidence; EVIDENCE_MAX],
}

/// The struct's size is part of the ABI: the header's static assert holds the same number.
pub const RIM_DECISION_BYTES: usize = 2008;
const _: () = assert!(std::mem::size_of::<rim_decision>() == RIM_DECISION_BYTES);

/// An attached subscriber (opaque to C).
pub struct rim_subscriber {
    reader: Reader,
    buf: Box<[u8]>,
    chain: Option<ChainCheck>,
}

fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(RIM_ERR_INTERNAL)
}

/// Copies `s` into a NUL-terminated C array (`s` is within the array's limit: the
/// decoder refused longer strings).
fn copy_text<const N: usize>(dst: &mut [c_char; N], s: &str) {
    let n = s.len().min(N - 1);
    for (d, &b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = b as c_char;
    }
    dst[n] = 0;
}

fn fill(out: &mut rim_decision, d: &DecisionView<'_>) {
    out.chain_seq = d.chain_seq;
    out.epoch_ns = d.epoch_ns;
    out.rule_generation = d.rule_generation;
    out.event_seq = d.event_seq;
    out.event_timestamp_ms = d.event_timestamp_ms;
    out.publish_ns = d.publish_ns;
    out.decided_ns = d.decided_ns;
    out.latency_ns = d.latency_ns;
    out.shard = d.shard;
    out.rule_version = d.rule_version;
    out.node_index = d.node_index;
    out.severity = d.severity;
    out.flags = d.flags;
    out.prev_hash = d.prev_hash;
    out.hash = d.hash;
    copy_text(&mut out.rule_id, d.rule_id);
    copy_text(&mut out.node_id, d.node_id);
    let mut n = 0;
    for (slot, (label, value)) in out.evidence.iter_mut().zip(d.evidence()) {
        copy_text(&mut slot.label, label);
        slot.value = value;
        n += 1;
    }
    out.evidence_count = n;
}

impl rim_subscriber {
    /// Reads the next record into `out`; the status says what happened.
    fn poll(&mut self, out: &mut rim_decision) -> c_int {
        let n = match self.reader.read(&mut self.buf) {
            Ok(Some(n)) => n,
            Ok(None) => return RIM_ERR_EMPTY,
            Err(ReadError::Lapped { .. }) => {
                // The chain picks up again at the next record read.
                if let Some(c) = &mut self.chain {
                    c.restart();
                }
                return RIM_ERR_LAPPED;
            }
            // The buffer has the ring's slot size from attach on.
            Err(_) => return RIM_ERR_INTERNAL,
        };
        let Ok(view) = DecisionView::parse(&self.buf[..n]) else {
            if let Some(c) = &mut self.chain {
                c.restart();
            }
            return RIM_ERR_CORRUPT;
        };
        fill(out, &view);
        let linked = self.chain.as_mut().is_none_or(|c| c.push(&view).is_ok());
        if linked {
            RIM_OK
        } else {
            RIM_ERR_CHAIN
        }
    }
}

/// Attaches to the daemon's socket as a subscriber of reflex shard `shard`'s decisions
/// (shard 0 always exists). `flags`: `RIM_SUB_FROM_OLDEST`, `RIM_SUB_VERIFY`. On success
/// stores the subscriber in `*out` and returns `RIM_OK`; `RIM_ERR_ATTACH` when the daemon
/// is not there or has no such shard.
///
/// # Safety
/// `socket_path` must be a NUL-terminated string; `out` must point to writable storage for
/// one pointer.
#[no_mangle]
pub unsafe extern "C" fn rim_subscriber_attach(
    socket_path: *const c_char,
    shard: u32,
    flags: u32,
    out: *mut *mut rim_subscriber,
) -> c_int {
    guarded(|| {
        if socket_path.is_null() || out.is_null() || flags & !(RIM_SUB_FROM_OLDEST | RIM_SUB_VERIFY) != 0 {
            return RIM_ERR_ARGUMENT;
        }
        // SAFETY: non-null and NUL-terminated by the caller's contract.
        let Ok(path) = unsafe { CStr::from_ptr(socket_path) }.to_str() else {
            return RIM_ERR_ARGUMENT;
        };
        let Ok(mut reader) = attach::attach_subscriber(Path::new(path), &decision::ring_name(shard)) else {
            return RIM_ERR_ATTACH;
        };
        if flags & RIM_SUB_FROM_OLDEST != 0 {
            reader.seek_oldest();
        }
        let buf = vec![0u8; reader.slot_bytes()].into_boxed_slice();
        let chain = (flags & RIM_SUB_VERIFY != 0).then(ChainCheck::new);
        let s = Box::new(rim_subscriber { reader, buf, chain });
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { *out = Box::into_raw(s) };
        RIM_OK
    })
}

/// Reads the next decision into `*out`, never waiting. Returns `RIM_OK`; `RIM_ERR_EMPTY`
/// when there is none yet; `RIM_ERR_LAPPED` when decisions were lost (the count is added
/// to `rim_subscriber_missed`; the next call goes on from the oldest one still intact);
/// `RIM_ERR_CORRUPT` for a record that does not decode (skipped); with `RIM_SUB_VERIFY`,
/// `RIM_ERR_CHAIN` for a decision (filled into `*out`) whose hash or link is wrong — the
/// check goes on from it. After a lap or a skipped record the next decision starts the
/// chain check afresh.
///
/// # Safety
/// `s` must come from `rim_subscriber_attach` and not be closed; `out` must point to a
/// writable `rim_decision`.
#[no_mangle]
pub unsafe extern "C" fn rim_subscriber_poll(s: *mut rim_subscriber, out: *mut rim_decision) -> c_int {
    guarded(|| {
        if s.is_null() || out.is_null() {
            return RIM_ERR_ARGUMENT;
        }
        // SAFETY: both non-null and valid by the caller's contract; one thread per subscriber.
        let (s, out) = unsafe { (&mut *s, &mut *out) };
        s.poll(out)
    })
}

/// As `rim_subscriber_poll`, but waits up to `timeout_ns` for a decision: spins about
/// 50 µs, then sleeps in slices of at most 100 µs (the daemon never pays a wake-up for a
/// subscriber). Returns `RIM_ERR_TIMEOUT` when none came.
///
/// # Safety
/// As for `rim_subscriber_poll`.
#[no_mangle]
pub unsafe extern "C" fn rim_subscriber_next(s: *mut rim_subscriber, out: *mut rim_decision, timeout_ns: u64) -> c_int {
    guarded(|| {
        if s.is_null() || out.is_null() {
            return RIM_ERR_ARGUMENT;
        }
        // SAFETY: both non-null and valid by the caller's contract; one thread per subscriber.
        let (s, out) = unsafe { (&mut *s, &mut *out) };
        let start = crate::clock::monotonic_ns();
        loop {
            let status = s.poll(out);
            if status != RIM_ERR_EMPTY {
                return status;
            }
            let waited = crate::clock::monotonic_ns().saturating_sub(start);
            if waited >= timeout_ns || !s.reader.wait(SPIN_NS, timeout_ns - waited) {
                return RIM_ERR_TIMEOUT;
            }
        }
    })
}

/// Decisions this subscriber lost by being lapped, in total (0 for a null subscriber).
///
/// # Safety
/// `s` must be null or come from `rim_subscriber_attach` and not be closed.
#[no_mangle]
pub unsafe extern "C" fn rim_subscriber_missed(s: *const rim_subscriber) -> u64 {
    // SAFETY: null-checked; live by the caller's contract.
    unsafe { s.as_ref() }.map_or(0, |s| s.reader.missed())
}

/// Decisions published but not yet read by this subscriber (0 for a null subscriber).
///
/// # Safety
/// As for `rim_subscriber_missed`.
#[no_mangle]
pub unsafe extern "C" fn rim_subscriber_lag(s: *const rim_subscriber) -> u64 {
    // SAFETY: null-checked; live by the caller's contract.
    unsafe { s.as_ref() }.map_or(0, |s| s.reader.lag())
}

/// Sequence number, in the ring, of the next decision this subscriber reads (0 for a null
/// subscriber).
///
/// # Safety
/// As for `rim_subscriber_missed`.
#[no_mangle]
pub unsafe extern "C" fn rim_subscriber_position(s: *const rim_subscriber) -> u64 {
    // SAFETY: null-checked; live by the caller's contract.
    unsafe { s.as_ref() }.map_or(0, |s| s.reader.position())
}

/// Detaches and frees the subscriber. Null is ignored.
///
/// # Safety
/// `s` must be null or come from `rim_subscriber_attach`, and must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn rim_subscriber_close(s: *mut rim_subscriber) {
    if !s.is_null() {
        // SAFETY: `s` came from Box::into_raw in `rim_subscriber_attach` and is not used again.
        drop(unsafe { Box::from_raw(s) });
    }
}

/// A static, NUL-terminated name of a severity code (`"unknown"` past `critical`).
#[no_mangle]
pub extern "C" fn rim_severity_text(severity: u8) -> *const c_char {
    let text: &'static CStr = match decision::severity_name(severity) {
        "info" => c"info",
        "low" => c"low",
        "medium" => c"medium",
        "high" => c"high",
        "critical" => c"critical",
        _ => c"unknown",
    };
    text.as_ptr()
}

/// Descriptions of the subscriber's status codes, for `rim_status_text`.
pub(crate) fn status_text(status: c_int) -> Option<&'static CStr> {
    Some(match status {
        RIM_ERR_EMPTY => c"no new decision",
        RIM_ERR_LAPPED => c"subscriber lapped: decisions were missed",
        RIM_ERR_CORRUPT => c"record is not a valid decision",
        RIM_ERR_CHAIN => c"decision breaks the hash chain",
        RIM_ERR_TIMEOUT => c"timed out",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_cut_to_the_array_and_terminated() {
        let mut a = [1 as c_char; 4];
        copy_text(&mut a, "abcdef");
        assert_eq!(a, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
        copy_text(&mut a, "");
        assert_eq!(a[0], 0);
    }

    #[test]
    fn every_status_has_a_name() {
        for s in RIM_ERR_EMPTY..=RIM_ERR_TIMEOUT {
            assert!(status_text(s).is_some(), "status {s}");
        }
        // SAFETY: rim_severity_text returns static NUL-terminated strings.
        let name = unsafe { CStr::from_ptr(rim_severity_text(3)) };
        assert_eq!(name.to_str(), Ok("high"));
    }
}
