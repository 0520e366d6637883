//! rimd: the daemon. Its modules follow the data: ingest → reflex → persist → api/bridge.
#![forbid(unsafe_code)]
