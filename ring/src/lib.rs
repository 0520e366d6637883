//! # rim-ring: rimd's shared-memory rings
//!
//! Guarantees first:
//! * **The producer never blocks**: [`spsc::Producer::try_publish_event`] either commits or
//!   says why not ([`spsc::PublishError`]: full, too large, invalid, quarantined, closed).
//! * **Neither side allocates per event.** Buffers are sized when a ring is opened; the
//!   only allocation afterwards is a symbol-table entry when a ring carries a string for
//!   the first time (a new node id, status, source topic or metric name), on both sides.
//! * **The consumer trusts nothing in the segment.** It keeps its own copy of the ring's
//!   geometry, bounds-checks every record header, copies each record into private memory
//!   before reading it, and checks its structure (rkyv's bytecheck for a definition; the
//!   same rules by hand for an event, whose layout is rkyv's) and the data model's rules
//!   ([`wire::Decoder::decode`]). Strings cross a ring once, as numbered symbols
//!   ([`wire`]), so the hot path validates numbers, not text. A corrupt segment is
//!   quarantined with a reason; nothing a producer writes can make the consumer fault, and
//!   segments are sealed memfds whose size no one can change ([`segment`]).
//! * **A record is visible only whole**: its header word, stored last with release
//!   ordering, is the commit ([`spsc`] explains the protocol; `tests/loom_protocol.rs`
//!   model-checks it).
//! * **Dead peers are detected** by pidfd ([`liveness`]), and wake-ups cost a syscall only
//!   when the other side said it sleeps ([`wait`]).
//! * **Decisions fan out** through a broadcast ring ([`broadcast`]) that readers follow at
//!   their own pace, read-only, and that tells a lapped reader how much it missed.
//! * **C and C++ feed handlers** publish through the C ABI in [`ffi`] and read decisions
//!   through [`ffi_subscriber`] (`include/rim_ring.h`); [`decision`] reads and checks the
//!   decision record without allocating.
//!
//! The crate knows nothing of the daemon: it is the contract between a feed handler and
//! rimd, and can be linked by either alone.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// Under loom only the protocol core is built; the OS-facing helpers go unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(loom))]
pub mod attach;
pub mod broadcast;
pub mod clock;
pub mod decision;
pub mod event;
#[cfg(not(loom))]
pub mod ffi;
#[cfg(not(loom))]
pub mod ffi_subscriber;
mod header;
pub mod liveness;
pub mod segment;
pub mod spsc;
mod symtab;
mod sync;
pub mod wait;
pub mod wire;

pub use event::{EventError, EventRef, NodeIdError, RimFastEvent, RimNodeId};
pub use header::HEADER_BYTES;
pub use segment::{prefetch_line, prefetch_line_for_write, prefetch_whole_lines_for_write, Segment, SegmentError};
pub use spsc::{Consumer, PollError, Producer, PublishError, Refusal, Verdict, Verdicts};
pub use symtab::same_bytes;
pub use wire::{EventView, Sym, SymEvent, SymbolKind};
