//! Connection counters of a pool, kept where connections are made: Envoy's
//! `upstream_cx_total`, `upstream_cx_active` and `upstream_cx_connect_fail`.
//!
//! The connector every endpoint's client dials through counts each attempt's outcome, and
//! wraps each new connection so that dropping it (closed by either side, idle timeout,
//! pool shutdown) makes it inactive again.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// A pool's connection counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Endpoints with a pooled client.
    pub endpoints: u64,
    /// Connections open now (`upstream_cx_active`).
    pub connections_active: u64,
    /// Connections opened so far (`upstream_cx_total`).
    pub connections_total: u64,
    /// Connection attempts that failed: TCP connect, TLS handshake or the server's
    /// identity (`upstream_cx_connect_fail`).
    pub connect_failures: u64,
}

/// The live counters a pool shares with its connectors.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    total: AtomicU64,
    active: AtomicU64,
    connect_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self, endpoints: u64) -> PoolCounters {
        PoolCounters {
            endpoints,
            connections_active: self.active.load(Ordering::Relaxed),
            connections_total: self.total.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }

    /// Counts one attempt's outcome; a connection is active until the result is dropped.
    pub(crate) fn record<T, E>(self: &Arc<Self>, attempt: Result<T, E>) -> Result<Counted<T>, E> {
        match attempt {
            Ok(io) => {
                self.total.fetch_add(1, Ordering::Relaxed);
                self.active.fetch_add(1, Ordering::Relaxed);
                Ok(Counted {
                    io,
                    _active: Active(self.clone()),
                })
            }
            Err(e) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Marks a connection active for as long as it lives.
#[derive(Debug)]
struct Active(Arc<Counters>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection counted as active until dropped; reads and writes go straight through.
#[derive(Debug)]
pub struct Counted<T> {
    io: T,
    _active: Active,
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}
