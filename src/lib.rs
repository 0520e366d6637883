//! rimd: the daemon. The event path and rule logic live in `rim-core` and are re-exported
//! here under their module names: producers attach and [`ingest`] polls their rings, routes
//! each event as a [`tick`] to the [`reflex`] shard that owns its partition, which keeps
//! per-node state, evaluates rules and publishes decisions. This crate adds what needs I/O
//! servers or the store: [`persist`] (the journal thread, roll-ups and the capsule store),
//! the HTTP [`api`], the Kafka [`bridge`], the [`stats`] segment, [`topology`], which builds
//! the rings and duties from the [`config`], and [`daemon`], which starts and stops the
//! threads that own them.
//!
//! `unsafe` is denied in the whole crate but for `api::io`, the glommio ↔ hyper stream
//! adapter (the system calls are wrapped in `rim_core::sys`). The shared-memory and journal
//! code that needs more lives in the `rim-ring` and `rim-journal` crates, with loom models
//! and crash tests of its own.
#![deny(unsafe_code)]

pub use rim_core::{
    agent, backtest, clock, config, demo, entry, ingest, memory, peerlog, plane, reflex, report, rulebook, streams,
    sys, tick, wake,
};

pub mod api;
pub mod bridge;
pub mod daemon;
pub(crate) mod lockfile;
pub mod persist;
pub(crate) mod stats;
pub(crate) mod topology;
