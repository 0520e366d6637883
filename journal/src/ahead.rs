//! Read-ahead for sequential readers (recovery's replay, backtests): a segment is read in
//! whole blocks with `O_DIRECT` through io_uring into two reused buffers, the next chunk in
//! flight while the current one is parsed.
//!
//! Why not the page cache: a journal written with direct appends is not in it, and on this
//! project's VM every fresh page cache page costs a host fault. Recovery's replay read
//! 1.5 GiB (10M events) through `pread` at about 1.4 s of CPU per GiB, half of its feeding
//! thread's time; direct reads into buffers that stay mapped cost the disk's time, which
//! the read-ahead overlaps with parsing.
//!
//! Coherence: a direct read of a range with dirty page cache pages (a seal, or an append
//! that went buffered) writes them back first (the kernel's `iomap_dio_rw`), so the reader
//! sees what a buffered reader would. A chunk read ahead holds what the file held when it
//! was read: [`Ahead::invalidate`] forgets it with the window, as the buffered window is
//! forgotten.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

use crate::segment::FRAME_BYTES_MAX;
use crate::storage::{align_down, align_up, aligned_start, submit_and_wait, DIRECT_BLOCK};

/// Bytes per read (a multiple of [`DIRECT_BLOCK`]).
const CHUNK: usize = 1 << 20;
/// Room before a chunk for the start of a frame that began in the previous chunk.
const SLACK: usize = FRAME_BYTES_MAX.div_ceil(DIRECT_BLOCK) * DIRECT_BLOCK;

/// A buffer whose `SLACK + CHUNK` bytes from `base` start at a block boundary.
struct Buf {
    raw: Vec<u8>,
    base: usize,
}

impl Buf {
    fn new() -> Self {
        let raw = vec![0u8; SLACK + CHUNK + DIRECT_BLOCK];
        let base = aligned_start(&raw);
        Self { raw, base }
    }

    fn area(&self) -> &[u8] {
        &self.raw[self.base..self.base + SLACK + CHUNK]
    }

    fn area_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.base..self.base + SLACK + CHUNK]
    }
}

/// The one read in flight: `len` bytes of `fd` at `at` into `bufs[buf]` after its slack.
#[derive(Debug, Clone, Copy)]
struct Flight {
    buf: usize,
    fd: RawFd,
    at: u64,
    len: usize,
}

/// A read-ahead window over one file at a time; see the module docs.
pub(crate) struct Ahead {
    ring: IoUring,
    bufs: [Buf; 2],
    /// The buffer holding the window.
    cur: usize,
    /// Index in `bufs[cur].area()` of the window's first byte.
    start: usize,
    /// File offset of the window's first byte.
    off: u64,
    len: usize,
    /// At most one read is in flight, always into the buffer that is not `cur`.
    flight: Option<Flight>,
    /// Tag of the newest read submitted (its completion's `user_data`).
    seq: u64,
}

impl Ahead {
    /// A read-ahead window, if io_uring can be set up here with its workers confined.
    pub(crate) fn new() -> Option<Box<Self>> {
        let ring = IoUring::new(2).ok()?;
        confine_workers(&ring).ok()?;
        Some(Box::new(Self {
            ring,
            bufs: [Buf::new(), Buf::new()],
            cur: 0,
            start: SLACK,
            off: 0,
            len: 0,
            flight: None,
            seq: 0,
        }))
    }

    /// The window's bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.bufs[self.cur].area()[self.start..self.start + self.len]
    }

    /// Forgets the window and the chunk read ahead (waiting for it to land: its buffer is
    /// the kernel's until then).
    pub(crate) fn invalidate(&mut self) {
        let _ = self.land();
        self.len = 0;
    }

    /// Makes `[off, off + n)` of `fd` (a file of `file_len` bytes opened `O_DIRECT`)
    /// the window's, as far as the file holds it; returns its index in [`Ahead::data`] and
    /// its length.
    pub(crate) fn fill(&mut self, fd: RawFd, file_len: u64, off: u64, n: usize) -> io::Result<(usize, usize)> {
        if self.len > 0 && off >= self.off && off + n as u64 <= self.end() {
            return Ok(((off - self.off) as usize, n));
        }
        if !self.continue_into_flight(fd, file_len, off)? {
            self.read_now(fd, file_len, off)?;
        }
        if off < self.off || off > self.end() {
            // Past what the file holds.
            self.len = 0;
            self.off = off;
            return Ok((0, 0));
        }
        let at = (off - self.off) as usize;
        Ok((at, n.min(self.len - at)))
    }

    fn end(&self) -> u64 {
        self.off + self.len as u64
    }

    /// When the chunk in flight continues the window and `off` lies in the window's tail
    /// or in that chunk: lands it, carries the tail over in front of it (a frame that
    /// straddles the two), and reads the next chunk ahead. False when it does not apply.
    fn continue_into_flight(&mut self, fd: RawFd, file_len: u64, off: u64) -> io::Result<bool> {
        let end = self.end();
        let Some(f) = self.flight else {
            return Ok(false);
        };
        let tail = end.saturating_sub(off);
        let follows = f.fd == fd && f.at == end && self.len > 0 && off >= self.off && tail <= SLACK as u64;
        if !follows || off >= f.at + f.len as u64 {
            return Ok(false);
        }
        let got = self.land()?.min(f.len);
        let got = self.read_rest(f, got, file_len)?;
        let tail = tail as usize;
        if tail > 0 {
            let from = self.start + self.len - tail;
            let (a, b) = self.bufs.split_at_mut(1);
            let (src, dst) = if self.cur == 0 {
                (&a[0], &mut b[0])
            } else {
                (&b[0], &mut a[0])
            };
            dst.area_mut()[SLACK - tail..SLACK].copy_from_slice(&src.area()[from..from + tail]);
        }
        self.cur = f.buf;
        self.start = SLACK - tail;
        self.off = end - tail as u64;
        self.len = tail + got;
        if got == CHUNK {
            self.read_ahead(fd, file_len, f.at + CHUNK as u64)?;
        }
        Ok(true)
    }

    /// Reads the chunk holding `off` now (anything in flight landed and dropped first),
    /// and the one after it ahead.
    fn read_now(&mut self, fd: RawFd, file_len: u64, off: u64) -> io::Result<()> {
        self.land()?;
        let at = align_down(off);
        let want = read_len(file_len, at);
        self.len = 0;
        if want == 0 {
            self.off = off;
            return Ok(());
        }
        let buf = 1 - self.cur;
        let f = Flight { buf, fd, at, len: want };
        self.submit(f)?;
        let got = self.land()?.min(want);
        let got = self.read_rest(f, got, file_len)?;
        let lead = ((off - at) as usize).min(got);
        self.cur = buf;
        self.start = SLACK + lead;
        self.off = at + lead as u64;
        self.len = got - lead;
        if got == CHUNK {
            self.read_ahead(fd, file_len, at + CHUNK as u64)?;
        }
        Ok(())
    }

    /// Completes a read `f` that returned `got` bytes, short of both its length and the
    /// end of the file (the kernel may split a direct read): the rest is read now, so a
    /// window never ends early inside the file. Returns the bytes the buffer holds.
    fn read_rest(&mut self, f: Flight, mut got: usize, file_len: u64) -> io::Result<usize> {
        let end = (f.at + f.len as u64).min(file_len);
        while f.at + (got as u64) < end {
            let rest = Flight {
                at: f.at + got as u64,
                len: f.len - got,
                ..f
            };
            if !got.is_multiple_of(DIRECT_BLOCK) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.submit_at(rest, SLACK + got)?;
            match self.land()? {
                0 => break,
                n => got += n.min(rest.len),
            }
        }
        Ok(got)
    }

    /// Starts reading the chunk at `at` into the buffer that is not the window's.
    fn read_ahead(&mut self, fd: RawFd, file_len: u64, at: u64) -> io::Result<()> {
        let len = read_len(file_len, at);
        if len == 0 {
            return Ok(());
        }
        self.submit(Flight {
            buf: 1 - self.cur,
            fd,
            at,
            len,
        })
    }

    fn submit(&mut self, f: Flight) -> io::Result<()> {
        self.submit_at(f, SLACK)
    }

    /// Submits `f` into `bufs[f.buf]` from index `from` (`SLACK`, or further on for the
    /// rest of a short read).
    fn submit_at(&mut self, f: Flight, from: usize) -> io::Result<()> {
        if self.flight.is_some() {
            return Err(io::Error::other("read-ahead: a read is still in flight"));
        }
        debug_assert!(f.buf != self.cur || self.len == 0, "never into the window being read");
        self.seq += 1;
        let dst = self.bufs[f.buf].area_mut()[from..from + f.len].as_mut_ptr();
        let entry = opcode::Read::new(types::Fd(f.fd), dst, f.len as u32)
            .offset(f.at)
            .build()
            .user_data(self.seq);
        // SAFETY: `dst` points at `f.len` bytes of `bufs[f.buf]`, which this struct owns and
        // never reallocates; the buffer is not read or written until `land` has reaped the
        // completion tagged `seq`, and `Drop` lands it (or leaks the buffers) first.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("read-ahead submission queue full"))?;
        // On an error the kernel took nothing (it fails a submission only when it consumed
        // no entry). The entry stays in the queue: a later submission would send it, so
        // the window is not used again (the caller drops it).
        submit_and_wait(&self.ring, 0)?;
        self.flight = Some(f);
        Ok(())
    }

    /// Waits for the read in flight; returns the bytes it read (0 if none was in flight).
    /// The flight is forgotten only once its completion is reaped: after an error here the
    /// read may still be running, and the window must not be used again.
    fn land(&mut self) -> io::Result<usize> {
        if self.flight.is_none() {
            return Ok(0);
        }
        loop {
            while let Some(cqe) = self.ring.completion().next() {
                if cqe.user_data() != self.seq {
                    continue;
                }
                self.flight = None;
                let res = cqe.result();
                return if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as usize)
                };
            }
            submit_and_wait(&self.ring, 1)?;
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // The kernel may still write into a buffer: wait for the read in flight; if that
        // fails, leak the buffers rather than free memory a read may still fill.
        if self.land().is_err() {
            for b in &mut self.bufs {
                std::mem::forget(std::mem::take(&mut b.raw));
            }
        }
    }
}

/// Confines the kernel's workers for `ring` (a direct read that would block is handed to
/// one) to the cores this thread may run on, one worker at most: a backtest inside the
/// daemon reads on the cold core, and its reads must not wake a worker on the hot one.
#[allow(unsafe_code)]
fn confine_workers(ring: &IoUring) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    ring.submitter().register_iowq_aff(&set)?;
    ring.submitter().register_iowq_max_workers(&mut [1, 1])?;
    Ok(())
}

/// Bytes to read at the block-aligned `at` of a file of `file_len` bytes: a chunk, or the
/// rest of the file rounded up to a block (a direct read ends short at the end of file).
fn read_len(file_len: u64, at: u64) -> usize {
    let rest = file_len.saturating_sub(at).min(CHUNK as u64);
    // At most a chunk, which is whole blocks: rounding up cannot overflow or pass it.
    align_up(rest).map_or(CHUNK, |n| n as usize)
}
