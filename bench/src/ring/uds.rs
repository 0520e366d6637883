//! Row `uds`: a Unix-domain `SOCK_SEQPACKET` socket pair between two processes (message
//! boundaries kept, one `send`/`recv` per message).
//!
//! Reads and writes are plain **blocking** calls, the way programs use sockets: a receiver
//! sleeps in the kernel until a message arrives, so every message pays a wake-up. Each call
//! is bounded by a short `SO_RCVTIMEO`/`SO_SNDTIMEO` so the watchdog still gets to run; a
//! call that hits it reports "not yet" and is retried.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::time::Duration;

use super::link::{Link, Message};
use super::process::{run_process_row, PeerEnd, ProcessTransport};
use super::RingCfg;
use crate::error::BenchError;
use crate::peer::PeerArgs;
use crate::report::Row;

/// The row's name.
pub const NAME: &str = "uds";

/// How long one blocking call may wait before the watchdog gets a look.
const SOCKET_WAIT_SLICE: Duration = Duration::from_millis(100);

/// The transport marker for [`run_process_row`].
pub struct Uds;

/// One end of the socket pair.
pub struct UdsEnd {
    fd: OwnedFd,
}

impl Link for UdsEnd {
    const WAITS_IN_KERNEL: bool = true;

    fn send(&mut self, msg: &Message) -> Result<bool, BenchError> {
        // SAFETY: `msg` is a live buffer of `msg.len()` readable bytes; `fd` is an open
        // socket owned by `self`.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
        if sent < 0 {
            return match last_errno() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(false),
                Some(libc::EPIPE | libc::ECONNRESET) => Err(closed(SEND_CLOSED)),
                _ => Err(BenchError::last_os("sending on the Unix socket")),
            };
        }
        // A SEQPACKET send is all or nothing.
        Ok(true)
    }

    fn recv(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError> {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes; `fd` is an open
        // socket owned by `self`. MSG_TRUNC makes the call return the message's real length
        // while writing at most `buf.len()` bytes.
        let received = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
        if received > 0 {
            return Ok(Some(received.unsigned_abs()));
        }
        if received == 0 {
            return Err(closed(RECV_CLOSED));
        }
        match last_errno() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(None),
            Some(libc::ECONNRESET) => Err(closed(RECV_CLOSED)),
            _ => Err(BenchError::last_os("receiving on the Unix socket")),
        }
    }
}

/// `errno` of the call that just failed.
fn last_errno() -> Option<i32> {
    std::io::Error::last_os_error().raw_os_error()
}

const SEND_CLOSED: &str = "the other end of the Unix socket to take a message (it closed)";
const RECV_CLOSED: &str = "a message on the Unix socket (the other end closed it)";

/// The other process closed its end (it exited): its own error explains why.
fn closed(waiting_for: &'static str) -> BenchError {
    BenchError::PeerGone { waiting_for }
}

impl ProcessTransport for Uds {
    const NAME: &'static str = NAME;
    type End = UdsEnd;

    fn client_end(_cfg: &RingCfg) -> Result<(UdsEnd, PeerEnd), BenchError> {
        let (mine, theirs) = socket_pair()?;
        bound_waits(&mine)?;
        let endpoint = theirs.as_raw_fd().to_string();
        let peer_end = PeerEnd {
            endpoint,
            fd: Some(theirs),
        };
        Ok((UdsEnd { fd: mine }, peer_end))
    }

    fn peer_end(args: &PeerArgs) -> Result<UdsEnd, BenchError> {
        let fd = adopt_inherited_socket(&args.endpoint, libc::SOCK_SEQPACKET)?;
        bound_waits(&fd)?;
        Ok(UdsEnd { fd })
    }
}

/// Measures the row.
pub fn run(cfg: &RingCfg) -> Result<Row, BenchError> {
    run_process_row::<Uds>(cfg)
}

/// A connected, close-on-exec SEQPACKET pair.
fn socket_pair() -> Result<(OwnedFd, OwnedFd), BenchError> {
    let mut fds: [RawFd; 2] = [-1, -1];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
        return Err(BenchError::last_os("creating a Unix socket pair"));
    }
    // SAFETY: socketpair succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Takes ownership of the socket inherited from the parent, after checking the number
/// names a socket of `kind` (`SOCK_SEQPACKET`, `SOCK_STREAM`).
pub(super) fn adopt_inherited_socket(endpoint: &str, kind_wanted: libc::c_int) -> Result<OwnedFd, BenchError> {
    let not_a_socket = || BenchError::Integrity {
        what: format!("`--endpoint {endpoint}` is not an inherited socket of type {kind_wanted}"),
    };
    let fd: RawFd = endpoint.parse().map_err(|_| not_a_socket())?;
    if fd < 0 {
        return Err(not_a_socket());
    }
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid, writable and sized as SO_TYPE requires; an fd
    // that is not an open socket makes the call fail, nothing more.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || kind != kind_wanted {
        return Err(not_a_socket());
    }
    // SAFETY: the fd is an open socket this process inherited and nothing else in it
    // owns (the parent passed it to exactly this peer).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bounds each blocking send and receive by [`SOCKET_WAIT_SLICE`].
fn bound_waits(fd: &OwnedFd) -> Result<(), BenchError> {
    let slice = libc::timeval {
        tv_sec: 0,
        tv_usec: libc::suseconds_t::try_from(SOCKET_WAIT_SLICE.as_micros()).unwrap_or(100_000),
    };
    for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: `slice` is a valid timeval and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&slice as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(BenchError::last_os("setting a Unix socket's timeouts"));
        }
    }
    Ok(())
}
