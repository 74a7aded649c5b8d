use std::sync::Arc;

use tower_layer::Layer;

use super::peers::PeerResolver;
use super::{IstioMetrics, IstioMetricsService, Reporter, ServiceInfo, WorkloadInfo};

/// Records Istio's standard request metrics for every call through the wrapped service.
///
/// Use [`IstioMetricsLayer::source`] on a client (outermost, before routing) and
/// [`IstioMetricsLayer::destination`] on a server (after mTLS, so the caller's
/// [`PeerIdentity`](mesh_core::extensions::PeerIdentity) is in the request extensions).
/// Metrics are recorded when the response body ends (or is dropped), so durations cover
/// streamed bodies.
#[derive(Clone, Debug)]
pub struct IstioMetricsLayer {
    resolver: Arc<PeerResolver>,
}

impl IstioMetricsLayer {
    /// The client side (`reporter="source"`): `local` is this workload; destinations are
    /// resolved from the request authority through the resolver's [`super::PeerDirectory`].
    pub fn source(metrics: &IstioMetrics, local: WorkloadInfo) -> Self {
        Self {
            resolver: Arc::new(PeerResolver::new(
                metrics.clone(),
                Reporter::Source,
                local,
                ServiceInfo::default(),
            )),
        }
    }

    /// The server side (`reporter="destination"`): `local` is this workload and `service`
    /// the service it serves; callers are resolved from their SPIFFE ID.
    pub fn destination(metrics: &IstioMetrics, local: WorkloadInfo, service: ServiceInfo) -> Self {
        Self {
            resolver: Arc::new(PeerResolver::new(
                metrics.clone(),
                Reporter::Destination,
                local,
                service,
            )),
        }
    }

    /// The resolver, to update the peer directory when config changes.
    pub fn resolver(&self) -> &Arc<PeerResolver> {
        &self.resolver
    }
}

impl<S> Layer<S> for IstioMetricsLayer {
    type Service = IstioMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IstioMetricsService::new(inner, self.resolver.clone())
    }
}
