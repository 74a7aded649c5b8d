//! The `mesh_cluster_*` families of an [`UpstreamMetrics`] set, encoded at scrape time.

use std::fmt;

use mesh_resilience::policy::Priority;
use mesh_telemetry::metrics::library::{Sample, encode_family};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::UpstreamMetrics;
use super::sources::{HEALTH, Key, Live, health_name};

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
                encode_family(&mut enc, name, help, kind, samples)?;
            }
        }
        Ok(())
    }
}
