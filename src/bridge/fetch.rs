//! Batch consumption through librdkafka's own batch call.
//!
//! The client library's per-message `poll` costs, per message, four clock reads, an
//! allocation and its free (the event wrapper), and a pass through its event dispatch:
//! about a quarter of the consuming thread measured at 300k messages/s. Here every
//! assigned partition's fetch queue is forwarded to one queue of the bridge's
//! ([`FetchQueue`]), read with `rd_kafka_consume_batch_queue`: one wait and a few clock
//! reads per batch, and the messages stay librdkafka's until the batch is cleared.
//!
//! Rebalance, error and commit events stay on the consumer's own queue, served by its
//! `poll` (and the context's callbacks) between batches, while no message of a batch is in
//! hand. Forwarding is set in the assign callback before the assignment takes effect, so
//! no message of the partition can have reached the consumer's queue first (which would
//! split its order across two queues). REBALANCE operations never reach this queue (only
//! messages, partition errors and version barriers are forwarded), so librdkafka's own
//! handling of them (a forced unassign) cannot bypass the bridge's callbacks.
//!
//! `unsafe` is allowed here for the calls into librdkafka (the `rdkafka` crate wraps
//! neither partition queues' forwarding nor the batch call); each block names what it
//! relies on.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::ptr::{self, NonNull};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;

/// One header: name and value.
pub(crate) type HeaderPair = (String, Option<Vec<u8>>);

/// The bridge's queue, to which the assigned partitions' fetch queues are forwarded.
pub(crate) struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
}

// SAFETY: a librdkafka queue handle may be used from any thread (the queue has its own
// lock); this handle is destroyed once, in `Drop`. (It is shared only inside a `Mutex`,
// so `Sync` is not claimed.)
unsafe impl Send for FetchQueue {}

impl FetchQueue {
    /// A new queue of the client `rk` (the consumer's native handle); `None` only if
    /// librdkafka returned none (it does not, but a null is not trusted).
    pub(crate) fn new(rk: *mut rd::rd_kafka_t) -> Option<Self> {
        // SAFETY: `rk` is the live handle of the consumer the caller holds; the queue it
        // returns is owned here and destroyed in `Drop`, before the consumer (the bridge
        // takes it out of the consumer's context at shutdown).
        let queue = unsafe { rd::rd_kafka_queue_new(rk) };
        NonNull::new(queue).map(|queue| Self { queue })
    }

    /// Forwards the fetch queue of `topic` / `partition` here; false if librdkafka has no
    /// queue for it (it creates one for any partition of a consumer, so not expected).
    pub(crate) fn forward(&self, rk: *mut rd::rd_kafka_t, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: `rk` is the consumer's live handle and `topic` a NUL-terminated string
        // that outlives the call.
        let fetchq = unsafe { rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition) };
        if fetchq.is_null() {
            return false;
        }
        // SAFETY: both handles are live; the forward takes its own reference on this
        // queue, and librdkafka keeps the partition's queue with the partition, so the
        // handle to it is destroyed right after (the forward stays).
        unsafe {
            rd::rd_kafka_queue_forward(fetchq, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(fetchq);
        }
        true
    }

    /// Takes up to `room` messages into `batch` (whose previous messages are destroyed
    /// first), waiting up to `wait` for the first; returns how many.
    ///
    /// librdkafka's batch call waits until its whole array is filled or the time is up,
    /// not only for a first message: at 50k messages/s a 1,024-message batch would hold
    /// the first one ~20 ms. So one message is waited for, then what is already queued is
    /// taken without waiting.
    pub(crate) fn take(&self, wait: Duration, room: usize, batch: &mut Batch) -> usize {
        batch.clear();
        batch.msgs.reserve(room);
        if self.append(wait, room.min(1), batch) > 0 {
            self.append(Duration::ZERO, room - 1, batch);
        }
        batch.msgs.len()
    }

    /// Appends up to `n` messages to `batch` (fewer if its spare capacity is smaller),
    /// waiting up to `wait`; returns how many.
    fn append(&self, wait: Duration, n: usize, batch: &mut Batch) -> usize {
        let len = batch.msgs.len();
        let n = n.min(batch.msgs.capacity() - len);
        if n == 0 {
            return 0;
        }
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is live; `msgs` has room for `n` pointers past its length (the
        // spare capacity, checked above), and librdkafka writes at most `n` there and
        // returns the count (or -1, read as 0).
        let got = unsafe {
            let at = batch.msgs.as_mut_ptr().add(len);
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), wait_ms, at, n)
        };
        let got = usize::try_from(got).unwrap_or(0).min(n);
        // SAFETY: the `got` pointers past `len` were just written by librdkafka, each a
        // message the batch now owns (destroyed in `clear`).
        unsafe { batch.msgs.set_len(len + got) };
        got
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is live and destroyed only here; librdkafka drops what it
        // still holds (messages not taken are read again from the committed offsets).
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Messages taken by one [`FetchQueue::take`], owned until the next take, `clear` or
/// drop. Must not outlive the consumer (librdkafka's destroy waits for its messages).
pub(crate) struct Batch {
    msgs: Vec<*mut rd::rd_kafka_message_t>,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self { msgs: Vec::new() }
    }

    /// Message `i`, if taken.
    pub(crate) fn get(&self, i: usize) -> Option<Msg<'_>> {
        let p = *self.msgs.get(i)?;
        // SAFETY: every pointer in `msgs` is a live message owned by this batch until
        // `clear` or drop, both of which need `&mut self`, so none outlives the borrow.
        unsafe { Msg::from_raw(p) }
    }

    /// Destroys the messages taken.
    pub(crate) fn clear(&mut self) {
        for p in self.msgs.drain(..) {
            // SAFETY: each pointer was handed over by librdkafka, owned here, and is
            // destroyed once (drained).
            unsafe { rd::rd_kafka_message_destroy(p) };
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A consumed message, borrowed for `'a` (from a [`Batch`] or a message the consumer's
/// `poll` returned).
#[derive(Clone, Copy)]
pub(crate) struct Msg<'a> {
    /// For reading the public fields.
    m: &'a rd::rd_kafka_message_t,
    /// For librdkafka's calls, which may write to the message's private part (its parsed
    /// headers) beyond the public struct `m` covers.
    raw: *mut rd::rd_kafka_message_t,
}

impl<'a> Msg<'a> {
    /// The message `poll` returned.
    pub(crate) fn of(msg: &'a BorrowedMessage<'_>) -> Option<Self> {
        // SAFETY: a `BorrowedMessage` keeps its native message alive while borrowed, and
        // the view does not outlive that borrow.
        unsafe { Self::from_raw(msg.ptr()) }
    }

    /// # Safety
    /// A non-null `raw` must be a message librdkafka keeps alive for `'a`.
    unsafe fn from_raw(raw: *mut rd::rd_kafka_message_t) -> Option<Self> {
        // SAFETY: the caller's contract.
        let m = unsafe { raw.as_ref() }?;
        Some(Self { m, raw })
    }

    /// The error librdkafka delivered in place of a message (a partition's fetch
    /// failing), if any.
    pub(crate) fn error(self) -> Option<RDKafkaErrorCode> {
        let err = self.m.err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| RDKafkaErrorCode::from(err))
    }

    pub(crate) fn partition(self) -> i32 {
        self.m.partition
    }

    pub(crate) fn offset(self) -> i64 {
        self.m.offset
    }

    /// The message's timestamp (epoch ms), or -1 when it has none.
    pub(crate) fn timestamp_ms(self) -> i64 {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live for `'a`; librdkafka only reads it and writes `kind`.
        unsafe { rd::rd_kafka_message_timestamp(self.raw, &mut kind) }
    }

    pub(crate) fn payload(self) -> Option<&'a [u8]> {
        // SAFETY: librdkafka's message holds `len` bytes at `payload` (or a null pointer)
        // for as long as the message lives, which is `'a`.
        unsafe { bytes(self.m.payload, self.m.len) }
    }

    pub(crate) fn key(self) -> Option<&'a [u8]> {
        // SAFETY: as `payload`, for the key.
        unsafe { bytes(self.m.key, self.m.key_len) }
    }

    /// The message's headers, copied; `None` when it has none, or when a header's name is
    /// not UTF-8 (bytes from any producer: the headers are then treated as absent).
    pub(crate) fn headers(self) -> Option<Vec<HeaderPair>> {
        let mut hdrs: *mut rd::rd_kafka_headers_t = ptr::null_mut();
        // SAFETY: the message is live for `'a`; librdkafka parses its headers into a list
        // the message owns, valid while it lives.
        let err = unsafe { rd::rd_kafka_message_headers(self.raw, &mut hdrs) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
            return None;
        }
        // SAFETY: `hdrs` is the message's live header list.
        let n = unsafe { rd::rd_kafka_header_cnt(hdrs) };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut name: *const std::ffi::c_char = ptr::null();
            let mut value: *const std::ffi::c_void = ptr::null();
            let mut size = 0usize;
            // SAFETY: `i` < the list's count; librdkafka points the three outputs into the
            // list (a NUL-terminated name, `size` bytes of value or null).
            let err = unsafe { rd::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: `name` is the header's NUL-terminated name, live with the list.
            let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
            // SAFETY: `size` bytes at `value`, live with the list (null: no value).
            let value = unsafe { bytes(value.cast_mut(), size) }.map(<[u8]>::to_vec);
            out.push((name.to_owned(), value));
        }
        Some(out)
    }
}

/// `len` bytes at `p`, or `None` for a null pointer.
///
/// # Safety
/// A non-null `p` must point to `len` initialised bytes that stay valid and unchanged
/// for `'a`.
unsafe fn bytes<'a>(p: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}
