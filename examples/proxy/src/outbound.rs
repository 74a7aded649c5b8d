//! The outbound listener: plain HTTP/1.1 or h2c from the local app, routed by xDS.
//!
//! ```text
//! accept -> access log (off by default) -> the facade's composed client (`mesh::Mesh::client`): Istio metrics
//!   (reporter=source) -> MeshClient: route -> per cluster fault, timeout, retry, circuit
//!   breaker, outlier detection -> balance -> mTLS h2 upstream
//! ```
//!
//! The app addresses a service as it would without the mesh (`http://reviews:9080/...`,
//! through `http_proxy` or a `Host` header); the authority names the xDS listener.

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mesh_core::extensions::DownstreamAddr;
use mesh_telemetry::access_log::AccessLogLayer;
use mesh_telemetry::trace::{Propagation, TraceContext};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

use crate::drain::next_conn;
use crate::headers::strip_hop_by_hop;

/// The outbound side's parts.
pub(crate) struct Outbound {
    pub(crate) client: mesh::Client,
    pub(crate) access_log: AccessLogLayer,
}

impl Outbound {
    /// Accepts on `listener` until `stop`, then waits for open connections to finish.
    pub(crate) async fn run(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let service = self
            .access_log
            .layer(self.client.map_request(|mut req: Request<_>| {
                strip_hop_by_hop(req.headers_mut());
                // The app's trace headers name the parent of our client span.
                if let Some(ctx) = TraceContext::extract(req.headers(), Propagation::Both) {
                    req.extensions_mut().insert(ctx);
                }
                req
            }));
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        while let Some((tcp, remote)) = next_conn(&listener, &mut stop).await {
            // The app's address, for source-IP hashing and generated hash cookies.
            let service = service.clone().map_request(move |mut req: Request<_>| {
                req.extensions_mut().insert(DownstreamAddr(remote));
                req
            });
            let conn = builder
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%remote, error = %e, "outbound connection ended with an error");
                }
            });
        }
        graceful.shutdown().await;
    }
}
