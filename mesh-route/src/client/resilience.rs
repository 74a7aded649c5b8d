//! [`ResilienceStack`]: where routing and resilience meet. mesh-resilience's layers wired
//! to the cluster and route config as a [`ClusterStack`], so that
//! `MeshClient::with_stack(.., ResilienceStack::new())` behaves as Envoy does with the
//! cluster's and route's resilience settings and no extra code. The `mesh` facade uses it
//! by default and adds Istio's source metrics outside.
//!
//! Per request, outermost first:
//!
//! ```text
//! (IstioMetricsLayer::source           mesh facade: istio_requests_total{reporter="source"})
//!  └ MeshClient                        route by authority, pick the cluster, header edits,
//!                                      mirroring; Arc<RoutePolicy> into extensions
//!     └ per cluster (built once, kept while the cluster resource is unchanged):
//!       LocalRateLimitLayer            the route's local_ratelimit buckets -> 429 (shared
//!                                      by all clusters: one set per ResilienceStack)
//!        FaultLayer                    route's fault override (Istio VirtualService fault)
//!         └ TimeoutLayer               route timeout, idle timeout, grpc-timeout -> 504
//!            └ RetryLayer              route's retry policy, cluster's retry budget
//!               └ CircuitBreakerLayer  cluster's thresholds, 503 x-envoy-overloaded
//!                  └ OutlierLayer      cluster's outlier_detection -> balancer ejections
//!                     └ EndpointService LB pick (avoiding previous hosts) -> mTLS pool
//! ```
//!
//! Each layer is also usable alone in a `tower::ServiceBuilder` (see mesh-resilience);
//! this module only wires them to the config: outlier detection ejects through the
//! cluster's [`Balancer`] (it implements [`mesh_core::hosts::EjectableHosts`]), the retry
//! budget is the circuit breaker's `max_retries`.
//!
//! ```no_run
//! # fn demo(source: mesh_core::config::StaticSource, identity: mesh_tls::IdentityStore) {
//! use mesh_route::client::{MeshClient, MeshClientConfig, ResilienceStack};
//!
//! // `source`: an xDS client, the embedded control plane, or a StaticSource
//! let client = MeshClient::with_stack(source, identity, MeshClientConfig::default(), ResilienceStack::new());
//! # }
//! ```

use std::sync::Arc;

use http_body_util::BodyExt;
use mesh_resilience::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use mesh_resilience::fault::FaultLayer;
use mesh_resilience::outlier::{OutlierDetector, OutlierLayer};
use mesh_resilience::policy::Priority;
use mesh_resilience::rate_limit::{LocalRateLimitLayer, LocalRateLimits};
use mesh_resilience::retry::{RetryConfig, RetryLayer};
use mesh_resilience::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use super::{ClusterContext, ClusterService, ClusterStack, EndpointService};
use crate::Balancer;
use crate::pool::{RequestBody, WeakPool};

/// Per-cluster state of a [`ResilienceStack`], for inspection (tests, admin pages).
#[derive(Clone, Debug)]
pub struct ClusterResilience {
    /// The cluster's load balancer: its endpoints, their EDS health, outlier ejections and
    /// requests in flight.
    pub balancer: Arc<Balancer>,
    /// The cluster's circuit breaker (counters, overflow stats, retry budget).
    pub breaker: Arc<CircuitBreaker>,
    /// Its outlier detector, when the cluster configures outlier detection.
    pub outlier: Option<Arc<OutlierDetector>>,
    /// Reads its connection pool's counters (without keeping the pool alive).
    pub pool: WeakPool,
}

type Observer = Arc<dyn Fn(&str, ClusterResilience) + Send + Sync>;

/// Envoy's resilience layers around each cluster, configured from the cluster resource
/// (circuit breakers, outlier detection) and the route policy each request carries
/// (fault, timeouts, retries). See the [module docs](self) for the order.
#[derive(Clone)]
pub struct ResilienceStack {
    buffer_cap: usize,
    observer: Option<Observer>,
    local_rate_limits: Arc<LocalRateLimits>,
}

impl Default for ResilienceStack {
    fn default() -> Self {
        Self {
            buffer_cap: RetryConfig::default().buffer_cap,
            observer: None,
            local_rate_limits: LocalRateLimits::new(),
        }
    }
}

impl std::fmt::Debug for ResilienceStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilienceStack")
            .field("buffer_cap", &self.buffer_cap)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl ResilienceStack {
    /// The default stack (64 KiB retry replay buffer).
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of request body kept for retries; a longer body is sent once.
    pub fn retry_buffer_cap(mut self, bytes: usize) -> Self {
        self.buffer_cap = bytes;
        self
    }

    /// Calls `observer` with each cluster's name and state when its stack is built.
    pub fn observe(
        mut self,
        observer: impl Fn(&str, ClusterResilience) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The local rate limit buckets of the routes this stack serves (clones of the stack
    /// share them), e.g. to read how many requests were limited.
    pub fn local_rate_limits(&self) -> &Arc<LocalRateLimits> {
        &self.local_rate_limits
    }
}

impl ClusterStack for ResilienceStack {
    /// The route's local rate limits, with the same buckets as forwarded requests, then its
    /// fault (Envoy's fault filter runs before the router, so it aborts or delays
    /// redirects and direct responses too).
    fn local(&self, answer: ClusterService) -> ClusterService {
        let svc = ServiceBuilder::new()
            .layer(LocalRateLimitLayer::new(self.local_rate_limits.clone()))
            .layer(FaultLayer::new(None))
            .service(answer);
        let svc = ServiceExt::<http::Request<RequestBody>>::map_response(svc, |r| {
            r.map(|b| b.map_err(Into::<BoxError>::into).boxed_unsync())
        });
        BoxCloneSyncService::new(svc)
    }

    fn build(&self, cx: &ClusterContext, endpoints: EndpointService) -> ClusterService {
        let cluster = &cx.cluster;
        // The pool's breaker: its connection and pending slots and the layer's request
        // slots are one set of thresholds, as in Envoy.
        let breaker = cx.pool.breaker().clone();
        let outlier = cluster.outlier_detection.map(|cfg| {
            let detector = OutlierDetector::new(cx.balancer.clone(), cfg);
            // The sweep task ends by itself once the detector (the cluster) is dropped.
            drop(detector.spawn());
            detector
        });
        if let Some(observe) = &self.observer {
            observe(
                &cluster.name,
                ClusterResilience {
                    balancer: cx.balancer.clone(),
                    breaker: breaker.clone(),
                    outlier: outlier.clone(),
                    pool: cx.pool.downgrade(),
                },
            );
        }
        let retry = RetryConfig::default()
            .budget(breaker.retry_budget(Priority::Default))
            .buffer_cap(self.buffer_cap);
        let svc = ServiceBuilder::new()
            .layer(LocalRateLimitLayer::new(self.local_rate_limits.clone()))
            .layer(FaultLayer::new(None))
            .layer(TimeoutLayer::default())
            .layer(RetryLayer::new(retry))
            .layer(CircuitBreakerLayer::new(breaker))
            .option_layer(outlier.map(OutlierLayer::new))
            .service(endpoints);
        let svc = ServiceExt::<http::Request<RequestBody>>::map_response(svc, |r| {
            r.map(|b| b.map_err(Into::<BoxError>::into).boxed_unsync())
        });
        BoxCloneSyncService::new(svc)
    }
}
