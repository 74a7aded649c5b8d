use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::PeerIdentity;

/// One client-side mTLS connection: hyper IO (`Read`/`Write`) plus hyper-util's
/// `Connection`, which reports ALPN `h2` so the client speaks HTTP/2 when negotiated.
#[derive(Debug)]
pub struct MeshClientStream {
    io: TokioIo<TlsStream<TcpStream>>,
    peer: PeerIdentity,
    h2: bool,
}

impl MeshClientStream {
    pub(crate) fn new(tls: TlsStream<TcpStream>, peer: PeerIdentity) -> Self {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(crate::config::ALPN_H2);
        Self {
            io: TokioIo::new(tls),
            peer,
            h2,
        }
    }

    /// The server's verified identity.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// Whether ALPN selected HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// The underlying tokio-rustls stream.
    pub fn into_inner(self) -> TlsStream<TcpStream> {
        self.io.into_inner()
    }
}

impl Connection for MeshClientStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new().extra(self.peer.clone());
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for MeshClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MeshClientStream {
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
