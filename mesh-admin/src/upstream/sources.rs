//! What a tracked cluster's metrics are read from: [`ClusterSources`] (strong references,
//! given to [`UpstreamMetrics::track`](super::UpstreamMetrics::track)) and what the set
//! keeps of them (weak references, upgraded at each scrape).

use std::fmt;
use std::sync::{Arc, Weak};

use mesh_core::model::HealthStatus;
use mesh_resilience::circuit_breaker::CircuitBreaker;
use mesh_resilience::outlier::OutlierDetector;
use mesh_route::Balancer;
use mesh_route::client::ClusterResilience;
use mesh_route::pool::PoolCounters;

/// A connection pool's counters, as far as the pool keeps them (`None`: not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Endpoints with a pooled client.
    pub endpoints: Option<u64>,
    /// Connections open now (Envoy's `upstream_cx_active`).
    pub connections_active: Option<u64>,
    /// Connections opened so far (`upstream_cx_total`).
    pub connections_total: Option<u64>,
    /// Connection attempts that failed (`upstream_cx_connect_fail`).
    pub connect_failures: Option<u64>,
}

/// Reads a pool's counters.
pub type PoolStatsFn = Arc<dyn Fn() -> PoolStats + Send + Sync>;

/// What one cluster's metrics are read from. Every part is optional.
#[derive(Clone, Default)]
pub struct ClusterSources {
    /// The load balancer: endpoints, their EDS health, ejection flags, active requests.
    pub balancer: Option<Arc<Balancer>>,
    /// The circuit breaker: active and overflowed requests, pending requests,
    /// connections and retries (its default-priority retry budget counts retries).
    pub breaker: Option<Arc<CircuitBreaker>>,
    /// Outlier detection: ejections so far and per-endpoint failure counters.
    pub outlier: Option<Arc<OutlierDetector>>,
    /// The connection pool's counters.
    pub pool: Option<PoolStatsFn>,
}

impl fmt::Debug for ClusterSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSources")
            .field("balancer", &self.balancer.is_some())
            .field("breaker", &self.breaker.is_some())
            .field("outlier", &self.outlier.is_some())
            .field("pool", &self.pool.is_some())
            .finish()
    }
}

/// A [`ResilienceStack`](mesh_route::client::ResilienceStack) cluster's balancer, breaker,
/// outlier detector and pool counters, so that
/// `ResilienceStack::new().observe(move |name, r| upstream.track(name, r.into()))` feeds
/// every cluster the stack builds.
impl From<ClusterResilience> for ClusterSources {
    fn from(r: ClusterResilience) -> Self {
        let pool = r.pool;
        Self {
            balancer: Some(r.balancer),
            breaker: Some(r.breaker),
            outlier: r.outlier,
            pool: Some(Arc::new(move || {
                pool.counters().map(PoolStats::from).unwrap_or_default()
            })),
        }
    }
}

impl From<PoolCounters> for PoolStats {
    fn from(c: PoolCounters) -> Self {
        Self {
            endpoints: Some(c.endpoints),
            connections_active: Some(c.connections_active),
            connections_total: Some(c.connections_total),
            connect_failures: Some(c.connect_failures),
        }
    }
}

/// Weak references: the metrics never keep a removed cluster alive.
#[derive(Clone, Default)]
pub(super) struct Tracked {
    pub(super) balancer: Option<Weak<Balancer>>,
    pub(super) breaker: Option<Weak<CircuitBreaker>>,
    pub(super) outlier: Option<Weak<OutlierDetector>>,
    pub(super) pool: Option<PoolStatsFn>,
}

/// The live parts of a tracked cluster.
pub(super) struct Live {
    pub(super) balancer: Option<Arc<Balancer>>,
    pub(super) breaker: Option<Arc<CircuitBreaker>>,
    pub(super) outlier: Option<Arc<OutlierDetector>>,
    pub(super) pool: Option<PoolStats>,
}

impl Tracked {
    /// `None` once every referenced part is gone (the cluster was removed).
    pub(super) fn live(&self) -> Option<Live> {
        let live = Live {
            balancer: self.balancer.as_ref().and_then(Weak::upgrade),
            breaker: self.breaker.as_ref().and_then(Weak::upgrade),
            outlier: self.outlier.as_ref().and_then(Weak::upgrade),
            pool: None,
        };
        let any = live.balancer.is_some() || live.breaker.is_some() || live.outlier.is_some();
        let only_pool = self.balancer.is_none() && self.breaker.is_none() && self.outlier.is_none();
        (any || only_pool).then(|| Live {
            pool: self.pool.as_ref().map(|f| f()),
            ..live
        })
    }
}

/// A tracked cluster: the workload whose client holds it (see
/// [`UpstreamMetrics::for_workload`]) and its name.
pub(super) type Key = (Option<Arc<str>>, String);

/// Envoy's names of EDS health states.
pub(super) fn health_name(h: HealthStatus) -> &'static str {
    match h {
        HealthStatus::Unknown => "UNKNOWN",
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        HealthStatus::Draining => "DRAINING",
        HealthStatus::Timeout => "TIMEOUT",
        HealthStatus::Degraded => "DEGRADED",
    }
}

pub(super) const HEALTH: [HealthStatus; 6] = [
    HealthStatus::Unknown,
    HealthStatus::Healthy,
    HealthStatus::Unhealthy,
    HealthStatus::Draining,
    HealthStatus::Timeout,
    HealthStatus::Degraded,
];
