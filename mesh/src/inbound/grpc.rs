//! The inbound listener for tonic's `Server::serve_with_incoming`: [`MeshIncoming`]
//! accepts, sniffs and runs the mTLS handshake of each connection as the control plane's
//! inbound listener says (the PeerAuthentication mode per port; closed until the listener
//! arrives), and its [`MeshGrpcLayer`] applies each connection's AuthorizationPolicies
//! (denied calls end with gRPC `PERMISSION_DENIED`) and the server span to every call.
//!
//! Both are needed, and they come as a pair: the layer is taken from the incoming stream.
//! tonic wraps its routes with the layer when serving starts, before it takes the first
//! connection; connections of an incoming stream whose layer was never applied are closed
//! before their first byte is read, and calls reaching the layer over any other transport
//! are denied (fails closed both ways).
//!
//! ```no_run
//! # async fn run(mesh: mesh::Mesh) -> Result<(), Box<dyn std::error::Error>> {
//! # use tonic_health::server::health_reporter;
//! # let (_, my_service) = health_reporter();
//! use tonic::transport::Server;
//!
//! let incoming = mesh.incoming("0.0.0.0:50051".parse()?).await?;
//! Server::builder()
//!     .layer(incoming.layer())
//!     .add_service(my_service)
//!     .serve_with_incoming_shutdown(incoming, async {
//!         drop(tokio::signal::ctrl_c().await)
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Handlers find the caller's [`PeerIdentity`] (mTLS), [`InboundConnectInfo`] and
//! [`ConnectionAddrs`] in `request.extensions()`. As with axum, open connections keep the
//! mTLS mode they were accepted under (new ones get the new mode; policy changes reach
//! open connections on their next call), and tonic's HTTP/2 settings apply instead of
//! [`ConnectionLimits`](super::ConnectionLimits)' keepalive (the connection cap and the
//! sniff timeout still apply).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use mesh_authz::{AuthzLayer, ConnectionAddrs};
use mesh_core::path::PathNormalize;
use mesh_telemetry::trace::{TraceLayer, TraceService};
use mesh_tls::PeerIdentity;
use tokio::sync::watch;
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::server::Connected;
use tower::{BoxError, Layer, Service, ServiceExt};

use super::stream::{ChainPolicy, InboundConnectInfo, InboundStream, Streams};
use super::{InboundError, InboundServer, ServingStatus};

/// What tonic records per connection (`Connected::ConnectInfo`): the connection's
/// addresses and identity, and the policies [`MeshGrpcLayer`] applies to its calls.
#[derive(Clone)]
pub struct GrpcConnectInfo {
    info: InboundConnectInfo,
    chain: ChainPolicy,
}

impl GrpcConnectInfo {
    /// The connection's addresses and verified identity.
    pub fn info(&self) -> &InboundConnectInfo {
        &self.info
    }
}

impl std::fmt::Debug for GrpcConnectInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConnectInfo")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for InboundStream {
    type ConnectInfo = GrpcConnectInfo;

    fn connect_info(&self) -> GrpcConnectInfo {
        GrpcConnectInfo {
            info: self.info.clone(),
            chain: self.chain.clone(),
        }
    }
}

/// The inbound listener as tonic's incoming stream: see the [module docs](self). Dropping
/// it (as tonic does when graceful shutdown starts) closes the socket, so new connections
/// are refused while open calls finish.
pub struct MeshIncoming {
    streams: Streams,
    /// Set once [`MeshGrpcLayer`] has wrapped a service: only then are connections read.
    applied: Arc<AtomicBool>,
    trace: Option<TraceLayer>,
}

impl std::fmt::Debug for MeshIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIncoming")
            .field("local", &self.streams.local)
            .finish_non_exhaustive()
    }
}

impl MeshIncoming {
    fn new(streams: Streams) -> Self {
        Self {
            streams,
            applied: Arc::default(),
            trace: None,
        }
    }

    /// Adds the server span to the calls of [`layer`](Self::layer).
    pub(crate) fn with_trace(mut self, trace: TraceLayer) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The layer that applies the connections' policies to each call; give it to
    /// `Server::builder().layer(..)` of the server that serves this stream.
    pub fn layer(&self) -> MeshGrpcLayer {
        MeshGrpcLayer {
            applied: self.applied.clone(),
            trace: self.trace.clone(),
        }
    }

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

impl Stream for MeshIncoming {
    type Item = Result<InboundStream, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.streams.rx.poll_recv(cx) {
            Poll::Ready(Some(stream)) => {
                // Without the layer the stream stays closed to reads (see InboundStream).
                if self.applied.load(Ordering::Acquire) {
                    stream.enforced.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(stream)))
            }
            // The accept task ended (it only does when aborted): accept nothing more.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

impl InboundServer {
    /// Binds the server's address and returns it as tonic's incoming stream (see
    /// [`MeshIncoming`]; no server span: [`Mesh::incoming`](crate::Mesh::incoming) adds
    /// it); the control plane is followed in a background task, which ends when the
    /// stream is dropped.
    pub async fn incoming(self) -> Result<MeshIncoming, InboundError> {
        Ok(MeshIncoming::new(self.streams().await?))
    }
}

/// Applies the policies of each call's connection: see [`MeshIncoming::layer`].
#[derive(Clone, Debug)]
pub struct MeshGrpcLayer {
    applied: Arc<AtomicBool>,
    trace: Option<TraceLayer>,
}

impl<S> Layer<S> for MeshGrpcLayer {
    type Service = MeshGrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        // tonic calls this once, when serving starts and before it polls the incoming
        // stream: from here the stream's connections may be read.
        self.applied.store(true, Ordering::Release);
        MeshGrpcService {
            inner: match &self.trace {
                Some(trace) => Traced::Yes(trace.layer(inner)),
                None => Traced::No(inner),
            },
        }
    }
}

/// The service, with or without the server span.
#[derive(Clone, Debug)]
enum Traced<S> {
    Yes(TraceService<S>),
    No(S),
}

/// The service made by [`MeshGrpcLayer`]: path normalization and authorization of the
/// call's connection, then the server span, then the routes.
#[derive(Clone, Debug)]
pub struct MeshGrpcService<S> {
    inner: Traced<S>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for MeshGrpcService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call drives a clone of the inner service to readiness (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some(conn) = req.extensions().get::<GrpcConnectInfo>().cloned() else {
            // Served over another transport: the policies are unknown, so deny.
            tracing::error!(
                "gRPC call without a mesh connection: denied (serve with the MeshIncoming the layer came from)"
            );
            let denied = tonic::Status::permission_denied("RBAC: access denied").into_http();
            return Box::pin(std::future::ready(Ok(denied)));
        };
        let ext = req.extensions_mut();
        ext.insert(ConnectionAddrs {
            remote: conn.info.remote,
            local: conn.info.local,
        });
        if let Some(peer) = &conn.info.peer {
            ext.insert::<PeerIdentity>(peer.clone());
        }
        ext.insert(conn.info.clone());
        let authz = AuthzLayer::new(conn.chain.policies).with_metrics(conn.chain.metrics);
        let norm = conn.chain.path_normalization;
        macro_rules! call {
            ($svc:expr) => {{
                let svc = PathNormalize::new(authz.layer($svc.clone()), norm);
                Box::pin(async move { Ok(svc.oneshot(req).await?.map(tonic::body::Body::new)) })
            }};
        }
        match &self.inner {
            Traced::Yes(svc) => call!(svc),
            Traced::No(svc) => call!(svc),
        }
    }
}
