//! The proxyless generator (istiod's grpcgen): client listeners `host:port` with RDS of
//! the same name, route configurations, clusters with certificate-provider TLS, endpoints,
//! and inbound server listeners per workload with PeerAuthentication's mTLS mode.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use mesh_xds::server::Resources;

use super::cluster::{self, TlsFlavor};
use super::names::{host_port, inbound_listener_name};
use super::{GeneratorOptions, endpoint, listener, pb, route};
use crate::istio::api::MtlsMode;
use crate::istio::{MeshConfig, ROOT_NAMESPACE, Workload};

pub(crate) fn generate(config: &MeshConfig, options: &GeneratorOptions) -> Resources {
    let mut out = Resources::default();
    for url in mesh_xds::ResourceType::ALL.map(|t| t.type_url()) {
        out.declare_type(url);
    }
    for svc in config.services.values() {
        for port in &svc.ports {
            let name = host_port(&svc.host, port.number);
            let address = svc.addresses.first().map_or("0.0.0.0", String::as_str);
            out.add(
                name.clone(),
                lds::Listener {
                    name: name.clone(),
                    address: pb::socket(address, port.number),
                    api_listener: Some(lds::ApiListener {
                        api_listener: Some(pack_any(listener::rds_hcm(&name, &name))),
                    }),
                    ..Default::default()
                },
            );
            out.add(
                name.clone(),
                rds::RouteConfiguration {
                    name: name.clone(),
                    virtual_hosts: vec![route::virtual_host(
                        config,
                        svc,
                        port,
                        vec![svc.host.clone(), name.clone()],
                    )],
                    ..Default::default()
                },
            );
        }
        for w in &svc.workloads {
            for port in &svc.ports {
                let p = w.port_for(port);
                let name = inbound_listener_name(&w.entry.address, p);
                out.add(name.clone(), inbound_listener(config, w, p, &name));
            }
        }
    }
    for spec in cluster::cluster_specs(config) {
        out.add(
            spec.name.clone(),
            cluster::cluster(config, &spec, options, &TlsFlavor::CertificateProvider),
        );
        out.add(spec.name.clone(), endpoint::load_assignment(&spec));
    }
    out
}

/// The mTLS mode for a workload's port: port-level, then the most specific
/// PeerAuthentication (workload selector, namespace, mesh-wide), PERMISSIVE by default.
pub(crate) fn mtls_mode(config: &MeshConfig, w: &Workload, port: u32) -> MtlsMode {
    let applicable = |ns: &str, with_selector: bool| {
        config.peer_authentications.iter().find(|pa| {
            pa.namespace == ns
                && match &pa.spec.selector {
                    Some(sel) if with_selector => w.matches(&sel.match_labels),
                    None => !with_selector,
                    Some(_) => false,
                }
        })
    };
    let chain = [
        applicable(&w.namespace, true),
        applicable(&w.namespace, false),
        applicable(ROOT_NAMESPACE, false),
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

fn inbound_listener(config: &MeshConfig, w: &Workload, port: u32, name: &str) -> lds::Listener {
    let strict = mtls_mode(config, w, port) == MtlsMode::Strict;
    let hcm = listener::inbound_hcm(&format!("inbound|{port}||"));
    let transport_socket = strict.then(|| core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::DownstreamTlsContext {
                common_tls_context: Some(server_tls()),
                require_client_certificate: Some(BoolValue { value: true }),
                ..Default::default()
            },
        ))),
    });
    // gRPC matches filter chains only by destination and source (A36), so PERMISSIVE
    // cannot sniff TLS: it is served as plaintext, STRICT as mTLS only.
    let chain = lds::FilterChain {
        name: if strict {
            "inbound-mtls"
        } else {
            "inbound-plaintext"
        }
        .into(),
        filters: vec![lds::Filter {
            name: listener::HCM_FILTER.into(),
            config_type: Some(lds::filter::ConfigType::TypedConfig(pack_any(hcm))),
        }],
        transport_socket,
        ..Default::default()
    };
    lds::Listener {
        name: name.into(),
        address: pb::socket(&w.entry.address, port),
        filter_chains: vec![chain],
        traffic_direction: core::TrafficDirection::Inbound as i32,
        ..Default::default()
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
