//! The glommio ↔ hyper glue: a glommio TCP stream as hyper's `rt::Read`/`rt::Write`.
//!
//! Reads copy straight from glommio's receive buffer (the stream is `buffered()`, so
//! `poll_fill_buf` hands out its filled bytes) into hyper's cursor with the safe
//! `put_slice`: one copy, no scratch buffer and no unsafe code on the data path.
//!
//! Every read and write also tells the connection's [`ConnWatch`] that bytes moved (the
//! header and idle timeouts of [`super::conn`]).
//!
//! The one unsafe item is `unsafe impl Send for Io`: hyper wants upgradable IO to be
//! `Send` (it boxes it as `dyn Io + Send` so that an upgraded connection may move to
//! another thread), while glommio's stream and the watch are `Rc`s and must stay on their
//! executor's thread. [`Io`] records the thread that made it and checks it on every
//! access; on any other thread it refuses (an IO error) and its `Drop` leaks the stream
//! and the watch instead of dropping them, so nothing of either is ever touched off its
//! thread.
#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncBufRead, AsyncWrite};
use glommio::net::{Preallocated, TcpStream};
use hyper::rt::ReadBufCursor;

use super::conn::ConnWatch;

/// The stream type the server and the WebSocket code use.
pub type Stream = TcpStream<Preallocated>;

thread_local! {
    static MARK: u8 = const { 0 };
}

/// An address unique to the calling thread while it lives.
fn thread_mark() -> usize {
    MARK.with(|m| m as *const u8 as usize)
}

/// A glommio stream bound to the thread that accepted it.
pub struct Io {
    stream: ManuallyDrop<Stream>,
    watch: ManuallyDrop<Rc<ConnWatch>>,
    thread: usize,
}

// SAFETY: every access to `stream` and `watch` goes through `get`, which refuses on any
// thread but
// the one that created the `Io` (compared through a thread-local's address, unique among
// live threads), and `Drop` leaks both rather than dropping them elsewhere. `Io` is
// not `Sync`, so no `&Io` is shared. Moving the value to another thread therefore never
// touches the `Rc`s inside glommio's stream, or the watch's count, there.
unsafe impl Send for Io {}

fn wrong_thread() -> io::Error {
    io::Error::other("a glommio stream was used off its executor thread")
}

impl Io {
    /// Binds `stream` (and the watch it reports to) to the calling thread.
    pub fn new(stream: TcpStream, watch: Rc<ConnWatch>) -> Self {
        Self {
            stream: ManuallyDrop::new(stream.buffered()),
            watch: ManuallyDrop::new(watch),
            thread: thread_mark(),
        }
    }

    /// The stream and the watch, on their own thread only.
    pub fn get(&mut self) -> io::Result<(&mut Stream, &ConnWatch)> {
        if self.thread == thread_mark() {
            Ok((&mut self.stream, &self.watch))
        } else {
            Err(wrong_thread())
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if self.thread == thread_mark() {
            // SAFETY: dropped exactly once, here, on their own thread; never used after.
            unsafe {
                ManuallyDrop::drop(&mut self.stream);
                ManuallyDrop::drop(&mut self.watch);
            }
        }
        // Elsewhere both are leaked: leaking is safe, dropping there would not be.
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let (stream, watch) = match self.get_mut().get() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut stream = Pin::new(stream);
        let n = match stream.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(filled)) => {
                let n = filled.len().min(buf.remaining());
                buf.put_slice(&filled[..n]);
                n
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        stream.consume(n);
        if n > 0 {
            watch.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().get() {
            Ok((s, watch)) => {
                let written = Pin::new(s).poll_write(cx, buf);
                if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
                    watch.on_write();
                }
                written
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok((s, _)) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok((s, _)) => Pin::new(s).poll_close(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
