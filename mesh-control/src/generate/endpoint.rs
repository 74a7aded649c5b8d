//! ClusterLoadAssignments from the services' workloads (WorkloadEntry and inline
//! endpoints), filtered by subset labels and grouped by locality.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;

use super::cluster::ClusterSpec;
use super::{locality, pb};
use crate::istio::Workload;
use crate::istio::api::{Location, MtlsMode, Resolution};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

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
    let mut by_locality: BTreeMap<String, Vec<locality::Labelled>> = BTreeMap::new();
    if dns && spec.svc.workloads.is_empty() {
        by_locality.insert(
            String::new(),
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
        // istiod: the `istio-locality` label (`.`-separated) when no locality is set.
        let loc = match w.entry.labels.get("istio-locality") {
            Some(l) if w.entry.locality.is_empty() => l.replace('.', "/"),
            _ => w.entry.locality.clone(),
        };
        let labels = locality::augment(&w.entry.labels, &locality::parse(&loc));
        let mut e = lb_endpoint(&w.entry.address, port, w.entry.weight.unwrap_or(1).max(1));
        if istio_mtls(spec, w, port) {
            e.metadata = Some(transport_socket_match("tlsMode", "istio"));
        } else if hbone(w) {
            e.metadata = Some(transport_socket_match("tunnel", "http"));
        }
        by_locality.entry(loc).or_default().push((e, labels));
    }
    let groups = by_locality
        .into_iter()
        .map(|(l, endpoints)| locality::Group {
            locality: locality::parse(&l),
            endpoints,
        })
        .collect();
    eds::ClusterLoadAssignment {
        cluster_name: spec.name.clone(),
        endpoints: locality::assign(groups, &spec.policy, client, !dns),
        ..Default::default()
    }
}

/// Whether the endpoint takes Istio mTLS, as istiod marks it in EDS: a workload of a
/// MESH_INTERNAL service with `security.istio.io/tlsMode: istio`, or without that label and
/// with a service account (`getTLSModeFromWorkloadEntry`), unless its PeerAuthentication
/// disables mTLS on the port.
fn istio_mtls(spec: &ClusterSpec<'_>, w: &Workload, port: u32) -> bool {
    let mode = match w.entry.labels.get("security.istio.io/tlsMode") {
        Some(mode) => mode == "istio",
        None => !w.entry.service_account.is_empty(),
    };
    mode && spec.svc.location == Location::MeshInternal
        && super::inbound::mtls_mode(spec.config, w, &w.entry.labels, port) != MtlsMode::Disable
}

/// Whether the workload takes HBONE: its `networking.istio.io/tunnel` label lists `http`
/// (istiod's `SupportsTunnel`). istiod's sidecar generator sends the tunnel marker only to
/// such a workload without Istio mTLS (`PILOT_PREFER_SENDING_HBONE` is off by default), and
/// its proxyless generator never sends it.
fn hbone(w: &Workload) -> bool {
    w.entry
        .labels
        .get("networking.istio.io/tunnel")
        .is_some_and(|t| t.split(',').any(|t| t == "http"))
}

/// `filter_metadata["envoy.transport_socket_match"] = {key: value}`: `tlsMode: istio`
/// selects the auto-mTLS transport socket of a sidecar's cluster, `tunnel: http` marks an
/// HBONE endpoint. The workload's own address is kept (istiod points Envoy's endpoints at
/// its `connect_originate` internal listener instead; clients of this control plane dial
/// the tunnel themselves).
fn transport_socket_match(key: &str, value: &str) -> core::Metadata {
    let value = Value {
        kind: Some(Kind::StringValue(value.into())),
    };
    core::Metadata {
        filter_metadata: [(
            "envoy.transport_socket_match".to_owned(),
            Struct {
                fields: [(key.to_owned(), value)].into(),
            },
        )]
        .into(),
        ..Default::default()
    }
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
