//! Inbound (server) listeners for proxyless nodes, as istiod's grpcgen builds them
//! (`buildInboundListeners`): `xds.istio.io/grpc/lds/inbound/<ip>:<port>` for each port of
//! the node's workload, one filter chain per accepted transport (PeerAuthentication), the
//! RBAC filters of the AuthorizationPolicies selecting the workload, and an inline route
//! configuration whose only route hands every request to the application.
//!
//! Finding the node's workload: istiod matches the node's IP. Local configs often put
//! every WorkloadEntry on `127.0.0.1`, so among the workloads on the node's IPs we narrow
//! by namespace, service account, WorkloadEntry name (the node's pod name) and labels, each
//! step only when it leaves some candidate. A port still claimed by two workloads goes to
//! the first one in config order.
//!
//! PERMISSIVE differs from istiod, which sends plaintext only (gRPC cannot sniff): we send
//! two chains, `inbound-mtls` matching `transport_protocol: tls` and `inbound-plaintext`
//! matching `raw_buffer`. A gRPC server ignores the `tls` chain (gRPC A36) and so behaves
//! as with istiod; our server sniffs the ClientHello and serves both.

use std::collections::BTreeMap;

use crate::xds_server::Resources;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

use super::names::inbound_listener_name;
use super::{authz, listener, node_meta, pb};
use crate::istio::api::MtlsMode;
use crate::istio::{MeshConfig, Workload};

/// What identifies a proxyless workload in its node: Istio's node id and metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundNode {
    /// `INSTANCE_IPS` (comma separated), else the IP in the node id.
    pub ips: Vec<String>,
    /// `NAMESPACE`, else the namespace in the node id.
    pub namespace: String,
    /// `SERVICE_ACCOUNT` (a bare name or a SPIFFE ID).
    pub service_account: String,
    /// The pod name from the node id (`sidecar~<ip>~<pod>.<ns>~...`).
    pub pod_name: String,
    /// `LABELS`.
    pub labels: BTreeMap<String, String>,
    /// The node's locality, `region/zone/subzone` (empty parts when unset).
    pub locality: String,
}

impl InboundNode {
    /// Reads the node's id and metadata.
    pub fn from_node(node: &Node) -> InboundNode {
        let mut parts = node.id.split('~');
        let (_, id_ip, id_pod) = (parts.next(), parts.next(), parts.next());
        let (pod_name, id_ns) = id_pod
            .and_then(|p| p.split_once('.'))
            .map_or(("", ""), |(p, ns)| (p, ns));
        let ips = match node_meta(node, "INSTANCE_IPS") {
            Some(ips) => ips
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => id_ip.map(str::to_owned).into_iter().collect(),
        };
        let namespace = node_meta(node, "NAMESPACE").unwrap_or_else(|| id_ns.to_owned());
        let service_account = node_meta(node, "SERVICE_ACCOUNT")
            .map(|sa| sa.rsplit("/sa/").next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let labels = super::node_labels(node);
        InboundNode {
            ips,
            namespace,
            service_account,
            pod_name: pod_name.to_owned(),
            labels,
            locality: super::node_locality(node),
        }
    }

    /// A key equal for nodes that get the same inbound listeners.
    pub fn key(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.ips.join(","),
            self.namespace,
            self.service_account,
            self.pod_name,
            labels.join(","),
            self.locality
        )
    }

    /// The node's workloads among those of `config`, narrowed as the module explains.
    pub fn workloads<'a>(&self, config: &'a MeshConfig) -> Vec<&'a Workload> {
        let mut found: Vec<&Workload> = Vec::new();
        for svc in config.services.values() {
            for w in &svc.workloads {
                if self.ips.contains(&w.entry.address) && !found.iter().any(|f| f.name == w.name) {
                    found.push(w);
                }
            }
        }
        let narrow = |found: &mut Vec<&Workload>, keep: &dyn Fn(&Workload) -> bool| {
            if found.iter().any(|w| keep(w)) {
                found.retain(|w| keep(w));
            }
        };
        if !self.namespace.is_empty() {
            narrow(&mut found, &|w| w.namespace == self.namespace);
        }
        if !self.service_account.is_empty() {
            narrow(&mut found, &|w| {
                w.identity_path().rsplit("/sa/").next() == Some(self.service_account.as_str())
            });
        }
        if !self.pod_name.is_empty() {
            narrow(&mut found, &|w| {
                w.name.rsplit('/').next() == Some(self.pod_name.as_str())
            });
        }
        if !self.labels.is_empty() {
            narrow(&mut found, &|w| {
                self.labels
                    .iter()
                    .all(|(k, v)| w.entry.labels.get(k).is_none_or(|have| have == v))
            });
        }
        found
    }
}

/// Adds the inbound listeners of `node`'s workloads to `out`.
pub(crate) fn add_for_node(out: &mut Resources, config: &MeshConfig, node: &InboundNode) {
    let workloads = node.workloads(config);
    let mut seen = std::collections::BTreeSet::new();
    for w in workloads {
        let mut labels = w.entry.labels.clone();
        labels.extend(node.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        for svc in config.services.values() {
            if !svc.workloads.iter().any(|x| x.name == w.name) {
                continue;
            }
            for port in &svc.ports {
                let p = w.port_for(port);
                let name = inbound_listener_name(&w.entry.address, p);
                if seen.insert(name.clone()) {
                    out.add(name.clone(), listener(config, w, &labels, p, &name));
                }
            }
        }
    }
}

/// Adds every workload's inbound listeners (the node-independent view; with shared
/// addresses the first workload of an address and port wins).
pub(crate) fn add_all(out: &mut Resources, config: &MeshConfig) {
    let mut seen = std::collections::BTreeSet::new();
    for svc in config.services.values() {
        for w in &svc.workloads {
            for port in &svc.ports {
                let p = w.port_for(port);
                let name = inbound_listener_name(&w.entry.address, p);
                if seen.insert(name.clone()) {
                    out.add(name.clone(), listener(config, w, &w.entry.labels, p, &name));
                }
            }
        }
    }
}

/// The mTLS mode for a workload's port: port-level, then the most specific
/// PeerAuthentication (workload selector, namespace, mesh-wide), PERMISSIVE by default.
pub(crate) fn mtls_mode(
    config: &MeshConfig,
    w: &Workload,
    labels: &BTreeMap<String, String>,
    port: u32,
) -> MtlsMode {
    let applicable = |ns: &str, with_selector: bool| {
        config.peer_authentications.iter().find(|pa| {
            pa.namespace == ns
                && match &pa.spec.selector {
                    Some(sel) if with_selector => {
                        crate::istio::labels_match(labels, &sel.match_labels)
                    }
                    None => !with_selector,
                    Some(_) => false,
                }
        })
    };
    let chain = [
        applicable(&w.namespace, true),
        applicable(&w.namespace, false),
        applicable(crate::istio::ROOT_NAMESPACE, false),
    ];
    for pa in chain.into_iter().flatten() {
        let port_mode = pa
            .spec
            .port_level_mtls
            .iter()
            .find(|(k, _)| k.0 == port)
            .map(|(_, m)| m.mode);
        let mode = match port_mode {
            Some(m) if m != MtlsMode::Unset => m,
            _ => pa.spec.mtls.as_ref().map_or(MtlsMode::Unset, |m| m.mode),
        };
        if mode != MtlsMode::Unset {
            return mode;
        }
    }
    MtlsMode::Permissive
}

fn listener(
    config: &MeshConfig,
    w: &Workload,
    labels: &BTreeMap<String, String>,
    port: u32,
    name: &str,
) -> lds::Listener {
    let policies = authz::selected(config, &w.namespace, labels);
    let rbac = authz::rbac_filters(&policies);
    let chain = |suffix: &str, mtls: bool, transport: &str| {
        filter_chain(suffix, mtls.then(downstream_mtls), transport, rbac.clone())
    };
    let filter_chains = match mtls_mode(config, w, labels, port) {
        MtlsMode::Strict => vec![chain("mtls", true, "")],
        MtlsMode::Permissive => vec![
            chain("mtls", true, "tls"),
            chain("plaintext", false, "raw_buffer"),
        ],
        MtlsMode::Disable | MtlsMode::Unset => vec![chain("plaintext", false, "")],
    };
    lds::Listener {
        name: name.into(),
        address: pb::socket(&w.entry.address, port),
        filter_chains,
        traffic_direction: core::TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

/// grpcgen's `buildInboundFilterChain`: `inbound-<suffix>`, HCM `inbound-hcm<suffix>`
/// with the RBAC filters, the router, and the inline `inbound` route config.
fn filter_chain(
    suffix: &str,
    tls: Option<core::TransportSocket>,
    transport_protocol: &str,
    mut http_filters: Vec<hcm::HttpFilter>,
) -> lds::FilterChain {
    http_filters.extend(listener::router_only());
    let mut hcm = hcm::HttpConnectionManager {
        stat_prefix: format!("inbound-hcm{suffix}"),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        http_filters,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            rds::RouteConfiguration {
                name: "inbound".into(),
                virtual_hosts: vec![rds::VirtualHost {
                    domains: vec!["*".into()],
                    routes: vec![rds::Route {
                        r#match: Some(rds::RouteMatch {
                            path_specifier: Some(rds::route_match::PathSpecifier::Prefix(
                                "/".into(),
                            )),
                            ..Default::default()
                        }),
                        action: Some(rds::route::Action::NonForwardingAction(Default::default())),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    listener::base_path_normalization(&mut hcm);
    lds::FilterChain {
        name: format!("inbound-{suffix}"),
        filter_chain_match: (!transport_protocol.is_empty()).then(|| lds::FilterChainMatch {
            transport_protocol: transport_protocol.into(),
            ..Default::default()
        }),
        filters: vec![lds::Filter {
            name: format!("inbound-hcm{suffix}"),
            config_type: Some(lds::filter::ConfigType::TypedConfig(pack_any(hcm))),
        }],
        transport_socket: tls,
        ..Default::default()
    }
}

fn downstream_mtls() -> core::TransportSocket {
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::DownstreamTlsContext {
                common_tls_context: Some(server_tls()),
                require_client_certificate: Some(BoolValue { value: true }),
                ..Default::default()
            },
        ))),
    }
}

// As grpcgen: the deprecated certificate-provider-instance fields.
#[allow(deprecated)]
fn server_tls() -> tls::CommonTlsContext {
    use tls::common_tls_context::{
        CertificateProviderInstance, CombinedCertificateValidationContext, ValidationContextType,
    };
    tls::CommonTlsContext {
        tls_certificate_certificate_provider_instance: Some(CertificateProviderInstance {
            instance_name: "default".into(),
            certificate_name: "default".into(),
        }),
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                validation_context_certificate_provider_instance: Some(
                    CertificateProviderInstance {
                        instance_name: "default".into(),
                        certificate_name: "ROOTCA".into(),
                    },
                ),
                default_validation_context: Some(Default::default()),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}
