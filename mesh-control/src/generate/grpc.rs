//! The proxyless generator (istiod's grpcgen): client listeners `host:port` with RDS of
//! the same name, route configurations, clusters with certificate-provider TLS, endpoints,
//! (inbound server listeners are in `inbound`).

use crate::xds_server::Resources;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::util::pack_any;

use super::cluster::{self, TlsFlavor};
use super::names::{host_port, vips, virtual_host_domains};
use super::{GeneratorOptions, endpoint, listener, locality, pb, route};
use crate::istio::MeshConfig;

/// The client side for a client in namespace `client_ns` (its services' short names are
/// domains; `None`: no short names): client listeners, routes (for `caller`: see
/// [`route::Caller`]), clusters, endpoints (with `client`'s locality priorities: see
/// [`locality`]).
pub(crate) fn generate(
    config: &MeshConfig,
    options: &GeneratorOptions,
    client_ns: Option<&str>,
    caller: Option<route::Caller<'_>>,
    client: Option<&locality::Client>,
) -> Resources {
    let mut out = Resources::default();
    for url in mesh_xds::ResourceType::ALL.map(|t| t.type_url()) {
        out.declare_type(url);
    }
    let mut listeners = std::collections::HashSet::new();
    for svc in config.services.values() {
        for port in &svc.ports {
            let name = host_port(&svc.host, port.number);
            let address = svc.addresses.first().map_or("0.0.0.0", String::as_str);
            // Istio's sidecar routes a request addressed to a service VIP to the service
            // (the VIP is a domain of its virtual host); a proxyless client asks for the
            // listener named by the authority, so each VIP gets one too.
            let mut domains = virtual_host_domains(&svc.host, port.number, client_ns);
            for vip in vips(&svc.addresses) {
                domains.push(host_port(&vip, port.number));
                domains.push(vip);
            }
            let names: Vec<String> = std::iter::once(name.clone())
                .chain(vips(&svc.addresses).map(|vip| host_port(&vip, port.number)))
                .collect();
            for listener_name in names {
                // Two services on one VIP and port: the first one keeps it.
                if !listeners.insert(listener_name.clone()) {
                    continue;
                }
                out.add(
                    listener_name.clone(),
                    lds::Listener {
                        name: listener_name.clone(),
                        address: pb::socket(
                            address.split('/').next().unwrap_or(address),
                            port.number,
                        ),
                        api_listener: Some(lds::ApiListener {
                            api_listener: Some(pack_any(listener::rds_hcm(
                                &listener_name,
                                &listener_name,
                            ))),
                        }),
                        ..Default::default()
                    },
                );
                out.add(
                    listener_name.clone(),
                    rds::RouteConfiguration {
                        name: listener_name,
                        virtual_hosts: vec![route::virtual_host(
                            config,
                            svc,
                            port,
                            domains.clone(),
                            caller,
                        )],
                        ..Default::default()
                    },
                );
            }
        }
    }
    for spec in cluster::cluster_specs(config) {
        out.add(
            spec.name.clone(),
            cluster::cluster(
                &spec,
                options,
                &TlsFlavor::CertificateProvider,
                client,
                cluster::Peer::Proxyless,
            ),
        );
        // DNS-resolved clusters carry their endpoints inline.
        if spec.svc.resolution == crate::istio::api::Resolution::Static {
            out.add(spec.name.clone(), endpoint::load_assignment(&spec, client));
        }
    }
    out
}
