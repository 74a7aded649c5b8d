//! Clusters of every service port: `outbound|<port>||<fqdn>` and one per DestinationRule
//! subset, with the rule's (subset-merged) traffic policy: load balancer, connection pool
//! as circuit breakers, outlier detection, and TLS.

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3 as raw_buffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt64Value;
use envoy_types::util::pack_any;

use super::names::cluster_name;
use super::{GeneratorOptions, locality, pb};
use crate::istio::api::{
    ConnectionPoolSettings, H2UpgradePolicy, Location, Resolution, ServicePort, SimpleLb, Subset,
    TlsMode, TrafficPolicy,
};
use crate::istio::{MeshConfig, Service};

/// How clusters get their certificates.
#[derive(Clone, Debug)]
pub(crate) enum TlsFlavor {
    /// gRPC's certificate provider instance `default` (certificate `default`, CA `ROOTCA`).
    CertificateProvider,
    /// Files on the data plane's disk (Envoy without an agent).
    Files {
        chain: PathBuf,
        key: PathBuf,
        root: PathBuf,
    },
}

/// One cluster to build: a service port, optionally a subset.
pub(crate) struct ClusterSpec<'a> {
    pub(crate) config: &'a MeshConfig,
    pub(crate) svc: &'a Service,
    pub(crate) port: &'a ServicePort,
    pub(crate) subset: Option<&'a Subset>,
    pub(crate) name: String,
    /// The DestinationRule's policy, merged with the subset's.
    pub(crate) policy: TrafficPolicy,
}

/// Every cluster of the config.
pub(crate) fn cluster_specs(config: &MeshConfig) -> Vec<ClusterSpec<'_>> {
    let mut out = Vec::new();
    for svc in config.services.values() {
        let dr = config.destination_rule_for(&svc.host);
        for port in &svc.ports {
            out.push(ClusterSpec {
                config,
                svc,
                port,
                subset: None,
                name: cluster_name(port.number, "", &svc.host),
                policy: merged_policy(config, svc, None),
            });
            for subset in dr.iter().flat_map(|dr| dr.spec.subsets.iter()) {
                out.push(ClusterSpec {
                    config,
                    svc,
                    port,
                    subset: Some(subset),
                    name: cluster_name(port.number, &subset.name, &svc.host),
                    policy: merged_policy(config, svc, Some(subset)),
                });
            }
        }
    }
    out
}

/// The DestinationRule's policy with the subset's settings taking precedence, field by
/// field, as in Istio.
fn merged_policy(config: &MeshConfig, svc: &Service, subset: Option<&Subset>) -> TrafficPolicy {
    let top = config
        .destination_rule_for(&svc.host)
        .and_then(|dr| dr.spec.traffic_policy.clone())
        .unwrap_or_default();
    let Some(sub) = subset.and_then(|s| s.traffic_policy.as_ref()) else {
        return top;
    };
    TrafficPolicy {
        load_balancer: sub.load_balancer.clone().or(top.load_balancer),
        connection_pool: sub.connection_pool.clone().or(top.connection_pool),
        outlier_detection: sub.outlier_detection.clone().or(top.outlier_detection),
        tls: sub.tls.clone().or(top.tls),
        ..top
    }
}

/// The SPIFFE IDs the service's workloads may present (sorted, deduplicated).
pub(crate) fn service_identities(svc: &Service, trust_domain: &str) -> Vec<String> {
    let mut ids: Vec<String> = svc
        .workloads
        .iter()
        .map(|w| format!("spiffe://{trust_domain}/{}", w.identity_path()))
        .chain(svc.subject_alt_names.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Who the clusters are for: Envoy sidecars get auto-mTLS, proxyless clients TLS only
/// when the DestinationRule asks (as istiod's grpcgen: a gRPC client may not use xDS
/// credentials, nor reach a PERMISSIVE server over mTLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    Sidecar,
    Proxyless,
}

/// The cluster of `spec`; a DNS cluster's inline endpoints are those `client` gets.
pub(crate) fn cluster(
    spec: &ClusterSpec<'_>,
    options: &GeneratorOptions,
    flavor: &TlsFlavor,
    client: Option<&locality::Client>,
    peer: Peer,
) -> cds::Cluster {
    let policy = &spec.policy;
    let pool = policy.connection_pool.as_ref();
    let connect_timeout = pool
        .and_then(|p| p.tcp.as_ref())
        .and_then(|t| t.connect_timeout.as_ref())
        .and_then(|d| d.get())
        .unwrap_or(options.connect_timeout);
    let mut c = cds::Cluster {
        name: spec.name.clone(),
        alt_stat_name: spec.name.clone(),
        connect_timeout: Some(pb::duration(connect_timeout)),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
            eds_config: pb::ads(),
            service_name: spec.name.clone(),
        }),
        ..Default::default()
    };
    dns_discovery(&mut c, spec, client);
    panic_threshold(&mut c, 0.0);
    load_balancer(&mut c, policy);
    circuit_breakers(&mut c, policy);
    outlier_detection(&mut c, policy);
    if locality::weighted(policy) {
        c.common_lb_config
            .get_or_insert_default()
            .locality_config_specifier = Some(
            cds::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                Default::default(),
            ),
        );
    }
    http_protocol_options(&mut c, pool, spec);
    match &policy.tls {
        Some(t) if matches!(t.mode, TlsMode::IstioMutual) => {
            c.transport_socket = Some(istio_mutual(spec, options, flavor, t.sni.clone()));
        }
        Some(_) => {}
        // istiod's auto-mTLS (`buildAutoMtlsSettings`): no TLS to a MESH_EXTERNAL service;
        // to a MESH_INTERNAL one, mTLS to the endpoints whose EDS metadata says
        // `tlsMode: istio` (generate::endpoint), plaintext to the others.
        None if peer == Peer::Sidecar && spec.svc.location == Location::MeshInternal => {
            let tls_mode = |mode: &str| envoy_types::pb::google::protobuf::Struct {
                fields: [(
                    "tlsMode".to_owned(),
                    envoy_types::pb::google::protobuf::Value {
                        kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                            mode.into(),
                        )),
                    },
                )]
                .into(),
            };
            c.transport_socket_matches = vec![
                cds::cluster::TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    r#match: Some(tls_mode("istio")),
                    transport_socket: Some(istio_mutual(spec, options, flavor, None)),
                },
                cds::cluster::TransportSocketMatch {
                    name: "tlsMode-disabled".into(),
                    r#match: Some(Default::default()),
                    transport_socket: Some(core::TransportSocket {
                        name: "envoy.transport_sockets.raw_buffer".into(),
                        config_type: Some(core::transport_socket::ConfigType::TypedConfig(
                            pack_any(raw_buffer::RawBuffer {}),
                        )),
                    }),
                },
            ];
        }
        None => {}
    }
    c
}

/// The `ISTIO_MUTUAL` transport socket: the mesh identity, the service's identities as
/// SANs, Istio's SNI unless `sni` says otherwise.
fn istio_mutual(
    spec: &ClusterSpec<'_>,
    options: &GeneratorOptions,
    flavor: &TlsFlavor,
    sni: Option<String>,
) -> core::TransportSocket {
    let sans = service_identities(spec.svc, &options.trust_domain);
    let sni = sni.unwrap_or_else(|| {
        format!(
            "outbound_.{}_.{}_.{}",
            spec.port.number,
            spec.subset.map(|s| s.name.as_str()).unwrap_or(""),
            spec.svc.host
        )
    });
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::UpstreamTlsContext {
                common_tls_context: Some(common_tls(flavor, &sans)),
                sni,
                ..Default::default()
            },
        ))),
    }
}

fn load_balancer(c: &mut cds::Cluster, policy: &TrafficPolicy) {
    use cds::cluster::LbPolicy;
    let Some(lb) = &policy.load_balancer else {
        return;
    };
    if let Some(ch) = &lb.consistent_hash {
        if let Some(m) = &ch.maglev {
            c.lb_policy = LbPolicy::Maglev as i32;
            c.lb_config = Some(cds::cluster::LbConfig::MaglevLbConfig(
                cds::cluster::MaglevLbConfig {
                    table_size: m.table_size.map(|value| UInt64Value { value }),
                },
            ));
            return;
        }
        c.lb_policy = LbPolicy::RingHash as i32;
        let min = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(ch.minimum_ring_size)
            .unwrap_or(1024);
        c.lb_config = Some(cds::cluster::LbConfig::RingHashLbConfig(
            cds::cluster::RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value { value: min }),
                ..Default::default()
            },
        ));
        return;
    }
    c.lb_policy = match lb.simple {
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest) => LbPolicy::LeastRequest,
        Some(SimpleLb::Random) => LbPolicy::Random,
        _ => LbPolicy::RoundRobin,
    } as i32;
}

/// Istio's DNS resolutions: `DNS` a `STRICT_DNS` cluster (every address of every name is
/// an endpoint), `DNS_ROUND_ROBIN` a `LOGICAL_DNS` one (its first endpoint), each with the
/// endpoints inline and istiod's default refresh rate (60 s) instead of EDS.
fn dns_discovery(c: &mut cds::Cluster, spec: &ClusterSpec<'_>, client: Option<&locality::Client>) {
    use cds::cluster::DiscoveryType;
    let kind = match spec.svc.resolution {
        Resolution::Dns => DiscoveryType::StrictDns,
        Resolution::DnsRoundRobin => DiscoveryType::LogicalDns,
        Resolution::Static | Resolution::None => return,
    };
    let mut la = super::endpoint::load_assignment(spec, client);
    if kind == DiscoveryType::LogicalDns {
        la.endpoints.truncate(1);
        if let Some(l) = la.endpoints.first_mut() {
            l.lb_endpoints.truncate(1);
        }
    }
    c.cluster_discovery_type = Some(cds::cluster::ClusterDiscoveryType::Type(kind as i32));
    c.eds_cluster_config = None;
    c.load_assignment = Some(la);
    // Deprecated for the `envoy.clusters.dns` extension, still what istiod sets and
    // Envoy honours.
    #[allow(deprecated)]
    {
        c.dns_refresh_rate = Some(pb::duration(Duration::from_secs(60)));
    }
    // istiod's `SelectDNSLookupFamily` for a proxy with no (or only IPv4) addresses, as a
    // proxyless client's node has.
    c.dns_lookup_family = cds::cluster::DnsLookupFamily::V4Only as i32;
}

/// The cluster's `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`, as istiod's
/// `applyConnectionPool` and `applyH2Upgrade` set them: HTTP/2 for HTTP2/GRPC ports and
/// `h2UpgradePolicy: UPGRADE` (with `maxConcurrentStreams`), the client's protocol for
/// `useClientProtocol`, and the connection's `idleTimeout` and `maxRequestsPerConnection`.
fn http_protocol_options(
    c: &mut cds::Cluster,
    pool: Option<&ConnectionPoolSettings>,
    spec: &ClusterSpec<'_>,
) {
    use uphttp::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
        explicit_http_config::ProtocolConfig,
    };
    let http = pool.and_then(|p| p.http.as_ref());
    let upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    let h2_port = matches!(
        spec.port.protocol.to_ascii_uppercase().as_str(),
        "HTTP2" | "GRPC" | "GRPC-WEB"
    );
    let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
    let h2 = core::Http2ProtocolOptions {
        max_concurrent_streams: positive(http.and_then(|h| h.max_concurrent_streams))
            .and_then(pb::u32v),
        ..Default::default()
    };
    let protocol = if http.and_then(|h| h.use_client_protocol) == Some(true) {
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig {
                http2_protocol_options: Some(h2),
                ..Default::default()
            },
        ))
    } else if upgrade || h2_port {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
            },
        ))
    } else {
        None
    };
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let common = core::HttpProtocolOptions {
        // istiod: the HTTP idle timeout, else the TCP one.
        idle_timeout: http
            .and_then(|h| h.idle_timeout.as_ref())
            .or(tcp.and_then(|t| t.idle_timeout.as_ref()))
            .and_then(|d| d.get())
            .map(pb::duration),
        max_connection_duration: tcp
            .and_then(|t| t.max_connection_duration.as_ref())
            .and_then(|d| d.get())
            .map(pb::duration),
        max_requests_per_connection: positive(http.and_then(|h| h.max_requests_per_connection))
            .and_then(pb::u32v),
        ..Default::default()
    };
    let common = (common != core::HttpProtocolOptions::default()).then_some(common);
    if protocol.is_none() && common.is_none() {
        return;
    }
    let opts = uphttp::HttpProtocolOptions {
        upstream_protocol_options: protocol,
        common_http_protocol_options: common,
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        pack_any(opts),
    );
}

/// istiod's sidecar thresholds: what the connection pool sets, unlimited (`u32::MAX`)
/// otherwise, instead of Envoy's defaults (1,024 connections, 3 retries, ...).
fn circuit_breakers(c: &mut cds::Cluster, policy: &TrafficPolicy) {
    let pool = policy.connection_pool.as_ref();
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let limit = |v: Option<i32>| {
        pb::u32v(
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(u32::MAX),
        )
    };
    c.circuit_breakers = Some(cds::CircuitBreakers {
        thresholds: vec![cds::circuit_breakers::Thresholds {
            max_connections: limit(tcp.and_then(|t| t.max_connections)),
            max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: limit(http.and_then(|h| h.http2_max_requests)),
            max_retries: limit(http.and_then(|h| h.max_retries)),
            ..Default::default()
        }],
        ..Default::default()
    });
}

fn outlier_detection(c: &mut cds::Cluster, policy: &TrafficPolicy) {
    let Some(od) = &policy.outlier_detection else {
        return;
    };
    let dur = |d: &Option<crate::istio::api::ProtoDuration>, default: Duration| {
        Some(pb::duration(
            d.as_ref().and_then(|d| d.get()).unwrap_or(default),
        ))
    };
    let mut out = cds::OutlierDetection {
        interval: dur(&od.interval, Duration::from_secs(10)),
        base_ejection_time: dur(&od.base_ejection_time, Duration::from_secs(30)),
        max_ejection_percent: pb::u32v(
            od.max_ejection_percent
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(10),
        ),
        // Istio: 5xx detection only when asked; gateway errors on by default; no
        // success-rate ejection.
        enforcing_consecutive_5xx: pb::u32v(0),
        enforcing_success_rate: pb::u32v(0),
        ..Default::default()
    };
    if let Some(n) = od.consecutive_5xx_errors {
        out.consecutive_5xx = pb::u32v(n);
        out.enforcing_consecutive_5xx = pb::u32v(if n > 0 { 100 } else { 0 });
    }
    if let Some(n) = od.consecutive_gateway_errors {
        out.consecutive_gateway_failure = pb::u32v(n);
        out.enforcing_consecutive_gateway_failure = pb::u32v(if n > 0 { 100 } else { 0 });
    }
    if let Some(split) = od.split_external_local_origin_errors {
        out.split_external_local_origin_errors = split;
    }
    if let Some(n) = od.consecutive_local_origin_failures {
        out.consecutive_local_origin_failure = pb::u32v(n);
    }
    c.outlier_detection = Some(out);
    if let Some(min) = od.min_health_percent.filter(|m| *m >= 0) {
        panic_threshold(c, f64::from(min));
    }
}

/// Envoy's `healthy_panic_threshold` (istiod: 0, panic mode off, unless the outlier
/// detection's `minHealthPercent` says otherwise).
fn panic_threshold(c: &mut cds::Cluster, percent: f64) {
    c.common_lb_config
        .get_or_insert_with(Default::default)
        .healthy_panic_threshold = Some(Percent { value: percent });
}

// grpcgen emits the deprecated certificate-provider-instance fields, which every gRPC
// release reads; we mirror it.
#[allow(deprecated)]
fn common_tls(flavor: &TlsFlavor, sans: &[String]) -> tls::CommonTlsContext {
    match flavor {
        TlsFlavor::CertificateProvider => {
            use tls::common_tls_context::{
                CertificateProviderInstance, CombinedCertificateValidationContext,
                ValidationContextType,
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
                        default_validation_context: Some(tls::CertificateValidationContext {
                            match_subject_alt_names: sans.iter().map(|s| pb::exact(s)).collect(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }
        }
        TlsFlavor::Files { chain, key, root } => {
            let file = |p: &PathBuf| {
                Some(core::DataSource {
                    specifier: Some(core::data_source::Specifier::Filename(
                        p.display().to_string(),
                    )),
                    ..Default::default()
                })
            };
            tls::CommonTlsContext {
                tls_certificates: vec![tls::TlsCertificate {
                    certificate_chain: file(chain),
                    private_key: file(key),
                    ..Default::default()
                }],
                validation_context_type: Some(
                    tls::common_tls_context::ValidationContextType::ValidationContext(
                        tls::CertificateValidationContext {
                            trusted_ca: file(root),
                            match_typed_subject_alt_names: sans
                                .iter()
                                .map(|s| tls::SubjectAltNameMatcher {
                                    san_type: tls::subject_alt_name_matcher::SanType::Uri as i32,
                                    matcher: Some(pb::exact(s)),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        },
                    ),
                ),
                // istiod's sidecar default (`defaultUpstreamCommonTLSContext`): TLS 1.2-1.3.
                tls_params: Some(tls::TlsParameters {
                    tls_minimum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv12 as i32,
                    tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv13 as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    }
}
