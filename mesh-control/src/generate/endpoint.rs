//! ClusterLoadAssignments from the services' workloads (WorkloadEntry and inline
//! endpoints), filtered by subset labels and grouped by locality.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;

use super::cluster::ClusterSpec;
use super::{locality, pb};
use crate::istio::api::Resolution;

/// The cluster's endpoints: IPs for EDS; for DNS resolution (a `STRICT_DNS` or
/// `LOGICAL_DNS` cluster's inline assignment) names too, and the service's host itself when
/// the ServiceEntry lists no endpoints. Priorities and locality weights are those `client`
/// gets (see [`locality`]).
pub(crate) fn load_assignment(
    spec: &ClusterSpec<'_>,
    client: Option<&locality::Client>,
) -> eds::ClusterLoadAssignment {
    let dns = matches!(
        spec.svc.resolution,
        Resolution::Dns | Resolution::DnsRoundRobin
    );
    let mut by_locality: BTreeMap<&str, Vec<(eds::LbEndpoint, BTreeMap<String, String>)>> =
        BTreeMap::new();
    if dns && spec.svc.workloads.is_empty() {
        by_locality.insert(
            "",
            vec![(
                lb_endpoint(&spec.svc.host, spec.port.number, 1),
                BTreeMap::new(),
            )],
        );
    }
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
        let labels = locality::augment(&w.entry.labels, &locality::parse(&w.entry.locality));
        by_locality
            .entry(w.entry.locality.as_str())
            .or_default()
            .push((
                lb_endpoint(&w.entry.address, port, w.entry.weight.unwrap_or(1).max(1)),
                labels,
            ));
    }
    let groups = by_locality
        .into_iter()
        .map(|(l, endpoints)| locality::Group {
            locality: locality::parse(l),
            endpoints,
        })
        .collect();
    eds::ClusterLoadAssignment {
        cluster_name: spec.name.clone(),
        endpoints: locality::assign(groups, &spec.policy, client),
        ..Default::default()
    }
}

fn lb_endpoint(address: &str, port: u32, weight: u32) -> eds::LbEndpoint {
    eds::LbEndpoint {
        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
            address: pb::socket(address, port),
            ..Default::default()
        })),
        health_status: core::HealthStatus::Healthy as i32,
        load_balancing_weight: pb::u32v(weight),
        ..Default::default()
    }
}
