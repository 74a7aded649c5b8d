//! Accepted inbound connections as streams for servers that own the connections
//! (`axum::serve` through [`MeshListener`](super::MeshListener), tonic's
//! `serve_with_incoming` through [`MeshIncoming`](super::MeshIncoming)): the accept loop,
//! chain choice and handshake run in background tasks, and each connection comes out with
//! its chain's policies, which the server's per-request glue must apply.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};

use mesh_authz::{AuthzMetrics, AuthzPolicies};
use mesh_core::path::PathNormalization;
use mesh_tls::PeerIdentity;
use mesh_tls::server::ConnectionPermit;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

use super::serve::{InboundIo, handshake};
use super::{InboundError, InboundServer, ServingStatus};

/// Handshaken connections waiting to be accepted; beyond this, handshakes wait.
const QUEUE: usize = 64;

/// The addresses and verified identity of an inbound connection: the listener's address
/// type, so axum handlers take it with `ConnectInfo<InboundConnectInfo>`; tonic handlers
/// find it in `request.extensions()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundConnectInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// The client's SPIFFE identity, verified by mTLS; `None` on a plaintext chain
    /// (PERMISSIVE or DISABLE).
    pub peer: Option<PeerIdentity>,
}

/// What the per-request glue needs of a connection to apply its chain's policies.
#[derive(Clone)]
pub(super) struct ChainPolicy {
    pub(super) policies: watch::Receiver<Arc<AuthzPolicies>>,
    pub(super) path_normalization: PathNormalization,
    pub(super) metrics: AuthzMetrics,
}

/// An accepted inbound connection: the IO type of [`MeshListener`](super::MeshListener)
/// and [`MeshIncoming`](super::MeshIncoming). It reads nothing until the glue that applies
/// its policies ([`MeshApp`](super::MeshApp), [`MeshGrpcLayer`](super::MeshGrpcLayer)) is
/// known to serve it: a connection served without them is closed before its first byte.
pub struct InboundStream {
    io: InboundIo,
    pub(super) info: InboundConnectInfo,
    pub(super) chain: ChainPolicy,
    /// Set when the policies are known to be applied to this connection's requests.
    pub(super) enforced: AtomicBool,
    /// The connection's slot under the listener's cap, freed when it closes.
    _permit: ConnectionPermit,
}

impl std::fmt::Debug for InboundStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl InboundStream {
    /// The connection's addresses and verified identity.
    pub fn info(&self) -> &InboundConnectInfo {
        &self.info
    }
}

impl AsyncRead for InboundStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !*this.enforced.get_mut() {
            // Served without the per-request policies: refuse rather than skip them.
            tracing::error!(
                remote = %this.info.remote,
                "inbound connection served without its policies: closed (axum: wrap the app with mesh.app(..); tonic: add incoming.layer() to the Server)"
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "inbound connection served without the mesh's per-request policies",
            )));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for InboundStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The receiving end of the background accept loop. Dropping it stops the loop and
/// closes the socket (new connections are refused).
pub(super) struct Streams {
    pub(super) rx: mpsc::Receiver<InboundStream>,
    pub(super) local: SocketAddr,
    pub(super) status: watch::Receiver<ServingStatus>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl InboundServer {
    /// Binds the server's address and accepts in a background task, which follows the
    /// control plane (closed until the listener arrives) and hands out handshaken streams.
    pub(super) async fn streams(self) -> Result<Streams, InboundError> {
        let (tcp, bound) = self.bind().await?;
        let status = self.status();
        let (tx, rx) = mpsc::channel(QUEUE);
        let accept_task = tokio::spawn(async move {
            let limits = Arc::new(self.limits.clone());
            let closed = tx.clone();
            self.accept_loop(
                tcp,
                bound,
                async move { closed.closed().await },
                |generation, acceptor, tcp, remote, permit| {
                    let (limits, tx) = (limits.clone(), tx.clone());
                    let metrics = self.metrics.clone();
                    // Handshakes run here, so a slow client never holds up the server's
                    // accept loop.
                    tokio::spawn(async move {
                        let Some(a) = handshake(&generation, &acceptor, &limits, tcp, remote).await
                        else {
                            return;
                        };
                        let stream = InboundStream {
                            io: a.io,
                            info: InboundConnectInfo {
                                remote: a.addrs.remote,
                                local: a.addrs.local,
                                peer: a.peer,
                            },
                            chain: ChainPolicy {
                                policies: a.policies,
                                path_normalization: a.path_normalization,
                                metrics,
                            },
                            enforced: AtomicBool::new(false),
                            _permit: permit,
                        };
                        let _ = tx.send(stream).await;
                    });
                },
            )
            .await;
            self.status
                .send_replace(ServingStatus::NotServing("shut down".into()));
        });
        Ok(Streams {
            rx,
            local: bound,
            status,
            accept_task,
        })
    }
}
