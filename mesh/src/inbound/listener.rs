//! The inbound listener as an `axum::serve` listener (feature `axum`, on by default):
//! [`MeshListener`] accepts, sniffs and runs the mTLS handshake of each connection as the
//! control plane's inbound listener says (the PeerAuthentication mode per port), and
//! [`MeshApp`] applies that connection's authorization policies and path normalization to
//! every request before the application sees it.
//!
//! Both are needed: authorization is per request and the listener only sees connections,
//! so a connection served by anything other than a [`MeshApp`] is closed before its first
//! byte is read (fails closed; logged as an error).
//!
//! ```no_run
//! # async fn run(mesh: mesh::Mesh) -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Extension, Router, extract::ConnectInfo, routing::get};
//! use mesh::PeerIdentity;
//! use mesh::inbound::InboundConnectInfo;
//!
//! async fn hello(
//!     Extension(peer): Extension<PeerIdentity>,
//!     ConnectInfo(conn): ConnectInfo<InboundConnectInfo>,
//! ) -> String {
//!     format!("hello {peer} from {}\n", conn.remote)
//! }
//!
//! let app = Router::new().route("/", get(hello));
//! let listener = mesh.listener("0.0.0.0:8080".parse()?).await?;
//! axum::serve(listener, mesh.app(app))
//!     .with_graceful_shutdown(async { drop(tokio::signal::ctrl_c().await) })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Compared with [`Mesh::serve`](crate::Mesh::serve), axum owns the connections: when the
//! listener's filter chains change (the mTLS mode), new connections get the new chains
//! while open ones keep theirs until they close (policy changes still reach them), and
//! axum's hyper settings apply instead of [`ConnectionLimits`](super::ConnectionLimits)' header-read timeout and
//! HTTP/2 keepalive (the connection cap and the sniff timeout still apply).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use mesh_authz::{AuthzLayer, ConnectionAddrs};
use mesh_core::path::PathNormalize;
use tokio::sync::watch;
use tower::{BoxError, Layer, Service};

use super::stream::{InboundConnectInfo, InboundStream, Streams};
use super::{InboundError, InboundServer, ServingStatus};

impl Connected<IncomingStream<'_, MeshListener>> for InboundConnectInfo {
    fn connect_info(stream: IncomingStream<'_, MeshListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The inbound listener for `axum::serve`: see the [module docs](self). Dropping it (as
/// axum does when graceful shutdown starts) closes the socket, so new connections are
/// refused.
pub struct MeshListener {
    streams: Streams,
}

impl std::fmt::Debug for MeshListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshListener")
            .field("local", &self.streams.local)
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for MeshListener {
    type Io = InboundStream;
    type Addr = InboundConnectInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.rx.recv().await {
            Some(stream) => {
                let info = stream.info.clone();
                (stream, info)
            }
            // The accept task ended (it only does when aborted): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(InboundConnectInfo {
            remote: self.streams.local,
            local: self.streams.local,
            peer: None,
        })
    }
}

impl MeshListener {
    /// The bound address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.streams.local
    }

    /// Watches the serving status: connections are closed until the control plane's
    /// inbound listener arrives (wait for [`ServingStatus::is_serving`] before announcing).
    pub fn status(&self) -> watch::Receiver<ServingStatus> {
        self.streams.status.clone()
    }
}

impl InboundServer {
    /// Binds the server's address and returns it as an `axum::serve` listener (see
    /// [`MeshListener`]); the control plane is followed in a background task, which ends
    /// when the listener is dropped.
    pub async fn listen(self) -> Result<MeshListener, InboundError> {
        Ok(MeshListener {
            streams: self.streams().await?,
        })
    }
}

/// Wraps an application (an axum `Router`, any tower HTTP service) so that
/// `axum::serve` over a [`MeshListener`] applies each connection's inbound policies:
/// the path normalization and authorization (`403` for denied requests) of its filter
/// chain. Requests carry [`PeerIdentity`](mesh_tls::PeerIdentity) (mTLS), [`ConnectionAddrs`] and
/// `ConnectInfo<`[`InboundConnectInfo`]`>` in their extensions.
#[derive(Clone, Debug)]
pub struct MeshApp<S> {
    app: S,
}

impl<S> MeshApp<S> {
    /// Wraps `app`. [`Mesh::app`](crate::Mesh::app) also adds the server span.
    pub fn new(app: S) -> Self {
        Self { app }
    }
}

impl<S> Service<IncomingStream<'_, MeshListener>> for MeshApp<S>
where
    S: Clone,
{
    type Response = MeshAppService<S>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, MeshListener>) -> Self::Future {
        let conn = stream.io();
        let chain = conn.chain.clone();
        // From here the connection's requests go through its chain's policies.
        conn.enforced.store(true, Ordering::Release);
        // As Envoy's HCM: the path is normalized once, before RBAC, and forwarded so.
        let inner = PathNormalize::new(
            AuthzLayer::new(chain.policies)
                .with_metrics(chain.metrics)
                .layer(self.app.clone()),
            chain.path_normalization,
        );
        std::future::ready(Ok(MeshAppService {
            inner,
            info: conn.info.clone(),
        }))
    }
}

type Inner<S> = PathNormalize<<AuthzLayer as Layer<S>>::Service>;

/// One connection's service made by [`MeshApp`].
#[derive(Clone)]
pub struct MeshAppService<S> {
    inner: Inner<S>,
    info: InboundConnectInfo,
}

impl<S> std::fmt::Debug for MeshAppService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshAppService")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for MeshAppService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible>,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let ext = req.extensions_mut();
        ext.insert(ConnectionAddrs {
            remote: self.info.remote,
            local: self.info.local,
        });
        if let Some(peer) = &self.info.peer {
            ext.insert(peer.clone());
        }
        ext.insert(ConnectInfo(self.info.clone()));
        let response = self.inner.call(req);
        Box::pin(async move { Ok(response.await?.map(axum::body::Body::new)) })
    }
}
