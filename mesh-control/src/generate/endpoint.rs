//! ClusterLoadAssignments from the services' workloads (WorkloadEntry and inline
//! endpoints), filtered by subset labels and grouped by locality.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;

use super::cluster::ClusterSpec;
use super::pb;
use crate::istio::api::Resolution;

/// The cluster's endpoints: IPs for EDS; for DNS resolution (a `STRICT_DNS` or
/// `LOGICAL_DNS` cluster's inline assignment) names too, and the service's host itself when
/// the ServiceEntry lists no endpoints.
pub(crate) fn load_assignment(spec: &ClusterSpec<'_>) -> eds::ClusterLoadAssignment {
    let dns = matches!(
        spec.svc.resolution,
        Resolution::Dns | Resolution::DnsRoundRobin
    );
    if dns && spec.svc.workloads.is_empty() {
        return assignment(
            spec,
            BTreeMap::from([("", vec![lb_endpoint(&spec.svc.host, spec.port.number, 1)])]),
        );
    }
    let mut by_locality: BTreeMap<&str, Vec<eds::LbEndpoint>> = BTreeMap::new();
    for w in &spec.svc.workloads {
        if let Some(subset) = spec.subset
            && !w.matches(&subset.labels)
        {
            continue;
        }
        // EDS carries IP addresses only (validation refuses names with STATIC).
        if !dns && w.entry.address.parse::<IpAddr>().is_err() {
            continue;
        }
        let port = w.port_for(spec.port);
        by_locality
            .entry(w.entry.locality.as_str())
            .or_default()
            .push(lb_endpoint(
                &w.entry.address,
                port,
                w.entry.weight.unwrap_or(1).max(1),
            ));
    }
    assignment(spec, by_locality)
}

fn lb_endpoint(address: &str, port: u32, weight: u32) -> eds::LbEndpoint {
    eds::LbEndpoint {
        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
            address: pb::socket(address, port),
            ..Default::default()
        })),
        load_balancing_weight: pb::u32v(weight),
        ..Default::default()
    }
}

fn assignment(
    spec: &ClusterSpec<'_>,
    by_locality: BTreeMap<&str, Vec<eds::LbEndpoint>>,
) -> eds::ClusterLoadAssignment {
    let endpoints = by_locality
        .into_iter()
        .map(|(locality, lb_endpoints)| {
            let mut parts = locality.splitn(3, '/');
            let weight: u32 = lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                .sum();
            eds::LocalityLbEndpoints {
                locality: Some(core::Locality {
                    region: parts.next().unwrap_or_default().into(),
                    zone: parts.next().unwrap_or_default().into(),
                    sub_zone: parts.next().unwrap_or_default().into(),
                }),
                lb_endpoints,
                // gRPC ignores localities without a weight.
                load_balancing_weight: pb::u32v(weight.max(1)),
                ..Default::default()
            }
        })
        .collect();
    eds::ClusterLoadAssignment {
        cluster_name: spec.name.clone(),
        endpoints,
        ..Default::default()
    }
}
