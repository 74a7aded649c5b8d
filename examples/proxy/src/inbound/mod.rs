//! The inbound listener: mesh traffic for the local app.
//!
//! ```text
//! accept -> mTLS (STRICT) | sniff -> mTLS or plaintext (PERMISSIVE) | plaintext (DISABLE)
//!   -> access log (off by default) -> Istio metrics (reporter=destination)
//!   -> path normalization (Istio's BASE) -> authorization (RBAC) -> the app
//! ```
//!
//! Until a usable inbound listener is known (and again when it is removed) connections are
//! accepted and closed, and requests on open ones are denied ([`policy`]): the proxy fails
//! closed. Metrics wrap authorization so that denials are counted as 403s, as Istio's sidecar
//! reports them. The accept loop is ours rather than `mesh_tls::server::serve_peer_auth`
//! because the mode follows xDS per connection; each connection is served by
//! `mesh_tls::server::serve_connection`, as every server of the mesh, and drains on shutdown.

mod app;
pub(crate) mod policy;

use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use std::time::Duration;

use hyper::body::Incoming;
use mesh_authz::{AuthzLayer, AuthzMetrics};
use mesh_core::path::{PathNormalization, PathNormalize};
use mesh_telemetry::access_log::AccessLogLayer;
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo, WorkloadInfo};
use mesh_telemetry::trace::{Propagation, SpanTags, TraceContext, TraceLayer};
use mesh_tls::PeerIdentity;
use mesh_tls::server::{
    ConnectionAddrs, ConnectionLimiter, ConnectionLimits, ConnectionPermit, Drain, LimitedListener,
    MeshAcceptor, PeerAuthMode, serve_connection_with_limits,
};
use mesh_tls::sniff::{Sniffed, sniff_within};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::{Layer, ServiceExt};

use crate::drain::next_limited;
use policy::InboundPolicy;

/// The inbound side's parts.
pub(crate) struct Inbound {
    pub(crate) acceptor: MeshAcceptor,
    pub(crate) policy: InboundPolicy,
    pub(crate) metrics: IstioMetrics,
    pub(crate) local: WorkloadInfo,
    pub(crate) service: ServiceInfo,
    pub(crate) app: SocketAddr,
    pub(crate) app_protocol: crate::options::AppProtocol,
    pub(crate) access_log: AccessLogLayer,
    pub(crate) authz_metrics: AuthzMetrics,
    /// Slow and many connections (the TLS handshake timeout is the acceptor's).
    pub(crate) limits: ConnectionLimits,
    /// Counts connections against `limits.max_connections`.
    pub(crate) limiter: ConnectionLimiter,
}

impl Inbound {
    /// Accepts on `listener` until `stop`, then waits for open connections to finish.
    pub(crate) async fn run(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let ours: Arc<str> = self.local.principal.as_str().into();
        let app = app::AppService::new(self.app, self.app_protocol);
        let authz = AuthzLayer::new(self.policy.authz.clone()).with_metrics(self.authz_metrics);
        // Outermost, as the facade's server: the span covers authorization and the app, and
        // the app receives the span's traceparent / X-B3-* (its parent for its own calls).
        let trace =
            TraceLayer::server(Propagation::Both).with_tags(SpanTags::from_workload(&self.local));
        let metrics = IstioMetricsLayer::destination(&self.metrics, self.local, self.service);
        // Paths are normalized as Istio's default (BASE) before RBAC and forwarded so.
        let app = PathNormalize::new(authz.layer(app), PathNormalization::BASE);
        let service = trace.layer(self.access_log.layer(metrics.layer(app)).map_request(
            |mut req: Request<Incoming>| {
                // The app continues our server span, as behind Envoy (which rewrites the
                // trace headers to its span).
                if let Some(ctx) = req.extensions().get::<TraceContext>().copied() {
                    ctx.inject(req.headers_mut(), Propagation::Both);
                }
                req
            },
        ));
        // Each connection holds a clone; `recv` returns once every connection has ended.
        let (alive, mut all_closed) = mpsc::channel::<()>(1);
        let limits = Arc::new(self.limits);
        let mut listener = LimitedListener::new(listener, self.limiter);
        while let Some((tcp, remote, permit)) = next_limited(&mut listener, &mut stop).await {
            let Ok(local) = tcp.local_addr() else {
                continue;
            };
            let addrs = ConnectionAddrs { remote, local };
            let Some(mode) = *self.policy.mode.borrow() else {
                // No usable listener yet (or any more): accept and close, as
                // `mesh::inbound` does while NOT_SERVING.
                tracing::debug!(%remote, "no inbound listener: connection refused");
                continue;
            };
            let acceptor = self.acceptor.clone();
            let conn = Conn {
                ours: ours.clone(),
                service: service.clone(),
                stop: stop.clone(),
                addrs,
                limits: limits.clone(),
                _permit: permit,
                _alive: alive.clone(),
            };
            let sniff_timeout = limits.sniff_timeout;
            tokio::spawn(async move {
                match mode {
                    PeerAuthMode::Disable => conn.serve(tcp, None).await,
                    PeerAuthMode::Strict => match acceptor.accept(tcp).await {
                        Ok((tls, peer)) => conn.serve(tls, Some(peer)).await,
                        Err(e) => tracing::info!(%remote, error = %e, "STRICT: connection refused"),
                    },
                    PeerAuthMode::Permissive => match sniff_within(sniff_timeout, tcp).await {
                        Ok((Sniffed::Plaintext, io)) => conn.serve(io, None).await,
                        Ok((Sniffed::Tls, io)) => match acceptor.accept(io).await {
                            Ok((tls, peer)) => conn.serve(tls, Some(peer)).await,
                            Err(e) => {
                                tracing::info!(%remote, error = %e, "mTLS handshake rejected")
                            }
                        },
                        Err(e) => tracing::debug!(%remote, error = %e, "lost while sniffing"),
                    },
                }
            });
        }
        drop(alive);
        let _ = all_closed.recv().await;
    }
}

/// How long a draining connection may finish its requests; [`crate::Running::drain`]'s
/// own timeout usually ends the wait first.
const CONNECTION_DRAIN: Duration = Duration::from_secs(60);

/// One accepted connection, before its transport is known.
struct Conn<S> {
    /// Our SPIFFE ID, for `x-forwarded-client-cert`.
    ours: Arc<str>,
    service: S,
    /// Set when the proxy drains.
    stop: watch::Receiver<bool>,
    addrs: ConnectionAddrs,
    limits: Arc<ConnectionLimits>,
    /// The connection's slot under the listener's cap.
    _permit: ConnectionPermit,
    _alive: mpsc::Sender<()>,
}

impl<S, B> Conn<S>
where
    S: tower::Service<Request<Incoming>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<tower::BoxError>,
{
    async fn serve<IO>(self, io: IO, peer: Option<PeerIdentity>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addrs = self.addrs;
        let xfcc = peer.as_ref().and_then(|p| app::xfcc(&self.ours, p));
        let service = self.service.map_request(move |mut req: Request<Incoming>| {
            if let Some(xfcc) = &xfcc {
                req.extensions_mut().insert(xfcc.clone());
            }
            req
        });
        let mut stop = self.stop;
        let drain = Drain {
            signal: async move { drop(stop.wait_for(|s| *s).await) },
            timeout: CONNECTION_DRAIN,
        };
        serve_connection_with_limits(io, service, addrs, peer, drain, &self.limits).await;
        drop(self._permit);
        drop(self._alive);
    }
}
