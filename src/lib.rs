//! rimd: the daemon. Its modules follow the data: producers attach and [`ingest`] polls
//! their rings, routes each event as a [`tick`] to the [`reflex`] shard that owns its
//! partition, which keeps per-node state, evaluates rules and publishes decisions; the
//! [`stats`] of every stage go to a shared-memory segment. [`topology`] builds the rings
//! and duties from the [`config`], [`daemon`] starts and stops the threads that own them;
//! [`agent`] is the shard work loop.
//!
//! `unsafe` is denied in the whole crate but for two modules: [`sys`], which wraps the few
//! system calls the standard library lacks in safe functions, and `api::io`, the glommio ↔
//! hyper stream adapter. The shared-memory and journal code that needs more lives in the
//! `rim-ring` and `rim-journal` crates, with loom models and crash tests of its own.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod backtest;
pub mod bridge;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod entry;
pub mod fault;
pub mod ingest;
pub mod lockfile;
pub mod memory;
pub mod peerlog;
pub mod persist;
pub mod plane;
pub mod reflex;
pub mod report;
pub mod rulebook;
pub mod stats;
pub mod sys;
pub mod tick;
pub mod topology;
pub mod wake;
