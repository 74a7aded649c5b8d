//! The hook that puts layers around each cluster's [`EndpointService`]: a
//! [`ClusterStack`] builds, once per cluster, the service MeshClient calls for every
//! request routed to that cluster.
//!
//! The stack is built when a cluster first appears and kept for as long as the cluster
//! resource does not change: endpoint (EDS) updates reach the same balancer in place, so
//! per-cluster state held by the layers (circuit-breaker counters, outlier detection,
//! retry budgets) survives snapshots in which the cluster did not change. A changed
//! cluster resource gets a new stack, as Envoy rebuilds a changed cluster.
//!
//! [`ResilienceStack`](super::ResilienceStack) is the stack with Envoy's resilience layers
//! (mesh-resilience; the `mesh` facade's default); any closure `Fn(&ClusterContext,
//! EndpointService) -> ClusterService` is a stack too:
//!
//! ```
//! use mesh_route::client::{ClusterContext, ClusterService, EndpointService};
//! use mesh_route::pool::{PoolBody, RequestBody};
//! use http_body_util::BodyExt;
//! use tower::util::BoxCloneSyncService;
//! use tower::{BoxError, ServiceExt};
//!
//! let stack = |cx: &ClusterContext, endpoints: EndpointService| -> ClusterService {
//!     let name = cx.cluster.name.clone();
//!     let svc = endpoints
//!         .map_request(move |req: http::Request<RequestBody>| {
//!             tracing::trace!(cluster = %name, "sending");
//!             req
//!         })
//!         .map_response(|r: http::Response<PoolBody>| {
//!             r.map(|b| b.map_err(BoxError::from).boxed_unsync())
//!         });
//!     BoxCloneSyncService::new(svc)
//! };
//! # let _ = stack;
//! ```

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use mesh_core::model::Cluster;
use mesh_resilience::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, ServiceExt};

use super::{EndpointService, MeshBody};
use crate::lb::Balancer;
use crate::pool::{RequestBody, UpstreamPool};

/// What MeshClient calls for a request routed to a cluster.
pub type ClusterService = BoxCloneSyncService<Request<RequestBody>, Response<MeshBody>, BoxError>;

/// The cluster a stack is built for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterContext {
    /// The cluster resource (circuit breakers, outlier detection, protocol options).
    pub cluster: Arc<Cluster>,
    /// Its load balancer (outlier detection ejects through it).
    pub balancer: Arc<Balancer>,
    /// Its connection pool (for its counters).
    pub pool: UpstreamPool,
}

/// Builds the service for one cluster around its [`EndpointService`].
pub trait ClusterStack: Send + Sync + 'static {
    /// The cluster's service. Called once per cluster (and again when the cluster resource
    /// changes), from within the Tokio runtime.
    fn build(&self, cluster: &ClusterContext, endpoints: EndpointService) -> ClusterService;

    /// Whether the stack applies the route timeout itself (then MeshClient does not).
    fn applies_timeouts(&self) -> bool {
        true
    }

    /// The service for a request a redirect or direct-response route answers locally
    /// (`answer` gives the answer): the layers that act before Envoy's router, such as a
    /// local rate limit, wrap it here. By default none.
    fn local(&self, answer: ClusterService) -> ClusterService {
        answer
    }
}

impl<F> ClusterStack for F
where
    F: Fn(&ClusterContext, EndpointService) -> ClusterService + Send + Sync + 'static,
{
    fn build(&self, cluster: &ClusterContext, endpoints: EndpointService) -> ClusterService {
        self(cluster, endpoints)
    }
}

/// No resilience layers: each request makes one attempt. MeshClient applies the route
/// timeout (with its `default_timeout`); mesh-resilience's [`TimeoutLayer`] applies the
/// rest of the route's deadlines, as with [`ResilienceStack`](super::ResilienceStack): the
/// caller's `grpc-timeout` (capped by `grpc_timeout_header_max`), `max_stream_duration` and
/// the idle timeout, over the whole stream. Every client honours a gRPC caller's deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainStack;

impl ClusterStack for PlainStack {
    fn build(&self, _cluster: &ClusterContext, endpoints: EndpointService) -> ClusterService {
        let svc = TimeoutLayer::default().layer(endpoints);
        BoxCloneSyncService::new(ServiceExt::<Request<RequestBody>>::map_response(svc, |r| {
            r.map(|b| b.map_err(Into::<BoxError>::into).boxed_unsync())
        }))
    }

    fn applies_timeouts(&self) -> bool {
        false
    }
}
