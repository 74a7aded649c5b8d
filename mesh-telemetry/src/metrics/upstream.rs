//! Per-cluster upstream metrics, read at scrape time from the state the client stack keeps:
//! endpoint membership and health (mesh-route's [`Balancer`]), outlier ejections
//! ([`OutlierDetector`]), retries and circuit-breaker overflows ([`CircuitBreaker`] and its
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
//! use mesh_telemetry::metrics::upstream::{ClusterSources, UpstreamMetrics};
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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock, Weak};

use mesh_core::model::{EndpointAddress, HealthStatus};
use mesh_resilience::circuit_breaker::{BreakerStats, CircuitBreaker};
use mesh_resilience::outlier::OutlierDetector;
use mesh_resilience::policy::Priority;
use mesh_route::Balancer;
use mesh_route::client::ClusterResilience;
use mesh_route::pool::PoolCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::library::{Sample, family};

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
struct Tracked {
    balancer: Option<Weak<Balancer>>,
    breaker: Option<Weak<CircuitBreaker>>,
    outlier: Option<Weak<OutlierDetector>>,
    pool: Option<PoolStatsFn>,
}

/// The live parts of a tracked cluster.
struct Live {
    balancer: Option<Arc<Balancer>>,
    breaker: Option<Arc<CircuitBreaker>>,
    outlier: Option<Arc<OutlierDetector>>,
    pool: Option<PoolStats>,
}

impl Tracked {
    /// `None` once every referenced part is gone (the cluster was removed).
    fn live(&self) -> Option<Live> {
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
type Key = (Option<Arc<str>>, String);

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

/// Envoy's names of EDS health states.
fn health_name(h: HealthStatus) -> &'static str {
    match h {
        HealthStatus::Unknown => "UNKNOWN",
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        HealthStatus::Draining => "DRAINING",
        HealthStatus::Timeout => "TIMEOUT",
        HealthStatus::Degraded => "DEGRADED",
    }
}

const HEALTH: [HealthStatus; 6] = [
    HealthStatus::Unknown,
    HealthStatus::Healthy,
    HealthStatus::Unhealthy,
    HealthStatus::Draining,
    HealthStatus::Timeout,
    HealthStatus::Degraded,
];

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

    fn live(&self) -> Vec<(Key, Live)> {
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
                let mut v = cluster_json(&name, &l);
                if let Some(w) = workload {
                    v["workload"] = json!(&*w);
                }
                v
            })
            .collect();
        json!({ "cluster_statuses": statuses })
    }
}

fn address_json(a: &EndpointAddress) -> Value {
    match a {
        EndpointAddress::Socket(s) => json!({"socket_address": {
            "address": s.ip().to_string(), "port_value": s.port()}}),
        EndpointAddress::Dns { host, port } => json!({"socket_address": {
            "address": host.to_string(), "port_value": port}}),
    }
}

fn breaker_json(b: &BreakerStats) -> Value {
    json!({
        "requests": b.requests, "pending_requests": b.pending,
        "connections": b.connections, "retries": b.retries,
        "requests_overflow": b.requests_overflow, "pending_overflow": b.pending_overflow,
        "connections_overflow": b.connections_overflow, "retries_overflow": b.retries_overflow,
    })
}

fn cluster_json(name: &str, l: &Live) -> Value {
    let outlier: BTreeMap<Arc<str>, _> = l
        .outlier
        .as_ref()
        .map(|o| {
            o.endpoints()
                .into_iter()
                .map(|e| (e.endpoint.clone(), e))
                .collect()
        })
        .unwrap_or_default();
    let hosts: Vec<Value> = l
        .balancer
        .as_ref()
        .map(|b| b.endpoints())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let od = outlier.get(e.hash_key());
            json!({
                "address": address_json(e.address()),
                "health_status": {
                    "eds_health_status": health_name(e.endpoint().health),
                    "failed_outlier_check": e.is_ejected(),
                },
                "healthy": e.is_healthy(),
                "weight": e.endpoint().weight,
                "priority": e.priority(),
                "locality": {
                    "region": e.locality().region.to_string(),
                    "zone": e.locality().zone.to_string(),
                    "sub_zone": e.locality().sub_zone.to_string(),
                },
                "stats": { "rq_active": e.active_requests() },
                "outlier_detection": od.map(|o| json!({
                    "ejected": o.ejected,
                    "ejections_total": o.ejections_total,
                    "ejection_multiplier": o.ejection_multiplier,
                    "consecutive_5xx": o.consecutive_5xx,
                    "consecutive_gateway_failure": o.consecutive_gateway_failure,
                    "consecutive_local_origin_failure": o.consecutive_local_origin_failure,
                })),
            })
        })
        .collect();
    let mut v = json!({ "name": name, "host_statuses": hosts });
    if let Some(b) = &l.breaker {
        v["circuit_breakers"] = json!({
            "default": breaker_json(&b.stats(Priority::Default)),
            "high": breaker_json(&b.stats(Priority::High)),
        });
    }
    if let Some(o) = &l.outlier {
        v["outlier_detection"] = json!({ "ejections_enforced_total": o.ejections_total() });
    }
    if let Some(p) = &l.pool {
        v["pool"] = json!({
            "endpoints": p.endpoints,
            "connections_active": p.connections_active,
            "connections_total": p.connections_total,
            "connect_failures": p.connect_failures,
        });
    }
    v
}

/// The families, filled cluster by cluster.
#[derive(Default)]
struct Families {
    membership_total: Vec<Sample>,
    membership_healthy: Vec<Sample>,
    endpoints: Vec<Sample>,
    ejections_active: Vec<Sample>,
    ejections_enforced: Vec<Sample>,
    rq_active: Vec<Sample>,
    retry: Vec<Sample>,
    retry_overflow: Vec<Sample>,
    pending_overflow: Vec<Sample>,
    cx_overflow: Vec<Sample>,
    breaker_active: Vec<Sample>,
    cx_active: Vec<Sample>,
    cx_total: Vec<Sample>,
    cx_connect_fail: Vec<Sample>,
    pool_endpoints: Vec<Sample>,
}

impl Families {
    fn add(&mut self, (workload, name): &Key, l: &Live) {
        let c = || {
            let mut labels = vec![("cluster_name", name.clone())];
            if let Some(w) = workload {
                labels.push(("workload", w.to_string()));
            }
            labels
        };
        if let Some(b) = &l.balancer {
            let eps = b.endpoints();
            self.membership_total.push((c(), eps.len() as f64));
            let healthy = eps.iter().filter(|e| e.is_healthy()).count();
            self.membership_healthy.push((c(), healthy as f64));
            for h in HEALTH {
                let n = eps.iter().filter(|e| e.endpoint().health == h).count();
                let mut labels = c();
                labels.push(("health", health_name(h).to_owned()));
                self.endpoints.push((labels, n as f64));
            }
            let ejected = eps.iter().filter(|e| e.is_ejected()).count();
            self.ejections_active.push((c(), ejected as f64));
            let active: u64 = eps.iter().map(|e| e.active_requests()).sum();
            self.rq_active.push((c(), active as f64));
        }
        if let Some(o) = &l.outlier {
            self.ejections_enforced
                .push((c(), o.ejections_total() as f64));
        }
        if let Some(b) = &l.breaker {
            let (d, h) = (b.stats(Priority::Default), b.stats(Priority::High));
            let budget = b.retry_budget(Priority::Default);
            self.retry.push((c(), budget.retries_total() as f64));
            self.retry_overflow
                .push((c(), (d.retries_overflow + h.retries_overflow) as f64));
            // Envoy counts both request and pending overflows as upstream_rq_pending_overflow.
            let pending = d.requests_overflow + d.pending_overflow;
            let pending = pending + h.requests_overflow + h.pending_overflow;
            self.pending_overflow.push((c(), pending as f64));
            self.cx_overflow.push((
                c(),
                (d.connections_overflow + h.connections_overflow) as f64,
            ));
            for (prio, s) in [("default", d), ("high", h)] {
                for (resource, v) in [
                    ("requests", s.requests),
                    ("pending_requests", s.pending),
                    ("connections", s.connections),
                    ("retries", s.retries),
                ] {
                    let mut labels = c();
                    labels.push(("priority", prio.to_owned()));
                    labels.push(("resource", resource.to_owned()));
                    self.breaker_active.push((labels, v as f64));
                }
            }
        }
        if let Some(p) = &l.pool {
            let put = |v: &mut Vec<Sample>, x: Option<u64>| {
                if let Some(x) = x {
                    v.push((c(), x as f64));
                }
            };
            put(&mut self.cx_active, p.connections_active);
            put(&mut self.cx_total, p.connections_total);
            put(&mut self.cx_connect_fail, p.connect_failures);
            put(&mut self.pool_endpoints, p.endpoints);
        }
    }
}

impl Collector for UpstreamMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let mut f = Families::default();
        for (key, l) in self.live() {
            f.add(&key, &l);
        }
        use MetricType::{Counter, Gauge};
        let families: [(&str, &str, MetricType, &[Sample]); 15] = [
            (
                "cluster_membership_total",
                "Endpoints of the cluster",
                Gauge,
                &f.membership_total,
            ),
            (
                "cluster_membership_healthy",
                "Endpoints taking new requests (EDS HEALTHY or UNKNOWN, not ejected)",
                Gauge,
                &f.membership_healthy,
            ),
            (
                "cluster_endpoints",
                "Endpoints by EDS health status",
                Gauge,
                &f.endpoints,
            ),
            (
                "cluster_outlier_detection_ejections_active",
                "Endpoints ejected by outlier detection now",
                Gauge,
                &f.ejections_active,
            ),
            (
                "cluster_outlier_detection_ejections_enforced",
                "Ejections enforced by outlier detection",
                Counter,
                &f.ejections_enforced,
            ),
            (
                "cluster_upstream_rq_active",
                "Requests in flight to the cluster's endpoints",
                Gauge,
                &f.rq_active,
            ),
            (
                "cluster_upstream_rq_retry",
                "Retries sent",
                Counter,
                &f.retry,
            ),
            (
                "cluster_upstream_rq_retry_overflow",
                "Retries refused by the circuit breaker or the retry budget",
                Counter,
                &f.retry_overflow,
            ),
            (
                "cluster_upstream_rq_pending_overflow",
                "Requests refused by the circuit breaker (max_requests or max_pending_requests), answered 503",
                Counter,
                &f.pending_overflow,
            ),
            (
                "cluster_upstream_cx_overflow",
                "Connections refused by the circuit breaker (max_connections)",
                Counter,
                &f.cx_overflow,
            ),
            (
                "cluster_circuit_breakers_active",
                "What the circuit breaker counts against its limits now, by priority and resource",
                Gauge,
                &f.breaker_active,
            ),
            (
                "cluster_upstream_cx_active",
                "Pooled connections open",
                Gauge,
                &f.cx_active,
            ),
            (
                "cluster_upstream_cx",
                "Connections opened by the pool",
                Counter,
                &f.cx_total,
            ),
            (
                "cluster_upstream_cx_connect_fail",
                "Connection attempts that failed",
                Counter,
                &f.cx_connect_fail,
            ),
            (
                "cluster_pool_endpoints",
                "Endpoints with a pooled client",
                Gauge,
                &f.pool_endpoints,
            ),
        ];
        for (name, help, kind, samples) in families {
            if !samples.is_empty() {
                family(&mut enc, name, help, kind, samples)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::model::*;
    use mesh_resilience::classify::Classification;

    use super::*;

    fn balancer() -> Arc<Balancer> {
        let ep = |port, health| Endpoint {
            address: EndpointAddress::Socket(([10, 0, 0, 1], port).into()),
            health,
            weight: 1,
            hostname: None,
            tls_mode: TlsMode::Unset,
        };
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            localities: vec![LocalityEndpoints {
                locality: Arc::new(Locality::default()),
                priority: 0,
                load_balancing_weight: None,
                endpoints: vec![
                    ep(1, HealthStatus::Healthy),
                    ep(2, HealthStatus::Healthy),
                    ep(3, HealthStatus::Draining),
                ],
            }],
            ..Default::default()
        };
        Arc::new(
            Balancer::new(
                "c",
                &LbPolicy::RoundRobin,
                &CommonLbConfig::default(),
                Arc::new(cla),
            )
            .unwrap(),
        )
    }

    fn scrape(m: &UpstreamMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    #[test]
    fn membership_ejections_overflows_and_retries() {
        let b = balancer();
        let breaker = CircuitBreaker::new(
            "c",
            &CircuitBreakers {
                default: Thresholds {
                    max_requests: 1,
                    max_retries: 1,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let outlier = OutlierDetector::new(
            b.clone(),
            OutlierDetection {
                consecutive_5xx: 2,
                max_ejection_percent: 100,
                ..Default::default()
            },
        );
        let m = UpstreamMetrics::new();
        m.track(
            "outbound|80||c",
            ClusterSources {
                balancer: Some(b.clone()),
                breaker: Some(breaker.clone()),
                outlier: Some(outlier.clone()),
                pool: Some(Arc::new(|| PoolStats {
                    endpoints: Some(2),
                    ..Default::default()
                })),
            },
        );
        // Two 503s in a row eject 10.0.0.1:1.
        let fail = Classification::Response {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            grpc: None,
        };
        outlier.record("10.0.0.1:1", fail);
        outlier.record("10.0.0.1:1", fail);
        // One request admitted, the next two overflow; one retry admitted, one refused.
        let _slot = breaker.try_request(Priority::Default).unwrap();
        assert!(breaker.try_request(Priority::Default).is_none());
        assert!(breaker.try_request(Priority::Default).is_none());
        let budget = breaker.retry_budget(Priority::Default);
        let _r = budget.try_retry().unwrap();
        assert!(budget.try_retry().is_none());

        let t = scrape(&m);
        let c = "{cluster_name=\"outbound|80||c\"}";
        assert_eq!(value(&t, &format!("mesh_cluster_membership_total{c}")), 3.0);
        // One draining, one ejected: one endpoint takes new requests.
        assert_eq!(
            value(&t, &format!("mesh_cluster_membership_healthy{c}")),
            1.0
        );
        assert_eq!(
            value(
                &t,
                "mesh_cluster_endpoints{cluster_name=\"outbound|80||c\",health=\"DRAINING\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                &format!("mesh_cluster_outlier_detection_ejections_active{c}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                &format!("mesh_cluster_outlier_detection_ejections_enforced_total{c}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                &format!("mesh_cluster_upstream_rq_pending_overflow_total{c}")
            ),
            2.0
        );
        assert_eq!(
            value(&t, &format!("mesh_cluster_upstream_rq_retry_total{c}")),
            1.0
        );
        assert_eq!(
            value(
                &t,
                &format!("mesh_cluster_upstream_rq_retry_overflow_total{c}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                "mesh_cluster_circuit_breakers_active{cluster_name=\"outbound|80||c\",priority=\"default\",resource=\"requests\"}"
            ),
            1.0
        );
        assert_eq!(value(&t, &format!("mesh_cluster_pool_endpoints{c}")), 2.0);

        let j = m.clusters_json();
        let hosts = j["cluster_statuses"][0]["host_statuses"]
            .as_array()
            .unwrap();
        assert_eq!(hosts.len(), 3);
        let h1 = hosts
            .iter()
            .find(|h| h["address"]["socket_address"]["port_value"] == 1)
            .unwrap();
        assert_eq!(h1["health_status"]["failed_outlier_check"], true);
        assert_eq!(h1["outlier_detection"]["ejections_total"], 1);
        assert_eq!(
            j["cluster_statuses"][0]["circuit_breakers"]["default"]["requests_overflow"],
            2
        );

        // A second workload's client of the same cluster is a series of its own.
        let other = CircuitBreaker::new("c", &CircuitBreakers::default());
        m.for_workload("reviews-v2").track(
            "outbound|80||c",
            ClusterSources {
                breaker: Some(other.clone()),
                ..Default::default()
            },
        );
        let t = scrape(&m);
        assert_eq!(
            value(
                &t,
                &format!("mesh_cluster_upstream_rq_pending_overflow_total{c}")
            ),
            2.0
        );
        assert_eq!(
            value(
                &t,
                "mesh_cluster_upstream_rq_pending_overflow_total{cluster_name=\"outbound|80||c\",workload=\"reviews-v2\"}"
            ),
            0.0
        );
        let j = m.clusters_json();
        assert_eq!(j["cluster_statuses"][1]["workload"], "reviews-v2", "{j}");
        assert!(j["cluster_statuses"][0].get("workload").is_none(), "{j}");
        m.for_workload("reviews-v2").forget("outbound|80||c");
        drop(other);

        // The cluster leaves the config: its state is dropped, and so are its series.
        drop((b, breaker, outlier, _slot, _r, budget));
        let t = scrape(&m);
        assert!(!t.contains("outbound|80||c"), "{t}");
        assert_eq!(m.clusters_json()["cluster_statuses"], json!([]));
    }
}
