//! One HBONE tunnel as a byte stream over the `h2` crate's stream halves, and the HTTP/2
//! keepalive both sides run.
//!
//! The streams come from `h2` directly, not from hyper's upgrade: hyper copies every write
//! on an upgraded HTTP/2 stream into a buffer it hands to another task, a copy and a task
//! wake-up per write per side. Here a write is sent on the stream from the writer's task.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A `CONNECT` stream's two halves as tokio `AsyncRead + AsyncWrite`.
pub(crate) struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received data the reader has not taken yet.
    pending: Bytes,
    /// END_STREAM is sent.
    ended: bool,
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            ended: false,
        }
    }

    /// Why the stream cannot take writes: the peer's reset, or the error that ended it.
    fn poll_write_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        Poll::Ready(match ready!(self.send.poll_reset(cx)) {
            Ok(Reason::NO_ERROR) => io::ErrorKind::BrokenPipe.into(),
            Ok(reason) => io::Error::new(io::ErrorKind::ConnectionReset, h2::Error::from(reason)),
            Err(e) => h2_to_io(e),
        })
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                // An empty DATA frame is not the end (zero bytes read would say it is).
                Some(Ok(data)) => self.pending = data,
                None => return Poll::Ready(Ok(())),
                // A peer that drops its end of a tunnel resets it with CANCEL after its data,
                // as closing a socket sends FIN: the end, as hyper and ztunnel read it.
                Some(Err(e)) if matches!(e.reason(), Some(Reason::NO_ERROR | Reason::CANCEL)) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) if e.reason() == Some(Reason::STREAM_CLOSED) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, e)));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        // The window reopens as the app consumes, so a slow reader holds the sender back.
        let _ = self.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    /// Gathers the slices into one DATA frame (as far as the window allows): an HTTP codec
    /// inside the tunnel writes a response as headers plus body, which would otherwise be
    /// two frames and two wake-ups of the peer's reader.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(total);
        let cap = match ready!(self.send.poll_capacity(cx)) {
            Some(Ok(cap)) if cap > 0 => cap.min(total),
            // The stream is closed for sending (reset, or the connection ended).
            _ => return Poll::Ready(Err(ready!(self.poll_write_error(cx)))),
        };
        let mut data = BytesMut::with_capacity(cap);
        for b in bufs {
            let take = b.len().min(cap - data.len());
            data.extend_from_slice(&b[..take]);
            if data.len() == cap {
                break;
            }
        }
        match self.send.send_data(data.freeze(), false) {
            Ok(()) => Poll::Ready(Ok(cap)),
            Err(_) => Poll::Ready(Err(ready!(self.poll_write_error(cx)))),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// h2's connection task writes what is sent; there is nothing to flush here.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Ends the sending side (END_STREAM); the peer may still send.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.ended || self.send.send_data(Bytes::new(), true).is_ok() {
            self.ended = true;
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Err(ready!(self.poll_write_error(cx))))
    }
}

/// A tunnel dropped without shutdown ends as a closed socket does: what was written is
/// delivered, then END_STREAM. (h2 alone would reset the stream with CANCEL, which
/// discards the data still queued for the window.)
impl Drop for H2Stream {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }
}

fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into())
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}

/// HTTP/2 keepalive: a PING every `interval`; returns when one is not answered within
/// `timeout` (the caller then drops the connection). Never returns without an interval.
pub(crate) async fn keepalive(
    ping_pong: Option<h2::PingPong>,
    interval: Option<Duration>,
    timeout: Duration,
) {
    let (Some(mut ping_pong), Some(interval)) = (ping_pong, interval) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            // The connection is ending anyway; its own future reports why.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => {
                tracing::debug!(?timeout, "HBONE keepalive: no PING answer, closing");
                return;
            }
        }
    }
}
