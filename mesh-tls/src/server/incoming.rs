use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::MeshAcceptor;
use super::limits::{ConnectionLimiter, ConnectionLimits, ConnectionPermit, LimitedListener};
use crate::PeerIdentity;

/// Handshaken connections waiting for the server; beyond this, handshake tasks wait.
const QUEUE: usize = 64;

/// What tonic puts into each request's extensions for a [`MeshServerStream`] (defined in
/// mesh-core, so that layers read it without depending on this crate).
pub use mesh_core::extensions::MeshConnectInfo;

/// The client identity of a tonic request served over [`MeshAcceptor::incoming`] or by
/// `serve`/`Mesh::serve` (feature `tonic`).
///
/// ```
/// fn handler(req: &tonic::Request<()>) -> String {
///     match mesh_tls::server::peer_identity(req) {
///         Some(peer) => format!("hello {peer}"),
///         None => "not over mTLS".into(),
///     }
/// }
/// # assert_eq!(handler(&tonic::Request::new(())), "not over mTLS");
/// ```
#[cfg(feature = "tonic")]
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<&PeerIdentity> {
    // `serve`/`Mesh::serve` put the identity itself; tonic's own server the connect info.
    req.extensions()
        .get::<PeerIdentity>()
        .or_else(|| req.extensions().get::<MeshConnectInfo>().map(|c| &c.peer))
}

/// One server-side mTLS connection, for tonic (`Connected`, feature `tonic`) or any tokio IO
/// user.
#[derive(Debug)]
pub struct MeshServerStream {
    inner: TlsStream<TcpStream>,
    info: MeshConnectInfo,
    /// The connection's slot under the listener's cap, freed when it closes.
    _permit: ConnectionPermit,
}

impl MeshServerStream {
    /// The client's verified identity.
    pub fn peer(&self) -> &PeerIdentity {
        &self.info.peer
    }
}

#[cfg(feature = "tonic")]
impl tonic::transport::server::Connected for MeshServerStream {
    type ConnectInfo = MeshConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for MeshServerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshServerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream of handshaken mTLS connections for tonic's `Server::serve_with_incoming`.
/// Rejected handshakes are logged and counted, never yielded. Dropping it stops the
/// accept loop.
#[derive(Debug)]
pub struct MeshIncoming {
    rx: mpsc::Receiver<MeshServerStream>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Drop for MeshIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl Stream for MeshIncoming {
    type Item = Result<MeshServerStream, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|s| s.map(Ok))
    }
}

impl MeshAcceptor {
    /// Accepts on `listener` in a background task (handshakes in their own tasks) and
    /// yields the connections that passed verification. At most the default
    /// [`ConnectionLimits::max_connections`] are open at once; more are closed at once.
    ///
    /// ```no_run
    /// # async fn run(acceptor: mesh_tls::server::MeshAcceptor, routes: tonic::service::Routes)
    /// #   -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
    /// tonic::transport::Server::builder()
    ///     .add_routes(routes) // your generated services
    ///     .serve_with_incoming(acceptor.incoming(listener))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn incoming(&self, listener: TcpListener) -> MeshIncoming {
        let (tx, rx) = mpsc::channel(QUEUE);
        let acceptor = self.clone();
        let limits = ConnectionLimits::default();
        let mut listener =
            LimitedListener::new(listener, ConnectionLimiter::new(limits.max_connections));
        let accept_loop = tokio::spawn(async move {
            loop {
                let (tcp, remote, permit) = listener.accept().await;
                let local_addr = tcp.local_addr().ok();
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok((inner, peer)) => {
                            let info = MeshConnectInfo {
                                peer,
                                remote_addr: Some(remote),
                                local_addr,
                            };
                            let stream = MeshServerStream {
                                inner,
                                info,
                                _permit: permit,
                            };
                            let _ = tx.send(stream).await;
                        }
                        Err(e) => tracing::info!(%remote, error = %e, "mTLS handshake rejected"),
                    }
                });
            }
        });
        MeshIncoming { rx, accept_loop }
    }
}
