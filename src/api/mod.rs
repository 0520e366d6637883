//! The HTTP API (DESIGN "HTTP API"): hyper on a glommio executor on the cold core.
pub mod config;
pub mod context;
