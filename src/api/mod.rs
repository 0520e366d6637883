//! The HTTP API (DESIGN "HTTP API"): hyper 1 (HTTP/1.1 with upgrades) on a glommio
//! executor of its own thread, `rimd-http`, on the cold core.
//!
//! What each module owns:
//! - [`server`]: the thread, the executor, the listener, stop and drain, and the request
//!   pipeline every route goes through (request id, tracing span, routing, auth, rate
//!   limit, content type, body limit);
//! - [`envelope`]: the `{data, meta}` and error envelopes: the one place errors are built;
//! - [`routes`]: the route table and the handlers of capsules, history, rules, decisions,
//!   metrics and health; [`events`]: `POST /events`; [`slice`]: the temporal slice,
//!   [`resident`]: its recent windows kept in memory, rendered;
//! - [`ws`]: `GET /ws/decisions`, RFC 6455 framing and the decision fan-out;
//! - [`auth`], [`ratelimit`], [`query`]: tokens, limits, query strings;
//! - [`conn`]: the connection cap and the header, body and idle timeouts;
//! - [`io`]: the glommio ↔ hyper stream adapter (the only unsafe item);
//! - [`context`]: what the API may touch of the daemon (owned by the daemon side).
//!
//! Everything runs on one single-threaded executor: shared state is `Rc`/`RefCell`/`Cell`,
//! no lock is taken on a request's path. Storage writes (`POST`/`DELETE /capsules`) and
//! the audit-log verification run on glommio's blocking pool so an fsync never stalls
//! the other connections.

pub(crate) mod auth;
pub(crate) mod backtests;
/// `[api]` (defined with the rest of the configuration, which depends on nothing here).
pub use crate::config::api as config;
pub(crate) mod conn;
pub(crate) mod context;
pub(crate) mod envelope;
pub mod events;
pub(crate) mod io;
pub mod query;
pub(crate) mod ratelimit;
pub(crate) mod resident;
pub(crate) mod routes;
mod scan;
pub(crate) mod server;
pub(crate) mod slice;
pub mod ws;

pub use server::spawn;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// `[api]` settings that do not make sense.
    #[error("config: {0}")]
    Config(String),
    /// The token file is unusable.
    #[error(transparent)]
    Tokens(#[from] auth::TokenFileError),
    /// The listen address does not parse or cannot be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// `api.listen`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The bound address could not be written to `{run_dir}/http.addr`.
    #[error("cannot write {path}: {source}")]
    AddrFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The thread or its glommio executor did not start (glommio needs
    /// `RLIMIT_MEMLOCK` of at least 512 KiB for its io_uring rings).
    #[error("cannot start the HTTP thread: {0}")]
    Thread(String),
}
