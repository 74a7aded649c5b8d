//! Per-cluster upstream metrics, read at scrape time from the state the client stack keeps:
//! endpoint membership and health (mesh-route's [`Balancer`](mesh_route::Balancer)),
//! outlier ejections ([`OutlierDetector`](mesh_resilience::outlier::OutlierDetector)),
//! retries and circuit-breaker overflows
//! ([`CircuitBreaker`](mesh_resilience::circuit_breaker::CircuitBreaker) and its
//! retry budget), and connection pools (a [`PoolStats`] closure). Names follow Envoy's
//! cluster statistics (`upstream_rq_retry`, `upstream_rq_pending_overflow`, ...) under the
//! `mesh_cluster_` prefix, labelled `cluster_name` as Envoy's Prometheus output is.
//!
//! Clusters come and go with the config: [`UpstreamMetrics::track`] is called when a
//! cluster's stack is built (the facade's `ResilienceStack::observe` hook), and holds only
//! weak references, so a cluster removed from the config disappears from the next scrape.
//!
//! ```
//! use std::sync::Arc;
//! use prometheus_client::registry::Registry;
//! use mesh_core::model::CircuitBreakers;
//! use mesh_resilience::circuit_breaker::CircuitBreaker;
//! use mesh_admin::upstream::{ClusterSources, UpstreamMetrics};
//!
//! let upstream = UpstreamMetrics::new();
//! let mut registry = Registry::default();
//! upstream.register(&mut registry);
//! let breaker = CircuitBreaker::new("outbound|9080||reviews", &CircuitBreakers::default());
//! upstream.track("outbound|9080||reviews", ClusterSources {
//!     breaker: Some(breaker.clone()),
//!     ..Default::default()
//! });
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains(
//!     "mesh_cluster_upstream_rq_pending_overflow_total{cluster_name=\"outbound|9080||reviews\"} 0"));
//! ```

mod collector;
mod json;
mod sources;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use mesh_resilience::policy::Priority;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use sources::{Key, Tracked};

pub use sources::{ClusterSources, PoolStats, PoolStatsFn};

/// The clusters whose upstream state is exported. Cheap to clone (clones share the set).
#[derive(Clone, Default)]
pub struct UpstreamMetrics {
    clusters: Arc<RwLock<BTreeMap<Key, Tracked>>>,
    /// The `workload` label of the clusters tracked through this handle.
    workload: Option<Arc<str>>,
}

impl fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.clusters.read().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("UpstreamMetrics")
            .field("clusters", &n)
            .finish()
    }
}

impl UpstreamMetrics {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exports the set's families in `registry` under the `mesh` prefix
    /// (`mesh_cluster_*`).
    pub fn register(&self, registry: &mut Registry) {
        registry
            .sub_registry_with_prefix("mesh")
            .register_collector(Box::new(self.clone()));
    }

    /// A handle on the same set whose clusters carry the label `workload="<workload>"`
    /// (and a `"workload"` key in [`UpstreamMetrics::clusters_json`]), for several clients
    /// of one process exporting through one registry: two workloads calling the same
    /// cluster are two series, not one overwriting the other. Register the set once.
    pub fn for_workload(&self, workload: &str) -> Self {
        Self {
            clusters: self.clusters.clone(),
            workload: Some(workload.into()),
        }
    }

    /// Starts (or, for a rebuilt cluster, restarts) exporting `cluster` from `sources`.
    /// Counters of a rebuilt cluster start again from zero, which Prometheus reads as a
    /// counter reset.
    pub fn track(&self, cluster: &str, sources: ClusterSources) {
        let tracked = Tracked {
            balancer: sources.balancer.as_ref().map(Arc::downgrade),
            breaker: sources.breaker.as_ref().map(Arc::downgrade),
            outlier: sources.outlier.as_ref().map(Arc::downgrade),
            pool: sources.pool,
        };
        let mut clusters = self.clusters.write().unwrap_or_else(|p| p.into_inner());
        // Forget clusters whose state is gone, so the set tracks the config.
        clusters.retain(|_, t| t.live().is_some());
        clusters.insert(self.key(cluster), tracked);
    }

    /// Stops exporting `cluster` (of this handle's workload).
    pub fn forget(&self, cluster: &str) {
        self.clusters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key(cluster));
    }

    fn key(&self, cluster: &str) -> Key {
        (self.workload.clone(), cluster.to_owned())
    }

    fn live(&self) -> Vec<(Key, sources::Live)> {
        self.clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(n, t)| t.live().map(|l| (n.clone(), l)))
            .collect()
    }

    /// Retries sent so far by every live tracked cluster of the set (all workloads), as
    /// their retry budgets counted them (`upstream_rq_retry` summed).
    pub fn retries_total(&self) -> u64 {
        self.live()
            .iter()
            .filter_map(|(_, l)| l.breaker.as_ref())
            .map(|b| b.retry_budget(Priority::Default).retries_total())
            .sum()
    }

    /// Envoy's `/clusters?format=json` view: every tracked cluster of the set with its
    /// endpoints, their EDS health, outlier ejection state and active requests, and the
    /// breaker's counters.
    pub fn clusters_json(&self) -> Value {
        let statuses: Vec<Value> = self
            .live()
            .into_iter()
            .map(|((workload, name), l)| {
                let mut v = json::cluster_json(&name, &l);
                if let Some(w) = workload {
                    v["workload"] = json!(&*w);
                }
                v
            })
            .collect();
        json!({ "cluster_statuses": statuses })
    }
}

#[cfg(test)]
mod tests;
