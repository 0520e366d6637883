//! # rimd: the daemon
//!
//! Guarantees first:
//! * **A producer is never blocked by the daemon.** Its ring is its own; when it is full
//!   the producer is told `Full` and decides. The hot shards do no syscall and no
//!   allocation per event, and never wait on the cold side: persistence that falls behind
//!   shows as a full ring, not as a stalled shard.
//! * **An event acknowledged durable survives a crash.** A producer's durable position
//!   moves only after the group commit that covers the event returned from `fdatasync`
//!   ([`persist`]; the journal's crash cases are in `rim_journal`). Recovery replays the
//!   journal from the store's watermarks, so the node state, the dedup windows, the
//!   roll-ups and every decision chain come back as they were, and a chain resumes after
//!   its last durable decision.
//! * **Decisions can be checked by anyone.** Each reflex shard chains its decisions with
//!   SHA-256 (`rim_decision`); `GET /decisions/verify` recomputes the chain from the log,
//!   and a subscriber checks it live as it reads (`rimctl tail --verify`).
//! * **Nothing from outside can crash it.** Every byte that comes from another process
//!   (shared-memory rings, HTTP bodies and queries, WebSocket frames, Kafka messages and
//!   registry answers, rule files, configuration) is bounds-checked and refused with a
//!   typed error that says what was wrong; the parsers have fuzz targets (`fuzz/`).
//! * **A capsule is written once.** Its key is the design's SHA-256 of scope, time,
//!   resolution and vantage; the same capsule twice is one, a different one under the same
//!   key is a conflict.
//! * **The wall clock is read through one [`clock::Clock`]**, handed to every component at
//!   start (pacing timers and socket timeouts read `Instant`): tests run staleness, the
//!   peer log's rate window and rule install times on a manual clock.
//!
//! The event path and rule logic live in `rim-core` and are re-exported here under their
//! module names: producers attach and [`ingest`] polls their rings, routes each event as a
//! [`tick`] to the [`reflex`] shard that owns its partition, which keeps per-node state,
//! evaluates rules and publishes decisions. This crate adds what needs I/O servers or the
//! store: [`persist`] (the journal thread, roll-ups and the capsule store), the HTTP
//! [`api`], the Kafka [`bridge`], the stats segment, the topology (the rings and duties
//! built from the [`config`]), and [`daemon`], which starts and stops the threads that own
//! them.
//!
//! `unsafe` is denied in the whole crate but for `api::io`, the glommio ↔ hyper stream
//! adapter (the system calls are wrapped in `rim_core::sys`), and `bridge::fetch`,
//! librdkafka's batch consumption, which the `rdkafka` crate does not wrap. The shared-memory and journal
//! code that needs more lives in the `rim-ring` and `rim-journal` crates, with loom models
//! and crash tests of its own.
#![deny(unsafe_code)]

pub use rim_core::{
    agent, backtest, clock, config, demo, entry, ingest, irqs, memory, peerlog, plane, reflex, report, rulebook,
    streams, sys, tick, wake,
};

pub mod api;
pub mod bridge;
pub mod daemon;
pub(crate) mod lockfile;
pub mod persist;
pub(crate) mod stats;
#[cfg(test)]
pub(crate) mod test_support;
pub(crate) mod topology;
