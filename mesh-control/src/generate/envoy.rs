//! The Envoy generator: one sidecar-style outbound HTTP listener (address and port from
//! the node's metadata) whose route configuration holds a virtual host per service port,
//! the same clusters and endpoints as proxyless clients, and TLS from files on Envoy's disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::xds_server::Resources;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::util::pack_any;

use super::cluster::{self, TlsFlavor};
use super::names::{host_port, vips};
use super::{GeneratorOptions, endpoint, listener, locality, node_meta, pb, route};
use crate::istio::MeshConfig;

/// What an Envoy node tells the generator in its metadata (all optional).
///
/// | key | meaning | default |
/// |---|---|---|
/// | `OUTBOUND_PORT` | port of the outbound HTTP listener (also the route config name) | `15001` |
/// | `OUTBOUND_ADDRESS` | its address | `127.0.0.1` |
/// | `TLS_CERT_CHAIN` | Envoy's certificate chain (PEM file), for `ISTIO_MUTUAL` clusters | `/etc/certs/cert-chain.pem` |
/// | `TLS_PRIVATE_KEY` | its key | `/etc/certs/key.pem` |
/// | `TLS_ROOT_CERT` | the mesh root to verify servers with | `/etc/certs/root-cert.pem` |
/// | `LABELS` | the workload's labels (for `failoverPriority`) | none |
///
/// The node's `locality` (or its topology labels) orders endpoints for locality load
/// balancing, as istiod does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvoyNodeMeta {
    /// Outbound listener port.
    pub outbound_port: u32,
    /// Outbound listener address.
    pub outbound_address: String,
    /// Certificate chain file.
    pub cert_chain: PathBuf,
    /// Private key file.
    pub private_key: PathBuf,
    /// Root certificate file.
    pub root_cert: PathBuf,
    /// The node's locality, `region/zone/subzone` (empty when unset).
    pub locality: String,
    /// The workload's labels.
    pub labels: BTreeMap<String, String>,
}

impl Default for EnvoyNodeMeta {
    fn default() -> Self {
        EnvoyNodeMeta {
            outbound_port: 15001,
            outbound_address: "127.0.0.1".into(),
            cert_chain: "/etc/certs/cert-chain.pem".into(),
            private_key: "/etc/certs/key.pem".into(),
            root_cert: "/etc/certs/root-cert.pem".into(),
            locality: String::new(),
            labels: BTreeMap::new(),
        }
    }
}

impl EnvoyNodeMeta {
    /// Reads the metadata, falling back to the defaults for absent or unusable values.
    pub fn from_node(node: &Node) -> Self {
        let d = EnvoyNodeMeta::default();
        let get = |k: &str| node_meta(node, k).filter(|v| !v.is_empty());
        EnvoyNodeMeta {
            outbound_port: get("OUTBOUND_PORT")
                .and_then(|p| p.parse().ok())
                .filter(|p| (1..=65535).contains(p))
                .unwrap_or(d.outbound_port),
            outbound_address: get("OUTBOUND_ADDRESS").unwrap_or(d.outbound_address),
            cert_chain: get("TLS_CERT_CHAIN").map_or(d.cert_chain, PathBuf::from),
            private_key: get("TLS_PRIVATE_KEY").map_or(d.private_key, PathBuf::from),
            root_cert: get("TLS_ROOT_CERT").map_or(d.root_cert, PathBuf::from),
            locality: super::node_locality(node),
            labels: super::node_labels(node),
        }
    }

    /// Nodes with equal metadata share a snapshot.
    pub fn key(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "envoy|{}|{}|{}|{}|{}|{}|{}",
            self.outbound_address,
            self.outbound_port,
            self.cert_chain.display(),
            self.private_key.display(),
            self.root_cert.display(),
            self.locality,
            labels.join(",")
        )
    }
}

pub(crate) fn generate(
    config: &MeshConfig,
    options: &GeneratorOptions,
    meta: &EnvoyNodeMeta,
) -> Resources {
    let mut out = Resources::default();
    for url in mesh_xds::ResourceType::ALL.map(|t| t.type_url()) {
        out.declare_type(url);
    }
    let route_name = meta.outbound_port.to_string();
    let listener_name = format!("{}_{}", meta.outbound_address, meta.outbound_port);
    out.add(
        listener_name.clone(),
        lds::Listener {
            name: listener_name.clone(),
            address: pb::socket(&meta.outbound_address, meta.outbound_port),
            filter_chains: vec![lds::FilterChain {
                filters: vec![lds::Filter {
                    name: listener::HCM_FILTER.into(),
                    config_type: Some(lds::filter::ConfigType::TypedConfig(pack_any(
                        listener::rds_hcm(&format!("outbound_{}", meta.outbound_port), &route_name),
                    ))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let mut virtual_hosts = Vec::new();
    for svc in config.services.values() {
        for (i, port) in svc.ports.iter().enumerate() {
            // The bare host goes to the first port only: domains must be unique.
            // With the service's VIPs, as istiod's virtual host domains.
            let mut domains = vec![host_port(&svc.host, port.number)];
            domains.extend(vips(&svc.addresses).map(|vip| host_port(&vip, port.number)));
            if i == 0 {
                domains.push(svc.host.clone());
                domains.extend(vips(&svc.addresses));
            }
            virtual_hosts.push(route::virtual_host(config, svc, port, domains, None));
        }
    }
    out.add(
        route_name.clone(),
        rds::RouteConfiguration {
            name: route_name,
            virtual_hosts,
            validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
            ..Default::default()
        },
    );
    let flavor = TlsFlavor::Files {
        chain: meta.cert_chain.clone(),
        key: meta.private_key.clone(),
        root: meta.root_cert.clone(),
    };
    let client = locality::Client::new(Some(&locality::parse(&meta.locality)), &meta.labels);
    for spec in cluster::cluster_specs(config) {
        out.add(
            spec.name.clone(),
            cluster::cluster(
                &spec,
                options,
                &flavor,
                Some(&client),
                cluster::Peer::Sidecar,
            ),
        );
        out.add(
            spec.name.clone(),
            endpoint::load_assignment(&spec, Some(&client)),
        );
    }
    out
}
