//! rimd's reflex rule language: a TOML (or JSON) rule file compiled into a [`RuleSet`]
//! whose conditions evaluate on the daemon's hot path in tens of nanoseconds, without
//! allocating.
//!
//! The crate knows nothing of the daemon: values come in through the [`Inputs`] trait, and
//! what a rule read goes out as [`Evidence`]. The language is specified in `docs/rules.md`.
//!
//! Module map, in the order data flows:
//! - `toml_in`, `json_in`: read a file into per-rule drafts, with positions;
//! - `source`: what both formats share (key validation, position mapping);
//! - `lex`, `parse`, `ast`: the condition's syntax;
//! - `program`: type checking, the flat compiled form, evaluation;
//! - `glob`: node patterns; `duration`: `5s`-style durations; `hash`: [`name_hash`];
//! - `ruleset`: assembling rules (duplicates, stale ordinals, versions) and the public API;
//! - `model`: the shared vocabulary; `error`: [`CompileError`], [`CompileErrors`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ast;
mod duration;
mod error;
mod glob;
mod hash;
mod json_in;
mod lex;
mod model;
mod parse;
mod program;
mod ruleset;
mod source;
mod toml_in;

pub use error::{CompileError, CompileErrors};
pub use glob::{Glob, GLOB_BYTES_MAX};
pub use hash::{name_hash, name_hash_bytes};
pub use model::{Evidence, Field, Inputs, Limits, MetricKey, Series, Severity, EVIDENCE_MAX};
pub use parse::{METRIC_NAME_MAX, NEST_MAX};
pub use ruleset::{compile_json, compile_toml, Rule, RuleSet};
pub use source::{FILE_BYTES_MAX, GLOBS_MAX, ID_BYTES_MAX, WHEN_BYTES_MAX};
