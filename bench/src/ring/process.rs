//! Running a transport between two processes: the client (this process, on the client
//! core) against a peer process (`rim-bench __peer <row>-echo|<row>-sink`, on the peer
//! core). A transport says how to make its two ends ([`ProcessTransport`]); this module
//! spawns, measures, and reaps.

use std::os::fd::OwnedFd;

use super::link::{client_round_trips, client_stream, serve_echo, serve_sink, Link};
use super::{combine, ring_row, RingCfg};
use crate::affinity::pin_current_thread;
use crate::error::BenchError;
use crate::peer::{PeerArgs, PeerCommand, PeerProcess};
use crate::report::Row;
use crate::watchdog::Watch;

/// What the peer process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Echo every message back (round trips).
    Echo,
    /// Count and check a stream, report back (throughput).
    Sink,
}

impl Role {
    /// The suffix of the peer kind (`uds-echo`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Echo => "echo",
            Role::Sink => "sink",
        }
    }
}

/// How the peer process finds its end of the link.
#[derive(Debug, Default)]
pub struct PeerEnd {
    /// Passed as `--endpoint`: an fd number, a service name, a path.
    pub endpoint: String,
    /// A descriptor the peer inherits (its number goes in `endpoint`).
    pub fd: Option<OwnedFd>,
}

/// A message transport between two processes.
pub trait ProcessTransport {
    /// The row's name; the peer kinds are `<NAME>-echo` and `<NAME>-sink`.
    const NAME: &'static str;

    /// One end of the transport.
    type End: Link;

    /// Makes the client's end (before the peer starts) and says where the peer's end is.
    fn client_end(cfg: &RingCfg) -> Result<(Self::End, PeerEnd), BenchError>;

    /// Opens the peer's end, in the peer process.
    fn peer_end(args: &PeerArgs) -> Result<Self::End, BenchError>;
}

/// Measures one row: round trips against an echo peer, then a stream into a sink peer.
pub fn run_process_row<T: ProcessTransport>(cfg: &RingCfg) -> Result<Row, BenchError> {
    pin_current_thread(cfg.client_core)?;
    let rtt = with_peer::<T, _>(cfg, Role::Echo, cfg.rtt.total(), |link, watch| {
        client_round_trips(link, &cfg.rtt, watch)
    })?;
    let stream = with_peer::<T, _>(cfg, Role::Sink, cfg.stream.messages, |link, watch| {
        client_stream(link, &cfg.stream, watch)
    })?;
    Ok(ring_row(T::NAME, cfg, &rtt, &stream))
}

/// Makes the link, starts the peer, runs `measure` on the client end, and reaps the peer.
/// The client's end is dropped only after the peer has exited.
fn with_peer<T: ProcessTransport, R>(
    cfg: &RingCfg,
    role: Role,
    count: u64,
    measure: impl FnOnce(&mut T::End, &Watch<'_>) -> Result<R, BenchError>,
) -> Result<R, BenchError> {
    let (mut link, peer_end) = T::client_end(cfg)?;
    let kind = format!("{}-{}", T::NAME, role.as_str());
    let mut command = PeerCommand::new(kind, cfg.peer_core, count, cfg.timeout).endpoint(peer_end.endpoint);
    if let Some(fd) = peer_end.fd {
        command = command.inherit(fd);
    }
    let peer = command.spawn()?;
    let measured = {
        let peer_gone = || peer.has_exited();
        let watch = Watch::with_peer(cfg.timeout, &peer_gone);
        measure(&mut link, &watch)
    };
    let outcome = settle(peer, measured);
    drop(link);
    outcome
}

/// Reaps the peer and decides whose error (if any) the row reports.
fn settle<R>(mut peer: PeerProcess, measured: Result<R, BenchError>) -> Result<R, BenchError> {
    let peer_gone = matches!(measured, Err(BenchError::PeerGone { .. }));
    if measured.is_err() && !peer_gone {
        // The client gave up; the peer would only wait for a goodbye that never comes.
        peer.kill();
    }
    combine(measured, peer.finish())
}

/// The peer process: opens its end and serves `role` for `args.count` messages.
pub fn serve_peer<T: ProcessTransport>(args: &PeerArgs, role: Role) -> Result<(), BenchError> {
    let mut link = T::peer_end(args)?;
    let watch = Watch::new(args.timeout());
    match role {
        Role::Echo => serve_echo(&mut link, args.count, &watch),
        Role::Sink => serve_sink(&mut link, args.count, &watch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::find_peer;

    fn peer_kinds_exist<T: ProcessTransport>() {
        for role in [Role::Echo, Role::Sink] {
            let kind = format!("{}-{}", T::NAME, role.as_str());
            assert!(find_peer(&kind).is_ok(), "no `__peer {kind}` is registered");
        }
    }

    #[test]
    fn every_process_transport_has_its_peers_registered() {
        peer_kinds_exist::<crate::ring::uds::Uds>();
        peer_kinds_exist::<crate::ring::iceoryx2_ipc::Iceoryx2>();
        peer_kinds_exist::<crate::ring::rimd_shm::RimdShm<false>>();
        peer_kinds_exist::<crate::ring::rimd_shm::RimdShmBytes>();
    }
}
