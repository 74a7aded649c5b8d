//! `istio_tcp_*` for a proxy: wrap each proxied connection in a [`MeteredStream`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{IstioMetrics, PeerLabels, TcpLabels};

/// The `istio_tcp_*` handles of one peer pair, resolved once (when config changes).
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    sent: Counter,
    received: Counter,
    opened: Counter,
    closed: Counter,
}

impl TcpMetrics {
    /// Resolves the handles for `peer` (the TCP series carry `response_flags="-"`).
    pub fn new(metrics: &IstioMetrics, peer: Arc<PeerLabels>) -> Self {
        let labels = TcpLabels {
            peer,
            response_flags: "-",
        };
        Self {
            sent: metrics.tcp_sent.get_or_create_owned(&labels),
            received: metrics.tcp_received.get_or_create_owned(&labels),
            opened: metrics.tcp_opened.get_or_create_owned(&labels),
            closed: metrics.tcp_closed.get_or_create_owned(&labels),
        }
    }

    /// Wraps a connection: counts it opened now, closed when dropped, and its bytes.
    pub fn wrap<S>(&self, stream: S) -> MeteredStream<S> {
        self.opened.inc();
        MeteredStream {
            inner: stream,
            guard: CloseGuard(self.clone()),
        }
    }

    /// Counts a connection whose bytes are counted elsewhere (a tunnel inside another
    /// connection): opened now, closed when the returned handle drops.
    pub fn open(&self) -> TcpConnection {
        self.opened.inc();
        TcpConnection(CloseGuard(self.clone()))
    }
}

/// One open connection of [`TcpMetrics::open`]; counts it closed when dropped.
#[derive(Debug)]
pub struct TcpConnection(CloseGuard);

impl TcpConnection {
    /// `bytes` sent to the peer (`istio_tcp_sent_bytes_total`).
    pub fn sent(&self, bytes: u64) {
        self.0.0.sent.inc_by(bytes);
    }

    /// `bytes` received from the peer (`istio_tcp_received_bytes_total`).
    pub fn received(&self, bytes: u64) {
        self.0.0.received.inc_by(bytes);
    }
}

#[derive(Debug)]
struct CloseGuard(TcpMetrics);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.closed.inc();
    }
}

/// A connection whose bytes count into `istio_tcp_sent_bytes_total` (written) and
/// `istio_tcp_received_bytes_total` (read).
#[pin_project]
#[derive(Debug)]
pub struct MeteredStream<S> {
    #[pin]
    inner: S,
    guard: CloseGuard,
}

impl<S> MeteredStream<S> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead> AsyncRead for MeteredStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        ready!(this.inner.poll_read(cx, buf))?;
        this.guard
            .0
            .received
            .inc_by((buf.filled().len() - before) as u64);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for MeteredStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = ready!(this.inner.poll_write(cx, buf))?;
        this.guard.0.sent.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_bytes_and_connections() {
        let metrics = IstioMetrics::new();
        let tcp = TcpMetrics::new(&metrics, Arc::new(PeerLabels::default()));
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = tcp.wrap(a);
        a.write_all(b"hello").await.unwrap();
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        a.read_exact(&mut buf).await.unwrap();
        drop(a);
        assert_eq!(tcp.sent.get(), 5);
        assert_eq!(tcp.received.get(), 2);
        assert_eq!((tcp.opened.get(), tcp.closed.get()), (1, 1));
    }
}
