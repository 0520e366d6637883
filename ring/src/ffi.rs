//! The C ABI for feed handlers written in C or C++: attach to the daemon, intern strings,
//! publish events, read positions, close. Declared in `ring/include/rim_ring.h`; built as
//! `librim_ring.so` and `librim_ring.a`.
//!
//! Every function checks its pointers for null, never unwinds into C (a panic becomes
//! `RIM_ERR_INTERNAL`), and returns a status code; `rim_status_text` names it. A
//! `rim_producer` is used from one thread at a time, like the Rust `Producer` it wraps.

// The C names are the ABI: lower-case types as C code spells them.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::attach;
use crate::spsc::{Producer, PublishError};
use crate::wire::{Sym, SymEvent, SymbolKind};

/// Success.
pub const RIM_OK: c_int = 0;
/// The ring is full; retry later.
pub const RIM_ERR_FULL: c_int = 1;
/// The record is larger than the ring takes.
pub const RIM_ERR_TOO_LARGE: c_int = 2;
/// The event or string breaks a rule of the data model.
pub const RIM_ERR_INVALID: c_int = 3;
/// The daemon quarantined this ring.
pub const RIM_ERR_QUARANTINED: c_int = 4;
/// The daemon closed this ring.
pub const RIM_ERR_CLOSED: c_int = 5;
/// Attaching to the daemon failed.
pub const RIM_ERR_ATTACH: c_int = 6;
/// A null pointer, a bad length or an unknown kind was passed.
pub const RIM_ERR_ARGUMENT: c_int = 7;
/// A bug in the library (a caught panic).
pub const RIM_ERR_INTERNAL: c_int = 8;

/// `rim_event.flags`: which optional fields are present.
pub const RIM_HAS_EVENT_ID: u32 = 1;
/// `price` is present.
pub const RIM_HAS_PRICE: u32 = 1 << 1;
/// `volume` is present.
pub const RIM_HAS_VOLUME: u32 = 1 << 2;
/// `stress` is present.
pub const RIM_HAS_STRESS: u32 = 1 << 3;
/// `source_topic` is present.
pub const RIM_HAS_SOURCE_TOPIC: u32 = 1 << 4;

/// Most metrics one event carries.
const METRICS_MAX: usize = crate::event::METRICS_MAX;

/// One metric: a name symbol and its value.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rim_metric {
    /// Symbol of kind `RIM_KIND_METRIC_NAME`.
    pub name: u32,
    /// The value (finite).
    pub value: f64,
}

/// A RimFastEvent whose strings are symbols (see `rim_producer_intern`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rim_event {
    /// `rim_node_id` symbol.
    pub node: u32,
    /// `status` symbol.
    pub status: u32,
    /// `source_topic` symbol, used when `RIM_HAS_SOURCE_TOPIC` is set.
    pub source_topic: u32,
    /// `RIM_HAS_*` bits.
    pub flags: u32,
    /// `timestamp`, epoch milliseconds.
    pub timestamp: i64,
    /// `price`, `volume`, `stress` (each used when its flag is set).
    pub price: f64,
    /// See `price`.
    pub volume: f64,
    /// See `price`.
    pub stress: f64,
    /// CLOCK_MONOTONIC ns at publish; 0: stamped by the library.
    pub publish_ns: u64,
    /// `event_id` bytes (UTF-8, not NUL-terminated), used when `RIM_HAS_EVENT_ID` is set.
    pub event_id: *const c_char,
    /// Length of `event_id`.
    pub event_id_len: usize,
    /// `critical_metrics`.
    pub metrics: *const rim_metric,
    /// Number of entries in `metrics` (at most 64).
    pub metric_count: usize,
}

/// An attached producer (opaque to C).
pub struct rim_producer {
    inner: Producer,
    syms: Box<[(Sym, f64); METRICS_MAX]>,
}

fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(RIM_ERR_INTERNAL)
}

fn publish_status(e: PublishError) -> c_int {
    match e {
        PublishError::Full { .. } => RIM_ERR_FULL,
        PublishError::TooLarge { .. } => RIM_ERR_TOO_LARGE,
        PublishError::Invalid(_) => RIM_ERR_INVALID,
        PublishError::Quarantined => RIM_ERR_QUARANTINED,
        PublishError::Closed => RIM_ERR_CLOSED,
    }
}

/// Attaches to the daemon's socket and asks for a ring of `capacity` bytes (a power of
/// two). On success stores the producer in `*out` and returns `RIM_OK`.
///
/// # Safety
/// `socket_path` and `name` must be NUL-terminated strings; `out` must point to writable
/// storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_attach(
    socket_path: *const c_char,
    name: *const c_char,
    capacity: usize,
    out: *mut *mut rim_producer,
) -> c_int {
    guarded(|| {
        if socket_path.is_null() || name.is_null() || out.is_null() {
            return RIM_ERR_ARGUMENT;
        }
        // SAFETY: non-null and NUL-terminated by the caller's contract.
        let (path, name) = unsafe { (CStr::from_ptr(socket_path), CStr::from_ptr(name)) };
        let (Ok(path), Ok(name)) = (path.to_str(), name.to_str()) else {
            return RIM_ERR_ARGUMENT;
        };
        match attach::attach_producer(Path::new(path), name, capacity) {
            Ok(inner) => {
                let p = Box::new(rim_producer {
                    inner,
                    syms: Box::new([(Sym::default(), 0.0); METRICS_MAX]),
                });
                // SAFETY: `out` is non-null and writable by the caller's contract.
                unsafe { *out = Box::into_raw(p) };
                RIM_OK
            }
            Err(_) => RIM_ERR_ATTACH,
        }
    })
}

/// Defines `text` (`len` bytes of UTF-8) as a symbol of `kind` (1 node id, 2 metric name,
/// 3 status, 4 source topic) in this ring, once; stores its number in `*out`.
///
/// # Safety
/// `p` must come from `rim_producer_attach` and not be closed; `text` must point to `len`
/// readable bytes; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_intern(
    p: *mut rim_producer,
    kind: c_int,
    text: *const c_char,
    len: usize,
    out: *mut u32,
) -> c_int {
    guarded(|| {
        if p.is_null() || text.is_null() || out.is_null() || len > 4096 {
            return RIM_ERR_ARGUMENT;
        }
        let kind = match kind {
            1 => SymbolKind::NodeId,
            2 => SymbolKind::MetricName,
            3 => SymbolKind::Status,
            4 => SymbolKind::SourceTopic,
            _ => return RIM_ERR_ARGUMENT,
        };
        // SAFETY: `text` points to `len` readable bytes by the caller's contract.
        let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return RIM_ERR_INVALID;
        };
        // SAFETY: `p` is a live producer from `rim_producer_attach`, used by one thread.
        let p = unsafe { &mut *p };
        match p.inner.intern(kind, text) {
            Ok(sym) => {
                // SAFETY: `out` is non-null and writable by the caller's contract.
                unsafe { *out = sym.get() };
                RIM_OK
            }
            Err(e) => publish_status(e),
        }
    })
}

/// Publishes one event; never blocks. Returns `RIM_OK` or why it was refused.
///
/// # Safety
/// `p` must come from `rim_producer_attach` and not be closed; `ev` must point to a valid
/// `rim_event` whose `metrics` (if `metric_count > 0`) and `event_id` (if flagged) point to
/// readable memory of the given lengths.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_publish(p: *mut rim_producer, ev: *const rim_event) -> c_int {
    guarded(|| {
        if p.is_null() || ev.is_null() {
            return RIM_ERR_ARGUMENT;
        }
        // SAFETY: both non-null and valid by the caller's contract; one thread per producer.
        let (p, ev) = unsafe { (&mut *p, &*ev) };
        if ev.metric_count > METRICS_MAX || (ev.metric_count > 0 && ev.metrics.is_null()) {
            return RIM_ERR_ARGUMENT;
        }
        let event_id = if ev.flags & RIM_HAS_EVENT_ID != 0 {
            if ev.event_id.is_null() || ev.event_id_len > crate::event::EVENT_ID_BYTES_MAX {
                return RIM_ERR_INVALID;
            }
            // SAFETY: `event_id` points to `event_id_len` readable bytes (caller's contract).
            let bytes = unsafe { std::slice::from_raw_parts(ev.event_id.cast::<u8>(), ev.event_id_len) };
            match std::str::from_utf8(bytes) {
                Ok(s) => Some(s),
                Err(_) => return RIM_ERR_INVALID,
            }
        } else {
            None
        };
        let metrics: &[rim_metric] = if ev.metric_count == 0 {
            &[]
        } else {
            // SAFETY: non-null, `metric_count` (≤ 64) readable entries (caller's contract).
            unsafe { std::slice::from_raw_parts(ev.metrics, ev.metric_count) }
        };
        for (slot, m) in p.syms.iter_mut().zip(metrics) {
            *slot = (Sym::from_raw(m.name), m.value);
        }
        let has = |flag: u32| ev.flags & flag != 0;
        let sym_ev = SymEvent {
            node: Sym::from_raw(ev.node),
            event_id,
            timestamp: ev.timestamp,
            metrics: &p.syms[..metrics.len()],
            price: has(RIM_HAS_PRICE).then_some(ev.price),
            volume: has(RIM_HAS_VOLUME).then_some(ev.volume),
            stress: has(RIM_HAS_STRESS).then_some(ev.stress),
            status: Sym::from_raw(ev.status),
            source_topic: has(RIM_HAS_SOURCE_TOPIC).then_some(Sym::from_raw(ev.source_topic)),
            publish_ns: ev.publish_ns,
        };
        match p.inner.try_publish_sym(&sym_ev) {
            Ok(_) => RIM_OK,
            Err(e) => publish_status(e),
        }
    })
}

/// Ring position just past the last record published (0 for a null producer).
///
/// # Safety
/// `p` must be null or come from `rim_producer_attach` and not be closed.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_position(p: *const rim_producer) -> u64 {
    // SAFETY: null-checked; live by the caller's contract.
    unsafe { p.as_ref() }.map_or(0, |p| p.inner.position())
}

/// How far the daemon has read this ring (0 for a null producer).
///
/// # Safety
/// As for `rim_producer_position`.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_consumed_position(p: *const rim_producer) -> u64 {
    // SAFETY: null-checked; live by the caller's contract.
    unsafe { p.as_ref() }.map_or(0, |p| p.inner.consumed_position())
}

/// How far the daemon has made this ring's records durable (0 for a null producer).
///
/// # Safety
/// As for `rim_producer_position`.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_durable_position(p: *const rim_producer) -> u64 {
    // SAFETY: null-checked; live by the caller's contract.
    unsafe { p.as_ref() }.map_or(0, |p| p.inner.durable_position())
}

/// What the daemon did not take from this ring, per reason (`rim_ring.h`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct rim_verdicts {
    /// Records refused for any reason but duplication.
    pub rejected: u64,
    /// Records that failed the daemon's validation.
    pub invalid: u64,
    /// Events dropped as duplicates of an `event_id` already taken for the node.
    pub duplicates: u64,
    /// Events refused because the daemon's node table is full.
    pub node_table_full: u64,
    /// Events refused because their time is too far ahead of the daemon's clock.
    pub event_time_ahead: u64,
    /// Events refused because their time is older than the daemon allows.
    pub event_time_too_old: u64,
    /// Events refused because this ring may not publish for their node.
    pub node_not_allowed: u64,
}

/// Copies what the daemon did not take from this ring into `*out`, per reason. A record's
/// verdict is counted before the consumed position passes it. Returns `RIM_OK`, or
/// `RIM_ERR_ARGUMENT` for a null pointer.
///
/// # Safety
/// `p` as for `rim_producer_position`; `out` null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_verdicts(p: *const rim_producer, out: *mut rim_verdicts) -> c_int {
    // SAFETY: null-checked; live by the caller's contract.
    let (Some(p), false) = (unsafe { p.as_ref() }, out.is_null()) else {
        return RIM_ERR_ARGUMENT;
    };
    let v = p.inner.verdicts();
    let copy = rim_verdicts {
        rejected: v.rejected(),
        invalid: v.invalid,
        duplicates: v.duplicates,
        node_table_full: v.node_table_full,
        event_time_ahead: v.time_ahead,
        event_time_too_old: v.time_too_old,
        node_not_allowed: v.node_not_allowed,
    };
    // SAFETY: `out` is non-null and valid for one write by the caller's contract.
    unsafe { out.write(copy) };
    RIM_OK
}

/// Waits up to `timeout_ns` until every record before `pos` (a position from
/// `rim_producer_position` after a publish) is durable in the daemon's journal. Spins
/// about 50 µs, then sleeps in slices of at most 100 µs. Returns 1 when durable, 0 on
/// timeout or for a null producer.
///
/// # Safety
/// As for `rim_producer_position`.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_wait_durable(p: *const rim_producer, pos: u64, timeout_ns: u64) -> c_int {
    // SAFETY: null-checked; live by the caller's contract.
    let Some(p) = (unsafe { p.as_ref() }) else {
        return 0;
    };
    c_int::from(p.inner.wait_durable(pos, crate::wait::SPIN_NS_DEFAULT, timeout_ns))
}

/// Says no more records will come and frees the producer. Null is ignored.
///
/// # Safety
/// `p` must be null or come from `rim_producer_attach`, and must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn rim_producer_close(p: *mut rim_producer) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from Box::into_raw in `rim_producer_attach` and is not used again.
    let p = unsafe { Box::from_raw(p) };
    let _ = catch_unwind(AssertUnwindSafe(|| p.inner.close()));
}

/// A static, NUL-terminated description of a status code.
#[no_mangle]
pub extern "C" fn rim_status_text(status: c_int) -> *const c_char {
    let text: &'static CStr = match status {
        RIM_OK => c"ok",
        RIM_ERR_FULL => c"ring full",
        RIM_ERR_TOO_LARGE => c"record too large",
        RIM_ERR_INVALID => c"invalid event or string",
        RIM_ERR_QUARANTINED => c"ring quarantined by the daemon",
        RIM_ERR_CLOSED => c"ring closed by the daemon",
        RIM_ERR_ATTACH => c"attach failed",
        RIM_ERR_ARGUMENT => c"bad argument",
        RIM_ERR_INTERNAL => c"internal error",
        _ => crate::ffi_subscriber::status_text(status).unwrap_or(c"unknown status"),
    };
    text.as_ptr()
}
