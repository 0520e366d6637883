//! Attaching a process to a ring owned by another: the hand-over of a sealed memfd over a
//! Unix stream socket (`SCM_RIGHTS`), with the peer's pid taken from the kernel
//! (`SO_PEERCRED`), never from anything the peer wrote.
//!
//! The owner of the rings (the daemon) listens on a socket in its ring directory (default
//! `/dev/shm/rimd/rimd.sock`, the directory 0700 and the socket 0600 unless a group is
//! configured). A producer connects and sends a fixed 64-byte request; the owner creates,
//! sizes, seals and initialises a segment and answers with a fixed 64-byte reply carrying
//! the fd. Everything read from the socket is length-checked; a malformed request is
//! answered with an error reply and dropped.
//!
//! ```text
//! request (64 B, little-endian): magic "RIMATTCH" | version u32 | role u32 | capacity u64 | name [u8; 40]
//! reply   (64 B, little-endian): magic "RIMREPLY" | status u32 | reserved u32 | message [u8; 48]
//! ```
//!
//! An owner that serves many peers at once uses [`accept_incoming`]: a non-blocking
//! accept whose [`Incoming`] connection collects its request as bytes arrive, so one
//! silent or trickling peer never holds up another (`docs/design.md`, "Attach").

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::broadcast;
use crate::segment::{Segment, SegmentError};
use crate::spsc::{self, Consumer, Producer};

const REQUEST_MAGIC: u64 = u64::from_le_bytes(*b"RIMATTCH");
const REPLY_MAGIC: u64 = u64::from_le_bytes(*b"RIMREPLY");
const PROTOCOL_VERSION: u32 = 1;
const MESSAGE_BYTES: usize = 64;
const NAME_BYTES: usize = 40;
/// Reply status: granted; the reply carries the segment fd.
pub const STATUS_OK: u32 = 0;
/// Reply status: refused; the message says why.
pub const STATUS_REFUSED: u32 = 1;
/// How long either side waits for the other's message.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What the attaching process wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A producer asking for its own SPSC ring of `capacity` data bytes.
    Producer,
    /// A subscriber asking for the decision broadcast ring.
    Subscriber,
}

impl Role {
    fn code(self) -> u32 {
        match self {
            Role::Producer => 1,
            Role::Subscriber => 2,
        }
    }
}

/// Why attaching failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Socket I/O failed.
    #[error("attach socket {op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The peer sent something that is not this protocol.
    #[error("malformed attach message: {0}")]
    Protocol(&'static str),
    /// The owner refused the request.
    #[error("attach refused: {0}")]
    Refused(String),
    /// The received segment could not be used.
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

/// Bounds every read and write on `stream` by [`IO_TIMEOUT`].
fn bound_io(stream: &UnixStream) -> Result<(), AttachError> {
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(io_err("set timeout"))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(io_err("set timeout"))
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> AttachError {
    move |source| AttachError::Io { op, source }
}

/// An attach request read from a connected peer, waiting for an answer.
#[derive(Debug)]
pub struct Request {
    stream: UnixStream,
    /// The peer's pid, from the kernel.
    pub peer_pid: u32,
    /// The peer's uid, from the kernel.
    pub peer_uid: u32,
    /// What the peer asks for.
    pub role: Role,
    /// Data bytes asked for (producers).
    pub capacity: usize,
    /// The name the peer gave itself (printable ASCII, for logs and stats).
    pub name: String,
}

/// Accepts one connection and reads its request. A peer that sends garbage gets an error
/// reply and an `Err`; the listener is unaffected.
pub fn accept(listener: &UnixListener) -> Result<Request, AttachError> {
    let (stream, _) = listener.accept().map_err(io_err("accept"))?;
    bound_io(&stream)?;
    let (peer_pid, peer_uid) = peer_cred(stream.as_fd())?;
    let mut msg = [0u8; MESSAGE_BYTES];
    read_exact_by(&stream, &mut msg, IO_TIMEOUT)?;
    request_from(stream, peer_pid, peer_uid, &msg)
}

/// Parses a whole request; a malformed one is answered with a refusal.
fn request_from(
    stream: UnixStream,
    peer_pid: u32,
    peer_uid: u32,
    msg: &[u8; MESSAGE_BYTES],
) -> Result<Request, AttachError> {
    match parse_request(msg) {
        Ok((role, capacity, name)) => Ok(Request {
            stream,
            peer_pid,
            peer_uid,
            role,
            capacity,
            name,
        }),
        Err(e) => {
            let _ = send_reply(&stream, STATUS_REFUSED, "malformed request", None);
            Err(e)
        }
    }
}

/// A connection whose request has not fully arrived: the non-blocking side of the
/// protocol, for owners that serve many peers at once from one thread.
#[derive(Debug)]
pub struct Incoming {
    stream: UnixStream,
    peer_pid: u32,
    peer_uid: u32,
    msg: [u8; MESSAGE_BYTES],
    got: usize,
}

/// Accepts one connection if one is waiting (`listener` must be non-blocking), without
/// reading anything from it. `Ok(None)`: nobody is waiting.
pub fn accept_incoming(listener: &UnixListener) -> Result<Option<Incoming>, AttachError> {
    let stream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
        Err(source) => return Err(AttachError::Io { op: "accept", source }),
    };
    stream.set_nonblocking(true).map_err(io_err("set non-blocking"))?;
    let (peer_pid, peer_uid) = peer_cred(stream.as_fd())?;
    Ok(Some(Incoming {
        stream,
        peer_pid,
        peer_uid,
        msg: [0; MESSAGE_BYTES],
        got: 0,
    }))
}

impl Incoming {
    /// The peer's pid, from the kernel.
    pub fn peer_pid(&self) -> u32 {
        self.peer_pid
    }

    /// The peer's uid, from the kernel.
    pub fn peer_uid(&self) -> u32 {
        self.peer_uid
    }

    /// The socket, to wait on with `poll(2)`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Reads whatever has arrived, never blocking. `Ok(true)`: the whole request is here
    /// (call [`Incoming::into_request`]); `Ok(false)`: not yet.
    pub fn read_available(&mut self) -> Result<bool, AttachError> {
        while self.got < MESSAGE_BYTES {
            match (&self.stream).read(&mut self.msg[self.got..]) {
                Ok(0) => return Err(AttachError::Protocol("peer closed before a whole request")),
                Ok(n) => self.got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(source) => {
                    return Err(AttachError::Io {
                        op: "read request",
                        source,
                    })
                }
            }
        }
        Ok(true)
    }

    /// The request, once [`Incoming::read_available`] said it is whole; a malformed one
    /// is answered with a refusal and returned as the error.
    pub fn into_request(self) -> Result<Request, AttachError> {
        if self.got < MESSAGE_BYTES {
            return Err(AttachError::Protocol("request not complete"));
        }
        request_from(self.stream, self.peer_pid, self.peer_uid, &self.msg)
    }

    /// Answers with a refusal (best effort: the reply is small and the socket's buffer
    /// empty, so it never blocks) and closes the connection.
    pub fn refuse(self, why: &str) {
        let _ = send_reply(&self.stream, STATUS_REFUSED, why, None);
    }
}

/// Reads exactly `buf.len()` bytes within `timeout` in total: a peer trickling a byte at a
/// time cannot hold the caller longer than that.
fn read_exact_by(stream: &UnixStream, buf: &mut [u8], timeout: Duration) -> Result<(), AttachError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(AttachError::Protocol("request not received in time"));
        }
        stream.set_read_timeout(Some(left)).map_err(io_err("set timeout"))?;
        match (&*stream).read(&mut buf[done..]) {
            Ok(0) => return Err(AttachError::Protocol("peer closed before a whole request")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(AttachError::Protocol("request not received in time"));
            }
            Err(source) => {
                return Err(AttachError::Io {
                    op: "read request",
                    source,
                })
            }
        }
    }
    Ok(())
}

fn parse_request(msg: &[u8; MESSAGE_BYTES]) -> Result<(Role, usize, String), AttachError> {
    let u64_at = |o: usize| {
        msg.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let u32_at = |o: usize| {
        msg.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    if u64_at(0) != Some(REQUEST_MAGIC) {
        return Err(AttachError::Protocol("bad request magic"));
    }
    if u32_at(8) != Some(PROTOCOL_VERSION) {
        return Err(AttachError::Protocol("unsupported protocol version"));
    }
    let role = match u32_at(12) {
        Some(1) => Role::Producer,
        Some(2) => Role::Subscriber,
        _ => return Err(AttachError::Protocol("unknown role")),
    };
    let capacity = u64_at(16)
        .and_then(|c| usize::try_from(c).ok())
        .ok_or(AttachError::Protocol("capacity"))?;
    let raw_name = &msg[24..24 + NAME_BYTES];
    let end = raw_name.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
    let name = &raw_name[..end];
    if !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(AttachError::Protocol("name must be printable ASCII"));
    }
    Ok((role, capacity, String::from_utf8_lossy(name).into_owned()))
}

impl Request {
    /// Creates a sealed SPSC segment of the requested capacity, hands it to the producer,
    /// and returns the consuming end, already watching the producer's pid.
    pub fn grant_producer(self, capacity_max: usize) -> Result<Consumer, AttachError> {
        if self.role != Role::Producer {
            return Err(self.refuse("this socket hands out producer rings only"));
        }
        if !self.capacity.is_power_of_two() || self.capacity < spsc::CAPACITY_BYTES_MIN || self.capacity > capacity_max
        {
            return Err(self.refuse("capacity must be a power of two within the daemon's limits"));
        }
        let seg = Segment::create_memfd(&format!("rimd-{}", self.name), spsc::segment_bytes(self.capacity))?;
        spsc::init(&seg)?;
        let seg = Arc::new(seg);
        let mut consumer = Consumer::open(seg.clone())?;
        consumer.watch_producer(self.peer_pid);
        send_reply(&self.stream, STATUS_OK, "ok", seg.fd())?;
        Ok(consumer)
    }

    /// Hands an existing broadcast segment to a subscriber. Create it with
    /// [`Segment::create_memfd_for_readers`], so the subscriber can only map it read-only.
    pub fn grant_subscriber(self, seg: &Segment) -> Result<(), AttachError> {
        if self.role != Role::Subscriber {
            return Err(self.refuse("expected a subscriber request"));
        }
        send_reply(&self.stream, STATUS_OK, "ok", seg.fd())
    }

    /// Answers with a refusal the peer will see as [`AttachError::Refused`] (the message
    /// is cut to the reply's 48 bytes).
    pub fn refuse(self, why: &str) -> AttachError {
        match send_reply(&self.stream, STATUS_REFUSED, why, None) {
            Ok(()) => AttachError::Refused(why.to_owned()),
            Err(e) => e,
        }
    }
}

/// Connects to the owner at `socket`, asks for a producer ring of `capacity` data bytes
/// (a power of two) and opens its producing end.
pub fn attach_producer(socket: &Path, name: &str, capacity: usize) -> Result<Producer, AttachError> {
    let (seg, owner_pid) = request(socket, Role::Producer, name, capacity)?;
    let mut producer = Producer::open(Arc::new(seg))?;
    producer.watch_consumer(owner_pid);
    Ok(producer)
}

/// Connects to the owner at `socket` and opens a reader of its broadcast ring, starting
/// with the next record published.
pub fn attach_subscriber(socket: &Path, name: &str) -> Result<broadcast::Reader, AttachError> {
    let (fd, _) = request_fd(socket, Role::Subscriber, name, 0)?;
    let seg = Segment::from_fd_read_only(fd)?;
    Ok(broadcast::Reader::open(Arc::new(seg))?)
}

/// Asks the owner for a segment; returns it with the owner's pid (from the kernel).
fn request(socket: &Path, role: Role, name: &str, capacity: usize) -> Result<(Segment, u32), AttachError> {
    let (fd, owner_pid) = request_fd(socket, role, name, capacity)?;
    Ok((Segment::from_fd(fd)?, owner_pid))
}

/// Asks the owner for a segment fd; returns it with the owner's pid (from the kernel).
fn request_fd(socket: &Path, role: Role, name: &str, capacity: usize) -> Result<(OwnedFd, u32), AttachError> {
    let stream = UnixStream::connect(socket).map_err(io_err("connect"))?;
    let (owner_pid, _) = peer_cred(stream.as_fd())?;
    bound_io(&stream)?;
    let mut msg = [0u8; MESSAGE_BYTES];
    msg[0..8].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
    msg[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    msg[12..16].copy_from_slice(&role.code().to_le_bytes());
    msg[16..24].copy_from_slice(&(capacity as u64).to_le_bytes());
    let n = name.len().min(NAME_BYTES);
    msg[24..24 + n].copy_from_slice(&name.as_bytes()[..n]);
    (&stream).write_all(&msg).map_err(io_err("write request"))?;
    let (reply, fd) = recv_reply(&stream)?;
    let status = u32::from_le_bytes([reply[8], reply[9], reply[10], reply[11]]);
    if u64::from_le_bytes(reply[0..8].try_into().unwrap_or([0; 8])) != REPLY_MAGIC {
        return Err(AttachError::Protocol("bad reply magic"));
    }
    let text = &reply[16..];
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let message = String::from_utf8_lossy(&text[..end]).into_owned();
    match (status, fd) {
        (STATUS_OK, Some(fd)) => Ok((fd, owner_pid)),
        (STATUS_OK, None) => Err(AttachError::Protocol("reply carried no segment fd")),
        _ => Err(AttachError::Refused(message)),
    }
}

/// Hands `seg` to the process at the other end of `stream` (any connected Unix stream
/// socket, for example one end of `UnixStream::pair()` inherited by a child): for setups
/// that do not go through a daemon's attach socket, such as benchmarks and tests.
pub fn send_segment(stream: &UnixStream, seg: &Segment) -> Result<(), AttachError> {
    let fd = seg
        .fd()
        .ok_or(AttachError::Protocol("a heap segment cannot be shared"))?;
    send_reply(stream, STATUS_OK, "segment", Some(fd))
}

/// Receives a segment sent with [`send_segment`], checking its seals.
pub fn recv_segment(stream: &UnixStream) -> Result<Segment, AttachError> {
    let (reply, fd) = recv_reply(stream)?;
    if u64::from_le_bytes(reply[0..8].try_into().unwrap_or([0; 8])) != REPLY_MAGIC {
        return Err(AttachError::Protocol("bad reply magic"));
    }
    let fd = fd.ok_or(AttachError::Protocol("message carried no segment fd"))?;
    Ok(Segment::from_fd(fd)?)
}

fn send_reply(stream: &UnixStream, status: u32, message: &str, fd: Option<BorrowedFd<'_>>) -> Result<(), AttachError> {
    let mut msg = [0u8; MESSAGE_BYTES];
    msg[0..8].copy_from_slice(&REPLY_MAGIC.to_le_bytes());
    msg[8..12].copy_from_slice(&status.to_le_bytes());
    let n = message.len().min(MESSAGE_BYTES - 16);
    msg[16..16 + n].copy_from_slice(&message.as_bytes()[..n]);
    send_with_fd(stream, &msg, fd)
}

/// Space for one fd's control message, 8-byte aligned as `cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

fn send_with_fd(stream: &UnixStream, msg: &[u8; MESSAGE_BYTES], fd: Option<BorrowedFd<'_>>) -> Result<(), AttachError> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
        let (space, len) = unsafe { (libc::CMSG_SPACE(4), libc::CMSG_LEN(4)) };
        hdr.msg_control = cmsg.0.as_mut_ptr().cast();
        hdr.msg_controllen = space as usize;
        // SAFETY: msg_control points at a 64-byte, 8-aligned buffer larger than
        // CMSG_SPACE(4), so CMSG_FIRSTHDR is non-null and the header and its 4 data bytes
        // lie inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = len as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd.as_raw_fd());
        }
    }
    // SAFETY: `hdr` points at live buffers (`iov` → `msg`, control → `cmsg`) for the call.
    // MSG_DONTWAIT: a 64-byte reply always fits a fresh socket's buffer; if a peer ever
    // made it not fit, this fails instead of holding the owner's thread.
    let rc = unsafe { libc::sendmsg(stream.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(AttachError::Io {
            op: "sendmsg",
            source: io::Error::last_os_error(),
        });
    }
    if rc as usize != msg.len() {
        return Err(AttachError::Protocol("short write of reply"));
    }
    Ok(())
}

fn recv_reply(stream: &UnixStream) -> Result<([u8; MESSAGE_BYTES], Option<OwnedFd>), AttachError> {
    let mut msg = [0u8; MESSAGE_BYTES];
    let mut iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: msg.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: all-zero msghdr is valid; pointers are filled in below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cmsg.0.as_mut_ptr().cast();
    hdr.msg_controllen = cmsg.0.len();
    // SAFETY: `hdr` points at live, writable buffers of the stated sizes; MSG_CMSG_CLOEXEC
    // makes any received fd close-on-exec.
    let rc = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC | libc::MSG_WAITALL) };
    if rc < 0 {
        return Err(AttachError::Io {
            op: "recvmsg",
            source: io::Error::last_os_error(),
        });
    }
    let fd = take_fd(&hdr);
    if rc as usize != MESSAGE_BYTES {
        return Err(AttachError::Protocol("short reply"));
    }
    Ok((msg, fd))
}

/// Takes ownership of the first fd in an `SCM_RIGHTS` message, if any; closes extras.
fn take_fd(hdr: &libc::msghdr) -> Option<OwnedFd> {
    let mut first = None;
    // SAFETY: `hdr` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR walk only within
    // msg_controllen bytes of the control buffer, which is still alive.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !c.is_null() {
        // SAFETY: `c` is non-null and points at a complete cmsghdr inside the buffer.
        let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a pure size computation.
            let data_len = len.saturating_sub(unsafe { libc::CMSG_LEN(0) } as usize);
            for i in 0..data_len / 4 {
                // SAFETY: i * 4 + 4 <= data_len, inside this cmsg's data; unaligned read.
                let raw = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>().add(i)) };
                if raw >= 0 {
                    // SAFETY: the kernel installed this fd for us; we are its only owner.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    if first.is_none() {
                        first = Some(fd);
                    }
                }
            }
        }
        // SAFETY: as for FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(hdr, c) };
    }
    first
}

/// The peer's (pid, uid), from the kernel (`SO_PEERCRED`, as of connect).
fn peer_cred(fd: BorrowedFd<'_>) -> Result<(u32, u32), AttachError> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(AttachError::Io {
            op: "getsockopt(SO_PEERCRED)",
            source: io::Error::last_os_error(),
        });
    }
    let pid = u32::try_from(cred.pid).map_err(|_| AttachError::Protocol("peer pid"))?;
    Ok((pid, cred.uid))
}

/// Binds the owner's socket at `path`, 0600, replacing a stale socket file.
pub fn listen(path: &Path) -> Result<UnixListener, AttachError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create ring directory"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod ring directory"))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AttachError::Io {
                op: "remove stale socket",
                source: e,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(io_err("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err("chmod socket"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_requests_are_refused_not_fatal() {
        let mut msg = [0xffu8; MESSAGE_BYTES];
        assert!(parse_request(&msg).is_err());
        msg[0..8].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        assert!(matches!(
            parse_request(&msg),
            Err(AttachError::Protocol("unsupported protocol version"))
        ));
        msg[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        assert!(matches!(
            parse_request(&msg),
            Err(AttachError::Protocol("unknown role"))
        ));
        msg[12..16].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            parse_request(&msg),
            Err(AttachError::Protocol("name must be printable ASCII"))
        ));
        msg[24..].fill(0);
        msg[24..28].copy_from_slice(b"feed");
        let (role, _, name) = parse_request(&msg).expect("valid");
        assert_eq!((role, name.as_str()), (Role::Producer, "feed"));
    }

    #[test]
    fn a_silent_peer_does_not_hold_up_the_next_one() {
        let dir = std::env::temp_dir().join(format!("rim-attach-nb-{}", std::process::id()));
        let path = dir.join("rimd.sock");
        let listener = listen(&path).expect("listen");
        listener.set_nonblocking(true).expect("non-blocking");
        assert!(accept_incoming(&listener).expect("accept").is_none(), "nobody yet");
        let silent = UnixStream::connect(&path).expect("connect");
        let client = {
            let path = path.clone();
            std::thread::spawn(move || attach_producer(&path, "feed-nb", 4096))
        };
        let mut waiting = Vec::new();
        let req = loop {
            if let Some(conn) = accept_incoming(&listener).expect("accept") {
                waiting.push(conn);
            }
            let whole = waiting.iter_mut().position(|c| c.read_available().expect("read"));
            if let Some(i) = whole {
                break waiting.swap_remove(i).into_request().expect("request");
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!((req.name.as_str(), req.peer_uid), ("feed-nb", own_uid()));
        let _consumer = req.grant_producer(1 << 20).expect("grant");
        client
            .join()
            .expect("thread")
            .expect("attached while another peer stays silent");
        for conn in waiting {
            assert_eq!(conn.peer_pid(), std::process::id());
            conn.refuse("request not received in time");
        }
        drop(silent);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// This process's uid, from the kernel's view of a socket pair.
    fn own_uid() -> u32 {
        let (a, _b) = UnixStream::pair().expect("pair");
        peer_cred(a.as_fd()).expect("cred").1
    }

    #[test]
    fn a_producer_attaches_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("rim-attach-{}", std::process::id()));
        let path = dir.join("rimd.sock");
        let listener = listen(&path).expect("listen");
        let client = {
            let path = path.clone();
            std::thread::spawn(move || attach_producer(&path, "feed-1", 4096))
        };
        let req = accept(&listener).expect("request");
        assert_eq!(
            (req.role, req.capacity, req.name.as_str()),
            (Role::Producer, 4096, "feed-1")
        );
        assert_eq!(req.peer_pid, std::process::id());
        let mut consumer = req.grant_producer(1 << 20).expect("grant");
        let mut producer = client.join().expect("thread").expect("attach");
        producer.try_publish(b"hello ring").expect("publish");
        let mut got = Vec::new();
        consumer.poll(8, |b| got.extend_from_slice(b)).expect("poll");
        assert_eq!(got, b"hello ring");
        let _ = std::fs::remove_dir_all(dir);
    }
}
