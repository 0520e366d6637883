//! rim-core: the daemon's event path and rule logic, without the servers around it. Its
//! modules follow the data: producers attach and [`ingest`] polls their rings, routes each
//! event as a [`tick`] to the [`reflex`] shard that owns its partition, which keeps
//! per-node state, evaluates rules and publishes decisions; [`entry`] is what both hand to
//! the journal thread, [`streams`] the journal's layout on disk. [`agent`] is the shard
//! work loop, [`config`] the daemon's configuration, [`plane`] and [`rulebook`] the rule
//! plane and its history, [`backtest`] a replay of the journal through candidate rules,
//! [`clock`] the one seam every component reads time through.
//!
//! The daemon crate (`rimd`) adds what needs I/O servers or the store (HTTP, the Kafka
//! bridge, persistence, the process's start-up); `rimctl` uses this crate and the small
//! ones only, so it builds without librdkafka, hyper, glommio or redb.
//!
//! `unsafe` is denied in the whole crate but for [`sys`], which wraps the few system calls
//! the standard library lacks in safe functions. The shared-memory and journal code that
//! needs more lives in the `rim-ring` and `rim-journal` crates, with loom models and crash
//! tests of its own.
#![deny(unsafe_code)]

pub mod agent;
pub mod backtest;
pub mod clock;
pub mod config;
pub mod demo;
pub mod entry;
pub(crate) mod fault;
pub mod ingest;
pub mod irqs;
pub mod memory;
pub mod peerlog;
pub mod plane;
pub mod reflex;
pub mod report;
pub mod rulebook;
pub mod streams;
pub mod sys;
pub mod tick;
pub mod wake;
