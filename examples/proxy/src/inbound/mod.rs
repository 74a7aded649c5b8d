//! The inbound listener: mesh traffic for the local app.
//!
//! ```text
//! accept -> mTLS (STRICT) | sniff -> mTLS or plaintext (PERMISSIVE) | plaintext (DISABLE)
//!   -> access log (off by default) -> Istio metrics (reporter=destination)
//!   -> authorization (RBAC) -> the app
//! ```
//!
//! Metrics wrap authorization so that denials are counted as 403s, as Istio's sidecar
//! reports them. The accept loop is ours rather than `mesh_tls::server::serve_peer_auth`
//! because the mode follows xDS per connection and connections must drain on shutdown.

mod app;
pub(crate) mod policy;

use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mesh_authz::{AuthzLayer, AuthzMetrics};
use mesh_telemetry::access_log::AccessLogLayer;
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo, WorkloadInfo};
use mesh_tls::PeerIdentity;
use mesh_tls::server::{ConnectionAddrs, MeshAcceptor, PeerAuthMode};
use mesh_tls::sniff::{Sniffed, sniff};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

use crate::drain::next_conn;
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
}

impl Inbound {
    /// Accepts on `listener` until `stop`, then waits for open connections to finish.
    pub(crate) async fn run(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let ours: Arc<str> = self.local.principal.as_str().into();
        let app = app::AppService::new(self.app, self.app_protocol);
        let authz = AuthzLayer::new(self.policy.authz.clone()).with_metrics(self.authz_metrics);
        let metrics = IstioMetricsLayer::destination(&self.metrics, self.local, self.service);
        let service = self.access_log.layer(metrics.layer(authz.layer(app)));
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        while let Some((tcp, remote)) = next_conn(&listener, &mut stop).await {
            let Ok(local) = tcp.local_addr() else {
                continue;
            };
            let addrs = ConnectionAddrs { remote, local };
            let mode = *self.policy.mode.borrow();
            let acceptor = self.acceptor.clone();
            let conn = Conn {
                ours: ours.clone(),
                service: service.clone(),
                builder: builder.clone(),
                watcher: graceful.watcher(),
                addrs,
            };
            tokio::spawn(async move {
                match mode {
                    PeerAuthMode::Disable => conn.serve(tcp, None).await,
                    PeerAuthMode::Strict => match acceptor.accept(tcp).await {
                        Ok((tls, peer)) => conn.serve(tls, Some(peer)).await,
                        Err(e) => tracing::info!(%remote, error = %e, "STRICT: connection refused"),
                    },
                    PeerAuthMode::Permissive => match sniff(tcp).await {
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
        graceful.shutdown().await;
    }
}

/// One accepted connection, before its transport is known.
struct Conn<S> {
    /// Our SPIFFE ID, for `x-forwarded-client-cert`.
    ours: Arc<str>,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    addrs: ConnectionAddrs,
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
            let ext = req.extensions_mut();
            ext.insert(addrs);
            if let Some(peer) = &peer {
                ext.insert(peer.clone());
            }
            if let Some(xfcc) = &xfcc {
                ext.insert(xfcc.clone());
            }
            req
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(remote = %addrs.remote, error = %e, "inbound connection ended with an error");
        }
    }
}
