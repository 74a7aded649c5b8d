//! Envoy's `/clusters?format=json` shape of one tracked cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_core::model::EndpointAddress;
use mesh_resilience::circuit_breaker::BreakerStats;
use mesh_resilience::policy::Priority;
use serde_json::{Value, json};

use super::sources::{Live, health_name};

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

pub(super) fn cluster_json(name: &str, l: &Live) -> Value {
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
